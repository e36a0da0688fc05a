//! Region heartbeats and what they drive: recording the region, then answering its leader
//! with a replica operator's step ([`crate::replica`]), a merge (`merge`, [`crate::merge`])
//! or a leader transfer ([`crate::schedule`]); store removal (Offline until drained, then
//! Tombstone) and moves asked by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use proto::metapb;
use proto::pdpb::*;

use super::{Cluster, ID_POOL_BATCH};
use crate::command::{ApplyResult, PdCommand, PutRegions, SetStoreState};
use crate::merge::MergeAnswer;
use crate::region_map::{epoch, RegionVerdict};
use crate::replica::{Command, RegionView, StoreInfo};
use crate::schedule::{LeaderView, STORE_ALIVE_MS};
use crate::state::validate_region;
use crate::{Error, Result};

impl Cluster {
    /// Moves region `region_id`'s replica on store `from_store` to store `to_store` (PD's
    /// `transfer-peer` operator), through the replica scheduler: carried out on the region's
    /// next heartbeats.
    pub async fn transfer_peer(
        &self,
        region_id: u64,
        from_store: u64,
        to_store: u64,
    ) -> Result<()> {
        self.require_leader()?;
        let (region, target) = self.state.read(|s| {
            (
                s.regions().get(region_id).cloned(),
                s.store(to_store).map(|st| st.state()),
            )
        });
        let region = region.ok_or(Error::RegionNotFound { region_id })?;
        if target != Some(metapb::StoreState::Up) {
            return Err(Error::InvalidArgument(format!(
                "store {to_store} is not an Up store"
            )));
        }
        let from = region
            .peers
            .iter()
            .find(|p| p.store_id == from_store)
            .copied()
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "store {from_store} holds no replica of region {region_id}"
                ))
            })?;
        if self.replica_scheduler.lock().is_none() {
            return Err(Error::InvalidArgument(
                "replica scheduling is off (schedule_replicas = false)".into(),
            ));
        }
        let id = self.ids.alloc(1, &self.state).await?;
        let to = metapb::Peer {
            id,
            store_id: to_store,
            ..Default::default()
        };
        let now_ms = self.clock.now_ms();
        let size = self
            .heartbeats
            .lock()
            .region(region_id)
            .map_or(0, |st| st.approximate_size);
        let mut scheduler = self.replica_scheduler.lock();
        let scheduler = scheduler
            .as_mut()
            .ok_or_else(|| Error::InvalidArgument("replica scheduling is off".into()))?;
        scheduler
            .add_transfer_peer(&region, size, from, to, now_ms)
            .map_err(Error::InvalidArgument)?;
        tracing::info!(
            region_id,
            from_store,
            to_store,
            "transfer-peer operator added"
        );
        Ok(())
    }

    /// Asks for store `store_id` to be removed: it goes `Offline`, the replica checker moves
    /// its replicas to other stores, and once it holds none it becomes `Tombstone` (checked on
    /// its heartbeats, and here).
    pub async fn remove_store(&self, store_id: u64) -> Result<()> {
        self.require_leader()?;
        self.set_store_state(store_id, metapb::StoreState::Offline)
            .await?;
        self.maybe_tombstone(store_id).await;
        Ok(())
    }

    async fn set_store_state(&self, store_id: u64, state: metapb::StoreState) -> Result<()> {
        self.state
            .propose(PdCommand::SetStoreState(SetStoreState {
                store_id,
                state: state as i32,
            }))
            .await?;
        tracing::info!(store_id, ?state, "store state changed");
        Ok(())
    }

    /// Every `Offline` store that holds no replica any more becomes `Tombstone` (checked when
    /// a region's membership changed: a store that is down sends no heartbeats).
    async fn tombstone_drained_stores(&self) {
        let drained: Vec<u64> = self.state.read(|s| {
            let counts = s.regions().store_region_counts();
            s.stores()
                .filter(|st| {
                    st.state() == metapb::StoreState::Offline && !counts.contains_key(&st.id)
                })
                .map(|st| st.id)
                .collect()
        });
        for store_id in drained {
            self.maybe_tombstone(store_id).await;
        }
    }

    /// An `Offline` store holding no replica any more becomes `Tombstone`.
    pub(super) async fn maybe_tombstone(&self, store_id: u64) {
        let empty = self.state.read(|s| {
            s.store(store_id)
                .is_some_and(|st| st.state() == metapb::StoreState::Offline)
                && !s.regions().store_region_counts().contains_key(&store_id)
        });
        if empty {
            if let Err(e) = self
                .set_store_state(store_id, metapb::StoreState::Tombstone)
                .await
            {
                tracing::debug!(store_id, %e, "store not tombstoned yet");
            }
        }
    }

    /// Handles one region heartbeat; `Some` is a message to send back on the stream: an error,
    /// or an operator for the region's leader (a leader transfer, see [`crate::schedule`]).
    pub async fn on_region_heartbeat(
        &self,
        req: RegionHeartbeatRequest,
    ) -> Option<RegionHeartbeatResponse> {
        crate::metrics::REGION_HEARTBEATS.inc();
        let region_id = req.region.as_ref().map_or(0, |r| r.id);
        match self.handle_region_heartbeat(&req).await {
            Ok(operator) => operator,
            Err(e) => {
                tracing::debug!(region_id, error = %e, "region heartbeat failed");
                Some(RegionHeartbeatResponse {
                    header: Some(self.error_header(&e)),
                    region_id,
                    region_epoch: req.region.as_ref().and_then(|r| r.region_epoch),
                    target_peer: req.leader,
                    ..Default::default()
                })
            }
        }
    }

    /// Records a region heartbeat; returns the operator to answer it with, if any.
    async fn handle_region_heartbeat(
        &self,
        req: &RegionHeartbeatRequest,
    ) -> Result<Option<RegionHeartbeatResponse>> {
        self.require_leader()?;
        self.check_header(req.header.as_ref())?;
        self.require_bootstrapped()?;
        let region = req
            .region
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("region heartbeat without region".to_owned()))?;
        validate_region(region)?;
        let verdict = self.state.read(|s| s.regions().check(region));
        match verdict {
            RegionVerdict::Stale { newer } => {
                tracing::debug!(
                    region_id = region.id,
                    reported = ?epoch(region),
                    known_id = newer.id,
                    known = ?epoch(&newer),
                    "ignoring stale region heartbeat"
                );
                return Ok(None);
            }
            RegionVerdict::Unchanged => {}
            RegionVerdict::Changed => {
                let result = self
                    .state
                    .propose(PdCommand::PutRegions(PutRegions {
                        regions: vec![region.clone()],
                    }))
                    .await?;
                if let ApplyResult::Regions(applied) = result {
                    self.forget_regions(&applied.removed);
                    self.tombstone_drained_stores().await;
                    if applied.stale.contains(&region.id) {
                        return Ok(None);
                    }
                    tracing::debug!(region_id = region.id, epoch = ?epoch(region), "region updated");
                }
            }
        }
        self.heartbeats
            .lock()
            .on_region_heartbeat(req, self.clock.now_ms());
        // Keeping regions inside keyspaces comes before balancing their leaders.
        if self.keyspace_splits.load(Ordering::Relaxed) {
            if let Some(split) = crate::keyspace::split_operator(region, req.leader) {
                return Ok(Some(split));
            }
        }
        if let Some(stores) = self.scheduling_stores() {
            if let Some(op) = self.schedule_replicas(req, region, &stores).await? {
                return Ok(Some(op));
            }
            // A region taking part in a merge gets nothing else.
            match self.schedule_merge(req, region, &stores).await? {
                Some(MergeAnswer::Merge(target)) => {
                    return Ok(Some(self.merge_response(req, region, target)))
                }
                Some(MergeAnswer::Move(m)) => {
                    // The first step of the move the replica scheduler now carries out.
                    let cmd = Command::AddLearner(m.to);
                    return Ok(req.leader.map(|l| self.command_response(region, l, cmd)));
                }
                Some(MergeAnswer::Wait) => return Ok(None),
                None => {}
            }
        }
        Ok(self.schedule_leader(req, region))
    }

    /// Region weights per store: the regions each holds (exact: PD's region map keeps the
    /// counts on every change) at the empty-region weight, plus what their reported sizes add
    /// above it, summed again when the last sum is a second old or an operator moved since
    /// (so that a move just made is never missing from both the sum and the pending
    /// operators). With regions under 1 MiB this is exactly the count rule.
    fn store_weights(&self, now_ms: u64, progress: u64) -> BTreeMap<u64, u64> {
        let counts = self
            .state
            .read(|s| s.regions().store_region_counts().clone());
        let mut cached = self.store_weights.lock();
        let fresh = cached
            .0
            .is_some_and(|(at, p)| p == progress && now_ms.saturating_sub(at) < 1000);
        if !fresh {
            *cached = (Some((now_ms, progress)), self.excess_weights());
        }
        let mut weights = cached.1.clone();
        for (store, count) in counts {
            *weights.entry(store).or_default() += count * crate::replica::MIN_REGION_SIZE;
        }
        weights
    }

    /// What the regions' reported sizes add above the empty-region weight, per store.
    fn excess_weights(&self) -> BTreeMap<u64, u64> {
        let regions: Vec<(u64, Vec<u64>)> = self.state.read(|s| {
            s.regions()
                .iter()
                .map(|r| (r.id, r.peers.iter().map(|p| p.store_id).collect()))
                .collect()
        });
        let heartbeats = self.heartbeats.lock();
        crate::replica::store_excess(regions.iter().map(|(id, stores)| {
            let size = heartbeats.region(*id).map_or(0, |st| st.approximate_size);
            (size, stores.as_slice())
        }))
    }

    /// The stores as replica scheduling sees them (states, liveness, weights); `None` if
    /// replica scheduling is off.
    fn scheduling_stores(&self) -> Option<BTreeMap<u64, StoreInfo>> {
        let now_ms = self.clock.now_ms();
        let progress = self.replica_scheduler.lock().as_ref()?.progress();
        let weights = self.store_weights(now_ms, progress);
        let known: Vec<(u64, metapb::StoreState)> = self
            .state
            .read(|s| s.stores().map(|st| (st.id, st.state())).collect());
        let heartbeats = self.heartbeats.lock();
        let stores = known
            .into_iter()
            .map(|(id, state)| {
                let since_heartbeat_ms = heartbeats
                    .store(id)
                    .map(|h| now_ms.saturating_sub(h.last_heartbeat_ms));
                let info = StoreInfo {
                    state,
                    since_heartbeat_ms,
                    region_size: weights.get(&id).copied().unwrap_or(0),
                };
                (id, info)
            })
            .collect();
        Some(stores)
    }

    /// Refills the pool of new peer ids the schedulers take from, after one found it empty:
    /// the next heartbeat finds ids ready.
    pub(super) async fn refill_id_pool(&self) -> Result<()> {
        let first = self.ids.alloc(ID_POOL_BATCH, &self.state).await?;
        self.id_pool
            .lock()
            .extend((first..first + ID_POOL_BATCH as u64).rev());
        Ok(())
    }

    /// Runs the replica scheduler on a heartbeat from `region`'s leader; returns the step its
    /// operator asks of the leader, if any.
    async fn schedule_replicas(
        &self,
        req: &RegionHeartbeatRequest,
        region: &metapb::Region,
        stores: &BTreeMap<u64, StoreInfo>,
    ) -> Result<Option<RegionHeartbeatResponse>> {
        let now_ms = self.clock.now_ms();
        let (leader, down, pending, approximate_size) = {
            let heartbeats = self.heartbeats.lock();
            let leader = heartbeats.leader_of(region);
            let status = heartbeats.region(region.id);
            let down: Vec<u64> = status
                .map(|st| {
                    st.down_peers
                        .iter()
                        .filter_map(|d| d.peer.map(|p| p.id))
                        .collect()
                })
                .unwrap_or_default();
            let pending: Vec<u64> = status
                .map(|st| st.pending_peers.iter().map(|p| p.id).collect())
                .unwrap_or_default();
            let size = status.map_or(0, |st| st.approximate_size);
            (leader, down, pending, size)
        };
        let Some(leader) = leader.filter(|l| Some(*l) == req.leader) else {
            return Ok(None);
        };
        let mut wanted_ids = false;
        let cmd = {
            let mut pool = self.id_pool.lock();
            let mut alloc = || {
                let id = pool.pop();
                wanted_ids |= id.is_none();
                id
            };
            let mut scheduler = self.replica_scheduler.lock();
            let Some(scheduler) = scheduler.as_mut() else {
                return Ok(None);
            };
            scheduler.on_heartbeat(
                RegionView {
                    region,
                    leader: &leader,
                    down_peers: &down,
                    pending_peers: &pending,
                    approximate_size,
                },
                stores,
                now_ms,
                &mut alloc,
            )
        };
        if wanted_ids {
            self.refill_id_pool().await?;
        }
        Ok(cmd.map(|cmd| self.command_response(region, leader, cmd)))
    }

    /// The answer asking `region`'s `leader` to carry out a replica operator's step.
    pub(super) fn command_response(
        &self,
        region: &metapb::Region,
        leader: metapb::Peer,
        cmd: Command,
    ) -> RegionHeartbeatResponse {
        let mut resp = RegionHeartbeatResponse {
            header: Some(self.ok_header()),
            region_id: region.id,
            region_epoch: region.region_epoch,
            target_peer: Some(leader),
            ..Default::default()
        };
        let change = |peer: metapb::Peer, t: ConfChangeType| ChangePeer {
            peer: Some(peer),
            change_type: t as i32,
        };
        match cmd {
            Command::AddLearner(p) => {
                resp.change_peer = Some(change(p, ConfChangeType::AddLearnerNode))
            }
            Command::AddVoter(p) => resp.change_peer = Some(change(p, ConfChangeType::AddNode)),
            Command::Remove(p) => resp.change_peer = Some(change(p, ConfChangeType::RemoveNode)),
            Command::TransferLeader(p) => {
                resp.transfer_leader = Some(TransferLeader {
                    peer: Some(p),
                    peers: Vec::new(),
                })
            }
        }
        resp
    }

    /// Drops the soft state of regions that left the region map.
    pub(super) fn forget_regions(&self, ids: &[u64]) {
        self.heartbeats.lock().forget_regions(ids);
        if let Some(scheduler) = self.replica_scheduler.lock().as_mut() {
            scheduler.forget_regions(ids);
        }
        if let Some(scheduler) = &self.leader_scheduler {
            scheduler.lock().forget_regions(ids);
        }
    }

    /// Runs the balance-leader scheduler on a recorded heartbeat of `region`; returns the
    /// `TransferLeader` operator for its leader, if one is due.
    fn schedule_leader(
        &self,
        req: &RegionHeartbeatRequest,
        region: &metapb::Region,
    ) -> Option<RegionHeartbeatResponse> {
        let scheduler = self.leader_scheduler.as_ref()?;
        let now_ms = self.clock.now_ms();
        let up_stores: Vec<u64> = self.state.read(|s| {
            s.stores()
                .filter(|store| store.state() == metapb::StoreState::Up)
                .map(|store| store.id)
                .collect()
        });
        let heartbeats = self.heartbeats.lock();
        let stores: BTreeSet<u64> = up_stores
            .into_iter()
            .filter(|id| {
                heartbeats.store(*id).is_some_and(|status| {
                    now_ms.saturating_sub(status.last_heartbeat_ms) <= STORE_ALIVE_MS
                })
            })
            .collect();
        let leader = heartbeats.leader_of(region);
        let from_leader = leader.is_some() && leader == req.leader;
        let excluded: Vec<u64> = heartbeats
            .region(region.id)
            .map(|status| {
                let down = status
                    .down_peers
                    .iter()
                    .filter_map(|d| d.peer.map(|p| p.id));
                let pending = status.pending_peers.iter().map(|p| p.id);
                down.chain(pending).collect()
            })
            .unwrap_or_default();
        let region_flow = heartbeats.region(region.id).map_or(0, |s| s.flow);
        let target = scheduler.lock().on_heartbeat(
            LeaderView {
                region,
                leader: leader.as_ref(),
                from_leader,
                leader_counts: heartbeats.leader_counts(),
                leader_flows: heartbeats.leader_flows(),
                region_flow,
                stores: &stores,
                excluded: &excluded,
            },
            now_ms,
        )?;
        let leader = leader?;
        tracing::info!(
            region_id = region.id,
            from_store = leader.store_id,
            to_store = target.store_id,
            to_peer = target.id,
            flow = region_flow,
            "balance-leader: transferring leader"
        );
        Some(RegionHeartbeatResponse {
            header: Some(self.ok_header()),
            region_id: region.id,
            region_epoch: region.region_epoch,
            target_peer: Some(leader),
            transfer_leader: Some(TransferLeader {
                peer: Some(target),
                peers: Vec::new(),
            }),
            ..Default::default()
        })
    }
}
