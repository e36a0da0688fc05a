//! A follower may apply a committed entry before its leader does, and serve it to a replica
//! read. A lease read on the leader that starts after that replica read ended must see the
//! entry too: the leader answers it only once it applied everything it knows committed (a
//! `verify` campaign with replica reads and store pauses found the leader going back in time).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use raftstore::clock::ManualClock;
use raftstore::cmd::WriteOp;
use raftstore::RequestHeader;
use tests::{wait_until, Cluster};

use crate::apply_pause::ApplyPaused;

const TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn a_lease_read_sees_what_a_replica_read_already_saw() {
    let scenario = fail::FailScenario::setup();
    // Time stands still: the leader's lease never runs out by itself.
    let clock = Arc::new(ManualClock::new());
    let mut cfg = tests::cluster::test_config();
    cfg.clock = clock.clone();
    let cluster = Cluster::with_config(3, &[], cfg);
    let leader = cluster.wait_leader(1, TIMEOUT);
    cluster.must_put(b"k", b"old");
    cluster.wait_replicated(b"k", Some(b"old"), TIMEOUT);
    let region = cluster.region_for_key(b"k");
    let follower = *cluster.store_ids().iter().find(|s| **s != leader).unwrap();
    let header = |store: u64, replica_read: bool| RequestHeader {
        replica_read,
        region_id: 1,
        epoch: region.region_epoch,
        peer: region.peers.iter().find(|p| p.store_id == store).cloned(),
        keys: vec![Bytes::from_static(b"k")],
    };
    let leader_router = cluster.storage(leader).router().clone();
    wait_until("the leader reads under its lease", TIMEOUT, || {
        leader_router.local_read(&header(leader, false)).is_some()
    });

    // The leader's apply holds: the write commits and the followers apply it, the leader
    // does not (nor answers the write).
    let paused = ApplyPaused::on_store(leader);
    let write = {
        let router = leader_router.clone();
        let header = header(leader, false);
        cluster.spawn(async move {
            let op = WriteOp::put(
                engine::CF_DEFAULT,
                Bytes::from_static(b"k"),
                Bytes::from_static(b"new"),
            );
            router.write(header, vec![op]).await
        })
    };
    wait_until("the follower applied the write", TIMEOUT, || {
        cluster.local_get(follower, b"k").as_deref() == Some(&b"new"[..])
    });
    // A replica read on the follower confirms the write through the leader and sees it.
    let follower_router = cluster.storage(follower).router().clone();
    cluster
        .block_on(follower_router.read_grant(header(follower, true)))
        .expect("replica read");
    assert_eq!(
        cluster.local_get(follower, b"k").as_deref(),
        Some(&b"new"[..])
    );

    // Then a read on the leader, whose lease holds: not granted on the caller's thread, and
    // not by the leader either while it has not applied the write.
    assert!(
        leader_router.local_read(&header(leader, false)).is_none(),
        "granted locally with a committed entry unapplied"
    );
    assert_eq!(
        cluster.local_get(leader, b"k").as_deref(),
        Some(&b"old"[..])
    );
    let rounds = cluster.peer_status(leader, 1).unwrap().read_index_rounds;
    let read = {
        let router = leader_router.clone();
        let header = header(leader, false);
        cluster.spawn(async move { router.read_grant(header).await })
    };
    // The leader took it under its lease (no ReadIndex round) and holds it.
    wait_until("the leader holds the read", TIMEOUT, || {
        cluster.peer_status(leader, 1).unwrap().reads_waiting == 1
    });
    let st = cluster.peer_status(leader, 1).unwrap();
    assert_eq!(
        st.read_index_rounds, rounds,
        "a lease read, not a ReadIndex round"
    );
    assert!(st.applied_index < st.commit_index);
    assert!(
        !read.is_finished(),
        "a lease read was granted before the leader applied what a follower served"
    );
    // The leader applies: the read is granted, and sees the write.
    drop(paused);
    cluster
        .block_on(read)
        .expect("read task")
        .expect("lease read");
    assert_eq!(
        cluster.local_get(leader, b"k").as_deref(),
        Some(&b"new"[..])
    );
    cluster
        .block_on(write)
        .expect("write task")
        .expect("the write");
    drop(cluster);
    scenario.teardown();
}
