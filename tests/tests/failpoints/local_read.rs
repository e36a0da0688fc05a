//! The local reader grants lease reads on the caller's thread only while the leader itself
//! would: once the leader knows a split committed, reads stop being granted locally until the
//! split is applied here, even though the lease has not run out (the other replicas may apply
//! the split first and elect a leader of the new region).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use proto::raft_serverpb::RaftMessage;
use protobuf::Message as _;
use raftstore::clock::ManualClock;
use raftstore::cmd::SplitIds;
use raftstore::{RequestHeader, StoreRouter};
use tests::network::{Filter, Verdict};
use tests::{wait_until, Cluster};

use crate::apply_pause::ApplyPaused;

const TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn a_committed_split_stops_local_reads_until_it_is_applied() {
    let scenario = fail::FailScenario::setup();
    // Time stands still: the lease never runs out by itself.
    let clock = Arc::new(ManualClock::new());
    let mut cfg = tests::cluster::test_config();
    cfg.clock = clock.clone();
    let cluster = Cluster::with_config(3, &[], cfg);
    let leader = cluster.wait_leader(1, TIMEOUT);
    cluster.must_put(b"x", b"v");
    let region = cluster.region_for_key(b"x");
    let router = cluster.storage(leader).router().clone();
    let header = || RequestHeader {
        replica_read: false,
        region_id: 1,
        epoch: region.region_epoch,
        peer: region.peers.iter().find(|p| p.store_id == leader).cloned(),
        keys: vec![Bytes::from_static(b"x")],
    };
    let local = || cluster.peer_status(leader, 1).unwrap().local_lease_reads;
    // The leader holds a lease once an entry of its term is applied: reads become local.
    wait_until("a read is granted locally", TIMEOUT, || {
        let before = local();
        cluster.block_on(router.read_grant(header())).is_ok() && local() > before
    });

    // Every apply worker holds: the split commits, nobody applies it.
    let paused = ApplyPaused::everywhere();
    let split = {
        let router = router.clone();
        let header = RequestHeader {
            keys: vec![],
            ..header()
        };
        let ids = vec![SplitIds {
            region_id: 1000,
            peer_ids: vec![1001, 1002, 1003],
        }];
        cluster.spawn(async move {
            router
                .split(header, vec![Bytes::from_static(b"m")], ids)
                .await
        })
    };
    wait_until("the leader knows the split committed", TIMEOUT, || {
        cluster.peer_status(leader, 1).unwrap().last_committed_split > 0
    });
    let before = local();
    let (tx, rx) = std::sync::mpsc::channel();
    router.read(header(), move |r| {
        let _ = tx.send(r);
    });
    assert_eq!(local(), before, "granted locally across a committed split");
    assert!(
        rx.try_recv().is_err(),
        "the read must wait for the split to apply"
    );

    // Apply resumes: the split applies, and the waiting read learns the region changed.
    drop(paused);
    let regions = cluster.block_on(split).expect("split task").expect("split");
    assert_eq!(regions.len(), 2);
    match rx.recv_timeout(TIMEOUT).expect("the read is answered") {
        Err(raftstore::Error::EpochNotMatch { .. }) => {}
        other => panic!("expected EpochNotMatch after the split, got {other:?}"),
    }
    // Under the new epoch, reads are local again.
    let left = regions.iter().find(|r| r.id == 1).unwrap().clone();
    let current = RequestHeader {
        epoch: left.region_epoch,
        keys: vec![Bytes::from_static(b"a")],
        ..header()
    };
    wait_until("reads are local again", TIMEOUT, || {
        let before = local();
        cluster.block_on(router.read_grant(current.clone())).is_ok() && local() > before
    });
    drop(cluster);
    scenario.teardown();
}

/// Records, for every message the leader's store sends in region 1, the commit index it
/// carries and whether the local reader would still grant `header` at the moment it leaves.
struct CommitWatch {
    leader: u64,
    router: StoreRouter,
    header: RequestHeader,
    seen: Arc<Mutex<Vec<(u64, bool)>>>,
}

impl Filter for CommitWatch {
    fn check(&self, from_store: u64, _to: u64, msg: &RaftMessage) -> Verdict {
        if from_store == self.leader && msg.region_id == 1 {
            if let Ok(m) = raft::eraftpb::Message::parse_from_bytes(&msg.message) {
                let local = self.router.local_read(&self.header).is_some();
                self.seen.lock().push((m.commit, local));
            }
        }
        Verdict::Deliver
    }
}

#[test]
fn no_message_reports_a_split_committed_while_reads_are_still_local() {
    let scenario = fail::FailScenario::setup();
    let clock = Arc::new(ManualClock::new());
    let mut cfg = tests::cluster::test_config();
    cfg.clock = clock.clone();
    let cluster = Cluster::with_config(3, &[], cfg);
    let leader = cluster.wait_leader(1, TIMEOUT);
    cluster.must_put(b"x", b"v");
    let region = cluster.region_for_key(b"x");
    let router = cluster.storage(leader).router().clone();
    // A read of the half the split will give away, under the parent's epoch.
    let header = RequestHeader {
        region_id: 1,
        epoch: region.region_epoch,
        peer: region.peers.iter().find(|p| p.store_id == leader).cloned(),
        keys: vec![Bytes::from_static(b"x")],
        replica_read: false,
    };
    wait_until("reads are local", TIMEOUT, || {
        router.local_read(&header).is_some()
    });
    // Hold apply so the parent's range stays as it was while the split commits.
    let paused = ApplyPaused::everywhere();
    let seen = Arc::new(Mutex::new(Vec::new()));
    cluster.add_filter(CommitWatch {
        leader,
        router: router.clone(),
        header: header.clone(),
        seen: seen.clone(),
    });
    let split = {
        let router = router.clone();
        let header = RequestHeader {
            keys: vec![],
            ..header.clone()
        };
        let ids = vec![SplitIds {
            region_id: 1000,
            peer_ids: vec![1001, 1002, 1003],
        }];
        cluster.spawn(async move {
            router
                .split(header, vec![Bytes::from_static(b"m")], ids)
                .await
        })
    };
    wait_until("a follower learned the split committed", TIMEOUT, || {
        cluster
            .store_ids()
            .iter()
            .filter(|s| **s != leader)
            .any(|s| {
                cluster
                    .peer_status(*s, 1)
                    .is_some_and(|p| p.last_committed_split > 0)
            })
    });
    let split_index = cluster.peer_status(leader, 1).unwrap().last_committed_split;
    assert!(split_index > 0);
    let seen = seen.lock().clone();
    assert!(
        seen.iter().any(|&(commit, _)| commit >= split_index),
        "the commit went out: {seen:?}"
    );
    let stale: Vec<_> = seen
        .iter()
        .filter(|&&(commit, local)| commit >= split_index && local)
        .collect();
    assert!(
        stale.is_empty(),
        "messages reported the split (index {split_index}) committed while the local reader \
         still granted reads of the parent's range: {stale:?}"
    );
    drop(paused);
    cluster.clear_filters();
    cluster.block_on(split).expect("split task").expect("split");
    drop(cluster);
    scenario.teardown();
}
