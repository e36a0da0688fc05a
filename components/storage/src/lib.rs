//! The storage layer between the gRPC service and the raftstore.
//!
//! [`kv`] is how every command reaches a region: read grants, reads on the [`read_pool`],
//! plain writes proposed through Raft. [`raw`] is the raw KV API on domain types, and
//! [`keyspace`] what each API version (V1, V2 with keyspaces) may touch and how V2 raw data is
//! stored.
//!
//! It owns the ordering of commands that read before they write: such a command (a raw
//! compare-and-swap today, Percolator's prewrite and commit next) takes the [`latch`]es of its
//! keys, reads under a read grant, decides, and proposes plain writes, holding the latches until
//! those writes are applied. The raftstore below only applies writes; it decides nothing.
//!
//! [`mvcc`] reads and collects MVCC data; [`txn`] holds Percolator's commands, and MVCC garbage
//! collection ([`txn::gc`]), as pure functions over a snapshot.
//!
//! [`scheduler`] runs those commands under latches and proposes their writes; [`concurrency`]
//! keeps the store's max read ts and the memory locks that async commit and 1PC need.
//!
//! Deliberately absent: the wire — requests, `Context` and `errorpb` are the server's, which
//! converts them to and from the domain types here and checks request sizes. Waking
//! pessimistic lock waiters and deadlock detection (waiters poll until their timeout).

pub mod concurrency;
pub mod keyspace;
pub mod kv;
pub mod latch;
pub mod metrics;
pub mod mvcc;
pub mod raw;
pub mod read_pool;
pub mod scheduler;
pub mod txn;

pub use kv::{RaftKv, RegionCtx};
pub use latch::{LatchGuard, Latches};
pub use raw::{RawCtx, RawStore};
pub use read_pool::{ReadPool, ReadPoolConfig, ReadPoolError};
