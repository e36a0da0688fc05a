//! The placement driver (PD): rangekv's cluster metadata service, wire-compatible with the
//! subset of TiKV's `pdpb.PD` it implements.
//!
//! PD hands out timestamps (TSO) and unique ids, keeps the map of stores and regions learned
//! from bootstrap, heartbeats and split reports, and answers where keys live.
//!
//! Code map (start reading at [`server`], then [`cluster`]):
//! - [`server`]: start-up ([`start`]), the background tasks, shutdown ([`PdHandle`]).
//! - [`service`]: the gRPC trait implementation, a thin dispatcher onto [`cluster`].
//! - [`cluster`]: one `on_<rpc>` handler per RPC.
//! - [`state`]: the deterministic state machine [`PdState`], changed only by applying a
//!   [`PdCommand`] ([`command`]); [`region_map`] is its region index.
//! - [`proposer`]: [`StateHandle`], the one way commands reach the state machine.
//! - [`tso`], [`id`]: timestamp oracle and id allocator, handing out from memory within bounds
//!   persisted through the state machine.
//! - [`heartbeat`]: soft state (leaders, statistics) that is never persisted.
//! - [`clock`]: injectable wall time. [`config`]: [`PdConfig`].
//!
//! Architecture invariants:
//! - Everything that must survive a restart is in [`PdState`] and changes only through
//!   [`StateHandle::propose`]; everything else is rebuilt from heartbeats.
//! - No timestamp or id is handed out unless the bound covering it is durable.
//!
//! Deliberately absent for now: PD replication (the next step runs [`PdState`] as a Raft state
//! machine over `raft_log` on three nodes, replacing the local [`StateHandle::propose`] with a
//! Raft proposal), scheduling (heartbeats are never answered with operators), store tombstoning,
//! region merge, TLS.

pub mod clock;
pub mod cluster;
pub mod command;
pub mod config;
mod error;
pub mod heartbeat;
pub mod id;
pub mod proposer;
pub mod region_map;
pub mod server;
pub mod service;
pub mod state;
pub mod tso;

pub use clock::{Clock, ManualClock, SystemClock};
pub use command::{ApplyResult, PdCommand};
pub use config::PdConfig;
pub use error::{Error, Result};
pub use proposer::StateHandle;
pub use server::{start, start_with_clock, PdHandle};
pub use state::PdState;
pub use tso::{compose_ts, Timestamp, LOGICAL_BITS};
