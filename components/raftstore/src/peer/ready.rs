//! The Ready cycle around the store's group commit: stepping messages, staging log writes,
//! sending messages before and after persistence, handing committed entries to apply, and
//! reacting to role changes.

use std::collections::VecDeque;

use bytes::Bytes;
use proto::raft_serverpb::RaftMessage;
use protobuf::Message as _;
use raft::eraftpb::{self, MessageType};
use raft::StateRole;
use tracing::{debug, info, warn};

use raft_group::proposal::Settled;

use crate::apply::{ApplyMsg, ApplyTask};
use crate::store::PollContext;
use crate::util::find_peer;
use crate::Error;

use super::*;

impl Peer {
    pub(super) fn on_raft_message(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
        msg: RaftMessage,
    ) {
        if msg.to_peer.as_ref().map(|p| p.id) != Some(self.meta.id) {
            debug!(
                region_id = self.region.id,
                "raft message for another peer id, dropped"
            );
            return;
        }
        if let Some(extra) = msg.extra_msg {
            self.on_extra_message(ctx, msg.from_peer, extra);
            return;
        }
        let msg_conf_ver = msg.region_epoch.map_or(0, |e| e.conf_ver);
        let our_conf_ver = crate::util::epoch_conf_ver(&self.region);
        if msg.is_tombstone {
            // A member of a newer membership says this replica was removed.
            if !self.is_initialized() || msg_conf_ver > our_conf_ver {
                if let Some(e) = self.region.region_epoch.as_mut() {
                    e.conf_ver = e.conf_ver.max(msg_conf_ver);
                }
                self.destroy(ctx, "told by a newer member that it was removed");
            }
            return;
        }
        let m = match eraftpb::Message::parse_from_bytes(&msg.message) {
            Ok(m) => m,
            Err(e) => {
                warn!(region_id = self.region.id, %e, "undecodable raft message");
                return;
            }
        };
        let log = raft_group::validate::LogView {
            id: self.meta.id,
            term: self.raw.raft.term,
            is_leader: self.is_leader(),
            last_index: self.raw.raft.raft_log.last_index(),
        };
        let envelope_from = msg.from_peer.as_ref().map_or(0, |p| p.id);
        if let Err(why) = raft_group::validate::check(&m, envelope_from, &log) {
            warn!(
                region_id = self.region.id,
                from = m.from,
                msg_type = ?m.get_msg_type(),
                %why,
                "raft message dropped"
            );
            return;
        }
        if find_peer(&self.region, m.from).is_none() {
            if self.is_initialized() && msg_conf_ver < our_conf_ver {
                // From a replica of an older membership that no longer has it.
                self.tell_stale_peer(ctx, &msg);
                return;
            }
            // A member this replica does not know of yet (it lags behind a conf change, or
            // is new itself): remember where it lives, to answer.
            if let Some(from) = msg.from_peer {
                self.peer_cache.insert(from.id, from);
            }
        }
        if matches!(
            m.get_msg_type(),
            MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
        ) {
            self.ticks_without_leader = 0;
        }
        if m.get_msg_type() == MessageType::MsgSnapshot
            && !self.accept_snapshot(ctx, m.get_snapshot())
        {
            return;
        }
        if let Err(e) = self.raw.step(m) {
            debug!(region_id = self.region.id, %e, "step failed");
        }
    }

    /// Stage 1 of the Ready cycle: runs before the group commit.
    pub fn collect_ready(&mut self, ctx: &mut PollContext<impl crate::Transport>) {
        if self.destroyed || self.ready.is_some() || !self.raw.has_ready() {
            return;
        }
        if self.raw.snap().is_some() && self.dispatched_index > self.applied.applied_index {
            // A snapshot replaces the region's data: first let apply finish what it was given
            // (its report wakes this peer).
            return;
        }
        let Some((taken, pending)) = raft_group::ready::take(&mut self.raw) else {
            return;
        };
        if let Some(ss) = taken.soft_state {
            self.on_role_change(ss.raft_state, ss.leader_id);
        }
        self.observe_transfer();
        for m in taken.messages {
            self.send(ctx, m);
        }
        if let Some(snap) = &taken.snapshot {
            self.apply_snapshot(ctx, snap);
        }
        self.take_committed(taken.committed);
        if ctx.cfg.apply_before_persist && self.applied_snapshot.is_none() {
            // raft-rs hands out only entries this replica has already persisted, so they need
            // not wait for this round's write: applying them now takes a synced write off
            // every command's path. Entries after a snapshot wait until its files are in.
            self.dispatch_apply();
        }
        raft_group::ready::stage_log(&mut self.raw, &pending, &mut ctx.wb);
        for rs in taken.read_states {
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
        self.ready = Some(pending);
    }

    /// Stage 2 of the Ready cycle: runs after the group commit is on disk.
    pub fn post_persist(&mut self, ctx: &mut PollContext<impl crate::Transport>) {
        if self.destroyed {
            return;
        }
        if let Some(pending) = self.ready.take() {
            let snapshot_index = self.applied_snapshot.take();
            if snapshot_index.is_some() {
                // Tests crash the store here: the snapshot's batch is on disk, its files are
                // not ingested yet.
                fail::fail_point!("snapshot_apply_after_write");
                self.finish_snapshot(ctx);
            }
            let advanced =
                raft_group::ready::advance(&mut self.raw, pending, snapshot_index, &mut ctx.wb);
            for m in advanced.messages {
                self.send(ctx, m);
            }
            self.take_committed(advanced.committed);
        }
        if !self.to_apply.is_empty() {
            self.dispatch_apply();
        }
        self.check_held_commit(ctx);
        self.check_caught_up(ctx);
        // A new leader's held reads go out as soon as its first entry commits.
        self.issue_read_index();
        self.answer_ready_reads();
        // Before the messages sent above leave (the transport flushes after every peer's
        // post_persist): a split they report committed must already stop local reads.
        self.publish_lease(ctx);
        if self.raw.has_ready() {
            ctx.wake(self.region.id);
        }
    }

    /// Queues committed entries for apply. A split among them ends lease reads at once: the
    /// messages that tell the others it committed leave at the end of this round, and the
    /// local reader must see the change before they do.
    fn take_committed(&mut self, entries: Vec<Entry>) {
        if let Some(index) = newest_split(&entries) {
            self.last_committed_split = self.last_committed_split.max(index);
        }
        self.to_apply.extend(entries);
    }

    pub(super) fn dispatch_apply(&mut self) {
        let entries = self.entries_to_dispatch();
        if entries.is_empty() {
            return;
        }
        if let Some(last) = entries.last() {
            self.dispatched_index = self.dispatched_index.max(last.index);
        }
        let mut callbacks = Vec::new();
        let term = self.raw.raft.term;
        let leader = self.is_leader();
        let mut renew_from = None;
        for e in &entries {
            let proposed_here = self
                .proposals
                .settle(e.index, e.term, |settled| match settled {
                    Settled::Committed(p) => {
                        if leader && p.term == term {
                            renew_from = Some(p.proposed_at);
                        }
                        callbacks.push((p.index, p.term, p.payload));
                    }
                    Settled::Stale(p) => (p.payload)(Err(Error::StaleCommand)),
                });
            if !proposed_here && leader && e.term == term && e.data.is_empty() {
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

    pub(super) fn on_role_change(&mut self, role: StateRole, leader_id: u64) {
        self.notify_region_change();
        if role == StateRole::Leader {
            info!(
                region_id = self.region.id,
                peer_id = self.meta.id,
                term = self.raw.raft.term,
                "became leader"
            );
            self.became_leader_at = self.cfg.clock.now();
            self.lease.expire();
            return;
        }
        debug!(
            region_id = self.region.id,
            peer_id = self.meta.id,
            ?role,
            leader_id,
            "not leader"
        );
        self.lease.expire();
        self.forget_merge_proposals();
        let leader = self.peer_by_id(leader_id);
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

    pub(super) fn send(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
        m: eraftpb::Message,
    ) {
        let Some(to) = self.peer_by_id(m.to) else {
            warn!(
                region_id = self.region.id,
                to = m.to,
                "message to unknown peer dropped"
            );
            return;
        };
        let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
        if is_snapshot && self.merge.frozen {
            // Its target may already write into this range here: the engine no longer holds
            // the source as of any index of its log.
            debug!(
                region_id = self.region.id,
                to = m.to,
                "no snapshot from a frozen merge source"
            );
            return;
        }
        if is_snapshot {
            crate::metrics::SNAPSHOTS_SENT.inc();
            info!(
                region_id = self.region.id,
                to = m.to,
                index = m.get_snapshot().get_metadata().index,
                "sending snapshot"
            );
            self.on_snapshot_sent(m.to);
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
            extra_msg: None,
        };
        if is_snapshot {
            ctx.transport.send_snapshot(msg);
        } else {
            ctx.transport.send(msg);
        }
    }
}
