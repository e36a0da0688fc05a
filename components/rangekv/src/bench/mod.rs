//! `rangekv bench`: YCSB's core workloads against a running rangekv cluster, or the same load
//! against an etcd cluster (`--target etcd`) so the two compare side by side in one run.
//!
//! A load phase inserts `--records` records (batched); the run phase then issues operations
//! from `--concurrency` closed-loop workers for `--duration` seconds, printing one progress
//! line a second (throughput over the last second, p50/p99 so far per operation kind) and at
//! the end HDR percentiles per operation kind, as a table or, with `--json`, one JSON object.
//!
//! Workloads ([`workload`]): YCSB's `a`–`f` and `w` (updates only) on the raw API; `t` on the
//! transactional API (rangekv only): each operation is one small read-write transaction (read
//! two records, write both, commit; optimistic), with write conflicts counted apart from
//! errors.
//!
//! This module owns the run's orchestration; the choice of operations is pure
//! ([`workload`]), the measuring is [`stats`], and the clients are [`target`].

mod stats;
mod target;
mod watch;
mod workload;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

use stats::Recorder;
use target::Target;
use workload::{Distribution, InsertOrder, KeyChooser, OpKind, Workload};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// The system under load: `rangekv` (through PD at `--pd`) or `etcd` (at `--endpoints`).
    #[arg(long, default_value = "rangekv")]
    target: String,
    /// PD endpoints, comma-separated (`--target rangekv`).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pd: Vec<String>,
    /// etcd endpoints, comma-separated (`--target etcd`); requests go round-robin over them.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:23790")]
    endpoints: Vec<String>,
    #[command(flatten)]
    tls: crate::tls::TlsArgs,
    /// Workload: YCSB `a` (50% read, 50% update), `b` (95/5), `c` (read only), `d` (95% read
    /// latest, 5% insert), `e` (95% short scans, 5% insert), `f` (50% read, 50%
    /// read-modify-write); `w` (update only); `i` (insert only); `t` (small read-write
    /// transactions, rangekv).
    #[arg(long, default_value = "a")]
    workload: String,
    /// Key distribution: `zipfian`, `uniform` or `latest` (default: the workload's, as YCSB:
    /// `latest` for d, `zipfian` otherwise).
    #[arg(long)]
    distribution: Option<String>,
    /// Where records go in the key space: `hashed` (scattered, YCSB's default) or `ordered`
    /// (sequential: every insert lands on the last region).
    #[arg(long, default_value = "hashed")]
    insert_order: String,
    /// Records in the key space before the run.
    #[arg(long, default_value_t = 10_000)]
    records: u64,
    /// Skip the load phase (the records already exist).
    #[arg(long)]
    skip_load: bool,
    /// Concurrent requests in flight (closed-loop workers).
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
    /// Print the result as one JSON object on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Watch the regions of the bench's key range during the run (rangekv): report when the
    /// range was first split and when its leaders were first spread evenly over the stores.
    #[arg(long)]
    watch_regions: bool,
}

/// What every worker shares.
struct Run {
    target: Target,
    workload: Workload,
    chooser: KeyChooser,
    order: InsertOrder,
    value: Bytes,
    /// Records inserted (or being inserted) so far; the next insert takes this number.
    inserted: AtomicU64,
    recorder: Recorder,
    deadline: Instant,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let transactional = args.workload.eq_ignore_ascii_case("t");
    let workload = if transactional {
        // Only the key choice is used.
        Workload::parse("a")?
    } else {
        Workload::parse(&args.workload)?
    };
    let distribution = match &args.distribution {
        Some(d) => Distribution::parse(d)?,
        None => workload.distribution,
    };
    let order = InsertOrder::parse(&args.insert_order)?;
    if args.records == 0 || args.concurrency == 0 {
        bail!("--records and --concurrency must be positive");
    }
    if transactional && args.target != "rangekv" {
        bail!("workload t needs rangekv's transactional API");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let target = match args.target.as_str() {
            "rangekv" => {
                let config = client::Config::default().with_security(args.tls.manager()?);
                Target::Rangekv(client::RawClient::with_config(args.pd.clone(), config).await?)
            }
            "etcd" => Target::etcd(&args.endpoints)?,
            other => bail!("unknown target {other:?} (expected rangekv or etcd)"),
        };
        let value = Bytes::from(vec![b'x'; args.value_size]);
        if transactional {
            let config = client::Config::default().with_security(args.tls.manager()?);
            let txn = client::TransactionClient::with_config(args.pd.clone(), config).await?;
            if !args.skip_load {
                load_txn(&txn, &args, order, &value).await?;
            }
            let run = Arc::new(Run {
                target,
                workload,
                chooser: KeyChooser::new(distribution, args.records)?,
                order,
                value,
                inserted: AtomicU64::new(args.records),
                recorder: Recorder::new(),
                deadline: Instant::now() + Duration::from_secs(args.duration),
            });
            let conflicts = Arc::new(AtomicU64::new(0));
            let workers = (0..args.concurrency)
                .map(|w| {
                    let (run, txn, conflicts) = (run.clone(), txn.clone(), conflicts.clone());
                    let rng = StdRng::seed_from_u64(args.seed.wrapping_add(w as u64));
                    tokio::spawn(txn_worker(run, txn, rng, conflicts))
                })
                .collect();
            let watcher = start_watch(&args, &run);
            let elapsed = drive(&run, workers).await?;
            let mut extra = json!({ "conflicts": conflicts.load(Ordering::Relaxed) });
            finish_watch(watcher, &mut extra).await?;
            report(&args, &run, distribution, elapsed, extra);
            return Ok(());
        }
        if !args.skip_load {
            load(&target, &args, order, &value).await?;
        }
        let run = Arc::new(Run {
            target,
            workload,
            chooser: KeyChooser::new(distribution, args.records)?,
            order,
            value,
            inserted: AtomicU64::new(args.records),
            recorder: Recorder::new(),
            deadline: Instant::now() + Duration::from_secs(args.duration),
        });
        let workers = (0..args.concurrency)
            .map(|w| {
                let rng = StdRng::seed_from_u64(args.seed.wrapping_add(w as u64));
                tokio::spawn(worker(run.clone(), rng))
            })
            .collect();
        let watcher = start_watch(&args, &run);
        let elapsed = drive(&run, workers).await?;
        let mut extra = json!({});
        finish_watch(watcher, &mut extra).await?;
        report(&args, &run, distribution, elapsed, extra);
        Ok(())
    })
}

/// Starts the region watcher for the run phase when asked for (`--watch-regions`, rangekv).
fn start_watch(args: &BenchArgs, run: &Run) -> Option<tokio::task::JoinHandle<watch::Timeline>> {
    let Target::Rangekv(client) = &run.target else {
        return None;
    };
    if !args.watch_regions {
        return None;
    }
    Some(tokio::spawn(watch::watch(
        client.pd_client().clone(),
        (b"user".to_vec(), workload::KEYS_END.to_vec()),
        Instant::now(),
        run.deadline,
        Duration::from_millis(250),
    )))
}

/// Adds the watcher's findings to the report's extra fields.
async fn finish_watch(
    watcher: Option<tokio::task::JoinHandle<watch::Timeline>>,
    extra: &mut serde_json::Value,
) -> Result<()> {
    if let (Some(w), Some(extra)) = (watcher, extra.as_object_mut()) {
        let timeline = w.await?;
        extra.insert("regions".to_owned(), timeline.to_json());
        extra.insert("regions_summary".to_owned(), json!(timeline.summary()));
    }
    Ok(())
}

/// The load phase: `--records` records in batches of 256, a few batches in flight.
async fn load(target: &Target, args: &BenchArgs, order: InsertOrder, value: &Bytes) -> Result<()> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    let started = Instant::now();
    let batches = (0..args.records).step_by(256).map(|first| {
        let end = (first + 256).min(args.records);
        let pairs = (first..end)
            .map(|i| (workload::record_key(i, order), value.clone()))
            .collect::<Vec<_>>();
        target.load(pairs)
    });
    stream::iter(batches)
        .buffer_unordered(4)
        .try_collect::<Vec<()>>()
        .await?;
    eprintln!(
        "load: {} records into {} in {:.1}s",
        args.records,
        target.name(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn load_txn(
    client: &client::TransactionClient,
    args: &BenchArgs,
    order: InsertOrder,
    value: &Bytes,
) -> Result<()> {
    let started = Instant::now();
    for first in (0..args.records).step_by(256) {
        let mut txn = client.begin_optimistic().await?;
        for i in first..(first + 256).min(args.records) {
            txn.put(workload::record_key(i, order), value.clone())
                .await?;
        }
        txn.commit().await?;
    }
    eprintln!(
        "load: {} records in {:.1}s",
        args.records,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Prints a progress line every second until the deadline, then waits for the workers.
async fn drive(run: &Run, workers: Vec<tokio::task::JoinHandle<()>>) -> Result<Duration> {
    let started = Instant::now();
    let mut last = (started, 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while Instant::now() < run.deadline {
        tick.tick().await;
        let now = Instant::now();
        let (ops, _) = run.recorder.totals();
        eprintln!(
            "{}",
            run.recorder
                .progress_line(now - started, ops - last.1, now - last.0)
        );
        last = (now, ops);
    }
    for w in workers {
        w.await?;
    }
    Ok(started.elapsed())
}

async fn worker(run: Arc<Run>, mut rng: StdRng) {
    let key = |seq| workload::record_key(seq, run.order);
    while Instant::now() < run.deadline {
        let kind = run.workload.choose(&mut rng);
        let started = Instant::now();
        let existing = |rng: &mut StdRng| {
            let inserted = run.inserted.load(Ordering::Relaxed);
            key(run.chooser.next(rng, inserted))
        };
        match kind {
            OpKind::Read => {
                let outcome = run.target.get(existing(&mut rng)).await;
                run.recorder.record(kind, started, &outcome);
            }
            OpKind::Update => {
                let outcome = run.target.put(existing(&mut rng), run.value.clone()).await;
                run.recorder.record(kind, started, &outcome);
            }
            OpKind::Insert => {
                let seq = run.inserted.fetch_add(1, Ordering::Relaxed);
                let outcome = run.target.put(key(seq), run.value.clone()).await;
                run.recorder.record(kind, started, &outcome);
            }
            OpKind::Scan => {
                let len = workload::scan_length(&mut rng);
                let outcome = run.target.scan(existing(&mut rng), len).await;
                run.recorder.record(kind, started, &outcome);
            }
            OpKind::ReadModifyWrite => {
                let k = existing(&mut rng);
                let outcome = match run.target.get(k.clone()).await {
                    Ok(_) => run.target.put(k, run.value.clone()).await,
                    Err(e) => Err(e),
                };
                run.recorder.record(kind, started, &outcome);
            }
            OpKind::Transaction => unreachable!("YCSB workloads have no transactions"),
        }
    }
}

async fn txn_worker(
    run: Arc<Run>,
    client: client::TransactionClient,
    mut rng: StdRng,
    conflicts: Arc<AtomicU64>,
) {
    while Instant::now() < run.deadline {
        let inserted = run.inserted.load(Ordering::Relaxed);
        let a = workload::record_key(run.chooser.next(&mut rng, inserted), run.order);
        let b = workload::record_key(run.chooser.next(&mut rng, inserted), run.order);
        let started = Instant::now();
        let outcome = async {
            let mut txn = client.begin_optimistic().await?;
            txn.get(a.clone()).await?;
            txn.get(b.clone()).await?;
            txn.put(a, run.value.clone()).await?;
            txn.put(b, run.value.clone()).await?;
            txn.commit().await
        }
        .await;
        match outcome {
            Err(e) if e.is_txn_retryable() => {
                conflicts.fetch_add(1, Ordering::Relaxed);
            }
            outcome => run.recorder.record(OpKind::Transaction, started, &outcome),
        }
    }
}

fn report(
    args: &BenchArgs,
    run: &Run,
    distribution: Distribution,
    elapsed: Duration,
    extra: serde_json::Value,
) {
    let (ops, errors) = run.recorder.totals();
    let secs = elapsed.as_secs_f64();
    if args.json {
        let mut out = json!({
            "target": run.target.name(),
            "workload": args.workload.to_ascii_lowercase(),
            "distribution": distribution.name(),
            "insert_order": args.insert_order,
            "records": args.records,
            "concurrency": args.concurrency,
            "value_size": args.value_size,
            "seconds": secs,
            "ops": ops,
            "errors": errors,
            "ops_per_sec": ops as f64 / secs,
            "by_kind": run.recorder.to_json(),
        });
        if let (Some(out), Some(extra)) = (out.as_object_mut(), extra.as_object()) {
            out.extend(extra.clone());
        }
        println!("{out}");
        return;
    }
    println!(
        "run: {} workload {}, {} keys, {} in flight: {ops} ops in {secs:.1}s = {:.0} ops/s, {errors} errors{}",
        run.target.name(),
        args.workload.to_ascii_lowercase(),
        distribution.name(),
        args.concurrency,
        ops as f64 / secs,
        extra
            .get("conflicts")
            .map(|c| format!(", {c} conflicts"))
            .unwrap_or_default()
    );
    print!("{}", run.recorder.table());
    if let Some(summary) = extra.get("regions_summary").and_then(|s| s.as_str()) {
        println!("{summary}");
    }
}
