//! The write buffer, commit plans, lock decisions and the transactional scan walk.

use std::collections::BTreeSet;

use bytes::Bytes;
use proto::kvrpcpb::{self, prewrite_request::PessimisticAction, Action, Op};
use proto::metapb::Region;
use test_util::peer;

use super::*;
use crate::plan::group_by_region;
use crate::region_cache::RegionCache;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn pairs(items: &[(&str, &str)]) -> Vec<KvPair> {
    items.iter().map(|(k, v)| (b(k), b(v))).collect()
}

/// Region `id` over the encoded range `[start, end)` (raw keys; "" = unbounded).
fn region(id: u64, start: &str, end: &str) -> Region {
    let enc = |k: &str| {
        if k.is_empty() {
            Bytes::new()
        } else {
            codec::encode(k.as_bytes())
        }
    };
    let mut r = test_util::region(id).peers([peer(id * 10, 1)]).build();
    r.start_key = enc(start);
    r.end_key = enc(end);
    r
}

#[test]
fn reads_see_own_writes() {
    let mut buf = Buffer::default();
    buf.put(b("a"), b("1"));
    buf.delete(b("b"));
    buf.lock(b("c"));
    assert_eq!(buf.get(b"a"), BufferedRead::Value(b("1")));
    assert_eq!(buf.get(b"b"), BufferedRead::Deleted);
    assert_eq!(buf.get(b"c"), BufferedRead::NotWritten);
    assert_eq!(buf.get(b"d"), BufferedRead::NotWritten);
    // Locking a written key keeps the write.
    buf.lock(b("a"));
    assert_eq!(buf.get(b"a"), BufferedRead::Value(b("1")));
}

#[test]
fn insert_rules() {
    let mut buf = Buffer::default();
    buf.put(b("a"), b("1"));
    assert_eq!(
        buf.insert(b("a"), b("2")),
        Err(BufferError::AlreadyWritten(b("a")))
    );
    buf.delete(b("d"));
    buf.insert(b("d"), b("4")).unwrap();
    buf.insert(b("n"), b("5")).unwrap();
    buf.delete(b("n"));
    let plan = CommitPlan::new(&buf, None, &BTreeSet::new()).unwrap();
    let ops: Vec<(Bytes, i32)> = (plan.mutations.iter())
        .map(|m| (m.key().clone(), m.mutation.op))
        .collect();
    assert_eq!(
        ops,
        vec![
            (b("a"), Op::Put as i32),
            // A deleted key inserted again is just written.
            (b("d"), Op::Put as i32),
            // An inserted key deleted again must still not exist at commit.
            (b("n"), Op::CheckNotExists as i32),
        ]
    );
    assert_eq!(buf.get(b"n"), BufferedRead::Deleted);
}

#[test]
fn commit_plan_primary_and_actions() {
    let mut buf = Buffer::default();
    assert_eq!(CommitPlan::new(&buf, None, &BTreeSet::new()), None);
    buf.put(b("b"), b("2"));
    buf.delete(b("a"));
    buf.lock(b("c"));
    let plan = CommitPlan::new(&buf, None, &BTreeSet::new()).unwrap();
    assert_eq!(plan.primary, b("a"), "the smallest key");
    assert_eq!(plan.mutations.len(), 3);
    assert_eq!(plan.mutations[0].encoded, codec::encode(b"a"));
    assert_eq!(plan.mutations[2].mutation.op, Op::Lock as i32);
    let secondaries: Vec<&Bytes> = plan.secondaries().map(|m| m.key()).collect();
    assert_eq!(secondaries, vec![&b("b"), &b("c")]);

    let locked: BTreeSet<Bytes> = [b("c")].into();
    let plan = CommitPlan::new(&buf, Some(&b("c")), &locked).unwrap();
    assert_eq!(plan.primary, b("c"), "a pessimistic primary is kept");
    let actions: Vec<PessimisticAction> = plan
        .mutations
        .iter()
        .map(|m| m.pessimistic_action)
        .collect();
    assert_eq!(
        actions,
        vec![
            PessimisticAction::SkipPessimisticCheck,
            PessimisticAction::SkipPessimisticCheck,
            PessimisticAction::DoPessimisticCheck
        ]
    );
}

#[test]
fn mutations_group_by_the_region_of_their_encoded_key() {
    // Boundaries at encode("b") and encode("d"): "b" belongs to the second region, while
    // "a\xff" (whose raw bytes exceed nothing) stays in the first.
    let mut cache = RegionCache::new();
    for r in [region(1, "", "b"), region(2, "b", "d"), region(3, "d", "")] {
        cache.insert(r, None);
    }
    let mut buf = Buffer::default();
    for k in ["a", "a\u{7f}", "b", "c", "cccccccccc", "d", "z"] {
        buf.put(b(k), b("v"));
    }
    let plan = CommitPlan::new(&buf, None, &BTreeSet::new()).unwrap();
    let (groups, unknown) = group_by_region(&cache, plan.mutations, |m| &m.encoded);
    assert!(unknown.is_empty());
    let summary: Vec<(u64, Vec<Bytes>)> = (groups.iter())
        .map(|(route, ms)| {
            (
                route.region.id,
                ms.iter().map(|m| m.key().clone()).collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, vec![b("a"), b("a\u{7f}")]),
            (2, vec![b("b"), b("c"), b("cccccccccc")]),
            (3, vec![b("d"), b("z")]),
        ]
    );
}

#[test]
fn scans_merge_own_writes() {
    let mut buf = Buffer::default();
    buf.put(b("b"), b("own"));
    buf.delete(b("c"));
    buf.put(b("z"), b("own"));
    buf.lock(b("a"));
    let (lo, hi) = (b("a"), b("y"));
    assert_eq!(buf.scan_extra(&lo, &hi), 1, "one delete in range");
    let snapshot = pairs(&[("a", "1"), ("c", "3"), ("d", "4")]);
    // Asked 2 + 1, got 3: not exhausted, so nothing past "d" is known.
    let merged = buf.merge_scan(snapshot.clone(), &lo, &hi, 2, false, false);
    assert_eq!(merged, pairs(&[("a", "1"), ("b", "own")]));
    let merged = buf.merge_scan(snapshot, &lo, &b(""), 10, false, true);
    assert_eq!(
        merged,
        pairs(&[("a", "1"), ("b", "own"), ("d", "4"), ("z", "own")])
    );
    // Reverse: the snapshot came newest-first and proves nothing below its last key.
    let snapshot = pairs(&[("d", "4"), ("c", "3"), ("a", "1")]);
    let merged = buf.merge_scan(snapshot, &b("a"), &b(""), 2, true, false);
    assert_eq!(merged, pairs(&[("z", "own"), ("d", "4")]));
}

#[test]
fn a_buffered_put_past_the_snapshot_frontier_is_not_returned_early() {
    let mut buf = Buffer::default();
    buf.put(b("m"), b("own"));
    let snapshot = pairs(&[("a", "1"), ("b", "2")]);
    // Limit 2, not exhausted: "m" may be preceded by snapshot keys not read.
    let merged = buf.merge_scan(snapshot, &b("a"), &b(""), 2, false, false);
    assert_eq!(merged, pairs(&[("a", "1"), ("b", "2")]));
}

#[test]
fn lock_expiry_counts_from_the_start_physical_time() {
    let ts = |ms: u64| ms << 18;
    assert!(!lock_expired(ts(1000), 100, ts(1100)));
    assert!(lock_expired(ts(1000), 100, ts(1101)));
    assert!(!lock_expired(ts(1000) + 5, 100, ts(1000) + 7));
}

#[test]
fn txn_fate_from_check_status() {
    let mut resp = kvrpcpb::CheckTxnStatusResponse {
        commit_version: 42,
        ..Default::default()
    };
    assert_eq!(TxnFate::of(&resp), TxnFate::Committed(42));
    resp = kvrpcpb::CheckTxnStatusResponse {
        lock_ttl: 3000,
        lock_info: Some(Default::default()),
        ..Default::default()
    };
    assert_eq!(TxnFate::of(&resp), TxnFate::Alive);
    resp = kvrpcpb::CheckTxnStatusResponse {
        action: Action::TtlExpireRollback as i32,
        ..Default::default()
    };
    assert_eq!(TxnFate::of(&resp), TxnFate::RolledBack);
    resp = kvrpcpb::CheckTxnStatusResponse::default();
    assert_eq!(
        TxnFate::of(&resp),
        TxnFate::RolledBack,
        "rolled back earlier"
    );
    resp = kvrpcpb::CheckTxnStatusResponse {
        error: Some(kvrpcpb::KeyError {
            txn_not_found: Some(Default::default()),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        TxnFate::of(&resp),
        TxnFate::Alive,
        "primary not written yet"
    );
}

#[test]
fn lock_resolution_by_fate_and_lock_type() {
    let prewrite_lock = kvrpcpb::LockInfo {
        lock_type: Op::Put as i32,
        ..Default::default()
    };
    let pessimistic_lock = kvrpcpb::LockInfo {
        lock_type: Op::PessimisticLock as i32,
        lock_for_update_ts: 9,
        ..Default::default()
    };
    use LockResolution::*;
    assert_eq!(
        LockResolution::of(&prewrite_lock, TxnFate::Committed(7)),
        Resolve { commit_ts: 7 }
    );
    assert_eq!(
        LockResolution::of(&prewrite_lock, TxnFate::RolledBack),
        Resolve { commit_ts: 0 }
    );
    assert_eq!(LockResolution::of(&prewrite_lock, TxnFate::Alive), Wait);
    assert_eq!(LockResolution::of(&pessimistic_lock, TxnFate::Alive), Wait);
    for fate in [TxnFate::Committed(7), TxnFate::RolledBack] {
        assert_eq!(
            LockResolution::of(&pessimistic_lock, fate),
            PessimisticRollback { for_update_ts: 9 }
        );
    }
}

/// Walks `layout` with `walk`, answering each request from `data` (raw keys, sorted) as a
/// store would: the request's raw bounds encoded and clamped to the region.
fn run_walk(mut walk: TxnScanWalk, layout: &[Region], data: &[&str], batch: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut steps = 0;
    while !walk.is_done() {
        steps += 1;
        assert!(steps < 100, "the walk does not end");
        let cursor = walk.cursor().clone();
        let region = if walk.is_reverse() {
            layout
                .iter()
                .find(|r| {
                    (cursor.is_empty() || r.start_key < cursor)
                        && (r.end_key.is_empty() || (!cursor.is_empty() && cursor <= r.end_key))
                })
                .expect("a region below the cursor")
        } else {
            (layout.iter())
                .find(|r| crate::region_cache::key_in_region(&cursor, r))
                .expect("a region at the cursor")
        };
        let req = walk.request(batch);
        let enc = |k: &Bytes| {
            if k.is_empty() {
                Bytes::new()
            } else {
                codec::encode(k)
            }
        };
        let (lower, upper) = if walk.is_reverse() {
            (enc(&req.end_key), enc(&req.start_key))
        } else {
            (enc(&req.start_key), enc(&req.end_key))
        };
        let lower = lower.max(region.start_key.clone());
        let in_range = |k: &Bytes| {
            let e = codec::encode(k);
            e >= lower
                && (upper.is_empty() || e < upper)
                && crate::region_cache::key_in_region(&e, region)
        };
        let mut got: Vec<Bytes> = data.iter().map(|k| b(k)).filter(in_range).collect();
        if walk.is_reverse() {
            got.reverse();
        }
        got.truncate(req.limit as usize);
        let last = got.last().cloned();
        let kept: Vec<Bytes> = got.iter().filter(|k| walk.keeps(k)).cloned().collect();
        walk.advance(region, req.limit, got.len(), kept.len(), last.as_ref());
        out.extend(kept.iter().map(|k| String::from_utf8(k.to_vec()).unwrap()));
    }
    out
}

#[test]
fn scan_walk_crosses_encoded_region_boundaries() {
    let layout = [region(1, "", "c"), region(2, "c", "f"), region(3, "f", "")];
    let data = ["a", "b", "c", "d", "e", "f", "g", "h"];
    for batch in [1, 2, 100] {
        let walk = TxnScanWalk::new(b("b"), b("g"), 100, false);
        assert_eq!(
            run_walk(walk, &layout, &data, batch),
            ["b", "c", "d", "e", "f"]
        );
        let walk = TxnScanWalk::new(b(""), b(""), 4, false);
        assert_eq!(run_walk(walk, &layout, &data, batch), ["a", "b", "c", "d"]);
        let walk = TxnScanWalk::new(b("b"), b("g"), 100, true);
        assert_eq!(
            run_walk(walk, &layout, &data, batch),
            ["f", "e", "d", "c", "b"]
        );
        let walk = TxnScanWalk::new(b(""), b(""), 3, true);
        assert_eq!(run_walk(walk, &layout, &data, batch), ["h", "g", "f"]);
    }
}

#[test]
fn scan_walk_over_a_boundary_that_is_no_encoded_key() {
    // An operator split at raw bytes "d" (not an encoding): the region after it starts inside
    // the encodings of keys beginning with "c".
    let mut layout = [region(1, "", ""), region(2, "", "")];
    layout[0].end_key = b("d");
    layout[1].start_key = b("d");
    let data = ["a", "c", "d", "e"];
    for batch in [1, 3, 100] {
        let walk = TxnScanWalk::new(b(""), b(""), 100, false);
        assert_eq!(run_walk(walk, &layout, &data, batch), ["a", "c", "d", "e"]);
        let walk = TxnScanWalk::new(b(""), b(""), 100, true);
        assert_eq!(run_walk(walk, &layout, &data, batch), ["e", "d", "c", "a"]);
    }
}

#[test]
fn empty_scans_are_done_at_once() {
    assert!(TxnScanWalk::new(b("b"), b("b"), 10, false).is_done());
    assert!(TxnScanWalk::new(b("a"), b("b"), 0, false).is_done());
    assert!(!TxnScanWalk::new(b("a"), b(""), 1, true).is_done());
}

#[test]
fn an_expired_async_commit_transaction_is_decided_by_all_its_keys() {
    use crate::txn_plan::{async_commit_fate, SecondaryState::*};
    let locked = |ts| Locked {
        min_commit_ts: ts,
        use_async_commit: true,
    };
    // Every key still locked: every prewrite succeeded; commit at the largest min_commit_ts.
    assert_eq!(
        async_commit_fate(&[locked(10), locked(12), locked(11)]),
        Some(TxnFate::Committed(12))
    );
    // Someone already committed a key: that ts.
    assert_eq!(
        async_commit_fate(&[locked(10), Committed(15)]),
        Some(TxnFate::Committed(15))
    );
    // A key never prewritten (rolled back by the check): the transaction cannot commit.
    assert_eq!(
        async_commit_fate(&[locked(10), RolledBack]),
        Some(TxnFate::RolledBack)
    );
    // Fell back to two-phase commit on some key: not decidable from the locks.
    let sync_lock = Locked {
        min_commit_ts: 10,
        use_async_commit: false,
    };
    assert_eq!(async_commit_fate(&[locked(10), sync_lock]), None);
}
