use std::time::{Duration, Instant};

use tests::Cluster;

#[test]
fn killing_the_leader_loses_no_acknowledged_write() {
    let mut cluster = Cluster::new(3, &[]);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    for i in 0..20u32 {
        cluster.must_put(format!("a{i}").as_bytes(), b"before");
    }
    cluster.stop_store(leader);
    let started = Instant::now();
    let new_leader = cluster.wait_leader(1, Duration::from_secs(10));
    assert_ne!(new_leader, leader);
    // A new leader serves within a few election timeouts.
    cluster.must_put(b"after", b"1");
    let elapsed = started.elapsed();
    assert!(
        elapsed < cluster.cfg.election_timeout() * 10,
        "took {elapsed:?} to serve again"
    );
    for i in 0..20u32 {
        assert_eq!(
            cluster.must_get(format!("a{i}").as_bytes()),
            Some(b"before".to_vec())
        );
    }
    // The old leader comes back and catches up.
    cluster.start_store(leader);
    cluster.wait_replicated(b"after", Some(b"1"), Duration::from_secs(15));
    // Not only do they answer: the replicas hold the same data.
    cluster.must_be_consistent();
}

#[test]
fn repeated_leader_kills_keep_every_acknowledged_write() {
    let mut cluster = Cluster::new(3, &[]);
    let mut acked = Vec::new();
    for round in 0..3u32 {
        let leader = cluster.wait_leader(1, Duration::from_secs(10));
        for i in 0..10u32 {
            let k = format!("r{round}-{i}");
            cluster.must_put(k.as_bytes(), k.as_bytes());
            acked.push(k);
        }
        cluster.stop_store(leader);
        cluster.wait_leader(1, Duration::from_secs(10));
        cluster.start_store(leader);
    }
    for k in &acked {
        assert_eq!(
            cluster.must_get(k.as_bytes()).as_deref(),
            Some(k.as_bytes())
        );
    }
}
