//! Protocol definitions for rangekv.
//!
//! These are our own `.proto` files (in `proto/proto/`) declaring only the
//! subset of TiKV's `kvproto` that rangekv implements. Package, service,
//! method, message and field names and field numbers match `kvproto`, so the
//! encoded messages and gRPC paths are wire-compatible with it. Fields we do
//! not model are simply not declared (their numbers are never reused), and the
//! internal persisted-state messages in [`raft_serverpb`] that have no
//! `kvproto` counterpart use our own numbering.
//!
//! All protobuf `bytes` fields are generated as [`bytes::Bytes`]. Services are
//! generated with default method stubs that return `Unimplemented`, so a
//! server only overrides the RPCs it supports; streaming RPCs implemented this
//! way return `tonic::codegen::BoxStream<_>`.

/// Cluster, store, region and peer metadata (`metapb`).
#[allow(clippy::all, missing_docs)]
pub mod metapb {
    tonic::include_proto!("metapb");
}

/// Region-level errors returned to clients for retry/routing (`errorpb`).
#[allow(clippy::all, missing_docs)]
pub mod errorpb {
    tonic::include_proto!("errorpb");
}

/// Transactional and raw key-value request/response messages and request
/// context (`kvrpcpb`).
#[allow(clippy::all, missing_docs)]
pub mod kvrpcpb {
    tonic::include_proto!("kvrpcpb");
}

/// The store's `Tikv` gRPC service: transactional and raw KV plus the raft
/// transport (`tikvpb`).
#[allow(clippy::all, missing_docs)]
pub mod tikvpb {
    tonic::include_proto!("tikvpb");
}

/// The placement driver's `PD` gRPC service and messages (`pdpb`).
#[allow(clippy::all, missing_docs)]
pub mod pdpb {
    tonic::include_proto!("pdpb");
}

/// Store-to-store raft messages and persisted raft/region state
/// (`raft_serverpb`).
#[allow(clippy::all, missing_docs)]
pub mod raft_serverpb {
    tonic::include_proto!("raft_serverpb");
}

/// The part of etcd's v3 KV API that `rangekv bench --target etcd` drives (`etcdserverpb`):
/// a client only, so the same load runs against etcd side by side with rangekv.
#[allow(clippy::all, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// PD-to-PD Raft transport of the replicated placement driver (`pdraftpb`, internal).
#[allow(clippy::all, missing_docs)]
pub mod pdraftpb {
    tonic::include_proto!("pdraftpb");
}

/// API V2 keyspaces served by PD (`keyspacepb`): `LoadKeyspace`.
#[allow(clippy::all, missing_docs)]
pub mod keyspacepb {
    tonic::include_proto!("keyspacepb");
}
