//! Grouping, chunking and range-walk arithmetic against a fixed region layout.

use std::collections::BTreeMap;

use bytes::Bytes;
use proto::metapb::Region;
use test_util::peer;

use super::*;

/// Region `id` over `[start, end)` with one peer, `id * 10` on store 1.
fn region(id: u64, start: &str, end: &str) -> Region {
    test_util::region(id)
        .range(start, end)
        .peers([peer(id * 10, 1)])
        .build()
}

/// `["", "c")` = 1, `["c", "f")` = 2, `["f", "")` = 3.
fn layout() -> Vec<Region> {
    vec![region(1, "", "c"), region(2, "c", "f"), region(3, "f", "")]
}

fn cache_of(regions: &[Region]) -> RegionCache {
    let mut cache = RegionCache::new();
    for r in regions {
        cache.insert(r.clone(), None);
    }
    cache
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn strs(keys: &[Bytes]) -> Vec<&str> {
    keys.iter()
        .map(|k| std::str::from_utf8(k).expect("utf8"))
        .collect()
}

#[test]
fn dedup_keeps_the_last_occurrence() {
    let pairs = vec![
        (b("b"), 1),
        (b("a"), 2),
        (b("b"), 3),
        (b("c"), 4),
        (b("a"), 5),
    ];
    let deduped = sort_dedup_keep_last(pairs, |p| &p.0);
    assert_eq!(deduped, vec![(b("a"), 5), (b("b"), 3), (b("c"), 4)]);
}

#[test]
fn keys_group_by_region() {
    let cache = cache_of(&layout());
    let keys = sort_dedup_keep_last(["g", "a", "e", "c", "b", "zz", "f"].map(b).to_vec(), |k| k);
    let (groups, unknown) = group_by_region(&cache, keys, |k| k);
    assert!(unknown.is_empty());
    let summary: Vec<(u64, Vec<&str>)> = groups
        .iter()
        .map(|(route, keys)| (route.region.id, strs(keys)))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, vec!["a", "b"]),
            (2, vec!["c", "e"]),
            (3, vec!["f", "g", "zz"])
        ]
    );
}

#[test]
fn keys_of_uncached_regions_are_set_apart() {
    let mut regions = layout();
    regions.remove(1);
    let cache = cache_of(&regions);
    let keys = ["a", "c", "d", "f"].map(b).to_vec();
    let (groups, unknown) = group_by_region(&cache, keys, |k| k);
    let ids: Vec<u64> = groups.iter().map(|(r, _)| r.region.id).collect();
    assert_eq!(ids, vec![1, 3]);
    assert_eq!(strs(&unknown), vec!["c", "d"]);
}

#[test]
fn groups_are_cut_by_count_and_bytes() {
    let items: Vec<usize> = vec![3, 3, 3, 3, 3];
    let by_count = split_chunks(items.clone(), 2, 1000, |s| *s);
    assert_eq!(by_count, vec![vec![3, 3], vec![3, 3], vec![3]]);
    let by_bytes = split_chunks(items, 100, 7, |s| *s);
    assert_eq!(by_bytes, vec![vec![3, 3], vec![3, 3], vec![3]]);
    let oversized = split_chunks(vec![1, 50, 1], 100, 10, |s| *s);
    assert_eq!(oversized, vec![vec![1], vec![50], vec![1]]);
    assert!(split_chunks(Vec::<usize>::new(), 1, 1, |s| *s).is_empty());
}

#[test]
fn range_ends_and_successors() {
    assert_eq!(min_end(&b(""), &b("x")), b("x"));
    assert_eq!(min_end(&b("x"), &b("")), b("x"));
    assert_eq!(min_end(&b(""), &b("")), b(""));
    assert_eq!(min_end(&b("b"), &b("a")), b("a"));
    assert_eq!(next_key(b"ab"), Bytes::from_static(b"ab\0"));
    let r = region(2, "c", "f");
    assert_eq!(forward_bounds(&r, &b("d"), &b("")), (b("d"), b("f")));
    assert_eq!(forward_bounds(&r, &b("d"), &b("e")), (b("d"), b("e")));
    assert_eq!(
        forward_bounds(&region(3, "f", ""), &b("g"), &b("")),
        (b("g"), b(""))
    );
    assert_eq!(next_region_start(&r, &b("")), Some(b("f")));
    assert_eq!(next_region_start(&r, &b("f")), None);
    assert_eq!(next_region_start(&r, &b("e")), None);
    assert_eq!(next_region_start(&r, &b("g")), Some(b("f")));
    assert_eq!(next_region_start(&region(3, "f", ""), &b("")), None);
}

/// A request as `(region id, start_key, end_key, limit)`.
type SentRequest = (u64, String, String, u32);

/// Simulates a scan over `layout()` holding `data`, answering each request like the store
/// does (clamped to the region), and returns the keys read plus the requests made.
fn simulate(
    data: &[&str],
    lower: &str,
    upper: &str,
    limit: u32,
    reverse: bool,
    batch: u32,
) -> (Vec<String>, Vec<SentRequest>) {
    let regions = layout();
    let cache = cache_of(&regions);
    let data: BTreeMap<Bytes, ()> = data.iter().map(|k| (b(k), ())).collect();
    let mut walk = ScanWalk::new(b(lower), b(upper), limit, reverse);
    let (mut out, mut requests) = (Vec::new(), Vec::new());
    while !walk.is_done() {
        assert!(requests.len() < 100, "the walk does not end");
        let route = if walk.is_reverse() {
            cache.locate_before(walk.cursor())
        } else {
            cache.locate(walk.cursor())
        }
        .expect("layout covers the keyspace");
        let range = walk.request(&route.region, batch);
        let text = |k: &Bytes| String::from_utf8_lossy(k).into_owned();
        requests.push((
            route.region.id,
            text(&range.start_key),
            text(&range.end_key),
            range.limit,
        ));
        let region = &route.region;
        let in_region = |k: &Bytes| crate::region_cache::key_in_region(k, region);
        let got: Vec<Bytes> = if reverse {
            let below = |k: &Bytes| range.start_key.is_empty() || *k < range.start_key;
            (data.keys().rev())
                .filter(|k| in_region(k) && below(k) && **k >= range.end_key)
                .take(range.limit as usize)
                .cloned()
                .collect()
        } else {
            let below = |k: &Bytes| range.end_key.is_empty() || *k < range.end_key;
            (data.keys())
                .filter(|k| in_region(k) && below(k) && **k >= range.start_key)
                .take(range.limit as usize)
                .cloned()
                .collect()
        };
        walk.advance(region, range.limit, got.len(), got.last());
        out.extend(got.iter().map(text));
    }
    (out, requests)
}

const DATA: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

fn req(id: u64, start: &str, end: &str, limit: u32) -> SentRequest {
    (id, start.to_owned(), end.to_owned(), limit)
}

#[test]
fn forward_scan_walks_regions_in_order() {
    let (keys, requests) = simulate(&DATA, "b", "", 100, false, 100);
    assert_eq!(keys, ["b", "c", "d", "e", "f", "g", "h"]);
    assert_eq!(
        requests,
        vec![
            req(1, "b", "c", 100),
            req(2, "c", "f", 99),
            req(3, "f", "", 96)
        ]
    );
}

#[test]
fn forward_scan_stops_at_the_limit_and_the_end() {
    let (keys, requests) = simulate(&DATA, "", "", 4, false, 100);
    assert_eq!(keys, ["a", "b", "c", "d"]);
    assert_eq!(requests, vec![req(1, "", "c", 4), req(2, "c", "f", 2)]);
    // An end on a region boundary does not touch the next region.
    let (keys, requests) = simulate(&DATA, "a", "f", 100, false, 100);
    assert_eq!(keys, ["a", "b", "c", "d", "e"]);
    assert_eq!(requests.len(), 2);
    let (keys, requests) = simulate(&DATA, "d", "e", 100, false, 100);
    assert_eq!(keys, ["d"]);
    assert_eq!(requests, vec![req(2, "d", "e", 100)]);
}

#[test]
fn forward_scan_continues_inside_a_region_after_a_full_batch() {
    let (keys, requests) = simulate(&DATA, "", "", 100, false, 2);
    assert_eq!(keys, DATA);
    assert_eq!(
        requests,
        vec![
            req(1, "", "c", 2),
            req(1, "b\0", "c", 2),
            req(2, "c", "f", 2),
            req(2, "d\0", "f", 2),
            req(3, "f", "", 2),
            req(3, "g\0", "", 2),
        ]
    );
}

#[test]
fn reverse_scan_walks_regions_downward() {
    let (keys, requests) = simulate(&DATA, "", "", 100, true, 100);
    assert_eq!(keys, ["h", "g", "f", "e", "d", "c", "b", "a"]);
    assert_eq!(
        requests,
        vec![
            req(3, "", "f", 100),
            req(2, "f", "c", 97),
            req(1, "c", "", 94)
        ]
    );
    let (keys, requests) = simulate(&DATA, "b", "f", 3, true, 100);
    assert_eq!(keys, ["e", "d", "c"]);
    // "f" is exclusive: the first region read is the one ending there.
    assert_eq!(requests, vec![req(2, "f", "c", 3)]);
    let (keys, requests) = simulate(&DATA, "b", "e", 100, true, 2);
    assert_eq!(keys, ["d", "c", "b"]);
    assert_eq!(
        requests,
        // After the full first answer ends at the region's start, the walk moves down.
        vec![req(2, "e", "c", 2), req(1, "c", "b", 2)]
    );
}

#[test]
fn empty_scans_send_nothing() {
    assert!(ScanWalk::new(b("a"), b("z"), 0, false).is_done());
    assert!(ScanWalk::new(b("z"), b("a"), 10, true).is_done());
    assert!(ScanWalk::new(b("a"), b("a"), 10, false).is_done());
    assert!(!ScanWalk::new(b("a"), b(""), 10, true).is_done());
}
