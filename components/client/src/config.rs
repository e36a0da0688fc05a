//! Tuning of the clients: timeouts, retry budget, request sizes, transaction lock TTLs.

use std::time::Duration;

use pd_client::PdClientConfig;

/// Tuning of the clients; the defaults suit a local cluster and tests.
#[derive(Clone, Debug)]
pub struct Config {
    /// Timeout of one RPC to a store. A store that does not answer in time is treated like an
    /// unreachable one: the next attempt goes to another peer.
    pub request_timeout: Duration,
    /// Timeout of establishing a connection to a store.
    pub connect_timeout: Duration,
    /// How long one operation (or one region step of a scan / delete_range) keeps retrying
    /// before it fails with [`crate::Error::Timeout`].
    pub max_retry_time: Duration,
    /// First pause between retries; it doubles per retry up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Largest gRPC message sent or accepted, bytes.
    pub max_message_size: usize,
    /// Most keys (or pairs) in one batch request; larger region groups are split.
    pub max_batch_keys: usize,
    /// Most key and value bytes in one batch request; larger region groups are split.
    pub max_batch_bytes: usize,
    /// Most pairs asked for in one scan request; a larger limit takes several requests. Keep
    /// `scan_batch_size` times the typical value size well below `max_message_size`.
    pub scan_batch_size: u32,
    /// Time to live of a transaction's locks, counted from its start timestamp; a lock older
    /// than this may be rolled back by anyone who meets it. A running transaction keeps its
    /// locks alive with heartbeats every `txn_heartbeat_interval`.
    pub txn_lock_ttl: Duration,
    /// How often a transaction holding locks extends its primary lock's TTL
    /// (`KvTxnHeartBeat`) to the time since its start plus `txn_lock_ttl`.
    pub txn_heartbeat_interval: Duration,
    /// Send raw point reads (`get`) to every replica in turn, not only to the leader
    /// (TiKV's replica read): a follower serves them after a ReadIndex round with the leader,
    /// so they stay linearizable and spread read load over the stores.
    pub replica_read: bool,
    /// Tuning of the embedded PD client; its `security` (TLS) also applies to the
    /// connections to stores (see [`Config::with_security`]).
    pub pd: PdClientConfig,
}

impl Config {
    /// Connects to PD and to stores with `security`'s TLS.
    pub fn with_security(mut self, security: security::SecurityManager) -> Config {
        self.pd.security = security;
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            max_retry_time: Duration::from_secs(20),
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            max_message_size: 16 * 1024 * 1024,
            max_batch_keys: 4 * 1024,
            max_batch_bytes: 4 * 1024 * 1024,
            scan_batch_size: 1024,
            txn_lock_ttl: Duration::from_secs(3),
            txn_heartbeat_interval: Duration::from_secs(1),
            replica_read: false,
            pd: PdClientConfig::default(),
        }
    }
}
