//! Bootstrap: what PD answers before it, that it happens once, and what it leaves behind.

use proto::pdpb::*;
use test_util::{peer, region, store};

use crate::rpc::*;

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
            region: Some(region(2).range("", "m").peers([peer(3, 1)]).build()),
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
            region: Some(region(2).peers([peer(3, 1)]).build()),
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
