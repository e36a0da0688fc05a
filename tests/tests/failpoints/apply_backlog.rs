//! A store whose apply falls behind commit refuses new writes (ServerIsBusy) instead of letting
//! committed, unapplied entries pile up without bound, and serves again once apply catches up.

use std::time::Duration;

use bytes::Bytes;
use proto::kvrpcpb::RawPutRequest;
use tests::{wait_until, Cluster};

const TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn writes_are_refused_while_the_apply_backlog_passes_its_limit() {
    let scenario = fail::FailScenario::setup();
    let limits = server::Limits {
        max_apply_backlog_bytes: 8 * 1024,
        ..Default::default()
    };
    let cluster = Cluster::with_limits(3, &[], tests::cluster::test_config(), limits);
    let leader = cluster.wait_leader(1, TIMEOUT);
    cluster.must_put(b"before", b"ok");
    let region = cluster.region_for_key(b"k");
    let ctx = cluster.context(&region, leader);
    let storage = cluster.storage(leader).clone();
    let backlog = || storage.router().apply_backlog().bytes();
    assert_eq!(backlog(), 0);

    // Hold every apply worker: writes commit but do not apply, and the backlog grows.
    fail::cfg("apply_before_write", "pause").expect("fail point");
    let value = Bytes::from(vec![b'x'; 1024]);
    let mut waiting = Vec::new();
    for i in 0..12 {
        let (storage, ctx, value) = (storage.clone(), ctx.clone(), value.clone());
        waiting.push(cluster.spawn(async move {
            storage
                .raw_put(RawPutRequest {
                    context: Some(ctx),
                    key: Bytes::from(format!("k{i:02}")),
                    value,
                    ..Default::default()
                })
                .await
        }));
        // One at a time: each is committed (so in the backlog) before the next is sent, until
        // the limit is passed. Each write holds more than 1 KiB, so `i + 1` KiB means write
        // `i` itself is counted (`i` KiB would already hold with the writes before it, and the
        // next write could then be sent over the limit and refused).
        wait_until("the write is committed or refused", TIMEOUT, || {
            backlog() >= (i + 1) * 1024 || waiting.last().is_some_and(|h| h.is_finished())
        });
        if backlog() > 8 * 1024 {
            break;
        }
    }
    assert!(backlog() > 8 * 1024, "backlog {}", backlog());
    match cluster.put_on(leader, b"refused", b"v") {
        Err(server::raw::Failure::Region(e)) => {
            assert!(e.server_is_busy.is_some(), "{e:?}")
        }
        other => panic!("expected ServerIsBusy over the apply backlog, got {other:?}"),
    }

    // Apply resumes: every held write is applied, the backlog drains, writes go through again.
    fail::remove("apply_before_write");
    for h in waiting {
        let put = cluster.block_on(h).expect("put task");
        assert!(put.is_ok(), "put: {:?}", put.err());
    }
    wait_until("the backlog drains", TIMEOUT, || backlog() == 0);
    cluster.must_put(b"after", b"ok");
    assert_eq!(cluster.must_get(b"refused"), None);
    cluster.wait_replicated(b"after", Some(b"ok"), TIMEOUT);
    cluster.must_be_consistent();
    drop(cluster);
    scenario.teardown();
}
