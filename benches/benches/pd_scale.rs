//! PD at scale: timestamp latency while PD takes region heartbeats from many regions.
//!
//! A 3-member PD group runs in this process (loopback, RocksDB in temp dirs) and is told of
//! `PD_REGIONS` regions (default 100,000; 3 replicas each on 3 stores, leaders spread evenly)
//! through split reports, as stores would. Then 64 concurrent callers take timestamps through
//! one `pd_client` for `PD_SECONDS` (default 10) in each of three phases, side by side in one
//! run:
//! - `idle`: no heartbeats;
//! - `paced`: one client per store sends a heartbeat for each of its regions once every
//!   `PD_HEARTBEAT_SECS` (default 10; TiKV's default interval is 60 s, so 10 s is 6× its load);
//! - `flat-out`: the three clients send heartbeats as fast as PD takes them.
//!
//! Printed per phase: heartbeats PD handled per second, timestamps per second, and the latency
//! of one `get_ts` call (p50 / p99 / p99.9 / max). Also the resident memory the regions took,
//! per region and member.
//!
//! Run: `cargo bench -p benches --bench pd_scale`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{env_or, resident_bytes, PdGroup};
use hdrhistogram::Histogram;
use pd_client::{PdClient, RegionStat};
use proto::metapb::{self, Peer, Region, RegionEpoch};

const STORES: u64 = 3;
const TSO_CALLERS: usize = 64;

fn key(i: u64) -> Vec<u8> {
    format!("k{i:08}").into_bytes()
}

/// Region `j` of `n` (0-based): id `j + 1`, keys `[k(j), k(j + 1))` with open ends at the
/// edges, one voter on every store.
fn region(j: u64, n: u64, version: u64) -> Region {
    Region {
        id: j + 1,
        start_key: if j == 0 { Vec::new() } else { key(j) }.into(),
        end_key: if j + 1 == n { Vec::new() } else { key(j + 1) }.into(),
        region_epoch: Some(RegionEpoch {
            conf_ver: 1,
            version,
        }),
        peers: (1..=STORES).map(|s| peer(j + 1, s)).collect(),
    }
}

fn peer(region_id: u64, store_id: u64) -> Peer {
    Peer {
        id: region_id * 10 + store_id,
        store_id,
        ..Default::default()
    }
}

fn store(id: u64) -> metapb::Store {
    metapb::Store {
        id,
        address: format!("127.0.0.1:{}", 20160 + id),
        ..Default::default()
    }
}

/// Bootstraps the cluster and reports `n` regions in split batches.
async fn load_regions(client: &PdClient, n: u64) {
    let first = Region {
        end_key: Vec::new().into(),
        ..region(0, 1, 1)
    };
    // The other stores register first: the first region names them.
    for s in 2..=STORES {
        client.put_store(store(s)).await.expect("put store");
    }
    client.bootstrap(store(1), first).await.expect("bootstrap");
    const BATCH: u64 = 2_000;
    let mut j = 0;
    while j < n {
        let end = (j + BATCH).min(n);
        let batch: Vec<Region> = (j..end).map(|k| region(k, n, 2)).collect();
        client.report_batch_split(batch).await.expect("report");
        j = end;
    }
}

#[derive(Clone, Copy)]
enum Heartbeats {
    None,
    /// Every region once per this interval.
    Paced(Duration),
    FlatOut,
}

/// One store's heartbeat sender: its leaders' regions, round after round, until `stop`.
async fn send_heartbeats(
    client: PdClient,
    store_id: u64,
    n: u64,
    mode: Heartbeats,
    stop: Arc<AtomicBool>,
) {
    let mine: Vec<u64> = (0..n).filter(|j| j % STORES + 1 == store_id).collect();
    // Paced: a slice of the regions every 10 ms.
    let slice = match mode {
        Heartbeats::Paced(every) => {
            let ticks = (every.as_millis() / 10).max(1) as usize;
            mine.len().div_ceil(ticks).max(1)
        }
        _ => mine.len(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) {
        if let Heartbeats::Paced(_) = mode {
            tick.tick().await;
        }
        for _ in 0..slice {
            let j = mine[next % mine.len()];
            next += 1;
            let stat = RegionStat {
                term: 6,
                approximate_size: 96 << 20,
                approximate_keys: 100_000,
                ..Default::default()
            };
            if client
                .region_heartbeat(region(j, n, 2), peer(j + 1, store_id), stat)
                .await
                .is_err()
                || stop.load(Ordering::Relaxed)
            {
                return;
            }
        }
    }
}

struct PhaseResult {
    heartbeats_per_sec: f64,
    ts_per_sec: f64,
    latency: Histogram<u64>,
}

async fn phase(
    group: &PdGroup,
    tso: &PdClient,
    stores: &[PdClient],
    n: u64,
    mode: Heartbeats,
    seconds: u64,
) -> PhaseResult {
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = if let Heartbeats::None = mode {
        Vec::new()
    } else {
        stores
            .iter()
            .enumerate()
            .map(|(i, c)| {
                tokio::spawn(send_heartbeats(
                    c.clone(),
                    i as u64 + 1,
                    n,
                    mode,
                    Arc::clone(&stop),
                ))
            })
            .collect()
    };
    // Let the heartbeat streams reach a steady state before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let heartbeats_before = placement_driver::metrics::REGION_HEARTBEATS.get();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let callers: Vec<_> = (0..TSO_CALLERS)
        .map(|_| {
            let tso = tso.clone();
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new(3).expect("histogram");
                let mut last = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let ts = tso.get_ts().await.expect("timestamp");
                    h.record(t.elapsed().as_micros() as u64).expect("record");
                    assert!(ts > last, "timestamps must increase per caller");
                    last = ts;
                }
                h
            })
        })
        .collect();
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    for c in callers {
        latency.add(c.await.expect("caller")).expect("merge");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let heartbeats = placement_driver::metrics::REGION_HEARTBEATS.get() - heartbeats_before;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.await;
    }
    assert!(
        group.members.iter().any(|m| m.is_serving_leader()),
        "PD lost its leader under load"
    );
    PhaseResult {
        heartbeats_per_sec: heartbeats as f64 / elapsed,
        ts_per_sec: latency.len() as f64 / elapsed,
        latency,
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn main() {
    // `cargo bench` passes `--bench`; a `cargo test` run of benches only checks it starts.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = env_or("PD_REGIONS", 100_000).max(1);
    let seconds = env_or("PD_SECONDS", 10).max(1);
    let interval = Duration::from_secs(env_or("PD_HEARTBEAT_SECS", 10).max(1));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let group = PdGroup::start(3).await;
        let tso = PdClient::connect(group.endpoints.clone())
            .await
            .expect("connect");
        let rss_before = resident_bytes();
        let loaded = Instant::now();
        load_regions(&tso, n).await;
        let load_secs = loaded.elapsed().as_secs_f64();
        let rss = resident_bytes().saturating_sub(rss_before);
        let mut stores = Vec::new();
        for _ in 0..STORES {
            stores.push(
                PdClient::connect(group.endpoints.clone())
                    .await
                    .expect("connect"),
            );
        }
        println!(
            "{n} regions reported in {load_secs:.1} s; resident memory grew {:.0} bytes per region per PD member",
            rss as f64 / (n as f64 * 3.0)
        );
        println!(
            "{:<10} {:>14} {:>12} {:>9} {:>9} {:>9} {:>9}",
            "heartbeats", "handled/s", "ts/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        let paced = format!("every {}s", interval.as_secs());
        for (name, mode) in [
            ("none", Heartbeats::None),
            (paced.as_str(), Heartbeats::Paced(interval)),
            ("flat-out", Heartbeats::FlatOut),
        ] {
            let r = phase(&group, &tso, &stores, n, mode, seconds).await;
            println!(
                "{:<10} {:>14.0} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                name,
                r.heartbeats_per_sec,
                r.ts_per_sec,
                ms(r.latency.value_at_quantile(0.5)),
                ms(r.latency.value_at_quantile(0.99)),
                ms(r.latency.value_at_quantile(0.999)),
                ms(r.latency.max()),
            );
        }
        drop(stores);
        drop(tso);
        group.shutdown().await;
    });
}
