//! A Raft leader's lease: while it holds, no other replica of the group can be leader, so the
//! leader may answer reads (and PD may hand out timestamps and ids) without a quorum round per
//! request. Region leaders and the PD leader use this one type.
//!
//! Protocol:
//! - Followers run raft-rs with `check_quorum`: a follower that received a message of the
//!   leader (append or heartbeat) rejects votes and pre-votes for another candidate until an
//!   election timeout of its own ticks has passed, counted from **when it received** it.
//! - The leader records when it **sent** a round (the first appends of its term, the heartbeats
//!   of a ReadIndex, a proposal). When a quorum acknowledges the round, [`Lease::renew`] extends
//!   the lease to `sent_at + duration`. Every acknowledging follower received the round after
//!   `sent_at`, so its refusal window outlasts the lease as long as `duration` is shorter than
//!   the election timeout by a margin for tick phase, scheduling delay and clock-rate drift
//!   (each driver's configuration sets it so); a quorum refusing means no other leader.
//! - The lease never shrinks within a term; [`Lease::expire`] voids it as soon as the node is
//!   not a (ready) leader of the same term.
//! - A leader transferring its leadership has no lease ([`Lease::begin_transfer`]): the
//!   transferee campaigns at once on `MsgTimeoutNow`, and followers grant that vote whatever
//!   their refusal window says. After a transfer that aborted with this node still leading
//!   ([`Lease::abort_transfer`]), a delayed `MsgTimeoutNow` may still reach the transferee for
//!   an election timeout, so no round sent before then renews the lease. (Gating only the
//!   *reads* until then is not enough: a round sent inside that window, acknowledged before the
//!   quorum votes for the transferee, would give a lease that outlives the gate while the
//!   transferee already leads.)
//!
//! Why the send time: anchoring the lease at the acknowledgement, or after the leader's own
//! fsync of the entries it already sent, moves the lease's end later by that delay while the
//! followers' windows started when they received the round; a slow fsync would then outlast the
//! margin, and a deposed leader would serve while a new one already does.
//!
//! Pure: callers pass the times (their clock's `Instant`s; tests use synthetic ones).

use std::time::{Duration, Instant};

/// A leader's lease within one term. See the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// The lease holds before this instant.
    until: Option<Instant>,
    /// A leader transfer is in progress.
    transferring: bool,
    /// Rounds sent before this instant do not renew the lease (an aborted transfer).
    suspended_until: Option<Instant>,
}

impl Lease {
    /// A quorum acknowledged a round sent at `sent_at`: the lease holds until
    /// `sent_at + duration`, unless it already holds longer or renewal is suspended.
    pub fn renew(&mut self, sent_at: Instant, duration: Duration) {
        if self.transferring || self.suspended_until.is_some_and(|s| sent_at < s) {
            return;
        }
        let until = sent_at + duration;
        self.until = Some(self.until.map_or(until, |u| u.max(until)));
    }

    /// The node stopped being a (ready) leader of this term: no lease.
    pub fn expire(&mut self) {
        self.until = None;
        self.transferring = false;
    }

    /// A leader transfer started: no lease until it ends.
    pub fn begin_transfer(&mut self) {
        self.until = None;
        self.transferring = true;
    }

    /// A leader transfer ended at `now` without this node losing leadership: no lease from
    /// rounds sent within `election_timeout` of now.
    pub fn abort_transfer(&mut self, now: Instant, election_timeout: Duration) {
        self.until = None;
        self.transferring = false;
        let until = now + election_timeout;
        self.suspended_until = Some(self.suspended_until.map_or(until, |s| s.max(until)));
    }

    /// Whether the lease holds at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        !self.transferring && self.until.is_some_and(|until| now < until)
    }

    /// Until when the lease holds (`None`: it does not, or a transfer is under way).
    pub fn until(&self) -> Option<Instant> {
        self.until.filter(|_| !self.transferring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn renewals_extend_never_shrink_and_expire_voids() {
        let t0 = Instant::now();
        let mut lease = Lease::default();
        assert!(!lease.holds(t0));
        assert_eq!(lease.until(), None);
        lease.renew(t0, 900 * MS);
        assert!(lease.holds(t0 + 899 * MS));
        assert!(!lease.holds(t0 + 900 * MS));
        // An older round acknowledged late does not shorten it.
        lease.renew(t0 - 100 * MS, 900 * MS);
        assert_eq!(lease.until(), Some(t0 + 900 * MS));
        lease.renew(t0 + 50 * MS, 900 * MS);
        assert_eq!(lease.until(), Some(t0 + 950 * MS));
        lease.expire();
        assert!(!lease.holds(t0 + 300 * MS));
        assert_eq!(lease.until(), None);
    }

    #[test]
    fn no_lease_during_a_transfer_nor_from_rounds_sent_for_an_election_timeout_after_it_aborts() {
        let t0 = Instant::now();
        let d = Duration::from_millis(700);
        let election = Duration::from_millis(1000);
        let mut lease = Lease::default();
        lease.renew(t0, d);
        lease.begin_transfer();
        assert!(!lease.holds(t0 + MS));
        assert_eq!(lease.until(), None);
        lease.renew(t0 + 10 * MS, d);
        assert!(!lease.holds(t0 + 20 * MS), "renewed while transferring");

        lease.abort_transfer(t0 + 100 * MS, election);
        assert!(!lease.holds(t0 + 101 * MS));
        // A round sent inside the window and acknowledged does not count, not even once the
        // window has passed (its lease would end at 1,599 ms, after the window's end at 1,100).
        lease.renew(t0 + 899 * MS, d);
        assert!(!lease.holds(t0 + 1_200 * MS));
        lease.renew(t0 + 1_099 * MS, d);
        assert!(!lease.holds(t0 + 1_200 * MS));
        // Rounds sent after it do.
        lease.renew(t0 + 1_100 * MS, d);
        assert!(lease.holds(t0 + 1_200 * MS));
        // A role change ends a transfer too.
        lease.begin_transfer();
        lease.expire();
        lease.renew(t0 + 1_300 * MS, d);
        assert!(lease.holds(t0 + 1_400 * MS));
    }
}
