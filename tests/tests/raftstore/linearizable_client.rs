//! Linearizability through the client library: concurrent `client::RawClient`s get, put,
//! delete and compare-and-swap a few keys over gRPC while a nemesis injects faults at every
//! layer; the recorded history of every key must be linearizable.
//!
//! The path under test (see `tests::served`): client → PD (region and store lookup) → a
//! fault-injecting TCP proxy per store → tonic `tikvpb.Tikv` server → `RawStorage` → Raft over
//! the harness's simulated network. Each step of the nemesis picks one fault for a few hundred
//! milliseconds, all from one seeded generator:
//! - client↔store: connections cut mid-request, answers lost after the request was executed,
//!   answers held back until the client times out, delays;
//! - Raft: a store isolated, a symmetric or one-way partition, random drops, random delays,
//!   duplicated (and late) messages, a leadership transfer;
//! - a store crashed (its port then refuses connections) and restarted from its data.
//!
//! Recording: an operation's call time is taken before the client call and its return time
//! after it. A write answered `Error::Undetermined` is recorded with an unknown outcome (it may
//! apply at any point after its call, or never); a write that failed with any other error is
//! not recorded, because the client resends a write only when earlier attempts certainly did
//! not take effect — the checker thus also verifies that claim. Failed reads are not recorded.
//!
//! The seed is printed first; `RANGEKV_LIN_SEED=<seed>` replays the same choices of faults and
//! operations (not the same thread timing). A failure message repeats the seed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::Error;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::Rng;
use server::Limits;
use tests::linearizability::{check_register, Event, Op};
use tests::network::{Isolate, OneWay, Partition, RandomDelay, RandomDrop, RandomDuplicate};
use tests::proxy::ProxyFault;
use tests::seed::{rng_for, test_seed};
use tests::served::ServedCluster;
use tests::Cluster;

const KEYS: u64 = 4;
const CLIENTS: u64 = 4;
const OPS_PER_CLIENT: u64 = 80;
const STORES: u64 = 3;

type Histories = Arc<Vec<Mutex<Vec<Event>>>>;

fn value(v: &[u8]) -> u64 {
    std::str::from_utf8(v)
        .expect("utf8")
        .parse()
        .expect("number")
}

fn client_config() -> client::Config {
    client::Config {
        request_timeout: Duration::from_millis(400),
        connect_timeout: Duration::from_millis(500),
        max_retry_time: Duration::from_secs(6),
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(200),
        ..client::Config::default()
    }
}

#[test]
fn client_histories_under_faults_at_every_layer_are_linearizable() {
    let seed = test_seed("client_histories_under_faults_at_every_layer_are_linearizable");
    let limits = Limits {
        request_timeout_ms: 1500,
        ..Limits::default()
    };
    let cluster = Cluster::with_limits(STORES, &[b"k2"], tests::cluster::test_config(), limits);
    cluster.wait_leader(1, Duration::from_secs(10));
    cluster.wait_leader(2, Duration::from_secs(10));
    let mut served = ServedCluster::start(cluster).expect("the cluster is served");
    let start = Instant::now();
    let histories: Histories = Arc::new((0..KEYS).map(|_| Mutex::new(Vec::new())).collect());

    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let client = served.client(client_config());
            let histories = Arc::clone(&histories);
            let rng = rng_for(seed, n + 1);
            served
                .cluster
                .spawn(run_client(client, n, rng, histories, start))
        })
        .collect();

    let mut nemesis = rng_for(seed, 0);
    let mut steps = Vec::new();
    while !clients.iter().all(|c| c.is_finished()) {
        steps.push(nemesis_step(&mut served, &mut nemesis));
    }
    for c in clients {
        served.cluster.block_on(c).expect("client task");
    }
    heal(&mut served);

    let mut unknown = 0;
    for (k, h) in histories.iter().enumerate() {
        let h = h.lock();
        unknown += h.iter().filter(|e| e.ret.is_none()).count();
        assert!(
            h.iter().filter(|e| e.ret.is_some()).count() > 5,
            "key k{k}: too few operations completed (seed {seed})"
        );
        check_register(None, &h)
            .unwrap_or_else(|e| panic!("key k{k} (seed {seed}, nemesis steps {steps:?}): {e}"));
    }
    // Every store runs again and the faults are over: every replica must hold the same data.
    served.cluster.must_be_consistent();
    eprintln!(
        "checked {} operations in {:?} over {} nemesis steps, {unknown} with unknown outcome",
        CLIENTS * OPS_PER_CLIENT,
        start.elapsed(),
        steps.len()
    );
}

/// One client: `OPS_PER_CLIENT` random operations on random keys, each recorded.
async fn run_client(
    client: client::RawClient,
    n: u64,
    mut rng: StdRng,
    histories: Histories,
    start: Instant,
) {
    let now = || start.elapsed().as_micros() as u64;
    for i in 0..OPS_PER_CLIENT {
        let k = rng.random_range(0..KEYS);
        let key = Bytes::from(format!("k{k}"));
        let unique = n * 1_000_000 + i + 1;
        let choice = rng.random_range(0..10);
        let pause = rng.random_range(0..160);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let call = now();
        // `None`: certainly no effect, not recorded. `Some((op, known))`.
        let outcome: Option<(Op, bool)> = match choice {
            0..=3 => match client.get(key).await {
                Ok(v) => Some((Op::Read(v.map(|v| value(&v))), true)),
                Err(_) => None,
            },
            4..=6 => write_outcome(Op::Write(unique), client.put(key, unique.to_string()).await),
            7 => write_outcome(Op::Delete, client.delete(key).await),
            _ => {
                let expect = last_written(&histories[k as usize].lock());
                let expected = expect.map(|v| Bytes::from(v.to_string()));
                match client
                    .compare_and_swap(key, expected, Bytes::from(unique.to_string()))
                    .await
                {
                    Ok((previous, swapped)) => Some((
                        Op::Cas {
                            expect,
                            new: unique,
                            outcome: Some((swapped, previous.map(|v| value(&v)))),
                        },
                        true,
                    )),
                    Err(e) => write_outcome(
                        Op::Cas {
                            expect,
                            new: unique,
                            outcome: None,
                        },
                        Err(e),
                    ),
                }
            }
        };
        if let Some((op, known)) = outcome {
            let ret = known.then(now);
            histories[k as usize].lock().push(Event { op, call, ret });
        }
    }
}

/// How a write's result is recorded: done, unknown (`Undetermined`), or not at all (any other
/// error: the client promises it had no effect).
fn write_outcome(op: Op, result: client::Result<()>) -> Option<(Op, bool)> {
    match result {
        Ok(()) => Some((op, true)),
        Err(Error::Undetermined(_)) => Some((op, false)),
        Err(Error::Timeout { .. } | Error::Region(_)) => None,
        Err(e) => panic!("unexpected error of a write: {e}"),
    }
}

/// The value of the last write recorded for a key, as a plausible CAS expectation.
fn last_written(history: &[Event]) -> Option<u64> {
    history.iter().rev().find_map(|e| match e.op {
        Op::Write(v) => Some(Some(v)),
        Op::Delete => Some(None),
        _ => None,
    })?
}

/// One step of the nemesis: a fault for a while, then everything healed. Returns what it did.
fn nemesis_step(served: &mut ServedCluster, rng: &mut StdRng) -> String {
    let store = rng.random_range(1..=STORES);
    let others: Vec<u64> = (1..=STORES).filter(|s| *s != store).collect();
    let hold = Duration::from_millis(rng.random_range(100..700));
    let net_seed: u64 = rng.random();
    let what = match rng.random_range(0..16) {
        0 => {
            served.proxy(store).cut();
            format!("cut the connections to store {store}")
        }
        1 => {
            served
                .proxy(store)
                .set_fault_on_some(ProxyFault::LoseAnswers, rng.random());
            format!("lose answers of some connections to store {store}")
        }
        2 => {
            // Longer than the client's request timeout: the calls time out.
            served
                .proxy(store)
                .set_fault_on_some(ProxyFault::HoldAnswers, rng.random());
            format!("hold answers of some connections to store {store}")
        }
        13 => {
            served.proxy(store).set_fault(ProxyFault::LoseAnswers);
            format!("lose answers of store {store}")
        }
        3 => {
            let d = Duration::from_millis(rng.random_range(1..60));
            served.proxy(store).set_fault(ProxyFault::Delay(d));
            format!("delay the client path of store {store} by {d:?}")
        }
        4 => {
            served.cluster.add_filter(Isolate(store));
            format!("isolate store {store}")
        }
        5 => {
            served
                .cluster
                .add_filter(Partition::new(&[&[store], &others]));
            format!("partition store {store} from the others")
        }
        6 => {
            served.cluster.add_filter(OneWay::new(&[store], &others));
            format!("store {store} cannot send to the others")
        }
        7 => {
            served.cluster.add_filter(OneWay::new(&others, &[store]));
            format!("store {store} cannot hear the others")
        }
        8 => {
            served.cluster.add_filter(RandomDrop::new(0.2, net_seed));
            "drop 20% of Raft messages".to_owned()
        }
        9 => {
            let max = Duration::from_millis(30);
            served
                .cluster
                .add_filter(RandomDelay::new(Duration::ZERO, max, net_seed));
            "delay Raft messages up to 30ms".to_owned()
        }
        10 => {
            let lag = Duration::from_millis(200);
            served
                .cluster
                .add_filter(RandomDuplicate::new(0.3, lag, net_seed));
            "duplicate 30% of Raft messages, copies up to 200ms late".to_owned()
        }
        11 => {
            let region_id = rng.random_range(1..=2u64);
            transfer_leader(&served.cluster, region_id, store);
            format!("transfer region {region_id} to store {store}")
        }
        12 | 14 => {
            served.crash_store(store);
            format!("crash store {store}")
        }
        _ => "nothing".to_owned(),
    };
    std::thread::sleep(hold);
    heal(served);
    what
}

/// Lifts every fault and restarts crashed stores.
fn heal(served: &mut ServedCluster) {
    served.cluster.clear_filters();
    served.clear_proxy_faults();
    for id in 1..=STORES {
        if !served.is_running(id) {
            served.restart_store(id).expect("restart");
        }
    }
}

fn transfer_leader(cluster: &Cluster, region_id: u64, to: u64) {
    let Some(from) = cluster.leader_store(region_id) else {
        return;
    };
    let region = cluster.regions[region_id as usize - 1].clone();
    let Some(target) = region.peers.iter().find(|p| p.store_id == to).copied() else {
        return;
    };
    let _ = cluster
        .storage(from)
        .router()
        .transfer_leader(region_id, target, region.region_epoch);
}
