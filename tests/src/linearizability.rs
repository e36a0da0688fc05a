//! The linearizability checker of single-key registers, which lives in the `checker` crate
//! (shared with `rangekv verify`); re-exported here for the in-process tests.

pub use checker::register::{check_register, Event, Op};
