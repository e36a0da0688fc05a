//! An in-process PD group for tests: N members on loopback, real RocksDB in temp dirs, stop /
//! restart of members on the same data dir and port, and isolation of a member's Raft traffic.
//! Also a raw TSO load ([`RawTsoLoad`]) that records what PD itself answered on `pdpb.PD/Tso`
//! streams, with no client in between to filter or retry, and the checks those answers must
//! pass ([`check_tso_answers`]). Shared by the placement-driver and pd_client test suites.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use placement_driver::{PdConfig, PdHandle, SystemClock};
use proto::pdpb::pd_client::PdClient as PdGrpc;
use proto::pdpb::{RequestHeader, TsoRequest};
use test_util::wait_until_async;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;

/// How long tests wait for a condition before failing.
pub const DEADLINE: Duration = Duration::from_secs(20);

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

    /// Adds a member slot `name` (a free port, a data dir; not started, not in
    /// `initial_cluster`) for a member to be added to the running group; returns its index.
    pub fn add_slot(&mut self, name: &str) -> usize {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let dir = self.members[0].dir.parent().unwrap().join(name);
        self.members.push(Member {
            name: name.to_owned(),
            dir,
            addr,
            handle: None,
        });
        self.members.len() - 1
    }

    /// The config of member `i` joining the running group: `initial_cluster` names the
    /// running members and itself, the state is `existing`.
    pub fn join_config(&self, i: usize) -> PdConfig {
        let mut config = self.config(i);
        config.initial_cluster = self
            .members
            .iter()
            .enumerate()
            .filter(|(j, other)| *j == i || other.handle.is_some())
            .map(|(_, other)| format!("{}={}", other.name, other.url()))
            .collect::<Vec<_>>()
            .join(",");
        config.initial_cluster_state = placement_driver::InitialClusterState::Existing;
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
        wait_until_async("the member's port to be free", DEADLINE, || {
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
        wait_until_async("a serving PD leader", DEADLINE, || {
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

/// One answer of PD's Tso stream as a test saw it.
#[derive(Clone, Copy, Debug)]
pub struct TsoAnswer {
    /// The range handed out: `first ..= last` (PD answers with `last`, for `count` timestamps).
    pub first: u64,
    pub last: u64,
    /// When the request was sent and the answer received.
    pub sent: Instant,
    pub received: Instant,
    /// Index of the endpoint that answered.
    pub endpoint: usize,
}

/// Checks what PD answered, across all clients and members: every range is well-formed, no two
/// ranges overlap (no timestamp handed out twice), and real-time order holds: an answer received
/// before another request was sent is below everything that request got.
pub fn check_tso_answers(answers: &[TsoAnswer]) {
    for a in answers {
        assert!(0 < a.first && a.first <= a.last, "malformed answer {a:?}");
    }
    let mut by_first: Vec<&TsoAnswer> = answers.iter().collect();
    by_first.sort_by_key(|a| a.first);
    for pair in by_first.windows(2) {
        assert!(
            pair[0].last < pair[1].first,
            "timestamps handed out twice: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
    // For each request, the highest timestamp answered before it was sent.
    let mut by_received: Vec<&TsoAnswer> = answers.iter().collect();
    by_received.sort_by_key(|a| a.received);
    let mut max_so_far = Vec::with_capacity(by_received.len());
    let mut max = 0;
    for a in &by_received {
        max = max.max(a.last);
        max_so_far.push((a.received, max, *a));
    }
    for b in answers {
        let before = max_so_far.partition_point(|(received, _, _)| *received < b.sent);
        if before > 0 {
            let (_, max, _) = max_so_far[before - 1];
            assert!(
                max < b.first,
                "PD went backwards: {b:?} was requested after {max} had been answered"
            );
        }
    }
}

/// Clients that each keep one raw `pdpb.PD/Tso` stream and take `count` timestamps per request
/// until stopped, moving to the next endpoint whenever a member refuses or fails. Nothing is
/// filtered: every answer PD gave is recorded and checked by [`RawTsoLoad::finish`].
pub struct RawTsoLoad {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<TsoAnswer>>>,
}

impl RawTsoLoad {
    pub fn start(endpoints: Vec<String>, clients: usize, count: u32) -> RawTsoLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let tasks = (0..clients)
            .map(|i| {
                tokio::spawn(raw_tso_client(
                    endpoints.clone(),
                    i,
                    count,
                    Arc::clone(&stop),
                    Arc::clone(&received),
                ))
            })
            .collect();
        RawTsoLoad {
            stop,
            received,
            tasks,
        }
    }

    /// Waits until `n` more answers arrived.
    pub async fn wait_for_more(&self, n: u64) {
        let target = self.received.load(Ordering::Relaxed) + n;
        wait_until_async("PD to answer TSO requests", DEADLINE, || {
            let ok = self.received.load(Ordering::Relaxed) >= target;
            async move { ok }
        })
        .await;
    }

    /// Stops the clients, checks every answer with [`check_tso_answers`] and returns them.
    pub async fn finish(self) -> Vec<TsoAnswer> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.expect("TSO client task"));
        }
        check_tso_answers(&all);
        all
    }
}

async fn raw_tso_client(
    endpoints: Vec<String>,
    first_endpoint: usize,
    count: u32,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
) -> Vec<TsoAnswer> {
    const RPC_TIMEOUT: Duration = Duration::from_secs(2);
    let request = TsoRequest {
        header: Some(RequestHeader::default()),
        count,
        dc_location: String::new(),
    };
    let mut answers = Vec::new();
    let mut at = first_endpoint;
    while !stop.load(Ordering::Relaxed) {
        let endpoint = at % endpoints.len();
        // Refused or failed: try the next member (after a pause, not to spin on a dead one).
        at += 1;
        let connected =
            tokio::time::timeout(RPC_TIMEOUT, PdGrpc::connect(endpoints[endpoint].clone())).await;
        let Ok(Ok(mut client)) = connected else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut sent = Instant::now();
        if tx.send(request.clone()).await.is_err() {
            continue;
        }
        let Ok(Ok(responses)) =
            tokio::time::timeout(RPC_TIMEOUT, client.tso(ReceiverStream::new(rx))).await
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut responses = responses.into_inner();
        loop {
            let answer = tokio::time::timeout(RPC_TIMEOUT, responses.message()).await;
            let received_at = Instant::now();
            let Ok(Ok(Some(resp))) = answer else { break };
            if resp.header.as_ref().is_some_and(|h| h.error.is_some()) {
                break;
            }
            let ts = resp
                .timestamp
                .expect("an answer without error has a timestamp");
            let last = placement_driver::compose_ts(ts.physical as u64, ts.logical as u64);
            answers.push(TsoAnswer {
                first: last + 1 - u64::from(count),
                last,
                sent,
                received: received_at,
                endpoint,
            });
            received.fetch_add(1, Ordering::Relaxed);
            if stop.load(Ordering::Relaxed) {
                return answers;
            }
            sent = Instant::now();
            if tx.send(request.clone()).await.is_err() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    answers
}
