//! Leader leases under a controlled clock: reads inside the lease skip the quorum round; once
//! the clock passes the lease, a read goes through ReadIndex, whose quorum round renews it.

use std::sync::Arc;
use std::time::Duration;

use raftstore::clock::ManualClock;
use tests::Cluster;

#[test]
fn lease_reads_end_with_the_lease_and_read_index_renews_it() {
    let clock = Arc::new(ManualClock::new());
    let mut cfg = tests::cluster::test_config();
    cfg.clock = clock.clone();
    let lease = cfg.lease_duration();
    let cluster = Cluster::with_config(3, &[], cfg);
    cluster.wait_leader(1, Duration::from_secs(10));
    cluster.must_put(b"k", b"v");
    // An election in the middle (a starved tick thread on a busy machine) would change whose
    // counters we read: measure again from the new leader, a few times at most.
    for _attempt in 0..3 {
        let leader = cluster.wait_leader(1, Duration::from_secs(10));
        let status = || cluster.peer_status(leader, 1).expect("leader status");
        // `false` when the read failed with a region error (leadership moved); a wrong value
        // fails the test.
        let read = || match cluster.get_on(leader, b"k") {
            Ok(v) => {
                assert_eq!(v.as_deref(), Some(&b"v"[..]));
                true
            }
            Err(_) => false,
        };
        // The first read may need a ReadIndex round (the lease starts once the leader committed
        // an entry of its term); with time standing still, the lease then holds.
        let mut ok = read();
        let before = status();
        for _ in 0..5 {
            ok &= read();
        }
        let inside = status();
        // Past the lease: the next read must confirm leadership with a quorum first.
        clock.advance(lease + Duration::from_millis(1));
        ok &= read();
        let expired = status();
        // That round renewed the lease from the moment it started.
        ok &= read();
        let renewed = status();
        if !ok
            || [&before, &inside, &expired, &renewed]
                .iter()
                .any(|s| !s.is_leader || s.term != before.term)
        {
            continue;
        }
        assert_eq!(inside.lease_reads - before.lease_reads, 5, "{inside:?}");
        // Inside the lease nothing needs the peer: the local reader granted them all.
        assert_eq!(
            inside.local_lease_reads - before.local_lease_reads,
            5,
            "{inside:?}"
        );
        assert_eq!(inside.read_index_rounds, before.read_index_rounds);
        assert_eq!(
            expired.read_index_rounds,
            inside.read_index_rounds + 1,
            "{expired:?}"
        );
        assert_eq!(expired.lease_reads, inside.lease_reads);
        assert_eq!(expired.local_lease_reads, inside.local_lease_reads);
        assert_eq!(renewed.lease_reads, expired.lease_reads + 1, "{renewed:?}");
        assert_eq!(renewed.read_index_rounds, expired.read_index_rounds);
        return;
    }
    panic!("leadership kept changing; no stable measurement");
}
