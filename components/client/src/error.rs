//! The one error type of the client.
//!
//! Retryable conditions (region errors that re-routing fixes, transport failures, busy stores)
//! never reach the caller as such: the client retries them until its deadline and then answers
//! [`Error::Timeout`] carrying the last condition seen. Everything else is final.

use std::time::Duration;

use proto::errorpb;

/// Errors of the raw and transactional clients.
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
    ///
    /// For a transaction: its commit could not be confirmed within the retry budget — the
    /// primary key's commit was sent but no answer confirmed or refused it. The transaction
    /// is committed or will be rolled back by whoever resolves its locks, never half of it.
    #[error("outcome unknown: {0}")]
    Undetermined(String),
    /// Another transaction wrote `key` after this one started (optimistic), or after the
    /// pessimistic lock's `for_update_ts`: this transaction was rolled back. Retrying the
    /// whole transaction (with a new start timestamp) may succeed.
    #[error(
        "write conflict on {key:?}: transaction {start_ts} met transaction \
         {conflict_start_ts} committed at {conflict_commit_ts}"
    )]
    WriteConflict {
        key: bytes::Bytes,
        start_ts: u64,
        conflict_start_ts: u64,
        conflict_commit_ts: u64,
    },
    /// `insert` of a key that exists: the transaction was rolled back.
    #[error("key {key:?} already exists")]
    AlreadyExists { key: bytes::Bytes },
    /// The transaction was rolled back by someone else before it could commit (a reader or
    /// writer found its lock expired), or its locks are gone. Retrying the whole transaction
    /// may succeed.
    #[error("transaction {start_ts} was rolled back: {reason}")]
    TxnRolledBack { start_ts: u64, reason: String },
    /// A transactional command failed with a key error this client does not act on.
    #[error("key error: {0}")]
    KeyError(String),
    /// The transaction was already committed or rolled back.
    #[error("transaction {start_ts} is already {state}")]
    TxnFinished { start_ts: u64, state: &'static str },
}

impl Error {
    /// Whether retrying the whole transaction from its start may succeed: it failed because
    /// of another transaction, and nothing of it was committed.
    pub fn is_txn_retryable(&self) -> bool {
        matches!(
            self,
            Error::WriteConflict { .. } | Error::TxnRolledBack { .. }
        )
    }
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
    } else if err.proposal_in_merging_mode.is_some() {
        "ProposalInMergingMode"
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
