//! The `pdpb.PD` gRPC service: a thin layer over [`Cluster`].
//!
//! Each unary method but `GetMembers` first checks that this node is a serving leader
//! ([`Cluster::require_leader`]; followers answer "not leader", naming the leader, in the
//! header). Each then checks the request header (cluster id), calls `Cluster::on_<rpc>` and fills
//! the response header: the cluster id always, and the error converted by [`Error::to_pb`] when
//! the handler failed. Errors travel in the header, never as a gRPC status, as PD does; a gRPC
//! status only means "transport or server problem, try again / elsewhere".
//!
//! The two streams (Tso, RegionHeartbeat) process their requests in order, one at a time per
//! stream, and end when the client closes its side or the server shuts down. A Tso request to a
//! node that may not serve is answered with a "not leader" header error; a RegionHeartbeat
//! stream to (or on) a node that is not the serving leader ends with an `UNAVAILABLE` status
//! saying "not leader", so that the client reconnects to the leader. A region heartbeat is
//! answered on its stream only with an error or an operator for the region's leader (a leader
//! transfer from [`crate::schedule`]); most heartbeats get no answer.

use std::sync::Arc;

use futures::StreamExt;
use proto::pdpb::pd_server::Pd;
use proto::pdpb::*;
use tokio::sync::watch;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use crate::cluster::Cluster;
use crate::{Error, Result};

/// A response message with a header.
pub trait WithHeader: Default {
    fn set_header(&mut self, header: ResponseHeader);
}

macro_rules! impl_with_header {
    ($($resp:ty),* $(,)?) => {
        $(impl WithHeader for $resp {
            fn set_header(&mut self, header: ResponseHeader) {
                self.header = Some(header);
            }
        })*
    };
}

impl_with_header!(
    GetMembersResponse,
    TsoResponse,
    BootstrapResponse,
    IsBootstrappedResponse,
    AllocIdResponse,
    GetStoreResponse,
    PutStoreResponse,
    GetAllStoresResponse,
    StoreHeartbeatResponse,
    RegionHeartbeatResponse,
    GetRegionResponse,
    ScanRegionsResponse,
    AskBatchSplitResponse,
    ReportBatchSplitResponse,
    GetClusterConfigResponse,
    GetGcSafePointResponse,
    UpdateGcSafePointResponse,
);

/// Resolves once shutdown was requested (or the requester is gone).
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub fn new(rx: watch::Receiver<bool>) -> Shutdown {
        Shutdown(rx)
    }

    pub async fn wait(mut self) {
        // An error means the sender is gone, which is a shutdown too.
        let _ = self.0.wait_for(|requested| *requested).await;
    }
}

/// The gRPC service.
#[derive(Clone, Debug)]
pub struct PdService {
    cluster: Arc<Cluster>,
    shutdown: Shutdown,
}

impl PdService {
    pub fn new(cluster: Arc<Cluster>, shutdown: Shutdown) -> PdService {
        PdService { cluster, shutdown }
    }

    /// Fills the header of a handler's outcome.
    fn respond<R: WithHeader>(&self, rpc: &'static str, result: Result<R>) -> Response<R> {
        let resp = match result {
            Ok(mut resp) => {
                resp.set_header(self.cluster.ok_header());
                resp
            }
            Err(e) => {
                log_error(rpc, &e);
                let mut resp = R::default();
                resp.set_header(self.cluster.error_header(&e));
                resp
            }
        };
        Response::new(resp)
    }
}

fn log_error(rpc: &'static str, err: &Error) {
    if err.is_storage_failure() {
        tracing::error!(rpc, error = %err, "request failed");
    } else {
        tracing::debug!(rpc, error = %err, "request rejected");
    }
}

/// Dispatches a unary RPC: header check, handler, response header.
macro_rules! unary {
    ($self:ident, $request:ident, $rpc:literal, $handler:ident) => {{
        let req = $request.into_inner();
        let result = match $self
            .cluster
            .require_leader()
            .and_then(|()| $self.cluster.check_header(req.header.as_ref()))
        {
            Ok(()) => $self.cluster.$handler(req).await,
            Err(e) => Err(e),
        };
        Ok($self.respond($rpc, result))
    }};
}

#[tonic::async_trait]
impl Pd for PdService {
    async fn get_members(
        &self,
        request: Request<GetMembersRequest>,
    ) -> std::result::Result<Response<GetMembersResponse>, Status> {
        // Answered by every member, leader or not.
        let req = request.into_inner();
        let result = match self.cluster.check_header(req.header.as_ref()) {
            Ok(()) => self.cluster.on_get_members(req).await,
            Err(e) => Err(e),
        };
        Ok(self.respond("get_members", result))
    }

    async fn tso(
        &self,
        request: Request<Streaming<TsoRequest>>,
    ) -> std::result::Result<Response<BoxStream<TsoResponse>>, Status> {
        let cluster = Arc::clone(&self.cluster);
        let responses = request
            .into_inner()
            .take_until(self.shutdown.clone().wait())
            .then(move |req| {
                let cluster = Arc::clone(&cluster);
                async move {
                    let req = req?;
                    let result = match cluster
                        .require_leader()
                        .and_then(|()| cluster.check_header(req.header.as_ref()))
                    {
                        Ok(()) => cluster.on_tso(req).await,
                        Err(e) => Err(e),
                    };
                    Ok(match result {
                        Ok(mut resp) => {
                            resp.set_header(cluster.ok_header());
                            resp
                        }
                        Err(e) => {
                            log_error("tso", &e);
                            TsoResponse {
                                header: Some(cluster.error_header(&e)),
                                ..Default::default()
                            }
                        }
                    })
                }
            });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn bootstrap(
        &self,
        request: Request<BootstrapRequest>,
    ) -> std::result::Result<Response<BootstrapResponse>, Status> {
        unary!(self, request, "bootstrap", on_bootstrap)
    }

    async fn is_bootstrapped(
        &self,
        request: Request<IsBootstrappedRequest>,
    ) -> std::result::Result<Response<IsBootstrappedResponse>, Status> {
        unary!(self, request, "is_bootstrapped", on_is_bootstrapped)
    }

    async fn alloc_id(
        &self,
        request: Request<AllocIdRequest>,
    ) -> std::result::Result<Response<AllocIdResponse>, Status> {
        unary!(self, request, "alloc_id", on_alloc_id)
    }

    async fn get_store(
        &self,
        request: Request<GetStoreRequest>,
    ) -> std::result::Result<Response<GetStoreResponse>, Status> {
        unary!(self, request, "get_store", on_get_store)
    }

    async fn put_store(
        &self,
        request: Request<PutStoreRequest>,
    ) -> std::result::Result<Response<PutStoreResponse>, Status> {
        unary!(self, request, "put_store", on_put_store)
    }

    async fn get_all_stores(
        &self,
        request: Request<GetAllStoresRequest>,
    ) -> std::result::Result<Response<GetAllStoresResponse>, Status> {
        unary!(self, request, "get_all_stores", on_get_all_stores)
    }

    async fn store_heartbeat(
        &self,
        request: Request<StoreHeartbeatRequest>,
    ) -> std::result::Result<Response<StoreHeartbeatResponse>, Status> {
        unary!(self, request, "store_heartbeat", on_store_heartbeat)
    }

    async fn region_heartbeat(
        &self,
        request: Request<Streaming<RegionHeartbeatRequest>>,
    ) -> std::result::Result<Response<BoxStream<RegionHeartbeatResponse>>, Status> {
        if let Err(e) = self.cluster.require_leader() {
            return Err(Status::unavailable(e.to_string()));
        }
        let cluster = Arc::clone(&self.cluster);
        let responses = request
            .into_inner()
            .take_until(self.shutdown.clone().wait())
            .filter_map(move |req| {
                let cluster = Arc::clone(&cluster);
                async move {
                    match req {
                        Ok(req) => match cluster.require_leader() {
                            Ok(()) => cluster.on_region_heartbeat(req).await.map(Ok),
                            // Deposed: end the stream so the client finds the new leader.
                            Err(e) => Some(Err(Status::unavailable(e.to_string()))),
                        },
                        // The client went away or sent garbage: end the stream.
                        Err(status) => Some(Err(status)),
                    }
                }
            });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn get_region(
        &self,
        request: Request<GetRegionRequest>,
    ) -> std::result::Result<Response<GetRegionResponse>, Status> {
        unary!(self, request, "get_region", on_get_region)
    }

    async fn get_prev_region(
        &self,
        request: Request<GetRegionRequest>,
    ) -> std::result::Result<Response<GetRegionResponse>, Status> {
        unary!(self, request, "get_prev_region", on_get_prev_region)
    }

    async fn get_region_by_id(
        &self,
        request: Request<GetRegionByIdRequest>,
    ) -> std::result::Result<Response<GetRegionResponse>, Status> {
        unary!(self, request, "get_region_by_id", on_get_region_by_id)
    }

    async fn scan_regions(
        &self,
        request: Request<ScanRegionsRequest>,
    ) -> std::result::Result<Response<ScanRegionsResponse>, Status> {
        unary!(self, request, "scan_regions", on_scan_regions)
    }

    async fn ask_batch_split(
        &self,
        request: Request<AskBatchSplitRequest>,
    ) -> std::result::Result<Response<AskBatchSplitResponse>, Status> {
        unary!(self, request, "ask_batch_split", on_ask_batch_split)
    }

    async fn report_batch_split(
        &self,
        request: Request<ReportBatchSplitRequest>,
    ) -> std::result::Result<Response<ReportBatchSplitResponse>, Status> {
        unary!(self, request, "report_batch_split", on_report_batch_split)
    }

    async fn get_cluster_config(
        &self,
        request: Request<GetClusterConfigRequest>,
    ) -> std::result::Result<Response<GetClusterConfigResponse>, Status> {
        unary!(self, request, "get_cluster_config", on_get_cluster_config)
    }

    async fn get_gc_safe_point(
        &self,
        request: Request<GetGcSafePointRequest>,
    ) -> std::result::Result<Response<GetGcSafePointResponse>, Status> {
        unary!(self, request, "get_gc_safe_point", on_get_gc_safe_point)
    }

    async fn update_gc_safe_point(
        &self,
        request: Request<UpdateGcSafePointRequest>,
    ) -> std::result::Result<Response<UpdateGcSafePointResponse>, Status> {
        unary!(
            self,
            request,
            "update_gc_safe_point",
            on_update_gc_safe_point
        )
    }
}
