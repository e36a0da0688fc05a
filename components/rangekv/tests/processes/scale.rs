//! Replicas moving between real processes: PD spreads replicas onto a store that holds none,
//! replaces the replicas of a store that is down, and drains a store that is removed; data
//! stays readable and replicas agree throughout. And what PD weighs them by: the sizes and
//! down replicas region leaders report.

use std::time::Duration;

use proto::metapb::{PeerRole, StoreState};
use test_util::wait_until;

use crate::support::*;

fn write_keys(t: &TestCluster, c: &client::RawClient, from: u32, to: u32) {
    t.rt.block_on(async {
        for i in from..to {
            test_util::retry_async(Duration::from_secs(30), || {
                c.put(key(i), format!("v{i}").into_bytes())
            })
            .await
            .unwrap();
        }
    });
}

fn check_keys(t: &TestCluster, c: &client::RawClient, to: u32) {
    t.rt.block_on(async {
        for i in 0..to {
            let v = test_util::retry_async(Duration::from_secs(30), || c.get(key(i)))
                .await
                .unwrap();
            assert_eq!(v.map(|v| v.to_vec()), Some(format!("v{i}").into_bytes()));
        }
    });
}

#[test]
fn pd_spreads_replicas_onto_an_empty_store_and_drains_a_removed_one() {
    // Four stores, three replicas: the cluster starts on the first three; the fourth is empty.
    let t = TestCluster::start(4);
    let c = t.client();
    write_keys(&t, &c, 0, 300);
    let stores: Vec<u64> =
        t.rt.block_on(t.pd().get_all_stores(true))
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
    assert_eq!(stores.len(), 4);
    wait_until("replicas on every store", Duration::from_secs(90), || {
        let (per_store, all_three) = placement(&t);
        all_three
            && stores
                .iter()
                .all(|s| per_store.get(s).copied().unwrap_or(0) > 0)
    });
    write_keys(&t, &c, 300, 400);
    check_keys(&t, &c, 400);
    check_replicas_agree(&t);

    // Remove the store that holds the most replicas: it is drained, then a tombstone.
    let (per_store, _) = placement(&t);
    let victim = *per_store.iter().max_by_key(|(_, n)| **n).unwrap().0;
    let endpoints = t.cluster.pd_endpoints().join(",");
    let out = std::process::Command::new(bin())
        .args([
            "ctl",
            "--pd",
            &endpoints,
            "store",
            "remove",
            &victim.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write_keys(&t, &c, 400, 500);
    wait_until(
        "the removed store drained",
        Duration::from_secs(120),
        || {
            let (per_store, all_three) = placement(&t);
            all_three && !per_store.contains_key(&victim)
        },
    );
    wait_until(
        "the removed store is a tombstone",
        Duration::from_secs(30),
        || {
            let stores = t.rt.block_on(t.pd().get_all_stores(false)).unwrap();
            stores
                .iter()
                .any(|s| s.id == victim && s.state() == StoreState::Tombstone)
        },
    );
    check_keys(&t, &c, 500);
    check_replicas_agree(&t);
}

#[test]
fn the_replicas_of_a_down_store_are_replaced() {
    let t = TestCluster::start_with_pd_config(
        4,
        "max_store_down_time = \"3s\"\nschedule_region_balance = false\n",
    );
    let c = t.client();
    write_keys(&t, &c, 0, 200);
    // Balance is off: the fourth store holds nothing until a store goes down.
    let (per_store, all_three) = placement(&t);
    assert!(all_three);
    let stores = t.rt.block_on(t.pd().get_all_stores(true)).unwrap();
    let empty: Vec<u64> = stores
        .iter()
        .map(|s| s.id)
        .filter(|s| !per_store.contains_key(s))
        .collect();
    assert_eq!(empty.len(), 1, "{per_store:?}");
    // Kill a store that holds replicas.
    let down_id = *per_store.keys().next().unwrap();
    let down_addr = stores
        .iter()
        .find(|s| s.id == down_id)
        .unwrap()
        .address
        .clone();
    let idx = t
        .cluster
        .stores
        .iter()
        .position(|n| n.addr == down_addr)
        .unwrap();
    let mut t = t;
    t.cluster.kill_store(idx).unwrap();
    write_keys(&t, &c, 200, 250);
    wait_until(
        "the down store's replicas replaced",
        Duration::from_secs(120),
        || {
            let (per_store, all_three) = placement(&t);
            all_three && !per_store.contains_key(&down_id) && per_store.contains_key(&empty[0])
        },
    );
    check_keys(&t, &c, 250);
    check_replicas_agree(&t);
}

#[test]
fn ctl_moves_a_replica_by_hand() {
    let t = TestCluster::start_with_pd_config(4, "schedule_region_balance = false\n");
    let c = t.client();
    write_keys(&t, &c, 0, 100);
    let (per_store, _) = placement(&t);
    let stores = t.rt.block_on(t.pd().get_all_stores(true)).unwrap();
    let empty = stores
        .iter()
        .map(|s| s.id)
        .find(|s| !per_store.contains_key(s))
        .expect("one store holds nothing");
    let region = t.rt.block_on(t.pd().get_region(&key(0))).unwrap().region;
    let from = region.peers[0].store_id;
    let endpoints = t.cluster.pd_endpoints().join(",");
    let out = std::process::Command::new(bin())
        .args(["ctl", "--pd", &endpoints, "operator", "transfer-peer"])
        .args([region.id, from, empty].map(|n| n.to_string()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the replica moved", Duration::from_secs(60), || {
        let r = t.rt.block_on(t.pd().get_region(&key(0))).unwrap().region;
        r.peers.len() == 3
            && r.peers.iter().all(|p| p.role() == PeerRole::Voter)
            && r.peers.iter().any(|p| p.store_id == empty)
            && !r.peers.iter().any(|p| p.store_id == from)
    });
    // A move that cannot be right is refused with a reason.
    let out = std::process::Command::new(bin())
        .args(["ctl", "--pd", &endpoints, "operator", "transfer-peer"])
        .args([region.id, from, empty].map(|n| n.to_string()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no replica"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_keys(&t, &c, 100);
    check_replicas_agree(&t);
}

#[test]
fn a_store_restarted_on_an_empty_data_directory_joins_as_a_new_store() {
    let mut t = TestCluster::start(3);
    let c = t.client();
    write_keys(&t, &c, 0, 200);
    let pd = t.pd();
    let before = t.rt.block_on(pd.get_all_stores(true)).unwrap();
    assert_eq!(before.len(), 3);
    // The disk of store3 is lost: killed, its data directory removed, started again.
    let idx = 2;
    let addr = t.cluster.stores[idx].addr.clone();
    let old_id = before.iter().find(|s| s.address == addr).unwrap().id;
    t.cluster.kill_store(idx).unwrap();
    let data = t
        .cluster
        .config()
        .data_dir
        .join(&t.cluster.stores[idx].name);
    std::fs::remove_dir_all(&data).unwrap();
    write_keys(&t, &c, 200, 250);
    t.cluster.start_store(idx).unwrap();
    // It registers under a new id once PD sees the old one is gone; the old one is drained
    // to Tombstone and every region is back at three voters, one of them on the new store.
    wait_until(
        "the wiped store back as a new store, the old one a tombstone",
        Duration::from_secs(150),
        || {
            let stores = t.rt.block_on(pd.get_all_stores(false)).unwrap();
            let old_gone = stores
                .iter()
                .any(|s| s.id == old_id && s.state() == StoreState::Tombstone);
            let new = stores
                .iter()
                .find(|s| s.address == addr && s.state() == StoreState::Up);
            let (per_store, all_three) = placement(&t);
            old_gone
                && all_three
                && new.is_some_and(|n| n.id != old_id && per_store.contains_key(&n.id))
        },
    );
    check_keys(&t, &c, 250);
    check_replicas_agree(&t);
}

/// PD's view of region `id` (its HTTP API), `Null` if it does not answer.
fn pd_region(t: &TestCluster, id: u64) -> serde_json::Value {
    let url = format!("http://{}/pd/api/v1/region/id/{id}", t.cluster.pds[0].addr);
    t.rt.block_on(async { reqwest::get(&url).await?.json().await })
        .unwrap_or_default()
}

#[test]
fn leaders_report_region_sizes_and_down_replicas_to_pd() {
    let mut t =
        TestCluster::start_with_config(1, 3, "max_peer_down_secs = 2\n[split]\ncheck_secs = 1\n");
    let c = t.client();
    write_keys(&t, &c, 0, 300);
    let id = t.rt.block_on(t.pd().get_region(&key(0))).unwrap().region.id;
    // The leader measured the region (300 small keys) and PD heard of it.
    wait_until(
        "PD knows the region's size",
        Duration::from_secs(30),
        || {
            let v = pd_region(&t, id);
            v["approximate_size"].as_u64() >= Some(1) && v["approximate_keys"].as_u64() >= Some(300)
        },
    );
    // `ctl region list` shows it too.
    let listed = ctl_region(&t, id);
    assert!(
        listed["approximate_size_mib"].as_u64() >= Some(1),
        "{listed}"
    );
    // A follower's store goes away: its replica is reported down after two seconds.
    let leader_store = pd_region(&t, id)["leader"]["store_id"]
        .as_u64()
        .expect("a leader");
    let stores = t.rt.block_on(t.pd().get_all_stores(true)).unwrap();
    let victim = stores
        .iter()
        .find(|s| s.id != leader_store)
        .unwrap()
        .clone();
    let idx = t
        .cluster
        .stores
        .iter()
        .position(|n| n.addr == victim.address)
        .unwrap();
    // Idle, the region hibernates: its leader no longer ticks, so Raft's own record of whom it
    // heard from stands still; the stores' liveness must tell.
    let leader_addr = stores
        .iter()
        .find(|s| s.id == leader_store)
        .unwrap()
        .address
        .clone();
    let leader_idx = t
        .cluster
        .stores
        .iter()
        .position(|n| n.addr == leader_addr)
        .unwrap();
    let status_url = format!(
        "http://{}/status",
        t.cluster.status_addr(leader_idx).unwrap()
    );
    wait_until(
        "the region's leader asleep",
        Duration::from_secs(30),
        || {
            let v: serde_json::Value =
                t.rt.block_on(async { reqwest::get(&status_url).await?.json().await })
                    .unwrap_or_default();
            v["regions"].as_array().is_some_and(|rs| {
                rs.iter().any(|r| {
                    r["id"].as_u64() == Some(id) && r["is_leader"] == true && r["asleep"] == true
                })
            })
        },
    );
    t.cluster.kill_store(idx).unwrap();
    wait_until("PD lists the down replica", Duration::from_secs(30), || {
        let v = pd_region(&t, id);
        v["down_peers"].as_array().is_some_and(|down| {
            down.iter().any(|d| {
                d["peer"]["store_id"].as_u64() == Some(victim.id)
                    && d["down_seconds"].as_u64() >= Some(2)
            })
        })
    });
    let listed = ctl_region(&t, id);
    assert_eq!(
        listed["down_store_ids"],
        serde_json::json!([victim.id]),
        "{listed}"
    );
}

/// Region `id` as `rangekv ctl --json region list` shows it.
fn ctl_region(t: &TestCluster, id: u64) -> serde_json::Value {
    let endpoints = t.cluster.pd_endpoints().join(",");
    let regions = ctl(&endpoints, &["--json", "region", "list"]).json();
    regions
        .as_array()
        .and_then(|a| a.iter().find(|r| r["id"].as_u64() == Some(id)))
        .cloned()
        .unwrap_or_else(|| panic!("region {id} not listed: {regions}"))
}
