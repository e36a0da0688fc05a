//! Soft state learned from heartbeats: store statistics, region leaders and region statistics.
//!
//! None of this is persisted or replicated: it is re-learned within one heartbeat interval by the
//! PD node that serves the heartbeats (after a restart, or with Raft after a leader change).
//! Until then, regions are answered without a leader and stores without statistics.
//!
//! Invariants:
//! - A region's recorded leader only moves to a report with a Raft term at least as high as the
//!   recorded one (term 0 means "unknown" and always wins), so a delayed heartbeat of a deposed
//!   leader does not overwrite its successor.
//! - A leader is only reported back if it is still one of the region's peers.
//! - `leader_counts[store]` is the number of recorded regions whose recorded leader is on
//!   `store` (stores leading nothing have no entry); it is kept up to date on every change of a
//!   recorded leader and when regions are forgotten, so reading it costs no scan.
//! - A region's **flow** is the requests (keys read and written) its leader reported, per
//!   second of the time since the previous heartbeat PD received for it (at least one second,
//!   so that two heartbeats close together do not inflate it; 0 for the first one).
//!   `leader_flows[store]` is the sum of the flows of the regions recorded as led by `store`,
//!   kept up to date the same way as `leader_counts`.

use std::collections::{BTreeMap, HashMap};

use proto::metapb::{Peer, Region};
use proto::pdpb::{PeerStats, RegionHeartbeatRequest, StoreStats};

/// What PD last heard from a store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreStatus {
    pub stats: StoreStats,
    /// Wall time of the last heartbeat, Unix ms.
    pub last_heartbeat_ms: u64,
}

/// What PD last heard about a region from its leader.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegionStatus {
    pub leader: Option<Peer>,
    /// Raft term of `leader` (0 if unknown).
    pub term: u64,
    pub down_peers: Vec<PeerStats>,
    pub pending_peers: Vec<Peer>,
    pub approximate_size: u64,
    pub approximate_keys: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub keys_written: u64,
    pub keys_read: u64,
    /// Requests a second; see the module docs.
    pub flow: u64,
    /// Wall time of the last heartbeat, Unix ms.
    pub last_heartbeat_ms: u64,
}

/// Soft state of stores and regions; see the module docs.
#[derive(Debug, Default)]
pub struct HeartbeatCache {
    stores: HashMap<u64, StoreStatus>,
    regions: HashMap<u64, RegionStatus>,
    /// Recorded leaders per store id; see the module docs.
    leader_counts: BTreeMap<u64, u64>,
    /// Sum of the flows of the regions each store leads; see the module docs.
    leader_flows: BTreeMap<u64, u64>,
}

impl HeartbeatCache {
    pub fn on_store_heartbeat(&mut self, stats: StoreStats, now_ms: u64) {
        self.stores.insert(
            stats.store_id,
            StoreStatus {
                stats,
                last_heartbeat_ms: now_ms,
            },
        );
    }

    pub fn store(&self, store_id: u64) -> Option<&StoreStatus> {
        self.stores.get(&store_id)
    }

    /// Records a heartbeat of a region that was accepted (not stale).
    pub fn on_region_heartbeat(&mut self, req: &RegionHeartbeatRequest, now_ms: u64) {
        let Some(region) = req.region.as_ref() else {
            return;
        };
        let status = self.regions.entry(region.id).or_default();
        if req.term == 0 || status.term == 0 || req.term >= status.term {
            let old = status.leader.map(|p| p.store_id);
            let new = req.leader.map(|p| p.store_id);
            status.leader = req.leader;
            status.term = req.term;
            if old != new {
                if let Some(store_id) = old {
                    Self::uncount_leader(&mut self.leader_counts, store_id);
                }
                if let Some(store_id) = new {
                    *self.leader_counts.entry(store_id).or_default() += 1;
                }
            }
            let flow = flow_of(
                req.keys_read.saturating_add(req.keys_written),
                status.last_heartbeat_ms,
                now_ms,
            );
            if let Some(store_id) = old {
                Self::remove_flow(&mut self.leader_flows, store_id, status.flow);
            }
            if let (Some(store_id), true) = (new, flow > 0) {
                *self.leader_flows.entry(store_id).or_default() += flow;
            }
            status.flow = flow;
        }
        status.down_peers = req.down_peers.clone();
        status.pending_peers = req.pending_peers.clone();
        status.approximate_size = req.approximate_size;
        status.approximate_keys = req.approximate_keys;
        status.bytes_written = req.bytes_written;
        status.bytes_read = req.bytes_read;
        status.keys_written = req.keys_written;
        status.keys_read = req.keys_read;
        status.last_heartbeat_ms = now_ms;
    }

    pub fn region(&self, region_id: u64) -> Option<&RegionStatus> {
        self.regions.get(&region_id)
    }

    /// The recorded leader of `region`, if it is still one of its peers.
    pub fn leader_of(&self, region: &Region) -> Option<Peer> {
        let leader = self.regions.get(&region.id)?.leader?;
        region
            .peers
            .iter()
            .any(|p| p.id == leader.id && p.store_id == leader.store_id)
            .then_some(leader)
    }

    /// Forgets regions that left the region map.
    pub fn forget_regions(&mut self, ids: &[u64]) {
        for id in ids {
            if let Some(status) = self.regions.remove(id) {
                if let Some(leader) = status.leader {
                    Self::uncount_leader(&mut self.leader_counts, leader.store_id);
                    Self::remove_flow(&mut self.leader_flows, leader.store_id, status.flow);
                }
            }
        }
    }

    /// How many recorded regions each store leads (stores leading none are absent).
    pub fn leader_counts(&self) -> &BTreeMap<u64, u64> {
        &self.leader_counts
    }

    /// The summed flow of the regions each store leads (stores leading none, or only idle
    /// regions, may be absent).
    pub fn leader_flows(&self) -> &BTreeMap<u64, u64> {
        &self.leader_flows
    }

    fn remove_flow(flows: &mut BTreeMap<u64, u64>, store_id: u64, flow: u64) {
        if let Some(sum) = flows.get_mut(&store_id) {
            *sum = sum.saturating_sub(flow);
            if *sum == 0 {
                flows.remove(&store_id);
            }
        }
    }

    fn uncount_leader(counts: &mut BTreeMap<u64, u64>, store_id: u64) {
        if let Some(count) = counts.get_mut(&store_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&store_id);
            }
        }
    }
}

/// Requests a second from `requests` reported at `now_ms` when the previous heartbeat came at
/// `previous_ms` (0: none): see the module docs.
pub fn flow_of(requests: u64, previous_ms: u64, now_ms: u64) -> u64 {
    if previous_ms == 0 || now_ms <= previous_ms {
        return 0;
    }
    let interval_ms = (now_ms - previous_ms).max(1000);
    requests.saturating_mul(1000) / interval_ms
}

#[cfg(test)]
mod tests {
    use test_util::peer;

    use super::*;

    fn heartbeat(leader: Peer, term: u64) -> RegionHeartbeatRequest {
        RegionHeartbeatRequest {
            region: Some(Region {
                id: 1,
                peers: vec![peer(10, 1), peer(11, 2)],
                ..Default::default()
            }),
            leader: Some(leader),
            term,
            ..Default::default()
        }
    }

    #[test]
    fn leader_follows_terms() {
        let mut cache = HeartbeatCache::default();
        let req = heartbeat(peer(10, 1), 5);
        let region = req.region.clone().unwrap();
        cache.on_region_heartbeat(&req, 1);
        assert_eq!(cache.leader_of(&region), Some(peer(10, 1)));
        cache.on_region_heartbeat(&heartbeat(peer(11, 2), 6), 2);
        assert_eq!(cache.leader_of(&region), Some(peer(11, 2)));
        // A late heartbeat of the deposed leader does not win.
        cache.on_region_heartbeat(&heartbeat(peer(10, 1), 5), 3);
        assert_eq!(cache.leader_of(&region), Some(peer(11, 2)));
        // A leader that is no longer a peer is not reported.
        let shrunk = Region {
            id: 1,
            peers: vec![peer(10, 1)],
            ..Default::default()
        };
        assert_eq!(cache.leader_of(&shrunk), None);
        cache.forget_regions(&[1]);
        assert_eq!(cache.leader_of(&region), None);
    }

    #[test]
    fn flow_is_requests_per_second_since_the_previous_heartbeat_at_least_one_second() {
        for (requests, previous, now, flow) in [
            (5_000, 0, 10_000, 0),          // first heartbeat: no interval yet
            (5_000, 10_000, 20_000, 500),   // 10 s
            (5_000, 10_000, 10_500, 5_000), // half a second counts as one
            (5_000, 10_000, 10_000, 0),     // same instant, or the clock went back
            (5_000, 10_000, 9_000, 0),
            (u64::MAX, 1, 2_001, u64::MAX / 2_000), // saturates, no overflow
        ] {
            assert_eq!(
                flow_of(requests, previous, now),
                flow,
                "{requests} {previous} {now}"
            );
        }
    }

    /// The incrementally kept flows equal a scan of the recorded leaders' flows.
    #[test]
    fn leader_flows_follow_leaders_and_reports() {
        let mut cache = HeartbeatCache::default();
        let flowing = |leader: Peer, term: u64, id: u64, reads: u64| {
            let mut req = heartbeat(leader, term);
            if let Some(region) = req.region.as_mut() {
                region.id = id;
            }
            req.keys_read = reads;
            req
        };
        cache.on_region_heartbeat(&flowing(peer(10, 1), 5, 1, 0), 1_000);
        cache.on_region_heartbeat(&flowing(peer(10, 1), 5, 2, 0), 1_000);
        assert!(cache.leader_flows().is_empty());
        // 10 s later: 3,000 and 1,000 reads, 300/s and 100/s, both on store 1.
        cache.on_region_heartbeat(&flowing(peer(10, 1), 5, 1, 3_000), 11_000);
        cache.on_region_heartbeat(&flowing(peer(10, 1), 5, 2, 1_000), 11_000);
        assert_eq!(cache.leader_flows(), &BTreeMap::from([(1, 400)]));
        assert_eq!(cache.region(1).map(|s| s.flow), Some(300));
        // Region 1's leadership moves to store 2 with a new report: its old flow leaves store 1.
        cache.on_region_heartbeat(&flowing(peer(11, 2), 6, 1, 2_000), 21_000);
        assert_eq!(cache.leader_flows(), &BTreeMap::from([(1, 100), (2, 200)]));
        // A deposed leader's late report changes nothing.
        cache.on_region_heartbeat(&flowing(peer(10, 1), 5, 1, 90_000), 22_000);
        assert_eq!(cache.leader_flows(), &BTreeMap::from([(1, 100), (2, 200)]));
        cache.forget_regions(&[2]);
        assert_eq!(cache.leader_flows(), &BTreeMap::from([(2, 200)]));
    }

    /// The incrementally kept counts equal a scan of the recorded leaders.
    #[test]
    fn leader_counts_follow_leaders() {
        fn scanned(cache: &HeartbeatCache) -> BTreeMap<u64, u64> {
            let mut counts = BTreeMap::new();
            for status in cache.regions.values() {
                if let Some(leader) = status.leader {
                    *counts.entry(leader.store_id).or_default() += 1;
                }
            }
            counts
        }
        let mut cache = HeartbeatCache::default();
        let mut req = heartbeat(peer(10, 1), 5);
        cache.on_region_heartbeat(&req, 1);
        if let Some(region) = req.region.as_mut() {
            region.id = 2;
        }
        cache.on_region_heartbeat(&req, 1);
        assert_eq!(cache.leader_counts(), &BTreeMap::from([(1, 2)]));
        // Same leader again: no change.
        cache.on_region_heartbeat(&req, 2);
        assert_eq!(cache.leader_counts(), &BTreeMap::from([(1, 2)]));
        // Region 2 moves to store 2; an older term for region 1 changes nothing.
        req.leader = Some(peer(11, 2));
        req.term = 6;
        cache.on_region_heartbeat(&req, 3);
        let mut old = heartbeat(peer(11, 2), 4);
        cache.on_region_heartbeat(&old, 3);
        assert_eq!(cache.leader_counts(), &BTreeMap::from([(1, 1), (2, 1)]));
        // A heartbeat without a leader uncounts it.
        old.leader = None;
        old.term = 0;
        cache.on_region_heartbeat(&old, 4);
        assert_eq!(cache.leader_counts(), &BTreeMap::from([(2, 1)]));
        assert_eq!(cache.leader_counts(), &scanned(&cache));
        cache.forget_regions(&[2, 1, 99]);
        assert!(cache.leader_counts().is_empty());
        assert_eq!(cache.leader_counts(), &scanned(&cache));
    }
}
