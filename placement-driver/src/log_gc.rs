//! Raft log GC (compaction) of PD's Raft group: the same protocol as the raftstore's.
//!
//! Without compaction PD's log grows forever: the leader replicates a TSO bound extension about
//! every second and a command for every store / region change. PD has no Raft snapshots, so a
//! member can only ever catch up from the log; compaction therefore never removes an entry that
//! some member may still need.
//!
//! Protocol:
//! 1. **Decide (leader only).** Every [`LogGcConfig::ticks`] Raft ticks a *ready* leader computes
//!    `compact_to = min(matched of every voter, its own applied index)` ([`compact_target`]). If
//!    `compact_to` is more than [`LogGcConfig::threshold`] entries beyond the current truncated
//!    index (and beyond what it already proposed in this term), it proposes
//!    [`PdCommand::CompactLog`](crate::PdCommand::CompactLog) with `compact_to` and the term of
//!    that entry, through the Raft log like any other command.
//! 2. **Apply (every member, in log order).** Applying the entry at index `e` that carries
//!    `CompactLog { index, term }` is accepted when `truncated < index < e` ([`accepts`]) and the
//!    local log has `term` at `index`. Then the new truncated index / term go into
//!    `raft_log::ApplyState` (together with `applied = e`) and
//!    [`raft_log::RaftLogStorage::compact_to`] stages the deletion of the entries up to `index`
//!    — into the **same** write batch, so the truncated state and the deletion are atomic (the
//!    raftstore uses two batches and relies on RocksDB's single WAL to order them; one batch is
//!    simpler and gives the same guarantee). A rejected (stale, already covered) compaction is
//!    applied as a no-op that only moves the applied index. Either way the state machine
//!    ([`crate::PdState`]) is untouched: compaction is local log housekeeping.
//! 3. **Restart.** `RaftLogStorage::load` reads the truncated state from the apply state, so the
//!    log starts at `truncated + 1`; raft-rs restarts from the persisted applied index, which is
//!    never below the truncated index, so every entry it hands out again is still there.
//!
//! Invariants:
//! - Never past any voter's matched index: the leader only knows a follower has entries up to
//!   its `matched`, and with no snapshots a follower whose next entry was compacted away could
//!   never catch up. A voter the current leader has not heard from since it was elected has
//!   `matched == 0`, which holds compaction back entirely. **A member that is down holds
//!   compaction back for as long as it is down** (its matched index stays where it was): that is
//!   the price of having no snapshots, exactly as in the raftstore. A member whose data is lost
//!   cannot rejoin without snapshots either way.
//! - Never past the local applied index (hence never past the commit index): compacted entries
//!   are committed, so no later leader can overwrite them, every member's log agrees on their
//!   terms, and a member's log never drops below them. A committed `CompactLog` therefore stays
//!   safe whenever (and on whichever member) it is applied, even one proposed by an old leader.
//! - `index < e`: a member applying the entry at `e` has its log up to `e` and has applied
//!   everything below it, so `compact_to` only deletes applied, persisted entries.
//! - The truncated index only grows, and only by applying a committed `CompactLog`.
//!
//! Cost: the log keeps at least the entries above `min(matched)`; with every member up that is
//! about `threshold` entries plus what accumulates in `ticks` ticks.

/// When the leader considers compaction, from [`crate::PdConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogGcConfig {
    /// Raft ticks between two checks of the leader.
    pub ticks: usize,
    /// Compact only when this many applied entries (or more) are beyond the truncated index.
    pub threshold: u64,
}

/// The index the leader may compact to now, if compacting is worth it: `min(matched of every
/// voter, applied)` when that is more than `threshold` beyond `truncated` and beyond
/// `already_proposed` (a compaction to at least that index is in flight in this term).
pub(crate) fn compact_target(
    matched: impl IntoIterator<Item = u64>,
    applied: u64,
    truncated: u64,
    threshold: u64,
    already_proposed: u64,
) -> Option<u64> {
    let min_matched = matched.into_iter().min()?;
    let target = min_matched.min(applied);
    (target > truncated.saturating_add(threshold) && target > already_proposed).then_some(target)
}

/// Whether a `CompactLog` to `compact_index` in the entry at `entry_index` moves the truncated
/// index of a member whose log is truncated at `truncated` (see the module docs).
pub(crate) fn accepts(compact_index: u64, truncated: u64, entry_index: u64) -> bool {
    compact_index > truncated && compact_index < entry_index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_is_min_of_matched_and_applied_beyond_threshold() {
        // Everyone has 100, applied 90: compact to 90 once it is more than 10 beyond 5.
        assert_eq!(compact_target([100, 100, 100], 90, 5, 10, 0), Some(90));
        // A lagging (or down) voter holds it back.
        assert_eq!(compact_target([100, 40, 100], 90, 5, 10, 0), Some(40));
        assert_eq!(compact_target([100, 15, 100], 90, 5, 10, 0), None);
        // A voter not heard from in this term (matched 0) stops compaction entirely.
        assert_eq!(compact_target([100, 0, 100], 90, 5, 10, 0), None);
        // Exactly at the threshold: not yet.
        assert_eq!(compact_target([100, 100, 100], 15, 5, 10, 0), None);
        assert_eq!(compact_target([100, 100, 100], 16, 5, 10, 0), Some(16));
        // Already proposed that far in this term.
        assert_eq!(compact_target([100, 100, 100], 90, 5, 10, 90), None);
        assert_eq!(compact_target([100, 100, 100], 91, 5, 10, 90), Some(91));
        // Threshold 0 compacts whenever anything is applied beyond the truncated index.
        assert_eq!(compact_target([7], 6, 5, 0, 0), Some(6));
        assert_eq!(compact_target([7], 5, 5, 0, 0), None);
        assert_eq!(compact_target([], 90, 5, 0, 0), None);
        assert_eq!(compact_target([u64::MAX], 90, u64::MAX - 1, 10, 0), None);
    }

    #[test]
    fn apply_accepts_only_forward_compactions_below_the_entry() {
        assert!(accepts(50, 10, 60));
        assert!(!accepts(10, 10, 60), "not beyond the truncated index");
        assert!(!accepts(5, 10, 60), "stale");
        assert!(!accepts(60, 10, 60), "not below its own entry");
        assert!(!accepts(70, 10, 60));
    }
}
