//! A temporary engine that runs commands and applies their writes, for the command tests.

use engine::{Engine, EngineOptions, WriteBatch};

use crate::mvcc::{Key, Lock, MvccReader, MvccTxn, Result, TimeStamp, TxnCommitRecord, Write};

use super::{commit, prewrite, rollback, Mutation, PrewriteProps, PrewriteResult};

/// Shorthand for an encoded key.
pub fn k(raw: &[u8]) -> Key {
    Key::from_raw(raw)
}

/// A timestamp from its physical milliseconds and logical part.
pub fn ts(physical_ms: u64, logical: u64) -> TimeStamp {
    physical_ms << 18 | logical
}

pub struct TestStore {
    engine: Engine,
    _dir: tempfile::TempDir,
}

impl TestStore {
    pub fn new() -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open(dir.path(), &EngineOptions::default()).expect("open engine");
        TestStore { engine, _dir: dir }
    }

    /// Runs a command on a fresh snapshot and applies what it recorded if it succeeded. Checks
    /// the all-or-nothing rule: a failed command recorded nothing.
    pub fn run<T>(&self, f: impl FnOnce(&MvccReader<'_>, &mut MvccTxn) -> Result<T>) -> Result<T> {
        let mut txn = MvccTxn::new();
        let result = {
            let snap = self.engine.snapshot();
            let reader = MvccReader::new(&snap);
            f(&reader, &mut txn)
        };
        match &result {
            Ok(_) => self.apply(txn),
            Err(e) => assert!(txn.is_empty(), "failed with {e:?} but recorded {txn:?}"),
        }
        result
    }

    /// Like [`run`](Self::run), returning the recorded writes without applying them.
    pub fn dry_run<T>(
        &self,
        f: impl FnOnce(&MvccReader<'_>, &mut MvccTxn) -> Result<T>,
    ) -> (Result<T>, MvccTxn) {
        let mut txn = MvccTxn::new();
        let snap = self.engine.snapshot();
        let reader = MvccReader::new(&snap);
        let result = f(&reader, &mut txn);
        (result, txn)
    }

    pub fn apply(&self, txn: MvccTxn) {
        let mut wb = WriteBatch::new();
        for m in &txn.modifies {
            m.write_to(&mut wb);
        }
        self.engine.write(wb, false).expect("write");
    }

    pub fn read<T>(&self, f: impl FnOnce(&MvccReader<'_>) -> T) -> T {
        let snap = self.engine.snapshot();
        let reader = MvccReader::new(&snap);
        f(&reader)
    }

    /// A read at `ts`, as a client's get.
    pub fn get(&self, key: &[u8], ts: TimeStamp) -> Result<Option<Vec<u8>>> {
        self.read(|r| r.get(&k(key), ts, &[]))
    }

    pub fn lock(&self, key: &[u8]) -> Option<Lock> {
        self.read(|r| r.load_lock(&k(key))).expect("load lock")
    }

    /// The write record at exactly `commit_ts`.
    pub fn write_at(&self, key: &[u8], commit_ts: TimeStamp) -> Option<Write> {
        match self
            .read(|r| r.seek_write(&k(key), commit_ts))
            .expect("seek")
        {
            Some((ts, w)) if ts == commit_ts => Some(w),
            _ => None,
        }
    }

    pub fn commit_record(&self, key: &[u8], start_ts: TimeStamp) -> TxnCommitRecord {
        self.read(|r| r.get_txn_commit_record(&k(key), start_ts))
            .expect("commit record")
    }

    /// The value stored in `default` for `key` at `start_ts`.
    pub fn default_value(&self, key: &[u8], start_ts: TimeStamp) -> Option<Vec<u8>> {
        let data_key = engine::keys::data_key(k(key).append_ts(start_ts).as_encoded());
        self.engine
            .get(engine::CF_DEFAULT, &data_key)
            .expect("read default")
    }

    pub fn prewrite(
        &self,
        props: &PrewriteProps,
        mutations: Vec<Mutation>,
        max_ts: TimeStamp,
    ) -> Result<PrewriteResult> {
        self.run(|r, t| prewrite(r, t, props, mutations, max_ts))
    }

    /// An optimistic 2PC prewrite of one put that must succeed.
    pub fn must_prewrite_put(&self, key: &[u8], value: &[u8], primary: &[u8], start_ts: TimeStamp) {
        let result = self
            .prewrite(
                &PrewriteProps::optimistic(primary, start_ts),
                vec![Mutation::put(k(key), value.to_vec())],
                0,
            )
            .expect("prewrite");
        assert!(result.locks.is_empty(), "locked: {:?}", result.locks);
    }

    pub fn must_prewrite_delete(&self, key: &[u8], primary: &[u8], start_ts: TimeStamp) {
        let result = self
            .prewrite(
                &PrewriteProps::optimistic(primary, start_ts),
                vec![Mutation::delete(k(key))],
                0,
            )
            .expect("prewrite");
        assert!(result.locks.is_empty(), "locked: {:?}", result.locks);
    }

    pub fn commit(&self, keys: &[&[u8]], start_ts: TimeStamp, commit_ts: TimeStamp) -> Result<()> {
        let keys: Vec<Key> = keys.iter().map(|key| k(key)).collect();
        self.run(|r, t| commit(r, t, start_ts, &keys, commit_ts))
    }

    pub fn rollback(&self, keys: &[&[u8]], start_ts: TimeStamp) -> Result<()> {
        let keys: Vec<Key> = keys.iter().map(|key| k(key)).collect();
        self.run(|r, t| rollback(r, t, start_ts, &keys))
    }

    /// Prewrites and commits `value` at `key` as its own transaction.
    pub fn must_put(&self, key: &[u8], value: &[u8], start_ts: TimeStamp, commit_ts: TimeStamp) {
        self.must_prewrite_put(key, value, key, start_ts);
        self.commit(&[key], start_ts, commit_ts).expect("commit");
    }
}
