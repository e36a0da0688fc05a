//! Bad input gets a clear error and changes nothing; the cluster keeps serving.

use std::time::Duration;

use bytes::Bytes;
use proto::kvrpcpb::KvPair;
use proto::kvrpcpb::{
    RawBatchPutRequest, RawCasRequest, RawDeleteRangeRequest, RawGetRequest, RawPutRequest,
    RawScanRequest,
};
use proto::tikvpb::tikv_server::Tikv;
use server::TikvService;
use tests::{wait_until, Cluster};
use tonic::Request;

#[test]
fn bad_requests_get_errors_not_panics() {
    let cluster = Cluster::new(3, &[]);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    let region = cluster.regions[0].clone();
    let ctx = || Some(cluster.context(&region, leader));
    let svc = TikvService::new(cluster.storage(leader).clone());
    let limits = cluster.limits.clone();
    let put = |key: Bytes, value: Bytes, cf: &str, ttl: u64| {
        cluster
            .block_on(svc.raw_put(Request::new(RawPutRequest {
                context: ctx(),
                key,
                value,
                cf: cf.into(),
                ttl,
                ..Default::default()
            })))
            .unwrap()
            .into_inner()
    };
    let too_long_key = Bytes::from(vec![b'k'; limits.max_key_size + 1]);
    let r = put(too_long_key.clone(), Bytes::from_static(b"v"), "", 0);
    assert!(r.error.contains("key is"), "{}", r.error);
    let r = put(
        Bytes::from_static(b"k"),
        Bytes::from(vec![0u8; limits.max_value_size + 1]),
        "",
        0,
    );
    assert!(r.error.contains("value is"), "{}", r.error);
    let r = put(Bytes::new(), Bytes::from_static(b"v"), "", 0);
    assert!(r.error.contains("empty"), "{}", r.error);
    let r = put(
        Bytes::from_static(b"k"),
        Bytes::from_static(b"v"),
        "nope",
        0,
    );
    assert!(r.error.contains("column family"), "{}", r.error);
    let r = put(Bytes::from_static(b"k"), Bytes::from_static(b"v"), "", 10);
    assert!(r.error.contains("TTL"), "{}", r.error);

    // No context at all.
    let r = cluster
        .block_on(svc.raw_get(Request::new(RawGetRequest {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        })))
        .unwrap()
        .into_inner();
    assert!(r.error.contains("context"), "{}", r.error);

    // A batch is bounded in bytes, as in TiKV, not in keys: 20,000 small pairs are one write…
    let batch_put = |pairs: Vec<KvPair>| {
        cluster
            .block_on(svc.raw_batch_put(Request::new(RawBatchPutRequest {
                context: ctx(),
                pairs,
                ..Default::default()
            })))
            .unwrap()
            .into_inner()
    };
    let many: Vec<KvPair> = (0..20_000)
        .map(|i| KvPair {
            key: Bytes::from(format!("b{i:05}")),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        })
        .collect();
    let r = batch_put(many);
    assert!(r.error.is_empty() && r.region_error.is_none(), "{r:?}");
    let get = |key: &'static [u8]| {
        cluster
            .block_on(svc.raw_get(Request::new(RawGetRequest {
                context: ctx(),
                key: Bytes::from_static(key),
                ..Default::default()
            })))
            .unwrap()
            .into_inner()
    };
    assert_eq!(&get(b"b19999").value[..], b"v");
    // …and one too large for a Raft entry is RaftEntryTooLarge (clients do not resend it),
    // writing none of its pairs.
    let big = |key: &'static [u8]| KvPair {
        key: Bytes::from_static(key),
        value: Bytes::from(vec![7u8; limits.max_value_size]),
        ..Default::default()
    };
    let r = batch_put(vec![big(b"big1"), big(b"big2")]);
    let too_large = r.region_error.and_then(|e| e.raft_entry_too_large);
    assert!(too_large.is_some(), "{}", r.error);
    assert!(get(b"big1").not_found && get(b"big2").not_found);

    // Scan with an absurd limit: an InvalidArgument status (the response has no error field).
    let status = cluster
        .block_on(svc.raw_scan(Request::new(RawScanRequest {
            context: ctx(),
            limit: u32::MAX,
            ..Default::default()
        })))
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // Inverted delete range.
    let r = cluster
        .block_on(svc.raw_delete_range(Request::new(RawDeleteRangeRequest {
            context: ctx(),
            start_key: Bytes::from_static(b"z"),
            end_key: Bytes::from_static(b"a"),
            ..Default::default()
        })))
        .unwrap()
        .into_inner();
    assert!(r.error.contains("end key"), "{}", r.error);

    // CAS with an oversized value.
    let r = cluster
        .block_on(svc.raw_compare_and_swap(Request::new(RawCasRequest {
            context: ctx(),
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![0u8; limits.max_value_size + 1]),
            previous_not_exist: true,
            ..Default::default()
        })))
        .unwrap()
        .into_inner();
    assert!(!r.error.is_empty());

    // Nothing was written, and the cluster still serves.
    assert_eq!(cluster.must_get(b"k"), None);
    cluster.must_put(b"k", b"fine");
    assert_eq!(cluster.must_get(b"k"), Some(b"fine".to_vec()));
    assert_eq!(cluster.local_get(leader, &too_long_key), None);
}

#[test]
fn a_command_beyond_the_raft_entry_limit_is_a_region_error() {
    let mut cfg = tests::cluster::test_config();
    cfg.raft_entry_max_size = 1024;
    let cluster = Cluster::with_config(3, &[], cfg);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    match cluster.put_on(leader, b"big", &[7u8; 4096]) {
        Err(server::raw::Failure::Region(e)) => assert!(e.raft_entry_too_large.is_some(), "{e:?}"),
        other => panic!("expected RaftEntryTooLarge, got {other:?}"),
    }
    cluster.must_put(b"small", b"ok");
    assert_eq!(cluster.must_get(b"big"), None);
}

#[test]
fn a_leader_with_too_many_waiting_proposals_answers_busy() {
    use bytes::Bytes;
    use raftstore::cmd::WriteOp;

    let mut cfg = tests::cluster::test_config();
    cfg.max_pending_proposals = 8;
    let cluster = Cluster::with_config(3, &[], cfg);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    let region = cluster.regions[0].clone();
    // Cut the leader off: its proposals cannot commit and pile up.
    cluster.add_filter(tests::network::Isolate(leader));
    let (tx, rx) = std::sync::mpsc::channel();
    let router = cluster.storage(leader).router().clone();
    let last_index = || cluster.peer_status(leader, 1).expect("leader").last_index;
    let start = last_index();
    for i in 0..12u64 {
        let header = raftstore::RequestHeader {
            replica_read: false,
            region_id: 1,
            epoch: region.region_epoch,
            peer: region.peers.iter().find(|p| p.store_id == leader).cloned(),
            keys: vec![Bytes::from(format!("k{i}"))],
        };
        let tx = tx.clone();
        router.propose(
            header,
            vec![WriteOp::put(
                "",
                Bytes::from(format!("k{i}")),
                Bytes::from_static(b"v"),
            )],
            move |r| {
                let _ = tx.send(r);
            },
        );
        if i < 8 {
            // Each in an entry of its own (writes that reach the leader together would share
            // one: see `write_batching`).
            wait_until(
                "the write is in the leader's log",
                Duration::from_secs(10),
                || last_index() == start + i + 1,
            );
        }
    }
    // The four beyond the limit are refused at once; the first eight wait.
    for _ in 0..4 {
        let r = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("an immediate answer");
        assert!(matches!(r, Err(raftstore::Error::ServerIsBusy(_))), "{r:?}");
    }
    cluster.clear_filters();
    cluster.must_put(b"after", b"ok");
}
