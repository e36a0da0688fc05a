//! One region replica: its Raft state machine and everything the leader does for clients.
//!
//! Message handling is in `on_<event>` methods; [`PeerFsm`] only dispatches. The Ready cycle is
//! split in two around the store's group commit (see [`crate::store`]):
//! [`Peer::collect_ready`] sends what may leave before persistence and stages log writes into
//! the shared batch; after the batch is synced, [`Peer::post_persist`] sends the messages that
//! needed persistence, advances raft-rs and hands committed entries to the apply workers.
//!
//! The peer is split by operation, as raftstore-v2 splits it: this module holds the state, the
//! life cycle and the dispatch; [`ready`] the Ready cycle, [`propose`] request checks and
//! proposals, [`read`] reads (lease and ReadIndex, and what a new leader does with them), and
//! [`admin`] consistency checks, log GC and apply results, [`membership`] conf changes, snapshots
//! and the replica's end, [`merge`] region merge (source and target sides).
//!
//! Raft log GC: every few ticks the leader proposes compacting the log up to the lowest index
//! its recently active replicas have (and it has applied); once the log grows past
//! `raft_log_gc_count_limit` entries it compacts to what it applied regardless, and a replica
//! left behind the first index catches up from a snapshot (see [`crate::snap`]).
//!
//! Life cycle: a replica is created at bootstrap, by a split, or by the store when a message
//! arrives for a region it does not host (then *uninitialized*: no range, no data, no
//! persisted state, until a snapshot brings them). It is destroyed when it applies its own
//! removal or learns of it from a newer replica, leaving a tombstone, or, keeping its data,
//! when its target absorbed it in a merge (see [`crate::merge`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam::channel::Receiver;
use engine::Engine;
use proto::metapb;
use proto::raft_serverpb::RaftMessage;
use raft::eraftpb::Entry;
use raft::{RawNode, StateRole, Storage as _};
use raft_group::proposal::{Proposal, ProposalQueue};
use raft_log::{ApplyState, RaftLogStorage};
use tracing::{debug, info};

use crate::apply::{ApplyMsg, ApplyRes, ApplyRouter, WriteCallback};
use crate::cmd::{SplitIds, WriteOp};
use crate::conf_change::conf_state_of;
use crate::store::{PollContext, ReadGrant, RequestHeader};
use crate::util::{epoch_version, find_peer, find_peer_on_store};
use crate::{Config, Error, Result};

mod admin;
mod hibernate;
mod membership;
mod merge;
mod propose;
mod read;
mod ready;

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
    /// Reads granted under this peer's lease, by the peer or by the local reader.
    pub lease_reads: u64,
    /// Of those, the ones the local reader granted on the caller's thread.
    pub local_lease_reads: u64,
    /// The replica hibernates (does not tick).
    pub asleep: bool,
    /// ReadIndex rounds this peer started.
    pub read_index_rounds: u64,
    /// On a leader: the other peers it heard from recently (raft-rs's `recent_active`).
    pub active_peers: Vec<u64>,
    /// On a leader: the peers that lack entries it no longer has (they need a snapshot, or
    /// are waiting for one): TiKV's pending peers, which PD does not promote or count on.
    pub pending_peers: Vec<u64>,
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
    /// The region is the source of a prepared merge (state `Merging`).
    pub merging: bool,
    /// A leader keeps its log from this index on while a replica lacks it (the newest
    /// CommitMerge applied here; 0: none).
    pub merge_log_barrier: u64,
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
    Tick(crate::hibernate::TickToken),
    /// Apply progress.
    ApplyRes(ApplyRes),
    /// Change the region's membership (see [`crate::conf_change`]), if it still has `epoch`.
    ChangePeer {
        epoch: Option<metapb::RegionEpoch>,
        changes: Vec<crate::conf_change::PeerChange>,
        cb: WriteCallback,
    },
    /// Asks for a status snapshot.
    Query(Box<dyn FnOnce(PeerStatus) + Send>),
    /// The transport delivered (or could not deliver) the snapshot sent to peer `to`.
    SnapshotStatus { to: u64, delivered: bool },
    /// Only makes the peer run a round (it still has a Ready to handle).
    Wake,
    /// The store has not heard from store `0` for an election timeout (see
    /// [`crate::hibernate`]).
    StoreUnreachable(u64),
    /// Merge this region into `target` (see [`crate::merge`]); answered once PrepareMerge
    /// applied (or failed).
    PrepareMerge {
        target: metapb::Region,
        cb: WriteCallback,
    },
    /// A merging source replica on this store asks this target replica to commit the merge.
    AskCommitMerge {
        source: metapb::Region,
        state: proto::raft_serverpb::MergeState,
    },
    /// The target replica `target_id` on this store waits for this source replica to apply
    /// up to `commit` and stop.
    CatchUpForMerge { target_id: u64, commit: u64 },
    /// The source replica `source_id` on this store caught up and stopped.
    SourceCaughtUp { source_id: u64 },
    /// The target replica `target_id` on this store absorbed this source replica.
    MergedInto { target_id: u64 },
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
        self.stopped || self.peer.destroyed
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
        while budget > 0 && !self.peer.destroyed {
            let Some(msg) = self.receiver.try_recv().ok() else {
                break;
            };
            budget -= 1;
            match &msg {
                // Hibernation's own messages, ticks and status queries do not wake a region.
                // Apply results are bookkeeping (a follower may sleep before it applied all),
                // and `Wake` only asks for a round.
                PeerMsg::Raft(m) if m.extra_msg.is_none() => self.peer.wake_for(ctx, m),
                PeerMsg::Raft(_)
                | PeerMsg::Tick(_)
                | PeerMsg::Query(_)
                | PeerMsg::ApplyRes(_)
                | PeerMsg::Wake
                | PeerMsg::StoreUnreachable(_) => {}
                _ => self.peer.wake(ctx, true),
            }
            if !matches!(msg, PeerMsg::Propose { .. }) {
                self.peer.propose_batched(ctx);
            }
            match msg {
                PeerMsg::Raft(m) => self.peer.on_raft_message(ctx, *m),
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
                PeerMsg::Tick(token) => {
                    token.handled();
                    self.peer.on_tick(ctx)
                }
                PeerMsg::ApplyRes(res) => self.peer.on_apply_res(ctx, res),
                PeerMsg::ChangePeer { epoch, changes, cb } => {
                    self.peer.on_change_peer(epoch, changes, cb)
                }
                PeerMsg::Query(cb) => cb(self.peer.status()),
                PeerMsg::SnapshotStatus { to, delivered } => {
                    self.peer.on_snapshot_status(to, delivered)
                }
                PeerMsg::Wake => {}
                PeerMsg::StoreUnreachable(store_id) => {
                    self.peer.on_store_unreachable(ctx, store_id)
                }
                PeerMsg::PrepareMerge { target, cb } => self.peer.on_prepare_merge(ctx, target, cb),
                PeerMsg::AskCommitMerge { source, state } => {
                    self.peer.on_ask_commit_merge(ctx, source, state)
                }
                PeerMsg::CatchUpForMerge { target_id, commit } => {
                    self.peer.on_catch_up_for_merge(ctx, target_id, commit)
                }
                PeerMsg::SourceCaughtUp { source_id } => {
                    self.peer.on_source_caught_up(ctx, source_id)
                }
                PeerMsg::MergedInto { target_id } => {
                    let why = format!("merged into region {target_id}");
                    self.peer.destroy_merged(ctx, &why)
                }
            }
        }
        self.peer.propose_batched(ctx);
        if self.peer.destroyed {
            return;
        }
        self.peer.maybe_propose_prepare_merge(ctx);
        self.peer.issue_read_index();
        self.peer.collect_ready(ctx);
        // Before the round's messages leave (the transport sends at the round's end).
        self.peer.publish_lease(ctx);
    }
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
    proposals: ProposalQueue<WriteCallback>,
    /// Client writes of this round not proposed yet.
    batched: propose::BatchedWrites,
    /// Reads that arrived this round and still need a ReadIndex.
    reads_to_issue: Vec<(RequestHeader, ReadCallback)>,
    pending_reads: VecDeque<PendingRead>,
    /// Id of the next ReadIndex round. It starts at a random value so that an answer to a round
    /// of this replica's previous incarnation (before its store restarted) never matches a
    /// round of this one: ids restarting at 1 let a late answer give a new read the read index
    /// of an old one, and a replica read then missed writes acknowledged in between (a
    /// campaign with store kills and replica reads found it).
    next_read_id: u64,
    /// The leader lease (see `raft_group::lease`); transfers suspend it, see
    /// [`Peer::observe_transfer`].
    lease: raft_group::lease::Lease,
    /// A leader transfer was under way when last looked at.
    transfer_seen: bool,
    became_leader_at: Instant,
    applied: ApplyState,
    /// The Ready staged in this round, advanced after the group commit.
    ready: Option<raft_group::ready::Pending>,
    /// Committed entries waiting to be sent to the apply worker.
    to_apply: Vec<Entry>,
    ticks_since_gc: usize,
    compact_proposed_to: u64,
    /// Index of the newest split entry known committed; no lease reads until it is applied.
    last_committed_split: u64,
    /// Reads granted under the lease, and ReadIndex rounds started (for tests and metrics).
    lease_reads: u64,
    read_index_rounds: u64,
    /// Where this peer publishes its lease for local reads (taken on first use).
    read_slot: Option<Arc<crate::local_reader::ReadSlot>>,
    hash: Option<(u64, u32)>,
    last_verified: Option<(u64, crate::consistency::Verdict)>,
    /// Peers met in messages but not (yet) in the region, so replies can reach them.
    peer_cache: std::collections::HashMap<u64, metapb::Peer>,
    /// The highest log index handed to the apply worker.
    dispatched_index: u64,
    /// This region's snapshot in the making (leader side).
    snap_gen: crate::snap::SharedGen,
    /// When a snapshot went to each follower still waiting for it.
    snapshots_sent: std::collections::HashMap<u64, Instant>,
    /// Since when a made snapshot has had nobody waiting for it.
    snap_idle_since: Option<Instant>,
    /// A snapshot was applied in this round: raft-rs learns it is applied after the write.
    applied_snapshot: Option<u64>,
    /// The files of the snapshot staged this round, ingested once the round is on disk.
    snapshot_to_ingest: Option<crate::snap::SnapKey>,
    /// The replica is gone (removed from the region); the poller drops it.
    pub(crate) destroyed: bool,
    /// Ticks since a leader's message last arrived (see [`Peer::check_leader_missing`]).
    ticks_without_leader: usize,
    /// Hibernating: no ticks (see [`crate::hibernate`]).
    asleep: bool,
    /// Consecutive ticks this leader has been idle.
    idle_ticks: usize,
    /// The `(term, last index)` this leader asked its followers to hibernate at.
    sleep_request: Option<(u64, u64)>,
    /// The peers that agreed to hibernate at `sleep_request`.
    sleep_acks: std::collections::HashSet<u64>,
    /// Region merge bookkeeping (see [`merge`]).
    merge: merge::MergeCtx,
}

impl Peer {
    /// Builds the replica of `region` on `store_id` from its persisted state and registers it
    /// with the apply workers.
    pub fn create(
        store_id: u64,
        region: metapb::Region,
        merge_state: Option<proto::raft_serverpb::MergeState>,
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
        let mut peer = Self::build(
            store_id,
            meta,
            region,
            merge_state.clone(),
            storage,
            applied,
            cfg,
            apply,
            logger,
        )?;
        peer.merge.state = merge_state;
        Ok(peer)
    }

    /// A replica of `region_id` made because a message for `meta` arrived before this store
    /// hosted the region: no range, no data and no persisted state until a snapshot arrives.
    pub fn create_uninitialized(
        store_id: u64,
        region_id: u64,
        meta: metapb::Peer,
        engine: Engine,
        cfg: Arc<Config>,
        apply: ApplyRouter,
        logger: &slog::Logger,
    ) -> Result<Peer> {
        let region = metapb::Region {
            id: region_id,
            ..Default::default()
        };
        let storage = RaftLogStorage::uninitialized(engine, region_id);
        Self::build(
            store_id,
            meta,
            region,
            None,
            storage,
            ApplyState::default(),
            cfg,
            apply,
            logger,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        store_id: u64,
        meta: metapb::Peer,
        region: metapb::Region,
        merge_state: Option<proto::raft_serverpb::MergeState>,
        mut storage: RaftLogStorage,
        applied: ApplyState,
        cfg: Arc<Config>,
        apply: ApplyRouter,
        logger: &slog::Logger,
    ) -> Result<Peer> {
        let snap_gen = crate::snap::SharedGen::default();
        storage.set_snapshot_source(Box::new(crate::snap::PeerSnapshotSource {
            region_id: region.id,
            gen: snap_gen.clone(),
            apply: apply.clone(),
        }));
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
        if !region.peers.is_empty() {
            apply.send(
                region.id,
                ApplyMsg::Register {
                    region: region.clone(),
                    state: applied,
                    merge_state,
                },
            );
        }
        Ok(Peer {
            store_id,
            meta,
            region,
            raw,
            cfg,
            apply,
            proposals: ProposalQueue::default(),
            batched: Default::default(),
            reads_to_issue: Vec::new(),
            pending_reads: VecDeque::new(),
            // Random, not 1: see the field.
            next_read_id: rand::random(),
            lease: Default::default(),
            transfer_seen: false,
            became_leader_at: now,
            applied,
            ready: None,
            to_apply: Vec::new(),
            ticks_since_gc: 0,
            compact_proposed_to: 0,
            last_committed_split: 0,
            lease_reads: 0,
            read_slot: None,
            read_index_rounds: 0,
            hash: None,
            last_verified: None,
            peer_cache: Default::default(),
            dispatched_index: applied.applied_index,
            snap_gen,
            snapshots_sent: Default::default(),
            snap_idle_since: None,
            applied_snapshot: None,
            snapshot_to_ingest: None,
            destroyed: false,
            ticks_without_leader: 0,
            asleep: false,
            idle_ticks: 0,
            sleep_request: None,
            sleep_acks: Default::default(),
            merge: Default::default(),
        })
    }

    /// Whether the replica has its region's range and data (not waiting for a first snapshot).
    pub fn is_initialized(&self) -> bool {
        !self.region.peers.is_empty()
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
        self.peer_by_id(self.raw.raft.leader_id)
    }

    /// The answer to a request only a leader serves, naming the leader if known.
    fn not_leader(&self) -> Error {
        Error::NotLeader {
            region_id: self.region.id,
            leader: self.leader(),
        }
    }

    /// A peer of the region, or one met in a message.
    fn peer_by_id(&self, id: u64) -> Option<metapb::Peer> {
        find_peer(&self.region, id)
            .or_else(|| self.peer_cache.get(&id))
            .cloned()
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
            lease_reads: self.lease_reads + self.read_slot.as_ref().map_or(0, |s| s.local_reads()),
            local_lease_reads: self.read_slot.as_ref().map_or(0, |s| s.local_reads()),
            asleep: self.asleep,
            read_index_rounds: self.read_index_rounds,
            last_committed_split: self.last_committed_split,
            reads_waiting: self.reads_waiting(),
            transferring: self.is_leader() && self.raw.raft.lead_transferee.is_some(),
            hash: self.hash,
            last_verified: self.last_verified,
            merging: self.merge.state.is_some(),
            merge_log_barrier: self.merge_log_barrier(),
            pending_peers: if self.is_leader() {
                let truncated = store.truncated_index();
                self.raw
                    .raft
                    .prs()
                    .iter()
                    .filter(|(id, pr)| {
                        **id != self.meta.id
                            && (pr.matched < truncated || pr.state == raft::ProgressState::Snapshot)
                    })
                    .map(|(id, _)| *id)
                    .collect()
            } else {
                Vec::new()
            },
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

    fn on_tick(&mut self, ctx: &mut PollContext<impl crate::Transport>) {
        if self.asleep {
            // Queued before the peer went to sleep.
            return;
        }
        if !self.tick_hibernation(ctx) {
            self.raw.tick();
        }
        self.observe_transfer();
        self.check_snapshots_sent(ctx);
        self.maybe_leave_joint();
        self.check_leader_missing(ctx);
        self.on_merge_tick(ctx);
        self.ticks_since_gc += 1;
        if self.ticks_since_gc >= ctx.cfg.raft_log_gc_ticks {
            self.ticks_since_gc = 0;
            self.maybe_compact_log(ctx);
        }
        self.expire_reads(self.cfg.clock.now(), ctx.cfg.read_index_timeout);
    }

    // ---- the Ready cycle ----

    /// Tells the store's observer that this region's routing information changed.
    fn notify_region_change(&self) {
        if let Some(observer) = &self.cfg.on_region_change {
            (observer.0)(self.region.id);
        }
    }

    /// Fails every outstanding request; the peer is going away.
    pub fn fail_all(&mut self) {
        for p in self.proposals.drain() {
            (p.payload)(Err(Error::Shutdown));
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
