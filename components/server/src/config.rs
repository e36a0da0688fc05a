//! Server configuration: a TOML file whose every field has a default, overridden by flags.
//! Unknown fields are rejected so that a typo is an error, not a silently ignored setting.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use storage::read_pool::{ReadPoolConfig, MAX_READ_POOL_SIZE};

/// Configuration of one store process.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the gRPC server listens on (KV API and Raft transport).
    pub addr: String,
    /// Address other nodes and clients use to reach this store; empty: `addr`.
    pub advertise_addr: String,
    /// Address of the HTTP status server (`/metrics`, `/status`); empty: none.
    pub status_addr: String,
    /// Directory of the store's RocksDB.
    pub data_dir: PathBuf,
    /// PD client endpoints.
    pub pd_endpoints: Vec<String>,
    /// Seconds between store heartbeats to PD.
    pub store_heartbeat_secs: u64,
    /// Seconds between region heartbeats of each leader to PD.
    pub region_heartbeat_secs: u64,
    /// A replica its leader has not heard from for this many seconds is reported down to PD
    /// (TiKV's `max-peer-down-duration`).
    pub max_peer_down_secs: u64,
    /// Milliseconds between HTTP/2 keepalive pings on gRPC connections, both the Raft
    /// connections this store opens to other stores and every connection it accepts (TiKV's
    /// `grpc-keepalive-time`).
    pub grpc_keepalive_time_ms: u64,
    /// Milliseconds to wait for a ping's acknowledgement before the connection is closed
    /// (TiKV's `grpc-keepalive-timeout`).
    pub grpc_keepalive_timeout_ms: u64,
    pub raftstore: RaftstoreConfig,
    pub readpool: ReadPoolConfig,
    pub limits: Limits,
    pub split: SplitConfig,
    pub gc: GcConfig,
    pub slow_log: SlowLogConfig,
    /// Mutual TLS for every connection (TiKV's `[security]`); off when its paths are empty.
    pub security: security::SecurityConfig,
}

/// The slow-request log (see [`crate::admission`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowLogConfig {
    /// Client requests that take at least this many milliseconds are logged (target
    /// `slow_log`) with their region and the time of each stage; 0 logs every request.
    pub threshold_ms: u64,
}

impl Default for SlowLogConfig {
    fn default() -> Self {
        SlowLogConfig { threshold_ms: 1000 }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: "127.0.0.1:20160".into(),
            advertise_addr: String::new(),
            status_addr: String::new(),
            data_dir: PathBuf::from("./data/store"),
            pd_endpoints: vec!["127.0.0.1:2379".into()],
            store_heartbeat_secs: 10,
            region_heartbeat_secs: 10,
            max_peer_down_secs: 600,
            grpc_keepalive_time_ms: 10_000,
            grpc_keepalive_timeout_ms: 3_000,
            raftstore: RaftstoreConfig::default(),
            readpool: ReadPoolConfig::default(),
            limits: Limits::default(),
            split: SplitConfig::default(),
            gc: GcConfig::default(),
            slow_log: SlowLogConfig::default(),
            security: security::SecurityConfig::default(),
        }
    }
}

impl ServerConfig {
    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<ServerConfig, String> {
        let cfg: ServerConfig = toml::from_str(text).map_err(|e| format!("invalid config: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn advertise(&self) -> &str {
        if self.advertise_addr.is_empty() {
            &self.addr
        } else {
            &self.advertise_addr
        }
    }

    /// The first problem of the configuration, if any (see [`ServerConfig::problems`]).
    pub fn validate(&self) -> Result<(), String> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Every problem of the configuration: the first of each section, then those across
    /// sections. Empty: valid.
    pub fn problems(&self) -> Vec<String> {
        let sections = [
            self.raftstore.to_raftstore().validate(),
            self.readpool.validate(),
            self.limits.validate(),
            self.split.validate(),
            self.gc.validate(),
        ];
        let mut out: Vec<String> = sections.into_iter().filter_map(Result::err).collect();
        if self.gc.batch_bytes >= self.raftstore.raft_entry_max_size {
            out.push("gc.batch_bytes must be below raftstore.raft_entry_max_size".into());
        }
        out.extend(self.security.problems());
        if self.pd_endpoints.is_empty() {
            out.push("pd_endpoints must not be empty".into());
        }
        if self.grpc_keepalive_time_ms == 0 || self.grpc_keepalive_timeout_ms == 0 {
            out.push(
                "grpc_keepalive_time_ms and grpc_keepalive_timeout_ms must be positive".into(),
            );
        }
        out
    }

    /// Limits of snapshot transfer between stores.
    pub fn snapshot_limits(&self) -> crate::snap::SnapshotLimits {
        let r = &self.raftstore;
        crate::snap::SnapshotLimits {
            max_sends: r.concurrent_send_snap_limit.max(1),
            max_receives: r.concurrent_recv_snap_limit.max(1),
            send_bytes_per_sec: r.snap_io_max_bytes_per_sec.max(1),
            max_bytes: crate::snap::SnapshotLimits::default().max_bytes,
        }
    }

    /// The HTTP/2 keepalive of gRPC connections.
    pub fn keepalive(&self) -> crate::transport::Keepalive {
        crate::transport::Keepalive {
            interval: Duration::from_millis(self.grpc_keepalive_time_ms),
            timeout: Duration::from_millis(self.grpc_keepalive_timeout_ms),
        }
    }
}

/// The raftstore knobs worth exposing.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftstoreConfig {
    pub raft_base_tick_ms: u64,
    pub raft_election_ticks: usize,
    pub raft_heartbeat_ticks: usize,
    pub raft_entry_max_size: usize,
    pub raft_log_gc_threshold: u64,
    /// Compact past lagging replicas once the log holds more entries than this.
    pub raft_log_gc_count_limit: u64,
    pub store_pool_size: usize,
    pub apply_pool_size: usize,
    pub max_pending_proposals: usize,
    /// A snapshot not acknowledged within this long is sent again.
    pub snapshot_timeout_ms: u64,
    /// Snapshots this store sends at a time.
    pub concurrent_send_snap_limit: usize,
    /// Snapshots this store receives at a time.
    pub concurrent_recv_snap_limit: usize,
    /// Bytes per second a store sends snapshots at.
    pub snap_io_max_bytes_per_sec: u64,
    /// Idle regions stop ticking until there is work (TiKV's hibernate regions).
    pub hibernate_regions: bool,
    /// Client writes that reach a leader together share one Raft entry (TiKV's command
    /// batching); off by default for now.
    pub batch_client_writes: bool,
}

impl Default for RaftstoreConfig {
    fn default() -> Self {
        let d = raftstore::Config::default();
        let snap = crate::snap::SnapshotLimits::default();
        RaftstoreConfig {
            raft_base_tick_ms: d.raft_base_tick.as_millis() as u64,
            raft_election_ticks: d.raft_election_ticks,
            raft_heartbeat_ticks: d.raft_heartbeat_ticks,
            raft_entry_max_size: d.raft_entry_max_size,
            raft_log_gc_threshold: d.raft_log_gc_threshold,
            raft_log_gc_count_limit: d.raft_log_gc_count_limit,
            store_pool_size: d.store_pool_size,
            apply_pool_size: d.apply_pool_size,
            max_pending_proposals: d.max_pending_proposals,
            snapshot_timeout_ms: d.snapshot_timeout.as_millis() as u64,
            concurrent_send_snap_limit: snap.max_sends,
            concurrent_recv_snap_limit: snap.max_receives,
            snap_io_max_bytes_per_sec: snap.send_bytes_per_sec,
            hibernate_regions: d.hibernate_regions,
            batch_client_writes: d.batch_client_writes,
        }
    }
}

impl RaftstoreConfig {
    pub fn to_raftstore(&self) -> raftstore::Config {
        raftstore::Config {
            raft_base_tick: Duration::from_millis(self.raft_base_tick_ms),
            raft_election_ticks: self.raft_election_ticks,
            raft_heartbeat_ticks: self.raft_heartbeat_ticks,
            raft_entry_max_size: self.raft_entry_max_size,
            raft_log_gc_threshold: self.raft_log_gc_threshold,
            raft_log_gc_count_limit: self.raft_log_gc_count_limit,
            snapshot_timeout: Duration::from_millis(self.snapshot_timeout_ms),
            store_pool_size: self.store_pool_size,
            apply_pool_size: self.apply_pool_size,
            max_pending_proposals: self.max_pending_proposals,
            hibernate_regions: self.hibernate_regions,
            batch_client_writes: self.batch_client_writes,
            ..Default::default()
        }
    }
}

/// Automatic region split by size.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitConfig {
    /// A region a leader finds larger than this (keys and values of all column families) is
    /// split; 0 turns automatic split off.
    pub region_max_size: u64,
    /// Where it is split: the first key at which this much data lies before it.
    pub region_split_size: u64,
    /// Seconds between checks of the regions this store leads.
    pub check_secs: u64,
    /// A region whose leader here serves more raw requests a second than this, for
    /// `detect_windows` seconds in a row, is split by load (see `load_split`); 0: never.
    pub qps_threshold: u64,
    pub detect_windows: u32,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            region_max_size: 144 << 20,
            region_split_size: 96 << 20,
            check_secs: 10,
            qps_threshold: 3000,
            detect_windows: 3,
        }
    }
}

impl SplitConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.region_max_size != 0 && self.region_split_size >= self.region_max_size {
            return Err("split.region_split_size must be below split.region_max_size".into());
        }
        if self.check_secs == 0 {
            return Err("split.check_secs must be positive".into());
        }
        Ok(())
    }
}

/// The store's MVCC garbage collection (see [`crate::gc_worker`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Seconds between two asks for PD's GC safe point (each followed by a GC round if it
    /// moved); 0 turns the GC worker off.
    pub run_interval_secs: u64,
    /// Most keys one GC command collects (and latches).
    pub batch_keys: usize,
    /// Most bytes of deletes one GC command proposes; below `raftstore.raft_entry_max_size`.
    pub batch_bytes: usize,
    /// Milliseconds between two GC commands of a region, leaving room to foreground traffic.
    pub batch_pause_ms: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            run_interval_secs: 60,
            batch_keys: 256,
            batch_bytes: 1 << 20,
            batch_pause_ms: 10,
        }
    }
}

impl GcConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_keys == 0 || self.batch_bytes == 0 {
            return Err("gc.batch_keys and gc.batch_bytes must be positive".into());
        }
        Ok(())
    }
}

/// Limits on client requests. A request beyond them is answered with an error and changes
/// nothing.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest key, bytes.
    pub max_key_size: usize,
    /// Largest value, bytes.
    pub max_value_size: usize,
    /// Largest scan limit.
    pub max_scan_limit: u32,
    /// Largest gRPC message, bytes.
    pub max_grpc_message_size: usize,
    /// How long a request may wait for the raftstore, milliseconds.
    pub request_timeout_ms: u64,
    /// Client requests the store serves at once; beyond, ServerIsBusy at once (see
    /// [`crate::admission`]).
    pub max_inflight_requests: usize,
    /// Bytes of writes proposed and not yet applied; beyond, ServerIsBusy at once (TiKV's
    /// `scheduler-pending-write-threshold`).
    pub max_pending_write_bytes: usize,
    /// Bytes of committed entries waiting for this store's apply workers (as leader or
    /// follower); beyond, new writes get ServerIsBusy at once until apply catches up.
    pub max_apply_backlog_bytes: usize,
    /// Concurrent requests (HTTP/2 streams) one client connection may have open; more wait in
    /// the client (TiKV's `grpc-concurrent-stream`).
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_size: 8 * 1024,
            max_value_size: 6 * 1024 * 1024,
            max_scan_limit: 64 * 1024,
            max_grpc_message_size: 16 * 1024 * 1024,
            request_timeout_ms: 10_000,
            max_inflight_requests: 8192,
            max_pending_write_bytes: 100 << 20,
            max_apply_backlog_bytes: 256 << 20,
            max_concurrent_streams: 1024,
        }
    }
}

impl Limits {
    /// A client's key: not empty, at most `max_key_size` bytes (raw and transactional APIs).
    pub fn check_key(&self, key: &[u8]) -> Result<(), String> {
        if key.is_empty() {
            return Err("key must not be empty".into());
        }
        if key.len() > self.max_key_size {
            return Err(format!(
                "key is {} bytes, more than the limit of {}",
                key.len(),
                self.max_key_size
            ));
        }
        Ok(())
    }

    /// A client's value: at most `max_value_size` bytes.
    pub fn check_value(&self, value: &[u8]) -> Result<(), String> {
        if value.len() > self.max_value_size {
            return Err(format!(
                "value is {} bytes, more than the limit of {}",
                value.len(),
                self.max_value_size
            ));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.max_key_size == 0
            || self.max_value_size == 0
            || self.max_inflight_requests == 0
            || self.max_pending_write_bytes == 0
            || self.max_apply_backlog_bytes == 0
            || self.max_concurrent_streams == 0
        {
            return Err("limits must be positive".into());
        }
        if self.max_value_size >= self.max_grpc_message_size {
            return Err("max_value_size must be below max_grpc_message_size".into());
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_config_parses_and_typos_are_rejected() {
        let cfg = ServerConfig::from_toml(
            "addr = \"127.0.0.1:1\"\n[raftstore]\nraft_base_tick_ms = 50\n[limits]\nmax_key_size = 100\n",
        )
        .unwrap();
        assert_eq!(cfg.addr, "127.0.0.1:1");
        assert_eq!(cfg.raftstore.raft_base_tick_ms, 50);
        assert_eq!(cfg.limits.max_key_size, 100);
        assert!(ServerConfig::from_toml("adr = \"x\"").is_err());
        assert!(ServerConfig::from_toml("[raftstore]\nraft_election_ticks = 1\n").is_err());
        assert!(ServerConfig::from_toml("addr = 5").is_err());
    }

    #[test]
    fn read_pool_settings_are_validated() {
        let cfg = ServerConfig::from_toml("[readpool]\npool_size = 2\nmax_tasks_per_worker = 10\n")
            .unwrap();
        assert_eq!(cfg.readpool.pool_size, 2);
        assert_eq!(cfg.readpool.queue_capacity(), Some(20));
        let defaults = ReadPoolConfig::default();
        assert!(defaults.pool_size >= 4);
        assert_eq!(defaults.max_tasks_per_worker, 2000);
        for bad in [
            "[readpool]\npool_size = 0\n",
            "[readpool]\npool_size = 5000\n",
            "[readpool]\nmax_tasks_per_worker = 0\n",
            "[readpool]\nmax_tasks_per_worker = 9223372036854775807\n",
            "[readpool]\nthreads = 4\n",
        ] {
            assert!(ServerConfig::from_toml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keepalive_settings_are_validated() {
        let defaults = ServerConfig::default().keepalive();
        assert_eq!(defaults.interval, Duration::from_secs(10));
        assert_eq!(defaults.timeout, Duration::from_secs(3));
        let cfg = ServerConfig::from_toml("grpc_keepalive_time_ms = 5000\n").unwrap();
        assert_eq!(cfg.keepalive().interval, Duration::from_secs(5));
        assert_eq!(cfg.keepalive().timeout, Duration::from_secs(3));
        for bad in [
            "grpc_keepalive_time_ms = 0\n",
            "grpc_keepalive_timeout_ms = 0\n",
        ] {
            assert!(ServerConfig::from_toml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_commented_sample_config_is_valid() {
        let text = include_str!("../../../etc/server.toml");
        let cfg = ServerConfig::from_toml(text).unwrap();
        assert_eq!(cfg.raftstore.raft_base_tick_ms, 100);
        assert_eq!(cfg.readpool.max_tasks_per_worker, 2000);
        assert_eq!(cfg.grpc_keepalive_time_ms, 10_000);
        assert_eq!(cfg.gc.batch_keys, 256);
    }

    #[test]
    fn gc_settings_are_validated() {
        let cfg = ServerConfig::from_toml("[gc]\nrun_interval_secs = 0\nbatch_keys = 8\n").unwrap();
        assert_eq!((cfg.gc.run_interval_secs, cfg.gc.batch_keys), (0, 8));
        for bad in [
            "[gc]\nbatch_keys = 0\n",
            "[gc]\nbatch_bytes = 0\n",
            "[gc]\nbatch_bytes = 8388608\n",
            "[gc]\ninterval = 5\n",
        ] {
            assert!(ServerConfig::from_toml(bad).is_err(), "{bad}");
        }
    }
}
