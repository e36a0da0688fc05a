//! The Raft transport between stores over gRPC.
//!
//! Each poller owns a [`GrpcTransport`] clone that buffers messages per destination store and,
//! on `flush`, hands each buffer to that store's connection task. A connection task (one per
//! destination, started on first use) resolves the address through a [`StoreResolver`], opens
//! one `BatchRaft` client stream and forwards batches down it; on any failure it drops what it
//! cannot send (Raft retransmits) and reconnects with exponential backoff.
//!
//! Connections send HTTP/2 keepalive pings every [`Keepalive::interval`], idle or not, and are
//! closed when a ping goes unanswered for [`Keepalive::timeout`] (TiKV: 10 s / 3 s). Without
//! them a peer store that vanished without closing its TCP connection (power loss, a network
//! partition) would leave the stream apparently open until the kernel gives up on unacknowledged
//! data (minutes), and every message in between would be lost; with them the connection task
//! notices within seconds and reconnects.
//!
//! Snapshots go over their own `Snapshot` stream, one call per snapshot (see [`crate::snap`]):
//! at most `max_sends` at a time, throttled to `send_bytes_per_sec`; one that cannot go now is
//! dropped. Whether each arrived is reported to the raftstore ([`GrpcTransport::on_snapshot_status`]),
//! whose leader then probes the follower or sends another.
//!
//! Invariants: `send`/`flush` never block the raftstore; a slow or dead peer store costs a
//! bounded queue, never memory without bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt as _;
use parking_lot::Mutex;
use proto::raft_serverpb::RaftMessage;
use proto::tikvpb::tikv_client::TikvClient;
use proto::tikvpb::BatchRaftMessage;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info};

/// Finds the address of a store.
pub trait StoreResolver: Send + Sync + 'static {
    fn resolve(&self, store_id: u64) -> BoxFuture<'static, Result<String, String>>;
}

/// A fixed store-id → address map (tests, static clusters).
#[derive(Default, Clone)]
pub struct StaticResolver {
    addrs: Arc<Mutex<HashMap<u64, String>>>,
}

impl StaticResolver {
    pub fn insert(&self, store_id: u64, addr: String) {
        self.addrs.lock().insert(store_id, addr);
    }
}

impl StoreResolver for StaticResolver {
    fn resolve(&self, store_id: u64) -> BoxFuture<'static, Result<String, String>> {
        let r = self
            .addrs
            .lock()
            .get(&store_id)
            .cloned()
            .ok_or_else(|| format!("store {store_id} unknown"));
        Box::pin(async move { r })
    }
}

/// HTTP/2 keepalive of a gRPC connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Time between pings.
    pub interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub timeout: Duration,
}

impl Default for Keepalive {
    /// TiKV's `grpc-keepalive-time` and `grpc-keepalive-timeout`.
    fn default() -> Self {
        Keepalive {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(3),
        }
    }
}

/// Batches queued per destination before new ones are dropped.
const QUEUE_BATCHES: usize = 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(2);

struct Shared {
    runtime: tokio::runtime::Handle,
    resolver: Arc<dyn StoreResolver>,
    conns: Mutex<HashMap<u64, mpsc::Sender<Vec<RaftMessage>>>>,
    max_message_size: usize,
    keepalive: Keepalive,
    security: security::SecurityManager,
    snap_limits: crate::snap::SnapshotLimits,
    snap_sends: Arc<tokio::sync::Semaphore>,
    /// Told `(region id, peer id, delivered)` of every snapshot sent.
    snap_status: Mutex<Option<SnapshotReport>>,
    /// Where the store's generated snapshots are (none: snapshots cannot be sent).
    snap_files: Option<raftstore::snap::SnapManager>,
}

/// Where a transport reports whether a snapshot was delivered: `(region id, to peer id,
/// delivered)`.
pub type SnapshotReport = Arc<dyn Fn(u64, u64, bool) + Send + Sync>;

/// See the module docs.
#[derive(Clone)]
pub struct GrpcTransport {
    shared: Arc<Shared>,
    pending: HashMap<u64, Vec<RaftMessage>>,
}

impl GrpcTransport {
    pub fn new(
        runtime: tokio::runtime::Handle,
        resolver: Arc<dyn StoreResolver>,
        max_message_size: usize,
        keepalive: Keepalive,
    ) -> GrpcTransport {
        GrpcTransport {
            shared: Arc::new(Shared {
                runtime,
                resolver,
                conns: Mutex::new(HashMap::new()),
                max_message_size,
                keepalive,
                security: security::SecurityManager::plaintext(),
                snap_limits: crate::snap::SnapshotLimits::default(),
                snap_sends: Arc::new(tokio::sync::Semaphore::new(
                    crate::snap::SnapshotLimits::default().max_sends,
                )),
                snap_status: Mutex::new(None),
                snap_files: None,
            }),
            pending: HashMap::new(),
        }
    }

    /// Reports to `f` whether each snapshot was delivered (the store's raftstore, which then
    /// goes on without waiting for its snapshot timeout).
    pub fn on_snapshot_status(&self, f: SnapshotReport) {
        *self.shared.snap_status.lock() = Some(f);
    }

    /// Connects to other stores with `security`'s TLS (before the transport is cloned).
    pub fn with_security(mut self, security: security::SecurityManager) -> GrpcTransport {
        Arc::get_mut(&mut self.shared)
            .expect("set security before cloning")
            .security = security;
        self
    }

    /// Sets the snapshot transfer limits (before the transport is cloned for the pollers).
    pub fn with_snapshot_limits(mut self, limits: crate::snap::SnapshotLimits) -> GrpcTransport {
        let shared = Arc::get_mut(&mut self.shared).expect("set limits before cloning");
        shared.snap_limits = limits;
        shared.snap_sends = Arc::new(tokio::sync::Semaphore::new(limits.max_sends.max(1)));
        self
    }

    /// Sends snapshots from the files of `mgr` (the store's; before the transport is cloned).
    pub fn with_snap_manager(mut self, mgr: raftstore::snap::SnapManager) -> GrpcTransport {
        Arc::get_mut(&mut self.shared)
            .expect("set the snapshot files before cloning")
            .snap_files = Some(mgr);
        self
    }

    fn connection(shared: &Arc<Shared>, store_id: u64) -> mpsc::Sender<Vec<RaftMessage>> {
        let mut conns = shared.conns.lock();
        if let Some(tx) = conns.get(&store_id) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        conns.insert(store_id, tx.clone());
        shared
            .runtime
            .spawn(connection_loop(shared.clone(), store_id, rx));
        tx
    }
}

impl raftstore::Transport for GrpcTransport {
    fn send(&mut self, msg: RaftMessage) {
        let Some(to) = msg.to_peer.as_ref().map(|p| p.store_id) else {
            return;
        };
        self.pending.entry(to).or_default().push(msg);
    }

    fn send_snapshot(&mut self, msg: RaftMessage) {
        let Some(to) = msg.to_peer.as_ref().map(|p| p.store_id) else {
            return;
        };
        let (region_id, to_peer) = (msg.region_id, msg.to_peer.map_or(0, |p| p.id));
        let report = move |shared: &Shared, delivered: bool| {
            if let Some(f) = shared.snap_status.lock().clone() {
                f(region_id, to_peer, delivered);
            }
        };
        let Ok(permit) = self.shared.snap_sends.clone().try_acquire_owned() else {
            debug!(
                store_id = to,
                "too many snapshots in flight; this one is dropped"
            );
            report(&self.shared, false);
            return;
        };
        let shared = self.shared.clone();
        self.shared.runtime.spawn(async move {
            match send_snapshot(&shared, to, msg).await {
                Ok(bytes) => {
                    info!(store_id = to, region_id, bytes, "snapshot sent");
                    report(&shared, true);
                }
                Err(e) => {
                    info!(store_id = to, region_id, %e, "snapshot send failed");
                    report(&shared, false);
                }
            }
            drop(permit);
        });
    }

    fn flush(&mut self) {
        for (store_id, msgs) in self.pending.drain() {
            if msgs.is_empty() {
                continue;
            }
            let tx = Self::connection(&self.shared, store_id);
            if tx.try_send(msgs).is_err() {
                debug!(store_id, "raft queue full, batch dropped");
            }
        }
    }
}

async fn connection_loop(
    shared: Arc<Shared>,
    store_id: u64,
    mut rx: mpsc::Receiver<Vec<RaftMessage>>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let addr = match shared.resolver.resolve(store_id).await {
            Ok(a) => a,
            Err(e) => {
                debug!(store_id, %e, "resolve failed");
                if !drain_for(&mut rx, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let url = if addr.starts_with("http") {
            addr.clone()
        } else {
            format!("http://{addr}")
        };
        let client = match connect(url, shared.keepalive, &shared.security).await {
            Ok(c) => c
                .max_decoding_message_size(shared.max_message_size)
                .max_encoding_message_size(shared.max_message_size),
            Err(e) => {
                debug!(store_id, %addr, %e, "connect failed");
                if !drain_for(&mut rx, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        info!(store_id, %addr, "raft connection established");
        backoff = Duration::from_millis(50);
        let (stream_tx, stream_rx) = mpsc::channel::<BatchRaftMessage>(64);
        let mut client = client;
        let call = tokio::spawn(async move {
            client
                .batch_raft(tokio_stream::wrappers::ReceiverStream::new(stream_rx))
                .await
        });
        loop {
            let Some(msgs) = rx.recv().await else {
                return;
            };
            let mut batch = BatchRaftMessage { msgs };
            // Coalesce whatever else is queued into the same stream message.
            while let Ok(more) = rx.try_recv() {
                batch.msgs.extend(more);
                if batch.msgs.len() >= 4096 {
                    break;
                }
            }
            if stream_tx.send(batch).await.is_err() {
                break;
            }
        }
        drop(stream_tx);
        match call.await {
            Ok(Ok(_)) => debug!(store_id, "raft stream closed"),
            Ok(Err(e)) => debug!(store_id, %e, "raft stream failed"),
            Err(e) => debug!(store_id, %e, "raft stream task failed"),
        }
        if !drain_for(&mut rx, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Streams one snapshot to `store_id`: the message, then its files' bytes, at most
/// `send_bytes_per_sec`; returns the bytes sent.
async fn send_snapshot(shared: &Shared, store_id: u64, msg: RaftMessage) -> Result<u64, String> {
    use std::io::Read as _;
    let (key, data) = raftstore::snap::files_of(&msg).ok_or("not a snapshot message")?;
    let mgr = shared
        .snap_files
        .clone()
        .ok_or("this transport has no snapshot files")?;
    let total = data.total_size();
    // Opened now: the files may be replaced by a newer snapshot while this one streams.
    let reader = tokio::task::spawn_blocking(move || mgr.reader(key, &data))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let addr = shared.resolver.resolve(store_id).await?;
    let url = if addr.starts_with("http") {
        addr
    } else {
        format!("http://{addr}")
    };
    let client = connect(url, shared.keepalive, &shared.security)
        .await
        .map_err(|e| e.to_string())?
        .max_encoding_message_size(shared.max_message_size.max(2 * crate::snap::CHUNK_BYTES));
    let rate = shared.snap_limits.send_bytes_per_sec.max(1) as f64;
    let started = tokio::time::Instant::now();
    let head = proto::raft_serverpb::SnapshotChunk {
        message: Some(msg),
        data: bytes::Bytes::new(),
    };
    // Throttle: a chunk leaves no earlier than the bytes up to its end take at the rate. A
    // read error ends the stream early; the receiver then refuses it as incomplete.
    let body = futures::stream::unfold((reader, 0u64), move |(reader, sent)| async move {
        let (reader, buf) = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            let mut buf = Vec::with_capacity(crate::snap::CHUNK_BYTES);
            let r = (&mut reader)
                .take(crate::snap::CHUNK_BYTES as u64)
                .read_to_end(&mut buf);
            (reader, r.map(|_| buf))
        })
        .await
        .ok()?;
        let buf = buf.ok().filter(|b| !b.is_empty())?;
        let sent = sent + buf.len() as u64;
        tokio::time::sleep_until(started + Duration::from_secs_f64(sent as f64 / rate)).await;
        let chunk = proto::raft_serverpb::SnapshotChunk {
            message: None,
            data: bytes::Bytes::from(buf),
        };
        Some((chunk, (reader, sent)))
    });
    let mut client = client;
    client
        .snapshot(futures::stream::iter([head]).chain(body))
        .await
        .map_err(|e| e.to_string())?;
    Ok(total)
}

/// Opens a channel to `url` with HTTP/2 keepalive pings, sent even while no call is open.
async fn connect(
    url: String,
    keepalive: Keepalive,
    security: &security::SecurityManager,
) -> Result<TikvClient<Channel>, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(url)?
        .http2_keep_alive_interval(keepalive.interval)
        .keep_alive_timeout(keepalive.timeout)
        .keep_alive_while_idle(true);
    Ok(TikvClient::new(security.connect(endpoint).await?))
}

/// Waits `d`, discarding queued messages (they would be stale); false if the queue closed.
async fn drain_for(rx: &mut mpsc::Receiver<Vec<RaftMessage>>, d: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(_)) => continue,
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}
