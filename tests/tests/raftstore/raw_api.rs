//! Semantics of the raw KV API on one region group: scans (bounds, limits, key-only, reverse,
//! region clamping), batch scan, delete-range, compare-and-swap, batch get/put/delete.

use std::time::Duration;

use bytes::Bytes;
use proto::kvrpcpb::{
    KeyRange, KvPair, RawBatchDeleteRequest, RawBatchGetRequest, RawBatchPutRequest,
    RawBatchScanRequest, RawCasRequest, RawDeleteRangeRequest, RawScanRequest,
};
use tests::Cluster;

fn keys(kvs: &[KvPair]) -> Vec<String> {
    kvs.iter()
        .map(|p| String::from_utf8_lossy(&p.key).into_owned())
        .collect()
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn scans_respect_bounds_limits_direction_and_region() {
    // Two regions: ["", "m") and ["m", "").
    let cluster = Cluster::new(3, &[b"m"]);
    for k in ["a", "b", "c", "d", "l", "m", "n", "z"] {
        cluster.must_put(k.as_bytes(), format!("v-{k}").as_bytes());
    }
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    let region = cluster.regions[0].clone();
    let storage = cluster.storage(leader).clone();
    let scan = |start: &str, end: &str, limit: u32, reverse: bool, key_only: bool| {
        let req = RawScanRequest {
            context: Some(cluster.context(&region, leader)),
            start_key: b(start),
            end_key: b(end),
            limit,
            reverse,
            key_only,
            ..Default::default()
        };
        cluster.block_on(storage.raw_scan(req)).expect("scan").kvs
    };
    assert_eq!(keys(&scan("a", "d", 10, false, false)), ["a", "b", "c"]);
    assert_eq!(keys(&scan("b", "", 2, false, false)), ["b", "c"]);
    // An open end stops at the region's end: "m" and later belong to region 2.
    assert_eq!(
        keys(&scan("a", "", 100, false, false)),
        ["a", "b", "c", "d", "l"]
    );
    assert_eq!(
        keys(&scan("a", "zz", 100, false, false)),
        ["a", "b", "c", "d", "l"]
    );
    // Reverse: [end, start), newest first.
    assert_eq!(keys(&scan("d", "a", 10, true, false)), ["c", "b", "a"]);
    assert_eq!(keys(&scan("", "", 2, true, false)), ["l", "d"]);
    // Key-only and values.
    let kv = scan("a", "b", 1, false, true);
    assert!(kv[0].value.is_empty());
    let kv = scan("a", "b", 1, false, false);
    assert_eq!(&kv[0].value[..], b"v-a");
    assert!(scan("a", "z", 0, false, false).is_empty());

    // Batch scan: several ranges from one snapshot, each limited.
    let req = RawBatchScanRequest {
        context: Some(cluster.context(&region, leader)),
        ranges: vec![
            KeyRange {
                start_key: b("a"),
                end_key: b("c"),
            },
            KeyRange {
                start_key: b("d"),
                end_key: b(""),
            },
        ],
        each_limit: 1,
        ..Default::default()
    };
    let kvs = cluster
        .block_on(storage.raw_batch_scan(req))
        .expect("batch scan")
        .kvs;
    assert_eq!(keys(&kvs), ["a", "d"]);
}

#[test]
fn delete_range_cas_and_batches() {
    let cluster = Cluster::new(3, &[]);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    let region = cluster.regions[0].clone();
    let storage = cluster.storage(leader).clone();
    let ctx = || Some(cluster.context(&region, leader));

    let pairs = ["k1", "k2", "k3", "k4", "k5"]
        .iter()
        .map(|k| KvPair {
            key: b(k),
            value: b(&format!("v{k}")),
            ..Default::default()
        })
        .collect();
    let r = cluster
        .block_on(storage.raw_batch_put(RawBatchPutRequest {
            context: ctx(),
            pairs,
            ..Default::default()
        }))
        .expect("batch put");
    assert!(r.error.is_empty());
    let r = cluster
        .block_on(storage.raw_batch_get(RawBatchGetRequest {
            context: ctx(),
            keys: vec![b("k1"), b("missing"), b("k5")],
            ..Default::default()
        }))
        .expect("batch get");
    assert_eq!(keys(&r.pairs), ["k1", "k5"]);

    cluster
        .block_on(storage.raw_delete_range(RawDeleteRangeRequest {
            context: ctx(),
            start_key: b("k2"),
            end_key: b("k4"),
            ..Default::default()
        }))
        .expect("delete range");
    assert_eq!(cluster.must_get(b"k2"), None);
    assert_eq!(cluster.must_get(b"k3"), None);
    assert_eq!(cluster.must_get(b"k4"), Some(b"vk4".to_vec()));
    cluster
        .block_on(storage.raw_batch_delete(RawBatchDeleteRequest {
            context: ctx(),
            keys: vec![b("k1"), b("k4")],
            ..Default::default()
        }))
        .expect("batch delete");
    assert_eq!(cluster.must_get(b"k1"), None);
    assert_eq!(cluster.must_get(b"k5"), Some(b"vk5".to_vec()));

    let cas = |expect: Option<&str>, new: &str| {
        cluster
            .block_on(storage.raw_compare_and_swap(RawCasRequest {
                context: ctx(),
                key: b("c"),
                value: b(new),
                previous_not_exist: expect.is_none(),
                previous_value: expect.map(b).unwrap_or_default(),
                ..Default::default()
            }))
            .expect("cas")
    };
    let r = cas(None, "1");
    assert!(r.succeed && r.previous_not_exist);
    let r = cas(None, "2");
    assert!(!r.succeed && !r.previous_not_exist && &r.previous_value[..] == b"1");
    let r = cas(Some("0"), "2");
    assert!(!r.succeed && &r.previous_value[..] == b"1");
    let r = cas(Some("1"), "2");
    assert!(r.succeed && &r.previous_value[..] == b"1");
    assert_eq!(cluster.must_get(b"c"), Some(b"2".to_vec()));
    // Every replica applied the same outcome.
    cluster.wait_replicated(b"c", Some(b"2"), Duration::from_secs(10));
}
