//! Multi-process tests: real `rangekv pd` and `rangekv server` processes on loopback, killed
//! and restarted like real nodes, driven through the client library. One file per area.

#[path = "../support/mod.rs"]
mod support;

mod bad_input;
mod pd_failover;
mod playground;
mod raw_api;
mod restarts;
mod scale;
mod split_and_balance;
mod status_and_bench;
mod tls;
