//! The nemesis: faults injected into the cluster's processes on a schedule drawn from the seed.
//!
//! One fault at a time: a quiet period, then a fault chosen among the enabled ones, held for a
//! while, then healed. The schedule (what, on which node, when it started and ended) goes to
//! `nemesis.jsonl`. The same seed draws the same sequence of faults, targets and durations;
//! which leader a fault meets depends on the run.
//!
//! Faults:
//! - `kill-store`: SIGKILL of a random store; healed by restarting it on its data directory.
//! - `kill-pd-leader`: SIGKILL of the PD leader (with one PD member, of that member).
//! - `replace-pd`: a PD member's disk is lost and the member replaced, as an operator does:
//!   SIGKILL of a random member, `member remove` of it through PD's HTTP API (its data
//!   directory is then deleted, the member retired); healed by `member add` of a new member
//!   (the next name, a new port) that joins on an empty data directory, gets PD's state by
//!   snapshot and is promoted to voter. Needs at least three running PD members; the workload's
//!   clients learn the new member from `GetMembers`.
//! - `pause-store`: SIGSTOP of a random store, SIGCONT to heal. Its connections stay open
//!   and silent, as with a long GC pause or a hung disk.
//! - `pause-pd-leader`: SIGSTOP of the PD leader; a deposed leader wakes up believing it leads.
//! - `kill-all`: SIGKILL of every process, then all restart: only what was synced survives.
//! - `split`: splits the region holding a key of the workload's key space at that key
//!   (`SplitRegion` to its leader), so that clients meet stale epochs and operations cross
//!   regions; instantaneous, nothing to heal.
//! - `merge`: asks PD to merge two adjacent regions drawn from the seed (a `merge-region`
//!   operator: the source's leader prepares, the target absorbs it), so that clients meet
//!   merging regions and vanished ones; PD refuses a pair that is not healthy or not on the
//!   same stores (logged as failed); instantaneous.
//! - `shuffle-leaders`: asks the leader of every region to hand its leadership to a random
//!   other replica (its store's `POST /regions/{id}/transfer-leader/{store}`); instantaneous.
//! - `move-replica`: asks PD to move a random region's replica from one store to a store
//!   without one (a `transfer-peer` operator: learner, snapshot, promotion, removal), so that
//!   membership changes and snapshots happen under the workload and the other faults; needs
//!   more stores than replicas; instantaneous (PD carries it out over the next seconds).
//! - `partition`: cuts the network between the nodes (PD members and stores) in a shape drawn
//!   from the seed — halves, one isolated, a majorities ring, a bridge, one-way — or the
//!   clients from one node, with iptables; healed by letting everything through again (see [`super::partition`]). Needs
//!   root and iptables.
//!
//! Names accepted on the command line: the faults above, `kill` (kill-store, kill-pd-leader),
//! `pause` (pause-store, pause-pd-leader), `all` (every fault but `partition`, which needs
//! root), `none`.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rangekv::local_cluster::LocalCluster;
use serde_json::json;

use super::history::Recorder;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    KillStore,
    KillLeaderStores,
    KillPd,
    KillPdLeader,
    PauseStore,
    PausePdLeader,
    KillAll,
    Split,
    Merge,
    ShuffleLeaders,
    MoveReplica,
    ReplacePd,
    Partition,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillStore => "kill-store",
            Fault::KillLeaderStores => "kill-leader-stores",
            Fault::KillPd => "kill-pd",
            Fault::KillPdLeader => "kill-pd-leader",
            Fault::PauseStore => "pause-store",
            Fault::PausePdLeader => "pause-pd-leader",
            Fault::KillAll => "kill-all",
            Fault::Split => "split",
            Fault::Merge => "merge",
            Fault::ShuffleLeaders => "shuffle-leaders",
            Fault::MoveReplica => "move-replica",
            Fault::ReplacePd => "replace-pd",
            Fault::Partition => "partition",
        }
    }
}

/// Parses `kill,pause,...` into the enabled faults, sorted and deduplicated.
pub fn parse_faults(list: &str) -> Result<Vec<Fault>> {
    use Fault::*;
    let mut faults = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name {
            "none" => {}
            "kill" => faults.extend([KillStore, KillLeaderStores, KillPd, KillPdLeader]),
            "pause" => faults.extend([PauseStore, PausePdLeader]),
            "all" => faults.extend([
                KillStore,
                KillLeaderStores,
                KillPd,
                KillPdLeader,
                PauseStore,
                PausePdLeader,
                KillAll,
                Split,
                Merge,
                ShuffleLeaders,
                MoveReplica,
                ReplacePd,
            ]),
            "kill-store" => faults.push(KillStore),
            "kill-leader-stores" => faults.push(KillLeaderStores),
            "kill-pd" => faults.push(KillPd),
            "kill-pd-leader" => faults.push(KillPdLeader),
            "pause-store" => faults.push(PauseStore),
            "pause-pd-leader" => faults.push(PausePdLeader),
            "kill-all" => faults.push(KillAll),
            "split" => faults.push(Split),
            "merge" => faults.push(Merge),
            "shuffle-leaders" => faults.push(ShuffleLeaders),
            "move-replica" => faults.push(MoveReplica),
            "replace-pd" => faults.push(ReplacePd),
            "partition" => faults.push(Partition),
            other => bail!(
                "unknown nemesis {other:?}: use kill-store, kill-leader-stores, kill-pd, \
                 kill-pd-leader, pause-store, \
                 pause-pd-leader, kill-all, split, merge, shuffle-leaders, move-replica, \
                 replace-pd, \
                 partition, \
                 kill, pause, all or none"
            ),
        }
    }
    faults.sort();
    faults.dedup();
    Ok(faults)
}

/// Which node a fault hit, to heal it.
enum Target {
    Store(usize),
    /// Several stores (those leading the most regions).
    Stores(Vec<usize>),
    Pd(usize),
    All,
    /// A split, done once injected.
    Key(String),
    /// A network partition: its shape and sides, for the log.
    Network(String),
}

/// Runs the schedule until `stop` says so (or is dropped), then heals the fault in progress.
/// Where the `split` fault cuts: a key of the workload's key space for a draw, and whether
/// it is transactional.
pub type SplitKeys = fn(usize) -> (Vec<u8>, bool);

#[allow(clippy::too_many_arguments)]
pub fn run(
    cluster: Arc<Mutex<LocalCluster>>,
    faults: Vec<Fault>,
    seed: u64,
    rt: tokio::runtime::Handle,
    recorder: Arc<Recorder>,
    split_keys: SplitKeys,
    stop: Receiver<()>,
) {
    if faults.is_empty() {
        let _ = stop.recv();
        return;
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321);
    // This run's firewall chain, removed when the nemesis ends.
    let firewall = if faults.contains(&Fault::Partition) {
        match super::partition::Firewall::new() {
            Ok(fw) => Some(fw),
            Err(e) => {
                log(
                    &recorder,
                    Fault::Partition,
                    "failed",
                    "",
                    Some(format!("{e:#}")),
                );
                None
            }
        }
    } else {
        None
    };
    // Waits for the given time unless told to stop; true when told to stop.
    let wait = |d: Duration| !matches!(stop.recv_timeout(d), Err(RecvTimeoutError::Timeout));
    loop {
        let quiet = Duration::from_millis(rng.random_range(1000..3000));
        let held = Duration::from_millis(rng.random_range(1000..4000));
        let fault = faults[rng.random_range(0..faults.len())];
        let pick = rng.random_range(0..usize::MAX);
        if wait(quiet) {
            return;
        }
        let target = {
            let mut c = cluster.lock().expect("cluster lock");
            if fault == Fault::Partition {
                partition(&c, firewall.as_ref(), pick, &recorder)
            } else {
                inject(&mut c, fault, pick, &rt, &recorder, split_keys)
            }
        };
        let Some(target) = target else { continue };
        recorder.counters.faults.fetch_add(1, Ordering::Relaxed);
        if let Target::Key(key) = &target {
            log(&recorder, fault, "end", key, None);
            continue;
        }
        let stopping = wait(held);
        if let (Target::Network(name), Some(fw)) = (&target, &firewall) {
            let note = fw.heal().err().map(|e| format!("{e:#}"));
            log(&recorder, fault, "end", name, note);
        } else {
            let mut c = cluster.lock().expect("cluster lock");
            heal(&mut c, fault, &target, &rt, &recorder);
        }
        if stopping {
            return;
        }
    }
}

/// Cuts the network in a shape drawn from `pick`; `None` if it could not.
fn partition(
    c: &LocalCluster,
    firewall: Option<&super::partition::Firewall>,
    pick: usize,
    recorder: &Recorder,
) -> Option<Target> {
    use super::partition::{plan, Shape};
    let fw = firewall?;
    let mut nodes: Vec<(&str, &str)> = c
        .pds
        .iter()
        .chain(c.stores.iter())
        .map(|n| {
            let host = n.addr.rsplit_once(':').map_or(n.addr.as_str(), |(h, _)| h);
            (n.name.as_str(), host)
        })
        .collect();
    let shape = Shape::pick(pick);
    let cut = plan(shape, nodes.len(), pick / 7);
    // Node `n` of the plan: the clients, which connect from 127.0.0.1.
    nodes.push(("clients", "127.0.0.1"));
    let pairs: Vec<(String, String)> = cut
        .iter()
        .map(|&(a, b)| (nodes[a].1.to_owned(), nodes[b].1.to_owned()))
        .collect();
    let shown: Vec<String> = cut
        .iter()
        .map(|&(a, b)| format!("{}>{}", nodes[a].0, nodes[b].0))
        .collect();
    let name = format!("{}: {}", shape.name(), shown.join(" "));
    match fw.cut(&pairs) {
        Ok(()) => {
            log(recorder, Fault::Partition, "start", &name, None);
            Some(Target::Network(name))
        }
        Err(e) => {
            let _ = fw.heal();
            log(
                recorder,
                Fault::Partition,
                "failed",
                &name,
                Some(format!("{e:#}")),
            );
            None
        }
    }
}

fn log(recorder: &Recorder, fault: Fault, phase: &str, target: &str, note: Option<String>) {
    let mut entry = serde_json::Map::new();
    entry.insert("fault".into(), json!(fault.name()));
    entry.insert("phase".into(), json!(phase));
    entry.insert("target".into(), json!(target));
    if let Some(note) = note {
        entry.insert("note".into(), json!(note));
    }
    recorder.nemesis(entry);
}

/// Injects `fault`; `None` if it could not (no PD leader known right now, say).
fn inject(
    c: &mut LocalCluster,
    fault: Fault,
    pick: usize,
    rt: &tokio::runtime::Handle,
    recorder: &Recorder,
    split_keys: SplitKeys,
) -> Option<Target> {
    let store = pick % c.stores.len();
    if fault == Fault::ShuffleLeaders {
        let endpoints = c.pd_endpoints();
        let shuffle = async move {
            let n = super::operations::shuffle_leaders(endpoints, pick).await?;
            Ok(Some(format!("{n} transfers asked")))
        };
        return instant(recorder, fault, "regions".into(), rt, shuffle);
    }
    if fault == Fault::MoveReplica {
        let endpoints = c.pd_endpoints();
        let work = async move {
            super::operations::move_replica(endpoints, pick)
                .await
                .map(Some)
        };
        return instant(recorder, fault, "regions".into(), rt, work);
    }
    if fault == Fault::Merge {
        let endpoints = c.pd_endpoints();
        let work = async move {
            super::operations::merge_regions(endpoints, pick)
                .await
                .map(Some)
        };
        return instant(recorder, fault, "regions".into(), rt, work);
    }
    if fault == Fault::Split {
        let (key, txn) = split_keys(pick);
        let name = String::from_utf8_lossy(&key).into_owned();
        let endpoints = c.pd_endpoints();
        let split = async move {
            let pd = pd_client::PdClient::connect(endpoints).await?;
            crate::ctl::split_region(&pd, &key, txn).await?;
            Ok(None)
        };
        return instant(recorder, fault, name, rt, split);
    }
    if fault == Fault::ReplacePd {
        return remove_pd_member(c, pick, rt, recorder);
    }
    let (target, result) = match fault {
        Fault::KillStore => (Target::Store(store), c.kill_store(store)),
        Fault::KillLeaderStores => {
            let victims = match leader_stores(c, rt) {
                Ok(v) if !v.is_empty() => v,
                Ok(_) => {
                    log(
                        recorder,
                        fault,
                        "skipped",
                        "",
                        Some("no leader known".into()),
                    );
                    return None;
                }
                Err(e) => {
                    log(recorder, fault, "skipped", "", Some(format!("{e:#}")));
                    return None;
                }
            };
            let mut result = Ok(());
            for &i in &victims {
                result = result.and(c.kill_store(i));
            }
            (Target::Stores(victims), result)
        }
        Fault::KillPd => {
            let member = pick % c.pds.len();
            (Target::Pd(member), c.kill_pd(member))
        }
        Fault::PauseStore => (
            Target::Store(store),
            signal(c.stores[store].pid(), Signal::SIGSTOP),
        ),
        Fault::KillPdLeader | Fault::PausePdLeader => {
            let leader = match pd_leader(c, rt) {
                Ok(i) => i,
                Err(e) => {
                    log(recorder, fault, "skipped", "", Some(format!("{e:#}")));
                    return None;
                }
            };
            let result = if fault == Fault::KillPdLeader {
                c.kill_pd(leader)
            } else {
                signal(c.pds[leader].pid(), Signal::SIGSTOP)
            };
            (Target::Pd(leader), result)
        }
        Fault::Split
        | Fault::Merge
        | Fault::ShuffleLeaders
        | Fault::MoveReplica
        | Fault::ReplacePd
        | Fault::Partition => {
            unreachable!("handled above or by the caller")
        }
        Fault::KillAll => {
            let mut result = Ok(());
            for i in 0..c.stores.len() {
                result = result.and(c.kill_store(i));
            }
            for i in 0..c.pds.len() {
                result = result.and(c.kill_pd(i));
            }
            (Target::All, result)
        }
    };
    let name = target_name(c, &target);
    match result {
        Ok(()) => {
            log(recorder, fault, "start", &name, None);
            Some(target)
        }
        Err(e) => {
            log(recorder, fault, "failed", &name, Some(format!("{e:#}")));
            // Whatever happened, heal it.
            heal(c, fault, &target, rt, recorder);
            None
        }
    }
}

fn heal(
    c: &mut LocalCluster,
    fault: Fault,
    target: &Target,
    rt: &tokio::runtime::Handle,
    recorder: &Recorder,
) {
    let result = match (fault, target) {
        (Fault::PauseStore, Target::Store(i)) => {
            signal(c.stores[*i].pid(), Signal::SIGCONT).map(|()| String::new())
        }
        (Fault::PausePdLeader, Target::Pd(i)) => {
            signal(c.pds[*i].pid(), Signal::SIGCONT).map(|()| String::new())
        }
        (Fault::ReplacePd, Target::Pd(_)) => add_pd_member(c, rt).and_then(|name| {
            heal_all(c)?;
            Ok(name)
        }),
        _ => heal_all(c).map(|()| String::new()),
    };
    let note = match result {
        Ok(note) if note.is_empty() => None,
        Ok(note) => Some(note),
        Err(e) => Some(format!("{e:#}")),
    };
    log(recorder, fault, "end", &target_name(c, target), note);
}

/// How long a membership change through PD's HTTP API is retried (PD may be electing).
const MEMBER_CHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Sends a membership change to PD's leader until it is done or [`MEMBER_CHANGE_TIMEOUT`].
fn change_members(
    endpoints: Vec<String>,
    method: reqwest::Method,
    path: String,
    body: Option<serde_json::Value>,
    rt: &tokio::runtime::Handle,
) -> Result<()> {
    rt.block_on(async move {
        let plaintext = security::SecurityManager::plaintext();
        let deadline = tokio::time::Instant::now() + MEMBER_CHANGE_TIMEOUT;
        loop {
            let sent =
                crate::ctl::pd_http(&endpoints, &plaintext, method.clone(), &path, body.clone())
                    .await;
            match sent {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    })
}

/// `replace-pd`, first half: kills a running PD member, removes it from the group and retires
/// it (its data directory goes). If PD does not remove it, the member is restarted on its data.
fn remove_pd_member(
    c: &mut LocalCluster,
    pick: usize,
    rt: &tokio::runtime::Handle,
    recorder: &Recorder,
) -> Option<Target> {
    let fault = Fault::ReplacePd;
    let active: Vec<usize> = (0..c.pds.len())
        .filter(|&i| !c.is_retired_pd(i) && c.pds[i].is_running())
        .collect();
    if active.len() < 3 {
        let note = format!("{} running PD members; needs three", active.len());
        log(recorder, fault, "skipped", "", Some(note));
        return None;
    }
    let victim = active[pick % active.len()];
    let name = c.pds[victim].name.clone();
    if let Err(e) = c.kill_pd(victim) {
        log(recorder, fault, "failed", &name, Some(format!("{e:#}")));
        let _ = heal_all(c);
        return None;
    }
    let others: Vec<String> = active
        .iter()
        .filter(|&&i| i != victim)
        .map(|&i| c.pds[i].addr.clone())
        .collect();
    let removed = change_members(
        others,
        reqwest::Method::DELETE,
        format!("members/name/{name}"),
        None,
        rt,
    );
    if let Err(e) = removed.and_then(|()| c.retire_pd(victim)) {
        log(recorder, fault, "failed", &name, Some(format!("{e:#}")));
        let _ = heal_all(c);
        return None;
    }
    log(recorder, fault, "start", &name, Some("removed".into()));
    Some(Target::Pd(victim))
}

/// `replace-pd`, second half: adds a new member and starts it; its name, for the log.
fn add_pd_member(c: &mut LocalCluster, rt: &tokio::runtime::Handle) -> Result<String> {
    let addr = c.free_pd_addr()?;
    let endpoints = c.pd_endpoints();
    let i = c.add_pd(addr.clone());
    let name = c.pds[i].name.clone();
    let body = json!({"name": name, "url": format!("http://{addr}")});
    if let Err(e) = change_members(
        endpoints,
        reqwest::Method::POST,
        "members".into(),
        Some(body),
        rt,
    ) {
        // Never added: never to be started.
        let _ = c.retire_pd(i);
        return Err(e);
    }
    c.start_pd(i)?;
    Ok(format!("replaced by {name} at {addr}"))
}

/// The stores (indexes into the cluster's) that lead the most regions, as PD knows them: a
/// minority of the stores, so that most regions keep a majority while they are down.
fn leader_stores(c: &LocalCluster, rt: &tokio::runtime::Handle) -> Result<Vec<usize>> {
    let endpoints = c.pd_endpoints();
    let (regions, stores) = rt.block_on(async move {
        tokio::time::timeout(Duration::from_secs(10), async move {
            let pd = pd_client::PdClient::connect(endpoints).await?;
            let regions = pd.scan_regions(b"", b"", 10_000).await?;
            let stores = pd.get_all_stores(true).await?;
            anyhow::Ok((regions, stores))
        })
        .await
        .map_err(|_| anyhow::anyhow!("PD did not answer within 10s"))?
    })?;
    let mut led: std::collections::BTreeMap<usize, usize> = Default::default();
    for leader in regions.iter().filter_map(|r| r.leader.as_ref()) {
        let Some(store) = stores.iter().find(|s| s.id == leader.store_id) else {
            continue;
        };
        if let Some(i) = c.stores.iter().position(|n| n.addr == store.address) {
            *led.entry(i).or_default() += 1;
        }
    }
    let mut by_count: Vec<(usize, usize)> = led.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let minority = (c.stores.len() - 1) / 2;
    Ok(by_count
        .into_iter()
        .take(minority.max(1))
        .map(|(i, _)| i)
        .collect())
}

/// Resumes every paused process and starts every one that is not running.
pub fn heal_all(c: &mut LocalCluster) -> Result<()> {
    for node in c.pds.iter().chain(c.stores.iter()) {
        signal(node.pid(), Signal::SIGCONT)?;
    }
    for i in 0..c.pds.len() {
        if !c.pds[i].is_running() && !c.is_retired_pd(i) {
            c.start_pd(i)?;
        }
    }
    for i in 0..c.stores.len() {
        if !c.stores[i].is_running() {
            c.start_store(i)?;
        }
    }
    Ok(())
}

fn target_name(c: &LocalCluster, target: &Target) -> String {
    match target {
        Target::Store(i) => c.stores[*i].name.clone(),
        Target::Stores(is) => is
            .iter()
            .map(|i| c.stores[*i].name.as_str())
            .collect::<Vec<_>>()
            .join(","),
        Target::Pd(i) => c.pds[*i].name.clone(),
        Target::All => "all".to_owned(),
        Target::Key(key) | Target::Network(key) => key.clone(),
    }
}

fn signal(pid: Option<u32>, sig: Signal) -> Result<()> {
    if let Some(pid) = pid {
        kill(Pid::from_raw(pid as i32), sig)?;
    }
    Ok(())
}

/// Runs an instantaneous fault (`work`, within 20 s) and logs its start, with the note `work`
/// answers, or its failure; the target to log its end with, if it happened.
fn instant(
    recorder: &Recorder,
    fault: Fault,
    name: String,
    rt: &tokio::runtime::Handle,
    work: impl std::future::Future<Output = Result<Option<String>>>,
) -> Option<Target> {
    // The timer is made inside the runtime (this is the nemesis' own thread).
    match rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), work).await }) {
        Ok(Ok(note)) => {
            log(recorder, fault, "start", &name, note);
            Some(Target::Key(name))
        }
        Ok(Err(e)) => {
            log(recorder, fault, "failed", &name, Some(format!("{e:#}")));
            None
        }
        Err(_) => {
            log(
                recorder,
                fault,
                "failed",
                &name,
                Some("no answer within 20s".into()),
            );
            None
        }
    }
}

/// The index of the PD leader, as the running members see it.
fn pd_leader(c: &LocalCluster, rt: &tokio::runtime::Handle) -> Result<usize> {
    if c.pds.len() == 1 {
        return Ok(0);
    }
    let endpoints: Vec<String> = c
        .pds
        .iter()
        .filter(|n| n.pid().is_some())
        .map(|n| n.addr.clone())
        .collect();
    let name = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            let pd = pd_client::PdClient::connect(endpoints).await?;
            let members = pd.get_members().await?;
            anyhow::Ok(members.leader.map(|l| l.name))
        })
        .await
    });
    match name {
        Ok(Ok(Some(name))) => c
            .pds
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| anyhow::anyhow!("PD leader {name} is not one of ours")),
        Ok(Ok(None)) => bail!("PD has no leader right now"),
        Ok(Err(e)) => Err(e.context("asking PD for its leader")),
        Err(_) => bail!("PD did not name its leader within 5s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_names_and_groups() {
        assert_eq!(
            parse_faults("kill,pause-store,kill").unwrap(),
            [
                Fault::KillStore,
                Fault::KillLeaderStores,
                Fault::KillPd,
                Fault::KillPdLeader,
                Fault::PauseStore
            ]
        );
        assert_eq!(
            parse_faults("kill-pd,kill-leader-stores").unwrap(),
            [Fault::KillLeaderStores, Fault::KillPd]
        );
        assert!(parse_faults("none").unwrap().is_empty());
        assert_eq!(parse_faults("all").unwrap().len(), 12);
        assert_eq!(parse_faults("merge").unwrap(), [Fault::Merge]);
        assert!(parse_faults("all").unwrap().contains(&Fault::ReplacePd));
        assert_eq!(parse_faults("replace-pd").unwrap(), [Fault::ReplacePd]);
        assert_eq!(
            parse_faults("shuffle-leaders").unwrap(),
            [Fault::ShuffleLeaders]
        );
        assert_eq!(parse_faults("split").unwrap(), [Fault::Split]);
        assert_eq!(parse_faults("move-replica").unwrap(), [Fault::MoveReplica]);
        assert_eq!(parse_faults("partition").unwrap(), [Fault::Partition]);
        assert!(
            !parse_faults("all").unwrap().contains(&Fault::Partition),
            "all leaves out what needs root"
        );
        assert!(parse_faults("partitions").is_err());
    }
}
