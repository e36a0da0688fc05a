//! Concurrent clients read, write and compare-and-swap a few keys while a nemesis partitions
//! (both ways or one way), isolates, delays, drops and duplicates Raft messages and moves
//! leadership; the recorded history of every key must be linearizable. Clients call
//! `server::RawStorage` directly and send each operation to any store that believes it leads
//! the region, so a deposed leader that kept serving would be caught (serving reads on
//! followers is caught within one run). `linearizable_client.rs` covers the path through the
//! client library, gRPC and PD, with client↔store faults and store crashes.
//!
//! The seed is printed first; `RANGEKV_LIN_SEED=<seed>` replays the same choices of faults and
//! operations (not the same thread timing).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use proto::kvrpcpb::{RawCasRequest, RawGetRequest, RawPutRequest};
use rand::rngs::StdRng;
use rand::Rng;
use server::raw::Failure;
use server::Limits;
use tests::linearizability::{check_register, Event, Op};
use tests::network::{Isolate, OneWay, Partition, RandomDelay, RandomDrop, RandomDuplicate};
use tests::seed::{rng_for, test_seed};
use tests::Cluster;

const KEYS: u64 = 6;
const CLIENTS: u64 = 4;
const OPS_PER_CLIENT: u64 = 110;

/// How one attempt ended.
enum Attempt<T> {
    Done(T),
    /// Certainly had no effect (e.g. NotLeader before proposing): try again.
    Retry,
    /// May or may not have taken effect.
    Unknown,
}

fn classify<T>(cluster: &Cluster, r: Result<T, Failure>) -> Attempt<T> {
    match r {
        Ok(v) => Attempt::Done(v),
        Err(Failure::Region(e)) if e.epoch_not_match.is_some() => {
            // The region changed shape: route by what the store says it is now.
            let current = &e.epoch_not_match.as_ref().expect("checked").current_regions;
            cluster.update_route(current);
            Attempt::Retry
        }
        // NotLeader, EpochNotMatch, StaleCommand, RegionNotFound, ServerIsBusy: the store
        // promises nothing was proposed (or the entry was replaced), so a retry is safe. A
        // store that broke that promise would show up as a non-linearizable history.
        Err(Failure::Region(_)) => Attempt::Retry,
        // The store gave up waiting for the write: it may still apply.
        Err(Failure::Message(m)) if m.starts_with(server::raw::UNDETERMINED_PREFIX) => {
            Attempt::Unknown
        }
        Err(Failure::Message(m)) => panic!("unexpected error: {m}"),
    }
}

fn value(v: &[u8]) -> u64 {
    std::str::from_utf8(v)
        .expect("utf8")
        .parse()
        .expect("number")
}

#[test]
fn register_histories_under_network_faults_are_linearizable() {
    let seed = test_seed("register_histories_under_network_faults_are_linearizable");
    let cluster = Cluster::with_limits(3, &[b"k2"], tests::cluster::test_config(), limits());
    check_histories(cluster, seed, network_fault);
}

/// Replicas move between four stores (learner, snapshot, promotion, removal, leadership moved
/// off a replica before it goes) while some store is cut off now and then: membership changes
/// under partitions keep every history linearizable and the replicas equal.
#[test]
fn register_histories_while_replicas_move_are_linearizable() {
    let seed = test_seed("register_histories_while_replicas_move_are_linearizable");
    let cfg = raftstore::Config {
        // Keep logs short, so that new replicas catch up from snapshots.
        raft_log_gc_count_limit: 30,
        ..tests::cluster::test_config()
    };
    let mut cluster = Cluster::with_limits(3, &[b"k2"], cfg, limits());
    cluster.add_store(4);
    let next_peer_id = std::sync::atomic::AtomicU64::new(50_000);
    check_histories(cluster, seed, |cluster, rng| {
        move_replica(cluster, rng, &next_peer_id)
    });
}

/// Regions split and merge, in both directions, while a store is cut off now and then during a
/// merge's commit: every history stays linearizable across each change of shape (a merging
/// region serves nothing; its target serves the range only once it absorbed the data), and the
/// replicas stay equal.
#[test]
fn register_histories_while_regions_split_and_merge_are_linearizable() {
    let seed = test_seed("register_histories_while_regions_split_and_merge_are_linearizable");
    let cluster = Cluster::with_limits(3, &[b"k2"], tests::cluster::test_config(), limits());
    check_histories(cluster, seed, split_or_merge);
}

/// One step of the shape nemesis: split at `k2` or `k4` where no region starts, else merge the
/// region starting there with its left neighbour (either into the other), cutting a store off
/// for part of the commit now and then.
fn split_or_merge(cluster: &Cluster, rng: &mut StdRng) {
    cluster.clear_filters();
    let key: &[u8] = if rng.random_bool(0.5) { b"k2" } else { b"k4" };
    let region = cluster.region_for_key(key);
    if region.start_key[..] != *key {
        let _ = cluster.split(key);
    } else {
        let mut before = key.to_vec();
        *before.last_mut().expect("non-empty") -= 1;
        before.push(0xff);
        let left = cluster.region_for_key(&before);
        let (source, target) = if rng.random_bool(0.5) {
            (left, region)
        } else {
            (region, left)
        };
        if cluster.prepare_merge(source.id, target.id).is_ok() && rng.random_bool(0.5) {
            cluster.add_filter(Isolate(rng.random_range(1..=3)));
        }
    }
    std::thread::sleep(Duration::from_millis(rng.random_range(50..400)));
}

fn limits() -> Limits {
    Limits {
        request_timeout_ms: 1500,
        ..Limits::default()
    }
}

/// One step of the network nemesis: a fault, or a leader transfer, for a while.
fn network_fault(cluster: &Cluster, rng: &mut StdRng) {
    cluster.clear_filters();
    match rng.random_range(0..9) {
        0 => cluster.add_filter(Isolate(rng.random_range(1..=3))),
        1 => {
            let a = rng.random_range(1..=3u64);
            let others: Vec<u64> = (1..=3).filter(|s| *s != a).collect();
            cluster.add_filter(Partition::new(&[&[a], &others]));
        }
        2 => cluster.add_filter(RandomDrop::new(0.2, rng.random())),
        3 => cluster.add_filter(RandomDelay::new(
            Duration::ZERO,
            Duration::from_millis(30),
            rng.random(),
        )),
        5 => {
            let a = rng.random_range(1..=3u64);
            let others: Vec<u64> = (1..=3).filter(|s| *s != a).collect();
            if rng.random_bool(0.5) {
                cluster.add_filter(OneWay::new(&[a], &others));
            } else {
                cluster.add_filter(OneWay::new(&others, &[a]));
            }
        }
        6 => cluster.add_filter(RandomDuplicate::new(
            0.3,
            Duration::from_millis(200),
            rng.random(),
        )),
        4 => {
            // Hand leadership of a region to a random replica.
            let region_id = rng.random_range(1..=2u64);
            let to = rng.random_range(1..=3u64);
            if let Some(from) = cluster.leader_store(region_id) {
                let region = cluster.regions[region_id as usize - 1].clone();
                let target = *region.peers.iter().find(|p| p.store_id == to).unwrap();
                let _ = cluster.storage(from).router().transfer_leader(
                    region_id,
                    target,
                    region.region_epoch,
                );
            }
        }
        _ => {}
    }
    std::thread::sleep(Duration::from_millis(rng.random_range(50..400)));
}

/// One step of the membership nemesis: moves one replica of a random region to the store
/// without one (PD's operator: add learner, promote, move leadership off, remove), with a
/// store cut off during part of it now and then. Steps that fail (leadership moved, a cut)
/// are left for the next step to finish or undo.
fn move_replica(cluster: &Cluster, rng: &mut StdRng, next_peer_id: &std::sync::atomic::AtomicU64) {
    use proto::metapb::PeerRole;
    use raftstore::conf_change::{ChangeKind, PeerChange};
    let region_id = rng.random_range(1..=2u64);
    let Some(leader) = cluster.leader_store(region_id) else {
        std::thread::sleep(Duration::from_millis(50));
        return;
    };
    let Some(st) = cluster.peer_status(leader, region_id) else {
        return;
    };
    let region = st.region;
    let change = |kind, peer| vec![PeerChange { kind, peer }];
    let cut = rng.random_bool(0.3).then(|| rng.random_range(1..=4u64));
    if let Some(store) = cut {
        cluster.add_filter(Isolate(store));
    }
    // Finish what an interrupted step left: promote or remove a learner.
    if let Some(learner) = region.peers.iter().find(|p| p.role() == PeerRole::Learner) {
        let kind = if rng.random_bool(0.5) {
            ChangeKind::AddVoter
        } else {
            ChangeKind::Remove
        };
        let _ = cluster.change_peer(region_id, change(kind, *learner));
    } else if region.peers.len() > 3 {
        // Remove a voter that does not lead.
        let victim = *region
            .peers
            .iter()
            .filter(|p| p.store_id != leader)
            .nth(rng.random_range(0..region.peers.len() - 1))
            .unwrap();
        let _ = cluster.change_peer(region_id, change(ChangeKind::Remove, victim));
    } else if let Some(target) = (1..=4u64).find(|s| !region.peers.iter().any(|p| p.store_id == *s))
    {
        let peer = proto::metapb::Peer {
            id: next_peer_id.fetch_add(1, Ordering::SeqCst),
            store_id: target,
            ..Default::default()
        };
        let _ = cluster.change_peer(region_id, change(ChangeKind::AddLearner, peer));
    }
    if cut.is_some() {
        std::thread::sleep(Duration::from_millis(rng.random_range(50..300)));
        cluster.clear_filters();
    }
    std::thread::sleep(Duration::from_millis(rng.random_range(20..200)));
}

/// Concurrent clients run reads, writes and compare-and-swaps on a few keys while `nemesis`
/// runs step after step; every key's history must be linearizable, and the replicas equal
/// once it stopped.
fn check_histories(cluster: Cluster, seed: u64, nemesis: impl Fn(&Cluster, &mut StdRng) + Sync) {
    cluster.wait_leader(1, Duration::from_secs(10));
    cluster.wait_leader(2, Duration::from_secs(10));
    let start = Instant::now();
    let now = || start.elapsed().as_micros() as u64;
    let histories: Vec<Mutex<Vec<Event>>> = (0..KEYS).map(|_| Mutex::new(Vec::new())).collect();
    let stop = AtomicBool::new(false);
    let cluster = Arc::new(cluster);

    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = rng_for(seed, 0);
            while !stop.load(Ordering::SeqCst) {
                nemesis(&cluster, &mut rng);
            }
            cluster.clear_filters();
        });
        let mut clients = Vec::new();
        for client in 0..CLIENTS {
            let (cluster, histories, now) = (&cluster, &histories, &now);
            clients.push(s.spawn(move || {
                let mut rng = rng_for(seed, client + 1);
                for n in 0..OPS_PER_CLIENT {
                    let k = rng.random_range(0..KEYS);
                    let key = format!("k{k}");
                    let unique = client * 1_000_000 + n + 1;
                    let op = match rng.random_range(0..10) {
                        0..=3 => Op::Read(None),
                        4..=7 => Op::Write(unique),
                        _ => {
                            let expect = histories[k as usize]
                                .lock()
                                .iter()
                                .rev()
                                .find_map(|e| match e.op {
                                    Op::Write(v) => Some(Some(v)),
                                    _ => None,
                                })
                                .unwrap_or(None);
                            Op::Cas {
                                expect,
                                new: unique,
                                outcome: None,
                            }
                        }
                    };
                    // Spread the operations over the nemesis' changes.
                    std::thread::sleep(Duration::from_millis(rng.random_range(0..50)));
                    let call = now();
                    let (op, ret) = run(cluster, &mut rng, key.as_bytes(), op);
                    if let Some(op) = op {
                        histories[k as usize].lock().push(Event {
                            op,
                            call,
                            ret: ret.then(now),
                        });
                    }
                }
            }));
        }
        for c in clients {
            c.join().expect("client");
        }
        stop.store(true, Ordering::SeqCst);
    });

    let mut unknown = 0;
    for (k, h) in histories.iter().enumerate() {
        let h = h.lock();
        unknown += h.iter().filter(|e| e.ret.is_none()).count();
        assert!(
            h.iter().filter(|e| e.ret.is_some()).count() > 10,
            "key {k}: too few operations completed (seed {seed})"
        );
        check_register(None, &h).unwrap_or_else(|e| panic!("key k{k} (seed {seed}): {e}"));
    }
    // The faults are over: every replica must hold the same data.
    cluster.clear_filters();
    cluster.must_be_consistent();
    eprintln!(
        "checked {} operations in {:?}, {unknown} with unknown outcome",
        CLIENTS * OPS_PER_CLIENT,
        start.elapsed()
    );
}

/// Runs `op` against the current leader until it completes, certainly failed, or its outcome
/// became unknown. Returns the op with its observed outcome (`None`: a read that never
/// completed, which has no effect) and whether the outcome is known.
fn run(cluster: &Cluster, rng: &mut StdRng, key: &[u8], op: Op) -> (Option<Op>, bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        // Afresh each time: the region may have split or merged.
        let region = cluster.region_for_key(key);
        // Any store that believes it leads, not only the newest leader: a deposed leader that
        // still serves would be caught here.
        let claimants: Vec<u64> = cluster
            .store_ids()
            .iter()
            .copied()
            .filter(|s| {
                cluster
                    .peer_status(*s, region.id)
                    .is_some_and(|p| p.is_leader)
            })
            .collect();
        if claimants.is_empty() {
            if !cluster.is_hosted(region.id) {
                if let Some(r) = cluster.hosted_region_for_key(key) {
                    cluster.forget_route(region.id);
                    cluster.update_route(std::slice::from_ref(&r));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let store = claimants[rng.random_range(0..claimants.len())];
        let storage = cluster.storage(store).clone();
        let context = Some(cluster.context(&region, store));
        let attempt = match &op {
            Op::Read(_) => {
                let req = RawGetRequest {
                    context,
                    key: Bytes::copy_from_slice(key),
                    ..Default::default()
                };
                match classify(cluster, cluster.block_on(storage.raw_get(req))) {
                    Attempt::Done(r) => {
                        Attempt::Done(Op::Read((!r.not_found).then(|| value(&r.value))))
                    }
                    // A read that failed changed nothing: just try again.
                    Attempt::Retry | Attempt::Unknown => Attempt::Retry,
                }
            }
            Op::Delete => unreachable!("this test does not delete"),
            Op::Write(v) => {
                let req = RawPutRequest {
                    context,
                    key: Bytes::copy_from_slice(key),
                    value: Bytes::from(v.to_string()),
                    ..Default::default()
                };
                match classify(cluster, cluster.block_on(storage.raw_put(req))) {
                    Attempt::Done(_) => Attempt::Done(Op::Write(*v)),
                    Attempt::Retry => Attempt::Retry,
                    Attempt::Unknown => Attempt::Unknown,
                }
            }
            Op::Cas { expect, new, .. } => {
                let req = RawCasRequest {
                    context,
                    key: Bytes::copy_from_slice(key),
                    value: Bytes::from(new.to_string()),
                    previous_not_exist: expect.is_none(),
                    previous_value: expect
                        .map(|v| Bytes::from(v.to_string()))
                        .unwrap_or_default(),
                    ..Default::default()
                };
                match classify(cluster, cluster.block_on(storage.raw_compare_and_swap(req))) {
                    Attempt::Done(r) => Attempt::Done(Op::Cas {
                        expect: *expect,
                        new: *new,
                        outcome: Some((
                            r.succeed,
                            (!r.previous_not_exist).then(|| value(&r.previous_value)),
                        )),
                    }),
                    Attempt::Retry => Attempt::Retry,
                    Attempt::Unknown => Attempt::Unknown,
                }
            }
        };
        match attempt {
            Attempt::Done(op) => return (Some(op), true),
            Attempt::Retry => std::thread::sleep(Duration::from_millis(10)),
            Attempt::Unknown => return (Some(op), false),
        }
    }
    match op {
        Op::Read(_) => (None, false),
        other => (Some(other), false),
    }
}
