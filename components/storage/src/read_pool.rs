//! The read pool: a fixed set of threads that run the engine reads of the raw and transactional APIs, so that a
//! RocksDB read or a large scan never occupies a tokio worker thread. The store's tokio runtime
//! also carries the Raft transport (the `BatchRaft` streams in and out); a scan running there
//! would delay Raft messages, heartbeats among them, and could start an election.
//!
//! Modelled on TiKV's unified read pool:
//!
//! - `pool_size` threads (`readpool-N`) take tasks from one bounded FIFO queue of
//!   `pool_size * max_tasks_per_worker` tasks ([`ReadPoolConfig`]).
//! - [`ReadPool::spawn`] never blocks: when the queue is full it fails at once with
//!   [`ReadPoolError::Full`], which the raw API answers as a ServerIsBusy region error, so
//!   clients back off and retry (possibly another replica) instead of queueing without bound.
//! - A task's result comes back through a tokio oneshot channel ([`ReadHandle::join`]). A task
//!   whose requester stopped waiting (request timeout, client gone) before a thread took it is
//!   skipped.
//! - Metrics: `rangekv_readpool_queue_length`, `rangekv_readpool_wait_seconds` (time from
//!   submission until a thread takes the task), `rangekv_readpool_rejected_total`.
//!
//! Invariants:
//!
//! - Tasks are submitted by callers that already hold what makes the read correct (for the raw
//!   API: a read grant, and for compare-and-swap the key's latch); a task takes its engine
//!   snapshot when it runs, so the snapshot is always taken after the grant.
//! - A task that panics is caught: its requester sees [`ReadPoolError::Canceled`] and the thread
//!   goes on serving. (A store binary aborts on any panic before unwinding reaches the pool —
//!   see `components/rangekv/src/main.rs` — so this matters for embedders and tests.)
//!
//! Why no crate: `yatp` (TiKV's pool) is not published in a maintained version, and the rest of
//! what is needed is a few dozen lines over `crossbeam`'s bounded channel, which the workspace
//! already uses.
//!
//! Deliberately absent (TiKV has them): priority levels and time-slice scheduling of long
//! tasks, pool resizing at run time, per-request deadlines checked inside a scan. Dropping the
//! last [`ReadPool`] handle lets the threads finish the queued tasks and exit; it does not wait
//! for them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use tokio::sync::oneshot;
use tracing::error;

use serde::{Deserialize, Serialize};

use crate::metrics::{READ_POOL_QUEUE_LENGTH, READ_POOL_REJECTED, READ_POOL_WAIT_SECONDS};

/// The pool's size and queue (the `[readpool]` section of a store's config).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadPoolConfig {
    /// Threads of the pool. Default, as TiKV's unified read pool: 80% of the CPUs, at least 4.
    pub pool_size: usize,
    /// Reads that may wait for a thread, per thread: the queue holds
    /// `pool_size * max_tasks_per_worker` reads, and a read beyond that is answered
    /// ServerIsBusy at once (TiKV's `max-tasks-per-worker`).
    pub max_tasks_per_worker: usize,
}

/// Most threads a read pool may have.
pub const MAX_READ_POOL_SIZE: usize = 1024;

impl Default for ReadPoolConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        ReadPoolConfig {
            pool_size: (cpus * 4 / 5).max(4),
            max_tasks_per_worker: 2000,
        }
    }
}

impl ReadPoolConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.pool_size == 0 || self.pool_size > MAX_READ_POOL_SIZE {
            return Err(format!(
                "readpool.pool_size must be between 1 and {MAX_READ_POOL_SIZE}"
            ));
        }
        if self.max_tasks_per_worker == 0 {
            return Err("readpool.max_tasks_per_worker must be positive".into());
        }
        if self.queue_capacity().is_none() {
            return Err("readpool.max_tasks_per_worker is too large".into());
        }
        Ok(())
    }

    /// How many reads may wait for a thread; `None` if that overflows.
    pub fn queue_capacity(&self) -> Option<usize> {
        self.pool_size.checked_mul(self.max_tasks_per_worker)
    }
}

/// Why a read could not run (or its pool could not start).
#[derive(Debug, thiserror::Error)]
pub enum ReadPoolError {
    /// The queue holds `capacity` tasks already: the store is busy.
    #[error("the read pool is full ({capacity} reads waiting)")]
    Full { capacity: usize },
    /// The task panicked, or the pool has no threads left.
    #[error("the read was canceled: the task failed or the read pool stopped")]
    Canceled,
    #[error("invalid read pool config: {0}")]
    InvalidConfig(String),
    #[error("cannot start a read pool thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// A hook run on the pool thread before each task (set by tests only).
pub type BeforeTask = Arc<dyn Fn() + Send + Sync>;

struct Task {
    run: Box<dyn FnOnce() + Send>,
    queued_at: Instant,
}

struct Shared {
    tx: Sender<Task>,
    size: usize,
    capacity: usize,
}

/// A handle to a read pool; cheap to clone, all clones share the threads and the queue.
#[derive(Clone)]
pub struct ReadPool {
    shared: Arc<Shared>,
}

/// The result of a task handed to [`ReadPool::spawn`].
pub struct ReadHandle<T> {
    rx: oneshot::Receiver<T>,
}

impl<T> ReadHandle<T> {
    /// Waits for the task's result. Dropping the handle instead tells the pool to skip the
    /// task if no thread has taken it yet.
    pub async fn join(self) -> Result<T, ReadPoolError> {
        self.rx.await.map_err(|_| ReadPoolError::Canceled)
    }
}

impl ReadPool {
    /// Starts the pool's threads.
    pub fn new(cfg: &ReadPoolConfig) -> Result<ReadPool, ReadPoolError> {
        Self::start(cfg, None)
    }

    /// A pool whose threads run `before` ahead of every task (tests count or hold tasks
    /// with it).
    pub fn with_hook(cfg: &ReadPoolConfig, before: BeforeTask) -> Result<ReadPool, ReadPoolError> {
        Self::start(cfg, Some(before))
    }

    fn start(cfg: &ReadPoolConfig, before: Option<BeforeTask>) -> Result<ReadPool, ReadPoolError> {
        cfg.validate().map_err(ReadPoolError::InvalidConfig)?;
        let capacity = cfg
            .queue_capacity()
            .ok_or_else(|| ReadPoolError::InvalidConfig("queue capacity overflows".into()))?;
        let (tx, rx) = channel::bounded(capacity);
        for i in 0..cfg.pool_size {
            let (rx, before) = (rx.clone(), before.clone());
            // On an error the threads started so far exit as `tx` is dropped.
            std::thread::Builder::new()
                .name(format!("readpool-{i}"))
                .spawn(move || work(rx, before))?;
        }
        Ok(ReadPool {
            shared: Arc::new(Shared {
                tx,
                size: cfg.pool_size,
                capacity,
            }),
        })
    }

    /// Threads of the pool.
    pub fn size(&self) -> usize {
        self.shared.size
    }

    /// Tasks the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Tasks waiting for a thread now.
    pub fn queued(&self) -> usize {
        self.shared.tx.len()
    }

    /// Queues `f` to run on a pool thread; fails at once with [`ReadPoolError::Full`] when the
    /// queue is full.
    pub fn spawn<T, F>(&self, f: F) -> Result<ReadHandle<T>, ReadPoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let task = Task {
            run: Box::new(move || {
                if !tx.is_closed() {
                    let _ = tx.send(f());
                }
            }),
            queued_at: Instant::now(),
        };
        // Counted before it is queued: a thread may take it (and count it out) at once.
        READ_POOL_QUEUE_LENGTH.inc();
        match self.shared.tx.try_send(task) {
            Ok(()) => Ok(ReadHandle { rx }),
            Err(TrySendError::Full(_)) => {
                READ_POOL_QUEUE_LENGTH.dec();
                READ_POOL_REJECTED.inc();
                Err(ReadPoolError::Full {
                    capacity: self.shared.capacity,
                })
            }
            Err(TrySendError::Disconnected(_)) => {
                READ_POOL_QUEUE_LENGTH.dec();
                Err(ReadPoolError::Canceled)
            }
        }
    }

    /// [`ReadPool::spawn`] and [`ReadHandle::join`].
    pub async fn run<T, F>(&self, f: F) -> Result<T, ReadPoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.spawn(f)?.join().await
    }
}

/// The loop of one pool thread: until every handle is dropped and the queue is empty.
fn work(rx: Receiver<Task>, before: Option<BeforeTask>) {
    while let Ok(task) = rx.recv() {
        READ_POOL_QUEUE_LENGTH.dec();
        READ_POOL_WAIT_SECONDS.observe(task.queued_at.elapsed().as_secs_f64());
        if let Some(before) = &before {
            before();
        }
        // The task's result sender is dropped by the unwinding: its requester sees `Canceled`.
        if catch_unwind(AssertUnwindSafe(task.run)).is_err() {
            error!("a read task panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DEADLINE: Duration = Duration::from_secs(20);

    fn pool(size: usize, per_worker: usize) -> ReadPool {
        ReadPool::new(&ReadPoolConfig {
            pool_size: size,
            max_tasks_per_worker: per_worker,
        })
        .expect("read pool")
    }

    /// A task that tells when it started and runs until released (or the deadline passes).
    fn blocker(
        started: std::sync::mpsc::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    ) -> impl FnOnce() -> bool + Send + 'static {
        move || {
            let _ = started.send(());
            release.recv_timeout(DEADLINE).is_ok()
        }
    }

    #[tokio::test]
    async fn results_come_back_from_pool_threads() {
        let pool = pool(2, 4);
        assert_eq!((pool.size(), pool.capacity()), (2, 8));
        let mut handles = Vec::new();
        for i in 0..8u64 {
            handles.push(
                pool.spawn(move || (i * 2, std::thread::current().name().map(str::to_owned)))
                    .expect("queued"),
            );
        }
        for (i, h) in handles.into_iter().enumerate() {
            let (v, thread) = h.join().await.expect("result");
            assert_eq!(v, i as u64 * 2);
            assert!(thread.is_some_and(|n| n.starts_with("readpool-")));
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_the_queued_tasks_still_run() {
        let pool = pool(1, 2);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        let running = pool.spawn(blocker(started_tx, release_rx)).expect("queued");
        // The only thread holds the blocker: the queue is empty again and takes 2 tasks.
        started_rx.recv_timeout(DEADLINE).expect("blocker started");
        let queued: Vec<_> = (0..2)
            .map(|i| pool.spawn(move || i).expect("queued"))
            .collect();
        assert_eq!(pool.queued(), 2);
        match pool.spawn(|| 99) {
            Err(ReadPoolError::Full { capacity: 2 }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a full queue took a task"),
        }
        release_tx.send(()).expect("release");
        assert!(running.join().await.expect("blocker result"), "released");
        for (i, h) in queued.into_iter().enumerate() {
            assert_eq!(h.join().await.expect("result"), i);
        }
        // Room again.
        assert_eq!(pool.run(|| 7).await.expect("result"), 7);
    }

    #[tokio::test]
    async fn a_panicking_task_fails_alone_and_the_thread_keeps_serving() {
        let pool = pool(1, 4);
        let failed = pool.run(|| -> u32 { panic!("a read went wrong") }).await;
        assert!(matches!(failed, Err(ReadPoolError::Canceled)), "{failed:?}");
        for i in 0..3u32 {
            assert_eq!(pool.run(move || i + 1).await.expect("result"), i + 1);
        }
    }

    #[tokio::test]
    async fn a_task_whose_requester_left_is_skipped() {
        let pool = pool(1, 4);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        let running = pool.spawn(blocker(started_tx, release_rx)).expect("queued");
        started_rx.recv_timeout(DEADLINE).expect("blocker started");
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let abandoned = {
            let ran = ran.clone();
            pool.spawn(move || ran.store(true, std::sync::atomic::Ordering::SeqCst))
                .expect("queued")
        };
        drop(abandoned);
        release_tx.send(()).expect("release");
        assert!(running.join().await.expect("blocker result"));
        // FIFO on one thread: once this ran, the abandoned task was taken before it.
        pool.run(|| ()).await.expect("result");
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn an_invalid_config_is_refused() {
        let zero = ReadPoolConfig {
            pool_size: 0,
            max_tasks_per_worker: 1,
        };
        assert!(matches!(
            ReadPool::new(&zero),
            Err(ReadPoolError::InvalidConfig(_))
        ));
    }
}
