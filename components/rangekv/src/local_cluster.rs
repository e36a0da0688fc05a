//! A local cluster of real `rangekv` processes on loopback.
//!
//! Every node is its own child process, so it can be stopped (SIGTERM, clean shutdown), killed
//! (SIGKILL, as a crash) and restarted on the same data directory and port. Output of each node
//! goes to `<data_dir>/<name>.log`.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How to lay out a local cluster.
#[derive(Clone, Debug)]
pub struct LocalClusterConfig {
    /// The `rangekv` executable.
    pub bin: PathBuf,
    pub data_dir: PathBuf,
    pub host: String,
    /// Client port of the first PD node; further PD nodes use every other port after it.
    pub pd_port: u16,
    /// Port of the first store; further stores use the next ports.
    pub store_port: u16,
    /// Status (HTTP) port of the first store, the others following; `None`: no status server.
    pub status_port: Option<u16>,
    pub pds: usize,
    pub stores: usize,
    /// Extra flags for every `rangekv server`.
    pub server_args: Vec<String>,
    /// Extra flags for every `rangekv pd`.
    pub pd_args: Vec<String>,
    /// Environment variables for single stores: `(store index, name, value)` (tests set
    /// `FAILPOINTS` this way).
    pub store_env: Vec<(usize, String, String)>,
    /// Mutual TLS for every node with this certificate (see [`LocalClusterConfig::with_tls`]).
    pub tls: Option<security::certs::Issued>,
    /// Give every node its own loopback address, `127.a.b.x` (PD member `i`: `x = 10 + i`,
    /// store `i`: `x = 50 + i`), instead of `host`; nodes also connect from their address, so
    /// firewall rules can cut the network between them (`rangekv verify`'s partitions).
    pub node_ips: Option<(u8, u8)>,
}

impl LocalClusterConfig {
    /// A layout on free loopback ports (for tests).
    pub fn on_free_ports(
        bin: PathBuf,
        data_dir: PathBuf,
        pds: usize,
        stores: usize,
    ) -> Result<LocalClusterConfig> {
        // One run of free ports for PD members (every other port), stores and their status
        // ports, so that no two of them can collide.
        let pd_port = free_port_run(pds * 2 + stores * 2)?;
        let store_port = pd_port + (pds * 2) as u16;
        Ok(LocalClusterConfig {
            bin,
            data_dir,
            host: "127.0.0.1".into(),
            pd_port,
            store_port,
            status_port: Some(store_port + stores as u16),
            pds,
            stores,
            server_args: Vec::new(),
            pd_args: Vec::new(),
            store_env: Vec::new(),
            tls: None,
            node_ips: None,
        })
    }

    /// The host of PD member `i`.
    pub fn pd_host(&self, i: usize) -> String {
        match self.node_ips {
            Some((a, b)) => format!("127.{a}.{b}.{}", 10 + i),
            None => self.host.clone(),
        }
    }

    /// The host of store `i` (its gRPC and status addresses).
    pub fn store_host(&self, i: usize) -> String {
        match self.node_ips {
            Some((a, b)) => format!("127.{a}.{b}.{}", 50 + i),
            None => self.host.clone(),
        }
    }

    /// Turns on mutual TLS: a development CA and one certificate (common name `rangekv`, for
    /// `localhost`, loopback and `host`) made in `dir` (kept if already there), used by every
    /// node and returned for clients.
    pub fn with_tls(&mut self, dir: &Path) -> Result<security::certs::Issued> {
        let mut hosts = security::certs::default_hosts();
        if !hosts.contains(&self.host) {
            hosts.push(self.host.clone());
        }
        let issued = match (
            dir.join("node.pem").exists(),
            dir.join("node-key.pem").exists(),
        ) {
            (true, true) => security::certs::Issued {
                ca: dir.join(security::certs::CA_CERT),
                cert: dir.join("node.pem"),
                key: dir.join("node-key.pem"),
            },
            _ => security::certs::issue(dir, "node", "rangekv", &hosts)
                .with_context(|| format!("making certificates in {}", dir.display()))?,
        };
        self.tls = Some(issued.clone());
        Ok(issued)
    }

    /// How clients of this cluster connect: with the nodes' certificate when TLS is on.
    pub fn security(&self) -> Result<security::SecurityManager> {
        match &self.tls {
            None => Ok(security::SecurityManager::plaintext()),
            Some(issued) => Ok(security::SecurityManager::new(issued.security_config(&[]))?),
        }
    }

    /// The TLS flags every node is started with (and `ctl` needs), empty in plaintext.
    pub fn tls_args(&self) -> Vec<String> {
        match &self.tls {
            None => Vec::new(),
            Some(issued) => vec![
                "--ca-path".into(),
                issued.ca.display().to_string(),
                "--cert-path".into(),
                issued.cert.display().to_string(),
                "--key-path".into(),
                issued.key.display().to_string(),
            ],
        }
    }
}

/// One node: its command line and, while running, its process.
pub struct Node {
    pub name: String,
    pub addr: String,
    args: Vec<String>,
    /// Environment variables set for the process (besides the inherited ones).
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// Removed from its group for good (a replaced PD member): never started again.
    retired: bool,
}

impl Node {
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// How the process ended, once it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sets an environment variable for the next start (e.g. `FAILPOINTS` in tests).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.remove_env(key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Removes a variable [`Node::set_env`] set.
    pub fn remove_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// See the module docs.
pub struct LocalCluster {
    cfg: LocalClusterConfig,
    pub pds: Vec<Node>,
    pub stores: Vec<Node>,
}

impl LocalCluster {
    /// Lays out the nodes and starts every one of them (PD first). Does not wait for them.
    pub fn start(cfg: LocalClusterConfig) -> Result<LocalCluster> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
        // PD members use every other port (2379, 2381, ...), leaving 2380 free as PD's
        // conventional peer port; a member serves clients and Raft peers on one port.
        let pd_client_addrs: Vec<String> = (0..cfg.pds)
            .map(|i| format!("{}:{}", cfg.pd_host(i), cfg.pd_port + 2 * i as u16))
            .collect();
        let initial_cluster: Vec<String> = pd_client_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("pd{}=http://{a}", i + 1))
            .collect();
        let pds = (0..cfg.pds)
            .map(|i| {
                let name = format!("pd{}", i + 1);
                let mut args = vec![
                    "pd".to_string(),
                    "--name".into(),
                    name.clone(),
                    "--addr".into(),
                    pd_client_addrs[i].clone(),
                    "--data-dir".into(),
                    cfg.data_dir.join(&name).display().to_string(),
                ];
                if cfg.pds > 1 {
                    args.push("--initial-cluster".into());
                    args.push(initial_cluster.join(","));
                }
                args.extend(cfg.pd_args.iter().cloned());
                args.extend(cfg.tls_args());
                Node {
                    log: cfg.data_dir.join(format!("{name}.log")),
                    name,
                    addr: pd_client_addrs[i].clone(),
                    args,
                    env: Vec::new(),
                    child: None,
                    retired: false,
                }
            })
            .collect();
        let stores = (0..cfg.stores)
            .map(|i| store_node(&cfg, &pd_client_addrs, i))
            .collect();
        let mut cluster = LocalCluster { cfg, pds, stores };
        for i in 0..cluster.pds.len() {
            cluster.start_pd(i)?;
        }
        for i in 0..cluster.stores.len() {
            cluster.start_store(i)?;
        }
        Ok(cluster)
    }

    pub fn config(&self) -> &LocalClusterConfig {
        &self.cfg
    }

    /// Lays out one more store (the next name, port and status port) and starts it; returns
    /// its index in [`LocalCluster::stores`]. Does not wait for it.
    pub fn add_store(&mut self) -> Result<usize> {
        let i = self.stores.len();
        let node = store_node(&self.cfg, &self.pd_endpoints(), i);
        self.stores.push(node);
        self.start_store(i)?;
        Ok(i)
    }

    /// Lays out one more PD member (the next name, serving at `addr`) that joins the running
    /// group: an empty data directory, `--initial-cluster` naming the members and itself,
    /// `--initial-cluster-state existing`. It is not started: add it first
    /// (`rangekv ctl member add <name> http://<addr>`), then [`LocalCluster::start_pd`].
    /// Returns its index in [`LocalCluster::pds`].
    pub fn add_pd(&mut self, addr: String) -> usize {
        let i = self.pds.len();
        let name = format!("pd{}", i + 1);
        let initial_cluster: Vec<String> = self
            .pds
            .iter()
            .filter(|n| !n.retired)
            .chain(std::iter::once(&Node {
                name: name.clone(),
                addr: addr.clone(),
                args: Vec::new(),
                env: Vec::new(),
                log: PathBuf::new(),
                child: None,
                retired: false,
            }))
            .map(|n| format!("{}=http://{}", n.name, n.addr))
            .collect();
        let mut args = vec![
            "pd".to_string(),
            "--name".into(),
            name.clone(),
            "--addr".into(),
            addr.clone(),
            "--data-dir".into(),
            self.cfg.data_dir.join(&name).display().to_string(),
            "--initial-cluster".into(),
            initial_cluster.join(","),
            "--initial-cluster-state".into(),
            "existing".into(),
        ];
        args.extend(self.cfg.pd_args.iter().cloned());
        args.extend(self.cfg.tls_args());
        self.pds.push(Node {
            log: self.cfg.data_dir.join(format!("{name}.log")),
            name,
            addr,
            args,
            env: Vec::new(),
            child: None,
            retired: false,
        });
        i
    }

    /// The client addresses of the PD members (retired ones left out).
    pub fn pd_endpoints(&self) -> Vec<String> {
        self.pds
            .iter()
            .filter(|n| !n.retired)
            .map(|n| n.addr.clone())
            .collect()
    }

    /// Kills PD member `i` and deletes its data directory, for good: it was (or is about to
    /// be) removed from the group (`rangekv ctl member remove`). Its slot stays, retired.
    pub fn retire_pd(&mut self, i: usize) -> Result<()> {
        if self.pds[i].is_running() {
            self.kill_pd(i)?;
        }
        let dir = self.cfg.data_dir.join(&self.pds[i].name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        self.pds[i].retired = true;
        Ok(())
    }

    /// Whether PD member `i` was retired ([`LocalCluster::retire_pd`]).
    pub fn is_retired_pd(&self, i: usize) -> bool {
        self.pds[i].retired
    }

    /// A free address for the next PD member ([`LocalCluster::add_pd`]) on its host.
    pub fn free_pd_addr(&self) -> Result<String> {
        let host = self.cfg.pd_host(self.pds.len());
        let port = TcpListener::bind((host.as_str(), 0))
            .with_context(|| format!("finding a free port on {host}"))?
            .local_addr()?
            .port();
        Ok(format!("{host}:{port}"))
    }

    pub fn store_addrs(&self) -> Vec<String> {
        self.stores.iter().map(|n| n.addr.clone()).collect()
    }

    /// The status (HTTP) address of store `i`, if status servers are on.
    pub fn status_addr(&self, i: usize) -> Option<String> {
        self.cfg
            .status_port
            .map(|p| format!("{}:{}", self.cfg.store_host(i), p + i as u16))
    }

    fn spawn(bin: &Path, node: &mut Node) -> Result<()> {
        if node.is_running() {
            bail!("{} is already running", node.name);
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        let child = Command::new(bin)
            .args(&node.args)
            .envs(node.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} ({})", node.name, bin.display()))?;
        node.child = Some(child);
        Ok(())
    }

    pub fn start_pd(&mut self, i: usize) -> Result<()> {
        if self.pds[i].retired {
            bail!(
                "{} was removed from PD's group; it is not started again",
                self.pds[i].name
            );
        }
        Self::spawn(&self.cfg.bin, &mut self.pds[i])
    }

    pub fn start_store(&mut self, i: usize) -> Result<()> {
        Self::spawn(&self.cfg.bin, &mut self.stores[i])
    }

    /// SIGKILL: the node dies as in a crash.
    pub fn kill_store(&mut self, i: usize) -> Result<()> {
        kill_node(
            &mut self.stores[i],
            Signal::SIGKILL,
            Duration::from_secs(10),
        )
    }

    pub fn kill_pd(&mut self, i: usize) -> Result<()> {
        kill_node(&mut self.pds[i], Signal::SIGKILL, Duration::from_secs(10))
    }

    /// SIGTERM and wait: the node shuts down cleanly (SIGKILL if it does not in time).
    pub fn stop_store(&mut self, i: usize) -> Result<()> {
        stop_node(&mut self.stores[i])
    }

    pub fn stop_pd(&mut self, i: usize) -> Result<()> {
        stop_node(&mut self.pds[i])
    }

    /// Waits until every running node accepts TCP connections on its port.
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for node in self.pds.iter_mut().chain(self.stores.iter_mut()) {
            if node.child.is_none() {
                continue;
            }
            loop {
                if !node.is_running() {
                    bail!("{} exited; see {}", node.name, node.log.display());
                }
                if TcpStream::connect(&node.addr).is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} does not listen on {} after {timeout:?}",
                        node.name,
                        node.addr
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Stops every node: SIGTERM to all, then waits; SIGKILL for those that do not exit.
    pub fn shutdown(&mut self) {
        for node in self.stores.iter_mut().chain(self.pds.iter_mut()) {
            if let Some(c) = &node.child {
                let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            }
        }
        for node in self.stores.iter_mut().chain(self.pds.iter_mut()) {
            let _ = wait_exit(node, Duration::from_secs(15))
                .or_else(|_| kill_node(node, Signal::SIGKILL, Duration::from_secs(5)));
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Store `i` of a layout: `store<i+1>` on the `i`-th store and status ports.
fn store_node(cfg: &LocalClusterConfig, pd_addrs: &[String], i: usize) -> Node {
    let host = cfg.store_host(i);
    let name = format!("store{}", i + 1);
    let addr = format!("{host}:{}", cfg.store_port + i as u16);
    let mut args = vec![
        "server".to_string(),
        "--addr".into(),
        addr.clone(),
        "--data-dir".into(),
        cfg.data_dir.join(&name).display().to_string(),
        "--pd".into(),
        pd_addrs.join(","),
    ];
    if let Some(port) = cfg.status_port {
        args.push("--status-addr".into());
        args.push(format!("{host}:{}", port + i as u16));
    }
    args.extend(cfg.server_args.iter().cloned());
    args.extend(cfg.tls_args());
    Node {
        log: cfg.data_dir.join(format!("{name}.log")),
        name,
        addr,
        args,
        env: cfg
            .store_env
            .iter()
            .filter(|(store, _, _)| *store == i)
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect(),
        child: None,
        retired: false,
    }
}

fn stop_node(node: &mut Node) -> Result<()> {
    let Some(c) = &node.child else {
        return Ok(());
    };
    let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
    wait_exit(node, Duration::from_secs(15))
        .or_else(|_| kill_node(node, Signal::SIGKILL, Duration::from_secs(5)))
}

fn kill_node(node: &mut Node, sig: Signal, timeout: Duration) -> Result<()> {
    let Some(c) = &node.child else {
        return Ok(());
    };
    let _ = kill(Pid::from_raw(c.id() as i32), sig);
    wait_exit(node, timeout)
}

fn wait_exit(node: &mut Node, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let Some(child) = node.child.as_mut() else {
        return Ok(());
    };
    loop {
        if child.try_wait()?.is_some() {
            node.child = None;
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(anyhow!("{} did not exit within {timeout:?}", node.name));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first of `n` consecutive ports that are free right now, below the kernel's ephemeral
/// range: a port from that range could be taken as the local port of some outgoing connection
/// while its node is stopped, and the node could not listen on it again after a restart.
fn free_port_run(n: usize) -> Result<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(11_000));
    for _ in 0..200 {
        let base = rand::random_range(low..high - n as u16);
        let all_free = (0..n as u16).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return Ok(base);
        }
    }
    bail!("no run of {n} free ports found below {high}")
}
