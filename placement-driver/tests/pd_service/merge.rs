//! Region merge as the stores see it: the answers to region heartbeats (`merge { target }`),
//! the end of a merge once the target reports the merged range, and merges asked for by hand
//! over PD's HTTP API with their refusals.

use std::time::Duration;

use placement_driver::{start, PdConfig, PdHandle};
use proto::metapb::Region;
use proto::pdpb::*;
use serde_json::{json, Value};
use test_util::{region, store};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::rpc::*;

type Heartbeats = (
    mpsc::Sender<RegionHeartbeatRequest>,
    tonic::Streaming<RegionHeartbeatResponse>,
);

/// A bootstrapped PD (stores 1-4) with `config`, scheduling nothing but merges, and a region
/// heartbeat stream.
async fn setup(config: PdConfig) -> (PdHandle, Client, Heartbeats) {
    // The scripted regions span keyspace boundaries; the stores send no heartbeats unless a
    // test sends them (so no replica moves or leader transfers).
    let config = PdConfig {
        split_keyspace_regions: false,
        schedule_leader_balance: false,
        schedule_region_balance: false,
        ..config
    };
    let pd = start(config).await.unwrap();
    let cluster_id = pd.cluster_id();
    let mut client = connect(&pd).await;
    bootstrap(&mut client, cluster_id).await;
    for id in [2, 3, 4] {
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
    let (tx, rx) = mpsc::channel(64);
    let responses = client
        .region_heartbeat(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (pd, client, (tx, responses))
}

/// A heartbeat of `region`'s first peer as leader, reporting `size` bytes and 1000 keys.
fn report(cluster_id: u64, region: &Region, size: u64) -> RegionHeartbeatRequest {
    RegionHeartbeatRequest {
        approximate_size: size,
        approximate_keys: 1000,
        ..heartbeat(cluster_id, region.clone(), region.peers[0], 1)
    }
}

/// Everything PD answered on the stream to the heartbeats sent so far: heartbeats on one
/// stream are handled in order, so once the answer (an error) to a heartbeat of another
/// cluster arrives, every earlier answer did.
async fn answers(
    hb: &mut Heartbeats,
    cluster_id: u64,
    marker: &Region,
) -> Vec<RegionHeartbeatResponse> {
    hb.0.send(heartbeat(
        cluster_id + 1,
        marker.clone(),
        marker.peers[0],
        0,
    ))
    .await
    .unwrap();
    let mut out = Vec::new();
    loop {
        let resp = tokio::time::timeout(DEADLINE, hb.1.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if error_type(&resp.header).is_some() {
            return out;
        }
        out.push(resp);
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn operators(pd: &PdHandle) -> Vec<Value> {
    let url = format!("{}/pd/api/v1/operators", pd.client_url());
    let resp = http().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// POSTs an operator; the status and the message.
async fn add_operator(pd: &PdHandle, body: Value) -> (u16, String) {
    let url = format!("{}/pd/api/v1/operators", pd.client_url());
    let resp = http().post(url).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (status, body.as_str().unwrap_or_default().to_owned())
}

fn merge(source: u64, target: u64) -> Value {
    json!({"name": "merge-region", "source_region_id": source, "target_region_id": target})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_neighbours_merge_and_the_merged_target_ends_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let config = PdConfig {
        split_merge_interval: Duration::ZERO,
        ..PdConfig::for_test(dir.path())
    };
    let (pd, mut client, mut hb) = setup(config).await;
    let cluster_id = pd.cluster_id();
    // Version 2: they replace the bootstrapped region 2 (version 1) that covers everything,
    // leaving a hole after "p"; both lie before the first keyspace boundary ("r...").
    let left = region(10)
        .range("", "m")
        .version(2)
        .conf_ver(2)
        .voters_on(&[1, 2, 3])
        .build();
    let right = region(11)
        .range("m", "p")
        .version(2)
        .conf_ver(2)
        .voters_on(&[1, 2, 3])
        .build();

    // The right region alone has no neighbour; then the left one's only neighbour is it.
    hb.0.send(report(cluster_id, &right, 5 << 20))
        .await
        .unwrap();
    hb.0.send(report(cluster_id, &left, 1 << 20)).await.unwrap();
    let got = answers(&mut hb, cluster_id, &left).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].region_id, 10);
    assert_eq!(got[0].region_epoch, left.region_epoch);
    assert_eq!(got[0].target_peer, Some(left.peers[0]));
    assert_eq!(got[0].merge.as_ref().unwrap().target.as_ref(), Some(&right));
    assert!(got[0].change_peer.is_none() && got[0].transfer_leader.is_none());
    let ops = operators(&pd).await;
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0]["region_id"], 10);
    assert_eq!(ops[0]["desc"], "merge-region");
    assert_eq!(ops[0]["target_region_id"], 11);

    // Asked again on every heartbeat of the source, also once it prepared (its epoch
    // bumped); the target's heartbeats are answered with nothing.
    let prepared = region(10)
        .range("", "m")
        .version(3)
        .conf_ver(3)
        .voters_on(&[1, 2, 3])
        .build();
    hb.0.send(report(cluster_id, &left, 1 << 20)).await.unwrap();
    hb.0.send(report(cluster_id, &right, 5 << 20))
        .await
        .unwrap();
    hb.0.send(report(cluster_id, &prepared, 1 << 20))
        .await
        .unwrap();
    let got = answers(&mut hb, cluster_id, &left).await;
    assert_eq!(got.len(), 2, "{got:?}");
    for resp in &got {
        assert_eq!(resp.region_id, 10);
        assert_eq!(resp.merge.as_ref().unwrap().target.as_ref(), Some(&right));
    }

    // The target applied CommitMerge: its range covers the source's, its version is above
    // both. The source leaves PD's map, the operator ends, a late source heartbeat is stale.
    let merged = region(11)
        .range("", "p")
        .version(4)
        .conf_ver(2)
        .voters_on(&[1, 2, 3])
        .build();
    hb.0.send(report(cluster_id, &merged, 6 << 20))
        .await
        .unwrap();
    hb.0.send(report(cluster_id, &prepared, 1 << 20))
        .await
        .unwrap();
    let got = answers(&mut hb, cluster_id, &merged).await;
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(region_by_id(&mut client, 10).await, None);
    assert_eq!(get_region(&mut client, "a").await.region, Some(merged));
    assert!(operators(&pd).await.is_empty());

    drop(hb);
    pd.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_on_other_stores_than_its_target_gets_a_replica_moved_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = PdConfig {
        split_merge_interval: Duration::ZERO,
        ..PdConfig::for_test(dir.path())
    };
    let (pd, mut client, mut hb) = setup(config).await;
    let cluster_id = pd.cluster_id();
    // The stores are alive: a replica may move onto them.
    for id in 1..=4 {
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
    let left = region(10)
        .range("", "m")
        .version(2)
        .conf_ver(2)
        .voters_on(&[1, 2, 3])
        .build();
    let right = region(11)
        .range("m", "p")
        .version(2)
        .conf_ver(2)
        .voters_on(&[1, 2, 4])
        .build();
    hb.0.send(report(cluster_id, &right, 5 << 20))
        .await
        .unwrap();
    // The source's leader asks until answered (the first heartbeat may find no peer id ready).
    for _ in 0..3 {
        hb.0.send(report(cluster_id, &left, 1 << 20)).await.unwrap();
    }
    let got = answers(&mut hb, cluster_id, &left).await;
    assert!(!got.is_empty(), "{got:?}");
    // The first step of moving the replica on store 3 to store 4: a learner on store 4.
    let first = got[0].change_peer.expect("a change_peer");
    assert_eq!(first.change_type, ConfChangeType::AddLearnerNode as i32);
    let learner = first.peer.unwrap();
    assert_eq!(learner.store_id, 4);
    assert_eq!(learner.role(), proto::metapb::PeerRole::Learner);
    for resp in &got {
        assert_eq!(resp.region_id, 10);
        assert_eq!(resp.target_peer, Some(left.peers[0]));
        assert_eq!(resp.change_peer.as_ref(), Some(&first));
        assert!(resp.merge.is_none() && resp.transfer_leader.is_none());
    }
    let ops = operators(&pd).await;
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0]["region_id"], 10);
    assert_eq!(ops[0]["desc"], "merge-transfer-peer");

    drop(hb);
    pd.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_by_hand_are_checked_and_skip_the_size_and_interval_rules() {
    let dir = tempfile::tempdir().unwrap();
    // Default settings: the checker waits an hour, so only merges by hand happen.
    let (pd, mut client, mut hb) = setup(PdConfig::for_test(dir.path())).await;
    let cluster_id = pd.cluster_id();
    // Region 13 ends before the keyspace boundaries, so that 12 and 13 may merge.
    let bounds = ["", "b", "c", "d", "e"];
    let stores: [&[u64]; 4] = [&[1, 2, 3], &[1, 2, 3], &[1, 2, 4], &[1, 2, 4]];
    let regions: Vec<Region> = (10..14u64)
        .zip(bounds.windows(2))
        .zip(stores)
        .map(|((id, keys), stores)| {
            region(id)
                .range(keys[0], keys[1])
                .version(2)
                .conf_ver(2)
                .voters_on(stores)
                .build()
        })
        .collect();
    // All in the map; regions 10-12 report (large), region 13 never does (no leader known).
    let resp = client
        .report_batch_split(ReportBatchSplitRequest {
            header: header(cluster_id),
            regions: regions.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), None);
    for r in &regions[..3] {
        hb.0.send(report(cluster_id, r, 500 << 20)).await.unwrap();
    }
    assert!(answers(&mut hb, cluster_id, &regions[0]).await.is_empty());

    let refused = [
        (merge(10, 12), 400, "not adjacent"),
        (merge(11, 12), 400, "different stores"),
        (merge(12, 13), 400, "region 13 has no known leader"),
        (merge(10, 10), 400, "cannot merge into itself"),
        (merge(10, 999), 404, "region 999 not found"),
        (
            json!({"name": "merge-region", "source_region_id": 10}),
            400,
            "target_region_id",
        ),
        (
            json!({"name": "split-region", "region_id": 10}),
            400,
            "unknown operator",
        ),
    ];
    for (body, status, text) in refused {
        let (got, message) = add_operator(&pd, body.clone()).await;
        assert_eq!(got, status, "{body}: {message}");
        assert!(message.contains(text), "{body}: {message:?}");
    }
    assert!(operators(&pd).await.is_empty());

    // Large and just seen, but adjacent, on the same stores and healthy: taken.
    let (got, message) = add_operator(&pd, merge(11, 10)).await;
    assert_eq!(got, 200, "{message}");
    let ops = operators(&pd).await;
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0]["desc"], "admin-merge-region");
    assert_eq!(
        (
            ops[0]["region_id"].as_u64(),
            ops[0]["target_region_id"].as_u64()
        ),
        (Some(11), Some(10))
    );
    // One merge per region.
    let (got, message) = add_operator(&pd, merge(10, 11)).await;
    assert_eq!(got, 400, "{message}");
    assert!(message.contains("has an operator"), "{message}");

    // The source's leader is asked; the target's is not.
    hb.0.send(report(cluster_id, &regions[0], 500 << 20))
        .await
        .unwrap();
    hb.0.send(report(cluster_id, &regions[1], 500 << 20))
        .await
        .unwrap();
    let got = answers(&mut hb, cluster_id, &regions[0]).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].region_id, 11);
    assert_eq!(
        got[0].merge.as_ref().unwrap().target.as_ref(),
        Some(&regions[0])
    );

    drop(hb);
    pd.shutdown().await.unwrap();
}
