//! The seed of a randomized test: taken from an environment variable if set (`RANGEKV_LIN_SEED`
//! for the linearizability tests, `RANGEKV_TXN_SEED` for the transaction tests), else from the
//! clock, and printed at the start, so that a failing run's choices (faults, operations, keys)
//! can be replayed. Thread interleavings and timing are not replayed: a replay makes the same
//! choices, not necessarily in the same order relative to each other.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The environment variable that fixes the seed of the linearizability tests.
pub const SEED_VAR: &str = "RANGEKV_LIN_SEED";

/// The environment variable that fixes the seed of the transaction tests.
pub const TXN_SEED_VAR: &str = "RANGEKV_TXN_SEED";

/// The seed of this linearizability test run, printed with how to replay it.
pub fn test_seed(test: &str) -> u64 {
    seed_from(SEED_VAR, test)
}

/// The seed of this run of `test`, from `var` if set, printed with how to replay it.
pub fn seed_from(var: &str, test: &str) -> u64 {
    let seed = match std::env::var(var) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={s:?} is not a u64")),
        Err(_) => rand::rng().random(),
    };
    eprintln!("{test}: seed {seed} (replay with {var}={seed})");
    seed
}

/// An independent generator for one participant (`stream`: nemesis, client n, ...) of the run
/// seeded `seed`.
pub fn rng_for(seed: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
