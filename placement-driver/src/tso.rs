//! The timestamp oracle.
//!
//! A timestamp is `physical_ms << 18 | logical` with `logical < 2^18`. A request for `count`
//! timestamps gets the consecutive range `(p, l + 1) ..= (p, l + count)` and is answered with its
//! last element; the requester derives the others.
//!
//! Protocol:
//! - The physical part follows the wall clock: when the clock has moved past the current
//!   physical time, the physical part jumps to it and the logical counter restarts at 0.
//! - When a range would overflow the logical counter, the physical part moves one millisecond
//!   ahead of where it is (possibly ahead of the wall clock, which then catches up).
//! - Crash safety: a timestamp with physical part `p` is handed out only if the replicated TSO
//!   bound (`PdState::meta().tso_bound_ms`) is `>= p`, i.e. a `SetTsoBound` at least `p` is
//!   committed and applied. The bound is kept `save_interval` ahead; a background tick extends
//!   it when the clock gets within a third of the window of it, so requests normally never wait
//!   for the log. After a restart the physical part starts above the bound, hence above
//!   everything handed out.
//!
//! Failover (PD on Raft). Only a *serving* leader hands out timestamps: one that leads term `T`,
//! has applied an entry of `T` (its barrier), and holds its lease
//! ([`crate::StateHandle::serving_term`], checked under the allocator lock right before every
//! allocation). The allocator is tied to the term it was created in; the first request (or tick)
//! in a new term creates a fresh one from the replicated bound `B` as applied after the barrier,
//! starting at physical `max(now, B + 1)`, whose first allocation must first replicate a new
//! bound `max(now, B + 1) + save_interval` through Raft.
//!
//! Why timestamps are unique and increasing across leaders, even while a deposed leader still
//! believes it leads:
//! 1. A leader of term `T` hands out `(p, l)` only after a `SetTsoBound(b >= p)` proposed by it
//!    was applied, hence committed.
//! 2. A committed entry is in the log of every later leader, below its barrier; so a leader of
//!    `T' > T` starts from a replicated bound `B' >= b >= p` and hands out only physical parts
//!    `> B'`. A bound the old leader proposes once `T'` has begun cannot commit before the new
//!    leader's barrier without being in its log below the barrier (then `B'` includes it), and
//!    cannot commit after it at all (entries of an older term commit only as a prefix of the
//!    new leader's log). So everything the old leader ever hands out is `<= B'`.
//! 3. Hence the timestamps of distinct terms are disjoint and ordered by term, and within a term
//!    the allocator is strictly increasing.
//!
//! The lease adds real-time order on top: a deposed leader stops serving within
//! `leader_lease` (< election timeout) of its last quorum contact, before any new leader can be
//! elected, so no client receives an old-term timestamp after a new-term one was handed out.
//!
//! Invariants:
//! - Handed-out timestamps are strictly increasing, across restarts and leader changes too.
//! - `physical <= replicated bound` for every handed-out timestamp.
//!
//! The decision logic is [`TsoAllocator`], pure and driven by an explicit `now`; [`Tso`] wraps it
//! with the clock, a lock, the leadership check and the replication of the bound.
//!
//! Implementation caveats: no local/global TSO split (`dc_location` is ignored), no suffix bits.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::Clock;
use crate::command::PdCommand;
use crate::proposer::StateHandle;
use crate::{Error, Result};

/// Bits of the logical part of a timestamp.
pub const LOGICAL_BITS: u32 = 18;
/// Logical values are `< MAX_LOGICAL`.
pub const MAX_LOGICAL: u64 = 1 << LOGICAL_BITS;

/// Composes a timestamp from its physical (ms) and logical parts.
pub fn compose_ts(physical_ms: u64, logical: u64) -> u64 {
    (physical_ms << LOGICAL_BITS) | logical
}

/// A hybrid timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// Unix milliseconds.
    pub physical: u64,
    /// `< MAX_LOGICAL`.
    pub logical: u64,
}

impl Timestamp {
    /// The composed `u64` form.
    pub fn compose(self) -> u64 {
        compose_ts(self.physical, self.logical)
    }
}

/// The outcome of [`TsoAllocator::alloc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsoStep {
    /// The range was allocated; this is its last timestamp.
    Ready(Timestamp),
    /// The bound must first be persisted at least this high (ms), then retry.
    NeedBound(u64),
}

/// The pure TSO decision logic; see the module docs.
#[derive(Clone, Debug)]
pub struct TsoAllocator {
    /// The largest timestamp handed out (or the starting point).
    last: Timestamp,
    /// Persisted upper bound of the physical part.
    bound: u64,
    save_interval_ms: u64,
}

impl TsoAllocator {
    /// Starts above `persisted_bound`, and at `now_ms` if that is later.
    pub fn new(persisted_bound: u64, now_ms: u64, save_interval: Duration) -> TsoAllocator {
        TsoAllocator {
            last: Timestamp {
                physical: now_ms.max(persisted_bound.saturating_add(1)),
                logical: 0,
            },
            bound: persisted_bound,
            save_interval_ms: u64::try_from(save_interval.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The persisted bound as known to the allocator.
    pub fn bound(&self) -> u64 {
        self.bound
    }

    /// The largest timestamp handed out so far (or the starting point).
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// Allocates `count` consecutive timestamps at wall time `now_ms`.
    pub fn alloc(&mut self, now_ms: u64, count: u32) -> Result<TsoStep> {
        let count = u64::from(count);
        if count == 0 || count >= MAX_LOGICAL {
            return Err(Error::InvalidArgument(format!(
                "tso count must be in 1..{MAX_LOGICAL}, got {count}"
            )));
        }
        let (mut physical, mut logical) = if now_ms > self.last.physical {
            (now_ms, 0)
        } else {
            (self.last.physical, self.last.logical)
        };
        if logical + count >= MAX_LOGICAL {
            physical += 1;
            logical = 0;
        }
        if physical > self.bound {
            return Ok(TsoStep::NeedBound(physical + self.save_interval_ms));
        }
        self.last = Timestamp {
            physical,
            logical: logical + count,
        };
        Ok(TsoStep::Ready(self.last))
    }

    /// The bound to persist ahead of time at wall time `now_ms`, if the window is getting short.
    pub fn extension_due(&self, now_ms: u64) -> Option<u64> {
        let physical = now_ms.max(self.last.physical);
        (physical + self.save_interval_ms / 3 > self.bound)
            .then_some(physical + self.save_interval_ms)
    }

    /// Records that the bound is persisted at least at `bound`.
    pub fn on_bound_saved(&mut self, bound: u64) {
        self.bound = self.bound.max(bound);
    }
}

/// The TSO service: [`TsoAllocator`] plus the clock, leadership and replication of the bound.
#[derive(Debug)]
pub struct Tso {
    clock: Arc<dyn Clock>,
    save_interval: Duration,
    /// The allocator of the term it serves (`None` before the first use).
    allocator: Mutex<Option<(u64, TsoAllocator)>>,
    /// Serializes bound extensions so that concurrent requests do not all propose.
    extend_lock: tokio::sync::Mutex<()>,
}

impl Tso {
    /// A TSO; it starts serving when this node becomes a serving leader.
    pub fn new(clock: Arc<dyn Clock>, save_interval: Duration) -> Tso {
        Tso {
            clock,
            save_interval,
            allocator: Mutex::new(None),
            extend_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs `f` on the allocator of the term this node serves now, creating it from the
    /// replicated bound if the term is new. Fails if this node may not serve.
    fn with_allocator<R>(
        &self,
        state: &StateHandle,
        f: impl FnOnce(u64, &mut TsoAllocator) -> R,
    ) -> Result<R> {
        let mut slot = self.allocator.lock();
        let term = state.serving_term().ok_or_else(|| state.not_leader())?;
        if slot.as_ref().is_none_or(|(t, _)| *t != term) {
            let replicated = state.read(|s| s.meta().tso_bound_ms);
            let now = self.clock.now_ms();
            tracing::info!(
                term,
                replicated_bound_ms = replicated,
                "TSO starts for a new term"
            );
            *slot = Some((term, TsoAllocator::new(replicated, now, self.save_interval)));
        }
        let (term, allocator) = slot.as_mut().expect("set above");
        Ok(f(*term, allocator))
    }

    /// Allocates `count` consecutive timestamps and returns the last one.
    pub async fn get(&self, count: u32, state: &StateHandle) -> Result<Timestamp> {
        // Each round either succeeds or replicates a bound above the physical time it needed;
        // only a clock racing ahead by more than the save interval per round can exhaust them.
        const MAX_ROUNDS: usize = 8;
        for _ in 0..MAX_ROUNDS {
            let now = self.clock.now_ms();
            let (term, step) =
                self.with_allocator(state, |term, a| a.alloc(now, count).map(|s| (term, s)))??;
            match step {
                TsoStep::Ready(ts) => return Ok(ts),
                TsoStep::NeedBound(bound) => self.extend(term, bound, state).await?,
            }
        }
        Err(Error::Tso(format!(
            "could not replicate a TSO bound ahead of the clock in {MAX_ROUNDS} rounds"
        )))
    }

    /// Extends the replicated bound if the window is getting short (at once in a new term).
    /// Called periodically; does nothing unless this node is a serving leader.
    pub async fn tick(&self, state: &StateHandle) -> Result<()> {
        if state.serving_term().is_none() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let (term, due) = self.with_allocator(state, |term, a| (term, a.extension_due(now)))?;
        match due {
            Some(bound) => self.extend(term, bound, state).await,
            None => Ok(()),
        }
    }

    /// The last timestamp handed out in the current allocator's term (for tests and status).
    pub fn last(&self) -> Option<Timestamp> {
        self.allocator.lock().as_ref().map(|(_, a)| a.last())
    }

    async fn extend(&self, term: u64, bound: u64, state: &StateHandle) -> Result<()> {
        let _serial = self.extend_lock.lock().await;
        let covered = self
            .allocator
            .lock()
            .as_ref()
            .is_some_and(|(t, a)| *t == term && a.bound() >= bound);
        if covered {
            return Ok(());
        }
        state.propose(PdCommand::SetTsoBound(bound)).await?;
        // Committed and applied. If the term changed meanwhile, the new term's allocator starts
        // from the replicated state, which includes this bound (see the module docs).
        if let Some((t, a)) = self.allocator.lock().as_mut() {
            if *t == term {
                a.on_bound_saved(bound);
            }
        }
        tracing::debug!(bound_ms = bound, term, "replicated TSO bound");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(3000);

    fn ready(step: TsoStep) -> Timestamp {
        match step {
            TsoStep::Ready(ts) => ts,
            TsoStep::NeedBound(b) => panic!("unexpected NeedBound({b})"),
        }
    }

    #[test]
    fn starts_above_bound_and_needs_persisting_first() {
        let mut tso = TsoAllocator::new(10_000, 5_000, WINDOW);
        assert_eq!(tso.alloc(5_000, 1).unwrap(), TsoStep::NeedBound(13_001));
        tso.on_bound_saved(13_001);
        let ts = ready(tso.alloc(5_000, 1).unwrap());
        assert_eq!(
            ts,
            Timestamp {
                physical: 10_001,
                logical: 1
            }
        );
    }

    #[test]
    fn strictly_increasing_with_clock_and_logical_overflow() {
        let mut tso = TsoAllocator::new(0, 1_000, WINDOW);
        tso.on_bound_saved(1_000_000);
        let mut last = 0;
        let mut now = 1_000;
        for i in 0..10_000u32 {
            if i % 100 == 0 {
                now += 1;
            }
            // Big batches force logical overflow within one millisecond.
            let count = if i % 7 == 0 { 100_000 } else { 1 + i % 50 };
            let ts = ready(tso.alloc(now, count).unwrap());
            assert!(ts.logical < MAX_LOGICAL);
            let first = ts.compose() - u64::from(count) + 1;
            assert!(first > last, "range starting {first} not above {last}");
            last = ts.compose();
        }
        // Overflow pushed physical ahead of the wall clock; it stays monotonic regardless.
        assert!(tso.last().physical >= now);
    }

    #[test]
    fn clock_going_backwards_does_not_go_backwards() {
        let mut tso = TsoAllocator::new(0, 5_000, WINDOW);
        tso.on_bound_saved(100_000);
        let a = ready(tso.alloc(5_000, 1).unwrap());
        let b = ready(tso.alloc(4_000, 1).unwrap());
        assert!(b > a);
        assert_eq!(b.physical, 5_000);
    }

    #[test]
    fn never_beyond_bound_and_extension_due_early() {
        let mut tso = TsoAllocator::new(0, 1_000, WINDOW);
        tso.on_bound_saved(4_000);
        assert_eq!(tso.extension_due(1_000), None);
        assert_eq!(tso.extension_due(3_001), Some(6_001));
        ready(tso.alloc(4_000, 1).unwrap());
        assert_eq!(tso.alloc(4_001, 1).unwrap(), TsoStep::NeedBound(7_001));
        assert!(tso.alloc(4_001, 0).is_err());
        assert!(tso.alloc(4_001, 1 << 18).is_err());
    }
}
