//! Tests that make a race happen on demand with fail points (`fail` crate): a paused apply, a
//! panic in a chosen place.
//!
//! Fail points are process-wide, so these tests live in their own test binary and each one
//! holds a `fail::FailScenario` (which also serializes them).

mod apply_backlog;
mod apply_before_save;
mod apply_pause;
mod cas;
mod lease_after_replica_read;
mod local_read;
mod merge;
mod save_gate;
mod write_batching;
