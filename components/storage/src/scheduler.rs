//! The transaction scheduler: runs transactional write commands so that no two commands
//! touching a key interleave their check and their write.
//!
//! A command:
//! 1. waits for the [`Latches`] of its keys;
//! 2. gets a read grant from the region's leader (every entry committed before is applied)
//!    and takes an engine snapshot after it;
//! 3. decides on that snapshot with a pure action (`crate::txn`) that collects its writes in
//!    an [`MvccTxn`] — on a blocking thread, never on an async worker;
//! 4. proposes the writes through Raft as plain puts and deletes and waits until they are
//!    applied. The latches (and the memory locks of an async-commit prewrite) are released
//!    when the raftstore answers the proposal, not when the caller stops waiting.
//!
//! A command that decides to write nothing answers after step 3.
//!
//! Deliberately absent: waking a command when a lock it met is released (the server's
//! pessimistic lock handler re-runs its command until the lock goes or its wait time is over),
//! deadlock detection, command priorities, flow control.

use bytes::Bytes;
use engine::{Engine, CF_DEFAULT, CF_LOCK, CF_WRITE};
use proto::metapb::Region;
use raftstore::cmd::WriteOp;
use raftstore::{RequestHeader, StoreRouter};

use crate::concurrency::{ConcurrencyManager, MemoryLocks};
use crate::kv::{self, RaftKv};
use crate::latch::{LatchGuard, Latches};
use crate::mvcc::{self, Key, Lock, MvccReader, MvccTxn, TimeStamp};

/// Why a command failed.
#[derive(Debug)]
pub enum SchedError {
    /// A region error (not leader, epoch, busy, …): nothing was written; the client retries.
    Region(raftstore::Error),
    /// The command's own verdict (conflict, locked, not found, …): nothing was written.
    Txn(mvcc::Error),
    /// The writes were proposed but their fate is unknown (timeout, shutdown).
    Undetermined(String),
}

impl From<raftstore::Error> for SchedError {
    fn from(e: raftstore::Error) -> Self {
        SchedError::Region(e)
    }
}

impl From<kv::Error> for SchedError {
    fn from(e: kv::Error) -> Self {
        match e {
            kv::Error::Raftstore(e) => SchedError::Region(e),
            kv::Error::Undetermined(why) => SchedError::Undetermined(why),
            kv::Error::Invalid(m) | kv::Error::Other(m) => SchedError::Txn(mvcc::Error::Engine(m)),
        }
    }
}

impl From<mvcc::Error> for SchedError {
    fn from(e: mvcc::Error) -> Self {
        SchedError::Txn(e)
    }
}

pub type SchedResult<T> = Result<T, SchedError>;

/// See the module docs. Cheap to clone (shared).
#[derive(Clone)]
pub struct TxnScheduler {
    kv: RaftKv,
    latches: Latches,
    cm: ConcurrencyManager,
}

impl TxnScheduler {
    /// Commands through `kv` (whose timeout bounds each of their waits).
    pub fn new(kv: RaftKv) -> TxnScheduler {
        TxnScheduler {
            kv,
            latches: Latches::default(),
            cm: ConcurrencyManager::default(),
        }
    }

    pub fn kv(&self) -> &RaftKv {
        &self.kv
    }

    pub fn concurrency_manager(&self) -> &ConcurrencyManager {
        &self.cm
    }

    pub fn router(&self) -> &StoreRouter {
        self.kv.router()
    }

    pub fn engine(&self) -> &Engine {
        self.kv.engine()
    }

    /// Runs a write command over `keys` (see the module docs).
    pub async fn write<T, F>(
        &self,
        header: RequestHeader,
        keys: &[Key],
        decide: F,
    ) -> SchedResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&MvccReader<'_>, &mut MvccTxn) -> mvcc::Result<T> + Send + 'static,
    {
        self.write_inner(
            header,
            keys,
            move |reader, txn, _, _| decide(reader, txn).map(|out| (out, Vec::new())),
            false,
        )
        .await
    }

    /// Like [`TxnScheduler::write`], for a command that needs the region's current range (it
    /// scans the region, e.g. resolving every lock of a transaction).
    pub async fn write_in_region<T, F>(
        &self,
        header: RequestHeader,
        keys: &[Key],
        decide: F,
    ) -> SchedResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&MvccReader<'_>, &mut MvccTxn, &Region) -> mvcc::Result<T> + Send + 'static,
    {
        self.write_inner(
            header,
            keys,
            move |reader, txn, _, region| decide(reader, txn, region).map(|out| (out, Vec::new())),
            false,
        )
        .await
    }

    /// Deletes every version, lock and value of the keys in `[start, end)` (encoded; `end`
    /// empty: the end of the region) through Raft, holding the range latch.
    pub async fn delete_range(
        &self,
        header: RequestHeader,
        start: Vec<u8>,
        end: Vec<u8>,
    ) -> SchedResult<()> {
        let latches = self.kv.latch_range(&self.latches).await?;
        let ops = [CF_DEFAULT, CF_LOCK, CF_WRITE]
            .into_iter()
            .map(|cf| {
                WriteOp::delete_range(cf, Bytes::from(start.clone()), Bytes::from(end.clone()))
            })
            .collect();
        self.propose_ops(header, ops, latches, None).await
    }

    /// Like [`TxnScheduler::write`], for a command whose timestamps depend on the store's
    /// `max_ts` (async-commit and one-phase prewrites): `decide` gets `max_ts` and returns the
    /// locks to publish in memory until its writes are applied.
    pub async fn write_with_max_ts<T, F>(
        &self,
        header: RequestHeader,
        keys: &[Key],
        decide: F,
    ) -> SchedResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&MvccReader<'_>, &mut MvccTxn, TimeStamp) -> mvcc::Result<(T, Vec<(Key, Lock)>)>
            + Send
            + 'static,
    {
        self.write_inner(
            header,
            keys,
            move |reader, txn, max_ts, _| decide(reader, txn, max_ts),
            true,
        )
        .await
    }

    async fn write_inner<T, F>(
        &self,
        header: RequestHeader,
        keys: &[Key],
        decide: F,
        with_max_ts: bool,
    ) -> SchedResult<T>
    where
        T: Send + 'static,
        F: FnOnce(
                &MvccReader<'_>,
                &mut MvccTxn,
                TimeStamp,
                &Region,
            ) -> mvcc::Result<(T, Vec<(Key, Lock)>)>
            + Send
            + 'static,
    {
        let latches = self.kv.latch(&self.latches, keys).await?;
        let region = self.kv.read_grant(header.clone()).await?.region;
        let engine = self.kv.engine().clone();
        let cm = self.cm.clone();
        let deciding = std::time::Instant::now();
        let decided = tokio::task::spawn_blocking(
            move || -> mvcc::Result<(T, MvccTxn, Option<MemoryLocks>)> {
                let snap = engine.snapshot();
                let reader = MvccReader::new(&snap);
                let mut txn = MvccTxn::new();
                if with_max_ts {
                    let (out, memory) = cm.decide_with_max_ts(|max_ts| {
                        let (out, locks) = decide(&reader, &mut txn, max_ts, &region)?;
                        Ok((out, locks))
                    })?;
                    Ok((out, txn, Some(memory)))
                } else {
                    let (out, _) = decide(&reader, &mut txn, cm.max_ts(), &region)?;
                    Ok((out, txn, None))
                }
            },
        )
        .await
        .map_err(|e| SchedError::Txn(mvcc::Error::Engine(format!("command panicked: {e}"))))?;
        crate::kv::record_stage("decide", deciding.elapsed());
        let (out, txn, memory): (T, MvccTxn, Option<MemoryLocks>) = decided?;
        if txn.is_empty() {
            return Ok(out);
        }
        self.propose(header, txn, latches, memory).await?;
        Ok(out)
    }

    /// Proposes `txn`'s writes and waits until they are applied; `latches` and `memory` are
    /// released when the raftstore answers.
    async fn propose(
        &self,
        header: RequestHeader,
        txn: MvccTxn,
        latches: LatchGuard,
        memory: Option<MemoryLocks>,
    ) -> SchedResult<()> {
        self.propose_ops(header, txn.into_write_ops(), latches, memory)
            .await
    }

    async fn propose_ops(
        &self,
        header: RequestHeader,
        ops: Vec<WriteOp>,
        latches: LatchGuard,
        memory: Option<MemoryLocks>,
    ) -> SchedResult<()> {
        // Released when the raftstore answers, memory locks before latches: a request the
        // caller sends right after the answer never meets this command's memory locks.
        self.kv.write(header, ops, (memory, latches)).await?;
        Ok(())
    }
}
