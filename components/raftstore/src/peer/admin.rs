//! Admin work of a replica: consistency checks, Raft log GC, and what a replica does once
//! the apply worker reports (including an applied split).

use proto::metapb;
use raft::Storage as _;
use tracing::{debug, warn};

use crate::apply::{ApplyRes, WriteCallback};
use crate::cmd::{AdminCmd, AdminKind, RaftCmd};
use crate::store::PollContext;

use super::*;

impl Peer {
    pub(super) fn on_check_consistency(
        &mut self,
        ctx: &PollContext<impl crate::Transport>,
        cb: WriteCallback,
    ) {
        if !self.is_leader() {
            cb(Err(self.not_leader()));
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
    pub(super) fn on_consistency_event(
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

    pub(super) fn maybe_compact_log(&mut self, ctx: &PollContext<impl crate::Transport>) {
        // A merging source keeps its log: its replicas catch up from it (see `crate::merge`).
        if !self.is_leader() || self.merge_busy() {
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
        let Some(compact_to) = raft_group::log_gc::gc_target(
            self.applied.applied_index,
            self.raw.store().truncated_index(),
            min_match,
            ctx.cfg.raft_log_gc_threshold,
            ctx.cfg.raft_log_gc_count_limit,
        ) else {
            return;
        };
        // A replica that lacks a CommitMerge this region applied catches up by log: a
        // snapshot of the merged range would overlap the source replica beside it, which may
        // never learn of the merge (see `crate::merge`).
        let barrier = self.merge_log_barrier();
        let compact_to = if min_match < barrier {
            compact_to.min(barrier - 1)
        } else {
            compact_to
        };
        if compact_to <= self.compact_proposed_to {
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

    pub(super) fn on_apply_res(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
        res: ApplyRes,
    ) {
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
        for (cc, region) in res.conf_changes {
            self.on_conf_change_applied(ctx, cc, region);
            if self.destroyed {
                return;
            }
        }
        for event in res.consistency {
            self.on_consistency_event(ctx, event);
        }
        for event in res.merges {
            self.on_merge_applied(ctx, event);
        }
        self.settle_merge_proposals();
        self.maybe_propose_prepare_merge(ctx);
        self.check_held_commit(ctx);
        self.check_caught_up(ctx);
        self.answer_ready_reads();
    }

    /// After a split was applied: shrink to the parent's new range and create this store's
    /// replicas of the new regions. A leader's replicas campaign at once, so that the new
    /// regions get a leader without waiting for an election timeout.
    pub(super) fn on_split_applied(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
        regions: Vec<metapb::Region>,
    ) {
        let mut regions = regions.into_iter();
        let Some(parent) = regions.next() else {
            return;
        };
        let regions: Vec<metapb::Region> = regions.collect();
        self.region = parent;
        {
            let mut meta = ctx.meta.lock();
            for r in std::iter::once(&self.region).chain(regions.as_slice()) {
                meta.regions.insert(r.id, r.clone());
            }
        }
        self.notify_region_change();
        let campaign = self.is_leader();
        for region in regions {
            if let Err(e) = ctx.create_peer(region.clone(), campaign) {
                warn!(region_id = region.id, %e, "cannot create the peer of a split region");
            }
        }
    }
}
