//! The storage engine of a store: one RocksDB instance shared by every region on the store.
//!
//! This crate owns:
//! - opening the database with the fixed set of column families ([`CF_DEFAULT`], [`CF_LOCK`],
//!   [`CF_WRITE`], [`CF_RAFT`]) and the tuning that goes with them;
//! - atomic [`WriteBatch`]es, written either synced (Raft log) or unsynced (applied state);
//! - point-in-time [`Snapshot`]s and ordered, bounded iteration in both directions;
//! - SST files: a range of a snapshot exported ([`Snapshot::export_sst`]) and files ingested
//!   ([`Engine::ingest`]), which Raft snapshots travel and apply as;
//! - key encodings: the memcomparable byte codec ([`codec`]), the data-key prefix that keeps user
//!   keys apart from local metadata, and the layout of per-region Raft keys ([`keys`]).
//!
//! It deliberately knows nothing about regions, Raft or MVCC: callers decide what goes in which
//! column family. It does not offer "create column family at run time": the set is fixed.
//!
//! Invariants:
//! - Every key a client writes lives under the data prefix ([`keys::data_key`]); everything else in
//!   the data column families is unreachable from client scans.
//! - A batch is applied atomically across column families.

pub mod codec;
mod db;
mod error;
pub mod keys;

pub use db::{
    Engine, EngineOptions, Snapshot, WriteBatch, ALL_CFS, CF_DEFAULT, CF_LOCK, CF_RAFT, CF_WRITE,
};
pub use error::{Error, Result};
