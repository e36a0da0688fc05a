//! Stores: registration, listing, tombstones and store heartbeats.

use proto::metapb::StoreState;
use proto::pdpb::*;
use test_util::store;

use crate::rpc::*;

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
