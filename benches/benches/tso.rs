//! Timestamps per second from one PD client against a 3-member PD group on loopback (every
//! member in this process, real RocksDB in temp dirs). The client batches concurrent callers
//! into one Tso round trip; the cases are one caller at a time (round-trip bound) and many
//! callers in flight (batching bound).
//!
//! Run: `cargo bench -p benches --bench tso`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pd_client::PdClient;
use placement_driver::{PdConfig, PdHandle, SystemClock};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

struct Group {
    _dir: tempfile::TempDir,
    members: Vec<PdHandle>,
    endpoints: Vec<String>,
}

async fn start_group(n: usize) -> Group {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    let endpoints: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().expect("addr")))
        .collect();
    let initial_cluster = endpoints
        .iter()
        .enumerate()
        .map(|(i, url)| format!("pd{}={url}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut members = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let config = PdConfig {
            name: format!("pd{}", i + 1),
            initial_cluster: initial_cluster.clone(),
            ..PdConfig::for_test(dir.path().join(format!("pd{}", i + 1)))
        };
        let pd = placement_driver::start_with_listener(config, Arc::new(SystemClock), listener)
            .await
            .expect("start PD");
        members.push(pd);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !members.iter().any(|m| m.is_serving_leader()) {
        assert!(Instant::now() < deadline, "no PD leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Group {
        _dir: dir,
        members,
        endpoints,
    }
}

/// Takes `callers * per_caller` timestamps with `callers` concurrent callers, each calling
/// sequentially; checks they are increasing per caller.
async fn take(client: &PdClient, callers: usize, per_caller: usize) {
    let futs = (0..callers).map(|_| async move {
        let mut last = 0;
        for _ in 0..per_caller {
            let ts = client.get_ts().await.expect("timestamp");
            assert!(ts > last);
            last = ts;
        }
    });
    futures::future::join_all(futs).await;
}

fn tso(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let (group_handle, client) = runtime.block_on(async {
        let group = start_group(3).await;
        let client = PdClient::connect(group.endpoints.clone())
            .await
            .expect("connect");
        take(&client, 64, 100).await;
        (group, client)
    });
    let mut group = c.benchmark_group("tso_3_member_pd");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for (callers, per_caller) in [(1usize, 200usize), (256, 20), (4096, 5)] {
        let n = callers * per_caller;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{callers}_concurrent_callers"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    runtime.block_on(take(&client, callers, per_caller));
                    total += start.elapsed();
                }
                total
            })
        });
    }
    group.finish();
    let stats = client.stats();
    println!(
        "client stats: {} timestamps in {} round trips ({:.1} per round trip)",
        stats.tso_timestamps,
        stats.tso_round_trips,
        stats.tso_timestamps as f64 / stats.tso_round_trips.max(1) as f64
    );
    drop(client);
    runtime.block_on(async move {
        for pd in group_handle.members {
            let _ = pd.shutdown().await;
        }
    });
}

criterion_group!(benches, tso);
criterion_main!(benches);
