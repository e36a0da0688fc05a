//! A committed entry the leader has already persisted is applied (and its write answered)
//! without waiting for the synced log write of the round that learnt of the commit: raft-rs
//! hands out only persisted entries, so that write guards nothing of theirs.
//!
//! The interleaving, made to happen: the leader's round that logs a write is held at
//! `raft_before_save`; the followers' acknowledgements are held back and handed to the leader
//! while that round waits; the round is let through, and the next one (which steps the
//! acknowledgements, learns the commit and must sync the new commit index) is held again.
//! The write must be answered while that second round is still held.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use proto::raft_serverpb::RaftMessage;
use raft::eraftpb::MessageType;
use raftstore::cmd::WriteOp;
use raftstore::RequestHeader;
use tests::{msg_type, wait_until, Cluster, FnFilter, Verdict};

use crate::save_gate::SaveGate;

const TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn a_write_is_answered_while_the_round_that_learnt_its_commit_still_syncs() {
    let scenario = fail::FailScenario::setup();
    let mut cfg = tests::cluster::test_config();
    cfg.apply_before_persist = true;
    let cluster = Cluster::with_config(3, &[], cfg);
    let leader = cluster.wait_leader(1, TIMEOUT);
    cluster.must_put(b"k", b"old");
    cluster.wait_replicated(b"k", Some(b"old"), TIMEOUT);
    let region = cluster.region_for_key(b"k");
    let router = cluster.storage(leader).router().clone();

    // The followers' acknowledgements to the leader are held back, to be handed over by hand.
    let acks: Arc<Mutex<Vec<RaftMessage>>> = Arc::default();
    let held_acks = acks.clone();
    cluster.add_filter(FnFilter(move |_from, to, msg: &RaftMessage| {
        if to == leader && msg.region_id == 1 && msg_type(msg) == MessageType::MsgAppendResponse {
            held_acks.lock().push(msg.clone());
            return Verdict::Drop;
        }
        Verdict::Deliver
    }));
    let gate = SaveGate::on_store(leader);

    let write = {
        let router = router.clone();
        let header = RequestHeader {
            region_id: 1,
            epoch: region.region_epoch,
            peer: region.peers.iter().find(|p| p.store_id == leader).cloned(),
            keys: vec![Bytes::from_static(b"k")],
            replica_read: false,
        };
        cluster.spawn(async move {
            let op = WriteOp::put(
                engine::CF_DEFAULT,
                Bytes::from_static(b"k"),
                Bytes::from_static(b"new"),
            );
            router.write(header, vec![op]).await
        })
    };
    // The round that logs the write is held; its appends left before the write, and both
    // followers persisted and acknowledged them.
    wait_until("the leader's log write is held", TIMEOUT, || {
        gate.held() == 1
    });
    wait_until("both followers acknowledged", TIMEOUT, || {
        acks.lock().len() >= 2
    });
    cluster.clear_filters();
    for ack in acks.lock().drain(..) {
        router
            .send_raft_message(ack)
            .expect("leader hosts region 1");
    }
    // That round finishes; the next steps the acknowledgements, learns the commit and must
    // sync the new commit index: it is held in turn.
    gate.let_one_through();
    let answered = cluster.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), write)
            .await
            .ok()
            .map(|r| r.expect("write task"))
    });
    let resp = answered.expect("the write is answered while that round's sync is held");
    resp.expect("the write succeeded");
    // (That round did have a write to sync, so the answer did not come from its end.)
    wait_until("the round that learnt the commit is held", TIMEOUT, || {
        gate.held() == 1
    });

    drop(gate);
    cluster.wait_replicated(b"k", Some(b"new"), TIMEOUT);
    cluster.must_be_consistent();
    drop(cluster);
    scenario.teardown();
}
