//! Transactional write commands: each checks its request, then runs one `storage::txn` action
//! through the scheduler (latches, read grant, snapshot, decide, propose, apply).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use engine::CF_LOCK;
use proto::kvrpcpb::{self, Action};
use storage::mvcc::{Key, Lock, LockType, Modify, MvccReader, MvccTxn};
use storage::txn::{
    self as actions, CheckTxnStatusOptions, PessimisticLockKeyResult, PessimisticLockProps,
    PrewriteProps, SecondaryLocksStatus, TxnKind, TxnStatus,
};

use super::convert::{self, key_error, lock_info};
use super::{invalid, TxnFailure, TxnResult, TxnStorage};
use crate::keyspace::{self, Api};

/// How long a pessimistic lock request waits for another transaction's lock: kvproto's
/// `wait_timeout` in ms (negative: do not wait; 0: the default of one second), never longer
/// than the request timeout.
fn lock_wait(wait_timeout_ms: i64, request_timeout: Duration) -> Duration {
    let wait = match wait_timeout_ms {
        ms if ms < 0 => Duration::ZERO,
        0 => Duration::from_secs(1),
        ms => Duration::from_millis(ms as u64),
    };
    wait.min(request_timeout / 2)
}

/// The locks a decided command wrote (to publish in memory while its writes apply).
fn written_locks(txn: &MvccTxn) -> Vec<(Key, Lock)> {
    txn.modifies
        .iter()
        .filter_map(|m| match m {
            Modify::Put { cf, key, value } if *cf == CF_LOCK => Lock::parse(value)
                .ok()
                .map(|l| (Key::from_encoded(key.clone()), l)),
            _ => None,
        })
        .collect()
}

impl TxnStorage {
    /// The common shape of a command over a list of user keys: check them, route by their
    /// encoded form, and run `decide` on them through the scheduler.
    async fn write_keys<T, F>(
        &self,
        ctx: Option<&kvrpcpb::Context>,
        raw: &[Bytes],
        decide: F,
    ) -> TxnResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&MvccReader<'_>, &mut MvccTxn, &[Key]) -> storage::mvcc::Result<T>
            + Send
            + 'static,
    {
        self.check_keys(raw)?;
        let keys = convert::encode_keys(raw);
        let header = self.header(ctx, &keys)?;
        let cmd_keys = keys.clone();
        Ok(self
            .sched
            .write(header, &keys, move |reader, txn| {
                decide(reader, txn, &cmd_keys)
            })
            .await?)
    }

    pub async fn kv_prewrite(
        &self,
        req: kvrpcpb::PrewriteRequest,
    ) -> TxnResult<kvrpcpb::PrewriteResponse> {
        if req.mutations.is_empty() {
            return Err(invalid("prewrite without mutations"));
        }
        if !req.txn_file_chunks.is_empty() {
            return Err(invalid("file-based transactions are not supported"));
        }
        for m in &req.mutations {
            self.check_key(&m.key)?;
            self.check_value(&m.value)?;
        }
        let mutations = convert::mutations(&req).map_err(invalid)?;
        let keys: Vec<Key> = mutations.iter().map(|m| m.key.clone()).collect();
        let header = self.header(req.context.as_ref(), &keys)?;
        let props = PrewriteProps {
            start_ts: req.start_version,
            primary: req.primary_lock.to_vec(),
            kind: if req.for_update_ts > 0 {
                TxnKind::Pessimistic {
                    for_update_ts: req.for_update_ts,
                }
            } else {
                TxnKind::Optimistic {
                    skip_constraint_check: req.skip_constraint_check,
                }
            },
            lock_ttl: req.lock_ttl,
            txn_size: req.txn_size,
            min_commit_ts: req.min_commit_ts,
            max_commit_ts: req.max_commit_ts,
            secondaries: req
                .use_async_commit
                .then(|| req.secondaries.iter().map(|s| s.to_vec()).collect()),
            try_one_pc: req.try_one_pc,
            assertion_level: Default::default(),
            is_retry_request: req.context.as_ref().is_some_and(|c| c.is_retry_request),
        };
        let result = if req.use_async_commit || req.try_one_pc {
            let start_ts = props.start_ts;
            let primary = props.primary.clone();
            let locked_keys = keys.clone();
            self.sched
                .write_with_max_ts(header, &keys, move |reader, txn, max_ts| {
                    let res = actions::prewrite(reader, txn, &props, mutations, max_ts)?;
                    let mut locks = written_locks(txn);
                    if res.one_pc_commit_ts > 0 {
                        // Committed at once: readers between now and the apply must see a
                        // lock whose commit lands at that ts.
                        locks = locked_keys
                            .iter()
                            .map(|k| {
                                (
                                    k.clone(),
                                    Lock {
                                        lock_type: LockType::Put as i32,
                                        primary: primary.clone(),
                                        start_ts,
                                        use_async_commit: true,
                                        min_commit_ts: res.one_pc_commit_ts,
                                        ..Default::default()
                                    },
                                )
                            })
                            .collect();
                    }
                    Ok((res, locks))
                })
                .await
        } else {
            self.sched
                .write(header, &keys, move |reader, txn| {
                    actions::prewrite(reader, txn, &props, mutations, 0)
                })
                .await
        };
        match result {
            Ok(res) => Ok(kvrpcpb::PrewriteResponse {
                errors: res
                    .locks
                    .into_iter()
                    .map(|l| key_error(&storage::mvcc::Error::KeyIsLocked(Box::new(l))))
                    .collect(),
                min_commit_ts: res.min_commit_ts,
                one_pc_commit_ts: res.one_pc_commit_ts,
                ..Default::default()
            }),
            Err(e) => match TxnFailure::from(e) {
                TxnFailure::Key(k) => Ok(kvrpcpb::PrewriteResponse {
                    errors: vec![*k],
                    ..Default::default()
                }),
                other => Err(other),
            },
        }
    }

    pub async fn kv_commit(
        &self,
        req: kvrpcpb::CommitRequest,
    ) -> TxnResult<kvrpcpb::CommitResponse> {
        let (start_ts, commit_ts) = (req.start_version, req.commit_version);
        self.write_keys(req.context.as_ref(), &req.keys, move |reader, txn, keys| {
            actions::commit(reader, txn, start_ts, keys, commit_ts)
        })
        .await?;
        Ok(kvrpcpb::CommitResponse {
            commit_version: commit_ts,
            ..Default::default()
        })
    }

    pub async fn kv_cleanup(
        &self,
        req: kvrpcpb::CleanupRequest,
    ) -> TxnResult<kvrpcpb::CleanupResponse> {
        self.check_key(&req.key)?;
        let key = Key::from_raw(&req.key);
        let header = self.header(req.context.as_ref(), std::slice::from_ref(&key))?;
        let (start_ts, current_ts) = (req.start_version, req.current_ts);
        let cmd_key = key.clone();
        let result = self
            .sched
            .write(header, &[key], move |reader, txn| {
                actions::cleanup(reader, txn, &cmd_key, start_ts, current_ts)
            })
            .await;
        match result {
            Ok(()) => Ok(kvrpcpb::CleanupResponse::default()),
            // Committed: the client learns the commit ts.
            Err(storage::scheduler::SchedError::Txn(storage::mvcc::Error::Committed {
                commit_ts,
                ..
            })) => Ok(kvrpcpb::CleanupResponse {
                commit_version: commit_ts,
                ..Default::default()
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn kv_batch_rollback(
        &self,
        req: kvrpcpb::BatchRollbackRequest,
    ) -> TxnResult<kvrpcpb::BatchRollbackResponse> {
        let start_ts = req.start_version;
        self.write_keys(req.context.as_ref(), &req.keys, move |reader, txn, keys| {
            actions::rollback(reader, txn, start_ts, keys)
        })
        .await?;
        Ok(kvrpcpb::BatchRollbackResponse::default())
    }

    pub async fn kv_check_txn_status(
        &self,
        req: kvrpcpb::CheckTxnStatusRequest,
    ) -> TxnResult<kvrpcpb::CheckTxnStatusResponse> {
        self.check_key(&req.primary_key)?;
        let primary = Key::from_raw(&req.primary_key);
        let header = self.header(req.context.as_ref(), std::slice::from_ref(&primary))?;
        // A pushed min_commit_ts must stay above the caller's read.
        self.sched
            .concurrency_manager()
            .update_max_ts(req.caller_start_ts);
        let opts = CheckTxnStatusOptions {
            rollback_if_not_exist: req.rollback_if_not_exist,
            force_sync_commit: req.force_sync_commit,
            resolving_pessimistic_lock: req.resolving_pessimistic_lock,
            verify_is_primary: req.verify_is_primary,
        };
        let (lock_ts, caller, current) = (req.lock_ts, req.caller_start_ts, req.current_ts);
        let cmd_primary = primary.clone();
        let status = self
            .sched
            .write(header, &[primary], move |reader, txn| {
                actions::check_txn_status(reader, txn, &cmd_primary, lock_ts, caller, current, opts)
            })
            .await?;
        let mut resp = kvrpcpb::CheckTxnStatusResponse::default();
        match status {
            TxnStatus::RolledBack => {}
            TxnStatus::TtlExpireRollback => resp.action = Action::TtlExpireRollback as i32,
            TxnStatus::TtlExpirePessimisticRollback => {
                resp.action = Action::TtlExpirePessimisticRollback as i32
            }
            TxnStatus::LockNotExistRollback => resp.action = Action::LockNotExistRollback as i32,
            TxnStatus::LockNotExistDoNothing => resp.action = Action::LockNotExistDoNothing as i32,
            TxnStatus::Uncommitted {
                lock,
                min_commit_ts_pushed,
            } => {
                resp.lock_ttl = lock.ttl;
                if min_commit_ts_pushed {
                    resp.action = Action::MinCommitTsPushed as i32;
                }
                resp.lock_info = Some(lock_info(&storage::mvcc::LockInfo::new(
                    req.primary_key.to_vec(),
                    &lock,
                )));
            }
            TxnStatus::Committed { commit_ts } => resp.commit_version = commit_ts,
        }
        Ok(resp)
    }

    pub async fn kv_check_secondary_locks(
        &self,
        req: kvrpcpb::CheckSecondaryLocksRequest,
    ) -> TxnResult<kvrpcpb::CheckSecondaryLocksResponse> {
        let start_ts = req.start_version;
        let status = self
            .write_keys(req.context.as_ref(), &req.keys, move |reader, txn, keys| {
                actions::check_secondary_locks(reader, txn, start_ts, keys)
            })
            .await?;
        let mut resp = kvrpcpb::CheckSecondaryLocksResponse::default();
        match status {
            SecondaryLocksStatus::Locked(locks) => {
                resp.locks = locks.iter().map(lock_info).collect()
            }
            SecondaryLocksStatus::Committed(ts) => resp.commit_ts = ts,
            SecondaryLocksStatus::RolledBack => {}
        }
        Ok(resp)
    }

    pub async fn kv_txn_heart_beat(
        &self,
        req: kvrpcpb::TxnHeartBeatRequest,
    ) -> TxnResult<kvrpcpb::TxnHeartBeatResponse> {
        self.check_key(&req.primary_lock)?;
        let primary = Key::from_raw(&req.primary_lock);
        let header = self.header(req.context.as_ref(), std::slice::from_ref(&primary))?;
        let (start_ts, advise) = (req.start_version, req.advise_lock_ttl);
        let cmd_primary = primary.clone();
        let ttl = self
            .sched
            .write(header, &[primary], move |reader, txn| {
                actions::txn_heart_beat(reader, txn, &cmd_primary, start_ts, advise)
            })
            .await?;
        Ok(kvrpcpb::TxnHeartBeatResponse {
            lock_ttl: ttl,
            ..Default::default()
        })
    }

    /// Commits or rolls back the locks of the given transactions: the named keys, or every
    /// lock of those transactions in the region.
    pub async fn kv_resolve_lock(
        &self,
        req: kvrpcpb::ResolveLockRequest,
    ) -> TxnResult<kvrpcpb::ResolveLockResponse> {
        self.check_keys(&req.keys)?;
        if !req.keys.is_empty() {
            let (start_ts, commit_ts) = (req.start_version, req.commit_version);
            self.write_keys(req.context.as_ref(), &req.keys, move |reader, txn, keys| {
                actions::resolve_lock_lite(reader, txn, start_ts, commit_ts, keys)
            })
            .await?;
            return Ok(kvrpcpb::ResolveLockResponse::default());
        }
        let mut status: HashMap<u64, u64> =
            req.txn_infos.iter().map(|t| (t.txn, t.status)).collect();
        if req.start_version != 0 {
            status.insert(req.start_version, req.commit_version);
        }
        if status.is_empty() {
            return Err(invalid("resolve lock names no transaction"));
        }
        let header = self.header(req.context.as_ref(), &[])?;
        // Find the locks first (no latches needed to look), then resolve them under their
        // latches; a lock that changed meanwhile is re-checked by the action.
        let region = self.grant(header.clone()).await?.region;
        let wanted = status.clone();
        let (start, end) = (region.start_key.to_vec(), region.end_key.to_vec());
        let locks = self
            .read(move |r| {
                Ok(r.scan_locks(&start, &end, |l| wanted.contains_key(&l.start_ts), 0)?)
            })
            .await?;
        for chunk in locks.chunks(256) {
            let keys: Vec<Key> = chunk.iter().map(|(k, _)| k.clone()).collect();
            let mut header = header.clone();
            header.keys = keys
                .iter()
                .map(|k| Bytes::copy_from_slice(k.as_encoded()))
                .collect();
            let (status, locks) = (status.clone(), chunk.to_vec());
            self.sched
                .write(header, &keys, move |reader, txn| {
                    actions::resolve_lock(reader, txn, &status, &locks)
                })
                .await?;
        }
        Ok(kvrpcpb::ResolveLockResponse::default())
    }

    pub async fn kv_pessimistic_lock(
        &self,
        req: kvrpcpb::PessimisticLockRequest,
    ) -> TxnResult<kvrpcpb::PessimisticLockResponse> {
        for m in &req.mutations {
            self.check_key(&m.key)?;
        }
        let keys: Vec<(Key, bool)> = req
            .mutations
            .iter()
            .map(|m| {
                (
                    Key::from_raw(&m.key),
                    m.assertion == kvrpcpb::Assertion::NotExist as i32,
                )
            })
            .collect();
        let plain: Vec<Key> = keys.iter().map(|(k, _)| k.clone()).collect();
        let header = self.header(req.context.as_ref(), &plain)?;
        // Values read at for_update_ts: a later async commit must land above it.
        self.sched
            .concurrency_manager()
            .update_max_ts(req.for_update_ts);
        let props = PessimisticLockProps {
            start_ts: req.start_version,
            for_update_ts: req.for_update_ts,
            primary: req.primary_lock.to_vec(),
            lock_ttl: req.lock_ttl,
            min_commit_ts: req.min_commit_ts,
            return_values: req.return_values,
            check_existence: req.check_existence,
            lock_only_if_exists: req.lock_only_if_exists,
        };
        // Waiting for a lock held by another transaction: re-run the command with backoff
        // until the lock goes or the wait time is over (then the lock is answered, and the
        // client decides). Deadlocks end by this timeout: there is no detector yet.
        let wait = lock_wait(req.wait_timeout, self.limits.request_timeout());
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(5);
        let mut waited = false;
        let result = loop {
            let (props, keys) = (props.clone(), keys.clone());
            let result = self
                .sched
                .write(header.clone(), &plain, move |reader, txn| {
                    actions::pessimistic_lock(reader, txn, &props, &keys)
                })
                .await;
            let locked = matches!(
                result,
                Err(storage::scheduler::SchedError::Txn(
                    storage::mvcc::Error::KeyIsLocked(_)
                ))
            );
            if !locked || tokio::time::Instant::now() + pause > deadline {
                break result;
            }
            if !waited {
                waited = true;
                crate::metrics::PESSIMISTIC_LOCK_WAITS.inc();
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        };
        let results = match result {
            Ok(r) => r,
            Err(e) => {
                return match TxnFailure::from(e) {
                    TxnFailure::Key(k) => Ok(kvrpcpb::PessimisticLockResponse {
                        errors: vec![*k],
                        ..Default::default()
                    }),
                    other => Err(other),
                }
            }
        };
        let mut resp = kvrpcpb::PessimisticLockResponse::default();
        for r in results {
            match r {
                PessimisticLockKeyResult::Empty => {}
                PessimisticLockKeyResult::Value(v) => {
                    resp.not_founds.push(v.is_none());
                    resp.values.push(v.map(Bytes::from).unwrap_or_default());
                }
                PessimisticLockKeyResult::Existence(e) => {
                    resp.not_founds.push(!e);
                    resp.values.push(Bytes::new());
                }
            }
        }
        Ok(resp)
    }

    pub async fn kv_pessimistic_rollback(
        &self,
        req: kvrpcpb::PessimisticRollbackRequest,
    ) -> TxnResult<kvrpcpb::PessimisticRollbackResponse> {
        let (start_ts, for_update_ts) = (req.start_version, req.for_update_ts);
        self.write_keys(req.context.as_ref(), &req.keys, move |reader, txn, keys| {
            actions::pessimistic_rollback(reader, txn, start_ts, for_update_ts, keys)
        })
        .await?;
        Ok(kvrpcpb::PessimisticRollbackResponse::default())
    }

    /// Deletes every version of the keys in `[start_key, end_key)` of the region through Raft.
    pub async fn kv_delete_range(
        &self,
        req: kvrpcpb::DeleteRangeRequest,
    ) -> TxnResult<kvrpcpb::DeleteRangeResponse> {
        if req.notify_only {
            return Ok(kvrpcpb::DeleteRangeResponse::default());
        }
        if !req.end_key.is_empty() && req.end_key <= req.start_key {
            return Err(invalid(
                "delete range: end key must be greater than start key",
            ));
        }
        let start = Key::from_raw(&req.start_key);
        let end = if req.end_key.is_empty() {
            Vec::new()
        } else {
            Key::from_raw(&req.end_key).into_encoded()
        };
        let header = self.header(req.context.as_ref(), std::slice::from_ref(&start))?;
        match Self::api(req.context.as_ref())? {
            Api::V1 => {
                let pieces = keyspace::outside_fence(
                    &keyspace::V1_TXN_FENCE_ENCODED,
                    start.as_encoded(),
                    &end,
                );
                if pieces != [(start.as_encoded().to_vec(), end.clone())] {
                    return Err(invalid(
                        "delete range reaches into an API V2 keyspace: use API V2 there",
                    ));
                }
            }
            Api::V2 => keyspace::check_v2_txn_bound(&end, true).map_err(invalid)?,
        }
        self.sched
            .delete_range(header, start.into_encoded(), end)
            .await?;
        Ok(kvrpcpb::DeleteRangeResponse::default())
    }

    /// Deletes the range's data from this store's engine directly, without Raft — as TiKV
    /// does: the caller (GC after dropping a table) sends it to every store and guarantees
    /// that nobody reads or writes the range any more.
    pub async fn unsafe_destroy_range(
        &self,
        req: kvrpcpb::UnsafeDestroyRangeRequest,
    ) -> TxnResult<kvrpcpb::UnsafeDestroyRangeResponse> {
        if req.end_key.is_empty() || req.end_key <= req.start_key {
            return Err(invalid("unsafe destroy range needs start < end"));
        }
        let (start, end) = (
            Key::from_raw(&req.start_key).into_encoded(),
            Key::from_raw(&req.end_key).into_encoded(),
        );
        let engine = self.sched.engine().clone();
        tokio::task::spawn_blocking(move || {
            let mut wb = engine::WriteBatch::new();
            for cf in [engine::CF_DEFAULT, engine::CF_LOCK, engine::CF_WRITE] {
                wb.delete_range(
                    cf,
                    &engine::keys::data_key(&start),
                    &engine::keys::data_key(&end),
                );
            }
            engine.write(wb, true)
        })
        .await
        .map_err(|e| invalid(format!("destroy range task failed: {e}")))?
        .map_err(|e| invalid(format!("engine: {e}")))?;
        Ok(kvrpcpb::UnsafeDestroyRangeResponse::default())
    }
}

#[cfg(test)]
mod tests {
    use super::lock_wait;
    use std::time::Duration;

    #[test]
    fn lock_waits_follow_kvproto_and_stay_within_the_request() {
        let req = Duration::from_secs(10);
        assert_eq!(lock_wait(-1, req), Duration::ZERO);
        assert_eq!(lock_wait(0, req), Duration::from_secs(1));
        assert_eq!(lock_wait(300, req), Duration::from_millis(300));
        assert_eq!(lock_wait(60_000, req), Duration::from_secs(5));
    }
}
