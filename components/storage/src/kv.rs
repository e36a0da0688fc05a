//! The engine interface of commands: how a storage command reaches one region's data.
//!
//! [`RaftKv`] is the only way the raw API ([`crate::raw`]) and the transaction scheduler
//! ([`crate::scheduler`]) touch a region:
//! - [`RaftKv::read_grant`]: permission from the region's leader to read now (everything
//!   committed before is applied); the grant carries the region's current range.
//! - [`RaftKv::read`]: runs a read on the [`ReadPool`], where it takes its engine snapshot
//!   when a thread runs it, so after the grant asked for before. A full pool answers
//!   ServerIsBusy at once.
//! - [`RaftKv::write`]: proposes plain modifications (put, delete, delete-range per column
//!   family) through Raft and waits until they are applied. Whatever the caller hands in to
//!   hold (latches, memory locks) is released when the raftstore answers, not when the caller
//!   stops waiting: a write that may still apply keeps its keys held.
//!
//! Writes in flight are bounded in bytes ([`WriteQuota`]): a write that would pass the bound
//! is answered ServerIsBusy at once instead of queueing in front of a slow raftstore.
//!
//! Inside [`tracked`], each stage's time (latch, read grant, read pool, Raft write, and the
//! scheduler's decision) and the region are recorded for the request, so that the server can
//! log a slow request with where its time went (TiKV's slow log).
//!
//! Every wait is bounded by the request timeout. A read or grant that times out is
//! ServerIsBusy (nothing happened; clients retry); a write that times out, or meets a
//! shutdown with the proposal in flight, is [`Error::Undetermined`] — it may still apply, so it
//! must never be answered as a region error that clients retry.
//!
//! Deliberately absent: the wire (requests, `Context`, `errorpb`) — the server converts; limits
//! on request sizes — the server checks them before a command starts.

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::Engine;
use proto::metapb;
use raftstore::cmd::{WriteOp, WriteResponse};
use raftstore::{ReadGrant, RequestHeader, StoreRouter};
use tokio::sync::oneshot;

use crate::latch::{LatchGuard, Latches};
use crate::read_pool::{ReadPool, ReadPoolError};

/// Why a storage command failed, short of a command's own verdict.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the raftstore: a region error (not leader, stale epoch, key not in region, busy,
    /// entry too large, …); nothing was written and the client may retry elsewhere.
    #[error("{0}")]
    Raftstore(#[from] raftstore::Error),
    /// The request cannot be served as it is (bad key for its API, bad range, …); nothing
    /// was written, and resending it will not help.
    #[error("{0}")]
    Invalid(String),
    /// The write was proposed but its fate is unknown: it may still apply.
    #[error("{0}")]
    Undetermined(String),
    /// The engine failed, or stored data is corrupt.
    #[error("{0}")]
    Other(String),
}

impl From<engine::Error> for Error {
    fn from(e: engine::Error) -> Self {
        Error::Other(format!("engine: {e}"))
    }
}

impl Error {
    /// A ServerIsBusy region error: nothing happened, try again later.
    pub fn busy(why: impl Into<String>) -> Error {
        Error::Raftstore(raftstore::Error::ServerIsBusy(why.into()))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Which region a command is for, as the client addressed it (region id, the epoch it knows,
/// the peer it meant to reach). The region's leader checks it, and the keys the command
/// touches, before anything happens.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegionCtx {
    pub region_id: u64,
    pub epoch: Option<metapb::RegionEpoch>,
    pub peer: Option<metapb::Peer>,
    /// The client sent this read to a follower on purpose (see `raftstore`'s replica reads).
    pub replica_read: bool,
}

impl RegionCtx {
    /// The raftstore header of a command over `keys` (stored form).
    pub fn header(&self, keys: Vec<Bytes>) -> RequestHeader {
        RequestHeader {
            region_id: self.region_id,
            epoch: self.epoch,
            peer: self.peer,
            keys,
            replica_read: self.replica_read,
        }
    }
}

/// Where one request's time went: the region it addressed (last seen) and the time of each
/// stage, summed over repeats, in the order first met.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stages {
    pub region_id: Option<u64>,
    pub times: Vec<(&'static str, Duration)>,
}

impl Stages {
    fn add(&mut self, stage: &'static str, took: Duration) {
        match self.times.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, total)) => *total += took,
            None => self.times.push((stage, took)),
        }
    }
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (stage, took)) in self.times.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{stage}={:.3}ms", took.as_secs_f64() * 1e3)?;
        }
        Ok(())
    }
}

tokio::task_local! {
    static STAGES: RefCell<Stages>;
}

/// Runs `f`, recording the stages the commands it runs go through (see [`record_stage`]).
pub async fn tracked<F: Future>(f: F) -> (F::Output, Stages) {
    STAGES
        .scope(RefCell::new(Stages::default()), async move {
            let out = f.await;
            let stages = STAGES.with(|s| s.take());
            (out, stages)
        })
        .await
}

/// Adds `took` to `stage` of the request being tracked, if any.
pub fn record_stage(stage: &'static str, took: Duration) {
    let _ = STAGES.try_with(|s| s.borrow_mut().add(stage, took));
}

fn record_region(region_id: u64) {
    let _ = STAGES.try_with(|s| s.borrow_mut().region_id = Some(region_id));
}

/// A bound on the bytes of writes proposed and not yet answered by the raftstore (applied or
/// failed). Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct WriteQuota {
    inner: Arc<QuotaInner>,
}

#[derive(Debug)]
struct QuotaInner {
    limit: usize,
    used: AtomicUsize,
}

/// Bytes taken from a [`WriteQuota`], given back when dropped.
#[derive(Debug)]
pub struct QuotaGuard {
    inner: Arc<QuotaInner>,
    bytes: usize,
}

impl WriteQuota {
    pub fn new(limit: usize) -> WriteQuota {
        WriteQuota {
            inner: Arc::new(QuotaInner {
                limit,
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// No bound.
    pub fn unlimited() -> WriteQuota {
        WriteQuota::new(usize::MAX)
    }

    /// Takes `bytes`, unless that would pass the limit while other writes hold some: a single
    /// write larger than the whole quota still goes, alone (the Raft entry size bounds it).
    pub fn try_take(&self, bytes: usize) -> Option<QuotaGuard> {
        let used = &self.inner.used;
        let mut current = used.load(Ordering::Relaxed);
        loop {
            if current > 0 && current.saturating_add(bytes) > self.inner.limit {
                return None;
            }
            match used.compare_exchange_weak(
                current,
                current.saturating_add(bytes),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(QuotaGuard {
                        inner: self.inner.clone(),
                        bytes,
                    })
                }
                Err(now) => current = now,
            }
        }
    }

    /// Bytes taken now.
    pub fn in_use(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }
}

impl Drop for QuotaGuard {
    fn drop(&mut self) {
        self.inner.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// See the module docs. Cheap to clone (shared).
#[derive(Clone)]
pub struct RaftKv {
    router: StoreRouter,
    engine: Engine,
    read_pool: ReadPool,
    timeout: Duration,
    quota: WriteQuota,
    /// Writes are refused while the store's apply backlog passes this many bytes.
    max_apply_backlog: usize,
}

impl RaftKv {
    /// Commands through `router`, reads of `engine` on `read_pool`, each wait at most
    /// `timeout`.
    pub fn new(
        router: StoreRouter,
        engine: Engine,
        read_pool: ReadPool,
        timeout: Duration,
    ) -> Self {
        RaftKv {
            router,
            engine,
            read_pool,
            timeout,
            quota: WriteQuota::unlimited(),
            max_apply_backlog: usize::MAX,
        }
    }

    /// Refuses writes (ServerIsBusy) while the store's apply workers lag behind commit by
    /// more than `bytes` (see `raftstore::apply::ApplyBacklog`).
    pub fn with_apply_backlog_limit(mut self, bytes: usize) -> Self {
        self.max_apply_backlog = bytes;
        self
    }

    /// Bounds the bytes of writes in flight by `quota`.
    pub fn with_write_quota(mut self, quota: WriteQuota) -> Self {
        self.quota = quota;
        self
    }

    pub fn write_quota(&self) -> &WriteQuota {
        &self.quota
    }

    pub fn router(&self) -> &StoreRouter {
        &self.router
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn read_pool(&self) -> &ReadPool {
        &self.read_pool
    }

    /// How long any one wait of a command may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Asks the region's leader for a read grant (see the module docs).
    pub async fn read_grant(&self, header: RequestHeader) -> Result<ReadGrant> {
        record_region(header.region_id);
        let started = Instant::now();
        let granted = tokio::time::timeout(self.timeout, self.router.read_grant(header)).await;
        record_stage("read_grant", started.elapsed());
        match granted {
            Ok(r) => Ok(r?),
            Err(_) => Err(Error::busy("read grant timed out")),
        }
    }

    /// Runs `read` on the read pool and waits for its result. Call it only once the read grant
    /// is given: `read` reads the engine when a pool thread runs it, so it sees at least
    /// everything the grant covers.
    pub async fn read<T, E, F>(&self, read: F) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce(&Engine) -> std::result::Result<T, E> + Send + 'static,
    {
        let engine = self.engine.clone();
        let started = Instant::now();
        let pending = self
            .read_pool
            .spawn(move || read(&engine))
            .map_err(|e| E::from(read_pool_failure(e)))?;
        // On a timeout the handle is dropped, and a task no thread took yet is skipped.
        let joined = tokio::time::timeout(self.timeout, pending.join()).await;
        record_stage("read_pool", started.elapsed());
        match joined {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(read_pool_failure(e).into()),
            Err(_) => Err(Error::busy("read timed out in the read pool").into()),
        }
    }

    /// Proposes `ops` and waits until they are applied. `hold` (latches, memory locks) is
    /// dropped when the raftstore answers the proposal, before the answer is passed on.
    pub async fn write<H: Send + 'static>(
        &self,
        header: RequestHeader,
        ops: Vec<WriteOp>,
        hold: H,
    ) -> Result<WriteResponse> {
        let bytes = ops
            .iter()
            .map(|op| op.key.len() + op.value.len() + op.end_key.len())
            .sum();
        let backlog = self.router.apply_backlog().bytes();
        if backlog > self.max_apply_backlog {
            return Err(Error::busy(format!(
                "{backlog} bytes of committed writes wait to be applied, the store's limit is {}",
                self.max_apply_backlog
            )));
        }
        let Some(quota) = self.quota.try_take(bytes) else {
            return Err(Error::busy(format!(
                "{} bytes of writes in flight, the store's limit is {}",
                self.quota.in_use(),
                self.quota.inner.limit
            )));
        };
        let hold = (hold, quota);
        record_region(header.region_id);
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        self.router.propose(header, ops, move |r| {
            // Applied (or failed): release first, so that a request the caller sends right
            // after the answer never waits for this one.
            drop(hold);
            let _ = tx.send(r);
        });
        let answered = tokio::time::timeout(self.timeout, rx).await;
        record_stage("raft_write", started.elapsed());
        match answered {
            Ok(Ok(Ok(resp))) => Ok(resp),
            Ok(Ok(Err(raftstore::Error::Shutdown))) | Ok(Err(_)) => Err(Error::Undetermined(
                "the store shut down with the write in flight".into(),
            )),
            Ok(Ok(Err(e))) => Err(e.into()),
            Err(_) => Err(Error::Undetermined(format!(
                "no result within {:?}",
                self.timeout
            ))),
        }
    }

    /// Waits for the latches of `keys`, exclusively (a command that reads, decides, writes).
    pub async fn latch<K: AsRef<[u8]>>(&self, latches: &Latches, keys: &[K]) -> Result<LatchGuard> {
        let started = Instant::now();
        let latched = tokio::time::timeout(self.timeout, latches.acquire(keys)).await;
        record_stage("latch", started.elapsed());
        latched.map_err(|_| Error::busy("waiting for key latches"))
    }

    /// Waits for the latches of `keys`, shared with other blind writes (see
    /// [`crate::latch`]).
    pub async fn latch_shared<K: AsRef<[u8]>>(
        &self,
        latches: &Latches,
        keys: &[K],
    ) -> Result<LatchGuard> {
        let started = Instant::now();
        let latched = tokio::time::timeout(self.timeout, latches.acquire_shared(keys)).await;
        record_stage("latch", started.elapsed());
        latched.map_err(|_| Error::busy("waiting for key latches"))
    }

    /// Waits for the range latch (held alone: no key latch is held meanwhile).
    pub async fn latch_range(&self, latches: &Latches) -> Result<LatchGuard> {
        let started = Instant::now();
        let latched = tokio::time::timeout(self.timeout, latches.acquire_range()).await;
        record_stage("latch", started.elapsed());
        latched.map_err(|_| Error::busy("waiting for the range latch"))
    }
}

/// How a read the pool could not run is answered: a full pool is ServerIsBusy, so the client
/// backs off and retries.
fn read_pool_failure(e: ReadPoolError) -> Error {
    match e {
        ReadPoolError::Full { .. } => Error::busy(e.to_string()),
        e => Error::Other(format!("read failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{record_stage, tracked, WriteQuota};

    #[tokio::test(flavor = "current_thread")]
    async fn stages_are_summed_per_request_and_only_inside_tracked() {
        record_stage("latch", Duration::from_millis(5)); // outside: ignored
        let ((), stages) = tracked(async {
            record_stage("latch", Duration::from_millis(1));
            record_stage("raft_write", Duration::from_millis(3));
            record_stage("latch", Duration::from_millis(2));
        })
        .await;
        assert_eq!(
            stages.times,
            vec![
                ("latch", Duration::from_millis(3)),
                ("raft_write", Duration::from_millis(3))
            ]
        );
        assert_eq!(stages.to_string(), "latch=3.000ms raft_write=3.000ms");
    }

    #[test]
    fn the_write_quota_refuses_what_would_pass_it_and_frees_on_drop() {
        let q = WriteQuota::new(100);
        let a = q.try_take(60).expect("fits");
        assert!(q.try_take(50).is_none(), "60 + 50 passes 100");
        let b = q.try_take(40).expect("60 + 40 fits exactly");
        assert_eq!(q.in_use(), 100);
        drop(a);
        drop(b);
        assert_eq!(q.in_use(), 0);
        // Alone, a write larger than the quota still goes; nothing joins it.
        let big = q.try_take(500).expect("alone");
        assert!(q.try_take(1).is_none());
        drop(big);
        assert!(q.try_take(1).is_some());
    }
}
