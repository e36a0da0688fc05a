//! Builders of `metapb` values for tests.
//!
//! Conventions, so that tests of different crates describe the same layouts the same way:
//! - a store `id` listens on `127.0.0.1:{20160 + id}` ([`store`]);
//! - a region starts at epoch `conf_ver 1, version 1` unless a test says otherwise;
//! - [`RegionBuilder::voters_on`] gives region `r` the peer `r * 10 + s` on each store `s`.

use bytes::Bytes;
use proto::metapb::{Peer, Region, RegionEpoch, Store};

/// A voter `id` on store `store_id`.
pub fn peer(id: u64, store_id: u64) -> Peer {
    Peer {
        id,
        store_id,
        ..Default::default()
    }
}

/// Store `id`, addressed `127.0.0.1:{20160 + id}` (nothing listens there).
pub fn store(id: u64) -> Store {
    Store {
        id,
        address: format!("127.0.0.1:{}", 20160 + id),
        ..Default::default()
    }
}

/// An epoch; the arguments are in the order of the fields, `conf_ver` first.
pub fn epoch(conf_ver: u64, version: u64) -> RegionEpoch {
    RegionEpoch { conf_ver, version }
}

/// Starts a region `id` over the whole keyspace at epoch `conf_ver 1, version 1`, without
/// peers: `region(2).range("b", "d").version(3).voters_on(&[1, 2, 3]).build()`.
pub fn region(id: u64) -> RegionBuilder {
    RegionBuilder(Region {
        id,
        start_key: Bytes::new(),
        end_key: Bytes::new(),
        region_epoch: Some(epoch(1, 1)),
        peers: Vec::new(),
    })
}

/// A test region under construction; see [`region`].
#[must_use = "call .build()"]
pub struct RegionBuilder(Region);

impl RegionBuilder {
    /// The range `[start, end)`; an empty `end` means +inf.
    pub fn range(mut self, start: impl AsRef<[u8]>, end: impl AsRef<[u8]>) -> Self {
        self.0.start_key = Bytes::copy_from_slice(start.as_ref());
        self.0.end_key = Bytes::copy_from_slice(end.as_ref());
        self
    }

    /// The epoch version (bumped by splits).
    pub fn version(mut self, version: u64) -> Self {
        self.epoch_mut().version = version;
        self
    }

    /// The epoch's configuration version (bumped by membership changes).
    pub fn conf_ver(mut self, conf_ver: u64) -> Self {
        self.epoch_mut().conf_ver = conf_ver;
        self
    }

    /// These peers, replacing any set before.
    pub fn peers(mut self, peers: impl IntoIterator<Item = Peer>) -> Self {
        self.0.peers = peers.into_iter().collect();
        self
    }

    /// A voter on each of `stores`: peer `id * 10 + store`, replacing any peers set before.
    pub fn voters_on(self, stores: &[u64]) -> Self {
        let id = self.0.id;
        self.peers(stores.iter().map(|&s| peer(id * 10 + s, s)))
    }

    pub fn build(self) -> Region {
        self.0
    }

    fn epoch_mut(&mut self) -> &mut RegionEpoch {
        self.0.region_epoch.get_or_insert_with(Default::default)
    }
}

impl From<RegionBuilder> for Region {
    fn from(b: RegionBuilder) -> Region {
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_defaults_and_setters() {
        let r = region(2).build();
        assert_eq!(
            (r.id, &r.start_key[..], &r.end_key[..]),
            (2, &b""[..], &b""[..])
        );
        assert_eq!(r.region_epoch, Some(epoch(1, 1)));
        assert!(r.peers.is_empty());

        let r = region(2)
            .range("b", "d")
            .version(3)
            .conf_ver(4)
            .voters_on(&[1, 3])
            .build();
        assert_eq!((&r.start_key[..], &r.end_key[..]), (&b"b"[..], &b"d"[..]));
        assert_eq!(
            r.region_epoch,
            Some(RegionEpoch {
                conf_ver: 4,
                version: 3
            })
        );
        assert_eq!(r.peers, vec![peer(21, 1), peer(23, 3)]);
        assert_eq!(store(3).address, "127.0.0.1:20163");
    }
}
