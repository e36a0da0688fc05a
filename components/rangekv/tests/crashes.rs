//! Multi-process failure handling: a panic on any thread of a store ends the process, and the
//! region goes on serving from the other replicas.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

mod support;

use support::*;
use test_util::retry;

/// Retries `op` until it succeeds (the cluster may be electing a new leader).
fn eventually<T>(t: &TestCluster, what: &str, op: impl FnMut() -> anyhow::Result<T>) -> T {
    retry(Duration::from_secs(60), op).unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", t.logs()))
}

#[test]
fn a_panic_in_apply_aborts_the_store_and_the_region_keeps_serving() {
    let mut t = TestCluster::start(3);
    let c = t.client();
    t.rt.block_on(c.put(b"before".to_vec(), b"1".to_vec()))
        .expect("put before");
    // Store 0 comes back with a fail point that panics in its apply worker: the next entry it
    // applies kills that thread. A panic must take the whole process down.
    t.cluster.stop_store(0).expect("stop");
    t.cluster.stores[0].set_env("FAILPOINTS", "apply_before_write=panic");
    t.cluster.start_store(0).expect("start");
    let mut i = 0u32;
    let status = loop {
        i += 1;
        // Writes make every replica apply something.
        let _ = t.rt.block_on(c.put(key(i), b"x".to_vec()));
        if let Some(status) = t.cluster.stores[0].exit_status() {
            break status;
        }
        assert!(
            i < 600,
            "store 0 still runs after its apply worker panicked\n{}",
            t.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.signal(), Some(6), "not aborted: {status:?}");
    let log = std::fs::read_to_string(t.cluster.stores[0].log_path()).unwrap_or_default();
    assert!(
        log.contains("aborting the process"),
        "the panic was not logged:\n{log}"
    );
    // The two others serve reads and writes of the region.
    eventually(&t, "put with store 0 gone", || {
        Ok(t.rt.block_on(c.put(b"after".to_vec(), b"2".to_vec()))?)
    });
    let got = eventually(&t, "get with store 0 gone", || {
        Ok(t.rt.block_on(c.get(b"before".to_vec()))?)
    });
    assert_eq!(got.as_deref(), Some(&b"1"[..]));
}

#[test]
fn a_store_that_missed_bootstrap_gets_its_replica_and_the_splits_since() {
    // Store 3 registers with PD, then dies just before creating its replica of the first
    // region; the two others form the region, take writes and split it meanwhile.
    let mut t = TestCluster::start_customized(1, 3, "", |cfg| {
        cfg.store_env.push((
            2,
            "FAILPOINTS".into(),
            "join_before_create_peer=panic".into(),
        ));
    });
    let c = t.client();
    retry(Duration::from_secs(60), || {
        t.cluster.stores[2].exit_status().ok_or("still running")
    })
    .unwrap_or_else(|_| panic!("store 3 never reached the fail point\n{}", t.logs()));
    t.rt.block_on(async {
        for i in 0..40 {
            c.put(key(i), b"before".to_vec()).await.unwrap();
        }
    });
    let endpoints = t.cluster.pd_endpoints().join(",");
    let out = std::process::Command::new(bin())
        .args(["ctl", "--pd", &endpoints, "region", "split"])
        .arg(String::from_utf8(key(20)).unwrap())
        .output()
        .expect("run rangekv ctl");
    assert!(
        out.status.success(),
        "split failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Back without the fail point: it must create the replica and replay the log, split
    // included.
    t.cluster.stores[2].remove_env("FAILPOINTS");
    t.cluster.start_store(2).unwrap();
    t.wait_listening(30);
    t.rt.block_on(async {
        c.put(b"after".to_vec(), b"1".to_vec()).await.unwrap();
    });
    // With store 1 gone, no region of either side of the split can serve without store 3.
    t.cluster.kill_store(0).unwrap();
    for i in [0, 19, 20, 39] {
        let got = eventually(&t, "read with store 1 down", || {
            Ok(t.rt.block_on(c.get(key(i)))?)
        });
        assert_eq!(got.as_deref(), Some(&b"before"[..]), "key {i}");
    }
    eventually(&t, "write with store 1 down", || {
        Ok(t.rt.block_on(c.put(key(0), b"again".to_vec()))?)
    });
    eventually(&t, "write right of the split with store 1 down", || {
        Ok(t.rt.block_on(c.put(key(39), b"again".to_vec()))?)
    });
}

/// A store crashes while it applies its first Raft snapshot (before the snapshot's synced
/// write, or after it and before its files are ingested): restarted, it comes back with the
/// old state or the snapshot's whole (ingesting the files at start-up), PD's
/// replica moves complete, nothing acknowledged is lost and every region's replicas agree.
#[test]
fn a_crash_in_the_middle_of_applying_a_snapshot_leaves_the_old_or_the_new_state() {
    for failpoint in ["snapshot_apply_before_write", "snapshot_apply_after_write"] {
        // Four stores, three replicas: PD moves replicas onto the empty one, by snapshots; the
        // first snapshot any store applies crashes it.
        let mut t = TestCluster::start_customized(1, 4, "", |cfg| {
            for i in 0..4 {
                cfg.store_env
                    .push((i, "FAILPOINTS".into(), format!("{failpoint}=1*panic")));
            }
        });
        let c = t.client();
        for i in 0..200 {
            eventually(&t, "put", || {
                Ok(t.rt.block_on(c.put(key(i), b"v".to_vec()))?)
            });
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        let crashed = loop {
            if let Some(i) = (0..4).find(|i| t.cluster.stores[*i].exit_status().is_some()) {
                break i;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{failpoint}: no store crashed\n{}",
                t.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let log = std::fs::read_to_string(t.cluster.stores[crashed].log_path()).unwrap();
        assert!(
            log.contains(failpoint),
            "{failpoint}: crashed elsewhere:\n{log}"
        );
        t.cluster.stores[crashed].remove_env("FAILPOINTS");
        t.cluster.start_store(crashed).expect("restart");
        let stores = t.rt.block_on(t.pd().get_all_stores(true)).unwrap().len();
        eventually(&t, "replicas on every store", || {
            let (per_store, all_three) = placement(&t);
            anyhow::ensure!(
                all_three && per_store.len() == stores,
                "{failpoint}: placement {per_store:?}"
            );
            Ok(())
        });
        if failpoint == "snapshot_apply_after_write" {
            // The crash left the replica `Applying`: the restart ingested the files again.
            let log = std::fs::read_to_string(t.cluster.stores[crashed].log_path()).unwrap();
            assert!(
                log.contains("interrupted snapshot apply finished"),
                "{failpoint}: the restart did not finish the apply:\n{log}"
            );
        }
        for i in 0..200 {
            let got = eventually(&t, "get", || Ok(t.rt.block_on(c.get(key(i)))?));
            assert_eq!(got.as_deref(), Some(&b"v"[..]), "{failpoint}: key {i}");
        }
        let regions =
            t.rt.block_on(t.pd().scan_regions(b"", b"", 10_000))
                .unwrap();
        for r in regions {
            // PD may still be balancing (every store holding replicas is not yet an even
            // spread): a region in the middle of a move has a fourth replica for a while;
            // its replicas are compared once it is back at three.
            eventually(&t, "three replicas that agree", || {
                let o = t.rt.block_on(rangekv::region_check::check_region(
                    &t.pd(),
                    &r.region.start_key,
                ))?;
                anyhow::ensure!(o.consistent(), "{failpoint}: {o:?}");
                anyhow::ensure!(o.replicas.len() == 3, "{failpoint}: {o:?}");
                Ok(o)
            });
        }
    }
}
