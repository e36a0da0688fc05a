//! Shaping transactional failures into responses, where TiKV puts them: region errors in
//! `region_error`, a command's verdict in `error` (or `errors`), invalid requests as an
//! `abort` key error (or the string `error` of the range RPCs).

use proto::kvrpcpb;
use tonic::{Response, Status};

use super::{TxnFailure, TxnResult};
use crate::raw::Failure;

/// Builds a response that carries `f`.
pub trait FromTxnFailure: Sized + Default {
    fn from_txn_failure(f: TxnFailure) -> Self;
}

fn abort(message: String) -> kvrpcpb::KeyError {
    kvrpcpb::KeyError {
        abort: message,
        ..Default::default()
    }
}

macro_rules! single_key_error {
    ($($t:ty),*) => {$(
        impl FromTxnFailure for $t {
            fn from_txn_failure(f: TxnFailure) -> Self {
                let mut r = <$t>::default();
                match f {
                    TxnFailure::Request(Failure::Region(e)) => r.region_error = Some(*e),
                    TxnFailure::Request(Failure::Message(m)) => r.error = Some(abort(m)),
                    TxnFailure::Key(k) => r.error = Some(*k),
                }
                r
            }
        }
    )*};
}

macro_rules! key_error_list {
    ($($t:ty),*) => {$(
        impl FromTxnFailure for $t {
            fn from_txn_failure(f: TxnFailure) -> Self {
                let mut r = <$t>::default();
                match f {
                    TxnFailure::Request(Failure::Region(e)) => r.region_error = Some(*e),
                    TxnFailure::Request(Failure::Message(m)) => r.errors = vec![abort(m)],
                    TxnFailure::Key(k) => r.errors = vec![*k],
                }
                r
            }
        }
    )*};
}

macro_rules! string_error {
    ($($t:ty),*) => {$(
        impl FromTxnFailure for $t {
            fn from_txn_failure(f: TxnFailure) -> Self {
                let mut r = <$t>::default();
                match f {
                    TxnFailure::Request(Failure::Region(e)) => r.region_error = Some(*e),
                    TxnFailure::Request(Failure::Message(m)) => r.error = m,
                    TxnFailure::Key(k) => r.error = format!("{k:?}"),
                }
                r
            }
        }
    )*};
}

single_key_error!(
    kvrpcpb::GetResponse,
    kvrpcpb::ScanResponse,
    kvrpcpb::BatchGetResponse,
    kvrpcpb::CommitResponse,
    kvrpcpb::CleanupResponse,
    kvrpcpb::BatchRollbackResponse,
    kvrpcpb::CheckTxnStatusResponse,
    kvrpcpb::CheckSecondaryLocksResponse,
    kvrpcpb::TxnHeartBeatResponse,
    kvrpcpb::ResolveLockResponse,
    kvrpcpb::ScanLockResponse
);
key_error_list!(
    kvrpcpb::PrewriteResponse,
    kvrpcpb::PessimisticLockResponse,
    kvrpcpb::PessimisticRollbackResponse
);
string_error!(
    kvrpcpb::DeleteRangeResponse,
    kvrpcpb::UnsafeDestroyRangeResponse
);

/// Runs a transactional handler, records its latency and outcome, and shapes its failure.
pub async fn respond_txn<T: FromTxnFailure>(
    admission: &crate::admission::Admission,
    method: &'static str,
    handler: impl std::future::Future<Output = TxnResult<T>>,
) -> Result<Response<T>, Status> {
    let _permit = match admission.try_admit() {
        Ok(permit) => permit,
        Err(busy) => {
            crate::metrics::REQUESTS
                .with_label_values(&[method, "region_error"])
                .inc();
            return Ok(Response::new(T::from_txn_failure(busy.into())));
        }
    };
    let timer = crate::metrics::REQUEST_SECONDS
        .with_label_values(&[method])
        .start_timer();
    let (result, stages) = storage::kv::tracked(handler).await;
    let took = timer.stop_and_record();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(TxnFailure::Request(Failure::Region(_))) => "region_error",
        Err(TxnFailure::Request(Failure::Message(_))) => "error",
        Err(TxnFailure::Key(_)) => "key_error",
    };
    admission.log_if_slow(method, outcome, took, &stages);
    crate::metrics::REQUESTS
        .with_label_values(&[method, outcome])
        .inc();
    Ok(Response::new(match result {
        Ok(v) => v,
        Err(f) => T::from_txn_failure(f),
    }))
}
