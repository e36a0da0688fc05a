//! Waiting with deadlines.
//!
//! Every helper polls with a growing pause (1 ms doubling up to 50 ms), so a condition that
//! holds soon is seen soon and a slow one does not burn a busy machine's cores. The deadline
//! is wall time (`std::time::Instant`), also in the async forms.

use std::future::Future;
use std::time::{Duration, Instant};

const FIRST_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_millis(50);

fn next(pause: Duration) -> Duration {
    (pause * 2).min(MAX_PAUSE)
}

/// Polls `cond` until it holds; panics with `what` once `timeout` has passed.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = next(pause);
    }
}

/// Async form of [`wait_until`], for conditions that need to await.
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = next(pause);
    }
}

/// Calls `op` until it returns `Ok`, pausing between attempts; once `timeout` has passed,
/// returns the last error (so the caller can add context, such as a cluster's log tails).
/// `op` is called at least once.
pub fn retry<T, E>(timeout: Duration, mut op: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {
                std::thread::sleep(pause);
                pause = next(pause);
            }
        }
    }
}

/// Async form of [`retry`].
pub async fn retry_async<T, E, F, Fut>(timeout: Duration, mut op: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = next(pause);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn wait_until_returns_once_the_condition_holds() {
        let calls = Cell::new(0);
        wait_until("three calls", Duration::from_secs(10), || {
            calls.set(calls.get() + 1);
            calls.get() == 3
        });
        assert_eq!(calls.get(), 3);
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible")]
    fn wait_until_panics_with_its_message_after_the_deadline() {
        wait_until("the impossible", Duration::from_millis(20), || false);
    }

    #[test]
    fn retry_returns_the_last_error_after_the_deadline() {
        let mut n = 0;
        let got: Result<(), String> = retry(Duration::from_millis(20), || {
            n += 1;
            Err(format!("attempt {n}"))
        });
        assert_eq!(got, Err(format!("attempt {n}")));
        assert!(n >= 1);
        assert_eq!(retry(Duration::ZERO, || Ok::<_, ()>(7)), Ok(7));
    }

    #[tokio::test]
    async fn async_forms_wait_and_retry() {
        let mut n = 0;
        wait_until_async("two calls", Duration::from_secs(10), || {
            n += 1;
            let done = n == 2;
            async move { done }
        })
        .await;
        let mut m = 0;
        let got = retry_async(Duration::from_secs(10), || {
            m += 1;
            let attempt = m;
            async move {
                if attempt < 3 {
                    Err(attempt)
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
        assert_eq!(got, Ok(3));
    }
}
