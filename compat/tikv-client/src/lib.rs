//! Intentionally empty: everything lives in `tests/raw.rs`.
