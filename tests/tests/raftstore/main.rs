//! In-process cluster tests of the replicated multi-raft core and the raw KV layer.

mod bad_input;
mod bank;
mod conf_change;
mod consistency;
mod failover;
mod faults;
mod fuzz;
mod gc;
mod hibernate;
mod keyspace;
mod lease;
mod linearizable;
mod linearizable_client;
mod log_gc;
mod many_regions;
mod new_leader_reads;
mod overload;
mod partition;
mod raw_api;
mod region_errors;
mod replication;
mod restart;
mod split;
mod transfer_leader;
mod txn;
mod txn_client;
