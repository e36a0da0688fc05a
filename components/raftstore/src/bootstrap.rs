//! Initial state of a store and its regions.
//!
//! A store is identified by a [`StoreIdent`] (cluster id, store id) written once. A region
//! replica starts from [`raft_log::bootstrap_group`]: an empty log that every replica agrees on,
//! plus a `RegionLocalState` naming the region's range, epoch and peers. Bootstrapping the same
//! region on every store of its peers is how a cluster starts with pre-split regions.

use engine::{keys, Engine, WriteBatch, CF_RAFT};
use prost::Message;
use proto::metapb;
use proto::raft_serverpb::{MergeState, PeerState, RegionLocalState, StoreIdent};

use crate::{Error, Result};

/// Reads the store identity, if the store was bootstrapped.
pub fn load_store_ident(engine: &Engine) -> Result<Option<StoreIdent>> {
    match engine.get(CF_RAFT, keys::store_ident_key())? {
        None => Ok(None),
        Some(v) => StoreIdent::decode(v.as_slice())
            .map(Some)
            .map_err(|e| Error::Engine(format!("corrupt store ident: {e}"))),
    }
}

/// Writes the store identity. Fails if the engine already belongs to another store or cluster.
pub fn bootstrap_store(engine: &Engine, cluster_id: u64, store_id: u64) -> Result<()> {
    if let Some(ident) = load_store_ident(engine)? {
        if ident.cluster_id == cluster_id && ident.store_id == store_id {
            return Ok(());
        }
        return Err(Error::InvalidRequest(format!(
            "engine already belongs to store {} of cluster {}",
            ident.store_id, ident.cluster_id
        )));
    }
    let ident = StoreIdent {
        cluster_id,
        store_id,
    };
    let mut wb = WriteBatch::new();
    wb.put(CF_RAFT, keys::store_ident_key(), &ident.encode_to_vec());
    write_durably(engine, wb)
}

/// Writes the initial state of a replica of `region`. Does nothing if it already exists.
pub fn bootstrap_region(engine: &Engine, region: &metapb::Region) -> Result<()> {
    if engine
        .get(CF_RAFT, &keys::region_state_key(region.id))?
        .is_some()
    {
        return Ok(());
    }
    let mut wb = WriteBatch::new();
    write_region_state(&mut wb, region, PeerState::Normal);
    raft_log::bootstrap_group(region.id, &mut wb);
    write_durably(engine, wb)
}

/// A synced write; on a volatile engine (the development-only negative control that skips
/// fsyncs) also flushed: the control loses Raft logs and applied data, not the store's
/// identity or the replicas it was bootstrapped with (nor splits and membership changes: the
/// apply worker flushes after those).
fn write_durably(engine: &Engine, wb: WriteBatch) -> Result<()> {
    engine.write(wb, true)?;
    if engine.is_volatile() {
        engine.flush()?;
    }
    Ok(())
}

pub fn write_region_state(wb: &mut WriteBatch, region: &metapb::Region, state: PeerState) {
    write_local_state(wb, region, state, None);
}

/// The state of a region between PrepareMerge and CommitMerge or RollbackMerge.
pub fn write_merging_state(wb: &mut WriteBatch, region: &metapb::Region, merge: &MergeState) {
    write_local_state(wb, region, PeerState::Merging, Some(merge.clone()));
}

/// The state of a replica between the synced write of a snapshot's deletion and log reset and
/// the ingestion of its files (see [`crate::snap`]); the merge state is the snapshot's.
pub fn write_applying_state(
    wb: &mut WriteBatch,
    region: &metapb::Region,
    merge: Option<&MergeState>,
) {
    write_local_state(wb, region, PeerState::Applying, merge.cloned());
}

fn write_local_state(
    wb: &mut WriteBatch,
    region: &metapb::Region,
    state: PeerState,
    merge_state: Option<MergeState>,
) {
    let s = RegionLocalState {
        state: state as i32,
        region: Some(region.clone()),
        merge_state,
    };
    wb.put(
        CF_RAFT,
        &keys::region_state_key(region.id),
        &s.encode_to_vec(),
    );
}

/// Every region state persisted on the store, by region id.
pub fn load_region_states(engine: &Engine) -> Result<Vec<RegionLocalState>> {
    let (start, end) = keys::region_state_range();
    let mut out = Vec::new();
    let mut err = None;
    engine.scan(CF_RAFT, &start, Some(&end), |k, v| {
        if keys::region_id_of_state_key(k).is_none() {
            return true;
        }
        match RegionLocalState::decode(v) {
            Ok(s) => {
                out.push(s);
                true
            }
            Err(e) => {
                err = Some(Error::Engine(format!("corrupt region state: {e}")));
                false
            }
        }
    })?;
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
