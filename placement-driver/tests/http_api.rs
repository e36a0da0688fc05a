//! PD's HTTP API (`placement_driver::http_api`) over plain HTTP/1.1 on the client port, next to
//! gRPC on the same port: the JSON PD answers once stores and regions are registered through
//! gRPC, its errors, and what a follower answers.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::metapb::StoreState;
use proto::pdpb::pd_client::PdClient;
use proto::pdpb::*;
use serde_json::{json, Value};
use support::{PdGroup, DEADLINE};
use test_util::{peer, region, store, wait_until_async};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// A plain HTTP/1.1 client (no proxy from the environment).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// GETs `path` under `/pd/api/v1` of `base`; the status and the body as JSON (`Null` if empty).
async fn get(http: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    let resp = http
        .get(format!("{base}/pd/api/v1{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    let body = resp.bytes().await.unwrap();
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body:?}"))
    };
    (status, json)
}

/// GETs `path`, expecting `status` and an error message (a JSON string) containing `text`.
async fn get_error(http: &reqwest::Client, base: &str, path: &str, status: u16, text: &str) {
    let (got, body) = get(http, base, path).await;
    assert_eq!(got, status, "GET {path}: {body}");
    let message = body
        .as_str()
        .unwrap_or_else(|| panic!("GET {path}: {body}"));
    assert!(message.contains(text), "GET {path}: {message:?}");
}

fn header(cluster_id: u64) -> Option<RequestHeader> {
    Some(RequestHeader {
        cluster_id,
        sender_id: 0,
    })
}

fn no_error(header: &Option<ResponseHeader>) {
    assert!(
        header.as_ref().is_some_and(|h| h.error.is_none()),
        "{header:?}"
    );
}

/// Registers stores 1 (bootstrap), 4, 5 and a tombstone 6, and a store heartbeat of store 4;
/// splits the first region at "m" and reports leaders: `[""; "m")` led on store 1, `["m"; +inf)`
/// (region 2) led on store 4. Returns the id of the new left region.
async fn populate(grpc: &mut PdClient<Channel>, cluster_id: u64) -> u64 {
    let resp = grpc
        .bootstrap(BootstrapRequest {
            header: header(cluster_id),
            store: Some(store(1)),
            region: Some(region(2).peers([peer(3, 1)]).build()),
        })
        .await
        .unwrap()
        .into_inner();
    no_error(&resp.header);
    let mut tomb = store(6);
    tomb.set_state(StoreState::Tombstone);
    for s in [store(4), store(5), tomb] {
        let resp = grpc
            .put_store(PutStoreRequest {
                header: header(cluster_id),
                store: Some(s),
            })
            .await
            .unwrap()
            .into_inner();
        no_error(&resp.header);
    }
    let resp = grpc
        .store_heartbeat(StoreHeartbeatRequest {
            header: header(cluster_id),
            stats: Some(StoreStats {
                store_id: 4,
                capacity: 2 << 30,
                available: 3 << 29,
                used_size: 1000,
                start_time: 1_700_000_000,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    no_error(&resp.header);

    let peers = [peer(3, 1), peer(10, 4), peer(11, 5)];
    let ask = grpc
        .ask_batch_split(AskBatchSplitRequest {
            header: header(cluster_id),
            region: Some(region(2).peers([peer(3, 1)]).build()),
            split_count: 1,
        })
        .await
        .unwrap()
        .into_inner();
    no_error(&ask.header);
    let left_id = ask.ids[0].new_region_id;
    let left_peers: Vec<_> = ask.ids[0]
        .new_peer_ids
        .iter()
        .map(|&id| peer(id, 1))
        .collect();
    let left = region(left_id)
        .range("", "m")
        .version(2)
        .peers(left_peers.clone())
        .build();
    let right = region(2)
        .range("m", "")
        .version(2)
        .conf_ver(3)
        .peers(peers)
        .build();
    let resp = grpc
        .report_batch_split(ReportBatchSplitRequest {
            header: header(cluster_id),
            regions: vec![left.clone(), right.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    no_error(&resp.header);

    let (tx, rx) = mpsc::channel(4);
    let _responses = grpc
        .region_heartbeat(ReceiverStream::new(rx))
        .await
        .unwrap();
    for (region, leader) in [(right, peers[1]), (left, left_peers[0])] {
        tx.send(RegionHeartbeatRequest {
            header: header(cluster_id),
            region: Some(region),
            leader: Some(leader),
            term: 2,
            approximate_size: 3 << 20,
            approximate_keys: 7,
            bytes_written: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    wait_until_async("both regions' leaders", DEADLINE, || {
        let mut grpc = grpc.clone();
        async move {
            let get = |key: &'static [u8]| GetRegionRequest {
                header: header(0),
                region_key: Bytes::from_static(key),
                need_buckets: false,
            };
            let a = grpc.get_region(get(b"a")).await.unwrap().into_inner();
            let z = grpc.get_region(get(b"z")).await.unwrap().into_inner();
            a.leader.is_some() && z.leader.is_some()
        }
    })
    .await;
    left_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_answers_next_to_grpc() {
    let group = PdGroup::start(1).await;
    let pd = group.members[0].handle();
    let base = pd.client_url().to_owned();
    let cluster_id = pd.cluster_id();
    let member_id = pd.member_id();
    let http = http_client();

    // Before bootstrap: the members and the cluster are known, regions are not.
    let (status, body) = get(&http, &base, "/ping").await;
    assert_eq!((status, body), (200, Value::Null));
    let (status, body) = get(&http, &base, "/cluster").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"id": cluster_id, "max_peer_count": 3}));
    get_error(&http, &base, "/regions", 500, "not bootstrapped").await;

    let mut grpc = PdClient::connect(base.clone()).await.unwrap();
    let left_id = populate(&mut grpc, cluster_id).await;

    // Members, leader, health.
    let (status, members) = get(&http, &base, "/members").await;
    assert_eq!(status, 200);
    let me = json!({
        "name": "pd1",
        "member_id": member_id,
        "peer_urls": [base],
        "client_urls": [base],
    });
    assert_eq!(
        members,
        json!({
            "header": {"cluster_id": cluster_id},
            "members": [me],
            "leader": me,
            "etcd_leader": me,
        })
    );
    assert_eq!(get(&http, &base, "/leader").await, (200, me.clone()));
    let (status, health) = get(&http, &base, "/health").await;
    assert_eq!(status, 200);
    assert_eq!(
        health,
        json!([{"name": "pd1", "member_id": member_id, "client_urls": [base], "health": true}])
    );

    // Stores: Up and Offline ones by default, with what their heartbeats and regions say.
    let (status, stores) = get(&http, &base, "/stores").await;
    assert_eq!(status, 200, "{stores}");
    assert_eq!(stores["count"], 3);
    let ids: Vec<&Value> = stores["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["store"]["id"])
        .collect();
    assert_eq!(ids, [1, 4, 5]);
    let (status, s4) = get(&http, &base, "/store/4").await;
    assert_eq!(status, 200, "{s4}");
    assert_eq!(s4["store"]["address"], store(4).address);
    assert_eq!(s4["store"]["state_name"], "Up");
    assert!(
        s4["store"].get("state").is_none(),
        "Up (0) is omitted: {s4}"
    );
    assert!(s4["store"]["last_heartbeat"].as_i64().unwrap() > 0);
    let st = &s4["status"];
    assert_eq!(st["capacity"], "2GiB");
    assert_eq!(st["available"], "1.5GiB");
    assert_eq!(st["used_size"], "1000B");
    assert_eq!(st["region_count"], 1);
    assert_eq!(st["leader_count"], 1);
    assert_eq!(st["region_size"], 3);
    assert_eq!(st["start_ts"], "2023-11-14T22:13:20Z");
    assert!(st["last_heartbeat_ts"].as_str().unwrap().ends_with('Z'));
    assert!(st["uptime"].as_str().unwrap().ends_with('s'));
    assert_eq!(stores["stores"][1], s4);
    let (_, s1) = get(&http, &base, "/store/1").await;
    assert_eq!(
        (&s1["status"]["region_count"], &s1["status"]["leader_count"]),
        (&json!(2), &json!(1))
    );
    assert!(s1["status"].get("last_heartbeat_ts").is_none(), "{s1}");
    let (status, tombs) = get(&http, &base, "/stores?state=2").await;
    assert_eq!(status, 200);
    assert_eq!(tombs["count"], 1);
    assert_eq!(tombs["stores"][0]["store"]["id"], 6);
    assert_eq!(tombs["stores"][0]["store"]["state"], 2);
    assert_eq!(tombs["stores"][0]["store"]["state_name"], "Tombstone");
    get_error(&http, &base, "/stores?state=7", 400, "unknown StoreState").await;
    get_error(&http, &base, "/store/99", 404, "store 99 not found").await;
    get_error(&http, &base, "/store/abc", 400, "invalid store id").await;

    // Regions, in key order, keys in upper-case hex.
    let right = json!({
        "id": 2,
        "start_key": "6D",
        "end_key": "",
        "epoch": {"conf_ver": 3, "version": 2},
        "peers": [
            {"role_name": "Voter", "id": 3, "store_id": 1},
            {"role_name": "Voter", "id": 10, "store_id": 4},
            {"role_name": "Voter", "id": 11, "store_id": 5},
        ],
        "leader": {"role_name": "Voter", "id": 10, "store_id": 4},
        "cpu_usage": 0,
        "written_bytes": 100,
        "read_bytes": 0,
        "written_keys": 0,
        "read_keys": 0,
        "approximate_size": 3,
        "approximate_keys": 7,
        "approximate_kv_size": 0,
        "approximate_columnar_kv_size": 0,
    });
    let (status, regions) = get(&http, &base, "/regions").await;
    assert_eq!(status, 200);
    assert_eq!(regions["count"], 2);
    let left = &regions["regions"][0];
    assert_eq!(left["id"], left_id);
    assert_eq!(
        (&left["start_key"], &left["end_key"]),
        (&json!(""), &json!("6D"))
    );
    assert_eq!(left["epoch"], json!({"conf_ver": 1, "version": 2}));
    assert_eq!(left["leader"]["store_id"], 1);
    assert_eq!(regions["regions"][1], right);
    assert_eq!(
        get(&http, &base, "/regions/count").await,
        (200, json!({"count": 2, "regions": null}))
    );
    assert_eq!(
        get(&http, &base, "/region/id/2").await,
        (200, right.clone())
    );
    get_error(&http, &base, "/region/id/999", 404, "region 999 not found").await;
    get_error(&http, &base, "/region/id/0", 400, "invalid region id").await;
    get_error(&http, &base, "/region/id/two", 400, "invalid region id").await;

    // By key: query-escaped as PD's Go client sends it, or hex.
    assert_eq!(
        get(&http, &base, "/region/key/m").await,
        (200, right.clone())
    );
    assert_eq!(
        get(&http, &base, "/region/key/zz%2Fz+z").await,
        (200, right.clone())
    );
    let (_, by_key) = get(&http, &base, "/region/key/a").await;
    assert_eq!(by_key["id"], left_id);
    let (_, by_key) = get(&http, &base, "/region/key/%00").await;
    assert_eq!(by_key["id"], left_id);
    assert_eq!(
        get(&http, &base, "/region/key/6d00?format=hex").await,
        (200, right.clone())
    );
    get_error(
        &http,
        &base,
        "/region/key/6x?format=hex",
        400,
        "invalid hex key",
    )
    .await;
    get_error(&http, &base, "/region/key/%zz", 400, "invalid URL escape").await;

    // Cluster meta and the GC safe point.
    let (_, meta) = get(&http, &base, "/config/cluster").await;
    assert_eq!(meta, json!({"id": cluster_id, "max_peer_count": 3}));
    let resp = grpc
        .update_gc_safe_point(UpdateGcSafePointRequest {
            header: header(cluster_id),
            safe_point: 4242,
        })
        .await
        .unwrap()
        .into_inner();
    no_error(&resp.header);
    assert_eq!(
        get(&http, &base, "/gc/safepoint").await,
        (
            200,
            json!({
                "service_gc_safe_points": [
                    {"service_id": "gc_worker", "expired_at": i64::MAX, "safe_point": 4242}
                ],
                "min_service_gc_safe_point": 4242,
                "gc_safe_point": 4242,
            })
        )
    );

    // Unknown paths: 404 for HTTP; a gRPC call still works on the same port afterwards.
    get_error(&http, &base, "/no/such/path", 404, "404 page not found").await;
    let outside = http
        .get(format!("{base}/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status().as_u16(), 404);
    // Metrics live at the root, next to the probes.
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("rangekv_pd_region_heartbeats_total"),
        "{text}"
    );
    assert!(text.contains("rangekv_pd_is_leader 1"), "{text}");
    let resp = grpc
        .get_region_by_id(GetRegionByIdRequest {
            header: header(cluster_id),
            region_id: 2,
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.region.unwrap().id, 2);
    // A gRPC call of a service PD does not have is answered as gRPC answers it.
    let channel = Channel::from_shared(base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let status = raw
        .unary::<GetMembersRequest, GetMembersResponse, _>(
            tonic::Request::new(GetMembersRequest::default()),
            PathAndQuery::from_static("/nosuch.Service/Method"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);

    // Shutdown is graceful with an idle keep-alive HTTP/1.1 connection still open.
    let (status, _) = get(&http, &base, "/ping").await;
    assert_eq!(status, 200);
    let started = Instant::now();
    group.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(http
        .get(format!("{base}/pd/api/v1/ping"))
        .send()
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_answer_members_and_refuse_state_naming_the_leader() {
    let mut group = PdGroup::start(3).await;
    let leader = group.wait_leader().await;
    let follower = (leader + 1) % 3;
    let leader_name = group.members[leader].name.clone();
    let leader_url = group.members[leader].url();
    let base = group.members[follower].url();
    let http = http_client();
    let leader_id = group.members[leader].handle().member_id();
    wait_until_async("the follower to know the leader", DEADLINE, || {
        let known = group.members[follower].handle().leadership().leader_id == leader_id;
        async move { known }
    })
    .await;

    let (status, members) = get(&http, &base, "/members").await;
    assert_eq!(status, 200);
    assert_eq!(members["members"].as_array().unwrap().len(), 3);
    assert_eq!(members["leader"]["name"], leader_name.as_str());
    assert_eq!(members["leader"]["client_urls"], json!([leader_url]));
    let (_, health) = get(&http, &base, "/health").await;
    let healthy: Vec<&Value> = health
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["health"])
        .collect();
    assert_eq!(healthy, [true, true, true], "{health}");

    for path in [
        "/stores",
        "/regions",
        "/region/id/2",
        "/cluster",
        "/gc/safepoint",
    ] {
        get_error(&http, &base, path, 503, "not leader").await;
        get_error(&http, &base, path, 503, &leader_url).await;
    }
    let (status, _) = get(&http, &leader_url, "/cluster").await;
    assert_eq!(status, 200);

    // A member that is down is unhealthy.
    let other = (leader + 2) % 3;
    group.stop(other).await;
    let (_, health) = get(&http, &leader_url, "/health").await;
    let healthy: Vec<bool> = health
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["health"].as_bool().unwrap())
        .collect();
    let want: Vec<bool> = (0..3).map(|i| i != other).collect();
    assert_eq!(healthy, want, "{health}");
    group.shutdown().await;
}

/// GETs `path` at the root of `base` (not under the API prefix); the status and the body.
async fn probe(http: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    let resp = http
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body:?}"));
    (status, json)
}

/// `/ready` is 200 on every member that knows the leader and 503 on one that cannot (its
/// peers are gone); `/health` is 200 as long as the process answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_tell_liveness_and_whether_a_leader_is_known() {
    let mut group = PdGroup::start(3).await;
    let leader = group.wait_leader().await;
    let leader_id = group.members[leader].handle().member_id();
    let http = http_client();
    for i in 0..3 {
        wait_until_async("every member to know the leader", DEADLINE, || {
            let known = group.members[i].handle().leadership().leader_id == leader_id;
            async move { known }
        })
        .await;
        let base = group.members[i].url();
        let (status, body) = probe(&http, &base, "/ready").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["leader_id"], leader_id, "{body}");
        assert_eq!(body["is_leader"], i == leader, "{body}");
        let (status, body) = probe(&http, &base, "/health").await;
        assert_eq!((status, &body["status"]), (200, &json!("alive")));
    }

    // Alone, the last member cannot know a leader once its term moves on: not ready, alive.
    let last = (leader + 1) % 3;
    group.stop(leader).await;
    group.stop((leader + 2) % 3).await;
    let base = group.members[last].url();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = probe(&http, &base, "/ready").await;
        if status == 503 {
            assert_eq!(body["ready"], false, "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "still ready alone: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = probe(&http, &base, "/health").await;
    assert_eq!(status, 200);
    group.shutdown().await;
}
