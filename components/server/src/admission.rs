//! Admission of client requests: a bound on how many a store works on at once.
//!
//! Every client RPC of `tikvpb.Tikv` takes a permit before its handler runs and gives it back
//! when it answers. With none left, the request is answered at once with a ServerIsBusy region
//! error carrying a backoff hint ([`BUSY_BACKOFF_MS`]), as TiKV answers an overloaded store:
//! clients back off and retry, possibly elsewhere. Nothing queues without bound in front of
//! the store, so a flood of requests costs the store their refusals, not its memory.
//!
//! What it does not bound: requests already admitted wait in their own queues (read pool,
//! latches, the raftstore's mailboxes), each bounded on its own; the bytes of writes in flight
//! are bounded by `storage::kv::WriteQuota`; per connection, HTTP/2's concurrent-stream limit
//! applies (`limits.max_concurrent_streams`).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The backoff a ServerIsBusy answer of an overloaded store suggests, milliseconds.
pub const BUSY_BACKOFF_MS: u64 = 20;

/// See the module docs. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl Admission {
    /// At most `limit` requests at once.
    pub fn new(limit: usize) -> Admission {
        Admission {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
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
