//! Scan lock (`KvScanLock`): the locks of a range older than a timestamp, for resolvers and GC.

use crate::mvcc::{Key, LockInfo, MvccReader, Result, TimeStamp};

use super::common::raw_key;

/// Locks with `start_ts` ≤ `max_version` of the keys in `[start, end)` (`end` `None`:
/// unbounded), in key order, at most `limit` (0: no limit). Read-only.
pub fn scan_lock(
    reader: &MvccReader<'_>,
    max_version: TimeStamp,
    start: &Key,
    end: Option<&Key>,
    limit: usize,
) -> Result<Vec<LockInfo>> {
    let end = end.map_or(&[][..], Key::as_encoded);
    reader
        .scan_locks(
            start.as_encoded(),
            end,
            |lock| lock.start_ts <= max_version,
            limit,
        )?
        .into_iter()
        .map(|(key, lock)| Ok(LockInfo::new(raw_key(&key)?, &lock)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{k, TestStore};
    use super::*;

    #[test]
    fn locks_up_to_max_version_in_the_range() {
        let s = TestStore::new();
        for (key, start_ts) in [(&b"a"[..], 10), (b"b", 30), (b"c", 20), (b"d", 10)] {
            s.must_prewrite_put(key, b"v", key, start_ts);
        }
        let scan = |start: &[u8], end: Option<&[u8]>, limit| {
            let end = end.map(k);
            s.read(|r| scan_lock(r, 20, &k(start), end.as_ref(), limit))
                .unwrap()
                .into_iter()
                .map(|l| (l.key, l.start_ts))
                .collect::<Vec<_>>()
        };
        let all = vec![
            (b"a".to_vec(), 10),
            (b"c".to_vec(), 20),
            (b"d".to_vec(), 10),
        ];
        assert_eq!(scan(b"", None, 0), all);
        assert_eq!(scan(b"b", Some(b"d"), 0), all[1..2].to_vec());
        assert_eq!(scan(b"", None, 2), all[..2].to_vec());
    }
}
