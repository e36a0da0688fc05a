//! Start-up and shutdown of a PD node.
//!
//! [`start`] opens PD's engine in `data_dir`, loads the state machine, generates and persists
//! the cluster id on first start, binds the listen address and serves `pdpb.PD` in the background
//! on the current tokio runtime. It returns a [`PdHandle`].
//!
//! Shutdown ([`PdHandle::shutdown`], or dropping the handle) stops accepting connections, ends
//! the open Tso / RegionHeartbeat streams, waits for in-flight requests, and waits until the
//! engine is closed, so the same `data_dir` can be reopened at once, in the same process.
//!
//! Invariants:
//! - The cluster id never changes once persisted.
//! - The member id is a stable function of the member name.
//!
//! Not yet: a Raft group of PD nodes (every node is its own leader), TLS, and the HTTP status
//! API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use engine::{Engine, EngineOptions};
use futures::StreamExt;
use proto::pdpb::pd_server::PdServer;
use proto::pdpb::Member;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::clock::{Clock, SystemClock};
use crate::cluster::Cluster;
use crate::command::{InitCluster, PdCommand};
use crate::config::{strip_scheme, PdConfig};
use crate::id::Ids;
use crate::proposer::StateHandle;
use crate::service::{PdService, Shutdown};
use crate::tso::Tso;
use crate::{Error, Result};

/// A running PD node.
#[derive(Debug)]
pub struct PdHandle {
    cluster_id: u64,
    member_id: u64,
    addr: SocketAddr,
    client_url: String,
    shutdown_timeout: Duration,
    shutdown_tx: watch::Sender<bool>,
    server_task: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    ticker_task: JoinHandle<()>,
    closed: oneshot::Receiver<()>,
}

/// Starts a PD node with the system clock. See the module docs.
pub async fn start(config: PdConfig) -> Result<PdHandle> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// Starts a PD node reading wall time from `clock`.
pub async fn start_with_clock(config: PdConfig, clock: Arc<dyn Clock>) -> Result<PdHandle> {
    config.validate()?;
    let data_dir = config.data_dir.clone();
    let engine = tokio::task::spawn_blocking(move || -> Result<Engine> {
        std::fs::create_dir_all(&data_dir)?;
        Ok(Engine::open(&data_dir, &EngineOptions::default())?)
    })
    .await
    .map_err(|e| Error::Internal(format!("engine open task failed: {e}")))??;
    let (state, closed) = StateHandle::open(engine)?;

    let cluster_id = match state.read(|s| s.cluster_id()) {
        0 => {
            let cluster_id = generate_cluster_id(clock.now_ms());
            state
                .propose(PdCommand::InitCluster(InitCluster { cluster_id }))
                .await?;
            tracing::info!(cluster_id, "initialized a new cluster id");
            cluster_id
        }
        cluster_id => cluster_id,
    };

    let listener = TcpListener::bind(config.listen_host_port()).await?;
    let addr = listener.local_addr()?;
    let advertise = if config.advertise_addr.is_empty() {
        addr.to_string()
    } else {
        strip_scheme(&config.advertise_addr).to_owned()
    };
    let client_url = format!("http://{advertise}");
    let member_id = member_id(&config.name);
    let member = Member {
        name: config.name.clone(),
        member_id,
        client_urls: vec![client_url.clone()],
        ..Default::default()
    };

    let tso = Tso::new(Arc::clone(&clock), &state, config.tso_save_interval);
    let ids = Ids::new(&state, config.id_alloc_step);
    let cluster = Arc::new(Cluster::new(
        cluster_id,
        member,
        config.max_replicas,
        clock,
        state,
        tso,
        ids,
    ));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown = Shutdown::new(shutdown_rx);
    let service = PdService::new(Arc::clone(&cluster), shutdown.clone());
    // Small messages on long-lived streams: Nagle would add tens of ms to every TSO round trip.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
        })
    });
    let server_task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PdServer::new(service))
            .serve_with_incoming_shutdown(incoming, shutdown.clone().wait()),
    );
    let ticker_task = tokio::spawn(run_tso_ticker(
        cluster,
        config.tso_update_interval,
        shutdown,
    ));
    tracing::info!(
        name = %config.name,
        member_id,
        cluster_id,
        %addr,
        %client_url,
        "PD started"
    );
    Ok(PdHandle {
        cluster_id,
        member_id,
        addr,
        client_url,
        shutdown_timeout: config.shutdown_timeout,
        shutdown_tx,
        server_task,
        ticker_task,
        closed,
    })
}

/// Extends the persisted TSO window ahead of the clock until shutdown.
async fn run_tso_ticker(cluster: Arc<Cluster>, interval: Duration, shutdown: Shutdown) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticks.tick() => {
                if let Err(e) = cluster.tso_tick().await {
                    tracing::warn!(error = %e, "cannot extend the TSO window");
                }
            }
        }
    }
}

impl PdHandle {
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
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

    /// Stops the node and waits until its storage is closed. See the module docs.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.shutdown_tx.send(true);
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
        if tokio::time::timeout_at(deadline, &mut self.ticker_task)
            .await
            .is_err()
        {
            self.ticker_task.abort();
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

/// A new cluster id: Unix seconds in the high 32 bits, random low 32 bits (as PD does).
fn generate_cluster_id(now_ms: u64) -> u64 {
    let secs = now_ms / 1000;
    let id = (secs << 32) | u64::from(rand::random::<u32>());
    id.max(1)
}

/// A stable, non-zero member id derived from the member name (64-bit FNV-1a).
fn member_id(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
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
