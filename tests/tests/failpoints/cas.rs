//! Compare-and-swap is decided above Raft, under the key's latch: a write to the key that is
//! committed but not yet applied must be seen by a compare-and-swap that arrives meanwhile.

use std::time::Duration;

use bytes::Bytes;
use proto::kvrpcpb::{RawCasRequest, RawPutRequest};
use tests::{wait_until, Cluster};

const TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn cas_waits_for_a_committed_but_unapplied_write_to_its_key() {
    let scenario = fail::FailScenario::setup();
    let cluster = Cluster::new(3, &[]);
    let leader = cluster.wait_leader(1, TIMEOUT);
    cluster.must_put(b"k", b"v1");
    let region = cluster.region_for_key(b"k");
    let ctx = cluster.context(&region, leader);
    let storage = cluster.storage(leader).clone();
    let commit = || {
        cluster
            .peer_status(leader, 1)
            .expect("leader status")
            .commit_index
    };

    // Hold every apply worker before it writes: entries commit but do not apply.
    fail::cfg("apply_before_write", "pause").expect("fail point");
    let before = commit();
    let put = cluster.spawn({
        let (storage, ctx) = (storage.clone(), ctx.clone());
        async move {
            storage
                .raw_put(RawPutRequest {
                    context: Some(ctx),
                    key: Bytes::from_static(b"k"),
                    value: Bytes::from_static(b"v2"),
                    ..Default::default()
                })
                .await
        }
    });
    wait_until("the put is committed", TIMEOUT, || commit() > before);
    // The key still reads v1 on the leader's engine: the put is not applied.
    assert_eq!(cluster.local_get(leader, b"k").as_deref(), Some(&b"v1"[..]));
    let cas = cluster.spawn({
        let (storage, ctx) = (storage.clone(), ctx.clone());
        async move {
            storage
                .raw_compare_and_swap(RawCasRequest {
                    context: Some(ctx),
                    key: Bytes::from_static(b"k"),
                    value: Bytes::from_static(b"v3"),
                    previous_value: Bytes::from_static(b"v1"),
                    ..Default::default()
                })
                .await
        }
    });
    // Either the compare-and-swap waits for the put's latch (right), or it decided on the stale
    // v1 and proposed its own write (wrong; the assertions below catch it).
    wait_until("the compare-and-swap waits or proposes", TIMEOUT, || {
        storage.latches().waiting() == 1 || commit() > before + 1
    });
    fail::remove("apply_before_write");

    let put = cluster.block_on(put).expect("put task");
    assert!(put.is_ok(), "put: {:?}", put.err());
    let cas = cluster
        .block_on(cas)
        .expect("cas task")
        .unwrap_or_else(|e| panic!("cas failed: {e:?}"));
    assert!(!cas.succeed, "the swap must see v2, not the stale v1");
    assert_eq!(&cas.previous_value[..], b"v2");
    assert_eq!(cluster.must_get(b"k").as_deref(), Some(&b"v2"[..]));
    cluster.wait_replicated(b"k", Some(b"v2"), TIMEOUT);
    cluster.must_be_consistent();
    drop(cluster);
    scenario.teardown();
}
