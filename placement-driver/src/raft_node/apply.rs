//! Applying committed entries on a PD member: each command's plan written with the applied
//! index in one (unsynced) batch, then committed to memory; log compaction; the leader's
//! barrier (its first empty entry); and the answer to the proposer waiting on this node.
//!
//! Not here: when entries are handed out (the Ready cycle, `super`), what a command does
//! (`crate::state`).

use super::*;

impl<S: RaftSender> RaftNode<S> {
    pub(super) fn apply(&mut self, entries: Vec<Entry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        for entry in entries {
            self.apply_entry(&entry)?;
        }
        let applied = self.applied.applied_index;
        self.raw.advance_apply_to(applied);
        self.raw.mut_store().set_applied(applied);
        Ok(())
    }

    fn apply_entry(&mut self, entry: &Entry) -> Result<()> {
        if entry.index <= self.applied.applied_index {
            return Ok(());
        }
        if entry.get_entry_type() != EntryType::EntryNormal {
            return self.apply_conf_change(entry);
        }
        let command = if entry.data.is_empty() {
            None
        } else {
            Some(PdCommand::from_bytes(&entry.data)?)
        };
        if let Some(PdCommand::CompactLog(compact)) = &command {
            self.apply_compact_log(entry, compact)?;
            self.answer(entry, Ok(ApplyResult::Done));
            return Ok(());
        }
        let planned = command.as_ref().map(|cmd| self.cell.state.read().plan(cmd));
        let plan = match planned {
            Some(Ok(plan)) => Some(plan),
            Some(Err(e)) if e.is_storage_failure() => return Err(e),
            Some(Err(rejection)) => {
                self.write_applied(entry, None)?;
                self.answer(entry, Err(rejection));
                return Ok(());
            }
            None => None,
        };
        self.write_applied(entry, plan.as_ref())?;
        let result = match plan {
            Some(plan) => {
                let mut state = self.cell.state.write();
                let result = state.commit(plan);
                let cluster_id = state.cluster_id();
                drop(state);
                self.status.set_cluster_id(cluster_id);
                result
            }
            None => ApplyResult::Done,
        };
        if command.is_none() {
            self.on_empty_entry_applied(entry);
        }
        self.answer(entry, Ok(result));
        Ok(())
    }

    /// Writes the plan's changes (if any) and the new applied index in one batch.
    fn write_applied(&mut self, entry: &Entry, plan: Option<&crate::state::Plan>) -> Result<()> {
        let mut wb = match plan {
            Some(plan) if !plan.is_no_op() => plan.write_batch(),
            _ => WriteBatch::new(),
        };
        self.applied.applied_index = entry.index;
        self.applied.applied_term = entry.term;
        self.applied.write(PD_RAFT_GROUP_ID, &mut wb);
        self.cell.engine.write(wb, false)?;
        Ok(())
    }

    /// Applies a `CompactLog` entry: the new truncated state, the applied index and the deletion
    /// of the dead entries go into one batch (see [`crate::log_gc`]).
    fn apply_compact_log(&mut self, entry: &Entry, compact: &CompactLog) -> Result<()> {
        let mut accepted =
            log_gc::accepts(compact.index, self.applied.truncated_index, entry.index);
        if accepted {
            match self.raw.store().term(compact.index) {
                Ok(t) if t == compact.term => {}
                other => {
                    // Committed entries have the same term everywhere: this would be a bug.
                    tracing::error!(
                        index = compact.index,
                        term = compact.term,
                        local = ?other,
                        "log GC entry does not match the local log; not compacting"
                    );
                    accepted = false;
                }
            }
        }
        let mut wb = WriteBatch::new();
        if accepted {
            self.applied.truncated_index = compact.index;
            self.applied.truncated_term = compact.term;
        }
        self.applied.applied_index = entry.index;
        self.applied.applied_term = entry.term;
        self.applied.write(PD_RAFT_GROUP_ID, &mut wb);
        if accepted {
            self.raw
                .mut_store()
                .compact_to(compact.index, compact.term, &mut wb);
            tracing::debug!(
                index = compact.index,
                term = compact.term,
                "PD raft log compacted"
            );
        }
        self.cell.engine.write(wb, false)?;
        Ok(())
    }

    /// The empty entry of this leader's term is applied: the leader is ready (see module docs).
    fn on_empty_entry_applied(&mut self, entry: &Entry) {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader || entry.term != raft.term {
            return;
        }
        let leadership = Leadership {
            term: raft.term,
            leader_id: raft.leader_id,
            ready: true,
        };
        if self.status.leadership() != leadership {
            self.status.set_leadership(leadership);
            match self.became_leader_at {
                Some((term, sent_at)) if term == raft.term => {
                    self.status.renew_lease(term, sent_at, self.timing.lease)
                }
                // Not seen becoming leader in a Ready of this term: the next ReadIndex renews.
                _ => {}
            }
            tracing::info!(term = raft.term, index = entry.index, "PD leader ready");
        }
    }

    pub(super) fn answer(&mut self, entry: &Entry, result: Result<ApplyResult>) {
        let mut result = Some(result);
        let (status, lease) = (&self.status, self.timing.lease);
        let proposed_here = self.proposals.settle(entry.index, entry.term, |settled| {
            match settled {
                Settled::Committed(p) => {
                    // Committed: a quorum has the entry, sent after it was proposed.
                    status.renew_lease(p.term, p.proposed_at, lease);
                    let result = result.take().expect("one proposal at one index");
                    let _ = p.payload.send(result);
                }
                Settled::Stale(p) => {
                    let _ = p.payload.send(Err(Error::NotLeader { leader: None }));
                }
            }
        });
        if let (false, Some(Err(e))) = (proposed_here, &result) {
            tracing::debug!(index = entry.index, error = %e, "replicated command rejected");
        }
    }
}
