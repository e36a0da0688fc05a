//! The raw KV API's wire face: converts `kvrpcpb` raw requests to [`storage::raw`] commands
//! on domain types and their results back, checking request sizes on the way in.
//!
//! What a raw command does (API versions, latches, read grants, the read pool,
//! compare-and-swap decided above Raft) is [`storage::raw`]'s; this module owns only what is
//! about the wire:
//! - limits in bytes, as TiKV has them: each key and value against `max_key_size` /
//!   `max_value_size`, scan bounds and limits; there is no limit on how many keys a batch
//!   carries (a request is bounded by the gRPC message size, and what it writes by the Raft
//!   entry size, answered `RaftEntryTooLarge`), because TiKV's clients batch by bytes;
//! - the request's `Context`: region id, epoch and peer for routing, `api_version`;
//! - where a failure goes ([`Failure`]): region errors in `region_error`, everything else as
//!   a message in `error`. A write whose fate is unknown (timeout, shutdown with the proposal
//!   in flight) is a message beginning with [`UNDETERMINED_PREFIX`], never a region error:
//!   clients retry region errors such as ServerIsBusy, and this write may still apply.

use crate::load_split::Access;
use std::sync::Arc;

use bytes::Bytes;
use engine::Engine;
use proto::errorpb;
use proto::kvrpcpb::{self, Context, KvPair};
use raftstore::StoreRouter;
use storage::kv::{self, RaftKv, RegionCtx};
use storage::raw::{RawCtx, RawPut, RawStore};
use storage::{Latches, ReadPool};

use crate::config::{Limits, ReadPoolConfig};
use crate::errors::{to_wire, WireError};
use crate::keyspace::Api;

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

impl From<kv::Error> for Failure {
    fn from(e: kv::Error) -> Self {
        match e {
            kv::Error::Raftstore(e) => e.into(),
            kv::Error::Undetermined(why) => Failure::Message(format!("{UNDETERMINED_PREFIX}{why}")),
            kv::Error::Invalid(m) | kv::Error::Other(m) => Failure::Message(m),
        }
    }
}

fn invalid(msg: impl Into<String>) -> Failure {
    Failure::Message(msg.into())
}

/// How the `error` of a write whose outcome is unknown begins.
pub const UNDETERMINED_PREFIX: &str = "write outcome undetermined: ";

pub type RawResult<T> = Result<T, Failure>;

/// The region and API a request addresses, from its `Context`.
pub fn region_ctx(ctx: Option<&Context>) -> RawResult<RegionCtx> {
    let ctx = ctx.ok_or_else(|| invalid("request has no context"))?;
    if ctx.region_id == 0 {
        return Err(invalid("context has no region id"));
    }
    Ok(RegionCtx {
        region_id: ctx.region_id,
        epoch: ctx.region_epoch,
        peer: ctx.peer,
        replica_read: ctx.replica_read,
    })
}

/// The API a request speaks.
pub fn api_of(ctx: Option<&Context>) -> RawResult<Api> {
    let ctx = ctx.ok_or_else(|| invalid("request has no context"))?;
    Api::of(ctx).map_err(invalid)
}

fn raw_ctx(ctx: Option<&Context>) -> RawResult<RawCtx> {
    Ok(RawCtx {
        api: api_of(ctx)?,
        region: region_ctx(ctx)?,
    })
}

fn kv_pair((key, value): (Bytes, Bytes)) -> KvPair {
    KvPair {
        key,
        value,
        ..Default::default()
    }
}

/// Keys sampled per region and second for load-based split.
const LOAD_SAMPLES: usize = 20;

/// The raw KV API of one store, as the gRPC service calls it.
#[derive(Clone)]
pub struct RawStorage {
    raw: RawStore,
    limits: Arc<Limits>,
    /// Requests per region and sampled keys, for load-based split.
    load: Arc<crate::load_split::LoadRecorder>,
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
        let kv = RaftKv::new(router, engine, read_pool, limits.request_timeout())
            .with_write_quota(storage::kv::WriteQuota::new(limits.max_pending_write_bytes))
            .with_apply_backlog_limit(limits.max_apply_backlog_bytes);
        RawStorage {
            raw: RawStore::new(kv),
            limits: Arc::new(limits),
            load: Arc::new(crate::load_split::LoadRecorder::new(LOAD_SAMPLES)),
        }
    }

    /// The load this store's raw requests put on each region (see [`crate::load_split`]).
    pub fn load_recorder(&self) -> &Arc<crate::load_split::LoadRecorder> {
        &self.load
    }

    /// Notes a request to the region of `ctx` touching `key`, in stored form.
    fn observe(&self, ctx: &RawCtx, access: Access, key: &Bytes) {
        if let Ok(k) = storage::raw::stored_key(ctx.api, key) {
            self.load.observe(ctx.region.region_id, access, &k);
        }
    }

    /// How commands reach the store's regions (shared with the transactional API).
    pub fn kv(&self) -> &RaftKv {
        self.raw.kv()
    }

    pub fn read_pool(&self) -> &ReadPool {
        self.raw.kv().read_pool()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn router(&self) -> &StoreRouter {
        self.raw.kv().router()
    }

    pub fn engine(&self) -> &Engine {
        self.raw.kv().engine()
    }

    pub fn latches(&self) -> &Latches {
        self.raw.latches()
    }

    fn check_key(&self, key: &[u8]) -> RawResult<()> {
        self.limits.check_key(key).map_err(invalid)
    }

    fn check_value(&self, value: &[u8]) -> RawResult<()> {
        self.limits.check_value(value).map_err(invalid)
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
            return Err(invalid("range bound longer than the key size limit"));
        }
        Ok(())
    }

    pub async fn raw_get(&self, req: kvrpcpb::RawGetRequest) -> RawResult<kvrpcpb::RawGetResponse> {
        self.check_key(&req.key)?;
        let ctx = raw_ctx(req.context.as_ref())?;
        self.observe(&ctx, Access::Read, &req.key);
        let value = self.raw.get(&ctx, &req.cf, req.key).await?;
        Ok(kvrpcpb::RawGetResponse {
            not_found: value.is_none(),
            value: value.unwrap_or_default(),
            ..Default::default()
        })
    }

    pub async fn raw_batch_get(
        &self,
        req: kvrpcpb::RawBatchGetRequest,
    ) -> RawResult<kvrpcpb::RawBatchGetResponse> {
        req.keys.iter().try_for_each(|k| self.check_key(k))?;
        let ctx = raw_ctx(req.context.as_ref())?;
        if let Some(k) = req.keys.first() {
            self.observe(&ctx, Access::Read, k);
        }
        let pairs = self.raw.batch_get(&ctx, &req.cf, req.keys).await?;
        Ok(kvrpcpb::RawBatchGetResponse {
            pairs: pairs.into_iter().map(kv_pair).collect(),
            ..Default::default()
        })
    }

    pub async fn raw_put(&self, req: kvrpcpb::RawPutRequest) -> RawResult<kvrpcpb::RawPutResponse> {
        self.check_key(&req.key)?;
        self.check_value(&req.value)?;
        let ctx = raw_ctx(req.context.as_ref())?;
        self.observe(&ctx, Access::Write, &req.key);
        let put = RawPut {
            key: req.key,
            value: req.value,
            ttl: req.ttl,
        };
        self.raw.put(&ctx, &req.cf, vec![put]).await?;
        Ok(Default::default())
    }

    /// Each pair lives `ttls[i]` seconds if `ttls` is given (one per pair), else `ttl`.
    pub async fn raw_batch_put(
        &self,
        req: kvrpcpb::RawBatchPutRequest,
    ) -> RawResult<kvrpcpb::RawBatchPutResponse> {
        if !req.ttls.is_empty() && req.ttls.len() != req.pairs.len() {
            return Err(invalid(format!(
                "{} TTLs for {} pairs",
                req.ttls.len(),
                req.pairs.len()
            )));
        }
        for p in &req.pairs {
            self.check_key(&p.key)?;
            self.check_value(&p.value)?;
        }
        let ctx = raw_ctx(req.context.as_ref())?;
        if let Some(p) = req.pairs.first() {
            self.observe(&ctx, Access::Write, &p.key);
        }
        let puts = req
            .pairs
            .into_iter()
            .enumerate()
            .map(|(i, p)| RawPut {
                key: p.key,
                value: p.value,
                ttl: req.ttls.get(i).copied().unwrap_or(req.ttl),
            })
            .collect();
        self.raw.put(&ctx, &req.cf, puts).await?;
        Ok(Default::default())
    }

    pub async fn raw_delete(
        &self,
        req: kvrpcpb::RawDeleteRequest,
    ) -> RawResult<kvrpcpb::RawDeleteResponse> {
        self.check_key(&req.key)?;
        let ctx = raw_ctx(req.context.as_ref())?;
        self.observe(&ctx, Access::Write, &req.key);
        self.raw.delete(&ctx, &req.cf, vec![req.key]).await?;
        Ok(Default::default())
    }

    pub async fn raw_batch_delete(
        &self,
        req: kvrpcpb::RawBatchDeleteRequest,
    ) -> RawResult<kvrpcpb::RawBatchDeleteResponse> {
        req.keys.iter().try_for_each(|k| self.check_key(k))?;
        let ctx = raw_ctx(req.context.as_ref())?;
        self.raw.delete(&ctx, &req.cf, req.keys).await?;
        Ok(Default::default())
    }

    /// Deletes `[start_key, end_key)`; in V1 without the parts inside keyspaces.
    pub async fn raw_delete_range(
        &self,
        req: kvrpcpb::RawDeleteRangeRequest,
    ) -> RawResult<kvrpcpb::RawDeleteRangeResponse> {
        self.check_bound(&req.start_key)?;
        self.check_bound(&req.end_key)?;
        let ctx = raw_ctx(req.context.as_ref())?;
        self.raw
            .delete_range(&ctx, &req.cf, req.start_key, req.end_key)
            .await?;
        Ok(Default::default())
    }

    pub async fn raw_compare_and_swap(
        &self,
        req: kvrpcpb::RawCasRequest,
    ) -> RawResult<kvrpcpb::RawCasResponse> {
        self.check_key(&req.key)?;
        self.check_value(&req.value)?;
        let ctx = raw_ctx(req.context.as_ref())?;
        self.observe(&ctx, Access::Write, &req.key);
        let expected = (!req.previous_not_exist).then_some(req.previous_value);
        let put = RawPut {
            key: req.key,
            value: req.value,
            ttl: req.ttl,
        };
        let out = self
            .raw
            .compare_and_swap(&ctx, &req.cf, put, expected)
            .await?;
        Ok(kvrpcpb::RawCasResponse {
            succeed: out.succeed,
            previous_not_exist: out.previous.is_none(),
            previous_value: out.previous.unwrap_or_default(),
            ..Default::default()
        })
    }

    pub async fn raw_scan(
        &self,
        req: kvrpcpb::RawScanRequest,
    ) -> RawResult<kvrpcpb::RawScanResponse> {
        self.check_scan_limit(req.limit)?;
        self.check_bound(&req.start_key)?;
        self.check_bound(&req.end_key)?;
        let ctx = raw_ctx(req.context.as_ref())?;
        if !req.start_key.is_empty() {
            self.observe(&ctx, Access::Read, &req.start_key);
        }
        let range = [(req.start_key, req.end_key)];
        let kvs = self
            .raw
            .scan(&ctx, &req.cf, &range, req.limit, req.key_only, req.reverse)
            .await?;
        Ok(kvrpcpb::RawScanResponse {
            kvs: kvs.into_iter().map(kv_pair).collect(),
            ..Default::default()
        })
    }

    /// Scans several ranges of one region from one snapshot, `each_limit` pairs at most from
    /// each, concatenated in request order.
    pub async fn raw_batch_scan(
        &self,
        req: kvrpcpb::RawBatchScanRequest,
    ) -> RawResult<kvrpcpb::RawBatchScanResponse> {
        self.check_scan_limit(req.each_limit)?;
        for r in &req.ranges {
            self.check_bound(&r.start_key)?;
            self.check_bound(&r.end_key)?;
        }
        let ctx = raw_ctx(req.context.as_ref())?;
        let ranges: Vec<(Bytes, Bytes)> = req
            .ranges
            .into_iter()
            .map(|r| (r.start_key, r.end_key))
            .collect();
        let kvs = self
            .raw
            .scan(
                &ctx,
                &req.cf,
                &ranges,
                req.each_limit,
                req.key_only,
                req.reverse,
            )
            .await?;
        Ok(kvrpcpb::RawBatchScanResponse {
            kvs: kvs.into_iter().map(kv_pair).collect(),
            ..Default::default()
        })
    }

    /// The seconds a V2 key has left to live (0: no TTL); TTL does not exist in V1.
    pub async fn raw_get_key_ttl(
        &self,
        req: kvrpcpb::RawGetKeyTtlRequest,
    ) -> RawResult<kvrpcpb::RawGetKeyTtlResponse> {
        self.check_key(&req.key)?;
        let ctx = raw_ctx(req.context.as_ref())?;
        let ttl = self.raw.get_key_ttl(&ctx, &req.cf, req.key).await?;
        Ok(kvrpcpb::RawGetKeyTtlResponse {
            not_found: ttl.is_none(),
            ttl: ttl.unwrap_or(0),
            ..Default::default()
        })
    }
}
