//! Shared set-up of the multi-process tests: a local cluster of real `rangekv` processes on
//! free loopback ports, a runtime and clients for it, and log tails for failure messages.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use rangekv::local_cluster::{LocalCluster, LocalClusterConfig};
use test_util::{retry_async, wait_until};

/// What a `rangekv ctl` run printed, and whether it succeeded.
pub struct CtlOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOutput {
    /// The JSON on stdout of a run that must have succeeded (`--json`).
    pub fn json(&self) -> serde_json::Value {
        assert!(self.ok, "rangekv ctl failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("rangekv ctl printed no JSON ({e}): {}", self.stdout))
    }
}

/// Runs `rangekv ctl --pd <pd> <args>` (`pd`: comma-separated endpoints).
pub fn ctl(pd: &str, args: &[&str]) -> CtlOutput {
    let out = std::process::Command::new(bin())
        .args(["ctl", "--pd", pd])
        .args(args)
        .output()
        .expect("run rangekv ctl");
    CtlOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `(name, role)` of every PD member `ctl member list --json` shows, sorted by name; `None`
/// if ctl failed.
pub fn pd_member_roles(pd: &str) -> Option<Vec<(String, String)>> {
    let out = ctl(pd, &["--json", "member", "list"]);
    if !out.ok {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    let mut roles: Vec<(String, String)> = v["members"]
        .as_array()?
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_owned(),
                m["role"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    roles.sort();
    Some(roles)
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rangekv"))
}

pub struct TestCluster {
    pub cluster: LocalCluster,
    pub _dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
    /// How clients connect: TLS when the cluster was laid out with it.
    pub security: security::SecurityManager,
}

impl TestCluster {
    pub fn start(stores: usize) -> TestCluster {
        Self::start_with_pds(1, stores)
    }

    pub fn start_with_pds(pds: usize, stores: usize) -> TestCluster {
        Self::start_with_config(pds, stores, "")
    }

    /// `extra` is appended to every store's TOML config.
    pub fn start_with_config(pds: usize, stores: usize, extra: &str) -> TestCluster {
        Self::start_customized(pds, stores, extra, |_| {})
    }

    /// [`TestCluster::start_with_config`], with a last change to the layout before start.
    pub fn start_customized(
        pds: usize,
        stores: usize,
        extra: &str,
        customize: impl FnOnce(&mut LocalClusterConfig),
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg =
            LocalClusterConfig::on_free_ports(bin(), dir.path().to_path_buf(), pds, stores)
                .expect("ports");
        cfg.pd_args = vec!["--max-replicas".into(), stores.min(3).to_string()];
        cfg.server_args = vec!["--config".into(), write_server_config(dir.path(), extra)];
        customize(&mut cfg);
        let security = cfg.security().expect("certificates");
        let mut cluster = LocalCluster::start(cfg).expect("start cluster");
        cluster
            .wait_listening(Duration::from_secs(60))
            .expect("listening");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let t = TestCluster {
            cluster,
            _dir: dir,
            rt,
            security,
        };
        t.wait_ready(stores);
        t
    }

    /// One PD member started with the TOML `pd_config` and `stores` stores.
    pub fn start_with_pd_config(stores: usize, pd_config: &str) -> TestCluster {
        Self::start_customized(1, stores, "", |cfg| {
            let pd_toml = cfg.data_dir.join("pd.toml");
            std::fs::write(&pd_toml, pd_config).expect("write PD config");
            cfg.pd_args
                .extend(["--config".into(), pd_toml.display().to_string()]);
        })
    }

    pub fn wait_ready(&self, stores: usize) -> client::RawClient {
        let endpoints = self.cluster.pd_endpoints();
        self.rt
            .block_on(rangekv_ready(&endpoints, &self.security, stores))
            .unwrap_or_else(|e| panic!("cluster not ready: {e:#}\n{}", self.logs()))
    }

    pub fn client(&self) -> client::RawClient {
        self.rt
            .block_on(raw_client(&self.cluster.pd_endpoints(), &self.security))
            .expect("client")
    }

    pub fn pd(&self) -> pd_client::PdClient {
        self.rt
            .block_on(pd_client(&self.cluster.pd_endpoints(), &self.security))
            .expect("pd client")
    }

    /// The index (in `cluster.stores`) of the store leading the region holding `key`.
    pub fn leader_index(&self, key: &[u8]) -> usize {
        let pd = self.pd();
        let mut found = None;
        wait_until(
            &format!("PD to know a leader for {key:?}"),
            Duration::from_secs(30),
            || {
                let info = self.rt.block_on(pd.get_region(key)).expect("region");
                if let Some(leader) = info.leader {
                    let store = self
                        .rt
                        .block_on(pd.get_store(leader.store_id))
                        .expect("store");
                    found = self
                        .cluster
                        .stores
                        .iter()
                        .position(|n| n.addr == store.address);
                }
                found.is_some()
            },
        );
        found.expect("found")
    }

    /// Waits until every running node listens; on failure, panics with the nodes' log tails.
    pub fn wait_listening(&mut self, secs: u64) {
        if let Err(e) = self.cluster.wait_listening(Duration::from_secs(secs)) {
            panic!("{e:#}\n{}", self.logs());
        }
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in self.cluster.pds.iter().chain(self.cluster.stores.iter()) {
            let text = std::fs::read_to_string(n.log_path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- {} ---\n", n.name));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// Short ticks so that failover happens quickly in tests; `extra` TOML is added: its lines
/// before the first table header at the top level, the rest after.
pub fn write_server_config(dir: &std::path::Path, extra: &str) -> String {
    let path = dir.join("server.toml");
    let (top, tables) = match extra.find("\n[") {
        _ if extra.starts_with('[') => ("", extra),
        Some(i) => extra.split_at(i + 1),
        None => (extra, ""),
    };
    std::fs::write(
        &path,
        format!(
            "store_heartbeat_secs = 1\nregion_heartbeat_secs = 1\n{top}[raftstore]\nraft_base_tick_ms = 50\n{tables}"
        ),
    )
    .expect("write config");
    path.display().to_string()
}

/// A client of the cluster once it is bootstrapped, `stores` stores registered and a write
/// goes through; the last failure after a minute.
pub async fn rangekv_ready(
    endpoints: &[String],
    security: &security::SecurityManager,
    stores: usize,
) -> Result<client::RawClient> {
    retry_async(Duration::from_secs(60), || {
        probe(endpoints, security, stores)
    })
    .await
}

/// A raw client connecting with `security`.
pub async fn raw_client(
    endpoints: &[String],
    security: &security::SecurityManager,
) -> client::Result<client::RawClient> {
    let config = client::Config::default().with_security(security.clone());
    client::RawClient::with_config(endpoints.to_vec(), config).await
}

/// A PD client connecting with `security`.
pub async fn pd_client(
    endpoints: &[String],
    security: &security::SecurityManager,
) -> pd_client::Result<pd_client::PdClient> {
    let config = pd_client::PdClientConfig {
        security: security.clone(),
        ..Default::default()
    };
    pd_client::PdClient::connect_with_config(endpoints.to_vec(), config).await
}

pub async fn probe(
    endpoints: &[String],
    security: &security::SecurityManager,
    stores: usize,
) -> Result<client::RawClient> {
    let pd = pd_client(endpoints, security).await?;
    anyhow::ensure!(pd.is_bootstrapped().await?, "not bootstrapped");
    let n = pd.get_all_stores(true).await?.len();
    anyhow::ensure!(n >= stores, "{n} stores registered");
    let c = raw_client(endpoints, security).await?;
    c.put(b"probe".to_vec(), b"1".to_vec()).await?;
    Ok(c)
}

/// Replicas per store (by store id) and whether every region has exactly 3 voters, as PD
/// knows them.
pub fn placement(t: &TestCluster) -> (std::collections::BTreeMap<u64, usize>, bool) {
    let pd = t.pd();
    let regions =
        t.rt.block_on(pd.scan_regions(b"", b"", 10_000))
            .expect("scan regions");
    let mut per_store = std::collections::BTreeMap::new();
    let mut all_three = !regions.is_empty();
    for r in &regions {
        let voters = r
            .region
            .peers
            .iter()
            .filter(|p| p.role() == proto::metapb::PeerRole::Voter)
            .count();
        all_three &= voters == 3 && r.region.peers.len() == 3;
        for p in &r.region.peers {
            *per_store.entry(p.store_id).or_default() += 1;
        }
    }
    (per_store, all_three)
}

pub fn key(i: u32) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

/// Every region's replicas hold the same data (what `rangekv ctl region check` runs). A check
/// that could not hear from every replica (the region's membership moved meanwhile) is run
/// again; a replica whose hash differs fails the test at once.
pub fn check_replicas_agree(t: &TestCluster) {
    let pd = t.pd();
    let regions = t.rt.block_on(pd.scan_regions(b"", b"", 10_000)).unwrap();
    for r in regions {
        let outcome =
            t.rt.block_on(test_util::retry_async(Duration::from_secs(60), || async {
                let outcome = rangekv::region_check::check_region(&pd, &r.region.start_key).await?;
                let diverged = outcome.replicas.iter().any(|v| v.verdict == "mismatch");
                anyhow::ensure!(
                    diverged || (outcome.replicas.len() == 3 && outcome.consistent()),
                    "region {} not checked everywhere: {outcome:?}",
                    r.region.id,
                );
                Ok(outcome)
            }))
            .unwrap_or_else(|e| panic!("region {} check: {e:#}\n{}", r.region.id, t.logs()));
        assert!(
            outcome.consistent(),
            "region {} diverged: {outcome:?}",
            r.region.id
        );
    }
}
