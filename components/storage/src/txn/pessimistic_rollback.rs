//! Pessimistic rollback (`KVPessimisticRollback`): a pessimistic transaction releases locks it
//! took for a statement it is retrying or abandoning.
//!
//! Per key, our pessimistic lock is removed if its `for_update_ts` ≤ the given one; anything
//! else (another transaction's lock, our prewrite lock, a newer pessimistic lock) is left
//! alone. No Rollback record is written: the transaction itself may lock the key again.

use crate::mvcc::{Key, LockType, MvccReader, MvccTxn, Result, TimeStamp};

use super::common::all_or_nothing;

/// Removes transaction `start_ts`'s pessimistic locks on `keys` taken at or before
/// `for_update_ts`.
pub fn pessimistic_rollback(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    start_ts: TimeStamp,
    for_update_ts: TimeStamp,
    keys: &[Key],
) -> Result<()> {
    all_or_nothing(txn, |txn| {
        for key in keys {
            if let Some(lock) = reader.load_lock(key)? {
                if lock.kind() == LockType::Pessimistic
                    && lock.start_ts == start_ts
                    && lock.for_update_ts <= for_update_ts
                {
                    txn.unlock_key(key);
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{k, TestStore};
    use super::super::{pessimistic_lock, PessimisticLockProps};
    use super::*;

    #[test]
    fn only_our_pessimistic_locks_up_to_for_update_ts_are_removed() {
        let s = TestStore::new();
        let lock = |key: &[u8], start_ts, for_update_ts| {
            s.run(|r, t| {
                pessimistic_lock(
                    r,
                    t,
                    &PessimisticLockProps::new(key, start_ts, for_update_ts),
                    &[(k(key), false)],
                )
            })
            .unwrap();
        };
        lock(b"old", 10, 15);
        lock(b"new", 10, 25);
        lock(b"other", 11, 11);
        s.must_prewrite_put(b"prewritten", b"v", b"old", 10);
        let keys = [k(b"old"), k(b"new"), k(b"other"), k(b"prewritten")];
        s.run(|r, t| pessimistic_rollback(r, t, 10, 20, &keys))
            .unwrap();
        assert_eq!(s.lock(b"old"), None);
        assert!(s.lock(b"new").is_some());
        assert!(s.lock(b"other").is_some());
        assert!(s.lock(b"prewritten").is_some());
        assert_eq!(s.write_at(b"old", 10), None, "no rollback record");
    }
}
