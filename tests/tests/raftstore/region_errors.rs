//! Misrouted requests get the region errors TiKV returns, in `region_error`, through the same
//! gRPC service handlers a remote client reaches.

use std::time::Duration;

use bytes::Bytes;
use proto::kvrpcpb::{RawGetRequest, RawPutRequest, RawScanRequest};
use proto::metapb::RegionEpoch;
use proto::tikvpb::tikv_server::Tikv;
use server::TikvService;
use tests::Cluster;
use tonic::Request;

fn put(ctx: proto::kvrpcpb::Context, key: &[u8]) -> Request<RawPutRequest> {
    Request::new(RawPutRequest {
        context: Some(ctx),
        key: Bytes::copy_from_slice(key),
        value: Bytes::from_static(b"v"),
        ..Default::default()
    })
}

#[test]
fn misrouted_requests_get_tikv_region_errors() {
    let cluster = Cluster::new(3, &[b"m"]);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    cluster.must_put(b"a", b"1");
    let follower = *cluster.store_ids().iter().find(|s| **s != leader).unwrap();
    let region = cluster.regions[0].clone();
    let svc = |s: u64| TikvService::new(cluster.storage(s).clone());

    // Not leader: names the leader.
    let resp = cluster
        .block_on(svc(follower).raw_put(put(cluster.context(&region, follower), b"a")))
        .unwrap()
        .into_inner();
    let nl = resp
        .region_error
        .expect("region error")
        .not_leader
        .expect("not leader");
    assert_eq!(nl.region_id, 1);
    assert_eq!(nl.leader.expect("known leader").store_id, leader);

    // Stale epoch: carries the current region.
    let mut ctx = cluster.context(&region, leader);
    ctx.region_epoch = Some(RegionEpoch {
        conf_ver: 1,
        version: 0,
    });
    let resp = cluster
        .block_on(svc(leader).raw_put(put(ctx, b"a")))
        .unwrap()
        .into_inner();
    let enm = resp
        .region_error
        .expect("region error")
        .epoch_not_match
        .expect("epoch not match");
    assert_eq!(enm.current_regions, vec![region.clone()]);

    // Unknown region.
    let mut ctx = cluster.context(&region, leader);
    ctx.region_id = 999;
    let resp = cluster
        .block_on(svc(leader).raw_get(Request::new(RawGetRequest {
            context: Some(ctx),
            key: Bytes::from_static(b"a"),
            ..Default::default()
        })))
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.region_error
            .expect("region error")
            .region_not_found
            .expect("not found")
            .region_id,
        999
    );

    // Key outside the region.
    let resp = cluster
        .block_on(svc(leader).raw_put(put(cluster.context(&region, leader), b"z")))
        .unwrap()
        .into_inner();
    let knr = resp
        .region_error
        .expect("region error")
        .key_not_in_region
        .expect("key not in region");
    assert_eq!(
        (&knr.key[..], knr.region_id, &knr.end_key[..]),
        (&b"z"[..], 1, &b"m"[..])
    );

    // Scan starting outside the region.
    let resp = cluster
        .block_on(svc(leader).raw_scan(Request::new(RawScanRequest {
            context: Some(cluster.context(&region, leader)),
            start_key: Bytes::from_static(b"x"),
            limit: 10,
            ..Default::default()
        })))
        .unwrap()
        .into_inner();
    assert!(resp
        .region_error
        .expect("region error")
        .key_not_in_region
        .is_some());

    // Wrong store.
    let mut ctx = cluster.context(&region, leader);
    ctx.peer.as_mut().unwrap().store_id = 77;
    let resp = cluster
        .block_on(svc(leader).raw_put(put(ctx, b"a")))
        .unwrap()
        .into_inner();
    let snm = resp
        .region_error
        .expect("region error")
        .store_not_match
        .expect("store not match");
    assert_eq!((snm.request_store_id, snm.actual_store_id), (77, leader));

    // None of it changed data.
    assert_eq!(cluster.must_get(b"a"), Some(b"1".to_vec()));
    assert_eq!(cluster.must_get(b"z"), None);
}
