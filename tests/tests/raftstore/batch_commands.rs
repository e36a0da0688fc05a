//! `BatchCommands` over real gRPC: commands of many kinds in one stream are each answered once,
//! under their own id, as they complete (a slow one does not hold back the others), with the
//! same results and region errors as their unary RPCs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use proto::kvrpcpb::{RawGetRequest, RawPutRequest};
use proto::tikvpb::batch_commands_request::request::Cmd as Req;
use proto::tikvpb::batch_commands_request::Request;
use proto::tikvpb::batch_commands_response::response::Cmd as Resp;
use proto::tikvpb::tikv_client::TikvClient;
use proto::tikvpb::{BatchCommandsEmptyRequest, BatchCommandsRequest};
use tests::served::ServedCluster;
use tests::Cluster;

const TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn commands_in_one_stream_are_answered_by_id_as_they_complete() {
    let served = ServedCluster::start(Cluster::new(3, &[])).expect("served");
    let cluster = &served.cluster;
    let leader = cluster.wait_leader(1, TIMEOUT);
    let follower = *cluster.store_ids().iter().find(|s| **s != leader).unwrap();
    let region = cluster.regions[0].clone();
    let put = |k: &str, v: &str| {
        Req::RawPut(RawPutRequest {
            context: Some(cluster.context(&region, leader)),
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
            ..Default::default()
        })
    };
    let get = |k: &str, store: u64| {
        Req::RawGet(RawGetRequest {
            context: Some(cluster.context(&region, store)),
            key: Bytes::copy_from_slice(k.as_bytes()),
            ..Default::default()
        })
    };
    let frame = |cmds: Vec<(u64, Option<Req>)>| BatchCommandsRequest {
        request_ids: cmds.iter().map(|(id, _)| *id).collect(),
        requests: cmds.into_iter().map(|(_, cmd)| Request { cmd }).collect(),
    };
    let addr = served.proxy(leader).addr();

    cluster.block_on(async {
        let mut client = TikvClient::connect(format!("http://{addr}")).await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut responses = client
            .batch_commands(tokio_stream_of(rx))
            .await
            .expect("stream opens")
            .into_inner();
        let started = Instant::now();
        // A slow command first, then writes, a read of a missing key, a read naming the peer
        // on another store (a region error), and a command this store does not declare.
        tx.send(frame(vec![
            (
                1,
                Some(Req::Empty(BatchCommandsEmptyRequest {
                    test_id: 77,
                    delay_time: 1_000,
                })),
            ),
            (2, Some(put("bc/a", "1"))),
            (3, Some(put("bc/b", "2"))),
            (4, Some(get("bc/missing", leader))),
            (5, Some(get("bc/a", follower))),
            (6, None),
        ]))
        .unwrap();
        let mut answered = HashMap::new();
        let mut order = Vec::new();
        while answered.len() < 6 {
            let batch = tokio::time::timeout(TIMEOUT, responses.next())
                .await
                .expect("answers in time")
                .expect("stream open")
                .expect("no stream error");
            assert_eq!(batch.request_ids.len(), batch.responses.len());
            for (id, resp) in batch.request_ids.into_iter().zip(batch.responses) {
                assert!(
                    answered.insert(id, (resp.cmd, started.elapsed())).is_none(),
                    "request {id} answered twice"
                );
                order.push(id);
            }
        }
        assert_eq!(
            order.last(),
            Some(&1),
            "the slow command does not hold back the others"
        );
        match &answered[&1] {
            (Some(Resp::Empty(e)), took) => {
                assert_eq!(e.test_id, 77);
                assert!(*took >= Duration::from_secs(1));
            }
            other => panic!("request 1: {other:?}"),
        }
        for id in [2, 3] {
            match &answered[&id].0 {
                Some(Resp::RawPut(r)) => {
                    assert!(r.region_error.is_none() && r.error.is_empty(), "{r:?}")
                }
                other => panic!("request {id}: {other:?}"),
            }
        }
        match &answered[&4].0 {
            Some(Resp::RawGet(r)) => assert!(r.not_found && r.region_error.is_none(), "{r:?}"),
            other => panic!("request 4: {other:?}"),
        }
        match &answered[&5].0 {
            Some(Resp::RawGet(r)) => assert!(
                r.region_error.is_some(),
                "a request naming another store's peer: {r:?}"
            ),
            other => panic!("request 5: {other:?}"),
        }
        assert!(
            answered[&6].0.is_none(),
            "an undeclared command gets an empty response"
        );

        // The same stream goes on: the writes are there.
        tx.send(frame(vec![(8, Some(get("bc/a", leader)))]))
            .unwrap();
        let batch = responses.next().await.unwrap().unwrap();
        assert_eq!(batch.request_ids, vec![8]);
        match &batch.responses[0].cmd {
            Some(Resp::RawGet(r)) => assert_eq!(&r.value[..], b"1"),
            other => panic!("request 8: {other:?}"),
        }
        // The client closes its side: the stream ends.
        drop(tx);
        assert!(tokio::time::timeout(TIMEOUT, responses.next())
            .await
            .expect("the stream ends")
            .is_none());
    });
}

/// The requests a test sends, as the stream tonic takes.
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<BatchCommandsRequest>,
) -> impl futures::Stream<Item = BatchCommandsRequest> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
