//! Intentionally empty: everything lives in `tests/` (`raw.rs`, `txn.rs`, shared `common/`).
