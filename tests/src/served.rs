//! A [`Cluster`] served to real clients: an in-process PD, a tonic `tikvpb.Tikv` server per
//! store ([`server::TikvService`] over the store's [`server::RawStorage`], as `server::node`
//! builds it) and a fault-injecting [`Proxy`] per store in front of that server. PD knows the
//! harness's regions and, as each store's address, its proxy's; a [`client::RawClient`] thus
//! goes through PD, gRPC and the proxy, while the harness's [`crate::SimNetwork`] keeps
//! carrying (and faulting) the Raft messages between stores.
//!
//! [`ServedCluster::crash_store`] looks to clients like a crashed process: the proxy's port is
//! closed (connections refused), its connections cut, the gRPC server and the store stopped.
//! [`ServedCluster::restart_store`] brings the store back from its data directory behind a
//! new server, and the proxy opens the same port again.
//!
//! Deliberately absent: stores never talk to PD (no heartbeats, no leaders in PD), so PD's
//! region map changes only when the harness reports a split ([`ServedCluster::split`]);
//! clients find leaders through NotLeader redirects.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use pd_client::PdClient;
use placement_driver::{PdConfig, PdHandle};
use proto::metapb;
use proto::tikvpb::tikv_server::TikvServer;
use server::TikvService;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::proxy::{Proxy, ProxyFault};
use crate::Cluster;

/// One store's gRPC server task and its shutdown signal.
struct GrpcServer {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// An in-process cluster with PD, gRPC servers and proxies; see the module docs.
pub struct ServedCluster {
    // Fields drop in this order: PD and the proxies before the cluster and its runtime.
    proxies: HashMap<u64, Proxy>,
    servers: HashMap<u64, GrpcServer>,
    pd_client: PdClient,
    pd: PdHandle,
    _pd_dir: TempDir,
    pub cluster: Cluster,
}

impl ServedCluster {
    /// Serves `cluster`: starts PD, registers the stores (at their proxies' addresses) and the
    /// cluster's regions, and starts a gRPC server per running store.
    pub fn start(cluster: Cluster) -> Result<ServedCluster> {
        let pd_dir = tempfile::tempdir()?;
        let rt = cluster.runtime().handle().clone();
        let pd = rt
            .block_on(placement_driver::start(PdConfig::for_test(pd_dir.path())))
            .context("PD starts")?;
        let pd_client = rt
            .block_on(PdClient::connect(vec![pd.addr().to_string()]))
            .context("PD client connects")?;
        let mut served = ServedCluster {
            cluster,
            pd,
            pd_client,
            proxies: HashMap::new(),
            servers: HashMap::new(),
            _pd_dir: pd_dir,
        };
        let mut stores = Vec::new();
        for id in served.cluster.store_ids().to_vec() {
            let upstream = served.start_server(id)?;
            let proxy = Proxy::start(&rt, upstream);
            stores.push(metapb::Store {
                id,
                address: proxy.addr().to_string(),
                ..Default::default()
            });
            served.proxies.insert(id, proxy);
        }
        let regions = served.cluster.regions.clone();
        let whole = metapb::Region {
            id: regions[0].id,
            start_key: Default::default(),
            end_key: Default::default(),
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 0,
            }),
            peers: regions[0].peers.clone(),
        };
        let pd_client = served.pd_client.clone();
        rt.block_on(async move {
            // Stores register before bootstrap (the first region names all of them).
            for store in &stores[1..] {
                pd_client.put_store(store.clone()).await?;
            }
            pd_client.bootstrap(stores[0].clone(), whole).await?;
            pd_client.report_batch_split(regions).await?;
            anyhow::Ok(())
        })
        .context("PD learns the stores and regions")?;
        Ok(served)
    }

    /// A client of this cluster (through PD and the proxies).
    pub fn client(&self, config: client::Config) -> client::RawClient {
        client::RawClient::with_pd_client(self.pd_client.clone(), config)
    }

    /// A transactional client of this cluster (through PD and the proxies).
    pub fn txn_client(&self, config: client::Config) -> client::TransactionClient {
        client::TransactionClient::with_pd_client(self.pd_client.clone(), config)
    }

    /// Splits the region holding `key` at `key` (see [`Cluster::split`]) and reports the
    /// result to PD, as a store's split does.
    pub fn split(&self, key: &[u8]) -> Result<Vec<metapb::Region>> {
        let regions = self.cluster.split(key)?;
        let pd = self.pd_client.clone();
        let report = regions.clone();
        self.cluster
            .block_on(async move { pd.report_batch_split(report).await })
            .context("PD learns the split")?;
        Ok(regions)
    }

    pub fn pd(&self) -> &PdHandle {
        &self.pd
    }

    pub fn proxy(&self, store_id: u64) -> &Proxy {
        &self.proxies[&store_id]
    }

    /// Lifts every proxy fault.
    pub fn clear_proxy_faults(&self) {
        for p in self.proxies.values() {
            p.set_fault(ProxyFault::None);
        }
    }

    /// Starts store `id`'s gRPC server on a fresh port; returns its address.
    fn start_server(&mut self, id: u64) -> Result<SocketAddr> {
        let storage = self.cluster.storage(id).clone();
        // One transactional scheduler per store: the harness's direct requests and the gRPC
        // service share its latches and concurrency manager, as a real store's clients do.
        let txn = self.cluster.txn(id).clone();
        let max = storage.limits().max_grpc_message_size;
        let rt = self.cluster.runtime().handle().clone();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let (shutdown, rx) = watch::channel(false);
        let service = TikvServer::new(
            TikvService::new(storage)
                .with_txn(txn)
                .with_shutdown(rx.clone()),
        )
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let mut stop = rx;
        let task = rt.spawn(async move {
            let plaintext = security::SecurityManager::plaintext();
            let incoming = security::accept(listener, &plaintext, security::Alpn::Grpc);
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming.into_stream(), async {
                    let _ = stop.wait_for(|v| *v).await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(%e, "gRPC server of a test store failed");
            }
        });
        self.servers.insert(id, GrpcServer { shutdown, task });
        Ok(addr)
    }

    fn stop_server(&mut self, id: u64) {
        let Some(server) = self.servers.remove(&id) else {
            return;
        };
        let _ = server.shutdown.send(true);
        let mut task = server.task;
        let ended = self.cluster.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_ok()
        });
        if !ended {
            task.abort();
        }
    }

    /// Crashes store `id` as its clients would see it: its port refuses connections, open
    /// connections are cut, then its server and the store itself stop (see
    /// [`Cluster::stop_store`]).
    pub fn crash_store(&mut self, id: u64) {
        self.proxies[&id].set_down();
        self.cluster.stop_store(id);
        self.stop_server(id);
    }

    /// Restarts a crashed store from its data directory, behind a new server; its proxy opens
    /// its port again.
    pub fn restart_store(&mut self, id: u64) -> Result<()> {
        self.cluster.start_store(id);
        let upstream = self.start_server(id)?;
        self.proxies[&id].set_up(upstream);
        Ok(())
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.cluster.is_running(id)
    }
}

impl Drop for ServedCluster {
    fn drop(&mut self) {
        for p in self.proxies.values() {
            p.set_down();
        }
        for id in self.cluster.store_ids().to_vec() {
            self.stop_server(id);
        }
    }
}
