//! Errors of MVCC reads and transactional commands, in domain terms. The server turns them
//! into kvproto's `KeyError` (one conversion at the gRPC edge).

use super::{Lock, LockType, TimeStamp};

/// A lock a reader or writer ran into, as clients need it to resolve it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    /// The locked user key.
    pub key: Vec<u8>,
    pub primary: Vec<u8>,
    pub start_ts: TimeStamp,
    pub ttl: u64,
    pub txn_size: u64,
    pub lock_type: LockType,
    pub for_update_ts: TimeStamp,
    pub use_async_commit: bool,
    pub min_commit_ts: TimeStamp,
    pub secondaries: Vec<Vec<u8>>,
}

impl LockInfo {
    pub fn new(key: Vec<u8>, lock: &Lock) -> LockInfo {
        LockInfo {
            key,
            primary: lock.primary.clone(),
            start_ts: lock.start_ts,
            ttl: lock.ttl,
            txn_size: lock.txn_size,
            lock_type: lock.kind(),
            for_update_ts: lock.for_update_ts,
            use_async_commit: lock.use_async_commit,
            min_commit_ts: lock.min_commit_ts,
            secondaries: lock.secondaries.clone(),
        }
    }
}

/// Why a transactional read or command failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("key is locked by transaction {}", .0.start_ts)]
    KeyIsLocked(Box<LockInfo>),
    #[error("write conflict on {key:?}: transaction {start_ts} meets a commit at {conflict_commit_ts} of transaction {conflict_start_ts}")]
    WriteConflict {
        start_ts: TimeStamp,
        conflict_start_ts: TimeStamp,
        conflict_commit_ts: TimeStamp,
        key: Vec<u8>,
        primary: Vec<u8>,
    },
    #[error("key {key:?} already exists")]
    AlreadyExist { key: Vec<u8> },
    #[error("transaction {start_ts} has no lock on {key:?} (rolled back or never prewritten)")]
    TxnLockNotFound {
        start_ts: TimeStamp,
        commit_ts: TimeStamp,
        key: Vec<u8>,
    },
    #[error("transaction {start_ts} not found on its primary {key:?}")]
    TxnNotFound { start_ts: TimeStamp, key: Vec<u8> },
    #[error("commit ts {commit_ts} of transaction {start_ts} is below its min commit ts {min_commit_ts}")]
    CommitTsExpired {
        start_ts: TimeStamp,
        commit_ts: TimeStamp,
        key: Vec<u8>,
        min_commit_ts: TimeStamp,
    },
    #[error("transaction {start_ts} is already committed at {commit_ts}")]
    Committed {
        start_ts: TimeStamp,
        commit_ts: TimeStamp,
        key: Vec<u8>,
    },
    #[error("transaction {start_ts} holds no pessimistic lock on {key:?}")]
    PessimisticLockNotFound { start_ts: TimeStamp, key: Vec<u8> },
    #[error("assertion on {key:?} failed: {reason}")]
    AssertionFailed { key: Vec<u8>, reason: String },
    #[error("transaction {start_ts} was rolled back on {key:?} before its pessimistic lock")]
    PessimisticLockRolledBack { start_ts: TimeStamp, key: Vec<u8> },
    #[error("transaction {start_ts} on {key:?}: lock kind does not match (pessimistic lock: {pessimistic})")]
    LockTypeNotMatch {
        start_ts: TimeStamp,
        key: Vec<u8>,
        pessimistic: bool,
    },
    #[error("{:?} is not the primary key of transaction {}", .0.key, .0.start_ts)]
    PrimaryMismatch(Box<LockInfo>),
    #[error("commit ts {commit_ts} of transaction {start_ts} is not after its start ts")]
    InvalidTxnTso {
        start_ts: TimeStamp,
        commit_ts: TimeStamp,
    },
    #[error("engine: {0}")]
    Engine(String),
    #[error("corrupt MVCC data: {0}")]
    Corrupt(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl From<engine::Error> for Error {
    fn from(e: engine::Error) -> Self {
        Error::Engine(e.to_string())
    }
}

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Error::Corrupt(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
