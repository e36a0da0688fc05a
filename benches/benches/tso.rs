//! Timestamps per second from one PD client against a 3-member PD group on loopback (every
//! member in this process, real RocksDB in temp dirs). The client batches concurrent callers
//! into one Tso round trip; the cases are one caller at a time (round-trip bound) and many
//! callers in flight (batching bound).
//!
//! Run: `cargo bench -p benches --bench tso`.

use std::time::{Duration, Instant};

use benches::PdGroup;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pd_client::PdClient;
use tokio::runtime::Runtime;

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
        let group = PdGroup::start(3).await;
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
    runtime.block_on(group_handle.shutdown());
}

criterion_group!(benches, tso);
criterion_main!(benches);
