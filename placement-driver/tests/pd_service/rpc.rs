//! Set-up and requests shared by the files of this suite: one PD member on a temp dir, a
//! generated client, and the requests most tests make.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use placement_driver::{start, PdConfig, PdHandle};
use proto::metapb::{Peer, Region};
use proto::pdpb::pd_client::PdClient;
use proto::pdpb::*;
use test_util::{peer, region, store};
use tonic::transport::Channel;

pub type Client = PdClient<Channel>;

/// How long tests wait for a condition or an answer.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub async fn start_pd(dir: &Path) -> PdHandle {
    start(PdConfig::for_test(dir)).await.unwrap()
}

pub async fn connect(pd: &PdHandle) -> Client {
    PdClient::connect(pd.client_url().to_owned()).await.unwrap()
}

pub fn header(cluster_id: u64) -> Option<RequestHeader> {
    Some(RequestHeader {
        cluster_id,
        sender_id: 0,
    })
}

pub fn error_type(header: &Option<ResponseHeader>) -> Option<ErrorType> {
    header
        .as_ref()
        .and_then(|h| h.error.as_ref())
        .map(|e| e.r#type())
}

pub async fn bootstrap(client: &mut Client, cluster_id: u64) {
    let resp = client
        .bootstrap(BootstrapRequest {
            header: header(cluster_id),
            store: Some(store(1)),
            region: Some(region(2).peers([peer(3, 1)]).build()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), None, "{:?}", resp.header);
}

pub async fn get_region(client: &mut Client, key: &str) -> GetRegionResponse {
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

pub async fn region_by_id(client: &mut Client, id: u64) -> Option<Region> {
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

pub async fn alloc_ids(client: &mut Client, count: u32) -> Vec<u64> {
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

pub fn heartbeat(
    cluster_id: u64,
    region: Region,
    leader: Peer,
    term: u64,
) -> RegionHeartbeatRequest {
    RegionHeartbeatRequest {
        header: header(cluster_id),
        region: Some(region),
        leader: Some(leader),
        term,
        approximate_size: 1 << 20,
        ..Default::default()
    }
}
