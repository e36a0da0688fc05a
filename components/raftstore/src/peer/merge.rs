//! A replica's side of region merge (the protocol and its rules are in [`crate::merge`]): the
//! source leader preparing, merging source replicas asking their target and catching up,
//! target replicas holding CommitMerge back until the source beside them caught up, and what
//! either does once a merge step applied.

use prost::Message as _;
use proto::raft_serverpb::MergeState;
use tracing::{debug, info, warn};

use crate::apply::{MergeEvent, WriteCallback};
use crate::cmd::{AdminCmd, AdminKind, RaftCmd};
use crate::merge::{check_commit, check_pair, source_action, SourceAction, COMMIT_MERGE_CONTEXT};
use crate::store::PollContext;
use crate::Error;

use super::*;

/// Ticks between two merge checks of a merging replica (asking the target, rollback).
const MERGE_CHECK_TICKS: usize = 3;

/// How long a source leader asked to merge holds new requests back while it waits to become
/// idle and fully replicated (in election timeouts); then it gives up and serves again.
const FENCE_ELECTION_TIMEOUTS: u32 = 1;

/// A replica's merge bookkeeping, in memory (what must survive a restart is in the region
/// state: `Merging` and its [`MergeState`]).
#[derive(Default)]
pub(super) struct MergeCtx {
    /// Source: the applied merge state (the region is `Merging`).
    pub(super) state: Option<MergeState>,
    /// Source leader: asked to merge, it takes no new requests until it is idle and fully
    /// replicated (then it proposes PrepareMerge) or the fence's time is up.
    fence: Option<Fence>,
    /// Source leader: the index of a PrepareMerge proposed and not applied yet.
    pub(super) prepare_proposed: Option<u64>,
    /// Source leader: a RollbackMerge is proposed.
    rollback_proposed: bool,
    /// Source: a target replica beside it waits for it to catch up to `.1` (target id, index).
    catch_up: Option<(u64, u64)>,
    /// Source: caught up for its target, which absorbs it; nothing applies here any more.
    pub(super) frozen: bool,
    /// Target: a CommitMerge entry waiting for the source replica beside it.
    pub(super) held: Option<HeldCommit>,
    /// Target: CommitMerge entries up to this index are not held (again).
    released_through: u64,
    /// Target leader: the index of a CommitMerge proposed and not applied yet.
    commit_proposed: Option<u64>,
    /// Target: the applied index of the newest CommitMerge applied here (in memory only).
    last_commit_merge: u64,
    ticks: usize,
}

/// A merge a source leader was asked for and waits to propose.
pub(super) struct Fence {
    target: metapb::Region,
    cb: WriteCallback,
    until: Instant,
}

/// A CommitMerge entry a target replica holds back.
pub(super) struct HeldCommit {
    index: u64,
    source: metapb::Region,
    state: MergeState,
    caught_up: bool,
    asked: bool,
}

impl Peer {
    /// The replica takes no requests: it is the source of a merge, prepared or proposed.
    pub(super) fn merge_busy(&self) -> bool {
        self.merge.state.is_some()
            || self.merge.fence.is_some()
            || self.merge.prepare_proposed.is_some()
            || self.merge.frozen
    }

    /// Work a merge still needs of this replica (it must not hibernate meanwhile).
    pub(super) fn merge_pending(&self) -> bool {
        self.merge_busy() || self.merge.held.is_some() || self.merge.catch_up.is_some()
    }

    /// PD (or an operator) asks this source leader to merge into `target`.
    pub(super) fn on_prepare_merge(
        &mut self,
        ctx: &PollContext<impl crate::Transport>,
        target: metapb::Region,
        cb: WriteCallback,
    ) {
        if !self.is_leader() {
            cb(Err(self.not_leader()));
            return;
        }
        if self.merge_busy() {
            cb(Err(Error::ProposalInMergingMode(self.region.id)));
            return;
        }
        let Some(local) = ctx.meta.lock().regions.get(&target.id).cloned() else {
            cb(Err(Error::InvalidRequest(format!(
                "this store hosts no replica of target region {}",
                target.id
            ))));
            return;
        };
        if local.region_epoch != target.region_epoch {
            cb(Err(Error::EpochNotMatch {
                msg: format!(
                    "target {} is at {:?} here, the merge was asked at {:?}",
                    target.id, local.region_epoch, target.region_epoch
                ),
                current_regions: vec![local],
            }));
            return;
        }
        if let Err(e) = check_pair(&self.region, &local) {
            cb(Err(Error::InvalidRequest(e)));
            return;
        }
        // New requests wait (clients back off) while what is in flight drains.
        let until = self.cfg.clock.now() + self.cfg.election_timeout() * FENCE_ELECTION_TIMEOUTS;
        self.merge.fence = Some(Fence {
            target: local,
            cb,
            until,
        });
        self.lease.expire();
        self.maybe_propose_prepare_merge(ctx);
    }

    /// A fenced source leader proposes PrepareMerge once it is idle and fully replicated, or
    /// gives the merge up once the fence's time is up (or it no longer leads).
    pub(super) fn maybe_propose_prepare_merge(&mut self, ctx: &PollContext<impl crate::Transport>) {
        let Some(fence) = self.merge.fence.as_ref() else {
            return;
        };
        if !self.is_leader() {
            let fence = self.merge.fence.take().expect("checked");
            (fence.cb)(Err(self.not_leader()));
            return;
        }
        // The fence's own proposals are none, and nothing else is proposed meanwhile.
        if !self.idle_view().is_idle() {
            if self.cfg.clock.now() >= fence.until {
                let fence = self.merge.fence.take().expect("checked");
                (fence.cb)(Err(Error::ServerIsBusy(format!(
                    "region {} did not become idle and fully replicated; merge later",
                    self.region.id
                ))));
            }
            return;
        }
        let Fence {
            target: local, cb, ..
        } = self.merge.fence.take().expect("checked");
        let target = local.clone();
        let cmd = RaftCmd {
            region_id: self.region.id,
            epoch: self.region.region_epoch,
            ops: vec![],
            admin: Some(AdminCmd {
                kind: AdminKind::PrepareMerge as i32,
                target: Some(local),
                ..Default::default()
            }),
        };
        let before = self.raw.raft.raft_log.last_index();
        self.propose(ctx, cmd, Some(cb));
        if self.raw.raft.raft_log.last_index() == before + 1 {
            info!(
                region_id = self.region.id,
                target = target.id,
                index = before + 1,
                "merge proposed"
            );
            self.merge.prepare_proposed = Some(before + 1);
            // No lease reads from now on: once the target absorbs this range, it serves it.
            self.lease.expire();
        }
    }

    /// Every few ticks: a merging source asks its target (or rolls back); a target holding a
    /// CommitMerge asks its source again.
    pub(super) fn on_merge_tick(&mut self, ctx: &mut PollContext<impl crate::Transport>) {
        if !self.merge_pending() {
            return;
        }
        self.maybe_propose_prepare_merge(ctx);
        self.merge.ticks += 1;
        if self.merge.ticks < MERGE_CHECK_TICKS {
            return;
        }
        self.merge.ticks = 0;
        if let Some(held) = self.merge.held.as_mut() {
            held.asked = false;
        }
        self.check_held_commit(ctx);
        let Some(state) = self.merge.state.clone() else {
            return;
        };
        if self.merge.frozen {
            return;
        }
        let target_id = state.target.as_ref().map_or(0, |t| t.id);
        let (local, tombstone) = {
            let meta = ctx.meta.lock();
            (
                meta.regions.get(&target_id).and_then(|r| r.region_epoch),
                meta.tombstones.get(&target_id).copied(),
            )
        };
        match source_action(&state, local, tombstone) {
            SourceAction::AskCommit => {
                ctx.send_peer(
                    target_id,
                    PeerMsg::AskCommitMerge {
                        source: self.region.clone(),
                        state,
                    },
                );
            }
            SourceAction::Rollback if self.is_leader() && !self.merge.rollback_proposed => {
                info!(
                    region_id = self.region.id,
                    target_id, "target moved on without this region; rolling the merge back"
                );
                let cmd = RaftCmd {
                    region_id: self.region.id,
                    epoch: self.region.region_epoch,
                    ops: vec![],
                    admin: Some(AdminCmd {
                        kind: AdminKind::RollbackMerge as i32,
                        merge_state: Some(state),
                        ..Default::default()
                    }),
                };
                self.merge.rollback_proposed = true;
                self.propose(ctx, cmd, None);
            }
            SourceAction::Rollback | SourceAction::Wait => {}
        }
    }

    /// A merging source beside this target replica asks for CommitMerge (leaders propose it).
    pub(super) fn on_ask_commit_merge(
        &mut self,
        ctx: &PollContext<impl crate::Transport>,
        source: metapb::Region,
        state: MergeState,
    ) {
        if !self.is_leader() || self.merge_busy() {
            return;
        }
        // Tests keep a prepared merge from committing, to change its target first.
        fail::fail_point!("merge_before_commit_proposal", |_| {});
        if self
            .merge
            .commit_proposed
            .is_some_and(|i| i > self.applied.applied_index)
        {
            return;
        }
        if let Err(why) = check_commit(&self.region, &source, &state) {
            debug!(region_id = self.region.id, source = source.id, %why, "merge not committable");
            return;
        }
        let cmd = RaftCmd {
            region_id: self.region.id,
            epoch: self.region.region_epoch,
            ops: vec![],
            admin: Some(AdminCmd {
                kind: AdminKind::CommitMerge as i32,
                source: Some(source.clone()),
                merge_state: Some(state),
                ..Default::default()
            }),
        };
        let before = self.raw.raft.raft_log.last_index();
        self.propose(ctx, cmd, None);
        if self.raw.raft.raft_log.last_index() == before + 1 {
            info!(
                region_id = self.region.id,
                source = source.id,
                "merge commit proposed"
            );
            self.merge.commit_proposed = Some(before + 1);
        }
    }

    /// Splits the committed entries waiting for apply: those up to a CommitMerge this replica
    /// has not released yet go now, the rest wait (see [`Self::check_held_commit`]). Nothing
    /// goes from a frozen source.
    pub(super) fn entries_to_dispatch(&mut self) -> Vec<Entry> {
        if self.merge.frozen || self.merge.held.is_some() {
            return Vec::new();
        }
        let released = self.merge.released_through;
        let Some(pos) = self
            .to_apply
            .iter()
            .position(|e| e.index > released && e.context[..] == COMMIT_MERGE_CONTEXT[..])
        else {
            return std::mem::take(&mut self.to_apply);
        };
        let rest = self.to_apply.split_off(pos);
        let entry = &rest[0];
        let decoded = RaftCmd::decode(&entry.data[..])
            .ok()
            .and_then(|c| c.admin)
            .and_then(|a| Some((a.source?, a.merge_state?)));
        match decoded {
            Some((source, state)) => {
                self.merge.held = Some(HeldCommit {
                    index: entry.index,
                    source,
                    state,
                    caught_up: false,
                    asked: false,
                });
            }
            // Apply refuses it on every replica alike.
            None => self.merge.released_through = entry.index,
        }
        std::mem::replace(&mut self.to_apply, rest)
    }

    /// A held CommitMerge: once everything before it applied (so the region is exact), either
    /// it will fail at apply (release it now) or the source replica beside this one must
    /// catch up first (ask it; release once it answers).
    pub(super) fn check_held_commit(&mut self, ctx: &mut PollContext<impl crate::Transport>) {
        let Some(held) = self.merge.held.as_mut() else {
            return;
        };
        if self.applied.applied_index + 1 < held.index {
            return;
        }
        let fails = check_commit(&self.region, &held.source, &held.state).is_err();
        if held.caught_up || fails {
            self.merge.released_through = held.index;
            self.merge.held = None;
            self.dispatch_apply();
            ctx.wake(self.region.id);
            return;
        }
        if !held.asked {
            held.asked = true;
            let msg = PeerMsg::CatchUpForMerge {
                target_id: self.region.id,
                commit: held.state.commit,
            };
            if !ctx.send_peer(held.source.id, msg) {
                warn!(
                    region_id = self.region.id,
                    source = held.source.id,
                    "the source of a merge is not on this store; waiting"
                );
            }
        }
    }

    /// The target replica beside this source waits for it to apply everything up to `commit`.
    pub(super) fn on_catch_up_for_merge(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
        target_id: u64,
        commit: u64,
    ) {
        if self.merge.frozen {
            ctx.send_peer(
                target_id,
                PeerMsg::SourceCaughtUp {
                    source_id: self.region.id,
                },
            );
            return;
        }
        self.merge.catch_up = Some((target_id, commit));
        let log = &mut self.raw.raft.raft_log;
        if log.committed < commit {
            if log.last_index() >= commit {
                // Every replica held the log up to `commit` when the merge was prepared, and
                // all of it was committed: committing it here needs no leader.
                info!(
                    region_id = self.region.id,
                    commit, "committing the source's log locally for a merge"
                );
                log.commit_to(commit);
            } else {
                warn!(
                    region_id = self.region.id,
                    commit,
                    last_index = log.last_index(),
                    "source replica lacks entries for a merge; waiting for its leader"
                );
            }
        }
        self.check_caught_up(ctx);
    }

    /// A source asked to catch up freezes once it applied far enough and nothing more is in
    /// flight to its apply worker, and tells its target.
    pub(super) fn check_caught_up(&mut self, ctx: &mut PollContext<impl crate::Transport>) {
        let Some((target_id, commit)) = self.merge.catch_up else {
            return;
        };
        if self.applied.applied_index < commit || self.dispatched_index > self.applied.applied_index
        {
            return;
        }
        info!(
            region_id = self.region.id,
            target_id,
            applied = self.applied.applied_index,
            "source caught up for a merge; frozen"
        );
        self.merge.frozen = true;
        self.merge.catch_up = None;
        self.lease.expire();
        self.fail_waiting_requests();
        ctx.send_peer(
            target_id,
            PeerMsg::SourceCaughtUp {
                source_id: self.region.id,
            },
        );
    }

    pub(super) fn on_source_caught_up(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
        source_id: u64,
    ) {
        match self.merge.held.as_mut() {
            Some(held) if held.source.id == source_id => held.caught_up = true,
            _ => return,
        }
        self.check_held_commit(ctx);
    }

    /// What a replica does once a merge step applied.
    pub(super) fn on_merge_applied(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
        event: MergeEvent,
    ) {
        match event {
            MergeEvent::Prepared { region, state } => {
                self.region = region;
                let target_id = state.target.as_ref().map_or(0, |t| t.id);
                self.merge.state = Some(state);
                self.merge.prepare_proposed = None;
                self.lease.expire();
                self.fail_waiting_requests();
                let mut meta = ctx.meta.lock();
                meta.regions.insert(self.region.id, self.region.clone());
                meta.merging_into.insert(self.region.id, target_id);
            }
            MergeEvent::RolledBack { region } => {
                self.region = region;
                self.merge.state = None;
                self.merge.rollback_proposed = false;
                let mut meta = ctx.meta.lock();
                meta.regions.insert(self.region.id, self.region.clone());
                meta.merging_into.remove(&self.region.id);
            }
            MergeEvent::Committed { region, source } => {
                self.region = region;
                self.merge.commit_proposed = None;
                self.merge.last_commit_merge = self.applied.applied_index;
                {
                    let mut meta = ctx.meta.lock();
                    meta.regions.remove(&source.id);
                    meta.merging_into.remove(&source.id);
                    meta.regions.insert(self.region.id, self.region.clone());
                    let t = meta.tombstones.entry(source.id).or_default();
                    let e = source.region_epoch.unwrap_or_default();
                    t.conf_ver = t.conf_ver.max(e.conf_ver);
                    t.version = t.version.max(e.version);
                }
                ctx.send_peer(
                    source.id,
                    PeerMsg::MergedInto {
                        target_id: self.region.id,
                    },
                );
            }
        }
        self.notify_region_change();
    }

    /// The log index below which a leader does not compact while a replica lacks it: the newest
    /// CommitMerge this replica applied (0: none since it started).
    pub(super) fn merge_log_barrier(&self) -> u64 {
        self.merge.last_commit_merge
    }

    /// After apply progress: a PrepareMerge that failed at apply is no longer pending.
    pub(super) fn settle_merge_proposals(&mut self) {
        if self
            .merge
            .prepare_proposed
            .is_some_and(|i| i <= self.applied.applied_index)
            && self.merge.state.is_none()
        {
            self.merge.prepare_proposed = None;
        }
        if self
            .merge
            .commit_proposed
            .is_some_and(|i| i <= self.applied.applied_index)
        {
            self.merge.commit_proposed = None;
        }
    }

    /// Leadership lost: what this replica proposed as leader is no longer its to track.
    pub(super) fn forget_merge_proposals(&mut self) {
        self.merge.prepare_proposed = None;
        self.merge.rollback_proposed = false;
        self.merge.commit_proposed = None;
    }

    /// Fails the reads waiting on a replica that stopped serving because of a merge.
    fn fail_waiting_requests(&mut self) {
        let region_id = self.region.id;
        for r in self.pending_reads.drain(..) {
            for (_, cb) in r.callbacks {
                cb(Err(Error::ProposalInMergingMode(region_id)));
            }
        }
        for (_, cb) in self.reads_to_issue.drain(..) {
            cb(Err(Error::ProposalInMergingMode(region_id)));
        }
    }
}
