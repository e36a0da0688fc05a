//! The RPC logic of PD: one `on_<rpc>` handler per `pdpb.PD` method.
//!
//! [`Cluster`] ties together the state machine ([`StateHandle`]), the timestamp oracle
//! ([`Tso`]), the id allocator ([`Ids`]) and the heartbeat soft state ([`HeartbeatCache`]).
//! Handlers take a request message and return the response message *without* its header;
//! [`crate::service`] checks the request header and fills the response header, including the
//! error conversion.
//!
//! Rules the handlers follow:
//! - Reads are answered from the state as of the last applied command, never from a proposal in
//!   flight.
//! - Every change goes through [`StateHandle::propose`]; handlers pre-check with a read to avoid
//!   proposing commands that would be no-ops (notably for unchanged region heartbeats), but the
//!   state machine re-checks, since with Raft the state may move between check and apply.
//! - Requests needing a bootstrapped cluster answer [`Error::NotBootstrapped`] before that.
//! - Every RPC but `GetMembers` is leader-only: [`Cluster::require_leader`] (called by
//!   [`crate::service`] before the handler) answers [`Error::NotLeader`], naming the leader, on
//!   any node that is not a serving leader (see [`crate::raft_node`]). TSO and id allocation
//!   check again, under their allocator lock, right before handing anything out.
//! - Soft state (leaders, statistics) is per node: a new leader rebuilds it from heartbeats.
//! - Scheduling: a region heartbeat from the region's leader, once recorded, may be answered
//!   on the stream with a leader transfer by the balance-leader scheduler ([`crate::schedule`]),
//!   when `schedule_leader_balance` is on. Only the serving leader answers heartbeats at all.
//!
//! - Replica scheduling ([`crate::replica`]): heartbeats from a region's leader may be answered
//!   with one step of a replica operator (add learner, promote, remove, or a leader transfer
//!   ahead of removing the leader), when `schedule_replicas` is on. It comes before leader
//!   balancing.
//!
//! - Merge ([`crate::merge`], in `merge`): after the replica checkers, a small region's leader
//!   may be answered with `merge { target }`, on every heartbeat until the merged target
//!   replaces it in the region map; neither region gets another operator meanwhile. Merge
//!   operators live in the replica scheduler, so they need `schedule_replicas` too.
//!
//! - Store removal: `remove_store` makes a store Offline; it becomes Tombstone once the
//!   replica checker moved its last replica away (checked on its heartbeats and whenever a
//!   region's membership changes).
//!
//! The region heartbeat and everything it drives (replica operators, leader balance, store
//! removal) is in `heartbeats`.
//!
//! `down_peers` reported by region leaders are shown and keep balance-region (and merges) off
//! the region; the replica checker judges stores by their heartbeats.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use proto::metapb;
use proto::pdpb::{self, *};

use crate::clock::Clock;
use crate::command::{ApplyResult, Bootstrap, PdCommand, PutRegions, PutStore};
use crate::heartbeat::{HeartbeatCache, RegionStatus, StoreStatus};
use crate::id::Ids;
use crate::proposer::StateHandle;
use crate::region_map::epoch;
use crate::replica::{ReplicaConfig, ReplicaScheduler};
use crate::schedule::{LeaderBalanceConfig, LeaderScheduler, STORE_ALIVE_MS};
use crate::tso::Tso;
use crate::{Error, Result};

mod heartbeats;
mod merge;

/// Ids the replica scheduler takes from the allocator at a time.
const ID_POOL_BATCH: u32 = 16;

/// How long a membership change waits for one in progress (see [`Cluster::change_members`]).
const MEMBER_CHANGE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The most regions one `AskBatchSplit` may ask for.
pub const MAX_SPLIT_COUNT: u32 = 1000;

/// `((summed at ms, operator progress), excess weight per store)`.
type ExcessCache = (Option<(u64, u64)>, BTreeMap<u64, u64>);

/// PD's services over its state; see the module docs.
#[derive(Debug)]
pub struct Cluster {
    member: Member,
    max_replicas: u32,
    clock: Arc<dyn Clock>,
    state: StateHandle,
    tso: Tso,
    ids: Ids,
    heartbeats: Mutex<HeartbeatCache>,
    /// The balance-leader scheduler; `None` when leader balancing is off. Locked after
    /// `heartbeats` when both are held.
    leader_scheduler: Option<Mutex<LeaderScheduler>>,
    /// Whether heartbeats are answered with splits at keyspace boundaries.
    keyspace_splits: AtomicBool,
    /// Replica scheduling; `None` when off. Locked after `heartbeats` when both are held.
    replica_scheduler: Mutex<Option<ReplicaScheduler>>,
    /// Ids ready for new peers (the scheduler decides synchronously; ids come from Raft).
    id_pool: Mutex<Vec<u64>>,
    /// What regions' sizes add to each store's weight above the empty-region weight (see
    /// `replica::store_excess`), with when and at which operator progress it was summed: summed
    /// again a second later or once an operator moved, not on every heartbeat.
    store_weights: Mutex<ExcessCache>,
    /// TLS of this member's connections (the HTTP API asks the other members for health).
    security: security::SecurityManager,
}

impl Cluster {
    pub fn new(
        member: Member,
        max_replicas: u32,
        clock: Arc<dyn Clock>,
        state: StateHandle,
        tso: Tso,
        ids: Ids,
        leader_balance: Option<LeaderBalanceConfig>,
    ) -> Cluster {
        Cluster {
            member,
            max_replicas,
            clock,
            state,
            tso,
            ids,
            heartbeats: Mutex::new(HeartbeatCache::default()),
            leader_scheduler: leader_balance.map(|c| Mutex::new(LeaderScheduler::new(c))),
            keyspace_splits: AtomicBool::new(true),
            replica_scheduler: Mutex::new(None),
            id_pool: Mutex::new(Vec::new()),
            store_weights: Mutex::new((None, BTreeMap::new())),
            security: security::SecurityManager::plaintext(),
        }
    }

    /// Connects to the other members with `security`'s TLS.
    pub fn with_security(mut self, security: security::SecurityManager) -> Cluster {
        self.security = security;
        self
    }

    /// The TLS settings of this member's connections.
    pub fn security(&self) -> &security::SecurityManager {
        &self.security
    }

    /// Turns replica scheduling on (with `config`) or off (see [`crate::replica`]).
    pub fn set_replica_scheduling(&self, config: Option<ReplicaConfig>) {
        *self.replica_scheduler.lock() = config.map(ReplicaScheduler::new);
    }

    /// Replica operators in flight, by region id (soft state of the serving leader).
    /// The checkers and schedulers running, by PD's names.
    pub fn schedulers(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.leader_scheduler.is_some() {
            out.push("balance-leader-scheduler");
        }
        if let Some(s) = self.replica_scheduler.lock().as_ref() {
            out.push("replica-checker");
            if s.config().balance_regions {
                out.push("balance-region-scheduler");
            }
            if s.config().merge.enabled {
                out.push("merge-checker");
            }
        }
        out
    }

    pub fn replica_operators(&self) -> Vec<(u64, crate::replica::Operator)> {
        self.replica_scheduler
            .lock()
            .as_ref()
            .map(|s| s.operators().iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default()
    }

    /// Turns the splits at keyspace boundaries on or off (see [`crate::keyspace`]).
    pub fn set_keyspace_splits(&self, on: bool) {
        self.keyspace_splits.store(on, Ordering::Relaxed);
    }

    /// The cluster id, 0 while this node does not know it yet.
    pub fn cluster_id(&self) -> u64 {
        self.state.status().cluster_id()
    }

    /// Succeeds only on a serving leader (ready, within its lease) of an initialized cluster.
    pub fn require_leader(&self) -> Result<()> {
        if self.state.serving_term().is_some() && self.cluster_id() != 0 {
            Ok(())
        } else {
            Err(self.state.not_leader())
        }
    }

    /// Adds or removes a PD member (see [`crate::members`]); on the serving leader only. While
    /// another change is in progress (the leader's own promotion of a learner, say) it waits
    /// for it, up to 5 s.
    pub async fn change_members(
        &self,
        request: crate::members::MemberRequest,
    ) -> Result<crate::members::MemberList> {
        let deadline = tokio::time::Instant::now() + MEMBER_CHANGE_WAIT;
        loop {
            self.require_leader()?;
            match self.state.change_members(request.clone()).await {
                Err(Error::MembershipChangeInProgress)
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await
                }
                result => return result,
            }
        }
    }

    pub fn member(&self) -> &Member {
        &self.member
    }

    pub fn state(&self) -> &StateHandle {
        &self.state
    }

    /// Wall time on PD's clock, Unix ms.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// What this node last heard from the store, if anything (soft state, see
    /// [`crate::heartbeat`]).
    pub fn store_status(&self, store_id: u64) -> Option<StoreStatus> {
        self.heartbeats.lock().store(store_id).cloned()
    }

    /// For each of `regions`, in order: its recorded leader (if still one of its peers) and what
    /// its last heartbeat reported (soft state, see [`crate::heartbeat`]).
    pub fn region_statuses(
        &self,
        regions: &[metapb::Region],
    ) -> Vec<(Option<metapb::Peer>, Option<RegionStatus>)> {
        let heartbeats = self.heartbeats.lock();
        regions
            .iter()
            .map(|r| (heartbeats.leader_of(r), heartbeats.region(r.id).cloned()))
            .collect()
    }

    /// Checks the cluster id of a request; zero (unset) is accepted. A node that does not know
    /// the cluster id yet accepts everything (it serves only `GetMembers` then).
    pub fn check_header(&self, header: Option<&RequestHeader>) -> Result<()> {
        let got = header.map_or(0, |h| h.cluster_id);
        let expected = self.cluster_id();
        if got != 0 && expected != 0 && got != expected {
            return Err(Error::ClusterMismatch { expected, got });
        }
        Ok(())
    }

    fn require_bootstrapped(&self) -> Result<()> {
        if self.state.read(|s| s.is_bootstrapped()) {
            Ok(())
        } else {
            Err(Error::NotBootstrapped)
        }
    }

    /// Extends the TSO window ahead of time; called periodically.
    pub async fn tso_tick(&self) -> Result<()> {
        self.tso.tick(&self.state).await
    }

    /// Every member of the group, and the Raft leader as known here (absent while unknown).
    pub async fn on_get_members(&self, _req: GetMembersRequest) -> Result<GetMembersResponse> {
        let members: Vec<Member> = self
            .state
            .status()
            .members()
            .iter()
            .map(|m| {
                if m.id == self.member.member_id {
                    self.member.clone()
                } else {
                    Member {
                        name: m.name.clone(),
                        member_id: m.id,
                        peer_urls: vec![m.url.clone()],
                        client_urls: vec![m.url.clone()],
                        ..Default::default()
                    }
                }
            })
            .collect();
        let leader_id = self.state.leadership().leader_id;
        let leader = members.iter().find(|m| m.member_id == leader_id).cloned();
        Ok(GetMembersResponse {
            header: None,
            members,
            etcd_leader: leader.clone(),
            leader,
        })
    }

    pub async fn on_tso(&self, req: TsoRequest) -> Result<TsoResponse> {
        let ts = self.tso.get(req.count, &self.state).await?;
        crate::metrics::TSO_TIMESTAMPS.inc_by(u64::from(req.count));
        let physical = i64::try_from(ts.physical)
            .map_err(|_| Error::Tso(format!("physical time {} overflows", ts.physical)))?;
        Ok(TsoResponse {
            header: None,
            count: req.count,
            timestamp: Some(pdpb::Timestamp {
                physical,
                // < 2^18, always fits.
                logical: ts.logical as i64,
                suffix_bits: 0,
            }),
        })
    }

    pub async fn on_bootstrap(&self, req: BootstrapRequest) -> Result<BootstrapResponse> {
        let max_used = req
            .region
            .iter()
            .flat_map(|r| r.peers.iter().map(|p| p.id).chain([r.id]))
            .chain(req.store.iter().map(|s| s.id))
            .max()
            .unwrap_or(0);
        let store_id = req.store.as_ref().map_or(0, |s| s.id);
        self.state
            .propose(PdCommand::Bootstrap(Bootstrap {
                store: req.store,
                region: req.region,
                max_peer_count: self.max_replicas,
            }))
            .await?;
        self.ids.skip_through(max_used);
        tracing::info!(
            cluster_id = self.cluster_id(),
            store_id,
            "cluster bootstrapped"
        );
        Ok(BootstrapResponse::default())
    }

    pub async fn on_is_bootstrapped(
        &self,
        _req: IsBootstrappedRequest,
    ) -> Result<IsBootstrappedResponse> {
        Ok(IsBootstrappedResponse {
            header: None,
            bootstrapped: self.state.read(|s| s.is_bootstrapped()),
        })
    }

    /// Allocates `count` (at least 1) consecutive ids; `id` is the first of them.
    pub async fn on_alloc_id(&self, req: AllocIdRequest) -> Result<AllocIdResponse> {
        let count = req.count.max(1);
        let id = self.ids.alloc(count, &self.state).await?;
        Ok(AllocIdResponse {
            header: None,
            id,
            count,
        })
    }

    /// The store with the soft fields (last heartbeat) filled in.
    fn store_view(&self, store: &metapb::Store) -> metapb::Store {
        let mut store = store.clone();
        if let Some(status) = self.heartbeats.lock().store(store.id) {
            store.last_heartbeat = ms_to_ns(status.last_heartbeat_ms);
        }
        store
    }

    pub async fn on_get_store(&self, req: GetStoreRequest) -> Result<GetStoreResponse> {
        let store =
            self.state
                .read(|s| s.store(req.store_id).cloned())
                .ok_or(Error::StoreNotFound {
                    store_id: req.store_id,
                })?;
        let stats = self
            .heartbeats
            .lock()
            .store(req.store_id)
            .map(|status| status.stats);
        Ok(GetStoreResponse {
            header: None,
            store: Some(self.store_view(&store)),
            stats,
        })
    }

    pub async fn on_put_store(&self, req: PutStoreRequest) -> Result<PutStoreResponse> {
        let store_id = req.store.as_ref().map_or(0, |s| s.id);
        let replaces = req.store.as_ref().map_or(0, |s| self.gone_store_at(s));
        if replaces != 0 {
            tracing::info!(
                store_id,
                replaces,
                "a new store took over the address of a store that is gone; draining the old one"
            );
        }
        self.state
            .propose(PdCommand::PutStore(PutStore {
                store: req.store,
                replaces,
            }))
            .await?;
        tracing::info!(store_id, "store put");
        Ok(PutStoreResponse::default())
    }

    /// For a store registering for the first time: another store at its address that this
    /// leader has heard from, but not for [`STORE_ALIVE_MS`] — its process is gone (the new
    /// one bound its address), typically restarted on an empty data directory. 0 if none. A
    /// leader that never heard from the old store (elected since) cannot tell, and refuses as
    /// before; the operator then removes the old store (`rangekv ctl store remove`).
    fn gone_store_at(&self, new: &metapb::Store) -> u64 {
        let now_ms = self.clock.now_ms();
        let others: Vec<u64> = self.state.read(|s| {
            if s.store(new.id).is_some() {
                return Vec::new();
            }
            s.stores()
                .filter(|o| {
                    o.id != new.id
                        && o.address == new.address
                        && o.state() != metapb::StoreState::Tombstone
                })
                .map(|o| o.id)
                .collect()
        });
        let heartbeats = self.heartbeats.lock();
        others
            .into_iter()
            .find(|id| {
                heartbeats
                    .store(*id)
                    .is_some_and(|h| now_ms.saturating_sub(h.last_heartbeat_ms) > STORE_ALIVE_MS)
            })
            .unwrap_or(0)
    }

    pub async fn on_get_all_stores(
        &self,
        req: GetAllStoresRequest,
    ) -> Result<GetAllStoresResponse> {
        let stores: Vec<metapb::Store> = self.state.read(|s| {
            s.stores()
                .filter(|store| {
                    !req.exclude_tombstone_stores || store.state() != metapb::StoreState::Tombstone
                })
                .cloned()
                .collect()
        });
        Ok(GetAllStoresResponse {
            header: None,
            stores: stores.iter().map(|s| self.store_view(s)).collect(),
        })
    }

    pub async fn on_store_heartbeat(
        &self,
        req: StoreHeartbeatRequest,
    ) -> Result<StoreHeartbeatResponse> {
        let stats = req
            .stats
            .ok_or_else(|| Error::InvalidArgument("store heartbeat without stats".to_owned()))?;
        let store_state = self
            .state
            .read(|s| s.store(stats.store_id).map(|store| store.state()))
            .ok_or(Error::StoreNotFound {
                store_id: stats.store_id,
            })?;
        if store_state == metapb::StoreState::Tombstone {
            return Err(Error::StoreTombstone {
                store_id: stats.store_id,
            });
        }
        let store_id = stats.store_id;
        self.heartbeats
            .lock()
            .on_store_heartbeat(stats, self.clock.now_ms());
        if store_state == metapb::StoreState::Offline {
            self.maybe_tombstone(store_id).await;
        }
        Ok(StoreHeartbeatResponse::default())
    }

    /// A region as answered by GetRegion and friends.
    fn region_response(&self, region: Option<metapb::Region>) -> GetRegionResponse {
        let Some(region) = region else {
            return GetRegionResponse::default();
        };
        let heartbeats = self.heartbeats.lock();
        let leader = heartbeats.leader_of(&region);
        let (down_peers, pending_peers) = heartbeats
            .region(region.id)
            .map(|s| (s.down_peers.clone(), s.pending_peers.clone()))
            .unwrap_or_default();
        GetRegionResponse {
            header: None,
            region: Some(region),
            leader,
            down_peers,
            pending_peers,
        }
    }

    /// The region containing the key; an empty response if none does (as PD answers).
    pub async fn on_get_region(&self, req: GetRegionRequest) -> Result<GetRegionResponse> {
        self.require_bootstrapped()?;
        let region = self
            .state
            .read(|s| s.regions().find_by_key(&req.region_key).cloned());
        Ok(self.region_response(region))
    }

    /// The region before the one containing the key.
    pub async fn on_get_prev_region(&self, req: GetRegionRequest) -> Result<GetRegionResponse> {
        self.require_bootstrapped()?;
        let region = self
            .state
            .read(|s| s.regions().prev_region(&req.region_key).cloned());
        Ok(self.region_response(region))
    }

    pub async fn on_get_region_by_id(
        &self,
        req: GetRegionByIdRequest,
    ) -> Result<GetRegionResponse> {
        self.require_bootstrapped()?;
        let region = self.state.read(|s| s.regions().get(req.region_id).cloned());
        Ok(self.region_response(region))
    }

    pub async fn on_scan_regions(&self, req: ScanRegionsRequest) -> Result<ScanRegionsResponse> {
        self.require_bootstrapped()?;
        let limit = usize::try_from(req.limit).unwrap_or(0);
        let regions: Vec<metapb::Region> = self.state.read(|s| {
            s.regions()
                .scan(&req.start_key, &req.end_key, limit)
                .into_iter()
                .cloned()
                .collect()
        });
        let mut resp = ScanRegionsResponse::default();
        let heartbeats = self.heartbeats.lock();
        for region in regions {
            let leader = heartbeats.leader_of(&region);
            let (down_peers, pending_peers) = heartbeats
                .region(region.id)
                .map(|s| (s.down_peers.clone(), s.pending_peers.clone()))
                .unwrap_or_default();
            resp.region_metas.push(region.clone());
            resp.leaders.push(leader.unwrap_or_default());
            resp.regions.push(pdpb::Region {
                region: Some(region),
                leader,
                down_peers,
                pending_peers,
            });
        }
        Ok(resp)
    }

    /// Allocates a region id and one peer id per peer of the region, for each new region.
    pub async fn on_ask_batch_split(
        &self,
        req: AskBatchSplitRequest,
    ) -> Result<AskBatchSplitResponse> {
        self.require_bootstrapped()?;
        let region = req
            .region
            .ok_or_else(|| Error::InvalidArgument("ask split without region".to_owned()))?;
        if req.split_count == 0 || req.split_count > MAX_SPLIT_COUNT {
            return Err(Error::InvalidArgument(format!(
                "split count must be in 1..={MAX_SPLIT_COUNT}, got {}",
                req.split_count
            )));
        }
        let known = self
            .state
            .read(|s| s.regions().find_by_key(&region.start_key).cloned())
            .ok_or(Error::RegionNotFound {
                region_id: region.id,
            })?;
        let (asked, current) = (epoch(&region), epoch(&known));
        if asked.version < current.version || asked.conf_ver < current.conf_ver {
            return Err(Error::StaleRegionEpoch {
                region_id: region.id,
                version: asked.version,
                conf_ver: asked.conf_ver,
                current_version: current.version,
                current_conf_ver: current.conf_ver,
            });
        }
        let per_region = 1 + region.peers.len() as u64;
        let total = u64::from(req.split_count) * per_region;
        let total = u32::try_from(total)
            .map_err(|_| Error::InvalidArgument(format!("split needs too many ids: {total}")))?;
        let mut next = self.ids.alloc(total, &self.state).await?;
        let mut take = || {
            let id = next;
            next += 1;
            id
        };
        let ids = (0..req.split_count)
            .map(|_| SplitId {
                new_region_id: take(),
                new_peer_ids: region.peers.iter().map(|_| take()).collect(),
            })
            .collect();
        Ok(AskBatchSplitResponse { header: None, ids })
    }

    pub async fn on_report_batch_split(
        &self,
        req: ReportBatchSplitRequest,
    ) -> Result<ReportBatchSplitResponse> {
        self.require_bootstrapped()?;
        if req.regions.is_empty() {
            return Err(Error::InvalidArgument(
                "split report without regions".to_owned(),
            ));
        }
        let result = self
            .state
            .propose(PdCommand::PutRegions(PutRegions {
                regions: req.regions,
            }))
            .await?;
        if let ApplyResult::Regions(applied) = result {
            self.forget_regions(&applied.removed);
            tracing::info!(
                updated = ?applied.updated,
                removed = ?applied.removed,
                stale = ?applied.stale,
                "batch split reported"
            );
        }
        Ok(ReportBatchSplitResponse::default())
    }

    pub async fn on_get_cluster_config(
        &self,
        _req: GetClusterConfigRequest,
    ) -> Result<GetClusterConfigResponse> {
        // Answered before bootstrap too: stores read the desired replica count from it to decide
        // when enough of them have registered to bootstrap the first region.
        let mut cluster = self.state.read(|s| s.cluster_config());
        if cluster.max_peer_count == 0 {
            // Not bootstrapped yet: the count the bootstrap will record.
            cluster.max_peer_count = self.max_replicas;
        }
        Ok(GetClusterConfigResponse {
            header: None,
            cluster: Some(cluster),
        })
    }

    pub async fn on_get_gc_safe_point(
        &self,
        _req: GetGcSafePointRequest,
    ) -> Result<GetGcSafePointResponse> {
        self.require_bootstrapped()?;
        Ok(GetGcSafePointResponse {
            header: None,
            safe_point: self.state.read(|s| s.meta().gc_safe_point),
        })
    }

    /// Moves the safe point forward; answers the safe point in effect afterwards.
    pub async fn on_update_gc_safe_point(
        &self,
        req: UpdateGcSafePointRequest,
    ) -> Result<UpdateGcSafePointResponse> {
        self.require_bootstrapped()?;
        let new_safe_point = match self
            .state
            .propose(PdCommand::UpdateGcSafePoint(req.safe_point))
            .await?
        {
            ApplyResult::GcSafePoint(safe_point) => safe_point,
            other => {
                return Err(Error::Internal(format!(
                    "unexpected result of a GC safe point update: {other:?}"
                )))
            }
        };
        Ok(UpdateGcSafePointResponse {
            header: None,
            new_safe_point,
        })
    }

    /// A successful response header.
    pub fn ok_header(&self) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id(),
            error: None,
        }
    }

    /// A response header carrying `err`.
    pub fn error_header(&self, err: &Error) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id(),
            error: Some(err.to_pb()),
        }
    }
}

fn ms_to_ns(ms: u64) -> i64 {
    i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
}
