//! Stores killed, stopped and restarted (one, all, one after another): nothing acknowledged is
//! lost and the cluster keeps serving.

use crate::support::*;

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
