//! The store server: the gRPC face of one store.
//!
//! - [`raw`]: the raw KV API's wire face: request sizes, `Context`, and where failures go; the
//!   commands themselves are `storage::raw`'s.
//! - [`txn`]: the transactional KV API (Percolator): wire conversion, reads on the read pool,
//!   write commands through `storage::scheduler`.
//! - [`service`]: `tikvpb.Tikv` (wire-compatible with TiKV's client protocol) and the
//!   store-to-store `BatchRaft` and `Snapshot` streams; [`batch_commands`]: TiKV's
//!   `BatchCommands` stream (many client commands per frame, answered by id).
//! - [`transport`]: the Raft transport to other stores: batched per destination store over one
//!   streaming RPC with HTTP/2 keepalives, reconnecting with backoff, addresses found through
//!   a [`StoreResolver`].
//! - [`snap`]: Raft snapshots between stores over their own `Snapshot` stream (chunks, limits).
//! - [`replica`]: PD's replica operators (heartbeat `ChangePeer` answers) as conf changes.
//! - [`split`]: `SplitRegion`: ids from PD, the split through Raft, the result back to PD.
//! - [`split_checker`]: the store's background splits of the regions it leads, by size and by
//!   load ([`load_split`] decides the latter).
//! - [`admission`]: a bound on the client requests served at once (ServerIsBusy beyond).
//! - [`errors`]: the single conversion from internal errors to `errorpb` region errors.
//! - [`status`]: the HTTP status server (`/metrics`, `/status`, consistency checks, a key's
//!   MVCC); [`metrics`]: request metrics.
//! - accepting connections and TLS live in the `security` crate (shared with PD).
//! - [`config`]: server configuration (TOML + flags).
//! - [`node`]: start-up of a store process: engine, PD registration, bootstrap; `heartbeats`:
//!   its heartbeats to PD (with the regions' sizes from the split checker and their down
//!   replicas from `down_peers`).
//! - [`gc_worker`]: MVCC garbage collection of the regions the store leads, driven by PD's GC
//!   safe point, as batches of deletes through the transaction scheduler.
//!
//! The storage layer (`storage`) owns what commands do: the read pool, keyspaces (re-exported
//! here as [`read_pool`] and [`keyspace`]), MVCC, latches.
//!
//! Async tasks here do not block: engine reads go to the [`read_pool`], other engine and disk
//! work (start-up, creating replicas, split checks) to `tokio::task::spawn_blocking`, because
//! the same runtime carries the Raft transport and a blocked worker delays heartbeats.
//!
//! Deliberately absent: coprocessor.

pub mod admission;
pub mod batch_commands;
pub mod config;
mod down_peers;
pub mod errors;
pub mod gc_worker;
mod heartbeats;
pub mod load_split;
pub mod metrics;
pub mod node;
pub mod raw;
pub mod replica;
pub mod service;
pub mod snap;
pub mod split;
pub mod split_checker;
pub mod status;
pub mod transport;
pub mod txn;

pub use config::{GcConfig, Limits, ReadPoolConfig, ServerConfig};
pub use raw::RawStorage;
pub use service::TikvService;
pub use split::SplitIdAllocator;
pub use storage::read_pool::{ReadPool, ReadPoolError};
pub use storage::{keyspace, read_pool};
pub use transport::{GrpcTransport, Keepalive, StaticResolver, StoreResolver};
