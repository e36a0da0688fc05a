//! Commands of the PD state machine and their wire encoding.
//!
//! Every change of replicated PD state is a [`PdCommand`]. A command is a protobuf message
//! (encoded with [`PdCommand::to_bytes`], decoded with [`PdCommand::from_bytes`]) so that it can become
//! a Raft log entry unchanged: the proposer encodes it, every replica decodes and applies it.
//!
//! Invariants:
//! - Commands carry every input the state machine needs. Nothing in apply reads the clock,
//!   randomness or local configuration: the cluster id, bounds and timestamps are decided by the
//!   proposer and written into the command.
//! - Tags are never reused. A new command gets a new tag; an obsolete one keeps its tag reserved.
//!
//! What is deliberately not a command: store and region *statistics*, region leaders and
//! heartbeat times. They are soft state, rebuilt from heartbeats within seconds by whichever node
//! leads, and replicating them would put every heartbeat through the log.

use prost::Message;
use proto::metapb;

use crate::{Error, Result};

/// Sets the cluster id of a fresh PD (the proposer generates it).
#[derive(Clone, PartialEq, Message)]
pub struct InitCluster {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
}

/// Bootstraps the cluster with its first store and first region.
#[derive(Clone, PartialEq, Message)]
pub struct Bootstrap {
    #[prost(message, optional, tag = "1")]
    pub store: Option<metapb::Store>,
    #[prost(message, optional, tag = "2")]
    pub region: Option<metapb::Region>,
    /// Desired replicas per region, from the proposer's configuration.
    #[prost(uint32, tag = "3")]
    pub max_peer_count: u32,
}

/// Adds or updates a store's metadata.
#[derive(Clone, PartialEq, Message)]
pub struct PutStore {
    #[prost(message, optional, tag = "1")]
    pub store: Option<metapb::Store>,
    /// A store registered at the same address whose process the leader judged gone (no
    /// heartbeat for [`crate::schedule::STORE_ALIVE_MS`]: a new store bound its address): it
    /// turns Offline, so PD moves its replicas away, instead of refusing the new store. 0: none.
    #[prost(uint64, tag = "2")]
    pub replaces: u64,
}

/// Adds or updates regions, in order. Each region is applied only if its epoch is not older than
/// what is known; regions it overlaps that have older epochs are removed.
#[derive(Clone, PartialEq, Message)]
pub struct PutRegions {
    #[prost(message, repeated, tag = "1")]
    pub regions: Vec<metapb::Region>,
}

/// Compacts the Raft log up to `index` (whose entry has `term`) on every member. Proposed by
/// the leader, never by clients; it changes no [`crate::PdState`], only the members' logs (see
/// [`crate::log_gc`]).
#[derive(Clone, PartialEq, Message)]
pub struct CompactLog {
    #[prost(uint64, tag = "1")]
    pub index: u64,
    #[prost(uint64, tag = "2")]
    pub term: u64,
}

/// Moves a store through its life: `Up` → `Offline` (an operator asked to remove it; its
/// replicas are moved away) → `Tombstone` (it holds none any more; final), or `Offline` → `Up`
/// (the removal is cancelled).
#[derive(Clone, PartialEq, Message)]
pub struct SetStoreState {
    #[prost(uint64, tag = "1")]
    pub store_id: u64,
    #[prost(enumeration = "metapb::StoreState", tag = "2")]
    pub state: i32,
}

/// One command of the PD state machine.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PdCommand {
    #[prost(message, tag = "1")]
    InitCluster(InitCluster),
    #[prost(message, tag = "2")]
    Bootstrap(Bootstrap),
    #[prost(message, tag = "3")]
    PutStore(PutStore),
    #[prost(message, tag = "4")]
    PutRegions(PutRegions),
    /// Raises the persisted upper bound of allocated ids (never lowers it).
    #[prost(uint64, tag = "5")]
    SetIdBound(u64),
    /// Raises the persisted upper bound of TSO physical time, in ms (never lowers it).
    #[prost(uint64, tag = "6")]
    SetTsoBound(u64),
    /// Raises the GC safe point (never lowers it).
    #[prost(uint64, tag = "7")]
    UpdateGcSafePoint(u64),
    /// Raft log GC, handled by the Raft thread rather than the state machine (a no-op for
    /// [`crate::PdState`]); see [`crate::log_gc`].
    #[prost(message, tag = "8")]
    CompactLog(CompactLog),
    #[prost(message, tag = "9")]
    SetStoreState(SetStoreState),
}

/// The encoded form of a command: a message with the command as its only (oneof) field.
#[derive(Clone, PartialEq, Message)]
struct CommandEnvelope {
    #[prost(oneof = "PdCommand", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9")]
    command: Option<PdCommand>,
}

impl PdCommand {
    /// Encodes the command as a protobuf message (the future Raft entry payload).
    pub fn to_bytes(&self) -> Vec<u8> {
        CommandEnvelope {
            command: Some(self.clone()),
        }
        .encode_to_vec()
    }

    /// Decodes a command produced by [`PdCommand::to_bytes`].
    pub fn from_bytes(data: &[u8]) -> Result<PdCommand> {
        let envelope = CommandEnvelope::decode(data)
            .map_err(|e| Error::Corrupt(format!("undecodable command: {e}")))?;
        envelope
            .command
            .ok_or_else(|| Error::Corrupt("empty command".to_owned()))
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            PdCommand::InitCluster(_) => "init_cluster",
            PdCommand::Bootstrap(_) => "bootstrap",
            PdCommand::PutStore(_) => "put_store",
            PdCommand::PutRegions(_) => "put_regions",
            PdCommand::SetIdBound(_) => "set_id_bound",
            PdCommand::SetTsoBound(_) => "set_tso_bound",
            PdCommand::UpdateGcSafePoint(_) => "update_gc_safe_point",
            PdCommand::CompactLog(_) => "compact_log",
            PdCommand::SetStoreState(_) => "set_store_state",
        }
    }
}

/// What applying a command did, for the proposer to answer its caller.
#[derive(Clone, Debug, PartialEq)]
pub enum ApplyResult {
    /// Applied (possibly as a no-op, e.g. a bound that was already higher).
    Done,
    /// Result of [`PdCommand::PutRegions`].
    Regions(RegionsApplied),
    /// Result of [`PdCommand::UpdateGcSafePoint`]: the safe point now in effect.
    GcSafePoint(u64),
    /// Result of a membership change (a Raft conf change, not a command): the new member list
    /// (see [`crate::members`]).
    Members(crate::members::MemberList),
}

/// The effect of a [`PdCommand::PutRegions`], region ids in ascending order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionsApplied {
    /// Regions whose metadata was stored.
    pub updated: Vec<u64>,
    /// Regions removed because a newer region overlapped them.
    pub removed: Vec<u64>,
    /// Regions of the command that were ignored because their epoch was stale.
    pub stale: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        let region = metapb::Region {
            id: 7,
            start_key: bytes::Bytes::from_static(b"a"),
            end_key: bytes::Bytes::from_static(b"b"),
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 2,
            }),
            peers: vec![metapb::Peer {
                id: 8,
                store_id: 1,
                ..Default::default()
            }],
        };
        let cmds = [
            PdCommand::InitCluster(InitCluster { cluster_id: 42 }),
            PdCommand::Bootstrap(Bootstrap {
                store: Some(metapb::Store {
                    id: 1,
                    address: "x:1".into(),
                    ..Default::default()
                }),
                region: Some(region.clone()),
                max_peer_count: 3,
            }),
            PdCommand::PutRegions(PutRegions {
                regions: vec![region],
            }),
            PdCommand::SetIdBound(1000),
            PdCommand::SetTsoBound(0),
            PdCommand::UpdateGcSafePoint(u64::MAX),
            PdCommand::CompactLog(CompactLog {
                index: 300,
                term: 7,
            }),
        ];
        for cmd in cmds {
            assert_eq!(PdCommand::from_bytes(&cmd.to_bytes()).unwrap(), cmd);
        }
        assert!(PdCommand::from_bytes(&[]).is_err());
        assert!(PdCommand::from_bytes(&[0xff, 0xff]).is_err());
    }
}
