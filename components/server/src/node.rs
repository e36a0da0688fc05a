//! Start-up and life of a store process.
//!
//! 1. Open the engine; connect to PD (retrying while PD comes up).
//! 2. Identity: reuse the persisted store id, or allocate one from PD and persist it. An engine
//!    that belongs to another cluster is refused.
//! 3. Bind the gRPC port, register the store with PD (`PutStore`), start the raftstore with the
//!    gRPC Raft transport (store addresses resolved through PD) and serve `tikvpb.Tikv`.
//! 4. Cluster bootstrap: while PD says the cluster is not bootstrapped, wait until as many stores
//!    as the cluster's replica count have registered; the one with the smallest id among the
//!    first of them allocates the first region (whole keyspace, one peer on each) and
//!    bootstraps PD with it. Every store named in that first region then creates its replica
//!    from the same initial state, so no snapshot or conf change is needed to start.
//! 5. Heartbeats: store statistics periodically; a led region as soon as the raftstore reports
//!    a leadership or region change, all led regions after a PD leader change and periodically.
//! 6. PD's scheduling answers: conf changes, merges (PrepareMerge on the source's leader) and
//!    leader transfers are handed to the region's leader.
//! 7. Size checks: a region this store leads that outgrew `split.region_max_size` is split.
//!    MVCC GC: every `gc.run_interval_secs` the store asks PD for the GC safe point and collects
//!    the regions it leads ([`crate::gc_worker`]).
//! 8. An HTTP status server (`status_addr`): Prometheus metrics and the store's regions.
//! 9. Shutdown hands every leadership to another replica first, so a planned stop (a rolling
//!    restart) leaves no region waiting for an election.
//!
//! The runtime these tasks run on also carries the Raft transport, so none of them blocks it:
//! engine reads and synced writes (store identity, creating a replica, stopping the raftstore)
//! and the split checker's size scans run in `spawn_blocking`, and the raw API's engine reads on
//! the [`ReadPool`]. gRPC connections, accepted and opened, send HTTP/2 keepalive pings
//! (`grpc_keepalive_time_ms` / `grpc_keepalive_timeout_ms`).
//!
//! Heartbeats to PD are in [`crate::heartbeats`].
//!
//! Deliberately absent: region merge.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use pd_client::PdClient;
use proto::metapb;
use proto::tikvpb::tikv_server::TikvServer;
use raftstore::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::ServerConfig;
use crate::gc_worker::GcWorker;
use crate::raw::RawStorage;
use crate::read_pool::ReadPool;
use crate::service::TikvService;
use crate::transport::{GrpcTransport, StoreResolver};

/// A running store process.
pub struct Node {
    store_id: u64,
    addr: SocketAddr,
    store: SharedStore,
    shutdown_tx: watch::Sender<bool>,
    gc: GcWorker,
    tasks: Vec<JoinHandle<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

/// Resolves store addresses through PD, caching them for a while.
struct PdResolver {
    pd: PdClient,
    cache: Arc<Mutex<HashMap<u64, (String, Instant)>>>,
}

const RESOLVE_TTL: Duration = Duration::from_secs(10);

impl StoreResolver for PdResolver {
    fn resolve(&self, store_id: u64) -> BoxFuture<'static, Result<String, String>> {
        if let Some((addr, at)) = self.cache.lock().get(&store_id) {
            if at.elapsed() < RESOLVE_TTL {
                let addr = addr.clone();
                return Box::pin(async move { Ok(addr) });
            }
        }
        let pd = self.pd.clone();
        let cache = self.cache.clone();
        Box::pin(async move {
            let store = pd.get_store(store_id).await.map_err(|e| e.to_string())?;
            if store.address.is_empty() {
                return Err(format!("store {store_id} has no address"));
            }
            cache
                .lock()
                .insert(store_id, (store.address.clone(), Instant::now()));
            Ok(store.address)
        })
    }
}

/// Split ids from PD (`AskBatchSplit`), results reported with `ReportBatchSplit`.
struct PdSplitIds {
    pd: PdClient,
}

impl crate::split::SplitIdAllocator for PdSplitIds {
    fn alloc(
        &self,
        region: metapb::Region,
        count: u32,
    ) -> BoxFuture<'static, Result<Vec<raftstore::cmd::SplitIds>, String>> {
        let pd = self.pd.clone();
        Box::pin(async move {
            let ids = pd
                .ask_batch_split(region, count)
                .await
                .map_err(|e| e.to_string())?;
            Ok(ids
                .into_iter()
                .map(|id| raftstore::cmd::SplitIds {
                    region_id: id.new_region_id,
                    peer_ids: id.new_peer_ids,
                })
                .collect())
        })
    }

    fn report(&self, regions: Vec<metapb::Region>) -> BoxFuture<'static, ()> {
        let pd = self.pd.clone();
        Box::pin(async move {
            // Best effort: the leaders' heartbeats tell PD the same soon after.
            if let Err(e) = pd.report_batch_split(regions).await {
                warn!(%e, "reporting a split to PD failed");
            }
        })
    }
}

/// The raftstore, shared with the task that joins the cluster; `None` once shut down.
type SharedStore = Arc<Mutex<Option<Store>>>;

/// Runs blocking engine or disk work on tokio's blocking threads, off the async workers.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("a blocking task failed: {e}"))?
}

/// How long a new store waits for PD to let it take over the address of a store that is gone
/// (PD judges that after 30 s without the old store's heartbeats).
const REGISTER_WAIT: Duration = Duration::from_secs(90);

/// Registers `store` with PD. A store restarted on an empty data directory registers under a
/// new id at the address of its old self: PD refuses that until it has missed the old store's
/// heartbeats long enough to know it is gone, then drains the old one. So that refusal is
/// retried for a while; any other error is returned at once.
async fn register(pd: &PdClient, store: metapb::Store) -> Result<()> {
    let until = Instant::now() + REGISTER_WAIT;
    loop {
        match pd.put_store(store.clone()).await {
            Ok(()) => return Ok(()),
            Err(e)
                if e.to_string().contains("is already used by store") && Instant::now() < until =>
            {
                warn!(%e, "PD still holds this address for another store; waiting for it to see that one is gone");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn connect_pd(
    endpoints: &[String],
    security: &security::SecurityManager,
    deadline: Duration,
) -> Result<PdClient> {
    let until = Instant::now() + deadline;
    let mut pause = Duration::from_millis(100);
    let config = pd_client::PdClientConfig {
        security: security.clone(),
        ..Default::default()
    };
    loop {
        match PdClient::connect_with_config(endpoints.to_vec(), config.clone()).await {
            Ok(pd) => return Ok(pd),
            Err(e) if Instant::now() < until => {
                warn!(%e, "PD not reachable yet, retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => bail!("cannot reach PD at {endpoints:?}: {e}"),
        }
    }
}

impl Node {
    /// Starts the store described by `cfg`; returns once it serves.
    pub async fn start(cfg: ServerConfig) -> Result<Node> {
        cfg.validate().map_err(|e| anyhow!("invalid config: {e}"))?;
        // A store listening on a specific address connects from it too (see
        // `SecurityManager::with_local_address`).
        let listen_ip = cfg
            .addr
            .parse::<SocketAddr>()
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        let security =
            security::SecurityManager::new(cfg.security.clone())?.with_local_address(listen_ip);
        let data_dir = cfg.data_dir.clone();
        let mut engine_opts = engine::EngineOptions::default();
        // A negative control for `rangekv verify`, deliberately not in the config file.
        if std::env::var_os(UNSAFE_NO_FSYNC_ENV).is_some() {
            warn!(
                "{UNSAFE_NO_FSYNC_ENV} is set: writes skip the write-ahead log and fsync; a \
                 crash LOSES ACKNOWLEDGED WRITES (development only)"
            );
            engine_opts.unsafe_volatile = true;
        }
        let engine = blocking(move || {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            engine::Engine::open(&data_dir, &engine_opts)
                .with_context(|| format!("opening the engine in {}", data_dir.display()))
        })
        .await?;
        let pd = connect_pd(&cfg.pd_endpoints, &security, Duration::from_secs(60)).await?;
        let cluster_id = pd.cluster_id();
        let ident_engine = engine.clone();
        let ident =
            blocking(move || Ok(raftstore::bootstrap::load_store_ident(&ident_engine)?)).await?;
        let store_id = match ident {
            Some(ident) if ident.cluster_id != cluster_id => bail!(
                "data in {} belongs to cluster {}, but PD serves cluster {cluster_id}",
                cfg.data_dir.display(),
                ident.cluster_id
            ),
            Some(ident) => ident.store_id,
            None => {
                let id = pd.alloc_id().await?;
                let ident_engine = engine.clone();
                // A synced write.
                blocking(move || {
                    Ok(raftstore::bootstrap::bootstrap_store(
                        &ident_engine,
                        cluster_id,
                        id,
                    )?)
                })
                .await?;
                info!(store_id = id, cluster_id, "store identity created");
                id
            }
        };
        let listener = tokio::net::TcpListener::bind(&cfg.addr)
            .await
            .with_context(|| format!("binding {}", cfg.addr))?;
        let addr = listener.local_addr()?;
        let advertise = if cfg.advertise_addr.is_empty() {
            addr.to_string()
        } else {
            cfg.advertise_addr.clone()
        };
        let status_listener = if cfg.status_addr.is_empty() {
            None
        } else {
            Some(
                tokio::net::TcpListener::bind(&cfg.status_addr)
                    .await
                    .with_context(|| format!("binding the status address {}", cfg.status_addr))?,
            )
        };
        // Operators' tools (`rangekv ctl region check`) find the status server through PD.
        let status_address = match &status_listener {
            Some(l) => advertised_status_address(l.local_addr()?, &advertise),
            None => String::new(),
        };
        register(
            &pd,
            metapb::Store {
                id: store_id,
                address: advertise.clone(),
                status_address,
                version: env!("CARGO_PKG_VERSION").into(),
                start_timestamp: crate::heartbeats::unix_secs() as i64,
                ..Default::default()
            },
        )
        .await
        .context("registering the store with PD")?;

        let resolver = Arc::new(PdResolver {
            pd: pd.clone(),
            cache: Arc::default(),
        });
        let keepalive = cfg.keepalive();
        let transport = GrpcTransport::new(
            tokio::runtime::Handle::current(),
            resolver,
            cfg.limits.max_grpc_message_size,
            keepalive,
        )
        .with_snapshot_limits(cfg.snapshot_limits())
        .with_snap_manager(raftstore::snap::SnapManager::of(&engine))
        .with_security(security.clone());
        let snapshot_reports = transport.clone();
        let mut rs_cfg = cfg.raftstore.to_raftstore();
        // A negative control for `rangekv verify`, deliberately not in the config file.
        if std::env::var_os(UNSAFE_FOLLOWER_READS_ENV).is_some() {
            warn!(
                "{UNSAFE_FOLLOWER_READS_ENV} is set: followers serve replica reads without \
                 asking the leader; reads are NOT linearizable (development only)"
            );
            rs_cfg.unsafe_follower_reads = true;
        }
        // Leadership and region changes wake the region heartbeat task at once.
        let (changes_tx, changes_rx) = futures::channel::mpsc::unbounded::<u64>();
        let hot_reports = changes_tx.clone();
        rs_cfg.on_region_change = Some(raftstore::RegionChangeObserver(Arc::new(move |id| {
            let _ = changes_tx.unbounded_send(id);
        })));
        let store_engine = engine.clone();
        let store =
            blocking(move || Ok(Store::start(store_id, store_engine, rs_cfg, transport)?)).await?;
        let router = store.router();
        let report_router = router.clone();
        snapshot_reports.on_snapshot_status(Arc::new(move |region_id, to, delivered| {
            report_router.report_snapshot(region_id, to, delivered)
        }));
        let split_engine = engine.clone();
        let status_engine = engine.clone();
        let split_ids: Arc<dyn crate::split::SplitIdAllocator> =
            Arc::new(PdSplitIds { pd: pd.clone() });
        let read_pool = ReadPool::new(&cfg.readpool).context("starting the read pool")?;
        let storage =
            RawStorage::with_read_pool(router.clone(), engine, cfg.limits.clone(), read_pool);
        let load = storage.load_recorder().clone();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let service = TikvService::new(storage)
            .with_shutdown(shutdown_rx.clone())
            .with_split_ids(split_ids.clone())
            .with_slow_log(Duration::from_millis(cfg.slow_log.threshold_ms))
            .with_snapshot_limits(cfg.snapshot_limits());
        // GC commands share the transactional API's scheduler, hence its latches.
        let gc = GcWorker::new(service.txn_storage().scheduler().clone(), cfg.gc.clone());
        let service = TikvServer::new(service)
            .max_decoding_message_size(cfg.limits.max_grpc_message_size)
            .max_encoding_message_size(cfg.limits.max_grpc_message_size);
        let incoming = security::accept(listener, &security, security::Alpn::Grpc).into_stream();
        let mut rx = shutdown_rx.clone();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(keepalive.interval))
                .http2_keepalive_timeout(Some(keepalive.timeout))
                .max_concurrent_streams(Some(cfg.limits.max_concurrent_streams))
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = rx.wait_for(|v| *v).await;
                }),
        );
        let mut node = Node {
            store_id,
            addr,
            store: Arc::new(Mutex::new(Some(store))),
            shutdown_tx,
            gc: gc.clone(),
            tasks: Vec::new(),
            server: Some(server),
        };
        node.tasks.push(tokio::spawn(join_cluster(
            pd.clone(),
            node.store.clone(),
            store_id,
            shutdown_rx.clone(),
        )));
        let health = crate::status::Health::default();
        node.tasks
            .push(tokio::spawn(crate::heartbeats::store_heartbeats(
                pd.clone(),
                router.clone(),
                health.clone(),
                store_id,
                Duration::from_secs(cfg.store_heartbeat_secs.max(1)),
                shutdown_rx.clone(),
            )));
        // PD's scheduling answers: conf changes, merges, leader transfers, and splits at
        // keyspace boundaries.
        let schedule_router = router.clone();
        let pd_splits = crate::split::PdSplits::new(
            router.clone(),
            split_ids.clone(),
            tokio::runtime::Handle::current(),
        );
        let runtime = tokio::runtime::Handle::current();
        pd.on_region_heartbeat_response(Arc::new(move |resp| {
            pd_splits.on_heartbeat_response(&resp);
            if let Some(change) = crate::replica::peer_change(&resp) {
                let router = schedule_router.clone();
                let (region_id, epoch) = (resp.region_id, resp.region_epoch);
                runtime.spawn(async move {
                    match router.change_peer(region_id, epoch, vec![change]).await {
                        Ok(region) => debug!(region_id, ?region, "PD's conf change applied"),
                        Err(e) => debug!(region_id, %e, "PD's conf change not done"),
                    }
                });
                return;
            }
            if let Some(target) = resp.merge.as_ref().and_then(|m| m.target.clone()) {
                let router = schedule_router.clone();
                let source_id = resp.region_id;
                // PD asks again on the source's next heartbeats if this does not go through.
                runtime.spawn(async move {
                    match router.prepare_merge(source_id, target).await {
                        Ok(region) => debug!(source_id, ?region, "PD's merge prepared"),
                        Err(e) => debug!(source_id, %e, "PD's merge not prepared"),
                    }
                });
                return;
            }
            let Some(to) = resp.transfer_leader.and_then(|t| t.peer) else {
                return;
            };
            if let Err(e) = schedule_router.transfer_leader(resp.region_id, to, resp.region_epoch) {
                debug!(region_id = resp.region_id, %e, "leader transfer for an unknown region");
            }
        }));
        if let Some(listener) = status_listener {
            let (status_router, rx) = (router.clone(), shutdown_rx.clone());
            let health = health.clone();
            let accepted = security::accept(listener, &security, security::Alpn::Http1);
            node.tasks.push(tokio::spawn(async move {
                if let Err(e) =
                    crate::status::serve(accepted, status_router, status_engine, health, rx).await
                {
                    warn!(%e, "status server failed");
                }
            }));
        }
        node.tasks
            .push(tokio::spawn(crate::split_checker::load_splits(
                router.clone(),
                load.clone(),
                split_ids.clone(),
                cfg.split.clone(),
                hot_reports,
                shutdown_rx.clone(),
            )));
        let sizes = Arc::new(crate::split_checker::RegionSizes::default());
        node.tasks
            .push(tokio::spawn(crate::split_checker::split_checks(
                router.clone(),
                split_engine,
                split_ids,
                cfg.split.clone(),
                sizes.clone(),
                shutdown_rx.clone(),
            )));
        if cfg.gc.run_interval_secs > 0 {
            node.tasks
                .push(tokio::spawn(gc.run(pd.clone(), shutdown_rx.clone())));
        }
        node.tasks
            .push(tokio::spawn(crate::heartbeats::region_heartbeats(
                pd,
                router,
                crate::heartbeats::Reports {
                    load,
                    sizes,
                    down: crate::down_peers::DownPeers::new(Duration::from_secs(
                        cfg.max_peer_down_secs,
                    )),
                },
                Duration::from_secs(cfg.region_heartbeat_secs.max(1)),
                changes_rx,
                shutdown_rx,
            )));
        info!(store_id, %addr, "store started");
        Ok(node)
    }

    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The store's GC worker (tests trigger a round with it instead of waiting an interval).
    pub fn gc_worker(&self) -> &GcWorker {
        &self.gc
    }

    /// Hands its leaderships to other stores (while still serving, so the transfers can
    /// finish), then stops serving, stops the raftstore and waits for everything to close.
    pub async fn shutdown(mut self) {
        let store = self.store.clone();
        let still_leading = tokio::task::spawn_blocking(move || {
            store
                .lock()
                .as_ref()
                .map_or(0, |s| s.transfer_leaders_away(Duration::from_secs(3)))
        })
        .await
        .unwrap_or(0);
        if still_leading > 0 {
            warn!(
                regions = still_leading,
                "stopping while still leading some regions"
            );
        }
        let _ = self.shutdown_tx.send(true);
        if let Some(server) = self.server.take() {
            match tokio::time::timeout(Duration::from_secs(10), server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(%e, "gRPC server ended with an error"),
                Ok(Err(e)) => warn!(%e, "gRPC server task failed"),
                Err(_) => warn!("gRPC server did not stop in time"),
            }
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
        // `join_cluster` may still hold the lock on a blocking thread (creating a replica).
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(mut store) = store.lock().take() {
                store.shutdown();
            }
        })
        .await;
        info!(store_id = self.store_id, "store stopped");
    }
}

/// Waits for the cluster to be bootstrapped (bootstrapping it when this store is the one to)
/// and creates this store's replica of the first region if it has one.
async fn join_cluster(
    pd: PdClient,
    store: SharedStore,
    store_id: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        match try_join(&pd, &store, store_id).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => warn!(%e, "joining the cluster"),
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// One attempt of [`join_cluster`]: `Ok(true)` when done.
async fn try_join(pd: &PdClient, store: &SharedStore, store_id: u64) -> Result<bool> {
    if !pd.is_bootstrapped().await? {
        let max_replicas = pd.get_cluster_config().await?.max_peer_count as usize;
        if max_replicas == 0 {
            bail!("PD reports a replica count of 0");
        }
        let mut stores = pd.get_all_stores(true).await?;
        stores.sort_by_key(|s| s.id);
        if stores.len() < max_replicas {
            return Ok(false);
        }
        let chosen = &stores[..max_replicas];
        if chosen[0].id != store_id {
            return Ok(false);
        }
        let region_id = pd.alloc_id().await?;
        let mut peers = Vec::with_capacity(chosen.len());
        for s in chosen {
            peers.push(metapb::Peer {
                id: pd.alloc_id().await?,
                store_id: s.id,
                ..Default::default()
            });
        }
        let region = metapb::Region {
            id: region_id,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: INITIAL_EPOCH,
                version: INITIAL_EPOCH,
            }),
            peers,
            ..Default::default()
        };
        match pd.bootstrap(chosen[0].clone(), region).await {
            Ok(()) => info!(store_id, region_id, "bootstrapped the cluster"),
            Err(pd_client::Error::AlreadyBootstrapped { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The region that starts the keyspace is always the bootstrap region: a split keeps the
    // parent on the left. While its membership never changed (conf_ver still the initial one),
    // its id and peers are those it was bootstrapped with, and a store named among them that
    // has no replica (it crashed, or PD failed it, before creating one; splits may have
    // happened meanwhile) creates it from that bootstrap metadata: replaying the log from
    // index 5 (or a snapshot, if the log was compacted) brings the splits too. Once its
    // membership changed, a replica joins only when the leader's messages create it (and a
    // snapshot fills it): the bootstrap metadata would be wrong.
    let first = pd.get_region(b"").await?.region;
    let unchanged = first
        .region_epoch
        .is_some_and(|e| e.conf_ver == INITIAL_EPOCH);
    if unchanged && first.peers.iter().any(|p| p.store_id == store_id) {
        fail::fail_point!("join_before_create_peer");
        let region = bootstrap_region(&first);
        // A synced write under the store's lock: on a blocking thread.
        let store = store.clone();
        blocking(move || {
            if let Some(store) = store.lock().as_ref() {
                store.create_peer(&region)?;
            }
            Ok(())
        })
        .await?;
    }
    Ok(true)
}

/// The status server's address as others reach it: a wildcard bind (0.0.0.0) is reached on
/// the host the store advertises for gRPC.
fn advertised_status_address(bound: SocketAddr, advertise: &str) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let host = advertise
        .rsplit_once(':')
        .map_or(advertise, |(host, _)| host);
    format!("{host}:{}", bound.port())
}

/// The bootstrap form of the cluster's first region, given its current form.
fn bootstrap_region(first: &metapb::Region) -> metapb::Region {
    metapb::Region {
        id: first.id,
        start_key: Default::default(),
        end_key: Default::default(),
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: INITIAL_EPOCH,
            version: INITIAL_EPOCH,
        }),
        peers: first.peers.clone(),
    }
}

/// The epoch of the cluster's first region when it is bootstrapped.
const INITIAL_EPOCH: u64 = 1;

/// Set (to anything) in a store's environment, it makes followers answer replica reads from
/// their own applied state without a ReadIndex round: stale reads on purpose, so that
/// `rangekv verify` can show its register checker catches them. Development only.
pub const UNSAFE_FOLLOWER_READS_ENV: &str = "RANGEKV_UNSAFE_FOLLOWER_READS";

/// Set (to anything) in a store's environment, it makes the store's engine volatile (see
/// `engine::EngineOptions::unsafe_volatile`): Raft logs and applied data skip the write-ahead
/// log and its fsync, so kill -9 loses acknowledged writes as a power cut would, and `rangekv
/// verify` can show its checkers catch that. Development only.
pub const UNSAFE_NO_FSYNC_ENV: &str = "RANGEKV_UNSAFE_NO_FSYNC";

#[cfg(test)]
mod tests {
    use super::advertised_status_address;

    #[test]
    fn a_wildcard_status_bind_is_advertised_on_the_grpc_host() {
        let bound = "0.0.0.0:20180".parse().unwrap();
        assert_eq!(
            advertised_status_address(bound, "10.0.0.7:20160"),
            "10.0.0.7:20180"
        );
        let bound = "127.0.0.1:20180".parse().unwrap();
        assert_eq!(
            advertised_status_address(bound, "10.0.0.7:20160"),
            "127.0.0.1:20180"
        );
    }
}
