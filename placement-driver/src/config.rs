//! Configuration of one PD node.
//!
//! [`PdConfig`] is what the `rangekv pd` binary reads from TOML (every field has a default, unknown
//! fields are rejected) and what tests build in code. Durations are written as strings with a unit
//! (`"3s"`, `"50ms"`, `"1m"`) or as a bare integer meaning milliseconds.
//!
//! Invariants checked by [`PdConfig::validate`]:
//! - the TSO save interval is at least 3× the TSO update interval, so the background extension
//!   of the persisted TSO window always runs before the window is exhausted;
//! - the id allocation step is positive;
//! - `initial_cluster`, when given, parses, names every member once, and names this node;
//! - the Raft election timeout is longer than the heartbeat interval, and long enough (at least 5
//!   ticks) to leave a leader lease of at least two ticks (see [`PdConfig::leader_lease`]);
//! - the Raft log GC check interval is positive;
//! - `leader_balance_threshold` is at least 2 (a transfer moves the difference between two stores
//!   by 2, so a threshold of 1 would move a leader back and forth), and
//!   `max_pending_leader_transfers` is positive (set `schedule_leader_balance = false` to stop
//!   leader balancing instead);
//! - with `schedule_merge` on, `max_merge_region_size` and `max_merge_region_keys` are positive
//!   (0 would merge nothing: set `schedule_merge = false` instead).
//!
//! One port per node: the client service (`pdpb.PD`) and the PD-to-PD Raft transport
//! (`pdraftpb.PdRaft`) are served by the same gRPC server on `listen_addr`, so a member's peer URL
//! in `initial_cluster` is also its client URL.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Configuration of one PD node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PdConfig {
    /// Human-readable member name, unique within the PD group. The member id is derived from it.
    pub name: String,
    /// Address the gRPC service listens on (`host:port`, optionally `http://host:port`). Port 0
    /// picks a free port.
    pub listen_addr: String,
    /// Address advertised to clients in `GetMembers` (`host:port`). Empty means the bound
    /// listen address.
    pub advertise_addr: String,
    /// Directory of PD's own RocksDB.
    pub data_dir: PathBuf,
    /// Width of the TSO window persisted ahead of the handed-out physical time. After a crash the
    /// TSO restarts above the persisted bound, so this is also the maximum time jump on restart.
    #[serde(with = "duration")]
    pub tso_save_interval: Duration,
    /// How often the background task checks whether the TSO window must be extended.
    #[serde(with = "duration")]
    pub tso_update_interval: Duration,
    /// How many ids the id allocator reserves (persists) at once.
    pub id_alloc_step: u64,
    /// Desired number of replicas per region, reported in `GetClusterConfig`.
    pub max_replicas: u32,
    /// How long [`crate::PdHandle::shutdown`] waits for connections and storage to close.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// The PD members, `name=url,name=url,…` (etcd's `--initial-cluster` format), where `url` is
    /// the member's gRPC address (client and Raft traffic share it). Empty, or only this node:
    /// a single-node PD. Every member must be started with the same list.
    pub initial_cluster: String,
    /// Whether this member may create a new group when its data directory is empty (etcd's
    /// `--initial-cluster-state`): [`InitialClusterState::New`] (the default) bootstraps a member
    /// with empty data, [`InitialClusterState::Existing`] refuses to start it. Ignored when the
    /// data directory holds data. See [`crate::membership`].
    pub initial_cluster_state: InitialClusterState,
    /// Interval of one Raft tick.
    #[serde(with = "duration")]
    pub raft_tick_interval: Duration,
    /// Ticks without hearing from a leader before a follower campaigns.
    pub raft_election_ticks: usize,
    /// Ticks between the leader's heartbeats.
    pub raft_heartbeat_ticks: usize,
    /// Ticks between two checks of the leader whether to compact the Raft log
    /// (see [`crate::log_gc`]).
    pub raft_log_gc_ticks: usize,
    /// The leader compacts the Raft log once more than this many entries that every member has
    /// (and it has applied) are above the truncated index.
    pub raft_log_gc_threshold: u64,
    /// Once the Raft log holds more than this many applied entries the leader compacts it to
    /// what it applied even if a member lags (or is down): that member catches up from a
    /// snapshot of PD's state (see [`crate::log_gc`]).
    pub raft_log_gc_count_limit: u64,
    /// Whether the serving leader answers region heartbeats with leader transfers that even out
    /// the number of leaders per store (see [`crate::schedule`]).
    pub schedule_leader_balance: bool,
    /// Whether the serving leader answers heartbeats of regions that span an API V2 keyspace
    /// boundary with a split there (see [`crate::keyspace`]). On except in tests that script
    /// heartbeats of whole-keyspace regions.
    pub split_keyspace_regions: bool,
    /// A region's leader is moved only if its store leads at least this many more regions than
    /// the least-loaded other store holding a voter of the region. At least 2.
    pub leader_balance_threshold: u64,
    /// At most this many leader transfers are in flight (proposed, not yet seen done or timed
    /// out) cluster-wide.
    pub max_pending_leader_transfers: usize,
    /// A region serving at least this many requests a second is balanced by load rather than
    /// by leader count (see [`crate::schedule`]); 0 turns that off.
    pub hot_region_min_flow: u64,
    /// Whether the serving leader keeps regions at `max_replicas` healthy replicas and spreads
    /// replicas over the stores (see [`crate::replica`]).
    pub schedule_replicas: bool,
    /// Whether replicas are moved to even out region counts (balance-region); the replica
    /// checker runs whenever `schedule_replicas` is on.
    pub schedule_region_balance: bool,
    /// A store without a heartbeat for this long is down: its replicas are replaced.
    #[serde(with = "duration")]
    pub max_store_down_time: Duration,
    /// Gap between stores, in empty regions (1 MiB each), below which balance-region moves
    /// nothing (a move also needs a gap of twice the region's size). At least 2.
    pub region_balance_threshold: u64,
    /// Replica operators in flight cluster-wide.
    pub max_replica_operators: usize,
    /// Replica operators in flight that add a replica to any one store.
    pub max_store_operators: usize,
    /// Whether small adjacent regions are merged (PD's merge checker, see [`crate::merge`]).
    /// Merge operators are replica operators: they need `schedule_replicas` and count against
    /// `max_replica_operators`. Merges asked for by hand are taken either way.
    pub schedule_merge: bool,
    /// A region merges only if its leader reports at most this many bytes (PD's
    /// `max-merge-region-size`, 20 MiB); its neighbour must be within the bound too, so a
    /// merged region is at most twice it: keep that below the stores' `region_max_size`.
    pub max_merge_region_size: u64,
    /// ... and at most this many keys (PD's `max-merge-region-keys`).
    pub max_merge_region_keys: u64,
    /// A region PD saw split or merge within this long does not merge (PD's
    /// `split-merge-interval`); nor does anything during a PD leader's first interval.
    #[serde(with = "duration")]
    pub split_merge_interval: Duration,
    /// Mutual TLS for every connection (TiKV's `[security]`); off when its paths are empty.
    pub security: security::SecurityConfig,
}

impl Default for PdConfig {
    fn default() -> Self {
        PdConfig {
            name: "pd".to_owned(),
            listen_addr: "127.0.0.1:2379".to_owned(),
            advertise_addr: String::new(),
            data_dir: PathBuf::from("pd-data"),
            tso_save_interval: Duration::from_secs(3),
            tso_update_interval: Duration::from_millis(50),
            id_alloc_step: 1000,
            max_replicas: 3,
            shutdown_timeout: Duration::from_secs(10),
            initial_cluster: String::new(),
            initial_cluster_state: InitialClusterState::New,
            raft_tick_interval: Duration::from_millis(100),
            raft_election_ticks: 10,
            raft_heartbeat_ticks: 2,
            raft_log_gc_ticks: 50,
            raft_log_gc_threshold: 256,
            raft_log_gc_count_limit: 10_000,
            schedule_leader_balance: true,
            split_keyspace_regions: true,
            leader_balance_threshold: 2,
            max_pending_leader_transfers: 4,
            hot_region_min_flow: crate::schedule::DEFAULT_HOT_REGION_MIN_FLOW,
            schedule_replicas: true,
            schedule_region_balance: true,
            max_store_down_time: Duration::from_secs(30 * 60),
            region_balance_threshold: 2,
            max_replica_operators: 4,
            max_store_operators: 2,
            schedule_merge: true,
            max_merge_region_size: crate::merge::DEFAULT_MAX_MERGE_REGION_SIZE,
            max_merge_region_keys: crate::merge::DEFAULT_MAX_MERGE_REGION_KEYS,
            split_merge_interval: Duration::from_millis(
                crate::merge::DEFAULT_SPLIT_MERGE_INTERVAL_MS,
            ),
            security: security::SecurityConfig::default(),
        }
    }
}

impl PdConfig {
    /// A config for tests: listens on a free loopback port and stores data in `data_dir`.
    pub fn for_test(data_dir: impl Into<PathBuf>) -> PdConfig {
        PdConfig {
            listen_addr: "127.0.0.1:0".to_owned(),
            data_dir: data_dir.into(),
            ..PdConfig::default()
        }
    }

    /// Checks the invariants listed in the module docs: the first problem, if any.
    pub fn validate(&self) -> Result<()> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(Error::Config(problem)),
            None => Ok(()),
        }
    }

    /// Every problem of the configuration (empty: valid).
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.security.problems();
        if self.name.is_empty() {
            out.push("name must not be empty".to_owned());
        }
        if self.id_alloc_step == 0 {
            out.push("id_alloc_step must be positive".to_owned());
        }
        if self.tso_update_interval.is_zero() {
            out.push("tso_update_interval must be positive".to_owned());
        }
        if self.tso_save_interval < self.tso_update_interval * 3 {
            out.push(format!(
                "tso_save_interval ({:?}) must be at least 3x tso_update_interval ({:?})",
                self.tso_save_interval, self.tso_update_interval
            ));
        }
        if self.raft_tick_interval.is_zero() {
            out.push("raft_tick_interval must be positive".to_owned());
        }
        if self.raft_heartbeat_ticks == 0 || self.raft_election_ticks < 5 {
            out.push(
                "raft_heartbeat_ticks must be positive and raft_election_ticks at least 5"
                    .to_owned(),
            );
        }
        if self.raft_election_ticks <= self.raft_heartbeat_ticks {
            out.push("raft_election_ticks must exceed raft_heartbeat_ticks".to_owned());
        }
        if self.raft_log_gc_ticks == 0 {
            out.push("raft_log_gc_ticks must be positive".to_owned());
        }
        if self.raft_log_gc_count_limit <= self.raft_log_gc_threshold {
            out.push(format!(
                "raft_log_gc_count_limit ({}) must exceed raft_log_gc_threshold ({})",
                self.raft_log_gc_count_limit, self.raft_log_gc_threshold
            ));
        }
        if self.leader_balance_threshold < 2 {
            out.push(format!(
                "leader_balance_threshold ({}) must be at least 2",
                self.leader_balance_threshold
            ));
        }
        if self.max_pending_leader_transfers == 0 {
            out.push("max_pending_leader_transfers must be positive".to_owned());
        }
        if self.region_balance_threshold < 2 {
            out.push(format!(
                "region_balance_threshold ({}) must be at least 2",
                self.region_balance_threshold
            ));
        }
        if self.max_replica_operators == 0 || self.max_store_operators == 0 {
            out.push("max_replica_operators and max_store_operators must be positive".to_owned());
        }
        if self.schedule_merge
            && (self.max_merge_region_size == 0 || self.max_merge_region_keys == 0)
        {
            out.push(format!(
                "max_merge_region_size ({}) and max_merge_region_keys ({}) must be positive \
                 (set schedule_merge = false to stop merging instead)",
                self.max_merge_region_size, self.max_merge_region_keys
            ));
        }
        match self.members() {
            Err(Error::Config(e)) => out.push(e),
            Err(e) => out.push(e.to_string()),
            Ok(members)
                if !members.is_empty() && !members.iter().any(|(name, _)| *name == self.name) =>
            {
                out.push(format!(
                    "initial_cluster does not name this node ({:?})",
                    self.name
                ));
            }
            Ok(_) => {}
        }
        out
    }

    /// The members of `initial_cluster` as `(name, url)`, in the given order; URLs get an
    /// `http://` scheme if they have none. Empty for a single-node PD.
    pub fn members(&self) -> Result<Vec<(String, String)>> {
        let mut members: Vec<(String, String)> = Vec::new();
        for item in self.initial_cluster.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (name, url) = item.split_once('=').ok_or_else(|| {
                Error::Config(format!("initial_cluster entry {item:?} is not name=url"))
            })?;
            let (name, url) = (name.trim(), url.trim());
            if name.is_empty() || url.is_empty() {
                return Err(Error::Config(format!(
                    "initial_cluster entry {item:?} has an empty name or url"
                )));
            }
            if members.iter().any(|(n, _)| n == name) {
                return Err(Error::Config(format!(
                    "initial_cluster names {name:?} twice"
                )));
            }
            members.push((name.to_owned(), format!("http://{}", strip_scheme(url))));
        }
        Ok(members)
    }

    /// The Raft election timeout (the shortest one: raft-rs randomizes in `[1, 2)` times it).
    pub fn election_timeout(&self) -> Duration {
        self.raft_tick_interval * self.raft_election_ticks as u32
    }

    /// How long after it *sent* a message that a quorum then acknowledged the leader still
    /// considers itself the only leader: three ticks less than the election timeout.
    ///
    /// A follower that received that message rejects votes for `raft_election_ticks` of its own
    /// ticks; its first tick may come at once, so that is at least `raft_election_ticks - 1`
    /// tick intervals of wall time after it received the message, which is after the leader
    /// sent it. The two ticks left over are the margin for scheduling delay and clock-rate drift
    /// (see [`crate::lease`]).
    pub fn leader_lease(&self) -> Duration {
        self.raft_tick_interval * (self.raft_election_ticks.saturating_sub(3)) as u32
    }

    /// The listen address without a URL scheme.
    pub(crate) fn listen_host_port(&self) -> &str {
        strip_scheme(&self.listen_addr)
    }
}

/// What a member does when its data directory is empty (etcd's `--initial-cluster-state`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialClusterState {
    /// The group is being created: a member with an empty data directory bootstraps the initial
    /// Raft state from `initial_cluster`.
    #[default]
    New,
    /// The group already exists: a member with an empty data directory refuses to start (it
    /// cannot rejoin without its data, see [`crate::membership`]).
    Existing,
}

impl fmt::Display for InitialClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InitialClusterState::New => "new",
            InitialClusterState::Existing => "existing",
        })
    }
}

impl FromStr for InitialClusterState {
    type Err = Error;

    fn from_str(s: &str) -> Result<InitialClusterState> {
        match s.trim() {
            "new" => Ok(InitialClusterState::New),
            "existing" => Ok(InitialClusterState::Existing),
            other => Err(Error::Config(format!(
                "initial cluster state must be \"new\" or \"existing\", not {other:?}"
            ))),
        }
    }
}

/// Strips a leading `http://` or `https://`.
pub(crate) fn strip_scheme(url: &str) -> &str {
    url.strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url)
}

/// Serde support for human-readable durations: `"3s"`, `"50ms"`, `"2m"`, `"1h"`, or an integer
/// number of milliseconds.
pub mod duration {
    use std::time::Duration;

    use serde::{de, Deserialize, Deserializer, Serializer};

    /// Writes the duration as `"<n>ms"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }

    /// Reads `"<n><unit>"` (unit one of `ms`, `s`, `m`, `h`) or an integer of milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(text) => parse(&text).map_err(de::Error::custom),
        }
    }

    /// Parses `"<n><unit>"`.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (num, unit) = text.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        let ms_per_unit = match unit.trim() {
            "ms" => 1,
            "s" | "" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
        };
        n.checked_mul(ms_per_unit)
            .map(Duration::from_millis)
            .ok_or_else(|| format!("duration {text:?} overflows"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(duration::parse("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(duration::parse("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(duration::parse("2m"), Ok(Duration::from_secs(120)));
        assert!(duration::parse("3 parsecs").is_err());
        assert!(duration::parse("ms").is_err());
    }

    #[test]
    fn default_is_valid_and_bad_configs_are_rejected() {
        PdConfig::default().validate().unwrap();
        let bad = PdConfig {
            tso_save_interval: Duration::from_millis(100),
            ..PdConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = PdConfig {
            id_alloc_step: 0,
            ..PdConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = PdConfig {
            raft_log_gc_ticks: 0,
            ..PdConfig::default()
        };
        assert!(bad.validate().is_err());
        for threshold in [0, 1] {
            let bad = PdConfig {
                leader_balance_threshold: threshold,
                ..PdConfig::default()
            };
            assert!(bad.validate().is_err());
        }
        let bad = PdConfig {
            max_pending_leader_transfers: 0,
            ..PdConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn merge_settings_default_to_pd_s_and_are_checked() {
        let cfg = PdConfig::default();
        assert!(cfg.schedule_merge);
        assert_eq!(cfg.max_merge_region_size, 20 << 20);
        assert_eq!(cfg.max_merge_region_keys, 200_000);
        assert_eq!(cfg.split_merge_interval, Duration::from_secs(3600));
        let cfg: PdConfig = toml::from_str(
            "max_merge_region_size = 1048576\nmax_merge_region_keys = 10\n\
             split_merge_interval = \"10m\"",
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.split_merge_interval, Duration::from_secs(600));
        for (size, keys) in [(0, 10), (10, 0)] {
            let bad = PdConfig {
                max_merge_region_size: size,
                max_merge_region_keys: keys,
                ..PdConfig::default()
            };
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains("max_merge_region_size"), "{e}");
            // Off, the bounds do not matter.
            PdConfig {
                schedule_merge: false,
                ..bad
            }
            .validate()
            .unwrap();
        }
        let e = toml::from_str::<PdConfig>("split_merge_interval = \"1 fortnight\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("duration"), "{e}");
        assert!(toml::from_str::<PdConfig>("max_merge_region_size = -1").is_err());
    }

    #[test]
    fn initial_cluster_parses_and_must_name_this_node() {
        let cfg = PdConfig {
            name: "pd2".to_owned(),
            initial_cluster: "pd1=http://127.0.0.1:2379, pd2=127.0.0.1:2381,pd3=http://h:3"
                .to_owned(),
            ..PdConfig::default()
        };
        cfg.validate().unwrap();
        let members = cfg.members().unwrap();
        assert_eq!(members.len(), 3);
        assert_eq!(
            members[1],
            ("pd2".to_owned(), "http://127.0.0.1:2381".to_owned())
        );
        let other = PdConfig {
            name: "pd4".to_owned(),
            ..cfg.clone()
        };
        assert!(other.validate().is_err());
        let dup = PdConfig {
            initial_cluster: "pd2=a:1,pd2=b:2".to_owned(),
            ..cfg.clone()
        };
        assert!(dup.validate().is_err());
        let bad = PdConfig {
            initial_cluster: "pd2".to_owned(),
            ..cfg
        };
        assert!(bad.validate().is_err());
        assert!(PdConfig::default().members().unwrap().is_empty());
        assert_eq!(
            PdConfig::default().leader_lease(),
            Duration::from_millis(700)
        );
        let short = PdConfig {
            raft_election_ticks: 4,
            ..PdConfig::default()
        };
        assert!(short.validate().is_err(), "a lease under two ticks");
    }

    #[test]
    fn initial_cluster_state_parses_and_defaults_to_new() {
        assert_eq!(
            PdConfig::default().initial_cluster_state,
            InitialClusterState::New
        );
        assert_eq!(
            "existing".parse::<InitialClusterState>().unwrap(),
            InitialClusterState::Existing
        );
        assert_eq!(
            "new".parse::<InitialClusterState>().unwrap(),
            InitialClusterState::New
        );
        assert!("old".parse::<InitialClusterState>().is_err());
        let cfg: PdConfig = toml::from_str("initial_cluster_state = \"existing\"").unwrap();
        assert_eq!(cfg.initial_cluster_state, InitialClusterState::Existing);
        assert!(toml::from_str::<PdConfig>("initial_cluster_state = \"maybe\"").is_err());
    }

    #[test]
    fn strip_scheme_handles_urls_and_plain_addresses() {
        assert_eq!(strip_scheme("http://1.2.3.4:5"), "1.2.3.4:5");
        assert_eq!(strip_scheme("1.2.3.4:5"), "1.2.3.4:5");
    }

    #[test]
    fn the_commented_sample_config_is_valid() {
        let cfg: PdConfig = toml::from_str(include_str!("../../etc/pd.toml")).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.max_replicas, 3);
        assert!(cfg.schedule_leader_balance);
        assert_eq!(cfg.leader_balance_threshold, 2);
        assert_eq!(cfg.max_pending_leader_transfers, 4);
    }
}
