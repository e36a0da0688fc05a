//! Where a leader compacts its Raft log to: one policy for region peers and PD's group (TiKV's).
//!
//! Up to what every replica has (`min_match`), once that frees more than `threshold` entries;
//! or, once the log holds more than `count_limit` applied entries, up to what the leader
//! applied, leaving replicas that far behind (down, or slow) to catch up from a snapshot.
//! Never past the applied index: the entries may still be needed to apply here, and
//! compacted entries must be committed so that no later leader can overwrite them.
//!
//! How the decision travels (a `CompactLog` command through the log, applied in order on
//! every member) is each driver's; this is only the choice.

/// The index to compact to, if compacting is worth it now; `truncated` is the current
/// truncated index.
pub fn gc_target(
    applied: u64,
    truncated: u64,
    min_match: u64,
    threshold: u64,
    count_limit: u64,
) -> Option<u64> {
    let target = if applied.saturating_sub(truncated) > count_limit {
        applied
    } else {
        min_match.min(applied)
    };
    (target > truncated.saturating_add(threshold)).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::gc_target;

    #[test]
    fn gc_waits_for_every_replica_until_the_log_is_too_long() {
        // (applied, truncated, min_match, threshold, limit) -> target
        let cases = [
            // Everyone has everything: compact to applied.
            ((100, 5, 100, 16, 1000), Some(100)),
            // Not enough to free yet (exactly at the threshold is not beyond it).
            ((20, 5, 20, 16, 1000), None),
            ((21, 5, 21, 16, 1000), None),
            ((22, 5, 22, 16, 1000), Some(22)),
            // A lagging replica holds GC back ...
            ((500, 5, 50, 16, 1000), Some(50)),
            ((500, 5, 10, 16, 1000), None),
            // ... a replica not heard from (matched 0) entirely ...
            ((500, 5, 0, 16, 1000), None),
            // ... until the log is longer than the limit: it gets a snapshot instead.
            ((1100, 5, 10, 16, 1000), Some(1100)),
            ((1005, 5, 0, 16, 1000), None),
            ((1006, 5, 0, 16, 1000), Some(1006)),
            // Never past the applied index.
            ((100, 5, 300, 16, 1000), Some(100)),
            // Threshold 0 compacts whenever anything is applied beyond the truncated index.
            ((6, 5, 7, 0, 1000), Some(6)),
            ((5, 5, 7, 0, 1000), None),
            ((90, u64::MAX - 1, 100, 10, 1000), None),
        ];
        for ((applied, truncated, min_match, threshold, limit), want) in cases {
            assert_eq!(
                gc_target(applied, truncated, min_match, threshold, limit),
                want,
                "applied {applied} truncated {truncated} min_match {min_match}"
            );
        }
    }
}
