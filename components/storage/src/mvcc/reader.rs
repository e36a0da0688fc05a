//! Reading MVCC data from a snapshot: locks, commit records, and values as of a timestamp.
//!
//! A read at `ts` sees exactly the data writes (Put / Delete) committed at or before `ts`,
//! skipping Lock and Rollback records, and fails with `KeyIsLocked` when it meets a lock that
//! [`Lock::blocks_read_at`] `ts` (unless the caller resolved that transaction already and lists
//! its start_ts in `bypass`).
//!
//! Deliberately absent: caching of cursors across calls, range deletion awareness (GC writes
//! plain deletes, `crate::txn::gc`).

use std::collections::BTreeMap;

use engine::{keys, Snapshot, CF_DEFAULT, CF_LOCK, CF_WRITE};

use super::{Error, Key, Lock, LockInfo, Result, TimeStamp, Write, WriteType};

/// What the write column family says about one transaction on one key.
#[derive(Clone, Debug, PartialEq)]
pub enum TxnCommitRecord {
    /// Committed at `commit_ts` with this record.
    Committed { commit_ts: TimeStamp, write: Write },
    /// Rolled back (a Rollback record at start_ts, or one folded into another commit).
    RolledBack,
    /// No record: neither committed nor rolled back (yet).
    None,
}

/// One result of a scan: a user key and its value, or the lock met at that key.
pub type ScanItem = Result<(Vec<u8>, Vec<u8>)>;

/// An encoded user key and its write records (commit ts, record), as a scan collects them.
type VersionGroup = (Vec<u8>, Vec<(TimeStamp, Write)>);

/// Reads MVCC data from one engine snapshot.
pub struct MvccReader<'a> {
    snap: &'a Snapshot<'a>,
}

/// The exclusive upper bound of every versioned key of `key`.
fn versions_end(key: &Key) -> Vec<u8> {
    let mut end = keys::data_key(key.as_encoded());
    end.extend_from_slice(&[0xff; 8]);
    end.push(0);
    end
}

fn raw_key(encoded: &[u8]) -> Result<Vec<u8>> {
    Key::from_encoded(encoded.to_vec())
        .to_raw()
        .map_err(|e| Error::Corrupt(format!("undecodable key: {e}")))
}

impl<'a> MvccReader<'a> {
    pub fn new(snap: &'a Snapshot<'a>) -> MvccReader<'a> {
        MvccReader { snap }
    }

    pub fn load_lock(&self, key: &Key) -> Result<Option<Lock>> {
        match self.snap.get(CF_LOCK, &keys::data_key(key.as_encoded()))? {
            Some(v) => Ok(Some(Lock::parse(&v)?)),
            None => Ok(None),
        }
    }

    /// Write records of `key` with commit_ts ≤ `ts`, newest first, until `f` returns false.
    pub fn versions(
        &self,
        key: &Key,
        ts: TimeStamp,
        mut f: impl FnMut(TimeStamp, Write) -> bool,
    ) -> Result<()> {
        let start = keys::data_key(key.append_ts(ts).as_encoded());
        let mut err = None;
        self.snap
            .scan(CF_WRITE, &start, Some(&versions_end(key)), false, |k, v| {
                let Some((_, commit_ts)) = Key::split_on_ts(keys::origin_key(k)) else {
                    err = Some(Error::Corrupt("write key without timestamp".into()));
                    return false;
                };
                match Write::parse(v) {
                    Ok(w) => f(commit_ts, w),
                    Err(e) => {
                        err = Some(e.into());
                        false
                    }
                }
            })?;
        err.map_or(Ok(()), Err)
    }

    /// Write records of the keys in `[start, end)` (encoded user keys without timestamps; `end`
    /// empty: unbounded), in key order and each key's newest first, as `(encoded user key,
    /// commit_ts, record)`, until `f` returns false.
    pub fn scan_writes(
        &self,
        start: &[u8],
        end: &[u8],
        mut f: impl FnMut(&[u8], TimeStamp, Write) -> bool,
    ) -> Result<()> {
        let (lo, hi) = (keys::data_key(start), keys::data_end_key(end));
        let mut err = None;
        self.snap.scan(CF_WRITE, &lo, Some(&hi), false, |k, v| {
            let Some((user, commit_ts)) = Key::split_on_ts(keys::origin_key(k)) else {
                err = Some(Error::Corrupt("write key without timestamp".into()));
                return false;
            };
            match Write::parse(v) {
                Ok(w) => f(user, commit_ts, w),
                Err(e) => {
                    err = Some(e.into());
                    false
                }
            }
        })?;
        err.map_or(Ok(()), Err)
    }

    /// The newest write record of `key` with commit_ts ≤ `ts`, of any kind.
    pub fn seek_write(&self, key: &Key, ts: TimeStamp) -> Result<Option<(TimeStamp, Write)>> {
        let mut found = None;
        self.versions(key, ts, |commit_ts, w| {
            found = Some((commit_ts, w));
            false
        })?;
        Ok(found)
    }

    /// The newest data write (Put or Delete) of `key` committed at or before `ts`.
    pub fn get_write(&self, key: &Key, ts: TimeStamp) -> Result<Option<(TimeStamp, Write)>> {
        let mut found = None;
        self.versions(key, ts, |commit_ts, w| {
            if w.is_data() {
                found = Some((commit_ts, w));
                false
            } else {
                true
            }
        })?;
        Ok(found)
    }

    /// The value a Put record stands for.
    pub fn load_value(&self, key: &Key, write: &Write) -> Result<Vec<u8>> {
        if let Some(v) = &write.short_value {
            return Ok(v.clone());
        }
        let data_key = keys::data_key(key.append_ts(write.start_ts).as_encoded());
        self.snap
            .get(CF_DEFAULT, &data_key)?
            .ok_or_else(|| Error::Corrupt(format!("{key:?}: value of {} missing", write.start_ts)))
    }

    /// The value of `key` as of `ts`; `KeyIsLocked` if a lock blocks the read.
    pub fn get(&self, key: &Key, ts: TimeStamp, bypass: &[TimeStamp]) -> Result<Option<Vec<u8>>> {
        if let Some(lock) = self.load_lock(key)? {
            check_lock(key, &lock, ts, bypass)?;
        }
        self.get_committed(key, ts)
    }

    /// The committed value of `key` as of `ts`, ignoring locks.
    pub fn get_committed(&self, key: &Key, ts: TimeStamp) -> Result<Option<Vec<u8>>> {
        match self.get_write(key, ts)? {
            Some((_, w)) if w.kind() == WriteType::Put => Ok(Some(self.load_value(key, &w)?)),
            _ => Ok(None),
        }
    }

    /// What became of transaction `start_ts` on `key`.
    pub fn get_txn_commit_record(&self, key: &Key, start_ts: TimeStamp) -> Result<TxnCommitRecord> {
        let mut record = TxnCommitRecord::None;
        self.versions(key, TimeStamp::MAX, |commit_ts, w| {
            if commit_ts < start_ts {
                // Every record of this transaction has a commit_ts ≥ its start_ts.
                return false;
            }
            if w.start_ts == start_ts {
                record = if w.kind() == WriteType::Rollback {
                    TxnCommitRecord::RolledBack
                } else {
                    TxnCommitRecord::Committed {
                        commit_ts,
                        write: w,
                    }
                };
                return false;
            }
            if commit_ts == start_ts && w.has_overlapped_rollback {
                record = TxnCommitRecord::RolledBack;
                return false;
            }
            true
        })?;
        Ok(record)
    }

    /// Locks of keys in `[start, end)` (encoded; `end` empty: unbounded) that `filter` accepts,
    /// at most `limit` (0: no limit), in key order.
    pub fn scan_locks(
        &self,
        start: &[u8],
        end: &[u8],
        mut filter: impl FnMut(&Lock) -> bool,
        limit: usize,
    ) -> Result<Vec<(Key, Lock)>> {
        let (lo, hi) = (keys::data_key(start), keys::data_end_key(end));
        let mut out = Vec::new();
        let mut err = None;
        self.snap.scan(CF_LOCK, &lo, Some(&hi), false, |k, v| {
            match Lock::parse(v) {
                Ok(lock) => {
                    if filter(&lock) {
                        out.push((Key::from_encoded(keys::origin_key(k).to_vec()), lock));
                    }
                }
                Err(e) => {
                    err = Some(e.into());
                    return false;
                }
            }
            limit == 0 || out.len() < limit
        })?;
        err.map_or(Ok(out), Err)
    }

    /// The values of the keys in `[start, end)` (encoded, `end` empty: unbounded) as of `ts`,
    /// ascending or (`reverse`) descending, at most `limit` items. A key whose lock blocks the
    /// read yields its `KeyIsLocked` error in place of a value (and counts toward the limit).
    pub fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        ts: TimeStamp,
        reverse: bool,
        bypass: &[TimeStamp],
    ) -> Result<Vec<ScanItem>> {
        // Blocking locks of the range, in key order: merged with the keys that have writes.
        let mut locks: BTreeMap<Vec<u8>, Lock> = self
            .scan_locks(
                start,
                end,
                |l| l.blocks_read_at(ts) && !bypass.contains(&l.start_ts),
                0,
            )?
            .into_iter()
            .map(|(k, l)| (k.into_encoded(), l))
            .collect();
        let (lo, hi) = (keys::data_key(start), keys::data_end_key(end));
        let mut out: Vec<ScanItem> = Vec::new();
        let mut err = None;
        // Versions of the user key being looked at, in scan order.
        let mut group: Option<VersionGroup> = None;
        let full = |out: &Vec<ScanItem>| limit != 0 && out.len() >= limit;
        let finish_group =
            |group: (Vec<u8>, Vec<(TimeStamp, Write)>), out: &mut Vec<ScanItem>| -> Result<()> {
                let (user, versions) = group;
                let newest = versions
                    .iter()
                    .filter(|(commit_ts, w)| *commit_ts <= ts && w.is_data())
                    .max_by_key(|(commit_ts, _)| *commit_ts);
                if let Some((_, w)) = newest {
                    if w.kind() == WriteType::Put {
                        let key = Key::from_encoded(user.clone());
                        let value = self.load_value(&key, w)?;
                        out.push(Ok((raw_key(&user)?, value)));
                    }
                }
                Ok(())
            };
        // Emits lock errors of keys before `user` (after it, in reverse) or equal to it; returns
        // whether `user` itself was locked.
        let mut emit_locks_up_to = |user: Option<&[u8]>, out: &mut Vec<ScanItem>| -> Result<bool> {
            let mut locked_here = false;
            loop {
                if full(out) {
                    return Ok(locked_here);
                }
                let next = if reverse {
                    locks.last_key_value().map(|(k, _)| k.clone())
                } else {
                    locks.first_key_value().map(|(k, _)| k.clone())
                };
                let Some(k) = next else {
                    return Ok(locked_here);
                };
                let due = match user {
                    None => true,
                    Some(u) if reverse => k[..] >= *u,
                    Some(u) => k[..] <= *u,
                };
                if !due {
                    return Ok(locked_here);
                }
                if user.is_some_and(|u| k[..] == *u) {
                    locked_here = true;
                }
                let lock = locks.remove(&k).expect("present");
                out.push(Err(Error::KeyIsLocked(Box::new(LockInfo::new(
                    raw_key(&k)?,
                    &lock,
                )))));
            }
        };
        self.snap.scan(CF_WRITE, &lo, Some(&hi), reverse, |k, v| {
            let mut step = || -> Result<bool> {
                let Some((user, commit_ts)) = Key::split_on_ts(keys::origin_key(k)) else {
                    return Err(Error::Corrupt("write key without timestamp".into()));
                };
                let write = Write::parse(v)?;
                if group.as_ref().is_some_and(|(u, _)| u[..] == *user) {
                    group.as_mut().expect("checked").1.push((commit_ts, write));
                    return Ok(true);
                }
                if let Some(done) = group.take() {
                    let locked = emit_locks_up_to(Some(&done.0), &mut out)?;
                    if !locked && !full(&out) {
                        finish_group(done, &mut out)?;
                    }
                }
                if full(&out) {
                    return Ok(false);
                }
                group = Some((user.to_vec(), vec![(commit_ts, write)]));
                Ok(true)
            };
            match step() {
                Ok(go_on) => go_on,
                Err(e) => {
                    err = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        if let Some(done) = group.take() {
            let locked = emit_locks_up_to(Some(&done.0), &mut out)?;
            if !locked && !full(&out) {
                finish_group(done, &mut out)?;
            }
        }
        emit_locks_up_to(None, &mut out)?;
        out.truncate(if limit == 0 { out.len() } else { limit });
        Ok(out)
    }
}

/// Everything the MVCC column families hold for one key (for operators' tools).
#[derive(Clone, Debug, Default)]
pub struct KeyHistory {
    pub lock: Option<Lock>,
    /// Write records, newest first: `(commit_ts, record)`.
    pub writes: Vec<(TimeStamp, Write)>,
    /// Values in `default`, newest first: `(start_ts, value)`.
    pub values: Vec<(TimeStamp, Vec<u8>)>,
}

impl MvccReader<'_> {
    /// Every lock, write record and stored value of `key`.
    pub fn key_history(&self, key: &Key) -> Result<KeyHistory> {
        let mut h = KeyHistory {
            lock: self.load_lock(key)?,
            ..Default::default()
        };
        self.versions(key, TimeStamp::MAX, |commit_ts, w| {
            h.writes.push((commit_ts, w));
            true
        })?;
        let start = keys::data_key(key.append_ts(TimeStamp::MAX).as_encoded());
        self.snap.scan(
            CF_DEFAULT,
            &start,
            Some(&versions_end(key)),
            false,
            |k, v| {
                if let Some((_, start_ts)) = Key::split_on_ts(keys::origin_key(k)) {
                    h.values.push((start_ts, v.to_vec()));
                }
                true
            },
        )?;
        Ok(h)
    }
}

/// Fails with `KeyIsLocked` if `lock` blocks a read of `key` at `ts`.
pub fn check_lock(key: &Key, lock: &Lock, ts: TimeStamp, bypass: &[TimeStamp]) -> Result<()> {
    if lock.blocks_read_at(ts) && !bypass.contains(&lock.start_ts) {
        let raw = key
            .to_raw()
            .map_err(|e| Error::Corrupt(format!("undecodable key: {e}")))?;
        return Err(Error::KeyIsLocked(Box::new(LockInfo::new(raw, lock))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{LockType, MvccTxn};

    struct Db {
        _dir: tempfile::TempDir,
        engine: engine::Engine,
    }

    impl Db {
        fn new() -> Db {
            let dir = tempfile::tempdir().unwrap();
            let engine = engine::Engine::open(dir.path(), &Default::default()).unwrap();
            Db { _dir: dir, engine }
        }

        fn apply(&self, txn: MvccTxn) {
            let mut wb = engine::WriteBatch::new();
            for m in &txn.modifies {
                m.write_to(&mut wb);
            }
            self.engine.write(wb, false).unwrap();
        }

        /// A committed put (value inline if short) of `key` by txn `start` at `commit`.
        fn commit_put(&self, key: &str, value: &str, start: u64, commit: u64) {
            let mut txn = MvccTxn::new();
            let k = Key::from_raw(key.as_bytes());
            let w = if value.len() > 3 {
                txn.put_value(&k, start, value.as_bytes().to_vec());
                Write::new(WriteType::Put, start, None)
            } else {
                Write::new(WriteType::Put, start, Some(value.as_bytes().to_vec()))
            };
            txn.put_write(&k, commit, &w);
            self.apply(txn);
        }

        fn commit(&self, key: &str, kind: WriteType, start: u64, commit: u64) {
            let mut txn = MvccTxn::new();
            txn.put_write(
                &Key::from_raw(key.as_bytes()),
                commit,
                &Write::new(kind, start, None),
            );
            self.apply(txn);
        }

        fn lock(&self, key: &str, kind: LockType, start: u64) {
            let mut txn = MvccTxn::new();
            let lock = Lock {
                lock_type: kind as i32,
                primary: b"p".to_vec(),
                start_ts: start,
                ttl: 3000,
                ..Default::default()
            };
            txn.put_lock(&Key::from_raw(key.as_bytes()), &lock);
            self.apply(txn);
        }
    }

    fn get(db: &Db, key: &str, ts: u64) -> Result<Option<String>> {
        let snap = db.engine.snapshot();
        let r = MvccReader::new(&snap);
        r.get(&Key::from_raw(key.as_bytes()), ts, &[])
            .map(|v| v.map(|v| String::from_utf8(v).unwrap()))
    }

    #[test]
    fn a_read_sees_exactly_the_data_committed_at_or_before_its_ts() {
        let db = Db::new();
        db.commit_put("k", "v1", 10, 11);
        db.commit_put("k", "long value", 20, 21);
        db.commit("k", WriteType::Lock, 30, 31);
        db.commit("k", WriteType::Rollback, 40, 40);
        db.commit("k", WriteType::Delete, 50, 51);
        assert_eq!(get(&db, "k", 10).unwrap(), None);
        assert_eq!(get(&db, "k", 11).unwrap().as_deref(), Some("v1"));
        assert_eq!(get(&db, "k", 20).unwrap().as_deref(), Some("v1"));
        assert_eq!(get(&db, "k", 21).unwrap().as_deref(), Some("long value"));
        // Lock and Rollback records change nothing.
        assert_eq!(get(&db, "k", 45).unwrap().as_deref(), Some("long value"));
        assert_eq!(get(&db, "k", 51).unwrap(), None);
        assert_eq!(get(&db, "other", 100).unwrap(), None);
    }

    #[test]
    fn a_read_meets_an_older_transactions_lock_but_not_a_younger_ones() {
        let db = Db::new();
        db.commit_put("k", "v1", 10, 11);
        db.lock("k", LockType::Put, 20);
        assert!(
            matches!(get(&db, "k", 25), Err(Error::KeyIsLocked(l)) if l.start_ts == 20 && l.key == b"k")
        );
        assert_eq!(get(&db, "k", 15).unwrap().as_deref(), Some("v1"));
        // A resolved (bypassed) lock does not block.
        let snap = db.engine.snapshot();
        let r = MvccReader::new(&snap);
        assert_eq!(
            r.get(&Key::from_raw(b"k"), 25, &[20]).unwrap().as_deref(),
            Some(&b"v1"[..])
        );
        // Pessimistic and Lock locks never block reads.
        db.lock("p", LockType::Pessimistic, 5);
        assert_eq!(get(&db, "p", 25).unwrap(), None);
    }

    #[test]
    fn commit_records_tell_committed_rolled_back_and_unknown_apart() {
        let db = Db::new();
        db.commit_put("k", "v", 10, 15);
        db.commit("k", WriteType::Rollback, 20, 20);
        let snap = db.engine.snapshot();
        let r = MvccReader::new(&snap);
        let k = Key::from_raw(b"k");
        assert!(matches!(
            r.get_txn_commit_record(&k, 10).unwrap(),
            TxnCommitRecord::Committed { commit_ts: 15, .. }
        ));
        assert_eq!(
            r.get_txn_commit_record(&k, 20).unwrap(),
            TxnCommitRecord::RolledBack
        );
        assert_eq!(
            r.get_txn_commit_record(&k, 30).unwrap(),
            TxnCommitRecord::None
        );
    }

    fn scan(db: &Db, limit: usize, ts: u64, reverse: bool) -> Vec<String> {
        let snap = db.engine.snapshot();
        let r = MvccReader::new(&snap);
        r.scan(b"", b"", limit, ts, reverse, &[])
            .unwrap()
            .into_iter()
            .map(|item| match item {
                Ok((k, v)) => format!(
                    "{}={}",
                    String::from_utf8(k).unwrap(),
                    String::from_utf8(v).unwrap()
                ),
                Err(Error::KeyIsLocked(l)) => {
                    format!("{}:locked", String::from_utf8(l.key).unwrap())
                }
                Err(e) => panic!("{e}"),
            })
            .collect()
    }

    #[test]
    fn scans_merge_locks_in_key_order_both_ways_and_respect_the_limit() {
        let db = Db::new();
        db.commit_put("a", "1", 10, 11);
        db.commit_put("b", "2", 10, 11);
        db.commit("b", WriteType::Delete, 12, 13);
        db.commit_put("c", "3", 10, 11);
        db.commit_put("c", "33", 14, 15);
        db.lock("bb", LockType::Put, 12); // a new key being inserted
        db.lock("c", LockType::Delete, 16);
        db.commit_put("d", "4", 20, 30); // committed after the read
        db.lock("e", LockType::Put, 40); // younger: invisible
        assert_eq!(scan(&db, 0, 20, false), ["a=1", "bb:locked", "c:locked"]);
        assert_eq!(scan(&db, 0, 14, false), ["a=1", "bb:locked", "c=3"]);
        assert_eq!(scan(&db, 0, 20, true), ["c:locked", "bb:locked", "a=1"]);
        assert_eq!(scan(&db, 2, 20, false), ["a=1", "bb:locked"]);
        assert_eq!(scan(&db, 1, 20, true), ["c:locked"]);
        assert_eq!(
            scan(&db, 0, 35, false),
            ["a=1", "bb:locked", "c:locked", "d=4"]
        );
    }
}
