//! Acquire pessimistic lock (`KvPessimisticLock`): a pessimistic transaction locks keys while it
//! runs, so its prewrite cannot meet conflicts on them.
//!
//! Per key, in order (the first locked key ends the command, nothing written):
//! - another transaction's lock: `KeyIsLocked`;
//! - our prewrite lock: `LockTypeNotMatch` (the key is past locking);
//! - our pessimistic lock: success (a retry, or the same key locked again by a later
//!   statement); a larger `for_update_ts` rewrites the lock with it;
//! - otherwise the newest write record decides: committed after `for_update_ts` ⇒
//!   `WriteConflict` (the statement read stale data and must retry with a newer
//!   `for_update_ts`); a rollback of this transaction at `start_ts` ⇒ `PessimisticLockRolledBack`
//!   (a resolver decided the transaction's fate already); with `should_not_exist`, a visible
//!   value ⇒ `AlreadyExist`. Then the lock is written.
//!
//! The value (`return_values`) or existence (`check_existence`) of each key as of
//! `for_update_ts` is returned. With `lock_only_if_exists` (which needs `return_values`),
//! absent keys are not locked.
//!
//! Pessimistic locks do not block reads and carry no value; prewrite replaces them.

use crate::mvcc::{Error, Key, Lock, LockType, MvccReader, MvccTxn, Result, TimeStamp, WriteType};

use super::common::{all_or_nothing, check_not_exists, is_rollback_of_own_ts, lock_info, raw_key};

/// The transaction-wide part of a pessimistic lock request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PessimisticLockProps {
    pub start_ts: TimeStamp,
    /// The ts the statement read at: commits after it are conflicts.
    pub for_update_ts: TimeStamp,
    /// The primary key (raw).
    pub primary: Vec<u8>,
    pub lock_ttl: u64,
    /// Set by clients of large transactions so readers can push it (0: none).
    pub min_commit_ts: TimeStamp,
    pub return_values: bool,
    pub check_existence: bool,
    pub lock_only_if_exists: bool,
}

impl PessimisticLockProps {
    pub fn new(primary: &[u8], start_ts: TimeStamp, for_update_ts: TimeStamp) -> Self {
        PessimisticLockProps {
            start_ts,
            for_update_ts,
            primary: primary.to_vec(),
            lock_ttl: 0,
            min_commit_ts: 0,
            return_values: false,
            check_existence: false,
            lock_only_if_exists: false,
        }
    }
}

/// What a locked key reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PessimisticLockKeyResult {
    /// Neither value nor existence was asked for.
    Empty,
    /// `return_values`: the key's value as of `for_update_ts`.
    Value(Option<Vec<u8>>),
    /// `check_existence`: whether the key has a value as of `for_update_ts`.
    Existence(bool),
}

/// Locks `keys` (each with its `should_not_exist` flag) for transaction `props.start_ts`.
pub fn pessimistic_lock(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    props: &PessimisticLockProps,
    keys: &[(Key, bool)],
) -> Result<Vec<PessimisticLockKeyResult>> {
    if props.lock_only_if_exists && !props.return_values {
        return Err(Error::Invalid(
            "lock_only_if_exists without return_values".into(),
        ));
    }
    if props.for_update_ts < props.start_ts {
        return Err(Error::Invalid(format!(
            "for_update_ts {} before start_ts {}",
            props.for_update_ts, props.start_ts
        )));
    }
    all_or_nothing(txn, |txn| {
        keys.iter()
            .map(|(key, should_not_exist)| lock_key(reader, txn, props, key, *should_not_exist))
            .collect()
    })
}

/// What the caller asked to learn about the key, read as of `for_update_ts`: `Some(value)`
/// (empty if only existence is asked) or `None` if absent; `None` also when nothing is asked.
fn read_value(
    reader: &MvccReader<'_>,
    props: &PessimisticLockProps,
    key: &Key,
) -> Result<Option<Vec<u8>>> {
    if props.return_values {
        reader.get_committed(key, props.for_update_ts)
    } else if props.check_existence {
        Ok(matches!(
            reader.get_write(key, props.for_update_ts)?,
            Some((_, w)) if w.kind() == WriteType::Put
        )
        .then(Vec::new))
    } else {
        Ok(None)
    }
}

fn key_result(props: &PessimisticLockProps, value: Option<Vec<u8>>) -> PessimisticLockKeyResult {
    if props.return_values {
        PessimisticLockKeyResult::Value(value)
    } else if props.check_existence {
        PessimisticLockKeyResult::Existence(value.is_some())
    } else {
        PessimisticLockKeyResult::Empty
    }
}

fn lock_key(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    props: &PessimisticLockProps,
    key: &Key,
    should_not_exist: bool,
) -> Result<PessimisticLockKeyResult> {
    let start_ts = props.start_ts;
    let new_lock = || Lock {
        lock_type: LockType::Pessimistic as i32,
        primary: props.primary.clone(),
        start_ts,
        ttl: props.lock_ttl,
        short_value: None,
        for_update_ts: props.for_update_ts,
        txn_size: 0,
        min_commit_ts: props.min_commit_ts,
        use_async_commit: false,
        secondaries: Vec::new(),
    };
    if let Some(lock) = reader.load_lock(key)? {
        if lock.start_ts != start_ts {
            return Err(Error::KeyIsLocked(lock_info(key, &lock)?));
        }
        if lock.kind() != LockType::Pessimistic {
            return Err(Error::LockTypeNotMatch {
                start_ts,
                key: raw_key(key)?,
                pessimistic: false,
            });
        }
        let value = read_value(reader, props, key)?;
        if props.for_update_ts > lock.for_update_ts {
            txn.put_lock(key, &new_lock());
        }
        return Ok(key_result(props, value));
    }

    if let Some((commit_ts, write)) = reader.seek_write(key, TimeStamp::MAX)? {
        if commit_ts > props.for_update_ts {
            return Err(Error::WriteConflict {
                start_ts,
                conflict_start_ts: write.start_ts,
                conflict_commit_ts: commit_ts,
                key: raw_key(key)?,
                primary: props.primary.clone(),
            });
        }
        // Our rollback is at start_ts: the newest record, or below newer commits.
        let rolled_back = if commit_ts == start_ts {
            is_rollback_of_own_ts(&write)
        } else if commit_ts > start_ts {
            matches!(
                reader.seek_write(key, start_ts)?,
                Some((ts, w)) if ts == start_ts && is_rollback_of_own_ts(&w)
            )
        } else {
            false
        };
        if rolled_back {
            return Err(Error::PessimisticLockRolledBack {
                start_ts,
                key: raw_key(key)?,
            });
        }
        if should_not_exist {
            check_not_exists(reader, key, commit_ts, &write)?;
        }
    }
    let value = read_value(reader, props, key)?;
    if !props.lock_only_if_exists || value.is_some() {
        txn.put_lock(key, &new_lock());
    }
    Ok(key_result(props, value))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{k, TestStore};
    use super::super::{prewrite, Mutation, PessimisticAction, PrewriteProps};
    use super::*;

    fn lock(
        s: &TestStore,
        props: &PessimisticLockProps,
        keys: &[(&[u8], bool)],
    ) -> Result<Vec<PessimisticLockKeyResult>> {
        let keys: Vec<(Key, bool)> = keys.iter().map(|(key, sne)| (k(key), *sne)).collect();
        s.run(|r, t| pessimistic_lock(r, t, props, &keys))
    }

    #[test]
    fn a_commit_after_for_update_ts_is_a_write_conflict() {
        let s = TestStore::new();
        s.must_put(b"k", b"v", 20, 30);
        let err = lock(
            &s,
            &PessimisticLockProps::new(b"k", 10, 25),
            &[(b"k", false)],
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::WriteConflict {
                    conflict_commit_ts: 30,
                    ..
                }
            ),
            "{err:?}"
        );
        // Retried with a newer for_update_ts, the statement gets the lock.
        lock(
            &s,
            &PessimisticLockProps::new(b"k", 10, 35),
            &[(b"k", false)],
        )
        .unwrap();
        assert_eq!(s.lock(b"k").unwrap().kind(), LockType::Pessimistic);
    }

    #[test]
    fn another_transactions_lock_stops_the_command_and_nothing_is_locked() {
        let s = TestStore::new();
        s.must_prewrite_put(b"b", b"v", b"b", 5);
        let err = lock(
            &s,
            &PessimisticLockProps::new(b"a", 10, 10),
            &[(b"a", false), (b"b", false)],
        )
        .unwrap_err();
        assert!(matches!(err, Error::KeyIsLocked(ref l) if l.start_ts == 5));
        assert_eq!(s.lock(b"a"), None);
    }

    #[test]
    fn locking_again_is_idempotent_and_moves_for_update_ts_forward() {
        let s = TestStore::new();
        lock(
            &s,
            &PessimisticLockProps::new(b"k", 10, 20),
            &[(b"k", false)],
        )
        .unwrap();
        let (r, txn) = s.dry_run(|r, t| {
            pessimistic_lock(
                r,
                t,
                &PessimisticLockProps::new(b"k", 10, 15),
                &[(k(b"k"), false)],
            )
        });
        r.unwrap();
        assert!(txn.is_empty(), "an older for_update_ts changes nothing");
        lock(
            &s,
            &PessimisticLockProps::new(b"k", 10, 30),
            &[(b"k", false)],
        )
        .unwrap();
        assert_eq!(s.lock(b"k").unwrap().for_update_ts, 30);
    }

    #[test]
    fn values_and_existence_are_read_at_for_update_ts() {
        let s = TestStore::new();
        s.must_put(b"a", b"1", 1, 2);
        let mut props = PessimisticLockProps::new(b"a", 10, 10);
        props.return_values = true;
        let r = lock(&s, &props, &[(b"a", false), (b"b", false)]).unwrap();
        assert_eq!(
            r,
            vec![
                PessimisticLockKeyResult::Value(Some(b"1".to_vec())),
                PessimisticLockKeyResult::Value(None)
            ]
        );
        let mut props = PessimisticLockProps::new(b"a", 10, 11);
        props.check_existence = true;
        // Our own lock is there now: still answered.
        let r = lock(&s, &props, &[(b"a", false), (b"b", false)]).unwrap();
        assert_eq!(
            r,
            vec![
                PessimisticLockKeyResult::Existence(true),
                PessimisticLockKeyResult::Existence(false)
            ]
        );
    }

    #[test]
    fn lock_only_if_exists_skips_absent_keys() {
        let s = TestStore::new();
        s.must_put(b"a", b"1", 1, 2);
        let mut props = PessimisticLockProps::new(b"a", 10, 10);
        props.return_values = true;
        props.lock_only_if_exists = true;
        lock(&s, &props, &[(b"a", false), (b"b", false)]).unwrap();
        assert!(s.lock(b"a").is_some());
        assert_eq!(s.lock(b"b"), None);
    }

    #[test]
    fn should_not_exist_fails_on_a_visible_value() {
        let s = TestStore::new();
        s.must_put(b"k", b"v", 1, 2);
        let err = lock(
            &s,
            &PessimisticLockProps::new(b"k", 10, 10),
            &[(b"k", true)],
        )
        .unwrap_err();
        assert_eq!(err, Error::AlreadyExist { key: b"k".to_vec() });
        lock(
            &s,
            &PessimisticLockProps::new(b"n", 10, 10),
            &[(b"n", true)],
        )
        .unwrap();
    }

    #[test]
    fn a_rolled_back_transaction_cannot_lock() {
        let s = TestStore::new();
        s.rollback(&[b"k"], 10).unwrap();
        let err = lock(
            &s,
            &PessimisticLockProps::new(b"k", 10, 10),
            &[(b"k", false)],
        )
        .unwrap_err();
        assert_eq!(
            err,
            Error::PessimisticLockRolledBack {
                start_ts: 10,
                key: b"k".to_vec()
            }
        );
        // Also below a newer commit that for_update_ts covers.
        s.must_put(b"k", b"v", 15, 20);
        let err = lock(
            &s,
            &PessimisticLockProps::new(b"k", 10, 25),
            &[(b"k", false)],
        )
        .unwrap_err();
        assert!(matches!(err, Error::PessimisticLockRolledBack { .. }));
    }

    #[test]
    fn pessimistic_locks_do_not_block_reads() {
        let s = TestStore::new();
        s.must_put(b"k", b"v", 1, 2);
        lock(
            &s,
            &PessimisticLockProps::new(b"k", 10, 10),
            &[(b"k", false)],
        )
        .unwrap();
        assert_eq!(s.get(b"k", 20).unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn lock_then_prewrite_then_commit() {
        let s = TestStore::new();
        s.must_put(b"row", b"old", 1, 2);
        let mut props = PessimisticLockProps::new(b"row", 10, 12);
        props.lock_ttl = 50;
        lock(&s, &props, &[(b"row", false)]).unwrap();

        // Another transaction commits a key the pessimistic one did not lock: no conflict for
        // a SkipPessimisticCheck mutation, whose isolation the row lock provides.
        s.must_put(b"index", b"x", 11, 13);
        let mut pprops = PrewriteProps::pessimistic(b"row", 10, 12);
        pprops.lock_ttl = 30;
        let mutations = vec![
            Mutation::put(k(b"row"), b"new".to_vec())
                .with_pessimistic_action(PessimisticAction::DoPessimisticCheck),
            Mutation::put(k(b"index"), b"y".to_vec()),
        ];
        s.run(|r, t| prewrite(r, t, &pprops, mutations, 0)).unwrap();
        let row = s.lock(b"row").unwrap();
        assert_eq!(
            row.kind(),
            LockType::Put,
            "the pessimistic lock became a prewrite lock"
        );
        assert_eq!(
            (row.ttl, row.for_update_ts),
            (50, 12),
            "the larger TTL is kept"
        );

        s.commit(&[b"row", b"index"], 10, 20).unwrap();
        assert_eq!(s.get(b"row", 19).unwrap(), Some(b"old".to_vec()));
        assert_eq!(s.get(b"row", 20).unwrap(), Some(b"new".to_vec()));
    }

    #[test]
    fn a_pessimistic_transaction_can_commit_by_one_pc() {
        let s = TestStore::new();
        lock(
            &s,
            &PessimisticLockProps::new(b"k", 10, 10),
            &[(b"k", false)],
        )
        .unwrap();
        let mut props = PrewriteProps::pessimistic(b"k", 10, 10);
        props.try_one_pc = true;
        let m = Mutation::put(k(b"k"), b"v".to_vec())
            .with_pessimistic_action(PessimisticAction::DoPessimisticCheck);
        let result = s.run(|r, t| prewrite(r, t, &props, vec![m], 5)).unwrap();
        assert_eq!(result.one_pc_commit_ts, 11, "for_update_ts + 1");
        assert_eq!(s.lock(b"k"), None, "the pessimistic lock is gone");
        assert_eq!(s.get(b"k", 11).unwrap(), Some(b"v".to_vec()));
    }
}
