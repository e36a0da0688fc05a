//! `rangekv ctl region check` against real processes: agreeing replicas pass; a replica whose
//! data was changed behind Raft's back is named, and the command fails.

use std::time::Duration;

mod support;

use support::*;

fn ctl_check(t: &TestCluster, key: &[u8]) -> (bool, serde_json::Value, String) {
    let endpoints = t.cluster.pd_endpoints().join(",");
    let out = std::process::Command::new(bin())
        .args(["ctl", "--pd", &endpoints, "--json", "region", "check"])
        .arg(String::from_utf8(key.to_vec()).unwrap())
        .output()
        .expect("run rangekv ctl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("ctl printed no JSON ({e}): {stdout}\n{stderr}"));
    (out.status.success(), json, stderr)
}

#[test]
fn ctl_region_check_passes_agreeing_replicas_and_names_a_diverged_one() {
    let mut t = TestCluster::start(3);
    let c = t.client();
    t.rt.block_on(async {
        for i in 0..20 {
            c.put(key(i), b"v".to_vec()).await.unwrap();
        }
    });
    let (ok, json, stderr) = ctl_check(&t, &key(5));
    assert!(ok, "{json}\n{stderr}");
    assert_eq!(json["consistent"], true, "{json}");
    assert_eq!(
        json["replicas"].as_array().map(|r| r.len()),
        Some(3),
        "{json}"
    );

    // Store 3's copy of key 5 changes while it is down, without Raft knowing.
    t.cluster.stop_store(2).unwrap();
    let dir = t.cluster.config().data_dir.join("store3");
    {
        let engine = engine::Engine::open(&dir, &engine::EngineOptions::default()).unwrap();
        let mut wb = engine::WriteBatch::new();
        wb.put(
            engine::CF_DEFAULT,
            &engine::keys::data_key(&key(5)),
            b"corrupted",
        );
        engine.write(wb, true).unwrap();
    }
    t.cluster.start_store(2).unwrap();
    t.wait_listening(30);
    let pd = t.pd();
    let store3 = t.rt.block_on(async {
        let stores = pd.get_all_stores(false).await.unwrap();
        let addr = &t.cluster.stores[2].addr;
        stores.iter().find(|s| &s.address == addr).unwrap().id
    });
    // The check may first meet a leader that is still settling; it retries by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let json = loop {
        let (ok, json, stderr) = ctl_check(&t, &key(5));
        assert!(!ok || json["consistent"] == true, "{json}\n{stderr}");
        if !ok && json["consistent"] == false {
            let unreachable = json["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["verdict"] == "unreachable");
            if !unreachable {
                break json;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the divergence was not reported: {json}\n{stderr}\n{}",
            t.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Verdicts are relative to the leader, which may be the changed store itself (leader
    // balance moves leaderships to a restarted store): check the hashes. The two untouched
    // replicas agree, the changed one differs.
    let replicas = json["replicas"].as_array().unwrap();
    let hash_of = |store: &serde_json::Value| {
        replicas
            .iter()
            .find(|r| &r["store_id"] == store)
            .map(|r| r["hash"].clone())
            .unwrap_or_else(|| panic!("no replica on store {store}: {json}"))
    };
    let changed = hash_of(&serde_json::json!(store3));
    let others: Vec<serde_json::Value> = replicas
        .iter()
        .filter(|r| r["store_id"] != store3)
        .map(|r| r["hash"].clone())
        .collect();
    assert_eq!(others.len(), 2, "{json}");
    assert_eq!(
        others[0], others[1],
        "the untouched replicas differ: {json}"
    );
    assert_ne!(
        changed, others[0],
        "the changed replica was not told apart: {json}"
    );
    assert_eq!(json["consistent"], false, "{json}");
}
