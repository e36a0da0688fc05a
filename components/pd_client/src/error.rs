//! Errors of the PD client, and which of them are worth retrying.
//!
//! The error is `Clone` so that one failed TSO round trip can fail every caller batched into it;
//! transport errors are therefore kept as text plus structured context.

use proto::pdpb;

/// Errors of the PD client.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    #[error("no PD endpoints given")]
    NoEndpoints,
    #[error("invalid PD endpoint {url:?}: {reason}")]
    InvalidEndpoint { url: String, reason: String },
    #[error("cannot connect to PD at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("no PD leader found via {endpoints:?}; last error: {last_error}")]
    NoLeader {
        endpoints: Vec<String>,
        last_error: String,
    },
    #[error("PD at {url} belongs to cluster {got}, expected cluster {expected}")]
    ClusterIdMismatch {
        url: String,
        expected: u64,
        got: u64,
    },
    #[error("{rpc}: grpc status {code:?}: {message}")]
    Grpc {
        rpc: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("{rpc}: no answer within {timeout:?}")]
    Timeout {
        rpc: &'static str,
        timeout: std::time::Duration,
    },
    #[error("{rpc}: cluster is not bootstrapped")]
    NotBootstrapped { rpc: &'static str },
    #[error("{rpc}: cluster is already bootstrapped")]
    AlreadyBootstrapped { rpc: &'static str },
    #[error("{rpc}: store is tombstone: {message}")]
    StoreTombstone { rpc: &'static str, message: String },
    #[error("{rpc}: PD error {kind:?}: {message}")]
    Pd {
        rpc: &'static str,
        kind: pdpb::ErrorType,
        message: String,
    },
    #[error("no region contains key {key:?}")]
    RegionNotFound { key: Vec<u8> },
    #[error("{rpc}: invalid response: {reason}")]
    InvalidResponse { rpc: &'static str, reason: String },
    #[error("PD client is closed")]
    Closed,
}

/// Result alias of the PD client.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Converts a header error of a response to `rpc`.
    pub(crate) fn from_pb(rpc: &'static str, err: &pdpb::Error) -> Error {
        match err.r#type() {
            pdpb::ErrorType::NotBootstrapped => Error::NotBootstrapped { rpc },
            pdpb::ErrorType::AlreadyBootstrapped => Error::AlreadyBootstrapped { rpc },
            pdpb::ErrorType::StoreTombstone => Error::StoreTombstone {
                rpc,
                message: err.message.clone(),
            },
            kind => Error::Pd {
                rpc,
                kind,
                message: err.message.clone(),
            },
        }
    }

    pub(crate) fn from_status(rpc: &'static str, status: &tonic::Status) -> Error {
        Error::Grpc {
            rpc,
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    /// Whether the request may succeed if sent again (possibly to another PD node).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Grpc { code, .. } => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Aborted
                    | tonic::Code::Internal
            ),
            Error::Timeout { .. } | Error::Connect { .. } | Error::NoLeader { .. } => true,
            Error::Pd { .. } => self.is_not_leader(),
            _ => false,
        }
    }

    /// Whether the server we talked to said it is not the PD leader.
    pub fn is_not_leader(&self) -> bool {
        match self {
            Error::Pd { message, .. } | Error::Grpc { message, .. } => {
                message.contains("not leader") || message.contains("no leader")
            }
            Error::NoLeader { .. } => true,
            _ => false,
        }
    }
}
