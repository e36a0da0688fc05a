//! The replicated command format: what a proposal puts into a Raft log entry, and what applying
//! it returns.
//!
//! Commands are prost messages defined here (not in `proto/`), because they never leave the
//! store group: only replicas of the same rangekv version read them.
//!
//! A command carries only writes: everything conditional (compare-and-swap, and transactional
//! checks) is decided before proposing, by the storage layer under latches, so applying an
//! entry never reads the engine and can never persist part of an apply batch.

use bytes::Bytes;
use proto::metapb;

/// One log entry's worth of writes to a region, or one admin command.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftCmd {
    #[prost(uint64, tag = "1")]
    pub region_id: u64,
    /// The epoch the command was checked against when proposed; re-checked at apply.
    #[prost(message, optional, tag = "2")]
    pub epoch: Option<metapb::RegionEpoch>,
    #[prost(message, repeated, tag = "3")]
    pub ops: Vec<WriteOp>,
    #[prost(message, optional, tag = "4")]
    pub admin: Option<AdminCmd>,
}

/// The kinds of [`WriteOp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum OpKind {
    Put = 0,
    Delete = 1,
    DeleteRange = 2,
    // 3 was a compare-and-swap decided at apply; it is decided above Raft now and an entry
    // holding it fails at apply on every replica alike.
}

/// One write. Keys are user keys; apply adds the data prefix.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteOp {
    #[prost(enumeration = "OpKind", tag = "1")]
    pub kind: i32,
    #[prost(string, tag = "2")]
    pub cf: String,
    #[prost(bytes = "bytes", tag = "3")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "4")]
    pub value: Bytes,
    /// Exclusive end of a delete-range; empty means the end of the region.
    #[prost(bytes = "bytes", tag = "5")]
    pub end_key: Bytes,
    // Tags 6 and 7 were the expectations of an apply-time compare-and-swap: never reuse them.
}

impl WriteOp {
    pub fn put(cf: &str, key: Bytes, value: Bytes) -> WriteOp {
        WriteOp {
            kind: OpKind::Put as i32,
            cf: cf.to_owned(),
            key,
            value,
            ..Default::default()
        }
    }

    pub fn delete(cf: &str, key: Bytes) -> WriteOp {
        WriteOp {
            kind: OpKind::Delete as i32,
            cf: cf.to_owned(),
            key,
            ..Default::default()
        }
    }

    pub fn delete_range(cf: &str, start: Bytes, end: Bytes) -> WriteOp {
        WriteOp {
            kind: OpKind::DeleteRange as i32,
            cf: cf.to_owned(),
            key: start,
            end_key: end,
            ..Default::default()
        }
    }

    /// The op's kind; `None` for a kind this version does not know (apply refuses it).
    pub fn op_kind(&self) -> Option<OpKind> {
        OpKind::try_from(self.kind).ok()
    }
}

/// The kinds of [`AdminCmd`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum AdminKind {
    /// Truncate the Raft log.
    CompactLog = 0,
    /// Split the region at one or more keys.
    BatchSplit = 1,
    /// Every replica hashes the region's data as of this entry (see [`crate::consistency`]).
    ComputeHash = 2,
    /// Every replica compares its hash of `hash_index` with the leader's `hash`.
    VerifyHash = 3,
    /// The context of a conf change entry (see [`crate::conf_change`]).
    ChangePeer = 4,
    /// The source of a merge stops taking writes (see [`crate::merge`]).
    PrepareMerge = 5,
    /// The target of a merge absorbs its source.
    CommitMerge = 6,
    /// A prepared merge that can never commit is abandoned; the source takes writes again.
    RollbackMerge = 7,
}

/// Region administration replicated through the log.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AdminCmd {
    /// CompactLog: compact the log up to and including this index ...
    #[prost(uint64, tag = "1")]
    pub compact_index: u64,
    /// ... whose entry has this term.
    #[prost(uint64, tag = "2")]
    pub compact_term: u64,
    #[prost(enumeration = "AdminKind", tag = "3")]
    pub kind: i32,
    /// BatchSplit: the split keys, ascending, strictly inside the region.
    #[prost(bytes = "bytes", repeated, tag = "4")]
    pub split_keys: Vec<Bytes>,
    /// BatchSplit: ids for each new region (one per split key), from PD.
    #[prost(message, repeated, tag = "5")]
    pub new_regions: Vec<SplitIds>,
    /// VerifyHash: the index of the ComputeHash entry ...
    #[prost(uint64, tag = "6")]
    pub hash_index: u64,
    /// ... and the leader's hash of the region as of that entry.
    #[prost(uint32, tag = "7")]
    pub hash: u32,
    /// ChangePeer: the peers the conf change names, with their stores.
    #[prost(message, repeated, tag = "8")]
    pub peers: Vec<metapb::Peer>,
    /// PrepareMerge: the target region, as the source's leader saw it.
    #[prost(message, optional, tag = "9")]
    pub target: Option<metapb::Region>,
    /// CommitMerge: the source region (as PrepareMerge left it) ...
    #[prost(message, optional, tag = "10")]
    pub source: Option<metapb::Region>,
    /// ... and its merge state. RollbackMerge: the merge state it abandons.
    #[prost(message, optional, tag = "11")]
    pub merge_state: Option<proto::raft_serverpb::MergeState>,
}

impl AdminCmd {
    /// The command's kind; `None` for a kind this version does not know (apply refuses it).
    pub fn admin_kind(&self) -> Option<AdminKind> {
        AdminKind::try_from(self.kind).ok()
    }
}

/// The ids of one region created by a split: its id, and a peer id for each peer of the parent
/// (in the parent's peer order).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SplitIds {
    #[prost(uint64, tag = "1")]
    pub region_id: u64,
    #[prost(uint64, repeated, tag = "2")]
    pub peer_ids: Vec<u64>,
}

/// What applying a command returns to its proposer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteResponse {
    /// A split: every region the parent's range now consists of, in key order.
    pub regions: Vec<proto::metapb::Region>,
    /// ComputeHash: the entry's index and this replica's hash of the region as of it.
    pub hash: Option<(u64, u32)>,
}

/// Maps a client-facing column family name to the engine's; empty means `default`.
pub fn engine_cf(name: &str) -> Option<&'static str> {
    match name {
        "" | "default" => Some(engine::CF_DEFAULT),
        "lock" => Some(engine::CF_LOCK),
        "write" => Some(engine::CF_WRITE),
        _ => None,
    }
}
