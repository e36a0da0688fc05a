//! Region merge: the target absorbs its source's range and data on every replica, in either
//! direction; a merging source refuses writes and reads until it is gone; a source replica
//! that never learnt its last entries were committed catches up from its own log; the merged
//! layout survives restarts and the replicas still agree.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto::kvrpcpb::{RawGetRequest, RawPutRequest};
use proto::metapb;
use proto::raft_serverpb::RaftMessage;
use server::raw::Failure;
use tests::network::{msg_type, Filter, Verdict};
use tests::{wait_until, Cluster};

const TIMEOUT: Duration = Duration::from_secs(20);

fn put_on(
    cluster: &Cluster,
    store: u64,
    region: &metapb::Region,
    key: &[u8],
) -> Result<(), Failure> {
    let req = RawPutRequest {
        context: Some(cluster.context(region, store)),
        key: Bytes::copy_from_slice(key),
        value: Bytes::from_static(b"v"),
        ..Default::default()
    };
    cluster
        .block_on(cluster.storage(store).raw_put(req))
        .map(|_| ())
}

#[test]
fn merges_in_both_directions_keep_every_key_and_survive_restart() {
    let mut cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, TIMEOUT);
    let keys: Vec<Vec<u8>> = (b'a'..=b'z').map(|c| vec![c]).collect();
    for k in &keys {
        cluster.must_put(k, k);
    }
    let regions = cluster.split(b"g").expect("split at g");
    let (a, rest) = (regions[0].clone(), regions[1].clone());
    let regions = cluster.split(b"m").expect("split at m");
    let (b, c) = (regions[0].clone(), regions[1].clone());
    assert_eq!(b.id, rest.id);
    cluster.wait_leader(c.id, TIMEOUT);

    // b = [g, m) into c = [m, ∞): the target grows to the left.
    let prepared = cluster.prepare_merge(b.id, c.id).expect("prepare b into c");
    assert!(
        prepared.region_epoch.unwrap().version > b.region_epoch.unwrap().version,
        "PrepareMerge bumps the source's epoch"
    );
    let c2 = cluster.wait_merged(&b, c.id, TIMEOUT);
    assert_eq!((&c2.start_key[..], &c2.end_key[..]), (&b"g"[..], &b""[..]));
    let version = |r: &metapb::Region| r.region_epoch.unwrap().version;
    assert!(version(&c2) > version(&c).max(version(&prepared)));
    // The old source's epoch is refused: its replicas are gone.
    match put_on(&cluster, cluster.store_ids()[0], &b, b"h") {
        Err(Failure::Region(e)) => assert!(
            e.region_not_found.is_some() || e.epoch_not_match.is_some(),
            "{e:?}"
        ),
        other => panic!("expected a region error, got {other:?}"),
    }
    // The target serves the source's range, old and new keys.
    cluster.must_put(b"hh", b"written after the first merge");
    // c2 = [g, ∞) into a = [∞, g): the target grows to the right.
    cluster
        .prepare_merge(c2.id, a.id)
        .expect("prepare c into a");
    let whole = cluster.wait_merged(&c2, a.id, TIMEOUT);
    assert_eq!(
        (&whole.start_key[..], &whole.end_key[..]),
        (&b""[..], &b""[..])
    );
    for k in &keys {
        assert_eq!(cluster.must_get(k), Some(k.clone()));
    }
    assert_eq!(
        cluster.must_get(b"hh"),
        Some(b"written after the first merge".to_vec())
    );
    cluster.must_put(b"zz", b"after both");
    cluster.wait_replicated(b"zz", Some(b"after both"), TIMEOUT);
    cluster.must_be_consistent();

    // The layout and the data come back after a whole-cluster restart.
    for s in cluster.store_ids().to_vec() {
        cluster.stop_store(s);
    }
    for s in cluster.store_ids().to_vec() {
        cluster.start_store(s);
    }
    cluster.wait_leader(a.id, TIMEOUT);
    for s in cluster.store_ids().to_vec() {
        let st = cluster.peer_status(s, a.id).expect("the target is hosted");
        assert_eq!(st.region, whole);
        assert!(cluster.peer_status(s, b.id).is_none());
        assert!(cluster.peer_status(s, c.id).is_none());
    }
    for k in &keys {
        assert_eq!(cluster.must_get(k), Some(k.clone()));
    }
    assert_eq!(cluster.must_get(b"zz"), Some(b"after both".to_vec()));
    cluster.must_be_consistent();
}

/// Drops every Raft message of one region while `on` is set.
struct BlockRegion {
    region_id: u64,
    on: Arc<AtomicBool>,
}

impl Filter for BlockRegion {
    fn check(&self, _from: u64, _to: u64, msg: &RaftMessage) -> Verdict {
        if msg.region_id == self.region_id && self.on.load(Ordering::SeqCst) {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}

#[test]
fn a_merging_source_refuses_writes_and_reads_until_its_target_absorbs_it() {
    let cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, TIMEOUT);
    cluster.must_put(b"a", b"left");
    cluster.must_put(b"x", b"right");
    let regions = cluster.split(b"m").expect("split");
    let (left, right) = (regions[0].clone(), regions[1].clone());
    cluster.wait_leader(right.id, TIMEOUT);
    // The target commits nothing: the merge stays prepared.
    let on = Arc::new(AtomicBool::new(true));
    cluster.add_filter(BlockRegion {
        region_id: left.id,
        on: on.clone(),
    });
    let prepared = cluster.prepare_merge(right.id, left.id).expect("prepare");
    wait_until("every source replica is merging", TIMEOUT, || {
        cluster.store_ids().iter().all(|s| {
            cluster
                .peer_status(*s, right.id)
                .is_some_and(|st| st.merging)
        })
    });
    let store = cluster.wait_leader(right.id, TIMEOUT);
    match put_on(&cluster, store, &prepared, b"y") {
        Err(Failure::Region(e)) => assert!(e.proposal_in_merging_mode.is_some(), "{e:?}"),
        other => panic!("a write to a merging region: {other:?}"),
    }
    let get = RawGetRequest {
        context: Some(cluster.context(&prepared, store)),
        key: Bytes::from_static(b"x"),
        ..Default::default()
    };
    match cluster.block_on(cluster.storage(store).raw_get(get)) {
        Err(Failure::Region(e)) => assert!(e.proposal_in_merging_mode.is_some(), "{e:?}"),
        other => panic!("a read of a merging region: {other:?}"),
    }
    on.store(false, Ordering::SeqCst);
    let merged = cluster.wait_merged(&right, left.id, TIMEOUT);
    assert_eq!(
        (&merged.start_key[..], &merged.end_key[..]),
        (&b""[..], &b""[..])
    );
    assert_eq!(cluster.must_get(b"x"), Some(b"right".to_vec()));
    cluster.must_put(b"y", b"after");
    assert_eq!(cluster.must_get(b"y"), Some(b"after".to_vec()));
    cluster.must_be_consistent();
}

/// Lets one Raft append carrying entries of `region_id` through to `store`, then drops every
/// message of that region to it: the replica holds the entry but never learns it committed.
struct OneAppendTo {
    region_id: u64,
    store: u64,
    passed: AtomicBool,
}

impl Filter for OneAppendTo {
    fn check(&self, _from: u64, to: u64, msg: &RaftMessage) -> Verdict {
        use protobuf::Message as _;
        if msg.region_id != self.region_id || to != self.store {
            return Verdict::Deliver;
        }
        let has_entries = raft::eraftpb::Message::parse_from_bytes(&msg.message)
            .is_ok_and(|m| !m.entries.is_empty());
        if msg_type(msg) == raft::eraftpb::MessageType::MsgAppend
            && has_entries
            && !self.passed.swap(true, Ordering::SeqCst)
        {
            return Verdict::Deliver;
        }
        Verdict::Drop
    }
}

#[test]
fn a_source_replica_that_missed_the_commit_catches_up_from_its_own_log() {
    let cluster = Cluster::new(3, &[]);
    cluster.wait_leader(1, TIMEOUT);
    let regions = cluster.split(b"m").expect("split");
    let (left, right) = (regions[0].clone(), regions[1].clone());
    let source_leader = cluster.wait_leader(right.id, TIMEOUT);
    let lagging = *cluster
        .store_ids()
        .iter()
        .find(|s| **s != source_leader)
        .expect("a follower");
    cluster.must_put(b"x", b"before");
    cluster.wait_replicated(b"x", Some(b"before"), TIMEOUT);
    cluster.add_filter(OneAppendTo {
        region_id: right.id,
        store: lagging,
        passed: AtomicBool::new(false),
    });
    cluster.must_put(b"x", b"last write of the source");
    // The lagging replica holds the entry (the leader counts it as matched) but not its commit.
    let st = cluster.peer_status(lagging, right.id).unwrap();
    assert!(st.commit_index < st.last_index, "{st:?}");
    cluster.prepare_merge(right.id, left.id).expect("prepare");
    let merged = cluster.wait_merged(&right, left.id, TIMEOUT);
    assert!(merged.end_key.is_empty());
    assert_eq!(
        cluster.local_get(lagging, b"x").as_deref(),
        Some(&b"last write of the source"[..]),
        "the lagging replica applied the source's last write before its target absorbed it"
    );
    cluster.clear_filters();
    assert_eq!(
        cluster.must_get(b"x"),
        Some(b"last write of the source".to_vec())
    );
    cluster.must_be_consistent();
}

/// A store cut off for the whole merge, while the merged region's log grows past its limit:
/// the leader keeps the log from the CommitMerge on, so the cut-off target replica catches up
/// by log and its source replica (which never saw PrepareMerge) by its own — a snapshot of
/// the merged range would overlap that source replica and be refused for good.
#[test]
fn a_store_cut_off_during_a_merge_catches_up_by_log() {
    let cfg = raftstore::Config {
        raft_log_gc_count_limit: 20,
        ..tests::cluster::test_config()
    };
    let cluster = Cluster::with_config(3, &[], cfg);
    cluster.wait_leader(1, TIMEOUT);
    let regions = cluster.split(b"m").expect("split");
    let (left, right) = (regions[0].clone(), regions[1].clone());
    cluster.must_put(b"x", b"before the merge");
    cluster.wait_replicated(b"x", Some(b"before the merge"), TIMEOUT);
    let leaders = [
        cluster.wait_leader(left.id, TIMEOUT),
        cluster.wait_leader(right.id, TIMEOUT),
    ];
    let cut = *cluster
        .store_ids()
        .iter()
        .find(|s| !leaders.contains(s))
        .expect("a store that leads neither region");
    cluster.add_filter(tests::network::Isolate(cut));
    cluster.prepare_merge(right.id, left.id).expect("prepare");
    // The two other stores merge; the cut-off one still hosts the source.
    tests::wait_until("the others merged", TIMEOUT, || {
        cluster
            .store_ids()
            .iter()
            .filter(|s| **s != cut)
            .all(|s| cluster.peer_status(*s, right.id).is_none())
    });
    cluster.forget_route(right.id);
    for i in 0..60 {
        cluster.must_put(format!("k{i:03}").as_bytes(), b"after the merge");
    }
    // The log outgrew its limit: the leader compacts it, up to the CommitMerge and no further.
    tests::wait_until("the leader compacted its log", TIMEOUT, || {
        let leader = cluster.wait_leader(left.id, TIMEOUT);
        let st = cluster.peer_status(leader, left.id).unwrap();
        st.merge_log_barrier > 0 && st.first_index >= st.merge_log_barrier
    });
    let leader = cluster.wait_leader(left.id, TIMEOUT);
    let st = cluster.peer_status(leader, left.id).unwrap();
    assert!(st.last_index - st.first_index > 20, "{st:?}");
    cluster.clear_filters();
    let merged = cluster.wait_merged(&right, left.id, TIMEOUT);
    assert!(merged.end_key.is_empty() && merged.start_key.is_empty());
    assert_eq!(
        cluster.local_get(cut, b"x").as_deref(),
        Some(&b"before the merge"[..])
    );
    cluster.wait_replicated(b"k059", Some(b"after the merge"), TIMEOUT);
    cluster.must_be_consistent();
}
