//! The YCSB core workloads as pure choices: which operation comes next and which record it
//! touches. No IO and no clock; the caller owns the random generator and the count of
//! records inserted so far, so every rule is tested on its own.
//!
//! As YCSB does: records are named `user` + a number; with the default `hashed` insert order
//! the number is an FNV-1a hash of the record's sequence number, so records (and inserts)
//! scatter over the key space instead of piling onto its end; the `ordered` order keeps them
//! sequential, which makes every insert land on the last region (a hotspot on purpose).
//! The Zipfian distribution is YCSB's *scrambled* Zipfian: the popular ranks are hashed over
//! all records, so hot records are not neighbours in the key space; `latest` favours the most
//! recently inserted records (workload D).

use anyhow::{bail, Result};
use rand::Rng;
use rand_distr::{Distribution as _, Zipf};

/// YCSB's skew constant.
const ZIPFIAN_CONSTANT: f64 = 0.99;
/// Longest scan (workload E), records; lengths are uniform in `1..=MAX_SCAN_LENGTH`.
pub const MAX_SCAN_LENGTH: u32 = 100;

/// What one operation of the run phase does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Update,
    Insert,
    Scan,
    /// Read a record, then write it back (YCSB's read-modify-write; not atomic, as in YCSB).
    ReadModifyWrite,
    /// One small read-write transaction (workload `t`, rangekv only).
    Transaction,
}

impl OpKind {
    pub const ALL: [OpKind; 6] = [
        OpKind::Read,
        OpKind::Update,
        OpKind::Insert,
        OpKind::Scan,
        OpKind::ReadModifyWrite,
        OpKind::Transaction,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::Scan => "scan",
            OpKind::ReadModifyWrite => "rmw",
            OpKind::Transaction => "txn",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// How records are picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    Uniform,
    Zipfian,
    Latest,
}

impl Distribution {
    pub fn parse(s: &str) -> Result<Distribution> {
        Ok(match s {
            "uniform" => Distribution::Uniform,
            "zipfian" => Distribution::Zipfian,
            "latest" => Distribution::Latest,
            other => bail!("unknown distribution {other:?} (expected uniform, zipfian or latest)"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
            Distribution::Latest => "latest",
        }
    }
}

/// Where inserted records go in the key space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertOrder {
    Hashed,
    Ordered,
}

impl InsertOrder {
    pub fn parse(s: &str) -> Result<InsertOrder> {
        Ok(match s {
            "hashed" => InsertOrder::Hashed,
            "ordered" => InsertOrder::Ordered,
            other => bail!("unknown insert order {other:?} (expected hashed or ordered)"),
        })
    }
}

/// One of YCSB's core workloads: the share of each operation kind (summing to 1) and the
/// distribution it uses unless told otherwise.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub name: &'static str,
    /// `(kind, share)`, shares summing to 1.
    pub mix: Vec<(OpKind, f64)>,
    pub distribution: Distribution,
}

impl Workload {
    /// YCSB's workloads A–F, `w` (updates only) and `i` (inserts only, YCSB's load phase).
    pub fn parse(name: &str) -> Result<Workload> {
        use OpKind::*;
        let (name, mix, distribution) = match name.to_ascii_lowercase().as_str() {
            "a" => ("a", vec![(Read, 0.5), (Update, 0.5)], Distribution::Zipfian),
            "b" => (
                "b",
                vec![(Read, 0.95), (Update, 0.05)],
                Distribution::Zipfian,
            ),
            "c" => ("c", vec![(Read, 1.0)], Distribution::Zipfian),
            "d" => (
                "d",
                vec![(Read, 0.95), (Insert, 0.05)],
                Distribution::Latest,
            ),
            "e" => (
                "e",
                vec![(Scan, 0.95), (Insert, 0.05)],
                Distribution::Zipfian,
            ),
            "f" => (
                "f",
                vec![(Read, 0.5), (ReadModifyWrite, 0.5)],
                Distribution::Zipfian,
            ),
            "w" => ("w", vec![(Update, 1.0)], Distribution::Zipfian),
            "i" => ("i", vec![(Insert, 1.0)], Distribution::Zipfian),
            other => bail!("unknown workload {other:?} (expected a-f, w, i or t)"),
        };
        Ok(Workload {
            name,
            mix,
            distribution,
        })
    }

    /// The next operation, drawn by share.
    pub fn choose(&self, rng: &mut impl Rng) -> OpKind {
        let mut x: f64 = rng.random();
        for &(kind, share) in &self.mix {
            if x < share {
                return kind;
            }
            x -= share;
        }
        // Rounding: the shares sum to 1 within an ulp.
        self.mix.last().expect("a workload has operations").0
    }
}

/// Picks existing records by sequence number.
pub struct KeyChooser {
    distribution: Distribution,
    zipf: Zipf<f64>,
}

impl KeyChooser {
    /// `records`: the records loaded before the run (the Zipfian's item count, as YCSB's).
    pub fn new(distribution: Distribution, records: u64) -> Result<KeyChooser> {
        if records == 0 {
            bail!("records must be positive");
        }
        Ok(KeyChooser {
            distribution,
            zipf: Zipf::new(records as f64, ZIPFIAN_CONSTANT)?,
        })
    }

    /// A record among the first `inserted` (which must be positive).
    pub fn next(&self, rng: &mut impl Rng, inserted: u64) -> u64 {
        debug_assert!(inserted > 0);
        match self.distribution {
            Distribution::Uniform => rng.random_range(0..inserted),
            Distribution::Zipfian => {
                // Ranks are 1-based, rank 1 the most popular; scrambled over every record.
                let rank = self.zipf.sample(rng) as u64;
                fnv1a64(rank) % inserted
            }
            Distribution::Latest => {
                let back = (self.zipf.sample(rng) as u64).saturating_sub(1);
                inserted - 1 - back.min(inserted - 1)
            }
        }
    }
}

/// Length of the next scan.
pub fn scan_length(rng: &mut impl Rng) -> u32 {
    rng.random_range(1..=MAX_SCAN_LENGTH)
}

/// The key of record `seq`.
pub fn record_key(seq: u64, order: InsertOrder) -> Vec<u8> {
    match order {
        InsertOrder::Ordered => format!("user{seq:020}").into_bytes(),
        InsertOrder::Hashed => format!("user{:020}", fnv1a64(seq)).into_bytes(),
    }
}

/// The first key after every record key (they all start with `user`).
pub const KEYS_END: &[u8] = b"uses";

/// FNV-1a over the number's little-endian bytes, as YCSB hashes key numbers.
pub fn fnv1a64(v: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_le_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn every_workload_has_shares_summing_to_one() {
        for name in ["a", "b", "c", "d", "e", "f", "w", "i"] {
            let w = Workload::parse(name).unwrap();
            let sum: f64 = w.mix.iter().map(|&(_, s)| s).sum();
            assert!((sum - 1.0).abs() < 1e-9, "{name}: {sum}");
        }
        assert!(Workload::parse("g").is_err());
        assert!(
            Workload::parse("t").is_err(),
            "t is the transactional bench, not YCSB"
        );
    }

    #[test]
    fn workloads_follow_ycsb() {
        use OpKind::*;
        let d = Workload::parse("D").unwrap();
        assert_eq!(d.distribution, Distribution::Latest);
        let e = Workload::parse("e").unwrap();
        assert_eq!(e.mix, vec![(Scan, 0.95), (Insert, 0.05)]);
        let f = Workload::parse("f").unwrap();
        assert_eq!(f.mix, vec![(Read, 0.5), (ReadModifyWrite, 0.5)]);
    }

    #[test]
    fn choices_follow_the_shares() {
        let w = Workload::parse("b").unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let n = 100_000;
        let reads = (0..n)
            .filter(|_| w.choose(&mut rng) == OpKind::Read)
            .count();
        let share = reads as f64 / n as f64;
        assert!((share - 0.95).abs() < 0.01, "{share}");
        let c = Workload::parse("c").unwrap();
        assert!((0..1000).all(|_| c.choose(&mut rng) == OpKind::Read));
    }

    #[test]
    fn uniform_covers_the_inserted_records_only() {
        let k = KeyChooser::new(Distribution::Uniform, 100).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = [false; 150];
        for _ in 0..20_000 {
            let i = k.next(&mut rng, 150) as usize;
            seen[i] = true;
        }
        assert!(
            seen.iter().all(|&s| s),
            "records inserted during the run are read too"
        );
    }

    #[test]
    fn zipfian_is_skewed_but_scrambled() {
        let k = KeyChooser::new(Distribution::Zipfian, 10_000).unwrap();
        let mut rng = StdRng::seed_from_u64(2);
        let mut counts = vec![0u32; 10_000];
        for _ in 0..100_000 {
            counts[k.next(&mut rng, 10_000) as usize] += 1;
        }
        let hottest = (0..counts.len()).max_by_key(|&i| counts[i]).unwrap();
        assert!(counts[hottest] > 5_000, "rank 1 takes a large share");
        assert_eq!(
            hottest as u64,
            fnv1a64(1) % 10_000,
            "and is scattered by the hash"
        );
        assert_ne!(hottest, 0);
    }

    #[test]
    fn latest_favours_the_newest_records() {
        let k = KeyChooser::new(Distribution::Latest, 1_000).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let picks: Vec<u64> = (0..10_000).map(|_| k.next(&mut rng, 5_000)).collect();
        assert!(picks.iter().all(|&i| i < 5_000));
        let newest = picks.iter().filter(|&&i| i == 4_999).count();
        assert!(
            newest > 1_000,
            "the newest record is the most popular: {newest}"
        );
        // With one record inserted every pick is that record.
        assert!((0..100).all(|_| k.next(&mut rng, 1) == 0));
    }

    #[test]
    fn keys_sort_inside_the_prefix_range() {
        for order in [InsertOrder::Hashed, InsertOrder::Ordered] {
            for seq in [0, 1, 42, u64::MAX] {
                let key = record_key(seq, order);
                assert!(key.starts_with(b"user"));
                assert!(key.as_slice() < KEYS_END);
            }
        }
        assert!(record_key(1, InsertOrder::Ordered) < record_key(2, InsertOrder::Ordered));
        assert_ne!(
            record_key(1, InsertOrder::Hashed),
            record_key(1, InsertOrder::Ordered)
        );
    }

    #[test]
    fn scan_lengths_stay_in_bounds() {
        let mut rng = StdRng::seed_from_u64(4);
        assert!((0..10_000)
            .map(|_| scan_length(&mut rng))
            .all(|l| (1..=MAX_SCAN_LENGTH).contains(&l)));
    }
}
