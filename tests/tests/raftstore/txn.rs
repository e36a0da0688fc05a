//! Percolator transactions through the store's transactional API, on a replicated cluster:
//! visibility by timestamp, conflicts, rollback protection, lock expiry and async commit.

use std::time::Duration;

use bytes::Bytes;
use proto::kvrpcpb::{self, Mutation, Op};
use tests::Cluster;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A TSO timestamp of `ms` physical milliseconds.
fn ts(ms: u64) -> u64 {
    ms << 18
}

struct T {
    cluster: Cluster,
}

impl T {
    fn new() -> T {
        let cluster = Cluster::new(3, &[]);
        cluster.wait_leader(1, TIMEOUT);
        T { cluster }
    }

    /// Runs `f` against the leader with its context, retrying region errors.
    fn on_leader<R>(&self, mut f: impl FnMut(&server::txn::TxnStorage, kvrpcpb::Context) -> R) -> R
    where
        R: HasRegionError,
    {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let leader = self.cluster.wait_leader(1, TIMEOUT);
            let region = self.cluster.region_for_key(b"");
            let resp = f(
                self.cluster.txn(leader),
                self.cluster.context(&region, leader),
            );
            if !resp.has_region_error() || std::time::Instant::now() > deadline {
                return resp;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn prewrite(
        &self,
        muts: &[(&str, Op, &[u8])],
        primary: &str,
        start: u64,
        ttl: u64,
    ) -> kvrpcpb::PrewriteResponse {
        self.prewrite_with(muts, primary, start, ttl, |_| {})
    }

    fn prewrite_with(
        &self,
        muts: &[(&str, Op, &[u8])],
        primary: &str,
        start: u64,
        ttl: u64,
        tweak: impl Fn(&mut kvrpcpb::PrewriteRequest),
    ) -> kvrpcpb::PrewriteResponse {
        self.on_leader(|s, ctx| {
            let mut req = kvrpcpb::PrewriteRequest {
                context: Some(ctx),
                mutations: muts
                    .iter()
                    .map(|(k, op, v)| Mutation {
                        op: *op as i32,
                        key: Bytes::copy_from_slice(k.as_bytes()),
                        value: Bytes::copy_from_slice(v),
                        ..Default::default()
                    })
                    .collect(),
                primary_lock: Bytes::copy_from_slice(primary.as_bytes()),
                start_version: start,
                lock_ttl: ttl,
                ..Default::default()
            };
            tweak(&mut req);
            ok(self.cluster.block_on(s.kv_prewrite(req)))
        })
    }

    fn commit(&self, keys: &[&str], start: u64, commit: u64) -> kvrpcpb::CommitResponse {
        self.on_leader(|s, ctx| {
            let req = kvrpcpb::CommitRequest {
                context: Some(ctx),
                start_version: start,
                commit_version: commit,
                keys: keys
                    .iter()
                    .map(|k| Bytes::copy_from_slice(k.as_bytes()))
                    .collect(),
                ..Default::default()
            };
            ok(self.cluster.block_on(s.kv_commit(req)))
        })
    }

    fn get(&self, key: &str, version: u64) -> kvrpcpb::GetResponse {
        self.on_leader(|s, ctx| {
            let req = kvrpcpb::GetRequest {
                context: Some(ctx),
                key: Bytes::copy_from_slice(key.as_bytes()),
                version,
                ..Default::default()
            };
            ok(self.cluster.block_on(s.kv_get(req)))
        })
    }

    fn scan(&self, start: &str, end: &str, version: u64, reverse: bool) -> Vec<String> {
        let resp = self.on_leader(|s, ctx| {
            let req = kvrpcpb::ScanRequest {
                context: Some(ctx),
                start_key: Bytes::copy_from_slice(start.as_bytes()),
                end_key: Bytes::copy_from_slice(end.as_bytes()),
                limit: 100,
                version,
                reverse,
                ..Default::default()
            };
            ok(self.cluster.block_on(s.kv_scan(req)))
        });
        resp.pairs
            .iter()
            .map(|p| match &p.error {
                Some(e) if e.locked.is_some() => {
                    format!("{}:locked", String::from_utf8_lossy(&p.key))
                }
                Some(e) => panic!("{e:?}"),
                None => format!(
                    "{}={}",
                    String::from_utf8_lossy(&p.key),
                    String::from_utf8_lossy(&p.value[..p.value.len().min(8)])
                ),
            })
            .collect()
    }

    fn check_txn_status(
        &self,
        primary: &str,
        lock_ts: u64,
        current: u64,
    ) -> kvrpcpb::CheckTxnStatusResponse {
        self.on_leader(|s, ctx| {
            let req = kvrpcpb::CheckTxnStatusRequest {
                context: Some(ctx),
                primary_key: Bytes::copy_from_slice(primary.as_bytes()),
                lock_ts,
                caller_start_ts: current,
                current_ts: current,
                rollback_if_not_exist: true,
                ..Default::default()
            };
            ok(self.cluster.block_on(s.kv_check_txn_status(req)))
        })
    }
}

/// Responses carry their own failures; a request failure (invalid input) fails the test.
fn ok<T: server::txn::FromTxnFailure>(r: server::txn::TxnResult<T>) -> T {
    match r {
        Ok(v) => v,
        Err(f) => T::from_txn_failure(f),
    }
}

trait HasRegionError {
    fn has_region_error(&self) -> bool;
}

macro_rules! has_region_error {
    ($($t:ty),*) => {$(
        impl HasRegionError for $t {
            fn has_region_error(&self) -> bool {
                self.region_error.is_some()
            }
        }
    )*};
}

has_region_error!(
    kvrpcpb::PrewriteResponse,
    kvrpcpb::CommitResponse,
    kvrpcpb::GetResponse,
    kvrpcpb::ScanResponse,
    kvrpcpb::CheckTxnStatusResponse,
    kvrpcpb::BatchRollbackResponse
);

#[test]
fn committed_writes_are_visible_exactly_from_their_commit_ts() {
    let t = T::new();
    let big = vec![b'x'; 300];
    let r = t.prewrite(
        &[("k1", Op::Put, b"v1"), ("k2", Op::Put, &big)],
        "k1",
        ts(10),
        3000,
    );
    assert!(r.errors.is_empty(), "{r:?}");
    // A reader after the prewrite meets the lock.
    let g = t.get("k1", ts(12));
    assert_eq!(
        g.error.and_then(|e| e.locked).map(|l| l.lock_version),
        Some(ts(10))
    );
    assert_eq!(t.scan("", "", ts(12), false), ["k1:locked", "k2:locked"]);
    let c = t.commit(&["k1", "k2"], ts(10), ts(20));
    assert!(c.error.is_none(), "{c:?}");
    // Retrying the commit is harmless.
    assert!(t.commit(&["k1", "k2"], ts(10), ts(20)).error.is_none());
    assert!(t.get("k1", ts(15)).not_found);
    let g = t.get("k1", ts(20));
    assert_eq!((g.not_found, &g.value[..]), (false, &b"v1"[..]));
    assert_eq!(t.get("k2", ts(25)).value.len(), 300);
    assert_eq!(t.scan("", "", ts(25), false), ["k1=v1", "k2=xxxxxxxx"]);
    assert_eq!(t.scan("", "", ts(25), true), ["k2=xxxxxxxx", "k1=v1"]);
    assert_eq!(t.scan("k2", "", ts(25), false), ["k2=xxxxxxxx"]);
    assert!(t.scan("", "", ts(15), false).is_empty());
    // Deleting is a commit too.
    assert!(t
        .prewrite(&[("k1", Op::Del, b"")], "k1", ts(30), 3000)
        .errors
        .is_empty());
    assert!(t.commit(&["k1"], ts(30), ts(31)).error.is_none());
    assert!(t.get("k1", ts(32)).not_found);
    assert!(!t.get("k1", ts(29)).not_found);
    t.cluster.must_be_consistent();
}

#[test]
fn a_later_commit_conflicts_and_a_rolled_back_txn_cannot_prewrite() {
    let t = T::new();
    assert!(t
        .prewrite(&[("k", Op::Put, b"a")], "k", ts(30), 3000)
        .errors
        .is_empty());
    assert!(t.commit(&["k"], ts(30), ts(40)).error.is_none());
    // Started before that commit: conflict.
    let r = t.prewrite(&[("k", Op::Put, b"b")], "k", ts(35), 3000);
    let conflict = r
        .errors
        .first()
        .and_then(|e| e.conflict.clone())
        .expect("conflict");
    assert_eq!(
        (conflict.start_ts, conflict.conflict_commit_ts),
        (ts(35), ts(40))
    );
    // Rolled back before it prewrote (a resolver decided so): its prewrite must fail.
    let rb = t.on_leader(|s, ctx| {
        let req = kvrpcpb::BatchRollbackRequest {
            context: Some(ctx),
            start_version: ts(50),
            keys: vec![Bytes::from_static(b"k")],
            ..Default::default()
        };
        ok(t.cluster.block_on(s.kv_batch_rollback(req)))
    });
    assert!(rb.error.is_none(), "{rb:?}");
    let r = t.prewrite(&[("k", Op::Put, b"c")], "k", ts(50), 3000);
    assert!(!r.errors.is_empty(), "prewrite after rollback succeeded");
    assert_eq!(&t.get("k", ts(60)).value[..], b"a");
}

#[test]
fn an_abandoned_lock_is_rolled_back_once_its_ttl_expired_and_cannot_commit_then() {
    let t = T::new();
    assert!(t
        .prewrite(&[("p", Op::Put, b"1")], "p", ts(1000), 100)
        .errors
        .is_empty());
    // Alive: 50 ms into a 100 ms TTL.
    let s = t.check_txn_status("p", ts(1000), ts(1050));
    assert!(s.error.is_none(), "{s:?}");
    assert_eq!((s.lock_ttl, s.commit_version), (100, 0));
    // Expired: rolled back.
    let s = t.check_txn_status("p", ts(1000), ts(1200));
    assert_eq!(s.action, kvrpcpb::Action::TtlExpireRollback as i32, "{s:?}");
    let c = t.commit(&["p"], ts(1000), ts(1300));
    assert!(c
        .error
        .is_some_and(|e| e.txn_lock_not_found.is_some() || !e.retryable.is_empty()));
    assert!(t.get("p", ts(1400)).not_found);
}

#[test]
fn an_async_commit_never_lands_at_or_below_a_read_that_happened() {
    let t = T::new();
    // A read at 100 happened on this store.
    assert!(t.get("other", ts(100)).not_found);
    let r = t.prewrite_with(&[("a", Op::Put, b"1")], "a", ts(60), 3000, |req| {
        req.use_async_commit = true;
        req.secondaries = vec![];
    });
    assert!(r.errors.is_empty(), "{r:?}");
    assert!(
        r.min_commit_ts > ts(100),
        "{} <= {}",
        r.min_commit_ts,
        ts(100)
    );
    // One-phase commit: committed at once, above the read too.
    let r = t.prewrite_with(&[("b", Op::Put, b"2")], "b", ts(70), 3000, |req| {
        req.try_one_pc = true;
    });
    assert!(r.errors.is_empty(), "{r:?}");
    assert!(r.one_pc_commit_ts > ts(100));
    assert_eq!(&t.get("b", r.one_pc_commit_ts).value[..], b"2");
    assert!(t.get("b", ts(100)).not_found);
}

fn pessimistic_lock_req(
    ctx: kvrpcpb::Context,
    key: &str,
    start: u64,
    wait_timeout: i64,
) -> kvrpcpb::PessimisticLockRequest {
    kvrpcpb::PessimisticLockRequest {
        context: Some(ctx),
        mutations: vec![Mutation {
            op: Op::PessimisticLock as i32,
            key: Bytes::copy_from_slice(key.as_bytes()),
            ..Default::default()
        }],
        primary_lock: Bytes::copy_from_slice(key.as_bytes()),
        start_version: start,
        for_update_ts: start,
        lock_ttl: 3000,
        wait_timeout,
        ..Default::default()
    }
}

#[test]
fn a_pessimistic_lock_waits_for_the_holder_and_gets_the_key_when_it_lets_go() {
    let t = T::new();
    let leader = t.cluster.wait_leader(1, TIMEOUT);
    let region = t.cluster.region_for_key(b"");
    let ctx = t.cluster.context(&region, leader);
    let s = t.cluster.txn(leader).clone();
    let held = t
        .cluster
        .block_on(s.kv_pessimistic_lock(pessimistic_lock_req(ctx.clone(), "k", ts(10), -1)))
        .unwrap();
    assert!(held.errors.is_empty(), "{held:?}");
    // Without waiting: the holder's lock at once.
    let no_wait = t
        .cluster
        .block_on(s.kv_pessimistic_lock(pessimistic_lock_req(ctx.clone(), "k", ts(20), -1)))
        .unwrap();
    assert!(
        no_wait.errors.first().is_some_and(|e| e.locked.is_some()),
        "{no_wait:?}"
    );
    // Waiting: it gets the key once the holder rolls back.
    let waits_before = server::metrics::PESSIMISTIC_LOCK_WAITS.get();
    let waiter = t.cluster.spawn({
        let (s, ctx) = (s.clone(), ctx.clone());
        async move {
            s.kv_pessimistic_lock(pessimistic_lock_req(ctx, "k", ts(30), 8000))
                .await
        }
    });
    tests::wait_until("the second transaction waits", TIMEOUT, || {
        server::metrics::PESSIMISTIC_LOCK_WAITS.get() > waits_before
    });
    let rb = t
        .cluster
        .block_on(
            s.kv_pessimistic_rollback(kvrpcpb::PessimisticRollbackRequest {
                context: Some(ctx.clone()),
                start_version: ts(10),
                for_update_ts: ts(10),
                keys: vec![Bytes::from_static(b"k")],
            }),
        )
        .unwrap();
    assert!(rb.errors.is_empty(), "{rb:?}");
    let got = t.cluster.block_on(waiter).expect("task").unwrap();
    assert!(
        got.errors.is_empty(),
        "the waiter did not get the key: {got:?}"
    );
}
