//! End-to-end tests of the PD gRPC service through the generated client, over loopback: one
//! PD member, one file per area of the service.

mod balance_leader;
mod bootstrap;
mod config;
mod fuzz;
mod id_allocation;
mod merge;
mod region_heartbeats;
mod rpc;
mod stores;
mod tso;
