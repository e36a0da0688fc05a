//! An overloaded store refuses what it cannot take (ServerIsBusy with a backoff hint, at
//! once) instead of queueing without bound; every write it acknowledged survives, and it
//! serves normally once the flood stops.

use std::time::Duration;

use bytes::Bytes;
use proto::kvrpcpb::{RawGetRequest, RawPutRequest};
use proto::tikvpb::tikv_server::Tikv;
use server::{Limits, TikvService};
use tests::Cluster;
use tonic::Request;

#[test]
fn a_flooded_store_refuses_the_excess_loses_nothing_and_recovers() {
    let limits = Limits {
        max_inflight_requests: 4,
        ..Limits::default()
    };
    let cluster = Cluster::with_limits(3, &[], tests::cluster::test_config(), limits);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    let region = cluster.regions[0].clone();
    let svc = TikvService::new(cluster.storage(leader).clone());
    let put = |i: usize| {
        let req = RawPutRequest {
            context: Some(cluster.context(&region, leader)),
            key: Bytes::from(format!("flood/{i:03}")),
            value: Bytes::from(format!("v{i}")),
            ..Default::default()
        };
        svc.raw_put(Request::new(req))
    };

    // 64 clients at once against a store that takes 4.
    let mut pending: Vec<usize> = (0..64).collect();
    let mut refused = 0;
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        assert!(rounds < 200, "{} writes never got through", pending.len());
        let answers = cluster.block_on(futures::future::join_all(pending.iter().map(|i| put(*i))));
        let mut next = Vec::new();
        for (i, answer) in pending.iter().zip(answers) {
            let r = answer
                .expect("a response, not a transport error")
                .into_inner();
            match r.region_error {
                None => assert!(r.error.is_empty(), "write {i}: {}", r.error),
                Some(e) => {
                    let busy = e.server_is_busy.expect("only ServerIsBusy");
                    assert!(busy.backoff_ms > 0, "{busy:?}");
                    refused += 1;
                    next.push(*i);
                }
            }
        }
        if !next.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
        pending = next;
    }
    assert!(
        refused > 0,
        "64 concurrent writes against a limit of 4 were all admitted"
    );

    // Every acknowledged write is there, and single requests go through at once again.
    for i in 0..64 {
        let req = RawGetRequest {
            context: Some(cluster.context(&region, leader)),
            key: Bytes::from(format!("flood/{i:03}")),
            ..Default::default()
        };
        let r = cluster
            .block_on(svc.raw_get(Request::new(req)))
            .unwrap()
            .into_inner();
        assert!(r.region_error.is_none(), "{:?}", r.region_error);
        assert_eq!(r.value, Bytes::from(format!("v{i}")));
    }
}
