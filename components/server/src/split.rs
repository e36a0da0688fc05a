//! Region split on request (`tikvpb.Tikv/SplitRegion`): new region and peer ids come from a
//! [`SplitIdAllocator`] (PD's `AskBatchSplit` in a real store), the split itself is a Raft
//! admin command of the region's leader, and the new layout is reported back to PD.
//!
//! [`size_split_key`] decides where a region that outgrew the configured size splits; the
//! store's split checker (`split_checker`) calls [`size_check`] for the regions it leads,
//! which also measures them for the approximate sizes reported to PD.
//!
//! [`PdSplits`] runs the splits PD asks for in its region heartbeat answers (`SplitRegion`
//! with policy `USEKEY`, sent to keep regions inside API V2 keyspace boundaries), one at a time
//! per region.
//!
//! Load-based split decides in [`crate::load_split`] and splits through [`split_at`] too.
//!
//! Deliberately absent: size estimates from SST properties (the checker reads the region's
//! data, and only after the region applied new entries).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use proto::kvrpcpb::{SplitRegionRequest, SplitRegionResponse};
use proto::metapb;
use proto::pdpb::{CheckPolicy, RegionHeartbeatResponse};
use raftstore::cmd::SplitIds;
use raftstore::{RequestHeader, StoreRouter};

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
    if keys.iter().any(|k| k.is_empty()) {
        return Err(Failure::Message("split keys must not be empty".into()));
    }
    if !req.is_raw_kv {
        // Transactional clients send user keys; their regions are cut in the keys' encoded
        // (memcomparable) form, as the data is stored.
        keys = keys
            .iter()
            .map(|k| Bytes::from(storage::mvcc::Key::from_raw(k).into_encoded()))
            .collect();
    }
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
        replica_read: false,
        region_id: ctx.region_id,
        epoch: ctx.region_epoch,
        peer: ctx.peer,
        keys: keys.clone(),
    };
    let regions = split_at(storage.router(), ids, header, keys).await?;
    Ok(SplitRegionResponse {
        left: regions.first().cloned(),
        right: regions.last().cloned(),
        regions,
        ..Default::default()
    })
}

/// Splits the region named by `header` at `keys` (sorted, deduplicated): confirms the routing
/// with the leader, takes ids from `ids`, splits through Raft and reports the result.
pub async fn split_at(
    router: &StoreRouter,
    ids: &Arc<dyn SplitIdAllocator>,
    header: RequestHeader,
    keys: Vec<Bytes>,
) -> Result<Vec<metapb::Region>, Failure> {
    let grant = router.read_grant(header.clone()).await?;
    let new_ids = ids
        .alloc(grant.region, keys.len() as u32)
        .await
        .map_err(|e| Failure::Message(format!("allocating split ids: {e}")))?;
    if new_ids.len() != keys.len() {
        return Err(Failure::Message(
            "the id allocator returned the wrong number of ids".into(),
        ));
    }
    let regions = router.split(header, keys, new_ids).await?;
    ids.report(regions.clone()).await;
    Ok(regions)
}

/// Runs the splits PD asks a region's leader for (see the module docs).
#[derive(Clone)]
pub struct PdSplits {
    router: StoreRouter,
    ids: Arc<dyn SplitIdAllocator>,
    runtime: tokio::runtime::Handle,
    /// Regions with a split of ours in flight: PD repeats its answer on every heartbeat until
    /// it learns of the split, and those repeats are ignored meanwhile.
    in_flight: Arc<Mutex<HashSet<u64>>>,
}

impl PdSplits {
    /// Splits run as tasks on `runtime`.
    pub fn new(
        router: StoreRouter,
        ids: Arc<dyn SplitIdAllocator>,
        runtime: tokio::runtime::Handle,
    ) -> PdSplits {
        PdSplits {
            router,
            ids,
            runtime,
            in_flight: Arc::default(),
        }
    }

    /// Starts the split a heartbeat answer asks for, if it asks for one by keys and no split
    /// of the region is in flight. The split is checked against the region's current epoch
    /// and range like any other, so a stale answer fails harmlessly.
    pub fn on_heartbeat_response(&self, resp: &RegionHeartbeatResponse) {
        let Some(split) = &resp.split_region else {
            return;
        };
        if split.policy != CheckPolicy::Usekey as i32 || split.keys.is_empty() {
            tracing::debug!(
                region_id = resp.region_id,
                "ignoring a split request without keys"
            );
            return;
        }
        let region_id = resp.region_id;
        if !self.in_flight.lock().insert(region_id) {
            return;
        }
        let mut keys = split.keys.clone();
        keys.sort();
        keys.dedup();
        let header = RequestHeader {
            replica_read: false,
            region_id,
            epoch: resp.region_epoch,
            peer: resp.target_peer,
            keys: keys.clone(),
        };
        let this = self.clone();
        self.runtime.spawn(async move {
            match split_at(&this.router, &this.ids, header, keys).await {
                Ok(regions) => tracing::info!(
                    region_id,
                    regions = regions.len(),
                    "split a region as PD asked"
                ),
                Err(e) => tracing::debug!(region_id, ?e, "split asked by PD failed"),
            }
            this.in_flight.lock().remove(&region_id);
        });
    }
}

/// Where to split `region` by size: `None` while its data stays within `max_size`, else the
/// first key after `split_size` bytes. Stops reading once `max_size` is passed.
///
/// Transactional data (anything in the `write` column family) is measured and cut by its
/// commit records, and the split key is the encoded user key without its timestamp, so that
/// all versions of a key stay in one region. Raw data lives in `default` and is cut at a raw
/// key.
pub fn size_split_key(
    engine: &engine::Engine,
    region: &metapb::Region,
    max_size: u64,
    split_size: u64,
) -> engine::Result<Option<Bytes>> {
    Ok(size_check(engine, region, max_size, split_size)?.split_key)
}

/// What one read of a region for [`size_split_key`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SizeCheck {
    /// Where to split, if the region outgrew `max_size`.
    pub split_key: Option<Bytes>,
    /// Bytes of keys and values read: the region's size, or a lower bound past `max_size`
    /// (the read stops at the split key).
    pub size: u64,
    /// User keys read (versions of a transactional key count once), likewise.
    pub keys: u64,
}

/// [`size_split_key`] with the size and key count it measured on the way.
pub fn size_check(
    engine: &engine::Engine,
    region: &metapb::Region,
    max_size: u64,
    split_size: u64,
) -> engine::Result<SizeCheck> {
    let start = engine::keys::data_key(&region.start_key);
    let end = engine::keys::data_end_key(&region.end_key);
    let mut has_txn_data = false;
    engine.scan(engine::CF_WRITE, &start, Some(&end), |_, _| {
        has_txn_data = true;
        false
    })?;
    let (cf, strip_ts) = if has_txn_data {
        (engine::CF_WRITE, true)
    } else {
        (engine::CF_DEFAULT, false)
    };
    // Transactional values too large to live inline are in `default`: count them as well.
    let mut size = 0u64;
    if has_txn_data {
        engine.scan(engine::CF_DEFAULT, &start, Some(&end), |k, v| {
            size += (k.len() + v.len()) as u64;
            size <= max_size
        })?;
    }
    let mut take_next = false;
    let mut split_key: Option<Bytes> = None;
    let mut last_user_key: Vec<u8> = Vec::new();
    let mut keys = 0u64;
    engine.scan(cf, &start, Some(&end), |k, v| {
        let key = engine::keys::origin_key(k);
        let key = if strip_ts {
            storage::mvcc::Key::split_on_ts(key).map_or(key, |(user, _)| user)
        } else {
            key
        };
        // Only a new user key can start a region (never between versions of one key).
        if take_next && split_key.is_none() && key != last_user_key.as_slice() {
            split_key = Some(Bytes::copy_from_slice(key));
        }
        if key != last_user_key.as_slice() || keys == 0 {
            last_user_key = key.to_vec();
            keys += 1;
        }
        size += (k.len() + v.len()) as u64;
        if size >= split_size {
            take_next = true;
        }
        size <= max_size || split_key.is_none()
    })?;
    Ok(SizeCheck {
        split_key: if size > max_size { split_key } else { None },
        size,
        keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{keys, Engine, EngineOptions, WriteBatch, CF_DEFAULT, CF_WRITE};
    use storage::mvcc::Key;

    #[test]
    fn transactional_data_is_never_split_between_versions_of_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        let mut wb = WriteBatch::new();
        // Twenty versions of "a" (about 2 KB), then "b" and "c".
        for ts in 1..=20u64 {
            wb.put(
                CF_WRITE,
                &keys::data_key(Key::from_raw(b"a").append_ts(ts).as_encoded()),
                &[0u8; 100],
            );
        }
        for k in [&b"b"[..], b"c"] {
            wb.put(
                CF_WRITE,
                &keys::data_key(Key::from_raw(k).append_ts(1).as_encoded()),
                &[0u8; 100],
            );
        }
        engine.write(wb, false).unwrap();
        let region = metapb::Region {
            id: 1,
            ..Default::default()
        };
        // Versions of one key count as one key.
        let whole = size_check(&engine, &region, u64::MAX, u64::MAX).unwrap();
        assert_eq!((whole.split_key, whole.keys), (None, 3));
        let key = size_split_key(&engine, &region, 1000, 500).unwrap();
        assert_eq!(
            key.as_deref(),
            Some(Key::from_raw(b"b").as_encoded()),
            "the split key must be the next user key, without a timestamp"
        );
    }

    #[test]
    fn size_split_key_waits_for_max_then_cuts_after_split_size() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        let mut wb = WriteBatch::new();
        // 10 entries of 101 bytes each (data key 3 + value 98), and one outside the region.
        for i in 0..10u8 {
            wb.put(CF_DEFAULT, &keys::data_key(&[b'k', b'0' + i]), &[0u8; 98]);
        }
        wb.put(CF_DEFAULT, &keys::data_key(b"z"), &[0u8; 5000]);
        engine.write(wb, false).unwrap();
        let region = metapb::Region {
            id: 1,
            start_key: Bytes::from_static(b"k"),
            end_key: Bytes::from_static(b"l"),
            ..Default::default()
        };
        assert_eq!(size_split_key(&engine, &region, 1100, 500).unwrap(), None);
        // Within the limit the read measures the whole region (and nothing outside it).
        assert_eq!(
            size_check(&engine, &region, 1100, 500).unwrap(),
            SizeCheck {
                split_key: None,
                size: 1010,
                keys: 10
            }
        );
        // Over 900 bytes: split after the first 500 (five entries).
        assert_eq!(
            size_split_key(&engine, &region, 900, 500).unwrap(),
            Some(Bytes::from_static(b"k5"))
        );
        // A split size reached only at the last key gives no key to split at.
        assert_eq!(size_split_key(&engine, &region, 900, 1000).unwrap(), None);
    }
}
