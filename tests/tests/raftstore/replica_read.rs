//! Replica reads (TiKV's): a read sent to a follower on purpose is served there after a
//! ReadIndex round with the leader, so it never returns what the leader's commit index has
//! left behind; an isolated follower cannot serve one. The development-only
//! `unsafe_follower_reads` skips the round, and then the same isolated follower answers with
//! stale data: the mechanism `rangekv verify`'s follower-reads negative control relies on.
//! A replica read whose round gets no answer expires after `read_index_timeout`, even when
//! the region goes idle meanwhile (a follower with reads waiting does not hibernate).

use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::kvrpcpb;
use proto::raft_serverpb::RaftMessage;
use raft::eraftpb::MessageType;
use tests::network::Partition;
use tests::{msg_type, wait_until, Cluster, FnFilter, Verdict};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A raw get of `key` sent to `store`'s replica as a replica read.
fn replica_get(cluster: &Cluster, store: u64, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let region = cluster.region_for_key(key);
    let mut context = cluster.context(&region, store);
    context.replica_read = true;
    let req = kvrpcpb::RawGetRequest {
        context: Some(context),
        key: Bytes::copy_from_slice(key),
        ..Default::default()
    };
    let resp = cluster
        .block_on(cluster.storage(store).raw_get(req))
        .map_err(|e| format!("{e:?}"))?;
    Ok((!resp.not_found).then(|| resp.value.to_vec()))
}

/// A 3-store cluster, its leader, and one follower.
fn setup(cfg: raftstore::Config, limits: server::Limits) -> (Cluster, u64, u64) {
    let cluster = Cluster::with_limits(3, &[], cfg, limits);
    let leader = cluster.wait_leader(1, TIMEOUT);
    let follower = *cluster
        .store_ids()
        .iter()
        .find(|s| **s != leader)
        .expect("a follower");
    (cluster, leader, follower)
}

/// Cuts `store` off from the other stores; returns those.
fn cut_off(cluster: &Cluster, store: u64) -> Vec<u64> {
    let others: Vec<u64> = cluster
        .store_ids()
        .iter()
        .copied()
        .filter(|s| *s != store)
        .collect();
    cluster.net.add_filter(Partition::new(&[&[store], &others]));
    others
}

#[test]
fn a_follower_serves_replica_reads_only_after_asking_the_leader() {
    let (cluster, leader, follower) = setup(tests::cluster::test_config(), Default::default());
    cluster.must_put(b"k", b"v1");
    // Acknowledged before the read was sent: the follower's ReadIndex round covers it,
    // whether or not it had applied it when the read arrived.
    assert_eq!(
        replica_get(&cluster, follower, b"k").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    let before = cluster.peer_status(follower, 1).expect("status");
    assert!(!before.is_leader);
    assert!(before.read_index_rounds >= 1, "{before:?}");

    // Cut the follower off; the other two commit a newer value.
    let others = cut_off(&cluster, follower);
    cluster.must_put(b"k", b"v2");
    assert!(others.contains(&cluster.wait_leader(1, TIMEOUT)));
    // The follower cannot confirm anything with the leader: no answer, and never the stale v1.
    if let Ok(v) = replica_get(&cluster, follower, b"k") {
        panic!("an isolated follower answered a replica read with {v:?}");
    }

    // Healed: it catches up and serves the newest value.
    cluster.net.clear_filters();
    wait_until("the follower serves the new value", TIMEOUT, || {
        replica_get(&cluster, follower, b"k").is_ok_and(|v| v.as_deref() == Some(&b"v2"[..]))
    });
    let _ = leader;
}

#[test]
fn with_unsafe_follower_reads_an_isolated_follower_serves_stale_data() {
    let cfg = raftstore::Config {
        unsafe_follower_reads: true,
        ..tests::cluster::test_config()
    };
    let (cluster, _leader, follower) = setup(cfg, Default::default());
    cluster.must_put(b"k", b"v1");
    wait_until("the follower applied v1", TIMEOUT, || {
        replica_get(&cluster, follower, b"k").is_ok_and(|v| v.as_deref() == Some(&b"v1"[..]))
    });
    cut_off(&cluster, follower);
    cluster.must_put(b"k", b"v2");
    // The switch breaks linearizability on purpose: v2 was acknowledged, the follower says v1.
    assert_eq!(
        replica_get(&cluster, follower, b"k").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
}

#[test]
fn a_replica_read_without_an_answer_expires_while_the_region_goes_idle() {
    // The region goes idle and its leader asks the followers to sleep long before the read
    // expires; the storage layer would give up on the read only after five minutes.
    let cfg = raftstore::Config {
        read_index_timeout: Duration::from_secs(3),
        hibernate_ticks: 4,
        ..tests::cluster::test_config()
    };
    let limits = server::Limits {
        request_timeout_ms: 300_000,
        ..Default::default()
    };
    let (cluster, _leader, follower) = setup(cfg, limits);
    cluster.must_put(b"k", b"v1");
    // The leader's answers to ReadIndex requests are lost.
    cluster.add_filter(FnFilter(|_: u64, _: u64, m: &RaftMessage| {
        if msg_type(m) == MessageType::MsgReadIndexResp {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }));
    let asked = Instant::now();
    let answer = replica_get(&cluster, follower, b"k");
    assert!(answer.is_err(), "answered without the leader: {answer:?}");
    // Expired by the follower's ticks, not by the storage layer's timeout.
    assert!(
        asked.elapsed() < Duration::from_secs(60),
        "the read waited {:?}",
        asked.elapsed()
    );
    // With the read gone the region may sleep, and does.
    wait_until("the idle region hibernates", TIMEOUT, || {
        cluster
            .store_ids()
            .iter()
            .all(|s| cluster.peer_status(*s, 1).is_some_and(|p| p.asleep))
    });
}
