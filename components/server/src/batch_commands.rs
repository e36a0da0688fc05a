//! TiKV's `BatchCommands`: many client commands over one bidirectional stream, so that small
//! requests share HTTP/2 frames instead of each opening a stream (TiKV's Go client sends most
//! commands this way).
//!
//! Protocol: an inbound frame carries commands, each under a request id of the client's
//! choosing. Every command runs as its own task through the same handler as its unary RPC
//! (admission, metrics, the slow log, errors shaped the same), and its response leaves under
//! its id as soon as it is ready, in completion order; responses that are ready together share
//! one outbound frame (at most [`MAX_RESPONSES_PER_FRAME`]). The stream carries no per-command
//! gRPC status: a handler's status error becomes a region error carrying its message, and a
//! command this store does not declare gets an empty response under its id.
//!
//! Limits: at most [`MAX_IN_FLIGHT`] commands of one stream run at once; past that the stream
//! stops reading frames until some finish (HTTP/2 flow control then holds the client back).
//! The stream ends when the client closes its side and every command has been answered, or
//! when the server shuts down.
//!
//! Not here: the handlers themselves ([`crate::service`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use proto::errorpb;
use proto::kvrpcpb;
use proto::tikvpb::batch_commands_request::request::Cmd as Req;
use proto::tikvpb::batch_commands_response::response::Cmd as Resp;
use proto::tikvpb::batch_commands_response::Response;
use proto::tikvpb::tikv_server::Tikv;
use proto::tikvpb::{BatchCommandsEmptyResponse, BatchCommandsRequest, BatchCommandsResponse};
use tokio::sync::{mpsc, Semaphore};
use tonic::{Request, Status, Streaming};

use crate::service::TikvService;

/// Responses gathered into one outbound frame at most.
pub const MAX_RESPONSES_PER_FRAME: usize = 128;
/// Commands of one stream running at once at most.
pub const MAX_IN_FLIGHT: usize = 1024;
/// The longest delay an `Empty` test command may ask for.
const MAX_EMPTY_DELAY: Duration = Duration::from_secs(10);

pub type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<BatchCommandsResponse, Status>> + Send + 'static>>;

/// Serves one `BatchCommands` stream (see the module docs).
pub fn serve(
    svc: TikvService,
    mut inbound: Streaming<BatchCommandsRequest>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> ResponseStream {
    let (tx, rx) = mpsc::unbounded_channel::<(u64, Response)>();
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                f = inbound.next() => f,
                _ = shutdown.wait_for(|v| *v) => None,
            };
            let Some(Ok(frame)) = frame else {
                break;
            };
            for (id, req) in frame.request_ids.into_iter().zip(frame.requests) {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (svc, tx) = (svc.clone(), tx.clone());
                tokio::spawn(async move {
                    let resp = handle(&svc, req.cmd).await;
                    let _ = tx.send((id, resp));
                    drop(slot);
                });
            }
        }
        // Dropping `tx` here (and in every task once it answered) ends the response stream.
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        let first = rx.recv().await?;
        let mut out = BatchCommandsResponse::default();
        push(&mut out, first);
        while out.responses.len() < MAX_RESPONSES_PER_FRAME {
            match rx.try_recv() {
                Ok(next) => push(&mut out, next),
                Err(_) => break,
            }
        }
        Some((Ok(out), rx))
    }))
}

fn push(out: &mut BatchCommandsResponse, (id, resp): (u64, Response)) {
    out.request_ids.push(id);
    out.responses.push(resp);
}

/// A handler's status, where the stream can carry it: as a region error.
fn status_error(s: &Status) -> Option<errorpb::Error> {
    Some(errorpb::Error {
        message: s.message().to_owned(),
        ..Default::default()
    })
}

macro_rules! dispatch {
    ($svc:expr, $cmd:expr, { $($variant:ident => $method:ident : $resp:ty),* $(,)? }) => {
        match $cmd {
            $(Some(Req::$variant(r)) => Some(Resp::$variant(
                match $svc.$method(Request::new(r)).await {
                    Ok(resp) => resp.into_inner(),
                    Err(status) => {
                        let mut resp = <$resp>::default();
                        resp.region_error = status_error(&status);
                        resp
                    }
                },
            )),)*
            Some(Req::Empty(e)) => {
                tokio::time::sleep(Duration::from_millis(e.delay_time).min(MAX_EMPTY_DELAY)).await;
                Some(Resp::Empty(BatchCommandsEmptyResponse { test_id: e.test_id }))
            }
            None => None,
        }
    };
}

/// Runs one command through its unary handler.
async fn handle(svc: &TikvService, cmd: Option<Req>) -> Response {
    let cmd = dispatch!(svc, cmd, {
        Get => kv_get: kvrpcpb::GetResponse,
        Scan => kv_scan: kvrpcpb::ScanResponse,
        Prewrite => kv_prewrite: kvrpcpb::PrewriteResponse,
        Commit => kv_commit: kvrpcpb::CommitResponse,
        Cleanup => kv_cleanup: kvrpcpb::CleanupResponse,
        BatchGet => kv_batch_get: kvrpcpb::BatchGetResponse,
        BatchRollback => kv_batch_rollback: kvrpcpb::BatchRollbackResponse,
        ScanLock => kv_scan_lock: kvrpcpb::ScanLockResponse,
        ResolveLock => kv_resolve_lock: kvrpcpb::ResolveLockResponse,
        DeleteRange => kv_delete_range: kvrpcpb::DeleteRangeResponse,
        RawGet => raw_get: kvrpcpb::RawGetResponse,
        RawBatchGet => raw_batch_get: kvrpcpb::RawBatchGetResponse,
        RawPut => raw_put: kvrpcpb::RawPutResponse,
        RawBatchPut => raw_batch_put: kvrpcpb::RawBatchPutResponse,
        RawDelete => raw_delete: kvrpcpb::RawDeleteResponse,
        RawBatchDelete => raw_batch_delete: kvrpcpb::RawBatchDeleteResponse,
        RawScan => raw_scan: kvrpcpb::RawScanResponse,
        RawDeleteRange => raw_delete_range: kvrpcpb::RawDeleteRangeResponse,
        RawBatchScan => raw_batch_scan: kvrpcpb::RawBatchScanResponse,
        PessimisticLock => kv_pessimistic_lock: kvrpcpb::PessimisticLockResponse,
        PessimisticRollback => kv_pessimistic_rollback: kvrpcpb::PessimisticRollbackResponse,
        CheckTxnStatus => kv_check_txn_status: kvrpcpb::CheckTxnStatusResponse,
        TxnHeartBeat => kv_txn_heart_beat: kvrpcpb::TxnHeartBeatResponse,
        CheckSecondaryLocks => kv_check_secondary_locks: kvrpcpb::CheckSecondaryLocksResponse,
    });
    Response { cmd }
}
