use proto::metapb;

/// Errors a request to the raftstore can end with. The region errors among them are answered
/// to clients in `errorpb::Error` form so that they re-route and retry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("peer of region {region_id} is not leader (leader: {leader:?})")]
    NotLeader {
        region_id: u64,
        leader: Option<metapb::Peer>,
    },
    #[error("region {0} not found on this store")]
    RegionNotFound(u64),
    #[error("epoch not match: {msg}")]
    EpochNotMatch {
        msg: String,
        current_regions: Vec<metapb::Region>,
    },
    #[error("key {key:?} is not in region {region_id} [{start_key:?}, {end_key:?})")]
    KeyNotInRegion {
        key: Vec<u8>,
        region_id: u64,
        start_key: Vec<u8>,
        end_key: Vec<u8>,
    },
    #[error("request for store {requested} reached store {actual}")]
    StoreNotMatch { requested: u64, actual: u64 },
    #[error("raft entry of region {region_id} is too large: {size} bytes")]
    RaftEntryTooLarge { region_id: u64, size: u64 },
    #[error("region {0} is being merged")]
    ProposalInMergingMode(u64),
    #[error("stale command")]
    StaleCommand,
    #[error("server is busy: {0}")]
    ServerIsBusy(String),
    #[error("store is shutting down")]
    Shutdown,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("engine: {0}")]
    Engine(String),
}

impl From<engine::Error> for Error {
    fn from(e: engine::Error) -> Self {
        Error::Engine(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Engine(format!("io: {e}"))
    }
}

impl From<raft_log::Error> for Error {
    fn from(e: raft_log::Error) -> Self {
        Error::Engine(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
