//! The arithmetic of operations that span regions, kept free of IO so that it is unit-tested:
//! grouping batch items by region, cutting groups into requests of bounded size, and walking a
//! key range region by region for scans and `delete_range`.
//!
//! Ranges are `[lower, upper)` with an empty `upper` meaning +inf, like region ranges.

use bytes::Bytes;
use proto::metapb::Region;

use crate::region_cache::{RegionCache, RegionRoute};

/// Sorts `items` by key and drops duplicate keys, keeping the *last* occurrence (so a batch put
/// naming a key twice writes the later value, as a single write batch would).
pub fn sort_dedup_keep_last<I>(mut items: Vec<I>, key: impl Fn(&I) -> &[u8]) -> Vec<I> {
    items.reverse();
    items.sort_by(|a, b| key(a).cmp(key(b))); // stable: the last occurrence now comes first
    items.dedup_by(|later, first| key(later) == key(first));
    items
}

/// Groups `items`, sorted by key, by the cached region of their key. Returns the groups in key
/// order, and the items no cached region holds (still sorted).
pub fn group_by_region<I>(
    cache: &RegionCache,
    items: Vec<I>,
    key: impl Fn(&I) -> &[u8],
) -> (Vec<(RegionRoute, Vec<I>)>, Vec<I>) {
    let mut groups: Vec<(RegionRoute, Vec<I>)> = Vec::new();
    let mut unknown = Vec::new();
    for item in items {
        if let Some((route, group)) = groups.last_mut() {
            if route.contains(key(&item)) {
                group.push(item);
                continue;
            }
        }
        match cache.locate(key(&item)) {
            Some(route) => groups.push((route, vec![item])),
            None => unknown.push(item),
        }
    }
    (groups, unknown)
}

/// Cuts `items` into chunks of at most `max_items` items and `max_bytes` bytes (by `size`), in
/// order. An item larger than `max_bytes` travels alone (the store judges it).
pub fn split_chunks<I>(
    items: Vec<I>,
    max_items: usize,
    max_bytes: usize,
    size: impl Fn(&I) -> usize,
) -> Vec<Vec<I>> {
    let max_items = max_items.max(1);
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0usize;
    for item in items {
        let s = size(&item);
        if !current.is_empty() && (current.len() >= max_items || bytes + s > max_bytes) {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += s;
        current.push(item);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The smaller of two range ends, an empty end being +inf.
pub fn min_end(a: &Bytes, b: &Bytes) -> Bytes {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.clone(),
        (false, true) => a.clone(),
        (false, false) => a.min(b).clone(),
    }
}

/// The smallest key greater than `key`.
pub fn next_key(key: &[u8]) -> Bytes {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next.into()
}

/// Whether `key` is at or past the range end `upper` (empty: +inf, never reached).
fn reached(key: &[u8], upper: &[u8]) -> bool {
    !upper.is_empty() && key >= upper
}

/// The part of a forward walk at `cursor` toward `upper` that lies in `region` (which holds
/// `cursor`): `[cursor, min(upper, region.end))`.
pub fn forward_bounds(region: &Region, cursor: &Bytes, upper: &Bytes) -> (Bytes, Bytes) {
    (cursor.clone(), min_end(upper, &region.end_key))
}

/// Where a forward walk toward `upper` continues after finishing `region`: its end key, or
/// `None` if the walk is over (the region is the last one or reaches `upper`).
pub fn next_region_start(region: &Region, upper: &Bytes) -> Option<Bytes> {
    if region.end_key.is_empty() || reached(&region.end_key, upper) {
        None
    } else {
        Some(region.end_key.clone())
    }
}

/// The fields of one `RawScanRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanRequestRange {
    /// Forward: inclusive lower bound. Reverse: exclusive upper bound (empty: +inf).
    pub start_key: Bytes,
    /// Forward: exclusive upper bound (empty: +inf). Reverse: inclusive lower bound.
    pub end_key: Bytes,
    pub limit: u32,
}

/// A scan of `[lower, upper)`, at most `limit` pairs, walked region by region forward (from
/// `lower` up) or in reverse (from `upper` down).
///
/// The caller loops: locate the region of [`ScanWalk::cursor`] (forward: the region holding
/// it; reverse: the region holding the keys just below it), send [`ScanWalk::request`], feed
/// the answer to [`ScanWalk::advance`], until [`ScanWalk::is_done`]. A full answer means the
/// region may hold more, so the walk continues inside it past the last key returned;
/// otherwise it moves to the next region.
#[derive(Clone, Debug)]
pub struct ScanWalk {
    lower: Bytes,
    upper: Bytes,
    reverse: bool,
    /// Forward: the next key to read (inclusive). Reverse: the bound below which to read next
    /// (exclusive; empty: +inf, only before the first step).
    cursor: Bytes,
    remaining: u32,
    done: bool,
}

impl ScanWalk {
    pub fn new(lower: Bytes, upper: Bytes, limit: u32, reverse: bool) -> ScanWalk {
        let done = limit == 0 || reached(&lower, &upper);
        let cursor = if reverse {
            upper.clone()
        } else {
            lower.clone()
        };
        ScanWalk {
            lower,
            upper,
            reverse,
            cursor,
            remaining: limit,
            done,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn is_reverse(&self) -> bool {
        self.reverse
    }

    /// Forward: the key whose region is read next. Reverse: the exclusive upper bound whose
    /// region (the one holding the keys just below it) is read next.
    pub fn cursor(&self) -> &Bytes {
        &self.cursor
    }

    /// The request for `region`, asking at most `batch` pairs.
    pub fn request(&self, region: &Region, batch: u32) -> ScanRequestRange {
        let limit = self.remaining.min(batch.max(1));
        if self.reverse {
            let start = self.lower.clone().max(region.start_key.clone());
            ScanRequestRange {
                start_key: min_end(&self.cursor, &region.end_key),
                end_key: start,
                limit,
            }
        } else {
            let (start_key, end_key) = forward_bounds(region, &self.cursor, &self.upper);
            ScanRequestRange {
                start_key,
                end_key,
                limit,
            }
        }
    }

    /// Records the answer to a request for `region` that asked `asked` pairs and got `got`,
    /// the last (in scan order) being `last_key`.
    pub fn advance(&mut self, region: &Region, asked: u32, got: usize, last_key: Option<&Bytes>) {
        let got = u32::try_from(got).unwrap_or(u32::MAX);
        self.remaining = self.remaining.saturating_sub(got);
        if self.remaining == 0 {
            self.done = true;
            return;
        }
        match last_key {
            // A full answer: the region may hold more past the last key.
            Some(last) if got >= asked => {
                if self.reverse {
                    self.cursor = last.clone();
                    self.done = last[..] <= self.lower[..];
                } else {
                    self.cursor = next_key(last);
                    self.done = reached(&self.cursor, &self.upper);
                }
            }
            _ if self.reverse => {
                let start = &region.start_key;
                if start.is_empty() || start[..] <= self.lower[..] {
                    self.done = true;
                } else {
                    self.cursor = start.clone();
                }
            }
            _ => match next_region_start(region, &self.upper) {
                Some(next) => self.cursor = next,
                None => self.done = true,
            },
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
