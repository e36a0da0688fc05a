//! The merge checker's rules, one test per rule, then the operator's life; the replica moves
//! onto the target's stores in [`moves`].

use proto::metapb::{PeerRole, StoreState};
use test_util::region as builder;

use super::*;
use crate::replica::{ReplicaScheduler, StoreInfo};

mod moves;

const MIB: u64 = 1 << 20;

/// Region `id` over `[start, end)` at version 2, with voters on `stores` (peer `id * 10 + s`).
fn region(id: u64, start: &[u8], end: &[u8], stores: &[u64]) -> Region {
    builder(id)
        .range(start, end)
        .version(2)
        .conf_ver(2)
        .voters_on(stores)
        .build()
}

/// A healthy candidate of 1 MiB and 100 keys, with a leader and no operator.
fn cand(region: &Region) -> MergeCandidate<'_> {
    MergeCandidate {
        region,
        has_leader: true,
        unhealthy_peers: false,
        approximate_size: MIB,
        approximate_keys: 100,
        busy: false,
    }
}

fn sized(region: &Region, size: u64, keys: u64) -> MergeCandidate<'_> {
    MergeCandidate {
        approximate_size: size,
        approximate_keys: keys,
        ..cand(region)
    }
}

fn config(interval_ms: u64) -> MergeConfig {
    MergeConfig {
        split_merge_interval_ms: interval_ms,
        ..MergeConfig::default()
    }
}

#[test]
fn rule_small_wants_merging_on_and_a_measured_small_source() {
    let r = region(1, b"a", b"b", &[1, 2, 3]);
    let c = config(0);
    assert_eq!(check_small(&c, &cand(&r)), Ok(()));
    let off = MergeConfig {
        enabled: false,
        ..c
    };
    assert_eq!(check_small(&off, &cand(&r)), Err(Refusal::Disabled));
    // An empty region merges: that is what merging is for.
    assert_eq!(check_small(&c, &sized(&r, 0, 0)), Ok(()));
    // At the bounds still merges; one byte or key above does not.
    let (size, keys) = (c.max_region_size, c.max_region_keys);
    assert_eq!(check_small(&c, &sized(&r, size, keys)), Ok(()));
    for (size, keys) in [(size + 1, 1), (1, keys + 1)] {
        assert!(matches!(
            check_small(&c, &sized(&r, size, keys)),
            Err(Refusal::TooLarge { region_id: 1, .. })
        ));
    }
}

#[test]
fn rule_settled_waits_out_the_split_merge_interval() {
    let c = config(1000);
    assert_eq!(
        check_settled(&c, 7, 5000, 5999),
        Err(Refusal::RecentlyChanged {
            region_id: 7,
            ago_ms: 999,
            interval_ms: 1000
        })
    );
    assert_eq!(check_settled(&c, 7, 5000, 6000), Ok(()));
    // A clock going back counts as no time passed.
    assert!(check_settled(&c, 7, 5000, 10).is_err());
    assert_eq!(check_settled(&config(0), 7, 5000, 5000), Ok(()));
}

#[test]
fn rule_healthy_wants_a_leader_max_replicas_voters_and_no_operator() {
    let r = region(1, b"a", b"b", &[1, 2, 3]);
    assert_eq!(check_healthy(&cand(&r), 3), Ok(()));
    let busy = MergeCandidate {
        busy: true,
        ..cand(&r)
    };
    assert_eq!(check_healthy(&busy, 3), Err(Refusal::Busy { region_id: 1 }));
    let leaderless = MergeCandidate {
        has_leader: false,
        ..cand(&r)
    };
    assert_eq!(
        check_healthy(&leaderless, 3),
        Err(Refusal::NoLeader { region_id: 1 })
    );
    let unhealthy = MergeCandidate {
        unhealthy_peers: true,
        ..cand(&r)
    };
    assert_eq!(
        check_healthy(&unhealthy, 3),
        Err(Refusal::UnhealthyPeers { region_id: 1 })
    );
    let mut with_learner = r.clone();
    with_learner.peers[2].set_role(PeerRole::Learner);
    assert_eq!(
        check_healthy(&cand(&with_learner), 3),
        Err(Refusal::NotAllVoters { region_id: 1 })
    );
    for stores in [&[1, 2][..], &[1, 2, 3, 4][..]] {
        let r = region(1, b"a", b"b", stores);
        assert_eq!(
            check_healthy(&cand(&r), 3),
            Err(Refusal::ReplicaCount {
                region_id: 1,
                peers: stores.len(),
                want: 3
            })
        );
    }
}

#[test]
fn rule_pair_wants_adjacent_regions_in_one_keyspace() {
    let a = region(1, b"a", b"c", &[1, 2, 3]);
    let next = region(2, b"c", b"e", &[3, 2, 1]);
    let prev = region(3, b"", b"a", &[1, 2, 3]);
    assert_eq!(check_pair(&a, &next), Ok(()));
    assert_eq!(check_pair(&a, &prev), Ok(()));
    assert_eq!(merged_range(&a, &next), Some((&b"a"[..], &b"e"[..])));
    assert_eq!(merged_range(&next, &a), Some((&b"a"[..], &b"e"[..])));
    assert_eq!(merged_range(&a, &prev), Some((&b""[..], &b"c"[..])));
    assert_eq!(check_pair(&a, &a), Err(Refusal::SameRegion));
    // A hole between them; the last region and the first one do not touch.
    let apart = region(4, b"d", b"f", &[1, 2, 3]);
    let not_adjacent = Refusal::NotAdjacent {
        source_id: 1,
        target_id: 4,
    };
    assert_eq!(check_pair(&a, &apart), Err(not_adjacent));
    let last = region(5, b"x", b"", &[1, 2, 3]);
    assert!(matches!(
        check_pair(&last, &prev),
        Err(Refusal::NotAdjacent { .. })
    ));
    // Replicas on other stores (or another number of them): a pair still, but not one the
    // stores merge as it is (the checker moves replicas first, a merge by hand refuses).
    assert_eq!(check_same_stores(&a, &next), Ok(()));
    for stores in [&[1, 2, 4][..], &[1, 2][..], &[1, 1, 2][..]] {
        let other = region(2, b"c", b"e", stores);
        assert_eq!(check_pair(&a, &other), Ok(()));
        assert_eq!(
            check_same_stores(&a, &other),
            Err(Refusal::DifferentStores {
                source_id: 1,
                target_id: 2
            })
        );
    }
    // Regions of one keyspace merge; across a keyspace boundary they never do.
    let b = crate::keyspace::boundaries(crate::keyspace::DEFAULT_KEYSPACE_ID);
    let mid = [&b[0][..], b"k"].concat();
    let raw_left = region(6, &b[0], &mid, &[1, 2, 3]);
    let raw_right = region(7, &mid, &b[1], &[1, 2, 3]);
    let before = region(8, b"a", &b[0], &[1, 2, 3]);
    assert_eq!(check_pair(&raw_left, &raw_right), Ok(()));
    assert_eq!(
        check_pair(&raw_left, &before),
        Err(Refusal::KeyspaceBoundary {
            source_id: 6,
            target_id: 8
        })
    );
}

#[test]
fn rule_target_size_keeps_the_merged_region_small() {
    let t = region(2, b"c", b"e", &[1, 2, 3]);
    let c = config(0);
    assert_eq!(check_target_size(&c, &cand(&t)), Ok(()));
    // A target not measured (or empty) is taken.
    assert_eq!(check_target_size(&c, &sized(&t, 0, 0)), Ok(()));
    assert!(check_target_size(&c, &sized(&t, c.max_region_size + 1, 0)).is_err());
    assert!(check_target_size(&c, &sized(&t, 1, c.max_region_keys + 1)).is_err());
}

#[test]
fn the_smaller_fitting_neighbour_is_chosen_ties_to_the_previous() {
    let c = config(0);
    let src = region(1, b"b", b"c", &[1, 2, 3]);
    let prev = region(2, b"a", b"b", &[1, 2, 3]);
    let next = region(3, b"c", b"d", &[1, 2, 3]);
    let never = |_: u64| 0u64;
    let choose = |p: Option<MergeCandidate<'_>>, n: Option<MergeCandidate<'_>>| {
        choose_target(&c, 3, &cand(&src), p.as_ref(), n.as_ref(), &never, 10).map(|r| r.id)
    };
    assert_eq!(
        choose(
            Some(sized(&prev, 5 * MIB, 1)),
            Some(sized(&next, 3 * MIB, 1))
        ),
        Ok(3)
    );
    assert_eq!(
        choose(
            Some(sized(&prev, 3 * MIB, 1)),
            Some(sized(&next, 5 * MIB, 1))
        ),
        Ok(2)
    );
    // Same size: fewer keys; same size and keys: the previous one.
    assert_eq!(
        choose(Some(sized(&prev, MIB, 9)), Some(sized(&next, MIB, 8))),
        Ok(3)
    );
    assert_eq!(choose(Some(cand(&prev)), Some(cand(&next))), Ok(2));
    // Only one fits: that one, however large.
    let busy_prev = MergeCandidate {
        busy: true,
        ..cand(&prev)
    };
    assert_eq!(
        choose(Some(busy_prev), Some(sized(&next, 20 * MIB, 1))),
        Ok(3)
    );
    // None fits: the previous neighbour's reason; no neighbour at all.
    let big_next = sized(&next, 21 * MIB, 1);
    assert_eq!(
        choose(Some(busy_prev), Some(big_next)),
        Err(Refusal::Busy { region_id: 2 })
    );
    assert!(matches!(
        choose(None, Some(big_next)),
        Err(Refusal::TooLarge { region_id: 3, .. })
    ));
    assert_eq!(
        choose(None, None),
        Err(Refusal::NoNeighbour { region_id: 1 })
    );
    // The source's own rules come first, and the interval applies to both.
    let big = sized(&src, 21 * MIB, 1);
    assert!(matches!(
        choose_target(&c, 3, &big, Some(&cand(&prev)), None, &never, 10),
        Err(Refusal::TooLarge { region_id: 1, .. })
    ));
    let c = config(100);
    let prev_changed = |id: u64| if id == 2 { 50u64 } else { 0 };
    assert_eq!(
        choose_target(
            &c,
            3,
            &cand(&src),
            Some(&cand(&prev)),
            None,
            &prev_changed,
            120
        ),
        Err(Refusal::RecentlyChanged {
            region_id: 2,
            ago_ms: 70,
            interval_ms: 100
        })
    );
}

#[test]
fn an_operator_runs_until_the_source_is_gone_unless_something_changed() {
    let source = region(1, b"b", b"c", &[1, 2, 3]);
    let target = region(2, b"c", b"d", &[1, 2, 3]);
    let op = MergeOperator {
        kind: "merge-region",
        source: source.clone(),
        target: target.clone(),
        started_ms: 100,
    };
    let run = |s: Option<&Region>, t: Option<&Region>, now| op.progress(s, t, now, 1000);
    assert_eq!(run(Some(&source), Some(&target), 200), Progress::Running);
    // PrepareMerge bumps the source's version and conf_ver, not its range.
    let prepared = builder(1)
        .range("b", "c")
        .version(3)
        .conf_ver(3)
        .voters_on(&[1, 2, 3])
        .build();
    assert_eq!(run(Some(&prepared), Some(&target), 200), Progress::Running);
    assert_eq!(run(None, Some(&target), 200), Progress::Finished);
    assert_eq!(run(None, None, 5000), Progress::Finished);
    assert_eq!(run(Some(&source), Some(&target), 1100), Progress::Running);
    assert_eq!(run(Some(&source), Some(&target), 1101), Progress::TimedOut);
    let split = region(1, b"b", b"bb", &[1, 2, 3]);
    assert!(matches!(
        run(Some(&split), Some(&target), 200),
        Progress::Cancelled(_)
    ));
    let mut moved = target.clone();
    moved.region_epoch.as_mut().unwrap().conf_ver += 1;
    let shrunk = region(2, b"c", b"cc", &[1, 2, 3]);
    for t in [None, Some(&moved), Some(&shrunk)] {
        assert!(matches!(run(Some(&source), t, 200), Progress::Cancelled(_)));
    }
}

/// Three regions `[a, b)`, `[b, c)`, `[c, d)` (ids 1, 2, 3) on stores 1-3 (of stores 1-5, Up
/// and alive), and a scheduler merging after `interval_ms`. Leaders are the first peers.
struct World {
    regions: Vec<Region>,
    stores: BTreeMap<u64, StoreInfo>,
    scheduler: ReplicaScheduler,
    /// The last peer id given out.
    last_id: u64,
}

impl World {
    fn new(interval_ms: u64) -> World {
        let config = ReplicaConfig {
            operator_timeout_ms: 10_000,
            merge: config(interval_ms),
            ..ReplicaConfig::default()
        };
        let store = StoreInfo {
            state: StoreState::Up,
            since_heartbeat_ms: Some(1000),
            region_size: 0,
        };
        World {
            regions: vec![
                region(1, b"a", b"b", &[1, 2, 3]),
                region(2, b"b", b"c", &[1, 2, 3]),
                region(3, b"c", b"d", &[1, 2, 3]),
            ],
            stores: (1..=5).map(|id| (id, store)).collect(),
            scheduler: ReplicaScheduler::new(config),
            last_id: 100,
        }
    }

    fn get(&self, id: u64) -> Option<&Region> {
        self.regions.iter().find(|r| r.id == id)
    }

    /// A heartbeat of region `id`'s leader in `term`, every region 1 MiB except `sizes`.
    fn heartbeat_sized(
        &mut self,
        term: u64,
        id: u64,
        sizes: &[(u64, u64)],
        now: u64,
    ) -> Option<MergeAnswer> {
        let regions = self.regions.clone();
        let c = |j: usize| {
            let r = &regions[j];
            let size = sizes.iter().find(|(i, _)| *i == r.id).map_or(MIB, |s| s.1);
            sized(r, size, 100)
        };
        let i = regions.iter().position(|r| r.id == id).unwrap();
        let touching = |j: usize| {
            let r = regions.get(j)?;
            merged_range(&regions[i], r).is_some().then(|| c(j))
        };
        let view = MergeView {
            term,
            leader: regions[i].peers[0],
            source: c(i),
            prev: i.checked_sub(1).and_then(touching),
            next: touching(i + 1),
        };
        let lookup = |id: u64| regions.iter().find(|r| r.id == id).cloned();
        let last_id = &mut self.last_id;
        let mut alloc = || {
            *last_id += 1;
            Some(*last_id)
        };
        self.scheduler
            .on_merge_heartbeat(view, &lookup, &|_| false, &self.stores, now, &mut alloc)
    }

    fn heartbeat(&mut self, term: u64, id: u64, now: u64) -> Option<MergeAnswer> {
        self.heartbeat_sized(term, id, &[], now)
    }

    /// Region `target` absorbs region `source` (CommitMerge): the source leaves the map.
    fn commit(&mut self, source: u64, target: u64) {
        let s = self.get(source).unwrap().clone();
        let t = self.regions.iter_mut().find(|r| r.id == target).unwrap();
        if t.start_key == s.end_key {
            t.start_key = s.start_key;
        } else {
            t.end_key = s.end_key;
        }
        t.region_epoch.as_mut().unwrap().version = 4;
        self.regions.retain(|r| r.id != source);
        self.scheduler.forget_regions(&[source]);
    }
}

#[test]
fn a_merge_is_asked_of_the_source_until_it_is_gone_and_the_target_waits() {
    let mut w = World::new(0);
    let target = w.get(2).unwrap().clone();
    // Region 1 has only a next neighbour: region 2.
    assert_eq!(
        w.heartbeat(1, 1, 0),
        Some(MergeAnswer::Merge(target.clone()))
    );
    assert_eq!(w.scheduler.merges().len(), 1);
    assert_eq!(
        w.heartbeat(1, 1, 1),
        Some(MergeAnswer::Merge(target.clone()))
    );
    assert_eq!(w.heartbeat(1, 2, 1), Some(MergeAnswer::Wait));
    // The source prepared (epoch bumped, same range): still asked.
    w.regions[0].region_epoch = Some(test_util::epoch(3, 3));
    assert_eq!(
        w.heartbeat(1, 1, 2),
        Some(MergeAnswer::Merge(target.clone()))
    );
    // Region 3's only neighbour is a merge's target: no merge for it.
    assert_eq!(w.heartbeat(1, 3, 2), None);
    w.commit(1, 2);
    assert!(w.scheduler.merges().is_empty());
    assert_eq!(w.get(2).unwrap().start_key.as_ref(), b"a");
    // The merged region just changed: with an interval it would wait; here it merges on.
    assert_eq!(
        w.heartbeat(1, 2, 3),
        Some(MergeAnswer::Merge(w.get(3).unwrap().clone()))
    );
}

#[test]
fn a_merge_whose_target_changed_is_cancelled_and_one_too_old_dropped() {
    let mut w = World::new(0);
    assert!(w.heartbeat(1, 1, 0).is_some());
    // The target's membership changed (conf_ver): the operator goes, the region is free.
    w.regions[1].region_epoch.as_mut().unwrap().conf_ver += 1;
    assert_eq!(w.heartbeat(1, 1, 1), None);
    assert!(w.scheduler.merges().is_empty());
    // Made again, then left unfinished past the timeout.
    assert!(w.heartbeat(1, 1, 2).is_some());
    assert!(w.heartbeat(1, 1, 10_002).is_some());
    assert_eq!(w.heartbeat(1, 1, 10_003), None);
    assert!(w.scheduler.merges().is_empty());
}

#[test]
fn regions_seen_changing_wait_and_a_new_term_starts_afresh() {
    let mut w = World::new(1000);
    // First seen at 0 in term 1: changed then.
    assert_eq!(w.heartbeat(1, 1, 0), None);
    // Region 2 splits (version 3), seen at 500 (by region 3's heartbeat).
    w.regions[1].region_epoch.as_mut().unwrap().version = 3;
    assert_eq!(w.heartbeat(1, 3, 500), None);
    assert_eq!(w.heartbeat(1, 1, 999), None);
    // Region 1 has waited long enough, its neighbour not yet.
    assert_eq!(w.heartbeat(1, 1, 1000), None);
    assert_eq!(w.heartbeat(1, 1, 1499), None);
    assert!(matches!(
        w.heartbeat(1, 1, 1500),
        Some(MergeAnswer::Merge(_))
    ));
    // A new term of leadership forgets both the merge and what was seen.
    assert_eq!(w.heartbeat(2, 1, 1600), None);
    assert!(w.scheduler.merges().is_empty());
    assert_eq!(w.heartbeat(2, 1, 2599), None);
    assert!(w.heartbeat(2, 1, 2600).is_some());
}

#[test]
fn merges_and_replica_operators_exclude_each_other_and_share_the_limit() {
    let mut w = World::new(0);
    // Region 2's neighbours: 1 (1 MiB) and 3 (2 MiB): the smaller, 1, is the target.
    assert_eq!(
        w.heartbeat_sized(1, 2, &[(3, 2 * MIB)], 0),
        Some(MergeAnswer::Merge(w.get(1).unwrap().clone()))
    );
    // Region 3's only neighbour is the source of a merge: nothing.
    assert_eq!(w.heartbeat(1, 3, 0), None);
    // Neither region of the merge takes a replica operator.
    let stranger = test_util::peer(99, 4);
    for id in [1, 2] {
        let r = w.get(id).unwrap().clone();
        let from = r.peers[0];
        assert!(w
            .scheduler
            .add_transfer_peer(&r, 0, from, stranger, 0)
            .is_err());
    }
    // A region with a replica operator is not merged (region 3 with its only neighbour).
    let mut w = World::new(0);
    let r3 = w.get(3).unwrap().clone();
    w.scheduler
        .add_transfer_peer(&r3, 0, r3.peers[0], stranger, 0)
        .unwrap();
    assert_eq!(w.heartbeat(1, 3, 0), None);
    // Region 2's other neighbour is free: that one.
    assert_eq!(
        w.heartbeat(1, 2, 0),
        Some(MergeAnswer::Merge(w.get(1).unwrap().clone()))
    );
    // Merges count against max_operators (4 by default): two taken, two left.
    let ops = w.scheduler.operators().len() + w.scheduler.merges().len();
    assert_eq!(ops, 2);
}

#[test]
fn the_operator_limit_holds_merges_back() {
    let mut w = World::new(0);
    w.scheduler = ReplicaScheduler::new(ReplicaConfig {
        max_operators: 1,
        merge: config(0),
        ..ReplicaConfig::default()
    });
    let r3 = w.get(3).unwrap().clone();
    w.scheduler
        .add_transfer_peer(&r3, 0, r3.peers[0], test_util::peer(99, 4), 0)
        .unwrap();
    assert_eq!(w.heartbeat(1, 1, 0), None);
}

#[test]
fn a_merge_by_hand_skips_size_and_interval_but_not_pair_and_health() {
    let mut w = World::new(3_600_000);
    let (r1, r2, r3) = (
        w.get(1).unwrap().clone(),
        w.get(2).unwrap().clone(),
        w.get(3).unwrap().clone(),
    );
    let none = |_: u64| false;
    fn big(r: &Region) -> MergeCandidate<'_> {
        sized(r, 500 * MIB, 10_000_000)
    }
    // Not adjacent, or the same region.
    assert_eq!(
        w.scheduler.add_merge(1, big(&r1), big(&r3), &none, 0),
        Err(Refusal::NotAdjacent {
            source_id: 1,
            target_id: 3
        })
    );
    assert_eq!(
        w.scheduler.add_merge(1, cand(&r1), cand(&r1), &none, 0),
        Err(Refusal::SameRegion)
    );
    // Unhealthy, or a leader transfer in flight.
    let leaderless = MergeCandidate {
        has_leader: false,
        ..cand(&r2)
    };
    assert_eq!(
        w.scheduler.add_merge(1, cand(&r1), leaderless, &none, 0),
        Err(Refusal::NoLeader { region_id: 2 })
    );
    assert_eq!(
        w.scheduler
            .add_merge(1, cand(&r1), cand(&r2), &|id| id == 1, 0),
        Err(Refusal::Busy { region_id: 1 })
    );
    // Large regions just seen: taken by hand, and asked of the source.
    w.scheduler
        .add_merge(1, big(&r1), big(&r2), &none, 0)
        .unwrap();
    assert_eq!(
        w.scheduler.merges().operators()[&1].kind,
        "admin-merge-region"
    );
    assert_eq!(w.heartbeat(1, 1, 1), Some(MergeAnswer::Merge(r2.clone())));
    // One merge per region.
    assert_eq!(
        w.scheduler.add_merge(1, cand(&r3), cand(&r2), &none, 0),
        Err(Refusal::Busy { region_id: 2 })
    );
    // Merging switched off: merges by hand still work.
    let mut w = World::new(0);
    w.scheduler = ReplicaScheduler::new(ReplicaConfig {
        merge: MergeConfig {
            enabled: false,
            ..config(0)
        },
        ..ReplicaConfig::default()
    });
    assert_eq!(w.heartbeat(1, 2, 0), None);
    w.scheduler
        .add_merge(1, cand(&r3), cand(&r2), &none, 0)
        .unwrap();
    assert_eq!(w.heartbeat(1, 3, 1), Some(MergeAnswer::Merge(r2)));
}
