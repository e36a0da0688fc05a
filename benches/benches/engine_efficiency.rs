//! Engine efficiency: replicated write throughput against what the same disk gives to synced
//! RocksDB group-commit writes of the same size, side by side in one run.
//!
//! - `engine`: one RocksDB (the store's own options, `engine::Engine`) in a temp dir;
//!   `EFF_WRITERS` threads (default 64) each write one `EFF_VALUE`-byte value (default 1,024)
//!   at a time with `sync`, so RocksDB's write group commits them together.
//! - `replicated`: the in-process cluster (3 stores on this machine, 32 regions, default
//!   raftstore config), `EFF_WRITERS` closed-loop writers putting values of the same size
//!   through the regions' leaders; each put is acknowledged once a majority has synced it.
//!
//! Each runs for `EFF_SECONDS` (default 10). Printed: writes per second of each and their
//! ratio (the target is at least 0.5). The replicated figure pays for three replicas' log
//! writes and applies on the same two cores and disk, which the engine figure does not.
//!
//! Run: `cargo bench -p benches --bench engine_efficiency`.

use benches::env_or;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::kvrpcpb::RawPutRequest;
use tests::Cluster;

const REGIONS: u64 = 32;

/// Synced single-put writes per second from `writers` threads.
fn engine_writes(writers: u64, value: usize, seconds: u64) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine =
        engine::Engine::open(dir.path(), &engine::EngineOptions::default()).expect("open engine");
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let engine = engine.clone();
            let done = Arc::clone(&done);
            let value = vec![b'v'; value];
            std::thread::spawn(move || {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let mut batch = engine::WriteBatch::new();
                    batch.put(
                        engine::CF_DEFAULT,
                        format!("w{w:03}-{i:010}").as_bytes(),
                        &value,
                    );
                    engine.write(batch, true).expect("write");
                    i += 1;
                }
                done.fetch_add(i, Ordering::Relaxed);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Replicated puts per second from `writers` closed-loop writers.
fn replicated_writes(writers: u64, value: usize, seconds: u64) -> f64 {
    let splits: Vec<Vec<u8>> = (1..REGIONS)
        .map(|i| format!("r{i:03}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = splits.iter().map(|s| s.as_slice()).collect();
    let cluster = Cluster::with_config(3, &refs, raftstore::Config::default());
    for r in &cluster.regions {
        cluster.wait_leader(r.id, Duration::from_secs(60));
    }
    // (storage of the leader, context, key prefix) per region.
    let targets: Vec<_> = cluster
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let store = cluster.leader_store(r.id).expect("leader");
            let prefix = if i == 0 {
                "a".to_owned()
            } else {
                format!("r{i:03}-")
            };
            (
                cluster.storage(store).clone(),
                cluster.context(r, store),
                prefix,
            )
        })
        .collect();
    let targets = Arc::new(targets);
    let value = Bytes::from(vec![b'v'; value]);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let done = cluster.block_on(async move {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let targets = Arc::clone(&targets);
                let value = value.clone();
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while Instant::now() < deadline {
                        let (storage, context, prefix) = &targets[((w + i) % REGIONS) as usize];
                        let req = RawPutRequest {
                            context: Some(context.clone()),
                            key: Bytes::from(format!("{prefix}{w:03}-{i:010}")),
                            value: value.clone(),
                            ..Default::default()
                        };
                        let resp = storage.raw_put(req).await.expect("put");
                        assert!(
                            resp.region_error.is_none() && resp.error.is_empty(),
                            "{resp:?}"
                        );
                        i += 1;
                    }
                    i
                })
            })
            .collect();
        let mut done = 0;
        for t in tasks {
            done += t.await.expect("writer");
        }
        done
    });
    done as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; a `cargo test` run of benches only checks it starts.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let writers = env_or("EFF_WRITERS", 64).max(1);
    let value = env_or("EFF_VALUE", 1024).max(1) as usize;
    let seconds = env_or("EFF_SECONDS", 10).max(1);
    let engine = engine_writes(writers, value, seconds);
    let replicated = replicated_writes(writers, value, seconds);
    println!("{writers} writers, {value}-byte values, {seconds} s each");
    println!("{:<34} {:>12}", "", "writes/s");
    println!("{:<34} {:>12.0}", "engine (synced, group commit)", engine);
    println!(
        "{:<34} {:>12.0}",
        "replicated (3 stores, majority)", replicated
    );
    println!("ratio replicated / engine: {:.2}", replicated / engine);
}
