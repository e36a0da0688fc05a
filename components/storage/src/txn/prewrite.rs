//! Prewrite (`KvPrewrite`): the first phase of a commit, locking every key of a request.
//!
//! Per mutation, in order:
//! 1. **Lock check.** Another transaction's lock: `KeyIsLocked` (collected; the other mutations
//!    are still checked), or `PessimisticLockNotFound` for a key this pessimistic transaction
//!    must have locked. Our own prewrite lock: a retry, nothing to do. Our own pessimistic lock:
//!    to be replaced (its TTL and `min_commit_ts` carry over). No lock where our pessimistic lock
//!    must be: `PessimisticLockNotFound`.
//! 2. **Constraint check** (optimistic transactions unless `skip_constraint_check`; pessimistic
//!    ones only for `DoConstraintCheck`): the newest write record must not be after `start_ts`
//!    (`WriteConflict`) nor be a rollback of this transaction at `start_ts` (`WriteConflict`:
//!    the transaction was rolled back here and must not come back). Insert and CheckNotExists
//!    fail with `AlreadyExist` when a value is visible.
//! 3. **Assertions** (`Exist` / `NotExist`) when the newest records were read anyway, or always
//!    at `AssertionLevel::Strict`. Failures are reported after every other error.
//! 4. **Lock**: value inline up to [`SHORT_VALUE_MAX_LEN`], else in `default` at `key + start_ts`.
//!    CheckNotExists writes nothing.
//!
//! **Async commit** (`secondaries` given): every lock is marked, the primary's lists the
//! secondaries, and each lock's `min_commit_ts` is `max(max_ts, start_ts, for_update_ts) + 1`
//! or the lock's own `min_commit_ts` if larger; the result's `min_commit_ts` is the largest.
//! **1PC** (`try_one_pc`): the same commit ts, but the keys are committed at once (write records,
//! no locks). Either falls back to plain 2PC from the first key whose `min_commit_ts` exceeds
//! `max_commit_ts` on: that key and later ones get plain locks, 1PC keys already planned get
//! locks, and the result reports 0 for both timestamps. Locks already marked for async commit stay
//! so (their `min_commit_ts` holds), as in TiKV.
//!
//! A retry that comes after the transaction committed (a write conflict, a missing pessimistic
//! lock or a lock, where the key has this transaction's commit record) succeeds and writes
//! nothing, reporting the commit ts as the `min_commit_ts` / `one_pc_commit_ts` asked for.

use crate::mvcc::{
    Error, Key, Lock, LockInfo, LockType, MvccReader, MvccTxn, Result, TimeStamp, TxnCommitRecord,
    Write, WriteType, SHORT_VALUE_MAX_LEN,
};

use super::common::{
    all_or_nothing, check_not_exists, is_rollback_of_own_ts, lock_info, put_commit_record, raw_key,
};

/// What a mutation does to its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MutationOp {
    Put(Vec<u8>),
    Delete,
    /// Locks the key without changing it; commits as a Lock record.
    Lock,
    /// A Put that requires the key not to exist.
    Insert(Vec<u8>),
    /// Checks that the key does not exist; writes nothing.
    CheckNotExists,
}

/// What the client asserts about a key's existence before the mutation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Assertion {
    #[default]
    None,
    Exist,
    NotExist,
}

/// How hard prewrite works to verify assertions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AssertionLevel {
    /// Assertions are ignored.
    #[default]
    Off,
    /// Checked when the key's write records are read anyway (constraint check).
    Fast,
    /// Always checked, reading the key's records if needed.
    Strict,
}

/// What a pessimistic transaction's prewrite checks for one mutation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PessimisticAction {
    /// The key was not locked pessimistically (e.g. a secondary index entry): no checks.
    #[default]
    SkipPessimisticCheck,
    /// Our pessimistic lock must be on the key.
    DoPessimisticCheck,
    /// Not locked pessimistically, but checked as an optimistic prewrite would (conflicts after
    /// start_ts, existence for Insert): TiDB's lazy uniqueness check.
    DoConstraintCheck,
}

/// One key of a prewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    pub key: Key,
    pub op: MutationOp,
    pub assertion: Assertion,
    /// Ignored by optimistic transactions.
    pub pessimistic_action: PessimisticAction,
}

impl Mutation {
    pub fn new(key: Key, op: MutationOp) -> Mutation {
        Mutation {
            key,
            op,
            assertion: Assertion::None,
            pessimistic_action: PessimisticAction::SkipPessimisticCheck,
        }
    }

    pub fn put(key: Key, value: Vec<u8>) -> Mutation {
        Mutation::new(key, MutationOp::Put(value))
    }

    pub fn delete(key: Key) -> Mutation {
        Mutation::new(key, MutationOp::Delete)
    }

    pub fn lock(key: Key) -> Mutation {
        Mutation::new(key, MutationOp::Lock)
    }

    pub fn insert(key: Key, value: Vec<u8>) -> Mutation {
        Mutation::new(key, MutationOp::Insert(value))
    }

    pub fn check_not_exists(key: Key) -> Mutation {
        Mutation::new(key, MutationOp::CheckNotExists)
    }

    pub fn with_assertion(mut self, assertion: Assertion) -> Mutation {
        self.assertion = assertion;
        self
    }

    pub fn with_pessimistic_action(mut self, action: PessimisticAction) -> Mutation {
        self.pessimistic_action = action;
        self
    }
}

/// Optimistic or pessimistic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnKind {
    /// `skip_constraint_check`: the client knows no key has older data (bulk load), so no
    /// conflict or existence checks are made.
    Optimistic {
        skip_constraint_check: bool,
    },
    Pessimistic {
        for_update_ts: TimeStamp,
    },
}

/// The transaction-wide part of a prewrite request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrewriteProps {
    pub start_ts: TimeStamp,
    /// The primary key (raw).
    pub primary: Vec<u8>,
    pub kind: TxnKind,
    /// Milliseconds after start_ts's physical time before the locks may be rolled back.
    pub lock_ttl: u64,
    /// Keys in the whole transaction (a hint for resolvers).
    pub txn_size: u64,
    /// A lower bound of the commit ts the client asks for (0: none).
    pub min_commit_ts: TimeStamp,
    /// Async commit and 1PC fall back to 2PC rather than exceed this (0: no bound).
    pub max_commit_ts: TimeStamp,
    /// Async commit: every secondary key (raw) of the transaction, recorded in the primary's
    /// lock. `Some(vec![])` for a transaction with no secondaries.
    pub secondaries: Option<Vec<Vec<u8>>>,
    pub try_one_pc: bool,
    pub assertion_level: AssertionLevel,
    /// The client resends this request (its answer may have been lost).
    pub is_retry_request: bool,
}

impl PrewriteProps {
    /// An optimistic 2PC transaction with no TTL, bounds or assertions.
    pub fn optimistic(primary: &[u8], start_ts: TimeStamp) -> PrewriteProps {
        PrewriteProps {
            start_ts,
            primary: primary.to_vec(),
            kind: TxnKind::Optimistic {
                skip_constraint_check: false,
            },
            lock_ttl: 0,
            txn_size: 0,
            min_commit_ts: 0,
            max_commit_ts: 0,
            secondaries: None,
            try_one_pc: false,
            assertion_level: AssertionLevel::Off,
            is_retry_request: false,
        }
    }

    /// A pessimistic 2PC transaction with no TTL, bounds or assertions.
    pub fn pessimistic(
        primary: &[u8],
        start_ts: TimeStamp,
        for_update_ts: TimeStamp,
    ) -> PrewriteProps {
        PrewriteProps {
            kind: TxnKind::Pessimistic { for_update_ts },
            ..PrewriteProps::optimistic(primary, start_ts)
        }
    }

    fn for_update_ts(&self) -> TimeStamp {
        match self.kind {
            TxnKind::Optimistic { .. } => 0,
            TxnKind::Pessimistic { for_update_ts } => for_update_ts,
        }
    }

    fn is_pessimistic(&self) -> bool {
        matches!(self.kind, TxnKind::Pessimistic { .. })
    }
}

/// What a prewrite achieved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrewriteResult {
    /// Keys locked by other transactions. When not empty, nothing was recorded: the client
    /// resolves these locks and retries.
    pub locks: Vec<LockInfo>,
    /// Async commit: the transaction's commit ts (largest `min_commit_ts` of these keys); 0 if
    /// not async commit or fallen back to 2PC.
    pub min_commit_ts: TimeStamp,
    /// 1PC: the commit ts the keys were committed at; 0 if not 1PC or fallen back to 2PC.
    pub one_pc_commit_ts: TimeStamp,
}

/// Prewrites `mutations` of the transaction described by `props`. `max_ts` is the largest
/// timestamp this store has served a read at (for async commit and 1PC).
///
/// Errors other than locked keys abort the whole request (the first one in mutation order,
/// assertion failures last).
pub fn prewrite(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    props: &PrewriteProps,
    mutations: Vec<Mutation>,
    max_ts: TimeStamp,
) -> Result<PrewriteResult> {
    all_or_nothing(txn, |txn| {
        let mark = txn.modifies.len();
        let result = prewrite_all(reader, txn, props, mutations, max_ts)?;
        if !result.locks.is_empty() {
            txn.modifies.truncate(mark);
        }
        Ok(result)
    })
}

/// How far async commit and 1PC got.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CommitKind {
    TwoPc,
    Async,
    OnePc,
}

/// A lock planned for a 1PC key: committed at the end, or written as a lock on fallback.
struct OnePcLock {
    key: Key,
    lock: Lock,
    /// Our pessimistic lock is on the key and must go.
    replaces_pessimistic_lock: bool,
}

/// The outcome of one mutation.
enum Prewritten {
    /// Recorded (or nothing to record); the key's `min_commit_ts` for async commit / 1PC, else 0.
    Done(TimeStamp),
    /// Recorded as a plain 2PC lock because async commit / 1PC would exceed `max_commit_ts`.
    FellBack,
    /// Our lock was already there: a retry.
    AlreadyLocked(TimeStamp),
    /// The transaction already committed this key (at this ts): a stale retry.
    AlreadyCommitted(TimeStamp),
}

fn prewrite_all(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    props: &PrewriteProps,
    mutations: Vec<Mutation>,
    max_ts: TimeStamp,
) -> Result<PrewriteResult> {
    if props.start_ts == 0 {
        return Err(Error::Invalid("prewrite with start_ts 0".into()));
    }
    let mark = txn.modifies.len();
    let mut kind = if props.try_one_pc {
        CommitKind::OnePc
    } else if props.secondaries.is_some() {
        CommitKind::Async
    } else {
        CommitKind::TwoPc
    };
    // Whether locks are still marked for async commit (until a fallback).
    let mut async_marks = props.secondaries.is_some();
    // Only the primary carries the list, and only a non-empty one.
    let async_primary = props
        .secondaries
        .as_ref()
        .filter(|s| !s.is_empty())
        .map(|_| Key::from_raw(&props.primary));
    let mut one_pc_locks: Vec<OnePcLock> = Vec::new();
    let mut locks = Vec::new();
    let mut assertion_failure = None;
    let mut final_min_commit_ts: TimeStamp = 0;

    for m in mutations {
        let secondaries = async_marks.then(|| {
            if async_primary.as_ref() == Some(&m.key) {
                props.secondaries.clone().unwrap_or_default()
            } else {
                Vec::new()
            }
        });
        let key = m.key.clone();
        let one_pc = kind == CommitKind::OnePc;
        let outcome = match prewrite_key(
            reader,
            txn,
            props,
            m,
            secondaries,
            max_ts,
            one_pc,
            &mut one_pc_locks,
        ) {
            // A failure on a key this transaction already committed: a stale retry.
            Err(
                e @ (Error::KeyIsLocked(_)
                | Error::WriteConflict { .. }
                | Error::PessimisticLockNotFound { .. }),
            ) => match reader.get_txn_commit_record(&key, props.start_ts)? {
                TxnCommitRecord::Committed { commit_ts, .. } => {
                    Ok(Prewritten::AlreadyCommitted(commit_ts))
                }
                _ => Err(e),
            },
            outcome => outcome,
        };
        match outcome {
            Ok(Prewritten::Done(ts)) => final_min_commit_ts = final_min_commit_ts.max(ts),
            Ok(Prewritten::AlreadyLocked(ts)) => {
                if one_pc {
                    // Prewritten earlier as 2PC: this request cannot commit on its own.
                    fall_back(txn, &mut one_pc_locks);
                    kind = CommitKind::TwoPc;
                    async_marks = false;
                }
                final_min_commit_ts = final_min_commit_ts.max(ts);
            }
            Ok(Prewritten::FellBack) => {
                fall_back(txn, &mut one_pc_locks);
                kind = CommitKind::TwoPc;
                async_marks = false;
            }
            Ok(Prewritten::AlreadyCommitted(commit_ts)) => {
                txn.modifies.truncate(mark);
                return Ok(PrewriteResult {
                    locks: Vec::new(),
                    min_commit_ts: if async_marks { commit_ts } else { 0 },
                    one_pc_commit_ts: if kind == CommitKind::OnePc {
                        commit_ts
                    } else {
                        0
                    },
                });
            }
            Err(Error::KeyIsLocked(info)) => locks.push(*info),
            Err(e @ Error::AssertionFailed { .. }) => {
                assertion_failure.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }

    if let Some(e) = assertion_failure {
        return Err(e);
    }
    if !locks.is_empty() {
        txn.modifies.truncate(mark);
        return Ok(PrewriteResult {
            locks,
            ..PrewriteResult::default()
        });
    }
    let one_pc_commit_ts = if kind == CommitKind::OnePc && !one_pc_locks.is_empty() {
        for planned in one_pc_locks {
            put_commit_record(
                reader,
                txn,
                &planned.key,
                &planned.lock,
                final_min_commit_ts,
            )?;
            if planned.replaces_pessimistic_lock {
                txn.unlock_key(&planned.key);
            }
        }
        final_min_commit_ts
    } else {
        // 1PC of mutations that write nothing (CheckNotExists only) commits nothing.
        0
    };
    Ok(PrewriteResult {
        locks: Vec::new(),
        min_commit_ts: if async_marks { final_min_commit_ts } else { 0 },
        one_pc_commit_ts,
    })
}

/// Gives up 1PC: the keys planned for it get their locks.
fn fall_back(txn: &mut MvccTxn, one_pc_locks: &mut Vec<OnePcLock>) {
    for planned in one_pc_locks.drain(..) {
        txn.put_lock(&planned.key, &planned.lock);
    }
}

#[allow(clippy::too_many_arguments)]
fn prewrite_key(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    props: &PrewriteProps,
    m: Mutation,
    secondaries: Option<Vec<Vec<u8>>>,
    max_ts: TimeStamp,
    one_pc: bool,
    one_pc_locks: &mut Vec<OnePcLock>,
) -> Result<Prewritten> {
    let start_ts = props.start_ts;
    let key = m.key;
    let (lock_type, value, should_not_exist) = match m.op {
        MutationOp::Put(v) => (Some(LockType::Put), Some(v), false),
        MutationOp::Delete => (Some(LockType::Delete), None, false),
        MutationOp::Lock => (Some(LockType::Lock), None, false),
        MutationOp::Insert(v) => (Some(LockType::Put), Some(v), true),
        MutationOp::CheckNotExists => (None, None, true),
    };
    if props.is_pessimistic() && lock_type.is_none() {
        return Err(Error::Invalid(
            "CheckNotExists in a pessimistic prewrite".into(),
        ));
    }
    let needs_pessimistic_lock =
        props.is_pessimistic() && m.pessimistic_action == PessimisticAction::DoPessimisticCheck;
    let pessimistic_lock_not_found = || -> Result<Error> {
        Ok(Error::PessimisticLockNotFound {
            start_ts,
            key: raw_key(&key)?,
        })
    };

    // 1. Lock check.
    let mut lock_ttl = props.lock_ttl;
    let mut min_commit_ts = props.min_commit_ts;
    let mut replaces_pessimistic_lock = false;
    match reader.load_lock(&key)? {
        Some(lock) if lock.start_ts != start_ts => {
            if needs_pessimistic_lock {
                return Err(pessimistic_lock_not_found()?);
            }
            let mut info = lock_info(&key, &lock)?;
            if props.is_pessimistic() {
                // The key's row is locked by this transaction, so the other lock cannot
                // belong to a live writer of that row: let the client resolve it at once.
                info.ttl = 0;
            }
            return Err(Error::KeyIsLocked(info));
        }
        Some(lock) if lock.kind() == LockType::Pessimistic => {
            if !props.is_pessimistic() {
                return Err(Error::LockTypeNotMatch {
                    start_ts,
                    key: raw_key(&key)?,
                    pessimistic: true,
                });
            }
            // Check txn status or heart beats may have pushed these.
            lock_ttl = lock_ttl.max(lock.ttl);
            min_commit_ts = min_commit_ts.max(lock.min_commit_ts);
            replaces_pessimistic_lock = true;
        }
        Some(lock) => {
            let ts = if lock.use_async_commit {
                lock.min_commit_ts
            } else {
                0
            };
            return Ok(Prewritten::AlreadyLocked(ts));
        }
        None if needs_pessimistic_lock => return Err(pessimistic_lock_not_found()?),
        None => {}
    }

    // 2. Constraint check.
    let skip_constraint_check = match props.kind {
        TxnKind::Optimistic {
            skip_constraint_check,
        } => skip_constraint_check,
        TxnKind::Pessimistic { .. } => m.pessimistic_action != PessimisticAction::DoConstraintCheck,
    };
    let newest = if skip_constraint_check {
        None
    } else {
        let newest = reader.seek_write(&key, TimeStamp::MAX)?;
        if let Some((commit_ts, write)) = &newest {
            if *commit_ts > start_ts || (*commit_ts == start_ts && is_rollback_of_own_ts(write)) {
                return Err(Error::WriteConflict {
                    start_ts,
                    conflict_start_ts: write.start_ts,
                    conflict_commit_ts: *commit_ts,
                    key: raw_key(&key)?,
                    primary: props.primary.clone(),
                });
            }
            if should_not_exist {
                check_not_exists(reader, &key, *commit_ts, write)?;
            }
        }
        newest
    };

    // 3. Assertions.
    let loaded = !skip_constraint_check;
    if m.assertion != Assertion::None
        && (props.assertion_level == AssertionLevel::Strict
            || (props.assertion_level == AssertionLevel::Fast && loaded))
    {
        check_assertion(reader, &key, m.assertion, loaded, newest)?;
    }

    // A pessimistic transaction's retry for a key it did not lock pessimistically cannot tell
    // from the lock whether it already committed: look.
    let async_or_one_pc = secondaries.is_some() || one_pc;
    if props.is_pessimistic()
        && !needs_pessimistic_lock
        && props.is_retry_request
        && async_or_one_pc
    {
        if let TxnCommitRecord::Committed { commit_ts, .. } =
            reader.get_txn_commit_record(&key, start_ts)?
        {
            return Ok(Prewritten::AlreadyCommitted(commit_ts));
        }
    }

    let Some(lock_type) = lock_type else {
        // CheckNotExists: checked, nothing to write. It is not persisted, so max_ts does not
        // bound its commit ts.
        return Ok(Prewritten::Done(if async_or_one_pc {
            props.min_commit_ts.max(start_ts + 1)
        } else {
            0
        }));
    };

    // 4. The lock.
    let mut lock = Lock {
        lock_type: lock_type as i32,
        primary: props.primary.clone(),
        start_ts,
        ttl: lock_ttl,
        short_value: None,
        for_update_ts: props.for_update_ts(),
        txn_size: props.txn_size,
        min_commit_ts,
        use_async_commit: false,
        secondaries: Vec::new(),
    };
    if let Some(value) = value {
        if value.len() <= SHORT_VALUE_MAX_LEN {
            lock.short_value = Some(value);
        } else {
            txn.put_value(&key, start_ts, value);
        }
    }
    if let Some(secondaries) = secondaries {
        lock.use_async_commit = true;
        lock.secondaries = secondaries;
    }
    let mut outcome = Prewritten::Done(0);
    let mut one_pc = one_pc;
    if async_or_one_pc {
        let ts = max_ts
            .max(start_ts)
            .max(props.for_update_ts())
            .saturating_add(1)
            .max(lock.min_commit_ts);
        if props.max_commit_ts != 0 && ts > props.max_commit_ts {
            one_pc = false;
            lock.use_async_commit = false;
            lock.secondaries = Vec::new();
            outcome = Prewritten::FellBack;
        } else {
            lock.min_commit_ts = ts;
            outcome = Prewritten::Done(ts);
        }
    }
    if one_pc {
        one_pc_locks.push(OnePcLock {
            key,
            lock,
            replaces_pessimistic_lock,
        });
    } else {
        txn.put_lock(&key, &lock);
    }
    Ok(outcome)
}

/// Checks an existence assertion against the newest data record of `key`. `newest` is the
/// newest record of any kind if `loaded`.
fn check_assertion(
    reader: &MvccReader<'_>,
    key: &Key,
    assertion: Assertion,
    loaded: bool,
    newest: Option<(TimeStamp, Write)>,
) -> Result<()> {
    let data = match newest {
        Some((ts, w)) if w.is_data() => Some((ts, w)),
        // Below a Lock or Rollback record.
        Some((ts, _)) => reader.get_write(key, ts)?,
        None if loaded => None,
        None => reader.get_write(key, TimeStamp::MAX)?,
    };
    let exists = matches!(&data, Some((_, w)) if w.kind() == WriteType::Put);
    let failed = match assertion {
        Assertion::None => false,
        Assertion::Exist => !exists,
        Assertion::NotExist => exists,
    };
    if failed {
        let (existing_start_ts, existing_commit_ts) =
            data.map_or((0, 0), |(commit_ts, w)| (w.start_ts, commit_ts));
        return Err(Error::AssertionFailed {
            key: raw_key(key)?,
            reason: format!(
                "asserted {assertion:?}; newest record: start ts {existing_start_ts}, \
                 commit ts {existing_commit_ts}"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{k, TestStore};
    use super::*;
    use crate::mvcc::WriteType;

    fn put(key: &[u8], value: &[u8]) -> Mutation {
        Mutation::put(k(key), value.to_vec())
    }

    #[test]
    fn a_commit_after_start_ts_is_a_write_conflict() {
        let s = TestStore::new();
        s.must_put(b"k", b"v1", 10, 20);
        let err = s
            .prewrite(
                &PrewriteProps::optimistic(b"k", 15),
                vec![put(b"k", b"v2")],
                0,
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::WriteConflict {
                    start_ts: 15,
                    conflict_start_ts: 10,
                    conflict_commit_ts: 20,
                    ..
                }
            ),
            "{err:?}"
        );
        // A transaction that started after the commit is fine.
        s.must_prewrite_put(b"k", b"v2", b"k", 25);
    }

    #[test]
    fn a_commit_at_exactly_start_ts_is_no_conflict() {
        let s = TestStore::new();
        // Possible with async commit: another transaction's computed commit ts equals our start.
        s.must_put(b"k", b"v1", 10, 20);
        s.must_prewrite_put(b"k", b"v2", b"k", 20);
    }

    #[test]
    fn locked_keys_are_all_reported_and_nothing_is_written() {
        let s = TestStore::new();
        s.must_prewrite_put(b"a", b"x", b"a", 10);
        s.must_prewrite_put(b"c", b"x", b"a", 10);
        let result = s
            .prewrite(
                &PrewriteProps::optimistic(b"a", 20),
                vec![put(b"a", b"1"), put(b"b", b"2"), put(b"c", b"3")],
                0,
            )
            .unwrap();
        let locked: Vec<_> = result
            .locks
            .iter()
            .map(|l| (l.key.clone(), l.start_ts))
            .collect();
        assert_eq!(locked, vec![(b"a".to_vec(), 10), (b"c".to_vec(), 10)]);
        assert_eq!(s.lock(b"b"), None, "no lock written for the free key");
    }

    #[test]
    fn a_retried_prewrite_is_idempotent() {
        let s = TestStore::new();
        let props = PrewriteProps::optimistic(b"k", 10);
        s.prewrite(&props, vec![put(b"k", b"v")], 0).unwrap();
        let lock = s.lock(b"k").unwrap();
        let (result, txn) = s.dry_run(|r, t| prewrite(r, t, &props, vec![put(b"k", b"v")], 0));
        assert_eq!(result.unwrap(), PrewriteResult::default());
        assert!(txn.is_empty(), "a retry rewrites nothing");
        assert_eq!(s.lock(b"k"), Some(lock));
    }

    #[test]
    fn a_prewrite_after_its_rollback_fails() {
        let s = TestStore::new();
        s.rollback(&[b"k"], 10).unwrap();
        let err = s
            .prewrite(
                &PrewriteProps::optimistic(b"k", 10),
                vec![put(b"k", b"v")],
                0,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            Error::WriteConflict {
                start_ts: 10,
                conflict_commit_ts: 10,
                ..
            }
        ));
        assert_eq!(s.lock(b"k"), None);
    }

    #[test]
    fn a_prewrite_after_a_rollback_folded_into_a_commit_fails() {
        let s = TestStore::new();
        s.must_put(b"k", b"v1", 5, 10);
        // Transaction 10 is rolled back on k; its record slot holds transaction 5's commit.
        s.rollback(&[b"k"], 10).unwrap();
        assert!(s.write_at(b"k", 10).unwrap().has_overlapped_rollback);
        let err = s
            .prewrite(
                &PrewriteProps::optimistic(b"k", 10),
                vec![put(b"k", b"v")],
                0,
            )
            .unwrap_err();
        assert!(matches!(err, Error::WriteConflict { .. }), "{err:?}");
    }

    #[test]
    fn a_retry_after_commit_succeeds_without_writing() {
        let s = TestStore::new();
        s.must_prewrite_put(b"k", b"v", b"k", 10);
        s.commit(&[b"k"], 10, 20).unwrap();
        s.must_put(b"k", b"newer", 30, 40);
        let (result, txn) = s.dry_run(|r, t| {
            prewrite(
                r,
                t,
                &PrewriteProps::optimistic(b"k", 10),
                vec![put(b"k", b"v")],
                0,
            )
        });
        assert_eq!(result.unwrap(), PrewriteResult::default());
        assert!(txn.is_empty());
    }

    #[test]
    fn a_retried_pessimistic_async_commit_prewrite_of_a_committed_key_writes_nothing() {
        let s = TestStore::new();
        let mut props = PrewriteProps::pessimistic(b"p", 10, 10);
        props.secondaries = Some(Vec::new());
        // A key the transaction did not lock pessimistically: nothing in the lock CF tells a
        // retry that the transaction already committed it.
        let m = vec![put(b"k", b"v")];
        let result = s.prewrite(&props, m.clone(), 0).unwrap();
        s.commit(&[b"k"], 10, result.min_commit_ts).unwrap();
        props.is_retry_request = true;
        let (retry, txn) = s.dry_run(|r, t| prewrite(r, t, &props, m, 0));
        assert_eq!(retry.unwrap().min_commit_ts, result.min_commit_ts);
        assert!(txn.is_empty(), "no lock resurrected");
    }

    #[test]
    fn insert_fails_when_a_value_is_visible() {
        let s = TestStore::new();
        s.must_put(b"k", b"v", 10, 20);
        // A Lock record on top does not hide the value.
        s.prewrite(
            &PrewriteProps::optimistic(b"k", 30),
            vec![Mutation::lock(k(b"k"))],
            0,
        )
        .unwrap();
        s.commit(&[b"k"], 30, 40).unwrap();
        let err = s
            .prewrite(
                &PrewriteProps::optimistic(b"k", 50),
                vec![Mutation::insert(k(b"k"), b"w".to_vec())],
                0,
            )
            .unwrap_err();
        assert_eq!(err, Error::AlreadyExist { key: b"k".to_vec() });
        let err = s
            .prewrite(
                &PrewriteProps::optimistic(b"k", 50),
                vec![Mutation::check_not_exists(k(b"k"))],
                0,
            )
            .unwrap_err();
        assert_eq!(err, Error::AlreadyExist { key: b"k".to_vec() });

        // After a delete the key may be inserted again.
        s.must_prewrite_delete(b"k", b"k", 60);
        s.commit(&[b"k"], 60, 70).unwrap();
        s.prewrite(
            &PrewriteProps::optimistic(b"k", 80),
            vec![Mutation::insert(k(b"k"), b"w".to_vec())],
            0,
        )
        .unwrap();
    }

    #[test]
    fn check_not_exists_writes_nothing() {
        let s = TestStore::new();
        let (result, txn) = s.dry_run(|r, t| {
            prewrite(
                r,
                t,
                &PrewriteProps::optimistic(b"k", 10),
                vec![Mutation::check_not_exists(k(b"k"))],
                0,
            )
        });
        assert_eq!(result.unwrap(), PrewriteResult::default());
        assert!(txn.is_empty());
    }

    #[test]
    fn short_values_live_in_the_lock_long_ones_in_default() {
        let s = TestStore::new();
        let long = vec![b'x'; SHORT_VALUE_MAX_LEN + 1];
        s.must_prewrite_put(b"short", b"v", b"short", 10);
        s.must_prewrite_put(b"long", &long, b"short", 10);
        assert_eq!(s.lock(b"short").unwrap().short_value, Some(b"v".to_vec()));
        assert_eq!(s.default_value(b"short", 10), None);
        assert_eq!(s.lock(b"long").unwrap().short_value, None);
        assert_eq!(s.default_value(b"long", 10), Some(long.clone()));
        s.commit(&[b"short", b"long"], 10, 20).unwrap();
        assert_eq!(s.get(b"long", 20).unwrap(), Some(long));
        assert_eq!(s.get(b"short", 20).unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn skip_constraint_check_skips_the_conflict_check() {
        let s = TestStore::new();
        s.must_put(b"k", b"v1", 10, 20);
        let mut props = PrewriteProps::optimistic(b"k", 15);
        props.kind = TxnKind::Optimistic {
            skip_constraint_check: true,
        };
        s.prewrite(&props, vec![put(b"k", b"v2")], 0).unwrap();
        assert!(s.lock(b"k").is_some());
    }

    #[test]
    fn failed_assertions_fail_the_prewrite_after_other_errors() {
        let s = TestStore::new();
        s.must_put(b"exists", b"v", 10, 20);
        let mut props = PrewriteProps::optimistic(b"exists", 30);
        props.assertion_level = AssertionLevel::Fast;
        let assert_put = |key: &[u8], a| put(key, b"x").with_assertion(a);

        s.prewrite(
            &props,
            vec![
                assert_put(b"exists", Assertion::Exist),
                assert_put(b"absent", Assertion::NotExist),
            ],
            0,
        )
        .unwrap();
        s.rollback(&[b"exists", b"absent"], 30).unwrap();

        props.start_ts = 40;
        let err = s
            .prewrite(&props, vec![assert_put(b"exists", Assertion::NotExist)], 0)
            .unwrap_err();
        assert!(matches!(err, Error::AssertionFailed { .. }), "{err:?}");
        let err = s
            .prewrite(&props, vec![assert_put(b"absent", Assertion::Exist)], 0)
            .unwrap_err();
        assert!(matches!(err, Error::AssertionFailed { .. }), "{err:?}");

        // A write conflict on a later key wins over an earlier assertion failure.
        s.must_put(b"hot", b"v", 50, 60);
        let err = s
            .prewrite(
                &props,
                vec![assert_put(b"absent", Assertion::Exist), put(b"hot", b"x")],
                0,
            )
            .unwrap_err();
        assert!(matches!(err, Error::WriteConflict { .. }), "{err:?}");

        // Off: not checked.
        props.assertion_level = AssertionLevel::Off;
        s.prewrite(&props, vec![assert_put(b"absent", Assertion::Exist)], 0)
            .unwrap();
    }

    #[test]
    fn fast_assertions_are_skipped_without_a_constraint_check_strict_ones_are_not() {
        let s = TestStore::new();
        s.must_put(b"k", b"v", 10, 20);
        let mut props = PrewriteProps::pessimistic(b"k", 30, 30);
        props.assertion_level = AssertionLevel::Fast;
        let m = vec![put(b"k", b"x").with_assertion(Assertion::NotExist)];
        s.dry_run(|r, t| prewrite(r, t, &props, m.clone(), 0))
            .0
            .unwrap();
        props.assertion_level = AssertionLevel::Strict;
        let err = s
            .dry_run(|r, t| prewrite(r, t, &props, m, 0))
            .0
            .unwrap_err();
        assert!(matches!(err, Error::AssertionFailed { .. }), "{err:?}");
    }

    #[test]
    fn async_commit_min_commit_ts_exceeds_max_ts_start_ts_and_for_update_ts() {
        let s = TestStore::new();
        let mut props = PrewriteProps::optimistic(b"p", 10);
        props.secondaries = Some(vec![b"s".to_vec()]);
        let result = s
            .prewrite(&props, vec![put(b"p", b"1"), put(b"s", b"2")], 100)
            .unwrap();
        assert_eq!(result.min_commit_ts, 101, "max_ts + 1");
        let (p, sec) = (s.lock(b"p").unwrap(), s.lock(b"s").unwrap());
        assert!(p.use_async_commit && sec.use_async_commit);
        assert_eq!(
            p.secondaries,
            vec![b"s".to_vec()],
            "the primary lists the secondaries"
        );
        assert!(sec.secondaries.is_empty());
        assert_eq!((p.min_commit_ts, sec.min_commit_ts), (101, 101));

        // start_ts + 1 when reads are older.
        props.start_ts = 200;
        let r = s.prewrite(&props, vec![put(b"x", b"1")], 50).unwrap();
        assert_eq!(r.min_commit_ts, 201);
        // The client's own min_commit_ts when larger.
        props.start_ts = 300;
        props.min_commit_ts = 350;
        let r = s.prewrite(&props, vec![put(b"y", b"1")], 50).unwrap();
        assert_eq!(r.min_commit_ts, 350);
        // for_update_ts + 1 for pessimistic transactions.
        let mut props = PrewriteProps::pessimistic(b"z", 400, 450);
        props.secondaries = Some(Vec::new());
        let r = s.prewrite(&props, vec![put(b"z", b"1")], 50).unwrap();
        assert_eq!(r.min_commit_ts, 451);

        // The commit ts exceeds every read served so far: a read at max_ts does not see it,
        // one at the commit ts does.
        s.commit(&[b"p", b"s"], 10, result.min_commit_ts).unwrap();
        assert_eq!(s.get(b"p", 100).unwrap(), None);
        assert_eq!(s.get(b"p", 101).unwrap(), Some(b"1".to_vec()));
    }

    #[test]
    fn async_commit_falls_back_to_2pc_beyond_max_commit_ts() {
        let s = TestStore::new();
        let mut props = PrewriteProps::optimistic(b"a", 10);
        props.secondaries = Some(vec![b"b".to_vec()]);
        props.max_commit_ts = 50;
        let result = s
            .prewrite(&props, vec![put(b"a", b"1"), put(b"b", b"2")], 60)
            .unwrap();
        assert_eq!(result, PrewriteResult::default(), "no async commit ts");
        assert!(!s.lock(b"a").unwrap().use_async_commit);
        assert!(!s.lock(b"b").unwrap().use_async_commit);
    }

    #[test]
    fn one_pc_commits_without_locks() {
        let s = TestStore::new();
        s.must_put(b"b", b"old", 1, 2);
        s.must_put(b"c", b"gone", 1, 2);
        let mut props = PrewriteProps::optimistic(b"a", 10);
        props.try_one_pc = true;
        let result = s
            .prewrite(
                &props,
                vec![put(b"a", b"1"), put(b"b", b"2"), Mutation::delete(k(b"c"))],
                30,
            )
            .unwrap();
        assert_eq!(result.one_pc_commit_ts, 31);
        assert_eq!(result.min_commit_ts, 0, "not async commit");
        for key in [&b"a"[..], b"b", b"c"] {
            assert_eq!(s.lock(key), None);
        }
        assert_eq!(s.write_at(b"c", 31).unwrap().kind(), WriteType::Delete);
        assert_eq!(s.get(b"b", 30).unwrap(), Some(b"old".to_vec()));
        assert_eq!(s.get(b"b", 31).unwrap(), Some(b"2".to_vec()));
        assert_eq!(s.get(b"a", 31).unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get(b"c", 31).unwrap(), None);
        // A retry finds the commit and succeeds without writing.
        let (retry, txn) = s.dry_run(|r, t| prewrite(r, t, &props, vec![put(b"a", b"1")], 30));
        assert_eq!(retry.unwrap().one_pc_commit_ts, 31);
        assert!(txn.is_empty());
    }

    #[test]
    fn one_pc_falls_back_to_locks_beyond_max_commit_ts() {
        let s = TestStore::new();
        let mut props = PrewriteProps::optimistic(b"a", 10);
        props.try_one_pc = true;
        props.max_commit_ts = 50;
        let result = s
            .prewrite(&props, vec![put(b"a", b"1"), put(b"b", b"2")], 60)
            .unwrap();
        assert_eq!(result, PrewriteResult::default());
        assert!(s.lock(b"a").is_some() && s.lock(b"b").is_some());
        assert_eq!(s.write_at(b"a", 61), None);
    }

    #[test]
    fn one_pc_stops_at_a_key_prewritten_as_2pc() {
        let s = TestStore::new();
        s.must_prewrite_put(b"b", b"2", b"a", 10);
        let mut props = PrewriteProps::optimistic(b"a", 10);
        props.try_one_pc = true;
        let result = s
            .prewrite(&props, vec![put(b"a", b"1"), put(b"b", b"2")], 20)
            .unwrap();
        assert_eq!(result.one_pc_commit_ts, 0);
        assert!(s.lock(b"a").is_some() && s.lock(b"b").is_some());
    }

    #[test]
    fn pessimistic_prewrite_needs_its_pessimistic_lock() {
        let s = TestStore::new();
        let props = PrewriteProps::pessimistic(b"k", 10, 10);
        let m = put(b"k", b"v").with_pessimistic_action(PessimisticAction::DoPessimisticCheck);
        let err = s.prewrite(&props, vec![m.clone()], 0).unwrap_err();
        assert_eq!(
            err,
            Error::PessimisticLockNotFound {
                start_ts: 10,
                key: b"k".to_vec()
            }
        );
        // Another transaction's lock is no substitute.
        s.must_prewrite_put(b"k", b"x", b"k", 5);
        let err = s.prewrite(&props, vec![m], 0).unwrap_err();
        assert!(matches!(err, Error::PessimisticLockNotFound { .. }));
    }

    #[test]
    fn an_optimistic_prewrite_over_a_pessimistic_lock_is_refused() {
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
        let err = s
            .prewrite(
                &PrewriteProps::optimistic(b"k", 10),
                vec![put(b"k", b"v")],
                0,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            Error::LockTypeNotMatch {
                pessimistic: true,
                ..
            }
        ));
    }

    #[test]
    fn lazy_constraint_check_in_a_pessimistic_transaction() {
        let s = TestStore::new();
        s.must_put(b"k", b"v", 20, 30);
        let props = PrewriteProps::pessimistic(b"p", 25, 40);
        // Not checked: the transaction's row locks protect it.
        let skip = put(b"k", b"x");
        s.dry_run(|r, t| prewrite(r, t, &props, vec![skip], 0))
            .0
            .unwrap();
        // Checked like an optimistic prewrite.
        let check = Mutation::insert(k(b"k"), b"x".to_vec())
            .with_pessimistic_action(PessimisticAction::DoConstraintCheck);
        let err = s.prewrite(&props, vec![check.clone()], 0).unwrap_err();
        assert!(matches!(err, Error::WriteConflict { .. }), "{err:?}");
        let props = PrewriteProps::pessimistic(b"p", 35, 40);
        let err = s.prewrite(&props, vec![check], 0).unwrap_err();
        assert_eq!(err, Error::AlreadyExist { key: b"k".to_vec() });
    }
}
