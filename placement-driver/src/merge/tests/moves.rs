//! The merge checker's replica moves onto the target's stores: the rule ([`plan_move`]), then
//! the checker with the replica scheduler: a move and the merge after it, and what holds a move
//! back (an unfit or busy store, the operator limit, the merge rules); ties.

use super::*;
use crate::replica::{Command, RegionView, Step, MERGE_MOVE_KIND};

fn any_store(_: u64) -> Result<(), Refusal> {
    Ok(())
}

fn learner(id: u64, store_id: u64) -> Peer {
    let mut p = test_util::peer(id, store_id);
    p.set_role(PeerRole::Learner);
    p
}

/// The source's peer on `store` (region `id`'s peers are `id * 10 + store`).
fn on(region: &Region, store: u64) -> Peer {
    *region.peers.iter().find(|p| p.store_id == store).unwrap()
}

#[test]
fn rule_move_takes_a_replica_from_a_store_the_target_lacks_to_one_it_uses() {
    let source = region(1, b"a", b"b", &[1, 2, 3]);
    let target = region(2, b"b", b"c", &[1, 2, 4]);
    let leader = on(&source, 1);
    assert_eq!(
        plan_move(&source, &leader, &target, &any_store),
        Ok(Some(MovePlan {
            from: on(&source, 3),
            to_store: 4
        }))
    );
    // On the same stores (in any order): nothing to move, the pair merges.
    let same = region(2, b"b", b"c", &[3, 1, 2]);
    assert_eq!(plan_move(&source, &leader, &same, &any_store), Ok(None));
    // The store that would receive the replica cannot: why, and no move.
    let refuse = |store_id: u64| Err(Refusal::StoreBusy { store_id });
    assert_eq!(
        plan_move(&source, &leader, &target, &refuse),
        Err(Refusal::StoreBusy { store_id: 4 })
    );
    // Not one move apart (two replicas on one store): not the checker's to fix.
    let doubled = region(1, b"a", b"b", &[1, 1, 2]);
    let three = region(2, b"b", b"c", &[1, 2, 3]);
    assert_eq!(
        plan_move(&doubled, &on(&doubled, 2), &three, &any_store),
        Err(Refusal::DifferentStores {
            source_id: 1,
            target_id: 2
        })
    );
}

#[test]
fn rule_move_ties_go_to_the_smallest_store_and_a_follower_leaves_before_the_leader() {
    let source = region(1, b"a", b"b", &[1, 2, 3]);
    let target = region(2, b"b", b"c", &[1, 5, 4]);
    let plan = |leader: u64| {
        plan_move(&source, &on(&source, leader), &target, &any_store)
            .unwrap()
            .unwrap()
    };
    // Stores 4 and 5 are missing, 2 and 3 extra: 4 receives, 2 gives (1 leads).
    assert_eq!(
        plan(1),
        MovePlan {
            from: on(&source, 2),
            to_store: 4
        }
    );
    // Store 2's replica leads: store 3's follower goes instead.
    assert_eq!(plan(2).from, on(&source, 3));
    // Only the leader is on a store the target lacks: it goes (leadership moves off first).
    let near = region(2, b"b", b"c", &[1, 2, 4]);
    let leader = on(&source, 3);
    assert_eq!(
        plan_move(&source, &leader, &near, &any_store),
        Ok(Some(MovePlan {
            from: leader,
            to_store: 4
        }))
    );
}

/// [`World`] with region 2 (region 1's only neighbour) on `stores`.
fn target_on(stores: &[u64]) -> World {
    let mut w = World::new(0);
    w.regions[1] = region(2, b"b", b"c", stores);
    w
}

/// A heartbeat of region `id`'s leader to the replica scheduler (which carries out moves).
fn replica_step(w: &mut World, id: u64, now: u64) -> Option<Command> {
    let r = w.get(id).unwrap().clone();
    w.scheduler.on_heartbeat(
        RegionView {
            region: &r,
            leader: &r.peers[0],
            down_peers: &[],
            pending_peers: &[],
            approximate_size: MIB,
        },
        &w.stores,
        now,
        &mut || None,
    )
}

#[test]
fn stores_one_apart_get_one_move_and_then_merge() {
    let mut w = target_on(&[1, 2, 4]);
    let r1 = w.get(1).unwrap().clone();
    let to = learner(101, 4);
    let from = on(&r1, 3);
    assert_eq!(
        w.heartbeat(1, 1, 0),
        Some(MergeAnswer::Move(PeerMove {
            target_id: 2,
            from,
            to
        }))
    );
    assert!(w.scheduler.merges().is_empty());
    let op = &w.scheduler.operators()[&1];
    assert_eq!(op.kind, MERGE_MOVE_KIND);
    assert_eq!(
        op.steps,
        vec![Step::AddLearner(to), Step::Promote(to), Step::Remove(from)]
    );
    // One move at a time: while it runs the merge checker leaves the source alone, and the
    // replica scheduler answers its leader step by step.
    assert_eq!(w.heartbeat(1, 1, 1), None);
    assert_eq!(w.scheduler.operators().len(), 1);
    assert_eq!(replica_step(&mut w, 1, 2), Some(Command::AddLearner(to)));
    w.regions[0].peers.push(to);
    assert_eq!(replica_step(&mut w, 1, 3), Some(Command::AddVoter(to)));
    w.regions[0].peers[3].set_role(PeerRole::Voter);
    assert_eq!(replica_step(&mut w, 1, 4), Some(Command::Remove(from)));
    w.regions[0].peers.retain(|p| p.id != from.id);
    w.regions[0].region_epoch.as_mut().unwrap().conf_ver += 2;
    assert_eq!(replica_step(&mut w, 1, 5), None);
    assert!(w.scheduler.operators().is_empty());
    // On the same stores now (a membership change is no split): the merge.
    let target = w.get(2).unwrap().clone();
    assert_eq!(w.heartbeat(1, 1, 6), Some(MergeAnswer::Merge(target)));
}

#[test]
fn an_unfit_target_store_gets_no_move() {
    let unfit = [
        (StoreState::Offline, Some(1000)),
        (StoreState::Tombstone, Some(1000)),
        // Never heard from, or silent past max_store_down_time.
        (StoreState::Up, None),
        (StoreState::Up, Some(31 * 60 * 1000)),
    ];
    for (state, since_heartbeat_ms) in unfit {
        let mut w = target_on(&[1, 2, 4]);
        let s = w.stores.get_mut(&4).unwrap();
        (s.state, s.since_heartbeat_ms) = (state, since_heartbeat_ms);
        assert_eq!(
            w.heartbeat(1, 1, 0),
            None,
            "{state:?} {since_heartbeat_ms:?}"
        );
        assert!(w.scheduler.operators().is_empty() && w.scheduler.merges().is_empty());
    }
    // A store PD does not know.
    let mut w = target_on(&[1, 2, 4]);
    w.stores.remove(&4);
    assert_eq!(w.heartbeat(1, 1, 0), None);
    // The move goes to the smallest store of the target's that the source lacks: while that
    // one is unfit, nothing moves (the target's own replica there is about to move).
    let mut w = target_on(&[1, 4, 5]);
    w.stores.get_mut(&4).unwrap().state = StoreState::Offline;
    assert_eq!(w.heartbeat(1, 1, 0), None);
    assert!(w.scheduler.operators().is_empty());
}

#[test]
fn moves_respect_the_operator_limits() {
    // max_operators: one operator elsewhere fills it.
    let mut w = target_on(&[1, 2, 4]);
    w.scheduler = ReplicaScheduler::new(ReplicaConfig {
        max_operators: 1,
        merge: config(0),
        ..ReplicaConfig::default()
    });
    let r3 = w.get(3).unwrap().clone();
    w.scheduler
        .add_transfer_peer(&r3, 0, r3.peers[0], test_util::peer(99, 5), 0)
        .unwrap();
    assert_eq!(w.heartbeat(1, 1, 0), None);
    assert_eq!(w.scheduler.operators().len(), 1);
    // max_store_operators: store 4 already receives a replica; store 5 would not stop it.
    for (busy_store, moved) in [(4, false), (5, true)] {
        let mut w = target_on(&[1, 2, 4]);
        w.scheduler = ReplicaScheduler::new(ReplicaConfig {
            max_store_operators: 1,
            merge: config(0),
            ..ReplicaConfig::default()
        });
        let r3 = w.get(3).unwrap().clone();
        let to = test_util::peer(99, busy_store);
        w.scheduler
            .add_transfer_peer(&r3, 0, r3.peers[0], to, 0)
            .unwrap();
        let answer = w.heartbeat(1, 1, 0);
        assert_eq!(
            matches!(answer, Some(MergeAnswer::Move(_))),
            moved,
            "{answer:?}"
        );
    }
}

#[test]
fn regions_that_would_not_merge_are_not_moved() {
    // Too large a source or target, either just split, the target busy.
    let mut w = target_on(&[1, 2, 4]);
    assert_eq!(w.heartbeat_sized(1, 1, &[(1, 21 * MIB)], 0), None);
    assert_eq!(w.heartbeat_sized(1, 1, &[(2, 21 * MIB)], 0), None);
    let mut w = target_on(&[1, 2, 4]);
    w.scheduler = ReplicaScheduler::new(ReplicaConfig {
        merge: config(1000),
        ..ReplicaConfig::default()
    });
    assert_eq!(w.heartbeat(1, 1, 0), None);
    assert_eq!(w.heartbeat(1, 1, 999), None);
    assert!(matches!(
        w.heartbeat(1, 1, 1000),
        Some(MergeAnswer::Move(_))
    ));
    let mut w = target_on(&[1, 2, 4]);
    let r2 = w.get(2).unwrap().clone();
    w.scheduler
        .add_transfer_peer(&r2, 0, r2.peers[0], test_util::peer(99, 5), 0)
        .unwrap();
    assert_eq!(w.heartbeat(1, 1, 0), None);
    assert_eq!(w.scheduler.operators().len(), 1);
    // The health rules hold for a target on other stores as for any (the checker's view).
    let (src, t) = (
        region(1, b"a", b"b", &[1, 2, 3]),
        region(2, b"b", b"c", &[1, 2, 4]),
    );
    let sick = MergeCandidate {
        unhealthy_peers: true,
        ..cand(&t)
    };
    let never = |_: u64| 0u64;
    assert_eq!(
        choose_target(&config(0), 3, &cand(&src), None, Some(&sick), &never, 10),
        Err(Refusal::UnhealthyPeers { region_id: 2 })
    );
}

#[test]
fn a_neighbour_on_the_same_stores_comes_first_then_the_smaller_then_the_previous() {
    // Region 2 between region 1 (on 1, 2, 4) and region 3 (on 1, 2, 5).
    let mut w = World::new(0);
    w.regions[1] = region(2, b"b", b"c", &[1, 2, 3]);
    w.regions[0] = region(1, b"a", b"b", &[1, 2, 4]);
    w.regions[2] = region(3, b"c", b"d", &[1, 2, 5]);
    let r2 = w.get(2).unwrap().clone();
    let move_to = |store: u64, target_id: u64| {
        Some(MergeAnswer::Move(PeerMove {
            target_id,
            from: on(&r2, 3),
            to: learner(101, store),
        }))
    };
    // Same size: the previous one, so onto store 4.
    assert_eq!(w.heartbeat(1, 2, 0), move_to(4, 1));
    // The next one smaller: onto store 5.
    let mut w2 = World::new(0);
    w2.regions = w.regions.clone();
    assert_eq!(w2.heartbeat_sized(1, 2, &[(3, MIB / 2)], 0), move_to(5, 3));
    // A neighbour on the same stores merges at once, though larger.
    let mut w3 = World::new(0);
    w3.regions = w.regions.clone();
    w3.regions[2] = region(3, b"c", b"d", &[3, 2, 1]);
    let next = w3.get(3).unwrap().clone();
    assert_eq!(
        w3.heartbeat_sized(1, 2, &[(1, MIB / 2), (3, 10 * MIB)], 0),
        Some(MergeAnswer::Merge(next))
    );
}
