//! Admission of client requests: a bound on how many a store works on at once, and the slow
//! log of those admitted.
//!
//! Every client RPC of `tikvpb.Tikv` takes a permit before its handler runs and gives it back
//! when it answers. With none left, the request is answered at once with a ServerIsBusy region
//! error carrying a backoff hint ([`BUSY_BACKOFF_MS`]), as TiKV answers an overloaded store:
//! clients back off and retry, possibly elsewhere. Nothing queues without bound in front of
//! the store, so a flood of requests costs the store their refusals, not its memory.
//!
//! Slow log: a request that took at least the threshold (`slow_log.threshold_ms`) is logged
//! as a warning with target `slow_log`: method, outcome, region, total time and the time of
//! each stage it went through (latch, read grant, read pool, decide, Raft write; see
//! `storage::kv::tracked`).
//!
//! What it does not bound: requests already admitted wait in their own queues (read pool,
//! latches, the raftstore's mailboxes), each bounded on its own; the bytes of writes in flight
//! are bounded by `storage::kv::WriteQuota`; per connection, HTTP/2's concurrent-stream limit
//! applies (`limits.max_concurrent_streams`).

use std::sync::Arc;
use std::time::Duration;

use storage::kv::Stages;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The backoff a ServerIsBusy answer of an overloaded store suggests, milliseconds.
pub const BUSY_BACKOFF_MS: u64 = 20;

/// See the module docs. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    limit: usize,
    slow: Duration,
}

/// Requests at least this slow are logged unless configured otherwise.
pub const DEFAULT_SLOW_LOG_THRESHOLD: Duration = Duration::from_secs(1);

impl Admission {
    /// At most `limit` requests at once.
    pub fn new(limit: usize) -> Admission {
        Admission {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            slow: DEFAULT_SLOW_LOG_THRESHOLD,
        }
    }

    /// Logs requests that take at least `threshold`.
    pub fn with_slow_log(mut self, threshold: Duration) -> Admission {
        self.slow = threshold;
        self
    }

    /// Logs a request that took `took`, if that is slow.
    pub fn log_if_slow(&self, method: &str, outcome: &str, took: f64, stages: &Stages) {
        if took < self.slow.as_secs_f64() {
            return;
        }
        tracing::warn!(
            target: "slow_log",
            method,
            outcome,
            region_id = stages.region_id.unwrap_or(0),
            total_ms = format!("{:.3}", took * 1e3),
            stages = %stages,
            "slow request"
        );
    }

    /// A permit for one request, or the ServerIsBusy error to answer it with.
    pub fn try_admit(&self) -> Result<OwnedSemaphorePermit, raftstore::Error> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            raftstore::Error::ServerIsBusy(format!(
                "{} client requests in flight, the store's limit",
                self.limit
            ))
        })
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_beyond_the_limit_are_refused_at_once_until_one_answers() {
        let a = Admission::new(2);
        let first = a.try_admit().expect("first");
        let _second = a.try_admit().expect("second");
        assert_eq!(a.in_flight(), 2);
        match a.try_admit() {
            Err(raftstore::Error::ServerIsBusy(why)) => assert!(why.contains('2'), "{why}"),
            other => panic!("expected ServerIsBusy, got {other:?}"),
        }
        drop(first);
        assert!(a.try_admit().is_ok(), "a finished request frees its permit");
    }
}
