//! Start-up and shutdown of a PD node.
//!
//! [`start`] opens PD's engine in `data_dir`, checks that the directory may be used by this
//! member of this group (asking the peers it can reach; see [`crate::membership`]), bootstraps
//! it if it is empty and the group new, loads the state machine, starts the node's Raft
//! thread ([`crate::raft_node`]) and its PD-to-PD senders ([`crate::transport`]), binds the
//! listen address and serves `pdpb.PD` and `pdraftpb.PdRaft` on one gRPC server in the background
//! on the current tokio runtime, which also answers PD's HTTP API over HTTP/1.1 on the same port
//! ([`crate::http_api`]). It returns a [`PdHandle`].
//!
//! The group starts as `initial_cluster` (one voter per member, Raft peer id = member id); with an
//! empty or one-entry `initial_cluster` the node is a group of one, elects itself at once, and
//! [`start`] returns only once it serves (leader, cluster id initialized), as the single-node PD
//! always did. With several members [`start`] returns at once; the node serves when elected.
//! Members are added and removed while the group runs ([`crate::members`]); a member started
//! on an empty directory with `initial_cluster_state = existing` joins ([`crate::membership`]).
//!
//! Leader duties (one background task): on becoming a serving leader, and then every
//! `tso_update_interval`, initialize the cluster id if the group has none yet (the first leader
//! generates it and replicates `InitCluster`; a concurrent second one is rejected by the state
//! machine) and extend the replicated TSO window, which in a new term replicates a bound above
//! every earlier leader's before any timestamp is handed out ([`crate::tso`]).
//!
//! Shutdown ([`PdHandle::shutdown`], or dropping the handle) stops accepting connections, ends
//! the open Tso / RegionHeartbeat / PdRaft streams, waits for in-flight requests, stops the Raft
//! thread, and waits until the engine is closed, so the same `data_dir` can be reopened at once,
//! in the same process.
//!
//! Invariants:
//! - The cluster id never changes once replicated.
//! - A member's id never changes: a member of `initial_cluster` has the id of its name, an added
//!   member the id the group gave it (kept in its member record).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use engine::{Engine, EngineOptions};
use proto::pdpb::pd_server::PdServer;
use proto::pdpb::Member;
use proto::pdraftpb::pd_raft_server::PdRaftServer;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::cluster::Cluster;
use crate::command::{InitCluster, PdCommand};
use crate::config::{strip_scheme, PdConfig};
use crate::id::Ids;
use crate::log_gc::LogGcConfig;

/// The largest message a PD member accepts from another over `pdraftpb.PdRaft`.
const MAX_RAFT_MESSAGE_SIZE: usize = 1 << 30;
use crate::members::{self, member_id, MemberList};
use crate::membership::{self, MemberRecord, StartAction};
use crate::merge::MergeConfig;
use crate::proposer::{Opened, StateHandle};
use crate::raft_node::{Leadership, NodeStatus, RaftLogState, RaftMsg, RaftNode, RaftTiming};
use crate::replica::ReplicaConfig;
use crate::schedule::{LeaderBalanceConfig, LEADER_TRANSFER_TIMEOUT_MS};
use crate::service::{PdService, Shutdown};
use crate::transport::{NetFilter, PdRaftService, PeerSender};
use crate::tso::Tso;
use crate::{Error, Result};

/// How long a starting member waits for each peer's answer to its membership check.
const PEER_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// A running PD node.
#[derive(Debug)]
pub struct PdHandle {
    member_id: u64,
    addr: SocketAddr,
    client_url: String,
    status: Arc<NodeStatus>,
    /// Taken (dropped) at shutdown: it holds the state and so the engine.
    cluster: Option<Arc<Cluster>>,
    filter: Arc<NetFilter>,
    raft_inbox: std::sync::mpsc::Sender<RaftMsg>,
    raft_thread: Option<std::thread::JoinHandle<()>>,
    shutdown_timeout: Duration,
    shutdown_tx: watch::Sender<bool>,
    server_task: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    duties_task: JoinHandle<()>,
    closed: oneshot::Receiver<()>,
}

/// Starts a PD node with the system clock. See the module docs.
pub async fn start(config: PdConfig) -> Result<PdHandle> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// Starts a PD node reading wall time from `clock`.
pub async fn start_with_clock(config: PdConfig, clock: Arc<dyn Clock>) -> Result<PdHandle> {
    config.validate()?;
    let listener = TcpListener::bind(config.listen_host_port()).await?;
    start_with_listener(config, clock, listener).await
}

/// Starts a PD node serving on an already bound `listener` (`listen_addr` is then ignored).
/// Tests bind every member's listener first to learn the ports for `initial_cluster`.
pub async fn start_with_listener(
    config: PdConfig,
    clock: Arc<dyn Clock>,
    listener: TcpListener,
) -> Result<PdHandle> {
    config.validate()?;
    let addr = listener.local_addr()?;
    // A member listening on a specific address connects from it too.
    let listen_ip = Some(addr.ip()).filter(|ip| !ip.is_unspecified());
    let security = security::SecurityManager::new(config.security.clone())
        .map_err(|e| Error::Config(e.to_string()))?
        .with_local_address(listen_ip);
    let advertise = if config.advertise_addr.is_empty() {
        addr.to_string()
    } else {
        strip_scheme(&config.advertise_addr).to_owned()
    };
    let client_url = format!("http://{advertise}");
    let configured = config.members()?;
    let initial_members: MemberList = if configured.is_empty() {
        members::initial([(
            member_id(&config.name),
            config.name.clone(),
            client_url.clone(),
        )])
    } else {
        members::initial(
            configured
                .iter()
                .map(|(name, url)| (member_id(name), name.clone(), url.clone())),
        )
    };
    let own_url = configured
        .iter()
        .find(|(name, _)| *name == config.name)
        .map_or_else(|| client_url.clone(), |(_, url)| url.clone());
    if configured.len() > 1 && strip_scheme(&own_url) != advertise {
        return Err(Error::Config(format!(
            "initial_cluster places {} at {own_url}, but it serves at {advertise}: a PD member \
             serves clients and its peers on one address, so initial_cluster lists each \
             member's client address",
            config.name
        )));
    }

    // Which group the data directory belongs to, and whether this member may start on it
    // (see `crate::membership`): decided before anything is written.
    let mut expected = MemberRecord::new(&config.name, configured.iter().map(|(n, _)| n.clone()));
    let data_dir = config.data_dir.clone();
    let (engine, action, local_cluster_id, found) = {
        let (expected, state) = (expected.clone(), config.initial_cluster_state);
        type Opened = (Engine, StartAction, u64, membership::Found);
        tokio::task::spawn_blocking(move || -> Result<Opened> {
            std::fs::create_dir_all(&data_dir)?;
            let engine = Engine::open(&data_dir, &EngineOptions::default())?;
            let found = membership::inspect(&engine)?;
            let action = membership::decide(&found, &expected, state, &data_dir)?;
            let cluster_id = crate::state::load_cluster_id(&engine)?;
            Ok((engine, action, cluster_id, found))
        })
        .await
        .map_err(|e| Error::Internal(format!("engine open task failed: {e}")))??
    };
    // The list this member starts with: its own (once membership changed), the group's (when it
    // joins), or `initial_cluster`.
    let local_list = {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || members::load(&engine))
            .await
            .map_err(|e| Error::Internal(format!("member list task failed: {e}")))??
    };
    let mut peer_urls: Vec<(String, String)> = configured
        .iter()
        .filter(|(name, _)| *name != config.name)
        .cloned()
        .collect();
    for m in local_list.iter().flat_map(|l| &l.members) {
        if m.name != config.name && !peer_urls.iter().any(|(n, _)| *n == m.name) {
            peer_urls.push((m.name.clone(), m.url.clone()));
        }
    }
    let (member_id, list) = if action == StartAction::Join {
        if peer_urls.is_empty() {
            return Err(Error::CannotJoin {
                name: config.name.clone(),
                detail: format!(
                    "its data directory {} holds no PD data and initial_cluster names no other \
                     member whose group it could join; to create a new PD, start it with \
                     --initial-cluster-state new",
                    config.data_dir.display()
                ),
            });
        }
        let answers = membership::ask_members(&peer_urls, &security, PEER_CHECK_TIMEOUT).await;
        let (me, list) = membership::join(&config.name, &advertise, &answers, &config.data_dir)?;
        expected.id = me.id;
        expected.joined = true;
        (me.id, list)
    } else {
        if !peer_urls.is_empty() {
            let answers = membership::ask_peers(&peer_urls, &security, PEER_CHECK_TIMEOUT).await;
            let bootstrapping = action == StartAction::Bootstrap;
            if bootstrapping {
                let lists =
                    membership::ask_members(&peer_urls, &security, PEER_CHECK_TIMEOUT).await;
                membership::check_not_added(&config.name, &lists)?;
            }
            membership::check_peers(
                &expected,
                local_cluster_id,
                &answers,
                &config.data_dir,
                bootstrapping,
            )?;
        }
        let id = found
            .record
            .as_ref()
            .map_or_else(|| expected.member_id(), MemberRecord::member_id);
        (id, local_list.unwrap_or_else(|| initial_members.clone()))
    };
    if action == StartAction::Load && !list.members.iter().any(|m| m.id == member_id) {
        return Err(Error::Config(format!(
            "PD member {:?} (member id {member_id}) was removed from its group; its data \
             directory {} no longer serves. To bring it back, delete the directory, add it again \
             (rangekv ctl member add) and start it with --initial-cluster-state existing",
            config.name,
            config.data_dir.display()
        )));
    }
    let single = list.members.len() == 1 && list.members[0].id == member_id;
    let own_url = list
        .members
        .iter()
        .find(|m| m.id == member_id)
        .map_or(own_url, |m| m.url.clone());
    let member = Member {
        name: config.name.clone(),
        member_id,
        client_urls: vec![if configured.len() <= 1 && single {
            client_url.clone()
        } else {
            own_url.clone()
        }],
        peer_urls: vec![own_url],
        ..Default::default()
    };
    let engine = tokio::task::spawn_blocking(move || -> Result<Engine> {
        membership::prepare(&engine, &action, &expected)?;
        Ok(engine)
    })
    .await
    .map_err(|e| Error::Internal(format!("bootstrap task failed: {e}")))??;
    let Opened {
        handle: state,
        inbox,
        closed,
    } = StateHandle::open(
        engine,
        member_id,
        list.clone(),
        config.election_timeout() * 3,
    )?;
    let status = Arc::clone(state.status());

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown = Shutdown::new(shutdown_rx);
    let filter = Arc::new(NetFilter::default());
    let sender = PeerSender::start(
        &tokio::runtime::Handle::current(),
        Arc::clone(&status),
        &list.members,
        Arc::clone(&filter),
        shutdown.clone(),
        security.clone(),
    );
    let timing = RaftTiming {
        tick: config.raft_tick_interval,
        election_ticks: config.raft_election_ticks,
        heartbeat_ticks: config.raft_heartbeat_ticks,
        lease: config.leader_lease(),
        log_gc: LogGcConfig {
            ticks: config.raft_log_gc_ticks,
            threshold: config.raft_log_gc_threshold,
            count_limit: config.raft_log_gc_count_limit,
        },
    };
    let node = RaftNode::new(
        state.cell(),
        Arc::clone(&status),
        initial_members,
        sender,
        inbox,
        timing,
    )?;
    let raft_thread = std::thread::Builder::new()
        .name(format!("pd-raft-{}", config.name))
        .spawn(move || node.run())?;
    let raft_inbox = state.inbox();

    let tso = Tso::new(Arc::clone(&clock), config.tso_save_interval);
    let ids = Ids::new(config.id_alloc_step);
    let cluster = Arc::new(
        Cluster::new(
            member,
            config.max_replicas,
            Arc::clone(&clock),
            state.clone(),
            tso,
            ids,
            config
                .schedule_leader_balance
                .then_some(LeaderBalanceConfig {
                    threshold: config.leader_balance_threshold,
                    max_pending: config.max_pending_leader_transfers,
                    transfer_timeout_ms: LEADER_TRANSFER_TIMEOUT_MS,
                    hot_region_min_flow: config.hot_region_min_flow,
                }),
        )
        .with_security(security.clone()),
    );

    cluster.set_keyspace_splits(config.split_keyspace_regions);
    cluster.set_replica_scheduling(config.schedule_replicas.then_some(ReplicaConfig {
        max_replicas: config.max_replicas as usize,
        max_store_down_ms: config.max_store_down_time.as_millis() as u64,
        balance_threshold: config.region_balance_threshold,
        max_operators: config.max_replica_operators,
        max_store_operators: config.max_store_operators,
        balance_regions: config.schedule_region_balance,
        merge: MergeConfig {
            enabled: config.schedule_merge,
            max_region_size: config.max_merge_region_size,
            max_region_keys: config.max_merge_region_keys,
            split_merge_interval_ms: config.split_merge_interval.as_millis() as u64,
        },
        ..ReplicaConfig::default()
    }));
    let service = PdService::new(Arc::clone(&cluster), shutdown.clone());
    let raft_service = PdRaftService::new(
        Arc::clone(&status),
        state.inbox(),
        Arc::clone(&filter),
        shutdown.clone(),
    );
    drop(state);
    let incoming = security::accept(listener, &security, security::Alpn::Grpc).into_stream();
    let server_task = tokio::spawn(
        tonic::transport::Server::builder()
            // HTTP/1.1 too, for PD's HTTP API (`crate::http_api`) on the same port.
            .accept_http1(true)
            .add_routes(crate::http_api::routes(Arc::clone(&cluster)))
            .add_service(PdServer::new(service))
            // A Raft snapshot of the whole state travels as one message (about 200 bytes a
            // region: 20 MiB for 100,000 regions).
            .add_service(
                PdRaftServer::new(raft_service).max_decoding_message_size(MAX_RAFT_MESSAGE_SIZE),
            )
            .add_service(crate::keyspace::server(&cluster))
            .serve_with_incoming_shutdown(incoming, shutdown.clone().wait()),
    );
    let duties_task = tokio::spawn(run_leader_duties(
        Arc::clone(&cluster),
        clock,
        config.tso_update_interval,
        shutdown,
    ));
    let handle = PdHandle {
        member_id,
        addr,
        client_url,
        status,
        cluster: Some(Arc::clone(&cluster)),
        filter,
        raft_inbox,
        raft_thread: Some(raft_thread),
        shutdown_timeout: config.shutdown_timeout,
        shutdown_tx,
        server_task,
        duties_task,
        closed,
    };
    tracing::info!(
        name = %config.name,
        member_id,
        members = list.members.len(),
        addr = %handle.addr,
        client_url = %handle.client_url,
        "PD started"
    );
    if single {
        // A group of one elects itself at once; answer only once it serves, as before.
        let ready = handle.wait_serving(config.shutdown_timeout).await;
        if !ready {
            let timeout = config.shutdown_timeout;
            let _ = handle.shutdown().await;
            return Err(Error::Internal(format!(
                "single-node PD did not start serving within {timeout:?}"
            )));
        }
    }
    Ok(handle)
}

/// Initializes the cluster id and extends the TSO window while this node leads; until shutdown.
async fn run_leader_duties(
    cluster: Arc<Cluster>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    shutdown: Shutdown,
) {
    let mut changes = cluster.state().status().subscribe();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticks.tick() => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
        if let Err(e) = leader_duties(&cluster, clock.as_ref()).await {
            tracing::debug!(error = %e, "PD leader duties failed");
        }
    }
}

async fn leader_duties(cluster: &Cluster, clock: &dyn Clock) -> Result<()> {
    let state = cluster.state();
    if state.serving_term().is_none() {
        return Ok(());
    }
    if state.status().cluster_id() == 0 {
        let cluster_id = generate_cluster_id(clock.now_ms());
        match state
            .propose(PdCommand::InitCluster(InitCluster { cluster_id }))
            .await
        {
            Ok(_) => tracing::info!(
                cluster_id = state.status().cluster_id(),
                "initialized a new cluster id"
            ),
            // Another leader got there first; its id stands.
            Err(Error::ClusterMismatch { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    cluster.tso_tick().await
}

impl PdHandle {
    /// The cluster id, 0 until this node has applied the cluster's `InitCluster` command (a
    /// single-node PD returns from [`start`] only after that).
    pub fn cluster_id(&self) -> u64 {
        self.status.cluster_id()
    }

    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    /// The bound listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients connect to (`http://<advertise addr>`).
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The Raft leadership as known by this node.
    pub fn leadership(&self) -> Leadership {
        self.status.leadership()
    }

    /// The group's members as this node knows them (see [`crate::members`]).
    pub fn members(&self) -> Vec<crate::MemberInfo> {
        self.status.members()
    }

    /// Adds or removes a PD member (what PD's HTTP API and `rangekv ctl member` ask for); this
    /// node must be the serving leader. Answers the group's member list once the change is
    /// applied here.
    pub async fn change_members(
        &self,
        request: crate::members::MemberRequest,
    ) -> Result<crate::members::MemberList> {
        match &self.cluster {
            Some(cluster) => cluster.change_members(request).await,
            None => Err(Error::ShuttingDown),
        }
    }

    /// Whether this member applied its own removal from the group (its Raft node stopped).
    pub fn is_removed(&self) -> bool {
        self.status.is_removed()
    }

    /// Where this node's Raft log begins and ends and how far it is applied (introspection for
    /// tests and diagnostics; see [`crate::log_gc`]).
    pub fn raft_log_state(&self) -> RaftLogState {
        self.status.raft_log_state()
    }

    /// Whether this node is a serving leader now (ready, within its lease, cluster initialized).
    pub fn is_serving_leader(&self) -> bool {
        self.status.serving_term().is_some() && self.status.cluster_id() != 0
    }

    /// Waits up to `timeout` until this node is a serving leader; returns whether it is.
    pub async fn wait_serving(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.status.subscribe();
        loop {
            if self.is_serving_leader() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            // Leadership changes notify; the cluster id and lease are polled.
            let _ = tokio::time::timeout(Duration::from_millis(10), changes.changed()).await;
        }
    }

    /// Fault injection: cuts (`true`) or restores all Raft traffic between this node and the
    /// other members, in both directions. Client traffic is not affected.
    pub fn set_isolated(&self, isolated: bool) {
        self.filter.set_isolated(isolated);
    }

    /// Stops the node and waits until its storage is closed. See the module docs.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.shutdown_tx.send(true);
        self.cluster = None;
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        match tokio::time::timeout_at(deadline, &mut self.server_task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "PD server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "PD server task failed"),
            Err(_) => {
                tracing::warn!("PD server did not stop in time, aborting it");
                self.server_task.abort();
            }
        }
        if tokio::time::timeout_at(deadline, &mut self.duties_task)
            .await
            .is_err()
        {
            self.duties_task.abort();
        }
        let _ = self.raft_inbox.send(RaftMsg::Shutdown);
        if let Some(thread) = self.raft_thread.take() {
            let joined = tokio::task::spawn_blocking(move || thread.join());
            if tokio::time::timeout_at(deadline, joined).await.is_err() {
                tracing::warn!("PD raft thread did not stop in time");
            }
        }
        // Completes with an error (the sender is dropped) once the state and engine are gone.
        match tokio::time::timeout_at(deadline, &mut self.closed).await {
            Ok(_) => {
                tracing::info!(addr = %self.addr, "PD stopped");
                Ok(())
            }
            Err(_) => Err(Error::ShutdownTimeout(self.shutdown_timeout)),
        }
    }
}

impl Drop for PdHandle {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        self.cluster = None;
        let _ = self.raft_inbox.send(RaftMsg::Shutdown);
        // The Raft thread holds the engine: wait until it is gone, so that a dropped handle
        // never leaves RocksDB open behind it (a process exiting with a database still open
        // and its background threads running can abort in RocksDB's static destructors).
        if let Some(thread) = self.raft_thread.take() {
            let _ = thread.join();
        }
    }
}

/// A new cluster id: Unix seconds in the high 32 bits, random low 32 bits (as PD does).
fn generate_cluster_id(now_ms: u64) -> u64 {
    let secs = now_ms / 1000;
    let id = (secs << 32) | u64::from(rand::random::<u32>());
    id.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_nonzero() {
        assert_eq!(member_id("pd-1"), member_id("pd-1"));
        assert_ne!(member_id("pd-1"), member_id("pd-2"));
        let id = generate_cluster_id(1_700_000_000_000);
        assert_eq!(id >> 32, 1_700_000_000);
    }
}
