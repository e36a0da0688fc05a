//! Tuning of the PD client: timeouts, retries and batching.

use std::time::Duration;

/// Tuning of the PD client; the defaults suit a local cluster and tests.
#[derive(Clone, Debug)]
pub struct PdClientConfig {
    /// Timeout of establishing one connection.
    pub connect_timeout: Duration,
    /// Timeout of one unary RPC, and of one TSO round trip.
    pub rpc_timeout: Duration,
    /// Retries of a retryable failure (so at most `1 + max_retries` attempts per call).
    pub max_retries: u32,
    /// First backoff between attempts; it doubles per attempt up to `max_backoff`, with jitter.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// The most timestamps requested in one TSO round trip.
    pub max_tso_batch: u32,
    /// Region heartbeats buffered while the stream is busy or being re-opened.
    pub heartbeat_queue: usize,
    /// HTTP/2 keepalive, which detects dead connections under the long-lived streams.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// TLS of the connections to PD (plaintext by default).
    pub security: security::SecurityManager,
    /// How often the client asks PD's leader for its members, so that it can still find PD
    /// once every member it knew of was replaced (PD membership changes).
    pub member_refresh_interval: Duration,
}

impl Default for PdClientConfig {
    fn default() -> Self {
        PdClientConfig {
            connect_timeout: Duration::from_secs(3),
            rpc_timeout: Duration::from_secs(10),
            max_retries: 10,
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            max_tso_batch: 10_000,
            heartbeat_queue: 1024,
            member_refresh_interval: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(3),
            security: security::SecurityManager::plaintext(),
        }
    }
}

impl PdClientConfig {
    /// The pause before retry number `attempt` (1-based): exponential, capped, with up to 50%
    /// random jitter so that many clients do not retry in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.max_backoff);
        let jitter = rand::random_range(0.5..=1.0);
        capped.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let config = PdClientConfig::default();
        assert!(config.backoff(1) <= Duration::from_millis(50));
        assert!(config.backoff(3) >= Duration::from_millis(100));
        assert!(config.backoff(30) <= Duration::from_secs(1));
    }
}
