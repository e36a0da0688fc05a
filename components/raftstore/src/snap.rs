//! Raft snapshots of a region: making one on the leader's store, and applying one on a replica
//! that fell behind the leader's first log index (or was just added).
//!
//! Protocol:
//! 1. raft-rs on the leader asks its storage for a snapshot; [`PeerSnapshotSource`] answers
//!    "temporarily unavailable" and asks the region's apply worker to make one
//!    ([`crate::apply::ApplyMsg::Snapshot`]). The worker writes out its pending batch, so the
//!    engine holds exactly the region as of its applied index, and reads every data column
//!    family of the region's range from one engine snapshot ([`generate`]). raft-rs asks again
//!    on the follower's next heartbeat response and gets it.
//! 2. The snapshot carries the region (range, epoch, peers, hence the conf state) and its data;
//!    the transport moves it (in the test network as any message; between processes over its
//!    own gRPC stream, in chunks).
//! 3. The receiving replica waits until its apply worker has applied everything it was given,
//!    then stages, in the round's synced write batch: deletion of the old range's data, the
//!    snapshot's data, the region state and the log reset ([`stage_apply`],
//!    `RaftLogStorage::apply_snapshot`). One batch: after a crash the replica has either its old
//!    state or the snapshot's, never a mix.
//!
//! Invariants:
//! - A snapshot's index and term are the apply state's, and its data is the region's as of
//!   that index: entries after it are applied on top, entries up to it never again.
//! - A replica never applies a snapshot whose range overlaps another region it hosts (checked
//!   on receipt by the store), nor one older than what it has committed (raft-rs).
//!
//! Implementation caveats: the data travels and is applied in memory, bounded by the region
//! size (split size) times the snapshots in flight; making one runs on the apply worker and
//! stalls its other regions meanwhile. TiKV writes SST files and ingests them; that is the
//! next step if regions grow large.

use std::sync::Arc;

use bytes::Bytes;
use engine::{keys, Engine, WriteBatch, CF_DEFAULT, CF_LOCK, CF_WRITE};
use parking_lot::Mutex;
use prost::Message as _;
use proto::metapb;
use proto::raft_serverpb::{MergeState, PeerState};
use raft::eraftpb::{Snapshot, SnapshotMetadata};
use raft::StorageError;
use raft_log::ApplyState;

use crate::apply::{ApplyMsg, ApplyRouter};
use crate::conf_change::conf_state_of;
use crate::{Error, Result};

/// The data column families a snapshot carries.
pub const DATA_CFS: [&str; 3] = [CF_DEFAULT, CF_LOCK, CF_WRITE];

/// What a snapshot's `data` holds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotData {
    #[prost(message, optional, tag = "1")]
    pub region: Option<metapb::Region>,
    #[prost(message, repeated, tag = "2")]
    pub cfs: Vec<CfData>,
    /// Set if the region is the source of a prepared merge (see [`crate::merge`]).
    #[prost(message, optional, tag = "3")]
    pub merge_state: Option<MergeState>,
}

/// The pairs of one column family, user keys (without the data prefix), in key order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CfData {
    #[prost(string, tag = "1")]
    pub cf: String,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub keys: Vec<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub values: Vec<Bytes>,
}

/// Makes the snapshot of `region` at `state` from what `engine` holds now (the caller made
/// sure that is exactly the state as of `state.applied_index`).
pub fn generate(
    engine: &Engine,
    region: &metapb::Region,
    state: ApplyState,
    merge_state: Option<&MergeState>,
) -> Result<Snapshot> {
    let snap = engine.snapshot();
    let (start, end) = (
        keys::data_key(&region.start_key),
        keys::data_end_key(&region.end_key),
    );
    let mut data = SnapshotData {
        region: Some(region.clone()),
        cfs: Vec::new(),
        merge_state: merge_state.cloned(),
    };
    for cf in DATA_CFS {
        let mut out = CfData {
            cf: cf.to_owned(),
            ..Default::default()
        };
        snap.scan(cf, &start, Some(&end), false, |k, v| {
            out.keys.push(Bytes::copy_from_slice(keys::origin_key(k)));
            out.values.push(Bytes::copy_from_slice(v));
            true
        })?;
        data.cfs.push(out);
    }
    let mut meta = SnapshotMetadata {
        index: state.applied_index,
        term: state.applied_term,
        ..Default::default()
    };
    meta.set_conf_state(conf_state_of(region));
    let mut s = Snapshot::default();
    s.set_metadata(meta);
    s.data = Bytes::from(data.encode_to_vec());
    Ok(s)
}

/// Decodes a snapshot's data.
pub fn decode(snap: &Snapshot) -> Result<SnapshotData> {
    let data = SnapshotData::decode(&snap.data[..])
        .map_err(|e| Error::InvalidRequest(format!("undecodable snapshot: {e}")))?;
    if data.region.is_none() {
        return Err(Error::InvalidRequest("snapshot without a region".into()));
    }
    for cf in &data.cfs {
        if cf.keys.len() != cf.values.len() || crate::cmd::engine_cf(&cf.cf).is_none() {
            return Err(Error::InvalidRequest(format!(
                "malformed snapshot column family {:?}",
                cf.cf
            )));
        }
    }
    Ok(data)
}

/// Stages a snapshot's data into `wb`: the data of `old` (the replica's range before, if it had
/// one) and of the snapshot's range go, the snapshot's pairs and region state come.
pub fn stage_apply(wb: &mut WriteBatch, old: Option<&metapb::Region>, data: &SnapshotData) {
    let region = data.region.as_ref().expect("decode checked");
    for r in old.into_iter().chain(std::iter::once(region)) {
        delete_region_data(wb, r);
    }
    for cf in &data.cfs {
        let name = crate::cmd::engine_cf(&cf.cf).expect("decode checked");
        for (k, v) in cf.keys.iter().zip(&cf.values) {
            wb.put(name, &keys::data_key(k), v);
        }
    }
    match &data.merge_state {
        Some(m) => crate::bootstrap::write_merging_state(wb, region, m),
        None => crate::bootstrap::write_region_state(wb, region, PeerState::Normal),
    }
}

/// Stages the deletion of `region`'s data in every data column family.
pub fn delete_region_data(wb: &mut WriteBatch, region: &metapb::Region) {
    let (start, end) = (
        keys::data_key(&region.start_key),
        keys::data_end_key(&region.end_key),
    );
    for cf in DATA_CFS {
        wb.delete_range(cf, &start, &end);
    }
}

/// Where a leader's snapshot is in the making.
#[derive(Default)]
pub enum GenState {
    #[default]
    Idle,
    Generating,
    Ready(Snapshot),
    Failed,
}

pub type SharedGen = Arc<Mutex<GenState>>;

/// The snapshot source of one region's log storage (see the module docs).
pub struct PeerSnapshotSource {
    pub region_id: u64,
    pub gen: SharedGen,
    pub apply: ApplyRouter,
}

impl raft_log::SnapshotSource for PeerSnapshotSource {
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let mut gen = self.gen.lock();
        match &*gen {
            // A snapshot made before `to` joined does not name it: raft-rs there would refuse
            // it, so only a newer one will do.
            GenState::Ready(s) if s.get_metadata().index >= request_index && names(s, to) => {
                return Ok(s.clone())
            }
            GenState::Generating => {}
            GenState::Idle | GenState::Ready(_) | GenState::Failed => {
                *gen = GenState::Generating;
                crate::metrics::SNAPSHOTS_GENERATED.inc();
                self.apply.send(
                    self.region_id,
                    ApplyMsg::Snapshot {
                        region_id: self.region_id,
                        gen: self.gen.clone(),
                    },
                );
            }
        }
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

/// Whether the snapshot's conf state has peer `id` (a follower refuses one without itself).
pub fn names(snap: &Snapshot, id: u64) -> bool {
    let cs = snap.get_metadata().get_conf_state();
    cs.voters
        .iter()
        .chain(&cs.learners)
        .chain(&cs.voters_outgoing)
        .any(|v| *v == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::EngineOptions;

    fn region(id: u64, start: &[u8], end: &[u8]) -> metapb::Region {
        metapb::Region {
            id,
            start_key: start.to_vec().into(),
            end_key: end.to_vec().into(),
            peers: vec![metapb::Peer {
                id: 10,
                store_id: 1,
                ..Default::default()
            }],
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 2,
                version: 3,
            }),
        }
    }

    fn put(engine: &Engine, cf: &'static str, k: &[u8], v: &[u8]) {
        let mut wb = WriteBatch::new();
        wb.put(cf, &keys::data_key(k), v);
        engine.write(wb, false).unwrap();
    }

    fn all(engine: &Engine, cf: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        engine
            .snapshot()
            .scan(
                cf,
                &keys::data_key(b""),
                Some(&keys::data_end_key(b"")),
                false,
                |k, v| {
                    out.push((keys::origin_key(k).to_vec(), v.to_vec()));
                    true
                },
            )
            .unwrap();
        out
    }

    #[test]
    fn a_snapshot_carries_exactly_the_region_and_replaces_the_old_range() {
        let dir = tempfile::tempdir().unwrap();
        let src = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        put(&src, CF_DEFAULT, b"a", b"outside");
        put(&src, CF_DEFAULT, b"m", b"1");
        put(&src, CF_LOCK, b"n", b"lock");
        put(&src, CF_WRITE, b"o", b"write");
        put(&src, CF_DEFAULT, b"z", b"outside");
        let r = region(7, b"k", b"x");
        let state = ApplyState {
            applied_index: 42,
            applied_term: 6,
            truncated_index: 40,
            truncated_term: 6,
        };
        let snap = generate(&src, &r, state, None).unwrap();
        assert!(names(&snap, 10) && !names(&snap, 11));
        assert_eq!(snap.get_metadata().index, 42);
        assert_eq!(snap.get_metadata().term, 6);
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![10]);

        let dir2 = tempfile::tempdir().unwrap();
        let dst = Engine::open(dir2.path(), &EngineOptions::default()).unwrap();
        put(&dst, CF_DEFAULT, b"a", b"kept");
        put(&dst, CF_DEFAULT, b"l", b"stale, inside the new range");
        put(&dst, CF_DEFAULT, b"y", b"stale, in the old range only");
        let old = region(7, b"k", b"z");
        let data = decode(&snap).unwrap();
        let mut wb = WriteBatch::new();
        stage_apply(&mut wb, Some(&old), &data);
        dst.write(wb, true).unwrap();
        assert_eq!(
            all(&dst, CF_DEFAULT),
            vec![
                (b"a".to_vec(), b"kept".to_vec()),
                (b"m".to_vec(), b"1".to_vec())
            ]
        );
        assert_eq!(all(&dst, CF_LOCK), vec![(b"n".to_vec(), b"lock".to_vec())]);
        assert_eq!(
            all(&dst, CF_WRITE),
            vec![(b"o".to_vec(), b"write".to_vec())]
        );
        let states = crate::bootstrap::load_region_states(&dst).unwrap();
        assert_eq!(states.len(), 1);
        assert_eq!(states[0].region.as_ref(), Some(&r));
    }

    #[test]
    fn malformed_snapshot_data_is_refused() {
        let mut s = Snapshot {
            data: Bytes::from_static(b"\xff\xff\xff"),
            ..Default::default()
        };
        assert!(decode(&s).is_err());
        s.data = Bytes::from(SnapshotData::default().encode_to_vec());
        assert!(decode(&s).is_err(), "no region");
        let bad = SnapshotData {
            region: Some(region(1, b"", b"")),
            cfs: vec![CfData {
                cf: "raft".into(),
                keys: vec![Bytes::from_static(b"k")],
                values: vec![Bytes::from_static(b"v")],
            }],
            merge_state: None,
        };
        s.data = Bytes::from(bad.encode_to_vec());
        assert!(
            decode(&s).is_err(),
            "raft cf must never come from a snapshot"
        );
    }
}
