//! Tests of the PD state machine: each command's rules and rejections, store removal,
//! bounds that only grow, stale heartbeats, reload from disk, and determinism.

use engine::EngineOptions;
use proto::metapb::{Region, Store};
use test_util::{peer, store};

use super::*;
use crate::command::{InitCluster, PutRegions, PutStore};

fn open(dir: &tempfile::TempDir) -> (Engine, PdState) {
    let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
    let state = PdState::load(&engine).unwrap();
    (engine, state)
}

/// Region `id` over `[start, end)` at epoch version `version`, with `(peer id, store id)`
/// peers.
fn region(id: u64, start: &str, end: &str, version: u64, peers: &[(u64, u64)]) -> Region {
    test_util::region(id)
        .range(start, end)
        .version(version)
        .peers(peers.iter().map(|&(id, store_id)| peer(id, store_id)))
        .build()
}

fn bootstrapped(engine: &Engine, state: &mut PdState) {
    state
        .apply(
            engine,
            &PdCommand::InitCluster(InitCluster { cluster_id: 77 }),
        )
        .unwrap();
    state
        .apply(
            engine,
            &PdCommand::Bootstrap(Bootstrap {
                store: Some(store(1)),
                region: Some(region(2, "", "", 1, &[(3, 1)])),
                max_peer_count: 3,
            }),
        )
        .unwrap();
}

fn put_regions(regions: Vec<Region>) -> PdCommand {
    PdCommand::PutRegions(PutRegions { regions })
}

#[test]
fn a_store_is_removed_through_offline_and_tombstoned_only_once_empty() {
    use crate::command::SetStoreState;
    let dir = tempfile::tempdir().unwrap();
    let (engine, mut state) = open(&dir);
    bootstrapped(&engine, &mut state);
    let set = |id: u64, s: StoreState| {
        PdCommand::SetStoreState(SetStoreState {
            store_id: id,
            state: s as i32,
        })
    };
    // Up cannot jump to Tombstone; unknown stores are refused.
    assert!(state
        .apply(&engine, &set(1, StoreState::Tombstone))
        .is_err());
    assert!(matches!(
        state.apply(&engine, &set(9, StoreState::Offline)),
        Err(Error::StoreNotFound { store_id: 9 })
    ));
    state.apply(&engine, &set(1, StoreState::Offline)).unwrap();
    // A restarting store does not undo Offline.
    state
        .apply(
            &engine,
            &PdCommand::PutStore(PutStore {
                store: Some(store(1)),
                replaces: 0,
            }),
        )
        .unwrap();
    assert_eq!(state.store(1).unwrap().state(), StoreState::Offline);
    // It still holds region 2's replica.
    assert!(state
        .apply(&engine, &set(1, StoreState::Tombstone))
        .is_err());
    state
        .apply(
            &engine,
            &put_regions(vec![test_util::region(2)
                .conf_ver(2)
                .peers([peer(4, 5)])
                .build()]),
        )
        .unwrap();
    assert_eq!(state.regions().store_region_counts().get(&1), None);
    assert_eq!(state.regions().store_region_counts().get(&5), Some(&1));
    state
        .apply(&engine, &set(1, StoreState::Tombstone))
        .unwrap();
    assert!(state.apply(&engine, &set(1, StoreState::Up)).is_err());
    // Persisted.
    drop(engine);
    let (_engine, state) = open(&dir);
    assert_eq!(state.store(1).unwrap().state(), StoreState::Tombstone);
}

#[test]
fn bootstrap_once_and_survive_reload() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (engine, mut state) = open(&dir);
        // Stores register before bootstrap; the first region may use them but no unknown
        // store, and never two peers on one store.
        state
            .apply(
                &engine,
                &PdCommand::InitCluster(InitCluster { cluster_id: 77 }),
            )
            .unwrap();
        state
            .apply(
                &engine,
                &PdCommand::PutStore(PutStore {
                    store: Some(store(9)),
                    replaces: 0,
                }),
            )
            .unwrap();
        for peers in [&[(3, 1), (4, 8)][..], &[(3, 1), (4, 1)][..]] {
            let bad = PdCommand::Bootstrap(Bootstrap {
                store: Some(store(1)),
                region: Some(region(2, "", "", 1, peers)),
                max_peer_count: 3,
            });
            let res = state.apply(&engine, &bad);
            assert!(
                matches!(res, Err(Error::InvalidArgument(_))),
                "{peers:?}: {res:?}"
            );
        }
        bootstrapped(&engine, &mut state);
        assert!(state.is_bootstrapped());
        assert_eq!(state.meta().id_bound, 3, "bootstrap ids are reserved");
        let again = PdCommand::Bootstrap(Bootstrap {
            store: Some(store(1)),
            region: Some(region(2, "", "", 1, &[(3, 1)])),
            max_peer_count: 3,
        });
        assert!(matches!(
            state.apply(&engine, &again),
            Err(Error::AlreadyBootstrapped { cluster_id: 77 })
        ));
        assert!(matches!(
            state.apply(
                &engine,
                &PdCommand::InitCluster(InitCluster { cluster_id: 5 })
            ),
            Err(Error::ClusterMismatch { .. })
        ));
    }
    let (_engine, state) = open(&dir);
    assert_eq!(state.cluster_id(), 77);
    assert!(state.is_bootstrapped());
    assert_eq!(state.cluster_config().max_peer_count, 3);
    assert_eq!(state.store(1).unwrap().address, store(1).address);
    assert_eq!(state.regions().find_by_key(b"x").unwrap().id, 2);
}

#[test]
fn bounds_and_safe_point_only_grow() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, mut state) = open(&dir);
    state.apply(&engine, &PdCommand::SetIdBound(1000)).unwrap();
    state.apply(&engine, &PdCommand::SetIdBound(10)).unwrap();
    state.apply(&engine, &PdCommand::SetTsoBound(5000)).unwrap();
    state.apply(&engine, &PdCommand::SetTsoBound(4000)).unwrap();
    assert_eq!(
        state
            .apply(&engine, &PdCommand::UpdateGcSafePoint(9))
            .unwrap(),
        ApplyResult::GcSafePoint(9)
    );
    assert_eq!(
        state
            .apply(&engine, &PdCommand::UpdateGcSafePoint(3))
            .unwrap(),
        ApplyResult::GcSafePoint(9)
    );
    drop(engine);
    let (_engine, state) = open(&dir);
    assert_eq!(state.meta().id_bound, 1000);
    assert_eq!(state.meta().tso_bound_ms, 5000);
    assert_eq!(state.meta().gc_safe_point, 9);
}

#[test]
fn put_store_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, mut state) = open(&dir);
    bootstrapped(&engine, &mut state);
    let put = |s: Store| {
        PdCommand::PutStore(PutStore {
            store: Some(s),
            replaces: 0,
        })
    };
    state.apply(&engine, &put(store(4))).unwrap();
    let mut dup = store(5);
    dup.address = store(4).address;
    assert!(matches!(
        state.apply(&engine, &put(dup)),
        Err(Error::DuplicatedStoreAddress {
            other_store_id: 4,
            ..
        })
    ));
    let mut tomb = store(6);
    tomb.set_state(StoreState::Tombstone);
    state.apply(&engine, &put(tomb)).unwrap();
    assert!(matches!(
        state.apply(&engine, &put(store(6))),
        Err(Error::StoreTombstone { store_id: 6 })
    ));
    assert_eq!(
        state.stores().map(|s| s.id).collect::<Vec<_>>(),
        vec![1, 4, 6]
    );
    // A new store at the address of store 4, which the leader judged gone: 4 turns
    // Offline and the new one is Up. Naming any other store is still a conflict, and an
    // existing store cannot take over an address this way.
    let mut wiped = store(7);
    wiped.address = store(4).address;
    let replacing = |s: Store, replaces| {
        PdCommand::PutStore(PutStore {
            store: Some(s),
            replaces,
        })
    };
    assert!(matches!(
        state.apply(&engine, &replacing(wiped.clone(), 1)),
        Err(Error::DuplicatedStoreAddress { .. })
    ));
    let mut moved = store(1);
    moved.address = store(4).address;
    assert!(matches!(
        state.apply(&engine, &replacing(moved, 4)),
        Err(Error::DuplicatedStoreAddress { .. })
    ));
    state.apply(&engine, &replacing(wiped, 4)).unwrap();
    assert_eq!(state.store(4).unwrap().state(), StoreState::Offline);
    assert_eq!(state.store(7).unwrap().state(), StoreState::Up);
}

#[test]
fn split_reported_as_batch_then_stale_heartbeat_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, mut state) = open(&dir);
    bootstrapped(&engine, &mut state);
    // Region 2 ["", +inf) splits at "m" into 10 ["", m) and 2 [m, +inf).
    let left = region(10, "", "m", 2, &[(11, 1)]);
    let right = region(2, "m", "", 2, &[(3, 1)]);
    let result = state
        .apply(&engine, &put_regions(vec![left.clone(), right.clone()]))
        .unwrap();
    assert_eq!(
        result,
        ApplyResult::Regions(RegionsApplied {
            updated: vec![2, 10],
            removed: vec![],
            stale: vec![],
        })
    );
    let result = state
        .apply(&engine, &put_regions(vec![region(2, "", "", 1, &[(3, 1)])]))
        .unwrap();
    assert_eq!(
        result,
        ApplyResult::Regions(RegionsApplied {
            stale: vec![2],
            ..Default::default()
        })
    );
    // A newer region overlapping both removes them (leaving a hole until heartbeats fill it).
    let wide = region(20, "", "n", 3, &[(21, 1)]);
    let result = state.apply(&engine, &put_regions(vec![wide])).unwrap();
    assert_eq!(
        result,
        ApplyResult::Regions(RegionsApplied {
            updated: vec![20],
            removed: vec![2, 10],
            stale: vec![],
        })
    );
    drop(engine);
    let (_engine, state) = open(&dir);
    let ids: Vec<u64> = state.regions().iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![20]);
}

#[test]
fn same_commands_give_same_state() {
    // Determinism: two replicas applying the same log end up identical.
    let cmds = [
        PdCommand::InitCluster(InitCluster { cluster_id: 9 }),
        PdCommand::Bootstrap(Bootstrap {
            store: Some(store(1)),
            region: Some(region(2, "", "", 1, &[(3, 1)])),
            max_peer_count: 3,
        }),
        put_regions(vec![
            region(2, "k", "", 2, &[(3, 1)]),
            region(4, "", "k", 2, &[(5, 1)]),
        ]),
        PdCommand::PutStore(PutStore {
            store: Some(store(7)),
            replaces: 0,
        }),
        PdCommand::SetIdBound(99),
    ];
    let run = || {
        let dir = tempfile::tempdir().unwrap();
        let (engine, mut state) = open(&dir);
        let results: Vec<_> = cmds
            .iter()
            .map(|c| {
                state
                    .apply(&engine, &PdCommand::from_bytes(&c.to_bytes()).unwrap())
                    .unwrap()
            })
            .collect();
        let regions: Vec<Region> = state.regions().iter().cloned().collect();
        let stores: Vec<Store> = state.stores().cloned().collect();
        (results, state.meta().clone(), regions, stores)
    };
    assert_eq!(run(), run());
}
