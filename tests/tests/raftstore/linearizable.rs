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

fn classify<T>(r: Result<T, Failure>) -> Attempt<T> {
    match r {
        Ok(v) => Attempt::Done(v),
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
    let limits = Limits {
        request_timeout_ms: 1500,
        ..Limits::default()
    };
    let cluster = Cluster::with_limits(3, &[b"k2"], tests::cluster::test_config(), limits);
    cluster.wait_leader(1, Duration::from_secs(10));
    cluster.wait_leader(2, Duration::from_secs(10));
    let start = Instant::now();
    let now = || start.elapsed().as_micros() as u64;
    let histories: Vec<Mutex<Vec<Event>>> = (0..KEYS).map(|_| Mutex::new(Vec::new())).collect();
    let stop = AtomicBool::new(false);
    let cluster = Arc::new(cluster);

    std::thread::scope(|s| {
        // The nemesis.
        s.spawn(|| {
            let mut rng = rng_for(seed, 0);
            while !stop.load(Ordering::SeqCst) {
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
    let region = cluster.region_for_key(key);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
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
                match classify(cluster.block_on(storage.raw_get(req))) {
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
                match classify(cluster.block_on(storage.raw_put(req))) {
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
                match classify(cluster.block_on(storage.raw_compare_and_swap(req))) {
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
