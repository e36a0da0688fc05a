//! An in-process PD group for tests: N members on loopback, real RocksDB in temp dirs, stop /
//! restart of members on the same data dir and port, and isolation of a member's Raft traffic.
//! Shared by the placement-driver and pd_client test suites.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use placement_driver::{PdConfig, PdHandle, SystemClock};
use tokio::net::TcpListener;

/// How long tests wait for a condition before failing.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `cond` every 10 ms until it holds; panics after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub struct Member {
    pub name: String,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub handle: Option<PdHandle>,
}

impl Member {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn handle(&self) -> &PdHandle {
        self.handle.as_ref().expect("member is running")
    }
}

pub struct PdGroup {
    _dir: tempfile::TempDir,
    pub initial_cluster: String,
    pub members: Vec<Member>,
    /// Applied to every member's config (at start and restart).
    tweak: fn(&mut PdConfig),
}

impl PdGroup {
    /// Starts `n` members that form one group.
    pub async fn start(n: usize) -> PdGroup {
        PdGroup::start_with(n, |_| {}).await
    }

    /// Starts `n` members that form one group, with `tweak` applied to every member's config.
    pub async fn start_with(n: usize, tweak: fn(&mut PdConfig)) -> PdGroup {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let members: Vec<Member> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| Member {
                name: format!("pd{}", i + 1),
                dir: dir.path().join(format!("pd{}", i + 1)),
                addr: l.local_addr().unwrap(),
                handle: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut group = PdGroup {
            _dir: dir,
            initial_cluster,
            members,
            tweak,
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            let handle = placement_driver::start_with_listener(
                group.config(i),
                Arc::new(SystemClock),
                listener,
            )
            .await
            .unwrap();
            group.members[i].handle = Some(handle);
        }
        group
    }

    pub fn config(&self, i: usize) -> PdConfig {
        let m = &self.members[i];
        let mut config = PdConfig {
            name: m.name.clone(),
            listen_addr: m.addr.to_string(),
            initial_cluster: self.initial_cluster.clone(),
            shutdown_timeout: Duration::from_secs(10),
            ..PdConfig::for_test(&m.dir)
        };
        (self.tweak)(&mut config);
        config
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.url()).collect()
    }

    /// Stops member `i` (a clean shutdown: it closes its connections and storage).
    pub async fn stop(&mut self, i: usize) {
        let handle = self.members[i].handle.take().expect("member is running");
        handle.shutdown().await.unwrap();
    }

    /// Restarts member `i` on its data dir and port.
    pub async fn restart(&mut self, i: usize) {
        let config = self.config(i);
        self.try_start(i, config).await.unwrap();
    }

    /// Starts member `i` on its port with `config` (normally a changed [`PdGroup::config`]);
    /// keeps the handle if it started, returns the error if it refused.
    pub async fn try_start(&mut self, i: usize, config: PdConfig) -> placement_driver::Result<()> {
        assert!(self.members[i].handle.is_none(), "member is running");
        let addr = self.members[i].addr;
        let mut listener = None;
        wait_until("the member's port to be free", DEADLINE, || {
            let ok = std::net::TcpListener::bind(addr)
                .and_then(|l| {
                    l.set_nonblocking(true)?;
                    Ok(l)
                })
                .ok();
            let found = ok.is_some();
            if let Some(l) = ok {
                listener = Some(l);
            }
            async move { found }
        })
        .await;
        let listener = TcpListener::from_std(listener.expect("bound")).unwrap();
        let handle =
            placement_driver::start_with_listener(config, Arc::new(SystemClock), listener).await?;
        self.members[i].handle = Some(handle);
        Ok(())
    }

    /// Index of the running member that is a serving leader, if exactly one is.
    pub fn serving_leader(&self) -> Option<usize> {
        let serving: Vec<usize> = (0..self.members.len())
            .filter(|&i| {
                self.members[i]
                    .handle
                    .as_ref()
                    .is_some_and(|h| h.is_serving_leader())
            })
            .collect();
        (serving.len() == 1).then(|| serving[0])
    }

    /// Waits until some running member (other than `except`) serves as leader.
    pub async fn wait_leader_except(&self, except: Option<usize>) -> usize {
        let mut found = None;
        wait_until("a serving PD leader", DEADLINE, || {
            found = self.serving_leader().filter(|&i| Some(i) != except);
            let ok = found.is_some();
            async move { ok }
        })
        .await;
        found.expect("found")
    }

    pub async fn wait_leader(&self) -> usize {
        self.wait_leader_except(None).await
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.members.len() {
            if self.members[i].handle.is_some() {
                self.stop(i).await;
            }
        }
    }
}
