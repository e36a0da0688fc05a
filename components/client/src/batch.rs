//! Batches across regions: items grouped by region, one request per region (cut to bounded
//! size), all sent in parallel, each part retried on its own.
//!
//! A part whose request fails with a retryable error is not resent as is: after the caches
//! learned what the failure taught, its items are grouped again by the (possibly new)
//! regions, so a part whose region split becomes several parts.

use futures::future::{try_join_all, BoxFuture};
use proto::kvrpcpb;

use crate::backoff::Backoff;
use crate::cluster::Cluster;
use crate::error::Result;
use crate::plan::{group_by_region, split_chunks};
use crate::region_cache::RegionRoute;
use crate::rpc::RawRpc;
use crate::{Key, KvPair};

/// One batch operation: its items, how to build the request for one region, what it returns.
pub(crate) trait BatchOp: Send + Sync {
    type Item: Clone + Send + Sync + 'static;
    type Rpc: RawRpc;
    type Output: Send + 'static;

    fn key(item: &Self::Item) -> &[u8];
    /// Bytes the item adds to a request.
    fn size(item: &Self::Item) -> usize;
    /// The request for `items`, all in one region (the context is set when sending).
    fn request(&self, items: &[Self::Item]) -> Self::Rpc;
    fn output(resp: <Self::Rpc as RawRpc>::Response) -> Vec<Self::Output>;
}

pub(crate) struct BatchGet;

impl BatchOp for BatchGet {
    type Item = Key;
    type Rpc = kvrpcpb::RawBatchGetRequest;
    type Output = KvPair;

    fn key(item: &Key) -> &[u8] {
        item
    }

    fn size(item: &Key) -> usize {
        item.len()
    }

    fn request(&self, items: &[Key]) -> kvrpcpb::RawBatchGetRequest {
        kvrpcpb::RawBatchGetRequest {
            keys: items.to_vec(),
            ..Default::default()
        }
    }

    fn output(resp: kvrpcpb::RawBatchGetResponse) -> Vec<KvPair> {
        resp.pairs.into_iter().map(|p| (p.key, p.value)).collect()
    }
}

pub(crate) struct BatchPut;

impl BatchOp for BatchPut {
    type Item = KvPair;
    type Rpc = kvrpcpb::RawBatchPutRequest;
    type Output = ();

    fn key(item: &KvPair) -> &[u8] {
        &item.0
    }

    fn size(item: &KvPair) -> usize {
        item.0.len() + item.1.len()
    }

    fn request(&self, items: &[KvPair]) -> kvrpcpb::RawBatchPutRequest {
        kvrpcpb::RawBatchPutRequest {
            pairs: (items.iter())
                .map(|(key, value)| kvrpcpb::KvPair {
                    key: key.clone(),
                    value: value.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn output(_: kvrpcpb::RawBatchPutResponse) -> Vec<()> {
        Vec::new()
    }
}

pub(crate) struct BatchDelete;

impl BatchOp for BatchDelete {
    type Item = Key;
    type Rpc = kvrpcpb::RawBatchDeleteRequest;
    type Output = ();

    fn key(item: &Key) -> &[u8] {
        item
    }

    fn size(item: &Key) -> usize {
        item.len()
    }

    fn request(&self, items: &[Key]) -> kvrpcpb::RawBatchDeleteRequest {
        kvrpcpb::RawBatchDeleteRequest {
            keys: items.to_vec(),
            ..Default::default()
        }
    }

    fn output(_: kvrpcpb::RawBatchDeleteResponse) -> Vec<()> {
        Vec::new()
    }
}

impl Cluster {
    /// Runs `op` over `items`, sorted by key, and returns the outputs of all parts in key
    /// order of the parts.
    pub(crate) async fn run_batch<B: BatchOp>(
        &self,
        op: &B,
        items: Vec<B::Item>,
        mut bo: Backoff,
    ) -> Result<Vec<B::Output>> {
        let groups = self.group::<B>(items, &mut bo).await?;
        self.run_groups(op, groups, bo).await
    }

    /// Cuts the region groups into parts and runs them in parallel.
    fn run_groups<'a, B: BatchOp>(
        &'a self,
        op: &'a B,
        groups: Vec<(RegionRoute, Vec<B::Item>)>,
        bo: Backoff,
    ) -> BoxFuture<'a, Result<Vec<B::Output>>> {
        let mut parts = Vec::new();
        for (route, items) in groups {
            for chunk in self.chunks::<B>(items) {
                parts.push(self.run_part(op, route.clone(), chunk, bo.clone()));
            }
        }
        Box::pin(async move {
            let outputs = try_join_all(parts).await?;
            Ok(outputs.into_iter().flatten().collect())
        })
    }

    fn chunks<B: BatchOp>(&self, items: Vec<B::Item>) -> Vec<Vec<B::Item>> {
        let (max_keys, max_bytes) = (self.config.max_batch_keys, self.config.max_batch_bytes);
        split_chunks(items, max_keys, max_bytes, B::size)
    }

    fn fits_one_part<B: BatchOp>(&self, items: &[B::Item]) -> bool {
        let bytes: usize = items.iter().map(B::size).sum();
        items.len() <= 1
            || (items.len() <= self.config.max_batch_keys && bytes <= self.config.max_batch_bytes)
    }

    /// Runs one part until it succeeds. After a retryable failure its items are grouped
    /// again: while they still form one part, the loop goes on here; if the part now spans
    /// several regions, it becomes that many parts (the only recursion, so its depth is
    /// bounded by the splits seen, not by the number of retries).
    async fn run_part<B: BatchOp>(
        &self,
        op: &B,
        mut route: RegionRoute,
        mut items: Vec<B::Item>,
        mut bo: Backoff,
    ) -> Result<Vec<B::Output>> {
        loop {
            if let Some(resp) = self.send(&route, op.request(&items), &mut bo).await? {
                return Ok(B::output(resp));
            }
            let mut groups = self.group::<B>(items, &mut bo).await?;
            if groups.len() == 1 && self.fits_one_part::<B>(&groups[0].1) {
                if let Some(group) = groups.pop() {
                    (route, items) = group;
                    continue;
                }
            }
            return self.run_groups(op, groups, bo).await;
        }
    }

    /// Groups sorted `items` by region, loading the regions the cache lacks.
    async fn group<B: BatchOp>(
        &self,
        mut items: Vec<B::Item>,
        bo: &mut Backoff,
    ) -> Result<Vec<(RegionRoute, Vec<B::Item>)>> {
        loop {
            // Load the region of each uncached key, in key order; one load usually covers
            // many of the following keys.
            let mut from = 0;
            while let Some(offset) = items[from..]
                .iter()
                .position(|item| !self.is_cached(B::key(item)))
            {
                from += offset;
                self.locate(B::key(&items[from]), bo).await?;
            }
            let (groups, unknown) = group_by_region(&self.regions.read(), items, B::key);
            if unknown.is_empty() {
                return Ok(groups);
            }
            // An entry was dropped meanwhile by a concurrent request: start over.
            items = groups.into_iter().flat_map(|(_, items)| items).collect();
            items.extend(unknown);
            items.sort_by(|a, b| B::key(a).cmp(B::key(b)));
        }
    }
}
