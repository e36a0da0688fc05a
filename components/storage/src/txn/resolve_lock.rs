//! Resolve lock (`KvResolveLock`): finish the locks of transactions whose fate is known.
//!
//! A resolver that found out how transactions ended (check txn status, check secondary locks)
//! commits or rolls back their locks: commit ts 0 rolls back (no TTL check), a commit ts above
//! the start ts commits. Two forms, as in TiKV:
//! - [`resolve_lock`]: the locks a scan of the region found (the caller scans with
//!   `MvccReader::scan_locks`, filtered to the transactions in `txn_status`, in batches), for
//!   any number of transactions. A pessimistic lock left behind by a committed transaction (a
//!   key it locked but did not write) is skipped rather than failing the batch.
//! - [`resolve_lock_lite`]: named keys of one transaction.

use std::collections::HashMap;

use crate::mvcc::{Error, Key, Lock, LockType, MvccReader, MvccTxn, Result, TimeStamp};

use super::cleanup::cleanup_key;
use super::commit::commit_key;
use super::common::all_or_nothing;

/// Resolves `locks` (found by a scan of this snapshot) by `txn_status`: start ts → commit ts,
/// 0 meaning rolled back. Locks of transactions not in `txn_status` are left alone.
pub fn resolve_lock(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    txn_status: &HashMap<TimeStamp, TimeStamp>,
    locks: &[(Key, Lock)],
) -> Result<()> {
    all_or_nothing(txn, |txn| {
        for (key, lock) in locks {
            let Some(&commit_ts) = txn_status.get(&lock.start_ts) else {
                continue;
            };
            resolve_key(reader, txn, key, lock, commit_ts)?;
        }
        Ok(())
    })
}

fn resolve_key(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    key: &Key,
    lock: &Lock,
    commit_ts: TimeStamp,
) -> Result<()> {
    let start_ts = lock.start_ts;
    if commit_ts == 0 {
        return cleanup_key(reader, txn, key, start_ts, 0);
    }
    if commit_ts <= start_ts {
        return Err(Error::InvalidTxnTso {
            start_ts,
            commit_ts,
        });
    }
    match commit_key(reader, txn, key, start_ts, commit_ts) {
        Err(Error::TxnLockNotFound { .. }) if lock.kind() == LockType::Pessimistic => Ok(()),
        result => result,
    }
}

/// Resolves transaction `start_ts` on `keys`: commits them at `commit_ts`, or rolls them back
/// if it is 0.
pub fn resolve_lock_lite(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    start_ts: TimeStamp,
    commit_ts: TimeStamp,
    keys: &[Key],
) -> Result<()> {
    if commit_ts != 0 && commit_ts <= start_ts {
        return Err(Error::InvalidTxnTso {
            start_ts,
            commit_ts,
        });
    }
    all_or_nothing(txn, |txn| {
        for key in keys {
            if commit_ts == 0 {
                cleanup_key(reader, txn, key, start_ts, 0)?;
            } else {
                commit_key(reader, txn, key, start_ts, commit_ts)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{k, TestStore};
    use super::super::{pessimistic_lock, PessimisticLockProps};
    use super::*;
    use crate::mvcc::TxnCommitRecord;

    #[test]
    fn scanned_locks_are_committed_or_rolled_back_by_their_transactions_fate() {
        let s = TestStore::new();
        s.must_prewrite_put(b"a", b"1", b"p1", 10);
        s.must_prewrite_put(b"b", b"2", b"p2", 20);
        s.must_prewrite_put(b"c", b"3", b"p3", 30);
        let status = HashMap::from([(10, 15), (20, 0)]);
        let locks = s
            .read(|r| r.scan_locks(&[], &[], |l| status.contains_key(&l.start_ts), 0))
            .unwrap();
        assert_eq!(locks.len(), 2);
        s.run(|r, t| resolve_lock(r, t, &status, &locks)).unwrap();
        assert_eq!(s.get(b"a", 15).unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.commit_record(b"b", 20), TxnCommitRecord::RolledBack);
        assert!(s.lock(b"c").is_some(), "transaction 30 was not asked about");
    }

    #[test]
    fn a_committed_transactions_leftover_pessimistic_lock_does_not_fail_the_batch() {
        let s = TestStore::new();
        s.must_prewrite_put(b"a", b"1", b"a", 10);
        s.run(|r, t| {
            pessimistic_lock(
                r,
                t,
                &PessimisticLockProps::new(b"a", 10, 10),
                &[(k(b"b"), false)],
            )
        })
        .unwrap();
        let status = HashMap::from([(10, 20)]);
        let locks = s.read(|r| r.scan_locks(&[], &[], |_| true, 0)).unwrap();
        s.run(|r, t| resolve_lock(r, t, &status, &locks)).unwrap();
        assert_eq!(s.lock(b"a"), None);
        assert_eq!(s.get(b"a", 20).unwrap(), Some(b"1".to_vec()));
    }

    #[test]
    fn resolve_lock_lite_commits_or_rolls_back_named_keys() {
        let s = TestStore::new();
        s.must_prewrite_put(b"a", b"1", b"a", 10);
        s.must_prewrite_put(b"b", b"2", b"b", 20);
        s.run(|r, t| resolve_lock_lite(r, t, 10, 15, &[k(b"a")]))
            .unwrap();
        s.run(|r, t| resolve_lock_lite(r, t, 20, 0, &[k(b"b")]))
            .unwrap();
        assert_eq!(s.get(b"a", 15).unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.commit_record(b"b", 20), TxnCommitRecord::RolledBack);
        let err = s
            .run(|r, t| resolve_lock_lite(r, t, 20, 20, &[k(b"b")]))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidTxnTso { .. }));
    }
}
