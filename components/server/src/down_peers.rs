//! Which replicas a region's leader reports down to PD (TiKV's down peers): those it has not
//! heard from for `max_peer_down_secs`, judged at each region heartbeat: a replica is active
//! if raft-rs's `recent_active` says so (cleared and refilled every election timeout by
//! check-quorum) and the store liveness has not found its store silent (which also holds
//! while the region hibernates and check-quorum does not run).
//!
//! PD shows them (`ctl region`, the HTTP API) and does not move a region's replicas while it
//! has one; replacing a replica is decided by its store being down (`max-store-down-time`),
//! as in TiKV's PD.
//!
//! Pure bookkeeping: the caller passes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::metapb::Region;
use proto::pdpb::PeerStats;

/// When each replica was first and last seen inactive by this store's leaders.
pub(crate) struct DownPeers {
    after: Duration,
    inactive: parking_lot::Mutex<HashMap<u64, (Instant, Instant)>>,
}

impl DownPeers {
    pub(crate) fn new(after: Duration) -> DownPeers {
        DownPeers {
            after,
            inactive: Default::default(),
        }
    }

    /// The replicas of `region` other than the leader `leader_id` to report down at `now`,
    /// given the ones the leader heard from recently (`active`).
    pub(crate) fn report(
        &self,
        region: &Region,
        leader_id: u64,
        active: &[u64],
        now: Instant,
    ) -> Vec<PeerStats> {
        let mut inactive = self.inactive.lock();
        let mut down = Vec::new();
        for p in region.peers.iter().filter(|p| p.id != leader_id) {
            if active.contains(&p.id) {
                inactive.remove(&p.id);
                continue;
            }
            let (since, seen) = inactive.entry(p.id).or_insert((now, now));
            *seen = now;
            let for_how_long = now.saturating_duration_since(*since);
            if for_how_long >= self.after {
                down.push(PeerStats {
                    peer: Some(*p),
                    down_seconds: for_how_long.as_secs(),
                });
            }
        }
        down
    }

    /// Forgets the replicas not judged since `before` (regions this store no longer leads).
    pub(crate) fn forget_older(&self, before: Instant) {
        self.inactive.lock().retain(|_, (_, seen)| *seen >= before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> Region {
        test_util::region(1)
            .peers([(11, 1), (12, 2), (13, 3)].map(|(id, s)| test_util::peer(id, s)))
            .build()
    }

    #[test]
    fn a_replica_is_down_once_inactive_for_long_enough() {
        let d = DownPeers::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let r = region();
        assert!(d.report(&r, 11, &[12], t0).is_empty());
        assert!(d
            .report(&r, 11, &[12], t0 + Duration::from_secs(59))
            .is_empty());
        let down = d.report(&r, 11, &[12], t0 + Duration::from_secs(61));
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].peer.map(|p| p.id), Some(13));
        assert_eq!(down[0].down_seconds, 61);
        // Heard from again: no longer down, and the clock starts over.
        assert!(d
            .report(&r, 11, &[12, 13], t0 + Duration::from_secs(62))
            .is_empty());
        assert!(d
            .report(&r, 11, &[12], t0 + Duration::from_secs(100))
            .is_empty());
    }

    #[test]
    fn the_leader_is_never_reported_and_forgotten_replicas_start_over() {
        let d = DownPeers::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let r = region();
        assert!(d.report(&r, 11, &[], t0).is_empty());
        let down = d.report(&r, 11, &[], t0 + Duration::from_secs(10));
        let ids: Vec<u64> = down.iter().filter_map(|s| s.peer.map(|p| p.id)).collect();
        assert_eq!(ids, [12, 13]);
        // Another store led meanwhile: what this one saw before is forgotten.
        d.forget_older(t0 + Duration::from_secs(11));
        assert!(d
            .report(&r, 11, &[], t0 + Duration::from_secs(20))
            .is_empty());
    }
}
