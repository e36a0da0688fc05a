//! Load-based split (TiKV's "load base split", simplified): a region whose leader on this store
//! serves more than `qps_threshold` raw requests a second for `detect_windows` one-second
//! windows in a row is split at the median of keys sampled from those requests, so that its
//! two halves can be led from different stores (PD's leader balance moves one of them).
//!
//! - [`LoadRecorder`] counts requests per region and keeps a uniform sample of their keys
//!   (reservoir sampling), for the current window; the request path calls
//!   [`LoadRecorder::observe`] (one short lock). Each window ended also adds its reads and
//!   writes to the region's flow, which the region heartbeat takes to PD
//!   ([`LoadRecorder::take_flow`]): PD's hot-region scheduling weighs leaders by it.
//! - [`LoadDecider`] (pure) turns consecutive windows into split decisions, and
//!   [`split_key`] (pure) picks the key: the sampled median, strictly inside the region, so
//!   both halves get part of the sampled load.
//! - The store's load-split task (`split_checker::load_splits`) runs them once a second for
//!   the regions it leads.
//!
//! Deliberately absent: transactional requests (their keys are encoded differently), byte
//! rates, and TiKV's choice among several candidate keys by how evenly they divide the
//! sampled load; the median already halves a uniform hot range. A purely sequential insert
//! load keeps moving to the newest region, which splitting cannot spread.

use std::collections::HashMap;

use bytes::Bytes;
use parking_lot::Mutex;

/// Whether a request reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Reads and writes a region served since its flow was last taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionFlow {
    pub reads: u64,
    pub writes: u64,
}

/// The load seen in one window, per region.
#[derive(Debug, Default)]
pub struct RegionLoad {
    pub requests: u64,
    /// Of `requests`, those that wrote.
    pub writes: u64,
    /// A uniform sample of the requests' keys (at most the recorder's sample size).
    pub samples: Vec<Bytes>,
}

/// Requests and sampled keys per region for the current window. Shared by the request path
/// and the load-split task.
#[derive(Debug)]
pub struct LoadRecorder {
    samples: usize,
    window: Mutex<HashMap<u64, RegionLoad>>,
    /// Per region, the reads and writes of the windows ended since its flow was taken.
    flows: Mutex<HashMap<u64, RegionFlow>>,
}

impl LoadRecorder {
    /// Keeps up to `samples` keys per region and window.
    pub fn new(samples: usize) -> LoadRecorder {
        LoadRecorder {
            samples: samples.max(1),
            window: Mutex::default(),
            flows: Mutex::default(),
        }
    }

    /// Notes one request to `region_id` touching `key`.
    pub fn observe(&self, region_id: u64, access: Access, key: &Bytes) {
        let mut window = self.window.lock();
        let load = window.entry(region_id).or_default();
        load.requests += 1;
        if access == Access::Write {
            load.writes += 1;
        }
        if load.samples.len() < self.samples {
            load.samples.push(key.clone());
        } else {
            // Reservoir sampling: the n-th request replaces a sample with probability k/n. A
            // hash of the count stands in for a random draw.
            let slot = splitmix64(load.requests ^ region_id.rotate_left(32)) % load.requests;
            if let Some(s) = load.samples.get_mut(slot as usize) {
                *s = key.clone();
            }
        }
    }

    /// Ends the window: its load, and a fresh window. Its reads and writes are added to the
    /// regions' flows.
    pub fn take(&self) -> HashMap<u64, RegionLoad> {
        let window = std::mem::take(&mut *self.window.lock());
        let mut flows = self.flows.lock();
        for (region_id, load) in &window {
            let flow = flows.entry(*region_id).or_default();
            flow.writes += load.writes;
            flow.reads += load.requests - load.writes;
        }
        window
    }

    /// The reads and writes `region_id` served in the windows ended since the last call.
    pub fn take_flow(&self, region_id: u64) -> RegionFlow {
        self.flows.lock().remove(&region_id).unwrap_or_default()
    }

    /// Forgets the flows of regions for which `keep` is false (e.g. no replica here any more).
    pub fn retain_flows(&self, keep: impl Fn(u64) -> bool) {
        self.flows.lock().retain(|id, _| keep(*id));
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Which regions have been hot long enough to split.
#[derive(Debug, Default)]
pub struct LoadDecider {
    /// Consecutive hot windows per region.
    hot: HashMap<u64, u32>,
}

impl LoadDecider {
    /// Feeds one window that lasted `secs`; returns the regions to split now with their
    /// sampled keys. A region is chosen once it was hot for `windows` windows in a row, and
    /// its count starts again.
    pub fn decide(
        &mut self,
        window: HashMap<u64, RegionLoad>,
        secs: f64,
        qps_threshold: u64,
        windows: u32,
    ) -> Vec<(u64, Vec<Bytes>)> {
        let mut split = Vec::new();
        let mut hot = HashMap::new();
        for (region_id, load) in window {
            if (load.requests as f64) < qps_threshold as f64 * secs.max(1e-3) {
                continue;
            }
            let n = self.hot.get(&region_id).copied().unwrap_or(0) + 1;
            if n >= windows.max(1) {
                split.push((region_id, load.samples));
            } else {
                hot.insert(region_id, n);
            }
        }
        // Regions not hot in this window start over.
        self.hot = hot;
        split.sort_by_key(|(id, _)| *id);
        split
    }
}

/// The median of `samples` if it lies strictly inside `[start, end)` past `start` (an empty
/// `end` is unbounded); else the nearest sample that does, if any.
pub fn split_key(mut samples: Vec<Bytes>, start: &[u8], end: &[u8]) -> Option<Bytes> {
    samples.retain(|k| k.as_ref() > start && (end.is_empty() || k.as_ref() < end));
    samples.sort();
    samples.dedup();
    if samples.is_empty() {
        return None;
    }
    let mid = samples.len() / 2;
    Some(samples.swap_remove(mid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn the_recorder_counts_every_request_and_keeps_a_bounded_sample() {
        let r = LoadRecorder::new(4);
        for i in 0..1000 {
            r.observe(7, Access::Read, &key(&format!("k{i:04}")));
        }
        r.observe(8, Access::Write, &key("x"));
        let w = r.take();
        assert_eq!(w[&7].requests, 1000);
        assert_eq!(w[&7].samples.len(), 4);
        assert!(
            w[&7].samples.iter().any(|k| k.as_ref() > b"k0100".as_ref()),
            "later requests replace early samples: {:?}",
            w[&7].samples
        );
        assert_eq!(w[&8].requests, 1);
        assert!(r.take().is_empty(), "a new window starts empty");
    }

    #[test]
    fn ended_windows_add_up_to_a_flow_that_is_taken_once() {
        let r = LoadRecorder::new(4);
        for access in [Access::Read, Access::Read, Access::Write] {
            r.observe(7, access, &key("k"));
        }
        // Nothing before the window ends.
        assert_eq!(r.take_flow(7), RegionFlow::default());
        r.take();
        r.observe(7, Access::Write, &key("k"));
        r.take();
        assert_eq!(
            r.take_flow(7),
            RegionFlow {
                reads: 2,
                writes: 2
            }
        );
        assert_eq!(r.take_flow(7), RegionFlow::default(), "taken once");
        r.observe(8, Access::Read, &key("k"));
        r.take();
        r.retain_flows(|id| id != 8);
        assert_eq!(r.take_flow(8), RegionFlow::default());
    }

    #[test]
    fn a_region_splits_after_enough_hot_windows_in_a_row() {
        let mut d = LoadDecider::default();
        let window = |requests: u64| {
            HashMap::from([(
                1,
                RegionLoad {
                    requests,
                    writes: 0,
                    samples: vec![key("m")],
                },
            )])
        };
        assert!(d.decide(window(500), 1.0, 100, 3).is_empty());
        assert!(d.decide(window(500), 1.0, 100, 3).is_empty());
        assert_eq!(
            d.decide(window(500), 1.0, 100, 3),
            vec![(1, vec![key("m")])]
        );
        // A cool window in between starts the count over.
        assert!(d.decide(window(500), 1.0, 100, 3).is_empty());
        assert!(d.decide(window(50), 1.0, 100, 3).is_empty());
        assert!(d.decide(window(500), 1.0, 100, 3).is_empty());
        assert!(d.decide(window(500), 1.0, 100, 3).is_empty());
        assert_eq!(d.decide(window(500), 1.0, 100, 3).len(), 1);
        // The rate counts, not the raw number: 150 requests in 2 s is below 100 a second.
        assert!(d.decide(window(150), 2.0, 100, 1).is_empty());
    }

    #[test]
    fn the_split_key_is_the_sampled_median_strictly_inside_the_region() {
        let samples: Vec<Bytes> = ["d", "a", "c", "b", "e"].iter().map(|s| key(s)).collect();
        assert_eq!(split_key(samples.clone(), b"", b""), Some(key("c")));
        // The region's start cannot be a split key, nor anything outside the region.
        assert_eq!(split_key(samples.clone(), b"c", b"e"), Some(key("d")));
        assert_eq!(split_key(vec![key("c"), key("c")], b"c", b""), None);
        assert_eq!(split_key(samples, b"x", b""), None);
        assert_eq!(split_key(Vec::new(), b"", b""), None);
    }
}
