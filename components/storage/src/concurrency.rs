//! The store's concurrency manager: the newest read timestamp seen (`max_ts`) and the locks of
//! async-commit and one-phase-commit prewrites that are decided but not yet applied.
//!
//! Why: an async-commit transaction picks its commit timestamp on the stores
//! (`min_commit_ts > max_ts`), so a commit timestamp must never land at or below a read that
//! already happened on this store. A reader first raises `max_ts` to its timestamp, then looks
//! at the memory locks of its keys; a prewrite reads `max_ts`, computes its `min_commit_ts` and
//! publishes its memory locks in one critical section. Either the prewrite's section comes
//! first (the reader meets the lock) or the reader's raise does (the prewrite commits after the
//! read). The memory locks go once the prewrite is applied, when the engine holds the locks.
//!
//! Implementation caveats: one mutex guards the whole table, and a prewrite holds it while it
//! decides; only async-commit and one-phase-commit prewrites take it.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::mvcc::{check_lock, Key, Lock, Result, TimeStamp};

/// See the module docs. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct ConcurrencyManager {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    max_ts: AtomicU64,
    /// Encoded key → (the lock, how many guards hold it).
    locks: Mutex<BTreeMap<Vec<u8>, (Lock, usize)>>,
}

/// Memory locks published by one prewrite; removed when dropped.
pub struct MemoryLocks {
    inner: Arc<Inner>,
    keys: Vec<Vec<u8>>,
}

impl Drop for MemoryLocks {
    fn drop(&mut self) {
        let mut locks = self.inner.locks.lock();
        for k in &self.keys {
            if let Some((_, n)) = locks.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    locks.remove(k);
                }
            }
        }
    }
}

impl ConcurrencyManager {
    pub fn max_ts(&self) -> TimeStamp {
        self.inner.max_ts.load(Ordering::SeqCst)
    }

    /// Raises `max_ts` to `ts` (a read at `ts` is about to happen).
    pub fn update_max_ts(&self, ts: TimeStamp) {
        if ts != TimeStamp::MAX {
            self.inner.max_ts.fetch_max(ts, Ordering::SeqCst);
        }
    }

    /// Runs `decide(max_ts)` and publishes the locks it returns, in one critical section (see
    /// the module docs).
    pub fn decide_with_max_ts<T>(
        &self,
        decide: impl FnOnce(TimeStamp) -> Result<(T, Vec<(Key, Lock)>)>,
    ) -> Result<(T, MemoryLocks)> {
        let mut locks = self.inner.locks.lock();
        let (out, new_locks) = decide(self.max_ts())?;
        let mut keys = Vec::with_capacity(new_locks.len());
        for (key, lock) in new_locks {
            let key = key.into_encoded();
            let entry = locks.entry(key.clone()).or_insert((lock.clone(), 0));
            entry.0 = lock;
            entry.1 += 1;
            keys.push(key);
        }
        Ok((
            out,
            MemoryLocks {
                inner: self.inner.clone(),
                keys,
            },
        ))
    }

    /// Raises `max_ts` and fails if a memory lock blocks a read of `key` at `ts`.
    pub fn read_key_check(&self, key: &Key, ts: TimeStamp, bypass: &[TimeStamp]) -> Result<()> {
        self.update_max_ts(ts);
        let locks = self.inner.locks.lock();
        if let Some((lock, _)) = locks.get(key.as_encoded()) {
            check_lock(key, lock, ts, bypass)?;
        }
        Ok(())
    }

    /// Raises `max_ts` and fails if a memory lock in `[start, end)` (encoded; `end` empty:
    /// unbounded) blocks a read at `ts`.
    pub fn read_range_check(
        &self,
        start: &[u8],
        end: &[u8],
        ts: TimeStamp,
        bypass: &[TimeStamp],
    ) -> Result<()> {
        self.update_max_ts(ts);
        let locks = self.inner.locks.lock();
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end.to_vec())
        };
        for (k, (lock, _)) in locks.range((Bound::Included(start.to_vec()), upper)) {
            check_lock(&Key::from_encoded(k.clone()), lock, ts, bypass)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{Error, LockType};

    fn lock(start_ts: u64, min_commit_ts: u64) -> Lock {
        Lock {
            lock_type: LockType::Put as i32,
            start_ts,
            use_async_commit: true,
            min_commit_ts,
            ..Default::default()
        }
    }

    #[test]
    fn reads_raise_max_ts() {
        let cm = ConcurrencyManager::default();
        cm.update_max_ts(10);
        cm.read_key_check(&Key::from_raw(b"k"), 20, &[]).unwrap();
        cm.update_max_ts(15);
        assert_eq!(cm.max_ts(), 20);
    }

    #[test]
    fn a_prewrite_decided_after_a_read_commits_after_it_or_the_read_meets_its_lock() {
        let cm = ConcurrencyManager::default();
        let k = Key::from_raw(b"k");
        // The read came first: the prewrite sees max_ts = 20.
        cm.read_key_check(&k, 20, &[]).unwrap();
        let (min_commit, guard) = cm
            .decide_with_max_ts(|max_ts| Ok((max_ts + 1, vec![(k.clone(), lock(5, max_ts + 1))])))
            .unwrap();
        assert_eq!(min_commit, 21);
        // A later read at 25 meets the published lock (it may commit at or below 25).
        assert!(matches!(
            cm.read_key_check(&k, 25, &[]),
            Err(Error::KeyIsLocked(_))
        ));
        assert!(matches!(
            cm.read_range_check(b"", b"", 25, &[]),
            Err(Error::KeyIsLocked(_))
        ));
        // A read at 20 need not wait: the commit lands after it.
        cm.read_key_check(&k, 20, &[]).unwrap();
        drop(guard);
        cm.read_key_check(&k, 30, &[]).unwrap();
    }
}
