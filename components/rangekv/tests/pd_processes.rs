//! PD as real processes: kill -9 of the leader of a 3-member PD under continuous TSO load.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rangekv::local_cluster::{LocalCluster, LocalClusterConfig};

mod support;
use support::ctl;

#[test]
fn kill_9_of_the_pd_leader_under_tso_load_keeps_timestamps_unique_and_increasing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = LocalClusterConfig::on_free_ports(
        PathBuf::from(env!("CARGO_BIN_EXE_rangekv")),
        dir.path().to_path_buf(),
        3,
        0,
    )
    .expect("ports");
    let mut cluster = LocalCluster::start(cfg).expect("start PD");
    cluster
        .wait_listening(Duration::from_secs(60))
        .expect("listening");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let endpoints = cluster.pd_endpoints();
    let pd = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match pd_client::PdClient::connect(endpoints.clone()).await {
                Ok(c) if c.get_ts().await.is_ok() => break c,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Ok(_) => panic!("PD does not serve timestamps"),
                Err(e) => panic!("cannot connect to PD: {e}"),
            }
        }
    });

    // Several clients, each its own connection, asking for timestamps without pause.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            rt.block_on(pd_client::PdClient::connect(endpoints.clone()))
                .expect("client")
        })
        .collect();
    let workers: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let stop = stop.clone();
            rt.spawn(async move {
                let mut got = Vec::new();
                let mut longest_gap = Duration::ZERO;
                let mut last_ok = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(ts) = c.get_ts().await {
                        longest_gap = longest_gap.max(last_ok.elapsed());
                        last_ok = Instant::now();
                        got.push(ts);
                    }
                }
                (got, longest_gap)
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(500));
    let leader = rt
        .block_on(pd.get_members())
        .expect("members")
        .leader
        .expect("a leader")
        .name;
    let victim = cluster
        .pds
        .iter()
        .position(|n| n.name == leader)
        .expect("leader is ours");
    cluster.kill_pd(victim).expect("kill -9");
    // Let the survivors elect and serve for a while.
    let resumed = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if pd.get_ts().await.is_ok() {
                let m = pd
                    .get_members()
                    .await
                    .ok()
                    .and_then(|m| m.leader)
                    .map(|l| l.name);
                if m.is_some_and(|n| n != leader) {
                    return true;
                }
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(resumed, "no new PD leader served timestamps");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);

    let mut all = Vec::new();
    for w in workers {
        let (got, gap) = rt.block_on(w).expect("worker");
        assert!(got.len() > 10, "a client got only {} timestamps", got.len());
        assert!(
            got.windows(2).all(|p| p[0] < p[1]),
            "timestamps of one client went backwards"
        );
        // Service resumed within a few election timeouts (1 s each by default).
        assert!(gap < Duration::from_secs(10), "a client waited {gap:?}");
        all.extend(got);
    }
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "a timestamp was handed out twice");
}

fn member_roles(endpoints: &str) -> Vec<(String, String)> {
    support::pd_member_roles(endpoints).unwrap_or_default()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ctl_member_add_and_remove_replace_pd_members_of_running_processes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = LocalClusterConfig::on_free_ports(
        PathBuf::from(env!("CARGO_BIN_EXE_rangekv")),
        dir.path().to_path_buf(),
        3,
        0,
    )
    .expect("ports");
    let mut cluster = LocalCluster::start(cfg).expect("start PD");
    cluster
        .wait_listening(Duration::from_secs(60))
        .expect("listening");
    let endpoints = cluster.pd_endpoints().join(",");
    let voter = |name: &str| (name.to_owned(), "voter".to_owned());
    wait_for("three voting PD members", Duration::from_secs(60), || {
        member_roles(&endpoints) == vec![voter("pd1"), voter("pd2"), voter("pd3")]
    });

    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").to_string()
    };
    let d = cluster.add_pd(addr.clone());
    // Started before it is added, it refuses and says how to add it.
    cluster.start_pd(d).expect("spawn pd4");
    wait_for("pd4 to refuse", Duration::from_secs(30), || {
        !cluster.pds[d].is_running()
    });
    let log = std::fs::read_to_string(cluster.pds[d].log_path()).unwrap_or_default();
    assert!(log.contains("rangekv ctl member add pd4"), "{log}");

    let url = format!("http://{addr}");
    let out = ctl(&endpoints, &["member", "add", "pd4", &url]);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("as a learner"), "{}", out.stdout);
    let out = ctl(&endpoints, &["member", "add", "pd4", &url]);
    assert!(
        !out.ok && out.stderr.contains("already a PD member"),
        "{}",
        out.stderr
    );
    cluster.start_pd(d).expect("start pd4");
    wait_for("pd4 to vote", Duration::from_secs(60), || {
        member_roles(&endpoints) == vec![voter("pd1"), voter("pd2"), voter("pd3"), voter("pd4")]
    });

    // Replace pd1 by pd4: remove it; then with pd2 killed, pd3 and pd4 are a majority of three.
    let out = ctl(&endpoints, &["member", "remove", "pd1"]);
    assert!(out.ok, "{}", out.stderr);
    wait_for("pd1 to leave", Duration::from_secs(60), || {
        member_roles(&endpoints) == vec![voter("pd2"), voter("pd3"), voter("pd4")]
    });
    cluster.kill_pd(1).expect("kill -9 pd2");
    let endpoints = format!("{endpoints},{addr}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let served = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let endpoints: Vec<String> = endpoints.split(',').map(str::to_owned).collect();
        loop {
            if let Ok(c) = pd_client::PdClient::connect(endpoints.clone()).await {
                if c.get_ts().await.is_ok() {
                    return true;
                }
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert!(served, "pd3 and pd4 did not serve timestamps");
    cluster.shutdown();
}
