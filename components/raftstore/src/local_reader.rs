//! Lease reads on the calling thread (TiKV's `LocalReader`): a read whose region's leader on
//! this store holds a valid lease is granted without a message through the region's mailbox
//! and a poller round.
//!
//! Each leader publishes a [`LocalLease`] into its region's [`ReadSlot`]: the region (range and
//! epoch), the term, and the interval in which lease reads are allowed. The reader checks the
//! request against it exactly as the peer would ([`LocalLease::grant`]: store, epoch version,
//! keys in range, time) and otherwise sends the read to the peer, which answers it by its lease
//! or by ReadIndex as before ([`crate::peer`]'s read module).
//!
//! Invariants:
//! - A lease is published only while the peer itself would grant a lease read: it leads, no
//!   transfer is under way, every committed split is applied, it applied an entry of its term
//!   and everything it knows committed (a follower may already serve those entries to replica
//!   reads), and `now` is before `valid_until` (a lease suspended after an aborted transfer is not
//!   published at all: `raft_group::lease`).
//! - Whatever would end those conditions (stepping down, starting a transfer, a split
//!   committing, an entry committing, the region changing) is published before any message of the same poll round
//!   leaves the store: the peer publishes at the end of its `handle` and of its `post_persist`,
//!   and the transport sends nothing before its `flush` at the end of the round. So no other
//!   store can act on such a change (elect the transferee, apply the split and elect the new
//!   region's leader) while a stale lease is still readable here.
//! - A lease may be published shorter than the peer's own (it is renewed lazily, when it
//!   grew by a noticeable part of its length, to keep publishing cheap); never longer.
//!
//! Not here: ReadIndex, held reads of a new leader, the read itself (the read pool does it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use proto::metapb;

use crate::store::{ReadGrant, RequestHeader};
use crate::util::{epoch_version, key_in_range};

/// What a leader allows local readers to do.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalLease {
    pub region: metapb::Region,
    pub term: u64,
    pub valid_until: Instant,
}

impl LocalLease {
    /// The grant for `header` at `now`, or `None` when the peer must decide (it then also
    /// produces the precise error).
    pub fn grant(&self, store_id: u64, header: &RequestHeader, now: Instant) -> Option<ReadGrant> {
        if now >= self.valid_until {
            return None;
        }
        if header
            .peer
            .as_ref()
            .is_some_and(|p| p.store_id != 0 && p.store_id != store_id)
        {
            return None;
        }
        if header.epoch.as_ref().map(|e| e.version) != Some(epoch_version(&self.region)) {
            return None;
        }
        if !header
            .keys
            .iter()
            .all(|k| key_in_range(k, &self.region.start_key, &self.region.end_key))
        {
            return None;
        }
        Some(ReadGrant {
            region: self.region.clone(),
        })
    }

    /// Whether publishing `next` in place of `self` is needed: anything but a longer lease
    /// changes at once; a longer lease only once it grew by `slack`.
    fn worth_replacing(&self, next: &LeaseRef<'_>, slack: Duration) -> bool {
        self.region != *next.region
            || self.term != next.term
            || next.valid_until < self.valid_until
            || next.valid_until >= self.valid_until + slack
    }
}

/// A [`LocalLease`] borrowed from the peer, so that a round that changes nothing clones
/// nothing.
#[derive(Clone, Copy, Debug)]
pub struct LeaseRef<'a> {
    pub region: &'a metapb::Region,
    pub term: u64,
    pub valid_until: Instant,
}

impl LeaseRef<'_> {
    fn to_owned(self) -> LocalLease {
        LocalLease {
            region: self.region.clone(),
            term: self.term,
            valid_until: self.valid_until,
        }
    }
}

/// One region's published lease and the reads granted from it.
#[derive(Debug, Default)]
pub struct ReadSlot {
    lease: RwLock<Option<LocalLease>>,
    local_reads: AtomicU64,
}

impl ReadSlot {
    /// Publishes what the leader allows now (`None`: nothing). `slack`: see
    /// [`LocalLease::worth_replacing`].
    pub fn publish(&self, next: Option<LeaseRef<'_>>, slack: Duration) {
        let needed = match (&*self.lease.read(), &next) {
            (None, None) => false,
            (Some(cur), Some(next)) => cur.worth_replacing(next, slack),
            _ => true,
        };
        if needed {
            *self.lease.write() = next.map(LeaseRef::to_owned);
        }
    }

    /// Reads granted here, without the peer.
    pub fn local_reads(&self) -> u64 {
        self.local_reads.load(Ordering::Relaxed)
    }
}

/// The store's read slots, by region id. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct LocalReader {
    slots: Arc<RwLock<HashMap<u64, Arc<ReadSlot>>>>,
}

impl LocalReader {
    /// The slot of `region_id`, created on first use.
    pub fn slot(&self, region_id: u64) -> Arc<ReadSlot> {
        if let Some(s) = self.slots.read().get(&region_id) {
            return s.clone();
        }
        self.slots.write().entry(region_id).or_default().clone()
    }

    /// Forgets a region whose replica left this store.
    pub fn remove(&self, region_id: u64) {
        if let Some(slot) = self.slots.write().remove(&region_id) {
            *slot.lease.write() = None;
        }
    }

    /// A grant under the published lease of the request's region, if it covers the request.
    pub fn try_grant(
        &self,
        store_id: u64,
        header: &RequestHeader,
        now: Instant,
    ) -> Option<ReadGrant> {
        let slot = self.slots.read().get(&header.region_id)?.clone();
        let grant = slot.lease.read().as_ref()?.grant(store_id, header, now)?;
        slot.local_reads.fetch_add(1, Ordering::Relaxed);
        crate::metrics::LOCAL_LEASE_READS.inc();
        Some(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const STORE: u64 = 1;

    fn region() -> metapb::Region {
        metapb::Region {
            id: 7,
            start_key: Bytes::from_static(b"b"),
            end_key: Bytes::from_static(b"m"),
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 3,
            }),
            ..Default::default()
        }
    }

    fn lease(now: Instant) -> LocalLease {
        LocalLease {
            region: region(),
            term: 5,
            valid_until: now + Duration::from_millis(100),
        }
    }

    fn header(keys: &[&'static [u8]]) -> RequestHeader {
        RequestHeader {
            region_id: 7,
            epoch: region().region_epoch,
            peer: Some(metapb::Peer {
                id: 70,
                store_id: STORE,
                ..Default::default()
            }),
            keys: keys.iter().map(|k| Bytes::from_static(k)).collect(),
            replica_read: false,
        }
    }

    #[test]
    fn a_request_inside_the_lease_is_granted_with_the_region() {
        let now = Instant::now();
        let g = lease(now)
            .grant(STORE, &header(&[b"c", b"l"]), now)
            .unwrap();
        assert_eq!(g.region, region());
    }

    #[test]
    fn the_lease_ends_at_valid_until() {
        let now = Instant::now();
        let l = lease(now);
        assert!(l.grant(STORE, &header(&[b"c"]), l.valid_until).is_none());
        assert!(l
            .grant(
                STORE,
                &header(&[b"c"]),
                l.valid_until - Duration::from_nanos(1)
            )
            .is_some());
    }

    #[test]
    fn another_store_an_old_epoch_or_a_key_outside_go_to_the_peer() {
        let now = Instant::now();
        let l = lease(now);
        let mut h = header(&[b"c"]);
        h.peer.as_mut().unwrap().store_id = 2;
        assert!(l.grant(STORE, &h, now).is_none(), "store");
        let mut h = header(&[b"c"]);
        h.epoch.as_mut().unwrap().version = 2;
        assert!(l.grant(STORE, &h, now).is_none(), "epoch version");
        let mut h = header(&[b"c"]);
        h.epoch = None;
        assert!(l.grant(STORE, &h, now).is_none(), "no epoch");
        assert!(l.grant(STORE, &header(&[b"m"]), now).is_none(), "end key");
        assert!(
            l.grant(STORE, &header(&[b"a"]), now).is_none(),
            "before start"
        );
        // A conf change alone does not stop reads (as on the peer: version only).
        let mut h = header(&[b"c"]);
        h.epoch.as_mut().unwrap().conf_ver = 9;
        assert!(l.grant(STORE, &h, now).is_some());
    }

    #[test]
    fn shrinking_or_changing_publishes_at_once_growing_only_past_the_slack() {
        let now = Instant::now();
        let slack = Duration::from_millis(20);
        let cur = lease(now);
        let r = region();
        let same = LeaseRef {
            region: &r,
            term: cur.term,
            valid_until: cur.valid_until,
        };
        assert!(!cur.worth_replacing(&same, slack));
        let longer = |ms| LeaseRef {
            valid_until: cur.valid_until + Duration::from_millis(ms),
            ..same
        };
        assert!(!cur.worth_replacing(&longer(5), slack));
        assert!(cur.worth_replacing(&longer(20), slack));
        let shorter = LeaseRef {
            valid_until: cur.valid_until - Duration::from_millis(1),
            ..same
        };
        assert!(cur.worth_replacing(&shorter, slack));
        assert!(cur.worth_replacing(&LeaseRef { term: 6, ..same }, slack));
        let mut split = region();
        split.end_key = Bytes::from_static(b"f");
        assert!(cur.worth_replacing(
            &LeaseRef {
                region: &split,
                ..same
            },
            slack
        ));
    }

    #[test]
    fn slots_serve_until_withdrawn_or_removed() {
        let reader = LocalReader::default();
        let now = Instant::now();
        let h = header(&[b"c"]);
        assert!(reader.try_grant(STORE, &h, now).is_none(), "no slot yet");
        let slot = reader.slot(7);
        let r = region();
        let l = LeaseRef {
            region: &r,
            term: 5,
            valid_until: now + Duration::from_millis(100),
        };
        slot.publish(Some(l), Duration::from_millis(20));
        assert!(reader.try_grant(STORE, &h, now).is_some());
        assert_eq!(slot.local_reads(), 1);
        slot.publish(None, Duration::from_millis(20));
        assert!(reader.try_grant(STORE, &h, now).is_none(), "withdrawn");
        slot.publish(Some(l), Duration::from_millis(20));
        reader.remove(7);
        assert!(reader.try_grant(STORE, &h, now).is_none(), "removed");
        assert!(
            slot.lease.read().is_none(),
            "a holder of the old slot sees nothing"
        );
    }
}
