//! Raw scans: one range of a scan request, clamped to the region, read from a snapshot.

use bytes::Bytes;
use engine::keys;
use proto::metapb::Region;

use super::{stored_bound, Error, Result};
use crate::keyspace::{self, Api};

/// One range of a scan, bounds in stored form, checked against the request's API.
#[derive(Clone, Debug)]
pub struct ScanRange {
    pub start: Bytes,
    pub end: Bytes,
    limit: u32,
    key_only: bool,
    reverse: bool,
    api: Api,
}

impl ScanRange {
    /// The range `start`..`end` as the client sent it. Reverse scans run from `start`
    /// (exclusive, the upper bound) down to `end`.
    pub fn new(
        api: Api,
        start: &Bytes,
        end: &Bytes,
        limit: u32,
        key_only: bool,
        reverse: bool,
    ) -> Result<ScanRange> {
        Ok(ScanRange {
            start: stored_bound(api, start, reverse)?,
            end: stored_bound(api, end, !reverse)?,
            limit,
            key_only,
            reverse,
            api,
        })
    }
}

/// Scans one range clamped to `region`. Forward: `[start, end)`. Reverse: `[end, start)`,
/// newest key first, an empty `start` meaning the end of the region; a reverse `start`
/// outside `(region.start, region.end]` is `KeyNotInRegion`. V1 scans skip keyspace ranges,
/// V2 scans skip expired values and answer decoded keys.
pub(super) fn scan_range(
    snap: &engine::Snapshot<'_>,
    region: &Region,
    cf: &'static str,
    range: &ScanRange,
    out: &mut Vec<(Bytes, Bytes)>,
) -> Result<()> {
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
            let value = if range.key_only {
                Bytes::new()
            } else {
                Bytes::copy_from_slice(value)
            };
            out.push((key, value));
            taken += 1;
            taken < limit
        })?;
        if let Some(why) = failure {
            return Err(Error::Other(why));
        }
        if taken >= limit {
            break;
        }
    }
    Ok(())
}
