//! Region merge races made to happen: the target changes (splits) before the prepared merge
//! commits, so the merge must roll back; and every store restarts while a merge is prepared,
//! which must then still complete. A fail point keeps target leaders from proposing
//! CommitMerge for as long as the test needs.

use std::time::Duration;

use tests::{wait_until, Cluster};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Keeps CommitMerge from being proposed until dropped (also when the test fails).
struct CommitHeld;

impl CommitHeld {
    fn start() -> CommitHeld {
        fail::cfg("merge_before_commit_proposal", "return").expect("fail point");
        CommitHeld
    }
}

impl Drop for CommitHeld {
    fn drop(&mut self) {
        fail::remove("merge_before_commit_proposal");
    }
}

fn all_merging(cluster: &Cluster, region_id: u64, merging: bool) -> bool {
    cluster.store_ids().iter().all(|s| {
        cluster
            .peer_status(*s, region_id)
            .is_some_and(|st| st.merging == merging)
    })
}

#[test]
fn a_merge_whose_target_split_first_rolls_back() {
    let scenario = fail::FailScenario::setup();
    let cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, TIMEOUT);
    cluster.must_put(b"x", b"right");
    let regions = cluster.split(b"m").expect("split");
    let (left, right) = (regions[0].clone(), regions[1].clone());
    cluster.wait_leader(right.id, TIMEOUT);
    let held = CommitHeld::start();
    let prepared = cluster.prepare_merge(right.id, left.id).expect("prepare");
    wait_until("every source replica is merging", TIMEOUT, || {
        all_merging(&cluster, right.id, true)
    });
    // The target moves past the epoch the merge was prepared at: it can never commit.
    let parts = cluster.split(b"c").expect("the target splits");
    assert_eq!(&parts[0].end_key[..], b"c");
    wait_until("the merge rolled back everywhere", TIMEOUT, || {
        all_merging(&cluster, right.id, false)
    });
    drop(held);
    let st = cluster
        .peer_status(cluster.store_ids()[0], right.id)
        .unwrap();
    assert!(
        st.region.region_epoch.unwrap().version > prepared.region_epoch.unwrap().version,
        "rollback bumps the version"
    );
    assert_eq!(
        (&st.region.start_key[..], &st.region.end_key[..]),
        (&b"m"[..], &b""[..])
    );
    cluster.update_route(std::slice::from_ref(&st.region));
    // The source takes writes again and keeps its data.
    cluster.must_put(b"y", b"after rollback");
    assert_eq!(cluster.must_get(b"x"), Some(b"right".to_vec()));
    assert_eq!(cluster.must_get(b"y"), Some(b"after rollback".to_vec()));
    assert!(cluster.is_hosted(right.id));
    cluster.must_be_consistent();
    scenario.teardown();
}

#[test]
fn a_prepared_merge_survives_a_restart_of_every_store_and_completes() {
    let scenario = fail::FailScenario::setup();
    let mut cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, TIMEOUT);
    for c in b'a'..=b'z' {
        cluster.must_put(&[c], &[c]);
    }
    let regions = cluster.split(b"m").expect("split");
    let (left, right) = (regions[0].clone(), regions[1].clone());
    cluster.wait_leader(right.id, TIMEOUT);
    let held = CommitHeld::start();
    cluster.prepare_merge(left.id, right.id).expect("prepare");
    wait_until("every source replica is merging", TIMEOUT, || {
        all_merging(&cluster, left.id, true)
    });
    for s in cluster.store_ids().to_vec() {
        cluster.stop_store(s);
    }
    for s in cluster.store_ids().to_vec() {
        cluster.start_store(s);
    }
    cluster.wait_leader(right.id, TIMEOUT);
    assert!(
        all_merging(&cluster, left.id, true),
        "the merge state is persisted"
    );
    drop(held);
    let merged = cluster.wait_merged(&left, right.id, TIMEOUT);
    assert_eq!(
        (&merged.start_key[..], &merged.end_key[..]),
        (&b""[..], &b""[..])
    );
    for c in b'a'..=b'z' {
        assert_eq!(cluster.must_get(&[c]), Some(vec![c]));
    }
    cluster.must_put(b"b2", b"after");
    cluster.must_be_consistent();
    scenario.teardown();
}
