//! A cluster with mutual TLS on every connection: 3 PD members (PD-to-PD Raft over TLS) and 3
//! stores (replication over TLS, a majority needed for every write), used through TLS clients,
//! `ctl` and the status servers; plaintext clients and certificates of another CA refused.

use std::process::Command;
use std::time::Duration;

use crate::support::{self, TestCluster};

fn tls_cluster() -> TestCluster {
    TestCluster::start_customized(3, 3, "", |cfg| {
        let dir = cfg.data_dir.join("certs");
        cfg.with_tls(&dir).expect("certificates");
    })
}

#[test]
fn a_tls_cluster_serves_tls_clients_and_refuses_others() {
    let t = tls_cluster();
    let endpoints = t.cluster.pd_endpoints();
    let issued = t.cluster.config().tls.clone().expect("tls layout");

    // Writes (replicated store to store over TLS) and reads through a TLS client.
    let c = t.client();
    t.rt.block_on(async {
        for i in 0..50u32 {
            c.put(format!("tls/{i:03}").into_bytes(), i.to_be_bytes().to_vec())
                .await
                .expect("put");
        }
        for i in 0..50u32 {
            let v = c
                .get(format!("tls/{i:03}").into_bytes())
                .await
                .expect("get");
            assert_eq!(v.as_deref(), Some(&i.to_be_bytes()[..]));
        }
    });
    // The replicas agree, checked through the stores' status servers over TLS.
    let pd = t.pd();
    let outcome =
        t.rt.block_on(rangekv::region_check::check_region(&pd, b"tls/000"))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", t.logs()));
    assert!(outcome.consistent(), "{outcome:?}");

    // A plaintext client reaches neither PD nor a store.
    let plaintext = security::SecurityManager::plaintext();
    let refused = t.rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(30),
            support::pd_client(&endpoints, &plaintext),
        )
        .await
    });
    assert!(
        matches!(refused, Ok(Err(_))),
        "plaintext PD client connected"
    );
    let store = t.cluster.store_addrs()[0].clone();
    let direct = t.rt.block_on(async {
        let mut kv =
            proto::tikvpb::tikv_client::TikvClient::connect(format!("http://{store}")).await?;
        kv.raw_get(proto::kvrpcpb::RawGetRequest::default())
            .await
            .map_err(anyhow::Error::from)?;
        anyhow::Ok(())
    });
    assert!(direct.is_err(), "a plaintext call to a store went through");

    // A certificate signed by another CA is refused (the client trusts the cluster's CA).
    let other = tempfile::tempdir().unwrap();
    let stranger = security::certs::issue(
        other.path(),
        "client",
        "rangekv",
        &security::certs::default_hosts(),
    )
    .unwrap();
    let mut cfg = stranger.security_config(&[]);
    cfg.ca_path = issued.ca.clone();
    let stranger = security::SecurityManager::new(cfg).unwrap();
    let refused = t.rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(30),
            support::pd_client(&endpoints, &stranger),
        )
        .await
    });
    assert!(
        matches!(refused, Ok(Err(_))),
        "a stranger's certificate was accepted"
    );

    // `ctl` and `probe` with the TLS flags work; without them they fail.
    let tls_flags = t.cluster.config().tls_args();
    let ctl = |tls: bool, args: &[&str]| {
        let mut cmd = Command::new(support::bin());
        cmd.args(["ctl", "--pd", &endpoints.join(",")]);
        if tls {
            cmd.args(&tls_flags);
        }
        cmd.args(args).output().expect("run ctl")
    };
    let listed = ctl(true, &["--json", "store", "list"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let got = ctl(true, &["get", "tls/007"]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(!ctl(false, &["store", "list"]).status.success());

    let status = t.cluster.status_addr(0).expect("status server");
    let probe = |url: String, tls: bool| {
        let mut cmd = Command::new(support::bin());
        cmd.args(["probe", &url]);
        if tls {
            cmd.args(&tls_flags);
        }
        cmd.output().expect("run probe").status.success()
    };
    assert!(probe(format!("https://{status}/health"), true));
    assert!(!probe(format!("http://{status}/health"), false));
    assert!(!probe(format!("https://{status}/health"), false));
}
