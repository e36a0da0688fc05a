//! Scheduling: the balance-leader scheduler, which evens out how many regions each store leads,
//! and for hot regions the load each store leads.
//!
//! Policy (like PD's `balance-leader` scheduler, but driven by heartbeats rather than by a
//! periodic scan): when the leader of a region reports a heartbeat, PD compares the number of
//! regions its store leads with the other stores holding a voter of that region. If the
//! reporting store leads at least `threshold` more regions than the least-loaded of them, PD
//! answers the heartbeat with a `TransferLeader` to the region's peer on that store.
//!
//! Who takes part: only stores that are `Up` and sent a store heartbeat within
//! [`STORE_ALIVE_MS`] (3× the default store heartbeat interval of 10 s). A store that is
//! not taking part neither gives nor receives leaders. Leader counts come from the heartbeat soft
//! state ([`crate::heartbeat`]), so a freshly elected PD leader schedules nothing until it has
//! heard from the stores.
//!
//! Hot regions (TiKV's hot-region scheduler, for leaders): a region whose flow (requests a
//! second its leader reported, see [`crate::heartbeat`]) is at least `hot_region_min_flow` is
//! balanced by load instead of by count: PD moves its leader off the store that leads the most
//! flow to the least-loaded candidate, if and only if that store still leads at least as much
//! flow afterwards (`2 × flow ≤ source − target`), so a move never just relocates the hotspot
//! and never invites a move back. A hot region is never moved by leader counts; the count
//! balance then evens the counts out with cold regions. A region that alone carries most of a
//! store's load (e.g. the tail of a sequential insert) stays where it is: moving it would only
//! move the hotspot.
//!
//! Rate limits: a proposed transfer stays *pending* until a heartbeat of its region shows a
//! leader on another store than the source (done, or overtaken by an election), or until
//! [`LEADER_TRANSFER_TIMEOUT_MS`] passed (the store may have refused or lost it; the region's
//! next heartbeat may then propose again). A region has at most one pending transfer, and at
//! most `max_pending` are pending cluster-wide. Pending transfers are soft state of the PD node
//! that proposed them: a new PD leader starts with none (it proposes nothing before it has heard
//! from the stores anyway), and stale ones of a re-elected node expire by the timeout.
//!
//! Invariants of [`pick_leader_target`] (and so of every proposed transfer):
//! - the target is a voter (not a learner nor a witness) of the region on another store than
//!   the leader, and neither down nor pending (lagging) as reported by the leader: PD never
//!   proposes a transfer to a store without a healthy replica of the region;
//! - the source store's leader count exceeds the target's by at least `threshold`, which is at
//!   least 2 (a transfer narrows the gap by 2, so with 1 a leader would move back and forth);
//! - pending transfers are counted as already done (source −1, target +1), so one burst of
//!   heartbeats does not move every leader off a busy store: the gap is re-evaluated after each
//!   proposal;
//! - the target is the least-loaded candidate; ties go to the smallest store id, so the decision
//!   is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use proto::metapb::{Peer, PeerRole, Region};

/// A store takes part in leader balancing only if its last store heartbeat is at most this old
/// (3× the default store heartbeat interval).
pub const STORE_ALIVE_MS: u64 = 30_000;

/// A pending transfer is forgotten after this long if no heartbeat showed it done.
pub const LEADER_TRANSFER_TIMEOUT_MS: u64 = 10_000;

/// The smallest threshold that cannot ping-pong; smaller configured values are raised to it.
pub const MIN_LEADER_BALANCE_THRESHOLD: u64 = 2;

/// Requests a second from which a region counts as hot (see the module docs).
pub const DEFAULT_HOT_REGION_MIN_FLOW: u64 = 500;

/// Settings of the balance-leader scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderBalanceConfig {
    /// Minimum gap in leader counts between the source and the target store (at least 2).
    pub threshold: u64,
    /// Maximum number of pending transfers cluster-wide.
    pub max_pending: usize,
    /// How long a transfer stays pending without being seen done, ms.
    pub transfer_timeout_ms: u64,
    /// A region with at least this flow (requests a second) is balanced by load, not by count;
    /// 0: never.
    pub hot_region_min_flow: u64,
}

impl Default for LeaderBalanceConfig {
    fn default() -> Self {
        LeaderBalanceConfig {
            threshold: 2,
            max_pending: 4,
            transfer_timeout_ms: LEADER_TRANSFER_TIMEOUT_MS,
            hot_region_min_flow: DEFAULT_HOT_REGION_MIN_FLOW,
        }
    }
}

/// Picks the peer of `region` that `leader` should hand leadership to, if any.
///
/// `counts` holds the leader count of every store taking part (stores leading nothing with 0),
/// pending transfers already applied; a store absent from it takes no part. `excluded` are ids
/// of peers that must not receive leadership (down or pending peers). See the module docs for
/// the invariants.
pub fn pick_leader_target(
    counts: &BTreeMap<u64, u64>,
    region: &Region,
    leader: &Peer,
    excluded: &[u64],
    threshold: u64,
) -> Option<Peer> {
    let threshold = threshold.max(MIN_LEADER_BALANCE_THRESHOLD);
    let (source, target_count, target) = least_loaded_target(counts, region, leader, excluded)?;
    (source >= target_count.saturating_add(threshold)).then_some(target)
}

/// Picks the peer of the hot `region` (flow `flow`) that `leader` should hand leadership to, if
/// any: see the module docs. `flows` holds the led flow of every store taking part (stores
/// leading nothing with 0), pending transfers already applied.
pub fn pick_hot_target(
    flows: &BTreeMap<u64, u64>,
    region: &Region,
    leader: &Peer,
    excluded: &[u64],
    flow: u64,
) -> Option<Peer> {
    let (source, target_flow, target) = least_loaded_target(flows, region, leader, excluded)?;
    if flows.values().any(|&other| other > source) {
        return None;
    }
    (flow.saturating_mul(2) <= source.saturating_sub(target_flow)).then_some(target)
}

/// The load of `leader`'s store, and the least-loaded candidate to lead `region` instead with
/// its load: a voter (not a learner nor a witness) on another store taking part in `loads`,
/// not `excluded`; ties go to the smallest store id. `None` if `leader` is not a peer of the
/// region, its store takes no part, or there is no candidate.
fn least_loaded_target(
    loads: &BTreeMap<u64, u64>,
    region: &Region,
    leader: &Peer,
    excluded: &[u64],
) -> Option<(u64, u64, Peer)> {
    if !region
        .peers
        .iter()
        .any(|p| p.id == leader.id && p.store_id == leader.store_id)
    {
        return None;
    }
    let source = *loads.get(&leader.store_id)?;
    let (target_load, target) = region
        .peers
        .iter()
        .filter(|p| {
            p.store_id != leader.store_id
                && p.role() == PeerRole::Voter
                && !p.is_witness
                && !excluded.contains(&p.id)
        })
        .filter_map(|p| loads.get(&p.store_id).map(|&load| (load, p)))
        .min_by_key(|(load, p)| (*load, p.store_id))?;
    Some((source, target_load, *target))
}

/// A proposed transfer not yet seen done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingTransfer {
    pub from_store: u64,
    pub to: Peer,
    /// The region's flow if it was moved as a hot region (0: moved by count).
    pub flow: u64,
    /// When it was proposed, Unix ms.
    pub since_ms: u64,
}

/// What the scheduler needs to know about one region heartbeat.
#[derive(Clone, Copy, Debug)]
pub struct LeaderView<'a> {
    pub region: &'a Region,
    /// The region's leader as recorded after this heartbeat (`None` if unknown).
    pub leader: Option<&'a Peer>,
    /// Whether this heartbeat came from the recorded leader, so that it can be answered.
    pub from_leader: bool,
    /// Recorded leader counts per store (see [`crate::heartbeat::HeartbeatCache::leader_counts`]).
    pub leader_counts: &'a BTreeMap<u64, u64>,
    /// Recorded led flow per store (see [`crate::heartbeat::HeartbeatCache::leader_flows`]).
    pub leader_flows: &'a BTreeMap<u64, u64>,
    /// This region's flow, requests a second.
    pub region_flow: u64,
    /// The stores taking part (Up, heartbeated within [`STORE_ALIVE_MS`]).
    pub stores: &'a BTreeSet<u64>,
    /// Peers that must not receive leadership (down or pending).
    pub excluded: &'a [u64],
}

/// The balance-leader scheduler's memory: the pending transfers. See the module docs.
#[derive(Debug, Default)]
pub struct LeaderScheduler {
    config: LeaderBalanceConfig,
    pending: BTreeMap<u64, PendingTransfer>,
}

impl LeaderScheduler {
    pub fn new(config: LeaderBalanceConfig) -> LeaderScheduler {
        LeaderScheduler {
            config,
            pending: BTreeMap::new(),
        }
    }

    /// The pending transfers by region id.
    pub fn pending(&self) -> &BTreeMap<u64, PendingTransfer> {
        &self.pending
    }

    /// Handles one heartbeat: settles a pending transfer of the region that is done, forgets
    /// timed-out ones, and returns the peer to transfer leadership to, if a transfer is due.
    pub fn on_heartbeat(&mut self, view: LeaderView<'_>, now_ms: u64) -> Option<Peer> {
        self.expire(now_ms);
        let region_id = view.region.id;
        if let (Some(pending), Some(leader)) = (self.pending.get(&region_id), view.leader) {
            if leader.store_id != pending.from_store {
                self.pending.remove(&region_id);
            }
        }
        if !view.from_leader
            || self.pending.contains_key(&region_id)
            || self.pending.len() >= self.config.max_pending
        {
            return None;
        }
        let leader = view.leader?;
        let hot = self.config.hot_region_min_flow > 0
            && view.region_flow >= self.config.hot_region_min_flow;
        let target = if hot {
            let flows = self.effective_flows(view.leader_flows, view.stores);
            pick_hot_target(&flows, view.region, leader, view.excluded, view.region_flow)?
        } else {
            let counts = self.effective_counts(view.leader_counts, view.stores);
            pick_leader_target(
                &counts,
                view.region,
                leader,
                view.excluded,
                self.config.threshold,
            )?
        };
        self.pending.insert(
            region_id,
            PendingTransfer {
                from_store: leader.store_id,
                to: target,
                flow: if hot { view.region_flow } else { 0 },
                since_ms: now_ms,
            },
        );
        Some(target)
    }

    /// Forgets pending transfers of regions that no longer exist.
    pub fn forget_regions(&mut self, ids: &[u64]) {
        for id in ids {
            self.pending.remove(id);
        }
    }

    /// Forgets transfers pending for longer than the timeout (or proposed "in the future", if
    /// the clock went back).
    fn expire(&mut self, now_ms: u64) {
        let timeout = self.config.transfer_timeout_ms;
        self.pending
            .retain(|_, p| now_ms >= p.since_ms && now_ms - p.since_ms < timeout);
    }

    /// Led flows of the participating stores with the pending hot transfers applied.
    fn effective_flows(
        &self,
        recorded: &BTreeMap<u64, u64>,
        stores: &BTreeSet<u64>,
    ) -> BTreeMap<u64, u64> {
        self.with_pending(recorded, stores, |p| p.flow)
    }

    /// Leader counts of the participating stores with the pending transfers applied.
    fn effective_counts(
        &self,
        recorded: &BTreeMap<u64, u64>,
        stores: &BTreeSet<u64>,
    ) -> BTreeMap<u64, u64> {
        self.with_pending(recorded, stores, |_| 1)
    }

    /// `recorded` for every participating store (0 if absent), with `amount` of every pending
    /// transfer moved from its source to its target.
    fn with_pending(
        &self,
        recorded: &BTreeMap<u64, u64>,
        stores: &BTreeSet<u64>,
        amount: impl Fn(&PendingTransfer) -> u64,
    ) -> BTreeMap<u64, u64> {
        let mut out: BTreeMap<u64, u64> = stores
            .iter()
            .map(|&id| (id, recorded.get(&id).copied().unwrap_or(0)))
            .collect();
        for pending in self.pending.values() {
            if let Some(v) = out.get_mut(&pending.from_store) {
                *v = v.saturating_sub(amount(pending));
            }
            if let Some(v) = out.get_mut(&pending.to.store_id) {
                *v += amount(pending);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use test_util::peer;

    use super::*;

    /// Region `id` with peers `id*10 + store` on the given stores.
    fn region(id: u64, stores: &[u64]) -> Region {
        Region {
            id,
            peers: stores.iter().map(|&s| peer(id * 10 + s, s)).collect(),
            ..Default::default()
        }
    }

    fn counts(pairs: &[(u64, u64)]) -> BTreeMap<u64, u64> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn threshold_is_respected_and_never_below_two() {
        let r = region(1, &[1, 2, 3]);
        let leader = r.peers[0];
        // Gap 1: never (not even with a configured threshold of 1 or 0).
        for threshold in [0, 1, 2] {
            let c = counts(&[(1, 3), (2, 2), (3, 2)]);
            assert_eq!(pick_leader_target(&c, &r, &leader, &[], threshold), None);
        }
        // Gap 2: with threshold 2, not with 3.
        let c = counts(&[(1, 4), (2, 2), (3, 3)]);
        assert_eq!(
            pick_leader_target(&c, &r, &leader, &[], 2),
            Some(r.peers[1])
        );
        assert_eq!(pick_leader_target(&c, &r, &leader, &[], 3), None);
        // The leader is the least loaded: nothing.
        let c = counts(&[(1, 0), (2, 5), (3, 5)]);
        assert_eq!(pick_leader_target(&c, &r, &leader, &[], 2), None);
    }

    #[test]
    fn only_healthy_voters_on_participating_stores_are_targets() {
        let mut r = region(1, &[1, 2, 3]);
        let leader = r.peers[0];
        // Store 4 is the least loaded but holds no replica of the region.
        let c = counts(&[(1, 6), (2, 5), (3, 5), (4, 0)]);
        assert_eq!(pick_leader_target(&c, &r, &leader, &[], 2), None);
        // Store 3 is not taking part (absent from the counts).
        let c = counts(&[(1, 6), (2, 5)]);
        assert_eq!(pick_leader_target(&c, &r, &leader, &[], 2), None);
        let c = counts(&[(1, 6), (2, 5), (3, 0)]);
        assert_eq!(
            pick_leader_target(&c, &r, &leader, &[], 2),
            Some(r.peers[2])
        );
        // A down or pending peer is skipped, the next candidate is too close.
        assert_eq!(pick_leader_target(&c, &r, &leader, &[13], 2), None);
        // A learner or a witness is skipped.
        r.peers[2].set_role(PeerRole::Learner);
        assert_eq!(pick_leader_target(&c, &r, &leader, &[], 2), None);
        r.peers[2].set_role(PeerRole::Voter);
        r.peers[2].is_witness = true;
        assert_eq!(pick_leader_target(&c, &r, &leader, &[], 2), None);
        // The source store takes no part, or the "leader" is not a peer of the region.
        let c = counts(&[(2, 0), (3, 0)]);
        assert_eq!(pick_leader_target(&c, &r, &leader, &[], 2), None);
        let c = counts(&[(1, 6), (2, 0), (3, 0)]);
        assert_eq!(pick_leader_target(&c, &r, &peer(99, 1), &[], 2), None);
    }

    #[test]
    fn least_loaded_target_wins_ties_to_the_smallest_store_id() {
        let r = region(1, &[5, 3, 1, 2]);
        let leader = r.peers[0];
        let c = counts(&[(5, 9), (3, 1), (1, 1), (2, 4)]);
        assert_eq!(
            pick_leader_target(&c, &r, &leader, &[], 2),
            Some(peer(11, 1))
        );
        let c = counts(&[(5, 9), (3, 1), (1, 2), (2, 4)]);
        assert_eq!(
            pick_leader_target(&c, &r, &leader, &[], 2),
            Some(peer(13, 3))
        );
    }

    #[test]
    fn a_hot_region_moves_only_off_the_hottest_store_and_only_if_it_stays_at_least_as_hot() {
        let r = region(1, &[1, 2, 3]);
        let leader = r.peers[0];
        for (flows, flow, want) in [
            // 3,000 vs 0: moving 1,000 leaves 2,000 ≥ 1,000.
            (counts(&[(1, 3000), (2, 0), (3, 500)]), 1000, Some(2)),
            // Moving 1,500 would leave 1,500 vs 1,500: still allowed (not inverted).
            (counts(&[(1, 3000), (2, 0), (3, 500)]), 1500, Some(2)),
            // One region carrying the store's load: moving it only moves the hotspot.
            (counts(&[(1, 3000), (2, 0), (3, 500)]), 2000, None),
            // Not the hottest store: nothing (the hottest one moves its own).
            (counts(&[(1, 3000), (2, 4000), (3, 0)]), 500, None),
            // Ties go to the smallest store id.
            (counts(&[(1, 3000), (2, 100), (3, 100)]), 500, Some(2)),
            // The leader's store takes no part.
            (counts(&[(2, 0), (3, 0)]), 500, None),
        ] {
            assert_eq!(
                pick_hot_target(&flows, &r, &leader, &[], flow).map(|p| p.store_id),
                want,
                "{flows:?} {flow}"
            );
        }
        // Down or pending peers, learners and stores without a replica are no targets.
        let flows = counts(&[(1, 3000), (2, 0), (3, 100), (4, 0)]);
        assert_eq!(
            pick_hot_target(&flows, &r, &leader, &[12], 500).map(|p| p.store_id),
            Some(3)
        );
        assert_eq!(pick_hot_target(&flows, &r, &peer(99, 1), &[], 500), None);
    }

    /// A heartbeat of region `i` of `c` from its peer on store 1, with `flows` and `flow`.
    fn hot_view<'a>(
        c: &'a Cluster,
        i: usize,
        flows: &'a BTreeMap<u64, u64>,
        flow: u64,
    ) -> LeaderView<'a> {
        LeaderView {
            region: &c.regions[i],
            leader: Some(&c.regions[i].peers[0]),
            from_leader: true,
            leader_counts: &c.leader_counts,
            leader_flows: flows,
            region_flow: flow,
            stores: &c.stores,
            excluded: &[],
        }
    }

    #[test]
    fn hot_regions_are_balanced_by_flow_and_never_by_count() {
        let c = Cluster::new(6);
        let mut s = LeaderScheduler::new(LeaderBalanceConfig::default());
        // Store 1 leads all six regions (a count gap of 6) but region 1 is hot and moving it
        // would move the whole load: no transfer, by flow or by count.
        let alone = counts(&[(1, 2000)]);
        assert_eq!(s.on_heartbeat(hot_view(&c, 0, &alone, 2000), 0), None);
        // With more hot load on store 1, region 1 moves to the coolest store, and the pending
        // move counts: a second hot region of 900 may not follow (1,600 left against 0 on
        // store 3: 2 × 900 > 1,600).
        let shared = counts(&[(1, 2600)]);
        assert_eq!(
            s.on_heartbeat(hot_view(&c, 0, &shared, 1000), 0)
                .map(|p| p.store_id),
            Some(2)
        );
        assert_eq!(s.pending()[&1].flow, 1000);
        assert_eq!(s.on_heartbeat(hot_view(&c, 1, &shared, 900), 0), None);
        // A cold region is still balanced by count (5/1/0 with the pending move).
        assert_eq!(
            s.on_heartbeat(hot_view(&c, 2, &shared, 10), 0)
                .map(|p| p.store_id),
            Some(3)
        );
        assert_eq!(s.pending()[&3].flow, 0);
    }

    struct Cluster {
        regions: Vec<Region>,
        leader_counts: BTreeMap<u64, u64>,
        stores: BTreeSet<u64>,
    }

    impl Cluster {
        /// `n` regions on stores 1, 2, 3, all led by store 1.
        fn new(n: u64) -> Cluster {
            Cluster {
                regions: (1..=n).map(|id| region(id, &[1, 2, 3])).collect(),
                leader_counts: counts(&[(1, n)]),
                stores: BTreeSet::from([1, 2, 3]),
            }
        }

        fn heartbeat(
            &self,
            s: &mut LeaderScheduler,
            i: usize,
            leader: Peer,
            now: u64,
        ) -> Option<Peer> {
            s.on_heartbeat(
                LeaderView {
                    region: &self.regions[i],
                    leader: Some(&leader),
                    from_leader: true,
                    leader_counts: &self.leader_counts,
                    leader_flows: &BTreeMap::new(),
                    region_flow: 0,
                    stores: &self.stores,
                    excluded: &[],
                },
                now,
            )
        }

        fn move_leader(&mut self, from: u64, to: u64) {
            *self.leader_counts.entry(from).or_default() -= 1;
            *self.leader_counts.entry(to).or_default() += 1;
        }
    }

    #[test]
    fn pending_transfers_are_counted_and_limited() {
        let mut c = Cluster::new(6);
        let mut s = LeaderScheduler::new(LeaderBalanceConfig {
            max_pending: 3,
            ..LeaderBalanceConfig::default()
        });
        let on1 = |c: &Cluster, i: usize| c.regions[i].peers[0];
        // 6/0/0: to 2, then (5/1/0) to 3, then (4/1/1) to 2; then the limit.
        let got: Vec<Option<u64>> = (0..6)
            .map(|i| c.heartbeat(&mut s, i, on1(&c, i), 0).map(|p| p.store_id))
            .collect();
        assert_eq!(got, vec![Some(2), Some(3), Some(2), None, None, None]);
        assert_eq!(s.pending().len(), 3);
        // At most one pending transfer per region: region 0 again is not answered.
        assert_eq!(c.heartbeat(&mut s, 0, on1(&c, 0), 1), None);

        // Region 0 reports its new leader on store 2: settled, and region 3 may go (3/2/1).
        c.move_leader(1, 2);
        let new_leader = c.regions[0].peers[1];
        assert_eq!(c.heartbeat(&mut s, 0, new_leader, 2), None);
        assert_eq!(s.pending().len(), 2);
        assert_eq!(
            c.heartbeat(&mut s, 3, on1(&c, 3), 2).map(|p| p.store_id),
            Some(3)
        );
        // Counted as done: 2/2/2 even though store 1 still leads 5 regions.
        assert_eq!(c.heartbeat(&mut s, 4, on1(&c, 4), 2), None);
    }

    #[test]
    fn pending_transfers_time_out() {
        let c = Cluster::new(6);
        let mut s = LeaderScheduler::new(LeaderBalanceConfig {
            max_pending: 1,
            transfer_timeout_ms: 100,
            ..LeaderBalanceConfig::default()
        });
        let leader = c.regions[0].peers[0];
        assert!(c.heartbeat(&mut s, 0, leader, 1000).is_some());
        assert_eq!(c.heartbeat(&mut s, 0, leader, 1099), None);
        // Timed out: the region's next heartbeat proposes again.
        assert!(c.heartbeat(&mut s, 0, leader, 1100).is_some());
        // A clock going back expires it too.
        assert!(c.heartbeat(&mut s, 0, leader, 500).is_some());
        s.forget_regions(&[1]);
        assert!(s.pending().is_empty());
    }

    #[test]
    fn heartbeats_not_from_the_leader_are_not_answered() {
        let c = Cluster::new(6);
        let mut s = LeaderScheduler::new(LeaderBalanceConfig::default());
        let leader = c.regions[0].peers[0];
        let view = LeaderView {
            region: &c.regions[0],
            leader: Some(&leader),
            from_leader: false,
            leader_counts: &c.leader_counts,
            leader_flows: &BTreeMap::new(),
            region_flow: 0,
            stores: &c.stores,
            excluded: &[],
        };
        assert_eq!(s.on_heartbeat(view, 0), None);
        let view = LeaderView {
            leader: None,
            from_leader: true,
            ..view
        };
        assert_eq!(s.on_heartbeat(view, 0), None);
        assert!(s.pending().is_empty());
    }
}
