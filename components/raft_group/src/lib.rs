//! Raft plumbing shared by the raftstore's region peers and PD's Raft node.
//!
//! Owns what both drivers must do the same way around raft-rs and what does not depend on
//! either one's storage or threads. Today that is the screen of inbound messages
//! ([`validate`]): both step messages that came off the network, and raft-rs panics on some
//! that no correct member sends. It does not (yet) own the Ready cycle, proposal queues,
//! leases or log GC, which each driver still has its own copy of; those are meant to move here.

pub mod validate;
