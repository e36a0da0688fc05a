//! Test support for rangekv: an in-process cluster harness with a fault-injecting network, and
//! helpers to wait on conditions with deadlines.
//!
//! - [`cluster`]: N stores on real RocksDB in temporary directories, bootstrapped with
//!   pre-split regions, reachable through the same raw KV layer the gRPC server uses; stores can
//!   be stopped and restarted.
//! - [`network`]: the in-process transport, with filters that partition, isolate, drop, delay
//!   and reorder Raft messages.
//! - [`linearizability`]: a checker of recorded single-register histories.
//! - [`wait`]: polling with deadlines (no bare sleeps).

pub mod cluster;
pub mod linearizability;
pub mod network;
pub mod wait;

pub use cluster::Cluster;
pub use network::{msg_type, Filter, FnFilter, SimNetwork, Verdict};
pub use wait::{wait_until, wait_until_async};
