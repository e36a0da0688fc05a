//! `rangekv verify`: a Jepsen-style campaign against a local cluster of real processes.
//!
//! One run:
//! 1. starts PD members and stores as child processes (`rangekv::local_cluster`), data and
//!    logs under `<out>/cluster`, and waits until a write goes through;
//! 2. runs the workload (`workload`) from `--concurrency` clients for `--time-limit` seconds
//!    while the nemesis (`nemesis`) injects faults on a schedule drawn from `--seed`, printing
//!    a progress line every few seconds (operations per second, faults so far, errors by kind);
//! 3. stops the clients and the nemesis, heals everything (resumes paused processes, restarts
//!    dead ones), waits until the cluster serves again, and does the final reads;
//! 4. reads the history back from `<out>/history.jsonl`, checks it with the workload's checker
//!    (`checker` crate), writes `<out>/results.json`, and prints the verdict with the anomalies
//!    found.
//!
//! Exit status: 0 only when the history is valid; 1 when an anomaly was found (or the run
//! failed); 2 when the checker could not decide.
//!
//! A hidden `--inject-anomaly` makes the workload record one wrong observation without
//! touching the cluster (a stale read, a lost insert, a duplicate timestamp, a read whose
//! balances do not add up), or, for list-append, run one pair of transactions that is not
//! snapshot-isolated on purpose: the negative controls that show the whole pipeline can fail.
//! One control breaks the cluster instead: `follower-reads` starts the stores with the
//! development-only switch that lets followers answer reads without asking the leader, and
//! the register clients read from every replica (`--replica-read`), so the register checker
//! must find the stale reads the cluster itself made. Another, `no-fsync`, starts the stores
//! with volatile engines (no write-ahead log, no fsync): a kill -9 then loses the
//! acknowledged writes a power cut would lose on a machine that skipped its fsyncs (page-cache
//! loss simulated by keeping the writes in RocksDB's memtables only), so the kill-all nemesis
//! must make the set or register checker find them lost.
//!
//! Caveats (see the README's "Verifying a cluster"): partitions cut nodes from each other, or
//! the clients from one node; membership changes are single replica moves; the seed fixes the
//! nemesis schedule and the clients' choices, not the interleavings.

mod bank;
mod history;
mod list_append;
mod nemesis;
mod operations;
mod partition;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use checker::history::{read_history, CheckResult, Validity};
use rangekv::local_cluster::{LocalCluster, LocalClusterConfig};

use history::Recorder;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Reads, writes and compare-and-swaps on a few keys at a time: per-key linearizability.
    Register,
    /// Unique inserts: every acknowledged one survives, nothing appears from nowhere.
    Set,
    /// Transfers between accounts in transactions, snapshot reads of every balance: the
    /// total never changes, no balance goes negative.
    Bank,
    /// Timestamps from PD: unique, increasing per client and in real time.
    Tso,
    /// Transactions appending to and reading lists (Elle's): no G0, G1a, G1b, G1c or
    /// G-single, as snapshot isolation requires.
    ListAppend,
}

/// Wrong observations the workload can be told to record (negative controls).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InjectAnomaly {
    /// register: one read records a value overwritten before it was called.
    StaleRead,
    /// set: the final read leaves out one acknowledged element.
    LostInsert,
    /// tso: one request records a timestamp received before.
    DuplicateTs,
    /// bank: one read records a balance 1 higher than it read.
    WrongTotal,
    /// list-append: pessimistic transactions read with plain (snapshot) reads next to locking
    /// appends, which is not snapshot isolation (G-single).
    MixedReads,
    /// register: the stores let followers answer reads from their own state without asking
    /// the leader (`RANGEKV_UNSAFE_FOLLOWER_READS`), and clients read from every replica:
    /// stale reads made by the cluster itself, not recorded on purpose.
    FollowerReads,
    /// any workload, with kill-all: the stores skip the write-ahead log and its fsync
    /// (`RANGEKV_UNSAFE_NO_FSYNC`; kill -9 then loses what a power cut loses when fsync is
    /// skipped): acknowledged writes vanish, lost by the cluster itself.
    NoFsync,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[arg(long, value_enum)]
    workload: Workload,
    /// Faults, comma-separated: kill-store, kill-leader-stores, kill-pd, kill-pd-leader,
    /// pause-store, pause-pd-leader, kill-all, split, shuffle-leaders, move-replica,
    /// replace-pd (needs three PD members), partition (needs root and iptables);
    /// `kill` and `pause` name both of their kind, `all` every fault but partition, `none`
    /// none.
    #[arg(long, default_value = "kill,pause")]
    nemesis: String,
    /// How long the workload runs, seconds (the heal and final reads come after).
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Seed of the nemesis schedule and the clients' choices (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Stores (3 replicas per region).
    #[arg(long, default_value_t = 5)]
    stores: usize,
    /// PD members: 1 or 3.
    #[arg(long, default_value_t = 3)]
    pd: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 5)]
    concurrency: u64,
    /// Where the history, the nemesis schedule, the results and the cluster's data and logs
    /// go (must be empty or absent). Default: a new temporary directory, kept and printed.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    progress_secs: u64,
    /// Check the history in this directory (of an earlier run) instead of running.
    #[arg(long, conflicts_with = "out")]
    recheck: Option<PathBuf>,
    /// register: clients send reads to every replica in turn, not only to leaders
    /// (followers serve them after a ReadIndex round with the leader).
    #[arg(long)]
    replica_read: bool,
    /// Negative control: record one wrong observation, or make the cluster misbehave (the
    /// verdict must be invalid).
    #[arg(long, value_enum, hide = true)]
    inject_anomaly: Option<InjectAnomaly>,
}

/// Runs `verify`; returns the exit status.
pub fn run(args: VerifyArgs) -> Result<i32> {
    if let Some(dir) = &args.recheck {
        let result = check(args.workload, dir)?;
        return Ok(print_verdict(&result));
    }
    if args.stores < 3 {
        bail!("--stores must be at least 3 (regions have 3 replicas)");
    }
    if args.pd != 1 && args.pd != 3 {
        bail!("--pd must be 1 or 3");
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be positive");
    }
    let faults = nemesis::parse_faults(&args.nemesis)?;
    let partitions = faults.contains(&nemesis::Fault::Partition);
    if partitions {
        partition::Firewall::available()?;
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let out = match &args.out {
        Some(dir) => {
            if dir.exists() && dir.read_dir()?.next().is_some() {
                bail!("{} is not empty", dir.display());
            }
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => tempfile::Builder::new()
            .prefix("rangekv-verify-")
            .tempdir()?
            .keep(),
    };
    println!(
        "verify: workload {:?}, nemesis [{}], {}s, seed {seed}, {} PD + {} stores, {} clients",
        args.workload,
        faults
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(","),
        args.time_limit,
        args.pd,
        args.stores,
        args.concurrency
    );
    println!(
        "verify: history, nemesis schedule, results and logs in {}",
        out.display()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cluster = start_cluster(&args, &out, &rt, partitions)?;
    let cluster = Arc::new(Mutex::new(cluster));
    let outcome = run_workload(&args, faults, seed, &out, &rt, &cluster);
    {
        let mut c = cluster.lock().expect("cluster lock");
        // Paused nodes would not see the SIGTERM of the shutdown.
        let _ = nemesis::heal_all(&mut c);
        c.shutdown();
    }
    outcome.with_context(|| format!("logs are in {}", out.join("cluster").display()))?;

    let result = check(args.workload, &out)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&result)? + "\n",
    )?;
    println!("verify: history, results and logs in {}", out.display());
    Ok(print_verdict(&result))
}

/// Starts the cluster; with `own_addresses` every node gets its own loopback address, for
/// partitions (two bytes of it drawn at random, so that concurrent runs never share one).
fn start_cluster(
    args: &VerifyArgs,
    out: &Path,
    rt: &tokio::runtime::Runtime,
    own_addresses: bool,
) -> Result<LocalCluster> {
    let data = out.join("cluster");
    std::fs::create_dir_all(&data)?;
    let bin = std::env::current_exe().context("locating the rangekv executable")?;
    let mut cfg = LocalClusterConfig::on_free_ports(bin, data.clone(), args.pd, args.stores)?;
    if own_addresses {
        cfg.node_ips = Some((rand::random_range(1..255), rand::random_range(0..255)));
    }
    cfg.pd_args = vec!["--max-replicas".into(), "3".into()];
    if args.inject_anomaly == Some(InjectAnomaly::FollowerReads) {
        println!("injecting anomaly follower-reads: followers answer reads without the leader");
        for store in 0..args.stores {
            cfg.store_env.push((
                store,
                server::node::UNSAFE_FOLLOWER_READS_ENV.to_owned(),
                "1".to_owned(),
            ));
        }
    }
    // Heartbeats every second and 100 ms Raft ticks: failover within a couple of seconds.
    let mut server_toml = String::from(
        "store_heartbeat_secs = 1\nregion_heartbeat_secs = 1\n[raftstore]\nraft_base_tick_ms = 100\n",
    );
    if args.inject_anomaly == Some(InjectAnomaly::NoFsync) {
        println!("injecting anomaly no-fsync: stores skip the write-ahead log and fsync");
        for store in 0..args.stores {
            cfg.store_env.push((
                store,
                server::node::UNSAFE_NO_FSYNC_ENV.to_owned(),
                "1".to_owned(),
            ));
        }
        // A store that crashed loses its splits too, while PD remembers them: keep one region,
        // so that the loss shows as lost writes rather than as a region nobody serves.
        server_toml.push_str("[split]\nqps_threshold = 0\n");
    }
    let server_config = data.join("server.toml");
    std::fs::write(&server_config, server_toml)?;
    cfg.server_args = vec!["--config".into(), server_config.display().to_string()];
    let started = Instant::now();
    let mut cluster = LocalCluster::start(cfg)?;
    cluster.wait_listening(Duration::from_secs(60))?;
    let endpoints = cluster.pd_endpoints();
    rt.block_on(crate::ctl::wait_cluster_ready(
        &endpoints,
        &security::SecurityManager::plaintext(),
        args.stores,
        Duration::from_secs(90),
    ))?;
    println!(
        "verify: cluster ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(cluster)
}

/// The run proper: clients and nemesis until the time limit, heal, recovery, final reads.
fn run_workload(
    args: &VerifyArgs,
    faults: Vec<nemesis::Fault>,
    seed: u64,
    out: &Path,
    rt: &tokio::runtime::Runtime,
    cluster: &Arc<Mutex<LocalCluster>>,
) -> Result<()> {
    let start = Instant::now();
    let recorder = Arc::new(Recorder::create(out, start)?);
    let endpoints = cluster.lock().expect("cluster lock").pd_endpoints();
    let time_limit = Duration::from_secs(args.time_limit);
    let shared = Arc::new(workload::Shared::new(
        args.workload,
        endpoints.clone(),
        recorder.clone(),
        args.inject_anomaly,
        args.replica_read || args.inject_anomaly == Some(InjectAnomaly::FollowerReads),
        time_limit,
    ));

    if args.workload == Workload::Bank {
        rt.block_on(bank::setup(
            &endpoints,
            Instant::now() + Duration::from_secs(60),
        ))?;
    }
    let (stop_nemesis, stop_rx) = std::sync::mpsc::channel();
    let split_keys: nemesis::SplitKeys = match args.workload {
        Workload::Register => |pick| workload::split_key(Workload::Register, pick),
        Workload::Set => |pick| workload::split_key(Workload::Set, pick),
        Workload::Bank => |pick| workload::split_key(Workload::Bank, pick),
        Workload::Tso => |pick| workload::split_key(Workload::Tso, pick),
        Workload::ListAppend => |pick| workload::split_key(Workload::ListAppend, pick),
    };
    let nemesis = {
        let (cluster, recorder, handle) = (cluster.clone(), recorder.clone(), rt.handle().clone());
        std::thread::Builder::new()
            .name("nemesis".into())
            .spawn(move || {
                nemesis::run(cluster, faults, seed, handle, recorder, split_keys, stop_rx)
            })?
    };
    let clients: Vec<_> = (0..args.concurrency)
        .map(|w| rt.spawn(workload::client(shared.clone(), w, args.concurrency, seed)))
        .collect();
    let progress = rt.spawn(progress(recorder.clone(), args.progress_secs.max(1)));

    // The time limit, then stop everyone: the nemesis heals the fault in progress; clients
    // finish the operation they are in (bounded by their deadlines).
    // Ctrl-C or SIGTERM ends the run early; the heal, final reads and check still happen, so
    // that no process is left behind.
    rt.block_on(async {
        tokio::select! {
            _ = tokio::time::sleep(time_limit) => {}
            _ = crate::shutdown_signal() => println!("verify: interrupted: ending the run early"),
        }
    });
    shared.stop.store(true, Ordering::Relaxed);
    let _ = stop_nemesis.send(());
    let mut client_error = None;
    for c in clients {
        match rt.block_on(c) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => client_error = Some(e),
            Err(e) => client_error = Some(anyhow::anyhow!("a client task failed: {e}")),
        }
    }
    nemesis
        .join()
        .map_err(|_| anyhow::anyhow!("the nemesis thread panicked"))?;
    progress.abort();
    if let Some(e) = client_error {
        return Err(e);
    }
    print_progress(&recorder, start.elapsed(), 0, Duration::ZERO);

    println!("verify: healing: every process resumed and running");
    let healed = Instant::now();
    // PD's members now (a `replace-pd` nemesis may have replaced every one started with).
    let endpoints = {
        let mut c = cluster.lock().expect("cluster lock");
        nemesis::heal_all(&mut c)?;
        c.wait_listening(Duration::from_secs(60))?;
        c.pd_endpoints()
    };
    shared.set_endpoints(endpoints.clone());
    rt.block_on(crate::ctl::wait_cluster_ready(
        &endpoints,
        &security::SecurityManager::plaintext(),
        args.stores,
        Duration::from_secs(90),
    ))?;
    println!(
        "verify: cluster serving again {:.1}s after the heal; final reads",
        healed.elapsed().as_secs_f64()
    );
    let final_process = 1_000_000_000;
    rt.block_on(workload::final_reads(
        &shared,
        final_process,
        Instant::now() + Duration::from_secs(60),
    ))?;
    recorder.flush()
}

/// Prints a progress line every `secs` seconds.
async fn progress(recorder: Arc<Recorder>, secs: u64) {
    let start = Instant::now();
    let mut last = (0u64, Duration::ZERO);
    let mut ticks = tokio::time::interval(Duration::from_secs(secs));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let now = start.elapsed();
        let invoked = recorder.counters.invoked.load(Ordering::Relaxed);
        print_progress(&recorder, now, invoked - last.0, now - last.1);
        // Keep the file current for a long soak; a write error is reported at the end.
        let _ = recorder.flush();
        last = (invoked, now);
    }
}

fn print_progress(recorder: &Recorder, elapsed: Duration, ops: u64, over: Duration) {
    let c = &recorder.counters;
    let rate = if over.is_zero() {
        c.invoked.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64().max(0.001)
    } else {
        ops as f64 / over.as_secs_f64()
    };
    let errors = c.errors.lock().expect("counters");
    let errors: Vec<String> = errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "[{:7.1}s] {} ops ({rate:.0}/s) ok {} fail {} info {} | faults {} | errors: {}",
        elapsed.as_secs_f64(),
        c.invoked.load(Ordering::Relaxed),
        c.ok.load(Ordering::Relaxed),
        c.fail.load(Ordering::Relaxed),
        c.info.load(Ordering::Relaxed),
        c.faults.load(Ordering::Relaxed),
        if errors.is_empty() {
            "none".to_owned()
        } else {
            errors.join(", ")
        }
    );
}

/// Checks the history in `dir` with the workload's checker.
fn check(workload: Workload, dir: &Path) -> Result<CheckResult> {
    let path = dir.join("history.jsonl");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let history = read_history(std::io::BufReader::new(file))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let started = Instant::now();
    let result = match workload {
        Workload::Register => checker::register::check_register_history(
            &history,
            checker::register::DEFAULT_MAX_STATES,
        ),
        Workload::Set => checker::set::check_set(&history),
        Workload::Bank => checker::bank::check_bank(&history, bank::BANK),
        Workload::Tso => checker::tso::check_tso(&history),
        Workload::ListAppend => checker::list_append::check_list_append(&history),
    };
    println!(
        "verify: checked {} events in {:.1}s: {}",
        history.len(),
        started.elapsed().as_secs_f64(),
        serde_json::Value::Object(result.stats.clone())
    );
    Ok(result)
}

/// Prints the verdict and the anomalies; returns the exit status.
fn print_verdict(result: &CheckResult) -> i32 {
    for a in &result.anomalies {
        println!("anomaly {}: {}", a.kind, a.detail);
    }
    for why in &result.undecided {
        println!("undecided: {why}");
    }
    match result.validity {
        Validity::Valid => {
            println!("verdict: valid");
            0
        }
        Validity::Invalid => {
            let mut kinds: Vec<&str> = result.anomalies.iter().map(|a| a.kind.as_str()).collect();
            kinds.dedup();
            println!("verdict: invalid ({})", kinds.join(", "));
            1
        }
        Validity::Unknown => {
            println!("verdict: unknown");
            2
        }
    }
}
