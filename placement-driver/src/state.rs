//! The PD state machine: the replicated part of PD's state and the only code that changes it.
//!
//! [`PdState`] holds the cluster id and bootstrap flag, the stores, the regions (a
//! [`RegionMap`]), the upper bounds of the id allocator and of the TSO window, and the GC safe
//! point. It changes only by applying a [`PdCommand`]:
//!
//! 1. `PdState::plan` checks the command against the current state and computes its effect, a
//!    list of changes, without touching anything. Rejections ([`Error::AlreadyBootstrapped`], …)
//!    are decided here, deterministically.
//! 2. The changes are written to the engine in **one** write batch: PD's Raft node
//!    (`raft_node`) stages it with the applied index, unsynced (a crash replays the log above
//!    the applied index); [`PdState::apply`] writes it synced on its own.
//! 3. `PdState::commit` applies the same changes to memory.
//!
//! Invariants:
//! - Apply is deterministic: the same sequence of commands on the same initial state gives the
//!   same state and the same results on every node (no clock, no randomness, no config reads;
//!   maps are ordered).
//! - Memory and disk agree: memory changes only after the batch holding the same changes is
//!   written, so a failed write leaves both at the previous state.
//! - Bounds and the GC safe point only grow.
//! - The region map holds no overlapping regions (see [`crate::region_map`]).
//!
//! Persistent layout (column family `default` of PD's own engine):
//! `pd/meta` → [`PdMeta`], `pd/store/<id u64 BE>` → `metapb.Store`,
//! `pd/region/<id u64 BE>` → `metapb.Region`, all protobuf-encoded.

use std::collections::{BTreeMap, BTreeSet};

use engine::{Engine, WriteBatch, CF_DEFAULT};
use prost::Message;
use proto::metapb::{self, StoreState};

use crate::command::{ApplyResult, Bootstrap, PdCommand, RegionsApplied};
use crate::region_map::{RegionMap, RegionVerdict};
use crate::{Error, Result};

/// Store id.
pub type StoreId = u64;

const META_KEY: &[u8] = b"pd/meta";
const STORE_PREFIX: &[u8] = b"pd/store/";
const REGION_PREFIX: &[u8] = b"pd/region/";

/// Cluster-wide scalars of the state machine, persisted as one record.
#[derive(Clone, PartialEq, Message)]
pub struct PdMeta {
    /// Zero until [`PdCommand::InitCluster`].
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(bool, tag = "2")]
    pub bootstrapped: bool,
    #[prost(uint32, tag = "3")]
    pub max_peer_count: u32,
    /// Every id `<= id_bound` may have been handed out.
    #[prost(uint64, tag = "4")]
    pub id_bound: u64,
    /// No timestamp with a physical part `> tso_bound_ms` has been handed out.
    #[prost(uint64, tag = "5")]
    pub tso_bound_ms: u64,
    #[prost(uint64, tag = "6")]
    pub gc_safe_point: u64,
}

/// One change computed by `PdState::plan`.
#[derive(Clone, Debug)]
enum Change {
    Meta(PdMeta),
    PutStore(metapb::Store),
    PutRegion(metapb::Region),
    DeleteRegion(u64),
}

/// The effect of a command, computed but not yet applied.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    changes: Vec<Change>,
    result: ApplyResult,
}

impl Plan {
    fn no_op(result: ApplyResult) -> Plan {
        Plan {
            changes: Vec::new(),
            result,
        }
    }

    /// Whether applying the plan changes nothing.
    pub fn is_no_op(&self) -> bool {
        self.changes.is_empty()
    }

    /// The write batch persisting the plan's changes.
    pub fn write_batch(&self) -> WriteBatch {
        let mut wb = WriteBatch::new();
        for change in &self.changes {
            match change {
                Change::Meta(meta) => wb.put(CF_DEFAULT, META_KEY, &meta.encode_to_vec()),
                Change::PutStore(store) => {
                    wb.put(CF_DEFAULT, &store_key(store.id), &store.encode_to_vec())
                }
                Change::PutRegion(region) => {
                    wb.put(CF_DEFAULT, &region_key(region.id), &region.encode_to_vec())
                }
                Change::DeleteRegion(id) => wb.delete(CF_DEFAULT, &region_key(*id)),
            }
        }
        wb
    }
}

fn store_key(id: StoreId) -> Vec<u8> {
    [STORE_PREFIX, &id.to_be_bytes()].concat()
}

fn region_key(id: u64) -> Vec<u8> {
    [REGION_PREFIX, &id.to_be_bytes()].concat()
}

/// The smallest key above every key starting with `prefix` (prefixes here end below 0xff).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The key ranges (`[start, end)` in column family `default`) of the replicated state: what a
/// Raft snapshot carries ([`crate::snapshot`]). The member's own records are outside them.
pub(crate) fn replicated_ranges() -> [(Vec<u8>, Vec<u8>); 4] {
    let just = |key: &[u8]| {
        let mut end = key.to_vec();
        end.push(0);
        (key.to_vec(), end)
    };
    [
        just(META_KEY),
        just(crate::members::MEMBER_LIST_KEY),
        (STORE_PREFIX.to_vec(), prefix_end(STORE_PREFIX)),
        (REGION_PREFIX.to_vec(), prefix_end(REGION_PREFIX)),
    ]
}

/// The replicated state of PD. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct PdState {
    meta: PdMeta,
    stores: BTreeMap<StoreId, metapb::Store>,
    regions: RegionMap,
}

/// The cluster id persisted in `engine`, 0 if none yet.
pub(crate) fn load_cluster_id(engine: &Engine) -> Result<u64> {
    match engine.get(CF_DEFAULT, META_KEY)? {
        Some(data) => PdMeta::decode(data.as_slice())
            .map(|meta| meta.cluster_id)
            .map_err(|e| Error::Corrupt(format!("meta record: {e}"))),
        None => Ok(0),
    }
}

impl PdState {
    /// Loads the state last written to `engine` (the empty state for a fresh engine).
    pub fn load(engine: &Engine) -> Result<PdState> {
        let meta = match engine.get(CF_DEFAULT, META_KEY)? {
            Some(data) => PdMeta::decode(data.as_slice())
                .map_err(|e| Error::Corrupt(format!("meta record: {e}")))?,
            None => PdMeta::default(),
        };
        let mut stores = BTreeMap::new();
        let mut regions = RegionMap::new();
        let mut failure = None;
        engine.scan(
            CF_DEFAULT,
            STORE_PREFIX,
            Some(&prefix_end(STORE_PREFIX)),
            |key, value| match metapb::Store::decode(value) {
                Ok(store) => {
                    stores.insert(store.id, store);
                    true
                }
                Err(e) => {
                    failure = Some(Error::Corrupt(format!("store record {key:?}: {e}")));
                    false
                }
            },
        )?;
        engine.scan(
            CF_DEFAULT,
            REGION_PREFIX,
            Some(&prefix_end(REGION_PREFIX)),
            |key, value| match metapb::Region::decode(value) {
                Ok(region) => {
                    let id = region.id;
                    if !regions.overlapping(&region).is_empty() {
                        failure = Some(Error::Corrupt(format!(
                            "persisted region {id} overlaps another region"
                        )));
                        return false;
                    }
                    regions.insert(region);
                    true
                }
                Err(e) => {
                    failure = Some(Error::Corrupt(format!("region record {key:?}: {e}")));
                    false
                }
            },
        )?;
        if let Some(err) = failure {
            return Err(err);
        }
        Ok(PdState {
            meta,
            stores,
            regions,
        })
    }

    /// Applies `cmd`: plan, write the changes synced to `engine`, commit them to memory.
    pub fn apply(&mut self, engine: &Engine, cmd: &PdCommand) -> Result<ApplyResult> {
        let plan = self.plan(cmd)?;
        if !plan.is_no_op() {
            engine.write(plan.write_batch(), true)?;
        }
        Ok(self.commit(plan))
    }

    /// Checks `cmd` against the state and computes its effect. Changes nothing.
    pub(crate) fn plan(&self, cmd: &PdCommand) -> Result<Plan> {
        match cmd {
            PdCommand::InitCluster(init) => self.plan_init_cluster(init.cluster_id),
            PdCommand::Bootstrap(bootstrap) => self.plan_bootstrap(bootstrap),
            PdCommand::PutStore(put) => self.plan_put_store(put.store.as_ref(), put.replaces),
            PdCommand::SetStoreState(set) => self.plan_set_store_state(set),
            PdCommand::PutRegions(put) => self.plan_put_regions(&put.regions),
            PdCommand::SetIdBound(bound) => Ok(self.plan_meta(|meta| {
                meta.id_bound = meta.id_bound.max(*bound);
                ApplyResult::Done
            })),
            PdCommand::SetTsoBound(bound) => Ok(self.plan_meta(|meta| {
                meta.tso_bound_ms = meta.tso_bound_ms.max(*bound);
                ApplyResult::Done
            })),
            PdCommand::UpdateGcSafePoint(safe_point) => Ok(self.plan_meta(|meta| {
                meta.gc_safe_point = meta.gc_safe_point.max(*safe_point);
                ApplyResult::GcSafePoint(meta.gc_safe_point)
            })),
            // Log GC changes the Raft log, not the state (see `crate::log_gc`).
            PdCommand::CompactLog(_) => Ok(Plan::no_op(ApplyResult::Done)),
        }
    }

    /// Applies a plan computed by `PdState::plan` on this very state (no command may have been
    /// committed in between) to memory.
    pub(crate) fn commit(&mut self, plan: Plan) -> ApplyResult {
        for change in plan.changes {
            match change {
                Change::Meta(meta) => self.meta = meta,
                Change::PutStore(store) => {
                    self.stores.insert(store.id, store);
                }
                Change::PutRegion(region) => {
                    self.regions.insert(region);
                }
                Change::DeleteRegion(id) => {
                    self.regions.remove(id);
                }
            }
        }
        plan.result
    }

    /// A plan changing only the meta record through `f`; a no-op if `f` changes nothing.
    fn plan_meta(&self, f: impl FnOnce(&mut PdMeta) -> ApplyResult) -> Plan {
        let mut meta = self.meta.clone();
        let result = f(&mut meta);
        if meta == self.meta {
            Plan::no_op(result)
        } else {
            Plan {
                changes: vec![Change::Meta(meta)],
                result,
            }
        }
    }

    fn require_bootstrapped(&self) -> Result<()> {
        if self.meta.bootstrapped {
            Ok(())
        } else {
            Err(Error::NotBootstrapped)
        }
    }

    fn plan_init_cluster(&self, cluster_id: u64) -> Result<Plan> {
        if cluster_id == 0 {
            return Err(Error::InvalidArgument(
                "cluster id must not be 0".to_owned(),
            ));
        }
        match self.meta.cluster_id {
            0 => Ok(self.plan_meta(|meta| {
                meta.cluster_id = cluster_id;
                ApplyResult::Done
            })),
            current if current == cluster_id => Ok(Plan::no_op(ApplyResult::Done)),
            current => Err(Error::ClusterMismatch {
                expected: current,
                got: cluster_id,
            }),
        }
    }

    fn plan_bootstrap(&self, bootstrap: &Bootstrap) -> Result<Plan> {
        if self.meta.cluster_id == 0 {
            return Err(Error::Internal(
                "bootstrap before the cluster id is initialized".to_owned(),
            ));
        }
        if self.meta.bootstrapped {
            return Err(Error::AlreadyBootstrapped {
                cluster_id: self.meta.cluster_id,
            });
        }
        let store = bootstrap
            .store
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("bootstrap without a store".to_owned()))?;
        let region = bootstrap
            .region
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("bootstrap without a region".to_owned()))?;
        validate_store(store)?;
        validate_region(region)?;
        if !region.start_key.is_empty() || !region.end_key.is_empty() {
            return Err(Error::InvalidArgument(
                "the first region must cover the whole keyspace".to_owned(),
            ));
        }
        if region.peers.is_empty() {
            return Err(Error::InvalidArgument(
                "the first region has no peers".to_owned(),
            ));
        }
        // Replicas go on the bootstrapping store and on stores that registered before it.
        if let Some(peer) = region
            .peers
            .iter()
            .find(|p| p.store_id != store.id && !self.stores.contains_key(&p.store_id))
        {
            return Err(Error::InvalidArgument(format!(
                "peer {} of the first region is on store {}, which is neither the bootstrap \
                 store {} nor a registered store",
                peer.id, peer.store_id, store.id
            )));
        }
        let mut stores_seen = std::collections::HashSet::new();
        if let Some(peer) = region
            .peers
            .iter()
            .find(|p| !stores_seen.insert(p.store_id))
        {
            return Err(Error::InvalidArgument(format!(
                "the first region has two peers on store {}",
                peer.store_id
            )));
        }
        // Ids chosen by the bootstrapping store normally come from AllocID, but make sure the
        // allocator never hands them out again even if they did not.
        let max_id = region
            .peers
            .iter()
            .map(|p| p.id)
            .chain([store.id, region.id])
            .max()
            .unwrap_or(0);
        let mut meta = self.meta.clone();
        meta.bootstrapped = true;
        meta.max_peer_count = bootstrap.max_peer_count;
        meta.id_bound = meta.id_bound.max(max_id);
        Ok(Plan {
            changes: vec![
                Change::PutStore(clean_store(store.clone())),
                Change::PutRegion(region.clone()),
                Change::Meta(meta),
            ],
            result: ApplyResult::Done,
        })
    }

    /// Stores may register before the cluster is bootstrapped: the store that bootstraps it
    /// places the first region's replicas on the stores registered so far.
    fn plan_put_store(&self, store: Option<&metapb::Store>, replaces: u64) -> Result<Plan> {
        let store =
            store.ok_or_else(|| Error::InvalidArgument("put store without a store".to_owned()))?;
        validate_store(store)?;
        let mut new = clean_store(store.clone());
        if let Some(existing) = self.stores.get(&store.id) {
            match existing.state() {
                StoreState::Tombstone => {
                    return Err(Error::StoreTombstone { store_id: store.id });
                }
                // Offline is an operator's decision, a restarting store does not undo it.
                StoreState::Offline => new.set_state(StoreState::Offline),
                StoreState::Up => {}
            }
        }
        let mut changes = Vec::new();
        if let Some(other) = self.stores.values().find(|other| {
            other.id != store.id
                && other.address == store.address
                && other.state() != StoreState::Tombstone
        }) {
            if other.id != replaces || self.stores.contains_key(&store.id) {
                return Err(Error::DuplicatedStoreAddress {
                    store_id: store.id,
                    address: store.address.clone(),
                    other_store_id: other.id,
                });
            }
            // A new store took over the address of one that is gone (its data lost): the old
            // one is drained like a removed store.
            if other.state() == StoreState::Up {
                let mut gone = other.clone();
                gone.set_state(StoreState::Offline);
                changes.push(Change::PutStore(gone));
            }
        }
        if changes.is_empty() && self.stores.get(&store.id) == Some(&new) {
            return Ok(Plan::no_op(ApplyResult::Done));
        }
        changes.push(Change::PutStore(new));
        Ok(Plan {
            changes,
            result: ApplyResult::Done,
        })
    }

    /// See [`crate::command::SetStoreState`] for the transitions allowed.
    fn plan_set_store_state(&self, set: &crate::command::SetStoreState) -> Result<Plan> {
        let store = self.stores.get(&set.store_id).ok_or(Error::StoreNotFound {
            store_id: set.store_id,
        })?;
        let to = StoreState::try_from(set.state)
            .map_err(|_| Error::InvalidArgument(format!("unknown store state {}", set.state)))?;
        let from = store.state();
        if from == to {
            return Ok(Plan::no_op(ApplyResult::Done));
        }
        match (from, to) {
            (StoreState::Up, StoreState::Offline) | (StoreState::Offline, StoreState::Up) => {}
            (StoreState::Offline, StoreState::Tombstone) => {
                let held = self
                    .regions
                    .store_region_counts()
                    .get(&set.store_id)
                    .copied()
                    .unwrap_or(0);
                if held > 0 {
                    return Err(Error::InvalidArgument(format!(
                        "store {} still holds {held} region replicas",
                        set.store_id
                    )));
                }
            }
            (StoreState::Tombstone, _) => {
                return Err(Error::StoreTombstone {
                    store_id: set.store_id,
                })
            }
            (from, to) => {
                return Err(Error::InvalidArgument(format!(
                    "store {} cannot go from {from:?} to {to:?}",
                    set.store_id
                )))
            }
        }
        let mut new = store.clone();
        new.set_state(to);
        Ok(Plan {
            changes: vec![Change::PutStore(new)],
            result: ApplyResult::Done,
        })
    }

    fn plan_put_regions(&self, regions: &[metapb::Region]) -> Result<Plan> {
        self.require_bootstrapped()?;
        for region in regions {
            validate_region(region)?;
        }
        // Apply the regions in order on a scratch map holding every known region they can
        // affect (same id or overlapping range), then diff the scratch map against the state.
        // Known regions never overlap each other, so loading them into the scratch map removes
        // nothing.
        let mut scratch = RegionMap::new();
        for region in regions {
            for known in self
                .regions
                .overlapping(region)
                .into_iter()
                .chain(self.regions.get(region.id))
            {
                if scratch.get(known.id).is_none() {
                    scratch.insert(known.clone());
                }
            }
        }
        let mut applied = RegionsApplied::default();
        let mut touched = BTreeSet::new();
        for region in regions {
            match scratch.check(region) {
                RegionVerdict::Stale { .. } => applied.stale.push(region.id),
                RegionVerdict::Unchanged => {}
                RegionVerdict::Changed => {
                    for removed in scratch.insert(region.clone()) {
                        touched.insert(removed.id);
                    }
                    touched.insert(region.id);
                }
            }
        }
        let mut changes = Vec::new();
        for id in touched {
            match scratch.get(id) {
                Some(region) => {
                    applied.updated.push(id);
                    changes.push(Change::PutRegion(region.clone()));
                }
                None => {
                    if self.regions.get(id).is_some() {
                        applied.removed.push(id);
                        changes.push(Change::DeleteRegion(id));
                    }
                }
            }
        }
        applied.stale.sort_unstable();
        applied.stale.dedup();
        Ok(Plan {
            changes,
            result: ApplyResult::Regions(applied),
        })
    }

    /// The cluster id, zero before initialization.
    pub fn cluster_id(&self) -> u64 {
        self.meta.cluster_id
    }

    pub fn is_bootstrapped(&self) -> bool {
        self.meta.bootstrapped
    }

    /// The persisted scalars.
    pub fn meta(&self) -> &PdMeta {
        &self.meta
    }

    /// The cluster configuration as reported by `GetClusterConfig`.
    pub fn cluster_config(&self) -> metapb::Cluster {
        metapb::Cluster {
            id: self.meta.cluster_id,
            max_peer_count: self.meta.max_peer_count,
        }
    }

    pub fn store(&self, id: StoreId) -> Option<&metapb::Store> {
        self.stores.get(&id)
    }

    /// All stores by ascending id.
    pub fn stores(&self) -> impl Iterator<Item = &metapb::Store> + '_ {
        self.stores.values()
    }

    pub fn regions(&self) -> &RegionMap {
        &self.regions
    }
}

/// The store as persisted: soft fields (heartbeat time) are not part of the replicated state.
fn clean_store(mut store: metapb::Store) -> metapb::Store {
    store.last_heartbeat = 0;
    store
}

fn validate_store(store: &metapb::Store) -> Result<()> {
    if store.id == 0 {
        return Err(Error::InvalidArgument("store id must not be 0".to_owned()));
    }
    if store.address.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "store {} has no address",
            store.id
        )));
    }
    Ok(())
}

/// Checks the shape of a reported region (ids, epoch, key range), not its freshness.
pub fn validate_region(region: &metapb::Region) -> Result<()> {
    if region.id == 0 {
        return Err(Error::InvalidArgument("region id must not be 0".to_owned()));
    }
    if region.region_epoch.is_none() {
        return Err(Error::InvalidArgument(format!(
            "region {} has no epoch",
            region.id
        )));
    }
    if !region.end_key.is_empty() && region.start_key >= region.end_key {
        return Err(Error::InvalidArgument(format!(
            "region {} has an empty or inverted range",
            region.id
        )));
    }
    if region.peers.iter().any(|p| p.id == 0 || p.store_id == 0) {
        return Err(Error::InvalidArgument(format!(
            "region {} has a peer with id 0 or store 0",
            region.id
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
