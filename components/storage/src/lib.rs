//! The storage layer between the gRPC service and the raftstore.
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
//! Deliberately absent so far (roadmap): the raw API still lives in `server::raw`, working on
//! wire messages; it is to move here, on domain types. Waking pessimistic lock waiters and
//! deadlock detection (waiters poll until their timeout).

pub mod concurrency;
pub mod latch;
pub mod mvcc;
pub mod scheduler;
pub mod txn;

pub use latch::{LatchGuard, Latches};
