//! raft-rs's Ready cycle in the two phases both drivers (a store's region peers, PD's Raft
//! node) follow around their synced write.
//!
//! Protocol:
//! 1. [`take`] the Ready. What it returns in [`Taken`] the driver handles before its write:
//!    - `messages` may leave at once: a leader's appends go to followers before its own fsync
//!      (Raft allows it; the leader counts itself toward a quorum only once persisted);
//!    - a `snapshot` the driver stages into its write batch **first** (it resets the log);
//!    - `committed` entries and `read_states` are the driver's to hand on at once: raft-rs
//!      hands out only committed entries this node has already persisted (up to its persisted
//!      index, advanced in [`advance`]), so applying them need not wait for this Ready's write
//!      (after a crash, the commit index is recovered as at least the applied index);
//!    - then [`stage_log`] stages the new entries and hard state into the same batch.
//! 2. The driver writes the batch, **synced** (a store's group commit of many regions' Readies,
//!    or PD's own write).
//! 3. Only then [`advance`]: the persisted messages (votes, append acknowledgements) may leave,
//!    raft-rs advances, an applied snapshot's index becomes the applied index, a moved commit
//!    index is staged (it may be written unsynced: after a crash it is learnt again from the
//!    leader), and the light ready's messages and committed entries are handed out.
//!
//! Invariants: no message that needs persistence leaves before the synced write of its Ready;
//! a snapshot's log reset is staged before the entries that follow it.
//!
//! Not here: what the driver does with roles, read states, snapshot data and committed
//! entries, its threads, and the write itself.

use engine::WriteBatch;
use raft::eraftpb::{Entry, Message, Snapshot};
use raft::{RawNode, ReadState, SoftState};
use raft_log::RaftLogStorage;

/// What a Ready asks of its driver before the synced write (see the module docs).
pub struct Taken {
    /// The node's role or leader changed.
    pub soft_state: Option<SoftState>,
    /// May leave at once.
    pub messages: Vec<Message>,
    /// To stage before [`stage_log`]; `None` when the Ready has none.
    pub snapshot: Option<Snapshot>,
    /// Committed entries, in log order, all persisted here already: they may be applied
    /// before the Ready is written.
    pub committed: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

/// The rest of a taken Ready, until [`advance`].
pub struct Pending {
    ready: raft::Ready,
}

/// What a written Ready releases (see the module docs).
pub struct Advanced {
    /// Held until the write (votes, append acknowledgements), then the light ready's: in this
    /// order.
    pub messages: Vec<Message>,
    /// Committed entries, in log order, after those of [`Taken`].
    pub committed: Vec<Entry>,
}

/// Takes the node's Ready, if it has one.
pub fn take(raw: &mut RawNode<RaftLogStorage>) -> Option<(Taken, Pending)> {
    if !raw.has_ready() {
        return None;
    }
    let mut ready = raw.ready();
    let taken = Taken {
        soft_state: ready.ss().map(|ss| SoftState {
            leader_id: ss.leader_id,
            raft_state: ss.raft_state,
        }),
        messages: ready.take_messages(),
        snapshot: (!ready.snapshot().is_empty()).then(|| ready.snapshot().clone()),
        committed: ready.take_committed_entries(),
        read_states: ready.take_read_states(),
    };
    Some((taken, Pending { ready }))
}

/// Stages the Ready's new entries and hard state into `wb` (after any snapshot).
pub fn stage_log(raw: &mut RawNode<RaftLogStorage>, pending: &Pending, wb: &mut WriteBatch) {
    if !pending.ready.entries().is_empty() {
        raw.mut_store().append(pending.ready.entries(), wb);
    }
    if let Some(hs) = pending.ready.hs() {
        raw.mut_store().set_hard_state(hs.clone(), wb);
    }
}

/// Once the Ready is written, synced: advances raft-rs (and its applied index to
/// `snapshot_index`, the index of a snapshot this Ready applied), stages a moved commit index
/// into `wb`, and releases what waited for the write.
pub fn advance(
    raw: &mut RawNode<RaftLogStorage>,
    pending: Pending,
    snapshot_index: Option<u64>,
    wb: &mut WriteBatch,
) -> Advanced {
    let Pending { mut ready } = pending;
    let mut messages = ready.take_persisted_messages();
    let mut light = raw.advance_append(ready);
    if let Some(index) = snapshot_index {
        raw.advance_apply_to(index);
        raw.mut_store().set_applied(index);
    }
    if let Some(commit) = light.commit_index() {
        raw.mut_store().set_commit(commit, wb);
    }
    messages.extend(light.take_messages());
    Advanced {
        messages,
        committed: light.take_committed_entries(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{Engine, EngineOptions};
    use raft::eraftpb::MessageType;
    use raft::StateRole;

    fn node(engine: &Engine, id: u64) -> RawNode<RaftLogStorage> {
        let mut wb = WriteBatch::new();
        raft_log::bootstrap_group(id, &mut wb);
        engine.write(wb, true).unwrap();
        let cs = raft::eraftpb::ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        };
        let storage = RaftLogStorage::load(engine.clone(), id, cs).unwrap();
        let config = raft::Config {
            id,
            applied: raft_log::RAFT_INIT_LOG_INDEX,
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        RawNode::new(&config, storage, &logger).unwrap()
    }

    /// Writes a Ready the way a driver does; returns what left before and after the write.
    fn cycle(
        raw: &mut RawNode<RaftLogStorage>,
        engine: &Engine,
    ) -> (Taken, Vec<Message>, Vec<Entry>) {
        let (taken, pending) = take(raw).expect("a ready");
        let mut wb = WriteBatch::new();
        stage_log(raw, &pending, &mut wb);
        engine.write(wb, true).unwrap();
        let mut wb = WriteBatch::new();
        let advanced = advance(raw, pending, None, &mut wb);
        engine.write(wb, false).unwrap();
        (taken, advanced.messages, advanced.committed)
    }

    #[test]
    fn votes_wait_for_the_write_and_a_leaders_appends_do_not() {
        // Each member has its own engine (and group id = member id, so one engine per member).
        let engines: Vec<(tempfile::TempDir, Engine)> = (0..3)
            .map(|_| {
                let dir = tempfile::tempdir().unwrap();
                let e = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
                (dir, e)
            })
            .collect();
        let mut nodes: Vec<RawNode<RaftLogStorage>> = (1..=3)
            .map(|id| node(&engines[id as usize - 1].1, id))
            .collect();
        // Node 1 campaigns: its vote requests need its own vote persisted first.
        nodes[0].campaign().unwrap();
        let (taken, after, _) = cycle(&mut nodes[0], &engines[0].1);
        assert!(taken.messages.is_empty(), "nothing leaves before the write");
        let requests: Vec<Message> = after
            .into_iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgRequestVote)
            .collect();
        assert_eq!(requests.len(), 2);
        // A voter's answer is persisted (its vote) before it leaves.
        for m in requests {
            let to = m.to as usize - 1;
            nodes[to].step(m).unwrap();
            let (taken, after, _) = cycle(&mut nodes[to], &engines[to].1);
            assert!(taken.messages.is_empty());
            assert!(after
                .iter()
                .any(|m| m.get_msg_type() == MessageType::MsgRequestVoteResponse));
            for resp in after {
                nodes[0].step(resp).unwrap();
            }
        }
        assert_eq!(nodes[0].raft.state, StateRole::Leader);
        // The new leader's appends leave at once, before its own write.
        let (taken, _, _) = cycle(&mut nodes[0], &engines[0].1);
        assert_eq!(
            taken.soft_state.map(|ss| ss.raft_state),
            Some(StateRole::Leader)
        );
        assert!(taken
            .messages
            .iter()
            .any(|m| m.get_msg_type() == MessageType::MsgAppend));
    }
}
