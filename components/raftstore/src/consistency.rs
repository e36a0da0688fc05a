//! Consistency checks: are the replicas of a region byte-for-byte the same?
//!
//! Protocol (TiKV's, in two log entries):
//! 1. The leader proposes `ComputeHash`. Every replica applying it first writes out its apply
//!    batch so far (with the apply state covering it), then hashes the region's data in every
//!    data column family as of that entry, remembers `(index, hash)` and reports it to its peer.
//! 2. A leader that learns its own hash proposes `VerifyHash { hash_index, hash }`. Every
//!    replica applying it compares with the hash it computed at `hash_index`: a mismatch is a
//!    divergence, reported loudly (an error log, the `rangekv_consistency_mismatches_total`
//!    metric, and the peer's status), never silently repaired.
//!
//! Invariants:
//! - Every replica hashes the same log position, so equal logs give equal hashes; the hash
//!   covers keys and values with their lengths, per column family, in key order.
//! - Hashing is done on the apply worker, so it sees exactly the entries up to its index.
//! - A replica that did not compute the hash (it restarted in between, or a newer check
//!   overtook it) has nothing to compare and says so; that is not a mismatch.
//!
//! Implementation caveats: the hash is computed on the apply worker and stalls the other
//! regions of that worker while it runs (a region is bounded by the split size); checks run on
//! request (tests, operators), not on a schedule.

use crc32fast::Hasher;
use engine::{keys, Engine, CF_DEFAULT, CF_LOCK, CF_WRITE};
use proto::metapb;

use crate::Result;

/// The data column families a region's hash covers.
const DATA_CFS: [&str; 3] = [CF_DEFAULT, CF_LOCK, CF_WRITE];

/// The hash of `region`'s data in `engine` as it is now.
pub fn region_hash(engine: &Engine, region: &metapb::Region) -> Result<u32> {
    let snap = engine.snapshot();
    let (start, end) = (
        keys::data_key(&region.start_key),
        keys::data_end_key(&region.end_key),
    );
    let mut h = Hasher::new();
    h.update(&region.id.to_be_bytes());
    for cf in DATA_CFS {
        h.update(cf.as_bytes());
        snap.scan(cf, &start, Some(&end), false, |k, v| {
            h.update(&(k.len() as u64).to_be_bytes());
            h.update(k);
            h.update(&(v.len() as u64).to_be_bytes());
            h.update(v);
            true
        })?;
    }
    Ok(h.finalize())
}

/// What a replica concludes from the leader's hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Same data as the leader at that index.
    Match,
    /// Different data: the replicas diverged.
    Mismatch { own: u32 },
    /// This replica has no hash of that index to compare with.
    Unknown,
}

/// Compares the leader's `hash` of `index` with this replica's last computed hash.
pub fn verify(own: Option<(u64, u32)>, index: u64, hash: u32) -> Verdict {
    match own {
        Some((i, h)) if i == index && h == hash => Verdict::Match,
        Some((i, h)) if i == index => Verdict::Mismatch { own: h },
        _ => Verdict::Unknown,
    }
}

/// What a replica reports to its peer after applying a consistency command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsistencyEvent {
    Computed { index: u64, hash: u32 },
    Verified { index: u64, verdict: Verdict },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let cases = [
            (Some((7, 42)), 7, 42, Verdict::Match),
            (Some((7, 41)), 7, 42, Verdict::Mismatch { own: 41 }),
            // A newer check overtook this one here, or an older one is all we have.
            (Some((9, 42)), 7, 42, Verdict::Unknown),
            (Some((5, 42)), 7, 42, Verdict::Unknown),
            // Restarted since: nothing computed.
            (None, 7, 42, Verdict::Unknown),
        ];
        for (own, index, hash, want) in cases {
            assert_eq!(
                verify(own, index, hash),
                want,
                "{own:?} vs ({index}, {hash})"
            );
        }
    }

    #[test]
    fn the_hash_covers_exactly_the_region_and_every_byte_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &Default::default()).unwrap();
        let region = metapb::Region {
            id: 1,
            start_key: b"b".to_vec().into(),
            end_key: b"d".to_vec().into(),
            ..Default::default()
        };
        let put = |cf: &'static str, k: &[u8], v: &[u8]| {
            let mut wb = engine::WriteBatch::new();
            wb.put(cf, &keys::data_key(k), v);
            engine.write(wb, false).unwrap();
        };
        put(CF_DEFAULT, b"b1", b"x");
        let base = region_hash(&engine, &region).unwrap();
        // Outside the range: no change.
        put(CF_DEFAULT, b"a", b"x");
        put(CF_DEFAULT, b"d", b"x");
        put(engine::CF_RAFT, b"c", b"x");
        assert_eq!(region_hash(&engine, &region).unwrap(), base);
        // A value, a key in another data column family: changes.
        put(CF_DEFAULT, b"b1", b"y");
        let changed = region_hash(&engine, &region).unwrap();
        assert_ne!(changed, base);
        put(CF_WRITE, b"c", b"");
        assert_ne!(region_hash(&engine, &region).unwrap(), changed);
    }
}
