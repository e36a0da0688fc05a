//! The raftstore: every region replica ("peer") of one store, driven as Raft groups by a batched
//! poller loop, with committed commands applied by a separate apply pool.
//!
//! Code map:
//! - [`store`]: start-up (load regions from the engine, spawn pollers, apply workers and the
//!   ticker) and the poll handler that group-commits all peers' Raft writes once per round;
//!   `router`: the [`StoreRouter`] through which the server talks to peers; [`store_meta`]: the ranges of
//!   the replicas a store hosts and the tombstones of those it destroyed.
//! - [`peer`]: one region replica: Raft state machine, proposals, context checks, reads
//!   (lease and ReadIndex), Raft log GC, split proposals and creating the split-off replicas.
//! - [`apply`]: apply workers: execute committed commands on the engine in write batches and
//!   complete their callbacks; splits (new region metadata and initial Raft state).
//! - [`cmd`]: the replicated command format and the results of applying it.
//! - [`conf_change`]: membership changes (learners, joint consensus) as pure functions.
//! - [`snap`]: making and applying Raft snapshots of a region.
//! - [`merge`]: region merge (PrepareMerge / CommitMerge / RollbackMerge) as pure rules;
//!   `peer::merge` and the apply workers carry them out.
//! - [`consistency`]: hashing a region at a log position on every replica and comparing.
//! - [`bootstrap`]: writing the initial state of a store and of its regions.
//! - [`clock`]: injectable wall time for leases and timeouts.
//! - [`hibernate`]: idle regions stop ticking; store liveness wakes their followers when a
//!   leader's store falls silent.
//! - [`local_reader`]: lease reads granted on the caller's thread from what each leader
//!   publishes, without a poller round.
//! - `ticker`: the store's clock thread (ticks awake regions, liveness beacons).
//! - [`transport`]: the trait the store sends Raft messages through.
//! - [`metrics`]: Prometheus metrics (group commit width, log write time, reads by path, ...).
//!
//! Deliberately absent (later roadmap steps): deciding when to split or move replicas (the
//! server and PD do).

pub mod apply;
pub mod bootstrap;
pub mod clock;
pub mod cmd;
pub mod conf_change;
mod config;
pub mod consistency;
mod error;
pub mod hibernate;
pub mod local_reader;
pub mod merge;
pub mod metrics;
pub mod peer;
mod router;
pub mod snap;
pub mod store;
pub mod store_meta;
mod ticker;
pub mod transport;
mod util;

pub use config::{Config, RegionChangeObserver};
pub use error::{Error, Result};
pub use store::{ReadGrant, RequestHeader, Store, StoreRouter};
pub use transport::Transport;
