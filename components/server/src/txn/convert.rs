//! Wire conversions of the transactional API: kvproto messages to `storage` domain types and
//! back, including the one mapping of `storage::mvcc::Error` to kvproto's `KeyError`.

use bytes::Bytes;
use proto::kvrpcpb::{self, prewrite_request, Op};
use storage::mvcc::{Error, Key, LockInfo, LockType};
use storage::txn::{Assertion, Mutation, MutationOp, PessimisticAction};

/// kvproto's `LockInfo` for a lock.
pub fn lock_info(l: &LockInfo) -> kvrpcpb::LockInfo {
    kvrpcpb::LockInfo {
        primary_lock: Bytes::from(l.primary.clone()),
        lock_version: l.start_ts,
        key: Bytes::from(l.key.clone()),
        lock_ttl: l.ttl,
        txn_size: l.txn_size,
        lock_type: match l.lock_type {
            LockType::Put => Op::Put,
            LockType::Delete => Op::Del,
            LockType::Lock => Op::Lock,
            LockType::Pessimistic => Op::PessimisticLock,
        } as i32,
        lock_for_update_ts: l.for_update_ts,
        use_async_commit: l.use_async_commit,
        min_commit_ts: l.min_commit_ts,
        secondaries: l.secondaries.iter().cloned().map(Bytes::from).collect(),
        ..Default::default()
    }
}

/// The `KeyError` kvproto clients expect for a command's verdict.
pub fn key_error(e: &Error) -> kvrpcpb::KeyError {
    let mut out = kvrpcpb::KeyError::default();
    match e {
        Error::KeyIsLocked(l) => out.locked = Some(lock_info(l)),
        Error::WriteConflict {
            start_ts,
            conflict_start_ts,
            conflict_commit_ts,
            key,
            primary,
        } => {
            out.conflict = Some(kvrpcpb::WriteConflict {
                start_ts: *start_ts,
                conflict_ts: *conflict_start_ts,
                conflict_commit_ts: *conflict_commit_ts,
                key: Bytes::from(key.clone()),
                primary: Bytes::from(primary.clone()),
                reason: kvrpcpb::write_conflict::Reason::Optimistic as i32,
            })
        }
        Error::AlreadyExist { key } => {
            out.already_exist = Some(kvrpcpb::AlreadyExist {
                key: Bytes::from(key.clone()),
            })
        }
        Error::TxnNotFound { start_ts, key } => {
            out.txn_not_found = Some(kvrpcpb::TxnNotFound {
                start_ts: *start_ts,
                primary_key: Bytes::from(key.clone()),
            })
        }
        Error::CommitTsExpired {
            start_ts,
            commit_ts,
            key,
            min_commit_ts,
        } => {
            out.commit_ts_expired = Some(kvrpcpb::CommitTsExpired {
                start_ts: *start_ts,
                attempted_commit_ts: *commit_ts,
                key: Bytes::from(key.clone()),
                min_commit_ts: *min_commit_ts,
            })
        }
        Error::TxnLockNotFound { key, .. } => {
            out.txn_lock_not_found = Some(kvrpcpb::TxnLockNotFound {
                key: Bytes::from(key.clone()),
            });
            // Older clients only know `abort`/`retryable`.
            out.retryable = e.to_string();
        }
        Error::PrimaryMismatch(l) => {
            out.primary_mismatch = Some(kvrpcpb::PrimaryMismatch {
                lock_info: Some(lock_info(l)),
            })
        }
        Error::AssertionFailed { key, .. } => {
            out.assertion_failed = Some(kvrpcpb::AssertionFailed {
                key: Bytes::from(key.clone()),
                ..Default::default()
            })
        }
        Error::PessimisticLockNotFound { .. } | Error::PessimisticLockRolledBack { .. } => {
            out.retryable = e.to_string()
        }
        _ => out.abort = e.to_string(),
    }
    out
}

/// A prewrite's mutations in domain terms.
pub fn mutations(req: &kvrpcpb::PrewriteRequest) -> Result<Vec<Mutation>, String> {
    let mut out = Vec::with_capacity(req.mutations.len());
    for (i, m) in req.mutations.iter().enumerate() {
        let key = Key::from_raw(&m.key);
        let op = match Op::try_from(m.op) {
            Ok(Op::Put) => MutationOp::Put(m.value.to_vec()),
            Ok(Op::Del) => MutationOp::Delete,
            Ok(Op::Lock) => MutationOp::Lock,
            Ok(Op::Insert) => MutationOp::Insert(m.value.to_vec()),
            Ok(Op::CheckNotExists) => MutationOp::CheckNotExists,
            _ => return Err(format!("mutation op {} cannot be prewritten", m.op)),
        };
        let assertion = match kvrpcpb::Assertion::try_from(m.assertion) {
            Ok(kvrpcpb::Assertion::Exist) => Assertion::Exist,
            Ok(kvrpcpb::Assertion::NotExist) => Assertion::NotExist,
            _ => Assertion::None,
        };
        let action = match req
            .pessimistic_actions
            .get(i)
            .and_then(|a| prewrite_request::PessimisticAction::try_from(*a).ok())
        {
            Some(prewrite_request::PessimisticAction::DoPessimisticCheck) => {
                PessimisticAction::DoPessimisticCheck
            }
            Some(prewrite_request::PessimisticAction::DoConstraintCheck) => {
                PessimisticAction::DoConstraintCheck
            }
            _ => PessimisticAction::SkipPessimisticCheck,
        };
        out.push(
            Mutation::new(key, op)
                .with_assertion(assertion)
                .with_pessimistic_action(action),
        );
    }
    Ok(out)
}

/// Raw user keys → encoded keys.
pub fn encode_keys(keys: &[Bytes]) -> Vec<Key> {
    keys.iter().map(|k| Key::from_raw(k)).collect()
}
