//! The store's MVCC garbage collector: PD's GC safe point drives the removal of versions no
//! reader at or above it can see (the rule is `storage::txn::gc`'s).
//!
//! Protocol:
//! 1. **Ask.** Every `gc.run_interval_secs` (or at once when [`GcWorker::trigger`]ed) the worker
//!    asks PD for the GC safe point (`GetGCSafePoint`). PD's safe point only grows.
//! 2. **Round.** For every region of the store ([`GcWorker::run_round`]) whose recorded
//!    *applied* safe point is below the new one, [`GcWorker::gc_region`] runs if this store
//!    leads the region; other regions are left to their leaders' stores.
//! 3. **Region.** From the region's start key, a scan on a blocking thread finds up to
//!    `gc.batch_keys` keys that GC would change ([`storage::txn::scan_gc_keys`]); one command
//!    through the [`TxnScheduler`] then latches those keys, takes a read grant and a snapshot,
//!    decides again on it ([`storage::txn::gc_keys`], at most `gc.batch_bytes` of deletes) and
//!    proposes the deletes through Raft under the region's epoch. The next batch starts where
//!    that one stopped, after a pause of `gc.batch_pause_ms`.
//! 4. **Record.** When a region's whole range was collected, the safe point is recorded as
//!    applied for it, so that an unchanged safe point costs a map lookup per region.
//!
//! Invariants:
//! - **GC writes go through Raft like any command's**: every replica applies the same deletes
//!   at the same log position, so replicas stay identical (consistency checks cover GC), and
//!   a region's epoch check refuses a batch planned for a range that has changed since.
//! - **GC never stalls foreground traffic for long**: a command holds the latches of at most
//!   `batch_keys` keys until its writes are applied, and the worker yields between commands;
//!   scans run on blocking threads, never on an async worker.
//! - **A safe point is recorded as applied for a region only after its whole range was
//!   collected at it** under one epoch; anything that stops a region (lost leadership, a split,
//!   a timeout) leaves it to the next round, which starts it over. Starting over is safe (GC is
//!   idempotent) and cheap (keys with nothing to collect cost a read).
//! - The applied safe points are soft state: a restarted store, or a new leader's store,
//!   collects a region again once, removing nothing new.
//!
//! Deliberately absent: resolving locks at or below the safe point before collecting (the
//! safe-point contract of `storage::txn::gc` leaves that to whoever advances it), rate limits
//! in bytes per second, GC in compaction filters, metrics beyond the logs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use pd_client::PdClient;
use raftstore::RequestHeader;
use storage::mvcc::{self, Key, MvccReader, TimeStamp};
use storage::scheduler::{SchedError, TxnScheduler};
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use crate::config::GcConfig;

/// How many write records one candidate scan reads, per key of the batch it looks for.
const RECORDS_PER_BATCH_KEY: usize = 16;

/// Why GC of a region stopped early (it is retried in the next round).
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("this store does not lead region {region_id}")]
    NotLeader { region_id: u64 },
    #[error("region {region_id} unavailable: {why}")]
    Unavailable { region_id: u64, why: String },
    #[error("region {region_id}: {source}")]
    Region {
        region_id: u64,
        source: raftstore::Error,
    },
    #[error("region {region_id}: {source}")]
    Mvcc { region_id: u64, source: mvcc::Error },
    #[error("region {region_id}: outcome of a GC batch undetermined: {why}")]
    Undetermined { region_id: u64, why: String },
}

/// What GC of one region did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionGcStats {
    /// GC commands (batches) that ran.
    pub batches: usize,
    /// Keys those commands looked at.
    pub keys: usize,
    /// Write records removed (each with its value, if not inline).
    pub removed: usize,
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcRoundStats {
    /// Regions collected in this round.
    pub regions: usize,
    /// Regions skipped because the safe point was already applied to them.
    pub up_to_date: usize,
    /// Regions another store leads.
    pub not_led: usize,
    /// Regions whose GC stopped early (retried next round).
    pub failed: usize,
    pub batches: usize,
    pub removed: usize,
}

/// The GC worker of one store (see the module docs). Cheap to clone (shared).
#[derive(Clone)]
pub struct GcWorker {
    sched: TxnScheduler,
    cfg: GcConfig,
    /// Per region, the highest safe point its whole range was collected at.
    applied: Arc<Mutex<HashMap<u64, TimeStamp>>>,
    trigger: Arc<Notify>,
}

impl GcWorker {
    /// A worker proposing through `sched`, which must be the scheduler the store's
    /// transactional API uses (GC commands and client commands share its latches).
    pub fn new(sched: TxnScheduler, cfg: GcConfig) -> GcWorker {
        GcWorker {
            sched,
            cfg,
            applied: Arc::default(),
            trigger: Arc::new(Notify::new()),
        }
    }

    /// Makes [`GcWorker::run`] ask PD and run a round now instead of at the next interval.
    pub fn trigger(&self) {
        self.trigger.notify_one();
    }

    /// The highest safe point region `region_id` was collected at by this store, if any.
    pub fn applied_safe_point(&self, region_id: u64) -> Option<TimeStamp> {
        self.applied.lock().get(&region_id).copied()
    }

    /// Asks PD for the safe point every `run_interval_secs` (or when triggered) and runs a
    /// round, until `shutdown`.
    pub async fn run(self, pd: PdClient, mut shutdown: watch::Receiver<bool>) {
        let every = Duration::from_secs(self.cfg.run_interval_secs.max(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.trigger.notified() => {}
                _ = shutdown.wait_for(|v| *v) => return,
            }
            let safe_point = match pd.get_gc_safe_point().await {
                Ok(sp) => sp,
                Err(e) => {
                    warn!(%e, "asking PD for the GC safe point failed");
                    continue;
                }
            };
            let stats = self.run_round(safe_point).await;
            if stats.regions > 0 || stats.failed > 0 {
                info!(safe_point, ?stats, "GC round done");
            }
        }
    }

    /// Collects, at `safe_point`, every region this store leads that was not collected at it
    /// (or a higher one) yet.
    pub async fn run_round(&self, safe_point: TimeStamp) -> GcRoundStats {
        let mut stats = GcRoundStats::default();
        if safe_point == 0 {
            return stats;
        }
        let mut ids = self.sched.router().region_ids();
        ids.sort_unstable();
        let present: HashSet<u64> = ids.iter().copied().collect();
        self.applied.lock().retain(|id, _| present.contains(id));
        for region_id in ids {
            if self.applied_safe_point(region_id) >= Some(safe_point) {
                stats.up_to_date += 1;
                continue;
            }
            match self.gc_region(region_id, safe_point).await {
                Ok(r) => {
                    stats.regions += 1;
                    stats.batches += r.batches;
                    stats.removed += r.removed;
                }
                Err(GcError::NotLeader { .. }) => stats.not_led += 1,
                Err(e) => {
                    warn!(region_id, safe_point, %e, "GC of a region stopped; retried next round");
                    stats.failed += 1;
                }
            }
        }
        stats
    }

    /// Collects region `region_id`, which this store must lead, at `safe_point`, batch by
    /// batch, and records the safe point as applied to it once its whole range is done.
    pub async fn gc_region(
        &self,
        region_id: u64,
        safe_point: TimeStamp,
    ) -> Result<RegionGcStats, GcError> {
        let router = self.sched.router();
        let status =
            match tokio::time::timeout(Duration::from_secs(2), router.peer_status(region_id)).await
            {
                Ok(Ok(status)) => status,
                Ok(Err(e)) => {
                    return Err(GcError::Region {
                        region_id,
                        source: e,
                    })
                }
                Err(_) => {
                    return Err(GcError::Unavailable {
                        region_id,
                        why: "no peer status in time".into(),
                    })
                }
            };
        if !status.is_leader {
            return Err(GcError::NotLeader { region_id });
        }
        let region = status.region;
        let end = region.end_key.to_vec();
        let mut cursor = Some(region.start_key.to_vec());
        let mut stats = RegionGcStats::default();
        let (max_keys, budget) = (self.cfg.batch_keys, self.cfg.batch_bytes);
        while let Some(start) = cursor.take() {
            let engine = self.sched.engine().clone();
            let scan_end = end.clone();
            let scan = tokio::task::spawn_blocking(move || {
                let snap = engine.snapshot();
                storage::txn::scan_gc_keys(
                    &MvccReader::new(&snap),
                    &start,
                    &scan_end,
                    safe_point,
                    max_keys,
                    max_keys.saturating_mul(RECORDS_PER_BATCH_KEY),
                )
            })
            .await
            .map_err(|e| GcError::Unavailable {
                region_id,
                why: format!("GC scan task failed: {e}"),
            })?
            .map_err(|source| GcError::Mvcc { region_id, source })?;
            cursor = scan.next;
            if scan.keys.is_empty() {
                continue;
            }
            let header = RequestHeader {
                replica_read: false,
                region_id,
                epoch: region.region_epoch,
                peer: status.leader,
                keys: scan
                    .keys
                    .iter()
                    .map(|k| Bytes::copy_from_slice(k.as_encoded()))
                    .collect(),
            };
            let keys: Vec<Key> = scan.keys;
            let batch = keys.clone();
            let outcome = self
                .sched
                .write(header, &keys, move |reader, txn| {
                    storage::txn::gc_keys(reader, txn, &batch, safe_point, budget)
                })
                .await
                .map_err(|e| match e {
                    SchedError::Region(source) => GcError::Region { region_id, source },
                    SchedError::Txn(source) => GcError::Mvcc { region_id, source },
                    SchedError::Undetermined(why) => GcError::Undetermined { region_id, why },
                })?;
            stats.batches += 1;
            stats.removed += outcome.removed;
            stats.keys += match &outcome.resume_at {
                Some(k) => keys.iter().position(|x| x == k).unwrap_or(keys.len()),
                None => keys.len(),
            };
            if let Some(resume) = outcome.resume_at {
                // The budget ran out within the batch: continue at that key.
                cursor = Some(resume.into_encoded());
            }
            if self.cfg.batch_pause_ms > 0 {
                tokio::time::sleep(Duration::from_millis(self.cfg.batch_pause_ms)).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
        let mut applied = self.applied.lock();
        let recorded = applied.entry(region_id).or_insert(safe_point);
        *recorded = (*recorded).max(safe_point);
        debug!(region_id, safe_point, ?stats, "region collected");
        Ok(stats)
    }
}
