//! Rollback (`KvBatchRollback`): the client gives up a transaction on some keys.
//!
//! Per key: our lock is removed with its value and a Rollback record is written at `start_ts`
//! (or folded into another transaction's commit record sitting there). Without our lock, a
//! Rollback record is written anyway, so a prewrite still on its way fails when it arrives;
//! a key already rolled back is left alone. A key the transaction committed fails the command
//! with `Committed`: a commit is never undone.

use crate::mvcc::{Key, MvccReader, MvccTxn, Result, TimeStamp};

use super::cleanup::cleanup_key;
use super::common::all_or_nothing;

/// Rolls back transaction `start_ts` on `keys`, whatever its locks' TTLs.
pub fn rollback(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    start_ts: TimeStamp,
    keys: &[Key],
) -> Result<()> {
    all_or_nothing(txn, |txn| {
        for key in keys {
            cleanup_key(reader, txn, key, start_ts, 0)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{k, TestStore};
    use super::*;
    use crate::mvcc::{Error, TxnCommitRecord, WriteType, SHORT_VALUE_MAX_LEN};

    #[test]
    fn rollback_removes_lock_and_value_and_leaves_a_rollback_record() {
        let s = TestStore::new();
        let long = vec![b'v'; SHORT_VALUE_MAX_LEN + 1];
        s.must_prewrite_put(b"k", &long, b"k", 10);
        assert!(s.default_value(b"k", 10).is_some());
        s.rollback(&[b"k"], 10).unwrap();
        assert_eq!(s.lock(b"k"), None);
        assert_eq!(s.default_value(b"k", 10), None);
        assert_eq!(s.write_at(b"k", 10).unwrap().kind(), WriteType::Rollback);
        assert_eq!(s.commit_record(b"k", 10), TxnCommitRecord::RolledBack);
    }

    #[test]
    fn rollback_without_a_lock_protects_against_a_late_prewrite() {
        let s = TestStore::new();
        s.rollback(&[b"k"], 10).unwrap();
        assert_eq!(s.commit_record(b"k", 10), TxnCommitRecord::RolledBack);
        // Again: nothing more to write.
        let (result, txn) = s.dry_run(|r, t| rollback(r, t, 10, &[k(b"k")]));
        result.unwrap();
        assert!(txn.is_empty());
    }

    #[test]
    fn rollback_leaves_other_transactions_locks_alone() {
        let s = TestStore::new();
        s.must_prewrite_put(b"k", b"v", b"k", 10);
        s.rollback(&[b"k"], 20).unwrap();
        assert_eq!(s.lock(b"k").unwrap().start_ts, 10);
        assert_eq!(s.commit_record(b"k", 20), TxnCommitRecord::RolledBack);
    }

    #[test]
    fn rollback_of_a_committed_transaction_fails() {
        let s = TestStore::new();
        s.must_put(b"k", b"v", 10, 20);
        let err = s.rollback(&[b"k"], 10).unwrap_err();
        assert_eq!(
            err,
            Error::Committed {
                start_ts: 10,
                commit_ts: 20,
                key: b"k".to_vec()
            }
        );
        assert_eq!(s.get(b"k", 20).unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn a_rollback_onto_a_commit_record_is_folded_into_it() {
        let s = TestStore::new();
        s.must_put(b"k", b"v", 5, 10);
        s.rollback(&[b"k"], 10).unwrap();
        let w = s.write_at(b"k", 10).unwrap();
        assert_eq!(
            (w.kind(), w.start_ts, w.has_overlapped_rollback),
            (WriteType::Put, 5, true)
        );
        assert_eq!(
            s.get(b"k", 10).unwrap(),
            Some(b"v".to_vec()),
            "the commit survives"
        );
        assert_eq!(s.commit_record(b"k", 10), TxnCommitRecord::RolledBack);
    }
}
