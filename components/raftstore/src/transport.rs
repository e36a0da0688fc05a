//! How the raftstore sends Raft messages to other stores.
//!
//! Implementations: the gRPC transport of the server (batched per destination store,
//! reconnecting with backoff) and the in-process transport of the test harness (with fault
//! filters). Each poller owns one clone, so `send` may buffer without locking; `flush` is called
//! once at the end of every poll round.

use proto::raft_serverpb::RaftMessage;

pub trait Transport: Send + Clone + 'static {
    /// Queues `msg` for its destination store. Never blocks on the network; a message that
    /// cannot be delivered is dropped (Raft retransmits).
    fn send(&mut self, msg: RaftMessage);
    /// Hands every queued message to the network.
    fn flush(&mut self);

    /// Sends a message carrying a Raft snapshot. Its data lists the snapshot's files, in this
    /// store's snapshot directory ([`crate::snap::SnapManager`]): the transport moves them into
    /// the receiving store's before it delivers the message ([`crate::snap::files_of`] names
    /// them), since a replica drops a snapshot whose files it does not have.
    fn send_snapshot(&mut self, msg: RaftMessage);
}
