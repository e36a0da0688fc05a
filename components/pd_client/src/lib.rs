//! The client of the placement driver, speaking TiKV's `pdpb.PD` protocol.
//!
//! [`PdClient::connect`] finds the PD leader through a list of endpoints and binds the client to
//! the cluster id it reports; every request then carries that id. Unary calls are retried with
//! backoff on transport failures and "not leader" answers, rediscovering the leader in between
//! ([`client`], [`connection`]). Timestamps are batched across concurrent callers onto one Tso
//! stream ([`tso`]); region heartbeats flow over one RegionHeartbeat stream ([`heartbeat`]).
//!
//! Works against rangekv's `placement-driver` and, for the same RPCs, against TiKV's PD.
//!
//! Invariants:
//! - The cluster id never changes during the client's life; a PD of another cluster is refused.
//! - Timestamps returned by [`PdClient::get_ts`] are unique, and increasing for sequential calls.
//!
//! Deliberately absent: TLS, follower reads from PD, the global config / keyspace APIs, and
//! scheduling-command handling (PD's responses on the heartbeat stream go to a caller-installed
//! handler, see [`PdClient::on_region_heartbeat_response`]).

pub mod client;
pub mod config;
pub mod connection;
pub mod error;
pub mod heartbeat;
pub mod tso;

pub use client::{ClientStats, PdClient, RegionInfo, RegionStat};
pub use config::PdClientConfig;
pub use error::{Error, Result};
pub use heartbeat::RegionHeartbeatHandler;
pub use tso::{compose_ts, physical_of, LOGICAL_BITS};
