//! PD membership changes through PD's HTTP API (what `rangekv ctl member add/remove` sends): a
//! member is added as a learner, joins on an empty data directory, catches up by snapshot and
//! is promoted; a lost member is replaced; a leader removes itself. Each test proves that a new
//! member *votes* by making it necessary for a quorum: a conf change that needs it commits.

mod support;

use placement_driver::{Error, MemberInfo};
use serde_json::{json, Value};
use support::{PdGroup, DEADLINE};
use test_util::wait_until_async;

async fn http(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .http1_only()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let mut req = client.request(method, url);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn add_member(group: &PdGroup, leader: usize, slot: usize) -> (u16, Value) {
    let m = &group.members[slot];
    http(
        reqwest::Method::POST,
        format!("{}/pd/api/v1/members", group.members[leader].url()),
        Some(json!({"name": m.name, "url": m.url()})),
    )
    .await
}

async fn remove_member(group: &PdGroup, leader: usize, name: &str) -> (u16, Value) {
    http(
        reqwest::Method::DELETE,
        format!(
            "{}/pd/api/v1/members/name/{name}",
            group.members[leader].url()
        ),
        None,
    )
    .await
}

/// Waits until member `i` knows `want` voters named so and no learner, and follows a leader
/// with the cluster id.
async fn wait_voters(group: &PdGroup, i: usize, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    wait_until_async("the member to see the voters", DEADLINE, || {
        let h = group.members[i].handle();
        let members: Vec<MemberInfo> = h.members();
        let mut voters: Vec<String> = members
            .iter()
            .filter(|m| !m.learner)
            .map(|m| m.name.clone())
            .collect();
        voters.sort();
        let ok = voters == want
            && members.iter().all(|m| !m.learner)
            && h.cluster_id() != 0
            && h.leadership().leader_id != 0;
        async move { ok }
    })
    .await;
}

fn follower_except(group: &PdGroup, not: &[usize]) -> usize {
    (0..group.members.len())
        .find(|i| !not.contains(i) && group.members[*i].handle.is_some())
        .expect("a running member")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_member_catches_up_by_snapshot_is_promoted_and_votes() {
    let mut group = PdGroup::start(3).await;
    let leader = group.wait_leader().await;
    let cluster_id = group.members[leader].handle().cluster_id();
    let d = group.add_slot("pd4");

    // Not added yet: it refuses to join, saying how to add it, and writes nothing of Raft.
    let err = group.try_start(d, group.join_config(d)).await.unwrap_err();
    assert!(matches!(err, Error::CannotJoin { .. }), "{err}");
    assert!(
        err.to_string().contains("rangekv ctl member add pd4"),
        "{err}"
    );

    // Bad requests are refused with the reason.
    let m = &group.members[d];
    let (code, body) = http(
        reqwest::Method::POST,
        format!("{}/pd/api/v1/members", group.members[leader].url()),
        Some(json!({"name": "pd1", "url": m.url()})),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("already a PD member"), "{body}");
    let follower = follower_except(&group, &[leader, d]);
    let (code, body) = add_member(&group, follower, d).await;
    assert_eq!(code, 503, "a follower does not change members: {body}");

    let (code, body) = add_member(&group, leader, d).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["is_learner"], json!(true), "{body}");
    assert_eq!(body["name"], json!("pd4"), "{body}");

    // It joins on an empty directory, gets the state by snapshot, and is promoted.
    group.try_start(d, group.join_config(d)).await.unwrap();
    wait_voters(&group, leader, &["pd1", "pd2", "pd3", "pd4"]).await;
    wait_voters(&group, d, &["pd1", "pd2", "pd3", "pd4"]).await;
    assert_eq!(group.members[d].handle().cluster_id(), cluster_id);

    // It votes: remove one original member and stop another; the group of three voters then
    // commits (here: a further conf change) only with pd4's acknowledgement.
    let removed = follower_except(&group, &[leader, d]);
    let removed_name = group.members[removed].name.clone();
    let (code, body) = remove_member(&group, leader, &removed_name).await;
    assert_eq!(code, 200, "{body}");
    wait_until_async("the removed member to stop", DEADLINE, || {
        let ok = group.members[removed].handle().is_removed();
        async move { ok }
    })
    .await;
    group.stop(removed).await;
    let other = follower_except(&group, &[leader, d, removed]);
    group.stop(other).await;
    let other_name = group.members[other].name.clone();
    let (code, body) = remove_member(&group, leader, &other_name).await;
    assert_eq!(code, 200, "needs pd4's vote: {body}");
    let leader_name = group.members[leader].name.clone();
    wait_voters(&group, d, &[leader_name.as_str(), "pd4"]).await;

    // pd4 restarts on its data with the id the group gave it.
    let id = group.members[d].handle().member_id();
    group.stop(d).await;
    group.try_start(d, group.join_config(d)).await.unwrap();
    assert_eq!(group.members[d].handle().member_id(), id);
    wait_voters(&group, d, &[leader_name.as_str(), "pd4"]).await;
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_member_is_removed_and_added_again_under_a_new_id() {
    let mut group = PdGroup::start(3).await;
    let leader = group.wait_leader().await;
    let f = follower_except(&group, &[leader]);
    let old_id = group.members[f].handle().member_id();
    let name = group.members[f].name.clone();
    group.stop(f).await;
    std::fs::remove_dir_all(&group.members[f].dir).unwrap();

    // Still a voter: it may not come back without its data.
    let mut config = group.config(f);
    config.initial_cluster_state = placement_driver::InitialClusterState::Existing;
    let err = group.try_start(f, config.clone()).await.unwrap_err();
    assert!(matches!(err, Error::EmptyDataDir { .. }), "{err}");
    assert!(err.to_string().contains("ctl member remove"), "{err}");

    let (code, body) = remove_member(&group, leader, &name).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = add_member(&group, leader, f).await;
    assert_eq!(code, 200, "{body}");
    let new_id = body["member_id"].as_u64().unwrap();
    assert_ne!(new_id, old_id, "a name added again gets a new id");

    group.try_start(f, config).await.unwrap();
    assert_eq!(group.members[f].handle().member_id(), new_id);
    let all: Vec<String> = (0..3).map(|i| group.members[i].name.clone()).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    wait_voters(&group, leader, &all).await;
    wait_voters(&group, f, &all).await;

    // It votes: with the third member down, only it and the leader make a quorum.
    let g = follower_except(&group, &[leader, f]);
    group.stop(g).await;
    let g_name = group.members[g].name.clone();
    let (code, body) = remove_member(&group, leader, &g_name).await;
    assert_eq!(code, 200, "needs the re-added member's vote: {body}");
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_removes_itself_stops_and_the_others_elect() {
    let mut group = PdGroup::start(3).await;
    let leader = group.wait_leader().await;
    let name = group.members[leader].name.clone();
    let (code, body) = remove_member(&group, leader, &name).await;
    assert_eq!(code, 200, "{body}");
    wait_until_async("the old leader to stop", DEADLINE, || {
        let h = group.members[leader].handle();
        let ok = h.is_removed() && !h.is_serving_leader() && h.leadership().leader_id == 0;
        async move { ok }
    })
    .await;
    let new_leader = group.wait_leader_except(Some(leader)).await;
    // Restarted on its data, a removed member refuses to serve again.
    group.stop(leader).await;
    let err = group
        .try_start(leader, group.config(leader))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("was removed from its group"),
        "{err}"
    );
    let rest: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| group.members[i].name.clone())
        .collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    wait_voters(&group, new_leader, &rest).await;
    // Down to one voter, which then cannot remove itself.
    let other = (0..3).find(|&i| i != leader && i != new_leader).unwrap();
    let other_name = group.members[other].name.clone();
    let (code, body) = remove_member(&group, new_leader, &other_name).await;
    assert_eq!(code, 200, "{body}");
    let last = group.members[new_leader].name.clone();
    wait_voters(&group, new_leader, &[last.as_str()]).await;
    let last_leader = group.wait_leader_except(Some(leader)).await;
    assert_eq!(last_leader, new_leader);
    let (code, body) = remove_member(&group, new_leader, &last).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("only voting PD member"), "{body}");
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_proposed_by_a_cut_off_leader_never_takes_effect() {
    let mut group = PdGroup::start(3).await;
    let leader = group.wait_leader().await;
    let d = group.add_slot("pd4");
    // The leader is cut off from the others: it may still accept the request while its lease
    // lasts, but the change cannot commit without a quorum.
    group.members[leader].handle().set_isolated(true);
    let (code, body) = add_member(&group, leader, d).await;
    assert_eq!(code, 503, "{body}");
    let new_leader = group.wait_leader_except(Some(leader)).await;
    group.members[leader].handle().set_isolated(false);
    // Once healed, every member follows the new leader and none has the member: the cut-off
    // leader's entry was never applied, and the new leader's log replaced it.
    for i in 0..3 {
        wait_voters(&group, i, &["pd1", "pd2", "pd3"]).await;
        let h = group.members[i].handle();
        assert!(h.members().iter().all(|m| m.name != "pd4"));
    }
    wait_until_async("the old leader to follow", DEADLINE, || {
        let h = group.members[leader].handle();
        let ok = h.leadership().leader_id == group.members[new_leader].handle().member_id();
        async move { ok }
    })
    .await;
    // Through the new leader, the same change goes through.
    let (code, body) = add_member(&group, new_leader, d).await;
    assert_eq!(code, 200, "{body}");
    group.try_start(d, group.join_config(d)).await.unwrap();
    wait_voters(&group, d, &["pd1", "pd2", "pd3", "pd4"]).await;
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_asked_at_once_are_made_one_after_the_other() {
    let mut group = PdGroup::start(3).await;
    let leader = group.wait_leader().await;
    let d = group.add_slot("pd4");
    let e = group.add_slot("pd5");
    // Raft takes one conf change at a time; the second request waits for the first.
    let ((code_d, body_d), (code_e, body_e)) =
        tokio::join!(add_member(&group, leader, d), add_member(&group, leader, e));
    assert_eq!(code_d, 200, "{body_d}");
    assert_eq!(code_e, 200, "{body_e}");
    group.try_start(d, group.join_config(d)).await.unwrap();
    group.try_start(e, group.join_config(e)).await.unwrap();
    wait_voters(&group, leader, &["pd1", "pd2", "pd3", "pd4", "pd5"]).await;
    group.shutdown().await;
}
