//! Wire compatibility with TLS: tikv-client 0.4.0 configured with `with_security` (its own
//! TLS stack: tonic 0.10 and rustls 0.21) against a `rangekv playground --tls` cluster, whose
//! every node requires mutual TLS with the development CA the playground made.
//!
//! Needs `RANGEKV_BIN`: the path of a built `rangekv` binary. See ../README.md.

mod common;

use std::time::Duration;

use common::*;
use tikv_client::RawClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tikv_client_with_security_works_against_a_tls_cluster() {
    let mut pg = Playground::start_with(&["--tls"]);
    pg.wait_ready(READY_DEADLINE);
    let certs = pg.certs_dir();
    let secure = client_config().with_security(
        certs.join("ca.pem"),
        certs.join("node.pem"),
        certs.join("node-key.pem"),
    );

    let raw = connect_raw_with(&pg.pd_addr, CONNECT_DEADLINE, secure.clone()).await;
    raw.put(k("compat/tls/a"), k("secret")).await.expect("put");
    assert_eq!(
        raw.get(k("compat/tls/a")).await.expect("get"),
        Some(k("secret"))
    );

    let txn = connect_txn_with(&pg.pd_addr, CONNECT_DEADLINE, secure).await;
    let mut t = txn.begin_optimistic().await.expect("begin");
    t.put(k("compat/tls/t"), k("committed")).await.expect("txn put");
    t.commit().await.expect("commit");
    let ts = txn.current_timestamp().await.expect("timestamp");
    let read = txn
        .snapshot(ts, tikv_client::TransactionOptions::new_optimistic())
        .get(k("compat/tls/t"))
        .await
        .expect("snapshot get");
    assert_eq!(read, Some(k("committed")));

    // Without certificates the client gets nowhere.
    let plain = tokio::time::timeout(Duration::from_secs(30), async {
        let c = RawClient::new_with_config(vec![pg.pd_addr.clone()], client_config()).await?;
        c.get(k("compat/tls/a")).await
    })
    .await;
    assert!(
        !matches!(plain, Ok(Ok(_))),
        "a plaintext tikv-client read from a TLS cluster"
    );
    pg.stop();
}
