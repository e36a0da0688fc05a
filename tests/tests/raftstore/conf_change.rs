//! Membership changes: replicas added as learners (caught up by snapshot), promoted, removed
//! and destroyed; joint consensus; stale members told to go; followers behind a compacted log
//! caught up by snapshot.

use std::time::Duration;

use proto::metapb::{self, PeerRole};
use raftstore::conf_change::{ChangeKind, PeerChange};
use tests::network::Isolate;
use tests::{wait_until, Cluster};

fn change(kind: ChangeKind, id: u64, store_id: u64) -> PeerChange {
    PeerChange {
        kind,
        peer: metapb::Peer {
            id,
            store_id,
            ..Default::default()
        },
    }
}

fn peer_on(region: &metapb::Region, store_id: u64) -> Option<metapb::Peer> {
    region
        .peers
        .iter()
        .find(|p| p.store_id == store_id)
        .copied()
}

fn role_on(cluster: &Cluster, store_id: u64, region_id: u64) -> Option<PeerRole> {
    let st = cluster.peer_status(store_id, region_id)?;
    peer_on(&st.region, store_id).map(|p| p.role())
}

/// Moves the leadership of `region_id` off `store_id`.
fn lead_elsewhere(cluster: &Cluster, region_id: u64, store_id: u64) {
    wait_until("leadership off the store", Duration::from_secs(20), || {
        let leader = cluster.wait_leader(region_id, Duration::from_secs(10));
        if leader != store_id {
            return true;
        }
        let st = cluster.peer_status(leader, region_id).unwrap();
        let to = st
            .region
            .peers
            .iter()
            .find(|p| p.store_id != store_id && p.role() == PeerRole::Voter)
            .copied()
            .unwrap();
        let _ =
            cluster
                .storage(leader)
                .router()
                .transfer_leader(region_id, to, st.region.region_epoch);
        false
    });
}

fn put_many(cluster: &Cluster, prefix: &str, n: u32) {
    for i in 0..n {
        cluster.must_put(format!("{prefix}{i:04}").as_bytes(), b"value");
    }
}

#[test]
fn a_replica_moves_to_a_new_store_by_learner_snapshot_promotion_and_removal() {
    let mut cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, Duration::from_secs(10));
    put_many(&cluster, "a", 200);
    // The log was compacted: a new replica can only catch up from a snapshot.
    wait_until("log compacted", Duration::from_secs(20), || {
        let leader = cluster.wait_leader(1, Duration::from_secs(10));
        cluster
            .peer_status(leader, 1)
            .is_some_and(|s| s.first_index > 100)
    });
    cluster.add_store(4);

    let region = cluster
        .change_peer(1, vec![change(ChangeKind::AddLearner, 5001, 4)])
        .unwrap();
    assert_eq!(region.region_epoch.unwrap().conf_ver, 2);
    assert_eq!(peer_on(&region, 4).unwrap().role(), PeerRole::Learner);
    wait_until("the learner has the data", Duration::from_secs(30), || {
        cluster.local_get(4, b"a0199").as_deref() == Some(&b"value"[..])
    });
    assert_eq!(role_on(&cluster, 4, 1), Some(PeerRole::Learner));

    cluster
        .change_peer(1, vec![change(ChangeKind::AddVoter, 5001, 4)])
        .unwrap();
    wait_until("promoted everywhere", Duration::from_secs(20), || {
        cluster.store_ids().iter().all(|s| {
            role_on(&cluster, *s, 1).is_some_and(|_| {
                cluster
                    .peer_status(*s, 1)
                    .is_some_and(|st| peer_on(&st.region, 4).unwrap().role() == PeerRole::Voter)
            })
        })
    });

    lead_elsewhere(&cluster, 1, 1);
    let removed = peer_on(&cluster.region_for_key(b"a"), 1).unwrap();
    let region = cluster
        .change_peer(1, vec![change(ChangeKind::Remove, removed.id, 1)])
        .unwrap();
    assert_eq!(region.peers.len(), 3);
    assert_eq!(region.region_epoch.unwrap().conf_ver, 4);
    wait_until(
        "the removed replica is gone",
        Duration::from_secs(20),
        || cluster.peer_status(1, 1).is_none(),
    );
    wait_until("its data is gone", Duration::from_secs(20), || {
        cluster.local_get(1, b"a0000").is_none()
    });

    put_many(&cluster, "b", 50);
    cluster.wait_replicated(b"b0049", Some(b"value"), Duration::from_secs(20));
    assert!(cluster.local_get(1, b"b0049").is_none());
    cluster.must_be_consistent();

    // The destroyed replica stays destroyed across a restart.
    cluster.restart_store(1);
    put_many(&cluster, "c", 10);
    assert!(cluster.peer_status(1, 1).is_none());
    assert!(cluster.local_get(1, b"c0009").is_none());
}

#[test]
fn a_voter_is_replaced_through_a_joint_state() {
    let mut cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, Duration::from_secs(10));
    put_many(&cluster, "a", 20);
    cluster.add_store(4);
    cluster
        .change_peer(1, vec![change(ChangeKind::AddLearner, 5001, 4)])
        .unwrap();
    lead_elsewhere(&cluster, 1, 1);
    let old = peer_on(&cluster.region_for_key(b"a"), 1).unwrap();
    // Promote the learner and demote the voter in one step: joint consensus.
    let joint = cluster
        .change_peer(
            1,
            vec![
                change(ChangeKind::AddVoter, 5001, 4),
                change(ChangeKind::AddLearner, old.id, 1),
            ],
        )
        .unwrap();
    assert_eq!(peer_on(&joint, 4).unwrap().role(), PeerRole::IncomingVoter);
    assert_eq!(peer_on(&joint, 1).unwrap().role(), PeerRole::DemotingVoter);
    // The leader leaves the joint state by itself.
    wait_until("joint state left", Duration::from_secs(20), || {
        let leader = cluster.wait_leader(1, Duration::from_secs(10));
        cluster.peer_status(leader, 1).is_some_and(|st| {
            peer_on(&st.region, 4).unwrap().role() == PeerRole::Voter
                && peer_on(&st.region, 1).unwrap().role() == PeerRole::Learner
        })
    });
    cluster
        .change_peer(1, vec![change(ChangeKind::Remove, old.id, 1)])
        .unwrap();
    wait_until("the old replica is gone", Duration::from_secs(20), || {
        cluster.peer_status(1, 1).is_none()
    });
    put_many(&cluster, "b", 20);
    cluster.wait_replicated(b"b0019", Some(b"value"), Duration::from_secs(20));
    cluster.must_be_consistent();
}

#[test]
fn membership_changes_that_cannot_be_right_are_refused() {
    let mut cluster = Cluster::new(3, &[]);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    cluster.add_store(4);
    let region = cluster.region_for_key(b"a");
    let me = peer_on(&region, leader).unwrap();
    // The leader cannot remove itself; a store cannot hold two replicas; strangers cannot be
    // removed; a voter cannot be removed in a joint step.
    for changes in [
        vec![change(ChangeKind::Remove, me.id, leader)],
        vec![change(ChangeKind::AddLearner, 7000, leader)],
        vec![change(ChangeKind::Remove, 7001, 4)],
    ] {
        let err = cluster.change_peer(1, changes.clone()).unwrap_err();
        assert!(
            format!("{err}").contains("refused") || format!("{err}").contains("leader"),
            "{changes:?}: {err}"
        );
    }
    // A change decided under an old membership is refused.
    cluster
        .change_peer(1, vec![change(ChangeKind::AddLearner, 5001, 4)])
        .unwrap();
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    // The change answers once applied; the peer takes the new membership when it handles the
    // apply result. Until then a second change is refused as "in progress", not as stale.
    let old_conf_ver = region.region_epoch.unwrap().conf_ver;
    tests::wait_until(
        "the leader took the new membership",
        Duration::from_secs(10),
        || {
            cluster
                .peer_status(leader, 1)
                .is_some_and(|p| p.region.region_epoch.unwrap().conf_ver > old_conf_ver)
        },
    );
    let stale = cluster.block_on(cluster.storage(leader).router().change_peer(
        1,
        region.region_epoch,
        vec![change(ChangeKind::Remove, 5001, 4)],
    ));
    assert!(
        matches!(stale, Err(raftstore::Error::EpochNotMatch { .. })),
        "{stale:?}"
    );
    assert_eq!(
        cluster
            .peer_status(leader, 1)
            .unwrap()
            .region
            .region_epoch
            .unwrap()
            .conf_ver,
        2
    );
}

#[test]
fn a_follower_behind_the_compacted_log_catches_up_from_a_snapshot() {
    let cfg = raftstore::Config {
        raft_log_gc_count_limit: 40,
        ..tests::cluster::test_config()
    };
    let mut cluster = Cluster::with_config(3, &[], cfg);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    put_many(&cluster, "a", 10);
    let follower = *cluster.store_ids().iter().find(|s| **s != leader).unwrap();
    let behind = cluster.peer_status(follower, 1).unwrap().last_index;
    cluster.stop_store(follower);
    put_many(&cluster, "b", 150);
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    wait_until(
        "compacted past the stopped follower",
        Duration::from_secs(20),
        || {
            cluster
                .peer_status(leader, 1)
                .is_some_and(|s| s.first_index > behind + 1)
        },
    );
    cluster.start_store(follower);
    cluster.wait_replicated(b"b0149", Some(b"value"), Duration::from_secs(30));
    assert_eq!(
        cluster.local_get(follower, b"a0009").as_deref(),
        Some(&b"value"[..])
    );
    // The snapshot reset its log: it starts after the snapshot, not where it stopped.
    assert!(cluster.peer_status(follower, 1).unwrap().first_index > behind + 1);
    // And it keeps replicating afterwards, through restarts.
    put_many(&cluster, "c", 10);
    cluster.wait_replicated(b"c0009", Some(b"value"), Duration::from_secs(20));
    cluster.restart_store(follower);
    cluster.wait_replicated(b"c0009", Some(b"value"), Duration::from_secs(20));
    cluster.must_be_consistent();
    // The snapshot's files went with it: the receiver's once applied, the leader's once no
    // follower waited for it during a snapshot timeout.
    let left = || -> Vec<(u64, Vec<String>)> {
        cluster
            .store_ids()
            .iter()
            .map(|s| (*s, cluster.snapshot_files(*s)))
            .filter(|(_, f)| !f.is_empty())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !left().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(left(), vec![], "snapshot files left");
}

#[test]
fn a_replica_that_missed_its_removal_is_told_and_never_comes_back() {
    let mut cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, Duration::from_secs(10));
    put_many(&cluster, "a", 10);
    cluster.wait_replicated(b"a0009", Some(b"value"), Duration::from_secs(20));
    lead_elsewhere(&cluster, 1, 3);
    // Store 3 is cut off while it is removed: it never learns of it from the log.
    cluster.add_filter(Isolate(3));
    let gone = peer_on(&cluster.region_for_key(b"a"), 3).unwrap();
    cluster
        .change_peer(1, vec![change(ChangeKind::Remove, gone.id, 3)])
        .unwrap();
    put_many(&cluster, "b", 10);
    assert!(
        cluster.peer_status(3, 1).is_some(),
        "cut off, it cannot know yet"
    );
    cluster.clear_filters();
    // Its next messages carry the old membership: a current member tells it to go.
    wait_until(
        "the stale replica destroyed itself",
        Duration::from_secs(30),
        || cluster.peer_status(3, 1).is_none(),
    );
    assert!(cluster.local_get(3, b"a0000").is_none());
    // Messages of the old membership (replayed by the network) do not recreate it.
    let leader = cluster.wait_leader(1, Duration::from_secs(10));
    let st = cluster.peer_status(leader, 1).unwrap();
    let old_epoch = metapb::RegionEpoch {
        conf_ver: st.region.region_epoch.unwrap().conf_ver - 1,
        ..st.region.region_epoch.unwrap()
    };
    let mut hb = raft::eraftpb::Message::default();
    hb.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    hb.from = peer_on(&st.region, leader).unwrap().id;
    hb.to = gone.id;
    hb.term = st.term;
    let stale = proto::raft_serverpb::RaftMessage {
        region_id: 1,
        from_peer: peer_on(&st.region, leader),
        to_peer: Some(gone),
        message: protobuf::Message::write_to_bytes(&hb).unwrap().into(),
        region_epoch: Some(old_epoch),
        ..Default::default()
    };
    let _ = cluster.storage(3).router().send_raft_message(stale);
    assert!(cluster.peer_status(3, 1).is_none());
    cluster.restart_store(3);
    put_many(&cluster, "c", 10);
    cluster.wait_replicated(b"c0009", Some(b"value"), Duration::from_secs(20));
    assert!(cluster.peer_status(3, 1).is_none());
    cluster.must_be_consistent();
}

#[test]
fn each_new_replica_gets_a_snapshot_that_names_it() {
    let mut cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, Duration::from_secs(10));
    put_many(&cluster, "a", 100);
    cluster.add_store(4);
    cluster.add_store(5);
    // Two learners one after the other: the snapshot made for the first does not name the
    // second, which would refuse it; the leader must make another.
    for (peer_id, store) in [(5001, 4), (5002, 5)] {
        cluster
            .change_peer(1, vec![change(ChangeKind::AddLearner, peer_id, store)])
            .unwrap();
        wait_until("the learner has the data", Duration::from_secs(20), || {
            cluster.local_get(store, b"a0099").as_deref() == Some(&b"value"[..])
        });
    }
    put_many(&cluster, "b", 10);
    cluster.wait_replicated(b"b0009", Some(b"value"), Duration::from_secs(20));
}
