/// Errors of the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("unknown column family {0:?}")]
    UnknownCf(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt key encoding: {0}")]
    Codec(String),
}

pub type Result<T> = std::result::Result<T, Error>;
