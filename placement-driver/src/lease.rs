//! The PD leader's lease: while it holds, no other member can be leader, so the leader may hand
//! out timestamps and ids and answer reads without a quorum round per request. The type and its
//! rules are shared with region leaders ([`raft_group::lease::Lease`]); this module is the
//! argument that PD's timing makes them hold.
//!
//! Protocol:
//! - Followers run raft-rs with `check_quorum` and `pre_vote`: a follower that received a
//!   message (append or heartbeat) of the leader rejects votes and pre-votes for another
//!   candidate until `raft_election_ticks` of its own ticks have passed. Its first tick may come
//!   right after the message, so that is at least `(raft_election_ticks - 1) × tick` of wall time
//!   **after it received** the message.
//! - The leader records when it **sent** a round: the Ready carrying its first appends after the
//!   election (answered by the commit of its empty entry, the barrier), the heartbeats of a
//!   ReadIndex issued every tick (answered by raft-rs's read state), or a proposal (answered by
//!   its commit). When a quorum acknowledges the round, [`Lease::renew`] extends the lease to
//!   `sent_at + leader_lease`. Every acknowledging follower received the round after `sent_at`,
//!   so its refusal window outlasts the lease; a quorum refusing means no other leader.
//! - `leader_lease` is three ticks shorter than the election timeout
//!   ([`crate::PdConfig::leader_lease`]): one tick is lost to the follower's tick phase, two are
//!   the margin for scheduling delay and clock-rate drift.
//! - The lease never shrinks within a term; it is void as soon as the node is not a ready leader
//!   of the same term.
//! - A leader transferring its leadership has no lease (the transferee campaigns at once on
//!   `MsgTimeoutNow`, ignoring the followers' refusal), and after an aborted transfer it has none
//!   for an election timeout (a late `MsgTimeoutNow` may still arrive): only rounds sent after that
//!   renew it. PD never starts a transfer and drops transfer messages from peers (see
//!   [`crate::raft_node`]), so this is a guard, not a path in use.
//!
//! Why the send time: anchoring the lease at the acknowledgement, or after the leader's own
//! fsync of the entries it already sent, moves the lease's end later by that delay while the
//! followers' windows started when they received the round; a slow fsync would then outlast the
//! margin, and a deposed leader would serve while a new one already does.

pub use raft_group::lease::Lease;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PdConfig;
    use std::time::{Duration, Instant};

    const MS: Duration = Duration::from_millis(1);

    /// One election: the leader sends its first appends at 0; each follower receives them after
    /// `net` and acknowledges after its fsync; the leader syncs its own log for `fsync` (in
    /// parallel, messages left before it), and the barrier commits after both.
    struct Election {
        net: Duration,
        fsync: Duration,
    }

    /// The earliest a follower that acknowledged a round it received at `received` may vote for
    /// another candidate: its window is `election_ticks` of its ticks, the first of which may
    /// come at once.
    fn follower_may_vote_at(received: Instant, config: &PdConfig) -> Instant {
        received + config.raft_tick_interval * (config.raft_election_ticks as u32 - 1)
    }

    #[test]
    fn the_lease_ends_before_any_acknowledging_follower_may_vote_again() {
        let config = PdConfig::default();
        let tick = config.raft_tick_interval;
        let t0 = Instant::now();
        let table = [
            ("fast disk, fast net", Election { net: MS, fsync: MS }),
            (
                "fsync of one tick",
                Election {
                    net: MS,
                    fsync: tick,
                },
            ),
            (
                "fsync of three ticks",
                Election {
                    net: MS,
                    fsync: tick * 3,
                },
            ),
            (
                "fsync past the election timeout",
                Election {
                    net: MS,
                    fsync: tick * 12,
                },
            ),
            (
                "slow network",
                Election {
                    net: tick * 2,
                    fsync: MS,
                },
            ),
        ];
        for (what, e) in table {
            let received = t0 + e.net;
            let committed = (t0 + e.fsync).max(received + e.fsync + e.net);
            let mut lease = Lease::default();
            // The barrier committed at `committed`; the round was sent at t0.
            lease.renew(t0, config.leader_lease());
            assert!(
                lease.holds(committed.min(t0 + config.leader_lease() - MS)),
                "{what}"
            );
            let end = t0 + config.leader_lease();
            assert!(!lease.holds(end), "{what}");
            let margin = follower_may_vote_at(received, &config) - end;
            assert!(margin >= tick * 2, "{what}: margin {margin:?}");

            // Anchored after the leader's own fsync instead (the old rule), the lease outlives
            // the followers' windows once the fsync is slower than the margin.
            let old_end = t0 + e.fsync + config.leader_lease();
            if e.fsync > tick * 2 + e.net {
                assert!(old_end > follower_may_vote_at(received, &config), "{what}");
            }
        }
    }
}
