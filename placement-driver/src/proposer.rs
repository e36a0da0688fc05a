//! The seam between PD's services and its state machine.
//!
//! [`StateHandle::propose`] is how a command reaches [`PdState`]: today it applies it locally, on
//! a blocking thread, and answers once the change is durable. With PD replication this becomes
//! "append to the Raft log, wait until committed and applied", and nothing above this module has
//! to change: callers already treat a proposal as asynchronous, fallible, and answered with an
//! [`ApplyResult`].
//!
//! Protocol of a local proposal:
//! 1. The command is encoded exactly as it will be in a Raft entry, and decoded again on the
//!    apply side, so that the local path exercises the encoding.
//! 2. Applies are serialized by `apply_lock`. Under it, the plan is computed under the *read*
//!    lock, written synced with no state lock held, then committed under a short write lock: a
//!    plan stays valid because no other apply can run in between, and readers never wait for an
//!    fsync.
//! 3. The blocking task owns everything it needs: if the proposing future is dropped halfway, the
//!    apply still completes or fails as a whole.
//!
//! Reads ([`StateHandle::read`]) see the state as of the last committed command.
//!
//! Deliberately absent: read-index / lease reads and proposal forwarding to a leader; both come
//! with Raft.

use std::sync::Arc;

use engine::Engine;
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::command::{ApplyResult, PdCommand};
use crate::state::PdState;
use crate::{Error, Result};

/// Shared access to the PD state machine; cheap to clone.
#[derive(Clone, Debug)]
pub struct StateHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    state: RwLock<PdState>,
    apply_lock: Mutex<()>,
    /// Dropped (last) when the state and its engine are gone; see [`StateHandle::open`].
    _closed: oneshot::Sender<()>,
}

impl StateHandle {
    /// Loads the state from `engine`. The returned receiver completes (with an error) once every
    /// clone of the handle is dropped and the engine is closed.
    pub fn open(engine: Engine) -> Result<(StateHandle, oneshot::Receiver<()>)> {
        let state = PdState::load(&engine)?;
        let (closed_tx, closed_rx) = oneshot::channel();
        let handle = StateHandle {
            inner: Arc::new(Inner {
                engine,
                state: RwLock::new(state),
                apply_lock: Mutex::new(()),
                _closed: closed_tx,
            }),
        };
        Ok((handle, closed_rx))
    }

    /// Runs `f` on the current state.
    pub fn read<R>(&self, f: impl FnOnce(&PdState) -> R) -> R {
        f(&self.inner.state.read())
    }

    /// Applies `cmd` durably and returns its result. See the module docs.
    pub async fn propose(&self, cmd: PdCommand) -> Result<ApplyResult> {
        let name = cmd.name();
        let entry = cmd.to_bytes();
        let inner = Arc::clone(&self.inner);
        let result = tokio::task::spawn_blocking(move || inner.apply_entry(&entry))
            .await
            .map_err(|e| Error::Internal(format!("apply task failed: {e}")))?;
        match &result {
            Ok(_) => tracing::trace!(command = name, "applied"),
            Err(e) if e.is_storage_failure() => {
                tracing::error!(command = name, error = %e, "PD storage failure while applying")
            }
            Err(e) => tracing::debug!(command = name, error = %e, "command rejected"),
        }
        result
    }
}

impl Inner {
    fn apply_entry(&self, entry: &[u8]) -> Result<ApplyResult> {
        let cmd = PdCommand::from_bytes(entry)?;
        let _serial = self.apply_lock.lock();
        let plan = self.state.read().plan(&cmd)?;
        if !plan.is_no_op() {
            self.engine.write(plan.write_batch(), true)?;
        }
        Ok(self.state.write().commit(plan))
    }
}
