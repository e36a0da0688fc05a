//! The store's clock thread: ticks the regions that are awake (hibernating ones get no
//! ticks, see [`crate::hibernate`]) and, with hibernation on, sends this store's liveness
//! beacons and reports stores that fell silent to the peers.
//!
//! Not here: what a tick does (the peer's `on_tick`), deciding to hibernate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use batch_system::Router;
use parking_lot::Mutex;
use proto::metapb;
use proto::raft_serverpb::RaftMessage;
use tracing::warn;

use crate::peer::{PeerFsm, PeerMsg};
use crate::store_meta::StoreMeta;
use crate::{Config, Transport};

/// The store's clock thread: ticks the regions that are awake, and (with hibernation) sends
/// this store's liveness beacons and reports stores that fell silent to the peers.
pub(crate) struct Ticker<T> {
    pub(crate) store_id: u64,
    pub(crate) cfg: Arc<Config>,
    pub(crate) router: Router<PeerFsm>,
    pub(crate) awake: crate::hibernate::AwakeSet,
    pub(crate) liveness: crate::hibernate::StoreLiveness,
    pub(crate) meta: Arc<Mutex<StoreMeta>>,
    pub(crate) transport: T,
    pub(crate) stop: Arc<AtomicBool>,
}

/// Ticks between two recomputations of the stores this store shares regions with.
const KNOWN_STORES_EVERY_TICKS: u64 = 10;

impl<T: Transport> Ticker<T> {
    pub(crate) fn run(mut self) {
        let mut ticks = 0u64;
        let mut known: Vec<u64> = Vec::new();
        let beacon_every = self.cfg.raft_heartbeat_ticks.max(1) as u64;
        let silent_after = self.cfg.raft_election_ticks as u64;
        while !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(self.cfg.raft_base_tick);
            for (region_id, token) in self.awake.due() {
                if self
                    .router
                    .send(region_id, PeerMsg::Tick(token.clone()))
                    .is_err()
                {
                    // No mailbox (a replica being created or gone): tick it next time.
                    token.handled();
                }
            }
            if !self.cfg.hibernate_regions {
                continue;
            }
            if ticks.is_multiple_of(KNOWN_STORES_EVERY_TICKS) {
                known = self.known_stores();
            }
            ticks += 1;
            if ticks.is_multiple_of(beacon_every) {
                for &to in &known {
                    self.transport.send(beacon(self.store_id, to));
                }
                self.transport.flush();
            }
            for store_id in self.liveness.tick(&known, silent_after) {
                warn!(
                    store_id,
                    "store silent for an election timeout; waking the regions it leads"
                );
                self.router
                    .broadcast(|| PeerMsg::StoreUnreachable(store_id));
            }
        }
    }

    /// The other stores holding replicas of this store's regions.
    fn known_stores(&self) -> Vec<u64> {
        let meta = self.meta.lock();
        let mut stores: Vec<u64> = meta
            .regions
            .values()
            .flat_map(|r| r.peers.iter().map(|p| p.store_id))
            .filter(|s| *s != self.store_id)
            .collect();
        stores.sort_unstable();
        stores.dedup();
        stores
    }
}

/// A liveness beacon from `from` to `to` (region 0: no region's message).
fn beacon(from: u64, to: u64) -> RaftMessage {
    let mut extra = proto::raft_serverpb::ExtraMessage::default();
    extra.set_type(proto::raft_serverpb::ExtraMessageType::MsgStoreHeartbeat);
    RaftMessage {
        region_id: 0,
        from_peer: Some(metapb::Peer {
            store_id: from,
            ..Default::default()
        }),
        to_peer: Some(metapb::Peer {
            store_id: to,
            ..Default::default()
        }),
        extra_msg: Some(extra),
        ..Default::default()
    }
}
