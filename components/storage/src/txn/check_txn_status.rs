//! Check txn status (`KvCheckTxnStatus`): what became of a transaction, asked at its primary by
//! someone who met one of its locks — deciding it when its primary lock has expired.
//!
//! - **Our lock on the primary**:
//!   - async commit (and not `force_sync_commit`): reported as it is, never decided here
//!     (only the secondaries tell; see [`check_secondary_locks`](super::check_secondary_locks));
//!   - TTL ran out before `current_ts`: rolled back (`TtlExpireRollback`); but a pessimistic
//!     lock met while resolving a pessimistic lock is only removed, without a Rollback record
//!     (`TtlExpirePessimisticRollback`), as the transaction may still lock it again;
//!   - alive: reported with its TTL. A caller reading at `caller_start_ts` ≥ the lock's
//!     non-zero `min_commit_ts` pushes it to `max(caller_start_ts + 1, current_ts)`, so the
//!     transaction will commit after that read and the reader may ignore its locks
//!     (`min_commit_ts_pushed`; also reported for `caller_start_ts` = `u64::MAX`, a point read
//!     that ignores the lock without pushing anything).
//! - **No lock of ours**: committed ⇒ its commit ts; rolled back ⇒ `RolledBack`; nothing ⇒
//!   `TxnNotFound` unless `rollback_if_not_exist`, which writes a Rollback record so the
//!   prewrite can never succeed (`LockNotExistRollback`); when resolving a pessimistic lock
//!   nothing is written (`LockNotExistDoNothing`).
//!
//! With `verify_is_primary`, our lock on a key that is not its primary fails with
//! `PrimaryMismatch`.

use crate::mvcc::{
    Error, Key, Lock, LockType, MvccReader, MvccTxn, Result, TimeStamp, TxnCommitRecord,
};

use super::common::{
    all_or_nothing, lock_expired, lock_info, put_rollback_record, raw_key, rollback_lock,
};

/// Flags of a check txn status request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckTxnStatusOptions {
    /// Without lock or commit record, roll the transaction back instead of `TxnNotFound`.
    pub rollback_if_not_exist: bool,
    /// The transaction is known to have fallen back from async commit: decide it as 2PC.
    pub force_sync_commit: bool,
    /// The caller resolves a pessimistic lock: a pessimistic primary is not rolled back.
    pub resolving_pessimistic_lock: bool,
    /// Fail with `PrimaryMismatch` if our lock on the key names another primary.
    pub verify_is_primary: bool,
}

/// What check txn status found or did.
#[derive(Clone, Debug, PartialEq)]
pub enum TxnStatus {
    /// Rolled back before this check.
    RolledBack,
    /// The primary lock had expired: rolled back now.
    TtlExpireRollback,
    /// The primary was a pessimistic lock that had expired: removed now, no Rollback record.
    TtlExpirePessimisticRollback,
    /// Neither lock nor record: a Rollback record was written now.
    LockNotExistRollback,
    /// Neither lock nor record, while resolving a pessimistic lock: nothing done.
    LockNotExistDoNothing,
    /// Still running (or an undecided async-commit transaction): its primary lock, as written.
    Uncommitted {
        lock: Lock,
        min_commit_ts_pushed: bool,
    },
    Committed {
        commit_ts: TimeStamp,
    },
}

/// Checks transaction `lock_ts` at its primary key `primary_key` (see the module doc).
pub fn check_txn_status(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    primary_key: &Key,
    lock_ts: TimeStamp,
    caller_start_ts: TimeStamp,
    current_ts: TimeStamp,
    opts: CheckTxnStatusOptions,
) -> Result<TxnStatus> {
    all_or_nothing(txn, |txn| match reader.load_lock(primary_key)? {
        Some(lock) if lock.start_ts == lock_ts => lock_exists(
            reader,
            txn,
            primary_key,
            lock,
            caller_start_ts,
            current_ts,
            opts,
        ),
        _ => lock_missing(reader, txn, primary_key, lock_ts, opts),
    })
}

fn lock_exists(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    primary_key: &Key,
    mut lock: Lock,
    caller_start_ts: TimeStamp,
    current_ts: TimeStamp,
    opts: CheckTxnStatusOptions,
) -> Result<TxnStatus> {
    if opts.verify_is_primary && Key::from_raw(&lock.primary) != *primary_key {
        return Err(Error::PrimaryMismatch(lock_info(primary_key, &lock)?));
    }
    if lock.use_async_commit && !opts.force_sync_commit {
        return Ok(TxnStatus::Uncommitted {
            lock,
            min_commit_ts_pushed: false,
        });
    }
    if lock_expired(&lock, current_ts) {
        if opts.resolving_pessimistic_lock && lock.kind() == LockType::Pessimistic {
            txn.unlock_key(primary_key);
            return Ok(TxnStatus::TtlExpirePessimisticRollback);
        }
        rollback_lock(reader, txn, primary_key, &lock)?;
        return Ok(TxnStatus::TtlExpireRollback);
    }
    // A zero min_commit_ts marks a client that does not expect it to move.
    if lock.min_commit_ts != 0
        && caller_start_ts != TimeStamp::MAX
        && caller_start_ts >= lock.min_commit_ts
    {
        lock.min_commit_ts = (caller_start_ts + 1).max(current_ts);
        txn.put_lock(primary_key, &lock);
    }
    let min_commit_ts_pushed = (caller_start_ts != 0 && lock.min_commit_ts > caller_start_ts)
        || caller_start_ts == TimeStamp::MAX;
    Ok(TxnStatus::Uncommitted {
        lock,
        min_commit_ts_pushed,
    })
}

fn lock_missing(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    primary_key: &Key,
    lock_ts: TimeStamp,
    opts: CheckTxnStatusOptions,
) -> Result<TxnStatus> {
    match reader.get_txn_commit_record(primary_key, lock_ts)? {
        TxnCommitRecord::Committed { commit_ts, .. } => Ok(TxnStatus::Committed { commit_ts }),
        TxnCommitRecord::RolledBack => Ok(TxnStatus::RolledBack),
        TxnCommitRecord::None => {
            if !opts.rollback_if_not_exist {
                return Err(Error::TxnNotFound {
                    start_ts: lock_ts,
                    key: raw_key(primary_key)?,
                });
            }
            if opts.resolving_pessimistic_lock {
                return Ok(TxnStatus::LockNotExistDoNothing);
            }
            put_rollback_record(reader, txn, primary_key, lock_ts)?;
            Ok(TxnStatus::LockNotExistRollback)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{k, ts, TestStore};
    use super::super::{pessimistic_lock, Mutation, PessimisticLockProps, PrewriteProps};
    use super::*;

    fn check(
        s: &TestStore,
        key: &[u8],
        lock_ts: TimeStamp,
        caller_start_ts: TimeStamp,
        current_ts: TimeStamp,
        opts: CheckTxnStatusOptions,
    ) -> Result<TxnStatus> {
        s.run(|r, t| check_txn_status(r, t, &k(key), lock_ts, caller_start_ts, current_ts, opts))
    }

    /// Prewrites `key` as its own primary with a TTL of 100 ms (and a min_commit_ts if given).
    fn prewrite_with_ttl(s: &TestStore, key: &[u8], start_ts: TimeStamp, min_commit_ts: TimeStamp) {
        let mut props = PrewriteProps::optimistic(key, start_ts);
        props.lock_ttl = 100;
        props.min_commit_ts = min_commit_ts;
        s.prewrite(&props, vec![Mutation::put(k(key), b"v".to_vec())], 0)
            .unwrap();
    }

    const NONE: CheckTxnStatusOptions = CheckTxnStatusOptions {
        rollback_if_not_exist: false,
        force_sync_commit: false,
        resolving_pessimistic_lock: false,
        verify_is_primary: false,
    };

    #[test]
    fn an_expired_primary_lock_is_rolled_back() {
        let s = TestStore::new();
        prewrite_with_ttl(&s, b"k", ts(10, 0), 0);
        let status = check(&s, b"k", ts(10, 0), ts(200, 0), ts(111, 0), NONE).unwrap();
        assert_eq!(status, TxnStatus::TtlExpireRollback);
        assert_eq!(s.lock(b"k"), None);
        assert_eq!(
            s.commit_record(b"k", ts(10, 0)),
            TxnCommitRecord::RolledBack
        );
        // Asked again: rolled back.
        let status = check(&s, b"k", ts(10, 0), ts(200, 0), ts(111, 0), NONE).unwrap();
        assert_eq!(status, TxnStatus::RolledBack);
    }

    #[test]
    fn an_alive_primary_lock_reports_its_ttl() {
        let s = TestStore::new();
        prewrite_with_ttl(&s, b"k", ts(10, 0), 0);
        let status = check(&s, b"k", ts(10, 0), ts(20, 0), ts(110, 0), NONE).unwrap();
        let TxnStatus::Uncommitted {
            lock,
            min_commit_ts_pushed,
        } = status
        else {
            panic!("{status:?}");
        };
        assert_eq!((lock.ttl, min_commit_ts_pushed), (100, false));
        assert!(s.lock(b"k").is_some());
    }

    #[test]
    fn a_reader_pushes_min_commit_ts_past_its_start_ts() {
        let s = TestStore::new();
        prewrite_with_ttl(&s, b"k", ts(10, 0), ts(10, 1));
        let status = check(&s, b"k", ts(10, 0), ts(20, 0), ts(15, 0), NONE).unwrap();
        let TxnStatus::Uncommitted {
            lock,
            min_commit_ts_pushed,
        } = status
        else {
            panic!("{status:?}");
        };
        assert!(min_commit_ts_pushed);
        assert_eq!(lock.min_commit_ts, ts(20, 1));
        assert_eq!(s.lock(b"k").unwrap().min_commit_ts, ts(20, 1));
        // The reader may now read at ts(20, 0) past the lock; the commit must come later.
        let err = s.commit(&[b"k"], ts(10, 0), ts(20, 0)).unwrap_err();
        assert!(matches!(err, Error::CommitTsExpired { .. }));
        s.commit(&[b"k"], ts(10, 0), ts(20, 1)).unwrap();
        assert_eq!(
            check(&s, b"k", ts(10, 0), ts(30, 0), ts(30, 0), NONE).unwrap(),
            TxnStatus::Committed {
                commit_ts: ts(20, 1)
            }
        );
    }

    #[test]
    fn a_lock_without_min_commit_ts_is_not_pushed() {
        let s = TestStore::new();
        prewrite_with_ttl(&s, b"k", ts(10, 0), 0);
        let (status, txn) = s.dry_run(|r, t| {
            check_txn_status(r, t, &k(b"k"), ts(10, 0), ts(20, 0), ts(15, 0), NONE)
        });
        assert!(matches!(
            status.unwrap(),
            TxnStatus::Uncommitted {
                min_commit_ts_pushed: false,
                ..
            }
        ));
        assert!(txn.is_empty());
    }

    #[test]
    fn a_missing_transaction_is_rolled_back_only_if_asked() {
        let s = TestStore::new();
        let err = check(&s, b"k", 10, 20, 20, NONE).unwrap_err();
        assert_eq!(
            err,
            Error::TxnNotFound {
                start_ts: 10,
                key: b"k".to_vec()
            }
        );
        let opts = CheckTxnStatusOptions {
            rollback_if_not_exist: true,
            ..NONE
        };
        assert_eq!(
            check(&s, b"k", 10, 20, 20, opts).unwrap(),
            TxnStatus::LockNotExistRollback
        );
        // The prewrite arriving late cannot succeed.
        let err = s
            .prewrite(
                &PrewriteProps::optimistic(b"k", 10),
                vec![Mutation::put(k(b"k"), b"v".to_vec())],
                0,
            )
            .unwrap_err();
        assert!(matches!(err, Error::WriteConflict { .. }));
    }

    #[test]
    fn an_async_commit_primary_is_reported_not_decided() {
        let s = TestStore::new();
        let mut props = PrewriteProps::optimistic(b"k", ts(10, 0));
        props.lock_ttl = 100;
        props.secondaries = Some(vec![b"s".to_vec()]);
        s.prewrite(&props, vec![Mutation::put(k(b"k"), b"v".to_vec())], 0)
            .unwrap();
        let status = check(&s, b"k", ts(10, 0), ts(500, 0), ts(500, 0), NONE).unwrap();
        let TxnStatus::Uncommitted {
            lock,
            min_commit_ts_pushed: false,
        } = status
        else {
            panic!("{status:?}");
        };
        assert_eq!(lock.secondaries, vec![b"s".to_vec()]);
        assert!(s.lock(b"k").is_some(), "expired, but not rolled back");
        // Known to have fallen back to 2PC: decided like any other.
        let opts = CheckTxnStatusOptions {
            force_sync_commit: true,
            ..NONE
        };
        let status = check(&s, b"k", ts(10, 0), ts(500, 0), ts(500, 0), opts).unwrap();
        assert_eq!(status, TxnStatus::TtlExpireRollback);
    }

    #[test]
    fn an_expired_pessimistic_primary_is_only_unlocked_when_resolving_a_pessimistic_lock() {
        let s = TestStore::new();
        let mut props = PessimisticLockProps::new(b"k", ts(10, 0), ts(10, 0));
        props.lock_ttl = 100;
        let lock_k = |s: &TestStore| {
            s.run(|r, t| pessimistic_lock(r, t, &props, &[(k(b"k"), false)]))
                .unwrap();
        };
        lock_k(&s);
        let opts = CheckTxnStatusOptions {
            resolving_pessimistic_lock: true,
            rollback_if_not_exist: true,
            ..NONE
        };
        let status = check(&s, b"k", ts(10, 0), ts(500, 0), ts(500, 0), opts).unwrap();
        assert_eq!(status, TxnStatus::TtlExpirePessimisticRollback);
        assert_eq!(s.lock(b"k"), None);
        assert_eq!(s.commit_record(b"k", ts(10, 0)), TxnCommitRecord::None);
        let status = check(&s, b"k", ts(10, 0), ts(500, 0), ts(500, 0), opts).unwrap();
        assert_eq!(status, TxnStatus::LockNotExistDoNothing);
        // Otherwise the pessimistic primary is rolled back for good.
        lock_k(&s);
        let status = check(&s, b"k", ts(10, 0), ts(500, 0), ts(500, 0), NONE).unwrap();
        assert_eq!(status, TxnStatus::TtlExpireRollback);
        assert_eq!(
            s.commit_record(b"k", ts(10, 0)),
            TxnCommitRecord::RolledBack
        );
    }

    #[test]
    fn a_secondary_is_refused_when_verifying_the_primary() {
        let s = TestStore::new();
        s.must_prewrite_put(b"s", b"v", b"p", 10);
        let opts = CheckTxnStatusOptions {
            verify_is_primary: true,
            ..NONE
        };
        let err = check(&s, b"s", 10, 20, 20, opts).unwrap_err();
        assert!(
            matches!(err, Error::PrimaryMismatch(ref l) if l.primary == b"p"),
            "{err:?}"
        );
    }
}
