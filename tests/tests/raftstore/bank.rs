//! Snapshot isolation of Percolator transactions on a replicated multi-region cluster, checked
//! by workloads of read-modify-write transactions under faults:
//!
//! - **bank**: transfers between accounts spread over three regions, while readers sum every
//!   balance at fresh timestamps; every snapshot total must be the initial total, and the final
//!   balances must be the initial ones plus the effect of exactly the committed transfers (every
//!   acknowledged one among them, no aborted one).
//! - **lost update**: clients increment one counter concurrently (together with a mirror in
//!   another region); the final counter counts exactly the committed increments, and no two
//!   acknowledged increments wrote the same value.
//! - **read skew**: transfers between two keys in two regions, many of whose clients die right
//!   after committing the primary; readers that read the two keys with separate requests at one
//!   timestamp must never see half a transfer.
//!
//! The transactions come from a small Percolator client in this file, speaking to the stores'
//! transactional API (`server::txn::TxnStorage`) as a TiKV client would: timestamps from a
//! shared counter standing in for PD's TSO (`physical_ms << 18 | logical`, so that lock TTLs
//! expire in real milliseconds), every request routed to its region's leader and resent on
//! region errors (and on undetermined outcomes: Percolator's commands are idempotent per
//! transaction), locks met by readers and writers resolved through the primary's status (commit
//! or roll back when decided, push the `min_commit_ts` of a live one above the read, back off
//! otherwise). Writers prewrite the primary, then the secondary, then commit the primary (the
//! commit point) and the secondary; some clients die after the prewrites or after the primary's
//! commit, leaving their locks for others to resolve.
//!
//! A seeded nemesis kills leaders' stores and restarts them, partitions and isolates stores.
//! At the end every lock is resolved (scan lock over every region finds none), each
//! transaction's fate is asked from its primary, and the replicas must be identical.
//!
//! The seed is printed first; `RANGEKV_TXN_SEED=<seed>` replays the same choices of faults,
//! keys, amounts and client deaths (not the same thread timing).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use proto::kvrpcpb::{self, Context, LockInfo, Mutation, Op};
use rand::Rng;
use server::raw::{Failure, UNDETERMINED_PREFIX};
use server::txn::{FromTxnFailure, TxnFailure, TxnResult, TxnStorage};
use server::Limits;
use storage::mvcc::Key;
use tests::network::{Isolate, OneWay, Partition};
use tests::seed::{rng_for, seed_from, TXN_SEED_VAR};
use tests::Cluster;

/// The TTL of every lock, in TSO milliseconds.
const LOCK_TTL_MS: u64 = 800;
/// How long one step of a transaction (a read, a prewrite, a commit) may take before the client
/// gives up on it.
const STEP_TIMEOUT: Duration = Duration::from_secs(8);

/// The memcomparable encoding of a user key: how region ranges of transactional data are cut.
fn enc(raw: &[u8]) -> Vec<u8> {
    Key::from_raw(raw).into_encoded()
}

fn physical_ms(ts: u64) -> u64 {
    ts >> 18
}

/// PD's timestamp oracle, in process: unique, increasing, `physical_ms << 18 | logical`.
struct Tso {
    origin: Instant,
    last: AtomicU64,
}

impl Tso {
    fn new() -> Tso {
        Tso {
            origin: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        let physical = (self.origin.elapsed().as_millis() as u64 + 1) << 18;
        let prev = self
            .last
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                Some((l + 1).max(physical))
            })
            .expect("always updates");
        (prev + 1).max(physical)
    }
}

/// What became of a transaction, as its client knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The primary's commit was acknowledged.
    Committed,
    /// The client decided not to commit (a conflict, or a resolver rolled it back first).
    Aborted,
    /// The client gave up or died before it knew.
    Unknown,
}

/// One transaction that got as far as prewriting: it added `deltas` to `keys` (primary first),
/// having read `reads` at `start_ts` and written `reads + deltas`.
#[derive(Clone, Debug)]
struct TxnRecord {
    start_ts: u64,
    keys: Vec<Vec<u8>>,
    reads: Vec<i64>,
    deltas: Vec<i64>,
    outcome: Outcome,
}

/// Where a client dies on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Death {
    None,
    AfterPrewrite,
    AfterPrimaryCommit,
}

/// How a lock a request met was dealt with.
enum Resolution {
    /// Committed or rolled back: the key can be read or written again.
    Resolved,
    /// Its transaction will commit after the read (its `min_commit_ts` was pushed): a read may
    /// ignore its locks.
    Bypass(u64),
    /// Its transaction is alive (or the answer was not clear): back off and try again.
    Pending,
}

/// The cluster (behind a lock: readers of the lock send requests, the nemesis takes it to stop
/// and start stores), the TSO, and what the clients observed.
struct Env {
    cluster: RwLock<Cluster>,
    tso: Tso,
    /// The store believed to lead each region.
    leaders: Mutex<HashMap<u64, u64>>,
    records: Mutex<Vec<TxnRecord>>,
    violations: Mutex<Vec<String>>,
    stats: Stats,
}

/// What happened, to show that the run exercised what it should.
#[derive(Default)]
struct Stats {
    snapshots: AtomicU64,
    rolled_forward: AtomicU64,
    rolled_back: AtomicU64,
    pushed: AtomicU64,
    crashes: AtomicU64,
    network_faults: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Env {
    fn new(split_keys: &[&[u8]]) -> Env {
        let encoded: Vec<Vec<u8>> = split_keys.iter().map(|k| enc(k)).collect();
        let split: Vec<&[u8]> = encoded.iter().map(|k| &k[..]).collect();
        let limits = Limits {
            request_timeout_ms: 2000,
            ..Limits::default()
        };
        let cluster = Cluster::with_limits(3, &split, tests::cluster::test_config(), limits);
        for r in &cluster.regions {
            cluster.wait_leader(r.id, Duration::from_secs(20));
        }
        Env {
            cluster: RwLock::new(cluster),
            tso: Tso::new(),
            leaders: Mutex::new(HashMap::new()),
            records: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            stats: Stats::default(),
        }
    }

    fn violation(&self, what: String) {
        let mut violations = self.violations.lock();
        if violations.len() < 20 {
            tracing::error!("violation: {what}");
        }
        violations.push(what);
    }

    /// Runs `op` on the leader of the region holding `key` (encoded), resending it on region
    /// errors (following NotLeader hints) and undetermined outcomes until `deadline`. `None`:
    /// no answer in time. Other failures come back shaped as the response a client would get.
    fn call<R: FromTxnFailure>(
        &self,
        key: &[u8],
        deadline: Instant,
        mut op: impl FnMut(&Cluster, &TxnStorage, Context) -> TxnResult<R>,
    ) -> Option<R> {
        let mut pause = Duration::from_millis(5);
        let mut hint: Option<u64> = None;
        while Instant::now() < deadline {
            {
                let cluster = self.cluster.read();
                let region = cluster.region_for_key(key);
                let cached = self.leaders.lock().get(&region.id).copied();
                let store = hint
                    .take()
                    .or(cached)
                    .filter(|s| cluster.is_running(*s))
                    .or_else(|| cluster.leader_store(region.id));
                if let Some(store) = store {
                    match op(
                        &cluster,
                        cluster.txn(store),
                        cluster.context(&region, store),
                    ) {
                        Ok(r) => {
                            self.leaders.lock().insert(region.id, store);
                            return Some(r);
                        }
                        Err(TxnFailure::Request(Failure::Region(e))) => {
                            self.leaders.lock().remove(&region.id);
                            hint = e
                                .not_leader
                                .as_ref()
                                .and_then(|n| n.leader.as_ref())
                                .map(|l| l.store_id);
                            if let Some(enm) = &e.epoch_not_match {
                                cluster.update_route(&enm.current_regions);
                            }
                        }
                        // Percolator's commands are idempotent per transaction: resending
                        // one whose outcome is unknown is safe.
                        Err(TxnFailure::Request(Failure::Message(m)))
                            if m.starts_with(UNDETERMINED_PREFIX) =>
                        {
                            self.leaders.lock().remove(&region.id);
                        }
                        Err(other) => return Some(R::from_txn_failure(other)),
                    }
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        None
    }

    fn prewrite(
        &self,
        key: &[u8],
        value: i64,
        primary: &[u8],
        start_ts: u64,
        deadline: Instant,
    ) -> Option<kvrpcpb::PrewriteResponse> {
        self.call(&enc(key), deadline, |c, s, ctx| {
            let req = kvrpcpb::PrewriteRequest {
                context: Some(ctx),
                mutations: vec![Mutation {
                    op: Op::Put as i32,
                    key: Bytes::copy_from_slice(key),
                    value: Bytes::from(value.to_string()),
                    ..Default::default()
                }],
                primary_lock: Bytes::copy_from_slice(primary),
                start_version: start_ts,
                lock_ttl: LOCK_TTL_MS,
                txn_size: 2,
                // Non-zero: readers may push it above their reads instead of waiting.
                min_commit_ts: start_ts + 1,
                ..Default::default()
            };
            c.block_on(s.kv_prewrite(req))
        })
    }

    fn commit(
        &self,
        key: &[u8],
        start_ts: u64,
        commit_ts: u64,
        deadline: Instant,
    ) -> Option<kvrpcpb::CommitResponse> {
        self.call(&enc(key), deadline, |c, s, ctx| {
            let req = kvrpcpb::CommitRequest {
                context: Some(ctx),
                start_version: start_ts,
                commit_version: commit_ts,
                keys: vec![Bytes::copy_from_slice(key)],
                ..Default::default()
            };
            c.block_on(s.kv_commit(req))
        })
    }

    fn rollback(&self, key: &[u8], start_ts: u64, deadline: Instant) {
        let resp = self.call(&enc(key), deadline, |c, s, ctx| {
            let req = kvrpcpb::BatchRollbackRequest {
                context: Some(ctx),
                start_version: start_ts,
                keys: vec![Bytes::copy_from_slice(key)],
                ..Default::default()
            };
            c.block_on(s.kv_batch_rollback(req))
        });
        if let Some(e) = resp.and_then(|r| r.error) {
            self.violation(format!(
                "rolling back {} of txn {start_ts}, which never committed, failed: {e:?}",
                String::from_utf8_lossy(key)
            ));
        }
    }

    fn check_txn_status(
        &self,
        primary: &[u8],
        lock_ts: u64,
        caller_start_ts: u64,
        rollback_if_not_exist: bool,
        deadline: Instant,
    ) -> Option<kvrpcpb::CheckTxnStatusResponse> {
        self.call(&enc(primary), deadline, |c, s, ctx| {
            let req = kvrpcpb::CheckTxnStatusRequest {
                context: Some(ctx),
                primary_key: Bytes::copy_from_slice(primary),
                lock_ts,
                caller_start_ts,
                current_ts: self.tso.now(),
                rollback_if_not_exist,
                ..Default::default()
            };
            c.block_on(s.kv_check_txn_status(req))
        })
    }

    /// Commits (`commit_ts` > 0) or rolls back the lock of transaction `start_ts` on `key`.
    fn resolve_key(&self, key: &[u8], start_ts: u64, commit_ts: u64, deadline: Instant) -> bool {
        let resp = self.call(&enc(key), deadline, |c, s, ctx| {
            let req = kvrpcpb::ResolveLockRequest {
                context: Some(ctx),
                start_version: start_ts,
                commit_version: commit_ts,
                keys: vec![Bytes::copy_from_slice(key)],
                ..Default::default()
            };
            c.block_on(s.kv_resolve_lock(req))
        });
        match resp {
            Some(r) if r.error.is_none() => true,
            Some(r) => {
                self.violation(format!(
                    "resolving {}'s lock of txn {start_ts} as {commit_ts} failed: {:?}",
                    String::from_utf8_lossy(key),
                    r.error
                ));
                false
            }
            None => false,
        }
    }

    /// Deals with `lock`, met by a read at `caller_ts` (0: met by a prewrite, which cannot go
    /// past a lock) — as TiKV's lock resolver does.
    fn resolve(&self, lock: &LockInfo, caller_ts: u64, deadline: Instant) -> Resolution {
        let now = self.tso.now();
        let expired = physical_ms(lock.lock_version) + lock.lock_ttl < physical_ms(now);
        let Some(status) = self.check_txn_status(
            &lock.primary_lock,
            lock.lock_version,
            caller_ts,
            expired,
            deadline,
        ) else {
            return Resolution::Pending;
        };
        if let Some(e) = &status.error {
            // The primary's prewrite may not have arrived yet (and the lock is alive).
            if e.txn_not_found.is_none() {
                self.violation(format!("check txn status of {lock:?}: {e:?}"));
            }
            return Resolution::Pending;
        }
        if status.commit_version > 0 {
            return match self.resolve_key(
                &lock.key,
                lock.lock_version,
                status.commit_version,
                deadline,
            ) {
                true => {
                    bump(&self.stats.rolled_forward);
                    Resolution::Resolved
                }
                false => Resolution::Pending,
            };
        }
        match &status.lock_info {
            // Rolled back (now or before).
            None => match self.resolve_key(&lock.key, lock.lock_version, 0, deadline) {
                true => {
                    bump(&self.stats.rolled_back);
                    Resolution::Resolved
                }
                false => Resolution::Pending,
            },
            Some(primary)
                if caller_ts > 0
                    && (status.action == kvrpcpb::Action::MinCommitTsPushed as i32
                        || primary.min_commit_ts > caller_ts) =>
            {
                bump(&self.stats.pushed);
                Resolution::Bypass(lock.lock_version)
            }
            Some(_) => Resolution::Pending,
        }
    }

    /// The values of `keys` (user keys) at `ts`, one request per region, resolving the locks
    /// met. `None`: not every key could be read in time.
    fn read(&self, keys: &[Vec<u8>], ts: u64, deadline: Instant) -> Option<Vec<Option<i64>>> {
        let mut values: HashMap<Vec<u8>, Option<i64>> = HashMap::new();
        let mut bypass: Vec<u64> = Vec::new();
        let mut pause = Duration::from_millis(5);
        loop {
            let pending: Vec<Vec<u8>> = keys
                .iter()
                .filter(|k| !values.contains_key(*k))
                .cloned()
                .collect();
            if pending.is_empty() {
                return Some(keys.iter().map(|k| values[k]).collect());
            }
            if Instant::now() > deadline {
                return None;
            }
            let mut by_region: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
            {
                let cluster = self.cluster.read();
                for k in pending {
                    by_region
                        .entry(cluster.region_for_key(&enc(&k)).id)
                        .or_default()
                        .push(k);
                }
            }
            let mut waiting = false;
            for group in by_region.into_values() {
                let resp = self.call(&enc(&group[0]), deadline, |c, s, mut ctx| {
                    ctx.resolved_locks = bypass.clone();
                    let req = kvrpcpb::BatchGetRequest {
                        context: Some(ctx),
                        keys: group.iter().map(|k| Bytes::copy_from_slice(k)).collect(),
                        version: ts,
                        ..Default::default()
                    };
                    c.block_on(s.kv_batch_get(req))
                })?;
                if let Some(e) = resp.error {
                    self.violation(format!("batch get at {ts}: {e:?}"));
                    return None;
                }
                let mut locked = Vec::new();
                let mut found = HashMap::new();
                for p in resp.pairs {
                    match p.error {
                        Some(e) => match e.locked {
                            Some(l) => locked.push(l),
                            None => {
                                self.violation(format!("batch get at {ts}: {e:?}"));
                                return None;
                            }
                        },
                        None => {
                            let v: i64 = std::str::from_utf8(&p.value)
                                .ok()
                                .and_then(|s| s.parse().ok())
                                .expect("values are numbers");
                            found.insert(p.key.to_vec(), v);
                        }
                    }
                }
                for k in group {
                    if !locked.iter().any(|l| l.key[..] == k[..]) {
                        let v = found.get(&k).copied();
                        values.insert(k, v);
                    }
                }
                for l in locked {
                    match self.resolve(&l, ts, deadline) {
                        Resolution::Resolved => {}
                        Resolution::Bypass(t) => bypass.push(t),
                        Resolution::Pending => waiting = true,
                    }
                }
            }
            if waiting {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }

    /// Prewrites `key` until it is locked (`true`) or the transaction must abort (`false`);
    /// locks of others are resolved on the way. `None`: no answer in time.
    fn must_prewrite(
        &self,
        key: &[u8],
        value: i64,
        primary: &[u8],
        start_ts: u64,
        deadline: Instant,
    ) -> Option<bool> {
        let mut pause = Duration::from_millis(5);
        loop {
            let resp = self.prewrite(key, value, primary, start_ts, deadline)?;
            if resp.errors.is_empty() {
                return Some(true);
            }
            let mut waiting = false;
            for e in &resp.errors {
                match &e.locked {
                    Some(l) => {
                        if let Resolution::Pending | Resolution::Bypass(_) =
                            self.resolve(l, 0, deadline)
                        {
                            waiting = true;
                        }
                    }
                    // A write conflict, or rolled back by a resolver already.
                    None => return Some(false),
                }
            }
            if waiting {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            if Instant::now() > deadline {
                return None;
            }
        }
    }

    /// One read-modify-write transaction: adds `deltas[i]` to `keys[i]` (`keys[0]` is the
    /// primary), dying where `death` says. Returns `None` if it never got to prewrite.
    fn run_txn(&self, keys: &[Vec<u8>], deltas: &[i64], death: Death) -> Option<Outcome> {
        let start_ts = self.tso.now();
        let reads: Vec<i64> = self
            .read(keys, start_ts, Instant::now() + STEP_TIMEOUT)?
            .into_iter()
            .map(|v| v.expect("every key was written first"))
            .collect();
        let index = {
            let mut records = self.records.lock();
            records.push(TxnRecord {
                start_ts,
                keys: keys.to_vec(),
                reads: reads.clone(),
                deltas: deltas.to_vec(),
                outcome: Outcome::Unknown,
            });
            records.len() - 1
        };
        let outcome = self.two_phase_commit(keys, &reads, deltas, start_ts, death);
        self.records.lock()[index].outcome = outcome;
        Some(outcome)
    }

    fn two_phase_commit(
        &self,
        keys: &[Vec<u8>],
        reads: &[i64],
        deltas: &[i64],
        start_ts: u64,
        death: Death,
    ) -> Outcome {
        let primary = &keys[0];
        for (i, key) in keys.iter().enumerate() {
            let deadline = Instant::now() + STEP_TIMEOUT;
            match self.must_prewrite(key, reads[i] + deltas[i], primary, start_ts, deadline) {
                Some(true) => {}
                Some(false) => {
                    // Never to be committed: clean up what this transaction locked.
                    let deadline = Instant::now() + STEP_TIMEOUT;
                    for k in &keys[..=i] {
                        self.rollback(k, start_ts, deadline);
                    }
                    return Outcome::Aborted;
                }
                None => return Outcome::Unknown,
            }
        }
        if death == Death::AfterPrewrite {
            return Outcome::Unknown;
        }
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut commit_ts = self.tso.now();
        loop {
            let Some(resp) = self.commit(primary, start_ts, commit_ts, deadline) else {
                return Outcome::Unknown;
            };
            match resp.error {
                None => break,
                // A reader pushed the transaction above its read: commit later.
                Some(e) if e.commit_ts_expired.is_some() => commit_ts = self.tso.now(),
                // A resolver rolled it back (its lock expired).
                Some(e) if e.txn_lock_not_found.is_some() => return Outcome::Aborted,
                Some(e) => {
                    self.violation(format!("commit of txn {start_ts}'s primary: {e:?}"));
                    return Outcome::Unknown;
                }
            }
        }
        if death == Death::AfterPrimaryCommit {
            return Outcome::Committed;
        }
        let deadline = Instant::now() + STEP_TIMEOUT;
        for key in &keys[1..] {
            // Best effort: a resolver commits what this leaves locked.
            if let Some(e) = self
                .commit(key, start_ts, commit_ts, deadline)
                .and_then(|r| r.error)
            {
                self.violation(format!(
                    "commit of {} in txn {start_ts} failed after its primary committed at \
                     {commit_ts}: {e:?}",
                    String::from_utf8_lossy(key)
                ));
            }
        }
        Outcome::Committed
    }

    /// Writes `initial` into every key in one transaction, before any fault.
    fn load(&self, keys: &[Vec<u8>], initial: i64) {
        let start_ts = self.tso.now();
        let deadline = Instant::now() + Duration::from_secs(30);
        for k in keys {
            assert_eq!(
                self.must_prewrite(k, initial, &keys[0], start_ts, deadline),
                Some(true),
                "initial prewrite"
            );
        }
        let commit_ts = self.tso.now();
        for k in keys {
            let resp = self.commit(k, start_ts, commit_ts, deadline);
            assert!(resp.is_some_and(|r| r.error.is_none()), "initial commit");
        }
    }

    /// Resolves every lock left in the cluster, once their TTLs ran out, and checks that no
    /// lock is left.
    fn resolve_all_locks(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let starts: Vec<Vec<u8>> = {
            let cluster = self.cluster.read();
            cluster
                .regions
                .iter()
                .map(|r| r.start_key.to_vec())
                .collect()
        };
        let mut left: Vec<LockInfo> = Vec::new();
        tests::wait_until("every lock is resolved", Duration::from_secs(30), || {
            left.clear();
            for start in &starts {
                let Some(resp) = self.call(start, deadline, |c, s, ctx| {
                    let req = kvrpcpb::ScanLockRequest {
                        context: Some(ctx),
                        max_version: u64::MAX,
                        limit: 1000,
                        ..Default::default()
                    };
                    c.block_on(s.kv_scan_lock(req))
                }) else {
                    return false;
                };
                assert!(resp.error.is_none(), "scan lock: {:?}", resp.error);
                left.extend(resp.locks);
            }
            for l in &left {
                self.resolve(l, 0, deadline);
            }
            left.is_empty()
        });
    }

    /// The fate of every recorded transaction, from its primary (deciding the undecided):
    /// checks it against what its client knew and returns the committed ones.
    fn committed_txns(&self) -> Vec<TxnRecord> {
        let records = self.records.lock().clone();
        let mut committed = Vec::new();
        for r in records {
            let deadline = Instant::now() + Duration::from_secs(20);
            let status = loop {
                let s = self
                    .check_txn_status(&r.keys[0], r.start_ts, 0, true, deadline)
                    .expect("check txn status answers");
                if s.error.is_some() || s.lock_info.is_none() || Instant::now() > deadline {
                    break s;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            assert!(
                status.error.is_none() && status.lock_info.is_none(),
                "txn {} undecided at the end: {status:?}",
                r.start_ts
            );
            let is_committed = status.commit_version > 0;
            match (r.outcome, is_committed) {
                (Outcome::Committed, false) => self.violation(format!(
                    "acknowledged txn {} ({:?}) is not committed: {status:?}",
                    r.start_ts, r.keys
                )),
                (Outcome::Aborted, true) => self.violation(format!(
                    "aborted txn {} ({:?}) committed at {}",
                    r.start_ts, r.keys, status.commit_version
                )),
                _ => {}
            }
            if is_committed {
                committed.push(r);
            }
        }
        committed
    }
}

/// What a workload does.
struct Workload {
    name: &'static str,
    /// User keys the regions are split at.
    split_keys: &'static [&'static [u8]],
    keys: Vec<Vec<u8>>,
    initial: i64,
    writers: u64,
    txns_per_writer: u64,
    /// How long the writers run at most.
    budget: Duration,
    readers: u64,
    nemesis: bool,
    /// The chance that a writer dies after prewriting, and after committing the primary.
    deaths: (f64, f64),
    /// How many transactions must commit for the run to count (a sanity check of the load).
    min_acknowledged: u64,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Moves an amount between two distinct keys; readers check the total.
    Transfer,
    /// Increments every key; readers check they are all equal.
    IncrementAll,
}

impl Workload {
    fn snapshot_ok(&self, values: &[i64]) -> bool {
        match self.kind {
            Kind::Transfer => values.iter().sum::<i64>() == self.initial * self.keys.len() as i64,
            Kind::IncrementAll => values.windows(2).all(|w| w[0] == w[1]),
        }
    }
}

fn run(w: Workload) {
    let seed = seed_from(TXN_SEED_VAR, w.name);
    let started = Instant::now();
    let env = Env::new(w.split_keys);
    env.load(&w.keys, w.initial);
    let writers_done = AtomicBool::new(false);
    let acknowledged = AtomicU64::new(0);

    std::thread::scope(|s| {
        if w.nemesis {
            s.spawn(|| nemesis(&env, seed, &writers_done));
        }
        for _ in 0..w.readers {
            s.spawn(|| {
                while !writers_done.load(Ordering::SeqCst) {
                    let ts = env.tso.now();
                    let deadline = Instant::now() + STEP_TIMEOUT;
                    // One request per region, all at `ts`.
                    let Some(values) = env.read(&w.keys, ts, deadline) else {
                        continue;
                    };
                    let values: Vec<i64> = values
                        .into_iter()
                        .map(|v| v.expect("every key was written first"))
                        .collect();
                    if !w.snapshot_ok(&values) {
                        env.violation(format!("snapshot at {ts} saw {values:?}"));
                    }
                    bump(&env.stats.snapshots);
                    // Pace the readers: they compete for the same two cores as the writers.
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
        }
        let writers: Vec<_> = (0..w.writers)
            .map(|i| {
                let (env, w, acknowledged) = (&env, &w, &acknowledged);
                s.spawn(move || {
                    let mut rng = rng_for(seed, 1 + i);
                    for _ in 0..w.txns_per_writer {
                        if started.elapsed() > w.budget {
                            break;
                        }
                        let (keys, deltas) = match w.kind {
                            Kind::Transfer => {
                                let from = rng.random_range(0..w.keys.len());
                                let to = (from + rng.random_range(1..w.keys.len())) % w.keys.len();
                                let amount = rng.random_range(1..=50);
                                (
                                    vec![w.keys[from].clone(), w.keys[to].clone()],
                                    vec![-amount, amount],
                                )
                            }
                            Kind::IncrementAll => {
                                let mut keys = w.keys.clone();
                                // Either key may be the primary.
                                let first = rng.random_range(0..keys.len());
                                keys.rotate_left(first);
                                let deltas = vec![1; keys.len()];
                                (keys, deltas)
                            }
                        };
                        let p: f64 = rng.random();
                        let death = if p < w.deaths.0 {
                            Death::AfterPrewrite
                        } else if p < w.deaths.0 + w.deaths.1 {
                            Death::AfterPrimaryCommit
                        } else {
                            Death::None
                        };
                        if env.run_txn(&keys, &deltas, death) == Some(Outcome::Committed) {
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for h in writers {
            h.join().expect("writer");
        }
        writers_done.store(true, Ordering::SeqCst);
    });

    // The faults are over (the nemesis healed everything before it stopped).
    env.cluster.read().clear_filters();
    env.resolve_all_locks();
    let committed = env.committed_txns();
    let mut expected: HashMap<Vec<u8>, i64> =
        w.keys.iter().map(|k| (k.clone(), w.initial)).collect();
    for r in &committed {
        for (k, d) in r.keys.iter().zip(&r.deltas) {
            *expected.get_mut(k).expect("known key") += d;
        }
    }
    let final_values = env
        .read(
            &w.keys,
            env.tso.now(),
            Instant::now() + Duration::from_secs(20),
        )
        .expect("final read");
    for (k, v) in w.keys.iter().zip(&final_values) {
        if *v != Some(expected[k]) {
            env.violation(format!(
                "{} is {v:?} at the end; the committed transactions make it {}",
                String::from_utf8_lossy(k),
                expected[k]
            ));
        }
    }
    if w.kind == Kind::IncrementAll {
        // A lost update shows as two committed increments that read the same value.
        let mut wrote: HashMap<i64, u64> = HashMap::new();
        for r in &committed {
            let v = r.reads[r.keys.iter().position(|k| *k == w.keys[0]).expect("key")] + 1;
            if let Some(other) = wrote.insert(v, r.start_ts) {
                env.violation(format!(
                    "txns {other} and {} both committed {} := {v}",
                    r.start_ts,
                    String::from_utf8_lossy(&w.keys[0])
                ));
            }
        }
    }
    env.resolve_all_locks();
    env.cluster.read().must_be_consistent();

    let records = env.records.lock().clone();
    let count = |o: Outcome| records.iter().filter(|r| r.outcome == o).count();
    let stat = |c: &AtomicU64| c.load(Ordering::SeqCst);
    let snapshots = stat(&env.stats.snapshots);
    eprintln!(
        "{}: {} txns prewritten: {} acknowledged, {} aborted, {} unknown ({} of all committed); \
         {snapshots} snapshots read; locks of others rolled forward {}, rolled back {}, \
         pushed {}; {} store crashes, {} network faults; {:?} (seed {seed})",
        w.name,
        records.len(),
        count(Outcome::Committed),
        count(Outcome::Aborted),
        count(Outcome::Unknown),
        committed.len(),
        stat(&env.stats.rolled_forward),
        stat(&env.stats.rolled_back),
        stat(&env.stats.pushed),
        stat(&env.stats.crashes),
        stat(&env.stats.network_faults),
        started.elapsed()
    );
    let violations = env.violations.lock().clone();
    assert!(
        violations.is_empty(),
        "{}: {} violations (replay with {TXN_SEED_VAR}={seed}), the first:\n{}",
        w.name,
        violations.len(),
        violations[..violations.len().min(20)].join("\n")
    );
    assert!(
        acknowledged.load(Ordering::SeqCst) >= w.min_acknowledged,
        "too few transactions committed (seed {seed})"
    );
    assert!(
        w.readers == 0 || snapshots >= 5,
        "too few snapshots read (seed {seed})"
    );
}

/// Faults until the writers are done: a region leader's store crashes and restarts, a store is
/// partitioned from the others or isolated, or messages flow one way only. At most one store is
/// down or cut off at a time, so a majority of every region stays available.
fn nemesis(env: &Env, seed: u64, done: &AtomicBool) {
    let mut rng = rng_for(seed, 0);
    while !done.load(Ordering::SeqCst) {
        let hold = Duration::from_millis(rng.random_range(200..1200));
        let store = rng.random_range(1..=3u64);
        let others: Vec<u64> = (1..=3).filter(|s| *s != store).collect();
        match rng.random_range(0..6) {
            0 | 1 => {
                let pick = rng.random::<u32>() as usize;
                let victim = {
                    let mut cluster = env.cluster.write();
                    let id = cluster.regions[pick % cluster.regions.len()].id;
                    let victim = cluster.leader_store(id).unwrap_or(store);
                    tracing::info!(victim, "nemesis: crashing the store");
                    cluster.stop_store(victim);
                    bump(&env.stats.crashes);
                    victim
                };
                std::thread::sleep(hold);
                env.cluster.write().start_store(victim);
            }
            2 => cut(env, Partition::new(&[&[store], &others]), hold),
            3 => cut(env, Isolate(store), hold),
            4 if rng.random_bool(0.5) => cut(env, OneWay::new(&[store], &others), hold),
            4 => cut(env, OneWay::new(&others, &[store]), hold),
            _ => std::thread::sleep(hold),
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(100..400)));
    }
}

/// Drops Raft messages as `filter` says for `hold`.
fn cut(env: &Env, filter: impl tests::Filter + 'static, hold: Duration) {
    bump(&env.stats.network_faults);
    env.cluster.read().add_filter(filter);
    std::thread::sleep(hold);
    env.cluster.read().clear_filters();
}

fn accounts(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("acct-{i:03}").into_bytes())
        .collect()
}

#[test]
fn bank_transfers_under_faults_keep_every_snapshot_total_and_every_acknowledged_transfer() {
    run(Workload {
        name: "bank_transfers_under_faults",
        split_keys: &[b"acct-003", b"acct-006"],
        keys: accounts(8),
        initial: 1000,
        writers: 4,
        txns_per_writer: 60,
        budget: Duration::from_secs(20),
        readers: 2,
        nemesis: true,
        deaths: (0.04, 0.04),
        min_acknowledged: 20,
        kind: Kind::Transfer,
    });
}

#[test]
fn concurrent_increments_of_a_counter_under_faults_lose_no_update() {
    run(Workload {
        name: "lost_update_under_faults",
        split_keys: &[b"m"],
        keys: vec![b"counter".to_vec(), b"z-counter-mirror".to_vec()],
        initial: 0,
        writers: 4,
        txns_per_writer: 40,
        budget: Duration::from_secs(20),
        readers: 1,
        nemesis: true,
        deaths: (0.04, 0.04),
        min_acknowledged: 5,
        kind: Kind::IncrementAll,
    });
}

#[test]
fn readers_never_see_half_of_a_transfer_whose_client_died_mid_commit() {
    run(Workload {
        name: "read_skew",
        split_keys: &[b"m"],
        keys: vec![b"x".to_vec(), b"y".to_vec()],
        initial: 1000,
        writers: 3,
        txns_per_writer: 40,
        budget: Duration::from_secs(15),
        readers: 2,
        nemesis: false,
        deaths: (0.05, 0.3),
        min_acknowledged: 5,
        kind: Kind::Transfer,
    });
}
