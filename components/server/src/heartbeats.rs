//! The store's heartbeats to PD: store statistics every `store_heartbeat_secs`, and the
//! regions it leads — one at once when the raftstore reports a leadership or shape change (or
//! a hot region's load), all of them after a PD leader change and every
//! `region_heartbeat_secs` — with their flows, sizes and down replicas.
//!
//! Not here: what PD answers on the heartbeat stream (`crate::replica`, leader transfers in
//! `node`), nor how sizes and flows are measured (`split_checker`, `load_split`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pd_client::{PdClient, RegionStat};
use raftstore::StoreRouter;
use tokio::sync::watch;
use tracing::{info, warn};

pub(crate) fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) async fn store_heartbeats(
    pd: PdClient,
    router: StoreRouter,
    health: crate::status::Health,
    store_id: u64,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let start_time = unix_secs() as u32;
    loop {
        let stats = proto::pdpb::StoreStats {
            store_id,
            region_count: router.region_ids().len() as u32,
            start_time,
            ..Default::default()
        };
        let sent = pd.store_heartbeat(stats).await;
        health.set_pd_reachable(sent.is_ok());
        if let Err(e) = sent {
            warn!(%e, "store heartbeat failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
    }
}

/// Reports the regions this store leads to PD: a region at once when the raftstore says its
/// leadership or shape changed, every region when PD's leader changed (region leaders are soft
/// state a new PD leader lacks), and every region every `every` otherwise. Idle regions cost
/// nothing between the periodic sweeps.
pub(crate) async fn region_heartbeats(
    pd: PdClient,
    router: StoreRouter,
    reports: Reports,
    every: Duration,
    mut changes: futures::channel::mpsc::UnboundedReceiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    use futures::StreamExt;

    let mut pd_leader = pd.leader_url();
    let mut last_sweep: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(every));
    loop {
        let mut regions = Vec::new();
        tokio::select! {
            Some(id) = changes.next() => {
                regions.push(id);
                while let Ok(id) = changes.try_recv() {
                    regions.push(id);
                }
            }
            _ = tick.tick() => {
                let now_leader = pd.leader_url();
                if now_leader != pd_leader {
                    info!(pd_leader = %now_leader, "PD leader changed, re-reporting region leaders");
                    pd_leader = now_leader;
                    last_sweep = None;
                }
                if last_sweep.is_none_or(|t| t.elapsed() >= every) {
                    regions = router.region_ids();
                    last_sweep = Some(Instant::now());
                    // Flows of replicas that are gone are never reported.
                    reports.load.retain_flows(|id| regions.binary_search(&id).is_ok());
                    // Nor are replicas of regions another store leads now.
                    if let Some(before) = Instant::now().checked_sub(every * 2) {
                        reports.down.forget_older(before);
                    }
                }
            }
            _ = shutdown.wait_for(|v| *v) => return,
        }
        regions.sort_unstable();
        regions.dedup();
        for region_id in regions {
            heartbeat_if_leader(&pd, &router, &reports, region_id).await;
        }
    }
}

/// What a region heartbeat reports besides the region's own state: its flow since the last
/// report, its last measured size and its down replicas.
pub(crate) struct Reports {
    pub(crate) load: Arc<crate::load_split::LoadRecorder>,
    pub(crate) sizes: Arc<crate::split_checker::RegionSizes>,
    pub(crate) down: crate::down_peers::DownPeers,
}

async fn heartbeat_if_leader(
    pd: &PdClient,
    router: &StoreRouter,
    reports: &Reports,
    region_id: u64,
) {
    let Ok(Ok(status)) =
        tokio::time::timeout(Duration::from_secs(2), router.peer_status(region_id)).await
    else {
        return;
    };
    let (Some(leader), true) = (status.leader, status.is_leader) else {
        return;
    };
    let pending_peers = status
        .region
        .peers
        .iter()
        .filter(|p| status.pending_peers.contains(&p.id))
        .copied()
        .collect();
    // Requests served since the last report (raw point requests count one key each).
    let flow = reports.load.take_flow(region_id);
    let (approximate_size, approximate_keys) = reports.sizes.get(region_id);
    // Heard from recently by Raft (which does not judge while the region sleeps), and its
    // store not silent (which store liveness judges, asleep or not).
    let active: Vec<u64> = status
        .region
        .peers
        .iter()
        .filter(|p| status.active_peers.contains(&p.id) && !router.is_store_silent(p.store_id))
        .map(|p| p.id)
        .collect();
    let down_peers = reports
        .down
        .report(&status.region, leader.id, &active, Instant::now());
    let stat = RegionStat {
        term: status.term,
        down_peers,
        pending_peers,
        keys_read: flow.reads,
        keys_written: flow.writes,
        approximate_size,
        approximate_keys,
        ..Default::default()
    };
    if let Err(e) = pd.region_heartbeat(status.region, leader, stat).await {
        warn!(%e, region_id, "region heartbeat failed");
    }
}
