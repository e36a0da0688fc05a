//! Resolving the locks a read or a write runs into.
//!
//! A lock is resolved by what became of its transaction, which only the transaction's primary
//! key can tell (`KvCheckTxnStatus` at the lock's primary, with the caller's start ts and a
//! fresh `current_ts` from PD):
//! - committed at `commit_ts`: the lock is committed too (`KvResolveLock` of its key at
//!   `commit_ts`);
//! - rolled back, or its primary lock's TTL ran out (the check rolls it back then): the lock
//!   is rolled back (`KvResolveLock` with commit ts 0);
//! - alive (its primary lock still within its TTL, or not written yet while the lock we met
//!   is within its own TTL): nothing is done; the caller backs off and tries again, until its
//!   deadline.
//!
//! A lock whose own TTL ran out is checked with `rollback_if_not_exist`, so that a primary
//! never prewritten is rolled back (its prewrite can no longer succeed) rather than waited
//! for. A *pessimistic* lock is not part of any commit unless prewritten: once its
//! transaction is not alive it is removed with `KvPessimisticRollback`.
//!
//! An **async-commit** transaction (written by clients that use async commit, e.g. TiKV's) is
//! committed as soon as all its prewrites succeeded, so its primary alone cannot tell. Its
//! primary lock lists the secondaries; once that lock's TTL ran out, every key is asked
//! (`KvCheckSecondaryLocks`, which also protects a key not yet prewritten with a rollback) and
//! [`async_commit_fate`] decides; a transaction that fell back to two-phase commit is then
//! checked again with `force_sync_commit`.
//!
//! Deliberately absent: no lock cache across calls.

use std::collections::HashMap;

use proto::kvrpcpb::{self, KeyError, LockInfo};
use tracing::debug;

use crate::backoff::Backoff;
use crate::cluster::Cluster;
use crate::codec;
use crate::error::{Error, Result};
use crate::txn_plan::{
    async_commit_fate, lock_expired, LockResolution, SecondaryState, Timestamp, TxnFate,
};

/// Resolves `locks` met by a transaction or snapshot reading at `caller_start_ts`. Returns
/// whether every lock was resolved (retry at once); `false`: some transaction is alive (back
/// off before retrying).
pub(crate) async fn resolve_locks(
    cluster: &Cluster,
    caller_start_ts: Timestamp,
    locks: Vec<LockInfo>,
    bo: &mut Backoff,
) -> Result<bool> {
    let mut all_resolved = true;
    let mut fates: HashMap<(Timestamp, bool), TxnFate> = HashMap::new();
    for lock in locks {
        let pessimistic = lock.lock_type == kvrpcpb::Op::PessimisticLock as i32;
        let fate = match fates.get(&(lock.lock_version, pessimistic)) {
            Some(fate) => *fate,
            None => {
                let fate =
                    check_txn_status(cluster, caller_start_ts, &lock, pessimistic, bo).await?;
                fates.insert((lock.lock_version, pessimistic), fate);
                fate
            }
        };
        let resolution = LockResolution::of(&lock, fate);
        debug!(
            lock_ts = lock.lock_version,
            ?fate,
            ?resolution,
            "resolving a lock"
        );
        let encoded = codec::encode(&lock.key);
        let error = match resolution {
            LockResolution::Wait => {
                all_resolved = false;
                None
            }
            LockResolution::Resolve { commit_ts } => {
                let req = kvrpcpb::ResolveLockRequest {
                    start_version: lock.lock_version,
                    commit_version: commit_ts,
                    keys: vec![lock.key.clone()],
                    ..Default::default()
                };
                cluster.send_to_key(&encoded, req, bo).await?.error
            }
            LockResolution::PessimisticRollback { for_update_ts } => {
                let req = kvrpcpb::PessimisticRollbackRequest {
                    start_version: lock.lock_version,
                    for_update_ts,
                    keys: vec![lock.key.clone()],
                    ..Default::default()
                };
                let resp = cluster.send_to_key(&encoded, req, bo).await?;
                resp.errors.into_iter().next()
            }
        };
        if let Some(e) = error {
            return Err(unexpected_key_error(e));
        }
    }
    Ok(all_resolved)
}

async fn check_txn_status(
    cluster: &Cluster,
    caller_start_ts: Timestamp,
    lock: &LockInfo,
    pessimistic: bool,
    bo: &mut Backoff,
) -> Result<TxnFate> {
    let current_ts = cluster.pd.get_ts().await?;
    let resp = check_primary(
        cluster,
        caller_start_ts,
        lock,
        pessimistic,
        current_ts,
        false,
        bo,
    )
    .await?;
    let Some(primary) = resp.lock_info.as_ref().filter(|l| l.use_async_commit) else {
        return Ok(TxnFate::of(&resp));
    };
    if !lock_expired(primary.lock_version, primary.lock_ttl, current_ts) {
        return Ok(TxnFate::Alive);
    }
    // An expired async-commit primary: ask every key of the transaction.
    let mut keys = vec![primary.key.clone()];
    keys.extend(primary.secondaries.iter().cloned());
    let mut states = Vec::with_capacity(keys.len());
    for key in keys {
        let req = kvrpcpb::CheckSecondaryLocksRequest {
            keys: vec![key.clone()],
            start_version: lock.lock_version,
            ..Default::default()
        };
        let resp = cluster.send_to_key(&codec::encode(&key), req, bo).await?;
        if let Some(e) = resp.error {
            return Err(unexpected_key_error(e));
        }
        states.push(match resp.locks.first() {
            Some(l) => SecondaryState::Locked {
                min_commit_ts: l.min_commit_ts,
                use_async_commit: l.use_async_commit,
            },
            None if resp.commit_ts > 0 => SecondaryState::Committed(resp.commit_ts),
            None => SecondaryState::RolledBack,
        });
    }
    if let Some(fate) = async_commit_fate(&states) {
        return Ok(fate);
    }
    // Fell back to two-phase commit: the primary decides after all.
    let resp = check_primary(
        cluster,
        caller_start_ts,
        lock,
        pessimistic,
        current_ts,
        true,
        bo,
    )
    .await?;
    Ok(TxnFate::of(&resp))
}

/// `KvCheckTxnStatus` at `lock`'s primary.
async fn check_primary(
    cluster: &Cluster,
    caller_start_ts: Timestamp,
    lock: &LockInfo,
    pessimistic: bool,
    current_ts: Timestamp,
    force_sync_commit: bool,
    bo: &mut Backoff,
) -> Result<kvrpcpb::CheckTxnStatusResponse> {
    let req = kvrpcpb::CheckTxnStatusRequest {
        primary_key: lock.primary_lock.clone(),
        lock_ts: lock.lock_version,
        caller_start_ts,
        current_ts,
        rollback_if_not_exist: lock_expired(lock.lock_version, lock.lock_ttl, current_ts),
        resolving_pessimistic_lock: pessimistic,
        force_sync_commit,
        ..Default::default()
    };
    let resp = (cluster)
        .send_to_key(&codec::encode(&lock.primary_lock), req, bo)
        .await?;
    match &resp.error {
        Some(e) if e.txn_not_found.is_none() => Err(unexpected_key_error(e.clone())),
        _ => Ok(resp),
    }
}

/// A key error no caller acts on, as the client's error.
pub(crate) fn unexpected_key_error(e: KeyError) -> Error {
    Error::KeyError(format!("{e:?}"))
}
