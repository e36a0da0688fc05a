use std::time::Duration;

use tests::Cluster;

#[test]
fn whole_cluster_restart_keeps_all_data() {
    let mut cluster = Cluster::new(3, &[b"m"]);
    for i in 0..40u32 {
        cluster.must_put(
            format!("{}{i:02}", if i % 2 == 0 { "a" } else { "x" }).as_bytes(),
            format!("{i}").as_bytes(),
        );
    }
    for s in cluster.store_ids().to_vec() {
        cluster.stop_store(s);
    }
    for s in cluster.store_ids().to_vec() {
        cluster.start_store(s);
    }
    cluster.wait_leader(1, Duration::from_secs(15));
    cluster.wait_leader(2, Duration::from_secs(15));
    for i in 0..40u32 {
        let k = format!("{}{i:02}", if i % 2 == 0 { "a" } else { "x" });
        assert_eq!(
            cluster.must_get(k.as_bytes()),
            Some(format!("{i}").into_bytes())
        );
    }
    // And it keeps accepting writes.
    cluster.must_put(b"after-restart", b"ok");
    cluster.wait_replicated(b"after-restart", Some(b"ok"), Duration::from_secs(10));
    // Not only do they answer: the replicas hold the same data.
    cluster.must_be_consistent();
}

#[test]
fn a_restarted_follower_recovers_its_log_and_catches_up() {
    let mut cluster = Cluster::new(3, &[]);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    let follower = *cluster.store_ids().iter().find(|s| **s != leader).unwrap();
    cluster.must_put(b"k1", b"v1");
    cluster.wait_replicated(b"k1", Some(b"v1"), Duration::from_secs(10));
    cluster.stop_store(follower);
    cluster.must_put(b"k2", b"v2");
    cluster.start_store(follower);
    cluster.wait_replicated(b"k2", Some(b"v2"), Duration::from_secs(15));
    cluster.must_be_consistent();
    assert_eq!(cluster.local_get(follower, b"k1"), Some(b"v1".to_vec()));
}
