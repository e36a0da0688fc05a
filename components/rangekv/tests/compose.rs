//! The container deployment, for real: `scripts/image.sh` builds an image of this build's
//! binary, `deploy/compose.yaml` brings up 3 PD members and 3 stores on a private network, and
//! a client on the host writes and reads through PD's published port while the test kills a
//! store container, cuts a store off the network and reconnects it, restarts a PD member and
//! adds a 4th and a 5th store. At the end every acknowledged write reads back and the replicas of
//! every region agree.
//!
//! A second test brings the same cluster up with `deploy/compose.tls.yaml` (mutual TLS on
//! every connection, certificates made by a one-shot container) and uses it from the host with
//! the certificates copied out, while a client without them is refused.
//!
//! Each run has its own project name, image tag, network and host port, and removes its
//! containers, network, volumes and image whether it passes or fails. Without a Docker engine
//! and Compose on the machine the test says so and does nothing else.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Compose command of this machine: `docker compose`, or `docker-compose`.
fn compose_command() -> Option<Vec<String>> {
    let works = |cmd: &[&str]| {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(&["docker", "compose"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else if works(&["docker-compose"]) {
        Some(vec!["docker-compose".into()])
    } else {
        None
    }
}

/// One compose project; removed (containers, network, volumes, image) when dropped.
struct Deployment {
    compose: Vec<String>,
    /// Compose files after `deploy/compose.yaml` (overrides).
    overrides: Vec<&'static str>,
    project: String,
    image: String,
    net: String,
    pd_port: u16,
}

impl Deployment {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.compose[0]);
        cmd.args(&self.compose[1..])
            .args(["-p", &self.project, "-f"])
            .arg(repo().join("deploy/compose.yaml"));
        for file in &self.overrides {
            cmd.arg("-f").arg(repo().join(file));
        }
        cmd.args(args)
            .env("RANGEKV_IMAGE", &self.image)
            .env("RANGEKV_NET", &self.net)
            .env("RANGEKV_PD_PORT", self.pd_port.to_string());
        cmd
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("run compose");
        assert!(
            out.status.success(),
            "compose {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The container id of `service`.
    fn container(&self, service: &str) -> String {
        let id = self.run(&["ps", "-q", service]).trim().to_owned();
        assert!(!id.is_empty(), "no container for {service}");
        id
    }

    fn docker(&self, args: &[&str]) {
        let out = Command::new("docker").args(args).output().expect("docker");
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until every named service's container reports healthy.
    fn wait_healthy(&self, services: &[&str]) {
        let until = Instant::now() + DEADLINE;
        for service in services {
            let id = self.container(service);
            loop {
                let out = Command::new("docker")
                    .args(["inspect", "-f", "{{.State.Health.Status}}", &id])
                    .output()
                    .expect("docker inspect");
                if String::from_utf8_lossy(&out.stdout).trim() == "healthy" {
                    break;
                }
                assert!(Instant::now() < until, "{service} never became healthy");
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }

    fn network(&self) -> String {
        format!("{}_rangekv", self.project)
    }

    fn pd(&self) -> String {
        format!("127.0.0.1:{}", self.pd_port)
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = self
            .command(&["--profile", "scale", "down", "-v", "--remove-orphans"])
            .output();
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn ctl(pd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rangekv"))
        .args(["ctl", "--pd", pd])
        .args(args)
        .output()
        .expect("run rangekv ctl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The ids of the stores PD knows.
fn store_ids(pd: &str) -> Vec<u64> {
    let (ok, out) = ctl(pd, &["--json", "store", "list"]);
    if !ok {
        return Vec::new();
    }
    out.parse::<serde_json::Value>()
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s["id"].as_u64())
        .collect()
}

/// Writes `key = value` through `client`, retrying until it is acknowledged (within the
/// deadline): the faults of this test leave a majority of every region's replicas running.
async fn must_put(client: &client::RawClient, key: String, value: String) {
    let until = Instant::now() + DEADLINE;
    loop {
        match client.put(key.clone(), value.clone()).await {
            Ok(()) => return,
            Err(e) if Instant::now() < until => {
                eprintln!("put {key}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("put {key} never succeeded: {e}"),
        }
    }
}

/// A deployment named `name` (unique per test) with `overrides`, its image built; `None`
/// (after saying so) without Docker and Compose.
fn deployment(name: &str, overrides: Vec<&'static str>, net_slot: u32) -> Option<Deployment> {
    let Some(compose) = compose_command() else {
        eprintln!("SKIPPED: no Docker Compose on this machine");
        return None;
    };
    if !Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("SKIPPED: no Docker engine running on this machine");
        return None;
    }
    let id = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let d = Deployment {
        compose,
        overrides,
        project: format!("rangekvtest{id}{name}"),
        image: format!("rangekv:test-{id}-{name}"),
        // A /24 of its own, so that concurrent runs (and the tests of one run, by their slot)
        // do not collide.
        net: format!(
            "172.{}.{}",
            20 + nanos % 5 + 5 * net_slot,
            (id + nanos) % 250 + 1
        ),
        pd_port: free_port(),
    };
    let built = Command::new("bash")
        .arg(repo().join("scripts/image.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_rangekv"), "--tag", &d.image])
        .output()
        .expect("run scripts/image.sh");
    assert!(
        built.status.success(),
        "image build failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let report = String::from_utf8_lossy(&built.stdout);
    assert!(report.contains("MiB"), "{report}");
    Some(d)
}

#[test]
fn a_compose_cluster_serves_the_host_through_container_faults() {
    let Some(d) = deployment("plain", vec![], 0) else {
        return;
    };
    d.run(&["up", "-d"]);
    let nodes = ["pd1", "pd2", "pd3", "store1", "store2", "store3"];
    d.wait_healthy(&nodes);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(async {
        let until = Instant::now() + DEADLINE;
        loop {
            match client::RawClient::connect(vec![d.pd()]).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < until => {
                    eprintln!("connect: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no client connection from the host: {e}"),
            }
        }
    });
    let mut acked = Vec::new();
    let mut write = |phase: &str, n: usize| {
        for i in 0..n {
            let (key, value) = (format!("compose/{phase}/{i:03}"), format!("{phase}-{i}"));
            rt.block_on(must_put(&client, key.clone(), value.clone()));
            acked.push((key, value));
        }
    };

    write("start", 20);

    // A store killed: the other two keep every region's majority.
    d.docker(&["kill", &d.container("store2")]);
    write("store-killed", 20);
    d.docker(&["start", &d.container("store2")]);
    d.wait_healthy(&["store2"]);

    // A store cut off the network, then back at its address.
    let store3 = d.container("store3");
    d.docker(&["network", "disconnect", &d.network(), &store3]);
    write("store-cut-off", 20);
    let ip = format!("{}.23", d.net);
    d.docker(&["network", "connect", "--ip", &ip, &d.network(), &store3]);
    d.wait_healthy(&["store3"]);

    // A PD member restarted.
    d.docker(&["restart", &d.container("pd2")]);
    write("pd-restarted", 20);
    d.wait_healthy(&["pd2"]);

    // A 4th and a 5th store join and register, and PD moves replicas onto them.
    let before = store_ids(&d.pd());
    d.run(&["--profile", "scale", "up", "-d", "store4", "store5"]);
    d.wait_healthy(&["store4", "store5"]);
    let until = Instant::now() + DEADLINE;
    loop {
        let (ok, stores) = ctl(&d.pd(), &["store", "list"]);
        if ok && stores.matches(" Up ").count() == 5 {
            break;
        }
        assert!(
            Instant::now() < until,
            "the new stores never came up: {stores}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let until = Instant::now() + DEADLINE;
    loop {
        let (ok, regions) = ctl(&d.pd(), &["--json", "region", "list"]);
        let new: Vec<u64> = store_ids(&d.pd())
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        let store4 = regions
            .parse::<serde_json::Value>()
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|regions| {
                regions.iter().any(|r| {
                    r["peers"].as_array().is_some_and(|peers| {
                        peers
                            .iter()
                            .any(|p| new.iter().any(|id| p["store_id"].as_u64() == Some(*id)))
                    })
                })
            });
        if ok && store4 {
            break;
        }
        assert!(
            Instant::now() < until,
            "PD never moved a replica onto a new store: {regions}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    write("scaled", 10);

    // Every acknowledged write reads back.
    rt.block_on(async {
        for (key, value) in &acked {
            let got = client.get(key.clone()).await.expect("read back");
            assert_eq!(
                got.as_deref(),
                Some(value.as_bytes()),
                "{key} lost or wrong"
            );
        }
    });
    // The replicas of the data's region agree, once store3 caught up on what it missed (a
    // fourth may be listed while PD is moving one onto the new store).
    let until = Instant::now() + DEADLINE;
    loop {
        let (ok, check) = ctl(&d.pd(), &["region", "check", "compose/"]);
        if ok {
            let agreeing = check
                .lines()
                .filter(|l| l.trim_end().ends_with(" match"))
                .count();
            assert!(agreeing >= 3, "{check}");
            break;
        }
        assert!(Instant::now() < until, "replicas never agreed: {check}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // And so do those of every other region.
    let pd = rt
        .block_on(pd_client::PdClient::connect(vec![d.pd()]))
        .expect("PD client");
    let regions = rt.block_on(pd.scan_regions(b"", b"", 10_000)).unwrap();
    for r in regions {
        let until = Instant::now() + DEADLINE;
        loop {
            let checked = rt.block_on(rangekv::region_check::check_region(
                &pd,
                &r.region.start_key,
            ));
            match checked {
                Ok(o) if o.replicas.iter().any(|v| v.verdict == "mismatch") => {
                    panic!("region {} diverged: {o:?}", r.region.id)
                }
                Ok(o) if o.replicas.iter().filter(|v| v.verdict == "match").count() >= 3 => break,
                other => {
                    assert!(
                        Instant::now() < until,
                        "region {} never checked: {other:?}",
                        r.region.id
                    );
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
}

#[test]
fn a_compose_cluster_with_tls_serves_clients_with_certificates_only() {
    let Some(d) = deployment("tls", vec!["deploy/compose.tls.yaml"], 1) else {
        return;
    };
    d.run(&["up", "-d"]);
    d.wait_healthy(&["pd1", "pd2", "pd3", "store1", "store2", "store3"]);

    // The certificates the `certs` container made, copied out to the host.
    let dir = tempfile::tempdir().unwrap();
    let certs = d.container("certs");
    d.docker(&[
        "cp",
        &format!("{certs}:/certs"),
        &dir.path().display().to_string(),
    ]);
    let issued = security::certs::Issued {
        ca: dir.path().join("certs/ca.pem"),
        cert: dir.path().join("certs/node.pem"),
        key: dir.path().join("certs/node-key.pem"),
    };
    let security = security::SecurityManager::new(issued.security_config(&[])).expect("certs");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(async {
        let until = Instant::now() + DEADLINE;
        loop {
            let config = client::Config::default().with_security(security.clone());
            match client::RawClient::with_config(vec![d.pd()], config).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < until => {
                    eprintln!("connect: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no TLS client connection from the host: {e}"),
            }
        }
    });
    rt.block_on(async {
        for i in 0..20 {
            must_put(&client, format!("tls/{i:02}"), format!("v{i}")).await;
        }
        for i in 0..20 {
            let got = client.get(format!("tls/{i:02}")).await.expect("read back");
            assert_eq!(got.as_deref(), Some(format!("v{i}").as_bytes()));
        }
    });

    // `ctl` from the host: with the certificates it works (and the replicas agree, checked
    // through the stores' status servers over TLS); without them it is refused.
    let flags = [
        "--ca-path".to_string(),
        issued.ca.display().to_string(),
        "--cert-path".into(),
        issued.cert.display().to_string(),
        "--key-path".into(),
        issued.key.display().to_string(),
    ];
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend(["region", "check", "tls/"]);
    let until = Instant::now() + DEADLINE;
    loop {
        let (ok, check) = ctl(&d.pd(), &args);
        if ok {
            assert!(check.matches(" match").count() >= 3, "{check}");
            break;
        }
        assert!(Instant::now() < until, "replicas never agreed: {check}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (ok, out) = ctl(&d.pd(), &["store", "list"]);
    assert!(!ok, "ctl without certificates was served: {out}");
    let plain = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(30),
            client::RawClient::connect(vec![d.pd()]),
        )
        .await
    });
    assert!(
        matches!(plain, Ok(Err(_))),
        "a plaintext client connected to a TLS cluster"
    );
}
