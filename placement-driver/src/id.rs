//! The unique id allocator (store, region and peer ids).
//!
//! Ids are handed out from memory, from a block `[next, bound]` whose upper end is persisted
//! (`PdState::meta().id_bound`) before any id in it is handed out. When the block runs out, the
//! bound is raised by `step` (or more for a large request) through the state machine. After a
//! restart (or a leader change) allocation resumes at `bound + 1`, so ids reserved but never
//! handed out are skipped, never repeated.
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

/// The id service: [`IdAllocator`] plus persistence through the state machine.
#[derive(Debug)]
pub struct Ids {
    allocator: Mutex<IdAllocator>,
    extend_lock: tokio::sync::Mutex<()>,
}

impl Ids {
    /// An allocator resuming above the bound persisted in `state`.
    pub fn new(state: &StateHandle, step: u64) -> Ids {
        let persisted = state.read(|s| s.meta().id_bound);
        Ids {
            allocator: Mutex::new(IdAllocator::new(persisted, step)),
            extend_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Allocates `count` consecutive ids and returns the first.
    pub async fn alloc(&self, count: u32, state: &StateHandle) -> Result<u64> {
        loop {
            let step = self.allocator.lock().alloc(count)?;
            match step {
                IdStep::Ready(first) => return Ok(first),
                IdStep::NeedBound(bound) => {
                    let _serial = self.extend_lock.lock().await;
                    if self.allocator.lock().alloc_would_fit(count) {
                        continue;
                    }
                    state.propose(PdCommand::SetIdBound(bound)).await?;
                    self.allocator.lock().on_bound_saved(bound);
                    tracing::debug!(bound, "persisted id bound");
                }
            }
        }
    }

    /// See [`IdAllocator::skip_through`].
    pub fn skip_through(&self, used: u64) {
        self.allocator.lock().skip_through(used);
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
