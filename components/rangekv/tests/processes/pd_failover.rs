//! PD restarted or its leader killed: stores and clients find it again and timestamps keep
//! increasing.

use std::time::Duration;

use test_util::retry;

use crate::support::*;

#[test]
fn pd_restart_keeps_cluster_serving_and_timestamps_increasing() {
    let mut t = TestCluster::start(3);
    let c = t.client();
    let pd = t.pd();
    let ts1 = t.rt.block_on(pd.get_ts()).unwrap();
    t.rt.block_on(c.put(b"a".to_vec(), b"1".to_vec())).unwrap();
    t.cluster.kill_pd(0).unwrap();
    // Stores keep serving clients that know the regions while PD is down.
    t.rt.block_on(c.put(b"b".to_vec(), b"2".to_vec())).unwrap();
    t.cluster.start_pd(0).unwrap();
    t.wait_listening(30);
    let ts2 = t.rt.block_on(pd.get_ts()).unwrap();
    assert!(ts2 > ts1, "timestamp went backwards: {ts1} then {ts2}");
    t.rt.block_on(async {
        assert_eq!(
            c.get(b"a".to_vec()).await.unwrap().map(|v| v.to_vec()),
            Some(b"1".to_vec())
        );
        assert_eq!(
            c.get(b"b".to_vec()).await.unwrap().map(|v| v.to_vec()),
            Some(b"2".to_vec())
        );
        c.put(b"c".to_vec(), b"3".to_vec()).await.unwrap();
    });
    // A fresh client routes through the restarted PD.
    let fresh = t.client();
    assert_eq!(
        t.rt.block_on(fresh.get(b"c".to_vec()))
            .unwrap()
            .map(|v| v.to_vec()),
        Some(b"3".to_vec())
    );
}

#[test]
fn pd_leader_failover_keeps_stores_heartbeating_and_clients_routing() {
    let mut t = TestCluster::start_with_pds(3, 3);
    let c = t.client();
    let pd = t.pd();
    t.rt.block_on(async {
        for i in 0..20 {
            c.put(key(i), b"v".to_vec()).await.unwrap();
        }
    });
    let ts_before = t.rt.block_on(pd.get_ts()).unwrap();
    let members = t.rt.block_on(pd.get_members()).unwrap();
    let leader_name = members.leader.expect("a PD leader").name;
    let victim = t
        .cluster
        .pds
        .iter()
        .position(|n| n.name == leader_name)
        .expect("leader is one of ours");
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    t.cluster.kill_pd(victim).unwrap();

    // Clients keep routing: the old client and a fresh one, which must find the new PD leader.
    t.rt.block_on(async {
        for i in 20..40 {
            c.put(key(i), b"v".to_vec()).await.unwrap();
        }
        assert_eq!(
            c.get(key(3)).await.unwrap().map(|v| v.to_vec()),
            Some(b"v".to_vec())
        );
    });
    let fresh = t.client();
    assert_eq!(
        t.rt.block_on(fresh.scan(key(0), key(40), 100))
            .unwrap()
            .len(),
        40
    );
    // Timestamps from the new leader are above everything the old one handed out.
    let ts_after = t.rt.block_on(pd.get_ts()).unwrap();
    assert!(ts_after > ts_before, "{ts_before} then {ts_after}");

    // Stores heartbeat the new leader: it learns the region's leader (soft state, not
    // replicated) and every store's heartbeat time moves past the kill.
    retry(Duration::from_secs(30), || {
        let region_leader =
            t.rt.block_on(pd.get_region(b""))
                .ok()
                .and_then(|r| r.leader);
        let stores = t.rt.block_on(pd.get_all_stores(true)).unwrap_or_default();
        let all_fresh =
            stores.len() == 3 && stores.iter().all(|s| s.last_heartbeat as u64 > killed_at);
        if region_leader.is_some() && all_fresh {
            Ok(())
        } else {
            Err(format!("leader {region_leader:?}, stores {stores:?}"))
        }
    })
    .unwrap_or_else(|e| panic!("new PD leader did not hear from the stores: {e}"));
    // The killed member comes back as a follower and the cluster still serves.
    t.cluster.start_pd(victim).unwrap();
    t.wait_listening(30);
    t.rt.block_on(c.put(b"after".to_vec(), b"1".to_vec()))
        .unwrap();
}
