//! Proposals: checking a client's request against the region (store, leadership, epoch,
//! keys), proposing writes and admin commands, and leader transfers.

use bytes::Bytes;
use prost::Message as _;
use proto::metapb;
use tracing::{debug, info};

use crate::apply::WriteCallback;
use crate::cmd::{AdminCmd, AdminKind, RaftCmd, SplitIds, WriteOp};
use crate::store::{PollContext, RequestHeader};
use crate::util::{epoch_version, find_peer, key_in_range};
use crate::{Error, Result};

use super::*;

/// Client writes that reached the peer one after another in one round, proposed as one entry
/// (TiKV's command batching): under load one Raft entry, one log write and one apply task then
/// carry many writes. Every write of the batch passed the request checks when it arrived; the
/// batch is proposed before the peer handles any message other than a write (so nothing that
/// could change the region, leadership or epoch comes between a check and the proposal, and
/// no admin command overtakes a write that arrived before it), and at the end of the peer's
/// turn in the round. The entry applies whole or not at all, and every write of it gets its
/// outcome; writes keep their arrival order inside it. A batch stays under half of
/// `raft_entry_max_size` (a write larger than that is proposed alone and refused as before).
#[derive(Default)]
pub(super) struct BatchedWrites {
    ops: Vec<WriteOp>,
    callbacks: Vec<WriteCallback>,
    bytes: usize,
}

/// About what `op` adds to an encoded command.
fn op_bytes(op: &WriteOp) -> usize {
    op.key.len() + op.value.len() + op.end_key.len() + op.cf.len() + 16
}

impl Peer {
    /// The checks every client request passes, in TiKV's order: store, leader, epoch, keys.
    pub(super) fn check_request(&self, header: &RequestHeader) -> Result<()> {
        self.check_store(header)?;
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        self.check_epoch_and_keys(header)
    }

    /// [`Self::check_request`] without the leadership check: the store, the epoch and the
    /// keys (for replica reads, which any replica may serve).
    pub(super) fn check_routing(&self, header: &RequestHeader) -> Result<()> {
        self.check_store(header)?;
        self.check_epoch_and_keys(header)
    }

    fn check_store(&self, header: &RequestHeader) -> Result<()> {
        match &header.peer {
            Some(p) if p.store_id != 0 && p.store_id != self.store_id => {
                Err(Error::StoreNotMatch {
                    requested: p.store_id,
                    actual: self.store_id,
                })
            }
            _ => Ok(()),
        }
    }

    fn check_epoch_and_keys(&self, header: &RequestHeader) -> Result<()> {
        if self.merge_busy() {
            return Err(Error::ProposalInMergingMode(self.region.id));
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

    /// Takes a client write into this round's batch (see [`BatchedWrites`]); it is proposed
    /// by [`Self::propose_batched`] before the peer handles any other message.
    pub(super) fn on_propose(
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
        let bytes: usize = ops.iter().map(op_bytes).sum();
        if !self.batched.callbacks.is_empty()
            && self.batched.bytes + bytes > ctx.cfg.raft_entry_max_size / 2
        {
            self.propose_batched(ctx);
        }
        self.batched.bytes += bytes;
        self.batched.ops.extend(ops);
        self.batched.callbacks.push(cb);
        if !ctx.cfg.batch_client_writes {
            self.propose_batched(ctx);
        }
    }

    /// Proposes the writes batched so far as one entry, whose outcome every one of them gets.
    pub(super) fn propose_batched(&mut self, ctx: &PollContext<impl crate::Transport>) {
        if self.batched.callbacks.is_empty() {
            return;
        }
        let BatchedWrites {
            ops, mut callbacks, ..
        } = std::mem::take(&mut self.batched);
        if self.destroyed {
            for cb in callbacks {
                cb(Err(Error::RegionNotFound(self.region.id)));
            }
            return;
        }
        let cb: WriteCallback = if callbacks.len() == 1 {
            callbacks.pop().expect("one callback")
        } else {
            crate::metrics::BATCHED_WRITES.observe(callbacks.len() as f64);
            Box::new(move |res| {
                for cb in callbacks {
                    cb(res.clone());
                }
            })
        };
        let cmd = RaftCmd {
            region_id: self.region.id,
            epoch: self.region.region_epoch,
            ops,
            admin: None,
        };
        self.propose(ctx, cmd, Some(cb));
    }

    pub(super) fn on_split(
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

    pub(super) fn propose(
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
            Some(Some(AdminKind::PrepareMerge)) => "prepare_merge",
            Some(Some(AdminKind::CommitMerge)) => "commit_merge",
            Some(Some(AdminKind::RollbackMerge)) => "rollback_merge",
            // Conf changes are proposed as conf change entries, never here.
            Some(Some(AdminKind::ChangePeer) | None) => "unknown",
        };
        let before = self.raw.raft.raft_log.last_index();
        // Splits are marked in the entry's context, so that the leader can tell them apart
        // when they commit without decoding every entry.
        // CommitMerge too: a target replica holds it back until its source caught up.
        let context = match kind {
            "split" => SPLIT_ENTRY_CONTEXT.to_vec(),
            "commit_merge" => crate::merge::COMMIT_MERGE_CONTEXT.to_vec(),
            _ => vec![],
        };
        if let Err(e) = self.raw.propose(context, data) {
            debug!(region_id = self.region.id, %e, "proposal dropped");
            if let Some(cb) = cb {
                cb(Err(self.not_leader()));
            }
            return;
        }
        match kind {
            "split" => crate::metrics::SPLIT_PROPOSALS.inc(),
            "compact_log" => crate::metrics::COMPACT_LOG_PROPOSALS.inc(),
            "consistency" | "unknown" | "prepare_merge" | "commit_merge" | "rollback_merge" => {
                crate::metrics::PROPOSALS.with_label_values(&[kind]).inc()
            }
            _ => crate::metrics::WRITE_PROPOSALS.inc(),
        }
        if let Some(cb) = cb {
            self.track_proposal(before, cb);
        }
    }

    /// Waits for the entry just appended after `before` to apply, then answers `cb`; if
    /// raft-rs appended anything else (it replaced the proposal), the proposal is stale.
    pub(super) fn track_proposal(&mut self, before: u64, cb: WriteCallback) {
        let index = self.raw.raft.raft_log.last_index();
        if index != before + 1 {
            cb(Err(Error::StaleCommand));
            return;
        }
        self.proposals.push(Proposal {
            index,
            term: self.raw.raft.term,
            proposed_at: self.cfg.clock.now(),
            payload: cb,
        });
    }

    pub(super) fn on_transfer_leader(
        &mut self,
        to: metapb::Peer,
        epoch: Option<metapb::RegionEpoch>,
    ) {
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
        self.lease.begin_transfer();
        self.raw.transfer_leader(to.id);
    }
}
