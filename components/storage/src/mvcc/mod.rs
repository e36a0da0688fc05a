//! MVCC over the engine, in TiKV's layout (Percolator's three columns).
//!
//! - `default`: `key + start_ts → value`, for values too large to live inline.
//! - `lock`: `key → Lock` while a transaction holds the key.
//! - `write`: `key + commit_ts → Write` (Put / Delete / Lock commits, Rollbacks at start_ts).
//!
//! Keys are the memcomparable encoding of the user key ([`Key`]); timestamps are appended
//! encoded descending, so the versions of a key are adjacent, newest first.
//!
//! This module reads ([`MvccReader`]) and collects writes ([`MvccTxn`]); it decides nothing
//! about transactions, which is `crate::txn`'s job.

mod error;
mod key;
mod reader;
mod record;
mod txn;

pub use error::{Error, LockInfo, Result};
pub use key::Key;
pub use reader::{check_lock, KeyHistory, MvccReader, ScanItem, TxnCommitRecord};
pub use record::{Lock, LockType, Write, WriteType, SHORT_VALUE_MAX_LEN};
pub use txn::{Modify, MvccTxn};

/// A timestamp from PD's TSO: `physical_ms << 18 | logical`.
pub type TimeStamp = u64;
