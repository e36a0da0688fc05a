//! Leader transfer: the named replica takes over, the old leader stops serving at once.

use std::time::Duration;

use server::raw::Failure;
use tests::Cluster;

#[test]
fn leadership_moves_to_the_named_replica_and_the_old_leader_stops_serving() {
    let cluster = Cluster::new(3, &[]);
    let old = cluster.wait_leader(1, Duration::from_secs(10));
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
    let _ = old;
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
