//! MVCC GC on a replicated cluster: the GC worker's round at a safe point removes what no
//! reader at or above it can see, through Raft on every replica, and changes no such read;
//! UnsafeDestroyRange removes a range's data on one store and nothing outside it.

use std::time::Duration;

use bytes::Bytes;
use engine::{keys, CF_DEFAULT, CF_LOCK, CF_WRITE};
use proto::kvrpcpb::{self, Mutation, Op};
use server::gc_worker::GcWorker;
use server::GcConfig;
use storage::mvcc::{Key, MvccReader, TimeStamp};
use tests::Cluster;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A TSO timestamp of `ms` physical milliseconds.
fn ts(ms: u64) -> u64 {
    ms << 18
}

fn enc(raw: &[u8]) -> Vec<u8> {
    Key::from_raw(raw).into_encoded()
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
    kvrpcpb::BatchRollbackResponse
);

/// Runs `f` against the leader of the region holding `key`, retrying region errors.
fn on_leader<R: HasRegionError>(
    cluster: &Cluster,
    key: &[u8],
    mut f: impl FnMut(&server::txn::TxnStorage, kvrpcpb::Context) -> R,
) -> R {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let region = cluster.region_for_key(&enc(key));
        let leader = cluster.wait_leader(region.id, TIMEOUT);
        let resp = f(cluster.txn(leader), cluster.context(&region, leader));
        if !resp.has_region_error() || std::time::Instant::now() > deadline {
            return resp;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One transaction writing `op` (with `value`) to `key` alone, committed.
fn write(cluster: &Cluster, key: &[u8], op: Op, value: &[u8], start: u64, commit: u64) {
    let r = on_leader(cluster, key, |s, ctx| {
        let req = kvrpcpb::PrewriteRequest {
            context: Some(ctx),
            mutations: vec![Mutation {
                op: op as i32,
                key: Bytes::copy_from_slice(key),
                value: Bytes::copy_from_slice(value),
                ..Default::default()
            }],
            primary_lock: Bytes::copy_from_slice(key),
            start_version: start,
            lock_ttl: 3000,
            ..Default::default()
        };
        ok(cluster.block_on(s.kv_prewrite(req)))
    });
    assert!(r.errors.is_empty(), "{r:?}");
    if commit == 0 {
        return;
    }
    let c = on_leader(cluster, key, |s, ctx| {
        let req = kvrpcpb::CommitRequest {
            context: Some(ctx),
            start_version: start,
            commit_version: commit,
            keys: vec![Bytes::copy_from_slice(key)],
            ..Default::default()
        };
        ok(cluster.block_on(s.kv_commit(req)))
    });
    assert!(c.error.is_none(), "{c:?}");
}

fn rollback(cluster: &Cluster, key: &[u8], start: u64) {
    let r = on_leader(cluster, key, |s, ctx| {
        let req = kvrpcpb::BatchRollbackRequest {
            context: Some(ctx),
            start_version: start,
            keys: vec![Bytes::copy_from_slice(key)],
            ..Default::default()
        };
        ok(cluster.block_on(s.kv_batch_rollback(req)))
    });
    assert!(r.error.is_none(), "{r:?}");
}

fn get(cluster: &Cluster, key: &[u8], version: u64) -> Option<Vec<u8>> {
    let g = on_leader(cluster, key, |s, ctx| {
        let req = kvrpcpb::GetRequest {
            context: Some(ctx),
            key: Bytes::copy_from_slice(key),
            version,
            ..Default::default()
        };
        ok(cluster.block_on(s.kv_get(req)))
    });
    assert!(g.error.is_none(), "{g:?}");
    (!g.not_found).then(|| g.value.to_vec())
}

/// The pairs a scan of the region holding `from` returns at `version`, from `from` on.
fn scan(cluster: &Cluster, from: &[u8], version: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let resp = on_leader(cluster, from, |s, ctx| {
        let req = kvrpcpb::ScanRequest {
            context: Some(ctx),
            start_key: Bytes::copy_from_slice(from),
            limit: 1000,
            version,
            ..Default::default()
        };
        ok(cluster.block_on(s.kv_scan(req)))
    });
    assert!(resp.error.is_none(), "{resp:?}");
    resp.pairs
        .iter()
        .map(|p| {
            assert!(p.error.is_none(), "{p:?}");
            (p.key.to_vec(), p.value.to_vec())
        })
        .collect()
}

/// Commit timestamps of `key`'s write records on `store`'s engine, newest first.
fn records(cluster: &Cluster, store: u64, key: &[u8]) -> Vec<TimeStamp> {
    let snap = cluster.engine(store).snapshot();
    let mut out = Vec::new();
    MvccReader::new(&snap)
        .versions(&Key::from_raw(key), TimeStamp::MAX, |commit_ts, _| {
            out.push(commit_ts);
            true
        })
        .expect("read versions");
    out
}

fn default_value(cluster: &Cluster, store: u64, key: &[u8], start_ts: TimeStamp) -> bool {
    let data_key = keys::data_key(Key::from_raw(key).append_ts(start_ts).as_encoded());
    cluster
        .engine(store)
        .get(CF_DEFAULT, &data_key)
        .expect("engine read")
        .is_some()
}

fn key(i: usize) -> Vec<u8> {
    format!("k{i:02}").into_bytes()
}

const KEYS: usize = 20;

/// Per key `i` (values ≤ 255 bytes inline, the one at 21 in `default`):
/// put 11, long put 21, rollback 25, put 31, delete 41 if `i % 3 == 0`, put 61 if `i` is even.
fn write_history(cluster: &Cluster) {
    for i in 0..KEYS {
        let k = key(i);
        write(cluster, &k, Op::Put, b"v1", ts(10), ts(11));
        write(cluster, &k, Op::Put, &[b'L'; 300], ts(20), ts(21));
        rollback(cluster, &k, ts(25));
        write(
            cluster,
            &k,
            Op::Put,
            format!("v3-{i}").as_bytes(),
            ts(30),
            ts(31),
        );
        if i % 3 == 0 {
            write(cluster, &k, Op::Del, b"", ts(40), ts(41));
        }
        if i % 2 == 0 {
            write(
                cluster,
                &k,
                Op::Put,
                format!("v6-{i}").as_bytes(),
                ts(60),
                ts(61),
            );
        }
    }
}

/// Every key's value and both regions' scans at timestamps at and above the safe point.
fn reads(cluster: &Cluster) -> Vec<String> {
    let mut out = Vec::new();
    for version in [ts(50), ts(55), ts(60), ts(61), ts(100)] {
        for i in 0..KEYS {
            out.push(format!(
                "{version} {i}: {:?}",
                get(cluster, &key(i), version)
            ));
        }
        for from in [&b"k"[..], b"k10"] {
            out.push(format!(
                "{version} scan {from:?}: {:?}",
                scan(cluster, from, version)
            ));
        }
    }
    out
}

#[test]
fn gc_at_a_safe_point_removes_invisible_versions_on_every_replica_and_no_read_changes() {
    let cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, TIMEOUT);
    let regions = cluster.split(&enc(b"k10")).expect("split");
    assert_eq!(regions.len(), 2);
    for r in &regions {
        cluster.wait_leader(r.id, TIMEOUT);
    }
    write_history(&cluster);
    let before = reads(&cluster);
    // Small batches, so every region takes several commands, some stopping within a key.
    let cfg = GcConfig {
        batch_keys: 3,
        batch_bytes: 200,
        batch_pause_ms: 0,
        ..Default::default()
    };
    let workers: Vec<(u64, GcWorker)> = cluster
        .store_ids()
        .iter()
        .map(|s| {
            (
                *s,
                GcWorker::new(cluster.txn(*s).scheduler().clone(), cfg.clone()),
            )
        })
        .collect();
    let safe_point = ts(50);
    let round = |expect_regions: usize| {
        let (mut regions, mut removed, mut batches) = (0, 0, 0);
        for (_, w) in &workers {
            let stats = cluster.block_on(w.run_round(safe_point));
            assert_eq!(stats.failed, 0, "{stats:?}");
            regions += stats.regions;
            removed += stats.removed;
            batches += stats.batches;
        }
        assert_eq!(regions, expect_regions, "regions collected");
        (removed, batches)
    };
    let (removed, batches) = round(2);
    // Keys with a delete at 41 lose all five records at or below 50, the others three.
    let deleted = (0..KEYS).filter(|i| i % 3 == 0).count();
    assert_eq!(removed, deleted * 5 + (KEYS - deleted) * 3);
    assert!(batches > 2 * KEYS / 3, "{batches} batches");
    assert_eq!(reads(&cluster), before);
    for &store in cluster.store_ids() {
        tests::wait_until(&format!("GC applied on store {store}"), TIMEOUT, || {
            (0..KEYS).all(|i| {
                let want: Vec<TimeStamp> = match (i % 3 == 0, i % 2 == 0) {
                    (true, true) => vec![ts(61)],
                    (true, false) => vec![],
                    (false, true) => vec![ts(61), ts(31)],
                    (false, false) => vec![ts(31)],
                };
                records(&cluster, store, &key(i)) == want
                    && !default_value(&cluster, store, &key(i), ts(20))
            })
        });
    }
    // The leaders remember the safe point: the same one again costs nothing.
    for r in &regions {
        let leader = cluster.wait_leader(r.id, TIMEOUT);
        let worker = &workers
            .iter()
            .find(|(s, _)| *s == leader)
            .expect("worker")
            .1;
        assert_eq!(worker.applied_safe_point(r.id), Some(safe_point));
    }
    assert_eq!(round(0), (0, 0));
    assert_eq!(reads(&cluster), before);
    cluster.must_be_consistent();
}

/// Keys of `cf` on `store` whose user key (encoded, timestamp stripped where there is one) is
/// in `[lo, hi)`.
fn count_in(cluster: &Cluster, store: u64, cf: &str, lo: &[u8], hi: &[u8]) -> usize {
    let mut n = 0;
    cluster
        .engine(store)
        .scan(
            cf,
            &keys::data_key(lo),
            Some(&keys::data_key(hi)),
            |_, _| {
                n += 1;
                true
            },
        )
        .expect("scan");
    n
}

#[test]
fn unsafe_destroy_range_removes_the_ranges_data_on_the_store_and_nothing_outside() {
    let cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, TIMEOUT);
    for k in [b"a", b"b", b"c", b"d", b"e"] {
        write(&cluster, k, Op::Put, k, ts(10), ts(11));
        write(&cluster, k, Op::Put, &[b'L'; 300], ts(20), ts(21));
    }
    // Locks inside and outside the range.
    write(&cluster, b"c", Op::Put, b"locked", ts(30), 0);
    write(&cluster, b"e", Op::Put, b"locked", ts(30), 0);
    let (lo, hi) = (enc(b"b"), enc(b"d"));
    for &s in cluster.store_ids() {
        tests::wait_until("replicated", TIMEOUT, || {
            count_in(&cluster, s, CF_LOCK, &enc(b"a"), &enc(b"f")) == 2
        });
    }
    let destroy = |store: u64| {
        let req = kvrpcpb::UnsafeDestroyRangeRequest {
            start_key: Bytes::from_static(b"b"),
            end_key: Bytes::from_static(b"d"),
            ..Default::default()
        };
        let resp = cluster
            .block_on(cluster.txn(store).unsafe_destroy_range(req))
            .unwrap_or_else(|e| panic!("destroy range on {store}: {e:?}"));
        assert!(resp.error.is_empty(), "{resp:?}");
    };
    destroy(1);
    // Gone from store 1 in every column family; not through Raft: store 2 still has it.
    for cf in [CF_WRITE, CF_DEFAULT, CF_LOCK] {
        assert_eq!(count_in(&cluster, 1, cf, &lo, &hi), 0, "{cf} on store 1");
    }
    assert_eq!(count_in(&cluster, 2, CF_WRITE, &lo, &hi), 4);
    assert_eq!(count_in(&cluster, 2, CF_LOCK, &lo, &hi), 1);
    // Everything outside stays: both versions, values and the lock of e, d and a.
    for k in [b"a", b"d", b"e"] {
        assert_eq!(records(&cluster, 1, k), [ts(21), ts(11)], "{k:?}");
        assert!(default_value(&cluster, 1, k, ts(20)), "{k:?}");
    }
    assert_eq!(count_in(&cluster, 1, CF_LOCK, &enc(b"e"), &enc(b"f")), 1);
    // TiDB sends it to every store; then the replicas agree again.
    destroy(2);
    destroy(3);
    assert_eq!(get(&cluster, b"b", ts(100)), None);
    assert_eq!(get(&cluster, b"d", ts(25)), Some(vec![b'L'; 300]));
    assert_eq!(get(&cluster, b"a", ts(15)), Some(b"a".to_vec()));
    cluster.must_be_consistent();
}

#[test]
fn the_worker_collects_at_pds_safe_point_when_triggered() {
    let served = tests::served::ServedCluster::start(Cluster::new(3, &[])).expect("served");
    let cluster = &served.cluster;
    cluster.wait_leader(1, TIMEOUT);
    for (i, start) in [10, 20, 30].into_iter().enumerate() {
        write(
            cluster,
            b"k",
            Op::Put,
            &[b'0' + i as u8],
            ts(start),
            ts(start + 1),
        );
    }
    let pd = cluster
        .block_on(pd_client::PdClient::connect(vec![served
            .pd()
            .addr()
            .to_string()]))
        .expect("PD client");
    // An interval no test waits for: only triggers start rounds.
    let cfg = GcConfig {
        run_interval_secs: 3600,
        batch_pause_ms: 0,
        ..Default::default()
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let workers: Vec<GcWorker> = cluster
        .store_ids()
        .iter()
        .map(|s| {
            let w = GcWorker::new(cluster.txn(*s).scheduler().clone(), cfg.clone());
            cluster.spawn(w.clone().run(pd.clone(), shutdown_rx.clone()));
            w
        })
        .collect();
    let leader = cluster.wait_leader(1, TIMEOUT);
    let leader_worker = &workers[cluster
        .store_ids()
        .iter()
        .position(|s| *s == leader)
        .expect("leader's worker")];
    assert_eq!(records(cluster, leader, b"k"), [ts(31), ts(21), ts(11)]);
    assert_eq!(
        cluster.block_on(pd.update_gc_safe_point(ts(25))).unwrap(),
        ts(25)
    );
    workers.iter().for_each(GcWorker::trigger);
    tests::wait_until("the leader applied PD's safe point", TIMEOUT, || {
        leader_worker.applied_safe_point(1) == Some(ts(25))
    });
    for &store in cluster.store_ids() {
        tests::wait_until("GC replicated", TIMEOUT, || {
            records(cluster, store, b"k") == [ts(31), ts(21)]
        });
    }
    assert_eq!(get(cluster, b"k", ts(25)), Some(b"1".to_vec()));
    let _ = shutdown_tx.send(true);
    cluster.must_be_consistent();
}
