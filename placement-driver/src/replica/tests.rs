//! The replica checker and balance-region, one scenario per test.

use super::*;

fn peer(id: u64, store_id: u64, role: PeerRole) -> Peer {
    let mut p = Peer {
        id,
        store_id,
        ..Default::default()
    };
    p.set_role(role);
    p
}

fn region(peers: Vec<Peer>) -> Region {
    test_util::region(1).peers(peers).build()
}

fn voters(stores: &[u64]) -> Region {
    region(
        stores
            .iter()
            .map(|s| peer(10 + s, *s, PeerRole::Voter))
            .collect(),
    )
}

/// A store holding `region_count` empty regions.
fn store(region_count: u64) -> StoreInfo {
    sized(region_count * MIN_REGION_SIZE)
}

fn sized(region_size: u64) -> StoreInfo {
    StoreInfo {
        state: StoreState::Up,
        since_heartbeat_ms: Some(1000),
        region_size,
    }
}

fn stores(counts: &[(u64, u64)]) -> BTreeMap<u64, StoreInfo> {
    counts.iter().map(|(id, c)| (*id, store(*c))).collect()
}

const MIB: u64 = 1 << 20;

/// Stores weighing the given MiB.
fn stores_mib(mib: &[(u64, u64)]) -> BTreeMap<u64, StoreInfo> {
    mib.iter().map(|(id, m)| (*id, sized(m * MIB))).collect()
}

fn ids() -> impl FnMut() -> Option<u64> {
    let mut next = 100;
    move || {
        next += 1;
        Some(next)
    }
}

fn run(
    s: &mut ReplicaScheduler,
    r: &Region,
    leader: u64,
    st: &BTreeMap<u64, StoreInfo>,
    now: u64,
) -> Option<Command> {
    run_sized(s, r, 0, leader, st, now)
}

/// [`run`] for a region of `size` bytes.
fn run_sized(
    s: &mut ReplicaScheduler,
    r: &Region,
    size: u64,
    leader: u64,
    st: &BTreeMap<u64, StoreInfo>,
    now: u64,
) -> Option<Command> {
    let leader = *r.peers.iter().find(|p| p.store_id == leader).unwrap();
    s.on_heartbeat(
        RegionView {
            region: r,
            leader: &leader,
            down_peers: &[],
            pending_peers: &[],
            approximate_size: size,
        },
        st,
        now,
        &mut ids(),
    )
}

#[test]
fn a_transfer_asked_by_hand_is_carried_out_and_checked() {
    let config = ReplicaConfig {
        balance_regions: false,
        ..Default::default()
    };
    let mut s = ReplicaScheduler::new(config);
    let st = stores(&[(1, 5), (2, 5), (3, 5), (4, 5)]);
    let r = voters(&[1, 2, 3]);
    let to = peer(99, 4, PeerRole::Voter);
    let from = r.peers[1];
    // Refused: a stranger as the source, a store that already holds one as the target.
    assert!(s
        .add_transfer_peer(&r, 0, peer(77, 4, PeerRole::Voter), to, 0)
        .is_err());
    assert!(s
        .add_transfer_peer(&r, 0, from, peer(99, 3, PeerRole::Voter), 0)
        .is_err());
    s.add_transfer_peer(&r, 0, from, to, 0).unwrap();
    assert!(
        s.add_transfer_peer(&r, 0, from, to, 0).is_err(),
        "one per region"
    );
    let learner = peer(99, 4, PeerRole::Learner);
    assert_eq!(
        run(&mut s, &r, 1, &st, 1),
        Some(Command::AddLearner(learner))
    );
    let mut r2 = r.clone();
    r2.peers.push(learner);
    assert_eq!(
        run(&mut s, &r2, 1, &st, 2),
        Some(Command::AddVoter(learner))
    );
    r2.peers[3].set_role(PeerRole::Voter);
    assert_eq!(run(&mut s, &r2, 1, &st, 3), Some(Command::Remove(from)));
}

#[test]
fn a_balanced_cluster_is_left_alone() {
    let mut s = ReplicaScheduler::new(ReplicaConfig::default());
    let st = stores(&[(1, 10), (2, 10), (3, 10), (4, 9)]);
    assert_eq!(run(&mut s, &voters(&[1, 2, 3]), 1, &st, 0), None);
    assert!(s.operators().is_empty());
}

#[test]
fn a_new_store_receives_replicas_step_by_step() {
    let mut s = ReplicaScheduler::new(ReplicaConfig::default());
    let st = stores(&[(1, 10), (2, 10), (3, 10), (4, 0)]);
    let r = voters(&[1, 2, 3]);
    // The source is the fullest store, ties to the smallest id: store 1's replica, which
    // leads, moves to store 4.
    let learner = peer(101, 4, PeerRole::Learner);
    assert_eq!(
        run(&mut s, &r, 1, &st, 0),
        Some(Command::AddLearner(learner))
    );
    // Not done yet: asked again.
    assert_eq!(
        run(&mut s, &r, 1, &st, 1),
        Some(Command::AddLearner(learner))
    );
    let mut r2 = r.clone();
    r2.peers.push(learner);
    assert_eq!(
        run(&mut s, &r2, 1, &st, 2),
        Some(Command::AddVoter(learner))
    );
    r2.peers[3].set_role(PeerRole::Voter);
    // The replica to remove leads: leadership moves first, to the smallest healthy store.
    assert_eq!(
        run(&mut s, &r2, 1, &st, 3),
        Some(Command::TransferLeader(peer(12, 2, PeerRole::Voter)))
    );
    assert_eq!(
        run(&mut s, &r2, 2, &st, 4),
        Some(Command::Remove(peer(11, 1, PeerRole::Voter)))
    );
    r2.peers.remove(0);
    assert_eq!(run(&mut s, &r2, 2, &st, 5), None);
    assert!(s.operators().is_empty());
}

#[test]
fn a_down_store_s_replica_is_replaced_then_removed() {
    let config = ReplicaConfig {
        max_store_down_ms: 5000,
        balance_regions: false,
        ..Default::default()
    };
    let mut s = ReplicaScheduler::new(config);
    let mut st = stores(&[(1, 5), (2, 5), (3, 5), (4, 8)]);
    let r = voters(&[1, 2, 3]);
    assert_eq!(
        run(&mut s, &r, 1, &st, 0),
        None,
        "balance is off; nothing is down"
    );
    st.get_mut(&3).unwrap().since_heartbeat_ms = Some(6000);
    let learner = peer(101, 4, PeerRole::Learner);
    assert_eq!(
        run(&mut s, &r, 1, &st, 1),
        Some(Command::AddLearner(learner))
    );
    assert_eq!(
        s.operators()[&1].steps[2],
        Step::Remove(peer(13, 3, PeerRole::Voter))
    );
    // A store never heard from, or gone, is as bad as a down one.
    let mut s = ReplicaScheduler::new(config);
    st.get_mut(&3).unwrap().since_heartbeat_ms = None;
    assert_eq!(
        run(&mut s, &r, 1, &st, 1),
        Some(Command::AddLearner(learner))
    );
    let mut s = ReplicaScheduler::new(config);
    st.get_mut(&3).unwrap().since_heartbeat_ms = Some(0);
    st.get_mut(&3).unwrap().state = StoreState::Offline;
    assert_eq!(
        run(&mut s, &r, 1, &st, 1),
        Some(Command::AddLearner(learner))
    );
    // Without a target store, a 3-replica region keeps its bad replica.
    let mut s = ReplicaScheduler::new(config);
    st.remove(&4);
    assert_eq!(run(&mut s, &r, 1, &st, 1), None);
}

#[test]
fn missing_and_extra_voters_and_left_over_learners() {
    let config = ReplicaConfig {
        balance_regions: false,
        ..Default::default()
    };
    let st = stores(&[(1, 5), (2, 5), (3, 7), (4, 3)]);
    let mut s = ReplicaScheduler::new(config);
    assert_eq!(
        run(&mut s, &voters(&[1, 2]), 1, &st, 0),
        Some(Command::AddLearner(peer(101, 4, PeerRole::Learner)))
    );
    let mut s = ReplicaScheduler::new(config);
    assert_eq!(
        run(&mut s, &voters(&[1, 2, 3, 4]), 1, &st, 0),
        Some(Command::Remove(peer(13, 3, PeerRole::Voter)))
    );
    let mut with_learner = voters(&[1, 2]);
    with_learner.peers.push(peer(14, 4, PeerRole::Learner));
    let mut s = ReplicaScheduler::new(config);
    assert_eq!(
        run(&mut s, &with_learner, 1, &st, 0),
        Some(Command::AddVoter(peer(14, 4, PeerRole::Learner)))
    );
    let mut full = voters(&[1, 2, 3]);
    full.peers.push(peer(14, 4, PeerRole::Learner));
    let mut s = ReplicaScheduler::new(config);
    assert_eq!(
        run(&mut s, &full, 1, &st, 0),
        Some(Command::Remove(peer(14, 4, PeerRole::Learner)))
    );
}

#[test]
fn operators_are_limited_counted_and_time_out() {
    let config = ReplicaConfig {
        max_operators: 2,
        operator_timeout_ms: 100,
        ..Default::default()
    };
    let mut s = ReplicaScheduler::new(config);
    // Stores 1-3 hold 4 regions each, store 4 none: a gap of 4.
    let st = stores(&[(1, 4), (2, 4), (3, 4), (4, 0)]);
    let region = |id: u64| {
        test_util::region(id)
            .peers([1, 2, 3].map(|s| peer(id * 10 + s, s, PeerRole::Voter)))
            .build()
    };
    assert!(run(&mut s, &region(1), 1, &st, 0).is_some());
    // Pending: store 4 counts 1, store 1 counts 3; the gap (2) still allows a move.
    assert!(run(&mut s, &region(2), 1, &st, 0).is_some());
    // The limit.
    assert_eq!(run(&mut s, &region(3), 1, &st, 0), None);
    // Timed out operators go; the region is looked at afresh.
    assert!(run(&mut s, &region(1), 1, &st, 500).is_some());
    assert_eq!(s.operators()[&1].started_ms, 500);
    // A gap below the threshold moves nothing.
    let mut s = ReplicaScheduler::new(config);
    let st = stores(&[(1, 4), (2, 4), (3, 4), (4, 3)]);
    assert_eq!(run(&mut s, &region(1), 1, &st, 0), None);
}

#[test]
fn a_store_takes_part_in_a_limited_number_of_operators() {
    let config = ReplicaConfig {
        max_operators: 10,
        max_store_operators: 2,
        ..Default::default()
    };
    let mut s = ReplicaScheduler::new(config);
    // Stores 1-3 hold 10 regions each, store 4 none: every region wants to move there.
    let st = stores(&[(1, 10), (2, 10), (3, 10), (4, 0)]);
    let region = |id: u64| {
        test_util::region(id)
            .peers([1, 2, 3].map(|s| peer(id * 10 + s, s, PeerRole::Voter)))
            .build()
    };
    assert!(run(&mut s, &region(1), 1, &st, 0).is_some());
    assert!(run(&mut s, &region(2), 1, &st, 0).is_some());
    // Store 4 already receives two new replicas: the third waits, though the cluster-wide
    // limit has room.
    assert_eq!(run(&mut s, &region(3), 1, &st, 0), None);
    assert_eq!(s.operators().len(), 2);
    // Once one finishes (its peers as the operator left them), another may start.
    let first = s.operators()[&1].clone();
    let mut moved = region(1);
    for step in &first.steps {
        match step {
            Step::AddLearner(p) => {
                let mut p = *p;
                p.set_role(PeerRole::Voter);
                moved.peers.push(p);
            }
            Step::Promote(_) => {}
            Step::Remove(p) => moved.peers.retain(|q| q.id != p.id),
        }
    }
    let leader = moved.peers[0].store_id;
    assert_eq!(run(&mut s, &moved, leader, &st, 0), None);
    assert_eq!(s.operators().len(), 1);
    assert!(run(&mut s, &region(3), 1, &st, 0).is_some());
}

#[test]
fn stores_are_weighed_by_the_sizes_of_their_regions() {
    // Store 4 holds as many regions as the others would (no count says so), but 90 MiB
    // against their 100: a 4 MiB region moves to it, a 10 MiB one would overshoot.
    let st = stores_mib(&[(1, 100), (2, 100), (3, 100), (4, 90)]);
    let r = voters(&[1, 2, 3]);
    let mut s = ReplicaScheduler::default();
    assert_eq!(run_sized(&mut s, &r, 10 * MIB, 1, &st, 0), None);
    let cmd = run_sized(&mut s, &r, 4 * MIB, 1, &st, 0);
    assert!(
        matches!(cmd, Some(Command::AddLearner(p)) if p.store_id == 4),
        "{cmd:?}"
    );
    assert_eq!(s.operators()[&1].weight, 4 * MIB);
    // The source is the heaviest holder, not the one with most regions.
    let st = stores_mib(&[(1, 50), (2, 300), (3, 100), (4, 10)]);
    let mut s = ReplicaScheduler::default();
    run_sized(&mut s, &r, 8 * MIB, 1, &st, 0).expect("a move");
    assert_eq!(
        s.operators()[&1].steps[2],
        Step::Remove(peer(12, 2, PeerRole::Voter))
    );
}

#[test]
fn store_excess_sums_what_regions_weigh_above_an_empty_one() {
    let regions: [(u64, &[u64]); 3] = [(0, &[1, 2, 3]), (5 * MIB, &[1, 2, 4]), (7, &[4])];
    let w = store_excess(regions.into_iter());
    assert_eq!(w[&1], 4 * MIB);
    assert_eq!(
        w.get(&3),
        None,
        "empty regions add nothing above their count"
    );
    assert_eq!(w[&4], 4 * MIB);
    assert_eq!(w.get(&5), None);
}

#[test]
fn a_region_never_measured_weighs_as_an_empty_one() {
    assert_eq!(region_weight(0), MIN_REGION_SIZE);
    assert_eq!(region_weight(5), MIN_REGION_SIZE);
    assert_eq!(region_weight(3 * MIB), 3 * MIB);
    // Empty regions everywhere: the count rule (a gap of at least 2 regions).
    let r = voters(&[1, 2, 3]);
    let mut s = ReplicaScheduler::default();
    assert_eq!(
        run(&mut s, &r, 1, &stores(&[(1, 5), (2, 5), (3, 5), (4, 4)]), 0),
        None
    );
    assert!(run(&mut s, &r, 1, &stores(&[(1, 5), (2, 5), (3, 5), (4, 3)]), 0).is_some());
}

#[test]
fn operators_in_flight_weigh_on_their_stores_by_their_region() {
    let config = ReplicaConfig {
        max_operators: 10,
        max_store_operators: 10,
        ..Default::default()
    };
    let mut s = ReplicaScheduler::new(config);
    let st = stores_mib(&[(1, 200), (2, 200), (3, 200), (4, 150)]);
    let region = |id: u64| {
        test_util::region(id)
            .peers([1, 2, 3].map(|s| peer(id * 10 + s, s, PeerRole::Voter)))
            .build()
    };
    // A 20 MiB region moves from store 1 to store 4 (a gap of 50 ≥ 40; pending, store 4
    // weighs 170) ...
    assert!(run_sized(&mut s, &region(1), 20 * MIB, 1, &st, 0).is_some());
    // ... so another 20 MiB one no longer may (200 on store 2 against 170: 30 < 40), a
    // 5 MiB one still may.
    assert_eq!(run_sized(&mut s, &region(2), 20 * MIB, 1, &st, 0), None);
    assert!(run_sized(&mut s, &region(3), 5 * MIB, 1, &st, 0).is_some());
}
