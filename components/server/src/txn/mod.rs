//! The transactional KV API (Percolator, as TiKV serves it) on one store: request checks,
//! reads on the read pool under a read grant, and write commands through the
//! [`storage::scheduler::TxnScheduler`].
//!
//! Keys: clients send user keys; the store works on their memcomparable encoding
//! ([`storage::mvcc::Key`]), and region ranges of transactional data are in that encoded form
//! (as TiKV's transactional clients expect), so every key check uses the encoded key.
//!
//! Every read raises the store's `max_ts` to its timestamp and checks the memory locks of
//! async-commit prewrites before it reads (see `storage::concurrency`).
//!
//! Old versions are removed by the store's GC worker (`crate::gc_worker`) through the same
//! scheduler; `UnsafeDestroyRange` deletes a range's data on this store alone, bypassing Raft.
//!
//! API V1 and V2 (see [`crate::keyspace`]): V2 keys must lie in the default keyspace's
//! transactional range (`x` and its id), V1 keys outside every keyspace; V1 scans skip
//! keyspaces and V1 delete-ranges may not reach into them.
//!
//! Pessimistic lock requests that meet another transaction's lock re-run until it goes or
//! their wait time is over (then KeyIsLocked is answered). Deliberately absent: waking them
//! when the lock is released, and deadlock detection.

mod convert;
mod respond;
mod write;

use std::sync::Arc;

use bytes::Bytes;
use proto::kvrpcpb::{self, Context, KvPair};
use raftstore::{ReadGrant, RequestHeader};
use storage::kv;
use storage::mvcc::{Error as MvccError, Key, MvccReader, TimeStamp};
use storage::scheduler::{SchedError, TxnScheduler};

use crate::config::Limits;
use crate::keyspace::{self, Api};
use crate::raw::{api_of, region_ctx, Failure};

pub use convert::key_error;
pub use respond::{respond_txn, FromTxnFailure};

/// How a transactional request failed: a region error or an invalid request (as for raw
/// requests), a key error (the command's verdict), or an unknown outcome.
#[derive(Debug)]
pub enum TxnFailure {
    Request(Failure),
    Key(Box<kvrpcpb::KeyError>),
}

impl From<Failure> for TxnFailure {
    fn from(f: Failure) -> Self {
        TxnFailure::Request(f)
    }
}

impl From<kv::Error> for TxnFailure {
    fn from(e: kv::Error) -> Self {
        TxnFailure::Request(e.into())
    }
}

impl From<raftstore::Error> for TxnFailure {
    fn from(e: raftstore::Error) -> Self {
        TxnFailure::Request(e.into())
    }
}

impl From<MvccError> for TxnFailure {
    fn from(e: MvccError) -> Self {
        match e {
            MvccError::Engine(m) | MvccError::Corrupt(m) => {
                TxnFailure::Request(Failure::Message(m))
            }
            other => TxnFailure::Key(Box::new(key_error(&other))),
        }
    }
}

impl From<SchedError> for TxnFailure {
    fn from(e: SchedError) -> Self {
        match e {
            SchedError::Region(e) => e.into(),
            SchedError::Txn(e) => e.into(),
            SchedError::Undetermined(why) => TxnFailure::Request(Failure::Message(format!(
                "{}{why}",
                crate::raw::UNDETERMINED_PREFIX
            ))),
        }
    }
}

pub type TxnResult<T> = Result<T, TxnFailure>;

fn invalid(msg: impl Into<String>) -> TxnFailure {
    TxnFailure::Request(Failure::Message(msg.into()))
}

/// The transactional API of one store.
#[derive(Clone)]
pub struct TxnStorage {
    sched: TxnScheduler,
    limits: Arc<Limits>,
}

impl TxnStorage {
    /// Write commands through `sched`; reads through its [`storage::RaftKv`] (its read pool).
    pub fn new(sched: TxnScheduler, limits: Limits) -> TxnStorage {
        TxnStorage {
            sched,
            limits: Arc::new(limits),
        }
    }

    pub fn scheduler(&self) -> &TxnScheduler {
        &self.sched
    }

    /// The API a request speaks.
    fn api(ctx: Option<&Context>) -> TxnResult<Api> {
        Ok(api_of(ctx)?)
    }

    /// The request header: region routing from the context, and the encoded keys to check
    /// against the region (each also checked against the request's API).
    fn header(&self, ctx: Option<&Context>, keys: &[Key]) -> TxnResult<RequestHeader> {
        let api = Self::api(ctx)?;
        for key in keys {
            keyspace::check_txn_key(api, key.as_encoded()).map_err(invalid)?;
        }
        let keys = keys
            .iter()
            .map(|k| Bytes::copy_from_slice(k.as_encoded()))
            .collect();
        Ok(region_ctx(ctx)?.header(keys))
    }

    fn check_key(&self, key: &[u8]) -> TxnResult<()> {
        self.limits.check_key(key).map_err(invalid)
    }

    fn check_value(&self, value: &[u8]) -> TxnResult<()> {
        self.limits.check_value(value).map_err(invalid)
    }

    /// Checks each key. There is no limit on how many: a request is bounded in bytes (the
    /// gRPC message size, and the Raft entry size for what it writes), as in TiKV, whose
    /// clients batch by bytes.
    fn check_keys(&self, keys: &[Bytes]) -> TxnResult<()> {
        keys.iter().try_for_each(|k| self.check_key(k))
    }

    async fn grant(&self, header: RequestHeader) -> TxnResult<ReadGrant> {
        Ok(self.sched.kv().read_grant(header).await?)
    }

    /// Runs `read` on the read pool over a snapshot taken there (after the grant).
    async fn read<T, F>(&self, read: F) -> TxnResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&MvccReader<'_>) -> TxnResult<T> + Send + 'static,
    {
        self.sched
            .kv()
            .read(move |engine| {
                let snap = engine.snapshot();
                read(&MvccReader::new(&snap))
            })
            .await
    }

    pub async fn kv_get(&self, req: kvrpcpb::GetRequest) -> TxnResult<kvrpcpb::GetResponse> {
        self.check_key(&req.key)?;
        let key = Key::from_raw(&req.key);
        let header = self.header(req.context.as_ref(), std::slice::from_ref(&key))?;
        let bypass = bypass_locks(req.context.as_ref());
        let ts = req.version;
        self.sched
            .concurrency_manager()
            .read_key_check(&key, ts, &bypass)?;
        self.grant(header).await?;
        let value = self.read(move |r| Ok(r.get(&key, ts, &bypass)?)).await?;
        Ok(kvrpcpb::GetResponse {
            not_found: value.is_none(),
            value: value.map(Bytes::from).unwrap_or_default(),
            ..Default::default()
        })
    }

    pub async fn kv_batch_get(
        &self,
        req: kvrpcpb::BatchGetRequest,
    ) -> TxnResult<kvrpcpb::BatchGetResponse> {
        self.check_keys(&req.keys)?;
        let keys: Vec<Key> = convert::encode_keys(&req.keys);
        let header = self.header(req.context.as_ref(), &keys)?;
        let bypass = bypass_locks(req.context.as_ref());
        let ts = req.version;
        let cm = self.sched.concurrency_manager();
        for k in &keys {
            cm.read_key_check(k, ts, &bypass)?;
        }
        self.grant(header).await?;
        let raw = req.keys.clone();
        let pairs = self
            .read(move |r| {
                let mut pairs = Vec::with_capacity(keys.len());
                for (key, raw) in keys.iter().zip(raw) {
                    match r.get(key, ts, &bypass) {
                        Ok(Some(v)) => pairs.push(KvPair {
                            key: raw,
                            value: Bytes::from(v),
                            ..Default::default()
                        }),
                        Ok(None) => {}
                        Err(e @ MvccError::KeyIsLocked(_)) => pairs.push(KvPair {
                            key: raw,
                            error: Some(key_error(&e)),
                            ..Default::default()
                        }),
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(pairs)
            })
            .await?;
        Ok(kvrpcpb::BatchGetResponse {
            pairs,
            ..Default::default()
        })
    }

    /// Forward: `[start_key, end_key)`. Reverse: `[end_key, start_key)`, newest key first, an
    /// empty `start_key` meaning the end of the region. Clamped to the region.
    pub async fn kv_scan(&self, req: kvrpcpb::ScanRequest) -> TxnResult<kvrpcpb::ScanResponse> {
        if req.start_key.len() > self.limits.max_key_size
            || req.end_key.len() > self.limits.max_key_size
        {
            return Err(invalid("scan bound longer than the key size limit"));
        }
        if req.limit > self.limits.max_scan_limit {
            return Err(invalid(format!(
                "scan limit {} is more than the maximum {}",
                req.limit, self.limits.max_scan_limit
            )));
        }
        let enc = |k: &Bytes| {
            if k.is_empty() {
                Vec::new()
            } else {
                Key::from_raw(k).into_encoded()
            }
        };
        let (start, end) = (enc(&req.start_key), enc(&req.end_key));
        let api = Self::api(req.context.as_ref())?;
        if api == Api::V2 {
            // Reverse scans run from `start` (exclusive, the upper bound) down to `end`.
            keyspace::check_v2_txn_bound(&start, req.reverse).map_err(invalid)?;
            keyspace::check_v2_txn_bound(&end, !req.reverse).map_err(invalid)?;
        }
        let checked: Vec<Key> = if !req.reverse && !start.is_empty() {
            vec![Key::from_encoded(start.clone())]
        } else {
            vec![]
        };
        let header = self.header(req.context.as_ref(), &checked)?;
        let bypass = bypass_locks(req.context.as_ref());
        let ts = req.version;
        let grant = self.grant(header).await?;
        let region = grant.region;
        let (lower, upper) = if req.reverse {
            (end, start)
        } else {
            (start, end)
        };
        let lower = lower.max(region.start_key.to_vec());
        let upper = match (upper.is_empty(), region.end_key.is_empty()) {
            (true, _) => region.end_key.to_vec(),
            (false, true) => upper,
            (false, false) => upper.min(region.end_key.to_vec()),
        };
        self.sched
            .concurrency_manager()
            .read_range_check(&lower, &upper, ts, &bypass)?;
        let (limit, reverse, key_only) = (req.limit as usize, req.reverse, req.key_only);
        if limit == 0 || (!upper.is_empty() && lower >= upper) {
            return Ok(kvrpcpb::ScanResponse::default());
        }
        // V1 scans skip keyspaces.
        let mut pieces = match api {
            Api::V1 => keyspace::outside_fence(&keyspace::V1_TXN_FENCE_ENCODED, &lower, &upper),
            Api::V2 => vec![(lower, upper)],
        };
        if reverse {
            pieces.reverse();
        }
        let pairs = self
            .read(move |r| {
                let mut items = Vec::new();
                for (lower, upper) in &pieces {
                    let left = limit - items.len();
                    items.extend(r.scan(lower, upper, left, ts, reverse, &bypass)?);
                    if items.len() >= limit {
                        break;
                    }
                }
                let mut pairs = Vec::with_capacity(items.len());
                for item in items {
                    pairs.push(match item {
                        Ok((k, v)) => KvPair {
                            key: Bytes::from(k),
                            value: if key_only {
                                Bytes::new()
                            } else {
                                Bytes::from(v)
                            },
                            ..Default::default()
                        },
                        Err(MvccError::KeyIsLocked(l)) => KvPair {
                            key: Bytes::from(l.key.clone()),
                            error: Some(key_error(&MvccError::KeyIsLocked(l))),
                            ..Default::default()
                        },
                        Err(e) => return Err(e.into()),
                    });
                }
                Ok(pairs)
            })
            .await?;
        Ok(kvrpcpb::ScanResponse {
            pairs,
            ..Default::default()
        })
    }

    pub async fn kv_scan_lock(
        &self,
        req: kvrpcpb::ScanLockRequest,
    ) -> TxnResult<kvrpcpb::ScanLockResponse> {
        let header = self.header(req.context.as_ref(), &[])?;
        let region = self.grant(header).await?.region;
        let enc = |k: &Bytes| {
            if k.is_empty() {
                Vec::new()
            } else {
                Key::from_raw(k).into_encoded()
            }
        };
        let lower = enc(&req.start_key).max(region.start_key.to_vec());
        let upper = enc(&req.end_key);
        let upper = match (upper.is_empty(), region.end_key.is_empty()) {
            (true, _) => region.end_key.to_vec(),
            (false, true) => upper,
            (false, false) => upper.min(region.end_key.to_vec()),
        };
        let (max_version, limit) = (req.max_version, req.limit as usize);
        let locks = self
            .read(move |r| {
                let end = (!upper.is_empty()).then(|| Key::from_encoded(upper.clone()));
                Ok(storage::txn::scan_lock(
                    r,
                    max_version,
                    &Key::from_encoded(lower),
                    end.as_ref(),
                    limit,
                )?)
            })
            .await?;
        Ok(kvrpcpb::ScanLockResponse {
            locks: locks.iter().map(convert::lock_info).collect(),
            ..Default::default()
        })
    }
}

/// Locks of transactions the client already resolved as committed or rolled back: reads may
/// go past them.
fn bypass_locks(ctx: Option<&Context>) -> Vec<TimeStamp> {
    ctx.map(|c| c.resolved_locks.clone()).unwrap_or_default()
}
