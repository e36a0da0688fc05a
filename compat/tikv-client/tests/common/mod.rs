//! Shared by the test files: a `rangekv playground` child process (start, wait until ready,
//! stop, node logs on failure), connecting tikv-client's clients to it, and helpers to compare
//! and show keys and values.
//!
//! Each test file is its own crate and uses only part of this module.
#![allow(dead_code)]

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tikv_client::{Config, Key, KvPair, RawClient, TransactionClient, Value};

/// How long the playground may take to print "cluster ready".
pub const READY_DEADLINE: Duration = Duration::from_secs(90);
/// How long the client may take to connect and serve a first read once the cluster is ready.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(30);
/// How long the playground may take to stop its nodes after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// Per-request timeout of the client (its default, 2 s, is tight for a debug build on 2 cores).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The playground child process.
// ---------------------------------------------------------------------------------------------

/// A running `rangekv playground` (1 PD, 3 stores); sends SIGTERM and waits for it on drop
/// (also on panic).
pub struct Playground {
    child: Child,
    /// Where the nodes keep their data and logs (pd1.log, store1.log, ...).
    dir: Option<tempfile::TempDir>,
    /// The playground's own stdout and stderr.
    output: PathBuf,
    pub pd_addr: String,
}

impl Playground {
    pub fn start() -> Playground {
        Playground::start_with(&[])
    }

    /// [`Playground::start`] with extra playground flags (e.g. `--tls`).
    pub fn start_with(extra: &[&str]) -> Playground {
        let bin = match std::env::var_os("RANGEKV_BIN") {
            Some(b) if !b.is_empty() => PathBuf::from(b),
            _ => panic!(
                "RANGEKV_BIN is not set: point it at a built rangekv binary, e.g. \
                 RANGEKV_BIN=/var/tmp/rangekv-target/debug/rangekv cargo test \
                 (or run scripts/compat.sh from the repository root)"
            ),
        };
        assert!(
            bin.is_file(),
            "RANGEKV_BIN={} is not a file: build rangekv first (cargo build -p rangekv in the main workspace)",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("rangekv-compat-")
            .tempdir()
            .expect("creating a temporary data directory");
        // One PD: a run of two ports (its client port and the conventional peer port after
        // it). Three stores: a run of three ports, and three more for their status servers.
        let pd_port = free_port_run(2, &[]);
        let pd_ports = [pd_port, pd_port + 1];
        let store_port = free_port_run(3, &pd_ports);
        let taken: Vec<u16> = pd_ports
            .iter()
            .copied()
            .chain(store_port..store_port + 3)
            .collect();
        let status_port = free_port_run(3, &taken);
        let output = dir.path().join("playground.out");
        let out = File::create(&output).expect("creating the playground output file");
        let err = out.try_clone().expect("cloning the output file handle");
        let data_dir = dir.path().join("cluster");
        let child = Command::new(&bin)
            .arg("playground")
            .args(["--pd", "1"])
            .args(["--pd-port", &pd_port.to_string()])
            .args(["--store-port", &store_port.to_string()])
            .args(["--status-port", &status_port.to_string()])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--stores", "3"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        eprintln!(
            "playground pid {}: PD 127.0.0.1:{pd_port}, stores 127.0.0.1:{store_port}..{}, data in {}",
            child.id(),
            store_port + 2,
            data_dir.display()
        );
        Playground {
            child,
            dir: Some(dir),
            output,
            pd_addr: format!("127.0.0.1:{pd_port}"),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.as_ref().expect("data dir").path().join("cluster")
    }

    /// Where `--tls` made the cluster's CA and node certificate (`ca.pem`, `node.pem`,
    /// `node-key.pem`).
    pub fn certs_dir(&self) -> PathBuf {
        self.data_dir().join("certs")
    }

    /// Waits until the playground prints "cluster ready"; panics with its output if it exits
    /// first or the deadline passes.
    pub fn wait_ready(&mut self, deadline: Duration) {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.output).unwrap_or_default();
            if text.contains("cluster ready") {
                eprintln!(
                    "playground ready after {:.1}s",
                    start.elapsed().as_secs_f64()
                );
                return;
            }
            if let Some(status) = self.child.try_wait().expect("polling the playground") {
                panic!("the playground exited ({status}) before it was ready; its output:\n{text}");
            }
            if start.elapsed() > deadline {
                panic!("the playground did not print \"cluster ready\" within {deadline:?}; its output:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and waits for the playground (which stops its nodes) to exit; SIGKILL if
    /// it is still running after the deadline.
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        if let Err(e) = kill(pid, Signal::SIGTERM) {
            eprintln!("SIGTERM to the playground (pid {pid}) failed: {e}");
        }
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    eprintln!(
                        "playground stopped ({status}) after {:.1}s",
                        start.elapsed().as_secs_f64()
                    );
                    return;
                }
                Ok(None) if start.elapsed() < STOP_DEADLINE => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    eprintln!("the playground did not stop within {STOP_DEADLINE:?}: SIGKILL");
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
            }
        }
    }
}

impl Drop for Playground {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            // Keep the logs of a failed run for investigation and show their ends.
            eprintln!("--- playground output ---\n{}", tail(&self.output, 4000));
            let data_dir = self.data_dir();
            for name in ["pd1.log", "store1.log", "store2.log", "store3.log"] {
                eprintln!("--- {name} (end) ---\n{}", tail(&data_dir.join(name), 3000));
            }
            if let Some(dir) = self.dir.take() {
                eprintln!("logs kept in {}", dir.keep().display());
            }
        }
    }
}

/// The last `max` bytes of a file (lossy UTF-8), or a note saying why not.
pub fn tail(path: &Path, max: u64) -> String {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("({}: {e})", path.display()),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The first of `n` consecutive loopback ports that are free right now and not in `avoid`.
fn free_port_run(n: u16, avoid: &[u16]) -> u16 {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let base = probe.local_addr().expect("local addr").port();
        drop(probe);
        if base.checked_add(n).is_none() {
            continue;
        }
        let ports = base..base + n;
        if ports.clone().any(|p| avoid.contains(&p)) {
            continue;
        }
        // Hold them all at once, so that a port is not counted twice.
        let held: Vec<_> = ports
            .filter_map(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == n as usize {
            return base;
        }
    }
    panic!("no run of {n} free ports found on 127.0.0.1");
}

// ---------------------------------------------------------------------------------------------
// Connecting.
// ---------------------------------------------------------------------------------------------

/// The client configuration of every test: API V1, no keyspace, a patient request timeout.
pub fn client_config() -> Config {
    Config::default().with_timeout(REQUEST_TIMEOUT)
}

/// API V2 with the default keyspace (PD's `LoadKeyspace("DEFAULT")`), a patient timeout.
pub fn keyspace_config() -> Config {
    client_config().with_default_keyspace()
}

/// Calls `attempt` until it succeeds or `deadline` passes (then panics with the last error),
/// 250 ms apart.
async fn connect_with<C, F, Fut>(what: &str, pd: &str, deadline: Duration, mut attempt: F) -> C
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<C, String>>,
{
    let start = Instant::now();
    let mut last_err = String::new();
    while start.elapsed() < deadline {
        match attempt().await {
            Ok(client) => {
                eprintln!(
                    "tikv-client {what} connected after {:.1}s",
                    start.elapsed().as_secs_f64()
                );
                return client;
            }
            Err(e) => last_err = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("tikv-client {what} could not connect to PD {pd} and read within {deadline:?}; last error: {last_err}");
}

/// A `RawClient` that connected and served a first read, retrying until the deadline.
pub async fn connect_raw(pd: &str, deadline: Duration) -> RawClient {
    connect_raw_with(pd, deadline, client_config()).await
}

/// [`connect_raw`] with `config` (e.g. [`keyspace_config`]).
pub async fn connect_raw_with(pd: &str, deadline: Duration, config: Config) -> RawClient {
    connect_with("RawClient", pd, deadline, || async {
        let client = RawClient::new_with_config(vec![pd.to_string()], config.clone())
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        client
            .get(b"compat/probe".to_vec())
            .await
            .map_err(|e| format!("first get: {e:?}"))?;
        Ok(client)
    })
    .await
}

/// A `TransactionClient` that connected and served a first snapshot read (a timestamp from PD
/// and a KvGet), retrying until the deadline.
pub async fn connect_txn(pd: &str, deadline: Duration) -> TransactionClient {
    connect_txn_with(pd, deadline, client_config()).await
}

/// [`connect_txn`] with `config` (e.g. [`keyspace_config`]).
pub async fn connect_txn_with(pd: &str, deadline: Duration, config: Config) -> TransactionClient {
    connect_with("TransactionClient", pd, deadline, || async {
        let client = TransactionClient::new_with_config(vec![pd.to_string()], config.clone())
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let ts = client
            .current_timestamp()
            .await
            .map_err(|e| format!("first timestamp: {e:?}"))?;
        client
            .snapshot(ts, tikv_client::TransactionOptions::new_optimistic())
            .get(b"compat/probe".to_vec())
            .await
            .map_err(|e| format!("first get: {e:?}"))?;
        Ok(client)
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Keys, values, and comparing them.
// ---------------------------------------------------------------------------------------------

pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

pub fn k(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// `prefix` followed by the two-digit numbers in `range`.
pub fn numbered(prefix: &str, range: impl IntoIterator<Item = usize>) -> Vec<Vec<u8>> {
    range
        .into_iter()
        .map(|i| format!("{prefix}{i:02}").into_bytes())
        .collect()
}

pub fn to_pairs(pairs: impl IntoIterator<Item = KvPair>) -> Pairs {
    pairs
        .into_iter()
        .map(|p| {
            let (key, value): (Key, Value) = p.into();
            (key.into(), value)
        })
        .collect()
}

pub fn show_bytes(b: &[u8]) -> String {
    if b.len() <= 40 {
        b.escape_ascii().to_string()
    } else {
        format!("{}...({} bytes)", b[..24].escape_ascii(), b.len())
    }
}

pub fn show_keys(keys: &[Vec<u8>]) -> String {
    let shown: Vec<String> = keys.iter().map(|key| show_bytes(key)).collect();
    format!("[{}]", shown.join(", "))
}

pub fn show_pairs(pairs: &[(Vec<u8>, Vec<u8>)]) -> String {
    let shown: Vec<String> = pairs
        .iter()
        .map(|(key, v)| format!("{}={}", show_bytes(key), show_bytes(v)))
        .collect();
    format!("[{}]", shown.join(", "))
}

/// Asserts that `got` holds exactly `expected`, in this order.
pub fn assert_pairs(
    got: impl IntoIterator<Item = KvPair>,
    expected: &[(Vec<u8>, Vec<u8>)],
    what: &str,
) {
    let got = to_pairs(got);
    assert!(
        got == expected,
        "{what}:\n     got {}\nexpected {}",
        show_pairs(&got),
        show_pairs(expected)
    );
}

/// Asserts that `got` holds exactly `expected`, in any order (batch_get gives no order).
pub fn assert_pairs_unordered(
    got: impl IntoIterator<Item = KvPair>,
    expected: &[(Vec<u8>, Vec<u8>)],
    what: &str,
) {
    let mut got = to_pairs(got);
    got.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    assert!(
        got == expected,
        "{what}:\n     got {}\nexpected {}",
        show_pairs(&got),
        show_pairs(&expected)
    );
}

/// Asserts that the keys of `got` are exactly `expected`, in this order.
pub fn assert_keys(
    got: impl IntoIterator<Item = impl Into<Vec<u8>>>,
    expected: &[Vec<u8>],
    what: &str,
) {
    let got: Vec<Vec<u8>> = got.into_iter().map(Into::into).collect();
    assert!(
        got == expected,
        "{what}:\n     got {}\nexpected {}",
        show_keys(&got),
        show_keys(expected)
    );
}

pub fn keys_of(pairs: impl IntoIterator<Item = KvPair>) -> Vec<Vec<u8>> {
    pairs.into_iter().map(|p| p.into_key().into()).collect()
}
