//! The `rangekv` binary's library half: running a local cluster of real processes, and checking
//! that a region's replicas agree.
//!
//! [`local_cluster::LocalCluster`] starts PD and store nodes as child processes of a given
//! `rangekv` executable, waits until they serve, and stops, kills and restarts them one by one.
//! `rangekv playground` and the multi-process tests both use it. [`region_check`] is
//! `rangekv ctl region check`, which the tests also call directly.

pub mod local_cluster;
pub mod region_check;
