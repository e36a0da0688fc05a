//! `tikvpb.Tikv`: the client-facing raw KV RPCs and the store-to-store `BatchRaft` stream.
//!
//! Handlers are thin: they call [`RawStorage`] and put its failure where TiKV puts it — region
//! errors in `region_error`, other errors in the response's `error` field, or as an
//! `InvalidArgument` status for responses that have no such field.

use futures::StreamExt;
use proto::kvrpcpb;
use proto::raft_serverpb::Done;
use proto::tikvpb::tikv_server::Tikv;
use proto::tikvpb::BatchRaftMessage;
use std::sync::Arc;

use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::raw::{Failure, RawStorage};
use crate::split::SplitIdAllocator;

/// The gRPC service of one store.
#[derive(Clone)]
pub struct TikvService {
    storage: RawStorage,
    admission: crate::admission::Admission,
    txn: crate::txn::TxnStorage,
    shutdown: watch::Receiver<bool>,
    split_ids: Option<Arc<dyn SplitIdAllocator>>,
    snap_limits: crate::snap::SnapshotLimits,
    snap_receives: Arc<tokio::sync::Semaphore>,
}

impl TikvService {
    pub fn new(storage: RawStorage) -> TikvService {
        // A sender that is never used: the service is never told to shut down.
        let (_tx, rx) = watch::channel(false);
        let txn = crate::txn::TxnStorage::new(
            storage::scheduler::TxnScheduler::new(storage.kv().clone()),
            storage.limits().clone(),
        );
        TikvService {
            admission: crate::admission::Admission::new(storage.limits().max_inflight_requests),
            storage,
            txn,
            shutdown: rx,
            split_ids: None,
            snap_limits: crate::snap::SnapshotLimits::default(),
            snap_receives: Arc::new(tokio::sync::Semaphore::new(
                crate::snap::SnapshotLimits::default().max_receives,
            )),
        }
    }

    /// Limits of snapshots received (see [`crate::snap`]).
    pub fn with_snapshot_limits(mut self, limits: crate::snap::SnapshotLimits) -> TikvService {
        self.snap_limits = limits;
        self.snap_receives = Arc::new(tokio::sync::Semaphore::new(limits.max_receives.max(1)));
        self
    }

    /// The transactional API behind the service (its scheduler's latches order every
    /// transactional write of the store, GC's included).
    pub fn txn_storage(&self) -> &crate::txn::TxnStorage {
        &self.txn
    }

    /// Serves the transactional API through `txn` (sharing its latches and concurrency
    /// manager with whoever else writes through it), instead of a scheduler of its own.
    pub fn with_txn(mut self, txn: crate::txn::TxnStorage) -> TikvService {
        self.txn = txn;
        self
    }

    /// Logs requests that take at least `threshold` (see [`crate::admission`]).
    pub fn with_slow_log(mut self, threshold: std::time::Duration) -> TikvService {
        self.admission = self.admission.with_slow_log(threshold);
        self
    }

    /// Serves `SplitRegion` with ids from `ids` (without one, it answers Unimplemented).
    pub fn with_split_ids(mut self, ids: Arc<dyn SplitIdAllocator>) -> TikvService {
        self.split_ids = Some(ids);
        self
    }

    /// Ends long-lived streams (the inbound Raft streams of other stores) once `shutdown` turns
    /// true, so that a graceful server shutdown does not wait for the peers to hang up.
    pub fn with_shutdown(mut self, shutdown: watch::Receiver<bool>) -> TikvService {
        self.shutdown = shutdown;
        self
    }
}

/// Turns a [`Failure`] into a response (or a status) of the right shape.
trait FromFailure: Sized {
    fn from_failure(f: Failure) -> Result<Self, Status>;
}

macro_rules! with_error_field {
    ($($t:ty),*) => {$(
        impl FromFailure for $t {
            fn from_failure(f: Failure) -> Result<Self, Status> {
                let mut r = <$t>::default();
                match f {
                    Failure::Region(e) => r.region_error = Some(*e),
                    Failure::Message(m) => r.error = m,
                }
                Ok(r)
            }
        }
    )*};
}

macro_rules! without_error_field {
    ($($t:ty),*) => {$(
        impl FromFailure for $t {
            fn from_failure(f: Failure) -> Result<Self, Status> {
                match f {
                    Failure::Region(e) => Ok(<$t>::default().with_region_error(*e)),
                    Failure::Message(m) => Err(Status::invalid_argument(m)),
                }
            }
        }
    )*};
}

trait WithRegionError {
    fn with_region_error(self, e: proto::errorpb::Error) -> Self;
}

impl WithRegionError for kvrpcpb::RawBatchGetResponse {
    fn with_region_error(mut self, e: proto::errorpb::Error) -> Self {
        self.region_error = Some(e);
        self
    }
}

impl WithRegionError for kvrpcpb::RawBatchScanResponse {
    fn with_region_error(mut self, e: proto::errorpb::Error) -> Self {
        self.region_error = Some(e);
        self
    }
}

impl WithRegionError for kvrpcpb::SplitRegionResponse {
    fn with_region_error(mut self, e: proto::errorpb::Error) -> Self {
        self.region_error = Some(e);
        self
    }
}

impl WithRegionError for kvrpcpb::RawScanResponse {
    fn with_region_error(mut self, e: proto::errorpb::Error) -> Self {
        self.region_error = Some(e);
        self
    }
}

with_error_field!(
    kvrpcpb::RawGetResponse,
    kvrpcpb::RawPutResponse,
    kvrpcpb::RawBatchPutResponse,
    kvrpcpb::RawDeleteResponse,
    kvrpcpb::RawBatchDeleteResponse,
    kvrpcpb::RawDeleteRangeResponse,
    kvrpcpb::RawCasResponse,
    kvrpcpb::RawGetKeyTtlResponse
);
without_error_field!(
    kvrpcpb::RawBatchGetResponse,
    kvrpcpb::RawScanResponse,
    kvrpcpb::RawBatchScanResponse,
    kvrpcpb::SplitRegionResponse
);

/// Runs a handler, records its latency and outcome, and shapes its failure.
async fn respond<T: FromFailure>(
    admission: &crate::admission::Admission,
    method: &'static str,
    handler: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<Response<T>, Status> {
    let _permit = match admission.try_admit() {
        Ok(permit) => permit,
        Err(busy) => {
            crate::metrics::REQUESTS
                .with_label_values(&[method, "region_error"])
                .inc();
            return T::from_failure(busy.into()).map(Response::new);
        }
    };
    let timer = crate::metrics::REQUEST_SECONDS
        .with_label_values(&[method])
        .start_timer();
    let (result, stages) = storage::kv::tracked(handler).await;
    let took = timer.stop_and_record();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(Failure::Region(_)) => "region_error",
        Err(Failure::Message(_)) => "error",
    };
    admission.log_if_slow(method, outcome, took, &stages);
    crate::metrics::REQUESTS
        .with_label_values(&[method, outcome])
        .inc();
    match result {
        Ok(v) => Ok(Response::new(v)),
        Err(f) => T::from_failure(f).map(Response::new),
    }
}

#[tonic::async_trait]
impl Tikv for TikvService {
    async fn kv_get(
        &self,
        req: Request<kvrpcpb::GetRequest>,
    ) -> Result<Response<kvrpcpb::GetResponse>, Status> {
        crate::txn::respond_txn(&self.admission, "kv_get", self.txn.kv_get(req.into_inner())).await
    }

    async fn kv_scan(
        &self,
        req: Request<kvrpcpb::ScanRequest>,
    ) -> Result<Response<kvrpcpb::ScanResponse>, Status> {
        crate::txn::respond_txn(
            &self.admission,
            "kv_scan",
            self.txn.kv_scan(req.into_inner()),
        )
        .await
    }

    async fn kv_batch_get(
        &self,
        req: Request<kvrpcpb::BatchGetRequest>,
    ) -> Result<Response<kvrpcpb::BatchGetResponse>, Status> {
        crate::txn::respond_txn(
            &self.admission,
            "kv_batch_get",
            self.txn.kv_batch_get(req.into_inner()),
        )
        .await
    }

    async fn kv_prewrite(
        &self,
        req: Request<kvrpcpb::PrewriteRequest>,
    ) -> Result<Response<kvrpcpb::PrewriteResponse>, Status> {
        crate::txn::respond_txn(
            &self.admission,
            "kv_prewrite",
            self.txn.kv_prewrite(req.into_inner()),
        )
        .await
    }

    async fn kv_commit(
        &self,
        req: Request<kvrpcpb::CommitRequest>,
    ) -> Result<Response<kvrpcpb::CommitResponse>, Status> {
        crate::txn::respond_txn(
            &self.admission,
            "kv_commit",
            self.txn.kv_commit(req.into_inner()),
        )
        .await
    }

    async fn kv_cleanup(
        &self,
        req: Request<kvrpcpb::CleanupRequest>,
    ) -> Result<Response<kvrpcpb::CleanupResponse>, Status> {
        crate::txn::respond_txn(
            &self.admission,
            "kv_cleanup",
            self.txn.kv_cleanup(req.into_inner()),
        )
        .await
    }

    async fn kv_batch_rollback(
        &self,
        req: Request<kvrpcpb::BatchRollbackRequest>,
    ) -> Result<Response<kvrpcpb::BatchRollbackResponse>, Status> {
        crate::txn::respond_txn(
            &self.admission,
            "kv_batch_rollback",
            self.txn.kv_batch_rollback(req.into_inner()),
        )
        .await
    }

    async fn kv_check_txn_status(
        &self,
        req: Request<kvrpcpb::CheckTxnStatusRequest>,
    ) -> Result<Response<kvrpcpb::CheckTxnStatusResponse>, Status> {
        crate::txn::respond_txn(
            &self.admission,
            "kv_check_txn_status",
            self.txn.kv_check_txn_status(req.into_inner()),
        )
        .await
    }

    async fn kv_check_secondary_locks(
        &self,
        req: Request<kvrpcpb::CheckSecondaryLocksRequest>,
    ) -> Result<Response<kvrpcpb::CheckSecondaryLocksResponse>, Status> {
        crate::txn::respond_txn(
            &self.admission,
            "kv_check_secondary_locks",
            self.txn.kv_check_secondary_locks(req.into_inner()),
        )
        .await
    }

    async fn kv_txn_heart_beat(
        &self,
        req: Request<kvrpcpb::TxnHeartBeatRequest>,
    ) -> Result<Response<kvrpcpb::TxnHeartBeatResponse>, Status> {
        crate::txn::respond_txn(
            &self.admission,
            "kv_txn_heart_beat",
            self.txn.kv_txn_heart_beat(req.into_inner()),
        )
        .await
    }

    async fn kv_resolve_lock(
        &self,
        req: Request<kvrpcpb::ResolveLockRequest>,
    ) -> Result<Response<kvrpcpb::ResolveLockResponse>, Status> {
        crate::txn::respond_txn(
            &self.admission,
            "kv_resolve_lock",
            self.txn.kv_resolve_lock(req.into_inner()),
        )
        .await
    }

    async fn kv_scan_lock(
        &self,
        req: Request<kvrpcpb::ScanLockRequest>,
    ) -> Result<Response<kvrpcpb::ScanLockResponse>, Status> {
        crate::txn::respond_txn(
            &self.admission,
            "kv_scan_lock",
            self.txn.kv_scan_lock(req.into_inner()),
        )
        .await
    }

    async fn kv_pessimistic_lock(
        &self,
        req: Request<kvrpcpb::PessimisticLockRequest>,
    ) -> Result<Response<kvrpcpb::PessimisticLockResponse>, Status> {
        crate::txn::respond_txn(
            &self.admission,
            "kv_pessimistic_lock",
            self.txn.kv_pessimistic_lock(req.into_inner()),
        )
        .await
    }

    async fn kv_pessimistic_rollback(
        &self,
        req: Request<kvrpcpb::PessimisticRollbackRequest>,
    ) -> Result<Response<kvrpcpb::PessimisticRollbackResponse>, Status> {
        crate::txn::respond_txn(
            &self.admission,
            "kv_pessimistic_rollback",
            self.txn.kv_pessimistic_rollback(req.into_inner()),
        )
        .await
    }

    async fn kv_delete_range(
        &self,
        req: Request<kvrpcpb::DeleteRangeRequest>,
    ) -> Result<Response<kvrpcpb::DeleteRangeResponse>, Status> {
        crate::txn::respond_txn(
            &self.admission,
            "kv_delete_range",
            self.txn.kv_delete_range(req.into_inner()),
        )
        .await
    }

    async fn unsafe_destroy_range(
        &self,
        req: Request<kvrpcpb::UnsafeDestroyRangeRequest>,
    ) -> Result<Response<kvrpcpb::UnsafeDestroyRangeResponse>, Status> {
        crate::txn::respond_txn(
            &self.admission,
            "unsafe_destroy_range",
            self.txn.unsafe_destroy_range(req.into_inner()),
        )
        .await
    }

    async fn raw_get(
        &self,
        req: Request<kvrpcpb::RawGetRequest>,
    ) -> Result<Response<kvrpcpb::RawGetResponse>, Status> {
        respond(
            &self.admission,
            "raw_get",
            self.storage.raw_get(req.into_inner()),
        )
        .await
    }

    async fn raw_batch_get(
        &self,
        req: Request<kvrpcpb::RawBatchGetRequest>,
    ) -> Result<Response<kvrpcpb::RawBatchGetResponse>, Status> {
        respond(
            &self.admission,
            "raw_batch_get",
            self.storage.raw_batch_get(req.into_inner()),
        )
        .await
    }

    async fn raw_put(
        &self,
        req: Request<kvrpcpb::RawPutRequest>,
    ) -> Result<Response<kvrpcpb::RawPutResponse>, Status> {
        respond(
            &self.admission,
            "raw_put",
            self.storage.raw_put(req.into_inner()),
        )
        .await
    }

    async fn raw_batch_put(
        &self,
        req: Request<kvrpcpb::RawBatchPutRequest>,
    ) -> Result<Response<kvrpcpb::RawBatchPutResponse>, Status> {
        respond(
            &self.admission,
            "raw_batch_put",
            self.storage.raw_batch_put(req.into_inner()),
        )
        .await
    }

    async fn raw_delete(
        &self,
        req: Request<kvrpcpb::RawDeleteRequest>,
    ) -> Result<Response<kvrpcpb::RawDeleteResponse>, Status> {
        respond(
            &self.admission,
            "raw_delete",
            self.storage.raw_delete(req.into_inner()),
        )
        .await
    }

    async fn raw_batch_delete(
        &self,
        req: Request<kvrpcpb::RawBatchDeleteRequest>,
    ) -> Result<Response<kvrpcpb::RawBatchDeleteResponse>, Status> {
        respond(
            &self.admission,
            "raw_batch_delete",
            self.storage.raw_batch_delete(req.into_inner()),
        )
        .await
    }

    async fn raw_scan(
        &self,
        req: Request<kvrpcpb::RawScanRequest>,
    ) -> Result<Response<kvrpcpb::RawScanResponse>, Status> {
        respond(
            &self.admission,
            "raw_scan",
            self.storage.raw_scan(req.into_inner()),
        )
        .await
    }

    async fn raw_batch_scan(
        &self,
        req: Request<kvrpcpb::RawBatchScanRequest>,
    ) -> Result<Response<kvrpcpb::RawBatchScanResponse>, Status> {
        respond(
            &self.admission,
            "raw_batch_scan",
            self.storage.raw_batch_scan(req.into_inner()),
        )
        .await
    }

    async fn raw_get_key_ttl(
        &self,
        req: Request<kvrpcpb::RawGetKeyTtlRequest>,
    ) -> Result<Response<kvrpcpb::RawGetKeyTtlResponse>, Status> {
        respond(
            &self.admission,
            "raw_get_key_ttl",
            self.storage.raw_get_key_ttl(req.into_inner()),
        )
        .await
    }

    async fn raw_delete_range(
        &self,
        req: Request<kvrpcpb::RawDeleteRangeRequest>,
    ) -> Result<Response<kvrpcpb::RawDeleteRangeResponse>, Status> {
        respond(
            &self.admission,
            "raw_delete_range",
            self.storage.raw_delete_range(req.into_inner()),
        )
        .await
    }

    async fn raw_compare_and_swap(
        &self,
        req: Request<kvrpcpb::RawCasRequest>,
    ) -> Result<Response<kvrpcpb::RawCasResponse>, Status> {
        respond(
            &self.admission,
            "raw_compare_and_swap",
            self.storage.raw_compare_and_swap(req.into_inner()),
        )
        .await
    }

    async fn split_region(
        &self,
        req: Request<kvrpcpb::SplitRegionRequest>,
    ) -> Result<Response<kvrpcpb::SplitRegionResponse>, Status> {
        let Some(ids) = &self.split_ids else {
            return Err(Status::unimplemented(
                "this store cannot allocate split ids",
            ));
        };
        respond(
            &self.admission,
            "split_region",
            crate::split::split_region(&self.storage, ids, req.into_inner()),
        )
        .await
    }

    async fn batch_commands(
        &self,
        req: Request<Streaming<proto::tikvpb::BatchCommandsRequest>>,
    ) -> Result<Response<crate::batch_commands::ResponseStream>, Status> {
        Ok(Response::new(crate::batch_commands::serve(
            self.clone(),
            req.into_inner(),
            self.shutdown.clone(),
        )))
    }

    async fn batch_raft(
        &self,
        req: Request<Streaming<BatchRaftMessage>>,
    ) -> Result<Response<Done>, Status> {
        let mut stream = req.into_inner();
        let router = self.storage.router().clone();
        let mut shutdown = self.shutdown.clone();
        loop {
            let batch = tokio::select! {
                b = stream.next() => b,
                _ = shutdown.wait_for(|v| *v) => return Err(Status::unavailable("store is shutting down")),
            };
            let Some(batch) = batch else {
                break;
            };
            let batch = batch?;
            for msg in batch.msgs {
                if let Err(e) = router.send_raft_message(msg) {
                    debug!(%e, "raft message dropped");
                }
            }
        }
        Ok(Response::new(Done {}))
    }

    async fn snapshot(
        &self,
        req: Request<Streaming<proto::raft_serverpb::SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        let Ok(_permit) = self.snap_receives.clone().try_acquire_owned() else {
            return Err(Status::resource_exhausted(
                "too many snapshots being received",
            ));
        };
        let mut stream = req.into_inner();
        let mut receiver = crate::snap::Receiver::new(
            raftstore::snap::SnapManager::of(self.storage.engine()),
            self.snap_limits.max_bytes,
        );
        let mut shutdown = self.shutdown.clone();
        loop {
            let chunk = tokio::select! {
                c = stream.next() => c,
                _ = shutdown.wait_for(|v| *v) => return Err(Status::unavailable("store is shutting down")),
            };
            let Some(chunk) = chunk else {
                break;
            };
            let chunk = chunk?;
            // File writes: off the async threads.
            let (r, pushed) = tokio::task::spawn_blocking(move || {
                let pushed = receiver.push(chunk);
                (receiver, pushed)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
            receiver = r;
            pushed.map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let msg = tokio::task::spawn_blocking(move || receiver.finish())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let region_id = msg.region_id;
        if let Err(e) = self.storage.router().send_raft_message(msg) {
            debug!(region_id, %e, "snapshot dropped");
        }
        Ok(Response::new(Done {}))
    }
}
