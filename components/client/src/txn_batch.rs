//! The transactional commands that span regions, as [`BatchOp`]s: grouped by the region of
//! each key's **encoded** form, sent in parallel, each part retried on its own (`batch.rs`).
//! Their outputs are the key errors (or pairs) the stores answered; the transaction layer
//! decides what they mean.

use proto::kvrpcpb::{self, KeyError};

use crate::batch::BatchOp;
use crate::codec;
use crate::txn_plan::{PlannedMutation, Timestamp};
use crate::Key;

/// A key with the encoded form its region is looked up by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TxnKey {
    pub(crate) encoded: bytes::Bytes,
    pub(crate) raw: Key,
}

impl TxnKey {
    pub(crate) fn new(raw: Key) -> TxnKey {
        TxnKey {
            encoded: codec::encode(&raw),
            raw,
        }
    }

    /// Sorted and deduplicated keys.
    pub(crate) fn sorted(keys: impl IntoIterator<Item = Key>) -> Vec<TxnKey> {
        let mut keys: Vec<Key> = keys.into_iter().collect();
        keys.sort();
        keys.dedup();
        keys.into_iter().map(TxnKey::new).collect()
    }
}

fn raw_keys(items: &[TxnKey]) -> Vec<Key> {
    items.iter().map(|k| k.raw.clone()).collect()
}

macro_rules! keyed_by_txn_key {
    () => {
        type Item = TxnKey;

        fn key(item: &TxnKey) -> &[u8] {
            &item.encoded
        }

        fn size(item: &TxnKey) -> usize {
            item.raw.len()
        }
    };
}

/// `KvBatchGet` at a timestamp: the pairs found, and pairs whose `error` says the key is
/// locked (a whole-request key error comes out as such a pair with an empty key).
pub(crate) struct TxnBatchGet {
    pub(crate) ts: Timestamp,
}

impl BatchOp for TxnBatchGet {
    keyed_by_txn_key!();
    type Rpc = kvrpcpb::BatchGetRequest;
    type Output = kvrpcpb::KvPair;

    fn request(&self, items: &[TxnKey]) -> kvrpcpb::BatchGetRequest {
        kvrpcpb::BatchGetRequest {
            keys: raw_keys(items),
            version: self.ts,
            ..Default::default()
        }
    }

    fn output(resp: kvrpcpb::BatchGetResponse) -> Vec<kvrpcpb::KvPair> {
        let mut out = resp.pairs;
        if let Some(error) = resp.error {
            out.push(kvrpcpb::KvPair {
                error: Some(error),
                ..Default::default()
            });
        }
        out
    }
}

/// `KvPrewrite` of planned mutations.
pub(crate) struct Prewrite {
    pub(crate) start_ts: Timestamp,
    pub(crate) primary: Key,
    pub(crate) lock_ttl_ms: u64,
    pub(crate) txn_size: u64,
    /// 0 for an optimistic transaction.
    pub(crate) for_update_ts: Timestamp,
    /// Async commit: every lock is marked, the primary's lists these secondaries, and each
    /// lock's `min_commit_ts` is at least `floor`.
    pub(crate) async_commit: Option<AsyncCommit>,
}

#[derive(Clone, Debug)]
pub(crate) struct AsyncCommit {
    pub(crate) secondaries: Vec<Key>,
    pub(crate) floor: Timestamp,
}

/// What one prewrite request of a batch did.
#[derive(Clone, Debug)]
pub(crate) enum PrewriteOutcome {
    /// Nothing of the request was written (a store writes all of it or nothing).
    Failed(Box<KeyError>),
    /// Every key of the request is prewritten; for async commit, the largest
    /// `min_commit_ts` of its locks.
    Prewritten { min_commit_ts: Timestamp },
}

impl BatchOp for Prewrite {
    type Item = PlannedMutation;
    type Rpc = kvrpcpb::PrewriteRequest;
    type Output = PrewriteOutcome;

    fn key(item: &PlannedMutation) -> &[u8] {
        &item.encoded
    }

    fn size(item: &PlannedMutation) -> usize {
        item.mutation.key.len() + item.mutation.value.len()
    }

    fn request(&self, items: &[PlannedMutation]) -> kvrpcpb::PrewriteRequest {
        let pessimistic = self.for_update_ts > 0;
        kvrpcpb::PrewriteRequest {
            mutations: items.iter().map(|m| m.mutation.clone()).collect(),
            primary_lock: self.primary.clone(),
            start_version: self.start_ts,
            lock_ttl: self.lock_ttl_ms,
            txn_size: self.txn_size,
            for_update_ts: self.for_update_ts,
            pessimistic_actions: if pessimistic {
                items.iter().map(|m| m.pessimistic_action as i32).collect()
            } else {
                Vec::new()
            },
            use_async_commit: self.async_commit.is_some(),
            secondaries: self
                .async_commit
                .as_ref()
                .map(|a| a.secondaries.clone())
                .unwrap_or_default(),
            min_commit_ts: self.async_commit.as_ref().map_or(0, |a| a.floor),
            ..Default::default()
        }
    }

    fn output(resp: kvrpcpb::PrewriteResponse) -> Vec<PrewriteOutcome> {
        if resp.errors.is_empty() {
            vec![PrewriteOutcome::Prewritten {
                min_commit_ts: resp.min_commit_ts,
            }]
        } else {
            resp.errors
                .into_iter()
                .map(|e| PrewriteOutcome::Failed(Box::new(e)))
                .collect()
        }
    }
}

/// `KvCommit` of keys at `commit_ts`.
pub(crate) struct Commit {
    pub(crate) start_ts: Timestamp,
    pub(crate) commit_ts: Timestamp,
}

impl BatchOp for Commit {
    keyed_by_txn_key!();
    type Rpc = kvrpcpb::CommitRequest;
    type Output = KeyError;

    fn request(&self, items: &[TxnKey]) -> kvrpcpb::CommitRequest {
        kvrpcpb::CommitRequest {
            start_version: self.start_ts,
            commit_version: self.commit_ts,
            keys: raw_keys(items),
            ..Default::default()
        }
    }

    fn output(resp: kvrpcpb::CommitResponse) -> Vec<KeyError> {
        resp.error.into_iter().collect()
    }
}

/// `KvBatchRollback` of keys.
pub(crate) struct Rollback {
    pub(crate) start_ts: Timestamp,
}

impl BatchOp for Rollback {
    keyed_by_txn_key!();
    type Rpc = kvrpcpb::BatchRollbackRequest;
    type Output = KeyError;

    fn request(&self, items: &[TxnKey]) -> kvrpcpb::BatchRollbackRequest {
        kvrpcpb::BatchRollbackRequest {
            start_version: self.start_ts,
            keys: raw_keys(items),
            ..Default::default()
        }
    }

    fn output(resp: kvrpcpb::BatchRollbackResponse) -> Vec<KeyError> {
        resp.error.into_iter().collect()
    }
}

/// `KvPessimisticLock` of keys, without values; `check_existence` asks whether each exists.
pub(crate) struct PessimisticLock {
    pub(crate) start_ts: Timestamp,
    pub(crate) for_update_ts: Timestamp,
    pub(crate) primary: Key,
    pub(crate) lock_ttl_ms: u64,
    pub(crate) check_existence: bool,
}

/// What one key of a pessimistic lock request answered: the key error of its request, or
/// whether it exists (when asked).
#[derive(Clone, Debug)]
pub(crate) enum LockOutcome {
    Error(Box<KeyError>),
    Exists(bool),
}

impl BatchOp for PessimisticLock {
    keyed_by_txn_key!();
    type Rpc = kvrpcpb::PessimisticLockRequest;
    type Output = LockOutcome;

    fn request(&self, items: &[TxnKey]) -> kvrpcpb::PessimisticLockRequest {
        kvrpcpb::PessimisticLockRequest {
            mutations: (items.iter())
                .map(|k| kvrpcpb::Mutation {
                    op: kvrpcpb::Op::PessimisticLock as i32,
                    key: k.raw.clone(),
                    ..Default::default()
                })
                .collect(),
            primary_lock: self.primary.clone(),
            start_version: self.start_ts,
            for_update_ts: self.for_update_ts,
            lock_ttl: self.lock_ttl_ms,
            check_existence: self.check_existence,
            ..Default::default()
        }
    }

    fn output(resp: kvrpcpb::PessimisticLockResponse) -> Vec<LockOutcome> {
        if !resp.errors.is_empty() {
            return resp
                .errors
                .into_iter()
                .map(|e| LockOutcome::Error(Box::new(e)))
                .collect();
        }
        (resp.not_founds.iter())
            .map(|nf| LockOutcome::Exists(!nf))
            .collect()
    }
}

/// `KvPessimisticRollback` of keys locked at or before `for_update_ts`.
pub(crate) struct PessimisticRollback {
    pub(crate) start_ts: Timestamp,
    pub(crate) for_update_ts: Timestamp,
}

impl BatchOp for PessimisticRollback {
    keyed_by_txn_key!();
    type Rpc = kvrpcpb::PessimisticRollbackRequest;
    type Output = KeyError;

    fn request(&self, items: &[TxnKey]) -> kvrpcpb::PessimisticRollbackRequest {
        kvrpcpb::PessimisticRollbackRequest {
            start_version: self.start_ts,
            for_update_ts: self.for_update_ts,
            keys: raw_keys(items),
            ..Default::default()
        }
    }

    fn output(resp: kvrpcpb::PessimisticRollbackResponse) -> Vec<KeyError> {
        resp.errors
    }
}
