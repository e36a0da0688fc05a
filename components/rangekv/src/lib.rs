//! The `rangekv` binary's library half: running a local cluster of real processes.
//!
//! [`local_cluster::LocalCluster`] starts PD and store nodes as child processes of a given
//! `rangekv` executable, waits until they serve, and stops, kills and restarts them one by one.
//! `rangekv playground` and the multi-process tests both use it.

pub mod local_cluster;
