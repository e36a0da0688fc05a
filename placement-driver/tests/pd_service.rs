//! End-to-end tests of the PD gRPC service through the generated client, over loopback.

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use placement_driver::{start, start_with_clock, ManualClock, PdConfig, PdHandle};
use proto::metapb::{Peer, Region, RegionEpoch, Store, StoreState};
use proto::pdpb::pd_client::PdClient;
use proto::pdpb::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

type Client = PdClient<Channel>;

const DEADLINE: Duration = Duration::from_secs(10);

async fn start_pd(dir: &Path) -> PdHandle {
    start(PdConfig::for_test(dir)).await.unwrap()
}

async fn connect(pd: &PdHandle) -> Client {
    PdClient::connect(pd.client_url().to_owned()).await.unwrap()
}

/// Polls `cond` until it holds; panics after [`DEADLINE`].
async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn header(cluster_id: u64) -> Option<RequestHeader> {
    Some(RequestHeader {
        cluster_id,
        sender_id: 0,
    })
}

fn error_type(header: &Option<ResponseHeader>) -> Option<ErrorType> {
    header
        .as_ref()
        .and_then(|h| h.error.as_ref())
        .map(|e| e.r#type())
}

fn peer(id: u64, store_id: u64) -> Peer {
    Peer {
        id,
        store_id,
        ..Default::default()
    }
}

fn store(id: u64) -> Store {
    Store {
        id,
        address: format!("127.0.0.1:{}", 20160 + id),
        ..Default::default()
    }
}

fn region(id: u64, start: &str, end: &str, version: u64, conf_ver: u64, peers: &[Peer]) -> Region {
    Region {
        id,
        start_key: Bytes::copy_from_slice(start.as_bytes()),
        end_key: Bytes::copy_from_slice(end.as_bytes()),
        region_epoch: Some(RegionEpoch { conf_ver, version }),
        peers: peers.to_vec(),
    }
}

/// Opens a Tso stream; returns a function-like pair (sender, response stream).
async fn tso_stream(
    client: &mut Client,
) -> (mpsc::Sender<TsoRequest>, tonic::Streaming<TsoResponse>) {
    let (tx, rx) = mpsc::channel(16);
    let responses = client
        .tso(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, responses)
}

/// Requests `count` timestamps; returns the composed (first, last).
async fn get_ts(
    tx: &mpsc::Sender<TsoRequest>,
    responses: &mut tonic::Streaming<TsoResponse>,
    cluster_id: u64,
    count: u32,
) -> (u64, u64) {
    tx.send(TsoRequest {
        header: header(cluster_id),
        count,
        dc_location: String::new(),
    })
    .await
    .unwrap();
    let resp = responses.message().await.unwrap().unwrap();
    assert_eq!(error_type(&resp.header), None, "{:?}", resp.header);
    assert_eq!(resp.header.unwrap().cluster_id, cluster_id);
    assert_eq!(resp.count, count);
    let ts = resp.timestamp.unwrap();
    assert!(ts.logical < 1 << 18 && ts.logical >= i64::from(count));
    let last = ((ts.physical as u64) << 18) | ts.logical as u64;
    (last - u64::from(count) + 1, last)
}

async fn bootstrap(client: &mut Client, cluster_id: u64) {
    let resp = client
        .bootstrap(BootstrapRequest {
            header: header(cluster_id),
            store: Some(store(1)),
            region: Some(region(2, "", "", 1, 1, &[peer(3, 1)])),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), None, "{:?}", resp.header);
}

async fn get_region(client: &mut Client, key: &str) -> GetRegionResponse {
    client
        .get_region(GetRegionRequest {
            header: header(0),
            region_key: Bytes::copy_from_slice(key.as_bytes()),
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn region_by_id(client: &mut Client, id: u64) -> Option<Region> {
    client
        .get_region_by_id(GetRegionByIdRequest {
            header: header(0),
            region_id: id,
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner()
        .region
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tso_is_strictly_increasing_across_concurrent_streams_and_batches() {
    let dir = tempfile::tempdir().unwrap();
    let pd = start_pd(dir.path()).await;
    let cluster_id = pd.cluster_id();
    let mut tasks = Vec::new();
    for task in 0..8u32 {
        let mut client = connect(&pd).await;
        tasks.push(tokio::spawn(async move {
            let (tx, mut responses) = tso_stream(&mut client).await;
            let mut ranges = Vec::new();
            let mut prev = 0;
            for i in 0..200u32 {
                let count = 1 + (i * 7 + task) % 40;
                let (first, last) = get_ts(&tx, &mut responses, cluster_id, count).await;
                assert!(first > prev, "stream {task}: {first} after {prev}");
                prev = last;
                ranges.push((first, last));
            }
            ranges
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    // Ranges handed to different streams never overlap.
    all.sort_unstable();
    for pair in all.windows(2) {
        assert!(pair[0].1 < pair[1].0, "overlapping ranges {pair:?}");
    }
    // A batch larger than what is left of the logical space in this millisecond still works.
    let mut client = connect(&pd).await;
    let (tx, mut responses) = tso_stream(&mut client).await;
    let (_, a) = get_ts(&tx, &mut responses, cluster_id, 200_000).await;
    let (b, _) = get_ts(&tx, &mut responses, cluster_id, 200_000).await;
    assert!(b > a);
    // A zero count is rejected in the header, and the stream stays usable.
    tx.send(TsoRequest {
        header: header(cluster_id),
        count: 0,
        dc_location: String::new(),
    })
    .await
    .unwrap();
    let resp = responses.message().await.unwrap().unwrap();
    assert_eq!(error_type(&resp.header), Some(ErrorType::InvalidValue));
    get_ts(&tx, &mut responses, cluster_id, 1).await;
    drop(tx);
    pd.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tso_after_restart_is_above_everything_before_even_if_the_clock_went_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let pd = start_with_clock(PdConfig::for_test(dir.path()), clock.clone())
        .await
        .unwrap();
    let cluster_id = pd.cluster_id();
    let mut client = connect(&pd).await;
    let (tx, mut responses) = tso_stream(&mut client).await;
    let mut before = 0;
    for _ in 0..100 {
        clock.advance(7);
        before = get_ts(&tx, &mut responses, cluster_id, 3).await.1;
    }
    drop(tx);
    pd.shutdown().await.unwrap();

    // The clock jumped back 10 s while PD was down.
    clock.set(1_700_000_000_000 - 10_000);
    let pd = start_with_clock(PdConfig::for_test(dir.path()), clock.clone())
        .await
        .unwrap();
    assert_eq!(pd.cluster_id(), cluster_id, "cluster id is persisted");
    let mut client = connect(&pd).await;
    let (tx, mut responses) = tso_stream(&mut client).await;
    let (after, _) = get_ts(&tx, &mut responses, cluster_id, 1).await;
    assert!(after > before, "{after} after restart <= {before} before");
    // A clock jump far past the persisted window: the physical part follows the clock (the
    // window is extended before anything beyond it is handed out).
    clock.advance(60_000);
    let (jumped, _) = get_ts(&tx, &mut responses, cluster_id, 1).await;
    assert_eq!(jumped >> 18, 1_700_000_000_000 + 50_000);
    drop(tx);
    pd.shutdown().await.unwrap();

    // And with the real clock, a restart right away (well within the save window).
    let pd = start_pd(dir.path()).await;
    let mut client = connect(&pd).await;
    let (tx, mut responses) = tso_stream(&mut client).await;
    let (_, real_before) = get_ts(&tx, &mut responses, cluster_id, 1).await;
    drop(tx);
    let addr = pd.addr();
    pd.shutdown().await.unwrap();
    let mut config = PdConfig::for_test(dir.path());
    config.listen_addr = addr.to_string();
    let pd = start(config).await.unwrap();
    let mut client = connect(&pd).await;
    let (tx, mut responses) = tso_stream(&mut client).await;
    let (real_after, _) = get_ts(&tx, &mut responses, cluster_id, 1).await;
    assert!(real_after > real_before);
    drop(tx);
    pd.shutdown().await.unwrap();
}

async fn alloc_ids(client: &mut Client, count: u32) -> Vec<u64> {
    let resp = client
        .alloc_id(AllocIdRequest {
            header: header(0),
            count,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), None);
    assert_eq!(resp.count, count.max(1));
    assert_ne!(resp.id, 0);
    (resp.id..resp.id + u64::from(resp.count)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alloc_id_never_repeats_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = HashSet::new();
    let mut addr = None;
    for round in 0..3 {
        let mut config = PdConfig::for_test(dir.path());
        config.id_alloc_step = 50;
        if let Some(addr) = addr {
            config.listen_addr = format!("{addr}");
        }
        let pd = start(config).await.unwrap();
        addr = Some(pd.addr());
        let mut tasks = Vec::new();
        for task in 0..4u32 {
            let mut client = connect(&pd).await;
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..40u32 {
                    ids.extend(alloc_ids(&mut client, (i + task) % 5).await);
                }
                ids
            }));
        }
        for task in tasks {
            for id in task.await.unwrap() {
                assert!(seen.insert(id), "id {id} repeated in round {round}");
            }
        }
        pd.shutdown().await.unwrap();
    }
    assert!(seen.len() > 3 * 4 * 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_once_and_requests_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let pd = start_pd(dir.path()).await;
    let cluster_id = pd.cluster_id();
    assert_ne!(cluster_id, 0);
    let mut client = connect(&pd).await;

    let members = client
        .get_members(GetMembersRequest { header: header(0) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(members.header.as_ref().unwrap().cluster_id, cluster_id);
    assert_eq!(members.members.len(), 1);
    let leader = members.leader.unwrap();
    assert_eq!(leader.client_urls, vec![pd.client_url().to_owned()]);
    assert_eq!(leader.member_id, pd.member_id());

    let resp = client
        .is_bootstrapped(IsBootstrappedRequest {
            header: header(cluster_id),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.bootstrapped);
    let resp = get_region(&mut client, "a").await;
    assert_eq!(error_type(&resp.header), Some(ErrorType::NotBootstrapped));
    // Stores may register before bootstrap (the bootstrapping store places replicas on them).
    let resp = client
        .put_store(PutStoreRequest {
            header: header(cluster_id),
            store: Some(store(1)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), None);
    let resp = client
        .get_gc_safe_point(GetGcSafePointRequest { header: header(0) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), Some(ErrorType::NotBootstrapped));

    // A request for another cluster is refused.
    let resp = client
        .is_bootstrapped(IsBootstrappedRequest {
            header: header(cluster_id + 1),
        })
        .await
        .unwrap()
        .into_inner();
    let err = resp.header.unwrap().error.unwrap();
    assert_eq!(err.r#type(), ErrorType::Unknown);
    assert!(err.message.contains("mismatch cluster id"), "{err:?}");

    // An invalid first region is refused.
    let resp = client
        .bootstrap(BootstrapRequest {
            header: header(cluster_id),
            store: Some(store(1)),
            region: Some(region(2, "", "m", 1, 1, &[peer(3, 1)])),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), Some(ErrorType::InvalidValue));

    bootstrap(&mut client, cluster_id).await;
    let resp = client
        .is_bootstrapped(IsBootstrappedRequest {
            header: header(cluster_id),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.bootstrapped);
    let resp = client
        .bootstrap(BootstrapRequest {
            header: header(cluster_id),
            store: Some(store(1)),
            region: Some(region(2, "", "", 1, 1, &[peer(3, 1)])),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        error_type(&resp.header),
        Some(ErrorType::AlreadyBootstrapped)
    );

    // Ids used by the bootstrap are never allocated afterwards.
    let ids = alloc_ids(&mut client, 5).await;
    assert!(ids.iter().all(|id| *id > 3), "{ids:?}");

    let resp = client
        .get_cluster_config(GetClusterConfigRequest { header: header(0) })
        .await
        .unwrap()
        .into_inner();
    let cluster = resp.cluster.unwrap();
    assert_eq!((cluster.id, cluster.max_peer_count), (cluster_id, 3));
    pd.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_and_store_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let pd = start_pd(dir.path()).await;
    let cluster_id = pd.cluster_id();
    let mut client = connect(&pd).await;
    bootstrap(&mut client, cluster_id).await;

    for id in [4, 5] {
        let resp = client
            .put_store(PutStoreRequest {
                header: header(cluster_id),
                store: Some(store(id)),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(error_type(&resp.header), None);
    }
    let mut tomb = store(6);
    tomb.set_state(StoreState::Tombstone);
    client
        .put_store(PutStoreRequest {
            header: header(cluster_id),
            store: Some(tomb),
        })
        .await
        .unwrap();
    // Same address as store 4: refused.
    let mut dup = store(7);
    dup.address = store(4).address;
    let resp = client
        .put_store(PutStoreRequest {
            header: header(cluster_id),
            store: Some(dup),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), Some(ErrorType::Unknown));

    let all = |exclude_tombstone_stores| GetAllStoresRequest {
        header: header(cluster_id),
        exclude_tombstone_stores,
    };
    let ids = |resp: GetAllStoresResponse| resp.stores.iter().map(|s| s.id).collect::<Vec<_>>();
    let resp = client
        .get_all_stores(all(false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(resp), vec![1, 4, 5, 6]);
    let resp = client.get_all_stores(all(true)).await.unwrap().into_inner();
    assert_eq!(ids(resp), vec![1, 4, 5]);

    let resp = client
        .store_heartbeat(StoreHeartbeatRequest {
            header: header(cluster_id),
            stats: Some(StoreStats {
                store_id: 4,
                capacity: 1000,
                available: 600,
                region_count: 3,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), None);
    let resp = client
        .get_store(GetStoreRequest {
            header: header(cluster_id),
            store_id: 4,
        })
        .await
        .unwrap()
        .into_inner();
    let got = resp.store.unwrap();
    assert_eq!(got.address, store(4).address);
    assert!(got.last_heartbeat > 0);
    let stats = resp.stats.unwrap();
    assert_eq!(
        (stats.capacity, stats.available, stats.region_count),
        (1000, 600, 3)
    );

    let resp = client
        .get_store(GetStoreRequest {
            header: header(cluster_id),
            store_id: 99,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), Some(ErrorType::Unknown));
    let resp = client
        .store_heartbeat(StoreHeartbeatRequest {
            header: header(cluster_id),
            stats: Some(StoreStats {
                store_id: 6,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), Some(ErrorType::StoreTombstone));
    pd.shutdown().await.unwrap();
}

fn heartbeat(cluster_id: u64, region: Region, leader: Peer, term: u64) -> RegionHeartbeatRequest {
    RegionHeartbeatRequest {
        header: header(cluster_id),
        region: Some(region),
        leader: Some(leader),
        term,
        approximate_size: 1 << 20,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_heartbeats_splits_lookups_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pd = start_pd(dir.path()).await;
    let cluster_id = pd.cluster_id();
    let mut client = connect(&pd).await;
    bootstrap(&mut client, cluster_id).await;
    for id in [4, 5] {
        client
            .put_store(PutStoreRequest {
                header: header(cluster_id),
                store: Some(store(id)),
            })
            .await
            .unwrap();
    }

    // The first region, now replicated on three stores, reports its leader.
    let peers = [peer(3, 1), peer(10, 4), peer(11, 5)];
    let (hb_tx, hb_rx) = mpsc::channel(16);
    let mut hb_responses = client
        .region_heartbeat(ReceiverStream::new(hb_rx))
        .await
        .unwrap()
        .into_inner();
    hb_tx
        .send(heartbeat(
            cluster_id,
            region(2, "", "", 1, 3, &peers),
            peers[1],
            2,
        ))
        .await
        .unwrap();
    wait_until("leader of region 2", || {
        let mut client = client.clone();
        async move { get_region(&mut client, "x").await.leader == Some(peers[1]) }
    })
    .await;

    // Split: ask for ids, then report ["", "g") = new, ["g", "p") = new, ["p", +inf) = 2.
    let resp = client
        .ask_batch_split(AskBatchSplitRequest {
            header: header(cluster_id),
            region: Some(region(2, "", "", 1, 3, &peers)),
            split_count: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), None);
    assert_eq!(resp.ids.len(), 2);
    let mut fresh = HashSet::new();
    for split in &resp.ids {
        assert_eq!(split.new_peer_ids.len(), 3);
        assert!(fresh.insert(split.new_region_id));
        for id in &split.new_peer_ids {
            assert!(fresh.insert(*id));
        }
    }
    let new_peers = |i: usize| -> Vec<Peer> {
        resp.ids[i]
            .new_peer_ids
            .iter()
            .zip([1, 4, 5])
            .map(|(id, store)| peer(*id, store))
            .collect()
    };
    let (id_a, id_b) = (resp.ids[0].new_region_id, resp.ids[1].new_region_id);
    let split = vec![
        region(id_a, "", "g", 3, 3, &new_peers(0)),
        region(id_b, "g", "p", 3, 3, &new_peers(1)),
        region(2, "p", "", 3, 3, &peers),
    ];
    let report = client
        .report_batch_split(ReportBatchSplitRequest {
            header: header(cluster_id),
            regions: split.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&report.header), None);

    // Asking to split with the pre-split epoch is refused now.
    let stale_ask = client
        .ask_batch_split(AskBatchSplitRequest {
            header: header(cluster_id),
            region: Some(region(2, "", "", 1, 3, &peers)),
            split_count: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(error_type(&stale_ask.header).is_some());

    assert_eq!(get_region(&mut client, "").await.region.unwrap().id, id_a);
    assert_eq!(get_region(&mut client, "g").await.region.unwrap().id, id_b);
    let resp = get_region(&mut client, "zzz").await;
    assert_eq!(resp.region.unwrap().id, 2);
    assert_eq!(resp.leader, Some(peers[1]), "leader survives the split");
    assert_eq!(region_by_id(&mut client, id_b).await.unwrap(), split[1]);
    assert_eq!(region_by_id(&mut client, 999).await, None);

    let prev = client
        .get_prev_region(GetRegionRequest {
            header: header(0),
            region_key: Bytes::from_static(b"p"),
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(prev.region.unwrap().id, id_b);

    // Leaders of the new regions arrive with their heartbeats (term-ordered per region).
    hb_tx
        .send(heartbeat(cluster_id, split[0].clone(), new_peers(0)[0], 5))
        .await
        .unwrap();
    hb_tx
        .send(heartbeat(cluster_id, split[1].clone(), new_peers(1)[2], 5))
        .await
        .unwrap();
    wait_until("leader of the second new region", || {
        let mut client = client.clone();
        let want = new_peers(1)[2];
        async move { get_region(&mut client, "h").await.leader == Some(want) }
    })
    .await;

    let scan = |start: &'static str, end: &'static str, limit: i32| ScanRegionsRequest {
        header: header(cluster_id),
        start_key: Bytes::from_static(start.as_bytes()),
        end_key: Bytes::from_static(end.as_bytes()),
        limit,
    };
    let resp = client
        .scan_regions(scan("", "", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.region_metas.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![id_a, id_b, 2]
    );
    assert_eq!(resp.regions.len(), 3);
    assert_eq!(resp.leaders.len(), 3);
    assert_eq!(resp.leaders[0], new_peers(0)[0]);
    assert_eq!(resp.regions[2].leader, Some(peers[1]));
    let resp = client
        .scan_regions(scan("h", "q", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.regions
            .iter()
            .map(|r| r.region.as_ref().unwrap().id)
            .collect::<Vec<_>>(),
        vec![id_b, 2]
    );
    let resp = client
        .scan_regions(scan("", "", 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.region_metas.len(), 2);

    // A stale heartbeat (pre-split epoch, with a higher term) overwrites nothing. Heartbeats on
    // one stream are processed in order, so once the marker after it is visible, it was handled.
    hb_tx
        .send(heartbeat(
            cluster_id,
            region(2, "", "", 1, 3, &peers),
            peers[0],
            9,
        ))
        .await
        .unwrap();
    let marker = region(id_a, "", "g", 3, 4, &new_peers(0));
    hb_tx
        .send(heartbeat(cluster_id, marker.clone(), new_peers(0)[0], 6))
        .await
        .unwrap();
    wait_until("the marker heartbeat", || {
        let mut client = client.clone();
        let marker = marker.clone();
        async move { region_by_id(&mut client, marker.id).await == Some(marker) }
    })
    .await;
    let resp = get_region(&mut client, "zzz").await;
    assert_eq!(resp.region.unwrap(), split[2]);
    assert_eq!(resp.leader, Some(peers[1]));

    // A heartbeat for another cluster is answered with an error on the stream.
    hb_tx
        .send(heartbeat(cluster_id + 1, split[2].clone(), peers[1], 9))
        .await
        .unwrap();
    let resp = tokio::time::timeout(DEADLINE, hb_responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(error_type(&resp.header), Some(ErrorType::Unknown));
    assert_eq!(resp.region_id, 2);

    // GC safe point only moves forward.
    let update = |safe_point| UpdateGcSafePointRequest {
        header: header(cluster_id),
        safe_point,
    };
    let resp = client
        .update_gc_safe_point(update(100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.new_safe_point, 100);
    let resp = client
        .update_gc_safe_point(update(50))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.new_safe_point, 100);

    drop(hb_tx);
    let addr = pd.addr();
    pd.shutdown().await.unwrap();

    // Everything but soft state (leaders, stats) survives a restart.
    let mut config = PdConfig::for_test(dir.path());
    config.listen_addr = addr.to_string();
    let pd = start(config).await.unwrap();
    assert_eq!(pd.cluster_id(), cluster_id);
    let mut client = connect(&pd).await;
    let resp = client
        .scan_regions(scan("", "", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.region_metas,
        vec![marker, split[1].clone(), split[2].clone()]
    );
    assert!(resp.regions.iter().all(|r| r.leader.is_none()));
    let resp = client
        .get_all_stores(GetAllStoresRequest {
            header: header(cluster_id),
            exclude_tombstone_stores: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.stores.len(), 3);
    let resp = client
        .get_gc_safe_point(GetGcSafePointRequest {
            header: header(cluster_id),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.safe_point, 100);
    pd.shutdown().await.unwrap();
}

#[test]
fn config_reads_from_toml() {
    let config: PdConfig = toml::from_str(
        r#"
        name = "pd-1"
        listen_addr = "0.0.0.0:2379"
        advertise_addr = "10.0.0.1:2379"
        data_dir = "/var/lib/pd"
        tso_save_interval = "5s"
        tso_update_interval = 100
        "#,
    )
    .unwrap();
    assert_eq!(config.name, "pd-1");
    assert_eq!(config.tso_save_interval, Duration::from_secs(5));
    assert_eq!(config.tso_update_interval, Duration::from_millis(100));
    assert_eq!(config.id_alloc_step, PdConfig::default().id_alloc_step);
    config.validate().unwrap();
    assert!(toml::from_str::<PdConfig>("no_such_field = 1").is_err());
}

/// Sends a heartbeat for another cluster (answered with an error) and returns everything PD
/// answered on the stream before that error. Heartbeats on one stream are handled in order, so
/// these are exactly the answers to the heartbeats sent before.
async fn answers_so_far(
    tx: &mpsc::Sender<RegionHeartbeatRequest>,
    responses: &mut tonic::Streaming<RegionHeartbeatResponse>,
    cluster_id: u64,
    marker: &Region,
) -> Vec<RegionHeartbeatResponse> {
    tx.send(heartbeat(
        cluster_id + 1,
        marker.clone(),
        marker.peers[0],
        0,
    ))
    .await
    .unwrap();
    let mut answers = Vec::new();
    loop {
        let resp = tokio::time::timeout(DEADLINE, responses.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if error_type(&resp.header).is_some() {
            assert_eq!(resp.region_id, marker.id);
            return answers;
        }
        answers.push(resp);
    }
}

/// A PD with stores 1, 2, 3 (all heartbeating) and a heartbeat stream, plus six regions 10..=15
/// with voters on all three stores (peer ids `region * 10 + store`), not reported yet.
async fn balance_setup(
    config: PdConfig,
) -> (
    PdHandle,
    Client,
    mpsc::Sender<RegionHeartbeatRequest>,
    tonic::Streaming<RegionHeartbeatResponse>,
    Vec<Region>,
) {
    let pd = start(config).await.unwrap();
    let cluster_id = pd.cluster_id();
    let mut client = connect(&pd).await;
    bootstrap(&mut client, cluster_id).await;
    for id in [2, 3] {
        let resp = client
            .put_store(PutStoreRequest {
                header: header(cluster_id),
                store: Some(store(id)),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(error_type(&resp.header), None);
    }
    for id in [1, 2, 3] {
        let resp = client
            .store_heartbeat(StoreHeartbeatRequest {
                header: header(cluster_id),
                stats: Some(StoreStats {
                    store_id: id,
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(error_type(&resp.header), None);
    }
    // Version 2: they replace the bootstrapped region 2 (version 1) that covers everything.
    let bounds = ["", "b", "c", "d", "e", "f", ""];
    let regions: Vec<Region> = (10..16u64)
        .zip(bounds.windows(2))
        .map(|(id, keys)| {
            let peers: Vec<Peer> = (1..=3).map(|s| peer(id * 10 + s, s)).collect();
            region(id, keys[0], keys[1], 2, 2, &peers)
        })
        .collect();
    let (tx, rx) = mpsc::channel(64);
    let responses = client
        .region_heartbeat(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (pd, client, tx, responses, regions)
}

/// `(region id, target peer, transfer-to peer)` of leader-transfer answers; checks the rest.
fn transfers(answers: &[RegionHeartbeatResponse], regions: &[Region]) -> Vec<(u64, u64, u64)> {
    answers
        .iter()
        .map(|resp| {
            let region = regions.iter().find(|r| r.id == resp.region_id).unwrap();
            assert_eq!(resp.region_epoch, region.region_epoch);
            assert!(resp.change_peer.is_none() && resp.split_region.is_none());
            let to = resp.transfer_leader.as_ref().unwrap().peer.unwrap();
            assert!(region.peers.contains(&to), "{to:?} is a peer of the region");
            (resp.region_id, resp.target_peer.unwrap().id, to.id)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_leader_moves_leaders_off_a_busy_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = PdConfig {
        max_pending_leader_transfers: 2,
        ..PdConfig::for_test(dir.path())
    };
    let (pd, _client, tx, mut responses, regions) = balance_setup(config).await;
    let cluster_id = pd.cluster_id();
    let marker = regions[0].clone();
    let hb = |i: usize, store: u64, term: u64| {
        let region = regions[i].clone();
        let leader = region.peers[store as usize - 1];
        heartbeat(cluster_id, region, leader, term)
    };

    // All six led by store 1, learned one heartbeat at a time: region 10 (1/0/0) stays, region
    // 11 (2/0/0) goes to store 2, region 12 (3/0/0, counted as 2/1/0) to store 3; then the
    // in-flight limit (2) holds the rest back.
    for i in 0..6 {
        tx.send(hb(i, 1, 1)).await.unwrap();
    }
    let answers = answers_so_far(&tx, &mut responses, cluster_id, &marker).await;
    assert!(answers.iter().all(|r| error_type(&r.header).is_none()));
    assert_eq!(
        transfers(&answers, &regions),
        vec![(11, 111, 112), (12, 121, 123)]
    );
    // Repeated heartbeats are not answered while those transfers are pending.
    for i in 0..6 {
        tx.send(hb(i, 1, 1)).await.unwrap();
    }
    assert!(answers_so_far(&tx, &mut responses, cluster_id, &marker)
        .await
        .is_empty());

    // Region 11 reports its new leader: one slot is free. With region 12 counted as moved
    // (4/1/1) region 10 goes to store 2 (tie: smallest store id).
    tx.send(hb(1, 2, 2)).await.unwrap();
    for i in [0, 3, 4, 5] {
        tx.send(hb(i, 1, 1)).await.unwrap();
    }
    let answers = answers_so_far(&tx, &mut responses, cluster_id, &marker).await;
    assert_eq!(transfers(&answers, &regions), vec![(10, 101, 102)]);

    // Region 12 done; counting region 10 as moved (3/2/1), region 13 goes to store 3, after
    // which (2/2/2) is balanced.
    tx.send(hb(2, 3, 2)).await.unwrap();
    for i in 3..6 {
        tx.send(hb(i, 1, 1)).await.unwrap();
    }
    let answers = answers_so_far(&tx, &mut responses, cluster_id, &marker).await;
    assert_eq!(transfers(&answers, &regions), vec![(13, 131, 133)]);

    // The transfers are done and every region reports its leader: balanced, nothing to do.
    for (i, store) in [2, 2, 3, 3, 1, 1].into_iter().enumerate() {
        tx.send(hb(i, store, 2)).await.unwrap();
    }
    assert!(answers_so_far(&tx, &mut responses, cluster_id, &marker)
        .await
        .is_empty());
    let mut client = connect(&pd).await;
    assert_eq!(
        get_region(&mut client, "d").await.leader,
        Some(peer(133, 3))
    );

    drop(tx);
    pd.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_leader_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = PdConfig {
        schedule_leader_balance: false,
        ..PdConfig::for_test(dir.path())
    };
    let (pd, _client, tx, mut responses, regions) = balance_setup(config).await;
    let cluster_id = pd.cluster_id();
    for region in &regions {
        tx.send(heartbeat(cluster_id, region.clone(), region.peers[0], 1))
            .await
            .unwrap();
    }
    assert!(answers_so_far(&tx, &mut responses, cluster_id, &regions[0])
        .await
        .is_empty());
    drop(tx);
    pd.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_placed_elsewhere_in_initial_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = PdConfig::for_test(dir.path());
    config.name = "pd1".into();
    // This member listens on a free port, but the list says it is at port 1.
    config.initial_cluster = "pd1=http://127.0.0.1:1,pd2=http://127.0.0.1:2".into();
    let err = placement_driver::start(config).await.unwrap_err();
    assert!(
        err.to_string().contains("initial_cluster places pd1"),
        "{err}"
    );
}
