//! `rangekv playground` grown and shrunk while it runs, as a person would: `scale-out` adds a
//! store and follows PD spreading replicas onto it; `scale-in` drains a store to Tombstone and
//! stops its process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rangekv::local_cluster::LocalClusterConfig;
use test_util::wait_until;

use crate::support;

/// A playground child process, stopped (SIGTERM, then waited for) when dropped.
struct Playground {
    child: Child,
    output: std::path::PathBuf,
}

impl Drop for Playground {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Playground {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }
}

/// Starts `rangekv playground --pd 1 --stores 3` in `dir/cluster` on free ports (room for
/// `max_stores` stores) and waits until it is ready.
fn start_playground(dir: &Path, max_stores: usize) -> (Playground, LocalClusterConfig, PathBuf) {
    let data = dir.join("cluster");
    let ports =
        LocalClusterConfig::on_free_ports(support::bin(), data.clone(), 1, max_stores).unwrap();
    let output = dir.join("playground.out");
    let out = std::fs::File::create(&output).unwrap();
    let child = Command::new(support::bin())
        .args(["playground", "--pd", "1", "--stores", "3"])
        .args(["--pd-port", &ports.pd_port.to_string()])
        .args(["--store-port", &ports.store_port.to_string()])
        .args(["--status-port", &ports.status_port.unwrap().to_string()])
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start the playground");
    let pg = Playground { child, output };
    wait_until("the playground is ready", Duration::from_secs(120), || {
        pg.output().contains("press Ctrl-C to stop")
    });
    (pg, ports, data)
}

fn rangekv(args: &[&str]) -> (bool, String) {
    let out = Command::new(support::bin())
        .args(args)
        .output()
        .expect("run rangekv");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn stores(pd: &str) -> Vec<serde_json::Value> {
    let (ok, out) = rangekv(&["ctl", "--pd", pd, "--json", "store", "list"]);
    assert!(ok, "{out}");
    serde_json::from_str::<serde_json::Value>(&out)
        .expect("store list JSON")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_running_playground_scales_out_and_in() {
    let dir = tempfile::tempdir().unwrap();
    // Free ports for up to 5 stores with their status servers.
    let (pg, ports, data) = start_playground(dir.path(), 5);
    let pd = format!("127.0.0.1:{}", ports.pd_port);
    let data_dir = data.display().to_string();

    // Six regions, 18 replicas: a fourth store deserves a share.
    for key in ["b", "d", "f", "h", "j"] {
        let (ok, out) = rangekv(&["ctl", "--pd", &pd, "region", "split", key]);
        assert!(ok, "split at {key}: {out}");
    }

    let (ok, out) = rangekv(&[
        "playground",
        "scale-out",
        "--stores",
        "1",
        "--data-dir",
        &data_dir,
    ]);
    assert!(ok, "scale-out failed: {out}\n{}", pg.output());
    assert!(out.contains("started store4"), "{out}");
    assert!(out.contains("balanced"), "{out}");
    let listed = stores(&pd);
    assert_eq!(listed.len(), 4, "{listed:?}");
    let new = listed
        .iter()
        .find(|s| {
            s["address"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{}", ports.store_port + 3))
        })
        .expect("the new store is registered");
    assert!(new["region_count"].as_u64().unwrap() > 0, "{listed:?}");
    let (ok, ops) = rangekv(&["ctl", "--pd", &pd, "operator", "list"]);
    assert!(ok && ops.contains("REGION"), "{ops}");
    let (ok, schedulers) = rangekv(&["ctl", "--pd", &pd, "scheduler", "list"]);
    assert!(ok, "{schedulers}");
    for name in [
        "balance-leader-scheduler",
        "replica-checker",
        "balance-region-scheduler",
    ] {
        assert!(schedulers.contains(name), "{schedulers}");
    }

    // Scale in: the new store drains back to the other three and its process stops.
    let id = new["id"].as_u64().unwrap().to_string();
    let (ok, out) = rangekv(&[
        "playground",
        "scale-in",
        "--store",
        &id,
        "--data-dir",
        &data_dir,
    ]);
    assert!(ok, "scale-in failed: {out}\n{}", pg.output());
    assert!(out.contains("Tombstone"), "{out}");
    let addr = new["address"].as_str().unwrap().to_owned();
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the removed store still listens at {addr}"
    );
    let listed = stores(&pd);
    for s in &listed {
        if s["id"] == new["id"] {
            assert_eq!(s["region_count"].as_u64(), Some(0), "{listed:?}");
        }
    }
    // Data written before and after still reads back through the remaining stores.
    let (ok, out) = rangekv(&["ctl", "--pd", &pd, "put", "after-scale", "ok"]);
    assert!(ok, "{out}");
    let (ok, out) = rangekv(&["ctl", "--pd", &pd, "get", "after-scale"]);
    assert!(ok && out.contains("ok"), "{out}");
    drop(pg);
    assert!(!Path::new(&data).join("control.sock").exists());
}

#[test]
fn a_missing_server_config_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cluster");
    let missing = dir.path().join("no-such.toml");
    let (ok, out) = rangekv(&[
        "playground",
        "--pd",
        "1",
        "--stores",
        "1",
        "--data-dir",
        &data.display().to_string(),
        "--server-config",
        &missing.display().to_string(),
    ]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("server config") && out.contains("no-such.toml"),
        "{out}"
    );
    assert!(!data.join("store1").exists(), "a store was started: {out}");
}

fn pd_members(pd: &str) -> Vec<(String, String)> {
    support::pd_member_roles(pd).expect("ctl member list")
}

#[test]
fn a_running_playground_replaces_its_pd_members() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, ports, data) = start_playground(dir.path(), 3);
    let pd1 = format!("127.0.0.1:{}", ports.pd_port);
    let data_dir = data.display().to_string();
    let (ok, out) = rangekv(&["ctl", "--pd", &pd1, "put", "before", "1"]);
    assert!(ok, "{out}");

    // The single PD member becomes a group of three.
    let (ok, out) = rangekv(&[
        "playground",
        "scale-out",
        "--pd",
        "2",
        "--data-dir",
        &data_dir,
    ]);
    assert!(ok, "scale-out failed: {out}\n{}", pg.output());
    assert!(out.contains("added PD member pd2"), "{out}");
    assert!(out.contains("every new PD member votes"), "{out}");
    let voter = |n: &str| (n.to_owned(), "voter".to_owned());
    assert_eq!(
        pd_members(&pd1),
        vec![voter("pd1"), voter("pd2"), voter("pd3")]
    );

    // The original member leaves; the new ones carry PD on.
    let (ok, out) = rangekv(&[
        "playground",
        "scale-in",
        "--pd",
        "pd1",
        "--data-dir",
        &data_dir,
    ]);
    assert!(ok, "scale-in failed: {out}\n{}", pg.output());
    assert!(out.contains("removed PD member pd1"), "{out}");
    assert!(
        std::net::TcpStream::connect(&pd1).is_err(),
        "the removed member still listens at {pd1}"
    );
    let handle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("playground.json")).unwrap()).unwrap();
    let endpoints: Vec<String> = handle["pd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(endpoints.len(), 2, "{handle}");
    let pd = endpoints.join(",");
    wait_until("pd2 and pd3 serve", Duration::from_secs(60), || {
        support::ctl(&pd, &["--json", "member", "list"]).ok
    });
    assert_eq!(pd_members(&pd), vec![voter("pd2"), voter("pd3")]);
    let (ok, out) = rangekv(&["ctl", "--pd", &pd, "get", "before"]);
    assert!(ok && out.contains('1'), "{out}");
    let (ok, out) = rangekv(&["ctl", "--pd", &pd, "put", "after", "2"]);
    assert!(ok, "{out}");
}
