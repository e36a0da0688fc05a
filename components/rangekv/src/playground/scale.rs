//! Growing and shrinking a running playground: `rangekv playground scale-out` / `scale-in`.
//!
//! A running playground keeps two things in its data directory: `playground.json` (how to
//! reach it: PD endpoints and TLS certificates) and `control.sock`, a Unix socket on which it
//! takes one command a connection (`add-stores N`, `stop-store ADDR`, and for PD members
//! `add-pd`, `start-pd NAME`, `retire-pd NAME`) and answers with one JSON line. It also records its data directory in `<tmp>/rangekv-playground.current`, so the scale
//! commands find the newest playground without `--data-dir`.
//!
//! - `scale-out --stores N`: the playground starts N more stores (its own children, stopped
//!   with it); the command then follows PD moving replicas onto them, one line a second (regions
//!   and leaders per store, operators in flight), until the counts settle.
//! - `scale-in --store ID`: asks PD to remove the store (Offline: PD moves its replicas away),
//!   follows the drain to Tombstone, then has the playground stop the store's process.
//! - `scale-out --pd N` / `scale-in --pd NAME`: PD members join or leave PD's Raft group (see
//!   [`super::pd_scale`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use proto::metapb::StoreState;
use rangekv::local_cluster::LocalCluster;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How to reach a running playground (`<data dir>/playground.json`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Handle {
    pub pd: Vec<String>,
    /// `[ca, cert, key]` when the playground runs with TLS.
    pub tls: Option<[PathBuf; 3]>,
}

pub(super) const HANDLE_FILE: &str = "playground.json";
/// Seconds without a change after which a scale-out counts as settled though not balanced
/// (longer than PD's region heartbeat interval in a playground).
const SETTLED_AFTER_QUIET_SECS: u32 = 30;
const SOCKET_FILE: &str = "control.sock";

fn current_file() -> PathBuf {
    std::env::temp_dir().join("rangekv-playground.current")
}

#[derive(clap::Subcommand)]
pub enum ScaleCmd {
    /// Add stores to a running playground and follow PD spreading replicas onto them.
    ScaleOut {
        /// How many stores to add (default 1, or 0 with `--pd`).
        #[arg(long)]
        stores: Option<usize>,
        /// How many PD members to add: each joins PD's group as a learner and votes once it
        /// caught up.
        #[arg(long, default_value_t = 0)]
        pd: usize,
        /// The playground's data directory (default: the newest running playground's).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Stop following after this many seconds.
        #[arg(long, default_value_t = 120)]
        wait_secs: u64,
    },
    /// Remove a store from a running playground: PD drains it, then its process stops. Or
    /// remove a PD member (`--pd`): it leaves PD's group, its process stops, its data goes.
    ScaleIn {
        /// The store's id (`rangekv ctl store list`).
        #[arg(long, required_unless_present = "pd", conflicts_with = "pd")]
        store: Option<u64>,
        /// The PD member's name (`rangekv ctl member list`).
        #[arg(long)]
        pd: Option<String>,
        /// The playground's data directory (default: the newest running playground's).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        wait_secs: u64,
    },
}

/// Serves the control socket of a running playground (until the runtime stops) and records
/// how to reach it.
pub fn serve(
    rt: &tokio::runtime::Runtime,
    data_dir: &Path,
    handle: &Handle,
    cluster: Arc<Mutex<LocalCluster>>,
) -> Result<()> {
    std::fs::write(
        data_dir.join(HANDLE_FILE),
        serde_json::to_vec_pretty(handle)?,
    )?;
    let socket = data_dir.join(SOCKET_FILE);
    let _ = std::fs::remove_file(&socket);
    let listener = {
        let _guard = rt.enter();
        tokio::net::UnixListener::bind(&socket)
            .with_context(|| format!("binding {}", socket.display()))?
    };
    std::fs::write(current_file(), data_dir.display().to_string())?;
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let cluster = cluster.clone();
            tokio::task::spawn_blocking(move || {
                let Ok(stream) = stream.into_std() else {
                    return;
                };
                let _ = stream.set_nonblocking(false);
                let _ = answer(stream, &cluster);
            });
        }
    });
    Ok(())
}

/// Forgets this playground as the current one (on exit).
pub fn retire(data_dir: &Path) {
    let current = std::fs::read_to_string(current_file()).unwrap_or_default();
    if Path::new(current.trim()) == data_dir {
        let _ = std::fs::remove_file(current_file());
    }
    let _ = std::fs::remove_file(data_dir.join(SOCKET_FILE));
}

/// Reads one command from `stream` and writes one JSON line back.
fn answer(stream: UnixStream, cluster: &Mutex<LocalCluster>) -> Result<()> {
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let reply = match run_command(line.trim(), cluster) {
        Ok(v) => v,
        Err(e) => json!({ "error": format!("{e:#}") }),
    };
    let mut stream = stream;
    writeln!(stream, "{reply}")?;
    Ok(())
}

fn run_command(line: &str, cluster: &Mutex<LocalCluster>) -> Result<serde_json::Value> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("add-stores"), Some(n)) => {
            let n: usize = n.parse().context("add-stores takes a count")?;
            if n == 0 || n > 16 {
                bail!("add 1 to 16 stores at a time");
            }
            let mut c = cluster.lock().expect("cluster lock");
            let mut added = Vec::new();
            for _ in 0..n {
                let i = c.add_store()?;
                let node = &c.stores[i];
                added.push(json!({
                    "name": node.name,
                    "addr": node.addr,
                    "status": c.status_addr(i),
                    "pid": node.pid(),
                    "log": node.log_path().display().to_string(),
                }));
            }
            c.wait_listening(Duration::from_secs(60))?;
            Ok(json!({ "added": added }))
        }
        (Some("add-pd"), None) => {
            let mut c = cluster.lock().expect("cluster lock");
            let addr = c.free_pd_addr()?;
            let i = c.add_pd(addr);
            let node = &c.pds[i];
            Ok(json!({
                "name": node.name,
                "addr": node.addr,
                "log": node.log_path().display().to_string(),
            }))
        }
        (Some(verb @ ("start-pd" | "retire-pd")), Some(name)) => {
            let mut c = cluster.lock().expect("cluster lock");
            let i = c
                .pds
                .iter()
                .position(|n| n.name == name)
                .with_context(|| format!("no PD member {name} in this playground"))?;
            if verb == "start-pd" {
                c.start_pd(i)?;
                c.wait_listening(Duration::from_secs(60))?;
            } else {
                c.retire_pd(i)?;
            }
            // Whoever reads the handle next reaches PD through the members it has now.
            let file = c.config().data_dir.join(HANDLE_FILE);
            let mut handle: Handle = serde_json::from_slice(&std::fs::read(&file)?)?;
            handle.pd = c.pd_endpoints();
            std::fs::write(&file, serde_json::to_vec_pretty(&handle)?)?;
            Ok(json!({ "done": verb, "name": name, "pid": c.pds[i].pid() }))
        }
        (Some("stop-store"), Some(addr)) => {
            let mut c = cluster.lock().expect("cluster lock");
            let i = c
                .stores
                .iter()
                .position(|n| n.addr == addr)
                .with_context(|| format!("no store of this playground at {addr}"))?;
            c.stop_store(i)?;
            Ok(json!({ "stopped": addr }))
        }
        _ => bail!("unknown command {line:?}"),
    }
}

/// Sends one command to the playground in `data_dir` and returns its answer.
pub(super) fn send(data_dir: &Path, command: &str) -> Result<serde_json::Value> {
    let socket = data_dir.join(SOCKET_FILE);
    let mut stream = UnixStream::connect(&socket).with_context(|| {
        format!(
            "no running playground answers at {} (is it running?)",
            socket.display()
        )
    })?;
    writeln!(stream, "{command}")?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(&line).context("the playground's answer")?;
    if let Some(e) = v.get("error") {
        bail!("the playground refused: {}", e.as_str().unwrap_or_default());
    }
    Ok(v)
}

pub(super) fn locate(data_dir: Option<PathBuf>) -> Result<PathBuf> {
    match data_dir {
        Some(d) => Ok(d),
        None => {
            let current = std::fs::read_to_string(current_file())
                .context("no running playground found: start one, or pass --data-dir")?;
            Ok(PathBuf::from(current.trim()))
        }
    }
}

pub(super) struct Target {
    pub(super) pd: pd_client::PdClient,
    pub(super) endpoints: Vec<String>,
    pub(super) security: security::SecurityManager,
}

pub(super) async fn connect(data_dir: &Path) -> Result<Target> {
    let text = std::fs::read_to_string(data_dir.join(HANDLE_FILE))
        .with_context(|| format!("no playground in {}", data_dir.display()))?;
    let handle: Handle = serde_json::from_str(&text)?;
    let security = match &handle.tls {
        None => security::SecurityManager::plaintext(),
        Some([ca, cert, key]) => security::SecurityManager::new(security::SecurityConfig {
            ca_path: ca.clone(),
            cert_path: cert.clone(),
            key_path: key.clone(),
            cert_allowed_cn: Vec::new(),
        })?,
    };
    let pd = crate::ctl::connect_pd(&handle.pd, &security).await?;
    Ok(Target {
        pd,
        endpoints: handle.pd,
        security,
    })
}

/// Per store: `(address, state, regions, leaders)`; and the operators PD has in flight.
struct Placement {
    stores: BTreeMap<u64, (String, StoreState, usize, usize)>,
    operators: usize,
}

async fn placement(t: &Target) -> Result<Placement> {
    let mut stores = BTreeMap::new();
    for s in t.pd.get_all_stores(false).await? {
        stores.insert(s.id, (s.address.clone(), s.state(), 0, 0));
    }
    for r in t.pd.scan_regions(b"", b"", 100_000).await? {
        for p in &r.region.peers {
            if let Some(e) = stores.get_mut(&p.store_id) {
                e.2 += 1;
            }
        }
        if let Some(e) = r.leader.and_then(|l| stores.get_mut(&l.store_id)) {
            e.3 += 1;
        }
    }
    let operators = crate::ctl::pd_operators(&t.endpoints, &t.security)
        .await
        .map(|ops| ops.len())
        .unwrap_or(0);
    Ok(Placement { stores, operators })
}

fn line(p: &Placement, started: Instant) -> String {
    let stores: Vec<String> = p
        .stores
        .iter()
        .filter(|(_, s)| s.1 != StoreState::Tombstone)
        .map(|(id, (_, state, regions, leaders))| {
            let mark = if *state == StoreState::Offline {
                " offline"
            } else {
                ""
            };
            format!("store {id}{mark}: {regions} regions, {leaders} leaders")
        })
        .collect();
    format!(
        "[{:>4.0}s] {} | {} operators in flight",
        started.elapsed().as_secs_f64(),
        stores.join(" | "),
        p.operators
    )
}

/// Prints the placement's line if its counts differ from `last` (then remembered); whether
/// they did.
fn print_if_changed(p: &Placement, started: Instant, last: &mut String) -> bool {
    let now = line(p, started);
    let counts = now.split_once(']').map_or("", |(_, c)| c);
    if counts == last.as_str() {
        return false;
    }
    *last = counts.to_owned();
    println!("{now}");
    true
}

/// Runs a scale command against a running playground.
pub fn run(cmd: ScaleCmd) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    match cmd {
        ScaleCmd::ScaleOut {
            stores,
            pd,
            data_dir,
            wait_secs,
        } => {
            let dir = locate(data_dir)?;
            let t = rt.block_on(connect(&dir))?;
            let wait = Duration::from_secs(wait_secs);
            if pd > 0 {
                rt.block_on(super::pd_scale::scale_out(&dir, &t, pd, wait))?;
            }
            let stores = stores.unwrap_or(if pd > 0 { 0 } else { 1 });
            if stores == 0 {
                return Ok(());
            }
            let before = rt.block_on(placement(&t))?.stores.len();
            let answer = send(&dir, &format!("add-stores {stores}"))?;
            for s in answer["added"].as_array().into_iter().flatten() {
                println!(
                    "started {} at {} (status {}, pid {}, log {})",
                    s["name"].as_str().unwrap_or_default(),
                    s["addr"].as_str().unwrap_or_default(),
                    s["status"].as_str().unwrap_or("-"),
                    s["pid"],
                    s["log"].as_str().unwrap_or_default()
                );
            }
            let expected = before + answer["added"].as_array().map_or(0, Vec::len);
            rt.block_on(follow_scale_out(
                &t,
                expected,
                Duration::from_secs(wait_secs),
            ))
        }
        ScaleCmd::ScaleIn {
            store,
            pd,
            data_dir,
            wait_secs,
        } => {
            let dir = locate(data_dir)?;
            let t = rt.block_on(connect(&dir))?;
            let Some(store) = store else {
                let name = pd.expect("clap requires --store or --pd");
                return rt.block_on(super::pd_scale::scale_in(&dir, &t, &name));
            };
            let addr = rt.block_on(t.pd.get_store(store))?.address;
            rt.block_on(crate::ctl::pd_http(
                &t.endpoints,
                &t.security,
                reqwest::Method::DELETE,
                &format!("store/{store}"),
                None,
            ))
            .with_context(|| format!("removing store {store}"))?;
            println!("store {store} ({addr}) is Offline: PD moves its replicas away");
            rt.block_on(follow_scale_in(&t, store, Duration::from_secs(wait_secs)))?;
            send(&dir, &format!("stop-store {addr}"))?;
            println!("store {store} is a Tombstone; its process at {addr} stopped");
            Ok(())
        }
    }
}

/// Prints the placement each second until `stores` stores registered, no operator is in
/// flight and the counts stayed the same for a few seconds.
async fn follow_scale_out(t: &Target, stores: usize, wait: Duration) -> Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    let mut stable = 0;
    while started.elapsed() < wait {
        let p = placement(t).await?;
        if print_if_changed(&p, started, &mut last) {
            stable = 0;
        } else {
            stable += 1;
        }
        let registered = p.stores.len() >= stores;
        let counts: Vec<usize> = p
            .stores
            .values()
            .filter(|s| s.1 == StoreState::Up)
            .map(|s| s.2)
            .collect();
        let (min, max) = (
            counts.iter().min().copied().unwrap_or(0),
            counts.iter().max().copied().unwrap_or(0),
        );
        // PD's default balance threshold (2) leaves stores at most one replica apart; with
        // another threshold the counts settle elsewhere, so a long quiet spell ends it too.
        if registered && p.operators == 0 && stable >= 3 && max - min <= 1 {
            println!("balanced: replicas per store differ by at most one");
            return Ok(());
        }
        if registered && p.operators == 0 && stable >= SETTLED_AFTER_QUIET_SECS {
            println!("settled: PD has moved nothing for {SETTLED_AFTER_QUIET_SECS}s");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("still moving after {wait:?}: {last}")
}

/// Prints the placement each second until store `id` is a Tombstone.
async fn follow_scale_in(t: &Target, id: u64, wait: Duration) -> Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < wait {
        let p = placement(t).await?;
        print_if_changed(&p, started, &mut last);
        if p.stores
            .get(&id)
            .is_some_and(|s| s.1 == StoreState::Tombstone)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("store {id} not drained after {wait:?}: {last}")
}
