//! The store: all peers of one store and the poller loop that drives them (the router that
//! reaches them is in `router`).
//!
//! One poll round ([`RaftPoller`]):
//! 1. `handle` each scheduled peer: step its messages, proposals, reads and ticks, then
//!    [`Peer::collect_ready`] — queue leader messages, (with `apply_before_persist`) hand
//!    entries that are committed and already persisted here to the apply workers, stage log
//!    entries and hard state into the round's single write batch;
//! 2. `end`: flush the queued leader messages (appends go out before the leader's own fsync,
//!    as Raft allows: an entry commits once a majority, leader or not, persisted it); write
//!    the batch **synced**, once for every peer of the round (group commit); then
//!    [`Peer::post_persist`] each peer — send the messages that needed persistence, advance
//!    raft-rs, dispatch committed entries to the apply workers; flush the transport.
//!
//! Invariants:
//! - No message that raft-rs marks as needing persistence leaves before the sync.
//! - One write batch per poll round, never one fsync per region.
//! - A peer handled in a round is advanced in the same round, so two pollers never hold staged
//!   state of one peer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use batch_system::{BatchSystem, HandlerBuilder, PollHandler, Router};
use bytes::Bytes;
use crossbeam::channel;
use engine::{Engine, WriteBatch};
use parking_lot::Mutex;
use proto::metapb;
use proto::raft_serverpb::{PeerState, RaftMessage};
use tracing::{debug, error, info, warn};

use crate::apply::{ApplyNotifier, ApplyPool, ApplyRouter};
use crate::bootstrap::load_region_states;
use crate::peer::{Peer, PeerFsm, PeerMsg};
use crate::router::PendingMessages;
pub use crate::router::StoreRouter;
use crate::store_meta::StoreMeta;
use crate::util::find_peer_on_store;
use crate::{Config, Error, Result, Transport};

/// What a client request says about where it was routed; checked by the peer.
#[derive(Clone, Debug, Default)]
pub struct RequestHeader {
    pub region_id: u64,
    pub epoch: Option<metapb::RegionEpoch>,
    /// The peer the client meant to reach (its store id is checked).
    pub peer: Option<metapb::Peer>,
    /// Keys the request touches; each must lie in the region.
    pub keys: Vec<Bytes>,
    /// A read the client sent to a follower on purpose (TiKV's replica read): the follower
    /// serves it after a ReadIndex round with the leader (see `peer::read`). Ignored by
    /// writes and by leaders.
    pub replica_read: bool,
}

/// Permission to read a region now: the peer is (still) the leader and has applied everything
/// that was committed when the read arrived. The reader reads the engine directly, clamped to
/// `region`'s range.
#[derive(Clone, Debug)]
pub struct ReadGrant {
    pub region: metapb::Region,
}

/// What it takes to build a replica, shared by the pollers and the router.
pub(crate) struct PeerFactory {
    pub(crate) store_id: u64,
    pub(crate) engine: Engine,
    pub(crate) cfg: Arc<Config>,
    /// `None` once the store shuts down (the apply workers stop when every router is gone).
    pub(crate) apply: Mutex<Option<ApplyRouter>>,
    pub(crate) logger: slog::Logger,
    pub(crate) router: Router<PeerFsm>,
    pub(crate) meta: Arc<Mutex<StoreMeta>>,
    pub(crate) awake: crate::hibernate::AwakeSet,
    pub(crate) liveness: crate::hibernate::StoreLiveness,
}

impl PeerFactory {
    fn register(&self, peer: Peer) {
        let region_id = peer.region_id();
        self.awake.insert(region_id);
        let (tx, rx) = channel::unbounded();
        self.router
            .register(region_id, tx, Box::new(PeerFsm::new(peer, rx)));
    }

    /// Creates an uninitialized replica for a message that proves a replica on this store
    /// belongs to a current membership of the region (TiKV's `maybe_create_peer`). Returns
    /// false when the message must not create one: the region was destroyed here at or after
    /// the message's membership, the message is not one a leader sends a new member, or its
    /// range overlaps a replica this store hosts (a split this store has not applied yet
    /// will create it).
    pub(crate) fn maybe_create(&self, msg: &RaftMessage) -> bool {
        use raft::eraftpb::MessageType;
        let Some(to) = msg.to_peer.filter(|p| p.store_id == self.store_id) else {
            return false;
        };
        if msg.is_tombstone {
            return false;
        }
        let Ok(m) = <raft::eraftpb::Message as protobuf::Message>::parse_from_bytes(&msg.message)
        else {
            return false;
        };
        if !matches!(
            m.get_msg_type(),
            MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
        ) {
            return false;
        }
        let mut meta = self.meta.lock();
        if self.router.contains(msg.region_id) {
            return true;
        }
        let epoch = msg.region_epoch.unwrap_or_default();
        if let Some(t) = meta.tombstones.get(&msg.region_id) {
            if epoch.conf_ver <= t.conf_ver {
                debug!(
                    region_id = msg.region_id,
                    "message for a destroyed replica dropped"
                );
                return false;
            }
        }
        let range = metapb::Region {
            id: msg.region_id,
            start_key: msg.start_key.clone(),
            end_key: msg.end_key.clone(),
            ..Default::default()
        };
        if let Some(other) = meta.overlapping(&range) {
            debug!(
                region_id = msg.region_id,
                other, "message for a new replica overlaps a hosted region"
            );
            return false;
        }
        let Some(apply) = self.apply.lock().clone() else {
            return false;
        };
        match Peer::create_uninitialized(
            self.store_id,
            msg.region_id,
            to,
            self.engine.clone(),
            self.cfg.clone(),
            apply,
            &self.logger,
        ) {
            Ok(peer) => {
                meta.tombstones.remove(&msg.region_id);
                self.register(peer);
                info!(
                    store_id = self.store_id,
                    region_id = msg.region_id,
                    peer_id = to.id,
                    "created an uninitialized replica for a message"
                );
                true
            }
            Err(e) => {
                warn!(region_id = msg.region_id, %e, "cannot create a replica");
                false
            }
        }
    }
}

/// State shared by the peers of one poll round.
pub struct PollContext<T> {
    pub cfg: Arc<Config>,
    pub engine: Engine,
    pub transport: T,
    /// The round's write batch: every peer's log entries and hard states.
    pub wb: WriteBatch,
    router: Router<PeerFsm>,
    to_wake: Vec<u64>,
    store_id: u64,
    apply: ApplyRouter,
    logger: slog::Logger,
    pending: Arc<Mutex<PendingMessages>>,
    pub meta: Arc<Mutex<StoreMeta>>,
    /// Where leaders publish their leases for reads on the callers' threads.
    pub local_reader: crate::local_reader::LocalReader,
    /// The regions that tick (not hibernating).
    pub awake: crate::hibernate::AwakeSet,
}

impl<T> PollContext<T> {
    /// Schedules another round for `region_id` after this one.
    pub fn wake(&mut self, region_id: u64) {
        self.to_wake.push(region_id);
    }

    /// Sends `msg` to this store's replica of `region_id`; false if it hosts none.
    pub fn send_peer(&self, region_id: u64, msg: PeerMsg) -> bool {
        self.router.send(region_id, msg).is_ok()
    }

    /// Removes a destroyed replica from the store's routing.
    pub fn unregister(&self, region_id: u64) {
        self.router.unregister(region_id);
    }

    /// Creates this store's replica of `region` (whose state is already in the engine), e.g.
    /// a region made by a split; `campaign` starts an election at once.
    pub fn create_peer(&mut self, region: metapb::Region, campaign: bool) -> Result<()> {
        if find_peer_on_store(&region, self.store_id).is_none() {
            return Ok(());
        }
        if self.router.contains(region.id) {
            // An uninitialized replica made for an early message: it will be sent a snapshot.
            return Ok(());
        }
        let region_id = region.id;
        let mut peer = Peer::create(
            self.store_id,
            region,
            None,
            self.engine.clone(),
            self.cfg.clone(),
            self.apply.clone(),
            &self.logger,
        )?;
        if campaign {
            peer.campaign();
        }
        let (tx, rx) = channel::unbounded();
        self.awake.insert(region_id);
        self.router
            .register(region_id, tx, Box::new(PeerFsm::new(peer, rx)));
        for msg in self.pending.lock().take(region_id) {
            let _ = self.router.send(region_id, PeerMsg::Raft(Box::new(msg)));
        }
        self.to_wake.push(region_id);
        info!(
            store_id = self.store_id,
            region_id, "created the peer of a new region"
        );
        Ok(())
    }
}

struct RaftPoller<T> {
    ctx: PollContext<T>,
}

impl<T: Transport> PollHandler<PeerFsm> for RaftPoller<T> {
    fn begin(&mut self, _batch_size: usize) {}

    fn handle(&mut self, fsm: &mut PeerFsm) {
        fsm.handle(&mut self.ctx);
    }

    fn end(&mut self, batch: &mut [Box<PeerFsm>]) {
        // The leaders' appends (collected in `handle`, none of them waiting on persistence)
        // leave now, so the followers' fsyncs overlap the leaders' own instead of following it.
        if self.ctx.cfg.send_appends_before_persist {
            self.ctx.transport.flush();
        }
        if !self.ctx.wb.is_empty() {
            // Tests hold a store's synced log write here (TiKV's `raft_before_save`).
            fail::fail_point!("raft_before_save");
            crate::metrics::GROUP_COMMIT_PEERS.observe(batch.len() as f64);
            let timer = crate::metrics::LOG_WRITE_SECONDS.start_timer();
            self.write(true);
            timer.observe_duration();
            crate::metrics::LOG_WRITES.inc();
        }
        for fsm in batch.iter_mut() {
            fsm.peer.post_persist(&mut self.ctx);
        }
        // Commit-index updates from post_persist: no sync needed (the commit index can be
        // recovered), but write them now so no staged state outlives the round.
        self.write(false);
        self.ctx.transport.flush();
        for region_id in self.ctx.to_wake.drain(..) {
            let _ = self.ctx.router.send(region_id, PeerMsg::Wake);
        }
    }
}

impl<T> RaftPoller<T> {
    fn write(&mut self, sync: bool) {
        if self.ctx.wb.is_empty() {
            return;
        }
        let wb = std::mem::take(&mut self.ctx.wb);
        if let Err(e) = self.ctx.engine.write(wb, sync) {
            // Raft's durability promise cannot be kept: stop instead of acknowledging.
            error!(%e, "raft log write failed");
            panic!("raft log write failed: {e}");
        }
    }
}

struct PollerBuilder<T> {
    cfg: Arc<Config>,
    engine: Engine,
    transport: T,
    router: Router<PeerFsm>,
    store_id: u64,
    apply: ApplyRouter,
    logger: slog::Logger,
    pending: Arc<Mutex<PendingMessages>>,
    meta: Arc<Mutex<StoreMeta>>,
    local_reader: crate::local_reader::LocalReader,
    awake: crate::hibernate::AwakeSet,
}

impl<T: Transport> HandlerBuilder<PeerFsm> for PollerBuilder<T> {
    type Handler = RaftPoller<T>;

    fn build(&mut self) -> RaftPoller<T> {
        RaftPoller {
            ctx: PollContext {
                cfg: self.cfg.clone(),
                engine: self.engine.clone(),
                transport: self.transport.clone(),
                wb: WriteBatch::new(),
                router: self.router.clone(),
                to_wake: Vec::new(),
                store_id: self.store_id,
                apply: self.apply.clone(),
                logger: self.logger.clone(),
                pending: self.pending.clone(),
                meta: self.meta.clone(),
                local_reader: self.local_reader.clone(),
                awake: self.awake.clone(),
            },
        }
    }
}

/// A running store: pollers, apply workers and the ticker.
pub struct Store {
    router: StoreRouter,
    engine: Engine,
    cfg: Arc<Config>,
    logger: slog::Logger,
    system: BatchSystem<PeerFsm>,
    apply: ApplyPool,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl Store {
    /// Loads every region with a peer on `store_id` from `engine` and starts driving them.
    pub fn start<T: Transport>(
        store_id: u64,
        engine: Engine,
        cfg: Config,
        transport: T,
    ) -> Result<Store> {
        cfg.validate().map_err(Error::InvalidRequest)?;
        let cfg = Arc::new(cfg);
        let (router, mut system) =
            // Poller threads are `raftstore-<store>-<i>` (as apply's are `apply-<store>-<i>`).
            batch_system::create_system::<PeerFsm>(&format!("raftstore-{store_id}"), cfg.max_batch_size);
        let notify_router = router.clone();
        let notifier: ApplyNotifier = Arc::new(move |res| {
            let _ = notify_router.send(res.region_id, PeerMsg::ApplyRes(res));
        });
        let apply = ApplyPool::start(store_id, cfg.apply_pool_size, engine.clone(), notifier);
        let pending = Arc::new(Mutex::new(PendingMessages::default()));
        let logger = slog::Logger::root(
            tracing_slog::TracingSlogDrain,
            slog::o!("store_id" => store_id),
        );
        let meta = Arc::new(Mutex::new(StoreMeta::default()));
        let local_reader = crate::local_reader::LocalReader::default();
        let awake = crate::hibernate::AwakeSet::default();
        let liveness = crate::hibernate::StoreLiveness::default();
        let factory = Arc::new(PeerFactory {
            store_id,
            engine: engine.clone(),
            cfg: cfg.clone(),
            apply: Mutex::new(Some(apply.router())),
            logger: logger.clone(),
            router: router.clone(),
            meta: meta.clone(),
            awake: awake.clone(),
            liveness: liveness.clone(),
        });
        let mut loaded = 0;
        // A crash may have cut a snapshot apply short: finish it before the region loads.
        let states = crate::snap::recover_applying(
            &crate::snap::SnapManager::of(&engine),
            &engine,
            load_region_states(&engine)?,
        )?;
        let live: Vec<metapb::Region> = states
            .iter()
            .filter(|s| s.state == PeerState::Normal as i32)
            .filter_map(|s| s.region.clone())
            .collect();
        for state in states {
            let Some(region) = state.region else { continue };
            // A merging source whose range another region already covers was absorbed by it
            // (a crash came between the target's write and the source's own end).
            let absorbed = state.state == PeerState::Merging as i32
                && live.iter().any(|r| {
                    r.id != region.id
                        && crate::store_meta::ranges_overlap(
                            &r.start_key,
                            &r.end_key,
                            &region.start_key,
                            &region.end_key,
                        )
                });
            if state.state == PeerState::Tombstone as i32 || absorbed {
                meta.lock()
                    .tombstones
                    .insert(region.id, region.region_epoch.unwrap_or_default());
                continue;
            }
            let merging = state.state == PeerState::Merging as i32;
            if !(state.state == PeerState::Normal as i32 || merging)
                || find_peer_on_store(&region, store_id).is_none()
            {
                continue;
            }
            {
                let mut meta = meta.lock();
                meta.regions.insert(region.id, region.clone());
                if let Some(target) = state.merge_state.as_ref().and_then(|m| m.target.as_ref()) {
                    meta.merging_into.insert(region.id, target.id);
                }
            }
            factory.register(Peer::create(
                store_id,
                region,
                state.merge_state.filter(|_| merging),
                engine.clone(),
                cfg.clone(),
                apply.router(),
                &logger,
            )?);
            loaded += 1;
        }
        system.spawn(
            cfg.store_pool_size,
            PollerBuilder {
                cfg: cfg.clone(),
                engine: engine.clone(),
                transport: transport.clone(),
                router: router.clone(),
                store_id,
                apply: apply.router(),
                logger: logger.clone(),
                pending: pending.clone(),
                meta: meta.clone(),
                local_reader: local_reader.clone(),
                awake: awake.clone(),
            },
        );
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let ticker = crate::ticker::Ticker {
                store_id,
                cfg: cfg.clone(),
                router: router.clone(),
                awake,
                liveness,
                meta: meta.clone(),
                transport,
                stop: stop.clone(),
            };
            std::thread::Builder::new()
                .name(format!("ticker-{store_id}"))
                .spawn(move || ticker.run())
                .expect("spawn ticker")
        };
        info!(store_id, regions = loaded, "store started");
        Ok(Store {
            router: StoreRouter {
                store_id,
                router,
                pending: pending.clone(),
                factory,
                apply_backlog: apply.router().backlog().clone(),
                local_reader,
            },
            engine,
            cfg,
            logger,
            system,
            apply,
            stop,
            ticker: Some(ticker),
        })
    }

    pub fn router(&self) -> StoreRouter {
        self.router.clone()
    }

    /// Creates this store's replica of `region` from the initial (bootstrap) state, unless it
    /// already exists. Every replica created this way starts from the same empty log, so this
    /// is how the replicas of a cluster's first region come to be without snapshots.
    pub fn create_peer(&self, region: &metapb::Region) -> Result<()> {
        let store_id = self.router.store_id;
        if find_peer_on_store(region, store_id).is_none() {
            return Err(Error::InvalidRequest(format!(
                "region {} has no peer on store {store_id}",
                region.id
            )));
        }
        if self.router.router.contains(region.id) {
            return Ok(());
        }
        crate::bootstrap::bootstrap_region(&self.engine, region)?;
        let factory = &self.router.factory;
        factory
            .meta
            .lock()
            .regions
            .insert(region.id, region.clone());
        factory.register(Peer::create(
            store_id,
            region.clone(),
            None,
            self.engine.clone(),
            self.cfg.clone(),
            self.apply.router(),
            &self.logger,
        )?);
        for msg in self.router.pending.lock().take(region.id) {
            let _ = self
                .router
                .router
                .send(region.id, PeerMsg::Raft(Box::new(msg)));
        }
        info!(store_id, region_id = region.id, "created peer");
        Ok(())
    }

    /// Hands the leadership of every region this store leads to another replica and waits
    /// (up to `timeout`) until this store knows of the new leader of each: a store about to
    /// stop leaves no region without a leader for an election timeout. Returns how many regions
    /// it could not hand over.
    pub fn transfer_leaders_away(&self, timeout: Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        let router = &self.router;
        let status = |id: u64| futures::executor::block_on(router.peer_status(id)).ok();
        // The regions this store leads and could hand over (some other replica is alive).
        let mut handing: Vec<u64> = router
            .region_ids()
            .into_iter()
            .filter(|id| status(*id).is_some_and(|s| s.is_leader && !s.active_peers.is_empty()))
            .collect();
        let mut attempt = 0;
        while !handing.is_empty() && std::time::Instant::now() < deadline {
            for &id in &handing {
                let Some(s) = status(id).filter(|s| s.is_leader) else {
                    continue; // In transition: wait for the new leader to show up.
                };
                // Only replicas the leader heard from lately: a stopped store cannot take over.
                let others: Vec<&metapb::Peer> = s
                    .region
                    .peers
                    .iter()
                    .filter(|p| p.store_id != router.store_id && s.active_peers.contains(&p.id))
                    .collect();
                if others.is_empty() {
                    continue;
                }
                let to = *others[attempt % others.len()];
                let _ = router.transfer_leader(id, to, s.region.region_epoch);
            }
            attempt += 1;
            std::thread::sleep(self.cfg.raft_base_tick * 2);
            // Handed over once this replica knows of a leader on another store.
            handing.retain(|id| {
                !status(*id).is_some_and(|s| {
                    !s.is_leader && s.leader.is_some_and(|l| l.store_id != router.store_id)
                })
            });
        }
        handing.len()
    }

    /// Stops ticking, polling and applying; outstanding requests fail with `Shutdown`.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        self.system.shutdown();
        for region_id in self.router.region_ids() {
            self.router.router.unregister(region_id);
        }
        self.router.factory.apply.lock().take();
        self.apply.shutdown();
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}
