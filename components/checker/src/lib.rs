//! Histories of client operations and the checkers that judge them: what `rangekv verify`
//! records while it beats on a cluster, and what decides whether the cluster kept its promises.
//!
//! - [`history`]: the format (one JSON event a line: `invoke`, then `ok` / `fail` / `info`, as
//!   Jepsen records them), pairing of invocations with completions, and the [`CheckResult`]
//!   every checker returns: valid, invalid with named anomalies, or unknown.
//! - [`edn`]: the same histories as Jepsen's EDN op maps, for Elle's and Knossos's own tools.
//! - [`register`]: linearizability of independent registers (read / write / compare-and-swap),
//!   Wing & Gong's search with memoization; unknown outcomes may take effect at any point after
//!   their call.
//! - [`set`]: every acknowledged insert is in the final read; nothing appears that was never
//!   attempted or was refused.
//! - [`bank`]: transfers between accounts and snapshot reads of every balance: each read adds
//!   up to the same total, and no balance is negative.
//! - [`tso`]: timestamps are unique, increase per client, and respect real-time order.
//! - [`list_append`]: Elle's list-append: transactions append to and read lists; the
//!   dependency graph read off the lists is checked for the cycles (G0, G1c, G-single) and the
//!   aborted and intermediate reads snapshot isolation forbids.
//!
//! This crate depends on nothing heavier than serde, so it builds and tests in seconds.
//! Every checker is tested on histories it must reject, not only on ones it must accept.

pub mod bank;
pub mod edn;
pub mod history;
pub mod list_append;
pub mod register;
pub mod set;
pub mod tso;

pub use history::{Anomaly, CheckResult, Event, Type, Validity};
