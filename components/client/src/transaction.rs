//! [`TransactionClient`] and [`Transaction`]: Percolator transactions over the stores'
//! transactional API.
//!
//! # A transaction
//!
//! `begin_*` takes a start timestamp from PD's TSO. Reads go to the snapshot at the start
//! timestamp, after the transaction's own writes, which are buffered locally until commit
//! (`txn_plan.rs`). A **pessimistic** transaction locks each key it writes or reads for update
//! when it does so (`KvPessimisticLock` at a fresh `for_update_ts`), so its commit cannot
//! meet write conflicts on them; an **optimistic** one detects conflicts at commit.
//!
//! # Commit (two-phase)
//!
//! 1. **Prewrite** every mutation, grouped by region, all regions in parallel; the first key
//!    (a pessimistic transaction: its first locked key) is the **primary**, which every lock
//!    names. A lock of another transaction met here is resolved and the whole prewrite sent
//!    again (a store writes nothing of a request that met a lock);
//!    a write conflict or an existing key for `insert` fails the commit.
//! 2. Take the **commit timestamp** from the TSO.
//! 3. **Commit the primary.** This is the commit point: before it, any failure rolls the
//!    transaction back (best effort: locks left behind are rolled back by whoever meets them
//!    once their TTL runs out) and the error is returned. The primary's commit is idempotent,
//!    so it is sent again after a lost answer, within the retry budget; if it can still not
//!    be confirmed, the commit fails with [`Error::Undetermined`] — never with a false
//!    success or failure. An answer that its lock is gone means a reader rolled the
//!    transaction back after its TTL ran out: [`Error::TxnRolledBack`].
//! 4. **Commit the secondaries**, grouped by region, in parallel. The transaction is
//!    committed whatever happens here: a failure is only logged, and the locks left are
//!    committed by whoever meets them (they point at the committed primary).
//!
//! **One phase**: an optimistic transaction of at most 64 keys that all lie in one region
//! sends a single prewrite with `try_one_pc`; the store commits it at once at a timestamp
//! above every read it served and above a fresh TSO timestamp taken just before (so the
//! commit is ordered after every transaction that started before it, as a two-phase commit's
//! TSO commit timestamp would be), writing no locks. If the store prewrote normally instead, or
//! the keys met locks or a conflict, the two-phase path above takes over (re-sending the
//! prewrite is idempotent). Should that one request's answer be lost, the two-phase path
//! re-sends it too, and a transaction the store had already committed is then confirmed by
//! the commit of its primary (reporting the later, TSO commit timestamp).
//!
//! **Async commit**: an optimistic transaction of at most 64 keys over several regions
//! prewrites with every lock marked for async commit, the primary's listing the secondaries,
//! and a fresh TSO timestamp as the floor of every lock's `min_commit_ts`. It is committed as
//! soon as every prewrite succeeded, at the largest `min_commit_ts` answered; the commits that
//! follow only clean up (readers decide such a transaction from all its keys the same way).
//!
//! While the transaction holds locks (from the first pessimistic lock, or from the start of
//! the commit), a background task extends the primary lock's TTL every
//! `txn_heartbeat_interval` (`KvTxnHeartBeat`), so that long transactions are not rolled back
//! by readers. Dropping a transaction without commit or rollback stops the heartbeat; its
//! locks then expire after `txn_lock_ttl`.
//!
//! Guarantees: **snapshot isolation** — every read of a transaction sees the data committed
//! before its start timestamp plus its own writes, and a transaction commits only if no
//! other transaction committed a write to one of its written (or locked) keys after its start
//! (optimistic) or after the key's lock (pessimistic); all its writes become visible at its
//! commit timestamp, atomically.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use pd_client::PdClient;
use proto::kvrpcpb::{self, KeyError};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::cluster::Cluster;
use crate::codec;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lock_resolver::{resolve_locks, unexpected_key_error};
use crate::snapshot::{non_empty, Snapshot};
use crate::txn_batch::{
    AsyncCommit, Commit, LockOutcome, PessimisticLock, PessimisticRollback, Prewrite,
    PrewriteOutcome, Rollback, TxnKey,
};
use crate::txn_plan::{physical_ms, Buffer, BufferError, BufferedRead, CommitPlan, Timestamp};
use crate::{Key, KvPair, Value};

/// Transactions of at most this many keys, all in one region, commit in one phase.
const ONE_PC_MAX_KEYS: usize = 64;
/// Optimistic transactions of at most this many keys over several regions use async commit.
const ASYNC_COMMIT_MAX_KEYS: usize = 64;

/// The transactional client. Cheap to clone: clones share the PD client, the region cache and
/// the store connections.
#[derive(Clone)]
pub struct TransactionClient {
    cluster: Arc<Cluster>,
}

impl std::fmt::Debug for TransactionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionClient")
            .field("cluster_id", &self.cluster.pd.cluster_id())
            .finish()
    }
}

impl TransactionClient {
    /// Connects to the cluster whose PD is reachable through `pd_endpoints`, with the
    /// default [`Config`].
    pub async fn connect(pd_endpoints: Vec<String>) -> Result<TransactionClient> {
        TransactionClient::with_config(pd_endpoints, Config::default()).await
    }

    /// [`TransactionClient::connect`] with explicit tuning.
    pub async fn with_config(
        pd_endpoints: Vec<String>,
        config: Config,
    ) -> Result<TransactionClient> {
        let pd = PdClient::connect_with_config(pd_endpoints, config.pd.clone()).await?;
        Ok(TransactionClient::with_pd_client(pd, config))
    }

    /// A client over an existing PD client.
    pub fn with_pd_client(pd: PdClient, config: Config) -> TransactionClient {
        TransactionClient {
            cluster: Arc::new(Cluster::new(pd, config)),
        }
    }

    /// A fresh timestamp from PD's TSO.
    pub async fn current_timestamp(&self) -> Result<Timestamp> {
        Ok(self.cluster.pd.get_ts().await?)
    }

    /// Starts an optimistic transaction: conflicts are detected at commit.
    pub async fn begin_optimistic(&self) -> Result<Transaction> {
        self.begin(false).await
    }

    /// Starts a pessimistic transaction: keys are locked as they are written or read for
    /// update.
    pub async fn begin_pessimistic(&self) -> Result<Transaction> {
        self.begin(true).await
    }

    async fn begin(&self, pessimistic: bool) -> Result<Transaction> {
        let began = tokio::time::Instant::now();
        let start_ts = self.current_timestamp().await?;
        Ok(Transaction {
            began,
            snapshot: self.snapshot(start_ts),
            cluster: self.cluster.clone(),
            start_ts,
            pessimistic,
            buffer: Buffer::default(),
            primary: None,
            locked: BTreeSet::new(),
            max_for_update_ts: 0,
            state: State::Active,
            heartbeat: None,
        })
    }

    /// A read-only view as of `ts`.
    pub fn snapshot(&self, ts: Timestamp) -> Snapshot {
        Snapshot {
            cluster: self.cluster.clone(),
            ts,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Active,
    Committed,
    RolledBack,
    /// The commit's outcome is unknown ([`Error::Undetermined`]).
    Undetermined,
}

/// A transaction; see the module docs. Not shared between tasks: operations take `&mut self`
/// or `&self`.
pub struct Transaction {
    cluster: Arc<Cluster>,
    snapshot: Snapshot,
    start_ts: Timestamp,
    pessimistic: bool,
    buffer: Buffer,
    /// A pessimistic transaction's first locked key, named by all its locks.
    primary: Option<Key>,
    /// Keys this (pessimistic) transaction holds pessimistic locks on.
    locked: BTreeSet<Key>,
    /// The largest `for_update_ts` of its pessimistic locks.
    max_for_update_ts: Timestamp,
    state: State,
    heartbeat: Option<JoinHandle<()>>,
    /// When the start timestamp was taken: lock TTLs count from there.
    began: tokio::time::Instant,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("start_ts", &self.start_ts)
            .field("pessimistic", &self.pessimistic)
            .field("buffered", &self.buffer.len())
            .field("state", &self.state)
            .finish()
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

impl Transaction {
    /// The start timestamp: reads see what was committed before it.
    pub fn start_timestamp(&self) -> Timestamp {
        self.start_ts
    }

    fn check_active(&self) -> Result<()> {
        let state = match self.state {
            State::Active => return Ok(()),
            State::Committed => "committed",
            State::RolledBack => "rolled back",
            State::Undetermined => "finished with an unknown outcome",
        };
        Err(Error::TxnFinished {
            start_ts: self.start_ts,
            state,
        })
    }

    /// The value of `key`: the transaction's own write, else the snapshot's.
    pub async fn get(&self, key: impl Into<Key>) -> Result<Option<Value>> {
        self.check_active()?;
        let key = non_empty(key.into())?;
        match self.buffer.get(&key) {
            BufferedRead::Value(v) => Ok(Some(v)),
            BufferedRead::Deleted => Ok(None),
            BufferedRead::NotWritten => self.snapshot.get(key).await,
        }
    }

    /// The values of those of `keys` that have one (own writes first), sorted by key.
    pub async fn batch_get(
        &self,
        keys: impl IntoIterator<Item = impl Into<Key>>,
    ) -> Result<Vec<KvPair>> {
        self.check_active()?;
        let mut out = Vec::new();
        let mut unread = Vec::new();
        for key in keys {
            let key = non_empty(key.into())?;
            match self.buffer.get(&key) {
                BufferedRead::Value(v) => out.push((key, v)),
                BufferedRead::Deleted => {}
                BufferedRead::NotWritten => unread.push(key),
            }
        }
        out.extend(self.snapshot.batch_get(unread).await?);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        Ok(out)
    }

    /// At most `limit` pairs of `[start, end)` (empty `end`: +inf), own writes included, in
    /// key order.
    pub async fn scan(
        &self,
        start: impl Into<Key>,
        end: impl Into<Key>,
        limit: u32,
    ) -> Result<Vec<KvPair>> {
        self.scan_merged(start.into(), end.into(), limit, false)
            .await
    }

    /// Like [`Transaction::scan`], in descending key order.
    pub async fn scan_reverse(
        &self,
        start: impl Into<Key>,
        end: impl Into<Key>,
        limit: u32,
    ) -> Result<Vec<KvPair>> {
        self.scan_merged(start.into(), end.into(), limit, true)
            .await
    }

    async fn scan_merged(
        &self,
        start: Key,
        end: Key,
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<KvPair>> {
        self.check_active()?;
        let extra = u32::try_from(self.buffer.scan_extra(&start, &end)).unwrap_or(u32::MAX);
        let asked = limit.saturating_add(extra);
        let pairs = (self.snapshot)
            .scan_walk(start.clone(), end.clone(), asked, reverse)
            .await?;
        let exhausted = pairs.len() < asked as usize;
        Ok((self.buffer).merge_scan(pairs, &start, &end, limit as usize, reverse, exhausted))
    }

    /// Writes `value` to `key` at commit. A pessimistic transaction locks the key first,
    /// unless it holds its lock already (see [`Transaction::lock_for_write`]).
    pub async fn put(&mut self, key: impl Into<Key>, value: impl Into<Value>) -> Result<()> {
        self.check_active()?;
        let key = non_empty(key.into())?;
        self.lock_for_write(&key).await?;
        self.buffer.put(key, value.into());
        Ok(())
    }

    /// Writes `value` to `key` at commit if the key has no value then; otherwise the commit
    /// fails with [`Error::AlreadyExists`] (a pessimistic transaction checks when it locks
    /// the key, and fails at once).
    pub async fn insert(&mut self, key: impl Into<Key>, value: impl Into<Value>) -> Result<()> {
        self.check_active()?;
        let key = non_empty(key.into())?;
        if self.pessimistic {
            let exists = self.lock_pessimistic(vec![key.clone()], true).await?;
            if exists.first().copied().unwrap_or(false)
                && matches!(self.buffer.get(&key), BufferedRead::NotWritten)
            {
                return Err(Error::AlreadyExists { key });
            }
        }
        self.buffer
            .insert(key, value.into())
            .map_err(|BufferError::AlreadyWritten(key)| Error::AlreadyExists { key })
    }

    /// Deletes `key` at commit. A pessimistic transaction locks the key first, unless it
    /// holds its lock already.
    pub async fn delete(&mut self, key: impl Into<Key>) -> Result<()> {
        self.check_active()?;
        let key = non_empty(key.into())?;
        self.lock_for_write(&key).await?;
        self.buffer.delete(key);
        Ok(())
    }

    /// Locks `key` for a write of a pessimistic transaction, unless this transaction locked
    /// it before. The write may have been computed from what that earlier lock returned
    /// (`get_for_update`), so it must commit under that lock: if the lock was lost meanwhile
    /// (rolled back by a reader who found it expired, and the key written by another
    /// transaction), the prewrite fails with `PessimisticLockNotFound` and nothing commits.
    /// Locking again at a fresh `for_update_ts` would succeed instead and commit a write based
    /// on a stale read: a lost update.
    async fn lock_for_write(&mut self, key: &Key) -> Result<()> {
        if self.pessimistic && !self.locked.contains(key) {
            self.lock_pessimistic(vec![key.clone()], false).await?;
        }
        Ok(())
    }

    /// Makes `keys` take part in conflict detection without writing them: the commit fails if
    /// another transaction wrote one of them after this one started (optimistic), or they are
    /// locked now (pessimistic).
    pub async fn lock_keys(
        &mut self,
        keys: impl IntoIterator<Item = impl Into<Key>>,
    ) -> Result<()> {
        self.check_active()?;
        let keys: Vec<Key> = (keys.into_iter())
            .map(|k| non_empty(k.into()))
            .collect::<Result<_>>()?;
        if self.pessimistic {
            self.lock_pessimistic(keys, false).await?;
        } else {
            for key in keys {
                self.buffer.lock(key);
            }
        }
        Ok(())
    }

    /// Reads `key` for update. Pessimistic: locks it and returns its newest committed value
    /// (or the transaction's own write). Optimistic: reads it at the start timestamp and locks
    /// it at commit, so the commit fails if another transaction wrote it meanwhile.
    pub async fn get_for_update(&mut self, key: impl Into<Key>) -> Result<Option<Value>> {
        self.check_active()?;
        let key = non_empty(key.into())?;
        if !self.pessimistic {
            let value = self.get(key.clone()).await?;
            self.buffer.lock(key);
            return Ok(value);
        }
        let value = self.lock_one_returning_value(key.clone()).await?;
        Ok(match self.buffer.get(&key) {
            BufferedRead::Value(v) => Some(v),
            BufferedRead::Deleted => None,
            BufferedRead::NotWritten => value,
        })
    }

    /// The TTL of a lock written now: the time since the transaction began plus
    /// `txn_lock_ttl`. Stores count a lock's TTL from its transaction's start timestamp (as
    /// TiKV's do), so a lock first written late in a long transaction must cover the time
    /// already spent; else the next reader finds it expired at birth and rolls it back.
    fn lock_ttl_ms(&self) -> u64 {
        let ttl = self.began.elapsed() + self.cluster.config.txn_lock_ttl;
        u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// The primary, chosen as `first` if none is yet; starts the heartbeat.
    fn primary_or(&mut self, first: &Key) -> Key {
        let primary = self.primary.get_or_insert_with(|| first.clone()).clone();
        self.start_heartbeat(primary.clone());
        primary
    }

    /// Locks `keys` pessimistically (at a fresh `for_update_ts`), resolving other
    /// transactions' locks and retrying write conflicts until the retry budget runs out.
    /// Returns, with `check_existence`, whether each key (sorted) has a value.
    async fn lock_pessimistic(
        &mut self,
        keys: Vec<Key>,
        check_existence: bool,
    ) -> Result<Vec<bool>> {
        let keys = TxnKey::sorted(keys);
        let Some(first) = keys.first() else {
            return Ok(Vec::new());
        };
        let primary = self.primary_or(&first.raw);
        let mut bo = self.cluster.backoff();
        loop {
            let for_update_ts = self.cluster.pd.get_ts().await?;
            let op = PessimisticLock {
                start_ts: self.start_ts,
                for_update_ts,
                primary: primary.clone(),
                lock_ttl_ms: self.lock_ttl_ms(),
                check_existence,
            };
            let outcome = self.cluster.run_batch(&op, keys.clone(), bo.clone()).await;
            let mut errors = Vec::new();
            let mut exists = Vec::new();
            match outcome {
                Ok(outcomes) => {
                    for o in outcomes {
                        match o {
                            LockOutcome::Error(e) => errors.push(*e),
                            LockOutcome::Exists(e) => exists.push(e),
                        }
                    }
                }
                Err(e) => {
                    self.undo_pessimistic(&keys, for_update_ts).await;
                    return Err(e);
                }
            }
            if errors.is_empty() {
                self.max_for_update_ts = self.max_for_update_ts.max(for_update_ts);
                for k in &keys {
                    self.locked.insert(k.raw.clone());
                    self.buffer.lock(k.raw.clone());
                }
                return Ok(exists);
            }
            // Some part failed: the others may hold locks of this request.
            self.undo_pessimistic(&keys, for_update_ts).await;
            self.after_lock_errors(errors, &mut bo).await?;
        }
    }

    /// Pessimistic lock of one key, returning its value as of a fresh `for_update_ts`.
    async fn lock_one_returning_value(&mut self, key: Key) -> Result<Option<Value>> {
        let primary = self.primary_or(&key);
        let encoded = codec::encode(&key);
        let mut bo = self.cluster.backoff();
        loop {
            let for_update_ts = self.cluster.pd.get_ts().await?;
            let req = kvrpcpb::PessimisticLockRequest {
                mutations: vec![kvrpcpb::Mutation {
                    op: kvrpcpb::Op::PessimisticLock as i32,
                    key: key.clone(),
                    ..Default::default()
                }],
                primary_lock: primary.clone(),
                start_version: self.start_ts,
                for_update_ts,
                lock_ttl: self.lock_ttl_ms(),
                return_values: true,
                is_first_lock: self.locked.is_empty(),
                ..Default::default()
            };
            let resp = self.cluster.send_to_key(&encoded, req, &mut bo).await?;
            if resp.errors.is_empty() {
                self.max_for_update_ts = self.max_for_update_ts.max(for_update_ts);
                self.locked.insert(key.clone());
                self.buffer.lock(key);
                let found = !resp.not_founds.first().copied().unwrap_or(true);
                return Ok(found.then(|| resp.values.into_iter().next().unwrap_or_default()));
            }
            self.after_lock_errors(resp.errors, &mut bo).await?;
        }
    }

    /// Acts on the key errors of a pessimistic lock request: locks are resolved (then the
    /// caller retries), write conflicts retried at a newer `for_update_ts`; others end it.
    async fn after_lock_errors(&self, errors: Vec<KeyError>, bo: &mut Backoff) -> Result<()> {
        let mut locks = Vec::new();
        let mut conflict = None;
        for e in errors {
            if let Some(lock) = e.locked {
                locks.push(lock);
            } else if let Some(c) = e.conflict {
                conflict = Some(c);
            } else {
                return Err(self.txn_key_error(e));
            }
        }
        if !locks.is_empty() {
            if resolve_locks(&self.cluster, self.start_ts, locks, bo).await? {
                return bo.retry_now(&"locks resolved").await;
            }
            return bo.wait(&"locked by a live transaction").await;
        }
        let why = format!("write conflict at lock: {conflict:?}");
        bo.wait(&why).await
    }

    /// Best effort: removes the pessimistic locks a failed lock request may have left.
    async fn undo_pessimistic(&self, keys: &[TxnKey], for_update_ts: Timestamp) {
        let op = PessimisticRollback {
            start_ts: self.start_ts,
            for_update_ts,
        };
        let fresh: Vec<TxnKey> = (keys.iter())
            .filter(|k| !self.locked.contains(&k.raw))
            .cloned()
            .collect();
        if fresh.is_empty() {
            return;
        }
        if let Err(e) = self
            .cluster
            .run_batch(&op, fresh, self.cluster.backoff())
            .await
        {
            debug!(start_ts = self.start_ts, %e, "pessimistic rollback after a failed lock");
        }
    }

    /// The client's error for a key error of this transaction's command.
    fn txn_key_error(&self, e: KeyError) -> Error {
        if let Some(c) = e.conflict {
            return Error::WriteConflict {
                key: c.key,
                start_ts: self.start_ts,
                conflict_start_ts: c.conflict_ts,
                conflict_commit_ts: c.conflict_commit_ts,
            };
        }
        if let Some(a) = e.already_exist {
            return Error::AlreadyExists { key: a.key };
        }
        if e.txn_lock_not_found.is_some() || !e.retryable.is_empty() {
            let reason = if e.retryable.is_empty() {
                format!("{:?}", e.txn_lock_not_found)
            } else {
                e.retryable
            };
            return Error::TxnRolledBack {
                start_ts: self.start_ts,
                reason,
            };
        }
        unexpected_key_error(e)
    }

    fn start_heartbeat(&mut self, primary: Key) {
        if self.heartbeat.is_some() {
            return;
        }
        let cluster = self.cluster.clone();
        let start_ts = self.start_ts;
        let interval = self.cluster.config.txn_heartbeat_interval;
        // Each beat adds the time since the start itself.
        let ttl = u64::try_from(self.cluster.config.txn_lock_ttl.as_millis()).unwrap_or(u64::MAX);
        self.heartbeat = Some(tokio::spawn(heartbeat(
            cluster, primary, start_ts, interval, ttl,
        )));
    }

    fn stop_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    /// Commits the transaction (see the module docs); returns its commit timestamp, or `None`
    /// if it wrote and locked nothing.
    pub async fn commit(&mut self) -> Result<Option<Timestamp>> {
        self.check_active()?;
        let plan = CommitPlan::new(&self.buffer, self.primary.as_ref(), &self.locked);
        let Some(plan) = plan else {
            self.state = State::Committed;
            self.stop_heartbeat();
            return Ok(None);
        };
        self.start_heartbeat(plan.primary.clone());
        let result = self.two_phase_commit(&plan).await;
        self.stop_heartbeat();
        match result {
            Ok(commit_ts) => {
                self.state = State::Committed;
                Ok(Some(commit_ts))
            }
            Err(CommitError::BeforeCommitPoint(e)) => {
                self.rollback_keys(&plan).await;
                self.state = State::RolledBack;
                Err(e)
            }
            Err(CommitError::Undetermined(e)) => {
                // Committed, or to be rolled back by whoever meets its locks.
                self.state = State::Undetermined;
                Err(e)
            }
        }
    }

    async fn two_phase_commit(
        &self,
        plan: &CommitPlan,
    ) -> std::result::Result<Timestamp, CommitError> {
        use CommitError::BeforeCommitPoint as Before;
        if let Some(commit_ts) = self.try_one_phase_commit(plan).await? {
            return Ok(commit_ts);
        }
        if plan.mutations.len() <= ASYNC_COMMIT_MAX_KEYS && !self.pessimistic {
            return self.async_commit(plan).await;
        }
        self.prewrite(plan, None).await.map_err(Before)?;
        let commit_ts = self
            .cluster
            .pd
            .get_ts()
            .await
            .map_err(|e| Before(e.into()))?;
        self.commit_primary(&plan.primary, commit_ts).await?;
        debug!(start_ts = self.start_ts, commit_ts, "transaction committed");
        let secondaries: Vec<TxnKey> = plan
            .secondaries()
            .map(|m| TxnKey::new(m.key().clone()))
            .collect();
        if !secondaries.is_empty() {
            let op = Commit {
                start_ts: self.start_ts,
                commit_ts,
            };
            match self
                .cluster
                .run_batch(&op, secondaries, self.cluster.backoff())
                .await
            {
                Ok(errors) if errors.is_empty() => {}
                Ok(errors) => warn!(
                    start_ts = self.start_ts,
                    ?errors,
                    "secondary commit failed; left to lock resolution"
                ),
                Err(e) => warn!(
                    start_ts = self.start_ts,
                    %e,
                    "secondary commit failed; left to lock resolution"
                ),
            }
        }
        Ok(commit_ts)
    }

    /// Async commit of a small transaction over several regions: every lock is marked and
    /// the primary's lists the secondaries, so the transaction is committed as soon as every
    /// prewrite succeeded — at the largest `min_commit_ts` of its locks, which every store chose
    /// above the reads it served and above a fresh TSO floor. Readers that find its locks after
    /// their TTL decide the same way from all its keys (`KvCheckSecondaryLocks`). The commits
    /// that follow only clean up; a failure there is logged and left to lock resolution.
    async fn async_commit(&self, plan: &CommitPlan) -> std::result::Result<Timestamp, CommitError> {
        use CommitError::BeforeCommitPoint as Before;
        let floor = self
            .cluster
            .pd
            .get_ts()
            .await
            .map_err(|e| Before(e.into()))?;
        let secondaries: Vec<Key> = plan.secondaries().map(|m| m.key().clone()).collect();
        let commit_ts = self
            .prewrite(plan, Some(AsyncCommit { secondaries, floor }))
            .await
            .map_err(Before)?;
        if commit_ts == 0 {
            // Every store answers a min_commit_ts for async commit; without one the locks may
            // be plain: commit through the primary like two-phase commit.
            return Err(Before(Error::KeyError(
                "async-commit prewrite returned no min_commit_ts".into(),
            )));
        }
        debug!(
            start_ts = self.start_ts,
            commit_ts, "transaction committed (async commit)"
        );
        let keys: Vec<TxnKey> = plan
            .mutations
            .iter()
            .map(|m| TxnKey::new(m.key().clone()))
            .collect();
        let op = Commit {
            start_ts: self.start_ts,
            commit_ts,
        };
        match self
            .cluster
            .run_batch(&op, keys, self.cluster.backoff())
            .await
        {
            Ok(errors) if errors.is_empty() => {}
            Ok(errors) => warn!(
                start_ts = self.start_ts,
                ?errors,
                "async commit: committing keys failed; left to lock resolution"
            ),
            Err(e) => {
                warn!(start_ts = self.start_ts, %e, "async commit: committing keys failed; left to lock resolution")
            }
        }
        Ok(commit_ts)
    }

    /// One-phase commit of a small transaction whose keys all lie in one region: one prewrite
    /// with `try_one_pc` commits it on the store, at a timestamp the store picks above every
    /// read it served (no locks, no second round). `Ok(None)`: not attempted, or the store
    /// prewrote normally instead (then the two-phase path goes on, re-sending the prewrite
    /// idempotently); conflicts and locks also fall back to that path, which handles them.
    async fn try_one_phase_commit(
        &self,
        plan: &CommitPlan,
    ) -> std::result::Result<Option<Timestamp>, CommitError> {
        if plan.mutations.len() > ONE_PC_MAX_KEYS || self.pessimistic {
            return Ok(None);
        }
        let mut bo = self.cluster.backoff();
        let Ok(route) = self
            .cluster
            .locate(&codec::encode(&plan.primary), &mut bo)
            .await
        else {
            return Ok(None);
        };
        let in_region = |k: &[u8]| {
            k >= &route.region.start_key[..]
                && (route.region.end_key.is_empty() || k < &route.region.end_key[..])
        };
        if !plan.mutations.iter().all(|m| in_region(&m.encoded)) {
            return Ok(None);
        }
        // The store commits above every read *it* served; a fresh timestamp as the floor also
        // puts the commit after every transaction that began before this commit (real-time
        // order), so that a concurrent writer which started earlier still sees a conflict.
        let Ok(floor) = self.cluster.pd.get_ts().await else {
            return Ok(None);
        };
        let req = kvrpcpb::PrewriteRequest {
            min_commit_ts: floor,
            mutations: plan.mutations.iter().map(|m| m.mutation.clone()).collect(),
            primary_lock: plan.primary.clone(),
            start_version: self.start_ts,
            lock_ttl: self.lock_ttl_ms(),
            txn_size: plan.mutations.len() as u64,
            try_one_pc: true,
            ..Default::default()
        };
        match self.cluster.send(&route, req, &mut bo).await {
            Ok(Some(resp)) if resp.errors.is_empty() && resp.one_pc_commit_ts > 0 => {
                debug!(
                    start_ts = self.start_ts,
                    commit_ts = resp.one_pc_commit_ts,
                    "transaction committed in one phase"
                );
                Ok(Some(resp.one_pc_commit_ts))
            }
            // Prewritten normally, met locks or a conflict, or a region error: the two-phase
            // path decides.
            Ok(_) => Ok(None),
            // It may have committed: say so rather than guess.
            Err(e @ Error::Undetermined(_)) => Err(CommitError::Undetermined(e)),
            Err(_) => Ok(None),
        }
    }

    /// Prewrites every mutation, resolving other transactions' locks met on the way.
    /// With `async_commit`, answers the largest `min_commit_ts` of the locks written.
    async fn prewrite(
        &self,
        plan: &CommitPlan,
        async_commit: Option<AsyncCommit>,
    ) -> Result<Timestamp> {
        let op = Prewrite {
            start_ts: self.start_ts,
            primary: plan.primary.clone(),
            lock_ttl_ms: self.lock_ttl_ms(),
            txn_size: plan.mutations.len() as u64,
            for_update_ts: if self.pessimistic {
                self.max_for_update_ts.max(self.start_ts)
            } else {
                0
            },
            async_commit,
        };
        let mut min_commit_ts = 0;
        let mut bo = self.cluster.backoff();
        loop {
            let outcomes = self
                .cluster
                .run_batch(&op, plan.mutations.clone(), bo.clone())
                .await?;
            let mut locks = Vec::new();
            for outcome in outcomes {
                match outcome {
                    PrewriteOutcome::Prewritten { min_commit_ts: ts } => {
                        min_commit_ts = min_commit_ts.max(ts)
                    }
                    PrewriteOutcome::Failed(e) => match e.locked {
                        Some(lock) => locks.push(lock),
                        None => return Err(self.txn_key_error(*e)),
                    },
                }
            }
            if locks.is_empty() {
                return Ok(min_commit_ts);
            }
            // Prewrite everything again: a store writes nothing of a request in which a key
            // is locked (as TiKV does), so the request's other keys are not prewritten either;
            // keys already prewritten by another part succeed again (idempotent).
            if resolve_locks(&self.cluster, self.start_ts, locks, &mut bo).await? {
                bo.retry_now(&"locks resolved").await?;
            } else {
                bo.wait(&"prewrite met a live transaction's lock").await?;
            }
        }
    }

    /// Commits the primary: the commit point. Sent again after lost answers (it is
    /// idempotent) within the retry budget.
    async fn commit_primary(
        &self,
        primary: &Key,
        commit_ts: Timestamp,
    ) -> std::result::Result<(), CommitError> {
        let encoded = codec::encode(primary);
        let mut bo = self.cluster.backoff();
        let mut maybe_sent = false;
        loop {
            let req = kvrpcpb::CommitRequest {
                start_version: self.start_ts,
                commit_version: commit_ts,
                keys: vec![primary.clone()],
                ..Default::default()
            };
            let result = self.cluster.send_to_key(&encoded, req, &mut bo).await;
            match result {
                Ok(resp) => {
                    return match resp.error {
                        None => Ok(()),
                        // The lock is gone and there is no commit record: rolled back, by a
                        // reader after its TTL ran out, so nothing of it was committed.
                        Some(e) => Err(CommitError::BeforeCommitPoint(self.txn_key_error(e))),
                    };
                }
                Err(Error::Undetermined(why)) => {
                    maybe_sent = true;
                    if let Err(e) = bo.wait(&why).await {
                        return Err(CommitError::Undetermined(undetermined_commit(
                            commit_ts, &e,
                        )));
                    }
                }
                // Transport failures are retried inside `send_to_key`; any attempt may have
                // reached the store.
                Err(e @ Error::Timeout { .. }) => {
                    return Err(CommitError::Undetermined(undetermined_commit(
                        commit_ts, &e,
                    )));
                }
                Err(e) if maybe_sent => {
                    return Err(CommitError::Undetermined(undetermined_commit(
                        commit_ts, &e,
                    )));
                }
                Err(e) => return Err(CommitError::BeforeCommitPoint(e)),
            }
        }
    }

    /// Best effort: rolls back every key of a commit that failed before its commit point.
    async fn rollback_keys(&self, plan: &CommitPlan) {
        let keys: Vec<TxnKey> = (plan.mutations.iter())
            .map(|m| TxnKey::new(m.key().clone()))
            .collect();
        let op = Rollback {
            start_ts: self.start_ts,
        };
        match self
            .cluster
            .run_batch(&op, keys, self.cluster.backoff())
            .await
        {
            Ok(errors) if errors.is_empty() => {}
            Ok(errors) => debug!(
                start_ts = self.start_ts,
                ?errors,
                "rollback after a failed commit"
            ),
            Err(e) => debug!(start_ts = self.start_ts, %e, "rollback after a failed commit"),
        }
    }

    /// Gives the transaction up: removes its pessimistic locks; nothing else was sent.
    pub async fn rollback(&mut self) -> Result<()> {
        self.check_active()?;
        self.stop_heartbeat();
        self.state = State::RolledBack;
        if self.locked.is_empty() {
            return Ok(());
        }
        let keys = TxnKey::sorted(self.locked.iter().cloned());
        let op = PessimisticRollback {
            start_ts: self.start_ts,
            for_update_ts: self.max_for_update_ts,
        };
        let errors = self
            .cluster
            .run_batch(&op, keys, self.cluster.backoff())
            .await?;
        match errors.into_iter().next() {
            None => Ok(()),
            Some(e) => Err(unexpected_key_error(e)),
        }
    }
}

/// How a commit failed: before its commit point (nothing committed; rolled back), or with
/// an unknown outcome.
enum CommitError {
    BeforeCommitPoint(Error),
    Undetermined(Error),
}

fn undetermined_commit(commit_ts: Timestamp, last: &Error) -> Error {
    Error::Undetermined(format!(
        "the commit of the primary key at {commit_ts} was not confirmed: {last}"
    ))
}

/// Extends the primary lock's TTL every `interval` to the time since `start_ts` plus
/// `ttl_ms`, until aborted. Failures (the primary not prewritten yet, a store down) are
/// ignored; the next beat tries again.
async fn heartbeat(
    cluster: Arc<Cluster>,
    primary: Key,
    start_ts: Timestamp,
    interval: Duration,
    ttl_ms: u64,
) {
    let encoded = codec::encode(&primary);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Ok(now) = cluster.pd.get_ts().await else {
            continue;
        };
        let advise = physical_ms(now).saturating_sub(physical_ms(start_ts)) + ttl_ms;
        let req = kvrpcpb::TxnHeartBeatRequest {
            primary_lock: primary.clone(),
            start_version: start_ts,
            advise_lock_ttl: advise,
            ..Default::default()
        };
        let mut bo = Backoff::new(&cluster.config);
        match cluster.send_to_key(&encoded, req, &mut bo).await {
            Ok(resp) if resp.error.is_none() => {
                debug!(start_ts, lock_ttl = resp.lock_ttl, "heartbeat");
            }
            Ok(resp) => debug!(start_ts, error = ?resp.error, "heartbeat refused"),
            Err(e) => debug!(start_ts, %e, "heartbeat failed"),
        }
    }
}
