//! Raft plumbing shared by the raftstore's region peers and PD's Raft node.
//!
//! Owns what both drivers must do the same way around raft-rs and what does not depend on
//! either one's storage or threads. Today that is:
//! - [`validate`], the screen of inbound messages: both step messages that came off the
//!   network, and raft-rs panics on some that no correct member sends;
//! - [`log_gc`], the log compaction policy (how far a leader compacts, and when a lagging
//!   member is left to a snapshot);
//! - [`proposal`], the queue of proposals waiting for their entries to commit, and how a
//!   commit settles them (committed, or stale);
//! - [`lease`], the leader lease: when a quorum's acknowledgement renews it, and how a leader
//!   transfer (started, or aborted) suspends it;
//! - [`ready`], raft-rs's Ready cycle in two phases around the driver's synced write.
//!
//! PD's Raft node and the raftstore's region peers both use all of them.
//!
//! Not here: each driver's threads and storage layout (a store batches the Readies of many
//! regions into one group commit; PD has one group), and what it does with committed entries.

pub mod lease;
pub mod log_gc;
pub mod proposal;
pub mod ready;
pub mod validate;
