//! The store's split checkers, background tasks over the regions it leads: by size (a region
//! that applied new writes and outgrew `region_max_size`, cut at `region_split_size`, see
//! [`crate::split::size_split_key`]) and by load (a region hot for several seconds, cut at its
//! sampled median, see [`crate::load_split`]). Both split through [`crate::split::split_at`].
//!
//! Not here: the split itself (the raftstore's admin command) and PD-driven splits
//! ([`crate::split::PdSplits`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftstore::StoreRouter;
use tokio::sync::watch;
use tracing::{info, warn};

/// A region serving at least this many requests a second is reported to PD every second
/// (instead of every region heartbeat interval), so that PD's hot-region scheduling sees its
/// flow while it matters.
pub(crate) const HOT_REPORT_QPS: u64 = 100;

/// Splits the regions this store leads that stay hot (see [`crate::load_split`]): once a
/// second, the window's load is judged and a region hot for `detect_windows` windows in a row
/// is split at its sampled median key (`qps_threshold` 0: never). Every window also ends in
/// the regions' flows, and regions serving [`HOT_REPORT_QPS`] or more are sent on
/// `report_now` for a region heartbeat.
pub(crate) async fn load_splits(
    router: StoreRouter,
    load: Arc<crate::load_split::LoadRecorder>,
    ids: Arc<dyn crate::split::SplitIdAllocator>,
    cfg: crate::config::SplitConfig,
    report_now: futures::channel::mpsc::UnboundedSender<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut decider = crate::load_split::LoadDecider::default();
    let mut window_start = Instant::now();
    load.take();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
        let secs = window_start.elapsed().as_secs_f64();
        window_start = Instant::now();
        let window = load.take();
        for (region_id, region_load) in &window {
            if region_load.requests as f64 >= HOT_REPORT_QPS as f64 * secs {
                let _ = report_now.unbounded_send(*region_id);
            }
        }
        if cfg.qps_threshold == 0 {
            continue;
        }
        let hot = decider.decide(window, secs, cfg.qps_threshold, cfg.detect_windows);
        for (region_id, samples) in hot {
            let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_secs(2), router.peer_status(region_id)).await
            else {
                continue;
            };
            if !status.is_leader {
                continue;
            }
            let region = &status.region;
            let Some(key) =
                crate::load_split::split_key(samples, &region.start_key, &region.end_key)
            else {
                continue;
            };
            let header = raftstore::RequestHeader {
                replica_read: false,
                region_id,
                epoch: region.region_epoch,
                peer: status.leader,
                keys: vec![key.clone()],
            };
            match crate::split::split_at(&router, &ids, header, vec![key]).await {
                Ok(regions) => info!(region_id, regions = regions.len(), "split a hot region"),
                Err(e) => warn!(region_id, ?e, "load split failed"),
            }
        }
    }
}

/// Splits the regions this store leads once they outgrow `cfg.region_max_size`. A region is
/// read again only after it applied new entries.
pub(crate) async fn split_checks(
    router: StoreRouter,
    engine: engine::Engine,
    ids: Arc<dyn crate::split::SplitIdAllocator>,
    cfg: crate::config::SplitConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    if cfg.region_max_size == 0 {
        return;
    }
    let mut checked_at: HashMap<u64, u64> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(cfg.check_secs)) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
        for region_id in router.region_ids() {
            let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_secs(2), router.peer_status(region_id)).await
            else {
                continue;
            };
            if !status.is_leader || checked_at.get(&region_id) == Some(&status.applied_index) {
                continue;
            }
            checked_at.insert(region_id, status.applied_index);
            let region = status.region.clone();
            let scan_engine = engine.clone();
            let (max, split) = (cfg.region_max_size, cfg.region_split_size);
            let key = tokio::task::spawn_blocking(move || {
                crate::split::size_split_key(&scan_engine, &region, max, split)
            })
            .await;
            let key = match key {
                Ok(Ok(Some(key))) => key,
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => {
                    warn!(region_id, %e, "split check failed");
                    continue;
                }
                Err(e) => {
                    warn!(region_id, %e, "split check task failed");
                    continue;
                }
            };
            let header = raftstore::RequestHeader {
                replica_read: false,
                region_id,
                epoch: status.region.region_epoch,
                peer: status.leader,
                keys: vec![key.clone()],
            };
            match crate::split::split_at(&router, &ids, header, vec![key]).await {
                Ok(regions) => info!(region_id, regions = regions.len(), "split a large region"),
                Err(e) => warn!(region_id, ?e, "size split failed"),
            }
        }
    }
}
