//! Membership changes on the Raft thread: proposing a change an operator asked for, promoting a
//! learner that caught up, and applying a committed conf change to the member list, raft-rs's
//! configuration, the transport and the published status together. The rules are
//! [`crate::members`]'s; this file only carries them out.

use engine::WriteBatch;
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChangeV2, Entry, EntryType};
use raft::StateRole;
use raft_group::proposal::Proposal;
use tokio::sync::oneshot;

use super::{RaftNode, RaftSender, PD_RAFT_GROUP_ID};
use crate::command::ApplyResult;
use crate::members::{self, ChangeKind, MemberChange, MemberList, MemberRequest};
use crate::{Error, Result};

impl<S: RaftSender> RaftNode<S> {
    /// Whether a conf change is proposed and not yet applied here (raft-rs would turn another
    /// one into an empty entry).
    fn conf_change_pending(&self) -> bool {
        self.raw.raft.pending_conf_index > self.raw.raft.raft_log.applied
    }

    pub(super) fn on_change_members(
        &mut self,
        request: MemberRequest,
        reply: oneshot::Sender<Result<ApplyResult>>,
    ) {
        if self.raw.raft.state != StateRole::Leader || !self.status.leadership().ready {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if self.conf_change_pending() {
            let _ = reply.send(Err(Error::MembershipChangeInProgress));
            return;
        }
        let before = self.raw.raft.raft_log.last_index();
        let change = match members::plan(&self.members, &request, before + 1) {
            Ok(change) => change,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if !self.propose_member_change(&change) {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        tracing::info!(?request, "proposed a PD membership change");
        self.proposals.push(Proposal {
            index: self.raw.raft.raft_log.last_index(),
            term: self.raw.raft.term,
            proposed_at: std::time::Instant::now(),
            payload: reply,
        });
    }

    /// Proposes `change`; whether it went into the log.
    fn propose_member_change(&mut self, change: &MemberChange) -> bool {
        let before = self.raw.raft.raft_log.last_index();
        let cc = members::conf_change(change);
        match self.raw.propose_conf_change(change.encode_to_vec(), cc) {
            Ok(()) => self.raw.raft.raft_log.last_index() > before,
            Err(e) => {
                tracing::debug!(error = %e, "membership change not proposed");
                false
            }
        }
    }

    /// On a tick of a ready leader: promote a learner that caught up (see [`crate::members`]).
    pub(super) fn maybe_promote_learner(&mut self) {
        if self.raw.raft.state != StateRole::Leader
            || !self.status.leadership().ready
            || !self.members.members.iter().any(|m| m.learner)
            || self.conf_change_pending()
        {
            return;
        }
        let committed = self.raw.raft.raft_log.committed;
        let prs = self.raw.raft.prs();
        let Some(id) = members::learner_to_promote(&self.members, committed, |id| {
            prs.get(id).map(|p| members::Progress {
                matched: p.matched,
                recent_active: p.recent_active,
            })
        }) else {
            return;
        };
        match members::plan(&self.members, &MemberRequest::Promote { id }, 0) {
            Ok(change) => {
                if self.propose_member_change(&change) {
                    tracing::info!(member_id = id, "proposed promoting a caught-up PD learner");
                }
            }
            Err(e) => tracing::warn!(member_id = id, error = %e, "cannot promote PD learner"),
        }
    }

    /// Applies a committed conf change entry: the new list and the applied index in one batch,
    /// then raft-rs's configuration, the transport and the status.
    pub(super) fn apply_conf_change(&mut self, entry: &Entry) -> Result<()> {
        let decided = if entry.get_entry_type() == EntryType::EntryConfChangeV2 {
            self.decide_conf_change(entry)
        } else {
            Err("PD proposes no version 1 conf changes".to_owned())
        };
        let mut wb = WriteBatch::new();
        if let Ok((next, _, _)) = &decided {
            members::write(next, &mut wb);
        }
        self.applied.applied_index = entry.index;
        self.applied.applied_term = entry.term;
        self.applied.write(PD_RAFT_GROUP_ID, &mut wb);
        self.cell.engine.write(wb, false)?;
        match decided {
            Ok((next, change, cc)) => {
                // The list is valid for the change, so raft-rs's configuration accepts it too.
                match self.raw.apply_conf_change(&cc) {
                    Ok(cs) => self.raw.mut_store().set_conf_state(cs),
                    Err(e) => {
                        return Err(Error::Internal(format!(
                            "raft-rs refused a conf change the member list took: {e}"
                        )))
                    }
                }
                let member = change.member.clone().unwrap_or_default();
                tracing::info!(
                    change = ?change.kind(),
                    member = %member.name,
                    member_id = member.id,
                    index = entry.index,
                    "PD membership changed"
                );
                if change.kind() == ChangeKind::Remove && member.id == self.status.member_id() {
                    self.status.set_removed();
                }
                self.set_members(next.clone());
                self.answer(entry, Ok(ApplyResult::Members(next)));
            }
            Err(why) => {
                tracing::warn!(index = entry.index, %why, "conf change entry not applied");
                self.answer(entry, Err(Error::InvalidArgument(why)));
            }
        }
        Ok(())
    }

    fn decide_conf_change(
        &self,
        entry: &Entry,
    ) -> std::result::Result<(MemberList, MemberChange, ConfChangeV2), String> {
        let cc = ConfChangeV2::parse_from_bytes(&entry.data)
            .map_err(|e| format!("undecodable conf change: {e}"))?;
        let change = MemberChange::decode(&entry.context[..])
            .map_err(|e| format!("undecodable member change: {e}"))?;
        if members::conf_change(&change) != cc {
            return Err("the conf change does not match its member change".to_owned());
        }
        let next = members::apply(&self.members, &change)?;
        Ok((next, change, cc))
    }

    /// The group's members are now `list`: tell the transport and the status.
    pub(super) fn set_members(&mut self, list: MemberList) {
        self.sender.set_members(&list.members);
        self.status.set_member_list(list.clone());
        self.members = list;
    }
}
