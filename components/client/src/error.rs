//! The one error type of the client.
//!
//! Retryable conditions (region errors that re-routing fixes, transport failures, busy stores)
//! never reach the caller as such: the client retries them until its deadline and then answers
//! [`Error::Timeout`] carrying the last condition seen. Everything else is final.

use std::time::Duration;

use proto::errorpb;

/// Errors of the raw client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A region error that retrying cannot fix (e.g. `RaftEntryTooLarge`).
    #[error("region error: {}", region_error_summary(.0))]
    Region(Box<errorpb::Error>),
    /// The store refused the request (a validation failure such as an oversized key); the
    /// message is the store's.
    #[error("server error: {0}")]
    Server(String),
    /// A gRPC status that is neither a transport failure nor a validation failure.
    #[error("grpc error: {0}")]
    Grpc(tonic::Status),
    /// The placement driver failed (after its own retries).
    #[error("pd error: {0}")]
    Pd(#[from] pd_client::Error),
    /// Retries went on for longer than the configured `max_retry_time`.
    #[error("gave up after {elapsed:?} of retries; last error: {last_error}")]
    Timeout {
        elapsed: Duration,
        last_error: String,
    },
    /// The caller's arguments are invalid; nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A write (put, delete, batch, delete-range, compare-and-swap) may or may not have taken
    /// effect, and may still take effect later: it may have reached a store whose answer was
    /// lost (connection broken after it was established, no answer in time), or the store gave
    /// up waiting for it. It was not sent again, because a resent write could apply after
    /// another client's later write; it is applied at most once. Read the key to learn the
    /// outcome, or resend the write yourself if no other writer can interleave.
    #[error("outcome unknown: {0}")]
    Undetermined(String),
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Grpc(status)
    }
}

/// Result alias of the client.
pub type Result<T> = std::result::Result<T, Error>;

/// A one-line description of a region error: its kind and message.
pub(crate) fn region_error_summary(err: &errorpb::Error) -> String {
    let kind = if err.not_leader.is_some() {
        "NotLeader"
    } else if err.epoch_not_match.is_some() {
        "EpochNotMatch"
    } else if err.region_not_found.is_some() {
        "RegionNotFound"
    } else if err.key_not_in_region.is_some() {
        "KeyNotInRegion"
    } else if err.server_is_busy.is_some() {
        "ServerIsBusy"
    } else if err.stale_command.is_some() {
        "StaleCommand"
    } else if err.store_not_match.is_some() {
        "StoreNotMatch"
    } else if err.raft_entry_too_large.is_some() {
        "RaftEntryTooLarge"
    } else if err.max_timestamp_not_synced.is_some() {
        "MaxTimestampNotSynced"
    } else if err.region_not_initialized.is_some() {
        "RegionNotInitialized"
    } else {
        "Unknown"
    };
    if err.message.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {}", err.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_errors_display_kind_and_message() {
        let err = errorpb::Error {
            message: "entry of 20 bytes".into(),
            raft_entry_too_large: Some(errorpb::RaftEntryTooLarge {
                region_id: 2,
                entry_size: 20,
            }),
            ..Default::default()
        };
        assert_eq!(
            Error::Region(Box::new(err)).to_string(),
            "region error: RaftEntryTooLarge: entry of 20 bytes"
        );
    }
}
