//! Exponential backoff bounded by a deadline: the retry budget of one operation.
//!
//! Each retryable failure either retries at once ([`Backoff::retry_now`], used when the region
//! cache just learned a better route) or after a pause ([`Backoff::wait`]) that starts at
//! `base_backoff` and doubles up to `max_backoff`. More than [`MAX_QUICK_RETRIES`] immediate
//! retries in a row also pause, so that two peers pointing at each other cannot spin. A pause
//! that would end past the deadline ends the operation with [`Error::Timeout`], which carries
//! the last failure seen.
//!
//! The arithmetic takes the current instant as an argument, so it is testable without a clock.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;
use crate::error::{Error, Result};

/// Immediate retries allowed in a row before a pause is forced.
pub(crate) const MAX_QUICK_RETRIES: u32 = 3;

/// The retry state of one operation. Cloned into each parallel part of a batch, which then
/// shares the deadline but backs off independently.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    started: Instant,
    deadline: Instant,
    next: Duration,
    max: Duration,
    quick_in_a_row: u32,
    last_error: Option<String>,
}

impl Backoff {
    /// A fresh budget of `config.max_retry_time` starting now.
    pub(crate) fn new(config: &Config) -> Backoff {
        Backoff::starting_at(
            Instant::now(),
            config.base_backoff,
            config.max_backoff,
            config.max_retry_time,
        )
    }

    pub(crate) fn starting_at(
        now: Instant,
        base: Duration,
        max: Duration,
        budget: Duration,
    ) -> Backoff {
        Backoff {
            started: now,
            deadline: now + budget,
            next: base.max(Duration::from_millis(1)),
            max: max.max(base),
            quick_in_a_row: 0,
            last_error: None,
        }
    }

    /// Records `why` and returns the pause before the next attempt, or the timeout error when
    /// the pause would end past the deadline.
    pub(crate) fn next_pause(&mut self, why: &dyn Display, now: Instant) -> Result<Duration> {
        self.last_error = Some(why.to_string());
        let pause = self.next;
        if now + pause > self.deadline {
            return Err(self.timeout_error(now));
        }
        self.next = (self.next * 2).min(self.max);
        self.quick_in_a_row = 0;
        Ok(pause)
    }

    /// Like [`Backoff::next_pause`], pausing at least `hint` (a busy store's suggested
    /// backoff); the doubling goes on from the usual pause.
    pub(crate) fn next_pause_at_least(
        &mut self,
        why: &dyn Display,
        hint: Duration,
        now: Instant,
    ) -> Result<Duration> {
        let usual = self.next;
        let pause = usual.max(hint);
        self.last_error = Some(why.to_string());
        if now + pause > self.deadline {
            return Err(self.timeout_error(now));
        }
        self.next = (usual * 2).min(self.max);
        self.quick_in_a_row = 0;
        Ok(pause)
    }

    /// Like [`Backoff::next_pause`] but without a pause, unless too many immediate retries
    /// happened in a row or the deadline has passed.
    pub(crate) fn next_quick(&mut self, why: &dyn Display, now: Instant) -> Result<Duration> {
        if self.quick_in_a_row >= MAX_QUICK_RETRIES {
            return self.next_pause(why, now);
        }
        self.last_error = Some(why.to_string());
        if now >= self.deadline {
            return Err(self.timeout_error(now));
        }
        self.quick_in_a_row += 1;
        Ok(Duration::ZERO)
    }

    /// Sleeps before the next attempt; fails with [`Error::Timeout`] if out of time. (The
    /// pause is computed at the call, so the future holds neither `self` nor `why`.)
    pub(crate) fn wait(&mut self, why: &dyn Display) -> impl Future<Output = Result<()>> + Send {
        let pause = self.next_pause(why, Instant::now());
        sleep(pause)
    }

    /// Sleeps at least `hint` before the next attempt (see [`Backoff::next_pause_at_least`]).
    pub(crate) fn wait_at_least(
        &mut self,
        why: &dyn Display,
        hint: Duration,
    ) -> impl Future<Output = Result<()>> + Send {
        let pause = self.next_pause_at_least(why, hint, Instant::now());
        sleep(pause)
    }

    /// Allows an immediate retry (sleeping anyway after too many in a row).
    pub(crate) fn retry_now(
        &mut self,
        why: &dyn Display,
    ) -> impl Future<Output = Result<()>> + Send {
        let pause = self.next_quick(why, Instant::now());
        sleep(pause)
    }

    /// The timeout of the next attempt: `per_request`, cut to what is left of the budget.
    pub(crate) fn attempt_timeout(&self, per_request: Duration, now: Instant) -> Result<Duration> {
        let left = self.deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Err(self.timeout_error(now));
        }
        Ok(per_request.min(left))
    }

    /// What is left of the budget.
    pub(crate) fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }

    /// Ends the operation because an attempt cut short by the end of the budget did not finish
    /// in time: the failure that led to that attempt stays the one reported (`why` only when
    /// there was none), since running out of budget says nothing new about the cluster.
    pub(crate) fn budget_spent(&mut self, why: &dyn Display, now: Instant) -> Error {
        if self.last_error.is_none() {
            self.last_error = Some(why.to_string());
        }
        self.timeout_error(now)
    }

    /// Ends the operation: records `why` and returns the timeout error.
    pub(crate) fn give_up(&mut self, why: &dyn Display, now: Instant) -> Error {
        self.last_error = Some(why.to_string());
        self.timeout_error(now)
    }

    fn timeout_error(&self, now: Instant) -> Error {
        Error::Timeout {
            elapsed: now.saturating_duration_since(self.started),
            last_error: self.last_error.clone().unwrap_or_else(|| "none".to_owned()),
        }
    }
}

async fn sleep(pause: Result<Duration>) -> Result<()> {
    let pause = pause?;
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn pauses_double_up_to_the_cap() {
        let t0 = Instant::now();
        let mut bo = Backoff::starting_at(t0, ms(10), ms(40), Duration::from_secs(10));
        let pauses: Vec<_> = (0..5)
            .map(|_| bo.next_pause(&"busy", t0).unwrap())
            .collect();
        assert_eq!(pauses, vec![ms(10), ms(20), ms(40), ms(40), ms(40)]);
    }

    #[test]
    fn gives_up_at_the_deadline_with_the_last_error() {
        let t0 = Instant::now();
        let mut bo = Backoff::starting_at(t0, ms(10), ms(1000), ms(100));
        assert_eq!(bo.next_pause(&"first", t0).unwrap(), ms(10));
        let late = t0 + ms(95);
        match bo.next_pause(&"second", late) {
            Err(Error::Timeout {
                elapsed,
                last_error,
            }) => {
                assert_eq!(elapsed, ms(95));
                assert_eq!(last_error, "second");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(bo.attempt_timeout(ms(50), t0 + ms(100)).is_err());
        assert_eq!(bo.attempt_timeout(ms(50), t0 + ms(70)).unwrap(), ms(30));
        assert_eq!(bo.attempt_timeout(ms(50), t0).unwrap(), ms(50));
    }

    #[test]
    fn an_attempt_cut_short_by_the_budget_keeps_the_failure_before_it() {
        let t0 = Instant::now();
        let mut bo = Backoff::starting_at(t0, ms(10), ms(1000), ms(100));
        assert_eq!(bo.next_quick(&"not leader", t0 + ms(99)).unwrap(), ms(0));
        match bo.budget_spent(&"no answer within 1ms", t0 + ms(100)) {
            Error::Timeout { last_error, .. } => assert_eq!(last_error, "not leader"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        let mut fresh = Backoff::starting_at(t0, ms(10), ms(1000), ms(1));
        match fresh.budget_spent(&"no answer within 1ms", t0 + ms(1)) {
            Error::Timeout { last_error, .. } => assert_eq!(last_error, "no answer within 1ms"),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[test]
    fn a_busy_stores_hint_lengthens_the_pause_not_the_doubling() {
        let t0 = Instant::now();
        let mut bo = Backoff::starting_at(t0, ms(10), ms(1000), Duration::from_secs(1));
        assert_eq!(bo.next_pause_at_least(&"busy", ms(50), t0).unwrap(), ms(50));
        assert_eq!(bo.next_pause_at_least(&"busy", ms(5), t0).unwrap(), ms(20));
        assert_eq!(bo.next_pause(&"busy", t0).unwrap(), ms(40));
        assert!(
            bo.next_pause_at_least(&"busy", ms(2000), t0).is_err(),
            "a hint past the deadline ends the operation"
        );
    }

    #[test]
    fn quick_retries_are_bounded() {
        let t0 = Instant::now();
        let mut bo = Backoff::starting_at(t0, ms(10), ms(1000), Duration::from_secs(1));
        for _ in 0..MAX_QUICK_RETRIES {
            assert_eq!(bo.next_quick(&"not leader", t0).unwrap(), Duration::ZERO);
        }
        assert_eq!(bo.next_quick(&"not leader", t0).unwrap(), ms(10));
        // The pause reset the streak.
        assert_eq!(bo.next_quick(&"not leader", t0).unwrap(), Duration::ZERO);
        assert!(bo.next_quick(&"x", t0 + Duration::from_secs(1)).is_err());
    }
}
