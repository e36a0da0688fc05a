//! The raw API on one single-replica store: every read is one read pool task, and a long read
//! holds a pool thread, never the async thread.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::{Engine, EngineOptions};
use parking_lot::Mutex;
use proto::metapb;
use proto::raft_serverpb::RaftMessage;
use tokio::sync::mpsc as async_mpsc;

use super::*;
use crate::read_pool::{BeforeTask, ReadPool, ReadPoolConfig};

const DEADLINE: Duration = Duration::from_secs(20);

/// One store with one single-replica region over the whole keyspace: it needs no network.
struct OneStore {
    raw: RawStore,
    ctx: RawCtx,
    _store: raftstore::Store,
    _dir: tempfile::TempDir,
}

#[derive(Clone)]
struct NoNetwork;

impl raftstore::Transport for NoNetwork {
    fn send(&mut self, _: RaftMessage) {}
    fn flush(&mut self) {}
    fn send_snapshot(&mut self, _: RaftMessage) {}
}

fn one_store(pool: ReadPool) -> OneStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::open(dir.path(), &EngineOptions::default()).expect("engine");
    raftstore::bootstrap::bootstrap_store(&engine, 1, 1).expect("store ident");
    let region: metapb::Region = test_util::region(1).peers([test_util::peer(2, 1)]).build();
    raftstore::bootstrap::bootstrap_region(&engine, &region).expect("region");
    let cfg = raftstore::Config {
        raft_base_tick: Duration::from_millis(10),
        raft_election_ticks: 10,
        raft_heartbeat_ticks: 2,
        ..Default::default()
    };
    let store = raftstore::Store::start(1, engine.clone(), cfg, NoNetwork).expect("store");
    let kv = RaftKv::new(store.router(), engine, pool, Duration::from_secs(10));
    let ctx = RawCtx {
        region: RegionCtx {
            region_id: region.id,
            epoch: region.region_epoch,
            peer: region.peers.first().cloned(),
            replica_read: false,
        },
        api: Api::V1,
    };
    OneStore {
        raw: RawStore::new(kv),
        ctx,
        _store: store,
        _dir: dir,
    }
}

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

fn pair(key: &'static [u8], value: &'static [u8]) -> RawPut {
    RawPut {
        key: b(key),
        value: b(value),
        ttl: 0,
    }
}

impl OneStore {
    async fn put(&self, key: &'static [u8], value: &'static [u8]) -> Result<()> {
        self.raw.put(&self.ctx, "", vec![pair(key, value)]).await
    }

    async fn get(&self, key: &'static [u8]) -> Result<Option<Bytes>> {
        self.raw.get(&self.ctx, "", b(key)).await
    }

    async fn scan_all(&self) -> Result<Vec<(Bytes, Bytes)>> {
        self.raw
            .scan(
                &self.ctx,
                "",
                &[(Bytes::new(), Bytes::new())],
                100,
                false,
                false,
            )
            .await
    }

    /// Writes `key`, retrying until the region has elected its leader.
    async fn put_when_led(&self, key: &'static [u8], value: &'static [u8]) {
        let until = Instant::now() + DEADLINE;
        loop {
            match self.put(key, value).await {
                Ok(()) => return,
                Err(Error::Raftstore(raftstore::Error::NotLeader { .. }))
                    if Instant::now() < until =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("put failed: {e:?}"),
            }
        }
    }
}

fn pool_config(size: usize, per_worker: usize) -> ReadPoolConfig {
    ReadPoolConfig {
        pool_size: size,
        max_tasks_per_worker: per_worker,
    }
}

/// Holds the read pool's tasks on their thread, while armed, until released.
struct Gate {
    armed: AtomicBool,
    entered: async_mpsc::UnboundedSender<String>,
    release: Mutex<mpsc::Receiver<()>>,
    timed_out: AtomicBool,
}

impl Gate {
    fn hook(self: &Arc<Self>) -> BeforeTask {
        let gate = self.clone();
        Arc::new(move || {
            if !gate.armed.swap(false, Ordering::SeqCst) {
                return;
            }
            let thread = std::thread::current().name().unwrap_or("").to_owned();
            let _ = gate.entered.send(thread);
            if gate.release.lock().recv_timeout(DEADLINE).is_err() {
                gate.timed_out.store(true, Ordering::SeqCst);
            }
        })
    }
}

/// A read that takes long (held on its thread) leaves the runtime's only thread free for
/// other requests; a read beyond the pool's queue is ServerIsBusy at once.
#[tokio::test(flavor = "current_thread")]
async fn a_long_read_does_not_hold_the_async_thread_and_a_full_pool_is_busy() {
    let (entered_tx, mut entered_rx) = async_mpsc::unbounded_channel();
    let (release_tx, release_rx) = mpsc::channel();
    let gate = Arc::new(Gate {
        armed: AtomicBool::new(false),
        entered: entered_tx,
        release: Mutex::new(release_rx),
        timed_out: AtomicBool::new(false),
    });
    let pool = ReadPool::with_hook(&pool_config(1, 1), gate.hook()).expect("pool");
    let s = Arc::new(one_store(pool));
    s.put_when_led(b"a", b"1").await;

    // A scan that will sit on the pool's only thread until released.
    gate.armed.store(true, Ordering::SeqCst);
    let scan = tokio::spawn({
        let s = s.clone();
        async move { s.scan_all().await }
    });
    let thread = tokio::time::timeout(DEADLINE, entered_rx.recv())
        .await
        .expect("the scan reached the read pool")
        .expect("gate open");
    assert!(thread.starts_with("readpool-"), "ran on {thread:?}");

    // This runtime has one thread, and it is free: a write goes through Raft meanwhile.
    tokio::time::timeout(DEADLINE, s.put(b"b", b"2"))
        .await
        .expect("a write completes while the scan is held")
        .expect("write");
    assert!(!scan.is_finished());

    // One read may wait in the queue (capacity 1); the next is refused at once.
    let queued = tokio::spawn({
        let s = s.clone();
        async move { s.get(b"a").await }
    });
    test_util::wait_until_async("the get to reach the read pool's queue", DEADLINE, || {
        let queued = s.raw.kv().read_pool().queued() >= 1;
        async move { queued }
    })
    .await;
    match s.get(b"a").await {
        Err(Error::Raftstore(raftstore::Error::ServerIsBusy(_))) => {}
        other => panic!("expected ServerIsBusy, got {other:?}"),
    }

    release_tx.send(()).expect("release the scan");
    let scanned = tokio::time::timeout(DEADLINE, scan)
        .await
        .expect("scan finishes")
        .expect("scan task")
        .expect("scan");
    assert!(
        !gate.timed_out.load(Ordering::SeqCst),
        "the gate was not released by the test"
    );
    let keys: Vec<&[u8]> = scanned.iter().map(|(k, _)| &k[..]).collect();
    assert!(keys.contains(&&b"a"[..]), "{keys:?}");
    let got = tokio::time::timeout(DEADLINE, queued)
        .await
        .expect("queued get finishes")
        .expect("get task")
        .expect("get");
    assert_eq!(got, Some(b(b"1")));
}

/// Every engine read of the raw API is one read pool task, and answers correctly.
#[tokio::test(flavor = "current_thread")]
async fn every_raw_read_is_a_read_pool_task() {
    let tasks = Arc::new(AtomicUsize::new(0));
    let counter = tasks.clone();
    let pool = ReadPool::with_hook(
        &pool_config(2, 16),
        Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .expect("pool");
    let s = one_store(pool);
    s.put_when_led(b"a", b"1").await;
    s.put(b"b", b"2").await.expect("put");
    let ran = || tasks.load(Ordering::SeqCst);

    let before = ran();
    let got = s.get(b"a").await.expect("get");
    assert_eq!((got, ran() - before), (Some(b(b"1")), 1));

    let before = ran();
    let got = s
        .raw
        .batch_get(&s.ctx, "", vec![b(b"a"), b(b"b"), b(b"c")])
        .await
        .expect("batch get");
    assert_eq!((got.len(), ran() - before), (2, 1));

    let before = ran();
    let got = s.scan_all().await.expect("scan");
    assert_eq!((got.len(), ran() - before), (2, 1));

    let before = ran();
    let got = s
        .raw
        .scan(
            &s.ctx,
            "",
            &[(b(b"a"), b(b"b")), (b(b"b"), Bytes::new())],
            10,
            false,
            false,
        )
        .await
        .expect("batch scan");
    assert_eq!((got.len(), ran() - before), (2, 1));

    let before = ran();
    let got = s
        .raw
        .compare_and_swap(&s.ctx, "", pair(b"a", b"3"), Some(b(b"1")))
        .await
        .expect("cas");
    assert_eq!((got.succeed, ran() - before), (true, 1));
    assert_eq!(s.get(b"a").await.expect("get"), Some(b(b"3")));
}

/// Compare-and-swap decides on the value it read: a wrong expectation writes nothing and
/// answers what it found; "absent" matches only an absent key.
#[tokio::test(flavor = "current_thread")]
async fn compare_and_swap_writes_only_when_the_expectation_holds() {
    let pool = ReadPool::new(&pool_config(1, 16)).expect("pool");
    let s = one_store(pool);
    s.put_when_led(b"a", b"1").await;
    let cas = |put, expected| s.raw.compare_and_swap(&s.ctx, "", put, expected);

    let out = cas(pair(b"a", b"2"), Some(b(b"0"))).await.expect("cas");
    assert_eq!(
        out,
        CasOutcome {
            succeed: false,
            previous: Some(b(b"1"))
        }
    );
    let out = cas(pair(b"a", b"2"), None).await.expect("cas");
    assert_eq!(
        out,
        CasOutcome {
            succeed: false,
            previous: Some(b(b"1"))
        }
    );
    assert_eq!(s.get(b"a").await.expect("get"), Some(b(b"1")));

    let out = cas(pair(b"n", b"x"), None).await.expect("cas");
    assert_eq!(
        out,
        CasOutcome {
            succeed: true,
            previous: None
        }
    );
    let out = cas(pair(b"m", b"x"), Some(b(b""))).await.expect("cas");
    assert_eq!(
        out,
        CasOutcome {
            succeed: false,
            previous: None
        }
    );
    assert_eq!(s.get(b"n").await.expect("get"), Some(b(b"x")));
    assert_eq!(s.get(b"m").await.expect("get"), None);
}

/// Bad input for the API is refused before anything happens: an unknown column family, V1
/// TTL, a V1 key inside a keyspace, an inverted delete range, TTL asked of V1.
#[tokio::test(flavor = "current_thread")]
async fn requests_wrong_for_their_api_are_invalid_and_write_nothing() {
    let pool = ReadPool::new(&pool_config(1, 16)).expect("pool");
    let s = one_store(pool);
    s.put_when_led(b"a", b"1").await;
    let invalid = |r: Result<()>| matches!(r, Err(Error::Invalid(_)));

    assert!(invalid(
        s.raw.put(&s.ctx, "nope", vec![pair(b"a", b"2")]).await
    ));
    let with_ttl = RawPut {
        ttl: 5,
        ..pair(b"a", b"2")
    };
    assert!(invalid(s.raw.put(&s.ctx, "", vec![with_ttl]).await));
    assert!(invalid(
        s.raw.put(&s.ctx, "", vec![pair(b"r\0\0\0k", b"2")]).await
    ));
    assert!(invalid(
        s.raw.delete_range(&s.ctx, "", b(b"z"), b(b"a")).await
    ));
    assert!(matches!(
        s.raw.get_key_ttl(&s.ctx, "", b(b"a")).await,
        Err(Error::Invalid(_))
    ));
    assert_eq!(s.get(b"a").await.expect("get"), Some(b(b"1")));
}
