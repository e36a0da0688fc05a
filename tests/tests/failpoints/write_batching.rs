//! Client writes that reach a leader together are proposed as one Raft entry, each gets the
//! entry's outcome, and they keep their arrival order.
//!
//! The interleaving, made to happen: the leader's round that logs a first write is held at
//! `raft_before_save`, so the writes sent meanwhile wait in the region's mailbox and are all
//! handled in the next round.

use std::time::Duration;

use bytes::Bytes;
use raftstore::cmd::WriteOp;
use raftstore::RequestHeader;
use tests::{wait_until, Cluster};

use crate::save_gate::SaveGate;

const TIMEOUT: Duration = Duration::from_secs(20);
const WRITES: u64 = 10;

#[test]
fn writes_that_arrive_together_share_one_entry_and_keep_their_order() {
    let scenario = fail::FailScenario::setup();
    let mut cfg = tests::cluster::test_config();
    cfg.batch_client_writes = true;
    let cluster = Cluster::with_config(3, &[], cfg);
    let leader = cluster.wait_leader(1, TIMEOUT);
    cluster.must_put(b"k", b"start");
    cluster.wait_replicated(b"k", Some(b"start"), TIMEOUT);
    let region = cluster.region_for_key(b"k");
    let router = cluster.storage(leader).router().clone();
    let header = RequestHeader {
        region_id: 1,
        epoch: region.region_epoch,
        peer: region.peers.iter().find(|p| p.store_id == leader).cloned(),
        keys: vec![Bytes::from_static(b"k")],
        replica_read: false,
    };
    let put = |value: String| {
        vec![WriteOp::put(
            engine::CF_DEFAULT,
            Bytes::from_static(b"k"),
            Bytes::from(value),
        )]
    };
    let last_index = || cluster.peer_status(leader, 1).expect("leader").last_index;
    let (tx, rx) = std::sync::mpsc::channel();

    let gate = SaveGate::on_store(leader);
    let before = last_index();
    let first = tx.clone();
    router.propose(header.clone(), put("first".into()), move |r| {
        let _ = first.send(("first".to_owned(), r));
    });
    wait_until("the round logging the first write is held", TIMEOUT, || {
        gate.held() == 1
    });
    // Sent in order into the region's mailbox while its peer is held.
    for i in 0..WRITES {
        let tx = tx.clone();
        let value = format!("v{i}");
        router.propose(header.clone(), put(value.clone()), move |r| {
            let _ = tx.send((value, r));
        });
    }
    drop(gate);

    for _ in 0..=WRITES {
        let (value, result) = rx.recv_timeout(TIMEOUT).expect("every write is answered");
        result.unwrap_or_else(|e| panic!("write of {value} failed: {e}"));
    }
    let added = last_index() - before;
    assert!(
        added < WRITES,
        "{} writes took {added} entries: the ones that waited were not batched",
        WRITES + 1
    );
    // The last one sent is the value: the batch kept the arrival order.
    assert_eq!(cluster.must_get(b"k").as_deref(), Some(&b"v9"[..]));
    cluster.wait_replicated(b"k", Some(b"v9"), TIMEOUT);
    cluster.must_be_consistent();
    drop(cluster);
    scenario.teardown();
}
