//! Configuration of one PD node.
//!
//! [`PdConfig`] is what the `rangekv pd` binary reads from TOML (every field has a default, unknown
//! fields are rejected) and what tests build in code. Durations are written as strings with a unit
//! (`"3s"`, `"50ms"`, `"1m"`) or as a bare integer meaning milliseconds.
//!
//! Invariants checked by [`PdConfig::validate`]:
//! - the TSO save interval is at least 3× the TSO update interval, so the background extension
//!   of the persisted TSO window always runs before the window is exhausted;
//! - the id allocation step is positive.
//!
//! Not here yet: the Raft peer list of a replicated PD group (`initial_cluster`, peer URLs), which
//! arrives with PD replication.

use std::path::PathBuf;
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

    /// Checks the invariants listed in the module docs.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() {
            return Err(Error::Config("name must not be empty".to_owned()));
        }
        if self.id_alloc_step == 0 {
            return Err(Error::Config("id_alloc_step must be positive".to_owned()));
        }
        if self.tso_update_interval.is_zero() {
            return Err(Error::Config(
                "tso_update_interval must be positive".to_owned(),
            ));
        }
        if self.tso_save_interval < self.tso_update_interval * 3 {
            return Err(Error::Config(format!(
                "tso_save_interval ({:?}) must be at least 3x tso_update_interval ({:?})",
                self.tso_save_interval, self.tso_update_interval
            )));
        }
        Ok(())
    }

    /// The listen address without a URL scheme.
    pub(crate) fn listen_host_port(&self) -> &str {
        strip_scheme(&self.listen_addr)
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
    }

    #[test]
    fn strip_scheme_handles_urls_and_plain_addresses() {
        assert_eq!(strip_scheme("http://1.2.3.4:5"), "1.2.3.4:5");
        assert_eq!(strip_scheme("1.2.3.4:5"), "1.2.3.4:5");
    }
}
