//! The seam between PD's services and its state machine.
//!
//! [`StateHandle::propose`] is how a command reaches [`PdState`]: it is encoded, handed to this
//! node's Raft thread ([`crate::raft_node`]), appended to the replicated log by the leader, and
//! answered once it is committed and applied to `PdState` **on this node**, with the
//! [`ApplyResult`] (or the deterministic rejection) of applying it. Only a ready leader accepts
//! proposals; anywhere else the answer is [`Error::NotLeader`]. A proposal that does not complete
//! within the propose timeout (no quorum) fails with [`Error::NotLeader`] too; it may still
//! commit later, which every command tolerates (bounds only grow, region updates check epochs,
//! a repeated bootstrap is rejected).
//!
//! Reads ([`StateHandle::read`]) see the state as of the last command applied on this node. On
//! a follower that may be stale; leader-only services check [`StateHandle::serving_term`] first,
//! which holds only for a ready leader within its lease (see [`crate::raft_node`]), so reads
//! served by the leader are linearizable.
//!
//! The proposing future may be dropped at any time: the command still commits or fails as a
//! whole in the Raft thread.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use engine::Engine;
use parking_lot::RwLock;
use tokio::sync::oneshot;

use crate::command::{ApplyResult, PdCommand};
use crate::members::{MemberList, MemberRequest};
use crate::raft_node::{Leadership, NodeStatus, RaftMsg, StateCell};
use crate::state::PdState;
use crate::{Error, Result};

/// Shared access to the PD state machine; cheap to clone.
#[derive(Clone, Debug)]
pub struct StateHandle {
    cell: Arc<StateCell>,
    inbox: std_mpsc::Sender<RaftMsg>,
    status: Arc<NodeStatus>,
    propose_timeout: Duration,
}

/// What [`StateHandle::open`] returns besides the handle: the inbox of the Raft thread to be
/// started, and a receiver that completes (with an error) once the engine is closed.
pub(crate) struct Opened {
    pub handle: StateHandle,
    pub inbox: std_mpsc::Receiver<RaftMsg>,
    pub closed: oneshot::Receiver<()>,
}

impl StateHandle {
    /// Loads the state from `engine`, whose Raft group must be bootstrapped (see
    /// [`crate::membership`]). The caller must start the Raft thread on the returned inbox.
    pub(crate) fn open(
        engine: Engine,
        member_id: u64,
        members: MemberList,
        propose_timeout: Duration,
    ) -> Result<Opened> {
        let state = PdState::load(&engine)?;
        let status = Arc::new(NodeStatus::new(member_id, state.cluster_id(), members));
        let (closed_tx, closed) = oneshot::channel();
        let (inbox_tx, inbox) = std_mpsc::channel();
        let handle = StateHandle {
            cell: Arc::new(StateCell {
                engine,
                state: RwLock::new(state),
                _closed: closed_tx,
            }),
            inbox: inbox_tx,
            status,
            propose_timeout,
        };
        Ok(Opened {
            handle,
            inbox,
            closed,
        })
    }

    pub(crate) fn cell(&self) -> Arc<StateCell> {
        Arc::clone(&self.cell)
    }

    pub(crate) fn inbox(&self) -> std_mpsc::Sender<RaftMsg> {
        self.inbox.clone()
    }

    /// Leadership, lease and cluster id of this node.
    pub fn status(&self) -> &Arc<NodeStatus> {
        &self.status
    }

    /// Runs `f` on the current state.
    pub fn read<R>(&self, f: impl FnOnce(&PdState) -> R) -> R {
        f(&self.cell.state.read())
    }

    /// The leadership as known here.
    pub fn leadership(&self) -> Leadership {
        self.status.leadership()
    }

    /// The term this node may serve leader-only requests in, or `None`.
    pub fn serving_term(&self) -> Option<u64> {
        self.status.serving_term()
    }

    /// The error answering a leader-only request this node may not serve.
    pub fn not_leader(&self) -> Error {
        self.status.not_leader()
    }

    /// Changes the group's members (see [`crate::members`]) and returns the new list once the
    /// change is applied here. Like a command, it may still commit after a timeout.
    pub async fn change_members(&self, request: MemberRequest) -> Result<MemberList> {
        let result = self
            .ask(|reply| RaftMsg::ChangeMembers {
                request: request.clone(),
                reply,
            })
            .await;
        match result {
            Ok(ApplyResult::Members(list)) => Ok(list),
            Ok(other) => Err(Error::Internal(format!(
                "a membership change answered {other:?}"
            ))),
            Err(e) => {
                tracing::debug!(?request, error = %e, "membership change not applied");
                Err(e)
            }
        }
    }

    /// Replicates `cmd` and returns its result once applied here. See the module docs.
    /// [`PdCommand::CompactLog`] is refused: the Raft thread alone proposes it.
    pub async fn propose(&self, cmd: PdCommand) -> Result<ApplyResult> {
        let name = cmd.name();
        if matches!(cmd, PdCommand::CompactLog(_)) {
            // Only the Raft thread knows how far every member's log goes (see `crate::log_gc`).
            return Err(Error::InvalidArgument(
                "log compaction is proposed by the Raft thread only".to_owned(),
            ));
        }
        let result = self
            .ask(|reply| RaftMsg::Propose {
                data: cmd.to_bytes(),
                reply,
            })
            .await;
        match &result {
            Ok(_) => tracing::trace!(command = name, "applied"),
            Err(e) if e.is_storage_failure() => {
                tracing::error!(command = name, error = %e, "PD storage failure while applying")
            }
            Err(e) => tracing::debug!(command = name, error = %e, "command not applied"),
        }
        result
    }

    /// Hands the Raft thread the message `make` builds around a reply, and waits for the
    /// answer up to the propose timeout (then [`Error::NotLeader`]: it may still commit).
    async fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<ApplyResult>>) -> RaftMsg,
    ) -> Result<ApplyResult> {
        let (reply, answer) = oneshot::channel();
        self.inbox
            .send(make(reply))
            .map_err(|_| Error::ShuttingDown)?;
        match tokio::time::timeout(self.propose_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => Err(self.status.not_leader()),
        }
    }
}
