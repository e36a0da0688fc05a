//! Region split: every replica splits at the same log position and creates the new region's
//! replica from the same initial state; both halves serve, stale epochs are refused, and the
//! layout survives restarts.

use std::time::Duration;

use bytes::Bytes;
use proto::kvrpcpb::RawPutRequest;
use server::raw::Failure;
use tests::Cluster;

#[test]
fn split_regions_serve_both_halves_and_survive_restart() {
    let mut cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, Duration::from_secs(10));
    for c in b'a'..=b'z' {
        cluster.must_put(&[c], &[c]);
    }
    let parent = cluster.regions[0].clone();
    let regions = cluster.split(b"m").expect("split");
    assert_eq!(regions.len(), 2);
    let (left, right) = (&regions[0], &regions[1]);
    assert_eq!(
        (left.id, &left.start_key[..], &left.end_key[..]),
        (1, &b""[..], &b"m"[..])
    );
    assert_eq!(
        (&right.start_key[..], &right.end_key[..]),
        (&b"m"[..], &b""[..])
    );
    assert_eq!(left.region_epoch.unwrap().version, 2);
    assert_eq!(right.region_epoch, left.region_epoch);
    assert_eq!(right.peers.len(), 3);
    // Every replica sees the split committed at the same log position (and grants no lease
    // read across it before applying it).
    let split_index = cluster
        .peer_status(cluster.wait_leader(1, Duration::from_secs(10)), 1)
        .unwrap()
        .last_committed_split;
    assert!(split_index > 0);
    tests::wait_until(
        "every replica saw the split committed",
        Duration::from_secs(10),
        || {
            cluster.store_ids().iter().all(|s| {
                cluster
                    .peer_status(*s, 1)
                    .is_some_and(|p| p.last_committed_split == split_index)
            })
        },
    );
    // The new region elects a leader and serves; old data is where it was.
    cluster.wait_leader(right.id, Duration::from_secs(10));
    for c in b'a'..=b'z' {
        assert_eq!(cluster.must_get(&[c]), Some(vec![c]));
    }
    cluster.must_put(b"mm", b"right");
    cluster.must_put(b"aa", b"left");
    cluster.wait_replicated(b"mm", Some(b"right"), Duration::from_secs(10));

    // A request under the old epoch is refused with the region's current shape.
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    let req = RawPutRequest {
        context: Some(cluster.context(&parent, leader)),
        key: Bytes::from_static(b"b"),
        value: Bytes::from_static(b"stale"),
        ..Default::default()
    };
    match cluster.block_on(cluster.storage(leader).raw_put(req)) {
        Err(Failure::Region(e)) => {
            let current = e.epoch_not_match.expect("epoch not match").current_regions;
            assert_eq!(current[0].end_key, Bytes::from_static(b"m"));
        }
        other => panic!("expected EpochNotMatch, got {other:?}"),
    }
    // A key of the right half sent to the left region is not in it.
    let req = RawPutRequest {
        context: Some(cluster.context(left, leader)),
        key: Bytes::from_static(b"x"),
        value: Bytes::from_static(b"v"),
        ..Default::default()
    };
    match cluster.block_on(cluster.storage(leader).raw_put(req)) {
        Err(Failure::Region(e)) => assert!(e.key_not_in_region.is_some(), "{e:?}"),
        other => panic!("expected KeyNotInRegion, got {other:?}"),
    }

    // Every store has both regions, and they come back after a whole-cluster restart.
    for s in cluster.store_ids().to_vec() {
        assert!(
            cluster.peer_status(s, right.id).is_some(),
            "store {s} lacks the new region"
        );
    }
    for s in cluster.store_ids().to_vec() {
        cluster.stop_store(s);
    }
    for s in cluster.store_ids().to_vec() {
        cluster.start_store(s);
    }
    cluster.wait_leader(1, Duration::from_secs(15));
    cluster.wait_leader(right.id, Duration::from_secs(15));
    assert_eq!(cluster.must_get(b"mm"), Some(b"right".to_vec()));
    assert_eq!(cluster.must_get(b"aa"), Some(b"left".to_vec()));
    assert_eq!(cluster.must_get(b"z"), Some(b"z".to_vec()));
    let st = cluster.peer_status(cluster.store_ids()[0], 1).unwrap();
    assert_eq!(&st.region.end_key[..], b"m");
}

#[test]
fn a_replica_that_was_down_applies_the_split_when_it_returns() {
    let mut cluster = Cluster::new(3, &[]);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    let follower = *cluster.store_ids().iter().find(|s| **s != leader).unwrap();
    cluster.must_put(b"k", b"v");
    cluster.stop_store(follower);
    let regions = cluster.split(b"g").expect("split with a follower down");
    let right = regions[1].clone();
    cluster.wait_leader(right.id, Duration::from_secs(10));
    cluster.must_put(b"x", b"written-after-split");
    cluster.start_store(follower);
    // The returning replica replays the split from the log, creates its replica of the new
    // region and catches up on it.
    cluster.wait_replicated(b"x", Some(b"written-after-split"), Duration::from_secs(20));
    tests::wait_until(
        "the returning store has the new region",
        Duration::from_secs(10),
        || {
            cluster
                .peer_status(follower, right.id)
                .is_some_and(|p| p.applied_index >= 6)
        },
    );
}

#[test]
fn splits_that_do_not_fit_are_refused_and_change_nothing() {
    let cluster = Cluster::new(3, &[b"m"]);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    let region = cluster.regions[0].clone();
    let router = cluster.storage(leader).router().clone();
    let header = raftstore::RequestHeader {
        replica_read: false,
        region_id: 1,
        epoch: region.region_epoch,
        peer: region.peers.iter().find(|p| p.store_id == leader).cloned(),
        keys: vec![],
    };
    let ids = |n: u64| {
        vec![raftstore::cmd::SplitIds {
            region_id: 900 + n,
            peer_ids: vec![901 + n * 10, 902 + n * 10, 903 + n * 10],
        }]
    };
    // Outside the region, at its start, and with a missing peer id.
    for (key, ids) in [
        (&b"x"[..], ids(1)),
        (&b""[..], ids(2)),
        (
            &b"c"[..],
            vec![raftstore::cmd::SplitIds {
                region_id: 950,
                peer_ids: vec![951],
            }],
        ),
    ] {
        let r =
            cluster.block_on(router.split(header.clone(), vec![Bytes::copy_from_slice(key)], ids));
        assert!(r.is_err(), "split at {key:?} accepted");
    }
    let st = cluster.peer_status(leader, 1).unwrap();
    assert_eq!(st.region, region);
    cluster.must_put(b"c", b"still fine");
}

/// Split ids from a counter, results recorded.
#[derive(Default)]
struct CounterIds {
    next: std::sync::atomic::AtomicU64,
    reported: parking_lot::Mutex<Vec<proto::metapb::Region>>,
}

impl server::SplitIdAllocator for CounterIds {
    fn alloc(
        &self,
        region: proto::metapb::Region,
        count: u32,
    ) -> futures::future::BoxFuture<'static, Result<Vec<raftstore::cmd::SplitIds>, String>> {
        let next = || 5000 + self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let ids = (0..count)
            .map(|_| raftstore::cmd::SplitIds {
                region_id: next(),
                peer_ids: region.peers.iter().map(|_| next()).collect(),
            })
            .collect();
        Box::pin(async move { Ok(ids) })
    }

    fn report(
        &self,
        regions: Vec<proto::metapb::Region>,
    ) -> futures::future::BoxFuture<'static, ()> {
        self.reported.lock().extend(regions);
        Box::pin(async {})
    }
}

#[test]
fn split_region_rpc_validates_splits_and_reports_them() {
    use proto::kvrpcpb::SplitRegionRequest;
    use proto::tikvpb::tikv_server::Tikv;
    use std::sync::Arc;

    let cluster = Cluster::new(3, &[]);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    let region = cluster.regions[0].clone();
    let ids = Arc::new(CounterIds::default());
    let svc = server::TikvService::new(cluster.storage(leader).clone()).with_split_ids(ids.clone());
    let split_as = |region: &proto::metapb::Region, keys: Vec<&[u8]>, is_raw_kv: bool| {
        cluster.block_on(svc.split_region(tonic::Request::new(SplitRegionRequest {
            context: Some(cluster.context(region, leader)),
            split_keys: keys.into_iter().map(Bytes::copy_from_slice).collect(),
            is_raw_kv,
            ..Default::default()
        })))
    };
    let split = |keys: Vec<&[u8]>| split_as(&region, keys, true);
    // An empty split key is refused before anything happens.
    let status = split(vec![b""]).unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // Two keys at once, given out of order: three regions.
    let resp = split(vec![b"t", b"g"]).expect("split").into_inner();
    assert!(resp.region_error.is_none(), "{resp:?}");
    let ranges: Vec<(&[u8], &[u8])> = resp
        .regions
        .iter()
        .map(|r| (&r.start_key[..], &r.end_key[..]))
        .collect();
    assert_eq!(
        ranges,
        vec![
            (&b""[..], &b"g"[..]),
            (&b"g"[..], &b"t"[..]),
            (&b"t"[..], &b""[..])
        ]
    );
    assert_eq!(resp.left.as_ref(), resp.regions.first());
    assert_eq!(resp.right.as_ref(), resp.regions.last());
    assert_eq!(*ids.reported.lock(), resp.regions);
    // The old epoch no longer splits anything.
    let resp = split(vec![b"c"]).expect("answer").into_inner();
    assert!(resp
        .region_error
        .expect("region error")
        .epoch_not_match
        .is_some());
    let reported = ids.reported.lock().clone();
    cluster.update_route(&reported);
    for r in &reported {
        cluster.wait_leader(r.id, Duration::from_secs(10));
    }
    cluster.must_put(b"h", b"middle");
    assert_eq!(cluster.must_get(b"h"), Some(b"middle".to_vec()));
    // A transactional client's split key is cut in its encoded form, as the data is stored.
    let last = reported.last().expect("a region").clone();
    let leader_of_last = cluster.wait_leader(last.id, Duration::from_secs(10));
    assert_eq!(
        leader_of_last, leader,
        "the split's new regions campaign on the parent's leader"
    );
    let resp = split_as(&last, vec![b"x"], false)
        .expect("split")
        .into_inner();
    assert!(resp.region_error.is_none(), "{resp:?}");
    let encoded = storage::mvcc::Key::from_raw(b"x").into_encoded();
    assert_eq!(&resp.regions[1].start_key[..], &encoded[..]);
}

#[test]
fn raft_messages_that_arrive_before_their_region_is_created_are_delivered_to_it() {
    // A split-off region's first messages can reach a store before the store applied the
    // split. Such messages are kept briefly and handed to the replica once it exists.
    use protobuf::Message as _;
    use raft::eraftpb::{Message, MessageType};

    let cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, Duration::from_secs(10));
    let peer = |id, store_id| proto::metapb::Peer {
        id,
        store_id,
        ..Default::default()
    };
    let region = proto::metapb::Region {
        id: 99,
        start_key: Bytes::from_static(b"new"),
        end_key: Bytes::from_static(b"new0"),
        region_epoch: Some(proto::metapb::RegionEpoch {
            conf_ver: 1,
            version: 2,
        }),
        peers: vec![peer(991, 1), peer(992, 2), peer(993, 3)],
    };
    // A heartbeat of a leader (peer 991) at term 7, for a region store 2 does not host yet.
    let mut heartbeat = Message::default();
    heartbeat.set_msg_type(MessageType::MsgHeartbeat);
    heartbeat.from = 991;
    heartbeat.to = 992;
    heartbeat.term = 7;
    let msg = proto::raft_serverpb::RaftMessage {
        region_id: 99,
        from_peer: Some(peer(991, 1)),
        to_peer: Some(peer(992, 2)),
        message: Bytes::from(heartbeat.write_to_bytes().unwrap()),
        region_epoch: region.region_epoch,
        ..Default::default()
    };
    assert!(cluster.storage(2).router().send_raft_message(msg).is_err());
    cluster.create_peer(2, &region);
    tests::wait_until(
        "the early heartbeat reached the new replica",
        Duration::from_secs(10),
        || {
            cluster
                .peer_status(2, 99)
                .is_some_and(|p| p.term == 7 && p.leader.is_some_and(|l| l.id == 991))
        },
    );
}
