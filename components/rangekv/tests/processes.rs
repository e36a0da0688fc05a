//! Multi-process tests: real `rangekv pd` and `rangekv server` processes on loopback, killed
//! and restarted like real nodes, driven through the client library.

use std::time::{Duration, Instant};

use anyhow::Result;

mod support;

use support::*;

#[test]
fn three_stores_serve_raw_put_get_scan_delete() {
    let t = TestCluster::start(3);
    let c = t.client();
    t.rt.block_on(async {
        for i in 0..100 {
            c.put(key(i), format!("v{i}").into_bytes()).await.unwrap();
        }
        assert_eq!(
            c.get(key(7)).await.unwrap().map(|v| v.to_vec()),
            Some(b"v7".to_vec())
        );
        assert_eq!(
            c.get(b"missing".to_vec())
                .await
                .unwrap()
                .map(|v| v.to_vec()),
            None
        );
        let all = c.scan(key(0), key(100), 1000).await.unwrap();
        assert_eq!(all.len(), 100);
        assert_eq!(all[0].0.to_vec(), key(0));
        let some = c.scan(key(10), key(20), 5).await.unwrap();
        assert_eq!(
            some.iter().map(|p| p.0.to_vec()).collect::<Vec<_>>(),
            (10..15).map(key).collect::<Vec<_>>()
        );
        c.delete(key(7)).await.unwrap();
        assert_eq!(c.get(key(7)).await.unwrap().map(|v| v.to_vec()), None);
        c.delete_range(key(50), key(60)).await.unwrap();
        assert_eq!(c.scan(key(0), key(100), 1000).await.unwrap().len(), 89);
        let (prev, swapped) = c
            .compare_and_swap(b"cas".to_vec(), None, b"a".to_vec())
            .await
            .unwrap();
        assert!(swapped && prev.is_none());
        let (prev, swapped) = c
            .compare_and_swap(b"cas".to_vec(), None, b"b".to_vec())
            .await
            .unwrap();
        assert!(!swapped && prev.as_deref() == Some(&b"a"[..]));
    });
}

/// A put that the test sends again itself while its outcome is undetermined (the client never
/// resends a write whose answer was lost: the first put after a kill -9 may have gone out on
/// the dead store's connection). Harmless where only this test writes the key and every
/// attempt writes the same value: what the test checks is that value, not how often it
/// was applied.
async fn put_resending(c: &client::RawClient, key: Vec<u8>, value: &[u8]) {
    for _ in 0..5 {
        match c.put(key.clone(), value.to_vec()).await {
            Ok(()) => return,
            Err(client::Error::Undetermined(why)) => eprintln!("put undetermined, again: {why}"),
            Err(e) => panic!("put {:?}: {e}", String::from_utf8_lossy(&key)),
        }
    }
    panic!(
        "put {:?} undetermined 5 times",
        String::from_utf8_lossy(&key)
    );
}

#[test]
fn kill_9_of_the_leader_store_keeps_serving_and_it_catches_up() {
    let mut t = TestCluster::start(3);
    let c = t.client();
    t.rt.block_on(async {
        for i in 0..50 {
            c.put(key(i), b"before".to_vec()).await.unwrap();
        }
    });
    let victim = t.leader_index(b"");
    t.cluster.kill_store(victim).unwrap();
    t.rt.block_on(async {
        for i in 50..100 {
            put_resending(&c, key(i), b"during").await;
        }
        for i in 0..50 {
            assert_eq!(
                c.get(key(i)).await.unwrap().map(|v| v.to_vec()),
                Some(b"before".to_vec())
            );
        }
    });
    t.cluster.start_store(victim).unwrap();
    t.wait_listening(30);
    // Give the restarted store the writes it missed, then make it indispensable: with another
    // store down, every read and write needs it.
    t.rt.block_on(put_resending(&c, b"after-restart".to_vec(), b"1"));
    let other = (0..3).find(|i| *i != victim).unwrap();
    t.cluster.kill_store(other).unwrap();
    t.rt.block_on(async {
        for i in 50..100 {
            assert_eq!(
                c.get(key(i)).await.unwrap().map(|v| v.to_vec()),
                Some(b"during".to_vec()),
                "key {i}"
            );
        }
        put_resending(&c, b"with-one-down".to_vec(), b"ok").await;
    });
}

#[test]
fn pd_restart_keeps_cluster_serving_and_timestamps_increasing() {
    let mut t = TestCluster::start(3);
    let c = t.client();
    let pd = t.pd();
    let ts1 = t.rt.block_on(pd.get_ts()).unwrap();
    t.rt.block_on(c.put(b"a".to_vec(), b"1".to_vec())).unwrap();
    t.cluster.kill_pd(0).unwrap();
    // Stores keep serving clients that know the regions while PD is down.
    t.rt.block_on(c.put(b"b".to_vec(), b"2".to_vec())).unwrap();
    t.cluster.start_pd(0).unwrap();
    t.wait_listening(30);
    let ts2 = t.rt.block_on(pd.get_ts()).unwrap();
    assert!(ts2 > ts1, "timestamp went backwards: {ts1} then {ts2}");
    t.rt.block_on(async {
        assert_eq!(
            c.get(b"a".to_vec()).await.unwrap().map(|v| v.to_vec()),
            Some(b"1".to_vec())
        );
        assert_eq!(
            c.get(b"b".to_vec()).await.unwrap().map(|v| v.to_vec()),
            Some(b"2".to_vec())
        );
        c.put(b"c".to_vec(), b"3".to_vec()).await.unwrap();
    });
    // A fresh client routes through the restarted PD.
    let fresh = t.client();
    assert_eq!(
        t.rt.block_on(fresh.get(b"c".to_vec()))
            .unwrap()
            .map(|v| v.to_vec()),
        Some(b"3".to_vec())
    );
}

#[test]
fn whole_cluster_restart_keeps_all_data() {
    let mut t = TestCluster::start(3);
    let c = t.client();
    t.rt.block_on(async {
        for i in 0..100 {
            c.put(key(i), format!("v{i}").into_bytes()).await.unwrap();
        }
    });
    for i in 0..3 {
        t.cluster.stop_store(i).unwrap();
    }
    t.cluster.stop_pd(0).unwrap();
    t.cluster.start_pd(0).unwrap();
    for i in 0..3 {
        t.cluster.start_store(i).unwrap();
    }
    t.wait_listening(60);
    let c = t.wait_ready(3);
    t.rt.block_on(async {
        for i in 0..100 {
            assert_eq!(
                c.get(key(i)).await.unwrap().map(|v| v.to_vec()),
                Some(format!("v{i}").into_bytes())
            );
        }
    });
}

#[test]
fn bad_input_over_grpc_gets_clear_errors_and_the_cluster_keeps_serving() {
    use proto::kvrpcpb::{Context, RawGetRequest, RawPutRequest};
    use proto::tikvpb::tikv_client::TikvClient;

    let t = TestCluster::start(3);
    let c = t.client();
    let pd = t.pd();
    let leader = t.leader_index(b"");
    let addr = format!("http://{}", t.cluster.stores[leader].addr);
    t.rt.block_on(async {
        let info = pd.get_region(b"").await.unwrap();
        let ctx = Context {
            region_id: info.region.id,
            region_epoch: info.region.region_epoch,
            peer: info.leader,
            ..Default::default()
        };
        let mut kv = TikvClient::connect(addr).await.unwrap();
        // Oversized key.
        let resp = kv
            .raw_put(RawPutRequest {
                context: Some(ctx.clone()),
                key: vec![b'k'; 100_000].into(),
                value: b"v".to_vec().into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(resp.error.contains("key is"), "{resp:?}");
        // Oversized value (over the 6 MiB limit, under the gRPC message limit).
        let resp = kv
            .raw_put(RawPutRequest {
                context: Some(ctx.clone()),
                key: b"big".to_vec().into(),
                value: vec![0u8; 7 * 1024 * 1024].into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(resp.error.contains("value is"), "{:?}", resp.error);
        // Empty key.
        let resp = kv
            .raw_put(RawPutRequest {
                context: Some(ctx.clone()),
                value: b"v".to_vec().into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(resp.error.contains("empty"), "{resp:?}");
        // Unknown region.
        let mut bad = ctx.clone();
        bad.region_id = 987_654;
        let resp = kv
            .raw_get(RawGetRequest {
                context: Some(bad),
                key: b"k".to_vec().into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(resp.region_error.unwrap().region_not_found.is_some());
        // Malformed: no region id at all.
        let resp = kv
            .raw_get(RawGetRequest {
                context: Some(Context::default()),
                key: b"k".to_vec().into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(resp.error.contains("region"), "{resp:?}");
        // Bytes that are not a protobuf message: a gRPC error status, not a crash.
        let channel = tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            t.cluster.stores[leader].addr
        ))
        .unwrap()
        .connect()
        .await
        .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/tikvpb.Tikv/RawGet");
        let status = grpc
            .unary(
                tonic::Request::new(vec![0xff, 0xff, 0xff, 0x07, 0x01]),
                path,
                RawBytesCodec,
            )
            .await
            .unwrap_err();
        assert_ne!(status.code(), tonic::Code::Ok);
        // The cluster still serves.
        c.put(b"still".to_vec(), b"ok".to_vec()).await.unwrap();
        assert_eq!(
            c.get(b"still".to_vec()).await.unwrap().map(|v| v.to_vec()),
            Some(b"ok".to_vec())
        );
    });
}

/// A codec that sends raw bytes, to put malformed messages on the wire.
struct RawBytesCodec;

impl tonic::codec::Codec for RawBytesCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytesCodec;
    type Decoder = RawBytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawBytesCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawBytesCodec
    }
}

impl tonic::codec::Encoder for RawBytesCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytesCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

#[test]
fn pd_leader_failover_keeps_stores_heartbeating_and_clients_routing() {
    let mut t = TestCluster::start_with_pds(3, 3);
    let c = t.client();
    let pd = t.pd();
    t.rt.block_on(async {
        for i in 0..20 {
            c.put(key(i), b"v".to_vec()).await.unwrap();
        }
    });
    let ts_before = t.rt.block_on(pd.get_ts()).unwrap();
    let members = t.rt.block_on(pd.get_members()).unwrap();
    let leader_name = members.leader.expect("a PD leader").name;
    let victim = t
        .cluster
        .pds
        .iter()
        .position(|n| n.name == leader_name)
        .expect("leader is one of ours");
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    t.cluster.kill_pd(victim).unwrap();

    // Clients keep routing: the old client and a fresh one, which must find the new PD leader.
    t.rt.block_on(async {
        for i in 20..40 {
            c.put(key(i), b"v".to_vec()).await.unwrap();
        }
        assert_eq!(
            c.get(key(3)).await.unwrap().map(|v| v.to_vec()),
            Some(b"v".to_vec())
        );
    });
    let fresh = t.client();
    assert_eq!(
        t.rt.block_on(fresh.scan(key(0), key(40), 100))
            .unwrap()
            .len(),
        40
    );
    // Timestamps from the new leader are above everything the old one handed out.
    let ts_after = t.rt.block_on(pd.get_ts()).unwrap();
    assert!(ts_after > ts_before, "{ts_before} then {ts_after}");

    // Stores heartbeat the new leader: it learns the region's leader (soft state, not
    // replicated) and every store's heartbeat time moves past the kill.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let region_leader =
            t.rt.block_on(pd.get_region(b""))
                .ok()
                .and_then(|r| r.leader);
        let stores = t.rt.block_on(pd.get_all_stores(true)).unwrap_or_default();
        let all_fresh =
            stores.len() == 3 && stores.iter().all(|s| s.last_heartbeat as u64 > killed_at);
        if region_leader.is_some() && all_fresh {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new PD leader did not hear from the stores: leader {region_leader:?}, stores {stores:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The killed member comes back as a follower and the cluster still serves.
    t.cluster.start_pd(victim).unwrap();
    t.wait_listening(30);
    t.rt.block_on(c.put(b"after".to_vec(), b"1".to_vec()))
        .unwrap();
}

#[test]
fn ctl_splits_a_region_and_clients_follow_the_new_layout() {
    let t = TestCluster::start(3);
    let c = t.client();
    t.rt.block_on(async {
        for i in 0..100 {
            c.put(key(i), format!("v{i}").into_bytes()).await.unwrap();
        }
    });
    let endpoints = t.cluster.pd_endpoints().join(",");
    let out = std::process::Command::new(bin())
        .args(["ctl", "--pd", &endpoints, "--json", "region", "split"])
        .arg(String::from_utf8(key(50)).unwrap())
        .output()
        .expect("run rangekv ctl");
    assert!(
        out.status.success(),
        "ctl region split failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let regions: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(regions.as_array().map(|a| a.len()), Some(2), "{regions}");
    // The client that cached the old region learns the new layout from the stores' errors.
    t.rt.block_on(async {
        for i in [0, 49, 50, 99] {
            assert_eq!(
                c.get(key(i)).await.unwrap().map(|v| v.to_vec()),
                Some(format!("v{i}").into_bytes())
            );
        }
        assert_eq!(c.scan(key(0), key(100), 1000).await.unwrap().len(), 100);
        c.put(key(75), b"after-split".to_vec()).await.unwrap();
    });
    // PD knows both regions.
    let pd = t.pd();
    let deadline = Instant::now() + Duration::from_secs(20);
    while t.rt.block_on(pd.scan_regions(b"", b"", 10)).unwrap().len() != 2 {
        assert!(Instant::now() < deadline, "PD does not know the split");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn regions_that_outgrow_the_size_limit_split_by_themselves() {
    let t = TestCluster::start_with_config(
        1,
        3,
        "[split]\nregion_max_size = 65536\nregion_split_size = 32768\ncheck_secs = 1\n",
    );
    let c = t.client();
    let value = vec![b'x'; 1000];
    t.rt.block_on(async {
        for chunk in (0..300u32).collect::<Vec<_>>().chunks(50) {
            c.batch_put(chunk.iter().map(|i| (key(*i), value.clone())))
                .await
                .unwrap();
        }
    });
    let pd = t.pd();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = t.rt.block_on(pd.scan_regions(b"", b"", 100)).unwrap().len();
        if n >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} regions after a minute\n{}",
            t.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing was lost or duplicated, and every region still takes writes.
    t.rt.block_on(async {
        let all = c.scan(key(0), key(300), 1000).await.unwrap();
        assert_eq!(all.len(), 300);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        for i in (0..300).step_by(37) {
            c.put(key(i), b"again".to_vec()).await.unwrap();
            assert_eq!(c.get(key(i)).await.unwrap().as_deref(), Some(&b"again"[..]));
        }
    });
}

#[test]
fn pd_spreads_region_leaders_over_the_stores() {
    // Small regions split by themselves; the new regions' leaders start on the store that led
    // the parent, and PD's balance-leader scheduler spreads them out.
    let t = TestCluster::start_with_config(
        1,
        3,
        "[split]\nregion_max_size = 32768\nregion_split_size = 16384\ncheck_secs = 1\n",
    );
    let c = t.client();
    let value = vec![b'x'; 1000];
    t.rt.block_on(async {
        for chunk in (0..200u32).collect::<Vec<_>>().chunks(50) {
            c.batch_put(chunk.iter().map(|i| (key(*i), value.clone())))
                .await
                .unwrap();
        }
    });
    let pd = t.pd();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let regions = t.rt.block_on(pd.scan_regions(b"", b"", 100)).unwrap();
        let mut per_store = std::collections::BTreeMap::new();
        for store in t.rt.block_on(pd.get_all_stores(true)).unwrap() {
            per_store.insert(store.id, 0usize);
        }
        for r in &regions {
            if let Some(l) = &r.leader {
                *per_store.entry(l.store_id).or_default() += 1;
            }
        }
        let led: usize = per_store.values().sum();
        let (min, max) = (
            per_store.values().min().copied().unwrap_or(0),
            per_store.values().max().copied().unwrap_or(0),
        );
        if regions.len() >= 6 && led == regions.len() && min >= 1 && max - min <= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaders not balanced: {} regions, leaders per store {per_store:?}\n{}",
            regions.len(),
            t.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // And the data is all still there.
    assert_eq!(
        t.rt.block_on(c.scan(key(0), key(200), 1000)).unwrap().len(),
        200
    );
}

/// `GET path` on a status server; the response body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to the status server");
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

#[test]
fn status_server_reports_metrics_and_regions() {
    let t = TestCluster::start(3);
    let c = t.client();
    t.rt.block_on(async {
        for i in 0..20 {
            c.put(key(i), b"v".to_vec()).await.unwrap();
            c.get(key(i)).await.unwrap();
        }
    });
    let leader = t.leader_index(b"");
    let addr = t
        .cluster
        .status_addr(leader)
        .expect("status servers are on");
    let metrics = http_get(&addr, "/metrics");
    for name in [
        "rangekv_grpc_requests_total{method=\"raw_put\",outcome=\"ok\"}",
        "rangekv_grpc_request_seconds_bucket",
        "rangekv_raftstore_log_write_seconds_bucket",
        "rangekv_raftstore_group_commit_peers_bucket",
        "rangekv_raftstore_proposals_total{kind=\"write\"}",
        "rangekv_raftstore_applied_entries_total",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    let status: serde_json::Value =
        serde_json::from_str(&http_get(&addr, "/status")).expect("json");
    assert_eq!(status["region_count"], 1, "{status}");
    assert_eq!(status["leader_count"], 1, "{status}");
    assert_eq!(status["regions"][0]["is_leader"], true, "{status}");
}

#[test]
fn a_rolling_restart_under_writes_keeps_every_acknowledged_write() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let mut t = TestCluster::start(3);
    let c = t.client();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (c, stop) = (c.clone(), stop.clone());
        t.rt.spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                if c.put(key(i), format!("w{i}").into_bytes()).await.is_ok() {
                    acked.push(i);
                }
                i += 1;
            }
            acked
        })
    };
    for store in 0..3 {
        t.cluster.stop_store(store).unwrap();
        t.cluster.start_store(store).unwrap();
        t.wait_listening(30);
    }
    stop.store(true, Ordering::SeqCst);
    let acked = t.rt.block_on(writer).unwrap();
    assert!(acked.len() > 20, "only {} writes went through", acked.len());
    t.rt.block_on(async {
        for i in acked {
            assert_eq!(
                c.get(key(i)).await.unwrap().map(|v| v.to_vec()),
                Some(format!("w{i}").into_bytes()),
                "acknowledged write {i} lost"
            );
        }
    });
}

#[test]
fn bench_runs_a_ycsb_workload_without_errors() {
    let t = TestCluster::start(3);
    let endpoints = t.cluster.pd_endpoints().join(",");
    let out = std::process::Command::new(bin())
        .args([
            "bench",
            "--pd",
            &endpoints,
            "--workload",
            "a",
            "--records",
            "300",
        ])
        .args(["--duration", "1", "--concurrency", "8"])
        .output()
        .expect("run rangekv bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("load: 300 records"), "{stdout}");
    for op in ["read", "update"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(op))
            .unwrap_or_else(|| panic!("no {op} line in:\n{stdout}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols[1].parse::<u64>().unwrap() > 0, "{line}");
        assert_eq!(cols[2], "0", "{op} errors: {line}");
    }
}
