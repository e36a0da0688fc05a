//! Helpers the benchmarks share: starting a PD group in this process, reading settings from
//! the environment and this process's memory. The benchmarks themselves are in `benches/`;
//! this crate holds no measurement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use placement_driver::{PdConfig, PdHandle, SystemClock};
use tokio::net::TcpListener;

/// The environment variable `name` as a number, `default` if unset or not a number.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident bytes of this process, from `/proc/self/statm`.
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// A PD group of members in this process, each on a loopback port with RocksDB in a temp dir.
pub struct PdGroup {
    _dir: tempfile::TempDir,
    pub members: Vec<PdHandle>,
    /// Client URLs, `http://127.0.0.1:port`.
    pub endpoints: Vec<String>,
}

impl PdGroup {
    /// Starts `n` members and waits (up to 30 s) until one of them serves as leader.
    pub async fn start(n: usize) -> PdGroup {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        }
        let endpoints: Vec<String> = listeners
            .iter()
            .map(|l| format!("http://{}", l.local_addr().expect("addr")))
            .collect();
        let initial_cluster = endpoints
            .iter()
            .enumerate()
            .map(|(i, url)| format!("pd{}={url}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let config = PdConfig {
                name: format!("pd{}", i + 1),
                initial_cluster: initial_cluster.clone(),
                ..PdConfig::for_test(dir.path().join(format!("pd{}", i + 1)))
            };
            let pd = placement_driver::start_with_listener(config, Arc::new(SystemClock), listener)
                .await
                .expect("start PD");
            members.push(pd);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !members.iter().any(|m| m.is_serving_leader()) {
            assert!(Instant::now() < deadline, "no PD leader");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        PdGroup {
            _dir: dir,
            members,
            endpoints,
        }
    }

    /// Shuts every member down.
    pub async fn shutdown(self) {
        for pd in self.members {
            let _ = pd.shutdown().await;
        }
    }
}
