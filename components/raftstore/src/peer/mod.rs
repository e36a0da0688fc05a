//! One region replica: its Raft state machine and everything the leader does for clients.
//!
//! Message handling is in `on_<event>` methods; [`PeerFsm`] only dispatches. The Ready cycle is
//! split in two around the store's group commit (see [`crate::store`]):
//! [`Peer::collect_ready`] sends what may leave before persistence and stages log writes into
//! the shared batch; after the batch is synced, [`Peer::post_persist`] sends the messages that
//! needed persistence, advances raft-rs and hands committed entries to the apply workers.
//!
//! Reads (lease and ReadIndex, and what a new leader does with them) are in [`read`].
//!
//! Raft log GC: every few ticks the leader proposes compacting the log up to the lowest index
//! that **every** replica has (and it has applied), since without snapshots a replica that
//! falls behind the first index could never catch up.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam::channel::Receiver;
use engine::Engine;
use prost::Message as _;
use proto::metapb;
use proto::raft_serverpb::RaftMessage;
use protobuf::Message as _;
use raft::eraftpb::{self, Entry, MessageType};
use raft::{RawNode, Ready, StateRole, Storage as _};
use raft_log::{ApplyState, RaftLogStorage};
use tracing::{debug, info, warn};

use crate::apply::{ApplyMsg, ApplyRes, ApplyRouter, ApplyTask, WriteCallback};
use crate::cmd::{AdminCmd, AdminKind, RaftCmd, SplitIds, WriteOp};
use crate::store::{PollContext, ReadGrant, RequestHeader};
use crate::util::{conf_state_of, epoch_version, find_peer, find_peer_on_store, key_in_range};
use crate::{Config, Error, Result};

mod read;

use read::PendingRead;

/// The context of a split's log entry.
const SPLIT_ENTRY_CONTEXT: &[u8] = b"split";

/// Answers a read: either the grant to read the region now, or why not.
pub type ReadCallback = Box<dyn FnOnce(Result<ReadGrant>) + Send>;

/// A snapshot of a peer's state, for status queries and PD heartbeats.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    pub region: metapb::Region,
    pub peer_id: u64,
    pub leader: Option<metapb::Peer>,
    pub term: u64,
    pub is_leader: bool,
    pub commit_index: u64,
    pub applied_index: u64,
    pub first_index: u64,
    pub last_index: u64,
    /// Reads this peer granted under its lease.
    pub lease_reads: u64,
    /// ReadIndex rounds this peer started.
    pub read_index_rounds: u64,
    /// On a leader: the other peers it heard from recently (raft-rs's `recent_active`).
    pub active_peers: Vec<u64>,
    /// Log index of the newest split this peer saw committed (0: none).
    pub last_committed_split: u64,
    /// Reads waiting for leadership to be confirmed or for apply to catch up.
    pub reads_waiting: usize,
    /// A leader transfer is under way.
    pub transferring: bool,
    /// The last consistency hash this replica computed: `(index, hash)`.
    pub hash: Option<(u64, u32)>,
    /// The outcome of the last `VerifyHash` this replica applied: `(index, verdict)`.
    pub last_verified: Option<(u64, crate::consistency::Verdict)>,
}

/// Messages to a peer.
pub enum PeerMsg {
    /// A Raft message from another replica.
    Raft(Box<RaftMessage>),
    /// A client write.
    Propose {
        header: RequestHeader,
        ops: Vec<WriteOp>,
        cb: WriteCallback,
    },
    /// A client read.
    Read {
        header: RequestHeader,
        cb: ReadCallback,
    },
    /// Hand leadership to `to` (a scheduling decision made under `epoch`).
    TransferLeader {
        to: metapb::Peer,
        epoch: Option<metapb::RegionEpoch>,
    },
    /// Split the region at `split_keys`, with new region and peer ids from PD.
    Split {
        header: RequestHeader,
        split_keys: Vec<Bytes>,
        ids: Vec<SplitIds>,
        cb: WriteCallback,
    },
    /// Start a consistency check (leader only); answered once this replica hashed the region.
    CheckConsistency { cb: WriteCallback },
    /// Drives Raft's clock.
    Tick,
    /// Apply progress.
    ApplyRes(ApplyRes),
    /// Asks for a status snapshot.
    Query(Box<dyn FnOnce(PeerStatus) + Send>),
    /// Only makes the peer run a round (it still has a Ready to handle).
    Wake,
}

/// The batch-system wrapper of a [`Peer`].
pub struct PeerFsm {
    pub peer: Peer,
    receiver: Receiver<PeerMsg>,
    stopped: bool,
}

impl batch_system::Fsm for PeerFsm {
    type Message = PeerMsg;

    fn try_recv(&mut self) -> Option<PeerMsg> {
        self.receiver.try_recv().ok()
    }

    fn has_pending(&self) -> bool {
        !self.receiver.is_empty()
    }

    fn is_stopped(&self) -> bool {
        self.stopped
    }
}

impl PeerFsm {
    pub fn new(peer: Peer, receiver: Receiver<PeerMsg>) -> PeerFsm {
        PeerFsm {
            peer,
            receiver,
            stopped: false,
        }
    }

    /// Handles the queued messages (at most `messages_per_tick`) and collects the Ready.
    pub fn handle(&mut self, ctx: &mut PollContext<impl crate::Transport>) {
        let mut budget = ctx.cfg.messages_per_tick;
        while budget > 0 {
            let Some(msg) = self.receiver.try_recv().ok() else {
                break;
            };
            budget -= 1;
            match msg {
                PeerMsg::Raft(m) => self.peer.on_raft_message(*m),
                PeerMsg::Propose { header, ops, cb } => self.peer.on_propose(ctx, header, ops, cb),
                PeerMsg::Read { header, cb } => self.peer.on_read(header, cb),
                PeerMsg::Split {
                    header,
                    split_keys,
                    ids,
                    cb,
                } => self.peer.on_split(ctx, header, split_keys, ids, cb),
                PeerMsg::TransferLeader { to, epoch } => self.peer.on_transfer_leader(to, epoch),
                PeerMsg::CheckConsistency { cb } => self.peer.on_check_consistency(ctx, cb),
                PeerMsg::Tick => self.peer.on_tick(ctx),
                PeerMsg::ApplyRes(res) => self.peer.on_apply_res(ctx, res),
                PeerMsg::Query(cb) => cb(self.peer.status()),
                PeerMsg::Wake => {}
            }
        }
        self.peer.issue_read_index();
        self.peer.collect_ready(ctx);
    }
}

struct Proposal {
    index: u64,
    term: u64,
    proposed_at: Instant,
    cb: WriteCallback,
}

/// The index of the newest split among committed `entries`, if any.
fn newest_split(entries: &[Entry]) -> Option<u64> {
    entries
        .iter()
        .filter(|e| e.context[..] == SPLIT_ENTRY_CONTEXT[..])
        .map(|e| e.index)
        .max()
}

/// One region replica.
pub struct Peer {
    store_id: u64,
    meta: metapb::Peer,
    region: metapb::Region,
    raw: RawNode<RaftLogStorage>,
    cfg: Arc<Config>,
    apply: ApplyRouter,
    proposals: VecDeque<Proposal>,
    /// Reads that arrived this round and still need a ReadIndex.
    reads_to_issue: Vec<(RequestHeader, ReadCallback)>,
    pending_reads: VecDeque<PendingRead>,
    next_read_id: u64,
    lease_expire: Option<Instant>,
    /// See [`Peer::observe_transfer`].
    lease_suspended_until: Option<Instant>,
    /// A leader transfer was under way when last looked at.
    transfer_seen: bool,
    became_leader_at: Instant,
    applied: ApplyState,
    /// The Ready staged in this round, advanced after the group commit.
    ready: Option<Ready>,
    /// Committed entries waiting to be sent to the apply worker.
    to_apply: Vec<Entry>,
    ticks_since_gc: usize,
    compact_proposed_to: u64,
    /// Index of the newest split entry known committed; no lease reads until it is applied.
    last_committed_split: u64,
    /// Reads granted under the lease, and ReadIndex rounds started (for tests and metrics).
    lease_reads: u64,
    read_index_rounds: u64,
    hash: Option<(u64, u32)>,
    last_verified: Option<(u64, crate::consistency::Verdict)>,
}

impl Peer {
    /// Builds the replica of `region` on `store_id` from its persisted state and registers it
    /// with the apply workers.
    pub fn create(
        store_id: u64,
        region: metapb::Region,
        engine: Engine,
        cfg: Arc<Config>,
        apply: ApplyRouter,
        logger: &slog::Logger,
    ) -> Result<Peer> {
        let meta = find_peer_on_store(&region, store_id)
            .cloned()
            .ok_or(Error::RegionNotFound(region.id))?;
        let applied =
            ApplyState::load(&engine, region.id)?.ok_or(Error::RegionNotFound(region.id))?;
        let storage = RaftLogStorage::load(engine, region.id, conf_state_of(&region))?;
        let raft_cfg = raft::Config {
            id: meta.id,
            election_tick: cfg.raft_election_ticks,
            heartbeat_tick: cfg.raft_heartbeat_ticks,
            applied: applied.applied_index,
            max_size_per_msg: cfg.raft_max_size_per_msg,
            max_inflight_msgs: cfg.raft_max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            read_only_option: raft::ReadOnlyOption::Safe,
            ..Default::default()
        };
        let logger = logger.new(slog::o!("region_id" => region.id, "peer_id" => meta.id));
        let raw = RawNode::new(&raft_cfg, storage, &logger)
            .map_err(|e| Error::Engine(format!("raft init of region {}: {e}", region.id)))?;
        let now = cfg.clock.now();
        apply.send(
            region.id,
            ApplyMsg::Register {
                region: region.clone(),
                state: applied,
            },
        );
        Ok(Peer {
            store_id,
            meta,
            region,
            raw,
            cfg,
            apply,
            proposals: VecDeque::new(),
            reads_to_issue: Vec::new(),
            pending_reads: VecDeque::new(),
            next_read_id: 1,
            lease_expire: None,
            lease_suspended_until: None,
            transfer_seen: false,
            became_leader_at: now,
            applied,
            ready: None,
            to_apply: Vec::new(),
            ticks_since_gc: 0,
            compact_proposed_to: 0,
            last_committed_split: 0,
            lease_reads: 0,
            read_index_rounds: 0,
            hash: None,
            last_verified: None,
        })
    }

    pub fn region_id(&self) -> u64 {
        self.region.id
    }

    /// Starts an election now (a replica created by a split on the parent leader's store).
    pub fn campaign(&mut self) {
        if let Err(e) = self.raw.campaign() {
            debug!(region_id = self.region.id, %e, "campaign failed");
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    fn leader(&self) -> Option<metapb::Peer> {
        find_peer(&self.region, self.raw.raft.leader_id).cloned()
    }

    pub fn status(&self) -> PeerStatus {
        let store = self.raw.store();
        PeerStatus {
            region: self.region.clone(),
            peer_id: self.meta.id,
            leader: self.leader(),
            term: self.raw.raft.term,
            is_leader: self.is_leader(),
            commit_index: self.raw.raft.raft_log.committed,
            applied_index: self.applied.applied_index,
            first_index: store.first_index().unwrap_or_default(),
            last_index: store.last_index_value(),
            lease_reads: self.lease_reads,
            read_index_rounds: self.read_index_rounds,
            last_committed_split: self.last_committed_split,
            reads_waiting: self.reads_waiting(),
            transferring: self.is_leader() && self.raw.raft.lead_transferee.is_some(),
            hash: self.hash,
            last_verified: self.last_verified,
            active_peers: if self.is_leader() {
                self.raw
                    .raft
                    .prs()
                    .iter()
                    .filter(|(id, pr)| **id != self.meta.id && pr.recent_active)
                    .map(|(id, _)| *id)
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    // ---- incoming events ----

    fn on_raft_message(&mut self, msg: RaftMessage) {
        if msg.to_peer.as_ref().map(|p| p.id) != Some(self.meta.id) {
            debug!(
                region_id = self.region.id,
                "raft message for another peer id, dropped"
            );
            return;
        }
        let m = match eraftpb::Message::parse_from_bytes(&msg.message) {
            Ok(m) => m,
            Err(e) => {
                warn!(region_id = self.region.id, %e, "undecodable raft message");
                return;
            }
        };
        if find_peer(&self.region, m.from).is_none() {
            debug!(
                region_id = self.region.id,
                from = m.from,
                "raft message from unknown peer"
            );
            return;
        }
        if let Err(e) = self.raw.step(m) {
            debug!(region_id = self.region.id, %e, "step failed");
        }
    }

    /// The checks every client request passes, in TiKV's order: store, leader, epoch, keys.
    fn check_request(&self, header: &RequestHeader) -> Result<()> {
        if let Some(p) = &header.peer {
            if p.store_id != 0 && p.store_id != self.store_id {
                return Err(Error::StoreNotMatch {
                    requested: p.store_id,
                    actual: self.store_id,
                });
            }
        }
        if !self.is_leader() {
            return Err(Error::NotLeader {
                region_id: self.region.id,
                leader: self.leader(),
            });
        }
        let current = epoch_version(&self.region);
        match &header.epoch {
            Some(e) if e.version == current => {}
            other => {
                return Err(Error::EpochNotMatch {
                    msg: format!(
                        "request epoch version {:?}, current {current}",
                        other.as_ref().map(|e| e.version)
                    ),
                    current_regions: vec![self.region.clone()],
                })
            }
        }
        for key in &header.keys {
            if !key_in_range(key, &self.region.start_key, &self.region.end_key) {
                return Err(Error::KeyNotInRegion {
                    key: key.to_vec(),
                    region_id: self.region.id,
                    start_key: self.region.start_key.to_vec(),
                    end_key: self.region.end_key.to_vec(),
                });
            }
        }
        Ok(())
    }

    fn on_propose(
        &mut self,
        ctx: &PollContext<impl crate::Transport>,
        header: RequestHeader,
        ops: Vec<WriteOp>,
        cb: WriteCallback,
    ) {
        if let Err(e) = self.check_request(&header) {
            cb(Err(e));
            return;
        }
        let cmd = RaftCmd {
            region_id: self.region.id,
            epoch: self.region.region_epoch,
            ops,
            admin: None,
        };
        self.propose(ctx, cmd, Some(cb));
    }

    fn on_split(
        &mut self,
        ctx: &PollContext<impl crate::Transport>,
        header: RequestHeader,
        split_keys: Vec<Bytes>,
        ids: Vec<SplitIds>,
        cb: WriteCallback,
    ) {
        if let Err(e) = self.check_request(&header) {
            cb(Err(e));
            return;
        }
        let admin = AdminCmd {
            kind: AdminKind::BatchSplit as i32,
            split_keys,
            new_regions: ids,
            ..Default::default()
        };
        // Refuse at once what every replica would refuse at apply.
        if let Err(e) = crate::apply::split_regions(&self.region, &admin) {
            cb(Err(e));
            return;
        }
        let cmd = RaftCmd {
            region_id: self.region.id,
            epoch: self.region.region_epoch,
            ops: vec![],
            admin: Some(admin),
        };
        self.propose(ctx, cmd, Some(cb));
    }

    fn propose(
        &mut self,
        ctx: &PollContext<impl crate::Transport>,
        cmd: RaftCmd,
        cb: Option<WriteCallback>,
    ) {
        if cb.is_some() && self.proposals.len() >= ctx.cfg.max_pending_proposals {
            if let Some(cb) = cb {
                cb(Err(Error::ServerIsBusy(format!(
                    "region {} has {} proposals waiting",
                    self.region.id,
                    self.proposals.len()
                ))));
            }
            return;
        }
        let data = cmd.encode_to_vec();
        if data.len() > ctx.cfg.raft_entry_max_size {
            if let Some(cb) = cb {
                cb(Err(Error::RaftEntryTooLarge {
                    region_id: self.region.id,
                    size: data.len() as u64,
                }));
            }
            return;
        }
        let kind = match cmd.admin.as_ref().map(|a| a.admin_kind()) {
            None => "write",
            Some(Some(AdminKind::CompactLog)) => "compact_log",
            Some(Some(AdminKind::BatchSplit)) => "split",
            Some(Some(AdminKind::ComputeHash | AdminKind::VerifyHash)) => "consistency",
            Some(None) => "unknown",
        };
        let before = self.raw.raft.raft_log.last_index();
        // Splits are marked in the entry's context, so that the leader can tell them apart
        // when they commit without decoding every entry.
        let context = if kind == "split" {
            SPLIT_ENTRY_CONTEXT.to_vec()
        } else {
            vec![]
        };
        if let Err(e) = self.raw.propose(context, data) {
            debug!(region_id = self.region.id, %e, "proposal dropped");
            if let Some(cb) = cb {
                cb(Err(Error::NotLeader {
                    region_id: self.region.id,
                    leader: self.leader(),
                }));
            }
            return;
        }
        let index = self.raw.raft.raft_log.last_index();
        match kind {
            "split" => crate::metrics::SPLIT_PROPOSALS.inc(),
            "compact_log" => crate::metrics::COMPACT_LOG_PROPOSALS.inc(),
            "consistency" | "unknown" => crate::metrics::PROPOSALS.with_label_values(&[kind]).inc(),
            _ => crate::metrics::WRITE_PROPOSALS.inc(),
        }
        if index != before + 1 {
            if let Some(cb) = cb {
                cb(Err(Error::StaleCommand));
            }
            return;
        }
        if let Some(cb) = cb {
            self.proposals.push_back(Proposal {
                index,
                term: self.raw.raft.term,
                proposed_at: self.cfg.clock.now(),
                cb,
            });
        }
    }

    fn on_transfer_leader(&mut self, to: metapb::Peer, epoch: Option<metapb::RegionEpoch>) {
        if !self.is_leader() || to.id == self.meta.id || find_peer(&self.region, to.id).is_none() {
            return;
        }
        if epoch != self.region.region_epoch {
            debug!(
                region_id = self.region.id,
                "transfer leader under a stale epoch ignored"
            );
            return;
        }
        info!(
            region_id = self.region.id,
            to = to.id,
            to_store = to.store_id,
            "transferring leadership"
        );
        self.lease_expire = None;
        self.raw.transfer_leader(to.id);
    }

    fn on_check_consistency(
        &mut self,
        ctx: &PollContext<impl crate::Transport>,
        cb: WriteCallback,
    ) {
        if !self.is_leader() {
            cb(Err(Error::NotLeader {
                region_id: self.region.id,
                leader: self.leader(),
            }));
            return;
        }
        let cmd = RaftCmd {
            region_id: self.region.id,
            epoch: self.region.region_epoch,
            ops: vec![],
            admin: Some(AdminCmd {
                kind: AdminKind::ComputeHash as i32,
                ..Default::default()
            }),
        };
        self.propose(ctx, cmd, Some(cb));
    }

    /// A consistency command was applied here. After `ComputeHash`, a leader sends its hash
    /// to every replica to compare (see [`crate::consistency`]).
    fn on_consistency_event(
        &mut self,
        ctx: &PollContext<impl crate::Transport>,
        event: crate::consistency::ConsistencyEvent,
    ) {
        use crate::consistency::ConsistencyEvent;
        match event {
            ConsistencyEvent::Computed { index, hash } => {
                self.hash = Some((index, hash));
                if self.is_leader() {
                    let cmd = RaftCmd {
                        region_id: self.region.id,
                        epoch: self.region.region_epoch,
                        ops: vec![],
                        admin: Some(AdminCmd {
                            kind: AdminKind::VerifyHash as i32,
                            hash_index: index,
                            hash,
                            ..Default::default()
                        }),
                    };
                    self.propose(ctx, cmd, None);
                }
            }
            ConsistencyEvent::Verified { index, verdict } => {
                self.last_verified = Some((index, verdict));
            }
        }
    }

    fn on_tick(&mut self, ctx: &mut PollContext<impl crate::Transport>) {
        self.raw.tick();
        self.observe_transfer();
        self.ticks_since_gc += 1;
        if self.ticks_since_gc >= ctx.cfg.raft_log_gc_ticks {
            self.ticks_since_gc = 0;
            self.maybe_compact_log(ctx);
        }
        self.expire_reads(self.cfg.clock.now(), ctx.cfg.read_index_timeout);
    }

    fn maybe_compact_log(&mut self, ctx: &PollContext<impl crate::Transport>) {
        if !self.is_leader() {
            return;
        }
        let min_match = self
            .raw
            .raft
            .prs()
            .iter()
            .map(|(_, pr)| pr.matched)
            .min()
            .unwrap_or(0);
        let compact_to = min_match.min(self.applied.applied_index);
        let first = self.raw.store().truncated_index();
        if compact_to <= first + ctx.cfg.raft_log_gc_threshold
            || compact_to <= self.compact_proposed_to
        {
            return;
        }
        let Ok(term) = self.raw.store().term(compact_to) else {
            return;
        };
        debug!(
            region_id = self.region.id,
            compact_to, "propose raft log gc"
        );
        self.compact_proposed_to = compact_to;
        let cmd = RaftCmd {
            region_id: self.region.id,
            epoch: self.region.region_epoch,
            ops: vec![],
            admin: Some(AdminCmd {
                compact_index: compact_to,
                compact_term: term,
                ..Default::default()
            }),
        };
        self.propose(ctx, cmd, None);
    }

    fn on_apply_res(&mut self, ctx: &mut PollContext<impl crate::Transport>, res: ApplyRes) {
        let state = res.state;
        if state.applied_index <= self.applied.applied_index
            && state.truncated_index <= self.applied.truncated_index
        {
            return;
        }
        let store = self.raw.mut_store();
        store.set_applied(state.applied_index);
        if state.truncated_index > store.truncated_index() {
            store.compact_to(state.truncated_index, state.truncated_term, &mut ctx.wb);
        }
        self.applied = state;
        self.raw.advance_apply_to(state.applied_index);
        for regions in res.splits {
            self.on_split_applied(ctx, regions);
        }
        for event in res.consistency {
            self.on_consistency_event(ctx, event);
        }
        self.answer_ready_reads();
    }

    /// After a split was applied: shrink to the parent's new range and create this store's
    /// replicas of the new regions. A leader's replicas campaign at once, so that the new
    /// regions get a leader without waiting for an election timeout.
    fn on_split_applied(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
        regions: Vec<metapb::Region>,
    ) {
        let mut regions = regions.into_iter();
        let Some(parent) = regions.next() else {
            return;
        };
        self.region = parent;
        self.notify_region_change();
        let campaign = self.is_leader();
        for region in regions {
            if let Err(e) = ctx.create_peer(region.clone(), campaign) {
                warn!(region_id = region.id, %e, "cannot create the peer of a split region");
            }
        }
    }

    // ---- the Ready cycle ----

    /// Stage 1 of the Ready cycle: runs before the group commit.
    pub fn collect_ready(&mut self, ctx: &mut PollContext<impl crate::Transport>) {
        if self.ready.is_some() || !self.raw.has_ready() {
            return;
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            self.on_role_change(ss.raft_state, ss.leader_id);
        }
        self.observe_transfer();
        for m in rd.take_messages() {
            self.send(ctx, m);
        }
        if !rd.snapshot().is_empty() {
            warn!(
                region_id = self.region.id,
                "raft snapshots are not supported yet; ignored"
            );
        }
        self.to_apply.extend(rd.take_committed_entries());
        if !rd.entries().is_empty() {
            self.raw.mut_store().append(rd.entries(), &mut ctx.wb);
        }
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().set_hard_state(hs.clone(), &mut ctx.wb);
        }
        for rs in rd.take_read_states() {
            let Ok(bytes) = <[u8; 8]>::try_from(&rs.request_ctx[..]) else {
                continue;
            };
            let id = u64::from_be_bytes(bytes);
            if let Some(r) = self.pending_reads.iter_mut().find(|r| r.id == id) {
                r.read_index = Some(rs.index);
                let issued_at = r.issued_at;
                self.renew_lease(issued_at);
            }
        }
        self.ready = Some(rd);
    }

    /// Stage 2 of the Ready cycle: runs after the group commit is on disk.
    pub fn post_persist(&mut self, ctx: &mut PollContext<impl crate::Transport>) {
        if let Some(mut rd) = self.ready.take() {
            for m in rd.take_persisted_messages() {
                self.send(ctx, m);
            }
            let mut light = self.raw.advance_append(rd);
            if let Some(commit) = light.commit_index() {
                self.raw.mut_store().set_commit(commit, &mut ctx.wb);
            }
            for m in light.take_messages() {
                self.send(ctx, m);
            }
            self.to_apply.extend(light.take_committed_entries());
        }
        if !self.to_apply.is_empty() {
            self.dispatch_apply();
        }
        // A new leader's held reads go out as soon as its first entry commits.
        self.issue_read_index();
        self.answer_ready_reads();
        if self.raw.has_ready() {
            ctx.wake(self.region.id);
        }
    }

    fn dispatch_apply(&mut self) {
        let entries = std::mem::take(&mut self.to_apply);
        let mut callbacks = Vec::new();
        let term = self.raw.raft.term;
        let leader = self.is_leader();
        let mut renew_from = None;
        if let Some(index) = newest_split(&entries) {
            self.last_committed_split = self.last_committed_split.max(index);
        }
        for e in &entries {
            while self.proposals.front().is_some_and(|p| p.index < e.index) {
                let p = self.proposals.pop_front().expect("front exists");
                (p.cb)(Err(Error::StaleCommand));
            }
            if self.proposals.front().is_some_and(|p| p.index == e.index) {
                let p = self.proposals.pop_front().expect("front exists");
                if p.term == e.term {
                    if leader && p.term == term {
                        renew_from = Some(p.proposed_at);
                    }
                    callbacks.push((p.index, p.term, p.cb));
                } else {
                    (p.cb)(Err(Error::StaleCommand));
                }
            } else if leader && e.term == term && e.data.is_empty() {
                // The empty entry of our election: a quorum has it, so the lease may start.
                renew_from = Some(self.became_leader_at);
            }
        }
        if let Some(t) = renew_from {
            self.renew_lease(t);
        }
        self.apply.send(
            self.region.id,
            ApplyMsg::Apply(ApplyTask {
                region_id: self.region.id,
                entries,
                callbacks,
            }),
        );
    }

    /// Tells the store's observer that this region's routing information changed.
    fn notify_region_change(&self) {
        if let Some(observer) = &self.cfg.on_region_change {
            (observer.0)(self.region.id);
        }
    }

    fn on_role_change(&mut self, role: StateRole, leader_id: u64) {
        self.notify_region_change();
        if role == StateRole::Leader {
            info!(
                region_id = self.region.id,
                peer_id = self.meta.id,
                term = self.raw.raft.term,
                "became leader"
            );
            self.became_leader_at = self.cfg.clock.now();
            self.lease_expire = None;
            return;
        }
        debug!(
            region_id = self.region.id,
            peer_id = self.meta.id,
            ?role,
            leader_id,
            "not leader"
        );
        self.lease_expire = None;
        let leader = find_peer(&self.region, leader_id).cloned();
        // Reads whose leadership was never confirmed cannot be served here any more.
        let mut keep = VecDeque::new();
        for r in self.pending_reads.drain(..) {
            if r.read_index.is_some() {
                keep.push_back(r);
                continue;
            }
            for (_, cb) in r.callbacks {
                cb(Err(Error::NotLeader {
                    region_id: self.region.id,
                    leader,
                }));
            }
        }
        self.pending_reads = keep;
        for (_, cb) in self.reads_to_issue.drain(..) {
            cb(Err(Error::NotLeader {
                region_id: self.region.id,
                leader,
            }));
        }
    }

    fn send(&self, ctx: &mut PollContext<impl crate::Transport>, m: eraftpb::Message) {
        let Some(to) = find_peer(&self.region, m.to).cloned() else {
            warn!(
                region_id = self.region.id,
                to = m.to,
                "message to unknown peer dropped"
            );
            return;
        };
        if m.get_msg_type() == MessageType::MsgSnapshot {
            return;
        }
        let msg = RaftMessage {
            region_id: self.region.id,
            from_peer: Some(self.meta),
            to_peer: Some(to),
            message: Bytes::from(m.write_to_bytes().expect("encode raft message")),
            region_epoch: self.region.region_epoch,
            is_tombstone: false,
            start_key: self.region.start_key.clone(),
            end_key: self.region.end_key.clone(),
        };
        ctx.transport.send(msg);
    }

    /// Fails every outstanding request; the peer is going away.
    pub fn fail_all(&mut self) {
        for p in self.proposals.drain(..) {
            (p.cb)(Err(Error::Shutdown));
        }
        for r in self.pending_reads.drain(..) {
            for (_, cb) in r.callbacks {
                cb(Err(Error::Shutdown));
            }
        }
        for (_, cb) in self.reads_to_issue.drain(..) {
            cb(Err(Error::Shutdown));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.fail_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_entries_are_found_by_their_context() {
        let entry = |index: u64, context: &[u8]| Entry {
            index,
            context: context.to_vec().into(),
            ..Default::default()
        };
        assert_eq!(newest_split(&[entry(5, b""), entry(6, b"")]), None);
        assert_eq!(
            newest_split(&[
                entry(5, SPLIT_ENTRY_CONTEXT),
                entry(6, b""),
                entry(7, SPLIT_ENTRY_CONTEXT)
            ]),
            Some(7)
        );
    }
}
