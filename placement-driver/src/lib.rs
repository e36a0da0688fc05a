//! The placement driver (PD): rangekv's cluster metadata service, wire-compatible with the
//! subset of TiKV's `pdpb.PD` it implements.
//!
//! PD hands out timestamps (TSO) and unique ids, keeps the map of stores and regions learned
//! from bootstrap, heartbeats and split reports, and answers where keys live.
//!
//! Code map (start reading at [`server`], then [`cluster`]):
//! - [`server`]: start-up ([`start`]), the background tasks, shutdown ([`PdHandle`]).
//! - [`service`]: the gRPC trait implementation, a thin dispatcher onto [`cluster`].
//! - [`http_api`]: PD's HTTP API (`/pd/api/v1`: members, health, stores, regions, cluster, GC
//!   safe point; store removal, replica operators, adding and removing members) on the client
//!   port, JSON shaped as PD's, and the probes
//!   and [`metrics`] (`/health`, `/ready`, `/metrics`) at its root.
//! - [`cluster`]: one `on_<rpc>` handler per RPC.
//! - [`state`]: the deterministic state machine [`PdState`], changed only by applying a
//!   [`PdCommand`] ([`command`]); [`region_map`] is its region index.
//! - [`proposer`]: [`StateHandle`], the one way commands reach the state machine: a proposal
//!   to PD's Raft group, answered once committed and applied here.
//! - [`raft_node`]: the Raft thread (raft-rs over `raft_log` on PD's engine): Ready handling,
//!   apply, leadership, the leader barrier and lease. [`transport`]: PD-to-PD Raft messages over
//!   gRPC (`pdraftpb.PdRaft`, on the client port), with a fault-injection switch for tests.
//!   [`log_gc`]: compaction of that Raft log (leader-proposed `CompactLog` commands);
//!   `snapshot`: Raft snapshots of the state, for members behind the log's start.
//!   [`lease`]: why PD's timing makes the shared leader lease (`raft_group::lease`) hold.
//! - [`members`]: the group's replicated member list and the rules of membership changes
//!   (add as a learner, promote once caught up, remove), carried out as Raft conf changes.
//! - [`tso`], [`id`]: timestamp oracle and id allocator, handing out from memory within bounds
//!   persisted through the state machine.
//! - [`heartbeat`]: soft state (leaders, statistics) that is never persisted.
//! - [`keyspace`]: API V2 keyspaces: `keyspacepb.Keyspace/LoadKeyspace` (the default keyspace
//!   only) and the splits that keep regions inside keyspace boundaries.
//! - [`schedule`]: the balance-leader scheduler, answering region heartbeats with leader
//!   transfers that even out the leaders per store.
//! - [`replica`]: the replica checker and balance-region, answering region heartbeats with the
//!   steps of replica operators (add learner, promote, remove).
//! - [`merge`]: the merge checker, answering a small region's leader with `merge { target }`
//!   naming an adjacent small region on the same stores, after moving the source's replicas
//!   onto the target's stores (replica operators, one move at a time); merge operators live
//!   with the replica operators.
//! - [`membership`]: which group a data directory belongs to; joins a member the group added
//!   (empty directory, `existing`); refuses a wiped voter, another group's directory, or a
//!   removed member's.
//! - [`clock`]: injectable wall time. [`config`]: [`PdConfig`].
//!
//! Architecture invariants:
//! - Everything that must survive a restart or a failover is in [`PdState`] and changes only
//!   through [`StateHandle::propose`], i.e. through the Raft log; everything else is rebuilt
//!   from heartbeats.
//! - No timestamp or id is handed out unless the bound covering it is committed, and only by a
//!   serving leader (elected, barrier applied, within its lease); a new leader starts above
//!   every bound of earlier leaders.
//! - Only `GetMembers` (and, over HTTP, members, leader, health and ping) is served by
//!   followers; everything else answers "not leader" there, naming the leader.
//!
//! Deliberately absent for now: request forwarding from followers, moving
//! hot regions' replicas (replicas are balanced by region size, leaders by count and, for hot
//! regions, by load: see [`replica`] and [`schedule`]), moving replicas so that two regions
//! can merge (see [`merge`]).

pub mod clock;
pub mod cluster;
pub mod command;
pub mod config;
mod error;
pub mod heartbeat;
pub mod http_api;
pub mod id;
pub mod keyspace;
pub mod lease;
pub mod log_gc;
pub mod members;
pub mod membership;
pub mod merge;
pub mod metrics;
pub mod proposer;
pub mod raft_node;
pub mod region_map;
pub mod replica;
pub mod schedule;
pub mod server;
pub mod service;
mod snapshot;
pub mod state;
pub mod transport;
pub mod tso;

pub use clock::{Clock, ManualClock, SystemClock};
pub use command::{ApplyResult, PdCommand};
pub use config::{InitialClusterState, PdConfig};
pub use error::{Error, Result};
pub use proposer::StateHandle;
pub use raft_node::{Leadership, MemberInfo, NodeStatus, RaftLogState};
pub use server::{start, start_with_clock, start_with_listener, PdHandle};
pub use state::PdState;
pub use tso::{compose_ts, Timestamp, LOGICAL_BITS};
