//! The balance-leader scheduler, as seen in the answers to region heartbeats.

use placement_driver::{start, PdConfig, PdHandle};
use proto::metapb::Region;
use proto::pdpb::*;
use test_util::{peer, region, store};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::rpc::*;

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
    // The scripted regions span the whole key space: no keyspace splits in between.
    let config = PdConfig {
        split_keyspace_regions: false,
        ..config
    };
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
            region(id)
                .range(keys[0], keys[1])
                .version(2)
                .conf_ver(2)
                .voters_on(&[1, 2, 3])
                .build()
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
