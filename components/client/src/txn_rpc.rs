//! The transactional KV RPCs seen through the same [`RawRpc`] interface as the raw ones, so
//! that `cluster.rs` routes, retries and re-routes them alike.
//!
//! **Every transactional RPC may be sent again after its answer was lost**
//! (`RESEND_AFTER_LOSS`): in Percolator a command names its transaction (`start_ts`) and
//! repeating it changes nothing. A prewrite finding its own lock succeeds again, and one that
//! arrives after the transaction was rolled back meets the Rollback record; a commit finding
//! its own commit record succeeds again and cannot undo a rollback; rollbacks, lock
//! resolution, status checks, heartbeats and pessimistic locks (of the same `for_update_ts`)
//! are idempotent alike. So unlike raw writes, a transactional request is resent after a
//! broken connection; only the *commit of the primary* needs care above this layer, because
//! its outcome is the transaction's (see `transaction.rs`).
//!
//! Key errors are the command's verdict and stay in the response for the transaction layer,
//! except `abort`, which is how the store reports an invalid request or an unknown outcome
//! ("write outcome undetermined: …"); it is taken out as the response's error message, so
//! the cluster layer turns it into [`crate::Error::Server`] or [`crate::Error::Undetermined`].

use std::future::Future;

use proto::errorpb;
use proto::kvrpcpb::{self, Context, KeyError};

use crate::rpc::{RawRpc, StoreClient};

/// Takes an `abort` message out of a key error.
fn take_abort(error: &mut Option<KeyError>) -> Option<String> {
    match error {
        Some(e) if !e.abort.is_empty() => error.take().map(|e| e.abort),
        _ => None,
    }
}

/// Takes the first `abort` message out of a list of key errors.
fn take_abort_of_list(errors: &mut Vec<KeyError>) -> Option<String> {
    let at = errors.iter().position(|e| !e.abort.is_empty())?;
    Some(errors.swap_remove(at).abort)
}

/// `txn_rpc!(Request, Response, method, single | list)`: `single` responses carry one
/// `error`, `list` responses `errors`.
macro_rules! txn_rpc {
    (@take single) => { |resp| take_abort(&mut resp.error) };
    (@take list) => { |resp| take_abort_of_list(&mut resp.errors) };
    ($req:ty, $resp:ty, $method:ident, $errors:ident) => {
        impl RawRpc for $req {
            type Response = $resp;
            const NAME: &'static str = stringify!($method);
            const RESEND_AFTER_LOSS: bool = true;

            fn set_context(&mut self, ctx: Context) {
                self.context = Some(ctx);
            }

            fn call(
                mut client: StoreClient,
                req: Self,
            ) -> impl Future<Output = Result<tonic::Response<$resp>, tonic::Status>> + Send {
                async move { client.$method(req).await }
            }

            fn take_region_error(resp: &mut $resp) -> Option<errorpb::Error> {
                resp.region_error.take()
            }

            fn take_error(resp: &mut $resp) -> Option<String> {
                let take: fn(&mut $resp) -> Option<String> = txn_rpc!(@take $errors);
                take(resp)
            }
        }
    };
}

txn_rpc!(kvrpcpb::GetRequest, kvrpcpb::GetResponse, kv_get, single);
txn_rpc!(
    kvrpcpb::BatchGetRequest,
    kvrpcpb::BatchGetResponse,
    kv_batch_get,
    single
);
txn_rpc!(kvrpcpb::ScanRequest, kvrpcpb::ScanResponse, kv_scan, single);
txn_rpc!(
    kvrpcpb::PrewriteRequest,
    kvrpcpb::PrewriteResponse,
    kv_prewrite,
    list
);
txn_rpc!(
    kvrpcpb::CommitRequest,
    kvrpcpb::CommitResponse,
    kv_commit,
    single
);
txn_rpc!(
    kvrpcpb::BatchRollbackRequest,
    kvrpcpb::BatchRollbackResponse,
    kv_batch_rollback,
    single
);
txn_rpc!(
    kvrpcpb::CheckTxnStatusRequest,
    kvrpcpb::CheckTxnStatusResponse,
    kv_check_txn_status,
    single
);
txn_rpc!(
    kvrpcpb::CheckSecondaryLocksRequest,
    kvrpcpb::CheckSecondaryLocksResponse,
    kv_check_secondary_locks,
    single
);
txn_rpc!(
    kvrpcpb::TxnHeartBeatRequest,
    kvrpcpb::TxnHeartBeatResponse,
    kv_txn_heart_beat,
    single
);
txn_rpc!(
    kvrpcpb::ResolveLockRequest,
    kvrpcpb::ResolveLockResponse,
    kv_resolve_lock,
    single
);
txn_rpc!(
    kvrpcpb::PessimisticLockRequest,
    kvrpcpb::PessimisticLockResponse,
    kv_pessimistic_lock,
    list
);
txn_rpc!(
    kvrpcpb::PessimisticRollbackRequest,
    kvrpcpb::PessimisticRollbackResponse,
    kv_pessimistic_rollback,
    list
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_is_the_error_message_and_other_key_errors_stay() {
        let mut resp = kvrpcpb::PrewriteResponse {
            errors: vec![
                KeyError {
                    locked: Some(Default::default()),
                    ..Default::default()
                },
                KeyError {
                    abort: "write outcome undetermined: x".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            <kvrpcpb::PrewriteRequest as RawRpc>::take_error(&mut resp).as_deref(),
            Some("write outcome undetermined: x")
        );
        assert_eq!(resp.errors.len(), 1);
        assert!(resp.errors[0].locked.is_some());

        let mut get = kvrpcpb::GetResponse {
            error: Some(KeyError {
                locked: Some(Default::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(<kvrpcpb::GetRequest as RawRpc>::take_error(&mut get), None);
        assert!(get.error.is_some());
    }
}
