//! The raw KV RPCs seen uniformly: how to stamp a request with its region context, send it,
//! and find the region error and the error message in its response.

use std::future::Future;

use proto::errorpb;
use proto::kvrpcpb::{self, Context};
use proto::tikvpb::tikv_client::TikvClient;
use tonic::transport::Channel;

/// A connection to one store.
pub(crate) type StoreClient = TikvClient<Channel>;

/// One raw KV request type and its response.
pub(crate) trait RawRpc: Clone + Send + Sync + 'static {
    type Response: Send + 'static;
    /// The RPC name, for logs.
    const NAME: &'static str;
    /// Whether the request may be sent again after an attempt that may have reached the store
    /// (its answer was lost). True only for reads: a write is resent only when the earlier
    /// attempt certainly did not take effect (see `delivery.rs`); otherwise its outcome is
    /// [`crate::Error::Undetermined`]. Even a put is not safe to resend: it could apply again
    /// after another client's later write of the same key.
    const RESEND_AFTER_LOSS: bool;

    fn set_context(&mut self, ctx: Context);

    fn call(
        client: StoreClient,
        req: Self,
    ) -> impl Future<Output = Result<tonic::Response<Self::Response>, tonic::Status>> + Send;

    fn take_region_error(resp: &mut Self::Response) -> Option<errorpb::Error>;

    /// The response's error message, if it has such a field and it is set.
    fn take_error(resp: &mut Self::Response) -> Option<String>;
}

/// `raw_rpc!(Request, Response, method, read | write, error_field | no_error_field)`.
macro_rules! raw_rpc {
    (@resend read) => { true };
    (@resend write) => { false };
    ($req:ty, $resp:ty, $method:ident, $kind:ident, error_field) => {
        raw_rpc!(@impl $req, $resp, $method, raw_rpc!(@resend $kind), |resp: &mut $resp| {
            (!resp.error.is_empty()).then(|| std::mem::take(&mut resp.error))
        });
    };
    ($req:ty, $resp:ty, $method:ident, $kind:ident, no_error_field) => {
        raw_rpc!(@impl $req, $resp, $method, raw_rpc!(@resend $kind), |_resp: &mut $resp| None);
    };
    (@impl $req:ty, $resp:ty, $method:ident, $resend:expr, $take_error:expr) => {
        impl RawRpc for $req {
            type Response = $resp;
            const NAME: &'static str = stringify!($method);
            const RESEND_AFTER_LOSS: bool = $resend;

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
                let take: fn(&mut $resp) -> Option<String> = $take_error;
                take(resp)
            }
        }
    };
}

raw_rpc!(
    kvrpcpb::RawGetRequest,
    kvrpcpb::RawGetResponse,
    raw_get,
    read,
    error_field
);
raw_rpc!(
    kvrpcpb::RawBatchGetRequest,
    kvrpcpb::RawBatchGetResponse,
    raw_batch_get,
    read,
    no_error_field
);
raw_rpc!(
    kvrpcpb::RawPutRequest,
    kvrpcpb::RawPutResponse,
    raw_put,
    write,
    error_field
);
raw_rpc!(
    kvrpcpb::RawBatchPutRequest,
    kvrpcpb::RawBatchPutResponse,
    raw_batch_put,
    write,
    error_field
);
raw_rpc!(
    kvrpcpb::RawDeleteRequest,
    kvrpcpb::RawDeleteResponse,
    raw_delete,
    write,
    error_field
);
raw_rpc!(
    kvrpcpb::RawBatchDeleteRequest,
    kvrpcpb::RawBatchDeleteResponse,
    raw_batch_delete,
    write,
    error_field
);
raw_rpc!(
    kvrpcpb::RawScanRequest,
    kvrpcpb::RawScanResponse,
    raw_scan,
    read,
    no_error_field
);
raw_rpc!(
    kvrpcpb::RawDeleteRangeRequest,
    kvrpcpb::RawDeleteRangeResponse,
    raw_delete_range,
    write,
    error_field
);
raw_rpc!(
    kvrpcpb::RawCasRequest,
    kvrpcpb::RawCasResponse,
    raw_compare_and_swap,
    write,
    error_field
);
