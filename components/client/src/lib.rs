//! The Rust client of rangekv: the raw key-value API and Percolator transactions over a
//! cluster of regions.
//!
//! [`RawClient`] turns calls on keys and key ranges into `tikvpb.Tikv` RPCs to the stores
//! leading the regions that hold them. It owns three caches, all filled lazily and corrected
//! by what failures teach:
//! - the **region cache** (`region_cache.rs`): regions by start key with the peer to ask
//!   (normally the leader), loaded from PD (`GetRegion`) on a miss;
//! - **store addresses**, from PD (`GetStore`);
//! - **connections**, one lazy gRPC channel per store address.
//!
//! # Sending one request
//!
//! Every request carries a `Context` naming the region id, the region epoch and the target
//! peer, as cached. The store checks them and answers a region error when the cache is
//! stale; the client fixes the cache from the error's contents and retries, re-resolving the
//! region from the cache each time:
//! - `NotLeader` with a leader: switch the cached leader to it and retry at once (no PD round
//!   trip); without a leader: try the next peer after a backoff;
//! - `EpochNotMatch`: replace the cached entries by the error's `current_regions`; none usable:
//!   drop the entry and reload from PD;
//! - `RegionNotFound`, `KeyNotInRegion`, `StoreNotMatch`: drop the entry, reload from PD;
//! - `ServerIsBusy`, `StaleCommand`: back off and retry;
//! - `RaftEntryTooLarge`: fail with [`Error::Region`]; it cannot succeed.
//!
//! A transport failure (store down, or no answer within `request_timeout`) marks the peer
//! suspect, drops its connection and address, and tries another peer of the region, which
//! redirects to the real leader; with every peer suspect, the region is reloaded from PD.
//! Validation failures reported by the store (`error` field, or an `InvalidArgument` status)
//! are final: [`Error::Server`].
//!
//! # What is sent again
//!
//! Reads (`get`, `batch_get`, scans) are sent again after any retryable failure. Writes
//! (`put`, `batch_put`, `delete`, `batch_delete`, `delete_range`, `compare_and_swap`) are
//! sent again only when the earlier attempt **certainly did not take effect**:
//! - the store answered a region error: it promises the write was not proposed, or that its
//!   entry was replaced;
//! - the connection was never established (refused, unreachable, connect timeout): a store
//!   that is down makes the client fail over and retry, as for reads (`delivery.rs`).
//!
//! Otherwise — the connection broke after it was established, no answer came within
//! `request_timeout`, or the store answered "write outcome undetermined" — the write fails
//! with [`Error::Undetermined`]: it may have taken effect, may still take effect later, or
//! may never; it is applied at most once. Resending a put after its answer was lost would not
//! be harmless: A's put(k, 1) applies, B's put(k, 2) applies, A's resend applies again, and
//! readers see 1, 2, 1. With this rule every history of reads, writes and compare-and-swaps
//! through this client is linearizable, an undetermined write counting as one that may have
//! happened at any point after its call. The caller decides what to do after
//! `Undetermined`: read the key, or resend the write if no other writer can interleave.
//! The peer that failed is avoided by the next request either way.
//!
//! Retries back off exponentially (`base_backoff` doubling up to `max_backoff`, default
//! 10 ms to 1 s), within `max_retry_time` (default 20 s) per operation; then the operation
//! fails with [`Error::Timeout`] naming the last failure. A cache that just learned a better
//! route retries without a pause, at most a few times in a row.
//!
//! # Operations spanning regions
//!
//! - **Batches** (`batch_get`, `batch_put`, `batch_delete`): keys sorted and deduplicated,
//!   grouped by region, cut into requests of at most `max_batch_keys` / `max_batch_bytes`,
//!   all sent in parallel; a part that hits a retryable error is grouped again by the new
//!   regions and retried on its own (`batch.rs`). `batch_get` returns the found pairs sorted
//!   by key.
//! - **Scans**: forward from the region holding `start`, reading `[cursor, min(end,
//!   region.end))` with the remaining limit, then moving the cursor to the region's end, until
//!   the limit is reached or `end` is passed; reverse scans walk down from the region holding
//!   the keys just below `end`. A region is asked at most `scan_batch_size` pairs at a time.
//!   `delete_range` walks forward the same way. See `plan.rs` for the arithmetic.
//!
//! # Transactions
//!
//! [`TransactionClient`] runs Percolator transactions (`transaction.rs`) with **snapshot
//! isolation**: a [`Transaction`] reads the data committed before its start timestamp plus
//! its own buffered writes, and commits all its writes atomically at its commit timestamp,
//! or fails with [`Error::WriteConflict`] if another transaction committed a write to one of
//! its keys meanwhile (optimistic), or after it locked the key (pessimistic). A
//! [`Snapshot`] reads at any timestamp. Transactional keys are stored, and regions of
//! transactional data are bounded, in their memcomparable encoding (`codec.rs`): the client
//! locates regions by the encoded key and sends the raw one. Reads that meet a lock resolve
//! it through its transaction's primary (`lock_resolver.rs`) or wait for it.
//!
//! What is retried differs from raw writes: every transactional command may be sent again
//! after a lost answer, because Percolator commands are idempotent per transaction
//! (`txn_rpc.rs`). The outcome of a transaction is the outcome of its primary key's commit:
//! before it, a failure rolls the transaction back and is returned; the primary's commit
//! itself is retried until confirmed, and reported as [`Error::Undetermined`] only if it
//! cannot be within the retry budget; after it, the transaction is committed whatever happens
//! to the other keys (their locks are committed by whoever meets them).
//!
//! # Deliberately absent
//!
//! - Raw API: API V1 keys, the default column family, no TTL.
//! - Transactions: async commit and 1PC only for optimistic transactions of at most 64 keys,
//!   no GC driven by the client; the transactional and raw APIs must not be used on the same
//!   keys.
//! - No snapshot across regions: a batch or a scan is atomic per region request at most.
//! - No exactly-once writes across lost answers: a write whose outcome is unknown is reported
//!   as [`Error::Undetermined`], not resent (that would need request ids remembered by the
//!   stores, which they do not keep).
//! - A batch or `delete_range` that fails may have written some of its parts; one whose part
//!   is undetermined fails with [`Error::Undetermined`] and the other parts in flight are
//!   abandoned (they too may or may not apply).
//! - No limit on in-flight parallel requests of one batch; replica reads (`Config::replica_read`)
//!   for raw point reads only, no stale reads; no batching of concurrent single-key calls into
//!   one RPC.

mod backoff;
mod batch;
mod cluster;
mod codec;
mod config;
mod delivery;
mod error;
mod lock_resolver;
mod plan;
mod raw;
mod region_cache;
mod rpc;
mod snapshot;
mod stores;
mod transaction;
mod txn_batch;
mod txn_plan;
mod txn_rpc;

pub use codec::{decode_exact as decode_key, encode as encode_key};
pub use config::Config;
pub use error::{Error, Result};
pub use raw::RawClient;
pub use snapshot::Snapshot;
pub use transaction::{Transaction, TransactionClient};
pub use txn_plan::Timestamp;

/// A key. Keys are compared as byte strings.
pub type Key = bytes::Bytes;
/// A value.
pub type Value = bytes::Bytes;
/// A key and its value.
pub type KvPair = (Key, Value);
