//! Consistency checks: replicas that agree pass; a replica whose data was changed behind Raft's
//! back is reported, and only in its own region.

use std::time::Duration;

use engine::{keys, CF_DEFAULT};
use raftstore::consistency::Verdict;
use tests::Cluster;

#[test]
fn agreeing_replicas_pass_and_a_diverged_replica_is_reported() {
    let cluster = Cluster::new(3, &[b"m"]);
    for r in &cluster.regions {
        cluster.wait_leader(r.id, Duration::from_secs(20));
    }
    for k in [&b"a"[..], b"b", b"n", b"z"] {
        cluster.must_put(k, b"v");
    }
    cluster.must_be_consistent();

    // Change one follower's copy of region 1 directly in its engine.
    let left = cluster.region_for_key(b"a").id;
    let leader = cluster.wait_leader(left, Duration::from_secs(20));
    let follower = *cluster.store_ids().iter().find(|s| **s != leader).unwrap();
    let mut wb = engine::WriteBatch::new();
    wb.put(CF_DEFAULT, &keys::data_key(b"b"), b"corrupted");
    cluster.engine(follower).write(wb, true).unwrap();
    let before = raftstore::metrics::CONSISTENCY_MISMATCHES.get();

    let err = cluster
        .check_consistency(left)
        .expect_err("a diverged replica must be reported");
    let msg = format!("{err:#}");
    assert!(msg.contains(&format!("store {follower}")), "{msg}");
    let status = cluster.peer_status(follower, left).unwrap();
    assert!(
        matches!(status.last_verified, Some((_, Verdict::Mismatch { .. }))),
        "{status:?}"
    );
    assert!(raftstore::metrics::CONSISTENCY_MISMATCHES.get() > before);

    // The other region is not affected.
    let right = cluster.region_for_key(b"n").id;
    cluster.check_consistency(right).unwrap();
}
