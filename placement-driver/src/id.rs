//! The unique id allocator (store, region and peer ids).
//!
//! Ids are handed out from memory, from a block `[next, bound]` whose upper end is persisted
//! (`PdState::meta().id_bound`) before any id in it is handed out. When the block runs out, the
//! bound is raised by `step` (or more for a large request) through the state machine. After a
//! restart or a leader change allocation resumes at `bound + 1`, so ids reserved but never
//! handed out are skipped, never repeated.
//!
//! Failover: only a serving leader allocates (see [`crate::tso`] for what "serving" means and
//! why a bound committed by an earlier leader is in every later leader's state). The allocator
//! is tied to the term it was created in; in a new term a fresh one starts from the replicated
//! bound as applied after the leader's barrier, hence above every id any earlier leader handed
//! out.
//!
//! Invariants:
//! - Every handed-out id is `<= bound` and the bound is durable before the id leaves PD.
//! - Ids are never repeated; id 0 is never handed out (0 means "none" on the wire).
//!
//! [`IdAllocator`] is the pure logic; [`Ids`] adds the lock and the persistence.

use parking_lot::Mutex;

use crate::command::PdCommand;
use crate::proposer::StateHandle;
use crate::{Error, Result};

/// The largest single request, a guard against absurd counts.
pub const MAX_ID_BATCH: u32 = 1 << 20;

/// The outcome of [`IdAllocator::alloc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdStep {
    /// The ids `first .. first + count` are allocated.
    Ready(u64),
    /// The bound must first be persisted at least this high, then retry.
    NeedBound(u64),
}

/// The pure allocation logic; see the module docs.
#[derive(Clone, Debug)]
pub struct IdAllocator {
    next: u64,
    bound: u64,
    step: u64,
}

impl IdAllocator {
    /// Resumes above `persisted_bound`, reserving `step` ids per persisted extension.
    pub fn new(persisted_bound: u64, step: u64) -> IdAllocator {
        IdAllocator {
            next: persisted_bound + 1,
            bound: persisted_bound,
            step: step.max(1),
        }
    }

    /// Allocates `count` consecutive ids.
    pub fn alloc(&mut self, count: u32) -> Result<IdStep> {
        if count == 0 || count > MAX_ID_BATCH {
            return Err(Error::InvalidArgument(format!(
                "id count must be in 1..={MAX_ID_BATCH}, got {count}"
            )));
        }
        let last = self.next + u64::from(count) - 1;
        if last > self.bound {
            return Ok(IdStep::NeedBound(last.max(self.bound + self.step)));
        }
        let first = self.next;
        self.next = last + 1;
        Ok(IdStep::Ready(first))
    }

    /// Records that the bound is persisted at least at `bound`.
    pub fn on_bound_saved(&mut self, bound: u64) {
        self.bound = self.bound.max(bound);
    }

    /// Skips every id `<= used`: they were assigned outside the allocator (and `used` is below
    /// the persisted bound, which the state machine guarantees).
    pub fn skip_through(&mut self, used: u64) {
        self.next = self.next.max(used + 1);
        self.bound = self.bound.max(used);
    }
}

/// The id service: [`IdAllocator`] plus leadership and replication of the bound.
#[derive(Debug)]
pub struct Ids {
    step: u64,
    /// The allocator of the term it serves (`None` before the first use).
    allocator: Mutex<Option<(u64, IdAllocator)>>,
    extend_lock: tokio::sync::Mutex<()>,
}

impl Ids {
    /// An id service reserving `step` ids per replicated extension.
    pub fn new(step: u64) -> Ids {
        Ids {
            step,
            allocator: Mutex::new(None),
            extend_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn with_allocator<R>(
        &self,
        state: &StateHandle,
        f: impl FnOnce(u64, &mut IdAllocator) -> R,
    ) -> Result<R> {
        let mut slot = self.allocator.lock();
        let term = state.serving_term().ok_or_else(|| state.not_leader())?;
        if slot.as_ref().is_none_or(|(t, _)| *t != term) {
            let replicated = state.read(|s| s.meta().id_bound);
            *slot = Some((term, IdAllocator::new(replicated, self.step)));
        }
        let (term, allocator) = slot.as_mut().expect("set above");
        Ok(f(*term, allocator))
    }

    /// Allocates `count` consecutive ids and returns the first.
    pub async fn alloc(&self, count: u32, state: &StateHandle) -> Result<u64> {
        loop {
            let (term, step) =
                self.with_allocator(state, |t, a| a.alloc(count).map(|s| (t, s)))??;
            match step {
                IdStep::Ready(first) => return Ok(first),
                IdStep::NeedBound(bound) => {
                    let _serial = self.extend_lock.lock().await;
                    let fits =
                        self.with_allocator(state, |t, a| t == term && a.alloc_would_fit(count))?;
                    if fits {
                        continue;
                    }
                    state.propose(PdCommand::SetIdBound(bound)).await?;
                    if let Some((t, a)) = self.allocator.lock().as_mut() {
                        if *t == term {
                            a.on_bound_saved(bound);
                        }
                    }
                    tracing::debug!(bound, term, "replicated id bound");
                }
            }
        }
    }

    /// See [`IdAllocator::skip_through`]; applies to the allocator of the current term.
    pub fn skip_through(&self, used: u64) {
        if let Some((_, a)) = self.allocator.lock().as_mut() {
            a.skip_through(used);
        }
    }
}

impl IdAllocator {
    fn alloc_would_fit(&self, count: u32) -> bool {
        self.next + u64::from(count) - 1 <= self.bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(step: IdStep) -> u64 {
        match step {
            IdStep::Ready(id) => id,
            IdStep::NeedBound(b) => panic!("unexpected NeedBound({b})"),
        }
    }

    #[test]
    fn blocks_and_restart() {
        let mut ids = IdAllocator::new(0, 100);
        assert_eq!(ids.alloc(1).unwrap(), IdStep::NeedBound(100));
        ids.on_bound_saved(100);
        assert_eq!(ready(ids.alloc(1).unwrap()), 1);
        assert_eq!(ready(ids.alloc(10).unwrap()), 2);
        assert_eq!(ids.alloc(200).unwrap(), IdStep::NeedBound(211));
        // Restart from the persisted bound: nothing below it comes back.
        let mut ids = IdAllocator::new(101, 100);
        assert_eq!(ids.alloc(1).unwrap(), IdStep::NeedBound(201));
        ids.on_bound_saved(201);
        assert_eq!(ready(ids.alloc(1).unwrap()), 102);
        assert!(ids.alloc(0).is_err());
    }

    #[test]
    fn skip_through_externally_used_ids() {
        let mut ids = IdAllocator::new(0, 10);
        ids.on_bound_saved(10);
        ids.skip_through(5);
        assert_eq!(ready(ids.alloc(1).unwrap()), 6);
    }
}
