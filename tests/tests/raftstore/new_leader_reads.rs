//! Reads that reach a leader before it has committed an entry of its own term (right after a
//! transfer, an election after a leader died, or a split region's first campaign) are held and
//! served once that entry commits, instead of being lost inside raft-rs until they time out.
//!
//! Each test keeps the new leader's appends from leaving (so its empty entry cannot commit),
//! sends a read to it, waits until the read is waiting there, lets the appends go and expects
//! the read served — long before the ReadIndex timeout would answer it ServerIsBusy.

use std::time::Duration;

use bytes::Bytes;
use proto::kvrpcpb::RawGetRequest;
use proto::raft_serverpb::RaftMessage;
use raft::eraftpb::MessageType;
use tests::{msg_type, wait_until, Cluster, FnFilter, Verdict};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Drops the appends that `pred(from_store, region_id)` selects.
fn drop_appends(cluster: &Cluster, pred: impl Fn(u64, u64) -> bool + Send + Sync + 'static) {
    cluster.add_filter(FnFilter(move |from: u64, _to: u64, m: &RaftMessage| {
        if msg_type(m) == MessageType::MsgAppend && pred(from, m.region_id) {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }));
}

/// Reads `key` from region `region_id`'s leader on `store`, which has not committed its empty
/// entry yet; then lets the appends through and expects `expect`.
fn read_through_new_leader(
    cluster: &Cluster,
    store: u64,
    region_id: u64,
    key: &[u8],
    expect: &[u8],
) {
    let status = cluster
        .peer_status(store, region_id)
        .expect("leader status");
    assert!(status.is_leader);
    let region = status.region.clone();
    let storage = cluster.storage(store).clone();
    let req = RawGetRequest {
        context: Some(cluster.context(&region, store)),
        key: Bytes::copy_from_slice(key),
        ..Default::default()
    };
    let read = cluster.spawn(async move { storage.raw_get(req).await });
    wait_until("the read waits on the new leader", TIMEOUT, || {
        cluster
            .peer_status(store, region_id)
            .is_some_and(|s| s.reads_waiting == 1)
    });
    // Still the same leader, still without a committed entry of its term.
    let now = cluster.peer_status(store, region_id).expect("status");
    assert!(now.is_leader && now.term == status.term, "{now:?}");
    cluster.clear_filters();
    match cluster.block_on(read).expect("read task") {
        Ok(resp) => {
            assert!(resp.error.is_empty(), "{}", resp.error);
            assert_eq!(&resp.value[..], expect);
        }
        Err(e) => panic!("the held read failed: {e:?}"),
    }
}

#[test]
fn a_read_right_after_a_transfer_is_served() {
    let cluster = Cluster::new(3, &[]);
    let from = cluster.wait_leader(1, TIMEOUT);
    cluster.must_put(b"k", b"v");
    let to = *cluster.store_ids().iter().find(|s| **s != from).unwrap();
    drop_appends(&cluster, move |store, _| store == to);
    let status = cluster.peer_status(from, 1).unwrap();
    let target = *status
        .region
        .peers
        .iter()
        .find(|p| p.store_id == to)
        .unwrap();
    cluster
        .storage(from)
        .router()
        .transfer_leader(1, target, status.region.region_epoch)
        .unwrap();
    wait_until("the transferee leads", TIMEOUT, || {
        cluster.leader_store(1) == Some(to)
    });
    read_through_new_leader(&cluster, to, 1, b"k", b"v");
}

#[test]
fn a_read_right_after_a_leader_died_is_served() {
    let mut cluster = Cluster::new(3, &[]);
    let old = cluster.wait_leader(1, TIMEOUT);
    cluster.must_put(b"k", b"v");
    drop_appends(&cluster, |_, _| true);
    cluster.stop_store(old);
    let new = cluster.wait_leader(1, TIMEOUT);
    read_through_new_leader(&cluster, new, 1, b"k", b"v");
}

#[test]
fn a_read_on_a_region_just_split_off_is_served() {
    let cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, TIMEOUT);
    cluster.must_put(b"m", b"v");
    // Only the parent region replicates; a new region's first entries go nowhere for now.
    drop_appends(&cluster, |_, region_id| region_id != 1);
    let regions = cluster.split(b"h").expect("split");
    let new_id = regions[1].id;
    let leader = cluster.wait_leader(new_id, TIMEOUT);
    read_through_new_leader(&cluster, leader, new_id, b"m", b"v");
}
