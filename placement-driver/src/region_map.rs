//! The map of regions: by id, and by start key for key lookups.
//!
//! Regions cover `[start_key, end_key)`, an empty `end_key` meaning +∞. The map answers "which
//! region holds this key", "the region before it", range scans, and decides whether a reported
//! region is newer than what it knows.
//!
//! Invariants:
//! - The regions in the map never overlap, so start keys are unique and `by_start` has exactly
//!   one entry per region, pointing at the region whose `start_key` it is.
//! - [`RegionMap::insert`] keeps this by removing every region the new one overlaps. Whether the
//!   new region *should* win is [`RegionMap::check`]'s business, decided before inserting.
//! - Epoch order: a region is older than another when its `version` is lower, or equal with a
//!   lower `conf_ver`. A reported region is stale if the known region with its id is newer, or if
//!   any region it overlaps has a higher `version` (that region came out of a later split/merge).
//!
//! The map does not require the regions to cover the whole keyspace: between a split and the
//! heartbeats of the new regions there can be holes, and lookups into them find nothing.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use proto::metapb::{Region, RegionEpoch};

/// Region id.
pub type RegionId = u64;

/// What to do with a reported region, see [`RegionMap::check`].
#[derive(Clone, Debug, PartialEq)]
pub enum RegionVerdict {
    /// The report is older than what is known; ignore it.
    Stale {
        /// The known region (same id, or an overlapping one) that is newer.
        newer: Box<Region>,
    },
    /// The report equals the known region.
    Unchanged,
    /// The report is new or newer and must be stored.
    Changed,
}

/// Regions by id and by start key. See the module docs for the invariants.
#[derive(Clone, Debug, Default)]
pub struct RegionMap {
    by_id: BTreeMap<RegionId, Region>,
    by_start: BTreeMap<Bytes, RegionId>,
    /// How many regions have a peer on each store (stores with none have no entry).
    per_store: BTreeMap<u64, u64>,
}

/// The epoch of `region`, the zero epoch if it has none.
pub fn epoch(region: &Region) -> RegionEpoch {
    region.region_epoch.unwrap_or_default()
}

/// Whether epoch `a` is older than `b`: lower version, or same version and lower conf_ver.
pub fn is_epoch_older(a: RegionEpoch, b: RegionEpoch) -> bool {
    (a.version, a.conf_ver) < (b.version, b.conf_ver)
}

/// Whether `key` lies in `region`.
pub fn region_contains(region: &Region, key: &[u8]) -> bool {
    region.start_key.as_ref() <= key && (region.end_key.is_empty() || key < region.end_key.as_ref())
}

impl RegionMap {
    pub fn new() -> RegionMap {
        RegionMap::default()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: RegionId) -> Option<&Region> {
        self.by_id.get(&id)
    }

    /// All regions in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Region> + '_ {
        self.by_start.values().map(move |id| self.region(*id))
    }

    fn region(&self, id: RegionId) -> &Region {
        self.by_id
            .get(&id)
            .expect("by_start only points at regions present in by_id")
    }

    /// The region containing `key`.
    pub fn find_by_key(&self, key: &[u8]) -> Option<&Region> {
        let (_, id) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let region = self.region(*id);
        region_contains(region, key).then_some(region)
    }

    /// The region just before (by start key) the region containing `key`; `None` if no region
    /// contains `key` or it is the first one.
    pub fn prev_region(&self, key: &[u8]) -> Option<&Region> {
        let current = self.find_by_key(key)?;
        let (_, id) = self
            .by_start
            .range::<[u8], _>((
                Bound::Unbounded,
                Bound::Excluded(current.start_key.as_ref()),
            ))
            .next_back()?;
        Some(self.region(*id))
    }

    /// Regions intersecting `[start, end)` (`end` empty: +∞) in key order, at most `limit` of
    /// them (`0`: unlimited). The first is the region containing `start`, if any.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<&Region> {
        let mut out = Vec::new();
        let below_end = |key: &[u8]| end.is_empty() || key < end;
        if !below_end(start) {
            return out;
        }
        let full = |out: &Vec<&Region>| limit != 0 && out.len() >= limit;
        if let Some(first) = self.find_by_key(start) {
            out.push(first);
        }
        for (_, id) in self
            .by_start
            .range::<[u8], _>((Bound::Excluded(start), Bound::Unbounded))
        {
            if full(&out) {
                break;
            }
            let region = self.region(*id);
            if !below_end(&region.start_key) {
                break;
            }
            out.push(region);
        }
        out
    }

    /// Regions overlapping `region`'s range, other than `region` itself (by id).
    pub fn overlapping(&self, region: &Region) -> Vec<&Region> {
        self.scan(&region.start_key, &region.end_key, 0)
            .into_iter()
            .filter(|r| r.id != region.id)
            .collect()
    }

    /// Decides whether a reported `region` should be stored (see the module docs for the rule).
    pub fn check(&self, region: &Region) -> RegionVerdict {
        let reported = epoch(region);
        if let Some(known) = self.by_id.get(&region.id) {
            if is_epoch_older(reported, epoch(known)) {
                return RegionVerdict::Stale {
                    newer: Box::new(known.clone()),
                };
            }
            if known == region {
                return RegionVerdict::Unchanged;
            }
        }
        for other in self.overlapping(region) {
            if epoch(other).version > reported.version {
                return RegionVerdict::Stale {
                    newer: Box::new(other.clone()),
                };
            }
        }
        RegionVerdict::Changed
    }

    /// Stores `region`, replacing the region with its id and removing every region it overlaps.
    /// Returns the removed regions (not counting the replaced one with the same id).
    pub fn insert(&mut self, region: Region) -> Vec<Region> {
        let overlapped: Vec<RegionId> = self.overlapping(&region).iter().map(|r| r.id).collect();
        let removed = overlapped
            .into_iter()
            .filter_map(|id| self.remove(id))
            .collect();
        self.remove(region.id);
        let previous = self.by_start.insert(region.start_key.clone(), region.id);
        assert!(
            previous.is_none(),
            "region {} start key still taken by region {:?} after removing overlaps",
            region.id,
            previous
        );
        for p in &region.peers {
            *self.per_store.entry(p.store_id).or_default() += 1;
        }
        self.by_id.insert(region.id, region);
        removed
    }

    /// How many regions have a peer on each store; stores with none are absent.
    pub fn store_region_counts(&self) -> &BTreeMap<u64, u64> {
        &self.per_store
    }

    /// Removes the region with `id`.
    pub fn remove(&mut self, id: RegionId) -> Option<Region> {
        let region = self.by_id.remove(&id)?;
        let indexed = self.by_start.remove(&region.start_key);
        assert_eq!(indexed, Some(id), "by_start out of sync for region {id}");
        for p in &region.peers {
            if let Some(n) = self.per_store.get_mut(&p.store_id) {
                *n -= 1;
                if *n == 0 {
                    self.per_store.remove(&p.store_id);
                }
            }
        }
        Some(region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Region `id` over `[start, end)` at the given epoch, without peers.
    fn region(id: u64, start: &str, end: &str, version: u64, conf_ver: u64) -> Region {
        test_util::region(id)
            .range(start, end)
            .version(version)
            .conf_ver(conf_ver)
            .build()
    }

    fn ids(regions: Vec<&Region>) -> Vec<u64> {
        regions.into_iter().map(|r| r.id).collect()
    }

    /// [ "", b ) = 1, [ b, d ) = 2, [ f, +inf ) = 3, hole at [d, f).
    fn sample() -> RegionMap {
        let mut map = RegionMap::new();
        map.insert(region(1, "", "b", 1, 1));
        map.insert(region(2, "b", "d", 1, 1));
        map.insert(region(3, "f", "", 1, 1));
        map
    }

    #[test]
    fn lookups_by_key() {
        let map = sample();
        assert_eq!(map.find_by_key(b"").unwrap().id, 1);
        assert_eq!(map.find_by_key(b"a").unwrap().id, 1);
        assert_eq!(map.find_by_key(b"b").unwrap().id, 2);
        assert_eq!(map.find_by_key(b"c\xff").unwrap().id, 2);
        assert!(map.find_by_key(b"d").is_none());
        assert!(map.find_by_key(b"e").is_none());
        assert_eq!(map.find_by_key(b"zzz").unwrap().id, 3);
        assert!(map.prev_region(b"a").is_none());
        assert_eq!(map.prev_region(b"b").unwrap().id, 1);
        assert_eq!(map.prev_region(b"g").unwrap().id, 2);
        assert!(map.prev_region(b"e").is_none());
    }

    #[test]
    fn scans() {
        let map = sample();
        assert_eq!(ids(map.scan(b"", b"", 0)), vec![1, 2, 3]);
        assert_eq!(ids(map.scan(b"a", b"", 2)), vec![1, 2]);
        assert_eq!(ids(map.scan(b"b", b"c", 0)), vec![2]);
        assert_eq!(ids(map.scan(b"c", b"f", 0)), vec![2]);
        assert_eq!(ids(map.scan(b"c", b"f\x00", 0)), vec![2, 3]);
        assert_eq!(ids(map.scan(b"e", b"", 0)), vec![3]);
        assert_eq!(ids(map.scan(b"c", b"b", 0)), Vec::<u64>::new());
        assert_eq!(ids(map.scan(b"", b"", 1)), vec![1]);
    }

    #[test]
    fn split_replaces_parent_and_stale_reports_lose() {
        let mut map = RegionMap::new();
        map.insert(region(1, "", "", 1, 1));
        // Split at "m": region 1 keeps [m, +inf), new region 2 takes ["", m).
        let left = region(2, "", "m", 2, 1);
        let right = region(1, "m", "", 2, 1);
        // The new left region arrives first and overlaps the (older) parent: the parent goes.
        assert_eq!(map.check(&left), RegionVerdict::Changed);
        let removed = map.insert(left.clone());
        assert_eq!(removed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(map.check(&right), RegionVerdict::Changed);
        assert!(map.insert(right.clone()).is_empty());
        assert_eq!(ids(map.scan(b"", b"", 0)), vec![2, 1]);
        // A late heartbeat of the parent's pre-split state is stale on both counts.
        let late = region(1, "", "", 1, 1);
        assert!(matches!(map.check(&late), RegionVerdict::Stale { .. }));
        // Same epoch, same content: unchanged. Newer conf_ver: changed.
        assert_eq!(map.check(&right), RegionVerdict::Unchanged);
        assert_eq!(map.check(&region(1, "m", "", 2, 2)), RegionVerdict::Changed);
        assert!(matches!(
            map.check(&region(1, "m", "", 2, 0)),
            RegionVerdict::Stale { .. }
        ));
        // An unknown region overlapping a newer-version region is stale.
        assert!(matches!(
            map.check(&region(9, "a", "z", 1, 5)),
            RegionVerdict::Stale { .. }
        ));
    }

    #[test]
    fn a_merged_target_replaces_its_source() {
        let mut map = RegionMap::new();
        map.insert(region(1, "a", "b", 2, 2));
        map.insert(region(2, "b", "c", 2, 2));
        // The source prepared its merge (version and conf_ver bumped, same range).
        let prepared = region(1, "a", "b", 3, 3);
        assert_eq!(map.check(&prepared), RegionVerdict::Changed);
        assert!(map.insert(prepared.clone()).is_empty());
        // The target applied CommitMerge: its range covers the source's, its version is
        // above both. The source goes; its late heartbeat is stale.
        let merged = region(2, "a", "c", 4, 2);
        assert_eq!(map.check(&merged), RegionVerdict::Changed);
        let removed = map.insert(merged);
        assert_eq!(removed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(ids(map.scan(b"", b"", 0)), vec![2]);
        assert_eq!(map.find_by_key(b"a").unwrap().id, 2);
        assert!(matches!(map.check(&prepared), RegionVerdict::Stale { newer } if newer.id == 2));
    }

    #[test]
    fn insert_moves_start_key_of_same_region() {
        let mut map = RegionMap::new();
        map.insert(region(1, "a", "c", 1, 1));
        map.insert(region(1, "b", "c", 2, 1));
        assert_eq!(map.len(), 1);
        assert!(map.find_by_key(b"a").is_none());
        assert_eq!(map.find_by_key(b"b").unwrap().id, 1);
        assert_eq!(map.remove(1).unwrap().start_key.as_ref(), b"b");
        assert!(map.is_empty());
    }
}
