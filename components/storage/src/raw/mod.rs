//! The raw KV API on domain types: single-version keys, written through Raft, read under a
//! read grant on the read pool.
//!
//! Each command takes a [`RawCtx`] (the region the client addressed and the API version it
//! speaks), a column family and keys as the client sent them:
//! - API V1 keys are stored as they are and stay out of keyspaces (V1 writes into a keyspace's
//!   range are refused, V1 scans and delete-ranges skip those ranges); a non-zero TTL is
//!   refused.
//! - API V2 keys must carry the raw mode and the default keyspace's prefix and are stored in
//!   their memcomparable encoding; V2 values carry an optional expire time, so TTL works
//!   (expired values read as absent and scans skip them). See [`crate::keyspace`].
//!
//! Order of a command (via [`RaftKv`]): every key is checked against its API first, then:
//! - reads: read grant, then one read pool task that takes its snapshot when it runs;
//! - writes: the latches of their keys (delete-range: the range latch), then the proposal;
//!   the latches are released when the raftstore answers;
//! - compare-and-swap: the key's latch, a read grant, a read, the decision here, and only then
//!   (if it succeeds) a plain put. No write of this store to the key can land between the
//!   read and the proposal (see [`crate::latch`]); the raftstore applies, it decides nothing.
//!
//! Deliberately absent: request size limits (the server checks key, value and scan sizes
//! before calling; a write too large for one Raft entry is the raftstore's
//! `RaftEntryTooLarge`), removing expired V2 values (they are hidden, not collected), TTL in
//! API V1 (TiKV's V1TTL).

mod scan;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use engine::keys;
use raftstore::cmd::{engine_cf, WriteOp};

use crate::keyspace::{self, Api, KeyMode};
use crate::kv::{Error, RaftKv, RegionCtx, Result};
use crate::latch::Latches;

pub use scan::ScanRange;

/// What a raw command is addressed to.
#[derive(Clone, Debug, PartialEq)]
pub struct RawCtx {
    pub region: RegionCtx,
    pub api: Api,
}

/// One pair of a put: `ttl` seconds to live, 0 for ever (API V2 only).
#[derive(Clone, Debug, PartialEq)]
pub struct RawPut {
    pub key: Bytes,
    pub value: Bytes,
    pub ttl: u64,
}

/// The outcome of a compare-and-swap: whether it wrote, and the value it found.
#[derive(Clone, Debug, PartialEq)]
pub struct CasOutcome {
    pub succeed: bool,
    pub previous: Option<Bytes>,
}

/// See the module docs. Cheap to clone (shared).
#[derive(Clone)]
pub struct RawStore {
    kv: RaftKv,
    latches: Latches,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

impl RawStore {
    pub fn new(kv: RaftKv) -> RawStore {
        RawStore {
            kv,
            latches: Latches::default(),
        }
    }

    pub fn kv(&self) -> &RaftKv {
        &self.kv
    }

    pub fn latches(&self) -> &Latches {
        &self.latches
    }

    pub async fn get(&self, ctx: &RawCtx, cf: &str, key: Bytes) -> Result<Option<Bytes>> {
        let cf = raw_cf(cf)?;
        let api = ctx.api;
        let stored = stored_key(api, &key)?;
        self.kv
            .read_grant(ctx.region.header(vec![stored.clone()]))
            .await?;
        let key = keys::data_key(&stored);
        self.kv
            .read(move |engine| visible(api, engine.get(cf, &key)?, keyspace::unix_secs()))
            .await
    }

    /// The pairs of `keys` that exist, in request order, from one snapshot.
    pub async fn batch_get(
        &self,
        ctx: &RawCtx,
        cf: &str,
        keys: Vec<Bytes>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let cf = raw_cf(cf)?;
        let api = ctx.api;
        let stored = keys
            .iter()
            .map(|k| stored_key(api, k))
            .collect::<Result<Vec<_>>>()?;
        self.kv
            .read_grant(ctx.region.header(stored.clone()))
            .await?;
        self.kv
            .read(move |engine| {
                let snap = engine.snapshot();
                let now = keyspace::unix_secs();
                let mut pairs = Vec::with_capacity(keys.len());
                for (k, s) in keys.into_iter().zip(stored) {
                    if let Some(v) = visible(api, snap.get(cf, &keys::data_key(&s))?, now)? {
                        pairs.push((k, v));
                    }
                }
                Ok(pairs)
            })
            .await
    }

    /// Writes every pair in one Raft entry.
    pub async fn put(&self, ctx: &RawCtx, cf: &str, pairs: Vec<RawPut>) -> Result<()> {
        let cf = raw_cf(cf)?;
        let mut keys = Vec::with_capacity(pairs.len());
        let mut ops = Vec::with_capacity(pairs.len());
        for p in pairs {
            let key = stored_key(ctx.api, &p.key)?;
            ops.push(WriteOp::put(
                cf,
                key.clone(),
                stored_value(ctx.api, p.value, p.ttl)?,
            ));
            keys.push(key);
        }
        // Blind writes: shared latches (see `crate::latch`).
        let latches = self.kv.latch_shared(&self.latches, &keys).await?;
        self.kv.write(ctx.region.header(keys), ops, latches).await?;
        Ok(())
    }

    /// Deletes every key in one Raft entry.
    pub async fn delete(&self, ctx: &RawCtx, cf: &str, keys: Vec<Bytes>) -> Result<()> {
        let cf = raw_cf(cf)?;
        let keys = keys
            .iter()
            .map(|k| stored_key(ctx.api, k))
            .collect::<Result<Vec<_>>>()?;
        let latches = self.kv.latch_shared(&self.latches, &keys).await?;
        let ops = keys
            .iter()
            .map(|k| WriteOp::delete(cf, k.clone()))
            .collect();
        self.kv.write(ctx.region.header(keys), ops, latches).await?;
        Ok(())
    }

    /// Deletes `[start, end)` (`end` empty: to the end of the keyspace, or of all keys in
    /// V1); in V1 without the parts inside keyspaces.
    pub async fn delete_range(
        &self,
        ctx: &RawCtx,
        cf: &str,
        start: Bytes,
        end: Bytes,
    ) -> Result<()> {
        let cf = raw_cf(cf)?;
        if !end.is_empty() && end <= start {
            return Err(invalid(
                "delete range: end key must be greater than start key",
            ));
        }
        let stored_start = stored_bound(ctx.api, &start, false)?;
        let stored_end = stored_bound(ctx.api, &end, true)?;
        let ranges = match ctx.api {
            Api::V1 => keyspace::outside_fence(&keyspace::V1_RAW_FENCE, &stored_start, &stored_end),
            Api::V2 => vec![(stored_start.to_vec(), stored_end.to_vec())],
        };
        let latches = self.kv.latch_range(&self.latches).await?;
        let ops = ranges
            .into_iter()
            .map(|(s, e)| WriteOp::delete_range(cf, Bytes::from(s), Bytes::from(e)))
            .collect();
        self.kv
            .write(ctx.region.header(vec![stored_start]), ops, latches)
            .await?;
        Ok(())
    }

    /// Puts `value` if the key's current value is `expected` (`None`: the key is absent).
    pub async fn compare_and_swap(
        &self,
        ctx: &RawCtx,
        cf: &str,
        put: RawPut,
        expected: Option<Bytes>,
    ) -> Result<CasOutcome> {
        let cf = raw_cf(cf)?;
        let api = ctx.api;
        let key = stored_key(api, &put.key)?;
        let value = stored_value(api, put.value, put.ttl)?;
        let header = ctx.region.header(vec![key.clone()]);
        // Decide under the key's latch, on a read after a read grant (see the module docs).
        let latches = self.kv.latch(&self.latches, &header.keys).await?;
        self.kv.read_grant(header.clone()).await?;
        let data_key = keys::data_key(&key);
        let previous = self
            .kv
            .read(move |engine| visible(api, engine.get(cf, &data_key)?, keyspace::unix_secs()))
            .await?;
        let succeed = previous == expected;
        if succeed {
            self.kv
                .write(header, vec![WriteOp::put(cf, key, value)], latches)
                .await?;
        }
        Ok(CasOutcome { succeed, previous })
    }

    /// Scans `ranges` of one region from one snapshot, at most `each_limit` pairs from each,
    /// concatenated in request order. Forward: `[start, end)`. Reverse: `[end, start)`, newest
    /// key first, an empty `start` meaning the end of the region. Keys answered as the client
    /// sent them (V2: decoded); `key_only` answers empty values.
    pub async fn scan(
        &self,
        ctx: &RawCtx,
        cf: &str,
        ranges: &[(Bytes, Bytes)],
        each_limit: u32,
        key_only: bool,
        reverse: bool,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let cf = raw_cf(cf)?;
        let ranges = ranges
            .iter()
            .map(|(start, end)| ScanRange::new(ctx.api, start, end, each_limit, key_only, reverse))
            .collect::<Result<Vec<_>>>()?;
        // A forward scan's start must lie in the region; a reverse scan's start is checked
        // against the region's range once the grant says what it is.
        let checked = if reverse {
            vec![]
        } else {
            ranges.iter().map(|r| r.start.clone()).collect()
        };
        let grant = self.kv.read_grant(ctx.region.header(checked)).await?;
        self.kv
            .read(move |engine| {
                let snap = engine.snapshot();
                let mut kvs = Vec::new();
                for range in &ranges {
                    scan::scan_range(&snap, &grant.region, cf, range, &mut kvs)?;
                }
                Ok(kvs)
            })
            .await
    }

    /// The seconds a V2 key has left to live (`Some(0)`: no TTL; `None`: absent). TTL does not
    /// exist in V1.
    pub async fn get_key_ttl(&self, ctx: &RawCtx, cf: &str, key: Bytes) -> Result<Option<u64>> {
        let cf = raw_cf(cf)?;
        if ctx.api == Api::V1 {
            return Err(invalid("TTL is not supported in API V1 (use API V2)"));
        }
        let key = stored_key(ctx.api, &key)?;
        self.kv
            .read_grant(ctx.region.header(vec![key.clone()]))
            .await?;
        let key = keys::data_key(&key);
        self.kv
            .read(move |engine| {
                let Some(stored) = engine.get(cf, &key)? else {
                    return Ok(None);
                };
                let now = keyspace::unix_secs();
                let value = keyspace::decode_raw_value(&stored).map_err(Error::Other)?;
                Ok(value.is_live(now).then(|| value.ttl(now)))
            })
            .await
    }
}

/// The engine column family of a raw request's `cf` (empty: default).
fn raw_cf(name: &str) -> Result<&'static str> {
    engine_cf(name).ok_or_else(|| invalid(format!("unknown column family {name:?}")))
}

/// Where `key` is stored (and checked against the region): as it is in V1, outside any
/// keyspace; encoded in V2, inside the keyspace its prefix names.
/// The form `key` is stored in (and regions are cut in) under `api`.
pub fn stored_key(api: Api, key: &Bytes) -> Result<Bytes> {
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
fn stored_bound(api: Api, bound: &Bytes, is_end: bool) -> Result<Bytes> {
    match api {
        Api::V1 => Ok(bound.clone()),
        Api::V2 => {
            keyspace::check_v2_bound(KeyMode::Raw, bound, is_end).map_err(invalid)?;
            Ok(Bytes::from(keyspace::encode(bound)))
        }
    }
}

/// What is stored for `value` with `ttl` seconds to live (0: forever; V1 refuses others).
fn stored_value(api: Api, value: Bytes, ttl: u64) -> Result<Bytes> {
    match api {
        Api::V1 if ttl != 0 => Err(invalid("TTL is not supported (API V1)")),
        Api::V1 => Ok(value),
        Api::V2 => Ok(Bytes::from(keyspace::encode_raw_value(
            &value,
            ttl,
            keyspace::unix_secs(),
        ))),
    }
}

/// What a read of `api` sees of a stored value at `now_secs` (V2: nothing once expired).
fn visible(api: Api, stored: Option<Vec<u8>>, now_secs: u64) -> Result<Option<Bytes>> {
    match (api, stored) {
        (_, None) => Ok(None),
        (Api::V1, Some(v)) => Ok(Some(Bytes::from(v))),
        (Api::V2, Some(v)) => Ok(keyspace::live_raw_value(&v, now_secs)
            .map_err(Error::Other)?
            .map(Bytes::copy_from_slice)),
    }
}
