//! Wire-compatibility test of API V2 keyspaces: tikv-client 0.4.0's `RawClient` and
//! `TransactionClient` configured with the default keyspace
//! (`Config::default().with_default_keyspace()`: `LoadKeyspace("DEFAULT")` at PD, keys
//! prefixed `r\0\0\0` / `x\0\0\0`, requests in API V2, regions located by encoded keys)
//! against a rangekv playground, next to a V1 client on the same cluster.
//!
//! Needs `RANGEKV_BIN`: the path of a built `rangekv` binary. See ../README.md.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tikv_client::{RawClient, TransactionClient, TransactionOptions};

/// How long a value written with a TTL of 1 s may take to read as expired.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(20);

async fn check_raw(v2: &RawClient, v1: &RawClient) {
    v2.put(k("ks/a"), k("1")).await.expect("put");
    assert_eq!(v2.get(k("ks/a")).await.expect("get"), Some(k("1")));
    v2.batch_put(vec![(k("ks/b"), k("2")), (k("ks/c"), k("3"))])
        .await
        .expect("batch put");
    // The same user key through V1 is another key: the keyspaces do not mix.
    v1.put(k("ks/a"), k("v1")).await.expect("V1 put");
    assert_eq!(v1.get(k("ks/a")).await.expect("V1 get"), Some(k("v1")));
    assert_eq!(v2.get(k("ks/a")).await.expect("get"), Some(k("1")));

    // A bounded scan, and a scan of the whole keyspace: both stay inside it (the V1 key and
    // the cluster's other data are not there) and answer user keys without the prefix.
    let expected = vec![
        (k("ks/a"), k("1")),
        (k("ks/b"), k("2")),
        (k("ks/c"), k("3")),
    ];
    assert_pairs(
        v2.scan(k("ks/")..k("ks0"), 10).await.expect("scan"),
        &expected,
        "V2 scan of [ks/, ks0)",
    );
    assert_pairs(
        v2.scan(.., 100).await.expect("scan of the whole keyspace"),
        &expected,
        "V2 scan of the whole keyspace",
    );
    assert_keys(
        v2.scan_keys(k("ks/b").., 10).await.expect("scan keys"),
        &[k("ks/b"), k("ks/c")],
        "V2 key scan from ks/b",
    );
    v2.delete(k("ks/c")).await.expect("delete");
    assert_eq!(v2.get(k("ks/c")).await.expect("get deleted"), None);
}

async fn check_ttl(v2: &RawClient) {
    v2.put_with_ttl(k("ks/ttl/long"), k("v"), 600)
        .await
        .expect("put with TTL");
    let ttl = v2
        .get_key_ttl_secs(k("ks/ttl/long"))
        .await
        .expect("get_key_ttl")
        .expect("the key exists");
    assert!((590..=600).contains(&ttl), "TTL {ttl}, expected about 600");
    v2.put(k("ks/ttl/none"), k("v")).await.expect("put");
    assert_eq!(
        v2.get_key_ttl_secs(k("ks/ttl/none"))
            .await
            .expect("get_key_ttl without TTL"),
        Some(0)
    );
    assert_eq!(
        v2.get_key_ttl_secs(k("ks/ttl/missing"))
            .await
            .expect("get_key_ttl of a missing key"),
        None
    );

    v2.put_with_ttl(k("ks/ttl/short"), k("v"), 1)
        .await
        .expect("put with a TTL of 1 s");
    let start = Instant::now();
    while v2.get(k("ks/ttl/short")).await.expect("get").is_some() {
        assert!(
            start.elapsed() < EXPIRY_DEADLINE,
            "a value with a TTL of 1 s still reads after {EXPIRY_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        v2.get_key_ttl_secs(k("ks/ttl/short"))
            .await
            .expect("get_key_ttl of an expired key"),
        None
    );
    assert_keys(
        v2.scan_keys(k("ks/ttl/")..k("ks/ttl0"), 10)
            .await
            .expect("scan of the TTL keys"),
        &[k("ks/ttl/long"), k("ks/ttl/none")],
        "the expired key is skipped by scans",
    );
}

async fn check_txn(txn: &TransactionClient, v2: &RawClient) {
    let mut t = txn.begin_optimistic().await.expect("begin");
    t.put(k("ks/t/1"), k("one")).await.expect("put");
    t.put(k("ks/t/2"), k("two")).await.expect("put");
    t.commit().await.expect("commit");

    let ts = txn.current_timestamp().await.expect("timestamp");
    let mut snap = txn.snapshot(ts, TransactionOptions::new_optimistic());
    assert_eq!(
        snap.get(k("ks/t/1")).await.expect("snapshot get"),
        Some(k("one"))
    );
    assert_pairs(
        snap.scan(k("ks/t/")..k("ks/t0"), 10)
            .await
            .expect("snapshot scan"),
        &[(k("ks/t/1"), k("one")), (k("ks/t/2"), k("two"))],
        "transactional scan",
    );
    // Transactional and raw data of a keyspace are apart.
    assert_pairs(
        snap.scan(.., 100)
            .await
            .expect("snapshot scan of the keyspace"),
        &[(k("ks/t/1"), k("one")), (k("ks/t/2"), k("two"))],
        "transactional scan of the whole keyspace",
    );
    assert_eq!(v2.get(k("ks/t/1")).await.expect("raw get"), None);

    // A second transaction reads the first one's writes and overwrites one.
    let mut t = txn.begin_optimistic().await.expect("begin");
    assert_eq!(t.get(k("ks/t/2")).await.expect("get"), Some(k("two")));
    t.put(k("ks/t/2"), k("deux")).await.expect("put");
    t.commit().await.expect("commit");
    let ts = txn.current_timestamp().await.expect("timestamp");
    let mut snap = txn.snapshot(ts, TransactionOptions::new_optimistic());
    assert_eq!(
        snap.get(k("ks/t/2")).await.expect("snapshot get"),
        Some(k("deux"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_keyspace_raw_txn_and_ttl() {
    let mut playground = Playground::start();
    playground.wait_ready(READY_DEADLINE);
    let pd = playground.pd_addr.clone();
    let v2 = connect_raw_with(&pd, CONNECT_DEADLINE, keyspace_config()).await;
    let v1 = connect_raw(&pd, CONNECT_DEADLINE).await;
    check_raw(&v2, &v1).await;
    check_ttl(&v2).await;
    let txn = connect_txn_with(&pd, CONNECT_DEADLINE, keyspace_config()).await;
    check_txn(&txn, &v2).await;
}
