//! Which data directory a PD member may start on: a wiped member of a running group, another
//! member's or group's or cluster's directory, and a partly deleted one are refused; a member's
//! own directory is loaded, never bootstrapped again (see `placement_driver::membership`).

mod support;

use std::path::Path;

use placement_driver::raft_node::PD_RAFT_GROUP_ID;
use placement_driver::{Error, InitialClusterState, PdConfig};
use support::{PdGroup, DEADLINE};
use test_util::wait_until_async;

/// Index of a running member that is not the serving leader.
fn a_follower(group: &PdGroup, leader: usize) -> usize {
    (0..group.members.len())
        .find(|&i| i != leader)
        .expect("a group of several")
}

async fn wait_follows(group: &PdGroup, i: usize, leader: usize) {
    let leader_id = group.members[leader].handle().member_id();
    wait_until_async("the member to follow the leader", DEADLINE, || {
        let h = group.members[i].handle();
        let ok = h.leadership().leader_id == leader_id && h.cluster_id() != 0;
        async move { ok }
    })
    .await;
}

fn existing(mut config: PdConfig) -> PdConfig {
    config.initial_cluster_state = InitialClusterState::Existing;
    config
}

fn is_empty_dir(dir: &Path) -> bool {
    !dir.exists() || std::fs::read_dir(dir).unwrap().next().is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_member_of_a_running_group_refuses_to_start_as_existing() {
    let mut group = PdGroup::start(3).await;
    let leader = group.wait_leader().await;
    let f = a_follower(&group, leader);

    // With its data, an `existing` member restarts and rejoins.
    group.stop(f).await;
    group.try_start(f, existing(group.config(f))).await.unwrap();
    wait_follows(&group, f, leader).await;

    // Without it, it refuses, says why and what to do, and writes nothing.
    group.stop(f).await;
    let dir = group.members[f].dir.clone();
    std::fs::remove_dir_all(&dir).unwrap();
    for _ in 0..2 {
        let err = group
            .try_start(f, existing(group.config(f)))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::EmptyDataDir { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("holds no PD data"), "{msg}");
        assert!(msg.contains("\"existing\""), "{msg}");
        assert!(
            msg.contains("Restore this member's own data directory"),
            "{msg}"
        );
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
    }
    // The engine was created but nothing written: still empty for the next attempt.
    let engine = engine::Engine::open(&dir, &engine::EngineOptions::default()).unwrap();
    assert!(raft_log::ApplyState::load(&engine, PD_RAFT_GROUP_ID)
        .unwrap()
        .is_none());
    drop(engine);

    // The others kept serving throughout.
    assert_eq!(group.wait_leader().await, leader);
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_pd_with_empty_data_refuses_existing() {
    let dir = tempfile::tempdir().unwrap();
    let config = existing(PdConfig::for_test(dir.path().join("pd")));
    let err = placement_driver::start(config.clone()).await.unwrap_err();
    assert!(matches!(err, Error::CannotJoin { .. }), "{err}");
    assert!(err.to_string().contains("holds no PD data"), "{err}");
    // `new` creates it; from then on `existing` loads it.
    let pd = placement_driver::start(PdConfig {
        initial_cluster_state: InitialClusterState::New,
        ..config.clone()
    })
    .await
    .unwrap();
    let cluster_id = pd.cluster_id();
    pd.shutdown().await.unwrap();
    let pd = placement_driver::start(config).await.unwrap();
    assert_eq!(pd.cluster_id(), cluster_id);
    pd.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_another_member_or_group_is_refused() {
    let mut group = PdGroup::start(3).await;
    let leader = group.wait_leader().await;
    let f = a_follower(&group, leader);
    let other = (0..3)
        .find(|&i| i != leader && i != f)
        .expect("three members");
    group.stop(f).await;
    group.stop(other).await;

    // Another (stopped) member's directory.
    let mut config = group.config(f);
    config.data_dir = group.members[other].dir.clone();
    let err = group.try_start(f, config).await.unwrap_err();
    assert!(matches!(err, Error::ForeignDataDir { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("data of member {:?}", group.members[other].name)),
        "{msg}"
    );

    // Its own directory, but initial_cluster names other members.
    let mut config = group.config(f);
    let renamed = group.members[other].name.clone();
    config.initial_cluster = group
        .initial_cluster
        .replace(&format!("{renamed}="), "pd9=");
    let err = group.try_start(f, config).await.unwrap_err();
    assert!(matches!(err, Error::ForeignDataDir { .. }), "{err}");
    assert!(err.to_string().contains("belongs to a group"), "{err}");

    // A new, empty member whose initial_cluster disagrees with the running member's (the old
    // leader answers GetMembers without a quorum too): refused before it writes anything.
    let dir = group.members[f].dir.clone();
    std::fs::remove_dir_all(&dir).unwrap();
    let mut config = group.config(f);
    config.initial_cluster = group
        .initial_cluster
        .replace(&format!("{renamed}="), "pd9=");
    let err = group.try_start(f, config).await.unwrap_err();
    assert!(matches!(err, Error::PeerMismatch { .. }), "{err}");
    assert!(err.to_string().contains("the running member"), "{err}");
    let engine = engine::Engine::open(&dir, &engine::EngineOptions::default()).unwrap();
    assert!(raft_log::ApplyState::load(&engine, PD_RAFT_GROUP_ID)
        .unwrap()
        .is_none());
    drop(engine);
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_another_cluster_is_refused() {
    let mut ours = PdGroup::start(3).await;
    let mut theirs = PdGroup::start(3).await;
    let our_leader = ours.wait_leader().await;
    theirs.wait_leader().await;
    let f = a_follower(&ours, our_leader);
    // Same member names in both groups; only the cluster ids differ.
    wait_until_async(
        "the other cluster's member to learn its cluster id",
        DEADLINE,
        || {
            let ok = theirs.members[f].handle().cluster_id() != 0;
            async move { ok }
        },
    )
    .await;
    let (our_id, their_id) = (
        ours.members[our_leader].handle().cluster_id(),
        theirs.members[f].handle().cluster_id(),
    );
    assert_ne!(our_id, their_id);
    theirs.stop(f).await;
    ours.stop(f).await;

    let mut config = ours.config(f);
    config.data_dir = theirs.members[f].dir.clone();
    let err = ours.try_start(f, config).await.unwrap_err();
    assert!(matches!(err, Error::ForeignDataDir { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("cluster {their_id}")), "{msg}");
    assert!(msg.contains(&format!("cluster {our_id}")), "{msg}");

    // Its own directory is fine.
    ours.restart(f).await;
    wait_follows(&ours, f, our_leader).await;
    ours.shutdown().await;
    theirs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_deleted_data_dir_is_not_bootstrapped_again() {
    let mut group = PdGroup::start(3).await;
    let leader = group.wait_leader().await;
    let f = a_follower(&group, leader);
    wait_follows(&group, f, leader).await;
    group.stop(f).await;
    // Its Raft state is lost, its member record and state machine are still there.
    {
        let engine =
            engine::Engine::open(&group.members[f].dir, &engine::EngineOptions::default()).unwrap();
        let mut wb = engine::WriteBatch::new();
        raft_log::clear_group(PD_RAFT_GROUP_ID, &mut wb);
        engine.write(wb, true).unwrap();
    }
    for config in [group.config(f), existing(group.config(f))] {
        let err = group.try_start(f, config).await.unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("no PD Raft state"), "{err}");
    }
    assert!(!is_empty_dir(&group.members[f].dir));
    group.shutdown().await;
}
