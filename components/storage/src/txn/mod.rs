//! Percolator transactions, as TiKV runs them: one pure function per command.
//!
//! Each command reads one engine snapshot through an [`MvccReader`](crate::mvcc::MvccReader),
//! decides, and records its writes in an [`MvccTxn`](crate::mvcc::MvccTxn). Nothing here does IO
//! besides reading that snapshot: the caller holds the latches of the command's keys from before
//! the snapshot is taken until `txn.modifies` are applied (proposed through Raft as plain puts and
//! deletes), so no other write to those keys can slip between the decision and its effect.
//!
//! # The protocol
//!
//! A transaction takes `start_ts` from PD and buffers its writes. To commit, it **prewrites**
//! every key: a lock (`lock` CF) naming the transaction's **primary** key, with the value inline
//! or in `default` at `key + start_ts`. Prewrite fails if another transaction locked the key or
//! committed it after `start_ts` (a write conflict). When every key is prewritten the client takes
//! `commit_ts` from PD and **commits the primary**: a write record at `key + commit_ts` pointing
//! at `start_ts`, replacing the lock. That single write is the commit point; secondaries are then
//! committed the same way, or by whoever meets their locks and finds the primary committed
//! (**resolve lock**). A reader at `ts` that meets a lock of a transaction that may commit at or
//! before `ts` must wait or find out (**check_txn_status** on the primary): a primary whose TTL ran
//! out is rolled back, and with it, later, the whole transaction. A **rollback** removes the lock
//! and leaves a Rollback record at `key + start_ts`, so a delayed prewrite of the same transaction
//! fails instead of resurrecting it.
//!
//! Old versions are removed by [`gc`] once no reader at or above PD's GC safe point can see them.
//!
//! Variants, each in its command's module:
//! - **Pessimistic** transactions lock keys while they run ([`pessimistic_lock`]), checking for
//!   conflicts against `for_update_ts` instead of `start_ts`; prewrite then turns those locks into
//!   ordinary ones and needs no conflict check of its own for them.
//! - **Async commit** ([`prewrite`] with `secondaries`): every lock carries a `min_commit_ts`
//!   above any timestamp this store has served a read at, and the primary lists all secondaries.
//!   The transaction is committed once every key is prewritten; its commit ts is the largest
//!   `min_commit_ts`. Recovery reads every secondary ([`check_secondary_locks`]).
//! - **1PC** ([`prewrite`] with `try_one_pc`): a transaction whose keys are all in one prewrite
//!   request is committed by it, at a commit ts computed as for async commit.
//!
//! # Invariants
//!
//! - **Commands decide, apply only writes.** Every check happens here, on a snapshot taken after
//!   the keys' latches were acquired; the caller proposes `txn.modifies` unconditionally.
//! - **An `Err` leaves `txn` as it was given**: a command that fails records nothing, so a partly
//!   prewritten batch can never be proposed. Prewrite treats locked keys the same way: when any
//!   key is locked it reports them all and records nothing.
//! - **A 2PC transaction is committed iff its primary has a commit record**; an async-commit one
//!   iff every key holds its prewrite lock or commit record, and its commit ts is the largest
//!   `min_commit_ts` of its locks. Secondaries are committed only at that ts.
//! - **A rolled-back transaction stays rolled back on a key**: the rollback is a record at
//!   `start_ts` that every later prewrite, pessimistic lock and commit of that transaction sees.
//!   If another transaction's commit record already occupies `key + start_ts` (its commit ts equals
//!   our start ts, possible with async commit and 1PC), the rollback is folded into that record
//!   (`has_overlapped_rollback`); a commit landing on a Rollback record keeps the flag the same way.
//! - **Commit and rollback are idempotent**: a commit of a committed key succeeds, a rollback of a
//!   rolled-back key succeeds; each refuses the other's outcome (`TxnLockNotFound`, `Committed`).
//! - **Prewrite retries are idempotent**: our own lock is left as it is; a retry that arrives
//!   after the transaction committed succeeds without writing anything.
//! - **Async-commit and 1PC commit timestamps exceed `max_ts`**, the largest timestamp the store
//!   has served a read at, so no read already served can miss the commit.
//!
//! # The caller's duties
//!
//! - Hold the latches of every key a command touches (`scan_lock` and reads excepted) from before
//!   taking the snapshot until the writes are applied.
//! - Keep `max_ts` current: raise it to every read's ts, and to `caller_start_ts` (check_txn_status),
//!   `start_ts` (check_secondary_locks) and `for_update_ts` (pessimistic locks with
//!   `should_not_exist`) before running those commands, as TiKV does, so a commit ts computed later
//!   cannot land at or below a timestamp something already read at.
//! - For async commit and 1PC, make the new locks visible to readers **before** sampling `max_ts`
//!   for [`prewrite`] (TiKV's concurrency manager keeps them in an in-memory lock table that every
//!   read checks). Without that, a read that starts after `max_ts` was sampled and finishes before
//!   the lock is applied can miss a commit at a ts below its own.
//!
//! # Deliberately absent
//!
//! - No collapsing of rollbacks: every Rollback record is protected and stays until GC removes it
//!   once it lies at or below the GC safe point ([`gc`]). TiKV collapses unprotected rollbacks of
//!   optimistic transactions.
//! - No amending of a missing pessimistic lock (TiKV's support for pipelined pessimistic locks,
//!   which rangekv does not have): a `DoPessimisticCheck` mutation without its lock fails.
//! - No `rollback_ts` list in async-commit locks: a rollback written next to another transaction's
//!   lock is protected by the Rollback record itself, which that transaction's commit keeps
//!   (see the invariants).
//! - No waiting for locks (lock manager, deadlock detection), no old values for CDC, no
//!   `for_update_ts` constraints in pessimistic prewrite, no locking with conflict, no GC fences,
//!   no flashback, no pipelined (`Flush`) transactions.
//! - `CheckNotExists` is rejected in pessimistic prewrite (pessimistic transactions check
//!   existence when they lock).

mod check_secondary_locks;
mod check_txn_status;
mod cleanup;
mod commit;
mod common;
pub mod gc;
mod pessimistic_lock;
mod pessimistic_rollback;
mod prewrite;
mod resolve_lock;
mod rollback;
mod scan_lock;
#[cfg(test)]
mod test_util;
mod txn_heart_beat;

pub use check_secondary_locks::{check_secondary_locks, SecondaryLocksStatus};
pub use check_txn_status::{check_txn_status, CheckTxnStatusOptions, TxnStatus};
pub use cleanup::cleanup;
pub use commit::commit;
pub use common::{lock_expired, physical};
pub use gc::{gc, gc_keys, scan_gc_keys, GcBatchOutcome, GcKeyOutcome, GcPlan, GcScan};
pub use pessimistic_lock::{pessimistic_lock, PessimisticLockKeyResult, PessimisticLockProps};
pub use pessimistic_rollback::pessimistic_rollback;
pub use prewrite::{
    prewrite, Assertion, AssertionLevel, Mutation, MutationOp, PessimisticAction, PrewriteProps,
    PrewriteResult, TxnKind,
};
pub use resolve_lock::{resolve_lock, resolve_lock_lite};
pub use rollback::rollback;
pub use scan_lock::scan_lock;
pub use txn_heart_beat::txn_heart_beat;
