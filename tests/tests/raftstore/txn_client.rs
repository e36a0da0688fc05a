//! `client::TransactionClient` over gRPC against a served cluster (PD, tonic servers, proxies):
//! visibility by timestamp, write-write conflicts, resolving locks of abandoned transactions,
//! pessimistic locking, and scans across a split.

use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{Error, TransactionClient};
use proto::kvrpcpb::{self, Mutation, Op};
use tests::served::ServedCluster;
use tests::Cluster;

const TIMEOUT: Duration = Duration::from_secs(20);

fn config() -> client::Config {
    client::Config {
        request_timeout: Duration::from_secs(2),
        max_retry_time: Duration::from_secs(10),
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(100),
        ..client::Config::default()
    }
}

fn start() -> (ServedCluster, TransactionClient) {
    let cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, TIMEOUT);
    let served = ServedCluster::start(cluster).expect("the cluster is served");
    let client = served.txn_client(config());
    (served, client)
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn a_commit_is_visible_from_its_commit_ts_on() {
    let (served, client) = start();
    served.cluster.block_on(async {
        let before = client.current_timestamp().await.unwrap();
        let mut t = client.begin_optimistic().await.unwrap();
        t.put("a", "1").await.unwrap();
        t.put("b", "2").await.unwrap();
        assert_eq!(t.get("a").await.unwrap(), Some(b("1")), "own write");
        let commit_ts = t.commit().await.unwrap().expect("something was written");
        assert!(commit_ts > before);

        let later = client.snapshot(client.current_timestamp().await.unwrap());
        assert_eq!(later.get("a").await.unwrap(), Some(b("1")));
        assert_eq!(
            later.batch_get(["b", "a", "zz"]).await.unwrap(),
            vec![(b("a"), b("1")), (b("b"), b("2"))]
        );
        let earlier = client.snapshot(before);
        assert_eq!(earlier.get("a").await.unwrap(), None);
        assert!(earlier.scan("", "", 10).await.unwrap().is_empty());
        assert!(matches!(
            t.put("c", "3").await,
            Err(Error::TxnFinished { .. })
        ));

        // Deletes and inserts.
        let mut t = client.begin_optimistic().await.unwrap();
        t.delete("a").await.unwrap();
        t.insert("c", "3").await.unwrap();
        assert_eq!(
            t.scan("", "", 10).await.unwrap(),
            vec![(b("b"), b("2")), (b("c"), b("3"))]
        );
        t.commit().await.unwrap();
        let mut t = client.begin_optimistic().await.unwrap();
        t.insert("b", "again").await.unwrap();
        match t.commit().await {
            Err(Error::AlreadyExists { key }) => assert_eq!(key, b("b")),
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        let now = client.snapshot(client.current_timestamp().await.unwrap());
        assert_eq!(
            now.scan("", "", 10).await.unwrap(),
            vec![(b("b"), b("2")), (b("c"), b("3"))]
        );
    });
}

#[test]
fn the_second_of_two_conflicting_writers_fails() {
    let (served, client) = start();
    served.cluster.block_on(async {
        let mut first = client.begin_optimistic().await.unwrap();
        let mut second = client.begin_optimistic().await.unwrap();
        first.put("k", "first").await.unwrap();
        second.put("k", "second").await.unwrap();
        second.put("other", "second").await.unwrap();
        first.commit().await.unwrap();
        let err = second
            .commit()
            .await
            .expect_err("the second writer conflicts");
        assert!(matches!(err, Error::WriteConflict { .. }), "{err:?}");
        assert!(err.is_txn_retryable());
        let now = client.snapshot(client.current_timestamp().await.unwrap());
        assert_eq!(now.get("k").await.unwrap(), Some(b("first")));
        assert_eq!(now.get("other").await.unwrap(), None, "rolled back");

        // Optimistic get_for_update: a write in between makes the commit fail.
        let mut reader = client.begin_optimistic().await.unwrap();
        assert_eq!(reader.get_for_update("k").await.unwrap(), Some(b("first")));
        let mut writer = client.begin_optimistic().await.unwrap();
        writer.put("k", "third").await.unwrap();
        writer.commit().await.unwrap();
        reader.put("derived", "x").await.unwrap();
        assert!(matches!(
            reader.commit().await,
            Err(Error::WriteConflict { .. })
        ));
    });
}

/// Writes locks of a transaction that then "crashes": prewrites `keys` with `primary` and a
/// TTL of `ttl_ms`, straight at the leader's transactional storage.
fn abandoned_prewrite(
    served: &ServedCluster,
    keys: &[&str],
    primary: &str,
    start_ts: u64,
    ttl_ms: u64,
) {
    abandoned_prewrite_with(served, keys, primary, start_ts, ttl_ms, |_| {});
}

fn abandoned_prewrite_with(
    served: &ServedCluster,
    keys: &[&str],
    primary: &str,
    start_ts: u64,
    ttl_ms: u64,
    tweak: impl Fn(&mut kvrpcpb::PrewriteRequest),
) {
    let cluster = &served.cluster;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let leader = cluster.wait_leader(1, TIMEOUT);
        let region = cluster.region_for_key(b"");
        let req = kvrpcpb::PrewriteRequest {
            context: Some(cluster.context(&region, leader)),
            mutations: keys
                .iter()
                .map(|k| Mutation {
                    op: Op::Put as i32,
                    key: b(k),
                    value: b("abandoned"),
                    ..Default::default()
                })
                .collect(),
            primary_lock: b(primary),
            start_version: start_ts,
            lock_ttl: ttl_ms,
            ..Default::default()
        };
        let mut req = req;
        tweak(&mut req);
        let resp = match cluster.block_on(cluster.txn(leader).kv_prewrite(req)) {
            Ok(r) => r,
            Err(e) => panic!("prewrite failed: {e:?}"),
        };
        if resp.region_error.is_none() {
            assert!(resp.errors.is_empty(), "{:?}", resp.errors);
            return;
        }
        assert!(Instant::now() < deadline, "no leader took the prewrite");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn commit_directly(served: &ServedCluster, key: &str, start_ts: u64, commit_ts: u64) {
    let cluster = &served.cluster;
    let leader = cluster.wait_leader(1, TIMEOUT);
    let region = cluster.region_for_key(b"");
    let req = kvrpcpb::CommitRequest {
        context: Some(cluster.context(&region, leader)),
        start_version: start_ts,
        commit_version: commit_ts,
        keys: vec![b(key)],
        ..Default::default()
    };
    let resp = cluster
        .block_on(cluster.txn(leader).kv_commit(req))
        .expect("commit");
    assert!(
        resp.region_error.is_none() && resp.error.is_none(),
        "{resp:?}"
    );
}

#[test]
fn readers_resolve_locks_of_abandoned_transactions() {
    let (served, client) = start();
    let ts = |c: &TransactionClient| served.cluster.block_on(c.current_timestamp()).unwrap();
    served.cluster.block_on(async {
        let mut t = client.begin_optimistic().await.unwrap();
        t.put("x", "old").await.unwrap();
        t.commit().await.unwrap();
    });

    // Abandoned after prewrite: rolled back once its TTL runs out.
    let start_ts = ts(&client);
    abandoned_prewrite(&served, &["x", "y"], "x", start_ts, 100);
    let reader = client.snapshot(ts(&client));
    let began = Instant::now();
    let value = served
        .cluster
        .block_on(reader.get("y"))
        .expect("the read waits, then resolves");
    assert_eq!(value, None);
    assert!(began.elapsed() < TIMEOUT);
    assert_eq!(
        served.cluster.block_on(reader.get("x")).unwrap(),
        Some(b("old"))
    );

    // Abandoned after committing its primary: its secondary is committed by the reader.
    let start_ts = ts(&client);
    abandoned_prewrite(&served, &["p", "s"], "p", start_ts, 60_000);
    let commit_ts = ts(&client);
    commit_directly(&served, "p", start_ts, commit_ts);
    let reader = client.snapshot(ts(&client));
    assert_eq!(
        served.cluster.block_on(reader.scan("p", "t", 10)).unwrap(),
        vec![(b("p"), b("abandoned")), (b("s"), b("abandoned"))]
    );

    // A live lock (long TTL, uncommitted primary) makes the reader wait until its deadline.
    let start_ts = ts(&client);
    abandoned_prewrite(&served, &["live"], "live", start_ts, 60_000);
    let impatient = served.txn_client(client::Config {
        max_retry_time: Duration::from_secs(1),
        ..config()
    });
    let reader = impatient.snapshot(ts(&client));
    // (The last error is normally the live lock; under load it may be the last attempt's
    // timeout, cut short by the budget.)
    let result = served.cluster.block_on(reader.get("live"));
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    // A writer meeting it also waits: the commit fails and is rolled back.
    let writer_result = served.cluster.block_on(async {
        let mut t = impatient.begin_optimistic().await.unwrap();
        t.put("live", "mine").await.unwrap();
        t.commit().await
    });
    assert!(
        matches!(writer_result, Err(Error::Timeout { .. })),
        "{writer_result:?}"
    );
}

#[test]
fn pessimistic_get_for_update_then_commit() {
    let (served, client) = start();
    served.cluster.block_on(async {
        let mut setup = client.begin_optimistic().await.unwrap();
        setup.put("counter", "1").await.unwrap();
        setup.commit().await.unwrap();

        let mut stale = client.begin_optimistic().await.unwrap();
        let mut t = client.begin_pessimistic().await.unwrap();
        let value = t.get_for_update("counter").await.unwrap();
        assert_eq!(value, Some(b("1")));
        t.put("counter", "2").await.unwrap();
        assert_eq!(t.get_for_update("counter").await.unwrap(), Some(b("2")));
        t.lock_keys(["guard"]).await.unwrap();
        let commit_ts = t.commit().await.unwrap().expect("committed");

        let now = client.snapshot(client.current_timestamp().await.unwrap());
        assert_eq!(now.get("counter").await.unwrap(), Some(b("2")));
        assert_eq!(
            now.get("guard").await.unwrap(),
            None,
            "locked, never written"
        );
        assert!(client.snapshot(commit_ts - 1).get("counter").await.unwrap() == Some(b("1")));

        // An optimistic transaction that started before conflicts at its commit.
        stale.put("counter", "stale").await.unwrap();
        assert!(matches!(
            stale.commit().await,
            Err(Error::WriteConflict { .. })
        ));

        // A pessimistic insert of an existing key fails at once; rollback frees its locks.
        let mut t = client.begin_pessimistic().await.unwrap();
        t.put("free", "x").await.unwrap();
        assert!(matches!(
            t.insert("counter", "3").await,
            Err(Error::AlreadyExists { .. })
        ));
        t.rollback().await.unwrap();
        let mut next = client.begin_pessimistic().await.unwrap();
        next.put("free", "y").await.unwrap();
        next.commit().await.unwrap();
        let now = client.snapshot(client.current_timestamp().await.unwrap());
        assert_eq!(now.get("free").await.unwrap(), Some(b("y")));
    });
}

#[test]
fn scans_cross_a_region_split() {
    let (served, client) = start();
    let keys: Vec<String> = (0..30).map(|i| format!("k{i:02}")).collect();
    let expected: Vec<(Bytes, Bytes)> = keys.iter().map(|k| (b(k), b(&format!("v-{k}")))).collect();
    served.cluster.block_on(async {
        let mut t = client.begin_optimistic().await.unwrap();
        for (k, v) in &expected {
            t.put(k.clone(), v.clone()).await.unwrap();
        }
        t.commit().await.unwrap();
        // The client caches the single region.
        let snap = client.snapshot(client.current_timestamp().await.unwrap());
        assert_eq!(snap.scan("", "", 100).await.unwrap(), expected);
    });

    // Split at the encoded key, as transactional clients and stores do, twice.
    for at in ["k10", "k20"] {
        let regions = served
            .split(&client::encode_key(at.as_bytes()))
            .expect("the region splits");
        for r in &regions {
            served.cluster.wait_leader(r.id, TIMEOUT);
        }
    }
    served.cluster.block_on(async {
        let snap = client.snapshot(client.current_timestamp().await.unwrap());
        assert_eq!(snap.scan("", "", 100).await.unwrap(), expected);
        assert_eq!(
            snap.scan("k05", "k25", 100).await.unwrap(),
            expected[5..25].to_vec()
        );
        assert_eq!(
            snap.scan("k05", "", 12).await.unwrap(),
            expected[5..17].to_vec()
        );
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(snap.scan_reverse("", "", 100).await.unwrap(), reversed);
        // A transaction writing into all three regions commits, and its scan merges.
        let mut t = client.begin_optimistic().await.unwrap();
        t.put("k05", "new").await.unwrap();
        t.delete("k15").await.unwrap();
        t.put("k25", "new").await.unwrap();
        t.commit().await.unwrap();
        let snap = client.snapshot(client.current_timestamp().await.unwrap());
        let got = snap.scan("", "", 100).await.unwrap();
        assert_eq!(got.len(), 29);
        assert_eq!(got[5], (b("k05"), b("new")));
        assert_eq!(got[24], (b("k25"), b("new")));
    });
}

#[test]
fn readers_decide_an_abandoned_async_commit_transaction_from_all_its_keys() {
    let (served, client) = start();
    let ts = |c: &TransactionClient| served.cluster.block_on(c.current_timestamp()).unwrap();
    // Every prewrite of an async-commit transaction succeeded, then its client vanished: it
    // is committed, though nobody committed its primary.
    let start_ts = ts(&client);
    abandoned_prewrite_with(&served, &["ax", "ay"], "ax", start_ts, 100, |req| {
        req.use_async_commit = true;
        req.secondaries = vec![b("ay")];
    });
    let reader = client.snapshot(ts(&client));
    assert_eq!(
        served.cluster.block_on(reader.get("ay")).expect("resolved"),
        Some(b("abandoned"))
    );
    assert_eq!(
        served.cluster.block_on(reader.get("ax")).expect("resolved"),
        Some(b("abandoned"))
    );
}

#[test]
fn a_prewrite_that_met_a_lock_writes_every_key_of_its_request_once_resolved() {
    // A store writes nothing of a prewrite request in which some key is locked (as TiKV), so
    // after resolving the lock the client must prewrite the request's other keys again too —
    // else the primary commits and a secondary is silently lost.
    let (served, client) = start();
    let ts = |c: &TransactionClient| served.cluster.block_on(c.current_timestamp()).unwrap();
    let start_ts = ts(&client);
    // "a" is held by a transaction that crashed after prewrite (rolled back once its TTL ran out).
    abandoned_prewrite(&served, &["a"], "a", start_ts, 100);
    served.cluster.block_on(async {
        let mut t = client.begin_optimistic().await.unwrap();
        // The primary ("a", the smallest key) and a free secondary, in one region.
        t.put("a", "mine").await.unwrap();
        t.put("b", "mine").await.unwrap();
        t.commit()
            .await
            .expect("commit after resolving the abandoned lock");
        let now = client.snapshot(client.current_timestamp().await.unwrap());
        assert_eq!(now.get("a").await.unwrap(), Some(b("mine")));
        assert_eq!(
            now.get("b").await.unwrap(),
            Some(b("mine")),
            "the secondary was lost"
        );
    });
}

#[test]
fn small_transactions_over_two_regions_commit_asynchronously_and_still_conflict() {
    let (served, client) = start();
    let regions = served
        .split(&client::encode_key(b"m"))
        .expect("the region splits");
    for r in &regions {
        served.cluster.wait_leader(r.id, TIMEOUT);
    }
    served.cluster.block_on(async {
        // Keys on both sides of the split: async commit (every lock marked, committed once all
        // prewrites succeed).
        let mut first = client.begin_optimistic().await.unwrap();
        let mut second = client.begin_optimistic().await.unwrap();
        first.put("a", "first").await.unwrap();
        first.put("z", "first").await.unwrap();
        second.put("a", "second").await.unwrap();
        second.put("z", "second").await.unwrap();
        let commit_ts = first.commit().await.unwrap().expect("a commit ts");
        // Started before that commit: its commit lands above the second's start, so the
        // second conflicts (the commit floor is a fresh TSO timestamp).
        let err = second
            .commit()
            .await
            .expect_err("the second writer conflicts");
        assert!(matches!(err, Error::WriteConflict { .. }), "{err:?}");
        let at = client.snapshot(commit_ts);
        assert_eq!(at.get("a").await.unwrap(), Some(b("first")));
        assert_eq!(at.get("z").await.unwrap(), Some(b("first")));
        let before = client.snapshot(commit_ts - 1);
        assert_eq!(before.get("a").await.unwrap(), None);
        assert_eq!(before.get("z").await.unwrap(), None);
    });
}

/// Removes transaction `start_ts`'s pessimistic lock on `key` straight at the leader, as a
/// reader that found it expired would.
fn pessimistic_rollback_directly(served: &ServedCluster, key: &str, start_ts: u64) {
    let cluster = &served.cluster;
    let leader = cluster.wait_leader(1, TIMEOUT);
    let region = cluster.region_for_key(b"");
    let req = kvrpcpb::PessimisticRollbackRequest {
        context: Some(cluster.context(&region, leader)),
        start_version: start_ts,
        for_update_ts: u64::MAX,
        keys: vec![b(key)],
    };
    let resp = cluster
        .block_on(cluster.txn(leader).kv_pessimistic_rollback(req))
        .expect("pessimistic rollback");
    assert!(
        resp.region_error.is_none() && resp.errors.is_empty(),
        "{resp:?}"
    );
}

/// A lock's TTL counts from its transaction's start: a pessimistic transaction that takes its
/// first lock after running longer than the TTL must still hold a live lock (the client adds
/// the time already spent), so a writer meeting it waits instead of rolling it back.
#[test]
fn a_lock_taken_late_in_a_long_transaction_is_alive() {
    let short = client::Config {
        txn_lock_ttl: Duration::from_millis(300),
        txn_heartbeat_interval: Duration::from_millis(100),
        ..config()
    };
    let (served, _) = start();
    let client = served.txn_client(short.clone());
    let impatient = served.txn_client(client::Config {
        max_retry_time: Duration::from_millis(400),
        ..short
    });
    served.cluster.block_on(async {
        let mut setup = client.begin_optimistic().await.unwrap();
        setup.put("acct", "10").await.unwrap();
        setup.commit().await.unwrap();

        let mut t = client.begin_pessimistic().await.unwrap();
        // The transaction grows older than the lock TTL before it locks anything.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(t.get_for_update("acct").await.unwrap(), Some(b("10")));

        let mut w = impatient.begin_optimistic().await.unwrap();
        w.put("acct", "99").await.unwrap();
        let refused = w.commit().await;
        assert!(refused.is_err(), "a live lock was rolled back: {refused:?}");

        t.put("acct", "11").await.unwrap();
        t.commit().await.unwrap().expect("committed");
        let now = client.snapshot(client.current_timestamp().await.unwrap());
        assert_eq!(now.get("acct").await.unwrap(), Some(b("11")));
    });
}

/// A write computed from what a pessimistic lock returned commits only under that lock: once
/// the lock is lost and another transaction wrote the key, the commit fails (no lost update).
#[test]
fn a_write_based_on_a_lost_pessimistic_lock_does_not_commit() {
    let (served, client) = start();
    let rt = &served.cluster;
    let mut t = rt.block_on(async {
        let mut setup = client.begin_optimistic().await.unwrap();
        setup.put("acct", "10").await.unwrap();
        setup.commit().await.unwrap();
        let mut t = client.begin_pessimistic().await.unwrap();
        assert_eq!(t.get_for_update("acct").await.unwrap(), Some(b("10")));
        t
    });
    // The lock is lost, and another transaction writes the key meanwhile.
    pessimistic_rollback_directly(&served, "acct", t.start_timestamp());
    rt.block_on(async {
        let mut w = client.begin_optimistic().await.unwrap();
        w.put("acct", "20").await.unwrap();
        w.commit().await.unwrap();

        // 10 + 1, from the stale read: must not land.
        t.put("acct", "11").await.unwrap();
        let lost = t.commit().await;
        assert!(
            lost.is_err(),
            "a write based on a stale read committed: {lost:?}"
        );
        let now = client.snapshot(client.current_timestamp().await.unwrap());
        assert_eq!(now.get("acct").await.unwrap(), Some(b("20")));
    });
}
