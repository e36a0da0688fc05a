//! Errors of the placement driver and their one conversion to the wire.
//!
//! Two kinds of failure live in [`Error`], and callers must keep them apart:
//! - **Deterministic command rejections** ([`Error::AlreadyBootstrapped`],
//!   [`Error::StoreTombstone`], [`Error::InvalidArgument`], …): the state machine refused a
//!   command given its current state. Every replica refuses it the same way, nothing was written,
//!   and the error goes back to the client in the response header.
//! - **Non-deterministic failures** ([`Error::Engine`], [`Error::Corrupt`]): storage broke. On a
//!   replicated PD these stop the replica instead of being answered; on the single node they are
//!   answered as `UNKNOWN` and logged.
//!
//! [`Error::to_pb`] is the single place that maps an error to `pdpb::Error`.

use proto::pdpb;

/// Errors of the placement driver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cluster is not bootstrapped")]
    NotBootstrapped,
    #[error("cluster {cluster_id} is already bootstrapped")]
    AlreadyBootstrapped { cluster_id: u64 },
    #[error("mismatch cluster id, need {expected} but got {got}")]
    ClusterMismatch { expected: u64, got: u64 },
    #[error("store {store_id} not found")]
    StoreNotFound { store_id: u64 },
    #[error("store {store_id} is tombstone")]
    StoreTombstone { store_id: u64 },
    #[error("store {store_id} address {address:?} is already used by store {other_store_id}")]
    DuplicatedStoreAddress {
        store_id: u64,
        address: String,
        other_store_id: u64,
    },
    #[error("region {region_id} not found")]
    RegionNotFound { region_id: u64 },
    #[error(
        "stale epoch of region {region_id}: request has (version {version}, conf_ver {conf_ver}), \
         PD has (version {current_version}, conf_ver {current_conf_ver})"
    )]
    StaleRegionEpoch {
        region_id: u64,
        version: u64,
        conf_ver: u64,
        current_version: u64,
        current_conf_ver: u64,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Another membership change of PD's group is proposed and not applied yet (see
    /// [`crate::members`]): one change at a time.
    #[error("another PD membership change is in progress; try again once it is done")]
    MembershipChangeInProgress,
    #[error("timestamp oracle: {0}")]
    Tso(String),
    #[error("invalid config: {0}")]
    Config(String),
    /// A member with an empty data directory was told to join an existing group (see
    /// [`crate::membership`]).
    #[error(
        "PD member {name:?} refuses to start: its data directory {data_dir} holds no PD data, but \
         the initial cluster state is \"existing\" and the running group still has {name:?} as \
         a voter. A voter cannot rejoin a running PD group without its data: it would have \
         forgotten its votes and its log. Restore this member's own data directory, or replace \
         it: `rangekv ctl member remove {name}`, then `rangekv ctl member add` a member (this \
         name may be used again) and start it on an empty data directory with \
         --initial-cluster-state existing. Only if every member of the group is new, start them \
         with --initial-cluster-state new"
    )]
    EmptyDataDir { name: String, data_dir: String },
    /// A member with an empty data directory cannot join the running group (see
    /// [`crate::membership`]).
    #[error("PD member {name:?} cannot join the running PD group: {detail}")]
    CannotJoin { name: String, detail: String },
    /// The data directory belongs to another member, group or cluster (see
    /// [`crate::membership`]).
    #[error(
        "PD data directory {data_dir} belongs to another PD member or cluster: {detail}. Start \
         this member on its own data directory, or check --name and --initial-cluster"
    )]
    ForeignDataDir { data_dir: String, detail: String },
    /// A running peer names other members than this member's `initial_cluster` (see
    /// [`crate::membership`]).
    #[error(
        "PD member refuses to start: {detail}. Every member of a group must be started with the \
         same --initial-cluster"
    )]
    PeerMismatch { detail: String },
    /// This node does not lead the PD group (or leads it but may not serve yet). `leader`
    /// describes the leader if known (`"<name> at <url>"`). Clients match on "not leader".
    #[error("not leader; {}", leader.as_deref().map_or_else(|| "no PD leader is known yet".to_owned(), |l| format!("the PD leader is {l}")))]
    NotLeader { leader: Option<String> },
    #[error("PD is shutting down")]
    ShuttingDown,
    #[error("shutdown did not finish within {0:?}")]
    ShutdownTimeout(std::time::Duration),
    #[error("storage engine: {0}")]
    Engine(#[from] engine::Error),
    #[error("corrupt PD state: {0}")]
    Corrupt(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("grpc transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("internal: {0}")]
    Internal(String),
}

/// Result alias of the placement driver.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The error as carried in a response header.
    pub fn to_pb(&self) -> pdpb::Error {
        use pdpb::ErrorType;
        let kind = match self {
            Error::NotBootstrapped => ErrorType::NotBootstrapped,
            Error::AlreadyBootstrapped { .. } => ErrorType::AlreadyBootstrapped,
            Error::StoreTombstone { .. } => ErrorType::StoreTombstone,
            Error::RegionNotFound { .. } => ErrorType::RegionNotFound,
            Error::InvalidArgument(_) | Error::MembershipChangeInProgress => {
                ErrorType::InvalidValue
            }
            // kvproto has no dedicated types for a cluster id mismatch or for "not leader"; PD
            // answers them with a message, so clients match on the texts "mismatch cluster id"
            // and "not leader".
            Error::ClusterMismatch { .. }
            | Error::StoreNotFound { .. }
            | Error::DuplicatedStoreAddress { .. }
            | Error::StaleRegionEpoch { .. }
            | Error::NotLeader { .. }
            | Error::Tso(_)
            | Error::Config(_)
            | Error::EmptyDataDir { .. }
            | Error::CannotJoin { .. }
            | Error::ForeignDataDir { .. }
            | Error::PeerMismatch { .. }
            | Error::ShuttingDown
            | Error::ShutdownTimeout(_)
            | Error::Engine(_)
            | Error::Corrupt(_)
            | Error::Io(_)
            | Error::Transport(_)
            | Error::Internal(_) => ErrorType::Unknown,
        };
        pdpb::Error {
            r#type: kind as i32,
            message: self.to_string(),
        }
    }

    /// Whether this is a storage failure rather than a deterministic rejection (see module docs).
    pub fn is_storage_failure(&self) -> bool {
        matches!(self, Error::Engine(_) | Error::Corrupt(_) | Error::Io(_))
    }
}
