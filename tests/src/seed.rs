//! The seed of a randomized test: taken from `RANGEKV_LIN_SEED` if set, else from the clock,
//! and printed at the start, so that a failing run's choices (faults, operations, keys) can be
//! replayed. Thread interleavings and timing are not replayed: a replay makes the same choices,
//! not necessarily in the same order relative to each other.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The environment variable that fixes the seed.
pub const SEED_VAR: &str = "RANGEKV_LIN_SEED";

/// The seed of this run, printed with how to replay it.
pub fn test_seed(test: &str) -> u64 {
    let seed = match std::env::var(SEED_VAR) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_VAR}={s:?} is not a u64")),
        Err(_) => rand::rng().random(),
    };
    eprintln!("{test}: seed {seed} (replay with {SEED_VAR}={seed})");
    seed
}

/// An independent generator for one participant (`stream`: nemesis, client n, ...) of the run
/// seeded `seed`.
pub fn rng_for(seed: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
