//! [`RawClient`]: the raw (non-transactional) key-value API over all regions.

use std::sync::Arc;

use pd_client::PdClient;
use proto::kvrpcpb;

use crate::batch::{BatchDelete, BatchGet, BatchPut};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::plan::{forward_bounds, next_region_start, sort_dedup_keep_last, ScanWalk};
use crate::{Key, KvPair, Value};

/// The raw KV client. Cheap to clone: clones share the PD client, the region cache and the
/// store connections.
///
/// Keys and values are [`bytes::Bytes`]; arguments take anything convertible (`Vec<u8>`,
/// `&'static [u8]`, `&'static str`, `String`, `Bytes`). Keys must not be empty. Range
/// arguments `(start, end)` mean `[start, end)`, an empty `end` meaning +inf.
#[derive(Clone)]
pub struct RawClient {
    cluster: Arc<Cluster>,
}

impl std::fmt::Debug for RawClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawClient")
            .field("cluster_id", &self.cluster.pd.cluster_id())
            .field("cached_regions", &self.cluster.regions.read().len())
            .finish()
    }
}

fn non_empty(key: Key) -> Result<Key> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("key must not be empty".to_owned()));
    }
    Ok(key)
}

/// Checks a `[start, end)` range; `Ok(false)` if it is empty.
fn check_range(start: &Key, end: &Key) -> Result<bool> {
    if end.is_empty() || start < end {
        return Ok(true);
    }
    if start == end {
        return Ok(false);
    }
    Err(Error::InvalidArgument(format!(
        "range end {end:?} is before its start {start:?}"
    )))
}

impl RawClient {
    /// Connects to the cluster whose PD is reachable through `pd_endpoints` (`host:port` or
    /// URLs), with the default [`Config`].
    pub async fn connect(pd_endpoints: Vec<String>) -> Result<RawClient> {
        RawClient::with_config(pd_endpoints, Config::default()).await
    }

    /// [`RawClient::connect`] with explicit tuning.
    pub async fn with_config(pd_endpoints: Vec<String>, config: Config) -> Result<RawClient> {
        let pd = PdClient::connect_with_config(pd_endpoints, config.pd.clone()).await?;
        Ok(RawClient::with_pd_client(pd, config))
    }

    /// A client over an already connected PD client (`config.pd` is then unused).
    pub fn with_pd_client(pd: PdClient, config: Config) -> RawClient {
        RawClient {
            cluster: Arc::new(Cluster::new(pd, config)),
        }
    }

    /// The PD client underneath.
    pub fn pd_client(&self) -> &PdClient {
        &self.cluster.pd
    }

    pub fn config(&self) -> &Config {
        &self.cluster.config
    }

    /// The value of `key`, or `None` if it does not exist.
    pub async fn get(&self, key: impl Into<Key>) -> Result<Option<Value>> {
        let key = non_empty(key.into())?;
        let req = kvrpcpb::RawGetRequest {
            key: key.clone(),
            ..Default::default()
        };
        let mut bo = self.cluster.backoff();
        let resp = self.cluster.read_key(&key, req, &mut bo).await?;
        Ok((!resp.not_found).then_some(resp.value))
    }

    /// The pairs of `keys` that exist, **sorted by key** (duplicate keys are asked once).
    /// One request per region, in parallel; not a snapshot across regions.
    pub async fn batch_get(
        &self,
        keys: impl IntoIterator<Item = impl Into<Key>>,
    ) -> Result<Vec<KvPair>> {
        let keys = keys
            .into_iter()
            .map(|k| non_empty(k.into()))
            .collect::<Result<Vec<_>>>()?;
        let keys = sort_dedup_keep_last(keys, |k| k);
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pairs = self
            .cluster
            .run_batch(&BatchGet, keys, self.cluster.backoff())
            .await?;
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(pairs)
    }

    /// Writes `value` to `key`. Fails with [`Error::Undetermined`] if the write may or may
    /// not have taken effect (its answer was lost); it is never sent again then (see the crate
    /// docs, "What is sent again").
    pub async fn put(&self, key: impl Into<Key>, value: impl Into<Value>) -> Result<()> {
        let key = non_empty(key.into())?;
        let req = kvrpcpb::RawPutRequest {
            key: key.clone(),
            value: value.into(),
            ..Default::default()
        };
        let mut bo = self.cluster.backoff();
        self.cluster.send_to_key(&key, req, &mut bo).await?;
        Ok(())
    }

    /// Writes all `pairs`; a key given twice gets its last value. Atomic within each region
    /// request only: on error, some parts may have been written.
    pub async fn batch_put<K, V>(&self, pairs: impl IntoIterator<Item = (K, V)>) -> Result<()>
    where
        K: Into<Key>,
        V: Into<Value>,
    {
        let pairs = pairs
            .into_iter()
            .map(|(k, v)| Ok((non_empty(k.into())?, v.into())))
            .collect::<Result<Vec<KvPair>>>()?;
        let pairs = sort_dedup_keep_last(pairs, |p| &p.0);
        if pairs.is_empty() {
            return Ok(());
        }
        self.cluster
            .run_batch(&BatchPut, pairs, self.cluster.backoff())
            .await?;
        Ok(())
    }

    /// Deletes `key` (deleting a missing key is not an error). Like `put`, fails with
    /// [`Error::Undetermined`] when its outcome cannot be known.
    pub async fn delete(&self, key: impl Into<Key>) -> Result<()> {
        let key = non_empty(key.into())?;
        let req = kvrpcpb::RawDeleteRequest {
            key: key.clone(),
            ..Default::default()
        };
        let mut bo = self.cluster.backoff();
        self.cluster.send_to_key(&key, req, &mut bo).await?;
        Ok(())
    }

    /// Deletes all `keys`; atomic within each region request only.
    pub async fn batch_delete(&self, keys: impl IntoIterator<Item = impl Into<Key>>) -> Result<()> {
        let keys = keys
            .into_iter()
            .map(|k| non_empty(k.into()))
            .collect::<Result<Vec<_>>>()?;
        let keys = sort_dedup_keep_last(keys, |k| k);
        if keys.is_empty() {
            return Ok(());
        }
        self.cluster
            .run_batch(&BatchDelete, keys, self.cluster.backoff())
            .await?;
        Ok(())
    }

    /// Up to `limit` pairs of `[start, end)` in ascending key order. Regions are read one
    /// after the other; the result is not a snapshot across regions.
    pub async fn scan(
        &self,
        start: impl Into<Key>,
        end: impl Into<Key>,
        limit: u32,
    ) -> Result<Vec<KvPair>> {
        self.scan_walk(start.into(), end.into(), limit, false, false)
            .await
    }

    /// Like [`RawClient::scan`], returning only the keys.
    pub async fn scan_keys(
        &self,
        start: impl Into<Key>,
        end: impl Into<Key>,
        limit: u32,
    ) -> Result<Vec<Key>> {
        let pairs = self
            .scan_walk(start.into(), end.into(), limit, true, false)
            .await?;
        Ok(pairs.into_iter().map(|(k, _)| k).collect())
    }

    /// Up to `limit` pairs of `[start, end)` in *descending* key order, i.e. the last ones
    /// of the range, starting from the greatest key below `end`.
    pub async fn scan_reverse(
        &self,
        start: impl Into<Key>,
        end: impl Into<Key>,
        limit: u32,
    ) -> Result<Vec<KvPair>> {
        self.scan_walk(start.into(), end.into(), limit, false, true)
            .await
    }

    async fn scan_walk(
        &self,
        start: Key,
        end: Key,
        limit: u32,
        key_only: bool,
        reverse: bool,
    ) -> Result<Vec<KvPair>> {
        if !check_range(&start, &end)? {
            return Ok(Vec::new());
        }
        let cluster = &self.cluster;
        let mut walk = ScanWalk::new(start, end, limit, reverse);
        let mut out = Vec::new();
        let mut bo = cluster.backoff();
        while !walk.is_done() {
            let route = if walk.is_reverse() {
                cluster.locate_before(walk.cursor(), &mut bo).await?
            } else {
                cluster.locate(walk.cursor(), &mut bo).await?
            };
            let range = walk.request(&route.region, cluster.config.scan_batch_size);
            let req = kvrpcpb::RawScanRequest {
                start_key: range.start_key,
                end_key: range.end_key,
                limit: range.limit,
                key_only,
                reverse,
                ..Default::default()
            };
            let Some(mut resp) = cluster.send(&route, req, &mut bo).await? else {
                continue;
            };
            resp.kvs.truncate(range.limit as usize);
            let last = resp.kvs.last().map(|p| p.key.clone());
            walk.advance(&route.region, range.limit, resp.kvs.len(), last.as_ref());
            out.extend(resp.kvs.into_iter().map(|p| (p.key, p.value)));
            // Progress was made: the retry budget restarts.
            bo = cluster.backoff();
        }
        Ok(out)
    }

    /// Deletes every key in `[start, end)`, one region after the other (an error leaves the
    /// regions before it deleted).
    pub async fn delete_range(&self, start: impl Into<Key>, end: impl Into<Key>) -> Result<()> {
        let (start, end) = (start.into(), end.into());
        if !check_range(&start, &end)? {
            return Ok(());
        }
        let cluster = &self.cluster;
        let mut cursor = start;
        let mut bo = cluster.backoff();
        loop {
            let route = cluster.locate(&cursor, &mut bo).await?;
            let (start_key, end_key) = forward_bounds(&route.region, &cursor, &end);
            let req = kvrpcpb::RawDeleteRangeRequest {
                start_key,
                end_key,
                ..Default::default()
            };
            if cluster.send(&route, req, &mut bo).await?.is_none() {
                continue;
            }
            match next_region_start(&route.region, &end) {
                Some(next) => cursor = next,
                None => return Ok(()),
            }
            bo = cluster.backoff();
        }
    }

    /// Writes `new` to `key` if its current value is `expected` (`None`: the key must not
    /// exist). Returns the value seen before (`None`: absent) and whether the write happened.
    ///
    /// Like every write, it is sent again only if the earlier attempt certainly did not take
    /// effect; otherwise it fails with [`Error::Undetermined`] (see the crate docs).
    pub async fn compare_and_swap<V: Into<Value>>(
        &self,
        key: impl Into<Key>,
        expected: Option<V>,
        new: V,
    ) -> Result<(Option<Value>, bool)> {
        let key = non_empty(key.into())?;
        let req = kvrpcpb::RawCasRequest {
            key: key.clone(),
            value: new.into(),
            previous_not_exist: expected.is_none(),
            previous_value: expected.map(Into::into).unwrap_or_default(),
            ..Default::default()
        };
        let mut bo = self.cluster.backoff();
        let resp = self.cluster.send_to_key(&key, req, &mut bo).await?;
        let previous = (!resp.previous_not_exist).then_some(resp.previous_value);
        Ok((previous, resp.succeed))
    }
}
