//! Raw KV on the raftstore: validation and limits, writes as proposals, reads of the engine
//! under a read grant.
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
//! Deliberately absent: TTL (API V1 only; a non-zero TTL is an error), API V2 keyspaces.

use std::sync::Arc;

use bytes::Bytes;
use engine::{keys, Engine};
use proto::errorpb;
use proto::kvrpcpb::{self, Context, KvPair};
use raftstore::cmd::{engine_cf, WriteOp};
use raftstore::{ReadGrant, RequestHeader, StoreRouter};
use storage::{LatchGuard, Latches};
use tokio::sync::oneshot;

use crate::config::Limits;
use crate::errors::{to_wire, WireError};

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
}

impl RawStorage {
    pub fn new(router: StoreRouter, engine: Engine, limits: Limits) -> RawStorage {
        RawStorage {
            router,
            engine,
            limits: Arc::new(limits),
            latches: Latches::default(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn router(&self) -> &StoreRouter {
        &self.router
    }

    pub fn latches(&self) -> &Latches {
        &self.latches
    }

    fn header(&self, ctx: Option<&Context>, keys: Vec<Bytes>) -> RawResult<RequestHeader> {
        let ctx = ctx.ok_or_else(|| invalid("request has no context"))?;
        if ctx.api_version != kvrpcpb::ApiVersion::V1 as i32 {
            return Err(invalid(
                "only API V1 (raw keys without keyspace) is supported",
            ));
        }
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

    fn check_key(&self, key: &[u8]) -> RawResult<()> {
        if key.is_empty() {
            return Err(invalid("key must not be empty"));
        }
        if key.len() > self.limits.max_key_size {
            return Err(invalid(format!(
                "key is {} bytes, more than the limit of {}",
                key.len(),
                self.limits.max_key_size
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> RawResult<()> {
        if value.len() > self.limits.max_value_size {
            return Err(invalid(format!(
                "value is {} bytes, more than the limit of {}",
                value.len(),
                self.limits.max_value_size
            )));
        }
        Ok(())
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
            let _ = tx.send(r);
            drop(latches);
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
        let header = self.header(req.context.as_ref(), vec![req.key.clone()])?;
        self.grant(header).await?;
        let value = self.engine.get(cf, &keys::data_key(&req.key))?;
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
        let header = self.header(req.context.as_ref(), req.keys.clone())?;
        self.grant(header).await?;
        let snap = self.engine.snapshot();
        let mut pairs = Vec::with_capacity(req.keys.len());
        for k in req.keys {
            if let Some(v) = snap.get(cf, &keys::data_key(&k))? {
                pairs.push(KvPair {
                    key: k,
                    value: v.into(),
                    ..Default::default()
                });
            }
        }
        Ok(kvrpcpb::RawBatchGetResponse {
            pairs,
            ..Default::default()
        })
    }

    pub async fn raw_put(&self, req: kvrpcpb::RawPutRequest) -> RawResult<kvrpcpb::RawPutResponse> {
        self.check_key(&req.key)?;
        self.check_value(&req.value)?;
        Self::check_ttl(req.ttl)?;
        let cf = Self::cf(&req.cf)?;
        let header = self.header(req.context.as_ref(), vec![req.key.clone()])?;
        let latches = self.latch(&header.keys).await?;
        self.write(header, vec![WriteOp::put(cf, req.key, req.value)], latches)
            .await?;
        Ok(Default::default())
    }

    pub async fn raw_batch_put(
        &self,
        req: kvrpcpb::RawBatchPutRequest,
    ) -> RawResult<kvrpcpb::RawBatchPutResponse> {
        self.check_batch(req.pairs.len())?;
        Self::check_ttl(req.ttl)?;
        for ttl in &req.ttls {
            Self::check_ttl(*ttl)?;
        }
        let cf = Self::cf(&req.cf)?;
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
        let keys = req.pairs.iter().map(|p| p.key.clone()).collect();
        let header = self.header(req.context.as_ref(), keys)?;
        let latches = self.latch(&header.keys).await?;
        let ops = req
            .pairs
            .into_iter()
            .map(|p| WriteOp::put(cf, p.key, p.value))
            .collect();
        self.write(header, ops, latches).await?;
        Ok(Default::default())
    }

    pub async fn raw_delete(
        &self,
        req: kvrpcpb::RawDeleteRequest,
    ) -> RawResult<kvrpcpb::RawDeleteResponse> {
        self.check_key(&req.key)?;
        let cf = Self::cf(&req.cf)?;
        let header = self.header(req.context.as_ref(), vec![req.key.clone()])?;
        let latches = self.latch(&header.keys).await?;
        self.write(header, vec![WriteOp::delete(cf, req.key)], latches)
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
        let header = self.header(req.context.as_ref(), req.keys.clone())?;
        let latches = self.latch(&header.keys).await?;
        let ops = req
            .keys
            .into_iter()
            .map(|k| WriteOp::delete(cf, k))
            .collect();
        self.write(header, ops, latches).await?;
        Ok(Default::default())
    }

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
        let header = self.header(req.context.as_ref(), vec![req.start_key.clone()])?;
        let latches = self.latch_range().await?;
        self.write(
            header,
            vec![WriteOp::delete_range(cf, req.start_key, req.end_key)],
            latches,
        )
        .await?;
        Ok(Default::default())
    }

    pub async fn raw_compare_and_swap(
        &self,
        req: kvrpcpb::RawCasRequest,
    ) -> RawResult<kvrpcpb::RawCasResponse> {
        self.check_key(&req.key)?;
        self.check_value(&req.value)?;
        Self::check_ttl(req.ttl)?;
        let cf = Self::cf(&req.cf)?;
        let header = self.header(req.context.as_ref(), vec![req.key.clone()])?;
        // Decide under the key's latch, on a read after a read grant: no write of this store
        // to the key can land between the read and the proposal below (see `storage::latch`).
        let latches = self.latch(&header.keys).await?;
        self.grant(header.clone()).await?;
        let previous = self.engine.get(cf, &keys::data_key(&req.key))?;
        let succeed = match &previous {
            None => req.previous_not_exist,
            Some(v) => !req.previous_not_exist && v[..] == req.previous_value[..],
        };
        if succeed {
            self.write(header, vec![WriteOp::put(cf, req.key, req.value)], latches)
                .await?;
        }
        Ok(kvrpcpb::RawCasResponse {
            succeed,
            previous_not_exist: previous.is_none(),
            previous_value: previous.map(Bytes::from).unwrap_or_default(),
            ..Default::default()
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
        let checked = if req.reverse {
            vec![]
        } else {
            vec![req.start_key.clone()]
        };
        let header = self.header(req.context.as_ref(), checked)?;
        let grant = self.grant(header).await?;
        let mut kvs = Vec::new();
        let range = ScanRange {
            start: &req.start_key,
            end: &req.end_key,
            limit: req.limit,
            key_only: req.key_only,
            reverse: req.reverse,
        };
        self.scan_range(&self.engine.snapshot(), &grant.region, cf, &range, &mut kvs)?;
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
        let checked = if req.reverse {
            vec![]
        } else {
            req.ranges.iter().map(|r| r.start_key.clone()).collect()
        };
        let header = self.header(req.context.as_ref(), checked)?;
        let grant = self.grant(header).await?;
        let snap = self.engine.snapshot();
        let mut kvs = Vec::new();
        for r in &req.ranges {
            let range = ScanRange {
                start: &r.start_key,
                end: &r.end_key,
                limit: req.each_limit,
                key_only: req.key_only,
                reverse: req.reverse,
            };
            self.scan_range(&snap, &grant.region, cf, &range, &mut kvs)?;
        }
        Ok(kvrpcpb::RawBatchScanResponse {
            kvs,
            ..Default::default()
        })
    }

    /// TTL belongs to API V1TTL / V2, which rangekv does not offer.
    pub async fn raw_get_key_ttl(
        &self,
        _req: kvrpcpb::RawGetKeyTtlRequest,
    ) -> RawResult<kvrpcpb::RawGetKeyTtlResponse> {
        Err(invalid("TTL is not supported (API V1)"))
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

    /// Scans one range clamped to `region`. Forward: `[start, end)`. Reverse: `[end, start)`,
    /// newest key first, an empty `start` meaning the end of the region; a reverse `start`
    /// outside `(region.start, region.end]` is `KeyNotInRegion`.
    fn scan_range(
        &self,
        snap: &engine::Snapshot<'_>,
        region: &proto::metapb::Region,
        cf: &'static str,
        range: &ScanRange<'_>,
        out: &mut Vec<KvPair>,
    ) -> RawResult<()> {
        let (lower, upper): (&[u8], &[u8]) = if range.reverse {
            let start = range.start;
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
            (range.end, start)
        } else {
            (range.start, range.end)
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
        let (lo, hi) = (keys::data_key(lower), keys::data_end_key(upper));
        let mut taken = 0;
        snap.scan(cf, &lo, Some(&hi), range.reverse, |k, v| {
            out.push(KvPair {
                key: Bytes::copy_from_slice(keys::origin_key(k)),
                value: if range.key_only {
                    Bytes::new()
                } else {
                    Bytes::copy_from_slice(v)
                },
                ..Default::default()
            });
            taken += 1;
            taken < limit
        })?;
        Ok(())
    }
}

/// One range of a scan request.
struct ScanRange<'a> {
    start: &'a [u8],
    end: &'a [u8],
    limit: u32,
    key_only: bool,
    reverse: bool,
}
