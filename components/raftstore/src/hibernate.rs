//! Hibernation of idle regions: a region with nothing to do stops ticking, so a store can hold
//! many thousands of regions at little CPU (TiKV's hibernate regions).
//!
//! Protocol:
//! 1. A leader that has been idle ([`LeaderIdleView::is_idle`]: nothing proposed, read or
//!    applied pending, every peer has the whole log, commit and apply caught up, no transfer
//!    or membership change under way) for `hibernate_ticks` ticks asks every other peer to
//!    sleep (`MsgHibernateRequest`, with its term and last index).
//! 2. A follower sleeps and answers (`MsgHibernateResponse`) only if the request comes from
//!    the leader it follows, in its term, its own log ends at, and has committed, the same
//!    index, and it has no replica read waiting (a sleeping peer does not tick, and ticks
//!    expire the reads whose ReadIndex round got no answer) ([`follower_may_sleep`]).
//! 3. The leader sleeps once every other peer answered for its current term and index.
//!    Until then it keeps ticking; its heartbeats wake any follower that slept early.
//! 4. A sleeping peer does not tick. Any message that means work wakes it (a Raft message,
//!    a proposal, a read, an admin request; not a tick, a status query or a hibernation
//!    message). A follower woken by something other than its leader asks the leader to wake
//!    (`MsgRegionWakeUp`), so the leader's heartbeats resume before the follower's election
//!    timeout ends.
//! 5. **Store liveness** replaces the followers' election timers while they sleep: every
//!    store sends a small beacon to every store it shares regions with each heartbeat
//!    interval ([`StoreLiveness`]); a store not heard from for an election timeout is
//!    reported once, and every sleeping follower whose leader lives there wakes and, its
//!    leader being silent, campaigns.
//!
//! Safety does not depend on hibernation: a sleeping leader's lease runs out by time like any
//! other (so reads after it need a quorum round, which wakes everyone), and a sleeping
//! follower, whose election clock stands still, keeps refusing votes as if it had just heard
//! from its leader (check-quorum), which only delays an election, never allows a second
//! leader.
//!
//! Not here: merging small regions (fewer regions), PD's view of sleeping regions (their
//! leaders still answer the store's periodic region heartbeats, which do not wake them).

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What a leader's idleness depends on, read off the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderIdleView {
    pub proposals_pending: bool,
    pub reads_pending: bool,
    /// Entries not persisted here yet, a Ready being handled, or entries waiting for apply.
    pub work_pending: bool,
    pub last_index: u64,
    pub committed: u64,
    pub applied: u64,
    /// Every other peer's matched index (voters and learners).
    pub matched: Vec<u64>,
    pub conf_change_pending: bool,
    pub transferring: bool,
    pub snapshot_in_flight: bool,
}

impl LeaderIdleView {
    pub fn is_idle(&self) -> bool {
        !self.proposals_pending
            && !self.reads_pending
            && !self.work_pending
            && !self.conf_change_pending
            && !self.transferring
            && !self.snapshot_in_flight
            && self.committed == self.last_index
            && self.applied == self.committed
            && self.matched.iter().all(|&m| m == self.last_index)
    }
}

/// A follower's side of a hibernation request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerView {
    pub term: u64,
    pub leader_id: u64,
    pub last_index: u64,
    pub committed: u64,
    /// Replica reads wait on this follower (for a ReadIndex answer or for apply).
    pub reads_pending: bool,
}

/// Whether a follower in `view` may sleep on a request from peer `from` for `(term, index)`.
pub fn follower_may_sleep(view: FollowerView, from: u64, term: u64, index: u64) -> bool {
    !view.reads_pending
        && view.leader_id == from
        && view.term == term
        && view.last_index == index
        && view.committed == index
}

/// The regions of a store that tick. A region leaves the set while it sleeps; the store's
/// ticker ticks only the regions in it. Cheap to clone (shared).
///
/// Ticks never pile up: each region has a flag set when a tick is sent and cleared when the
/// peer handles it ([`TickToken`]), and a region whose last tick is still queued gets none.
/// On an overloaded store Raft's clock then slows down with the peers instead of a backlog
/// of ticks firing elections all at once when the pollers catch up.
#[derive(Clone, Debug, Default)]
pub struct AwakeSet {
    ids: Arc<Mutex<HashMap<u64, TickToken>>>,
}

/// Whether a region's last tick is still queued; see [`AwakeSet`].
#[derive(Clone, Debug, Default)]
pub struct TickToken(Arc<AtomicBool>);

impl TickToken {
    /// Called by the peer as it handles the tick.
    pub fn handled(&self) {
        self.0.store(false, Ordering::Release);
    }
}

impl AwakeSet {
    pub fn insert(&self, region_id: u64) {
        self.ids.lock().entry(region_id).or_default();
    }

    pub fn remove(&self, region_id: u64) {
        self.ids.lock().remove(&region_id);
    }

    pub fn contains(&self, region_id: u64) -> bool {
        self.ids.lock().contains_key(&region_id)
    }

    pub fn len(&self) -> usize {
        self.ids.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The regions to tick now (awake, with no tick still queued), each with the token its
    /// peer clears on handling the tick. Marks them as having a tick queued.
    pub fn due(&self) -> Vec<(u64, TickToken)> {
        self.ids
            .lock()
            .iter()
            .filter(|(_, token)| !token.0.swap(true, Ordering::AcqRel))
            .map(|(id, token)| (*id, token.clone()))
            .collect()
    }
}

/// When this store last heard from each other store (any Raft message or a liveness beacon),
/// counted in the store's ticks like Raft's own timers, and which stores it has reported
/// unreachable. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct StoreLiveness {
    inner: Arc<Mutex<LivenessState>>,
}

#[derive(Debug, Default)]
struct LivenessState {
    tick: u64,
    last_heard: HashMap<u64, u64>,
    down: HashSet<u64>,
}

impl StoreLiveness {
    /// Notes a message from `store_id` now.
    pub fn heard(&self, store_id: u64) {
        let mut s = self.inner.lock();
        let tick = s.tick;
        s.last_heard.insert(store_id, tick);
        s.down.remove(&store_id);
    }

    /// Advances the store's liveness clock by one tick and returns the stores among `known`
    /// that have now been silent for `timeout_ticks` and were not reported yet; each is
    /// reported once until heard from again. A store never heard from counts as heard at the
    /// first tick that knows it (so a starting store reports nobody at once).
    pub fn tick(&self, known: &[u64], timeout_ticks: u64) -> Vec<u64> {
        let mut s = self.inner.lock();
        s.tick += 1;
        let now = s.tick;
        let mut down = Vec::new();
        for &store in known {
            let heard = *s.last_heard.entry(store).or_insert(now);
            if now - heard >= timeout_ticks && s.down.insert(store) {
                down.push(store);
            }
        }
        down
    }

    /// Whether `store_id` is reported unreachable now.
    pub fn is_down(&self, store_id: u64) -> bool {
        self.inner.lock().down.contains(&store_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle() -> LeaderIdleView {
        LeaderIdleView {
            proposals_pending: false,
            reads_pending: false,
            work_pending: false,
            last_index: 10,
            committed: 10,
            applied: 10,
            matched: vec![10, 10],
            conf_change_pending: false,
            transferring: false,
            snapshot_in_flight: false,
        }
    }

    #[test]
    fn a_caught_up_leader_with_nothing_pending_is_idle() {
        assert!(idle().is_idle());
    }

    #[test]
    fn any_pending_work_or_lagging_peer_keeps_a_leader_awake() {
        let busy = [
            LeaderIdleView {
                proposals_pending: true,
                ..idle()
            },
            LeaderIdleView {
                reads_pending: true,
                ..idle()
            },
            LeaderIdleView {
                work_pending: true,
                ..idle()
            },
            LeaderIdleView {
                committed: 9,
                ..idle()
            },
            LeaderIdleView {
                applied: 9,
                ..idle()
            },
            LeaderIdleView {
                matched: vec![10, 9],
                ..idle()
            },
            LeaderIdleView {
                conf_change_pending: true,
                ..idle()
            },
            LeaderIdleView {
                transferring: true,
                ..idle()
            },
            LeaderIdleView {
                snapshot_in_flight: true,
                ..idle()
            },
        ];
        for v in busy {
            assert!(!v.is_idle(), "{v:?}");
        }
    }

    #[test]
    fn a_follower_sleeps_only_for_its_leader_in_its_term_with_the_same_log() {
        let v = FollowerView {
            term: 3,
            leader_id: 1,
            last_index: 10,
            committed: 10,
            reads_pending: false,
        };
        assert!(follower_may_sleep(v, 1, 3, 10));
        assert!(!follower_may_sleep(v, 2, 3, 10), "not its leader");
        assert!(!follower_may_sleep(v, 1, 4, 10), "another term");
        assert!(!follower_may_sleep(v, 1, 3, 11), "its log is behind");
        assert!(!follower_may_sleep(v, 1, 3, 9), "its log is ahead");
        let uncommitted = FollowerView { committed: 9, ..v };
        assert!(!follower_may_sleep(uncommitted, 1, 3, 10), "commit unknown");
        let reading = FollowerView {
            reads_pending: true,
            ..v
        };
        assert!(
            !follower_may_sleep(reading, 1, 3, 10),
            "replica reads to expire"
        );
    }

    #[test]
    fn a_silent_store_is_reported_once_until_heard_again() {
        let l = StoreLiveness::default();
        assert!(l.tick(&[2, 3], 3).is_empty(), "first sight counts as heard");
        l.heard(2);
        assert!(l.tick(&[2, 3], 3).is_empty());
        assert!(l.tick(&[2, 3], 3).is_empty());
        // Tick 4: store 3 last counted at tick 1, store 2 heard at tick 1 too.
        assert_eq!(l.tick(&[2, 3], 3), vec![2, 3]);
        assert!(l.is_down(3) && l.is_down(2));
        assert!(l.tick(&[2, 3], 3).is_empty(), "reported once");
        l.heard(3);
        assert!(!l.is_down(3));
        for _ in 0..2 {
            assert!(l.tick(&[2, 3], 3).is_empty());
        }
        assert_eq!(l.tick(&[2, 3], 3), vec![3], "silent again");
    }

    #[test]
    fn a_store_that_keeps_talking_is_never_reported() {
        let l = StoreLiveness::default();
        for _ in 0..100 {
            l.heard(2);
            assert!(l.tick(&[2], 3).is_empty());
        }
    }

    #[test]
    fn the_awake_set_lists_what_ticks() {
        let a = AwakeSet::default();
        a.insert(1);
        a.insert(2);
        a.remove(1);
        let due: Vec<u64> = a.due().into_iter().map(|(id, _)| id).collect();
        assert_eq!(due, vec![2]);
        assert!(a.contains(2) && !a.contains(1));
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn a_region_gets_no_tick_while_its_last_one_is_queued() {
        let a = AwakeSet::default();
        a.insert(1);
        a.insert(2);
        let mut first = a.due();
        first.sort_by_key(|(id, _)| *id);
        assert_eq!(first.len(), 2);
        // Neither handled its tick: nothing is due.
        assert!(a.due().is_empty());
        // Region 1 handles its tick: it alone is due again.
        first[0].1.handled();
        let again: Vec<u64> = a.due().into_iter().map(|(id, _)| id).collect();
        assert_eq!(again, vec![1]);
        // A region that went to sleep with a tick queued ticks again once it wakes.
        a.remove(2);
        a.insert(2);
        let woken: Vec<u64> = a.due().into_iter().map(|(id, _)| id).collect();
        assert_eq!(woken, vec![2]);
    }
}
