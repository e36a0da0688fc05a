//! A peer's side of hibernation ([`crate::hibernate`] has the protocol): a leader asking its
//! followers to sleep once idle, followers answering, sleeping and waking.

use proto::raft_serverpb::{ExtraMessage, ExtraMessageType};
use tracing::debug;

use crate::hibernate::{follower_may_sleep, FollowerView, LeaderIdleView};

use super::*;

/// Ticks between two rounds of hibernation requests of an idle leader whose followers have
/// not all answered yet.
const REQUEST_EVERY_TICKS: usize = 10;
/// Ticks after a round of requests in which the leader sends no heartbeat (a heartbeat would
/// wake the followers that just agreed). Well under the election timeout, so followers that
/// did not agree hear from the leader again in time.
const HANDSHAKE_TICKS: usize = 4;

impl Peer {
    pub fn is_asleep(&self) -> bool {
        self.asleep
    }

    pub(super) fn idle_view(&self) -> LeaderIdleView {
        let raft = &self.raw.raft;
        LeaderIdleView {
            proposals_pending: !self.proposals.is_empty(),
            reads_pending: self.reads_waiting() > 0,
            // Not `has_ready`: a heartbeat to send is no work.
            work_pending: raft.raft_log.persisted < raft.raft_log.last_index()
                || self.ready.is_some()
                || !self.to_apply.is_empty()
                || self.dispatched_index > self.applied.applied_index,
            last_index: raft.raft_log.last_index(),
            committed: raft.raft_log.committed,
            applied: self.applied.applied_index,
            matched: raft
                .prs()
                .iter()
                .filter(|(id, _)| **id != self.meta.id)
                .map(|(_, pr)| pr.matched)
                .collect(),
            conf_change_pending: raft.has_pending_conf()
                || crate::conf_change::is_joint(&self.region),
            transferring: raft.lead_transferee.is_some(),
            snapshot_in_flight: !self.snapshots_sent.is_empty(),
        }
    }

    /// On every tick of an awake peer, before Raft's: an idle leader asks its followers to
    /// sleep, and sleeps itself once all of them agreed. Returns whether Raft's tick must be
    /// left out (a handshake is under way: no heartbeats).
    pub(super) fn tick_hibernation(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
    ) -> bool {
        if !ctx.cfg.hibernate_regions
            || !self.is_leader()
            || !self.idle_view().is_idle()
            || self.merge_pending()
        {
            self.idle_ticks = 0;
            self.sleep_request = None;
            return false;
        }
        self.idle_ticks += 1;
        if self.idle_ticks < ctx.cfg.hibernate_ticks {
            return false;
        }
        let key = (self.raw.raft.term, self.raw.raft.raft_log.last_index());
        if self.sleep_request != Some(key) {
            self.sleep_request = Some(key);
            self.sleep_acks.clear();
        }
        if self.all_agreed_to_sleep() {
            self.sleep(ctx);
            return true;
        }
        let phase = (self.idle_ticks - ctx.cfg.hibernate_ticks) % REQUEST_EVERY_TICKS;
        if phase == 0 {
            for to in self.other_peers() {
                self.send_extra(ctx, to, ExtraMessageType::MsgHibernateRequest, key);
            }
        }
        phase < HANDSHAKE_TICKS
    }

    fn other_peers(&self) -> Vec<metapb::Peer> {
        self.region
            .peers
            .iter()
            .filter(|p| p.id != self.meta.id)
            .copied()
            .collect()
    }

    fn all_agreed_to_sleep(&self) -> bool {
        self.region
            .peers
            .iter()
            .all(|p| p.id == self.meta.id || self.sleep_acks.contains(&p.id))
    }

    /// A hibernation message, or a follower's wake-up call.
    pub(super) fn on_extra_message(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
        from: Option<metapb::Peer>,
        extra: ExtraMessage,
    ) {
        let Some(from) = from else { return };
        match extra.r#type() {
            ExtraMessageType::MsgHibernateRequest => {
                let raft = &self.raw.raft;
                let view = FollowerView {
                    term: raft.term,
                    leader_id: raft.leader_id,
                    last_index: raft.raft_log.last_index(),
                    committed: raft.raft_log.committed,
                    reads_pending: self.reads_waiting() > 0,
                };
                // A merge in progress needs this replica's ticks.
                if !self.is_leader()
                    && ctx.cfg.hibernate_regions
                    && !self.merge_pending()
                    && follower_may_sleep(view, from.id, extra.term, extra.index)
                {
                    self.send_extra(
                        ctx,
                        from,
                        ExtraMessageType::MsgHibernateResponse,
                        (extra.term, extra.index),
                    );
                    self.sleep(ctx);
                }
            }
            ExtraMessageType::MsgHibernateResponse => {
                if self.is_leader() && self.sleep_request == Some((extra.term, extra.index)) {
                    self.sleep_acks.insert(from.id);
                    if self.all_agreed_to_sleep()
                        && self.idle_view().is_idle()
                        && !self.merge_pending()
                    {
                        self.sleep(ctx);
                    }
                }
            }
            ExtraMessageType::MsgRegionWakeUp => {
                self.wake(ctx, false);
                if self.is_leader() {
                    // Heartbeats now, before the follower's election timeout.
                    self.raw.ping();
                }
            }
            ExtraMessageType::MsgStoreHeartbeat => {}
        }
    }

    fn sleep(&mut self, ctx: &mut PollContext<impl crate::Transport>) {
        if self.asleep {
            return;
        }
        debug!(
            region_id = self.region.id,
            leader = self.is_leader(),
            "region hibernates"
        );
        self.asleep = true;
        self.idle_ticks = 0;
        self.sleep_request = None;
        self.sleep_acks.clear();
        ctx.awake.remove(self.region.id);
        // Every replica agreed to sleep: none waits for a snapshot.
        self.drop_made_snapshot(ctx);
        crate::metrics::HIBERNATED_PEERS.inc();
    }

    /// Wakes the peer if it sleeps. `tell_leader`: a follower woken by something other than
    /// its leader asks the leader to wake too, so heartbeats resume before its election timer
    /// runs out.
    pub(super) fn wake(&mut self, ctx: &mut PollContext<impl crate::Transport>, tell_leader: bool) {
        if !self.asleep {
            return;
        }
        self.asleep = false;
        self.idle_ticks = 0;
        ctx.awake.insert(self.region.id);
        crate::metrics::HIBERNATED_PEERS.dec();
        if tell_leader && !self.is_leader() {
            if let Some(leader) = self.leader() {
                self.send_extra(ctx, leader, ExtraMessageType::MsgRegionWakeUp, (0, 0));
            }
        }
    }

    /// Wakes for a Raft message: a follower need not wake its leader for the leader's own
    /// messages.
    pub(super) fn wake_for(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
        msg: &RaftMessage,
    ) {
        if !self.asleep {
            return;
        }
        let from_leader = msg
            .from_peer
            .is_some_and(|p| p.id == self.raw.raft.leader_id);
        self.wake(ctx, !from_leader);
    }

    /// `store_id` has been silent for an election timeout: a sleeping follower whose leader
    /// lives there wakes, so that its election timer runs again.
    pub(super) fn on_store_unreachable(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
        store_id: u64,
    ) {
        if self.asleep && !self.is_leader() && self.leader().is_none_or(|l| l.store_id == store_id)
        {
            debug!(
                region_id = self.region.id,
                store_id, "the leader's store is unreachable; waking"
            );
            self.wake(ctx, false);
        }
    }

    fn send_extra(
        &mut self,
        ctx: &mut PollContext<impl crate::Transport>,
        to: metapb::Peer,
        ty: ExtraMessageType,
        (term, index): (u64, u64),
    ) {
        let mut extra = ExtraMessage {
            term,
            index,
            ..Default::default()
        };
        extra.set_type(ty);
        ctx.transport.send(RaftMessage {
            region_id: self.region.id,
            from_peer: Some(self.meta),
            to_peer: Some(to),
            region_epoch: self.region.region_epoch,
            extra_msg: Some(extra),
            ..Default::default()
        });
    }
}
