//! Raw KV on the raftstore: validation and limits, writes as proposals, reads of the engine
//! under a read grant.
//!
//! Engine reads (get, batch get, scan, batch scan, and the read of compare-and-swap) run on the
//! [`ReadPool`], never on the async task that serves the request: the order is always read
//! grant, then a pool task that takes its snapshot (or reads the latest value) when it runs. A
//! full read pool, or a read that waits there longer than the request timeout, is answered
//! ServerIsBusy; reads are idempotent, so clients retry them.
//!
//! Every request's `Context` (region id, epoch, peer) and every key it touches is checked by the
//! region's leader before anything happens; a request that fails validation changes nothing.
//!
//! Writes hold the [`Latches`] of their keys until they are applied (delete-range holds the
//! range latch), and compare-and-swap is decided here, under its key's latch, on a read taken
//! after a read grant: the raftstore only ever applies plain writes.
//!
//! A write whose fate is unknown when the store stops waiting (timeout, shutdown with the
//! proposal in flight) is answered in the response's `error` field as "undetermined", never as
//! a region error: clients retry region errors such as ServerIsBusy, and this write may still
//! apply.
//!
//! API V1 and API V2 (see [`crate::keyspace`]): V2 keys must carry the raw mode and the
//! default keyspace's prefix and are stored in their memcomparable encoding; V2 values carry an
//! optional expire time, so `ttl` works (`RawGetKeyTTL`; expired values read as absent and
//! scans skip them). V1 keys stay out of keyspaces (V1 scans and delete-ranges skip them),
//! and V1 refuses a non-zero TTL.
//!
//! Deliberately absent: removing expired V2 values (they are hidden, not collected), TTL in
//! API V1 (TiKV's V1TTL).

use std::sync::Arc;

use bytes::Bytes;
use engine::{keys, Engine};
use proto::errorpb;
use proto::kvrpcpb::{self, Context, KvPair};
use raftstore::cmd::{engine_cf, WriteOp};
use raftstore::{ReadGrant, RequestHeader, StoreRouter};
use storage::{LatchGuard, Latches};
use tokio::sync::oneshot;

use crate::config::{Limits, ReadPoolConfig};
use crate::errors::{to_wire, WireError};
use crate::keyspace::{self, Api, KeyMode};
use crate::read_pool::{ReadPool, ReadPoolError};

/// Why a raw request failed: a region error (the client re-routes and retries) or a message.
#[derive(Debug)]
pub enum Failure {
    Region(Box<errorpb::Error>),
    Message(String),
}

impl From<raftstore::Error> for Failure {
    fn from(e: raftstore::Error) -> Self {
        match to_wire(&e) {
            WireError::Region(r) => Failure::Region(r),
            WireError::Other(m) => Failure::Message(m),
        }
    }
}

impl From<engine::Error> for Failure {
    fn from(e: engine::Error) -> Self {
        Failure::Message(format!("engine: {e}"))
    }
}

fn invalid(msg: impl Into<String>) -> Failure {
    Failure::Message(msg.into())
}

/// A write that may or may not have been applied. Clients must not resend it blindly.
fn undetermined(why: impl std::fmt::Display) -> Failure {
    Failure::Message(format!("{UNDETERMINED_PREFIX}{why}"))
}

/// How the `error` of a write whose outcome is unknown begins.
pub const UNDETERMINED_PREFIX: &str = "write outcome undetermined: ";

pub type RawResult<T> = Result<T, Failure>;

/// The raw KV API of one store.
#[derive(Clone)]
pub struct RawStorage {
    router: StoreRouter,
    engine: Engine,
    limits: Arc<Limits>,
    latches: Latches,
    read_pool: ReadPool,
}

impl RawStorage {
    /// A raw API whose reads run on a new read pool of the default size (tests and embedders;
    /// a store process uses [`RawStorage::with_read_pool`]).
    ///
    /// # Panics
    ///
    /// If the read pool's threads cannot be spawned.
    pub fn new(router: StoreRouter, engine: Engine, limits: Limits) -> RawStorage {
        let read_pool = ReadPool::new(&ReadPoolConfig::default())
            .expect("starting the threads of a default read pool");
        Self::with_read_pool(router, engine, limits, read_pool)
    }

    /// A raw API whose engine reads run on `read_pool`.
    pub fn with_read_pool(
        router: StoreRouter,
        engine: Engine,
        limits: Limits,
        read_pool: ReadPool,
    ) -> RawStorage {
        RawStorage {
            router,
            engine,
            limits: Arc::new(limits),
            latches: Latches::default(),
            read_pool,
        }
    }

    pub fn read_pool(&self) -> &ReadPool {
        &self.read_pool
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn router(&self) -> &StoreRouter {
        &self.router
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn latches(&self) -> &Latches {
        &self.latches
    }

    fn header(&self, ctx: Option<&Context>, keys: Vec<Bytes>) -> RawResult<RequestHeader> {
        let ctx = ctx.ok_or_else(|| invalid("request has no context"))?;
        if ctx.region_id == 0 {
            return Err(invalid("context has no region id"));
        }
        Ok(RequestHeader {
            region_id: ctx.region_id,
            epoch: ctx.region_epoch,
            peer: ctx.peer,
            keys,
        })
    }

    /// The API a request speaks.
    fn api(ctx: Option<&Context>) -> RawResult<Api> {
        let ctx = ctx.ok_or_else(|| invalid("request has no context"))?;
        Api::of(ctx).map_err(invalid)
    }

    /// Where `key` is stored (and checked against the region): as it is in V1, outside any
    /// keyspace; encoded in V2, inside the keyspace its prefix names.
    fn stored_key(api: Api, key: &Bytes) -> RawResult<Bytes> {
        match api {
            Api::V1 => {
                keyspace::check_v1_key(&keyspace::V1_RAW_FENCE, key).map_err(invalid)?;
                Ok(key.clone())
            }
            Api::V2 => {
                keyspace::check_v2_key(KeyMode::Raw, key).map_err(invalid)?;
                Ok(Bytes::from(keyspace::encode(key)))
            }
        }
    }

    /// A range bound in stored form (V2: checked and encoded; an empty V1 bound stays empty).
    fn stored_bound(api: Api, bound: &Bytes, is_end: bool) -> RawResult<Bytes> {
        match api {
            Api::V1 => Ok(bound.clone()),
            Api::V2 => {
                keyspace::check_v2_bound(KeyMode::Raw, bound, is_end).map_err(invalid)?;
                Ok(Bytes::from(keyspace::encode(bound)))
            }
        }
    }

    /// What is stored for `value` with `ttl` seconds to live (0: forever; V1 refuses others).
    fn stored_value(api: Api, value: Bytes, ttl: u64) -> RawResult<Bytes> {
        match api {
            Api::V1 => {
                Self::check_ttl(ttl)?;
                Ok(value)
            }
            Api::V2 => Ok(Bytes::from(keyspace::encode_raw_value(
                &value,
                ttl,
                keyspace::unix_secs(),
            ))),
        }
    }

    fn check_key(&self, key: &[u8]) -> RawResult<()> {
        self.limits.check_key(key).map_err(invalid)
    }

    fn check_value(&self, value: &[u8]) -> RawResult<()> {
        self.limits.check_value(value).map_err(invalid)
    }

    fn check_batch(&self, n: usize) -> RawResult<()> {
        if n > self.limits.max_batch_keys {
            return Err(invalid(format!(
                "batch of {n} keys is more than the limit of {}",
                self.limits.max_batch_keys
            )));
        }
        Ok(())
    }

    fn cf(name: &str) -> RawResult<&'static str> {
        engine_cf(name).ok_or_else(|| invalid(format!("unknown column family {name:?}")))
    }

    fn check_ttl(ttl: u64) -> RawResult<()> {
        if ttl != 0 {
            return Err(invalid("TTL is not supported (API V1)"));
        }
        Ok(())
    }

    async fn grant(&self, header: RequestHeader) -> RawResult<ReadGrant> {
        match tokio::time::timeout(
            self.limits.request_timeout(),
            self.router.read_grant(header),
        )
        .await
        {
            Ok(r) => Ok(r?),
            Err(_) => Err(raftstore::Error::ServerIsBusy("read timed out".into()).into()),
        }
    }

    /// Runs `read` on the read pool and waits for its result, within the request timeout. Call
    /// it only once the read grant is given: `read` reads the engine when a pool thread runs it,
    /// so it sees at least everything the grant covers.
    async fn read<T, F>(&self, read: F) -> RawResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> RawResult<T> + Send + 'static,
    {
        let engine = self.engine.clone();
        let pending = self
            .read_pool
            .spawn(move || read(&engine))
            .map_err(read_pool_failure)?;
        // On a timeout the handle is dropped, and a task no thread took yet is skipped.
        match tokio::time::timeout(self.limits.request_timeout(), pending.join()).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(read_pool_failure(e)),
            Err(_) => {
                Err(raftstore::Error::ServerIsBusy("read timed out in the read pool".into()).into())
            }
        }
    }

    /// Proposes `ops` and waits until they are applied. `latches` (the latches of the keys the
    /// ops touch) are released when the raftstore answers the proposal, not when this future
    /// ends: a write that may still apply keeps its keys latched.
    async fn write(
        &self,
        header: RequestHeader,
        ops: Vec<WriteOp>,
        latches: LatchGuard,
    ) -> RawResult<raftstore::cmd::WriteResponse> {
        let (tx, rx) = oneshot::channel();
        self.router.propose(header, ops, move |r| {
            // Applied (or failed): release before answering, so that the caller's next
            // request on the key does not wait for this one.
            drop(latches);
            let _ = tx.send(r);
        });
        match tokio::time::timeout(self.limits.request_timeout(), rx).await {
            Ok(Ok(Ok(resp))) => Ok(resp),
            Ok(Ok(Err(raftstore::Error::Shutdown))) | Ok(Err(_)) => {
                Err(undetermined("the store shut down with the write in flight"))
            }
            Ok(Ok(Err(e))) => Err(e.into()),
            Err(_) => Err(undetermined(format!(
                "no result within {:?}",
                self.limits.request_timeout()
            ))),
        }
    }

    /// Waits for the latches of `keys`, within the request timeout.
    async fn latch(&self, keys: &[Bytes]) -> RawResult<LatchGuard> {
        tokio::time::timeout(self.limits.request_timeout(), self.latches.acquire(keys))
            .await
            .map_err(|_| raftstore::Error::ServerIsBusy("waiting for key latches".into()).into())
    }

    /// Waits for the range latch, within the request timeout.
    async fn latch_range(&self) -> RawResult<LatchGuard> {
        tokio::time::timeout(self.limits.request_timeout(), self.latches.acquire_range())
            .await
            .map_err(|_| {
                raftstore::Error::ServerIsBusy("waiting for the range latch".into()).into()
            })
    }

    pub async fn raw_get(&self, req: kvrpcpb::RawGetRequest) -> RawResult<kvrpcpb::RawGetResponse> {
        self.check_key(&req.key)?;
        let cf = Self::cf(&req.cf)?;
        let api = Self::api(req.context.as_ref())?;
        let stored = Self::stored_key(api, &req.key)?;
        let header = self.header(req.context.as_ref(), vec![stored.clone()])?;
        self.grant(header).await?;
        let key = keys::data_key(&stored);
        let value = self
            .read(move |engine| visible(api, engine.get(cf, &key)?, keyspace::unix_secs()))
            .await?;
        Ok(kvrpcpb::RawGetResponse {
            not_found: value.is_none(),
            value: value.map(Bytes::from).unwrap_or_default(),
            ..Default::default()
        })
    }

    pub async fn raw_batch_get(
        &self,
        req: kvrpcpb::RawBatchGetRequest,
    ) -> RawResult<kvrpcpb::RawBatchGetResponse> {
        self.check_batch(req.keys.len())?;
        for k in &req.keys {
            self.check_key(k)?;
        }
        let cf = Self::cf(&req.cf)?;
        let api = Self::api(req.context.as_ref())?;
        let stored = req
            .keys
            .iter()
            .map(|k| Self::stored_key(api, k))
            .collect::<RawResult<Vec<_>>>()?;
        let header = self.header(req.context.as_ref(), stored.clone())?;
        self.grant(header).await?;
        let wanted = req.keys;
        let pairs = self
            .read(move |engine| {
                let snap = engine.snapshot();
                let now = keyspace::unix_secs();
                let mut pairs = Vec::with_capacity(wanted.len());
                for (k, s) in wanted.into_iter().zip(stored) {
                    if let Some(v) = visible(api, snap.get(cf, &keys::data_key(&s))?, now)? {
                        pairs.push(KvPair {
                            key: k,
                            value: v.into(),
                            ..Default::default()
                        });
                    }
                }
                Ok(pairs)
            })
            .await?;
        Ok(kvrpcpb::RawBatchGetResponse {
            pairs,
            ..Default::default()
        })
    }

    pub async fn raw_put(&self, req: kvrpcpb::RawPutRequest) -> RawResult<kvrpcpb::RawPutResponse> {
        self.check_key(&req.key)?;
        self.check_value(&req.value)?;
        let cf = Self::cf(&req.cf)?;
        let api = Self::api(req.context.as_ref())?;
        let key = Self::stored_key(api, &req.key)?;
        let value = Self::stored_value(api, req.value, req.ttl)?;
        let header = self.header(req.context.as_ref(), vec![key.clone()])?;
        let latches = self.latch(&header.keys).await?;
        self.write(header, vec![WriteOp::put(cf, key, value)], latches)
            .await?;
        Ok(Default::default())
    }

    /// Each pair lives `ttls[i]` seconds if `ttls` is given (one per pair), else `ttl`.
    pub async fn raw_batch_put(
        &self,
        req: kvrpcpb::RawBatchPutRequest,
    ) -> RawResult<kvrpcpb::RawBatchPutResponse> {
        self.check_batch(req.pairs.len())?;
        if !req.ttls.is_empty() && req.ttls.len() != req.pairs.len() {
            return Err(invalid(format!(
                "{} TTLs for {} pairs",
                req.ttls.len(),
                req.pairs.len()
            )));
        }
        let cf = Self::cf(&req.cf)?;
        let api = Self::api(req.context.as_ref())?;
        let mut total = 0usize;
        for p in &req.pairs {
            self.check_key(&p.key)?;
            self.check_value(&p.value)?;
            total += p.key.len() + p.value.len();
        }
        if total > self.limits.max_value_size {
            return Err(invalid(format!(
                "batch carries {total} bytes, more than the limit of {}",
                self.limits.max_value_size
            )));
        }
        let mut keys = Vec::with_capacity(req.pairs.len());
        let mut ops = Vec::with_capacity(req.pairs.len());
        for (i, p) in req.pairs.into_iter().enumerate() {
            let ttl = req.ttls.get(i).copied().unwrap_or(req.ttl);
            let key = Self::stored_key(api, &p.key)?;
            ops.push(WriteOp::put(
                cf,
                key.clone(),
                Self::stored_value(api, p.value, ttl)?,
            ));
            keys.push(key);
        }
        let header = self.header(req.context.as_ref(), keys)?;
        let latches = self.latch(&header.keys).await?;
        self.write(header, ops, latches).await?;
        Ok(Default::default())
    }

    pub async fn raw_delete(
        &self,
        req: kvrpcpb::RawDeleteRequest,
    ) -> RawResult<kvrpcpb::RawDeleteResponse> {
        self.check_key(&req.key)?;
        let cf = Self::cf(&req.cf)?;
        let api = Self::api(req.context.as_ref())?;
        let key = Self::stored_key(api, &req.key)?;
        let header = self.header(req.context.as_ref(), vec![key.clone()])?;
        let latches = self.latch(&header.keys).await?;
        self.write(header, vec![WriteOp::delete(cf, key)], latches)
            .await?;
        Ok(Default::default())
    }

    pub async fn raw_batch_delete(
        &self,
        req: kvrpcpb::RawBatchDeleteRequest,
    ) -> RawResult<kvrpcpb::RawBatchDeleteResponse> {
        self.check_batch(req.keys.len())?;
        for k in &req.keys {
            self.check_key(k)?;
        }
        let cf = Self::cf(&req.cf)?;
        let api = Self::api(req.context.as_ref())?;
        let keys = req
            .keys
            .iter()
            .map(|k| Self::stored_key(api, k))
            .collect::<RawResult<Vec<_>>>()?;
        let header = self.header(req.context.as_ref(), keys.clone())?;
        let latches = self.latch(&header.keys).await?;
        let ops = keys.into_iter().map(|k| WriteOp::delete(cf, k)).collect();
        self.write(header, ops, latches).await?;
        Ok(Default::default())
    }

    /// Deletes `[start_key, end_key)`; in V1 without the parts inside keyspaces.
    pub async fn raw_delete_range(
        &self,
        req: kvrpcpb::RawDeleteRangeRequest,
    ) -> RawResult<kvrpcpb::RawDeleteRangeResponse> {
        let cf = Self::cf(&req.cf)?;
        if req.start_key.len() > self.limits.max_key_size
            || req.end_key.len() > self.limits.max_key_size
        {
            return Err(invalid("range bound longer than the key size limit"));
        }
        if !req.end_key.is_empty() && req.end_key <= req.start_key {
            return Err(invalid(
                "delete range: end key must be greater than start key",
            ));
        }
        let api = Self::api(req.context.as_ref())?;
        let start = Self::stored_bound(api, &req.start_key, false)?;
        let end = Self::stored_bound(api, &req.end_key, true)?;
        let ranges = match api {
            Api::V1 => keyspace::outside_fence(&keyspace::V1_RAW_FENCE, &start, &end),
            Api::V2 => vec![(start.to_vec(), end.to_vec())],
        };
        let header = self.header(req.context.as_ref(), vec![start])?;
        let latches = self.latch_range().await?;
        let ops = ranges
            .into_iter()
            .map(|(s, e)| WriteOp::delete_range(cf, Bytes::from(s), Bytes::from(e)))
            .collect();
        self.write(header, ops, latches).await?;
        Ok(Default::default())
    }

    pub async fn raw_compare_and_swap(
        &self,
        req: kvrpcpb::RawCasRequest,
    ) -> RawResult<kvrpcpb::RawCasResponse> {
        self.check_key(&req.key)?;
        self.check_value(&req.value)?;
        let cf = Self::cf(&req.cf)?;
        let api = Self::api(req.context.as_ref())?;
        let key = Self::stored_key(api, &req.key)?;
        let value = Self::stored_value(api, req.value, req.ttl)?;
        let header = self.header(req.context.as_ref(), vec![key.clone()])?;
        // Decide under the key's latch, on a read after a read grant: no write of this store
        // to the key can land between the read and the proposal below (see `storage::latch`).
        let latches = self.latch(&header.keys).await?;
        self.grant(header.clone()).await?;
        let data_key = keys::data_key(&key);
        let previous = self
            .read(move |engine| visible(api, engine.get(cf, &data_key)?, keyspace::unix_secs()))
            .await?;
        let succeed = match &previous {
            None => req.previous_not_exist,
            Some(v) => !req.previous_not_exist && v[..] == req.previous_value[..],
        };
        if succeed {
            self.write(header, vec![WriteOp::put(cf, key, value)], latches)
                .await?;
        }
        Ok(kvrpcpb::RawCasResponse {
            succeed,
            previous_not_exist: previous.is_none(),
            previous_value: previous.map(Bytes::from).unwrap_or_default(),
            ..Default::default()
        })
    }

    /// One scan range in stored form, checked (see [`ScanRange`]).
    fn scan_range_of(
        api: Api,
        start: &Bytes,
        end: &Bytes,
        limit: u32,
        key_only: bool,
        reverse: bool,
    ) -> RawResult<ScanRange> {
        // Reverse scans run from `start` (exclusive, the upper bound) down to `end`.
        let (start_is_end, end_is_end) = if reverse {
            (true, false)
        } else {
            (false, true)
        };
        Ok(ScanRange {
            start: Self::stored_bound(api, start, start_is_end)?,
            end: Self::stored_bound(api, end, end_is_end)?,
            limit,
            key_only,
            reverse,
            api,
        })
    }

    pub async fn raw_scan(
        &self,
        req: kvrpcpb::RawScanRequest,
    ) -> RawResult<kvrpcpb::RawScanResponse> {
        let cf = Self::cf(&req.cf)?;
        self.check_scan_limit(req.limit)?;
        self.check_bound(&req.start_key)?;
        self.check_bound(&req.end_key)?;
        let api = Self::api(req.context.as_ref())?;
        let range = Self::scan_range_of(
            api,
            &req.start_key,
            &req.end_key,
            req.limit,
            req.key_only,
            req.reverse,
        )?;
        let checked = if req.reverse {
            vec![]
        } else {
            vec![range.start.clone()]
        };
        let header = self.header(req.context.as_ref(), checked)?;
        let grant = self.grant(header).await?;
        let kvs = self
            .read(move |engine| {
                let mut kvs = Vec::new();
                scan_range(&engine.snapshot(), &grant.region, cf, &range, &mut kvs)?;
                Ok(kvs)
            })
            .await?;
        Ok(kvrpcpb::RawScanResponse {
            kvs,
            ..Default::default()
        })
    }

    /// Scans several ranges of one region from one snapshot, `each_limit` pairs at most from
    /// each, concatenated in request order.
    pub async fn raw_batch_scan(
        &self,
        req: kvrpcpb::RawBatchScanRequest,
    ) -> RawResult<kvrpcpb::RawBatchScanResponse> {
        let cf = Self::cf(&req.cf)?;
        self.check_batch(req.ranges.len())?;
        self.check_scan_limit(req.each_limit)?;
        for r in &req.ranges {
            self.check_bound(&r.start_key)?;
            self.check_bound(&r.end_key)?;
        }
        let api = Self::api(req.context.as_ref())?;
        let ranges: Vec<ScanRange> = req
            .ranges
            .iter()
            .map(|r| {
                Self::scan_range_of(
                    api,
                    &r.start_key,
                    &r.end_key,
                    req.each_limit,
                    req.key_only,
                    req.reverse,
                )
            })
            .collect::<RawResult<_>>()?;
        let checked = if req.reverse {
            vec![]
        } else {
            ranges.iter().map(|r| r.start.clone()).collect()
        };
        let header = self.header(req.context.as_ref(), checked)?;
        let grant = self.grant(header).await?;
        let kvs = self
            .read(move |engine| {
                let snap = engine.snapshot();
                let mut kvs = Vec::new();
                for range in &ranges {
                    scan_range(&snap, &grant.region, cf, range, &mut kvs)?;
                }
                Ok(kvs)
            })
            .await?;
        Ok(kvrpcpb::RawBatchScanResponse {
            kvs,
            ..Default::default()
        })
    }

    /// The seconds a V2 key has left to live (0: no TTL); TTL does not exist in V1.
    pub async fn raw_get_key_ttl(
        &self,
        req: kvrpcpb::RawGetKeyTtlRequest,
    ) -> RawResult<kvrpcpb::RawGetKeyTtlResponse> {
        self.check_key(&req.key)?;
        let cf = Self::cf(&req.cf)?;
        let api = Self::api(req.context.as_ref())?;
        if api == Api::V1 {
            return Err(invalid("TTL is not supported in API V1 (use API V2)"));
        }
        let key = Self::stored_key(api, &req.key)?;
        let header = self.header(req.context.as_ref(), vec![key.clone()])?;
        self.grant(header).await?;
        let key = keys::data_key(&key);
        let ttl = self
            .read(move |engine| {
                let Some(stored) = engine.get(cf, &key)? else {
                    return Ok(None);
                };
                let now = keyspace::unix_secs();
                let value = keyspace::decode_raw_value(&stored).map_err(invalid)?;
                Ok(value.is_live(now).then(|| value.ttl(now)))
            })
            .await?;
        Ok(kvrpcpb::RawGetKeyTtlResponse {
            not_found: ttl.is_none(),
            ttl: ttl.unwrap_or(0),
            ..Default::default()
        })
    }

    fn check_scan_limit(&self, limit: u32) -> RawResult<()> {
        if limit > self.limits.max_scan_limit {
            return Err(invalid(format!(
                "scan limit {limit} is more than the maximum {}",
                self.limits.max_scan_limit
            )));
        }
        Ok(())
    }

    fn check_bound(&self, key: &[u8]) -> RawResult<()> {
        if key.len() > self.limits.max_key_size {
            return Err(invalid("scan bound longer than the key size limit"));
        }
        Ok(())
    }
}

/// How a read the pool could not run is answered: a full pool (or one shut down) is
/// ServerIsBusy, so the client backs off and retries.
fn read_pool_failure(e: ReadPoolError) -> Failure {
    match e {
        ReadPoolError::Full { .. } => raftstore::Error::ServerIsBusy(e.to_string()).into(),
        e => Failure::Message(format!("read failed: {e}")),
    }
}

/// What a read of `api` sees of a stored value at `now_secs` (V2: nothing once expired).
fn visible(api: Api, stored: Option<Vec<u8>>, now_secs: u64) -> RawResult<Option<Vec<u8>>> {
    match (api, stored) {
        (_, None) => Ok(None),
        (Api::V1, Some(v)) => Ok(Some(v)),
        (Api::V2, Some(v)) => Ok(keyspace::live_raw_value(&v, now_secs)
            .map_err(invalid)?
            .map(<[u8]>::to_vec)),
    }
}

/// Scans one range clamped to `region`. Forward: `[start, end)`. Reverse: `[end, start)`,
/// newest key first, an empty `start` meaning the end of the region; a reverse `start`
/// outside `(region.start, region.end]` is `KeyNotInRegion`. Bounds are in stored form; V1
/// scans skip keyspace ranges, V2 scans skip expired values and answer decoded keys.
fn scan_range(
    snap: &engine::Snapshot<'_>,
    region: &proto::metapb::Region,
    cf: &'static str,
    range: &ScanRange,
    out: &mut Vec<KvPair>,
) -> RawResult<()> {
    let (lower, upper): (&[u8], &[u8]) = if range.reverse {
        let start = &range.start[..];
        if !start.is_empty()
            && (start <= &region.start_key[..]
                || (!region.end_key.is_empty() && start > &region.end_key[..]))
        {
            return Err(raftstore::Error::KeyNotInRegion {
                key: start.to_vec(),
                region_id: region.id,
                start_key: region.start_key.to_vec(),
                end_key: region.end_key.to_vec(),
            }
            .into());
        }
        (&range.end[..], start)
    } else {
        (&range.start[..], &range.end[..])
    };
    let lower = lower.max(&region.start_key[..]);
    let upper = match (upper.is_empty(), region.end_key.is_empty()) {
        (true, _) => &region.end_key[..],
        (false, true) => upper,
        (false, false) => upper.min(&region.end_key[..]),
    };
    let limit = range.limit as usize;
    if limit == 0 || (!upper.is_empty() && lower >= upper) {
        return Ok(());
    }
    let mut pieces = match range.api {
        Api::V1 => keyspace::outside_fence(&keyspace::V1_RAW_FENCE, lower, upper),
        Api::V2 => vec![(lower.to_vec(), upper.to_vec())],
    };
    if range.reverse {
        pieces.reverse();
    }
    let now = keyspace::unix_secs();
    let mut taken = 0;
    let mut failure = None;
    for (lower, upper) in pieces {
        let (lo, hi) = (keys::data_key(&lower), keys::data_end_key(&upper));
        snap.scan(cf, &lo, Some(&hi), range.reverse, |k, v| {
            let stored = keys::origin_key(k);
            let (key, value) = match range.api {
                Api::V1 => (Bytes::copy_from_slice(stored), v),
                Api::V2 => {
                    let decoded = engine::codec::decode_bytes(stored).map(|(key, _)| key);
                    match (decoded, keyspace::live_raw_value(v, now)) {
                        (Ok(key), Ok(Some(value))) => (Bytes::from(key), value),
                        (Ok(_), Ok(None)) => return true,
                        (Err(e), _) => {
                            failure = Some(format!("corrupt API V2 raw key: {e}"));
                            return false;
                        }
                        (_, Err(e)) => {
                            failure = Some(e);
                            return false;
                        }
                    }
                }
            };
            out.push(KvPair {
                key,
                value: if range.key_only {
                    Bytes::new()
                } else {
                    Bytes::copy_from_slice(value)
                },
                ..Default::default()
            });
            taken += 1;
            taken < limit
        })?;
        if let Some(why) = failure {
            return Err(invalid(why));
        }
        if taken >= limit {
            break;
        }
    }
    Ok(())
}

/// One range of a scan request, bounds in stored form.
struct ScanRange {
    start: Bytes,
    end: Bytes,
    limit: u32,
    key_only: bool,
    reverse: bool,
    api: Api,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use engine::EngineOptions;
    use parking_lot::Mutex;
    use proto::metapb;
    use proto::raft_serverpb::RaftMessage;
    use tokio::sync::mpsc as async_mpsc;

    use super::*;
    use crate::read_pool::BeforeTask;

    const DEADLINE: Duration = Duration::from_secs(20);

    /// One store with one single-replica region over the whole keyspace: it needs no network.
    struct OneStore {
        storage: RawStorage,
        region: metapb::Region,
        _store: raftstore::Store,
        _dir: tempfile::TempDir,
    }

    #[derive(Clone)]
    struct NoNetwork;

    impl raftstore::Transport for NoNetwork {
        fn send(&mut self, _: RaftMessage) {}
        fn flush(&mut self) {}
    }

    fn one_store(pool: ReadPool) -> OneStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open(dir.path(), &EngineOptions::default()).expect("engine");
        raftstore::bootstrap::bootstrap_store(&engine, 1, 1).expect("store ident");
        let region = test_util::region(1).peers([test_util::peer(2, 1)]).build();
        raftstore::bootstrap::bootstrap_region(&engine, &region).expect("region");
        let cfg = raftstore::Config {
            raft_base_tick: Duration::from_millis(10),
            raft_election_ticks: 10,
            raft_heartbeat_ticks: 2,
            ..Default::default()
        };
        let store = raftstore::Store::start(1, engine.clone(), cfg, NoNetwork).expect("store");
        let storage = RawStorage::with_read_pool(store.router(), engine, Limits::default(), pool);
        OneStore {
            storage,
            region,
            _store: store,
            _dir: dir,
        }
    }

    impl OneStore {
        fn ctx(&self) -> Option<Context> {
            Some(Context {
                region_id: self.region.id,
                region_epoch: self.region.region_epoch,
                peer: self.region.peers.first().cloned(),
                ..Default::default()
            })
        }

        fn put_req(&self, key: &'static [u8], value: &'static [u8]) -> kvrpcpb::RawPutRequest {
            kvrpcpb::RawPutRequest {
                context: self.ctx(),
                key: Bytes::from_static(key),
                value: Bytes::from_static(value),
                ..Default::default()
            }
        }

        fn get_req(&self, key: &'static [u8]) -> kvrpcpb::RawGetRequest {
            kvrpcpb::RawGetRequest {
                context: self.ctx(),
                key: Bytes::from_static(key),
                ..Default::default()
            }
        }

        fn scan_req(&self) -> kvrpcpb::RawScanRequest {
            kvrpcpb::RawScanRequest {
                context: self.ctx(),
                limit: 100,
                ..Default::default()
            }
        }

        /// Writes `key`, retrying until the region has elected its leader.
        async fn put_when_led(&self, key: &'static [u8], value: &'static [u8]) {
            let until = Instant::now() + DEADLINE;
            loop {
                match self.storage.raw_put(self.put_req(key, value)).await {
                    Ok(_) => return,
                    Err(Failure::Region(e)) if Instant::now() < until => {
                        assert!(e.not_leader.is_some(), "unexpected region error {e:?}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("put failed: {e:?}"),
                }
            }
        }
    }

    fn pool_config(size: usize, per_worker: usize) -> ReadPoolConfig {
        ReadPoolConfig {
            pool_size: size,
            max_tasks_per_worker: per_worker,
        }
    }

    /// Holds the read pool's tasks on their thread, while armed, until released.
    struct Gate {
        armed: AtomicBool,
        entered: async_mpsc::UnboundedSender<String>,
        release: Mutex<mpsc::Receiver<()>>,
        timed_out: AtomicBool,
    }

    impl Gate {
        fn hook(self: &Arc<Self>) -> BeforeTask {
            let gate = self.clone();
            Arc::new(move || {
                if !gate.armed.swap(false, Ordering::SeqCst) {
                    return;
                }
                let thread = std::thread::current().name().unwrap_or("").to_owned();
                let _ = gate.entered.send(thread);
                if gate.release.lock().recv_timeout(DEADLINE).is_err() {
                    gate.timed_out.store(true, Ordering::SeqCst);
                }
            })
        }
    }

    /// A read that takes long (held on its thread) leaves the runtime's only thread free for
    /// other requests; a read beyond the pool's queue is ServerIsBusy at once.
    #[tokio::test(flavor = "current_thread")]
    async fn a_long_read_does_not_hold_the_async_thread_and_a_full_pool_is_busy() {
        let (entered_tx, mut entered_rx) = async_mpsc::unbounded_channel();
        let (release_tx, release_rx) = mpsc::channel();
        let gate = Arc::new(Gate {
            armed: AtomicBool::new(false),
            entered: entered_tx,
            release: Mutex::new(release_rx),
            timed_out: AtomicBool::new(false),
        });
        let pool = ReadPool::with_hook(&pool_config(1, 1), gate.hook()).expect("pool");
        let s = one_store(pool);
        s.put_when_led(b"a", b"1").await;

        // A scan that will sit on the pool's only thread until released.
        gate.armed.store(true, Ordering::SeqCst);
        let storage = s.storage.clone();
        let scan = tokio::spawn({
            let req = s.scan_req();
            async move { storage.raw_scan(req).await }
        });
        let thread = tokio::time::timeout(DEADLINE, entered_rx.recv())
            .await
            .expect("the scan reached the read pool")
            .expect("gate open");
        assert!(thread.starts_with("readpool-"), "ran on {thread:?}");

        // This runtime has one thread, and it is free: a write goes through Raft meanwhile.
        tokio::time::timeout(DEADLINE, s.storage.raw_put(s.put_req(b"b", b"2")))
            .await
            .expect("a write completes while the scan is held")
            .expect("write");
        assert!(!scan.is_finished());

        // One read may wait in the queue (capacity 1); the next is refused at once.
        let storage = s.storage.clone();
        let queued = tokio::spawn({
            let req = s.get_req(b"a");
            async move { storage.raw_get(req).await }
        });
        test_util::wait_until_async("the get to reach the read pool's queue", DEADLINE, || {
            let queued = s.storage.read_pool().queued() >= 1;
            async move { queued }
        })
        .await;
        match s.storage.raw_get(s.get_req(b"a")).await {
            Err(Failure::Region(e)) => assert!(e.server_is_busy.is_some(), "{e:?}"),
            other => panic!("expected ServerIsBusy, got {other:?}"),
        }

        release_tx.send(()).expect("release the scan");
        let scanned = tokio::time::timeout(DEADLINE, scan)
            .await
            .expect("scan finishes")
            .expect("scan task")
            .expect("scan");
        assert!(
            !gate.timed_out.load(Ordering::SeqCst),
            "the gate was not released by the test"
        );
        let keys: Vec<&[u8]> = scanned.kvs.iter().map(|kv| &kv.key[..]).collect();
        assert!(keys.contains(&&b"a"[..]), "{keys:?}");
        let got = tokio::time::timeout(DEADLINE, queued)
            .await
            .expect("queued get finishes")
            .expect("get task")
            .expect("get");
        assert_eq!(&got.value[..], b"1");
    }

    /// Every engine read of the raw API is one read pool task, and answers correctly.
    #[tokio::test(flavor = "current_thread")]
    async fn every_raw_read_is_a_read_pool_task() {
        let tasks = Arc::new(AtomicUsize::new(0));
        let counter = tasks.clone();
        let pool = ReadPool::with_hook(
            &pool_config(2, 16),
            Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .expect("pool");
        let s = one_store(pool);
        s.put_when_led(b"a", b"1").await;
        s.storage.raw_put(s.put_req(b"b", b"2")).await.expect("put");
        let ran = || tasks.load(Ordering::SeqCst);

        let before = ran();
        let got = s.storage.raw_get(s.get_req(b"a")).await.expect("get");
        assert_eq!((&got.value[..], ran() - before), (&b"1"[..], 1));

        let before = ran();
        let got = s
            .storage
            .raw_batch_get(kvrpcpb::RawBatchGetRequest {
                context: s.ctx(),
                keys: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
                ..Default::default()
            })
            .await
            .expect("batch get");
        assert_eq!((got.pairs.len(), ran() - before), (2, 1));

        let before = ran();
        let got = s.storage.raw_scan(s.scan_req()).await.expect("scan");
        assert_eq!((got.kvs.len(), ran() - before), (2, 1));

        let before = ran();
        let got = s
            .storage
            .raw_batch_scan(kvrpcpb::RawBatchScanRequest {
                context: s.ctx(),
                ranges: vec![
                    kvrpcpb::KeyRange {
                        start_key: Bytes::from_static(b"a"),
                        end_key: Bytes::from_static(b"b"),
                    },
                    kvrpcpb::KeyRange {
                        start_key: Bytes::from_static(b"b"),
                        end_key: Bytes::new(),
                    },
                ],
                each_limit: 10,
                ..Default::default()
            })
            .await
            .expect("batch scan");
        assert_eq!((got.kvs.len(), ran() - before), (2, 1));

        let before = ran();
        let got = s
            .storage
            .raw_compare_and_swap(kvrpcpb::RawCasRequest {
                context: s.ctx(),
                key: Bytes::from_static(b"a"),
                value: Bytes::from_static(b"3"),
                previous_value: Bytes::from_static(b"1"),
                ..Default::default()
            })
            .await
            .expect("cas");
        assert_eq!((got.succeed, ran() - before), (true, 1));
        let got = s.storage.raw_get(s.get_req(b"a")).await.expect("get");
        assert_eq!(&got.value[..], b"3");
    }
}
