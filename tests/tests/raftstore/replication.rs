use std::time::Duration;

use tests::Cluster;

#[test]
fn writes_replicate_to_every_replica() {
    let cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, Duration::from_secs(10));
    for i in 0..50u32 {
        cluster.must_put(format!("k{i:03}").as_bytes(), format!("v{i}").as_bytes());
    }
    for i in 0..50u32 {
        let k = format!("k{i:03}");
        cluster.wait_replicated(
            k.as_bytes(),
            Some(format!("v{i}").as_bytes()),
            Duration::from_secs(10),
        );
        assert_eq!(
            cluster.must_get(k.as_bytes()),
            Some(format!("v{i}").into_bytes())
        );
    }
    cluster.delete(b"k000").unwrap();
    cluster.wait_replicated(b"k000", None, Duration::from_secs(10));
    assert_eq!(cluster.must_get(b"k000"), None);
}

#[test]
fn every_write_is_in_one_raft_log_index_order_on_all_replicas() {
    // Overwrites of one key from many proposals: every replica ends with the last value.
    let cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, Duration::from_secs(10));
    for i in 0..30u32 {
        cluster.must_put(b"same", format!("{i}").as_bytes());
    }
    cluster.wait_replicated(b"same", Some(b"29"), Duration::from_secs(10));
    let leader = cluster.leader_store(1).unwrap();
    let st = cluster.peer_status(leader, 1).unwrap();
    tests::wait_until(
        "followers applied as far as the leader",
        Duration::from_secs(10),
        || {
            cluster.store_ids().iter().all(|s| {
                cluster
                    .peer_status(*s, 1)
                    .is_some_and(|p| p.applied_index >= st.applied_index)
            })
        },
    );
}
