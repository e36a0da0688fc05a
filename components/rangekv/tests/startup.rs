//! Start-up options of the node commands: `--config-check` (the effective configuration and
//! every problem in it, without starting anything) and `--log-format json`.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rangekv"))
        .args(args)
        .output()
        .expect("run rangekv")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &tempfile::TempDir, name: &str, body: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, body).expect("write config");
    path.display().to_string()
}

#[test]
fn a_valid_server_config_prints_what_takes_effect_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(&dir, "server.toml", "[limits]\nmax_key_size = 1024\n");
    let data = dir.path().join("data").display().to_string();
    let out = run(&[
        "server",
        "--config",
        &config,
        "--addr",
        "127.0.0.1:1",
        "--data-dir",
        &data,
        "--config-check",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("addr = \"127.0.0.1:1\""), "{stdout}");
    assert!(stdout.contains("max_key_size = 1024"), "{stdout}");
    assert!(stdout.contains("config check: ok"), "{stdout}");
    assert!(
        !dir.path().join("data").exists(),
        "the check created the data directory"
    );
}

#[test]
fn server_config_problems_are_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = write(&dir, "typo.toml", "[limits]\nmax_key_sise = 10\n");
    let out = run(&["server", "--config", &unknown, "--config-check"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("max_key_sise"), "{stderr}");

    let bad = write(
        &dir,
        "bad.toml",
        "pd_endpoints = []\n[limits]\nmax_key_size = 0\n[gc]\nbatch_keys = 0\n",
    );
    // A data directory under a regular file can never be created.
    let blocked = write(&dir, "file", "");
    let data = format!("{blocked}/data");
    let out = run(&[
        "server",
        "--config",
        &bad,
        "--data-dir",
        &data,
        "--config-check",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for expected in [
        "pd_endpoints",
        "limits must be positive",
        "gc.batch_keys",
        "not a directory",
        "config check: 4 problem(s)",
    ] {
        assert!(stderr.contains(expected), "{expected:?} missing: {stderr}");
    }
}

#[test]
fn pd_config_check_reports_every_problem_or_ok() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pd").display().to_string();
    let out = run(&["pd", "--name", "pd1", "--data-dir", &data, "--config-check"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("name = \"pd1\""), "{stdout}");

    let bad = write(
        &dir,
        "pd.toml",
        "id_alloc_step = 0\nraft_election_ticks = 1\ninitial_cluster = \"pd2=http://127.0.0.1:1\"\n",
    );
    let out = run(&[
        "pd",
        "--config",
        &bad,
        "--name",
        "pd1",
        "--data-dir",
        &data,
        "--config-check",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for expected in [
        "id_alloc_step",
        "raft_election_ticks",
        "does not name this node",
    ] {
        assert!(stderr.contains(expected), "{expected:?} missing: {stderr}");
    }
}

/// With `--log-format json` every log line is one JSON object (level, message, fields).
#[test]
fn json_logs_are_one_object_a_line() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pd").display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rangekv"))
        .args(["--log-format", "json", "pd", "--name", "pd1"])
        .args(["--addr", "127.0.0.1:0", "--data-dir", &data])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start rangekv pd");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = Vec::new();
    let started = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break None;
        };
        let json: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(json["level"].is_string(), "{line}");
        if json["fields"]["message"] == "PD member started" {
            break Some(json);
        }
        seen.push(line);
    };
    let _ = child.kill();
    let _ = child.wait();
    let started = started.unwrap_or_else(|| panic!("no start line; saw {seen:?}"));
    assert!(started["fields"]["addr"].is_string(), "{started}");
}
