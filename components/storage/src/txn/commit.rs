//! Commit (`KvCommit`): the second phase, turning a transaction's locks into write records.
//!
//! - Our lock on the key: a write record at `commit_ts` (Put / Delete / Lock, pointing at
//!   `start_ts`) replaces it. `commit_ts` below the lock's `min_commit_ts` (pushed by readers, or
//!   computed by async commit) fails with `CommitTsExpired`. A leftover pessimistic lock (the
//!   key was locked but never prewritten) commits as a Lock record.
//! - No lock of ours: the commit record decides. Committed: success (a retry). Rolled back, or
//!   nothing at all (a rollback that was never written, or a prewrite that never arrived):
//!   `TxnLockNotFound`.

use crate::mvcc::{Error, Key, MvccReader, MvccTxn, Result, TimeStamp, TxnCommitRecord};

use super::common::{all_or_nothing, put_commit_record, raw_key};

/// Commits `keys` of transaction `start_ts` at `commit_ts`.
pub fn commit(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    start_ts: TimeStamp,
    keys: &[Key],
    commit_ts: TimeStamp,
) -> Result<()> {
    if commit_ts <= start_ts {
        return Err(Error::InvalidTxnTso {
            start_ts,
            commit_ts,
        });
    }
    all_or_nothing(txn, |txn| {
        for key in keys {
            commit_key(reader, txn, key, start_ts, commit_ts)?;
        }
        Ok(())
    })
}

/// Commits one key (see the module doc).
pub(super) fn commit_key(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    key: &Key,
    start_ts: TimeStamp,
    commit_ts: TimeStamp,
) -> Result<()> {
    match reader.load_lock(key)? {
        Some(lock) if lock.start_ts == start_ts => {
            if commit_ts < lock.min_commit_ts {
                return Err(Error::CommitTsExpired {
                    start_ts,
                    commit_ts,
                    key: raw_key(key)?,
                    min_commit_ts: lock.min_commit_ts,
                });
            }
            put_commit_record(reader, txn, key, &lock, commit_ts)?;
            txn.unlock_key(key);
            Ok(())
        }
        _ => match reader.get_txn_commit_record(key, start_ts)? {
            TxnCommitRecord::Committed { .. } => Ok(()),
            TxnCommitRecord::RolledBack | TxnCommitRecord::None => Err(Error::TxnLockNotFound {
                start_ts,
                commit_ts,
                key: raw_key(key)?,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{k, TestStore};
    use super::super::{prewrite, Mutation, PrewriteProps};
    use super::*;
    use crate::mvcc::WriteType;

    #[test]
    fn commit_turns_each_lock_into_its_write_record() {
        let s = TestStore::new();
        s.must_put(b"d", b"old", 1, 2);
        let props = PrewriteProps::optimistic(b"p", 10);
        let mutations = vec![
            Mutation::put(k(b"p"), b"v".to_vec()),
            Mutation::lock(k(b"l")),
            Mutation::delete(k(b"d")),
        ];
        s.prewrite(&props, mutations, 0).unwrap();
        s.commit(&[b"p", b"l", b"d"], 10, 20).unwrap();
        for (key, kind) in [
            (&b"p"[..], WriteType::Put),
            (b"l", WriteType::Lock),
            (b"d", WriteType::Delete),
        ] {
            assert_eq!(s.lock(key), None);
            let w = s.write_at(key, 20).unwrap();
            assert_eq!((w.kind(), w.start_ts), (kind, 10));
        }
    }

    #[test]
    fn reads_see_exactly_the_commits_at_or_before_their_ts() {
        let s = TestStore::new();
        s.must_put(b"k", b"v1", 10, 20);
        s.must_prewrite_put(b"k", b"v2", b"k", 30);
        // A lock of a transaction that may commit at or before the read blocks it...
        assert!(matches!(s.get(b"k", 35), Err(Error::KeyIsLocked(_))));
        // ...one that started after the read does not.
        assert_eq!(s.get(b"k", 25).unwrap(), Some(b"v1".to_vec()));
        s.commit(&[b"k"], 30, 40).unwrap();
        s.must_prewrite_delete(b"k", b"k", 50);
        s.commit(&[b"k"], 50, 60).unwrap();
        let seen: Vec<_> = [15, 20, 39, 40, 59, 60, 70]
            .into_iter()
            .map(|ts| s.get(b"k", ts).unwrap())
            .collect();
        let v = |b: &[u8]| Some(b.to_vec());
        assert_eq!(
            seen,
            vec![None, v(b"v1"), v(b"v1"), v(b"v2"), v(b"v2"), None, None]
        );
    }

    #[test]
    fn a_retried_commit_is_idempotent() {
        let s = TestStore::new();
        s.must_prewrite_put(b"k", b"v", b"k", 10);
        s.commit(&[b"k"], 10, 20).unwrap();
        let (result, txn) = s.dry_run(|r, t| commit(r, t, 10, &[k(b"k")], 20));
        result.unwrap();
        assert!(txn.is_empty(), "nothing written again");
    }

    #[test]
    fn commit_of_a_rolled_back_transaction_fails() {
        let s = TestStore::new();
        s.must_prewrite_put(b"k", b"v", b"k", 10);
        s.rollback(&[b"k"], 10).unwrap();
        let err = s.commit(&[b"k"], 10, 20).unwrap_err();
        assert_eq!(
            err,
            Error::TxnLockNotFound {
                start_ts: 10,
                commit_ts: 20,
                key: b"k".to_vec()
            }
        );
        assert_eq!(s.get(b"k", 30).unwrap(), None);
    }

    #[test]
    fn commit_without_prewrite_fails_and_commits_nothing() {
        let s = TestStore::new();
        s.must_prewrite_put(b"a", b"v", b"a", 10);
        let err = s.commit(&[b"a", b"missing"], 10, 20).unwrap_err();
        assert!(matches!(err, Error::TxnLockNotFound { .. }));
        assert!(s.lock(b"a").is_some(), "the batch commits all or nothing");
    }

    #[test]
    fn commit_below_min_commit_ts_fails() {
        let s = TestStore::new();
        let mut props = PrewriteProps::optimistic(b"k", 10);
        props.secondaries = Some(Vec::new());
        s.prewrite(&props, vec![Mutation::put(k(b"k"), b"v".to_vec())], 50)
            .unwrap();
        let err = s.commit(&[b"k"], 10, 40).unwrap_err();
        assert!(
            matches!(
                err,
                Error::CommitTsExpired {
                    min_commit_ts: 51,
                    ..
                }
            ),
            "{err:?}"
        );
        s.commit(&[b"k"], 10, 51).unwrap();
    }

    #[test]
    fn commit_ts_must_be_after_start_ts() {
        let s = TestStore::new();
        s.must_prewrite_put(b"k", b"v", b"k", 10);
        let err = s.commit(&[b"k"], 10, 10).unwrap_err();
        assert_eq!(
            err,
            Error::InvalidTxnTso {
                start_ts: 10,
                commit_ts: 10
            }
        );
    }

    #[test]
    fn a_commit_onto_a_rollback_record_keeps_the_rollback() {
        let s = TestStore::new();
        // Transaction 30 is rolled back on k before transaction 10 commits at 30 (async commit).
        let mut props = PrewriteProps::optimistic(b"k", 10);
        props.secondaries = Some(Vec::new());
        s.prewrite(&props, vec![Mutation::put(k(b"k"), b"v".to_vec())], 20)
            .unwrap();
        s.rollback(&[b"k"], 30).unwrap();
        s.commit(&[b"k"], 10, 30).unwrap();
        let w = s.write_at(b"k", 30).unwrap();
        assert_eq!(
            (w.kind(), w.start_ts, w.has_overlapped_rollback),
            (WriteType::Put, 10, true)
        );
        assert_eq!(s.commit_record(b"k", 30), TxnCommitRecord::RolledBack);
        let err = s
            .run(|r, t| {
                prewrite(
                    r,
                    t,
                    &PrewriteProps::optimistic(b"k", 30),
                    vec![Mutation::put(k(b"k"), b"x".to_vec())],
                    0,
                )
            })
            .unwrap_err();
        assert!(matches!(err, Error::WriteConflict { .. }));
    }

    #[test]
    fn a_leftover_pessimistic_lock_commits_as_a_lock_record() {
        let s = TestStore::new();
        s.run(|r, t| {
            super::super::pessimistic_lock(
                r,
                t,
                &super::super::PessimisticLockProps::new(b"k", 10, 10),
                &[(k(b"k"), false)],
            )
        })
        .unwrap();
        s.commit(&[b"k"], 10, 20).unwrap();
        assert_eq!(s.write_at(b"k", 20).unwrap().kind(), WriteType::Lock);
    }
}
