//! Txn heart beat (`KvTxnHeartBeat`): a long transaction keeps its primary lock alive.
//!
//! Our lock on the primary gets TTL `max(ttl, advise_ttl)` (never shortened); without it the
//! transaction is gone (`TxnNotFound`): committed, rolled back, or never prewritten there.

use crate::mvcc::{Error, Key, MvccReader, MvccTxn, Result, TimeStamp};

use super::common::{all_or_nothing, raw_key};

/// Extends the TTL of transaction `start_ts`'s lock on `primary_key`; returns the TTL now in
/// force.
pub fn txn_heart_beat(
    reader: &MvccReader<'_>,
    txn: &mut MvccTxn,
    primary_key: &Key,
    start_ts: TimeStamp,
    advise_ttl: u64,
) -> Result<u64> {
    all_or_nothing(txn, |txn| match reader.load_lock(primary_key)? {
        Some(mut lock) if lock.start_ts == start_ts => {
            if lock.ttl < advise_ttl {
                lock.ttl = advise_ttl;
                txn.put_lock(primary_key, &lock);
            }
            Ok(lock.ttl)
        }
        _ => Err(Error::TxnNotFound {
            start_ts,
            key: raw_key(primary_key)?,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{k, TestStore};
    use super::*;

    #[test]
    fn heart_beats_only_extend_the_ttl() {
        let s = TestStore::new();
        s.must_prewrite_put(b"k", b"v", b"k", 10);
        let beat = |ttl| s.run(|r, t| txn_heart_beat(r, t, &k(b"k"), 10, ttl));
        assert_eq!(beat(100).unwrap(), 100);
        assert_eq!(beat(50).unwrap(), 100);
        assert_eq!(s.lock(b"k").unwrap().ttl, 100);
    }

    #[test]
    fn a_heart_beat_without_the_lock_finds_no_transaction() {
        let s = TestStore::new();
        s.must_put(b"k", b"v", 10, 20);
        let err = s
            .run(|r, t| txn_heart_beat(r, t, &k(b"k"), 10, 100))
            .unwrap_err();
        assert_eq!(
            err,
            Error::TxnNotFound {
                start_ts: 10,
                key: b"k".to_vec()
            }
        );
    }
}
