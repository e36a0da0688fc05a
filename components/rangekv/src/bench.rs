//! `rangekv bench`: raw KV load against a running cluster, with latency percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use std::sync::Mutex;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// PD endpoints, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pd: Vec<String>,
    /// Workload: `put`, `get` or `mixed` (50/50).
    #[arg(long, default_value = "put")]
    workload: String,
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to run, seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Value size, bytes.
    #[arg(long, default_value_t = 128)]
    value_size: usize,
}

/// Distance between the key indexes one worker visits (a prime, so workers spread out).
const STRIDE: u64 = 7919;

pub fn run(args: BenchArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: BenchArgs) -> Result<()> {
    let client = client::RawClient::connect(args.pd.clone()).await?;
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let value = vec![b'x'; args.value_size];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let client = client.clone();
        let hist = hist.clone();
        let errors = errors.clone();
        let value = value.clone();
        let workload = args.workload.clone();
        let keys = args.keys.max(1);
        tasks.push(tokio::spawn(async move {
            let mut i = worker as u64;
            while Instant::now() < deadline {
                let key = format!(
                    "bench/{:012}",
                    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) % keys
                )
                .into_bytes();
                let is_put = match workload.as_str() {
                    "get" => false,
                    "mixed" => i.is_multiple_of(2),
                    _ => true,
                };
                let t = Instant::now();
                let ok = if is_put {
                    client.put(key, value.clone()).await.is_ok()
                } else {
                    client.get(key).await.is_ok()
                };
                if ok {
                    let _ = hist
                        .lock()
                        .expect("histogram lock")
                        .record(t.elapsed().as_micros().max(1) as u64);
                } else {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                i += STRIDE;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let h = hist.lock().expect("histogram lock");
    println!(
        "{} ops in {elapsed:.1}s: {:.0} ops/s, errors {}; latency us p50 {} p99 {} p999 {} max {}",
        h.len(),
        h.len() as f64 / elapsed,
        errors.load(std::sync::atomic::Ordering::Relaxed),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    Ok(())
}
