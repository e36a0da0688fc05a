//! PD's Raft group: the thread that drives a raft-rs `RawNode` over PD's own engine, replicates
//! [`PdCommand`]s and applies committed ones to [`PdState`]. What it publishes for the rest
//! of the process (leadership, lease, members, log state) is [`status`]'s [`NodeStatus`].
//!
//! Every PD member runs one [`RaftNode`] thread. The group (id [`PD_RAFT_GROUP_ID`] in PD's
//! engine) starts with one voter per member of `initial_cluster` (one voter for a single-node
//! PD), with the member ids as Raft peer ids. Every member bootstraps the same initial state
//! (`raft_log::bootstrap_group`: an empty log committed up to `RAFT_INIT_LOG_INDEX`) the first
//! time it starts on an empty data directory; a member never bootstraps over existing data nor
//! onto an empty directory of a running group (see [`crate::membership`]). Members are added
//! and removed later by Raft conf changes ([`crate::members`] has the protocol, `conf_change`
//! carries it out): a member added to a running group starts with no Raft state at all and
//! gets everything from the leader's snapshot; a member that applies its own removal stops.
//!
//! The thread's loop: receive from its inbox ([`RaftMsg`]: proposals, messages from peers,
//! shutdown) with a timeout until the next tick; tick; then handle Ready in the two phases of
//! [`raft_group::ready`]:
//! 1. send the Ready's `messages` at once (a leader's appends may go out before its own fsync);
//! 2. stage a snapshot (if any), then the new entries and hard state, and write them **synced**;
//! 3. advance: send the persisted messages (votes, append responses) — only now, after the
//!    sync — and the light ready's, and persist a moved commit index (unsynced);
//! 4. apply committed entries, one by one: the state changes of a command and the new applied
//!    index go into one (unsynced) write batch, then into memory; a proposer waiting for that
//!    entry is answered with the result. A `CompactLog` entry instead moves the truncated state
//!    and deletes the dead log entries, in one batch with the applied index.
//!
//! Every `raft_log_gc_ticks` ticks a ready leader considers proposing `CompactLog`, up to
//! `min(matched of every voter, applied)`, or to `applied` once the log passes
//! `raft_log_gc_count_limit` entries; the protocol and its invariants are in [`crate::log_gc`].
//! A member behind the log's start gets a snapshot of the state (`crate::snapshot`): the
//! leader's raft-rs asks the storage's snapshot source for one; the follower writes it with the
//! log reset and the rest of its Ready in one synced batch, before anything of that Ready is
//! acknowledged, and loads the state again.
//!
//! Applied state is written unsynced: after a crash, raft-rs hands the entries above the
//! persisted applied index out again and they are re-applied (every command is idempotent on
//! replay: bounds take the max, region updates check epochs, a second bootstrap is rejected).
//!
//! Leadership ([`Leadership`], published through [`NodeStatus`]):
//! - A new leader is *ready* once the empty entry raft-rs appends on election (an entry of its
//!   term) is committed and applied here. Before that, its state may miss committed commands of
//!   earlier leaders, so nothing leader-only is served and no proposal is accepted.
//! - **Lease** ([`crate::lease`]): always counted from when a round was *sent*, renewed when a
//!   quorum acknowledges it. Every tick, the leader issues a ReadIndex (`ReadOnlyOption::Safe`)
//!   whose context is the time it was issued (its heartbeats leave in the next Ready); when
//!   raft-rs reports it, the lease is renewed from that time. The barrier entry renews it from
//!   the start of the Ready that made this node leader (before its first appends left, and
//!   before its own fsync), and a committed proposal from the time it was proposed. Followers
//!   that acknowledged reject votes for an election timeout (check_quorum), which is longer
//!   than the lease (see [`crate::PdConfig::leader_lease`]), so while the lease holds no other
//!   leader can exist. [`NodeStatus::serving_term`] requires leader, ready and lease.
//! - PD never transfers its leadership: `MsgTransferLeader` and `MsgTimeoutNow` from peers are
//!   dropped (the latter would make this node campaign inside the current leader's lease). A
//!   transfer, should raft-rs start one anyway, suspends the lease as [`crate::lease`] says.
//! - On losing leadership every pending proposal is answered [`Error::NotLeader`] (it may still
//!   commit; every command is safe to retry).
//!
//! Invariants:
//! - No message that needs persistence leaves before the synced write of its Ready.
//! - State in memory and on disk change together, in log order, and only by committed entries.
//! - A storage failure while persisting or applying stops the node (the thread ends and every
//!   proposal fails); it is never answered as a command result.
//!
//! Implementation caveats: proposals are not forwarded from followers (clients go to the
//! leader).

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{Engine, WriteBatch};
use parking_lot::RwLock;
use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use raft::{RawNode, StateRole, Storage};
use raft_group::proposal::{Proposal, ProposalQueue, Settled};
use raft_log::{ApplyState, RaftLogStorage};
use tokio::sync::oneshot;

use crate::command::{ApplyResult, CompactLog, PdCommand};
use crate::lease::Lease;
use crate::log_gc::{self, LogGcConfig};
use crate::members::{self, MemberList, MemberRequest, PdMember};
use crate::state::PdState;
use crate::{Error, Result};

mod apply;
mod conf_change;
mod status;

pub use status::{Leadership, MemberInfo, NodeStatus, RaftLogState};

/// The id of PD's Raft group in PD's own engine.
pub const PD_RAFT_GROUP_ID: u64 = 1;

/// How many inbox messages the loop handles before looking at Ready again.
const MAX_INBOX_BATCH: usize = 4096;

/// A message to the Raft thread.
pub(crate) enum RaftMsg {
    /// Replicate an encoded [`PdCommand`]; answered once applied here (or failed).
    Propose {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<ApplyResult>>,
    },
    /// Change the group's members; answered with the new list once applied here.
    ChangeMembers {
        request: MemberRequest,
        reply: oneshot::Sender<Result<ApplyResult>>,
    },
    /// A Raft message from another member.
    Step(Box<Message>),
    /// Stop the thread.
    Shutdown,
}

/// The state machine and its engine, shared by the Raft thread (which writes) and
/// [`crate::StateHandle`] (which reads).
#[derive(Debug)]
pub(crate) struct StateCell {
    pub engine: Engine,
    pub state: RwLock<PdState>,
    /// Dropped (last) when the state and its engine are gone; see [`crate::StateHandle::open`].
    pub _closed: oneshot::Sender<()>,
}

/// Where the Raft thread sends messages to other members (never blocks).
pub(crate) trait RaftSender: Send + 'static {
    fn send(&self, msg: Message);
    /// The group's members changed: send to these (this member among them or not).
    fn set_members(&mut self, members: &[PdMember]);
}

/// Raft timing of the node.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RaftTiming {
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub lease: Duration,
    pub log_gc: LogGcConfig,
}

pub(crate) fn log_error(e: raft_log::Error) -> Error {
    match e {
        raft_log::Error::Engine(e) => Error::Engine(e),
        raft_log::Error::Corrupt { msg, .. } => Error::Corrupt(format!("PD raft log: {msg}")),
    }
}

/// What a proposer waits on.
type Reply = oneshot::Sender<Result<ApplyResult>>;

/// The Raft thread's state; see the module docs.
pub(crate) struct RaftNode<S: RaftSender> {
    raw: RawNode<RaftLogStorage>,
    cell: Arc<StateCell>,
    status: Arc<NodeStatus>,
    sender: S,
    inbox: std_mpsc::Receiver<RaftMsg>,
    timing: RaftTiming,
    applied: ApplyState,
    /// The group's members as of `applied` (see [`crate::members`]).
    members: MemberList,
    /// The members of `initial_cluster`: the list until the first membership change.
    initial_members: MemberList,
    proposals: ProposalQueue<Reply>,
    /// `(term, time)`: the start of the Ready that made this node leader of `term`, before its
    /// first appends of the term left; the barrier renews the lease from here.
    became_leader_at: Option<(u64, Instant)>,
    /// Whether a leader transfer was in progress at the last check (see [`crate::lease`]).
    transferring: bool,
    /// Base of the ReadIndex contexts (nanoseconds since this instant).
    epoch: Instant,
    /// Ticks since the last log GC check.
    ticks_since_gc: usize,
    /// `(leader term, index)` of the last `CompactLog` this node proposed.
    compact_proposed: (u64, u64),
    gc_checks: u64,
    gc_proposals: u64,
}

impl<S: RaftSender> RaftNode<S> {
    /// A node over the engine of `cell`. `initial_members` is the group of `initial_cluster`
    /// (the list until the first membership change). A member that joined a running group and
    /// has no Raft state yet (see [`crate::membership`]) starts with an empty log and no
    /// configuration, and waits for the leader's snapshot.
    pub fn new(
        cell: Arc<StateCell>,
        status: Arc<NodeStatus>,
        initial_members: MemberList,
        sender: S,
        inbox: std_mpsc::Receiver<RaftMsg>,
        timing: RaftTiming,
    ) -> Result<RaftNode<S>> {
        let engine = cell.engine.clone();
        let loaded = ApplyState::load(&engine, PD_RAFT_GROUP_ID).map_err(log_error)?;
        let members = members::load(&engine)?.unwrap_or_else(|| initial_members.clone());
        let (mut storage, applied) = match loaded {
            Some(applied) => {
                let conf_state = members::conf_state(&members);
                let storage = RaftLogStorage::load(engine.clone(), PD_RAFT_GROUP_ID, conf_state)
                    .map_err(log_error)?;
                (storage, applied)
            }
            None => {
                tracing::info!("no PD Raft state yet: waiting for the leader's snapshot");
                let storage = RaftLogStorage::uninitialized(engine.clone(), PD_RAFT_GROUP_ID);
                (storage, ApplyState::default())
            }
        };
        storage.set_snapshot_source(Box::new(crate::snapshot::PdSnapshotSource {
            engine,
            initial_members: initial_members.clone(),
        }));
        let initialized = loaded.is_some();
        let alone = members.members.len() == 1 && members.members[0].id == status.member_id();
        let config = raft::Config {
            id: status.member_id(),
            election_tick: timing.election_ticks,
            heartbeat_tick: timing.heartbeat_ticks,
            applied: applied.applied_index,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            read_only_option: raft::ReadOnlyOption::Safe,
            ..Default::default()
        };
        let logger = slog::Logger::root(
            tracing_slog::TracingSlogDrain,
            slog::o!("pd_member_id" => status.member_id()),
        );
        let mut raw = RawNode::new(&config, storage, &logger)
            .map_err(|e| Error::Internal(format!("raft init: {e}")))?;
        if initialized && alone {
            // A single-node group elects itself at once instead of after an election timeout.
            raw.campaign()
                .map_err(|e| Error::Internal(format!("raft campaign: {e}")))?;
        }
        let node = RaftNode {
            raw,
            cell,
            status,
            sender,
            inbox,
            timing,
            applied,
            members,
            initial_members,
            proposals: ProposalQueue::default(),
            became_leader_at: None,
            transferring: false,
            epoch: Instant::now(),
            ticks_since_gc: 0,
            compact_proposed: (0, 0),
            gc_checks: 0,
            gc_proposals: 0,
        };
        node.publish_log_state();
        Ok(node)
    }

    /// Runs the loop until shutdown or a storage failure.
    pub fn run(mut self) {
        let member_id = self.status.member_id();
        let _span = tracing::info_span!("pd_raft", member_id).entered();
        if let Err(e) = self.run_loop() {
            tracing::error!(error = %e, "PD raft node stopped on a storage failure");
        }
        if self.status.is_removed() {
            // Not a member: never name itself (or anyone) leader to clients any more.
            self.status.set_leadership(Leadership {
                term: self.raw.raft.term,
                leader_id: 0,
                ready: false,
            });
        }
        self.status.set_stopped();
        for p in self.proposals.drain() {
            let _ = p.payload.send(Err(Error::ShuttingDown));
        }
        // Release the engine held by the log storage before the state cell, so that the
        // cell's `closed` signal (fired when the last cell reference drops) means "engine closed".
        let RaftNode { raw, cell, .. } = self;
        drop(raw);
        drop(cell);
        tracing::debug!("PD raft node stopped");
    }

    fn run_loop(&mut self) -> Result<()> {
        let mut next_tick = Instant::now() + self.timing.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(wait) {
                Ok(msg) => {
                    if !self.on_msg(msg) {
                        return Ok(());
                    }
                    for _ in 0..MAX_INBOX_BATCH {
                        match self.inbox.try_recv() {
                            Ok(msg) => {
                                if !self.on_msg(msg) {
                                    return Ok(());
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
            let now = Instant::now();
            if now >= next_tick {
                self.raw.tick();
                self.renew_lease_request(now);
                self.maybe_promote_learner();
                self.ticks_since_gc += 1;
                if self.ticks_since_gc >= self.timing.log_gc.ticks {
                    self.ticks_since_gc = 0;
                    self.maybe_compact_log();
                }
                next_tick = (next_tick + self.timing.tick).max(now);
            }
            while self.raw.has_ready() {
                self.on_ready()?;
            }
            if self.status.is_removed() {
                tracing::warn!("this PD member was removed from the group; its Raft node stops");
                return Ok(());
            }
            self.check_transfer();
        }
    }

    /// Suspends the lease while a leader transfer runs and for an election timeout after one
    /// aborts (see [`crate::lease`]). PD never starts one; this guards against raft-rs doing so.
    fn check_transfer(&mut self) {
        let is_leader = self.raw.raft.state == StateRole::Leader;
        let transferring = is_leader && self.raw.raft.lead_transferee.is_some();
        if transferring == self.transferring {
            return;
        }
        self.transferring = transferring;
        if transferring {
            tracing::info!(
                term = self.raw.raft.term,
                "PD leader transfer started; lease off"
            );
            self.status.update_lease(Lease::begin_transfer);
        } else if is_leader {
            let election_timeout = self.timing.tick * self.timing.election_ticks as u32;
            tracing::info!(
                term = self.raw.raft.term,
                "PD leader transfer aborted; lease off for an election timeout"
            );
            self.status
                .update_lease(|lease| lease.abort_transfer(Instant::now(), election_timeout));
        }
    }

    /// Handles one inbox message; `false` means stop.
    fn on_msg(&mut self, msg: RaftMsg) -> bool {
        match msg {
            RaftMsg::Propose { data, reply } => self.on_propose(data, reply),
            RaftMsg::ChangeMembers { request, reply } => self.on_change_members(request, reply),
            RaftMsg::Step(m) => {
                if m.to != self.status.member_id() {
                    return true;
                }
                if matches!(
                    m.get_msg_type(),
                    MessageType::MsgTransferLeader | MessageType::MsgTimeoutNow
                ) {
                    // PD never transfers leadership (see the module docs).
                    tracing::debug!(from = m.from, msg_type = ?m.get_msg_type(), "leader transfer message dropped");
                    return true;
                }
                // The transport checked the sender against the batch's (`msg.from`).
                let log = raft_group::validate::LogView {
                    id: self.status.member_id(),
                    term: self.raw.raft.term,
                    is_leader: self.raw.raft.state == StateRole::Leader,
                    last_index: self.raw.raft.raft_log.last_index(),
                };
                if let Err(why) = raft_group::validate::check(&m, 0, &log) {
                    tracing::warn!(from = m.from, msg_type = ?m.get_msg_type(), %why, "raft message dropped");
                    return true;
                }
                if let Err(e) = self.raw.step(*m) {
                    tracing::debug!(error = %e, "raft message rejected");
                }
            }
            RaftMsg::Shutdown => return false,
        }
        true
    }

    fn not_leader(&self) -> Error {
        self.status.not_leader()
    }

    fn on_propose(&mut self, data: Vec<u8>, reply: oneshot::Sender<Result<ApplyResult>>) {
        let leadership = self.status.leadership();
        if self.raw.raft.state != StateRole::Leader || !leadership.ready {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let before = self.raw.raft.raft_log.last_index();
        match self.raw.propose(Vec::new(), data) {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                if index == before {
                    let _ = reply.send(Err(self.not_leader()));
                    return;
                }
                self.proposals.push(Proposal {
                    index,
                    term: self.raw.raft.term,
                    proposed_at: Instant::now(),
                    payload: reply,
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "proposal dropped");
                let _ = reply.send(Err(self.not_leader()));
            }
        }
    }

    /// On a tick of a ready leader: ask a quorum to confirm leadership, for the lease.
    fn renew_lease_request(&mut self, now: Instant) {
        if self.raw.raft.state != StateRole::Leader || !self.status.leadership().ready {
            return;
        }
        let issued = u64::try_from(now.duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let mut ctx = Vec::with_capacity(16);
        ctx.extend_from_slice(&issued.to_be_bytes());
        ctx.extend_from_slice(&self.raw.raft.term.to_be_bytes());
        self.raw.read_index(ctx);
    }

    /// On a GC tick of a ready leader: propose compacting the log up to what every voter has
    /// and this node has applied, if that is worth it. See [`crate::log_gc`].
    fn maybe_compact_log(&mut self) {
        let term = self.raw.raft.term;
        if self.raw.raft.state != StateRole::Leader || !self.status.leadership().ready {
            return;
        }
        self.gc_checks += 1;
        let already = match self.compact_proposed {
            (t, index) if t == term => index,
            _ => 0,
        };
        let matched = self.raw.raft.prs().iter().map(|(_, pr)| pr.matched);
        let Some(index) = log_gc::compact_target(
            matched,
            self.applied.applied_index,
            self.applied.truncated_index,
            self.timing.log_gc,
            already,
        ) else {
            self.publish_log_state();
            return;
        };
        let entry_term = match self.raw.store().term(index) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(index, error = %e, "no term for the log GC index");
                return;
            }
        };
        let data = PdCommand::CompactLog(CompactLog {
            index,
            term: entry_term,
        })
        .to_bytes();
        let before = self.raw.raft.raft_log.last_index();
        match self.raw.propose(Vec::new(), data) {
            Ok(()) if self.raw.raft.raft_log.last_index() > before => {
                tracing::debug!(index, term = entry_term, "proposed PD raft log GC");
                self.compact_proposed = (term, index);
                self.gc_proposals += 1;
            }
            Ok(()) => {}
            Err(e) => tracing::debug!(error = %e, "log GC proposal dropped"),
        }
        self.publish_log_state();
    }

    fn publish_log_state(&self) {
        let store = self.raw.store();
        self.status.set_raft_log_state(RaftLogState {
            first_index: store.truncated_index() + 1,
            last_index: store.last_index_value(),
            applied_index: self.applied.applied_index,
            gc_checks: self.gc_checks,
            gc_proposals: self.gc_proposals,
        });
    }

    fn send_all(&self, msgs: Vec<Message>) {
        for m in msgs {
            self.sender.send(m);
        }
    }

    fn on_ready(&mut self) -> Result<()> {
        // Before anything of this Ready is sent (see `crate::lease`).
        let started = Instant::now();
        let Some((taken, pending)) = raft_group::ready::take(&mut self.raw) else {
            return Ok(());
        };
        if taken
            .soft_state
            .as_ref()
            .is_some_and(|ss| ss.raft_state == StateRole::Leader)
        {
            self.became_leader_at = Some((self.raw.raft.term, started));
        }
        self.send_all(taken.messages);
        let mut wb = WriteBatch::new();
        let restored = match &taken.snapshot {
            Some(snap) => Some(self.stage_snapshot(snap, &mut wb)?),
            None => None,
        };
        raft_group::ready::stage_log(&mut self.raw, &pending, &mut wb);
        if !wb.is_empty() {
            self.cell.engine.write(wb, true)?;
        }
        if let Some(meta) = &restored {
            self.load_snapshot(meta)?;
        }
        let mut wb = WriteBatch::new();
        let snapshot_index = restored.as_ref().map(|meta| meta.index);
        let advanced = raft_group::ready::advance(&mut self.raw, pending, snapshot_index, &mut wb);
        // Role and term after this Ready (soft state changes are visible on the raft struct).
        self.publish_role();
        for rs in taken.read_states {
            self.on_read_state(&rs.request_ctx);
        }
        if !wb.is_empty() {
            self.cell.engine.write(wb, false)?;
        }
        self.send_all(advanced.messages);
        self.apply(taken.committed)?;
        self.apply(advanced.committed)?;
        self.publish_log_state();
        Ok(())
    }

    /// Stages the replacement of the state by a leader's snapshot into `wb` (with the Ready's
    /// log, one synced batch): the snapshot's records, the log reset and, for a member that
    /// joined, the end of its `joined` mark (see `crate::membership`). Returns its metadata.
    fn stage_snapshot(
        &mut self,
        snap: &raft::eraftpb::Snapshot,
        wb: &mut WriteBatch,
    ) -> Result<raft::eraftpb::SnapshotMetadata> {
        let meta = snap.get_metadata().clone();
        crate::snapshot::stage(&snap.data, wb)?;
        self.raw.mut_store().apply_snapshot(&meta, wb);
        crate::membership::MemberRecord::stage_joined_done(&self.cell.engine, wb)?;
        Ok(meta)
    }

    /// Once the snapshot's batch is written: loads the state (and the members) again from it.
    fn load_snapshot(&mut self, meta: &raft::eraftpb::SnapshotMetadata) -> Result<()> {
        self.applied = ApplyState {
            applied_index: meta.index,
            applied_term: meta.term,
            truncated_index: meta.index,
            truncated_term: meta.term,
        };
        let state = PdState::load(&self.cell.engine)?;
        let cluster_id = state.cluster_id();
        *self.cell.state.write() = state;
        self.status.set_cluster_id(cluster_id);
        let list =
            members::load(&self.cell.engine)?.unwrap_or_else(|| self.initial_members.clone());
        self.set_members(list);
        tracing::info!(
            index = meta.index,
            term = meta.term,
            "PD state restored from the leader's snapshot"
        );
        Ok(())
    }

    fn publish_role(&mut self) {
        let raft = &self.raw.raft;
        let is_leader = raft.state == StateRole::Leader;
        let old = self.status.leadership();
        let leadership = Leadership {
            term: raft.term,
            leader_id: raft.leader_id,
            ready: is_leader && old.ready && old.term == raft.term,
        };
        if leadership == old {
            return;
        }
        if is_leader && !(old.leader_id == self.status.member_id() && old.term == raft.term) {
            tracing::info!(term = raft.term, "became PD leader");
        } else if !is_leader && old.leader_id == self.status.member_id() {
            tracing::info!(
                term = raft.term,
                leader_id = raft.leader_id,
                "no longer PD leader"
            );
        } else if leadership.leader_id != old.leader_id && leadership.leader_id != 0 {
            tracing::info!(
                term = raft.term,
                leader_id = raft.leader_id,
                "PD leader changed"
            );
        }
        self.status.set_leadership(leadership);
        if !is_leader {
            let status = &self.status;
            for p in self.proposals.drain() {
                let _ = p.payload.send(Err(status.not_leader()));
            }
        }
    }

    fn on_read_state(&self, ctx: &[u8]) {
        let (Some(issued), Some(term)) = (
            ctx.get(0..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes),
            ctx.get(8..16)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes),
        ) else {
            return;
        };
        if self.raw.raft.state != StateRole::Leader || term != self.raw.raft.term {
            return;
        }
        let issued_at = self.epoch + Duration::from_nanos(issued);
        self.status.renew_lease(term, issued_at, self.timing.lease);
    }
}

/// Whether a message type is internal to raft-rs and must never come over the network.
pub(crate) fn is_local(msg_type: MessageType) -> bool {
    raft::raw_node::is_local_msg(msg_type)
}
