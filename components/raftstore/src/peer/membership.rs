//! Membership of a replica: proposing and applying conf changes, applying received snapshots,
//! watching snapshots it sent, and the replica's end (destroy, tombstone, telling stale peers
//! they are gone).

use prost::Message as _;
use raft::eraftpb::{ConfChangeV2, Snapshot};
use raft::{ProgressState, SnapshotStatus};
use tracing::{debug, error, info, warn};

use crate::apply::{ApplyMsg, WriteCallback};
use crate::cmd::{AdminCmd, AdminKind, RaftCmd};
use crate::conf_change::{self, ChangeKind, PeerChange};
use crate::store::PollContext;
use crate::util::epoch_conf_ver;
use crate::Error;
use proto::raft_serverpb::PeerState;

use super::*;

impl Peer {
    /// A membership change asked for by PD or an operator.
    pub(super) fn on_change_peer(
        &mut self,
        epoch: Option<metapb::RegionEpoch>,
        changes: Vec<PeerChange>,
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
        if epoch_conf_ver(&self.region) != epoch.map_or(0, |e| e.conf_ver) {
            cb(Err(Error::EpochNotMatch {
                msg: "conf change decided under another membership".into(),
                current_regions: vec![self.region.clone()],
            }));
            return;
        }
        if changes.is_empty() {
            cb(Err(Error::InvalidRequest("no change asked for".into())));
            return;
        }
        if changes
            .iter()
            .any(|c| c.peer.id == self.meta.id && c.kind != ChangeKind::AddVoter)
        {
            cb(Err(Error::InvalidRequest(
                "the leader cannot remove or demote itself: transfer leadership first".into(),
            )));
            return;
        }
        if self.raw.raft.has_pending_conf() || conf_change::is_joint(&self.region) {
            cb(Err(Error::ServerIsBusy(format!(
                "region {} has a conf change in progress",
                self.region.id
            ))));
            return;
        }
        let cc = conf_change::to_raft(&changes);
        let named: Vec<metapb::Peer> = changes.iter().map(|c| c.peer).collect();
        // Refuse at once what every replica would refuse at apply.
        if let Err(e) = conf_change::apply_changes(&self.region, &cc, &named) {
            cb(Err(e));
            return;
        }
        info!(
            region_id = self.region.id,
            ?changes,
            "proposing conf change"
        );
        self.propose_conf_change(cc, named, Some(cb));
    }

    fn propose_conf_change(
        &mut self,
        cc: ConfChangeV2,
        named: Vec<metapb::Peer>,
        cb: Option<WriteCallback>,
    ) {
        let cmd = RaftCmd {
            region_id: self.region.id,
            epoch: self.region.region_epoch,
            ops: vec![],
            admin: Some(AdminCmd {
                kind: AdminKind::ChangePeer as i32,
                peers: named,
                ..Default::default()
            }),
        };
        let before = self.raw.raft.raft_log.last_index();
        if let Err(e) = self.raw.propose_conf_change(cmd.encode_to_vec(), cc) {
            if let Some(cb) = cb {
                cb(Err(Error::InvalidRequest(format!(
                    "conf change refused: {e}"
                ))));
            }
            return;
        }
        crate::metrics::PROPOSALS
            .with_label_values(&["conf_change"])
            .inc();
        if let Some(cb) = cb {
            self.track_proposal(before, cb);
        }
    }

    /// A leader leaves a joint state as soon as it may (the entry that entered it is
    /// applied): checked every tick, so a leader elected mid-change finishes it too.
    pub(super) fn maybe_leave_joint(&mut self) {
        if self.is_leader()
            && conf_change::is_joint(&self.region)
            && !self.raw.raft.has_pending_conf()
        {
            info!(region_id = self.region.id, "leaving joint state");
            self.propose_conf_change(conf_change::leave_joint(), vec![], None);
        }
    }

    /// The apply worker applied a conf change: raft-rs learns it, and the replica takes the
    /// new peer list (or, removed, ends).
    pub(super) fn on_conf_change_applied(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
        cc: ConfChangeV2,
        region: metapb::Region,
    ) {
        match self.raw.apply_conf_change(&cc) {
            Ok(cs) => self.raw.mut_store().set_conf_state(cs),
            Err(e) => {
                // Apply computed the same change from the same entry: raft-rs must agree.
                error!(region_id = self.region.id, %e, "raft-rs refused an applied conf change");
            }
        }
        self.region = region;
        ctx.meta
            .lock()
            .regions
            .insert(self.region.id, self.region.clone());
        self.notify_region_change();
        match find_peer(&self.region, self.meta.id) {
            Some(me) => self.meta = *me,
            None => {
                self.destroy(ctx, "removed from the region");
                return;
            }
        }
        self.maybe_leave_joint();
    }

    /// Checks a message that may carry a snapshot before raft-rs sees it: the snapshot must be
    /// of this region, decodable, and not overlap another region this store hosts.
    pub(super) fn accept_snapshot(
        &self,
        ctx: &PollContext<impl crate::Transport>,
        snap: &Snapshot,
    ) -> bool {
        if self.merge.frozen {
            // Its target absorbs (or absorbed) this range and may have written to it since.
            debug!(
                region_id = self.region.id,
                "snapshot for a frozen merge source dropped"
            );
            return false;
        }
        let data = match crate::snap::decode(snap) {
            Ok(d) => d,
            Err(e) => {
                warn!(region_id = self.region.id, %e, "snapshot dropped");
                return false;
            }
        };
        if !crate::snap::names(snap, self.meta.id) {
            warn!(
                region_id = self.region.id,
                peer_id = self.meta.id,
                "snapshot of a membership without this replica dropped"
            );
            return false;
        }
        let key = crate::snap::key_of(snap, &data);
        if !crate::snap::SnapManager::of(&ctx.engine).is_received(key, &data) {
            // The transport delivers the message only after the files; without them it is a
            // forgery or a copy whose files were since removed.
            warn!(
                region_id = self.region.id,
                ?key,
                "snapshot without its files dropped"
            );
            return false;
        }
        let region = data.region.expect("decode checked");
        if region.id != self.region.id {
            warn!(
                region_id = self.region.id,
                snapshot_region = region.id,
                "snapshot of another region dropped"
            );
            return false;
        }
        // A region this replica absorbed by a merge it has not applied yet (its leader's log
        // no longer has the CommitMerge) does not count: the snapshot replaces it.
        let meta = ctx.meta.lock();
        if let Some(other) = meta
            .overlapping_all(&region)
            .into_iter()
            .find(|id| meta.merging_into.get(id) != Some(&self.region.id))
        {
            info!(
                region_id = self.region.id,
                other, "snapshot overlaps another region of this store; dropped"
            );
            return false;
        }
        true
    }

    /// Stages a received snapshot (raft-rs accepted it) into the round's write batch, with
    /// the log reset; its files are ingested once the batch is on disk
    /// ([`Self::finish_snapshot`]), and the apply worker starts over from it. The caller made
    /// sure the apply worker has nothing of this region in flight.
    pub(super) fn apply_snapshot(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
        snap: &Snapshot,
    ) {
        // Tests crash the store here: the snapshot's batch is never written.
        fail::fail_point!("snapshot_apply_before_write");
        let data = crate::snap::decode(snap).expect("checked on receipt");
        let meta = snap.get_metadata();
        let old = self.is_initialized().then(|| self.region.clone());
        crate::snap::stage_apply(&mut ctx.wb, old.as_ref(), &data);
        self.snapshot_to_ingest = Some(crate::snap::key_of(snap, &data));
        self.raw.mut_store().apply_snapshot(meta, &mut ctx.wb);
        let new_region = data.region.clone().expect("decode checked");
        // Sources this region absorbed by merges the snapshot covers: gone in the same batch.
        let absorbed: Vec<metapb::Region> = {
            let mut store_meta = ctx.meta.lock();
            let ids = store_meta.overlapping_all(&new_region);
            let absorbed: Vec<metapb::Region> = ids
                .iter()
                .filter_map(|id| store_meta.regions.remove(id))
                .collect();
            for r in &absorbed {
                store_meta.merging_into.remove(&r.id);
                store_meta
                    .tombstones
                    .insert(r.id, r.region_epoch.unwrap_or_default());
            }
            store_meta.regions.insert(new_region.id, new_region.clone());
            absorbed
        };
        for r in &absorbed {
            crate::bootstrap::write_region_state(&mut ctx.wb, r, PeerState::Tombstone);
            ctx.send_peer(
                r.id,
                PeerMsg::MergedInto {
                    target_id: new_region.id,
                },
            );
        }
        self.region = new_region;
        if let Some(me) = find_peer(&self.region, self.meta.id) {
            self.meta = *me;
        }
        self.merge.state = data.merge_state.clone();
        self.merge.held = None;
        self.to_apply.retain(|e| e.index > meta.index);
        self.applied = ApplyState {
            applied_index: meta.index,
            applied_term: meta.term,
            truncated_index: meta.index,
            truncated_term: meta.term,
        };
        self.dispatched_index = meta.index;
        self.apply.send(
            self.region.id,
            ApplyMsg::Register {
                region: self.region.clone(),
                state: self.applied,
                merge_state: self.merge.state.clone(),
            },
        );
        self.applied_snapshot = Some(meta.index);
        self.notify_region_change();
    }

    /// The snapshot staged by [`Self::apply_snapshot`] is on disk: ingests its files and
    /// marks the region normal again, before any entry after it is applied.
    pub(super) fn finish_snapshot(&mut self, ctx: &PollContext<impl crate::Transport>) {
        let Some(key) = self.snapshot_to_ingest.take() else {
            return;
        };
        let mgr = crate::snap::SnapManager::of(&ctx.engine);
        if let Err(e) = crate::snap::finish_apply(
            &mgr,
            &ctx.engine,
            key,
            &self.region,
            self.merge.state.as_ref(),
        ) {
            // The log says the snapshot is applied; the data must follow or the replica
            // would diverge. A restart tries again (the region is still `Applying`).
            error!(region_id = self.region.id, %e, "snapshot ingestion failed");
            panic!(
                "snapshot ingestion failed for region {}: {e}",
                self.region.id
            );
        }
        crate::metrics::SNAPSHOTS_APPLIED.inc();
        info!(
            region_id = self.region.id,
            index = key.index,
            term = key.term,
            "snapshot applied"
        );
    }

    /// Notes a snapshot leaving for `to`.
    pub(super) fn on_snapshot_sent(&mut self, to: u64) {
        self.snapshots_sent.insert(to, self.cfg.clock.now());
    }

    /// The transport says whether the snapshot sent to `to` arrived. Delivered, raft-rs
    /// probes the follower (which may still fail to apply it, e.g. crash: the probe then
    /// finds it behind and another is sent); not delivered, raft-rs sends another. Either way
    /// without waiting for the snapshot timeout.
    pub(super) fn on_snapshot_status(&mut self, to: u64, delivered: bool) {
        let sent = self.snapshots_sent.remove(&to).is_some();
        debug!(
            region_id = self.region.id,
            to, delivered, sent, "snapshot status"
        );
        if !sent || !self.is_leader() {
            return;
        }
        if delivered {
            self.raw.report_snapshot(to, SnapshotStatus::Finish);
        } else {
            warn!(
                region_id = self.region.id,
                to, "snapshot not delivered; another will be sent"
            );
            self.raw.report_snapshot(to, SnapshotStatus::Failure);
        }
    }

    /// A follower still waiting for a snapshot sent longer than `timeout` ago has lost it
    /// (dropped by the network, or refused): raft-rs is told, so it probes and sends another.
    pub(super) fn check_snapshots_sent(&mut self, ctx: &PollContext<impl crate::Transport>) {
        let timeout = ctx.cfg.snapshot_timeout;
        let now = self.cfg.clock.now();
        let leader = self.is_leader();
        let mut failed = Vec::new();
        self.snapshots_sent.retain(|id, at| {
            let waiting = leader
                && self
                    .raw
                    .raft
                    .prs()
                    .get(*id)
                    .is_some_and(|pr| pr.state == ProgressState::Snapshot);
            if waiting && now.duration_since(*at) >= timeout {
                failed.push(*id);
            }
            waiting && now.duration_since(*at) < timeout
        });
        for id in failed {
            warn!(
                region_id = self.region.id,
                to = id,
                "snapshot lost; another will be sent"
            );
            self.raw.report_snapshot(id, SnapshotStatus::Failure);
        }
        // A snapshot nobody waited for during a whole timeout is dropped with its files (a
        // transport sending it opened them already).
        let gen = self.snap_gen.lock();
        let idle = self.snapshots_sent.is_empty()
            && matches!(
                *gen,
                crate::snap::GenState::Ready(_) | crate::snap::GenState::Failed
            );
        match (idle, self.snap_idle_since) {
            (false, _) => self.snap_idle_since = None,
            (true, None) => self.snap_idle_since = Some(now),
            (true, Some(since)) if now.duration_since(since) >= timeout => {
                drop(gen);
                self.drop_made_snapshot(ctx);
            }
            (true, Some(_)) => {}
        }
    }

    /// Forgets the snapshot this leader made, and removes its files (a transport sending it
    /// opened them already): no follower waits for it.
    pub(super) fn drop_made_snapshot(&mut self, ctx: &PollContext<impl crate::Transport>) {
        let mut gen = self.snap_gen.lock();
        if matches!(
            *gen,
            crate::snap::GenState::Generating | crate::snap::GenState::Idle
        ) {
            return;
        }
        *gen = crate::snap::GenState::Idle;
        self.snap_idle_since = None;
        crate::snap::SnapManager::of(&ctx.engine).remove_generated(self.region.id);
    }

    /// A replica that cannot campaign (a learner, or one still waiting for its first
    /// snapshot) and has not heard from a leader for a few election timeouts may have been
    /// removed without learning it (the leader stops writing to a replica once it applied the
    /// removal). It then knocks on its region's members: a member of a newer membership
    /// answers a stranger with a tombstone message (see [`Peer::tell_stale_peer`]); a member
    /// that knows it ignores the knock (a heartbeat response of its term, which raft-rs
    /// takes as a sign of life). Voters find out by campaigning.
    pub(super) fn check_leader_missing(&mut self, ctx: &mut PollContext<impl crate::Transport>) {
        if self.is_leader() || self.raw.raft.promotable() {
            self.ticks_without_leader = 0;
            return;
        }
        self.ticks_without_leader += 1;
        if self.ticks_without_leader < 4 * ctx.cfg.raft_election_ticks {
            return;
        }
        self.ticks_without_leader = 0;
        let mut to: Vec<metapb::Peer> = self
            .region
            .peers
            .iter()
            .chain(self.peer_cache.values())
            .filter(|p| p.id != self.meta.id)
            .copied()
            .collect();
        to.sort_by_key(|p| p.id);
        to.dedup_by_key(|p| p.id);
        debug!(
            region_id = self.region.id,
            peers = to.len(),
            "no leader for a while; knocking"
        );
        for peer in to {
            let mut m = raft::eraftpb::Message::default();
            m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeatResponse);
            m.from = self.meta.id;
            m.to = peer.id;
            m.term = self.raw.raft.term;
            self.send(ctx, m);
        }
    }

    /// Tells a peer that is no longer a member (its messages carry an older membership) that
    /// it has been removed, so that it destroys itself.
    pub(super) fn tell_stale_peer(
        &self,
        ctx: &mut PollContext<impl crate::Transport>,
        msg: &RaftMessage,
    ) {
        let Some(to) = msg.from_peer else {
            return;
        };
        info!(
            region_id = self.region.id,
            to = to.id,
            to_store = to.store_id,
            "telling a removed peer to destroy itself"
        );
        ctx.transport.send(RaftMessage {
            region_id: self.region.id,
            from_peer: Some(self.meta),
            to_peer: Some(to),
            region_epoch: self.region.region_epoch,
            is_tombstone: true,
            ..Default::default()
        });
    }

    /// Ends this replica: fails what waits on it, leaves the store's routing, and has the
    /// apply worker remove its data and Raft state and leave a tombstone.
    pub(super) fn destroy(&mut self, ctx: &mut PollContext<impl crate::Transport>, why: &str) {
        self.destroy_with(ctx, why, false)
    }

    /// Ends a source replica its target absorbed: as [`Self::destroy`], keeping the data.
    pub(super) fn destroy_merged(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
        why: &str,
    ) {
        self.destroy_with(ctx, why, true)
    }

    fn destroy_with(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
        why: &str,
        keep_data: bool,
    ) {
        if self.destroyed {
            return;
        }
        info!(
            region_id = self.region.id,
            peer_id = self.meta.id,
            why,
            "destroying replica"
        );
        self.destroyed = true;
        if self.asleep {
            crate::metrics::HIBERNATED_PEERS.dec();
        }
        ctx.awake.remove(self.region.id);
        self.read_slot = None;
        ctx.local_reader.remove(self.region.id);
        self.ready = None;
        self.to_apply.clear();
        self.fail_all();
        let initialized = self.is_initialized();
        {
            let mut meta = ctx.meta.lock();
            meta.regions.remove(&self.region.id);
            meta.merging_into.remove(&self.region.id);
            let epoch = self.region.region_epoch.unwrap_or_default();
            let t = meta.tombstones.entry(self.region.id).or_default();
            t.conf_ver = t.conf_ver.max(epoch.conf_ver);
            t.version = t.version.max(epoch.version);
            ctx.unregister(self.region.id);
        }
        let snaps = crate::snap::SnapManager::of(&ctx.engine);
        snaps.remove_generated(self.region.id);
        snaps.remove_received(self.region.id, u64::MAX);
        self.apply.send(
            self.region.id,
            ApplyMsg::Destroy {
                region: self.region.clone(),
                initialized,
                keep_data,
            },
        );
        self.notify_region_change();
    }
}
