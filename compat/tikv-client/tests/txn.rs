//! Wire-compatibility test: the published TiKV Rust client's transactional API
//! (`tikv-client` 0.4.0 `TransactionClient`, API V1, no keyspace) against a rangekv playground
//! cluster (1 PD, 3 stores) started as a child process.
//!
//! Needs `RANGEKV_BIN`: the path of a built `rangekv` binary. See ../README.md.
//!
//! Abandoned transactions are made two ways, both deterministic:
//! - tikv-client's own fail point `after-prewrite` (its committer returns an error right after
//!   a successful prewrite): the locks of a two-phase commit stay, nothing is committed;
//! - a commit run on a current-thread runtime that is dropped as soon as `commit()` returns:
//!   the client commits the secondaries (and, with async commit, every key) in a task it spawns
//!   after `commit()` is done, and a current-thread runtime returns from `block_on` before it
//!   polls a task spawned during the last poll. Dropping the runtime drops that task unpolled.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use common::*;
use tikv_client::backoff::DEFAULT_REGION_BACKOFF;
use tikv_client::transaction::{HeartbeatOption, ResolveLocksOptions};
use tikv_client::{
    Backoff, CheckLevel, Error, ProtoKeyError, ProtoLockInfo, RetryOptions, Timestamp,
    TimestampExt, Transaction, TransactionClient, TransactionOptions,
};

/// How long a case may wait for one client call that resolves locks or waits for them.
const CALL_DEADLINE: Duration = Duration::from_secs(60);
/// tikv-client's TTL of a prewrite lock of a small transaction (`DEFAULT_LOCK_TTL`), in ms.
const PREWRITE_LOCK_TTL_MS: u64 = 3000;
/// tikv-client's TTL of a pessimistic lock (`MAX_TTL`), in ms.
const PESSIMISTIC_LOCK_TTL_MS: u64 = 20000;
/// kvproto's `Op` of a lock.
const OP_PUT: i32 = 0;
const OP_PESSIMISTIC_LOCK: i32 = 5;

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// A value of `len` bytes (> 255 goes to the default CF, shorter ones live in the write CF).
fn value_of(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i * 7) as u8)).collect()
}

fn show_value(v: &Option<Vec<u8>>) -> String {
    match v {
        Some(v) => show_bytes(v),
        None => "(none)".into(),
    }
}

/// Awaits `f`, failing the test if it takes longer than `CALL_DEADLINE`.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(CALL_DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {CALL_DEADLINE:?}"),
    }
}

/// Retry options whose lock backoff waits out a prewrite lock's TTL (up to ~25 s).
fn patient() -> RetryOptions {
    RetryOptions {
        region_backoff: DEFAULT_REGION_BACKOFF,
        lock_backoff: Backoff::no_jitter_backoff(100, 1000, 30),
    }
}

/// Retry options that resolve locks whose transaction is already decided (committed, rolled
/// back, or expired) but never wait for a live one: a read that needs to wait fails with
/// ResolveLockError.
fn resolve_no_wait() -> RetryOptions {
    RetryOptions {
        region_backoff: DEFAULT_REGION_BACKOFF,
        lock_backoff: Backoff::no_jitter_backoff(0, 0, 0),
    }
}

/// Options of a transaction that is left behind on purpose: no heartbeat keeps its locks
/// alive, and dropping it unfinished is not a bug.
fn abandoned() -> TransactionOptions {
    TransactionOptions::new_optimistic()
        .heartbeat_option(HeartbeatOption::NoHeartbeat)
        .drop_check(CheckLevel::None)
}

async fn now(c: &TransactionClient) -> Timestamp {
    c.current_timestamp().await.expect("a timestamp from PD")
}

/// A read-only snapshot at the current timestamp.
async fn snapshot_now(c: &TransactionClient, options: TransactionOptions) -> tikv_client::Snapshot {
    let ts = now(c).await;
    c.snapshot(ts, options)
}

/// What a fresh snapshot reads at `key`.
async fn read(c: &TransactionClient, key: &[u8]) -> Option<Vec<u8>> {
    let mut snap = snapshot_now(
        c,
        TransactionOptions::new_optimistic().retry_options(patient()),
    )
    .await;
    within("snapshot get", snap.get(key.to_vec()))
        .await
        .unwrap_or_else(|e| panic!("snapshot get {}: {e:?}", show_bytes(key)))
}

async fn assert_reads(c: &TransactionClient, expected: &[(Vec<u8>, Option<Vec<u8>>)], what: &str) {
    for (key, want) in expected {
        let got = read(c, key).await;
        assert!(
            &got == want,
            "{what}: {} reads {}, expected {}",
            show_bytes(key),
            show_value(&got),
            show_value(want)
        );
    }
}

/// Commits `txn`, panicking with the error if it fails; returns the commit timestamp.
async fn must_commit(txn: &mut Transaction, what: &str) -> Timestamp {
    within(what, txn.commit())
        .await
        .unwrap_or_else(|e| panic!("{what}: commit failed: {e:?}"))
        .unwrap_or_else(|| panic!("{what}: commit wrote nothing"))
}

/// Writes `pairs` in one optimistic transaction.
async fn put_all(c: &TransactionClient, pairs: &[(Vec<u8>, Vec<u8>)], what: &str) -> Timestamp {
    let mut txn = c.begin_optimistic().await.expect("begin");
    for (key, value) in pairs {
        txn.put(key.clone(), value.clone()).await.expect("put");
    }
    must_commit(&mut txn, what).await
}

/// The locks with start_ts ≤ now in `[start, end)`.
async fn locks_in(c: &TransactionClient, start: &[u8], end: &[u8]) -> Vec<ProtoLockInfo> {
    let ts = now(c).await;
    let mut locks = c
        .scan_locks(&ts, start.to_vec()..end.to_vec(), 1024)
        .await
        .expect("scan_locks");
    locks.sort_by(|a, b| a.key.cmp(&b.key));
    locks
}

fn show_locks(locks: &[ProtoLockInfo]) -> String {
    let shown: Vec<String> = locks
        .iter()
        .map(|l| {
            format!(
                "{{key {} primary {} ts {} ttl {} type {} async {}}}",
                show_bytes(&l.key),
                show_bytes(&l.primary_lock),
                l.lock_version,
                l.lock_ttl,
                l.lock_type,
                l.use_async_commit
            )
        })
        .collect();
    format!("[{}]", shown.join(", "))
}

/// The key errors inside a client error (it nests them in several wrappers).
fn key_errors(e: &Error) -> Vec<&ProtoKeyError> {
    match e {
        Error::KeyError(k) => vec![k.as_ref()],
        Error::ExtractedErrors(es) | Error::MultipleKeyErrors(es) => {
            es.iter().flat_map(key_errors).collect()
        }
        Error::UndeterminedError(inner) | Error::PessimisticLockError { inner, .. } => {
            key_errors(inner)
        }
        _ => Vec::new(),
    }
}

/// The locks a client error reports as unresolved (ResolveLockError), or as `KeyError.locked`.
fn lock_errors(e: &Error) -> Vec<&ProtoLockInfo> {
    match e {
        Error::ResolveLockError(locks) => locks.iter().collect(),
        Error::ExtractedErrors(es) | Error::MultipleKeyErrors(es) => {
            es.iter().flat_map(lock_errors).collect()
        }
        Error::UndeterminedError(inner) | Error::PessimisticLockError { inner, .. } => {
            lock_errors(inner)
        }
        Error::KeyError(k) => k.locked.iter().collect(),
        _ => Vec::new(),
    }
}

/// Polls `f` once; `Some` if it completed.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *f).poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

/// Runs `body` with a client of its own on a current-thread runtime in a thread of its own,
/// and drops the runtime as soon as `body` returns: tasks the client spawned and did not get
/// to poll yet (the commit of secondaries, heartbeats) are dropped, never run.
async fn on_dropped_runtime<T, F, Fut>(pd: &str, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce(TransactionClient) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let pd = pd.to_string();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        let out = rt.block_on(async {
            let client = connect_txn(&pd, CONNECT_DEADLINE).await;
            tokio::time::timeout(CALL_DEADLINE, body(client))
                .await
                .expect("the body on the throw-away runtime did not finish in time")
        });
        rt.shutdown_timeout(Duration::from_secs(5));
        out
    });
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .expect("joining the thread")
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

// ---------------------------------------------------------------------------------------------
// The checks. Each uses its own key prefix under "compat/txn/".
// ---------------------------------------------------------------------------------------------

/// Optimistic transactions: writes (short and long values, an empty value), reads inside the
/// transaction, snapshot isolation by timestamp, batch_get, scans both ways, delete.
async fn check_optimistic(c: &TransactionClient) {
    let p = "compat/txn/opt/";
    let key = |s: &str| k(&format!("{p}{s}"));
    let pairs: Pairs = vec![
        (key("a"), k("alpha")),
        (key("b"), value_of(1, 300)),
        (key("c"), value_of(2, 4096)),
        (key("d"), k("delta")),
        (key("e"), Vec::new()),
        (key("f"), value_of(3, 256)),
    ];
    // Neighbours outside the prefix on both sides, committed first.
    put_all(
        c,
        &[
            (k("compat/txn/opt."), k("before")),
            (k("compat/txn/opt0"), k("after")),
        ],
        "neighbours",
    )
    .await;

    let mut txn = c.begin_optimistic().await.expect("begin_optimistic");
    let start_ts = txn.start_timestamp();
    for (key, value) in &pairs {
        txn.put(key.clone(), value.clone()).await.expect("put");
    }
    // Reads inside the transaction see its own writes; a missing key goes to the store.
    assert_eq!(
        txn.get(key("a")).await.expect("get own write"),
        Some(k("alpha"))
    );
    assert_eq!(
        txn.get(key("c")).await.expect("get own write"),
        Some(value_of(2, 4096))
    );
    assert_eq!(
        txn.get(key("e")).await.expect("get own write"),
        Some(Vec::new())
    );
    assert_eq!(txn.get(key("zz")).await.expect("get missing"), None);
    assert!(!txn.key_exists(key("zz")).await.expect("key_exists"));
    // Nobody else sees them before the commit.
    let before_commit = now(c).await;
    assert_reads(c, &[(key("a"), None), (key("b"), None)], "before commit").await;
    let commit_ts = must_commit(&mut txn, "optimistic commit").await;
    assert!(
        commit_ts.version() > start_ts.version() && commit_ts.version() > before_commit.version(),
        "commit ts {} must follow the start ts {} and the timestamp {} taken before the commit",
        commit_ts.version(),
        start_ts.version(),
        before_commit.version()
    );

    // A new transaction and a new snapshot read every committed value.
    let mut reader = c.begin_optimistic().await.expect("begin");
    for (key, value) in &pairs {
        assert_eq!(
            reader.get(key.clone()).await.expect("get").as_ref(),
            Some(value),
            "{} after commit",
            show_bytes(key)
        );
    }
    assert!(
        reader.key_exists(key("e")).await.expect("key_exists"),
        "a key with an empty value exists"
    );
    reader
        .rollback()
        .await
        .expect("rollback of a read-only transaction");
    let expected: Vec<(Vec<u8>, Option<Vec<u8>>)> = pairs
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    assert_reads(c, &expected, "after commit").await;
    // Exactly at the commit ts the writes are visible; just below it they are not.
    let mut at = c.snapshot(commit_ts.clone(), TransactionOptions::new_optimistic());
    assert_eq!(
        at.get(key("b")).await.expect("get at commit ts"),
        Some(value_of(1, 300))
    );
    let below = Timestamp::from_version(commit_ts.version() - 1);
    let mut old = c.snapshot(below, TransactionOptions::new_optimistic());
    assert_eq!(old.get(key("b")).await.expect("get below commit ts"), None);

    // A snapshot from before the commit sees none of it.
    let mut old = c.snapshot(before_commit.clone(), TransactionOptions::new_optimistic());
    for (key, _) in &pairs {
        assert_eq!(
            old.get(key.clone()).await.expect("old get"),
            None,
            "{} in an old snapshot",
            show_bytes(key)
        );
    }
    let got = old
        .batch_get(pairs.iter().map(|(k, _)| k.clone()))
        .await
        .expect("old batch_get");
    assert_pairs(got, &[], "batch_get in a snapshot from before the commit");
    let got = old
        .scan(k("compat/txn/opt.")..=k("compat/txn/opt0"), 10)
        .await
        .expect("old scan");
    assert_pairs(
        got,
        &[
            (k("compat/txn/opt."), k("before")),
            (k("compat/txn/opt0"), k("after")),
        ],
        "scan in a snapshot from before the commit: only the neighbours",
    );

    // batch_get: existing keys (any order), missing keys left out.
    let mut snap = snapshot_now(c, TransactionOptions::new_optimistic()).await;
    let mut wanted: Vec<Vec<u8>> = pairs.iter().map(|(k, _)| k.clone()).collect();
    wanted.push(key("missing"));
    let got = snap.batch_get(wanted).await.expect("batch_get");
    assert_pairs_unordered(got, &pairs, "batch_get after commit");

    // Scans: forward, with a limit, bounds, keys only, reverse.
    let got = snap
        .scan(k(p)..k("compat/txn/opt0"), 10)
        .await
        .expect("scan");
    assert_pairs(got, &pairs, "scan [opt/, opt0)");
    let got = snap
        .scan(k(p)..k("compat/txn/opt0"), 2)
        .await
        .expect("scan limit 2");
    assert_pairs(got, &pairs[..2], "scan [opt/, opt0) limit 2");
    let got = snap
        .scan(key("b")..key("e"), 10)
        .await
        .expect("scan [b, e)");
    assert_pairs(got, &pairs[1..4], "scan [b, e)");
    let got = snap
        .scan(key("b")..=key("e"), 10)
        .await
        .expect("scan [b, e]");
    assert_pairs(got, &pairs[1..5], "scan [b, e]");
    let got = snap
        .scan(k("compat/txn/opt.")..=k("compat/txn/opt0"), 100)
        .await
        .expect("scan with neighbours");
    let mut all = vec![(k("compat/txn/opt."), k("before"))];
    all.extend(pairs.iter().cloned());
    all.push((k("compat/txn/opt0"), k("after")));
    assert_pairs(got, &all, "scan [opt., opt0]");
    let got = snap
        .scan_keys(key("c")..key("zz"), 10)
        .await
        .expect("scan_keys");
    assert_keys(
        got,
        &[key("c"), key("d"), key("e"), key("f")],
        "scan_keys [c, zz)",
    );
    let got = snap
        .scan_reverse(k(p)..k("compat/txn/opt0"), 3)
        .await
        .expect("scan_reverse");
    let want: Pairs = pairs.iter().rev().take(3).cloned().collect();
    assert_pairs(got, &want, "scan_reverse [opt/, opt0) limit 3");
    let got = snap
        .scan_reverse(key("a")..key("d"), 10)
        .await
        .expect("scan_reverse [a, d)");
    let want: Pairs = pairs[..3].iter().rev().cloned().collect();
    assert_pairs(got, &want, "scan_reverse [a, d)");
    let got = snap
        .scan_keys_reverse(key("b")..=key("d"), 10)
        .await
        .expect("scan_keys_reverse");
    assert_keys(
        got,
        &[key("d"), key("c"), key("b")],
        "scan_keys_reverse [b, d]",
    );
    let got = snap
        .scan(key("zz")..k("compat/txn/opt0"), 10)
        .await
        .expect("empty scan");
    assert_pairs(got, &[], "scan of an empty range");

    // Overwrite (a long value becomes short and back), delete; the old snapshot keeps its view.
    let mid = now(c).await;
    let mut txn = c.begin_optimistic().await.expect("begin");
    txn.put(key("c"), k("short now")).await.expect("put");
    txn.put(key("d"), value_of(4, 1000)).await.expect("put");
    txn.delete(key("a")).await.expect("delete");
    txn.delete(key("b")).await.expect("delete");
    txn.delete(key("never-written"))
        .await
        .expect("delete of a missing key");
    assert_eq!(txn.get(key("a")).await.expect("get own delete"), None);
    let got = txn
        .scan(k(p)..k("compat/txn/opt0"), 10)
        .await
        .expect("scan inside the txn");
    let want: Pairs = vec![
        (key("c"), k("short now")),
        (key("d"), value_of(4, 1000)),
        pairs[4].clone(),
        pairs[5].clone(),
    ];
    assert_pairs(
        got,
        &want,
        "scan inside the transaction merges its own writes",
    );
    must_commit(&mut txn, "overwrite and delete").await;
    assert_reads(
        c,
        &[
            (key("a"), None),
            (key("b"), None),
            (key("c"), Some(k("short now"))),
            (key("d"), Some(value_of(4, 1000))),
            (key("never-written"), None),
        ],
        "after overwrite and delete",
    )
    .await;
    let mut snap = snapshot_now(c, TransactionOptions::new_optimistic()).await;
    let got = snap
        .scan(k(p)..k("compat/txn/opt0"), 10)
        .await
        .expect("scan after delete");
    assert_pairs(got, &want, "scan after delete");
    let got = snap
        .scan_reverse(k(p)..k("compat/txn/opt0"), 10)
        .await
        .expect("scan_reverse after delete");
    let rev: Pairs = want.iter().rev().cloned().collect();
    assert_pairs(got, &rev, "scan_reverse after delete");
    let mut old = c.snapshot(mid, TransactionOptions::new_optimistic());
    let got = old
        .scan(k(p)..k("compat/txn/opt0"), 10)
        .await
        .expect("scan of the older snapshot");
    assert_pairs(
        got,
        &pairs,
        "a snapshot between the commits still sees the first version",
    );

    assert!(
        locks_in(c, b"compat/txn/opt", b"compat/txn/opu")
            .await
            .is_empty(),
        "committed transactions leave no locks"
    );
}

/// Two optimistic transactions write the same key: the second to commit fails with a write
/// conflict and leaves nothing behind; the key holds the first's value.
async fn check_write_conflict(c: &TransactionClient) {
    let key = k("compat/txn/conflict/k");
    let other = k("compat/txn/conflict/other");
    put_all(c, &[(key.clone(), k("v0"))], "initial value").await;

    let mut t1 = c.begin_optimistic().await.expect("begin t1");
    let mut t2 = c.begin_optimistic().await.expect("begin t2");
    t1.put(key.clone(), k("t1")).await.expect("put t1");
    t2.put(other.clone(), k("t2-other")).await.expect("put t2");
    t2.put(key.clone(), value_of(9, 500)).await.expect("put t2");
    let t1_commit = must_commit(&mut t1, "t1").await;
    let err = within("t2 commit", t2.commit())
        .await
        .expect_err("the second transaction to commit a key both wrote must fail");
    let conflicts: Vec<_> = key_errors(&err)
        .into_iter()
        .filter_map(|ke| ke.conflict.as_ref())
        .collect();
    assert!(
        conflicts.len() == 1,
        "t2's commit must fail with one write conflict, got {err:?}"
    );
    let wc = conflicts[0];
    assert_eq!(
        wc.start_ts,
        t2.start_timestamp().version(),
        "conflict.start_ts is t2's"
    );
    assert_eq!(
        wc.conflict_ts,
        t1.start_timestamp().version(),
        "conflict.conflict_ts is t1's start"
    );
    assert_eq!(
        wc.conflict_commit_ts,
        t1_commit.version(),
        "conflict.conflict_commit_ts is t1's commit"
    );
    assert_eq!(wc.key, key, "conflict.key");
    t2.rollback()
        .await
        .expect("rollback after the failed commit");

    assert_reads(
        c,
        &[(key.clone(), Some(k("t1"))), (other.clone(), None)],
        "after the conflict",
    )
    .await;
    let locks = locks_in(c, b"compat/txn/conflict/", b"compat/txn/conflict0").await;
    assert!(
        locks.is_empty(),
        "a failed prewrite leaves no locks: {}",
        show_locks(&locks)
    );
    // The loser can try again in a new transaction.
    let mut t3 = c.begin_optimistic().await.expect("begin t3");
    assert_eq!(t3.get(key.clone()).await.expect("get"), Some(k("t1")));
    t3.put(key.clone(), k("t3")).await.expect("put");
    must_commit(&mut t3, "t3").await;
    assert_reads(c, &[(key, Some(k("t3")))], "after the retry").await;
}

/// Pessimistic transactions: get_for_update locks the key (reads still pass it), a second
/// locker fails while the lock lives, a locker that waits across the first one's commit gets a
/// write conflict (its for_update_ts is older than that commit), and a later one succeeds.
async fn check_pessimistic(c: &TransactionClient) {
    let key = k("compat/txn/pess/k");
    let second = k("compat/txn/pess/second");
    put_all(c, &[(key.clone(), k("v0"))], "initial value").await;

    let mut p1 = c.begin_pessimistic().await.expect("begin p1");
    assert_eq!(
        within("p1 get_for_update", p1.get_for_update(key.clone()))
            .await
            .expect("get_for_update"),
        Some(k("v0"))
    );
    let locks = locks_in(c, b"compat/txn/pess/", b"compat/txn/pess0").await;
    assert!(
        locks.len() == 1
            && locks[0].key == key
            && locks[0].primary_lock == key
            && locks[0].lock_version == p1.start_timestamp().version()
            && locks[0].lock_type == OP_PESSIMISTIC_LOCK
            && locks[0].lock_for_update_ts >= p1.start_timestamp().version()
            && locks[0].lock_ttl >= PESSIMISTIC_LOCK_TTL_MS,
        "after get_for_update: one pessimistic lock of p1 on the key, got {}",
        show_locks(&locks)
    );
    // A pessimistic lock does not block readers, not even impatient ones.
    let mut snap = snapshot_now(
        c,
        TransactionOptions::new_optimistic().retry_options(RetryOptions::none()),
    )
    .await;
    assert_eq!(
        snap.get(key.clone())
            .await
            .expect("a read past a pessimistic lock"),
        Some(k("v0"))
    );
    p1.put(key.clone(), k("p1")).await.expect("p1 put");
    p1.put(second.clone(), k("p1-second"))
        .await
        .expect("p1 put second");

    // p2 finds the key locked by a live transaction and gives up after its lock backoff.
    let mut p2 = c.begin_pessimistic().await.expect("begin p2");
    let err = within("p2 get_for_update", p2.get_for_update(key.clone()))
        .await
        .expect_err("locking a key another live transaction holds must fail");
    let locks = lock_errors(&err);
    assert!(
        !locks.is_empty()
            && locks
                .iter()
                .all(|l| l.key == key && l.lock_version == p1.start_timestamp().version()),
        "p2 must fail on p1's lock, got {err:?}"
    );
    p2.rollback().await.expect("p2 rollback");

    // p3 asks for the lock before p1 commits (its for_update_ts comes from PD before p1's
    // commit ts: same client, one ordered TSO stream), and retries while p1 holds it.
    let mut p3 = c
        .begin_with_options(TransactionOptions::new_pessimistic().retry_options(patient()))
        .await
        .expect("begin p3");
    let p3_start = p3.start_timestamp().version();
    let p1_commit;
    let p3_result = {
        let mut lock = Box::pin(p3.get_for_update(key.clone()));
        assert!(
            poll_once(&mut lock).await.is_none(),
            "p3's get_for_update cannot complete at its first poll"
        );
        p1_commit = must_commit(&mut p1, "p1").await;
        within("p3 get_for_update", lock).await
    };
    match &p3_result {
        Err(err) => {
            let conflict = key_errors(err)
                .into_iter()
                .find_map(|ke| ke.conflict.clone());
            let wc = conflict.unwrap_or_else(|| {
                panic!("p3's get_for_update must fail with a write conflict, got {err:?}")
            });
            assert_eq!(wc.start_ts, p3_start, "conflict.start_ts is p3's");
            assert_eq!(
                wc.conflict_ts,
                p1.start_timestamp().version(),
                "conflict.conflict_ts is p1's"
            );
            assert_eq!(
                wc.conflict_commit_ts,
                p1_commit.version(),
                "conflict.conflict_commit_ts"
            );
            assert_eq!(wc.key, key, "conflict.key");
        }
        Ok(v) => panic!(
            "p3 locked the key at a for_update_ts older than p1's commit and read {}: \
             expected a write conflict",
            show_value(v)
        ),
    }
    p3.rollback().await.expect("p3 rollback");
    assert_reads(
        c,
        &[
            (key.clone(), Some(k("p1"))),
            (second.clone(), Some(k("p1-second"))),
        ],
        "after p1's commit",
    )
    .await;

    // A pessimistic transaction after p1 locks, reads p1's value, and commits.
    let mut p4 = c.begin_pessimistic().await.expect("begin p4");
    assert_eq!(
        within("p4 get_for_update", p4.get_for_update(key.clone()))
            .await
            .expect("p4 get_for_update"),
        Some(k("p1"))
    );
    p4.put(key.clone(), value_of(5, 400)).await.expect("p4 put");
    p4.delete(second.clone()).await.expect("p4 delete");
    must_commit(&mut p4, "p4").await;
    assert_reads(
        c,
        &[
            (key.clone(), Some(value_of(5, 400))),
            (second.clone(), None),
        ],
        "after p4",
    )
    .await;
    // A pessimistic transaction that rolls back leaves the value and no lock.
    let mut p5 = c.begin_pessimistic().await.expect("begin p5");
    p5.get_for_update(key.clone())
        .await
        .expect("p5 get_for_update");
    p5.put(key.clone(), k("p5")).await.expect("p5 put");
    p5.rollback().await.expect("p5 rollback");
    assert_reads(c, &[(key, Some(value_of(5, 400)))], "after p5's rollback").await;
    let locks = locks_in(c, b"compat/txn/pess/", b"compat/txn/pess0").await;
    assert!(locks.is_empty(), "no locks left: {}", show_locks(&locks));
}

/// A transaction prewrites and is abandoned (tikv-client's `after-prewrite` fail point): its
/// locks block readers until their TTL passes, then a reader rolls it back and reads the
/// previous values.
async fn check_abandoned_prewrite(c: &TransactionClient) {
    let a = k("compat/txn/orphan/a");
    let b = k("compat/txn/orphan/b");
    put_all(
        c,
        &[(a.clone(), k("a0")), (b.clone(), value_of(6, 300))],
        "initial values",
    )
    .await;

    let mut txn = c.begin_with_options(abandoned()).await.expect("begin");
    let start = txn.start_timestamp().version();
    txn.put(a.clone(), k("a1")).await.expect("put");
    txn.put(b.clone(), value_of(7, 300)).await.expect("put");
    fail::cfg("after-prewrite", "return").expect("configuring the fail point");
    let prewritten = Instant::now();
    let res = txn.commit().await;
    fail::remove("after-prewrite");
    match res {
        Err(Error::StringError(m)) if m.contains("after-prewrite") => {}
        other => panic!("the fail point must stop the commit after its prewrite, got {other:?}"),
    }
    drop(txn);

    let locks = locks_in(c, b"compat/txn/orphan/", b"compat/txn/orphan0").await;
    assert!(
        locks.len() == 2
            && locks[0].key == a
            && locks[1].key == b
            && locks.iter().all(|l| l.primary_lock == a
                && l.lock_version == start
                && l.lock_type == OP_PUT
                && l.lock_ttl >= PREWRITE_LOCK_TTL_MS
                && !l.use_async_commit),
        "the abandoned prewrite leaves its two Put locks, primary a: {}",
        show_locks(&locks)
    );
    // A reader that does not wait reports the lock.
    let mut snap = snapshot_now(
        c,
        TransactionOptions::new_optimistic().retry_options(RetryOptions::none()),
    )
    .await;
    let err = snap
        .get(b.clone())
        .await
        .expect_err("a read of a locked key without lock backoff");
    let locked = lock_errors(&err);
    assert!(
        locked.len() == 1
            && locked[0].key == b
            && locked[0].primary_lock == a
            && locked[0].lock_version == start
            && locked[0].lock_ttl >= PREWRITE_LOCK_TTL_MS,
        "the read must report b's lock, got {err:?}"
    );
    let mut snap = snapshot_now(
        c,
        TransactionOptions::new_optimistic().retry_options(RetryOptions::none()),
    )
    .await;
    let err = match snap.batch_get(vec![a.clone(), b.clone()]).await {
        Ok(pairs) => panic!(
            "a batch_get of locked keys without lock backoff must fail, got {}",
            show_pairs(&to_pairs(pairs))
        ),
        Err(e) => e,
    };
    assert!(
        !lock_errors(&err).is_empty(),
        "batch_get must report the locks, got {err:?}"
    );
    let mut snap = snapshot_now(
        c,
        TransactionOptions::new_optimistic().retry_options(RetryOptions::none()),
    )
    .await;
    let err = match snap
        .scan(k("compat/txn/orphan/")..k("compat/txn/orphan0"), 10)
        .await
    {
        Ok(pairs) => panic!(
            "a scan over locked keys without lock backoff must fail, got {}",
            show_pairs(&to_pairs(pairs))
        ),
        Err(e) => e,
    };
    assert!(
        !lock_errors(&err).is_empty(),
        "scan must report the locks, got {err:?}"
    );

    // A patient reader waits out the TTL, rolls the transaction back, and reads b0.
    let got = read(c, &b).await;
    let waited = prewritten.elapsed();
    assert_eq!(
        got,
        Some(value_of(6, 300)),
        "b after the abandoned transaction was rolled back"
    );
    assert!(
        waited >= Duration::from_millis(PREWRITE_LOCK_TTL_MS - 500),
        "the lock was resolved after {waited:?}, before its TTL of {PREWRITE_LOCK_TTL_MS} ms"
    );
    assert_reads(c, &[(a.clone(), Some(k("a0")))], "a after the rollback").await;
    let locks = locks_in(c, b"compat/txn/orphan/", b"compat/txn/orphan0").await;
    assert!(
        locks.is_empty(),
        "the resolver removes every lock of the transaction: {}",
        show_locks(&locks)
    );
}

/// A transaction commits its primary and is abandoned before committing its secondaries:
/// readers find the secondaries' locks, learn from the primary that the transaction
/// committed, and commit them at once (no TTL wait).
async fn check_committed_primary(c: &TransactionClient, pd: &str) {
    let p = "compat/txn/half/";
    let keys = [
        k("compat/txn/half/p"),
        k("compat/txn/half/s1"),
        k("compat/txn/half/s2"),
    ];
    let values = [k("vp"), value_of(8, 700), k("v2")];
    let pairs: Pairs = keys.iter().cloned().zip(values.iter().cloned()).collect();
    let writes = pairs.clone();
    let (start, commit) = on_dropped_runtime(pd, move |client| async move {
        let mut txn = client.begin_with_options(abandoned()).await.expect("begin");
        for (key, value) in &writes {
            txn.put(key.clone(), value.clone()).await.expect("put");
        }
        let commit = must_commit(&mut txn, "commit of the primary").await;
        (txn.start_timestamp().version(), commit.version())
    })
    .await;

    let locks = locks_in(c, p.as_bytes(), b"compat/txn/half0").await;
    assert!(
        locks.len() == 2
            && locks[0].key == keys[1]
            && locks[1].key == keys[2]
            && locks
                .iter()
                .all(|l| l.primary_lock == keys[0] && l.lock_version == start),
        "the secondaries stay locked, the primary does not: {}",
        show_locks(&locks)
    );
    // Below the commit ts, the resolved keys read as missing; at it, they read as written.
    // The reader learns from the primary that the transaction committed and commits the
    // secondaries at once: it never has to wait for the locks' TTL.
    let mut old = c.snapshot(
        Timestamp::from_version(commit - 1),
        TransactionOptions::new_optimistic().retry_options(resolve_no_wait()),
    );
    assert_eq!(
        within("read below the commit ts", old.get(keys[2].clone()))
            .await
            .expect("a read that resolves the committed transaction's locks without waiting"),
        None,
        "s2 below the commit ts"
    );
    let mut at = c.snapshot(
        Timestamp::from_version(commit),
        TransactionOptions::new_optimistic().retry_options(resolve_no_wait()),
    );
    let got = within("batch_get at the commit ts", at.batch_get(keys.to_vec()))
        .await
        .expect("batch_get");
    assert_pairs_unordered(got, &pairs, "batch_get at the commit ts");
    let locks = locks_in(c, p.as_bytes(), b"compat/txn/half0").await;
    assert!(locks.is_empty(), "no locks left: {}", show_locks(&locks));
}

/// Async commit: a normal one, then one abandoned right after its prewrite (the transaction
/// counts as committed once every key is prewritten). tikv-client 0.4's readers only wait on
/// such locks; `cleanup_locks` (which GC uses) resolves them with CheckSecondaryLocks and
/// commits them at their min_commit_ts, the commit ts the client reported.
async fn check_async_commit(c: &TransactionClient, pd: &str) {
    let p = "compat/txn/async/";
    let key = |s: &str| k(&format!("{p}{s}"));
    // A normal async commit.
    let mut txn = c
        .begin_with_options(TransactionOptions::new_optimistic().use_async_commit())
        .await
        .expect("begin");
    txn.put(key("n1"), k("n1")).await.expect("put");
    txn.put(key("n2"), value_of(10, 300)).await.expect("put");
    let commit = must_commit(&mut txn, "async commit").await;
    assert!(
        commit.version() > txn.start_timestamp().version(),
        "async commit ts after start ts"
    );
    assert_reads(
        c,
        &[
            (key("n1"), Some(k("n1"))),
            (key("n2"), Some(value_of(10, 300))),
        ],
        "after an async commit",
    )
    .await;
    let mut old = c.snapshot(
        Timestamp::from_version(commit.version() - 1),
        TransactionOptions::new_optimistic().retry_options(patient()),
    );
    assert_eq!(
        old.get(key("n1")).await.expect("get"),
        None,
        "below the async commit ts"
    );

    // An abandoned one.
    let pairs: Pairs = vec![
        (key("x1"), k("x1")),
        (key("x2"), value_of(11, 600)),
        (key("x3"), k("x3")),
    ];
    let writes = pairs.clone();
    let (start, commit) = on_dropped_runtime(pd, move |client| async move {
        let mut txn = client
            .begin_with_options(abandoned().use_async_commit())
            .await
            .expect("begin");
        for (key, value) in &writes {
            txn.put(key.clone(), value.clone()).await.expect("put");
        }
        let commit = must_commit(&mut txn, "async commit, prewrite only").await;
        (txn.start_timestamp().version(), commit.version())
    })
    .await;
    let locks = locks_in(c, key("x").as_slice(), key("y").as_slice()).await;
    assert!(
        locks.len() == 3
            && locks.iter().zip(&pairs).all(|(l, (k, _))| l.key == *k)
            && locks.iter().all(|l| l.primary_lock == pairs[0].0
                && l.lock_version == start
                && l.use_async_commit
                && l.min_commit_ts == commit),
        "every key keeps an async-commit lock with min_commit_ts {commit}: {}",
        show_locks(&locks)
    );
    let primary = &locks[0];
    let mut secondaries = primary.secondaries.clone();
    secondaries.sort();
    assert_eq!(
        secondaries,
        vec![pairs[1].0.clone(), pairs[2].0.clone()],
        "the primary lock names the secondaries"
    );

    let safepoint = now(c).await;
    let res = within(
        "cleanup_locks",
        c.cleanup_locks(
            key("x")..key("y"),
            &safepoint,
            ResolveLocksOptions::default(),
        ),
    )
    .await
    .expect("cleanup_locks");
    assert_eq!(
        res.resolved_locks, 3,
        "cleanup_locks resolves the three locks"
    );
    assert!(
        res.key_error.is_none() && res.region_error.is_none(),
        "cleanup_locks errors: {res:?}"
    );
    let locks = locks_in(c, key("x").as_slice(), key("y").as_slice()).await;
    assert!(locks.is_empty(), "no locks left: {}", show_locks(&locks));
    let mut at = c.snapshot(
        Timestamp::from_version(commit),
        TransactionOptions::new_optimistic(),
    );
    let got = at
        .scan(key("x")..key("y"), 3)
        .await
        .expect("scan at the commit ts");
    assert_pairs(got, &pairs, "committed at the reported commit ts");
    let mut below = c.snapshot(
        Timestamp::from_version(commit - 1),
        TransactionOptions::new_optimistic(),
    );
    let got = below
        .batch_get(pairs.iter().map(|(k, _)| k.clone()))
        .await
        .expect("batch_get");
    assert_pairs(got, &[], "nothing visible below the commit ts");
}

/// insert (Op::Insert: AlreadyExist on an existing key), lock_keys (Op::Lock: a write conflict
/// when the locked key was written after the start), and a one-phase commit.
async fn check_insert_lock_one_pc(c: &TransactionClient) {
    let key = |s: &str| k(&format!("compat/txn/ins/{s}"));
    // insert of a missing key commits; of an existing one fails with AlreadyExist.
    let mut t = c.begin_optimistic().await.expect("begin");
    t.insert(key("new"), k("first")).await.expect("insert");
    must_commit(&mut t, "insert of a missing key").await;
    let mut t = c.begin_optimistic().await.expect("begin");
    t.insert(key("new"), k("second")).await.expect("insert");
    t.put(key("side"), k("side")).await.expect("put");
    let err = within("commit of an insert over an existing key", t.commit())
        .await
        .expect_err("insert of an existing key must fail");
    let exists: Vec<_> = key_errors(&err)
        .into_iter()
        .filter_map(|ke| ke.already_exist.as_ref())
        .collect();
    assert!(
        exists.len() == 1 && exists[0].key == key("new"),
        "insert of an existing key must fail with AlreadyExist on it, got {err:?}"
    );
    t.rollback().await.expect("rollback");
    assert_reads(
        c,
        &[(key("new"), Some(k("first"))), (key("side"), None)],
        "after the failed insert",
    )
    .await;
    // A deleted key can be inserted again.
    let mut t = c.begin_optimistic().await.expect("begin");
    t.delete(key("new")).await.expect("delete");
    must_commit(&mut t, "delete").await;
    let mut t = c.begin_optimistic().await.expect("begin");
    t.insert(key("new"), k("again")).await.expect("insert");
    must_commit(&mut t, "insert over a deleted key").await;
    assert_reads(c, &[(key("new"), Some(k("again")))], "insert after delete").await;

    // lock_keys: t1 locks a key t2 then writes and commits first: t1 must not commit.
    put_all(c, &[(key("locked"), k("l0"))], "initial value").await;
    let mut t1 = c.begin_optimistic().await.expect("begin t1");
    let mut t2 = c.begin_optimistic().await.expect("begin t2");
    t1.lock_keys(vec![key("locked")]).await.expect("lock_keys");
    t1.put(key("t1-write"), k("t1")).await.expect("put");
    t2.put(key("locked"), k("t2")).await.expect("put");
    let t2_commit = must_commit(&mut t2, "t2").await;
    let err = within("t1 commit", t1.commit())
        .await
        .expect_err("a transaction whose locked key changed after its start must not commit");
    let conflict = key_errors(&err)
        .into_iter()
        .find_map(|ke| ke.conflict.clone());
    let wc = conflict.unwrap_or_else(|| panic!("expected a write conflict, got {err:?}"));
    assert_eq!(wc.key, key("locked"), "conflict.key");
    assert_eq!(
        wc.conflict_commit_ts,
        t2_commit.version(),
        "conflict.conflict_commit_ts"
    );
    t1.rollback().await.expect("rollback");
    assert_reads(
        c,
        &[(key("locked"), Some(k("t2"))), (key("t1-write"), None)],
        "after the lock_keys conflict",
    )
    .await;
    // A lock-only key commits without changing the value.
    let mut t3 = c.begin_optimistic().await.expect("begin t3");
    t3.lock_keys(vec![key("locked")]).await.expect("lock_keys");
    t3.put(key("t3-write"), k("t3")).await.expect("put");
    must_commit(&mut t3, "t3").await;
    assert_reads(
        c,
        &[
            (key("locked"), Some(k("t2"))),
            (key("t3-write"), Some(k("t3"))),
        ],
        "a Lock mutation leaves the value",
    )
    .await;

    // One-phase commit: committed by the prewrite itself, at the returned ts.
    let mut t = c
        .begin_with_options(TransactionOptions::new_optimistic().try_one_pc())
        .await
        .expect("begin");
    t.put(key("1pc-a"), k("one")).await.expect("put");
    t.put(key("1pc-b"), value_of(12, 300)).await.expect("put");
    let commit = must_commit(&mut t, "one-phase commit").await;
    let mut at = c.snapshot(commit.clone(), TransactionOptions::new_optimistic());
    let got = at
        .batch_get(vec![key("1pc-a"), key("1pc-b")])
        .await
        .expect("batch_get");
    assert_pairs_unordered(
        got,
        &[(key("1pc-a"), k("one")), (key("1pc-b"), value_of(12, 300))],
        "1PC at its commit ts",
    );
    let mut below = c.snapshot(
        Timestamp::from_version(commit.version() - 1),
        TransactionOptions::new_optimistic(),
    );
    assert_eq!(
        below.get(key("1pc-a")).await.expect("get"),
        None,
        "1PC below its commit ts"
    );
    let locks = locks_in(c, b"compat/txn/ins/", b"compat/txn/ins0").await;
    assert!(locks.is_empty(), "no locks left: {}", show_locks(&locks));
}

/// More of the pessimistic API: locking missing keys, batch_get_for_update, insert (a lock
/// with a NotExist assertion), heartbeat.
async fn check_pessimistic_more(c: &TransactionClient) {
    let key = |s: &str| k(&format!("compat/txn/pess2/{s}"));
    put_all(
        c,
        &[
            (key("a"), value_of(13, 300)),
            (key("b"), k("b0")),
            (key("c"), k("c0")),
        ],
        "initial values",
    )
    .await;
    let mut p = c.begin_pessimistic().await.expect("begin");
    assert_eq!(
        p.get_for_update(key("missing"))
            .await
            .expect("get_for_update of a missing key"),
        None
    );
    let got = p
        .batch_get_for_update(vec![key("a"), key("b"), key("nope")])
        .await
        .expect("batch_get_for_update");
    assert_pairs_unordered(
        got,
        &[(key("a"), value_of(13, 300)), (key("b"), k("b0"))],
        "batch_get_for_update",
    );
    let locks = locks_in(c, b"compat/txn/pess2/", b"compat/txn/pess20").await;
    let locked: Vec<Vec<u8>> = locks.iter().map(|l| l.key.clone()).collect();
    assert!(
        locked == vec![key("a"), key("b"), key("missing"), key("nope")]
            && locks.iter().all(|l| l.lock_type == OP_PESSIMISTIC_LOCK
                && l.primary_lock == key("missing")
                && l.lock_version == p.start_timestamp().version()),
        "every key asked for is locked, missing ones too, primary the first: {}",
        show_locks(&locks)
    );
    // Heartbeat: the primary's TTL grows to what the client advises.
    let ttl = p.send_heart_beat().await.expect("heartbeat");
    assert!(ttl >= PESSIMISTIC_LOCK_TTL_MS, "heartbeat TTL {ttl}");
    let locks = locks_in(c, b"compat/txn/pess2/missing", b"compat/txn/pess2/missinh").await;
    assert!(
        locks.len() == 1 && locks[0].lock_ttl == ttl,
        "the primary's lock has the TTL the heartbeat answered ({ttl}): {}",
        show_locks(&locks)
    );
    // insert of an existing key this transaction has not locked yet fails at once: the lock
    // request asserts NotExist. (On a key the transaction already holds, TiKV skips the
    // existence check: the lock is its own.)
    let err = p
        .insert(key("c"), k("dup"))
        .await
        .expect_err("a pessimistic insert of an existing key");
    let exists: Vec<_> = key_errors(&err)
        .into_iter()
        .filter_map(|ke| ke.already_exist.as_ref())
        .collect();
    assert!(
        exists.len() == 1 && exists[0].key == key("c"),
        "a pessimistic insert of an existing key must fail with AlreadyExist, got {err:?}"
    );
    p.insert(key("fresh"), k("fresh"))
        .await
        .expect("insert of a missing key");
    p.put(key("missing"), k("now here")).await.expect("put");
    p.delete(key("b")).await.expect("delete");
    must_commit(&mut p, "pessimistic commit").await;
    assert_reads(
        c,
        &[
            (key("a"), Some(value_of(13, 300))),
            (key("b"), None),
            (key("c"), Some(k("c0"))),
            (key("fresh"), Some(k("fresh"))),
            (key("missing"), Some(k("now here"))),
            (key("nope"), None),
        ],
        "after the pessimistic commit",
    )
    .await;
    let locks = locks_in(c, b"compat/txn/pess2/", b"compat/txn/pess20").await;
    assert!(
        locks.is_empty(),
        "no locks left (read-only locked keys are unlocked at commit): {}",
        show_locks(&locks)
    );
}

/// unsafe_destroy_range (sent to every store): every version and lock of the range is gone,
/// the keys around it stay.
async fn check_unsafe_destroy_range(c: &TransactionClient) {
    let key = |s: &str| k(&format!("compat/txn/destroy/{s}"));
    put_all(
        c,
        &[
            (key("a"), k("a")),
            (key("b"), value_of(14, 2000)),
            (k("compat/txn/destroy."), k("before")),
            (k("compat/txn/destroy0"), k("after")),
        ],
        "values",
    )
    .await;
    put_all(c, &[(key("a"), k("a2"))], "a second version").await;
    let mut t = c.begin_with_options(abandoned()).await.expect("begin");
    t.put(key("c"), k("locked")).await.expect("put");
    fail::cfg("after-prewrite", "return").expect("configuring the fail point");
    let res = t.commit().await;
    fail::remove("after-prewrite");
    assert!(res.is_err(), "the fail point must stop the commit: {res:?}");
    drop(t);
    let locks = locks_in(c, b"compat/txn/destroy/", b"compat/txn/destroy0").await;
    assert_eq!(locks.len(), 1, "one lock before: {}", show_locks(&locks));
    let before = now(c).await;

    within(
        "unsafe_destroy_range",
        c.unsafe_destroy_range(key("")..k("compat/txn/destroy0")),
    )
    .await
    .expect("unsafe_destroy_range");
    let mut snap = snapshot_now(
        c,
        TransactionOptions::new_optimistic().retry_options(RetryOptions::none()),
    )
    .await;
    let got = snap
        .scan(k("compat/txn/destroy.")..=k("compat/txn/destroy0"), 10)
        .await
        .expect("scan after unsafe_destroy_range");
    assert_pairs(
        got,
        &[
            (k("compat/txn/destroy."), k("before")),
            (k("compat/txn/destroy0"), k("after")),
        ],
        "after unsafe_destroy_range only the neighbours are left",
    );
    // Older versions are gone too.
    let mut old = c.snapshot(
        before,
        TransactionOptions::new_optimistic().retry_options(RetryOptions::none()),
    );
    assert_eq!(
        old.get(key("a")).await.expect("get"),
        None,
        "old versions destroyed"
    );
    let locks = locks_in(c, b"compat/txn/destroy/", b"compat/txn/destroy0").await;
    assert!(locks.is_empty(), "locks destroyed: {}", show_locks(&locks));
}

/// GC: `gc(safepoint)` resolves the locks older than the safepoint (rolling back a two-phase
/// transaction whose TTL has not even passed, committing an async-commit one) and sets PD's GC
/// safepoint; an older safepoint is refused (gc answers false).
async fn check_gc(c: &TransactionClient, pd: &str) {
    let p = "compat/txn/gc/";
    let key = |s: &str| k(&format!("{p}{s}"));
    put_all(
        c,
        &[(key("r1"), k("r1-old")), (key("r2"), k("r2-old"))],
        "initial values",
    )
    .await;
    // A two-phase transaction left after its prewrite.
    let mut txn = c.begin_with_options(abandoned()).await.expect("begin");
    txn.put(key("r1"), k("r1-new")).await.expect("put");
    txn.put(key("r2"), k("r2-new")).await.expect("put");
    fail::cfg("after-prewrite", "return").expect("configuring the fail point");
    let res = txn.commit().await;
    fail::remove("after-prewrite");
    assert!(res.is_err(), "the fail point must stop the commit: {res:?}");
    drop(txn);
    // An async-commit transaction left after its prewrite.
    let (a1, a2) = (key("a1"), key("a2"));
    let (w1, w2) = (a1.clone(), a2.clone());
    let commit = on_dropped_runtime(pd, move |client| async move {
        let mut txn = client
            .begin_with_options(abandoned().use_async_commit())
            .await
            .expect("begin");
        txn.put(w1, k("a1-new")).await.expect("put");
        txn.put(w2, k("a2-new")).await.expect("put");
        must_commit(&mut txn, "async commit, prewrite only")
            .await
            .version()
    })
    .await;
    let locks = locks_in(c, p.as_bytes(), b"compat/txn/gc0").await;
    assert_eq!(
        locks.len(),
        4,
        "four abandoned locks before GC: {}",
        show_locks(&locks)
    );

    let safepoint = now(c).await;
    let updated = within("gc", c.gc(safepoint.clone())).await.expect("gc");
    assert!(
        updated,
        "PD takes the new GC safepoint {}",
        safepoint.version()
    );
    let locks = locks_in(c, p.as_bytes(), b"compat/txn/gc0").await;
    assert!(
        locks.is_empty(),
        "GC resolves every lock older than the safepoint: {}",
        show_locks(&locks)
    );
    assert_reads(
        c,
        &[
            (key("r1"), Some(k("r1-old"))),
            (key("r2"), Some(k("r2-old"))),
            (a1.clone(), Some(k("a1-new"))),
            (a2.clone(), Some(k("a2-new"))),
        ],
        "after GC: the two-phase transaction rolled back, the async-commit one committed",
    )
    .await;
    let mut at = c.snapshot(
        Timestamp::from_version(commit),
        TransactionOptions::new_optimistic(),
    );
    assert_eq!(
        at.get(a1.clone()).await.expect("get"),
        Some(k("a1-new")),
        "a1 at its commit ts"
    );

    // The safepoint does not move back; a newer one is taken.
    let older = Timestamp::from_version(safepoint.version() - 1);
    let updated = within("gc with an older safepoint", c.gc(older))
        .await
        .expect("gc");
    assert!(!updated, "PD must keep the newer GC safepoint");
    let newer = now(c).await;
    assert!(
        within("gc", c.gc(newer)).await.expect("gc"),
        "a newer safepoint is taken"
    );
    // Data written before the safepoint is still readable at the latest version.
    assert_reads(
        c,
        &[(key("r1"), Some(k("r1-old"))), (a2, Some(k("a2-new")))],
        "after the second GC",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_api_through_tikv_client() {
    let mut pg = Playground::start();
    pg.wait_ready(READY_DEADLINE);
    let client = connect_txn(&pg.pd_addr, CONNECT_DEADLINE).await;

    let checks = Instant::now();
    let mut step = Instant::now();
    let mut done = |name: &str| {
        eprintln!("{name}: ok ({:.1}s)", step.elapsed().as_secs_f64());
        step = Instant::now();
    };
    check_optimistic(&client).await;
    done("optimistic");
    check_write_conflict(&client).await;
    done("write conflict");
    check_pessimistic(&client).await;
    done("pessimistic");
    check_abandoned_prewrite(&client).await;
    done("abandoned prewrite");
    check_committed_primary(&client, &pg.pd_addr).await;
    done("committed primary, locked secondaries");
    check_async_commit(&client, &pg.pd_addr).await;
    done("async commit");
    check_insert_lock_one_pc(&client).await;
    done("insert, lock_keys, 1PC");
    check_pessimistic_more(&client).await;
    done("pessimistic: missing keys, batch, insert, heartbeat");
    check_unsafe_destroy_range(&client).await;
    done("unsafe_destroy_range");
    check_gc(&client, &pg.pd_addr).await;
    done("gc");
    eprintln!(
        "all transactional checks passed in {:.1}s",
        checks.elapsed().as_secs_f64()
    );

    drop(client);
    drop(pg);
}
