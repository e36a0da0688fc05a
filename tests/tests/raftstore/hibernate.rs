//! Hibernation: idle regions stop ticking and wake for work; while they sleep, store liveness
//! still lets the followers of a leader whose store stopped or was cut off elect a new one, and
//! a cut-off sleeping leader serves no stale read.

use std::time::Duration;

use server::raw::Failure;
use tests::network::Partition;
use tests::{wait_until, Cluster};

const TIMEOUT: Duration = Duration::from_secs(20);
const REGIONS: u64 = 4;

/// A 3-store cluster of `REGIONS` regions, each written once and then left idle until every
/// replica sleeps.
fn sleeping_cluster() -> Cluster {
    let cluster = Cluster::new(3, &[b"g", b"n", b"t"]);
    for r in 1..=REGIONS {
        cluster.wait_leader(r, TIMEOUT);
    }
    for key in [b"a", b"h", b"o", b"u"] {
        cluster.must_put(key, b"v1");
    }
    wait_all_asleep(&cluster);
    cluster
}

fn wait_all_asleep(cluster: &Cluster) {
    wait_until("every replica hibernates", TIMEOUT, || {
        cluster.store_ids().iter().all(|&s| {
            cluster.storage(s).router().awake_regions() == 0
                && (1..=REGIONS).all(|r| cluster.peer_status(s, r).is_some_and(|p| p.asleep))
        })
    });
}

#[test]
fn idle_regions_stop_ticking_and_wake_for_work() {
    let cluster = sleeping_cluster();
    let leader = cluster.leader_store(1).expect("a leader");
    let term = cluster.peer_status(leader, 1).unwrap().term;
    // A write wakes its region (and only it), and is replicated.
    cluster.must_put(b"b", b"v2");
    cluster.wait_replicated(b"b", Some(b"v2"), TIMEOUT);
    for s in cluster.store_ids() {
        assert!(
            cluster.peer_status(*s, 2).unwrap().asleep,
            "region 2 had no work and stays asleep"
        );
    }
    // A read of a sleeping region wakes it too (its lease ran out while it slept).
    assert_eq!(cluster.must_get(b"o"), Some(b"v1".to_vec()));
    // Sleeping cost no election: the same leader, the same term.
    assert_eq!(cluster.leader_store(1), Some(leader));
    assert_eq!(cluster.peer_status(leader, 1).unwrap().term, term);
    // Idle again, everything sleeps again.
    wait_all_asleep(&cluster);
    cluster.must_be_consistent();
}

#[test]
fn followers_of_a_sleeping_region_elect_when_the_leaders_store_stops() {
    let mut cluster = sleeping_cluster();
    let old = cluster.leader_store(1).expect("a leader");
    cluster.stop_store(old);
    // Nothing is sent to region 1: only store liveness can wake its followers.
    wait_until("a new leader on another store", TIMEOUT, || {
        cluster
            .store_ids()
            .iter()
            .filter(|&&s| s != old)
            .any(|&s| cluster.peer_status(s, 1).is_some_and(|p| p.is_leader))
    });
    cluster.must_put(b"a", b"v2");
    assert_eq!(cluster.must_get(b"a"), Some(b"v2".to_vec()));
    cluster.start_store(old);
    cluster.wait_replicated(b"a", Some(b"v2"), TIMEOUT);
    cluster.must_be_consistent();
}

#[test]
fn a_cut_off_sleeping_leader_is_replaced_and_serves_no_stale_read() {
    let cluster = sleeping_cluster();
    let old = cluster.leader_store(1).expect("a leader");
    let others: Vec<u64> = cluster
        .store_ids()
        .iter()
        .copied()
        .filter(|&s| s != old)
        .collect();
    cluster.add_filter(Partition::new(&[&[old], &others]));
    let new = {
        let mut found = None;
        wait_until("the majority elects a leader", TIMEOUT, || {
            found = others
                .iter()
                .copied()
                .find(|&s| cluster.peer_status(s, 1).is_some_and(|p| p.is_leader));
            found.is_some()
        });
        found.unwrap()
    };
    cluster
        .put_on(new, b"a", b"v2")
        .unwrap_or_else(|e| panic!("write on the new leader: {e:?}"));
    // The old leader still believes it leads, but its lease ran out while it slept: it must
    // not answer with the overwritten value.
    match cluster.get_on(old, b"a") {
        Ok(v) => assert_ne!(v.as_deref(), Some(&b"v1"[..]), "stale read"),
        Err(Failure::Region(_)) => {}
        Err(Failure::Message(m)) => panic!("unexpected error {m}"),
    }
    cluster.clear_filters();
    cluster.wait_replicated(b"a", Some(b"v2"), TIMEOUT);
    cluster.must_be_consistent();
}
