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

    /// Sends a message carrying a Raft snapshot (large: a region's data). By default like any
    /// message; a network transport moves it on its own stream, throttled.
    fn send_snapshot(&mut self, msg: RaftMessage) {
        self.send(msg);
    }
}
