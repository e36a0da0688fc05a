//! A 3-member PD group: election, GetMembers, follower redirects, replicated state.

mod support;

use std::time::Duration;

use proto::pdpb::pd_client::PdClient as PdGrpc;
use proto::pdpb::*;
use support::{PdGroup, DEADLINE};
use test_util::wait_until_async;
use tokio_stream::wrappers::ReceiverStream;

async fn grpc(url: &str) -> PdGrpc<tonic::transport::Channel> {
    PdGrpc::connect(url.to_owned()).await.unwrap()
}

fn header() -> Option<RequestHeader> {
    Some(RequestHeader::default())
}

async fn one_tso(client: &mut PdGrpc<tonic::transport::Channel>) -> TsoResponse {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(TsoRequest {
        header: header(),
        count: 1,
        dc_location: String::new(),
    })
    .await
    .unwrap();
    let mut responses = client
        .tso(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    responses.message().await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_elect_a_leader_and_followers_redirect() {
    let group = PdGroup::start(3).await;
    let leader = group.wait_leader().await;
    let leader_name = group.members[leader].name.clone();
    let leader_url = group.members[leader].url();
    let cluster_id = group.members[leader].handle().cluster_id();
    assert_ne!(cluster_id, 0);

    // Every member names the leader (followers learn it, and the cluster id, by replication).
    for m in &group.members {
        let mut client = grpc(&m.url()).await;
        wait_until_async(&format!("{} to name the leader", m.name), DEADLINE, || {
            let mut client = client.clone();
            let leader_name = leader_name.clone();
            async move {
                let resp = client
                    .get_members(GetMembersRequest { header: header() })
                    .await
                    .unwrap()
                    .into_inner();
                resp.header.as_ref().unwrap().cluster_id == cluster_id
                    && resp.leader.as_ref().is_some_and(|l| l.name == leader_name)
            }
        })
        .await;
        let resp = client
            .get_members(GetMembersRequest { header: header() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.members.len(), 3);
        let leader_member = resp.leader.unwrap();
        assert_eq!(leader_member.client_urls, vec![leader_url.clone()]);
        assert_eq!(resp.etcd_leader.unwrap().name, leader_name);
    }

    // The leader serves; followers answer "not leader", naming the leader.
    let mut client = grpc(&leader_url).await;
    let resp = one_tso(&mut client).await;
    assert!(resp.header.unwrap().error.is_none());
    assert!(resp.timestamp.unwrap().physical > 0);
    let resp = client
        .alloc_id(AllocIdRequest {
            header: header(),
            count: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.header.unwrap().error.is_none());
    assert!(resp.id > 0);
    for (i, m) in group.members.iter().enumerate() {
        if i == leader {
            continue;
        }
        let mut client = grpc(&m.url()).await;
        let err = client
            .alloc_id(AllocIdRequest {
                header: header(),
                count: 1,
            })
            .await
            .unwrap()
            .into_inner()
            .header
            .unwrap()
            .error
            .expect("a follower refuses AllocID");
        assert!(err.message.contains("not leader"), "{}", err.message);
        assert!(err.message.contains(&leader_name), "{}", err.message);
        assert!(err.message.contains(&leader_url), "{}", err.message);
        let err = one_tso(&mut client)
            .await
            .header
            .unwrap()
            .error
            .expect("a follower refuses TSO");
        assert!(err.message.contains("not leader"), "{}", err.message);
        let err = client
            .is_bootstrapped(IsBootstrappedRequest { header: header() })
            .await
            .unwrap()
            .into_inner()
            .header
            .unwrap()
            .error
            .expect("a follower refuses reads");
        assert!(err.message.contains("not leader"), "{}", err.message);
    }
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_member_initial_cluster_is_a_single_node_pd() {
    let dir = tempfile::tempdir().unwrap();
    let config = placement_driver::PdConfig {
        name: "solo".to_owned(),
        initial_cluster: "solo=http://127.0.0.1:1".to_owned(),
        ..placement_driver::PdConfig::for_test(dir.path())
    };
    let pd = placement_driver::start(config).await.unwrap();
    assert!(pd.is_serving_leader());
    assert_ne!(pd.cluster_id(), 0);
    let _ = Duration::ZERO;
    pd.shutdown().await.unwrap();
}
