//! The PD client against a 3-member PD group: TSO and id allocation across leader failover,
//! a partitioned leader, and a restart of the whole group.
//!
//! The client hides timestamps below the ones it already returned, so whether PD itself stays
//! monotonic is checked on PD's raw answers: a [`RawTsoLoad`] of plain `pdpb.PD/Tso` streams
//! runs next to the clients, and single timestamps are asked for with [`tso_at`].

#[path = "../../../placement-driver/tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pd_client::{PdClient, PdClientConfig};
use proto::pdpb::pd_client::PdClient as PdGrpc;
use proto::pdpb::{RequestHeader, TsoRequest};
use support::{PdGroup, RawTsoLoad, DEADLINE};
use test_util::{peer, region, store, wait_until_async};
use tokio_stream::wrappers::ReceiverStream;

fn client_config() -> PdClientConfig {
    PdClientConfig {
        rpc_timeout: Duration::from_secs(3),
        max_retries: 20,
        max_backoff: Duration::from_millis(500),
        ..PdClientConfig::default()
    }
}

async fn connect(endpoints: Vec<String>) -> PdClient {
    PdClient::connect_with_config(endpoints, client_config())
        .await
        .unwrap()
}

/// Runs `clients` tasks that each take timestamps in a loop from their own client until `stop`;
/// returns per client the timestamps received, and a counter of all received.
struct TsoLoad {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<u64>>>,
}

impl TsoLoad {
    async fn start(endpoints: Vec<String>, clients: usize) -> TsoLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let client = connect(endpoints.clone()).await;
            let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    // Errors are allowed while no leader serves; timestamps must stay right.
                    if let Ok(ts) = client.get_ts().await {
                        got.push(ts);
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
                got
            }));
        }
        TsoLoad {
            stop,
            received,
            tasks,
        }
    }

    async fn wait_for_more(&self, n: u64) {
        let target = self.received.load(Ordering::Relaxed) + n;
        wait_until_async("timestamps to flow", DEADLINE, || {
            let ok = self.received.load(Ordering::Relaxed) >= target;
            async move { ok }
        })
        .await;
    }

    /// Stops the load and checks: strictly increasing per client, unique overall.
    async fn finish(self) -> Vec<Vec<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            all.push(task.await.unwrap());
        }
        let mut seen = HashSet::new();
        for got in &all {
            for pair in got.windows(2) {
                assert!(pair[0] < pair[1], "timestamps not increasing: {pair:?}");
            }
            for ts in got {
                assert!(seen.insert(*ts), "timestamp {ts} handed out twice");
            }
        }
        all
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tso_stays_unique_and_increasing_when_the_leader_is_killed() {
    let mut group = PdGroup::start(3).await;
    let leader = group.wait_leader().await;
    let load = TsoLoad::start(group.endpoints(), 4).await;
    let raw = RawTsoLoad::start(group.endpoints(), 2, 2);
    load.wait_for_more(1000).await;
    raw.wait_for_more(100).await;

    let killed_at = Instant::now();
    group.stop(leader).await;
    let new_leader = group.wait_leader_except(Some(leader)).await;
    load.wait_for_more(1000).await;
    raw.wait_for_more(100).await;
    let resumed = killed_at.elapsed();
    // A few election timeouts (1 s each), generous for 2 busy cores.
    assert!(
        resumed < Duration::from_secs(10),
        "resumed after {resumed:?}"
    );
    assert_ne!(new_leader, leader);
    let all = load.finish().await;
    assert!(all.iter().all(|got| got.len() > 100));
    // What PD answered, unfiltered: unique and in real-time order, from both leaders.
    let answers = raw.finish().await;
    assert!(answers.iter().any(|a| a.endpoint == leader));
    assert!(answers.iter().any(|a| a.endpoint == new_leader));
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_stay_unique_across_a_leader_failover() {
    let mut group = PdGroup::start(3).await;
    let leader = group.wait_leader().await;
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let client = connect(group.endpoints()).await;
        let (stop, count) = (Arc::clone(&stop), Arc::clone(&count));
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(id) = client.alloc_id().await {
                    ids.push(id);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            ids
        }));
    }
    let wait_more = |n: u64| {
        let target = count.load(Ordering::Relaxed) + n;
        let count = Arc::clone(&count);
        async move {
            wait_until_async("ids to flow", DEADLINE, || {
                let ok = count.load(Ordering::Relaxed) >= target;
                async move { ok }
            })
            .await
        }
    };
    wait_more(300).await;
    group.stop(leader).await;
    group.wait_leader_except(Some(leader)).await;
    wait_more(300).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = HashSet::new();
    for task in tasks {
        let ids = task.await.unwrap();
        for pair in ids.windows(2) {
            assert!(
                pair[0] < pair[1],
                "ids of one client not increasing: {pair:?}"
            );
        }
        for id in ids {
            assert!(seen.insert(id), "id {id} handed out twice");
        }
    }
    group.shutdown().await;
}

/// Asks `url` directly for one timestamp on a fresh stream; `Err` carries the header error.
async fn tso_at(url: &str) -> Result<u64, String> {
    let mut client = PdGrpc::connect(url.to_owned())
        .await
        .map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(TsoRequest {
        header: Some(RequestHeader::default()),
        count: 1,
        dc_location: String::new(),
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut responses = client
        .tso(ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let resp = tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| e.to_string())?
        .ok_or("no answer")?;
    if let Some(err) = resp.header.and_then(|h| h.error) {
        return Err(err.message);
    }
    let ts = resp.timestamp.ok_or("no timestamp")?;
    Ok(pd_client::compose_ts(ts.physical as u64, ts.logical as u64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_stops_handing_out_timestamps() {
    let group = PdGroup::start(3).await;
    let old = group.wait_leader().await;
    let old_url = group.members[old].url();
    let raw = RawTsoLoad::start(group.endpoints(), 2, 1);
    raw.wait_for_more(50).await;
    let mut old_max = tso_at(&old_url).await.unwrap();

    group.members[old].handle().set_isolated(true);
    let isolated_at = Instant::now();
    // The old leader keeps serving at most until its lease runs out, then refuses.
    loop {
        match tso_at(&old_url).await {
            Ok(ts) => {
                assert!(ts > old_max);
                old_max = ts;
                assert!(
                    isolated_at.elapsed() < Duration::from_secs(5),
                    "the isolated leader still serves TSO"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(msg) => {
                assert!(msg.contains("not leader"), "{msg}");
                break;
            }
        }
    }
    let stopped_after = isolated_at.elapsed();
    assert!(
        stopped_after < Duration::from_secs(2),
        "served for {stopped_after:?}"
    );

    // The majority elects a new leader, whose timestamps are above all the old leader's.
    let new = group.wait_leader_except(Some(old)).await;
    assert_ne!(new, old);
    let new_url = group.members[new].url();
    let mut last = old_max;
    for _ in 0..100 {
        // Asked of the new leader directly: no client floor hides a timestamp below old_max.
        let ts = tso_at(&new_url).await.unwrap();
        assert!(ts > last, "{ts} <= {last} (old leader's last: {old_max})");
        last = ts;
    }
    let majority: Vec<String> = (0..3)
        .filter(|&i| i != old)
        .map(|i| group.members[i].url())
        .collect();
    let client = connect(majority).await;
    assert!(client.get_ts().await.unwrap() > last);
    // Still cut off: the old leader refuses.
    let refused = tso_at(&old_url).await.unwrap_err();
    assert!(refused.contains("not leader"), "{refused}");

    // Heal: one leader again, and timestamps keep increasing.
    group.members[old].handle().set_isolated(false);
    let last = client.get_ts().await.unwrap();
    wait_until_async("the old leader to follow", DEADLINE, || {
        let follows = group.members[old].handle().leadership().leader_id
            == group.members[new].handle().member_id();
        async move { follows }
    })
    .await;
    assert!(client.get_ts().await.unwrap() > last);
    raw.wait_for_more(50).await;
    let answers = raw.finish().await;
    assert!(answers.iter().any(|a| a.endpoint == old));
    assert!(answers.iter().any(|a| a.endpoint == new));
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_group_restart_keeps_state_and_clients_reconnect() {
    let mut group = PdGroup::start(3).await;
    group.wait_leader().await;
    let client = connect(group.endpoints()).await;
    let cluster_id = client.cluster_id();
    let store_id = client.alloc_id().await.unwrap();
    let region_id = client.alloc_id().await.unwrap();
    let peer_id = client.alloc_id().await.unwrap();
    let region = region(region_id).peers([peer(peer_id, store_id)]).build();
    client
        .bootstrap(store(store_id), region.clone())
        .await
        .unwrap();
    client.put_store(store(store_id + 100)).await.unwrap();
    client.update_gc_safe_point(42).await.unwrap();
    let mut max_id = peer_id;
    for _ in 0..50 {
        max_id = max_id.max(client.alloc_id().await.unwrap());
    }
    let mut max_ts = 0;
    for _ in 0..50 {
        max_ts = max_ts.max(client.get_ts().await.unwrap());
    }
    let leader = group.wait_leader().await;
    let raw_before = tso_at(&group.members[leader].url()).await.unwrap();
    assert!(raw_before > max_ts);

    for i in 0..3 {
        group.stop(i).await;
    }
    for i in 0..3 {
        group.restart(i).await;
    }
    let leader = group.wait_leader().await;
    assert_eq!(group.members[leader].handle().cluster_id(), cluster_id);
    // PD's own answer, not through the client's floor.
    let raw_after = tso_at(&group.members[leader].url()).await.unwrap();
    assert!(raw_after > raw_before, "{raw_after} <= {raw_before}");

    // The same client, not recreated.
    assert!(client.get_ts().await.unwrap() > raw_after);
    assert!(client.alloc_id().await.unwrap() > max_id);
    assert_eq!(client.cluster_id(), cluster_id);
    assert!(client.is_bootstrapped().await.unwrap());
    assert_eq!(client.get_store(store_id).await.unwrap().id, store_id);
    let stores = client.get_all_stores(false).await.unwrap();
    assert_eq!(stores.len(), 2);
    assert_eq!(client.get_region(b"any").await.unwrap().region, region);
    assert_eq!(client.get_gc_safe_point().await.unwrap(), 42);
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_follows_pd_through_the_replacement_of_every_member() {
    use placement_driver::members::MemberRequest;
    let mut group = PdGroup::start(3).await;
    group.wait_leader().await;
    let client = connect(group.endpoints()[..3].to_vec()).await;
    let first = client.get_ts().await.unwrap();
    // Every member it was given is replaced, one after the other, as an operator replaces
    // members whose disks died: removed, then a new one added that joins on an empty directory.
    for old in 0..3 {
        // Through the leader, which may be the member itself (it then stops leading).
        let leader = group.wait_leader().await;
        let name = group.members[old].name.clone();
        group.members[leader]
            .handle()
            .change_members(MemberRequest::Remove { name })
            .await
            .unwrap();
        group.stop(old).await;
        let new = group.add_slot(&format!("pd{}", old + 4));
        let url = group.members[new].url();
        let new_name = group.members[new].name.clone();
        let leader = group.wait_leader().await;
        group.members[leader]
            .handle()
            .change_members(MemberRequest::Add {
                name: new_name,
                url,
            })
            .await
            .unwrap();
        group.try_start(new, group.join_config(new)).await.unwrap();
        wait_until_async("the new member to vote", DEADLINE, || {
            let h = group.members[new].handle();
            let ok = h.members().iter().all(|m| !m.learner) && h.cluster_id() != 0;
            async move { ok }
        })
        .await;
        // The client learns of the new member before the next one goes.
        let url = group.members[new].url();
        wait_until_async("the client to know the new member", DEADLINE, || {
            let ok = client.endpoints().contains(&url);
            async move { ok }
        })
        .await;
        let ts = client.get_ts().await.unwrap();
        assert!(ts > first);
    }
    // None of the endpoints it was given serves any more; it still finds PD.
    let last = client.get_ts().await.unwrap();
    assert!(last > first);
    group.shutdown().await;
}
