//! Replicated writes through the in-process cluster: 3 stores, 32 regions, every write synced
//! to a majority before it is acknowledged. The baseline for raftstore optimisation.
//!
//! `commit_latency` measures one write at a time on two clusters side by side in one run: one
//! whose leaders send their appends before their own synced log write (the default), one
//! whose leaders send them after it, so that the followers' fsyncs wait for the leader's.
//!
//! Run: `cargo bench -p benches --bench replicated_writes`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use proto::kvrpcpb::RawPutRequest;
use tests::Cluster;

const REGIONS: u32 = 32;

fn setup() -> Cluster {
    setup_with(tests::cluster::test_config())
}

fn setup_with(cfg: raftstore::Config) -> Cluster {
    let splits: Vec<Vec<u8>> = (1..REGIONS)
        .map(|i| format!("r{i:03}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = splits.iter().map(|s| s.as_slice()).collect();
    let cluster = Cluster::with_config(3, &refs, cfg);
    for r in &cluster.regions {
        cluster.wait_leader(r.id, Duration::from_secs(60));
    }
    cluster
}

/// Puts `n` keys spread over every region, `concurrency` in flight, straight to the leaders.
fn put_batch(cluster: &Cluster, round: u64, n: usize) -> Duration {
    let leaders: Vec<u64> = cluster
        .regions
        .iter()
        .map(|r| cluster.leader_store(r.id).expect("leader"))
        .collect();
    let requests: Vec<_> = (0..n)
        .map(|i| {
            let region_idx = i % REGIONS as usize;
            let region = &cluster.regions[region_idx];
            let store = leaders[region_idx];
            let key = if region_idx == 0 {
                format!("a{round}-{i}")
            } else {
                format!("r{region_idx:03}-{round}-{i}")
            };
            let req = RawPutRequest {
                context: Some(cluster.context(region, store)),
                key: Bytes::from(key),
                value: Bytes::from(vec![b'v'; 128]),
                ..Default::default()
            };
            (cluster.storage(store).clone(), req)
        })
        .collect();
    let start = Instant::now();
    cluster.block_on(async move {
        let futs = requests
            .into_iter()
            .map(|(s, req)| async move { s.raw_put(req).await });
        for r in futures::future::join_all(futs).await {
            let resp = r.expect("put");
            assert!(
                resp.region_error.is_none() && resp.error.is_empty(),
                "{resp:?}"
            );
        }
    });
    start.elapsed()
}

fn replicated_writes(c: &mut Criterion) {
    let cluster = setup();
    let mut group = c.benchmark_group("replicated_writes");
    group.sample_size(10);
    for n in [1usize, 256] {
        group.throughput(Throughput::Elements(n as u64));
        let mut round = 0u64;
        group.bench_function(
            format!("{n}_concurrent_puts_3_stores_{REGIONS}_regions"),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        round += 1;
                        total += put_batch(&cluster, round, n);
                    }
                    total
                })
            },
        );
    }
    group.finish();
}

fn commit_latency(c: &mut Criterion) {
    let early = setup();
    let late = setup_with(raftstore::Config {
        send_appends_before_persist: false,
        ..tests::cluster::test_config()
    });
    let mut group = c.benchmark_group("commit_latency");
    group.sample_size(20);
    for (name, cluster) in [
        ("appends_before_leader_fsync", &early),
        ("appends_after_leader_fsync", &late),
    ] {
        let mut round = 0u64;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    total += put_batch(cluster, round, 1);
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, replicated_writes, commit_latency);
criterion_main!(benches);
