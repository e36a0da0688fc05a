//! Leader transfer: the named replica takes over, the old leader stops serving at once.

use std::time::Duration;

use server::raw::Failure;
use tests::Cluster;

#[test]
fn leadership_moves_to_the_named_replica_and_the_old_leader_stops_serving() {
    let cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, Duration::from_secs(10));
    cluster.must_put(b"k", b"v1");
    let region = cluster.regions[0].clone();
    for _round in 0..3 {
        let from = cluster.wait_leader(1, Duration::from_secs(10));
        let to = *cluster.store_ids().iter().find(|s| **s != from).unwrap();
        let target = *region.peers.iter().find(|p| p.store_id == to).unwrap();
        let status = cluster.peer_status(from, 1).unwrap();
        cluster
            .storage(from)
            .router()
            .transfer_leader(1, target, status.region.region_epoch)
            .unwrap();
        tests::wait_until("the named replica leads", Duration::from_secs(10), || {
            cluster.leader_store(1) == Some(to)
        });
        // The former leader answers NotLeader (naming the new one) rather than reading.
        match cluster.get_on(from, b"k") {
            Err(Failure::Region(e)) => {
                let leader = e.not_leader.expect("not leader").leader;
                assert!(leader.is_none_or(|l| l.store_id == to));
            }
            other => panic!("the former leader served: {other:?}"),
        }
        cluster.must_put(b"k", format!("after-{to}").as_bytes());
        assert_eq!(
            cluster.get_on(to, b"k").ok().flatten(),
            Some(format!("after-{to}").into_bytes())
        );
    }
}

/// Drops every message from one store to another.
struct OneWay {
    from: u64,
    to: u64,
}

impl tests::Filter for OneWay {
    fn check(&self, from: u64, to: u64, _: &proto::raft_serverpb::RaftMessage) -> tests::Verdict {
        if from == self.from && to == self.to {
            tests::Verdict::Drop
        } else {
            tests::Verdict::Deliver
        }
    }
}

#[test]
fn a_leader_that_handed_over_serves_no_lease_read_even_before_it_hears_of_the_new_term() {
    let cluster = Cluster::new(3, &[]);
    let old = cluster.wait_leader(1, Duration::from_secs(10));
    cluster.must_put(b"k", b"before");
    // The old leader holds a lease now (a committed write of its term).
    assert_eq!(
        cluster.get_on(old, b"k").ok().flatten().as_deref(),
        Some(&b"before"[..])
    );
    let region = cluster.regions[0].clone();
    let to = *cluster.store_ids().iter().find(|s| **s != old).unwrap();
    let target = *region.peers.iter().find(|p| p.store_id == to).unwrap();
    // The old leader will not hear from the new one: it keeps believing it leads.
    cluster.add_filter(OneWay { from: to, to: old });
    cluster
        .storage(old)
        .router()
        .transfer_leader(1, target, region.region_epoch)
        .unwrap();
    tests::wait_until("the target leads", Duration::from_secs(10), || {
        cluster.peer_status(to, 1).is_some_and(|p| p.is_leader)
    });
    cluster
        .put_on(to, b"k", b"after")
        .unwrap_or_else(|e| panic!("write on the new leader: {e:?}"));
    // Whatever the old leader answers now, it is not the overwritten value.
    for _ in 0..5 {
        match cluster.get_on(old, b"k") {
            Ok(v) => assert_eq!(
                v.as_deref(),
                Some(&b"after"[..]),
                "stale read after handing over"
            ),
            Err(Failure::Region(_)) => {}
            Err(Failure::Message(m)) => panic!("unexpected error {m}"),
        }
    }
    cluster.clear_filters();
}

#[test]
fn a_planned_stop_hands_every_leadership_over_first() {
    let splits: Vec<Vec<u8>> = (1..8u8).map(|i| vec![b'a' + i * 3]).collect();
    let refs: Vec<&[u8]> = splits.iter().map(|s| s.as_slice()).collect();
    let mut cluster = Cluster::new(3, &refs);
    for r in 1..=8 {
        cluster.wait_leader(r, Duration::from_secs(10));
    }
    // Move every leadership to store 1, then stop it as planned.
    let region_ids: Vec<u64> = (1..=8).collect();
    for &r in &region_ids {
        let region = cluster.regions[r as usize - 1].clone();
        let target = *region.peers.iter().find(|p| p.store_id == 1).unwrap();
        if let Some(from) = cluster.leader_store(r) {
            let _ = cluster
                .storage(from)
                .router()
                .transfer_leader(r, target, region.region_epoch);
        }
    }
    tests::wait_until(
        "store 1 leads every region",
        Duration::from_secs(20),
        || {
            region_ids
                .iter()
                .all(|r| cluster.leader_store(*r) == Some(1))
        },
    );
    assert_eq!(cluster.stop_store_gracefully(1), 0);
    // No election was needed: every region already has a leader on the remaining stores.
    for &r in &region_ids {
        let leader = cluster.leader_store(r);
        assert!(
            matches!(leader, Some(2) | Some(3)),
            "region {r} has no leader: {leader:?}"
        );
    }
}

#[test]
fn leadership_and_region_changes_are_reported_to_the_observer() {
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<u64>::new()));
    let mut cfg = tests::cluster::test_config();
    let sink = seen.clone();
    cfg.on_region_change = Some(raftstore::RegionChangeObserver(std::sync::Arc::new(
        move |id| sink.lock().push(id),
    )));
    let cluster = Cluster::with_config(3, &[], cfg);
    cluster.wait_leader(1, Duration::from_secs(10));
    tests::wait_until("the election was reported", Duration::from_secs(10), || {
        seen.lock().contains(&1)
    });
    seen.lock().clear();
    let regions = cluster.split(b"m").expect("split");
    let new = regions[1].id;
    tests::wait_until(
        "the split and the new region's election were reported",
        Duration::from_secs(10),
        || {
            let s = seen.lock();
            s.contains(&1) && s.contains(&new)
        },
    );
}

#[test]
fn after_an_aborted_transfer_no_round_sent_for_an_election_timeout_gives_a_lease() {
    use raftstore::clock::ManualClock;
    let clock = std::sync::Arc::new(ManualClock::new());
    let mut cfg = tests::cluster::test_config();
    cfg.clock = clock.clone();
    let election = cfg.election_timeout();
    let cluster = Cluster::with_config(3, &[], cfg);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    cluster.must_put(b"k", b"v");
    let region = cluster.regions[0].clone();
    let to = *cluster.store_ids().iter().find(|s| **s != leader).unwrap();
    let target = *region.peers.iter().find(|p| p.store_id == to).unwrap();
    // The transferee hears nothing, so the transfer cannot finish and raft-rs aborts it after
    // an election timeout (of ticks; the lease clock stands still).
    cluster.add_filter(tests::network::Isolate(to));
    cluster
        .storage(leader)
        .router()
        .transfer_leader(1, target, region.region_epoch)
        .unwrap();
    tests::wait_until("the transfer starts", Duration::from_secs(10), || {
        cluster
            .peer_status(leader, 1)
            .is_some_and(|s| s.transferring)
    });
    tests::wait_until("the transfer is aborted", Duration::from_secs(10), || {
        cluster
            .peer_status(leader, 1)
            .is_some_and(|s| s.is_leader && !s.transferring)
    });
    let status = || cluster.peer_status(leader, 1).expect("status");
    let read = || {
        assert_eq!(
            cluster.get_on(leader, b"k").expect("read").as_deref(),
            Some(&b"v"[..])
        );
    };
    // A quorum round would renew the lease, but a delayed MsgTimeoutNow could still elect the
    // transferee: every read confirms leadership until an election timeout has passed.
    let before = status();
    read();
    read();
    let after = status();
    assert_eq!(after.lease_reads, before.lease_reads, "{after:?}");
    assert_eq!(after.read_index_rounds, before.read_index_rounds + 2);
    // Nor does a round sent inside that window give a lease that outlives it: acknowledged
    // just before the quorum voted for a late-elected transferee, it would let this leader
    // serve lease reads after the window while the transferee already leads.
    clock.advance(election - Duration::from_millis(1));
    read(); // a quorum round sent 1 ms before the window ends
    clock.advance(Duration::from_millis(2));
    let before = status();
    read(); // 1 ms after the window: still by quorum, and this round renews the lease
    let after = status();
    assert_eq!(after.lease_reads, before.lease_reads, "{after:?}");
    assert_eq!(after.read_index_rounds, before.read_index_rounds + 1);
    let renewed = status();
    read();
    assert_eq!(status().lease_reads, renewed.lease_reads + 1);
    cluster.clear_filters();
}
