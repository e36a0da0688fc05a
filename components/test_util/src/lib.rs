//! Small helpers shared by the tests of every rangekv crate.
//!
//! - [`wait`]: waiting on a condition with a deadline ([`wait_until`], [`wait_until_async`]) and
//!   retrying an operation until it succeeds or its deadline passes ([`retry`],
//!   [`retry_async`]). Tests wait on conditions, never on bare sleeps.
//! - [`meta`]: builders of `metapb` test values: [`peer`], [`store`], [`epoch`] and
//!   [`region`] (a [`RegionBuilder`]).
//! - [`logging`]: [`init_logging`], `tracing` output for tests, filtered by `RANGEKV_TEST_LOG`.
//! - [`raft_fuzz`]: proptest strategies for random and malformed Raft messages, shared by the
//!   fuzz tests of the stores' and PD's Raft services.
//!
//! # What belongs here
//!
//! Helpers that are small, generic and dependency-light: this crate depends on `proto`,
//! `tokio`, raft-rs with `raft_group` and proptest, and nothing heavier, so that any crate (down to `batch_system`) can take it as a
//! dev-dependency without building RocksDB into its unit tests, and so that it can never form
//! a dependency cycle with the crates it tests.
//!
//! # What does not
//!
//! - Cluster harnesses and anything that starts stores or PD: the in-process cluster with its
//!   fault-injecting network lives in `tests/` (the `tests` crate), the multi-process cluster in
//!   `components/rangekv/tests/support`, the in-process PD group in
//!   `placement-driver/tests/support`.
//! - Helpers of one suite only (a mock store, a PD request of one test file): they stay next to
//!   the tests that use them until a second suite needs them.

pub mod logging;
pub mod meta;
pub mod raft_fuzz;
pub mod wait;

pub use logging::init_logging;
pub use meta::{epoch, peer, region, store, RegionBuilder};
pub use wait::{retry, retry_async, wait_until, wait_until_async};
