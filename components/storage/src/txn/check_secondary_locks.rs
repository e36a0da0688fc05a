//! Check secondary locks (`KvCheckSecondaryLocks`): recovery of an async-commit transaction.
//!
//! An async-commit transaction is committed iff every one of its keys was prewritten, so a
//! resolver reads every secondary. Per key, in order, until one decides:
//! - our prewrite lock: reported (the resolver commits at the largest `min_commit_ts` once all
//!   are reported);
//! - our pessimistic lock: the key was never prewritten, so the transaction cannot have
//!   committed: the lock is removed and a Rollback record written (`RolledBack`);
//! - no lock of ours: the commit record decides — committed ⇒ `Committed(commit_ts)`, rolled
//!   back ⇒ `RolledBack`, nothing ⇒ a Rollback record is written so the prewrite can never land,
//!   and `RolledBack`.
//!
//! Every Rollback record here is permanent (rangekv never collapses rollbacks), which is what
//! keeps a late prewrite or pessimistic lock from reviving the transaction.

use crate::mvcc::{
    Key, LockInfo, LockType, MvccReader, MvccTxn, Result, TimeStamp, TxnCommitRecord,
};

use super::common::{all_or_nothing, put_rollback_record, raw_key};

/// The verdict of check secondary locks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecondaryLocksStatus {
    /// Every key holds our prewrite lock: undecided, these are the locks.
    Locked(Vec<LockInfo>),
    Committed(TimeStamp),
    RolledBack,
}

/// Checks the secondary `keys` of async-commit transaction `start_ts` (see the module doc).
pub fn check_secondary_locks(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    start_ts: TimeStamp,
    keys: &[Key],
) -> Result<SecondaryLocksStatus> {
    all_or_nothing(txn, |txn| {
        let mut locks = Vec::with_capacity(keys.len());
        for key in keys {
            match reader.load_lock(key)? {
                Some(lock) if lock.start_ts == start_ts => {
                    if lock.kind() == LockType::Pessimistic {
                        txn.unlock_key(key);
                        put_rollback_record(reader, txn, key, start_ts)?;
                        return Ok(SecondaryLocksStatus::RolledBack);
                    }
                    locks.push(LockInfo::new(raw_key(key)?, &lock));
                }
                _ => match reader.get_txn_commit_record(key, start_ts)? {
                    TxnCommitRecord::Committed { commit_ts, .. } => {
                        return Ok(SecondaryLocksStatus::Committed(commit_ts));
                    }
                    TxnCommitRecord::RolledBack => return Ok(SecondaryLocksStatus::RolledBack),
                    TxnCommitRecord::None => {
                        put_rollback_record(reader, txn, key, start_ts)?;
                        return Ok(SecondaryLocksStatus::RolledBack);
                    }
                },
            }
        }
        Ok(SecondaryLocksStatus::Locked(locks))
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{k, TestStore};
    use super::super::{pessimistic_lock, Mutation, PessimisticLockProps, PrewriteProps};
    use super::*;
    use crate::mvcc::Error;

    fn check(s: &TestStore, keys: &[&[u8]], start_ts: TimeStamp) -> SecondaryLocksStatus {
        let keys: Vec<Key> = keys.iter().map(|key| k(key)).collect();
        s.run(|r, t| check_secondary_locks(r, t, start_ts, &keys))
            .unwrap()
    }

    fn prewrite_async(s: &TestStore, keys: &[&[u8]], start_ts: TimeStamp) {
        let mut props = PrewriteProps::optimistic(b"p", start_ts);
        props.secondaries = Some(vec![b"a".to_vec(), b"b".to_vec()]);
        let m = keys
            .iter()
            .map(|key| Mutation::put(k(key), b"v".to_vec()))
            .collect();
        s.prewrite(&props, m, 0).unwrap();
    }

    #[test]
    fn all_locks_present_are_reported() {
        let s = TestStore::new();
        prewrite_async(&s, &[b"p", b"a", b"b"], 10);
        let SecondaryLocksStatus::Locked(locks) = check(&s, &[b"a", b"b"], 10) else {
            panic!("not locked");
        };
        let keys: Vec<_> = locks.iter().map(|l| l.key.clone()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(locks
            .iter()
            .all(|l| l.use_async_commit && l.min_commit_ts == 11));
    }

    #[test]
    fn a_committed_secondary_gives_the_commit_ts() {
        let s = TestStore::new();
        prewrite_async(&s, &[b"p", b"a", b"b"], 10);
        s.commit(&[b"a"], 10, 11).unwrap();
        assert_eq!(
            check(&s, &[b"b", b"a"], 10),
            SecondaryLocksStatus::Committed(11)
        );
    }

    #[test]
    fn a_missing_secondary_is_rolled_back_for_good() {
        let s = TestStore::new();
        prewrite_async(&s, &[b"p", b"a"], 10);
        assert_eq!(
            check(&s, &[b"a", b"b"], 10),
            SecondaryLocksStatus::RolledBack
        );
        assert_eq!(s.commit_record(b"b", 10), TxnCommitRecord::RolledBack);
        // The prewrite of b, arriving late, fails; the transaction cannot commit.
        let mut props = PrewriteProps::optimistic(b"p", 10);
        props.secondaries = Some(Vec::new());
        let err = s
            .prewrite(&props, vec![Mutation::put(k(b"b"), b"v".to_vec())], 0)
            .unwrap_err();
        assert!(matches!(err, Error::WriteConflict { .. }));
    }

    #[test]
    fn a_pessimistic_secondary_means_rolled_back() {
        let s = TestStore::new();
        s.run(|r, t| {
            pessimistic_lock(
                r,
                t,
                &PessimisticLockProps::new(b"p", 10, 10),
                &[(k(b"a"), false)],
            )
        })
        .unwrap();
        assert_eq!(check(&s, &[b"a"], 10), SecondaryLocksStatus::RolledBack);
        assert_eq!(s.lock(b"a"), None);
        assert_eq!(s.commit_record(b"a", 10), TxnCommitRecord::RolledBack);
    }
}
