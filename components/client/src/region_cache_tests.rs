//! Region cache rules, one test per rule of the module docs.

use bytes::Bytes;
use proto::errorpb;
use proto::metapb::{Peer, PeerRole, Region};
use test_util::peer;

use super::*;

/// Region `id` over `[start, end)` at epoch version `version`, with peers `id*10+1..=id*10+3`
/// on stores 1, 2, 3.
fn region(id: u64, start: &str, end: &str, version: u64) -> Region {
    test_util::region(id)
        .range(start, end)
        .version(version)
        .voters_on(&[1, 2, 3])
        .build()
}

/// `["", "b")` = 1, `["b", "d")` = 2, gap, `["f", "")` = 3; leaders on store 1.
fn sample() -> RegionCache {
    let mut cache = RegionCache::new();
    for r in [
        region(1, "", "b", 1),
        region(2, "b", "d", 1),
        region(3, "f", "", 1),
    ] {
        let leader = r.peers[0];
        assert!(cache.insert(r, Some(leader)));
    }
    cache
}

fn id_of(route: Option<RegionRoute>) -> Option<u64> {
    route.map(|r| r.region.id)
}

fn route(cache: &RegionCache, key: &str) -> RegionRoute {
    cache.locate(key.as_bytes()).expect("key is cached")
}

fn not_leader(region_id: u64, leader: Option<Peer>) -> errorpb::Error {
    errorpb::Error {
        not_leader: Some(errorpb::NotLeader { region_id, leader }),
        ..Default::default()
    }
}

fn epoch_not_match(current_regions: Vec<Region>) -> errorpb::Error {
    errorpb::Error {
        epoch_not_match: Some(errorpb::EpochNotMatch { current_regions }),
        ..Default::default()
    }
}

#[test]
fn lookup_by_key() {
    let cache = sample();
    let ids: Vec<_> = ["", "a", "b", "c", "c\u{ff}", "d", "e", "f", "zzz"]
        .iter()
        .map(|k| id_of(cache.locate(k.as_bytes())))
        .collect();
    assert_eq!(
        ids,
        vec![
            Some(1),
            Some(1),
            Some(2),
            Some(2),
            Some(2),
            None,
            None,
            Some(3),
            Some(3)
        ]
    );
    let r = route(&cache, "c");
    assert_eq!(r.peer, peer(21, 1));
    let ctx = r.context();
    assert_eq!((ctx.region_id, ctx.peer), (2, Some(peer(21, 1))));
    assert_eq!(ctx.region_epoch.map(|e| e.version), Some(1));
}

#[test]
fn lookup_below_an_upper_bound() {
    let cache = sample();
    let ids: Vec<_> = ["", "\u{0}", "a", "b", "b\u{0}", "d", "e", "f", "g"]
        .iter()
        .map(|k| id_of(cache.locate_before(k.as_bytes())))
        .collect();
    // "" is +inf: the last region. "b" and "d" are exclusive: the regions ending there.
    assert_eq!(
        ids,
        vec![
            Some(3),
            Some(1),
            Some(1),
            Some(1),
            Some(2),
            Some(2),
            None,
            None,
            Some(3)
        ]
    );
    let mut without_last = sample();
    without_last.invalidate(RegionVerId::of(&region(3, "f", "", 1)));
    assert_eq!(id_of(without_last.locate_before(b"")), None);
}

#[test]
fn insert_drops_overlapping_entries() {
    let mut cache = sample();
    assert!(cache.insert(region(4, "a", "e", 1), None));
    assert_eq!(cache.len(), 2);
    assert_eq!(id_of(cache.locate(b"")), None);
    assert_eq!(id_of(cache.locate(b"a")), Some(4));
    assert_eq!(id_of(cache.locate(b"d")), Some(4));
    assert_eq!(id_of(cache.locate(b"e")), None);
    assert_eq!(id_of(cache.locate(b"f")), Some(3));
    // Without a known leader the first voter is asked.
    assert_eq!(route(&cache, "a").peer, peer(41, 1));
    // The same region moving (e.g. a stale range) replaces its old entry.
    assert!(cache.insert(region(4, "a", "c", 2), None));
    assert_eq!(id_of(cache.locate(b"d")), None);
    assert_eq!(cache.len(), 2);
}

#[test]
fn insert_refuses_an_older_epoch() {
    let mut cache = sample();
    assert!(cache.insert(region(2, "b", "c", 2), None));
    assert!(!cache.insert(region(2, "b", "d", 1), None));
    assert_eq!(id_of(cache.locate(b"c")), None);
    assert_eq!(
        cache.region(2).map(|r| r.end_key.clone()),
        Some(Bytes::from("c"))
    );
}

#[test]
fn learners_are_not_targeted() {
    let mut cache = RegionCache::new();
    let mut r = region(1, "", "", 1);
    r.peers[0].role = PeerRole::Learner as i32;
    cache.insert(r, None);
    assert_eq!(route(&cache, "k").peer, peer(12, 2));
}

#[test]
fn not_leader_with_leader_switches_without_pd() {
    let mut cache = sample();
    let r = route(&cache, "c");
    let recovery = cache.on_region_error(&r, &not_leader(2, Some(peer(23, 3))));
    assert_eq!(recovery, Recovery::RetryNow);
    assert_eq!(route(&cache, "c").peer, peer(23, 3));
    // The peer we asked naming itself: wait before asking again.
    let r = route(&cache, "c");
    let recovery = cache.on_region_error(&r, &not_leader(2, Some(peer(23, 3))));
    assert_eq!(recovery, Recovery::Backoff);
    // A region other than the one asked is untouched.
    assert_eq!(route(&cache, "a").peer, peer(11, 1));
}

#[test]
fn not_leader_naming_an_unknown_peer_drops_the_entry() {
    let mut cache = sample();
    let r = route(&cache, "c");
    let recovery = cache.on_region_error(&r, &not_leader(2, Some(peer(99, 9))));
    assert_eq!(recovery, Recovery::Backoff);
    assert_eq!(id_of(cache.locate(b"c")), None);
}

#[test]
fn not_leader_without_leader_tries_the_next_peer() {
    let mut cache = sample();
    let r = route(&cache, "c");
    assert_eq!(
        cache.on_region_error(&r, &not_leader(2, None)),
        Recovery::Backoff
    );
    assert_eq!(route(&cache, "c").peer, peer(22, 2));
    let r = route(&cache, "c");
    cache.on_region_error(&r, &not_leader(2, None));
    let r = route(&cache, "c");
    assert_eq!(r.peer, peer(23, 3));
    cache.on_region_error(&r, &not_leader(2, None));
    assert_eq!(route(&cache, "c").peer, peer(21, 1));
}

#[test]
fn epoch_not_match_replaces_with_current_regions() {
    let mut cache = sample();
    // Region 2 split into 2 = ["b", "c") and 5 = ["c", "d"); store 2 answered.
    let mut r = route(&cache, "c");
    r.peer = peer(22, 2);
    let split = vec![region(2, "b", "c", 2), region(5, "c", "d", 2)];
    assert_eq!(
        cache.on_region_error(&r, &epoch_not_match(split)),
        Recovery::RetryNow
    );
    assert_eq!(cache.len(), 4);
    let left = route(&cache, "b");
    let right = route(&cache, "c");
    assert_eq!((left.region.id, left.ver_id().version), (2, 2));
    assert_eq!((right.region.id, right.ver_id().version), (5, 2));
    // The targets are the peers on the store that answered.
    assert_eq!((left.peer, right.peer), (peer(22, 2), peer(52, 2)));
    assert_eq!(id_of(cache.locate(b"a")), Some(1));
}

#[test]
fn epoch_not_match_merging_over_several_entries() {
    let mut cache = sample();
    let r = route(&cache, "a");
    let merged = vec![region(1, "", "e", 3)];
    assert_eq!(
        cache.on_region_error(&r, &epoch_not_match(merged)),
        Recovery::RetryNow
    );
    assert_eq!(cache.len(), 2);
    assert_eq!(id_of(cache.locate(b"c")), Some(1));
    assert_eq!(cache.region(2), None);
}

#[test]
fn epoch_not_match_teaching_nothing_invalidates() {
    let mut cache = sample();
    let r = route(&cache, "c");
    assert_eq!(
        cache.on_region_error(&r, &epoch_not_match(vec![])),
        Recovery::Backoff
    );
    assert_eq!(id_of(cache.locate(b"c")), None);

    // A lagging store reporting an older epoch than the cache holds.
    let mut cache = sample();
    cache.insert(region(2, "b", "d", 3), None);
    let r = route(&cache, "c");
    let stale = vec![region(2, "b", "d", 2)];
    assert_eq!(
        cache.on_region_error(&r, &epoch_not_match(stale)),
        Recovery::Backoff
    );
    assert_eq!(id_of(cache.locate(b"c")), None);
}

#[test]
fn routing_errors_invalidate() {
    let errors = [
        errorpb::Error {
            region_not_found: Some(errorpb::RegionNotFound { region_id: 2 }),
            ..Default::default()
        },
        errorpb::Error {
            key_not_in_region: Some(errorpb::KeyNotInRegion {
                region_id: 2,
                ..Default::default()
            }),
            ..Default::default()
        },
        errorpb::Error {
            store_not_match: Some(errorpb::StoreNotMatch {
                request_store_id: 1,
                actual_store_id: 4,
            }),
            ..Default::default()
        },
        errorpb::Error {
            message: "something new".into(),
            ..Default::default()
        },
    ];
    for err in errors {
        let mut cache = sample();
        let r = route(&cache, "c");
        assert_eq!(
            cache.on_region_error(&r, &err),
            Recovery::Backoff,
            "{err:?}"
        );
        assert_eq!(id_of(cache.locate(b"c")), None, "{err:?}");
        assert_eq!(cache.len(), 2);
    }
}

#[test]
fn invalidation_ignores_versions_no_longer_cached() {
    let mut cache = sample();
    let old = route(&cache, "c");
    cache.insert(region(2, "b", "d", 2), None);
    assert!(!cache.invalidate(old.ver_id()));
    let err = errorpb::Error {
        region_not_found: Some(errorpb::RegionNotFound { region_id: 2 }),
        ..Default::default()
    };
    cache.on_region_error(&old, &err);
    assert_eq!(route(&cache, "c").ver_id().version, 2);
    assert!(cache.invalidate(route(&cache, "c").ver_id()));
    assert_eq!(id_of(cache.locate(b"c")), None);
}

#[test]
fn busy_and_stale_back_off_and_too_large_fails() {
    let mut cache = sample();
    let r = route(&cache, "c");
    let busy = errorpb::Error {
        server_is_busy: Some(errorpb::ServerIsBusy::default()),
        ..Default::default()
    };
    let stale = errorpb::Error {
        stale_command: Some(errorpb::StaleCommand {}),
        ..Default::default()
    };
    let too_large = errorpb::Error {
        raft_entry_too_large: Some(errorpb::RaftEntryTooLarge {
            region_id: 2,
            entry_size: 1 << 30,
        }),
        ..Default::default()
    };
    assert_eq!(cache.on_region_error(&r, &busy), Recovery::Backoff);
    assert_eq!(cache.on_region_error(&r, &stale), Recovery::Backoff);
    assert_eq!(cache.on_region_error(&r, &too_large), Recovery::Fail);
    assert_eq!(route(&cache, "c"), r);
}

#[test]
fn a_merging_region_backs_off_and_stays_cached() {
    let mut cache = sample();
    let r = route(&cache, "c");
    let merging = errorpb::Error {
        proposal_in_merging_mode: Some(errorpb::ProposalInMergingMode { region_id: 2 }),
        ..Default::default()
    };
    assert_eq!(cache.on_region_error(&r, &merging), Recovery::Backoff);
    assert_eq!(route(&cache, "c"), r);
}

#[test]
fn send_failures_rotate_peers_then_invalidate() {
    let mut cache = sample();
    let r = route(&cache, "c");
    assert!(cache.on_send_failure(&r));
    let r = route(&cache, "c");
    assert_eq!(r.peer, peer(22, 2));
    // A follower names the failed peer as leader: follow it, but only after a pause.
    assert_eq!(
        cache.on_region_error(&r, &not_leader(2, Some(peer(21, 1)))),
        Recovery::Backoff
    );
    let r = route(&cache, "c");
    assert_eq!(r.peer, peer(21, 1));
    assert!(cache.on_send_failure(&r));
    let r = route(&cache, "c");
    assert_eq!(r.peer, peer(22, 2));
    assert!(cache.on_send_failure(&r));
    let r = route(&cache, "c");
    assert_eq!(r.peer, peer(23, 3));
    // Every peer failed: reload from PD.
    assert!(!cache.on_send_failure(&r));
    assert_eq!(id_of(cache.locate(b"c")), None);
}

#[test]
fn send_failure_after_a_refresh_keeps_the_new_entry() {
    let mut cache = sample();
    let old = route(&cache, "c");
    cache.insert(region(2, "b", "d", 2), Some(peer(22, 2)));
    assert!(cache.on_send_failure(&old));
    assert_eq!(route(&cache, "c").peer, peer(22, 2));
}
