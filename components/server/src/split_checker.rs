//! The store's split checkers, background tasks over the regions it leads: by size (a region
//! that applied new writes and outgrew `region_max_size`, cut at `region_split_size`, see
//! [`crate::split::size_split_key`]) and by load (a region hot for several seconds, cut at its
//! sampled median, see [`crate::load_split`]). Both split through [`crate::split::split_at`].
//!
//! The size checker's reads also measure the regions ([`RegionSizes`]): their sizes go to PD in
//! region heartbeats (`approximate_size`, `approximate_keys`), where balance-region weighs
//! stores by them.
//!
//! Not here: the split itself (the raftstore's admin command) and PD-driven splits
//! ([`crate::split::PdSplits`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftstore::StoreRouter;
use tokio::sync::watch;
use tracing::{info, warn};

/// The last measured size and key count of the regions this store led when it measured
/// them; a region is measured again once it applied new entries (every `check_secs` at most).
#[derive(Default)]
pub(crate) struct RegionSizes(parking_lot::Mutex<HashMap<u64, (u64, u64)>>);

impl RegionSizes {
    /// `(bytes, keys)` of `region_id` as last measured; `(0, 0)` if never.
    pub(crate) fn get(&self, region_id: u64) -> (u64, u64) {
        self.0.lock().get(&region_id).copied().unwrap_or_default()
    }

    fn set(&self, region_id: u64, size: u64, keys: u64) {
        self.0.lock().insert(region_id, (size, keys));
    }

    /// Forgets the regions not in `hosted`.
    fn retain(&self, hosted: &[u64]) {
        let hosted: std::collections::HashSet<u64> = hosted.iter().copied().collect();
        self.0.lock().retain(|id, _| hosted.contains(id));
    }
}

/// With automatic split off, a region is read no further than this to measure it (a larger
/// one is reported at about this size).
const MEASURE_CAP: u64 = 1 << 30;

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

/// Splits the regions this store leads once they outgrow `cfg.region_max_size`, and records
/// their sizes in `sizes`. A region is read again only after it applied new entries. With
/// automatic split off (`region_max_size` 0) regions are still measured, up to [`MEASURE_CAP`].
pub(crate) async fn split_checks(
    router: StoreRouter,
    engine: engine::Engine,
    ids: Arc<dyn crate::split::SplitIdAllocator>,
    cfg: crate::config::SplitConfig,
    sizes: Arc<RegionSizes>,
    mut shutdown: watch::Receiver<bool>,
) {
    let split = cfg.region_max_size > 0;
    let mut checked_at: HashMap<u64, u64> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(cfg.check_secs)) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
        let hosted = router.region_ids();
        sizes.retain(&hosted);
        checked_at.retain(|id, _| hosted.contains(id));
        for region_id in hosted {
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
            let (max, split_size) = if split {
                (cfg.region_max_size, cfg.region_split_size)
            } else {
                (MEASURE_CAP, MEASURE_CAP)
            };
            let check = tokio::task::spawn_blocking(move || {
                crate::split::size_check(&scan_engine, &region, max, split_size)
            })
            .await;
            let key = match check {
                Ok(Ok(check)) => {
                    sizes.set(region_id, check.size, check.keys);
                    match check.split_key {
                        Some(key) if split => key,
                        _ => continue,
                    }
                }
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
