use std::time::Duration;

use tests::Cluster;

#[test]
fn leader_compacts_logs_every_replica_has() {
    let mut cluster = Cluster::new(3, &[]);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    for i in 0..100u32 {
        cluster.must_put(format!("g{i:03}").as_bytes(), b"v");
    }
    tests::wait_until(
        "log compaction on every replica",
        Duration::from_secs(20),
        || {
            cluster.store_ids().iter().all(|s| {
                cluster
                    .peer_status(*s, 1)
                    .is_some_and(|p| p.first_index > 50)
            })
        },
    );
    // A stopped follower holds back compaction: its next entry stays in everyone's log.
    let follower = *cluster.store_ids().iter().find(|s| **s != leader).unwrap();
    let follower_last = cluster.peer_status(follower, 1).unwrap().last_index;
    cluster.stop_store(follower);
    for i in 0..100u32 {
        cluster.must_put(format!("h{i:03}").as_bytes(), b"v");
    }
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    let st = cluster.peer_status(leader, 1).unwrap();
    assert!(
        st.first_index <= follower_last + 1,
        "compacted past a live replica: {st:?}"
    );
    cluster.start_store(follower);
    cluster.wait_replicated(b"h099", Some(b"v"), Duration::from_secs(20));
    // After it caught up, compaction proceeds again.
    tests::wait_until("compaction after catch-up", Duration::from_secs(20), || {
        cluster
            .peer_status(leader, 1)
            .is_some_and(|p| p.first_index > follower_last + 1)
    });
}
