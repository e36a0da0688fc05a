//! Region split on request (`tikvpb.Tikv/SplitRegion`): new region and peer ids come from a
//! [`SplitIdAllocator`] (PD's `AskBatchSplit` in a real store), the split itself is a Raft
//! admin command of the region's leader, and the new layout is reported back to PD.
//!
//! Deliberately absent: deciding when to split (size or load based checks).

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use proto::kvrpcpb::{SplitRegionRequest, SplitRegionResponse};
use proto::metapb;
use raftstore::cmd::SplitIds;
use raftstore::RequestHeader;

use crate::raw::{Failure, RawStorage};

/// Most split keys one request may carry.
pub const MAX_SPLIT_KEYS: usize = 256;

/// Where split ids come from, and where the result goes.
pub trait SplitIdAllocator: Send + Sync + 'static {
    /// Ids for `count` new regions split off `region`.
    fn alloc(
        &self,
        region: metapb::Region,
        count: u32,
    ) -> BoxFuture<'static, Result<Vec<SplitIds>, String>>;
    /// Tells the cluster's metadata service about the regions a split produced.
    fn report(&self, regions: Vec<metapb::Region>) -> BoxFuture<'static, ()>;
}

/// Validates and runs one `SplitRegion` request.
pub async fn split_region(
    storage: &RawStorage,
    ids: &Arc<dyn SplitIdAllocator>,
    req: SplitRegionRequest,
) -> Result<SplitRegionResponse, Failure> {
    let mut keys: Vec<Bytes> = if req.split_keys.is_empty() {
        vec![req.split_key.clone()]
    } else {
        req.split_keys.clone()
    };
    keys.sort();
    keys.dedup();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(Failure::Message("split keys must not be empty".into()));
    }
    if keys.len() > MAX_SPLIT_KEYS {
        return Err(Failure::Message(format!(
            "{} split keys, more than the limit of {MAX_SPLIT_KEYS}",
            keys.len()
        )));
    }
    if keys.iter().any(|k| k.len() > storage.limits().max_key_size) {
        return Err(Failure::Message(
            "split key longer than the key size limit".into(),
        ));
    }
    let ctx = req
        .context
        .ok_or_else(|| Failure::Message("request has no context".into()))?;
    // The current region, checked against the request's routing before asking for ids.
    let header = RequestHeader {
        region_id: ctx.region_id,
        epoch: ctx.region_epoch,
        peer: ctx.peer,
        keys: keys.clone(),
    };
    let grant = storage.router().read_grant(header.clone()).await?;
    let new_ids = ids
        .alloc(grant.region.clone(), keys.len() as u32)
        .await
        .map_err(|e| Failure::Message(format!("allocating split ids: {e}")))?;
    if new_ids.len() != keys.len() {
        return Err(Failure::Message(
            "the id allocator returned the wrong number of ids".into(),
        ));
    }
    let regions = storage.router().split(header, keys, new_ids).await?;
    ids.report(regions.clone()).await;
    Ok(SplitRegionResponse {
        left: regions.first().cloned(),
        right: regions.last().cloned(),
        regions,
        ..Default::default()
    })
}
