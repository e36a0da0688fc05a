//! The client's map of the keyspace: which region holds a key and which peer to ask.
//!
//! Entries are indexed by start key in a `BTreeMap`; a key belongs to the entry with the
//! greatest start key not above it, if that entry's range `[start_key, end_key)` (empty end:
//! +inf) contains it. The map may have gaps: regions are loaded lazily, one at a time, from PD.
//!
//! Every entry carries a *target* peer, normally the leader. Requests go there; region errors
//! and transport failures move it ([`RegionCache::on_region_error`],
//! [`RegionCache::on_send_failure`]). All methods are pure bookkeeping: no IO, no clock, so the
//! rules below are unit-tested directly.
//!
//! Invariants:
//! - Cached ranges never overlap: inserting a region first drops every entry it overlaps, and
//!   any other entry with the same id.
//! - An entry is never replaced by an older epoch of the same region (a stale PD answer or a
//!   lagging store cannot roll the cache back).
//! - Errors about a region version no longer cached change nothing: someone already refreshed
//!   that entry.
//! - The target peer is always one of the entry's peers, and never a learner unless the region
//!   has nothing else.
//!
//! Recovery rules (what [`Recovery`] the caller gets, and what changed in the cache):
//! - `NotLeader` naming a leader: target that leader, retry at once (after a backoff if that
//!   peer recently failed at the transport level). A leader unknown to the cached region means
//!   the membership changed: drop the entry and back off.
//! - `NotLeader` without a leader (election under way): target the next peer, back off.
//! - `EpochNotMatch`: replace the cached entries by `current_regions` (overlaps dropped), the
//!   targets being their peers on the store that answered; retry at once. If that teaches
//!   nothing (no regions, or only ones not newer than the cache), drop the entry and back off.
//! - `RegionNotFound`, `KeyNotInRegion`, `StoreNotMatch`, `RegionNotInitialized` and unknown
//!   errors: drop the entry (the next lookup asks PD) and back off.
//! - `ServerIsBusy`, `StaleCommand`, `MaxTimestampNotSynced`, `ProposalInMergingMode`: back
//!   off, cache unchanged (at least as long as a busy store's `backoff_ms` hint). A merging
//!   region answers `RegionNotFound` once merged, or `EpochNotMatch` once rolled back.
//! - `RaftEntryTooLarge`: fail; resending the same request cannot succeed.
//! - Transport failure: mark the peer's store suspect and target the next non-suspect peer
//!   (followers redirect to the real leader); when every peer is suspect, drop the entry.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use bytes::Bytes;
use proto::errorpb;
use proto::kvrpcpb::Context;
use proto::metapb::{Peer, PeerRole, Region};

/// Id of a region.
pub type RegionId = u64;
/// Id of a store.
pub type StoreId = u64;

/// One version of a region: its id and epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegionVerId {
    pub id: RegionId,
    pub conf_ver: u64,
    pub version: u64,
}

impl RegionVerId {
    pub fn of(region: &Region) -> RegionVerId {
        let (conf_ver, version) = region
            .region_epoch
            .as_ref()
            .map_or((0, 0), |e| (e.conf_ver, e.version));
        RegionVerId {
            id: region.id,
            conf_ver,
            version,
        }
    }

    /// Whether this version is strictly older than `other` (same region assumed).
    fn is_older_than(&self, other: &RegionVerId) -> bool {
        (self.version, self.conf_ver) < (other.version, other.conf_ver)
    }
}

/// Whether `key` lies in `region`'s `[start_key, end_key)` (empty end: +inf).
pub fn key_in_region(key: &[u8], region: &Region) -> bool {
    key >= &region.start_key[..] && (region.end_key.is_empty() || key < &region.end_key[..])
}

/// Where one request goes: the region as cached and the peer to ask.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionRoute {
    pub region: Region,
    pub peer: Peer,
}

impl RegionRoute {
    pub fn ver_id(&self) -> RegionVerId {
        RegionVerId::of(&self.region)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key_in_region(key, &self.region)
    }

    /// The request context naming this region version and peer.
    pub fn context(&self) -> Context {
        Context {
            region_id: self.region.id,
            region_epoch: self.region.region_epoch,
            peer: Some(self.peer),
            ..Default::default()
        }
    }
}

/// What to do after a region error was applied to the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// The cache now routes better: retry at once.
    RetryNow,
    /// Retry after a pause.
    Backoff,
    /// Retrying cannot help: return the error.
    Fail,
}

#[derive(Clone, Debug)]
struct Entry {
    region: Region,
    /// The peer requests go to, normally the leader.
    target: Option<Peer>,
    /// Stores of peers that failed at the transport level since the entry was cached.
    suspects: Vec<StoreId>,
}

impl Entry {
    fn new(region: Region, leader: Option<Peer>) -> Entry {
        let target = leader.and_then(|l| region.peers.iter().find(|p| p.id == l.id).copied());
        Entry {
            region,
            target,
            suspects: Vec::new(),
        }
    }

    /// Peers that can lead: voters, or every peer if there is no voter.
    fn candidates(&self) -> Vec<Peer> {
        let voters: Vec<Peer> = (self.region.peers.iter())
            .filter(|p| p.role() != PeerRole::Learner)
            .copied()
            .collect();
        if voters.is_empty() {
            self.region.peers.clone()
        } else {
            voters
        }
    }

    fn is_suspect(&self, peer: &Peer) -> bool {
        self.suspects.contains(&peer.store_id)
    }

    fn target(&self) -> Option<Peer> {
        let candidates = self.candidates();
        self.target
            .or_else(|| candidates.iter().find(|p| !self.is_suspect(p)).copied())
            .or_else(|| candidates.first().copied())
    }

    /// The first non-suspect candidate after `peer_id` in cyclic order.
    fn next_peer_after(&self, peer_id: u64) -> Option<Peer> {
        let candidates = self.candidates();
        let pos = candidates.iter().position(|p| p.id == peer_id);
        let n = candidates.len();
        let first = pos.map_or(0, |i| i + 1);
        (0..n)
            .map(|i| candidates[(first + i) % n])
            .find(|p| p.id != peer_id && !self.is_suspect(p))
    }

    fn route(&self) -> Option<RegionRoute> {
        Some(RegionRoute {
            region: self.region.clone(),
            peer: self.target()?,
        })
    }
}

/// The region cache; see the module docs.
#[derive(Debug, Default)]
pub struct RegionCache {
    by_start: BTreeMap<Bytes, RegionId>,
    by_id: HashMap<RegionId, Entry>,
}

impl RegionCache {
    pub fn new() -> RegionCache {
        RegionCache::default()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The cached region with `id`.
    #[cfg(test)]
    pub fn region(&self, id: RegionId) -> Option<&Region> {
        self.by_id.get(&id).map(|e| &e.region)
    }

    fn entry_of(&self, key: &[u8]) -> Option<&Entry> {
        let (_, id) = (self.by_start)
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let entry = self.by_id.get(id)?;
        key_in_region(key, &entry.region).then_some(entry)
    }

    /// The cached region containing `key`.
    pub fn region_of(&self, key: &[u8]) -> Option<&Region> {
        self.entry_of(key).map(|e| &e.region)
    }

    /// The route of the region containing `key`, if cached.
    pub fn locate(&self, key: &[u8]) -> Option<RegionRoute> {
        self.entry_of(key)?.route()
    }

    /// The route of the region holding the keys just below `upper` (empty: +inf), i.e. with
    /// `start_key < upper <= end_key`, if cached. This is the region a reverse scan bounded
    /// by `upper` reads first.
    pub fn locate_before(&self, upper: &[u8]) -> Option<RegionRoute> {
        let (_, id) = if upper.is_empty() {
            self.by_start.iter().next_back()?
        } else {
            (self.by_start)
                .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(upper)))
                .next_back()?
        };
        let entry = self.by_id.get(id)?;
        let end = &entry.region.end_key;
        let reaches = end.is_empty() || (!upper.is_empty() && &end[..] >= upper);
        if !reaches {
            return None;
        }
        entry.route()
    }

    /// Caches `region` led by `leader`, dropping every overlapping entry. Refused (returning
    /// `false`) if the cache holds a newer epoch of the same region.
    pub fn insert(&mut self, region: Region, leader: Option<Peer>) -> bool {
        let ver = RegionVerId::of(&region);
        if let Some(old) = self.by_id.get(&region.id) {
            if ver.is_older_than(&RegionVerId::of(&old.region)) {
                return false;
            }
        }
        self.remove(region.id);
        self.remove_overlapping(&region.start_key, &region.end_key);
        self.by_start.insert(region.start_key.clone(), region.id);
        self.by_id.insert(region.id, Entry::new(region, leader));
        true
    }

    /// Drops the entry of `ver` if the cache still holds exactly that version.
    pub fn invalidate(&mut self, ver: RegionVerId) -> bool {
        match self.by_id.get(&ver.id) {
            Some(e) if RegionVerId::of(&e.region) == ver => {
                self.remove(ver.id);
                true
            }
            _ => false,
        }
    }

    /// Applies a region error answered for `route`; see the module docs for the rules.
    pub fn on_region_error(&mut self, route: &RegionRoute, err: &errorpb::Error) -> Recovery {
        let ver = route.ver_id();
        if let Some(not_leader) = &err.not_leader {
            let leader = not_leader.leader.filter(|l| l.id != 0);
            return self.on_not_leader(route, leader);
        }
        if let Some(epoch) = &err.epoch_not_match {
            return self.on_epoch_not_match(route, &epoch.current_regions);
        }
        if err.raft_entry_too_large.is_some() {
            return Recovery::Fail;
        }
        if err.server_is_busy.is_some()
            || err.stale_command.is_some()
            || err.max_timestamp_not_synced.is_some()
            || err.proposal_in_merging_mode.is_some()
        {
            return Recovery::Backoff;
        }
        // RegionNotFound, KeyNotInRegion, StoreNotMatch, RegionNotInitialized, unknown.
        self.invalidate(ver);
        Recovery::Backoff
    }

    /// Notes that `route.peer` could not be reached and targets another peer. Returns `false`
    /// if no peer is left to try (the entry was dropped).
    pub fn on_send_failure(&mut self, route: &RegionRoute) -> bool {
        let ver = route.ver_id();
        let Some(entry) = self.by_id.get_mut(&ver.id) else {
            return false;
        };
        if RegionVerId::of(&entry.region) != ver {
            return true; // Already refreshed; retry with the new entry.
        }
        if !entry.suspects.contains(&route.peer.store_id) {
            entry.suspects.push(route.peer.store_id);
        }
        match entry.next_peer_after(route.peer.id) {
            Some(next) => {
                entry.target = Some(next);
                true
            }
            None => {
                self.remove(ver.id);
                false
            }
        }
    }

    fn on_not_leader(&mut self, route: &RegionRoute, leader: Option<Peer>) -> Recovery {
        let ver = route.ver_id();
        let Some(entry) = self.by_id.get_mut(&ver.id) else {
            return Recovery::Backoff;
        };
        let Some(leader) = leader else {
            // No leader known (election): try the next peer after a pause.
            if let Some(next) = entry.next_peer_after(route.peer.id) {
                entry.target = Some(next);
            }
            return Recovery::Backoff;
        };
        let Some(peer) = entry
            .region
            .peers
            .iter()
            .find(|p| p.id == leader.id)
            .copied()
        else {
            // A leader we do not know: the membership changed.
            self.invalidate(ver);
            return Recovery::Backoff;
        };
        entry.target = Some(peer);
        let was_suspect = entry.is_suspect(&peer);
        entry.suspects.retain(|s| *s != peer.store_id);
        if peer.id == route.peer.id || was_suspect {
            Recovery::Backoff
        } else {
            Recovery::RetryNow
        }
    }

    fn on_epoch_not_match(&mut self, route: &RegionRoute, current: &[Region]) -> Recovery {
        let ver = route.ver_id();
        let mut learned = false;
        for region in current {
            if RegionVerId::of(region) == ver {
                continue;
            }
            let leader = (region.peers.iter())
                .find(|p| p.store_id == route.peer.store_id)
                .copied();
            learned |= self.insert(region.clone(), leader);
        }
        if learned {
            Recovery::RetryNow
        } else {
            self.invalidate(ver);
            Recovery::Backoff
        }
    }

    fn remove(&mut self, id: RegionId) -> Option<Entry> {
        let entry = self.by_id.remove(&id)?;
        if self.by_start.get(&entry.region.start_key) == Some(&id) {
            self.by_start.remove(&entry.region.start_key);
        }
        Some(entry)
    }

    fn remove_overlapping(&mut self, start: &[u8], end: &[u8]) {
        let mut doomed = Vec::new();
        let before = (self.by_start)
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(start)))
            .next_back();
        if let Some((_, id)) = before {
            if let Some(e) = self.by_id.get(id) {
                if e.region.end_key.is_empty() || &e.region.end_key[..] > start {
                    doomed.push(*id);
                }
            }
        }
        for (key, id) in self
            .by_start
            .range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
        {
            if !end.is_empty() && &key[..] >= end {
                break;
            }
            doomed.push(*id);
        }
        for id in doomed {
            self.remove(id);
        }
    }
}

#[cfg(test)]
#[path = "region_cache_tests.rs"]
mod tests;
