//! The PD client against a real placement driver on loopback.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pd_client::{Error, PdClient, PdClientConfig, RegionInfo, RegionStat};
use placement_driver::{PdConfig, PdHandle};
use proto::metapb::{Region, Store};
use proto::pdpb::StoreStats;
use test_util::{peer, region, store, wait_until_async};

const DEADLINE: Duration = Duration::from_secs(10);

async fn start_pd(dir: &Path, addr: Option<SocketAddr>) -> PdHandle {
    let mut config = PdConfig::for_test(dir);
    if let Some(addr) = addr {
        config.listen_addr = addr.to_string();
    }
    placement_driver::start(config).await.unwrap()
}

/// Bootstraps like a store does: ids from PD, then the first region on the first store.
async fn bootstrap(client: &PdClient) -> (Store, Region) {
    let store_id = client.alloc_id().await.unwrap();
    let region_id = client.alloc_id().await.unwrap();
    let peer_id = client.alloc_id().await.unwrap();
    let store = store(store_id);
    let region = region(region_id).peers([peer(peer_id, store_id)]).build();
    client
        .bootstrap(store.clone(), region.clone())
        .await
        .unwrap();
    (store, region)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_rpcs_against_pd() {
    let dir = tempfile::tempdir().unwrap();
    let pd = start_pd(dir.path(), None).await;
    // A bare host:port works as an endpoint.
    let client = PdClient::connect(vec![pd.addr().to_string()])
        .await
        .unwrap();
    assert_eq!(client.cluster_id(), pd.cluster_id());
    assert_eq!(client.leader_url(), pd.client_url());
    let members = client.get_members().await.unwrap();
    assert_eq!(members.members.len(), 1);

    assert!(!client.is_bootstrapped().await.unwrap());
    assert!(matches!(
        client.get_region(b"k").await,
        Err(Error::NotBootstrapped { .. })
    ));
    let (first_store, first_region) = bootstrap(&client).await;
    assert!(client.is_bootstrapped().await.unwrap());
    assert!(matches!(
        client
            .bootstrap(first_store.clone(), first_region.clone())
            .await,
        Err(Error::AlreadyBootstrapped { .. })
    ));

    let second = store(client.alloc_id().await.unwrap());
    client.put_store(second.clone()).await.unwrap();
    assert_eq!(
        client.get_store(second.id).await.unwrap().address,
        second.address
    );
    assert!(matches!(
        client.get_store(12345).await,
        Err(Error::Pd { .. })
    ));
    let ids: Vec<u64> = client
        .get_all_stores(true)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, vec![first_store.id, second.id]);
    client
        .store_heartbeat(StoreStats {
            store_id: second.id,
            capacity: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(client.get_store(second.id).await.unwrap().last_heartbeat > 0);

    // Heartbeat the first region with its leader; it becomes visible to lookups.
    let leader = first_region.peers[0];
    client
        .region_heartbeat(
            first_region.clone(),
            leader,
            RegionStat {
                term: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_until_async("the leader of the first region", DEADLINE, || {
        let client = client.clone();
        async move { client.get_region(b"any").await.unwrap().leader == Some(leader) }
    })
    .await;

    // Split it in two.
    let splits = client
        .ask_batch_split(first_region.clone(), 1)
        .await
        .unwrap();
    assert_eq!(splits[0].new_peer_ids.len(), 1);
    let left = region(splits[0].new_region_id)
        .range("", "m")
        .version(2)
        .peers([peer(splits[0].new_peer_ids[0], first_store.id)])
        .build();
    let right = region(first_region.id)
        .range("m", "")
        .version(2)
        .peers(first_region.peers.clone())
        .build();
    client
        .report_batch_split(vec![left.clone(), right.clone()])
        .await
        .unwrap();
    assert_eq!(client.get_region(b"a").await.unwrap().region, left);
    assert_eq!(
        client.get_region(b"z").await.unwrap(),
        RegionInfo {
            region: right.clone(),
            leader: Some(leader)
        }
    );
    assert_eq!(
        client.get_prev_region(b"m").await.unwrap().unwrap().region,
        left
    );
    assert_eq!(client.get_prev_region(b"a").await.unwrap(), None);
    assert_eq!(
        client
            .get_region_by_id(left.id)
            .await
            .unwrap()
            .unwrap()
            .region,
        left
    );
    assert_eq!(client.get_region_by_id(999_999).await.unwrap(), None);
    let scanned: Vec<Region> = client
        .scan_regions(b"", b"", 0)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.region)
        .collect();
    assert_eq!(scanned, vec![left.clone(), right.clone()]);
    assert_eq!(client.scan_regions(b"n", b"", 0).await.unwrap().len(), 1);

    assert_eq!(client.get_gc_safe_point().await.unwrap(), 0);
    assert_eq!(client.update_gc_safe_point(10).await.unwrap(), 10);
    assert_eq!(client.update_gc_safe_point(5).await.unwrap(), 10);
    assert_eq!(client.get_cluster_config().await.unwrap().max_peer_count, 3);

    // PD's responses on the heartbeat stream reach the installed handler: a heartbeat without a
    // region is answered with an error.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    client.on_region_heartbeat_response(Arc::new(move |resp| sink.lock().push(resp)));
    client
        .region_heartbeat(Region::default(), leader, RegionStat::default())
        .await
        .unwrap();
    wait_until_async("an error on the heartbeat stream", DEADLINE, || {
        let seen = Arc::clone(&seen);
        async move { !seen.lock().is_empty() }
    })
    .await;
    assert!(seen.lock()[0].header.as_ref().unwrap().error.is_some());

    drop(client);
    pd.shutdown().await.unwrap();
}

/// On a current-thread runtime, every `get_ts` of one `join_all` is queued before the
/// dispatcher runs, so they must share a single round trip.
#[tokio::test]
async fn concurrent_get_ts_share_one_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let pd = start_pd(dir.path(), None).await;
    let client = PdClient::connect(vec![pd.client_url().to_owned()])
        .await
        .unwrap();
    let warm_up = client.get_ts().await.unwrap();
    let before = client.stats();
    let results = futures::future::join_all((0..500).map(|_| client.get_ts())).await;
    let after = client.stats();
    let mut all: Vec<u64> = results.into_iter().map(|r| r.unwrap()).collect();
    // Queue order is call order: the batch is handed out in increasing order.
    assert!(all.windows(2).all(|w| w[0] + 1 == w[1]), "not one range");
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 500);
    assert!(all[0] > warm_up);
    assert_eq!(after.tso_round_trips - before.tso_round_trips, 1);
    assert_eq!(after.tso_timestamps - before.tso_timestamps, 500);
    drop(client);
    pd.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_ts_from_many_tasks_is_unique_and_batched() {
    let dir = tempfile::tempdir().unwrap();
    let pd = start_pd(dir.path(), None).await;
    let client = PdClient::connect(vec![pd.client_url().to_owned()])
        .await
        .unwrap();
    const TASKS: usize = 16;
    const PER_TASK: usize = 200;
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(PER_TASK);
                for _ in 0..PER_TASK {
                    let ts = client.get_ts().await.unwrap();
                    if let Some(prev) = seen.last() {
                        assert!(ts > *prev, "{ts} after {prev}");
                    }
                    seen.push(ts);
                }
                seen
            })
        })
        .collect();
    let mut all = HashSet::new();
    for task in tasks {
        for ts in task.await.unwrap() {
            assert!(all.insert(ts), "timestamp {ts} handed out twice");
        }
    }
    let stats = client.stats();
    assert_eq!(stats.tso_timestamps, (TASKS * PER_TASK) as u64);
    assert!(
        stats.tso_round_trips < (TASKS * PER_TASK) as u64,
        "no batching: {stats:?}"
    );
    assert_eq!(stats.tso_stream_opens, 1);
    drop(client);
    pd.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_survives_pd_restart_on_the_same_port() {
    let dir = tempfile::tempdir().unwrap();
    let pd = start_pd(dir.path(), None).await;
    let addr = pd.addr();
    let cluster_id = pd.cluster_id();
    let client = PdClient::connect(vec![pd.client_url().to_owned()])
        .await
        .unwrap();
    let (_, first_region) = bootstrap(&client).await;
    let leader = first_region.peers[0];
    let ts_before = client.get_ts().await.unwrap();
    let id_before = client.alloc_id().await.unwrap();
    client
        .region_heartbeat(first_region.clone(), leader, RegionStat::default())
        .await
        .unwrap();
    wait_until_async("the first heartbeat", DEADLINE, || {
        let client = client.clone();
        async move { client.get_region(b"").await.unwrap().leader == Some(leader) }
    })
    .await;

    // Stop PD while the client's Tso and heartbeat streams are open.
    pd.shutdown().await.unwrap();
    // A request issued while PD is down completes once it is back.
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.get_ts().await }
    });
    let pd = start_pd(dir.path(), Some(addr)).await;
    assert_eq!(pd.cluster_id(), cluster_id);

    let ts_pending = tokio::time::timeout(DEADLINE, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ts_pending > ts_before);
    let ts_after = client.get_ts().await.unwrap();
    assert!(ts_after > ts_pending);
    assert!(client.alloc_id().await.unwrap() > id_before);
    assert!(client.stats().tso_stream_opens >= 2);

    // Leaders are soft state: the restarted PD learns them from new heartbeats, which flow again
    // on a re-opened stream (heartbeats lost while the stream broke are simply sent again).
    wait_until_async("a heartbeat after the restart", DEADLINE, || {
        let client = client.clone();
        let region = first_region.clone();
        async move {
            client
                .region_heartbeat(region, leader, RegionStat::default())
                .await
                .unwrap();
            client.get_region(b"").await.unwrap().leader == Some(leader)
        }
    })
    .await;

    drop(client);
    pd.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pd_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pd = start_pd(dir.path(), None).await;
    let addr = pd.addr();
    let client = PdClient::connect_with_config(
        vec![pd.client_url().to_owned()],
        PdClientConfig {
            max_retries: 2,
            ..PdClientConfig::default()
        },
    )
    .await
    .unwrap();
    client.get_ts().await.unwrap();
    pd.shutdown().await.unwrap();

    // Same address, fresh data directory: a new cluster id.
    let other_dir = tempfile::tempdir().unwrap();
    let pd = start_pd(other_dir.path(), Some(addr)).await;
    assert_ne!(pd.cluster_id(), client.cluster_id());
    let err = client.alloc_id().await.unwrap_err();
    assert!(
        matches!(&err, Error::ClusterIdMismatch { .. })
            || matches!(&err, Error::Pd { message, .. } if message.contains("mismatch cluster id")),
        "{err:?}"
    );
    assert!(client.get_ts().await.is_err());
    drop(client);
    pd.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_without_pd_fails() {
    // Bind and drop a listener to get a port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = PdClient::connect(vec![addr.to_string()]).await.unwrap_err();
    assert!(matches!(err, Error::NoLeader { .. }), "{err:?}");
    assert!(matches!(
        PdClient::connect(vec![]).await,
        Err(Error::NoEndpoints)
    ));
}
