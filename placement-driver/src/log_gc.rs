//! Raft log GC (compaction) of PD's Raft group: the same protocol as the raftstore's.
//!
//! Without compaction PD's log grows forever: the leader replicates a TSO bound extension about
//! every second and a command for every store / region change. A member that is behind the
//! log's start catches up from a snapshot of PD's state ([`crate::snapshot`]); compaction
//! still waits for every member while the log is short, since replaying entries is cheaper
//! than a whole state.
//!
//! Protocol:
//! 1. **Decide (leader only).** Every [`LogGcConfig::ticks`] Raft ticks a *ready* leader computes
//!    `compact_to` with the policy the raftstore uses too (`raft_group::log_gc::gc_target`):
//!    `min(matched of every voter, its own applied index)`, or its applied index once the log
//!    holds more than [`LogGcConfig::count_limit`] applied entries ([`compact_target`]). If
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
//! - Past a voter's matched index only beyond `count_limit`: below it a member that is down
//!   (or not heard from in this term: `matched == 0`) holds compaction back, so that a short
//!   absence is caught up from the log; beyond it the member gets a snapshot when it is back.
//!   A member whose data is lost cannot rejoin (that needs membership changes).
//! - Never past the local applied index (hence never past the commit index): compacted entries
//!   are committed, so no later leader can overwrite them, every member's log agrees on their
//!   terms, and a member's log never drops below them. A committed `CompactLog` therefore stays
//!   safe whenever (and on whichever member) it is applied, even one proposed by an old leader.
//! - `index < e`: a member applying the entry at `e` has its log up to `e` and has applied
//!   everything below it, so `compact_to` only deletes applied, persisted entries.
//! - The truncated index only grows, and only by applying a committed `CompactLog`.
//!
//! Cost: the log keeps at least the entries above `min(matched)`, and never much more than
//! `count_limit`; with every member up that is about `threshold` entries plus what accumulates
//! in `ticks` ticks.

/// When the leader considers compaction, from [`crate::PdConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogGcConfig {
    /// Raft ticks between two checks of the leader.
    pub ticks: usize,
    /// Compact only when this many applied entries (or more) are beyond the truncated index.
    pub threshold: u64,
    /// Past this many applied entries in the log, compact to the applied index even if a
    /// member lags: it catches up from a snapshot.
    pub count_limit: u64,
}

/// The index the leader may compact to now, if compacting is worth it (`gc_target` of
/// `raft_group::log_gc` over the voters' matched indexes) and beyond `already_proposed` (a
/// compaction to at least that index is in flight in this term).
pub(crate) fn compact_target(
    matched: impl IntoIterator<Item = u64>,
    applied: u64,
    truncated: u64,
    config: LogGcConfig,
    already_proposed: u64,
) -> Option<u64> {
    let min_matched = matched.into_iter().min()?;
    raft_group::log_gc::gc_target(
        applied,
        truncated,
        min_matched,
        config.threshold,
        config.count_limit,
    )
    .filter(|target| *target > already_proposed)
}

/// Whether a `CompactLog` to `compact_index` in the entry at `entry_index` moves the truncated
/// index of a member whose log is truncated at `truncated` (see the module docs).
pub(crate) fn accepts(compact_index: u64, truncated: u64, entry_index: u64) -> bool {
    compact_index > truncated && compact_index < entry_index
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gc(threshold: u64) -> LogGcConfig {
        LogGcConfig {
            ticks: 1,
            threshold,
            count_limit: 1000,
        }
    }

    #[test]
    fn target_is_min_of_matched_and_applied_beyond_threshold() {
        // Everyone has 100, applied 90: compact to 90 once it is more than 10 beyond 5.
        assert_eq!(compact_target([100, 100, 100], 90, 5, gc(10), 0), Some(90));
        // A lagging (or down) voter holds it back.
        assert_eq!(compact_target([100, 40, 100], 90, 5, gc(10), 0), Some(40));
        assert_eq!(compact_target([100, 15, 100], 90, 5, gc(10), 0), None);
        // A voter not heard from in this term (matched 0) stops compaction entirely.
        assert_eq!(compact_target([100, 0, 100], 90, 5, gc(10), 0), None);
        // Exactly at the threshold: not yet.
        assert_eq!(compact_target([100, 100, 100], 15, 5, gc(10), 0), None);
        assert_eq!(compact_target([100, 100, 100], 16, 5, gc(10), 0), Some(16));
        // Already proposed that far in this term.
        assert_eq!(compact_target([100, 100, 100], 90, 5, gc(10), 90), None);
        assert_eq!(compact_target([100, 100, 100], 91, 5, gc(10), 90), Some(91));
        // Threshold 0 compacts whenever anything is applied beyond the truncated index.
        assert_eq!(compact_target([7], 6, 5, gc(0), 0), Some(6));
        assert_eq!(compact_target([7], 5, 5, gc(0), 0), None);
        assert_eq!(compact_target([], 90, 5, gc(0), 0), None);
        assert_eq!(
            compact_target([u64::MAX], 90, u64::MAX - 1, gc(10), 0),
            None
        );
        // A member down for long: past the count limit it no longer holds the log back.
        assert_eq!(
            compact_target([2000, 40, 2000], 1500, 5, gc(10), 0),
            Some(1500)
        );
        assert_eq!(compact_target([2000, 0, 2000], 1500, 5, gc(10), 1500), None);
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
