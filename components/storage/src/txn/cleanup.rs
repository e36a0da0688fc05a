//! Cleanup (`KvCleanup`): roll back one key of a transaction that seems abandoned.
//!
//! Like [`rollback`](super::rollback), but our lock is rolled back only if its TTL ran out
//! before `current_ts` (compared in physical milliseconds); a live lock fails with
//! `KeyIsLocked`. `current_ts` 0 skips the TTL check. A committed key fails with `Committed`,
//! which carries the commit ts the client needs.

use crate::mvcc::{Error, Key, MvccReader, MvccTxn, Result, TimeStamp, TxnCommitRecord};

use super::common::{
    all_or_nothing, lock_expired, lock_info, put_rollback_record, raw_key, rollback_lock,
};

/// Rolls back transaction `start_ts` on `key` if its lock expired at `current_ts`.
pub fn cleanup(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    key: &Key,
    start_ts: TimeStamp,
    current_ts: TimeStamp,
) -> Result<()> {
    all_or_nothing(txn, |txn| {
        cleanup_key(reader, txn, key, start_ts, current_ts)
    })
}

/// Rolls back one key (see the module doc; `current_ts` 0: no TTL check).
pub(super) fn cleanup_key(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    key: &Key,
    start_ts: TimeStamp,
    current_ts: TimeStamp,
) -> Result<()> {
    match reader.load_lock(key)? {
        Some(lock) if lock.start_ts == start_ts => {
            if current_ts != 0 && !lock_expired(&lock, current_ts) {
                return Err(Error::KeyIsLocked(lock_info(key, &lock)?));
            }
            rollback_lock(reader, txn, key, &lock)
        }
        _ => match reader.get_txn_commit_record(key, start_ts)? {
            TxnCommitRecord::Committed { commit_ts, .. } => Err(Error::Committed {
                start_ts,
                commit_ts,
                key: raw_key(key)?,
            }),
            TxnCommitRecord::RolledBack => Ok(()),
            // Never prewritten here (yet): protect against the prewrite arriving later.
            TxnCommitRecord::None => put_rollback_record(reader, txn, key, start_ts),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{k, ts, TestStore};
    use super::super::{txn_heart_beat, Mutation, PrewriteProps};
    use super::*;

    #[test]
    fn cleanup_of_a_live_lock_reports_it_and_keeps_it() {
        let s = TestStore::new();
        s.must_prewrite_put(b"k", b"v", b"k", ts(10, 0));
        s.run(|r, t| txn_heart_beat(r, t, &k(b"k"), ts(10, 0), 100))
            .unwrap();
        let err = s
            .run(|r, t| cleanup(r, t, &k(b"k"), ts(10, 0), ts(110, 0)))
            .unwrap_err();
        assert!(
            matches!(err, Error::KeyIsLocked(ref l) if l.ttl == 100),
            "{err:?}"
        );
        assert!(s.lock(b"k").is_some());
    }

    #[test]
    fn cleanup_of_an_expired_lock_rolls_it_back() {
        let s = TestStore::new();
        let mut props = PrewriteProps::optimistic(b"k", ts(10, 0));
        props.lock_ttl = 100;
        s.prewrite(&props, vec![Mutation::put(k(b"k"), b"v".to_vec())], 0)
            .unwrap();
        s.run(|r, t| cleanup(r, t, &k(b"k"), ts(10, 0), ts(111, 0)))
            .unwrap();
        assert_eq!(s.lock(b"k"), None);
        assert_eq!(
            s.commit_record(b"k", ts(10, 0)),
            TxnCommitRecord::RolledBack
        );
    }

    #[test]
    fn cleanup_of_a_committed_key_reports_the_commit_ts() {
        let s = TestStore::new();
        s.must_put(b"k", b"v", 10, 20);
        let err = s.run(|r, t| cleanup(r, t, &k(b"k"), 10, 0)).unwrap_err();
        assert_eq!(
            err,
            Error::Committed {
                start_ts: 10,
                commit_ts: 20,
                key: b"k".to_vec()
            }
        );
    }
}
