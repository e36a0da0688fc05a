use std::time::Duration;

use server::raw::Failure;
use tests::network::{Isolate, Partition};
use tests::Cluster;

#[test]
fn minority_serves_no_writes_and_no_stale_reads_then_heals() {
    let cluster = Cluster::new(3, &[]);
    let old = cluster.wait_leader(1, Duration::from_secs(10));
    cluster.must_put(b"k", b"v1");
    // Cut the leader off from the other two.
    cluster.add_filter(Isolate(old));
    // The majority elects a new leader and accepts a new value.
    let mut new_leader = 0;
    tests::wait_until(
        "a new leader on the majority side",
        Duration::from_secs(15),
        || {
            new_leader = cluster
                .store_ids()
                .iter()
                .copied()
                .filter(|s| *s != old)
                .find(|s| cluster.peer_status(*s, 1).is_some_and(|p| p.is_leader))
                .unwrap_or(0);
            new_leader != 0
        },
    );
    cluster
        .put_on(new_leader, b"k", b"v2")
        .unwrap_or_else(|e| panic!("majority write failed: {e:?}"));
    // The old leader may still think it leads for a while, but it must never return v1 now,
    // and never acknowledge a write.
    for _ in 0..20 {
        match cluster.get_on(old, b"k") {
            Ok(v) => assert_eq!(
                v.as_deref(),
                Some(&b"v2"[..]),
                "stale read from the minority"
            ),
            Err(Failure::Region(_)) => {}
            Err(Failure::Message(m)) => panic!("unexpected error {m}"),
        }
        match cluster.put_on(old, b"minority", b"x") {
            Ok(()) => panic!("minority acknowledged a write"),
            Err(Failure::Region(_)) => {}
            Err(Failure::Message(m)) => panic!("unexpected error {m}"),
        }
    }
    assert_eq!(cluster.local_get(old, b"minority"), None);
    // Heal: the old leader catches up and the cluster serves.
    cluster.clear_filters();
    cluster.wait_replicated(b"k", Some(b"v2"), Duration::from_secs(15));
    assert_eq!(cluster.must_get(b"k"), Some(b"v2".to_vec()));
    assert_eq!(cluster.must_get(b"minority"), None);
}

#[test]
fn symmetric_partition_of_a_follower_keeps_majority_serving() {
    let cluster = Cluster::new(3, &[]);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    let follower = *cluster.store_ids().iter().find(|s| **s != leader).unwrap();
    let others: Vec<u64> = cluster
        .store_ids()
        .iter()
        .copied()
        .filter(|s| *s != follower)
        .collect();
    cluster.add_filter(Partition::new(&[&[follower], &others]));
    for i in 0..10u32 {
        cluster.must_put(format!("p{i}").as_bytes(), b"v");
    }
    assert_eq!(cluster.local_get(follower, b"p9"), None);
    cluster.clear_filters();
    cluster.wait_replicated(b"p9", Some(b"v"), Duration::from_secs(15));
}
