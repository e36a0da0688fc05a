//! Test support for rangekv: an in-process cluster harness with a fault-injecting network, and
//! helpers to wait on conditions with deadlines.
//!
//! - [`cluster`]: N stores on real RocksDB in temporary directories, bootstrapped with
//!   pre-split regions, reachable through the same raw KV layer the gRPC server uses; stores can
//!   be stopped and restarted; waiting for a region merge to complete.
//! - [`network`]: the in-process transport, with filters that partition (both ways or one
//!   way), isolate, drop, delay, duplicate and reorder Raft messages.
//! - [`served`]: the cluster served to real clients: an in-process PD, a gRPC server per
//!   store and a fault-injecting [`proxy`] between clients and each store.
//! - [`linearizability`]: the checker of recorded single-register histories (from the
//!   `checker` crate).
//! - [`seed`]: the seed of a randomized test, printed and settable (`RANGEKV_LIN_SEED`,
//!   `RANGEKV_TXN_SEED`).
//!
//! Waiting with deadlines ([`wait_until`], [`wait_until_async`]) comes from the `test_util`
//! crate, re-exported here.

pub mod cluster;
pub mod linearizability;
mod merge;
pub mod network;
pub mod proxy;
pub mod seed;
pub mod served;

pub use cluster::Cluster;
pub use network::{msg_type, Filter, FnFilter, SimNetwork, Verdict};
pub use test_util::{wait_until, wait_until_async};
