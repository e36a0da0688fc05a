//! Steps several commands share: TTL expiry, commit and rollback records, existence checks.

use crate::mvcc::{
    Error, Key, Lock, LockInfo, LockType, MvccReader, MvccTxn, Result, TimeStamp, Write, WriteType,
};

/// Bits of a timestamp below its physical part (`physical_ms << 18 | logical`).
const LOGICAL_BITS: u32 = 18;

/// The physical part of a timestamp, in milliseconds.
pub fn physical(ts: TimeStamp) -> u64 {
    ts >> LOGICAL_BITS
}

/// Whether `lock`'s TTL (milliseconds after its start_ts's physical time) ran out before
/// `current_ts`.
pub fn lock_expired(lock: &Lock, current_ts: TimeStamp) -> bool {
    physical(lock.start_ts).saturating_add(lock.ttl) < physical(current_ts)
}

pub(super) fn raw_key(key: &Key) -> Result<Vec<u8>> {
    key.to_raw()
        .map_err(|e| Error::Corrupt(format!("undecodable key: {e}")))
}

pub(super) fn lock_info(key: &Key, lock: &Lock) -> Result<Box<LockInfo>> {
    Ok(Box::new(LockInfo::new(raw_key(key)?, lock)))
}

/// Runs `f` on `txn`; if it fails, drops whatever it recorded, so that an `Err` never leaves
/// partial writes behind for the caller to propose.
pub(super) fn all_or_nothing<T>(
    txn: &mut MvccTxn,
    f: impl FnOnce(&mut MvccTxn) -> Result<T>,
) -> Result<T> {
    let mark = txn.modifies.len();
    let result = f(txn);
    if result.is_err() {
        txn.modifies.truncate(mark);
    }
    result
}

/// Whether a write record says that the transaction whose start_ts equals the record's
/// commit ts was rolled back (a Rollback record, or a rollback folded into a commit record).
pub(super) fn is_rollback_of_own_ts(write: &Write) -> bool {
    write.kind() == WriteType::Rollback || write.has_overlapped_rollback
}

/// Records the commit of `lock` on `key` at `commit_ts`. A leftover pessimistic lock commits as
/// a Lock record. If a Rollback record of another transaction (whose start_ts is our commit_ts)
/// sits in the slot, the commit record takes it over as `has_overlapped_rollback`, so that
/// transaction stays rolled back.
pub(super) fn put_commit_record(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    key: &Key,
    lock: &Lock,
    commit_ts: TimeStamp,
) -> Result<()> {
    let kind = match lock.kind() {
        LockType::Put => WriteType::Put,
        LockType::Delete => WriteType::Delete,
        LockType::Lock | LockType::Pessimistic => WriteType::Lock,
    };
    let mut write = Write::new(kind, lock.start_ts, lock.short_value.clone());
    if let Some((ts, existing)) = reader.seek_write(key, commit_ts)? {
        if ts == commit_ts {
            if existing.kind() != WriteType::Rollback {
                // Two commits at one ts on one key: the lock we hold rules that out.
                return Err(Error::Corrupt(format!(
                    "{key:?}: commit of {} at {commit_ts} meets the commit of {}",
                    lock.start_ts, existing.start_ts
                )));
            }
            write.has_overlapped_rollback = true;
        }
    }
    txn.put_write(key, commit_ts, &write);
    Ok(())
}

/// Records that transaction `start_ts` is rolled back on `key`: a Rollback record at start_ts,
/// or, if another transaction's commit record occupies that slot, that record with
/// `has_overlapped_rollback` set. Nothing if the rollback is already recorded.
pub(super) fn put_rollback_record(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    key: &Key,
    start_ts: TimeStamp,
) -> Result<()> {
    match reader.seek_write(key, start_ts)? {
        Some((ts, mut write)) if ts == start_ts => {
            if write.start_ts == start_ts {
                // Our own record at our start_ts can only be our Rollback (commit_ts > start_ts).
                debug_assert_eq!(write.kind(), WriteType::Rollback);
                return Ok(());
            }
            if !write.has_overlapped_rollback {
                write.has_overlapped_rollback = true;
                txn.put_write(key, ts, &write);
            }
        }
        _ => txn.put_write(
            key,
            start_ts,
            &Write::new(WriteType::Rollback, start_ts, None),
        ),
    }
    Ok(())
}

/// Rolls back our `lock` on `key`: removes the lock and its value, records the rollback.
pub(super) fn rollback_lock(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    key: &Key,
    lock: &Lock,
) -> Result<()> {
    if lock.kind() == LockType::Put && lock.short_value.is_none() {
        txn.delete_value(key, lock.start_ts);
    }
    put_rollback_record(reader, txn, key, lock.start_ts)?;
    txn.unlock_key(key);
    Ok(())
}

/// For a mutation that requires `key` not to exist: fails with `AlreadyExist` if the newest
/// write record (`newest`, at `commit_ts`) or, below Lock and Rollback records, the newest data
/// record is a Put.
pub(super) fn check_not_exists(
    reader: &MvccReader<'_>,
    key: &Key,
    commit_ts: TimeStamp,
    newest: &Write,
) -> Result<()> {
    let exists = match newest.kind() {
        WriteType::Put => true,
        WriteType::Delete => false,
        WriteType::Lock | WriteType::Rollback => matches!(
            reader.get_write(key, commit_ts.saturating_sub(1))?,
            Some((_, w)) if w.kind() == WriteType::Put
        ),
    };
    if exists {
        return Err(Error::AlreadyExist { key: raw_key(key)? });
    }
    Ok(())
}
