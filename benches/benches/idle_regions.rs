//! What idle regions cost: an in-process cluster of 3 stores holding `IDLE_REGIONS` regions
//! (default 2,000; every region has a replica on every store) is measured once with
//! hibernation off and once with it on, side by side in one run: CPU over `IDLE_SECONDS`
//! (default 10) once every region has been idle long enough to hibernate, as a share of one
//! core per store, and resident memory per region replica. Each mode runs in a process of its
//! own.
//!
//! Run: `cargo bench -p benches --bench idle_regions` (`IDLE_REGIONS=10000` for more;
//! `IDLE_MODES=on` for hibernation only).

use benches::{env_or, resident_bytes};
use std::time::{Duration, Instant};

use tests::Cluster;

/// CPU seconds this process has used (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux target this project builds for.
    ticks as f64 / 100.0
}

struct Measured {
    cpu_per_store: f64,
    bytes_per_replica: f64,
    awake: usize,
}

fn measure(regions: u64, seconds: u64, hibernate: bool) -> Measured {
    let splits: Vec<Vec<u8>> = (1..regions)
        .map(|i| format!("r{i:08}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = splits.iter().map(|s| s.as_slice()).collect();
    let cfg = raftstore::Config {
        hibernate_regions: hibernate,
        ..Default::default()
    };
    let rss_before = resident_bytes();
    let cluster = Cluster::with_config(3, &refs, cfg.clone());
    for r in &cluster.regions {
        cluster.wait_leader(r.id, Duration::from_secs(300));
    }
    // Idle long enough for every region to hibernate (when it can).
    let settle = cfg.raft_base_tick * (cfg.hibernate_ticks as u32 + 20);
    let deadline = Instant::now() + Duration::from_secs(300);
    std::thread::sleep(settle);
    while hibernate
        && Instant::now() < deadline
        && cluster
            .store_ids()
            .iter()
            .any(|s| cluster.storage(*s).router().awake_regions() > 0)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let awake = cluster
        .store_ids()
        .iter()
        .map(|s| cluster.storage(*s).router().awake_regions())
        .sum();
    let rss = resident_bytes().saturating_sub(rss_before);
    let started = (Instant::now(), cpu_seconds());
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu = cpu_seconds() - started.1;
    let wall = started.0.elapsed().as_secs_f64();
    drop(cluster);
    Measured {
        cpu_per_store: cpu / wall / 3.0,
        bytes_per_replica: rss as f64 / (3 * regions) as f64,
        awake,
    }
}

/// Measures one mode in this process and prints `cpu_per_store bytes_per_replica awake`.
fn child(regions: u64, seconds: u64, hibernate: bool) {
    let m = measure(regions, seconds, hibernate);
    println!("{} {} {}", m.cpu_per_store, m.bytes_per_replica, m.awake);
}

/// Runs one mode in a fresh process (so memory freed by the other mode does not hide what
/// this one takes) and reads its figures.
fn run_mode(hibernate: bool) -> Measured {
    let out = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .arg("--bench")
        .env("IDLE_MODE", if hibernate { "on" } else { "off" })
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run the measuring process");
    assert!(out.status.success(), "the measuring process failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().expect("a result line");
    let v: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse().expect("a number"))
        .collect();
    Measured {
        cpu_per_store: v[0],
        bytes_per_replica: v[1],
        awake: v[2] as usize,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a `cargo test` run of benches only checks it starts.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let regions = env_or("IDLE_REGIONS", 2_000);
    let seconds = env_or("IDLE_SECONDS", 10);
    match std::env::var("IDLE_MODE").as_deref() {
        Ok("on") => return child(regions, seconds, true),
        Ok("off") => return child(regions, seconds, false),
        _ => {}
    }
    // `IDLE_MODES=on` measures hibernation only (at 100,000 regions, ticking every region
    // would take several cores per store and minutes to settle).
    let modes = std::env::var("IDLE_MODES").unwrap_or_else(|_| "off on".to_owned());
    println!("{regions} regions x 3 replicas on 3 in-process stores, idle for {seconds} s");
    let measured: Vec<(&str, Measured)> = [("off", false), ("on", true)]
        .into_iter()
        .filter(|(name, _)| modes.split_whitespace().any(|m| m == *name))
        .map(|(name, hibernate)| (name, run_mode(hibernate)))
        .collect();
    println!("| hibernation | idle CPU per store (share of one core) | awake replicas | resident bytes per replica |");
    println!("|---|---|---|---|");
    for (name, m) in &measured {
        println!(
            "| {name} | {:.1}% | {} | {:.0} |",
            m.cpu_per_store * 100.0,
            m.awake,
            m.bytes_per_replica
        );
    }
    if let [(_, ticking), (_, sleeping)] = measured.as_slice() {
        println!(
            "idle CPU with hibernation: {:.3}x of without",
            sleeping.cpu_per_store / ticking.cpu_per_store.max(1e-9)
        );
    }
}
