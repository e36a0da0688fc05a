//! [`PdClient`]: the typed, retrying client of PD's `pdpb.PD` service.
//!
//! Every unary call goes through `PdClient::call`: it sends the request with the cluster id in
//! its header to the current leader connection, with a timeout; converts the response header's
//! error; and on a retryable failure (transport error, timeout, "not leader") backs off,
//! rediscovers the leader if needed and tries again, at most `max_retries` times.
//!
//! Retried calls may execute twice on PD when an answer is lost. That is harmless for reads and
//! for `AllocID` / `AskBatchSplit` (some ids are skipped); a retried `Bootstrap` answers
//! [`Error::AlreadyBootstrapped`], which callers must treat as "maybe it was us" and check with
//! [`PdClient::is_bootstrapped`] or by reading the region back.
//!
//! Timestamps ([`crate::tso`]) and region heartbeats ([`crate::heartbeat`]) use long-lived
//! streams driven by background tasks spawned on the runtime current at [`PdClient::connect`].

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use proto::metapb::{self, Peer, Region};
use proto::pdpb::{self, *};
use tokio::sync::{mpsc, oneshot};

use crate::config::PdClientConfig;
use crate::connection::{Connector, Grpc};
use crate::error::{Error, Result};
use crate::heartbeat::{self, HandlerSlot, RegionHeartbeatHandler};
use crate::tso::{self, TsoCounters, TsoWaiter};

/// A region and its leader as known to PD (`None` until the leader's first heartbeat).
#[derive(Clone, Debug, PartialEq)]
pub struct RegionInfo {
    pub region: Region,
    pub leader: Option<Peer>,
}

/// Statistics and traffic of a region, sent along with its heartbeat.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegionStat {
    /// Raft term of the reporting leader; lets PD order reports of successive leaders.
    pub term: u64,
    pub down_peers: Vec<PeerStats>,
    pub pending_peers: Vec<Peer>,
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub keys_written: u64,
    pub keys_read: u64,
    pub approximate_size: u64,
    pub approximate_keys: u64,
}

/// Counters of the client, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Completed TSO request/response exchanges.
    pub tso_round_trips: u64,
    /// Timestamps handed to callers.
    pub tso_timestamps: u64,
    /// Tso streams opened.
    pub tso_stream_opens: u64,
    /// Leader connections replaced after failures.
    pub reconnects: u64,
}

/// The PD client. Cheap to clone; all clones share connections and background tasks, which stop
/// when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct PdClient {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Arc<Connector>,
    tso_queue: mpsc::UnboundedSender<TsoWaiter>,
    tso_counters: Arc<TsoCounters>,
    heartbeat_queue: mpsc::Sender<RegionHeartbeatRequest>,
    heartbeat_handler: HandlerSlot,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PdClient")
            .field("cluster_id", &self.connector.cluster_id())
            .field("leader", &self.connector.leader().url)
            .finish()
    }
}

/// A response message with a header.
trait WithHeader {
    fn header(&self) -> Option<&ResponseHeader>;
}

macro_rules! impl_with_header {
    ($($resp:ty),* $(,)?) => {
        $(impl WithHeader for $resp {
            fn header(&self) -> Option<&ResponseHeader> {
                self.header.as_ref()
            }
        })*
    };
}

impl_with_header!(
    GetMembersResponse,
    BootstrapResponse,
    IsBootstrappedResponse,
    AllocIdResponse,
    GetStoreResponse,
    PutStoreResponse,
    GetAllStoresResponse,
    StoreHeartbeatResponse,
    GetRegionResponse,
    ScanRegionsResponse,
    AskBatchSplitResponse,
    ReportBatchSplitResponse,
    GetClusterConfigResponse,
    GetGcSafePointResponse,
    UpdateGcSafePointResponse,
);

impl PdClient {
    /// Connects to the PD cluster reachable through `endpoints` (`host:port` or URLs).
    pub async fn connect(endpoints: Vec<String>) -> Result<PdClient> {
        PdClient::connect_with_config(endpoints, PdClientConfig::default()).await
    }

    /// [`PdClient::connect`] with explicit tuning.
    pub async fn connect_with_config(
        endpoints: Vec<String>,
        config: PdClientConfig,
    ) -> Result<PdClient> {
        let heartbeat_queue_len = config.heartbeat_queue.max(1);
        let connector = Arc::new(Connector::connect(endpoints, config).await?);
        let tso_counters = Arc::new(TsoCounters::default());
        let (tso_queue, tso_rx) = mpsc::unbounded_channel();
        tokio::spawn(tso::run_dispatcher(
            tso_rx,
            Arc::clone(&connector),
            Arc::clone(&tso_counters),
        ));
        tokio::spawn(refresh_members(Arc::downgrade(&connector)));
        let heartbeat_handler: HandlerSlot = Arc::new(Mutex::new(None));
        let (heartbeat_queue, heartbeat_rx) = mpsc::channel(heartbeat_queue_len);
        tokio::spawn(heartbeat::run_sender(
            heartbeat_rx,
            Arc::clone(&connector),
            Arc::clone(&heartbeat_handler),
        ));
        Ok(PdClient {
            inner: Arc::new(Inner {
                connector,
                tso_queue,
                tso_counters,
                heartbeat_queue,
                heartbeat_handler,
            }),
        })
    }

    /// The TLS settings this client connects with: other connections to the same cluster
    /// (stores, status servers) use them too.
    pub fn security(&self) -> &security::SecurityManager {
        self.inner.connector.security()
    }

    /// The PD endpoints the client tries when it looks for the leader: those it was given,
    /// then the current members' (kept up to date from PD, see `member_refresh_interval`).
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.connector.endpoints()
    }

    /// The id of the cluster this client is bound to.
    pub fn cluster_id(&self) -> u64 {
        self.inner.connector.cluster_id()
    }

    /// The URL of the PD node currently used as leader.
    pub fn leader_url(&self) -> String {
        self.inner.connector.leader().url.clone()
    }

    /// Counters of the client.
    pub fn stats(&self) -> ClientStats {
        let tso = &self.inner.tso_counters;
        ClientStats {
            tso_round_trips: tso.round_trips.load(Ordering::Relaxed),
            tso_timestamps: tso.timestamps.load(Ordering::Relaxed),
            tso_stream_opens: tso.stream_opens.load(Ordering::Relaxed),
            reconnects: self.inner.connector.reconnects(),
        }
    }

    fn header(&self) -> Option<RequestHeader> {
        self.inner.connector.header()
    }

    /// Sends a unary request with retries; see the module docs.
    async fn call<R, F, Fut>(&self, rpc: &'static str, mut send: F) -> Result<R>
    where
        R: WithHeader,
        F: FnMut(Grpc, Option<RequestHeader>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let connector = &self.inner.connector;
        let config = connector.config();
        let mut attempt = 0;
        loop {
            let leader = connector.leader();
            let outcome = tokio::time::timeout(
                config.rpc_timeout,
                send(leader.client.clone(), self.header()),
            )
            .await;
            let err = match outcome {
                Err(_) => Error::Timeout {
                    rpc,
                    timeout: config.rpc_timeout,
                },
                Ok(Err(status)) => Error::from_status(rpc, &status),
                Ok(Ok(resp)) => {
                    let resp = resp.into_inner();
                    match self.check_header(rpc, resp.header()) {
                        Ok(()) => return Ok(resp),
                        Err(e) => e,
                    }
                }
            };
            if !err.is_retryable() || attempt >= config.max_retries {
                return Err(err);
            }
            attempt += 1;
            tracing::debug!(rpc, error = %err, attempt, "PD request failed, retrying");
            tokio::time::sleep(config.backoff(attempt)).await;
            if let Err(e) = connector.reconnect(leader.generation).await {
                tracing::debug!(error = %e, "PD rediscovery failed");
            }
        }
    }

    fn check_header(&self, rpc: &'static str, header: Option<&ResponseHeader>) -> Result<()> {
        let header = header.ok_or_else(|| Error::InvalidResponse {
            rpc,
            reason: "no header".to_owned(),
        })?;
        if let Some(err) = &header.error {
            return Err(Error::from_pb(rpc, err));
        }
        let expected = self.cluster_id();
        if header.cluster_id != 0 && header.cluster_id != expected {
            return Err(Error::ClusterIdMismatch {
                url: self.leader_url(),
                expected,
                got: header.cluster_id,
            });
        }
        Ok(())
    }

    /// The PD members and the leader.
    pub async fn get_members(&self) -> Result<GetMembersResponse> {
        self.call("get_members", |mut c, header| async move {
            c.get_members(GetMembersRequest { header }).await
        })
        .await
    }

    /// One timestamp (`physical_ms << 18 | logical`), batched with concurrent callers.
    pub async fn get_ts(&self) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.inner.tso_queue.send(tx).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// One new unique id.
    pub async fn alloc_id(&self) -> Result<u64> {
        let resp = self
            .call("alloc_id", |mut c, header| async move {
                c.alloc_id(AllocIdRequest { header, count: 1 }).await
            })
            .await?;
        if resp.id == 0 {
            return Err(Error::InvalidResponse {
                rpc: "alloc_id",
                reason: "id 0".to_owned(),
            });
        }
        Ok(resp.id)
    }

    pub async fn is_bootstrapped(&self) -> Result<bool> {
        let resp = self
            .call("is_bootstrapped", |mut c, header| async move {
                c.is_bootstrapped(IsBootstrappedRequest { header }).await
            })
            .await?;
        Ok(resp.bootstrapped)
    }

    /// Bootstraps the cluster with its first store and the region covering the whole keyspace.
    pub async fn bootstrap(&self, store: metapb::Store, region: Region) -> Result<()> {
        self.call("bootstrap", |mut c, header| {
            let req = BootstrapRequest {
                header,
                store: Some(store.clone()),
                region: Some(region.clone()),
            };
            async move { c.bootstrap(req).await }
        })
        .await?;
        Ok(())
    }

    pub async fn put_store(&self, store: metapb::Store) -> Result<()> {
        self.call("put_store", |mut c, header| {
            let req = PutStoreRequest {
                header,
                store: Some(store.clone()),
            };
            async move { c.put_store(req).await }
        })
        .await?;
        Ok(())
    }

    /// The store with `store_id`; PD answers an error if it does not exist.
    pub async fn get_store(&self, store_id: u64) -> Result<metapb::Store> {
        let resp = self
            .call("get_store", |mut c, header| async move {
                c.get_store(GetStoreRequest { header, store_id }).await
            })
            .await?;
        resp.store.ok_or_else(|| Error::InvalidResponse {
            rpc: "get_store",
            reason: format!("no store {store_id} in the answer"),
        })
    }

    pub async fn get_all_stores(
        &self,
        exclude_tombstone_stores: bool,
    ) -> Result<Vec<metapb::Store>> {
        let resp = self
            .call("get_all_stores", |mut c, header| async move {
                c.get_all_stores(GetAllStoresRequest {
                    header,
                    exclude_tombstone_stores,
                })
                .await
            })
            .await?;
        Ok(resp.stores)
    }

    pub async fn store_heartbeat(&self, stats: StoreStats) -> Result<()> {
        self.call("store_heartbeat", |mut c, header| async move {
            c.store_heartbeat(StoreHeartbeatRequest {
                header,
                stats: Some(stats),
            })
            .await
        })
        .await?;
        Ok(())
    }

    /// Queues a heartbeat of `region` led by `leader` on the region heartbeat stream. Returns
    /// once queued (waiting if the queue is full), not once PD processed it.
    pub async fn region_heartbeat(
        &self,
        region: Region,
        leader: Peer,
        stat: RegionStat,
    ) -> Result<()> {
        let req = RegionHeartbeatRequest {
            header: self.header(),
            region: Some(region),
            leader: Some(leader),
            down_peers: stat.down_peers,
            pending_peers: stat.pending_peers,
            bytes_written: stat.bytes_written,
            bytes_read: stat.bytes_read,
            keys_written: stat.keys_written,
            keys_read: stat.keys_read,
            approximate_size: stat.approximate_size,
            approximate_keys: stat.approximate_keys,
            term: stat.term,
        };
        self.inner
            .heartbeat_queue
            .send(req)
            .await
            .map_err(|_| Error::Closed)
    }

    /// Installs the receiver of what PD sends back on the region heartbeat stream (scheduling
    /// commands and errors), replacing any previous one.
    pub fn on_region_heartbeat_response(&self, handler: RegionHeartbeatHandler) {
        *self.inner.heartbeat_handler.lock() = Some(handler);
    }

    fn region_info(resp: GetRegionResponse) -> Option<RegionInfo> {
        let region = resp.region?;
        Some(RegionInfo {
            region,
            leader: resp.leader.filter(|p| p.id != 0),
        })
    }

    /// The region containing `key`, with its leader if known.
    pub async fn get_region(&self, key: &[u8]) -> Result<RegionInfo> {
        let region_key = Bytes::copy_from_slice(key);
        let resp = self
            .call("get_region", |mut c, header| {
                let req = GetRegionRequest {
                    header,
                    region_key: region_key.clone(),
                    need_buckets: false,
                };
                async move { c.get_region(req).await }
            })
            .await?;
        Self::region_info(resp).ok_or_else(|| Error::RegionNotFound { key: key.to_vec() })
    }

    /// The region before the one containing `key` (`None` for the first region).
    pub async fn get_prev_region(&self, key: &[u8]) -> Result<Option<RegionInfo>> {
        let region_key = Bytes::copy_from_slice(key);
        let resp = self
            .call("get_prev_region", |mut c, header| {
                let req = GetRegionRequest {
                    header,
                    region_key: region_key.clone(),
                    need_buckets: false,
                };
                async move { c.get_prev_region(req).await }
            })
            .await?;
        Ok(Self::region_info(resp))
    }

    /// The region with `region_id`, if PD knows it (it may have been merged away).
    pub async fn get_region_by_id(&self, region_id: u64) -> Result<Option<RegionInfo>> {
        let resp = self
            .call("get_region_by_id", |mut c, header| async move {
                c.get_region_by_id(GetRegionByIdRequest {
                    header,
                    region_id,
                    need_buckets: false,
                })
                .await
            })
            .await?;
        Ok(Self::region_info(resp))
    }

    /// Regions intersecting `[start, end)` (`end` empty: to the end), in key order, at most
    /// `limit` (`0`: all).
    pub async fn scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: i32,
    ) -> Result<Vec<RegionInfo>> {
        let (start_key, end_key) = (Bytes::copy_from_slice(start), Bytes::copy_from_slice(end));
        let resp = self
            .call("scan_regions", |mut c, header| {
                let req = ScanRegionsRequest {
                    header,
                    start_key: start_key.clone(),
                    end_key: end_key.clone(),
                    limit,
                };
                async move { c.scan_regions(req).await }
            })
            .await?;
        if !resp.regions.is_empty() {
            return Ok(resp
                .regions
                .into_iter()
                .filter_map(|r: pdpb::Region| {
                    Some(RegionInfo {
                        region: r.region?,
                        leader: r.leader.filter(|p| p.id != 0),
                    })
                })
                .collect());
        }
        // Older servers fill only the parallel legacy lists.
        let mut leaders = resp.leaders.into_iter();
        Ok(resp
            .region_metas
            .into_iter()
            .map(|region| RegionInfo {
                region,
                leader: leaders.next().filter(|p| p.id != 0),
            })
            .collect())
    }

    /// New region and peer ids for splitting `region` into `split_count + 1` regions.
    pub async fn ask_batch_split(&self, region: Region, split_count: u32) -> Result<Vec<SplitId>> {
        let resp = self
            .call("ask_batch_split", |mut c, header| {
                let req = AskBatchSplitRequest {
                    header,
                    region: Some(region.clone()),
                    split_count,
                };
                async move { c.ask_batch_split(req).await }
            })
            .await?;
        if resp.ids.len() != split_count as usize {
            return Err(Error::InvalidResponse {
                rpc: "ask_batch_split",
                reason: format!("asked {split_count} ids, got {}", resp.ids.len()),
            });
        }
        Ok(resp.ids)
    }

    /// Reports the regions resulting from a split, in key order.
    pub async fn report_batch_split(&self, regions: Vec<Region>) -> Result<()> {
        self.call("report_batch_split", |mut c, header| {
            let req = ReportBatchSplitRequest {
                header,
                regions: regions.clone(),
            };
            async move { c.report_batch_split(req).await }
        })
        .await?;
        Ok(())
    }

    pub async fn get_cluster_config(&self) -> Result<metapb::Cluster> {
        let resp = self
            .call("get_cluster_config", |mut c, header| async move {
                c.get_cluster_config(GetClusterConfigRequest { header })
                    .await
            })
            .await?;
        resp.cluster.ok_or_else(|| Error::InvalidResponse {
            rpc: "get_cluster_config",
            reason: "no cluster".to_owned(),
        })
    }

    pub async fn get_gc_safe_point(&self) -> Result<u64> {
        let resp = self
            .call("get_gc_safe_point", |mut c, header| async move {
                c.get_gc_safe_point(GetGcSafePointRequest { header }).await
            })
            .await?;
        Ok(resp.safe_point)
    }

    /// Asks to move the GC safe point to `safe_point`; returns the safe point in effect, which is
    /// higher than asked if another updater got further.
    pub async fn update_gc_safe_point(&self, safe_point: u64) -> Result<u64> {
        let resp = self
            .call("update_gc_safe_point", |mut c, header| async move {
                c.update_gc_safe_point(UpdateGcSafePointRequest { header, safe_point })
                    .await
            })
            .await?;
        Ok(resp.new_safe_point)
    }
}

/// Refreshes PD's members every `member_refresh_interval` while the client lives (see
/// [`crate::connection`]).
async fn refresh_members(connector: std::sync::Weak<Connector>) {
    loop {
        let Some(interval) = connector
            .upgrade()
            .map(|c| c.config().member_refresh_interval)
        else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(c) = connector.upgrade() else {
            return;
        };
        c.refresh_members().await;
    }
}
