//! Raft log GC of a 3-member PD group: compaction on every member, restarts on a compacted log,
//! a stopped member holding compaction back while the log is short, and one left behind once
//! the log passes the count limit catching up from a snapshot of PD's state.

mod support;

use std::path::Path;

use bytes::Bytes;
use placement_driver::raft_node::PD_RAFT_GROUP_ID;
use placement_driver::{PdConfig, RaftLogState};
use proto::pdpb::pd_client::PdClient as PdGrpc;
use proto::pdpb::*;
use raft::Storage;
use support::{PdGroup, DEADLINE};
use test_util::wait_until_async;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

type Client = PdGrpc<Channel>;

const THRESHOLD: u64 = 8;

/// Compact often and early; every AllocID call is one proposal.
fn low_gc(config: &mut PdConfig) {
    config.raft_log_gc_threshold = THRESHOLD;
    config.raft_log_gc_ticks = 3;
    config.id_alloc_step = 1;
}

/// [`low_gc`], and a member that lags by more than 40 entries no longer holds the log back.
fn low_gc_with_limit(config: &mut PdConfig) {
    low_gc(config);
    config.raft_log_gc_count_limit = 40;
}

async fn grpc(url: &str) -> Client {
    PdGrpc::connect(url.to_owned()).await.unwrap()
}

fn header() -> Option<RequestHeader> {
    Some(RequestHeader::default())
}

fn has_error(header: &Option<ResponseHeader>) -> bool {
    header.as_ref().and_then(|h| h.error.as_ref()).is_some()
}

/// Allocates `n` ids one by one from whichever member serves, retrying across leader changes.
/// Returns the last id.
async fn alloc_ids(group: &PdGroup, n: usize) -> u64 {
    let deadline = tokio::time::Instant::now() + DEADLINE * 3;
    let mut cached: Option<(usize, Client)> = None;
    let mut last = 0;
    let mut done = 0;
    while done < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "allocated only {done} of {n} ids"
        );
        let leader = group.wait_leader().await;
        if cached.as_ref().map(|(i, _)| *i) != Some(leader) {
            cached = Some((leader, grpc(&group.members[leader].url()).await));
        }
        let Some((_, client)) = cached.as_mut() else {
            unreachable!()
        };
        match client
            .alloc_id(AllocIdRequest {
                header: header(),
                count: 1,
            })
            .await
        {
            Ok(resp) if !has_error(&resp.get_ref().header) => {
                let id = resp.into_inner().id;
                assert!(id > last, "ids must grow: {id} after {last}");
                last = id;
                done += 1;
            }
            // Leadership moved (or the lease lapsed): find the leader again.
            _ => {
                cached = None;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    last
}

async fn one_tso(client: &mut Client) -> u64 {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(TsoRequest {
        header: header(),
        count: 1,
        dc_location: String::new(),
    })
    .await
    .unwrap();
    let mut responses = client
        .tso(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let resp = responses.message().await.unwrap().unwrap();
    assert!(!has_error(&resp.header), "{:?}", resp.header);
    let ts = resp.timestamp.unwrap();
    ((ts.physical as u64) << 18) | ts.logical as u64
}

fn log_state(group: &PdGroup, i: usize) -> RaftLogState {
    group.members[i].handle().raft_log_state()
}

fn running(group: &PdGroup) -> Vec<usize> {
    (0..group.members.len())
        .filter(|&i| group.members[i].handle.is_some())
        .collect()
}

/// `(first_index, last_index)` of a stopped member's log as `RaftLogStorage::load` finds it on
/// disk; checks that every entry in between is readable and that the apply state agrees.
fn disk_log(dir: &Path) -> (u64, u64) {
    let engine = engine::Engine::open(dir, &engine::EngineOptions::default()).unwrap();
    let apply = raft_log::ApplyState::load(&engine, PD_RAFT_GROUP_ID)
        .unwrap()
        .unwrap();
    let storage = raft_log::RaftLogStorage::load(
        engine,
        PD_RAFT_GROUP_ID,
        raft::eraftpb::ConfState::default(),
    )
    .unwrap();
    let first = storage.first_index().unwrap();
    let last = storage.last_index().unwrap();
    assert_eq!(first, apply.truncated_index + 1);
    assert!(apply.truncated_index <= apply.applied_index);
    assert_eq!(storage.term(first - 1).unwrap(), apply.truncated_term);
    let entries = storage
        .entries(first, last + 1, None, raft::GetEntriesContext::empty(false))
        .unwrap();
    assert_eq!(entries.len() as u64, last + 1 - first);
    (first, last)
}

async fn bootstrap(client: &mut Client) {
    let store = test_util::store(1);
    let region = test_util::region(2).peers([test_util::peer(3, 1)]).build();
    let resp = client
        .bootstrap(BootstrapRequest {
            header: header(),
            store: Some(store),
            region: Some(region),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!has_error(&resp.header), "{:?}", resp.header);
}

async fn region_id_of(client: &mut Client, key: &str) -> Option<u64> {
    let resp = client
        .get_region(GetRegionRequest {
            header: header(),
            region_key: Bytes::copy_from_slice(key.as_bytes()),
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!has_error(&resp.header), "{:?}", resp.header);
    resp.region.map(|r| r.id)
}

/// Waits until every running member's log starts above `index`.
async fn wait_compacted_past(group: &PdGroup, index: u64, what: &str) {
    wait_until_async(what, DEADLINE, || {
        let ok = running(group)
            .into_iter()
            .all(|i| log_state(group, i).first_index > index + 1);
        async move { ok }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_is_compacted_on_every_member_and_survives_a_full_restart() {
    let mut group = PdGroup::start_with(3, low_gc).await;
    let leader = group.wait_leader().await;
    let mut client = grpc(&group.members[leader].url()).await;
    bootstrap(&mut client).await;
    let initial_first = log_state(&group, leader).first_index;

    let mut last_id = alloc_ids(&group, 120).await;
    // 120 proposals, compacted in steps of at least THRESHOLD: every member's log moves far.
    wait_compacted_past(
        &group,
        initial_first + 100,
        "every member to compact its log",
    )
    .await;
    for i in 0..3 {
        let s = log_state(&group, i);
        assert!(s.first_index <= s.applied_index + 1, "{s:?}");
        assert!(s.first_index <= s.last_index + 1, "{s:?}");
    }
    let leader = group.wait_leader().await;
    let mut client = grpc(&group.members[leader].url()).await;
    let last_ts = one_tso(&mut client).await;
    assert!(log_state(&group, leader).gc_proposals > 0);

    // Stop everyone; the logs on disk start where the compaction left them.
    let before: Vec<RaftLogState> = (0..3).map(|i| log_state(&group, i)).collect();
    for i in 0..3 {
        group.stop(i).await;
    }
    let mut max_last = 0;
    for (i, b) in before.iter().enumerate() {
        let (first, last) = disk_log(&group.members[i].dir);
        assert!(first >= b.first_index, "member {i}: {first} < {b:?}");
        assert!(first > initial_first + 100, "member {i}: {first}");
        max_last = max_last.max(last);
    }

    for (i, b) in before.iter().enumerate() {
        group.restart(i).await;
        let s = log_state(&group, i);
        assert!(s.first_index >= b.first_index, "{s:?} {b:?}");
    }
    let leader = group.wait_leader().await;
    let mut client = grpc(&group.members[leader].url()).await;
    assert!(one_tso(&mut client).await > last_ts);
    assert_eq!(region_id_of(&mut client, "any key").await, Some(2));
    let store = client
        .get_store(GetStoreRequest {
            header: header(),
            store_id: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!has_error(&store.header), "{:?}", store.header);
    assert_eq!(store.store.unwrap().address, "127.0.0.1:20161");
    let id = alloc_ids(&group, 1).await;
    assert!(id > last_id, "id {id} after {last_id}");
    last_id = id;

    // Compaction goes on over the restarted logs.
    let id = alloc_ids(&group, 30).await;
    assert!(id > last_id);
    wait_compacted_past(&group, max_last, "compaction to go on after the restart").await;
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_member_holds_compaction_back_and_catches_up_from_the_log() {
    let mut group = PdGroup::start_with(3, low_gc).await;
    let leader = group.wait_leader().await;
    let initial_first = log_state(&group, leader).first_index;
    alloc_ids(&group, 40).await;
    wait_compacted_past(&group, initial_first, "compaction with every member up").await;

    // Stop a follower; what it has is exactly what is on its disk.
    let leader = group.wait_leader().await;
    let stopped = (0..3).find(|&i| i != leader).unwrap();
    group.stop(stopped).await;
    let (stopped_first, stopped_last) = disk_log(&group.members[stopped].dir);
    assert!(stopped_first > initial_first, "it had compacted too");

    // Far more than the threshold beyond what the stopped member has, then several GC checks.
    alloc_ids(&group, 80).await;
    let checks = || -> u64 {
        running(&group)
            .into_iter()
            .map(|i| log_state(&group, i).gc_checks)
            .sum()
    };
    let checks_after_proposals = checks();
    wait_until_async("a few log GC checks", DEADLINE, || {
        let ok = checks() >= checks_after_proposals + 3;
        async move { ok }
    })
    .await;
    for i in running(&group) {
        let s = log_state(&group, i);
        assert!(
            s.applied_index > stopped_last + 5 * THRESHOLD,
            "member {i} would compact: {s:?}"
        );
        assert!(
            s.first_index <= stopped_last + 1,
            "member {i} compacted past the stopped member's log (last {stopped_last}): {s:?}"
        );
    }

    // It comes back and catches up from the log (there are no snapshots)…
    group.restart(stopped).await;
    let leader = group.wait_leader().await;
    let target = log_state(&group, leader).applied_index;
    wait_until_async("the restarted member to catch up", DEADLINE, || {
        let ok = log_state(&group, stopped).applied_index >= target;
        async move { ok }
    })
    .await;
    // …and compaction resumes past where it was held back, on every member.
    alloc_ids(&group, 20).await;
    wait_compacted_past(&group, stopped_last, "compaction to resume").await;
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_left_behind_past_the_count_limit_catches_up_from_a_snapshot() {
    let mut group = PdGroup::start_with(3, low_gc_with_limit).await;
    let leader = group.wait_leader().await;
    let mut client = grpc(&group.members[leader].url()).await;
    // State beyond the bounds: a store and a region.
    bootstrap(&mut client).await;
    alloc_ids(&group, 10).await;

    let leader = group.wait_leader().await;
    let stopped = (0..3).find(|&i| i != leader).unwrap();
    group.stop(stopped).await;
    let (_, stopped_last) = disk_log(&group.members[stopped].dir);
    // Far past the count limit: the others compact past everything the stopped member has.
    let last_id = alloc_ids(&group, 150).await;
    wait_compacted_past(&group, stopped_last, "compaction past the stopped member").await;

    group.restart(stopped).await;
    let leader = group.wait_leader().await;
    let target = log_state(&group, leader).applied_index;
    wait_until_async("the restarted member to catch up", DEADLINE, || {
        let ok = log_state(&group, stopped).applied_index >= target;
        async move { ok }
    })
    .await;
    let s = log_state(&group, stopped);
    assert!(
        s.first_index > stopped_last + 1,
        "caught up from a snapshot, not from entries it had: {s:?}"
    );
    // What it holds is the group's state: read it from its disk.
    group.stop(stopped).await;
    {
        let engine =
            engine::Engine::open(&group.members[stopped].dir, &Default::default()).unwrap();
        let state = placement_driver::PdState::load(&engine).unwrap();
        assert!(state.is_bootstrapped());
        assert!(state.meta().id_bound >= last_id, "{:?}", state.meta());
        assert!(state.store(1).is_some());
        assert!(state.regions().get(2).is_some());
    }
    let (first, _) = disk_log(&group.members[stopped].dir);
    assert!(first > stopped_last + 1);
    // And it serves in the group again.
    group.restart(stopped).await;
    alloc_ids(&group, 5).await;
    wait_until_async("the member applying new entries", DEADLINE, || {
        let ok = log_state(&group, stopped).applied_index > target;
        async move { ok }
    })
    .await;
    group.shutdown().await;
}
