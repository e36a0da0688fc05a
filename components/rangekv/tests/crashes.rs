//! Multi-process failure handling: a panic on any thread of a store ends the process, and the
//! region goes on serving from the other replicas.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

mod support;

use support::*;

/// Retries `op` until it succeeds (the cluster may be electing a new leader).
fn eventually<T>(t: &TestCluster, what: &str, mut op: impl FnMut() -> anyhow::Result<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match op() {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{what}: {e:#}\n{}", t.logs()),
        }
    }
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
