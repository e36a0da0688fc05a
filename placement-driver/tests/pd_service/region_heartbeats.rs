//! Region heartbeats, splits and region lookups, and what of them survives a restart.

use std::collections::HashSet;

use bytes::Bytes;
use placement_driver::{start, PdConfig};
use proto::metapb::Peer;
use proto::pdpb::*;
use test_util::{peer, region, store, wait_until_async};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::rpc::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_heartbeats_splits_lookups_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The scripted regions span keyspace boundaries: no keyspace splits in between.
    let config = PdConfig {
        split_keyspace_regions: false,
        ..PdConfig::for_test(dir.path())
    };
    let pd = start(config).await.unwrap();
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
            region(2).conf_ver(3).peers(peers).build(),
            peers[1],
            2,
        ))
        .await
        .unwrap();
    wait_until_async("leader of region 2", DEADLINE, || {
        let mut client = client.clone();
        async move { get_region(&mut client, "x").await.leader == Some(peers[1]) }
    })
    .await;

    // Split: ask for ids, then report ["", "g") = new, ["g", "p") = new, ["p", +inf) = 2.
    let resp = client
        .ask_batch_split(AskBatchSplitRequest {
            header: header(cluster_id),
            region: Some(region(2).conf_ver(3).peers(peers).build()),
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
        region(id_a)
            .range("", "g")
            .version(3)
            .conf_ver(3)
            .peers(new_peers(0))
            .build(),
        region(id_b)
            .range("g", "p")
            .version(3)
            .conf_ver(3)
            .peers(new_peers(1))
            .build(),
        region(2)
            .range("p", "")
            .version(3)
            .conf_ver(3)
            .peers(peers)
            .build(),
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
            region: Some(region(2).conf_ver(3).peers(peers).build()),
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
    wait_until_async("leader of the second new region", DEADLINE, || {
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
            region(2).conf_ver(3).peers(peers).build(),
            peers[0],
            9,
        ))
        .await
        .unwrap();
    let marker = region(id_a)
        .range("", "g")
        .version(3)
        .conf_ver(4)
        .peers(new_peers(0))
        .build();
    hb_tx
        .send(heartbeat(cluster_id, marker.clone(), new_peers(0)[0], 6))
        .await
        .unwrap();
    wait_until_async("the marker heartbeat", DEADLINE, || {
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
