//! What a store knows about its regions as a whole, shared by its pollers, its router and its
//! ticker: the ranges of the replicas it hosts and the regions whose replica it destroyed.
//! Plain data under the store's lock; the peers own their own state.

use std::collections::HashMap;

use proto::metapb;

/// What the store knows about its regions as a whole: the ranges of the replicas it hosts (to
/// refuse a new replica or a snapshot that would overlap one) and the regions whose replica
/// it destroyed (so that stale messages do not bring them back).
#[derive(Default)]
pub struct StoreMeta {
    /// The regions of initialized replicas (and of split-off regions about to be created).
    pub regions: HashMap<u64, metapb::Region>,
    /// The newest epoch each destroyed region was known to have here.
    pub tombstones: HashMap<u64, metapb::RegionEpoch>,
    /// The merging sources among the hosted regions, with their targets.
    pub merging_into: HashMap<u64, u64>,
}

impl StoreMeta {
    /// Another region this store hosts whose range overlaps `region`'s.
    pub fn overlapping(&self, region: &metapb::Region) -> Option<u64> {
        self.regions
            .values()
            .find(|r| {
                r.id != region.id
                    && ranges_overlap(&r.start_key, &r.end_key, &region.start_key, &region.end_key)
            })
            .map(|r| r.id)
    }

    /// Every other region this store hosts whose range overlaps `region`'s.
    pub fn overlapping_all(&self, region: &metapb::Region) -> Vec<u64> {
        self.regions
            .values()
            .filter(|r| {
                r.id != region.id
                    && ranges_overlap(&r.start_key, &r.end_key, &region.start_key, &region.end_key)
            })
            .map(|r| r.id)
            .collect()
    }
}

/// Whether `[s1, e1)` and `[s2, e2)` overlap (an empty end is unbounded).
pub(crate) fn ranges_overlap(s1: &[u8], e1: &[u8], s2: &[u8], e2: &[u8]) -> bool {
    (e2.is_empty() || s1 < e2) && (e1.is_empty() || s2 < e1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_overlap_with_unbounded_ends() {
        assert!(ranges_overlap(b"a", b"c", b"b", b"d"));
        assert!(
            !ranges_overlap(b"a", b"b", b"b", b"c"),
            "ends are exclusive"
        );
        assert!(ranges_overlap(b"", b"", b"x", b"y"), "the whole keyspace");
        assert!(ranges_overlap(b"m", b"", b"x", b""));
        assert!(!ranges_overlap(b"m", b"", b"a", b"m"));
    }

    #[test]
    fn a_region_never_overlaps_itself() {
        let mut meta = StoreMeta::default();
        let region = |id, s: &[u8], e: &[u8]| metapb::Region {
            id,
            start_key: s.to_vec().into(),
            end_key: e.to_vec().into(),
            ..Default::default()
        };
        meta.regions.insert(1, region(1, b"", b"m"));
        assert_eq!(meta.overlapping(&region(1, b"", b"z")), None);
        assert_eq!(meta.overlapping(&region(2, b"k", b"z")), Some(1));
        assert_eq!(meta.overlapping(&region(2, b"m", b"z")), None);
        meta.regions.insert(3, region(3, b"m", b"p"));
        let mut all = meta.overlapping_all(&region(4, b"a", b"z"));
        all.sort_unstable();
        assert_eq!(all, vec![1, 3]);
        assert!(meta.overlapping_all(&region(4, b"p", b"z")).is_empty());
    }
}
