//! The storage layer between the gRPC service and the raftstore.
//!
//! It owns the ordering of commands that read before they write: such a command (a raw
//! compare-and-swap today, Percolator's prewrite and commit next) takes the [`latch`]es of its
//! keys, reads under a read grant, decides, and proposes plain writes, holding the latches until
//! those writes are applied. The raftstore below only applies writes; it decides nothing.
//!
//! Deliberately absent so far (roadmap): MVCC, Percolator and the transaction scheduler; the raw
//! API still lives in `server::raw` and moves here with them.

pub mod concurrency;
pub mod latch;
pub mod mvcc;

pub use latch::{LatchGuard, Latches};
