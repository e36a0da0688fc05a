//! MVCC garbage collection: removing the versions of a key that no reader at or above the GC
//! safe point can see.
//!
//! PD keeps the cluster's **GC safe point** `sp` (`pdpb.UpdateGCSafePoint`; it only grows). A
//! reader at `ts ≥ sp` sees, per key, the newest data write (Put or Delete) with
//! `commit_ts ≤ ts`. Everything a store still needs for such readers, and for the transactions
//! that may still run, is decided per key, walking its write records newest first
//! ([`GcPlan`], TiKV's `Gc::run`):
//!
//! 1. **Above the safe point** (`commit_ts > sp`) every record stays: readers above `sp` may see
//!    it, and transactions that started above `sp` may still meet it (conflict checks, their
//!    own commit or Rollback record).
//! 2. **At or below the safe point, newer than the newest data write there**: Lock and
//!    Rollback records go. They change no value.
//! 3. **The newest data write at or below the safe point**: a Put stays — it is what every
//!    reader in `[sp, next newer data write)` sees. A Delete goes: without it and everything
//!    below it, those readers still find nothing.
//! 4. **Everything older** goes: every reader at `≥ sp` stops at the record of step 3 first.
//!
//! A removed Put whose value is not inline also loses its value in `default` at
//! `key + start_ts`. The `lock` column family is never touched.
//!
//! # Rollbacks and the safe-point contract
//!
//! A Rollback record at `start_ts` keeps a late prewrite of a rolled-back transaction out; a
//! commit or Lock record answers "what became of transaction `start_ts`" for lock resolution.
//! Like TiKV, GC removes all of them at or below `sp` (step 2 and 4), and relies on the
//! **safe-point contract**: whoever advances the safe point (TiDB's GC leader in a TiKV cluster)
//! does so only past transactions that are finished — every lock with `start_ts ≤ sp` resolved
//! first, and clients refuse to prewrite or commit a transaction whose `start_ts ≤ sp`
//! (client-go's "GC life time is shorter than transaction duration"). Under that contract a
//! record at or below `sp` protects only transactions that may never write again, and every
//! record that protects a live transaction (it started above `sp`, so its records lie above
//! `sp`) stays. Keeping, say, the newest Rollback at or below `sp` per key would protect one
//! arbitrary dead transaction per key and not the others, so rangekv keeps none.
//!
//! # Batches
//!
//! A store runs GC as commands through the transaction scheduler (latches, read grant, decide
//! on a snapshot, propose plain deletes through Raft), a bounded batch of keys at a time:
//! [`scan_gc_keys`] finds keys GC would change on a snapshot without latches, and
//! [`gc_keys`] decides again under the latches, on the command's own snapshot, within a byte
//! budget that keeps the proposal far below the Raft entry limit. A key whose removals exceed
//! the budget is GCed in pieces, **oldest records first**: the records a plan removes below a
//! kept Put are invisible whatever else remains, and a removed Delete is the newest data record
//! of its plan, so a piece that removes it also removes everything older.
//!
//! # Invariants
//!
//! - **A reader at `ts ≥ sp` reads the same before and after GC**, and after any piece of it.
//! - **GC at `sp` is idempotent, and GC at a lower safe point removes a subset** of what GC at
//!   a higher one removes: running it again, or late, is harmless.
//! - **Locks are never removed or read**: resolving them is the contract's business.
//! - Like every command here, [`gc_keys`] records nothing when it fails.
//!
//! # Deliberately absent
//!
//! - No enforcement of the contract on the store: a prewrite at or below the safe point is not
//!   refused, and no lock is resolved before GC.
//! - No GC in RocksDB compaction filters (TiKV's default since 5.0): GC writes plain deletes
//!   through Raft, so replicas stay identical and consistency checks keep working.
//! - No GC fences for the commit records of async-commit and 1PC transactions.
//! - A key's records are scanned in full on every pass over it, however few a budget lets go.

use std::collections::VecDeque;

use crate::mvcc::{Key, MvccReader, MvccTxn, Result, TimeStamp, Write, WriteType};

use super::common::all_or_nothing;

/// Where a [`GcPlan`] is in one key's write records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Records above the safe point: all kept.
    AboveSafePoint,
    /// At or below the safe point, before the newest data write there (step 2).
    BeforeNewestData,
    /// Below the newest data write at or below the safe point (step 4).
    Hidden,
}

/// Decides, record by record, which write records of one key GC at a safe point removes (see
/// the module docs). Feed it the key's records newest first.
#[derive(Clone, Copy, Debug)]
pub struct GcPlan {
    safe_point: TimeStamp,
    phase: Phase,
    last_commit_ts: Option<TimeStamp>,
}

impl GcPlan {
    pub fn new(safe_point: TimeStamp) -> GcPlan {
        GcPlan {
            safe_point,
            phase: Phase::AboveSafePoint,
            last_commit_ts: None,
        }
    }

    /// Whether GC removes the next (older) record of the key, committed at `commit_ts`.
    pub fn removes(&mut self, commit_ts: TimeStamp, kind: WriteType) -> bool {
        debug_assert!(
            self.last_commit_ts.is_none_or(|last| commit_ts < last),
            "records must come newest first"
        );
        self.last_commit_ts = Some(commit_ts);
        match (self.phase, kind) {
            (Phase::AboveSafePoint, _) if commit_ts > self.safe_point => false,
            (Phase::Hidden, _) => true,
            (_, WriteType::Lock | WriteType::Rollback) => {
                self.phase = Phase::BeforeNewestData;
                true
            }
            (_, WriteType::Put) => {
                self.phase = Phase::Hidden;
                false
            }
            (_, WriteType::Delete) => {
                self.phase = Phase::Hidden;
                true
            }
        }
    }
}

/// What [`gc`] did to one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcKeyOutcome {
    /// Write records removed (each with its value in `default`, if it had one there).
    pub removed: usize,
    /// Whether that was everything the plan removes; otherwise the key needs another pass.
    pub done: bool,
}

/// Records the removal of what GC at `safe_point` removes of `key`, at most `max_removals`
/// write records (≥ 1), the oldest first.
pub fn gc(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    key: &Key,
    safe_point: TimeStamp,
    max_removals: usize,
) -> Result<GcKeyOutcome> {
    assert!(
        max_removals > 0,
        "a GC pass must be allowed to remove something"
    );
    let mut plan = GcPlan::new(safe_point);
    // The oldest `max_removals` records the plan removes (newest at the front).
    let mut doomed: VecDeque<(TimeStamp, Write)> = VecDeque::new();
    let mut done = true;
    reader.versions(key, safe_point, |commit_ts, write| {
        if plan.removes(commit_ts, write.kind()) {
            if doomed.len() == max_removals {
                doomed.pop_front();
                done = false;
            }
            doomed.push_back((commit_ts, write));
        }
        true
    })?;
    for (commit_ts, write) in &doomed {
        txn.delete_write(key, *commit_ts);
        if write.kind() == WriteType::Put && write.short_value.is_none() {
            txn.delete_value(key, write.start_ts);
        }
    }
    Ok(GcKeyOutcome {
        removed: doomed.len(),
        done,
    })
}

/// What [`gc_keys`] did to a batch of keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcBatchOutcome {
    /// Write records removed.
    pub removed: usize,
    /// The first key not (or not completely) collected because the budget ran out.
    pub resume_at: Option<Key>,
}

/// The bytes the deletes of one removed record of `key` take in a proposal (the write record
/// and maybe its value, each with the timestamp and some framing).
fn removal_cost(key: &Key) -> usize {
    2 * (key.as_encoded().len() + 8 + 16)
}

/// GC of `keys` (in order) at `safe_point`, recording deletes of at most about `budget` bytes;
/// the first key is always allowed at least one removal, so every call makes progress.
pub fn gc_keys(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    keys: &[Key],
    safe_point: TimeStamp,
    budget: usize,
) -> Result<GcBatchOutcome> {
    all_or_nothing(txn, |txn| {
        let mut left = budget;
        let mut outcome = GcBatchOutcome::default();
        for (i, key) in keys.iter().enumerate() {
            let cost = removal_cost(key);
            let max_removals = if i == 0 {
                (left / cost).max(1)
            } else {
                left / cost
            };
            if max_removals == 0 {
                outcome.resume_at = Some(key.clone());
                break;
            }
            let done = gc(reader, txn, key, safe_point, max_removals)?;
            outcome.removed += done.removed;
            left = left.saturating_sub(done.removed * cost);
            if !done.done {
                outcome.resume_at = Some(key.clone());
                break;
            }
        }
        Ok(outcome)
    })
}

/// Keys that GC would change, found by [`scan_gc_keys`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcScan {
    /// In key order.
    pub keys: Vec<Key>,
    /// Where to continue (an encoded user key), if the scan stopped before the end.
    pub next: Option<Vec<u8>>,
}

/// Finds the keys in `[start, end)` (encoded user keys; `end` empty: unbounded) of which GC at
/// `safe_point` would remove something: at most `max_keys`, reading whole keys until about
/// `max_records` write records were read.
pub fn scan_gc_keys(
    reader: &MvccReader<'_>,
    start: &[u8],
    end: &[u8],
    safe_point: TimeStamp,
    max_keys: usize,
    max_records: usize,
) -> Result<GcScan> {
    let mut scan = GcScan::default();
    let mut records = 0usize;
    // The key being read, its plan, and whether GC removes something of it.
    let mut current: Option<(Vec<u8>, GcPlan, bool)> = None;
    reader.scan_writes(start, end, |user, commit_ts, write| {
        if current.as_ref().is_none_or(|(u, _, _)| u[..] != *user) {
            if let Some((done, _, true)) = current.take() {
                scan.keys.push(Key::from_encoded(done));
            }
            if scan.keys.len() >= max_keys || records >= max_records {
                scan.next = Some(user.to_vec());
                return false;
            }
            current = Some((user.to_vec(), GcPlan::new(safe_point), false));
        }
        records += 1;
        let (_, plan, removes) = current.as_mut().expect("set above");
        if plan.removes(commit_ts, write.kind()) {
            *removes = true;
        }
        true
    })?;
    if let Some((done, _, true)) = current {
        scan.keys.push(Key::from_encoded(done));
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{k, TestStore};
    use super::super::{commit, prewrite, rollback, Mutation, PrewriteProps};
    use super::*;
    use crate::mvcc::SHORT_VALUE_MAX_LEN;

    /// The records a plan at `safe_point` keeps of `records` ("P30 R25 L20 D10": kind and
    /// commit ts, newest first).
    fn kept(records: &str, safe_point: TimeStamp) -> String {
        let mut plan = GcPlan::new(safe_point);
        records
            .split_whitespace()
            .filter(|r| {
                let kind = match &r[..1] {
                    "P" => WriteType::Put,
                    "D" => WriteType::Delete,
                    "L" => WriteType::Lock,
                    "R" => WriteType::Rollback,
                    other => panic!("unknown record kind {other}"),
                };
                !plan.removes(r[1..].parse().expect("ts"), kind)
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn the_plan_keeps_what_readers_at_or_above_the_safe_point_need() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, TimeStamp, &str)] = &[
            ("nothing to collect", "", 20, ""),
            ("everything above the safe point stays",
             "P30 R25 L22 D21", 20, "P30 R25 L22 D21"),
            ("the newest put at or below it stays, older versions go",
             "P30 P15 P10 D5 P1", 20, "P30 P15"),
            ("a record at the safe point counts as at or below it",
             "P20 P10", 20, "P20"),
            ("locks and rollbacks at or below it go, above the newest put too",
             "R19 L18 P15 R12 L11 P10", 20, "P15"),
            ("a delete at or below it goes with everything older",
             "P30 L19 D15 P10 R5", 20, "P30"),
            ("a delete at the safe point goes too",
             "D20 P10", 20, ""),
            ("locks and rollbacks above it stay, even over a collected history",
             "R25 L22 R19 D12 P10", 20, "R25 L22"),
            ("only locks and rollbacks: all at or below it go",
             "R15 L10", 20, ""),
            ("safe point 0 keeps everything written after it",
             "P2 P1", 0, "P2 P1"),
        ];
        for (name, records, safe_point, want) in cases {
            assert_eq!(kept(records, *safe_point), *want, "{name}");
        }
    }

    /// A history of keys built with real commands (so values, rollbacks and Lock records look
    /// exactly as the commands write them); newest data commit of each key at or below 50:
    /// - `a`: short puts at 11, 21 (long), 31; rollback at 25; Lock record at 36; put at 61.
    /// - `b`: long put at 11, delete at 41, rollback at 45; put at 61.
    /// - `c`: put at 11 only.
    /// - `d`: rollbacks at 15 and 55 only.
    fn history() -> TestStore {
        let s = TestStore::new();
        let long = |c: u8| vec![c; SHORT_VALUE_MAX_LEN + 1];
        s.must_put(b"a", b"a1", 10, 11);
        s.must_put(b"a", &long(b'A'), 20, 21);
        s.rollback(&[b"a"], 25).unwrap();
        s.must_put(b"a", b"a3", 30, 31);
        s.run(|r, t| {
            prewrite(
                r,
                t,
                &PrewriteProps::optimistic(b"a", 35),
                vec![Mutation::lock(k(b"a"))],
                0,
            )
        })
        .unwrap();
        s.run(|r, t| commit(r, t, 35, &[k(b"a")], 36)).unwrap();
        s.must_put(b"a", b"a6", 60, 61);
        s.must_put(b"b", &long(b'B'), 10, 11);
        s.must_prewrite_delete(b"b", b"b", 40);
        s.commit(&[b"b"], 40, 41).unwrap();
        s.run(|r, t| rollback(r, t, 45, &[k(b"b")])).unwrap();
        s.must_put(b"b", b"b6", 60, 61);
        s.must_put(b"c", b"c1", 10, 11);
        s.rollback(&[b"d"], 15).unwrap();
        s.rollback(&[b"d"], 55).unwrap();
        s
    }

    const KEYS: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];

    /// Every key's value and a full scan at each ts from `from` to past the newest record.
    fn reads_from(s: &TestStore, from: TimeStamp) -> Vec<String> {
        let mut out = Vec::new();
        for ts in from..=70 {
            for key in KEYS {
                let v = s.get(key, ts).unwrap();
                out.push(format!("{ts}:{key:?}={v:?}"));
            }
            let scan = s.read(|r| r.scan(b"", b"", 0, ts, false, &[])).unwrap();
            out.push(format!("{ts}:scan={scan:?}"));
        }
        out
    }

    fn records(s: &TestStore, key: &[u8]) -> Vec<TimeStamp> {
        let mut out = Vec::new();
        s.read(|r| {
            r.versions(&k(key), TimeStamp::MAX, |ts, _| {
                out.push(ts);
                true
            })
        })
        .unwrap();
        out
    }

    #[test]
    fn gc_removes_the_invisible_versions_and_their_values_and_no_read_above_changes() {
        let s = history();
        let before = reads_from(&s, 50);
        let out = s
            .run(|r, t| gc_keys(r, t, &KEYS.map(k), 50, usize::MAX))
            .unwrap();
        assert_eq!(out.resume_at, None);
        assert_eq!(reads_from(&s, 50), before);
        assert_eq!(records(&s, b"a"), [61, 31]);
        assert_eq!(records(&s, b"b"), [61]);
        assert_eq!(records(&s, b"c"), [11]);
        assert_eq!(records(&s, b"d"), [55]);
        assert_eq!(out.removed, 4 + 3 + 1);
        assert_eq!(s.default_value(b"a", 20), None, "a's long value went");
        assert_eq!(s.default_value(b"b", 10), None, "b's long value went");
        // Again at the same safe point: nothing left to do.
        let (again, txn) = s.dry_run(|r, t| gc_keys(r, t, &KEYS.map(k), 50, usize::MAX));
        assert_eq!(again.unwrap().removed, 0);
        assert!(txn.is_empty());
    }

    #[test]
    fn a_kept_put_keeps_its_value_and_reads_below_the_safe_point_may_change() {
        let s = TestStore::new();
        let long = vec![b'L'; SHORT_VALUE_MAX_LEN + 1];
        s.must_put(b"k", b"old", 10, 11);
        s.must_put(b"k", &long, 20, 21);
        s.run(|r, t| gc(r, t, &k(b"k"), 30, usize::MAX)).unwrap();
        assert_eq!(s.get(b"k", 30).unwrap(), Some(long.clone()));
        assert_eq!(s.default_value(b"k", 20), Some(long));
        // Below the safe point nothing is promised: the old version is gone.
        assert_eq!(s.get(b"k", 15).unwrap(), None);
    }

    #[test]
    fn pieces_remove_the_oldest_first_and_every_piece_keeps_reads_above_unchanged() {
        let s = TestStore::new();
        for i in 1..=6 {
            s.must_put(b"k", format!("v{i}").as_bytes(), i * 10, i * 10 + 1);
            s.rollback(&[b"k"], i * 10 + 5).unwrap();
        }
        s.must_prewrite_delete(b"k", b"k", 70);
        s.commit(&[b"k"], 70, 71).unwrap();
        s.rollback(&[b"k"], 75).unwrap();
        s.must_put(b"k", b"new", 90, 91);
        let read = |s: &TestStore| {
            (80..=95)
                .map(|ts| s.get(b"k", ts).unwrap())
                .collect::<Vec<_>>()
        };
        let before = read(&s);
        let mut passes = 0;
        loop {
            let out = s.run(|r, t| gc(r, t, &k(b"k"), 80, 3)).unwrap();
            passes += 1;
            assert_eq!(read(&s), before, "after pass {passes}");
            if out.done {
                break;
            }
            assert_eq!(out.removed, 3);
        }
        // 6 puts, 6 rollbacks, the delete and the rollback above it: 14 records, 3 per pass.
        assert_eq!(passes, 5);
        assert_eq!(records(&s, b"k"), [91]);
    }

    #[test]
    fn a_batch_stops_at_its_budget_and_names_the_key_to_resume_at() {
        let s = TestStore::new();
        for key in [b"a", b"b", b"c"] {
            for i in 1..=4 {
                s.must_put(key, b"v", i * 10, i * 10 + 1);
            }
        }
        let keys = [k(b"a"), k(b"b"), k(b"c")];
        // Room for 3 removals of 1-byte keys: all of a's, none of b's.
        let budget = 3 * removal_cost(&k(b"a"));
        let out = s.run(|r, t| gc_keys(r, t, &keys, 100, budget)).unwrap();
        assert_eq!(
            out,
            GcBatchOutcome {
                removed: 3,
                resume_at: Some(k(b"b"))
            }
        );
        // A budget too small for even one removal still lets the first key make progress.
        let out = s.run(|r, t| gc_keys(r, t, &keys[1..], 100, 1)).unwrap();
        assert_eq!(
            out,
            GcBatchOutcome {
                removed: 1,
                resume_at: Some(k(b"b"))
            }
        );
        assert_eq!(records(&s, b"a"), [41]);
        assert_eq!(records(&s, b"b"), [41, 31, 21]);
        assert_eq!(records(&s, b"c").len(), 4);
    }

    #[test]
    fn the_scan_finds_only_keys_gc_would_change_and_pages_by_whole_keys() {
        let s = history();
        s.must_put(b"e", b"e1", 60, 61); // above the safe point only
        let scan = |start: &[u8], max_keys, max_records| {
            s.read(|r| scan_gc_keys(r, start, b"", 50, max_keys, max_records))
                .unwrap()
        };
        // c (one put) and e (above the safe point) need nothing.
        assert_eq!(
            scan(b"", 100, 1000),
            GcScan {
                keys: vec![k(b"a"), k(b"b"), k(b"d")],
                next: None
            }
        );
        assert_eq!(
            scan(b"", 1, 1000),
            GcScan {
                keys: vec![k(b"a")],
                next: Some(k(b"b").into_encoded())
            }
        );
        // The record limit is checked between keys: a's 6 records are read in one go.
        assert_eq!(
            scan(b"", 100, 2),
            GcScan {
                keys: vec![k(b"a")],
                next: Some(k(b"b").into_encoded())
            }
        );
        assert_eq!(
            scan(k(b"b").as_encoded(), 100, 4),
            GcScan {
                keys: vec![k(b"b")],
                next: Some(k(b"c").into_encoded())
            }
        );
        // With an end bound.
        let bounded = s
            .read(|r| scan_gc_keys(r, b"", k(b"b").as_encoded(), 50, 100, 1000))
            .unwrap();
        assert_eq!(bounded.keys, vec![k(b"a")]);
        assert_eq!(bounded.next, None);
    }
}
