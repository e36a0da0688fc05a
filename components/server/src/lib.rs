//! The store server: the gRPC face of one store.
//!
//! - [`raw`]: the raw KV storage API on top of the raftstore: request validation, limits,
//!   proposals for writes and reads of the engine under a [`raftstore::ReadGrant`].
//! - [`txn`]: the transactional KV API (Percolator): wire conversion, reads on the read pool,
//!   write commands through `storage::scheduler`.
//! - [`read_pool`]: the threads that run those engine reads, off the tokio runtime, with a
//!   bounded queue (a full queue answers ServerIsBusy).
//! - [`service`]: `tikvpb.Tikv` (wire-compatible with TiKV's client protocol) and the
//!   store-to-store `BatchRaft` stream.
//! - [`transport`]: the Raft transport to other stores: batched per destination store over one
//!   streaming RPC with HTTP/2 keepalives, reconnecting with backoff, addresses found through
//!   a [`StoreResolver`].
//! - [`keyspace`]: API V2 keyspaces: key and range checks of each API version, the V2 raw
//!   value encoding (TTL).
//! - [`split`]: `SplitRegion`: ids from PD, the split through Raft, the result back to PD.
//! - [`errors`]: the single conversion from internal errors to `errorpb` region errors.
//! - [`status`]: the HTTP status server (`/metrics`, `/status`, consistency checks, a key's
//!   MVCC); [`metrics`]: request metrics.
//! - [`net`]: accepting connections (`TCP_NODELAY` on every accepted socket).
//! - [`config`]: server configuration (TOML + flags).
//! - [`node`]: start-up of a store process: engine, PD registration, bootstrap, heartbeats.
//! - [`gc_worker`]: MVCC garbage collection of the regions the store leads, driven by PD's GC
//!   safe point, as batches of deletes through the transaction scheduler.
//!
//! Async tasks here do not block: engine reads go to the [`read_pool`], other engine and disk
//! work (start-up, creating replicas, split checks) to `tokio::task::spawn_blocking`, because
//! the same runtime carries the Raft transport and a blocked worker delays heartbeats.
//!
//! Deliberately absent: coprocessor, TLS.

pub mod config;
pub mod errors;
pub mod gc_worker;
pub mod keyspace;
pub mod metrics;
pub mod net;
pub mod node;
pub mod raw;
pub mod read_pool;
pub mod service;
pub mod split;
pub mod status;
pub mod transport;
pub mod txn;

pub use config::{GcConfig, Limits, ReadPoolConfig, ServerConfig};
pub use raw::RawStorage;
pub use read_pool::{ReadPool, ReadPoolError};
pub use service::TikvService;
pub use split::SplitIdAllocator;
pub use transport::{GrpcTransport, Keepalive, StaticResolver, StoreResolver};
