//! `rangekv bench`: a YCSB-style load generator against a running cluster.
//!
//! A load phase inserts `--records` records (batched); the run phase then issues operations
//! from `--concurrency` workers for `--duration` seconds, picking keys from a Zipfian (as YCSB
//! does, skew 0.99) or uniform distribution, and reports throughput and latency percentiles
//! per operation type.
//!
//! Workloads: `a` (50% reads, 50% updates), `b` (95% / 5%), `c` (reads only), `w` (updates
//! only) on the raw API; `t` on the transactional API: each operation is one small
//! read-write transaction (read two records, write both, commit; optimistic), reported as
//! `txn` with write conflicts counted apart from errors.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// PD endpoints, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pd: Vec<String>,
    #[command(flatten)]
    tls: crate::tls::TlsArgs,
    /// Workload: `a` (50% read, 50% update), `b` (95/5), `c` (read only), `w` (update only),
    /// `t` (small read-write transactions).
    #[arg(long, default_value = "a")]
    workload: String,
    /// Key distribution: `zipfian` or `uniform`.
    #[arg(long, default_value = "zipfian")]
    distribution: String,
    /// Records in the key space.
    #[arg(long, default_value_t = 10_000)]
    records: u64,
    /// Skip the load phase (the records already exist).
    #[arg(long)]
    skip_load: bool,
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long the run phase lasts, seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Value size, bytes.
    #[arg(long, default_value_t = 128)]
    value_size: usize,
    /// Seed of the workers' random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Latencies of one operation type, in microseconds, and its failures.
struct OpStats {
    latency: Histogram<u64>,
    errors: u64,
}

impl OpStats {
    fn new() -> Result<OpStats> {
        Ok(OpStats {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            errors: 0,
        })
    }

    fn record(&mut self, ok: bool, started: Instant) {
        if ok {
            let _ = self
                .latency
                .record(started.elapsed().as_micros().max(1) as u64);
        } else {
            self.errors += 1;
        }
    }

    fn merge(&mut self, other: &OpStats) {
        let _ = self.latency.add(&other.latency);
        self.errors += other.errors;
    }
}

/// The report's column headings, then one [`print_row`] per operation type.
fn print_header() {
    println!(
        "{:<7} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "op", "ops", "errors", "p50 us", "p99 us", "p999 us", "max us"
    );
}

fn print_row(name: &str, s: &OpStats) {
    println!(
        "{:<7} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}",
        name,
        s.latency.len(),
        s.errors,
        s.latency.value_at_quantile(0.5),
        s.latency.value_at_quantile(0.99),
        s.latency.value_at_quantile(0.999),
        s.latency.max()
    );
}

fn record_key(i: u64) -> Vec<u8> {
    format!("user{i:012}").into_bytes()
}

pub fn run(args: BenchArgs) -> Result<()> {
    let read_share = match args.workload.as_str() {
        "a" => 0.5,
        "b" => 0.95,
        "c" => 1.0,
        "w" => 0.0,
        "t" => -1.0,
        other => bail!("unknown workload {other:?} (expected a, b, c, w or t)"),
    };
    if !matches!(args.distribution.as_str(), "zipfian" | "uniform") {
        bail!("unknown distribution {:?}", args.distribution);
    }
    if args.records == 0 || args.concurrency == 0 {
        bail!("records and concurrency must be positive");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if read_share < 0.0 {
        return rt.block_on(run_txn(args));
    }
    rt.block_on(run_async(args, read_share))
}

fn pick(rng: &mut StdRng, zipf: &Zipf<f64>, uniform: bool, records: u64) -> u64 {
    if uniform {
        rng.random_range(0..records)
    } else {
        // Zipf yields ranks 1..=n, rank 1 the most popular.
        (zipf.sample(rng) as u64).saturating_sub(1) % records
    }
}

/// Workload `t`: small read-write transactions.
async fn run_txn(args: BenchArgs) -> Result<()> {
    let config = client::Config::default().with_security(args.tls.manager()?);
    let client = client::TransactionClient::with_config(args.pd.clone(), config).await?;
    let value = vec![b'x'; args.value_size];
    if !args.skip_load {
        let started = Instant::now();
        let mut next = 0;
        while next < args.records {
            let end = (next + 256).min(args.records);
            let mut txn = client.begin_optimistic().await?;
            for i in next..end {
                txn.put(record_key(i), value.clone()).await?;
            }
            txn.commit().await?;
            next = end;
        }
        println!(
            "load: {} records in {:.1}s",
            args.records,
            started.elapsed().as_secs_f64()
        );
    }
    let zipf = Zipf::new(args.records as f64, 0.99)?;
    let uniform = args.distribution == "uniform";
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let client = client.clone();
        let value = value.clone();
        let records = args.records;
        let mut rng = StdRng::seed_from_u64(args.seed.wrapping_add(w as u64));
        workers.push(tokio::spawn(async move {
            let mut stats = OpStats::new()?;
            let mut conflicts = 0u64;
            while Instant::now() < deadline {
                let (a, b) = (
                    pick(&mut rng, &zipf, uniform, records),
                    pick(&mut rng, &zipf, uniform, records),
                );
                let t = Instant::now();
                let outcome = async {
                    let mut txn = client.begin_optimistic().await?;
                    txn.get(record_key(a)).await?;
                    txn.get(record_key(b)).await?;
                    txn.put(record_key(a), value.clone()).await?;
                    txn.put(record_key(b), value.clone()).await?;
                    txn.commit().await
                }
                .await;
                match outcome {
                    Ok(_) => stats.record(true, t),
                    Err(e) if e.is_txn_retryable() => conflicts += 1,
                    Err(_) => stats.record(false, t),
                }
            }
            anyhow::Ok((stats, conflicts))
        }));
    }
    let mut stats = OpStats::new()?;
    let mut conflicts = 0;
    for w in workers {
        let (s, c) = w.await??;
        stats.merge(&s);
        conflicts += c;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = stats.latency.len();
    println!(
        "run: workload t, {} keys, {} in flight: {total} transactions in {elapsed:.1}s = {:.0} txn/s, {conflicts} conflicts",
        args.distribution,
        args.concurrency,
        total as f64 / elapsed
    );
    print_header();
    print_row("txn", &stats);
    Ok(())
}

async fn run_async(args: BenchArgs, read_share: f64) -> Result<()> {
    let config = client::Config::default().with_security(args.tls.manager()?);
    let client = client::RawClient::with_config(args.pd.clone(), config).await?;
    let value = vec![b'x'; args.value_size];
    if !args.skip_load {
        let started = Instant::now();
        let mut next = 0;
        while next < args.records {
            let end = (next + 256).min(args.records);
            client
                .batch_put((next..end).map(|i| (record_key(i), value.clone())))
                .await?;
            next = end;
        }
        println!(
            "load: {} records in {:.1}s",
            args.records,
            started.elapsed().as_secs_f64()
        );
    }
    let zipf = Zipf::new(args.records as f64, 0.99)?;
    let uniform = args.distribution == "uniform";
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let client = client.clone();
        let value = value.clone();
        let records = args.records;
        let mut rng = StdRng::seed_from_u64(args.seed.wrapping_add(w as u64));
        workers.push(tokio::spawn(async move {
            let (mut reads, mut updates) = (OpStats::new()?, OpStats::new()?);
            while Instant::now() < deadline {
                let i = if uniform {
                    rng.random_range(0..records)
                } else {
                    // Zipf yields ranks 1..=n, rank 1 the most popular.
                    (zipf.sample(&mut rng) as u64).saturating_sub(1) % records
                };
                let t = Instant::now();
                if rng.random_bool(read_share) {
                    let ok = client.get(record_key(i)).await.is_ok();
                    reads.record(ok, t);
                } else {
                    let ok = client.put(record_key(i), value.clone()).await.is_ok();
                    updates.record(ok, t);
                }
            }
            anyhow::Ok((reads, updates))
        }));
    }
    let (mut reads, mut updates) = (OpStats::new()?, OpStats::new()?);
    for w in workers {
        let (r, u) = w.await??;
        reads.merge(&r);
        updates.merge(&u);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = reads.latency.len() + updates.latency.len();
    println!(
        "run: workload {}, {} keys, {} in flight: {total} ops in {elapsed:.1}s = {:.0} ops/s",
        args.workload,
        args.distribution,
        args.concurrency,
        total as f64 / elapsed
    );
    print_header();
    for (name, s) in [("read", &reads), ("update", &updates)] {
        if s.latency.is_empty() && s.errors == 0 {
            continue;
        }
        print_row(name, s);
    }
    Ok(())
}
