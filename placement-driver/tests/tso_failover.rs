//! TSO of a 3-member PD group across leader failover, checked on PD's own answers: raw
//! `pdpb.PD/Tso` streams record every timestamp any member handed out (no client floor filter
//! that would hide a PD going backwards), and all of them must be unique and in real-time order.

mod support;

use std::collections::HashSet;

use support::{PdGroup, RawTsoLoad};

/// Timestamps per request: ranges, not only single timestamps, must stay disjoint.
const COUNT: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_timestamps_stay_unique_and_ordered_across_a_kill_and_a_partition() {
    let mut group = PdGroup::start(3).await;
    let first = group.wait_leader().await;
    let load = RawTsoLoad::start(group.endpoints(), 3, COUNT);
    load.wait_for_more(300).await;

    // The leader is killed: another member takes over.
    group.stop(first).await;
    let second = group.wait_leader_except(Some(first)).await;
    load.wait_for_more(300).await;

    // The old leader comes back as a follower; then the new leader is cut off and keeps
    // serving until its lease runs out, while the majority elects a third leader.
    group.restart(first).await;
    load.wait_for_more(100).await;
    group.members[second].handle().set_isolated(true);
    let third = group.wait_leader_except(Some(second)).await;
    load.wait_for_more(300).await;
    group.members[second].handle().set_isolated(false);
    load.wait_for_more(100).await;

    let answers = load.finish().await;
    let answered_by: HashSet<usize> = answers.iter().map(|a| a.endpoint).collect();
    assert!(answered_by.contains(&first), "{answered_by:?}");
    assert!(answered_by.contains(&second), "{answered_by:?}");
    assert!(answered_by.contains(&third), "{answered_by:?}");
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_timestamps_after_a_whole_group_restart_are_above_everything_before() {
    let mut group = PdGroup::start(3).await;
    group.wait_leader().await;
    let load = RawTsoLoad::start(group.endpoints(), 2, COUNT);
    load.wait_for_more(200).await;
    let before = load.finish().await;

    for i in 0..3 {
        group.stop(i).await;
    }
    for i in 0..3 {
        group.restart(i).await;
    }
    group.wait_leader().await;
    let load = RawTsoLoad::start(group.endpoints(), 2, COUNT);
    load.wait_for_more(200).await;
    let after = load.finish().await;
    // Every request after the restart was sent after every answer before it.
    support::check_tso_answers(&[before, after].concat());
    group.shutdown().await;
}

#[test]
fn the_check_catches_a_pd_going_backwards_or_repeating() {
    use std::time::{Duration, Instant};
    use support::{check_tso_answers, TsoAnswer};
    let t0 = Instant::now();
    let ms = Duration::from_millis(1);
    let answer = |first, last, sent: u32, received: u32| TsoAnswer {
        first,
        last,
        sent: t0 + ms * sent,
        received: t0 + ms * received,
        endpoint: 0,
    };
    // Concurrent requests may be answered in any order; sequential ones must increase.
    check_tso_answers(&[
        answer(10, 12, 0, 5),
        answer(7, 9, 1, 6),
        answer(13, 13, 6, 7),
    ]);
    let backwards = [answer(10, 12, 0, 5), answer(7, 9, 6, 7)];
    assert!(std::panic::catch_unwind(|| check_tso_answers(&backwards)).is_err());
    let repeated = [answer(10, 12, 0, 5), answer(12, 14, 1, 6)];
    assert!(std::panic::catch_unwind(|| check_tso_answers(&repeated)).is_err());
}
