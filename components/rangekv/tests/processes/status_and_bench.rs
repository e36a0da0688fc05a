//! The status server's metrics and region status, and `rangekv bench`.

use crate::support::*;

/// `GET path` on an HTTP server; the status code and the response body.
fn http_request(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to the HTTP server");
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// `GET path` on a status server, which must answer 200; the response body.
fn http_get(addr: &str, path: &str) -> String {
    let (code, body) = http_request(addr, path);
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

/// Polls `GET /ready` until it answers 200 (within the deadline); its body as JSON.
fn wait_ready(addr: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (code, body) = http_request(addr, "/ready");
        let json: serde_json::Value = serde_json::from_str(&body).expect("/ready answers JSON");
        if code == 200 {
            return json;
        }
        assert_eq!(code, 503, "{body}");
        assert!(std::time::Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn status_server_reports_metrics_and_regions() {
    let t = TestCluster::start(3);
    let c = t.client();
    t.rt.block_on(async {
        for i in 0..20 {
            c.put(key(i), b"v".to_vec()).await.unwrap();
            c.get(key(i)).await.unwrap();
        }
    });
    let leader = t.leader_index(b"");
    let addr = t
        .cluster
        .status_addr(leader)
        .expect("status servers are on");
    let metrics = http_get(&addr, "/metrics");
    for name in [
        "rangekv_grpc_requests_total{method=\"raw_put\",outcome=\"ok\"}",
        "rangekv_grpc_request_seconds_bucket",
        "rangekv_raftstore_log_write_seconds_bucket",
        "rangekv_raftstore_group_commit_peers_bucket",
        "rangekv_raftstore_proposals_total{kind=\"write\"}",
        "rangekv_raftstore_applied_entries_total",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    let status: serde_json::Value =
        serde_json::from_str(&http_get(&addr, "/status")).expect("json");
    // One region, or several once PD had it split at the API V2 keyspace boundaries; this
    // store leads the first.
    let regions = status["regions"].as_array().expect("regions");
    assert_eq!(status["region_count"], regions.len(), "{status}");
    let leaders = regions.iter().filter(|r| r["is_leader"] == true).count();
    assert!(leaders >= 1, "{status}");
    assert_eq!(status["leader_count"], leaders, "{status}");
}

/// Every store and PD member answers the liveness and readiness probes; a store is ready once
/// PD answers its heartbeats and each of its regions knows its leader, a PD member once it
/// knows PD's leader.
#[test]
fn stores_and_pd_answer_health_and_readiness_probes() {
    let t = TestCluster::start(3);
    for i in 0..3 {
        let addr = t.cluster.status_addr(i).expect("status servers are on");
        assert!(http_get(&addr, "/health").contains("alive"));
        let ready = wait_ready(&addr);
        assert_eq!(ready["ready"], true, "{ready}");
        assert!(ready["region_count"].as_u64().unwrap() >= 1, "{ready}");
    }
    for endpoint in t.cluster.pd_endpoints() {
        let addr = endpoint.trim_start_matches("http://");
        assert!(http_get(addr, "/health").contains("alive"));
        let ready = wait_ready(addr);
        assert_ne!(ready["leader_id"], 0, "{ready}");
    }
}

/// Runs `rangekv bench` with `args`; its stdout and stderr, failing the test if it failed.
fn run_bench(args: &[&str]) -> (String, String) {
    let out = std::process::Command::new(bin())
        .arg("bench")
        .args(args)
        .output()
        .expect("run rangekv bench");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "bench failed: {stderr}\n{stdout}");
    (stdout, stderr)
}

/// Every operation kind of `report` (a `--json` result) ran and none failed.
fn assert_kinds_ran(report: &serde_json::Value, kinds: &[&str]) {
    for kind in kinds {
        let k = &report["by_kind"][kind];
        assert!(k["ops"].as_u64().unwrap_or(0) > 0, "no {kind}: {report}");
        assert_eq!(k["errors"], 0, "{kind} errors: {report}");
    }
}

#[test]
fn bench_runs_the_ycsb_workloads_without_errors() {
    let t = TestCluster::start(3);
    let endpoints = t.cluster.pd_endpoints().join(",");
    let common = ["--pd", &endpoints, "--records", "300", "--duration", "1"];
    let (stdout, stderr) =
        run_bench(&[&common[..], &["--workload", "a", "--concurrency", "8"]].concat());
    assert!(
        stderr.contains("load: 300 records into rangekv"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ops/s |"),
        "a progress line a second: {stderr}"
    );
    for op in ["read", "update"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(op))
            .unwrap_or_else(|| panic!("no {op} line in:\n{stdout}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols[1].parse::<u64>().unwrap() > 0, "{line}");
        assert_eq!(cols[2], "0", "{op} errors: {line}");
    }
    // Inserts, read-latest, scans and read-modify-writes, as JSON for scripts.
    for (workload, kinds) in [
        ("d", &["read", "insert"][..]),
        ("e", &["scan", "insert"][..]),
        ("f", &["read", "rmw"][..]),
    ] {
        let (stdout, _) = run_bench(
            &[
                &common[..],
                &[
                    "--workload",
                    workload,
                    "--skip-load",
                    "--json",
                    "--concurrency",
                    "4",
                ],
            ]
            .concat(),
        );
        let report: serde_json::Value =
            serde_json::from_str(stdout.trim()).expect("one JSON object");
        assert_eq!(report["target"], "rangekv");
        assert_eq!(report["workload"], workload);
        assert_kinds_ran(&report, kinds);
    }
}

/// The same load runs against etcd through its v3 API (`--target etcd`), so the two compare in
/// one command; the etcd cluster comes from `scripts/etcd-cluster.sh` (which installs etcd if
/// it can; the test command does that).
#[test]
fn bench_drives_an_etcd_cluster_with_the_same_workloads() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("scripts/etcd-cluster.sh");
    let dir = tempfile::tempdir().expect("tempdir");
    let started = std::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .arg(dir.path().join("etcd"))
        .output()
        .expect("run etcd-cluster.sh");
    assert!(
        started.status.success(),
        "a 3-member etcd did not start (is etcd installed?): {}",
        String::from_utf8_lossy(&started.stderr)
    );
    struct Stop(std::path::PathBuf, std::path::PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("bash")
                .arg(&self.0)
                .arg("stop")
                .arg(&self.1)
                .status();
        }
    }
    let _stop = Stop(script.clone(), dir.path().join("etcd"));
    for (workload, kinds) in [
        ("a", &["read", "update"][..]),
        ("e", &["scan", "insert"][..]),
    ] {
        let (stdout, stderr) = run_bench(&[
            "--target",
            "etcd",
            "--endpoints",
            "127.0.0.1:23790,127.0.0.1:23791,127.0.0.1:23792",
            "--workload",
            workload,
            "--records",
            "200",
            "--duration",
            "1",
            "--concurrency",
            "4",
            "--json",
        ]);
        assert!(stderr.contains("load: 200 records into etcd"), "{stderr}");
        let report: serde_json::Value =
            serde_json::from_str(stdout.trim()).expect("one JSON object");
        assert_eq!(report["target"], "etcd");
        assert_kinds_ran(&report, kinds);
    }
}

#[test]
fn bench_runs_small_transactions_and_ctl_shows_a_keys_versions() {
    let t = TestCluster::start(3);
    let endpoints = t.cluster.pd_endpoints().join(",");
    // Two regions cut where transactional data is cut (the encoded key), so transactions span
    // both.
    let out = std::process::Command::new(bin())
        .args([
            "ctl", "--pd", &endpoints, "--json", "region", "split", "--txn",
        ])
        .arg("user00000000000000000025")
        .output()
        .expect("run rangekv ctl");
    assert!(
        out.status.success(),
        "ctl region split --txn failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let regions: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(regions.as_array().map(|a| a.len()), Some(2), "{regions}");
    let out = std::process::Command::new(bin())
        .args([
            "bench",
            "--pd",
            &endpoints,
            "--workload",
            "t",
            "--insert-order",
            "ordered",
            "--records",
            "50",
        ])
        .args(["--duration", "1", "--concurrency", "4"])
        .output()
        .expect("run rangekv bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}\n{stdout}");
    assert!(stderr.contains("load: 50 records"), "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("txn"))
        .unwrap_or_else(|| panic!("no txn line in:\n{stdout}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert!(cols[1].parse::<u64>().unwrap() > 0, "{line}");
    assert_eq!(cols[2], "0", "transaction errors: {line}");
    // The loaded record's history: at least the load's Put, committed.
    let out = std::process::Command::new(bin())
        .args([
            "ctl",
            "--pd",
            &endpoints,
            "--json",
            "txn",
            "mvcc",
            "user00000000000000000007",
        ])
        .output()
        .expect("run rangekv ctl");
    assert!(
        out.status.success(),
        "ctl txn mvcc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let writes = v["writes"].as_array().expect("writes");
    assert!(
        writes.iter().any(|w| w["type"] == "Put"),
        "no committed Put: {v}"
    );
}

/// The metric names a scrape of `addr` serves (from its `# TYPE` lines).
fn served_metrics(addr: &str) -> std::collections::BTreeMap<String, String> {
    http_get(addr, "/metrics")
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

/// Every metric the Grafana dashboard (`deploy/grafana/rangekv.json`) and the alert rules
/// (`deploy/alerts.yml`) query is served by a store or a PD member of a cluster that did some raw and transactional work, so no panel
/// stays empty because of a renamed or missing metric.
#[test]
fn the_dashboard_queries_only_metrics_the_cluster_serves() {
    let t = TestCluster::start(3);
    let c = t.client();
    let endpoints = t.cluster.pd_endpoints();
    t.rt.block_on(async {
        for i in 0..20 {
            c.put(key(i), b"v".to_vec()).await.unwrap();
            c.get(key(i)).await.unwrap();
        }
        let txns = client::TransactionClient::connect(endpoints.clone())
            .await
            .unwrap();
        let mut txn = txns.begin_pessimistic().await.unwrap();
        txn.get_for_update(b"dash".to_vec()).await.unwrap();
        txn.put(b"dash".to_vec(), b"1".to_vec()).await.unwrap();
        txn.commit().await.unwrap();
    });
    let mut served = std::collections::BTreeMap::new();
    for i in 0..3 {
        served.extend(served_metrics(
            &t.cluster.status_addr(i).expect("status servers are on"),
        ));
    }
    for endpoint in &endpoints {
        served.extend(served_metrics(endpoint.trim_start_matches("http://")));
    }

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/rangekv.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read the dashboard"))
            .expect("the dashboard is JSON");
    let mut queried = std::collections::BTreeSet::new();
    // The alert rules too (their expressions are the only `rangekv_` words in the file).
    let alerts = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/alerts.yml"
    ))
    .expect("read the alert rules");
    let words = |text: &str| -> Vec<String> {
        text.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .filter(|w| w.starts_with("rangekv_"))
            .map(str::to_owned)
            .collect()
    };
    let from_alerts = words(&alerts);
    assert!(from_alerts.len() >= 6, "{from_alerts:?}");
    queried.extend(from_alerts);
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let names = expr
                .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .filter(|w| w.starts_with("rangekv_"));
            queried.extend(names.map(str::to_owned));
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for name in &queried {
        // A histogram's series are `<name>_bucket`, `_sum` and `_count`.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| served.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            served.contains_key(family),
            "the dashboard queries {name}, which no node serves; served: {:?}",
            served.keys().collect::<Vec<_>>()
        );
    }
}

/// With `slow_log.threshold_ms = 0` every client request is logged as a slow request, with
/// its method, region and the time of each stage it went through.
#[test]
fn the_slow_log_names_method_region_and_stages() {
    let t = TestCluster::start_with_config(1, 3, "[slow_log]\nthreshold_ms = 0\n");
    let c = t.client();
    t.rt.block_on(async {
        c.put(b"slow".to_vec(), b"v".to_vec()).await.unwrap();
        c.get(b"slow".to_vec()).await.unwrap();
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let logs: String = t
            .cluster
            .stores
            .iter()
            .map(|n| std::fs::read_to_string(n.log_path()).unwrap_or_default())
            .collect();
        let slow: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("slow request"))
            .collect();
        let put = slow
            .iter()
            .find(|l| l.contains("method=\"raw_put\"") || l.contains("method=raw_put"));
        let get = slow
            .iter()
            .find(|l| l.contains("method=\"raw_get\"") || l.contains("method=raw_get"));
        if let (Some(put), Some(get)) = (put, get) {
            for stage in ["latch=", "raft_write=", "region_id=", "total_ms="] {
                assert!(put.contains(stage), "{stage} missing: {put}");
            }
            for stage in ["read_grant=", "read_pool="] {
                assert!(get.contains(stage), "{stage} missing: {get}");
            }
            assert!(!put.contains("region_id=0 "), "{put}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no slow-log lines for the put and the get: {slow:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
