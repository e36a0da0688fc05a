//! Region merge: a small region (the *source*) hands its range and data to an adjacent region
//! (the *target*) whose replicas live on the same stores, as TiKV's PrepareMerge /
//! CommitMerge / RollbackMerge do, simplified by one precondition (below). This module holds
//! the rules as pure functions; `peer::merge` and the apply worker carry them out.
//!
//! Protocol:
//! 1. **Prepare** (source leader, asked by PD or an operator): the target this store hosts
//!    must be adjacent and on the same stores ([`check_pair`]). The leader then *fences*: it
//!    takes no new request (clients get `ProposalInMergingMode` and back off) until the source
//!    is idle and fully replicated — every replica's log matches the leader's last index, all
//!    of it committed and applied, no conf change or leader transfer pending — and proposes
//!    PrepareMerge at index P, recording the target as this store knows it (or, not idle
//!    within an election timeout, lifts the fence and answers busy). From then on it takes no
//!    writes, reads, splits or conf changes. Because
//!    every replica held the whole log up to P-1 when P was proposed, and entries up to P-1
//!    are committed, every replica can later apply the source's data *from its own log*,
//!    without the leader: CommitMerge carries no log entries (TiKV's does).
//! 2. **Applying PrepareMerge** (every source replica): version and conf_ver + 1
//!    ([`prepared_region`]), state `Merging` with a [`MergeState`] (`min_index` P, `commit`
//!    P-1, `target`). From then on every data command, split, conf change and log compaction
//!    fails at apply: writes a new leader accepted after P (under the old epoch) never apply,
//!    so the data is exactly that of the entries up to P-1.
//! 3. **Asking** (every merging source replica, each merge tick): it tells its store's target
//!    replica; if that one leads, it proposes CommitMerge with the source region and its
//!    merge state. One store hosts the target's leader and a source replica, so someone asks.
//! 4. **Committing** (every target replica): CommitMerge applies only if the target still has
//!    exactly the recorded epoch and the pair still fits ([`check_commit`]) — the same verdict
//!    on every replica. Before handing it to apply, a target replica waits for its own apply to
//!    reach the entry before it (so its region is exact), evaluates that verdict, and, if it
//!    will merge, has the source replica on its store catch up to `commit` (committing its own
//!    log up to there if it has not learnt the commit yet) and stop applying ("frozen"). Then
//!    it applies: the merged range ([`merged_region`]) and the source's `Tombstone` state in
//!    one batch. The source replica is then destroyed, keeping its data, which is now the
//!    target's.
//! 5. **Rollback** (source leader): if the target this store hosts has moved past the
//!    recorded epoch ([`source_action`]), no target replica can ever apply the CommitMerge
//!    (they all apply the same log, and epochs only grow); the leader proposes RollbackMerge:
//!    state `Normal`, version + 1, writes again.
//!
//! Invariants:
//! - Commit and rollback exclude each other: CommitMerge applies only at the recorded target
//!   epoch, rollback is decided only once a target replica is past it without having merged
//!   (a target replica that merged froze and then destroyed the source replica beside it, so
//!   that store's source leader can no longer decide anything).
//! - A source replica absorbed by its target has applied every data entry of the source, and
//!   applies nothing afterwards: its state is written `Tombstone` in the target's batch.
//! - The source takes no reads from the moment PrepareMerge is proposed (its leader) or
//!   applied (any replica): once the target serves the range, the source cannot serve it too.
//!
//! Differences from TiKV, deliberate: PrepareMerge waits for a fully replicated, idle source
//! instead of shipping the missing entries inside CommitMerge; the target must already be on
//! the same stores (PD moves peers first).

pub(crate) mod apply;

use proto::metapb::{PeerRole, Region, RegionEpoch};
use proto::raft_serverpb::MergeState;

use crate::util::{epoch_conf_ver, epoch_version};

/// The context of a CommitMerge entry, so a target replica finds it without decoding.
pub const COMMIT_MERGE_CONTEXT: &[u8] = b"commit-merge";

/// Whether `now` is past `recorded` in either component.
pub fn epoch_moved_past(now: RegionEpoch, recorded: RegionEpoch) -> bool {
    now.version > recorded.version || now.conf_ver > recorded.conf_ver
}

fn epoch(region: &Region) -> RegionEpoch {
    region.region_epoch.unwrap_or_default()
}

/// Why `source` cannot be merged into `target` as they are: they must be two regions, adjacent,
/// with voters only, on the same set of stores.
pub fn check_pair(source: &Region, target: &Region) -> Result<(), String> {
    if source.id == target.id {
        return Err("a region cannot merge into itself".into());
    }
    let adjacent = (!source.end_key.is_empty() && source.end_key == target.start_key)
        || (!target.end_key.is_empty() && target.end_key == source.start_key);
    if !adjacent {
        return Err(format!(
            "region {} is not adjacent to region {}",
            source.id, target.id
        ));
    }
    for r in [source, target] {
        if r.peers.iter().any(|p| p.role != PeerRole::Voter as i32) {
            return Err(format!("region {} has a peer that is not a voter", r.id));
        }
    }
    let stores = |r: &Region| {
        let mut s: Vec<u64> = r.peers.iter().map(|p| p.store_id).collect();
        s.sort_unstable();
        s
    };
    if stores(source) != stores(target) {
        return Err(format!(
            "regions {} and {} are not on the same stores",
            source.id, target.id
        ));
    }
    Ok(())
}

/// The source region once PrepareMerge applied: version and conf_ver bumped, so that every
/// command proposed under the old epoch fails at apply.
pub fn prepared_region(source: &Region) -> Region {
    let mut r = source.clone();
    r.region_epoch = Some(RegionEpoch {
        version: epoch_version(source) + 1,
        conf_ver: epoch_conf_ver(source) + 1,
    });
    r
}

/// The source region after RollbackMerge: writable again under a new version.
pub fn rolled_back_region(source: &Region) -> Region {
    let mut r = source.clone();
    r.region_epoch = Some(RegionEpoch {
        version: epoch_version(source) + 1,
        conf_ver: epoch_conf_ver(source),
    });
    r
}

/// Why CommitMerge of `source` (with merge state `state`) cannot apply to `target` now. The
/// same verdict on every target replica, since it depends only on the command and on the
/// target's state at the entry.
pub fn check_commit(target: &Region, source: &Region, state: &MergeState) -> Result<(), String> {
    let recorded = state.target.as_ref().map(epoch).unwrap_or_default();
    if state.target.as_ref().map(|t| t.id) != Some(target.id) {
        return Err(format!(
            "region {} merges into another region, not {}",
            source.id, target.id
        ));
    }
    if epoch(target) != recorded {
        return Err(format!(
            "target {} is at epoch {:?}, the merge was prepared at {:?}",
            target.id,
            epoch(target),
            recorded
        ));
    }
    check_pair(source, target)
}

/// The target region once it absorbed `source`: the union of both ranges, a version above
/// both (so that requests routed by either old epoch are refused), the target's peers.
pub fn merged_region(target: &Region, source: &Region) -> Region {
    let mut r = target.clone();
    // An empty key is unbounded: an empty end never meets an empty start.
    if !source.end_key.is_empty() && source.end_key == target.start_key {
        r.start_key = source.start_key.clone();
    } else {
        r.end_key = source.end_key.clone();
    }
    r.region_epoch = Some(RegionEpoch {
        version: epoch_version(target).max(epoch_version(source)) + 1,
        conf_ver: epoch_conf_ver(target),
    });
    r
}

/// What a merging source replica does on a merge tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceAction {
    /// Ask the target replica on this store to commit the merge.
    AskCommit,
    /// The target moved past the recorded epoch: the merge can never commit (leaders only).
    Rollback,
    /// The target here lags behind the recorded epoch, or nothing is known of it.
    Wait,
}

/// See [`SourceAction`]. `local_target` is the epoch of the target replica this store hosts,
/// `tombstone` the epoch it had when this store destroyed it.
pub fn source_action(
    state: &MergeState,
    local_target: Option<RegionEpoch>,
    tombstone: Option<RegionEpoch>,
) -> SourceAction {
    let recorded = state.target.as_ref().map(epoch).unwrap_or_default();
    match (local_target, tombstone) {
        (Some(e), _) if e == recorded => SourceAction::AskCommit,
        (Some(e), _) if epoch_moved_past(e, recorded) => SourceAction::Rollback,
        (None, Some(t)) if epoch_moved_past(t, recorded) => SourceAction::Rollback,
        _ => SourceAction::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::metapb::Peer;

    fn region(id: u64, start: &[u8], end: &[u8], stores: &[u64], ver: (u64, u64)) -> Region {
        Region {
            id,
            start_key: start.to_vec().into(),
            end_key: end.to_vec().into(),
            region_epoch: Some(RegionEpoch {
                conf_ver: ver.0,
                version: ver.1,
            }),
            peers: stores
                .iter()
                .map(|s| Peer {
                    id: id * 100 + s,
                    store_id: *s,
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn state(target: &Region) -> MergeState {
        MergeState {
            min_index: 10,
            target: Some(target.clone()),
            commit: 9,
        }
    }

    #[test]
    fn a_pair_must_be_adjacent_in_either_order() {
        let a = region(1, b"", b"m", &[1, 2, 3], (1, 1));
        let b = region(2, b"m", b"", &[1, 2, 3], (1, 1));
        let c = region(3, b"n", b"", &[1, 2, 3], (1, 1));
        assert_eq!(check_pair(&a, &b), Ok(()));
        assert_eq!(check_pair(&b, &a), Ok(()));
        assert!(check_pair(&a, &c).is_err());
        assert!(check_pair(&a, &a).is_err(), "not with itself");
        // Both unbounded on the same side is not adjacency.
        let whole = region(4, b"", b"", &[1, 2, 3], (1, 1));
        assert!(check_pair(&whole, &b).is_err());
    }

    #[test]
    fn a_pair_must_be_on_the_same_stores_with_voters_only() {
        let a = region(1, b"", b"m", &[1, 2, 3], (1, 1));
        let moved = region(2, b"m", b"", &[1, 2, 4], (1, 1));
        assert!(check_pair(&a, &moved).is_err());
        let mut learner = region(2, b"m", b"", &[1, 2, 3], (1, 1));
        learner.peers[2].role = PeerRole::Learner as i32;
        assert!(check_pair(&a, &learner).is_err());
        let reordered = region(2, b"m", b"", &[3, 1, 2], (1, 1));
        assert_eq!(check_pair(&a, &reordered), Ok(()));
    }

    #[test]
    fn prepare_bumps_both_epoch_parts_and_rollback_the_version() {
        let a = region(1, b"", b"m", &[1], (4, 7));
        assert_eq!(
            prepared_region(&a).region_epoch,
            Some(RegionEpoch {
                conf_ver: 5,
                version: 8
            })
        );
        assert_eq!(
            rolled_back_region(&prepared_region(&a)).region_epoch,
            Some(RegionEpoch {
                conf_ver: 5,
                version: 9
            })
        );
    }

    #[test]
    fn commit_needs_the_recorded_target_epoch() {
        let s = prepared_region(&region(1, b"", b"m", &[1, 2, 3], (1, 3)));
        let t = region(2, b"m", b"", &[1, 2, 3], (1, 5));
        assert_eq!(check_commit(&t, &s, &state(&t)), Ok(()));
        let split = region(2, b"m", b"x", &[1, 2, 3], (1, 6));
        assert!(check_commit(&split, &s, &state(&t)).is_err());
        let other = region(3, b"m", b"", &[1, 2, 3], (1, 5));
        assert!(check_commit(&other, &s, &state(&t)).is_err(), "another id");
    }

    #[test]
    fn the_merged_region_covers_both_and_is_newer_than_either() {
        let left = region(1, b"a", b"m", &[1, 2, 3], (2, 9));
        let right = region(2, b"m", b"z", &[1, 2, 3], (3, 4));
        let into_right = merged_region(&right, &left);
        assert_eq!(
            (&into_right.start_key[..], &into_right.end_key[..]),
            (&b"a"[..], &b"z"[..])
        );
        assert_eq!(
            into_right.region_epoch,
            Some(RegionEpoch {
                conf_ver: 3,
                version: 10
            })
        );
        let into_left = merged_region(&left, &right);
        assert_eq!(
            (&into_left.start_key[..], &into_left.end_key[..]),
            (&b"a"[..], &b"z"[..])
        );
        assert_eq!(into_left.id, 1);
        assert_eq!(into_left.peers, left.peers);
        // Unbounded on both outer sides.
        let first = region(1, b"", b"m", &[1, 2, 3], (1, 1));
        let last = region(2, b"m", b"", &[1, 2, 3], (1, 1));
        for (target, source) in [(&first, &last), (&last, &first)] {
            let whole = merged_region(target, source);
            assert_eq!(
                (&whole.start_key[..], &whole.end_key[..]),
                (&b""[..], &b""[..]),
                "{} into {}",
                source.id,
                target.id
            );
        }
    }

    #[test]
    fn a_source_asks_at_the_recorded_epoch_and_rolls_back_only_past_it() {
        let t = region(2, b"m", b"", &[1, 2, 3], (2, 5));
        let st = state(&t);
        let e = |conf_ver, version| RegionEpoch { conf_ver, version };
        assert_eq!(
            source_action(&st, Some(e(2, 5)), None),
            SourceAction::AskCommit
        );
        assert_eq!(source_action(&st, Some(e(2, 4)), None), SourceAction::Wait);
        assert_eq!(
            source_action(&st, Some(e(2, 6)), None),
            SourceAction::Rollback
        );
        assert_eq!(
            source_action(&st, Some(e(3, 5)), None),
            SourceAction::Rollback
        );
        assert_eq!(source_action(&st, None, None), SourceAction::Wait);
        assert_eq!(
            source_action(&st, None, Some(e(3, 5))),
            SourceAction::Rollback
        );
        assert_eq!(source_action(&st, None, Some(e(2, 5))), SourceAction::Wait);
    }
}
