//! Raft log storage: `raft::Storage` over the `raft` column family of the store's engine.
//!
//! One [`RaftLogStorage`] per Raft group (a region, or the PD group). It owns the group's log
//! entries, its hard state and its truncated state, and keeps a bounded cache of the newest
//! entries so that replication and apply rarely touch RocksDB.
//!
//! Write protocol (the caller drives it, this crate does no IO on its own initiative):
//! 1. [`RaftLogStorage::append`] and [`RaftLogStorage::set_hard_state`] stage writes into a
//!    caller-owned [`engine::WriteBatch`] and update the in-memory view at once; many groups
//!    stage into one batch.
//! 2. The caller writes the batch **synced** before it sends any message that raft-rs marks as
//!    needing persistence, and before it advances the group.
//! 3. The truncated state is part of [`ApplyState`], written by the apply side together with the
//!    applied data; [`RaftLogStorage::compact_to`] then stages the deletion of the dead entries.
//!
//! Invariants:
//! - `first_index == truncated_index + 1` and `last_index >= truncated_index`.
//! - Entries in `[first_index, last_index]` are all present, contiguously, in the cache or engine.
//! - After a restart, [`RaftLogStorage::load`] rebuilds exactly the state last written.
//!
//! Snapshots: what a snapshot holds is the owner's business. A leader's raft-rs asks
//! [`raft::Storage::snapshot`], which defers to the owner's [`SnapshotSource`] (none: "temporarily
//! unavailable"); a follower hands a received snapshot's metadata to
//! [`RaftLogStorage::apply_snapshot`], which resets the log to start after it, in the same write
//! batch as the owner's data.
//!
//! Deliberately absent: conf-state persistence (the owner passes the conf state in; regions
//! derive it from their peer list, which they persist).

use std::collections::VecDeque;

use engine::{keys, Engine, WriteBatch, CF_RAFT};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

/// The log index a freshly bootstrapped group starts from (everything up to it is "truncated").
/// Every replica of a bootstrapped group starts here, so all agree on the (empty) prefix.
pub const RAFT_INIT_LOG_INDEX: u64 = 5;
/// The term that goes with [`RAFT_INIT_LOG_INDEX`].
pub const RAFT_INIT_LOG_TERM: u64 = 5;

/// Applied entries kept in memory per group: at most this many ...
const MAX_CACHE_ENTRIES: usize = 1024;
/// ... and at most this many payload bytes of them (entries not yet applied always stay).
const MAX_CACHE_BYTES: usize = 4 << 20;

/// Errors of log storage beyond what raft-rs defines.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error("corrupt raft state of group {group_id}: {msg}")]
    Corrupt { group_id: u64, msg: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// How far a group has applied its log, and where the log now begins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyState {
    pub applied_index: u64,
    pub applied_term: u64,
    pub truncated_index: u64,
    pub truncated_term: u64,
}

impl ApplyState {
    pub fn initial() -> ApplyState {
        ApplyState {
            applied_index: RAFT_INIT_LOG_INDEX,
            applied_term: RAFT_INIT_LOG_TERM,
            truncated_index: RAFT_INIT_LOG_INDEX,
            truncated_term: RAFT_INIT_LOG_TERM,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32);
        for x in [
            self.applied_index,
            self.applied_term,
            self.truncated_index,
            self.truncated_term,
        ] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v
    }

    pub fn decode(data: &[u8]) -> Option<ApplyState> {
        if data.len() != 32 {
            return None;
        }
        let f = |i: usize| u64::from_be_bytes(data[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Some(ApplyState {
            applied_index: f(0),
            applied_term: f(1),
            truncated_index: f(2),
            truncated_term: f(3),
        })
    }

    /// Reads the persisted apply state of `group_id`, if the group exists.
    pub fn load(engine: &Engine, group_id: u64) -> Result<Option<ApplyState>> {
        match engine.get(CF_RAFT, &keys::apply_state_key(group_id))? {
            None => Ok(None),
            Some(v) => ApplyState::decode(&v).map(Some).ok_or(Error::Corrupt {
                group_id,
                msg: "apply state".into(),
            }),
        }
    }

    /// Stages this state as the persisted apply state of `group_id`.
    pub fn write(&self, group_id: u64, wb: &mut WriteBatch) {
        wb.put(CF_RAFT, &keys::apply_state_key(group_id), &self.encode());
    }
}

/// Stages the initial state of a new group: an empty log that starts after
/// [`RAFT_INIT_LOG_INDEX`], committed up to it.
pub fn bootstrap_group(group_id: u64, wb: &mut WriteBatch) {
    let hs = HardState {
        term: RAFT_INIT_LOG_TERM,
        commit: RAFT_INIT_LOG_INDEX,
        ..Default::default()
    };
    wb.put(
        CF_RAFT,
        &keys::raft_hard_state_key(group_id),
        &hs.write_to_bytes().expect("encode hard state"),
    );
    ApplyState::initial().write(group_id, wb);
}

/// Stages the removal of every piece of Raft state of `group_id`.
pub fn clear_group(group_id: u64, wb: &mut WriteBatch) {
    wb.delete_range(
        CF_RAFT,
        &keys::raft_log_key(group_id, 0),
        &keys::raft_log_key(group_id, u64::MAX),
    );
    wb.delete(CF_RAFT, &keys::raft_hard_state_key(group_id));
    wb.delete(CF_RAFT, &keys::apply_state_key(group_id));
}

/// Produces the snapshots a leader sends to followers that are behind the first index.
pub trait SnapshotSource: Send {
    /// A snapshot at `request_index` or later for peer `to`, or
    /// `SnapshotTemporarilyUnavailable` while one is being made (raft-rs asks again later).
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot>;
}

/// `raft::Storage` of one group. See the crate docs for the write protocol.
pub struct RaftLogStorage {
    engine: Engine,
    group_id: u64,
    hard_state: HardState,
    conf_state: ConfState,
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
    last_term: u64,
    /// The newest entries, contiguous, ending at `last_index` when non-empty.
    cache: VecDeque<Entry>,
    /// Entries at or below this index may leave the cache.
    applied_index: u64,
    /// Payload bytes of the cached entries.
    cache_bytes: usize,
    snapshots: Option<Box<dyn SnapshotSource>>,
}

impl RaftLogStorage {
    /// Recovers the storage of `group_id` from the engine. The group must have been bootstrapped.
    pub fn load(engine: Engine, group_id: u64, conf_state: ConfState) -> Result<RaftLogStorage> {
        let corrupt = |msg: &str| Error::Corrupt {
            group_id,
            msg: msg.to_owned(),
        };
        let hs_bytes = engine
            .get(CF_RAFT, &keys::raft_hard_state_key(group_id))?
            .ok_or_else(|| corrupt("missing hard state"))?;
        let hard_state =
            HardState::parse_from_bytes(&hs_bytes).map_err(|_| corrupt("hard state"))?;
        let apply =
            ApplyState::load(&engine, group_id)?.ok_or_else(|| corrupt("missing apply state"))?;
        let mut last = None;
        engine.snapshot().scan(
            CF_RAFT,
            &keys::raft_log_key(group_id, apply.truncated_index + 1),
            Some(&keys::raft_log_key(group_id, u64::MAX)),
            true,
            |_, v| {
                last = Some(v.to_vec());
                false
            },
        )?;
        let (last_index, last_term) = match last {
            Some(v) => {
                let e = Entry::parse_from_bytes(&v).map_err(|_| corrupt("last entry"))?;
                (e.index, e.term)
            }
            None => (apply.truncated_index, apply.truncated_term),
        };
        let mut hard_state = hard_state;
        // Applied state is written unsynced but after the commit index was known, and a commit
        // index update may trail it: whatever was applied was committed.
        hard_state.commit = hard_state.commit.max(apply.applied_index);
        if hard_state.commit > last_index {
            return Err(corrupt(&format!(
                "commit {} beyond last index {last_index}",
                hard_state.commit
            )));
        }
        Ok(RaftLogStorage {
            engine,
            group_id,
            hard_state,
            conf_state,
            truncated_index: apply.truncated_index,
            truncated_term: apply.truncated_term,
            last_index,
            last_term,
            cache: VecDeque::new(),
            applied_index: apply.applied_index,
            cache_bytes: 0,
            snapshots: None,
        })
    }

    /// The storage of a replica that has no state yet (it was just created to receive a
    /// snapshot): an empty log at index 0, nothing persisted until the first Ready.
    pub fn uninitialized(engine: Engine, group_id: u64) -> RaftLogStorage {
        RaftLogStorage {
            engine,
            group_id,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            truncated_index: 0,
            truncated_term: 0,
            last_index: 0,
            last_term: 0,
            cache: VecDeque::new(),
            applied_index: 0,
            cache_bytes: 0,
            snapshots: None,
        }
    }

    /// Where leader snapshots come from.
    pub fn set_snapshot_source(&mut self, source: Box<dyn SnapshotSource>) {
        self.snapshots = Some(source);
    }

    /// Stages the log reset of an applied snapshot: every entry goes, the log continues after
    /// `meta.index`, the apply state says everything up to it is applied and truncated, and the
    /// conf state is the snapshot's. The owner stages the snapshot's data into the same batch.
    pub fn apply_snapshot(&mut self, meta: &SnapshotMetadata, wb: &mut WriteBatch) {
        wb.delete_range(
            CF_RAFT,
            &keys::raft_log_key(self.group_id, 0),
            &keys::raft_log_key(self.group_id, u64::MAX),
        );
        ApplyState {
            applied_index: meta.index,
            applied_term: meta.term,
            truncated_index: meta.index,
            truncated_term: meta.term,
        }
        .write(self.group_id, wb);
        let mut hs = self.hard_state.clone();
        hs.commit = hs.commit.max(meta.index);
        hs.term = hs.term.max(meta.term);
        self.set_hard_state(hs, wb);
        self.truncated_index = meta.index;
        self.truncated_term = meta.term;
        self.last_index = meta.index;
        self.last_term = meta.term;
        self.applied_index = meta.index;
        self.cache.clear();
        self.cache_bytes = 0;
        self.conf_state = meta.get_conf_state().clone();
    }

    pub fn group_id(&self) -> u64 {
        self.group_id
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn truncated_index(&self) -> u64 {
        self.truncated_index
    }

    pub fn last_index_value(&self) -> u64 {
        self.last_index
    }

    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Stages `entries` (contiguous, from raft-rs's Ready). Entries at or after the first new
    /// index replace whatever the log had there, as Raft requires.
    pub fn append(&mut self, entries: &[Entry], wb: &mut WriteBatch) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        assert!(
            first.index > self.truncated_index && first.index <= self.last_index + 1,
            "group {}: append {}..={} to log ({}, {}]",
            self.group_id,
            first.index,
            last.index,
            self.truncated_index,
            self.last_index
        );
        for e in entries {
            wb.put(
                CF_RAFT,
                &keys::raft_log_key(self.group_id, e.index),
                &e.write_to_bytes().expect("encode entry"),
            );
        }
        if last.index < self.last_index {
            wb.delete_range(
                CF_RAFT,
                &keys::raft_log_key(self.group_id, last.index + 1),
                &keys::raft_log_key(self.group_id, self.last_index + 1),
            );
        }
        // Keep the cache contiguous: drop the replaced tail, or all of it if the new entries
        // do not connect to it.
        while self.cache.back().is_some_and(|e| e.index >= first.index) {
            self.pop_cache_back();
        }
        if self
            .cache
            .back()
            .is_some_and(|e| e.index + 1 != first.index)
        {
            self.cache.clear();
            self.cache_bytes = 0;
        }
        self.cache_bytes += entries.iter().map(|e| e.data.len()).sum::<usize>();
        self.cache.extend(entries.iter().cloned());
        self.last_index = last.index;
        self.last_term = last.term;
        self.trim_cache();
    }

    /// Stages a new hard state.
    pub fn set_hard_state(&mut self, hs: HardState, wb: &mut WriteBatch) {
        wb.put(
            CF_RAFT,
            &keys::raft_hard_state_key(self.group_id),
            &hs.write_to_bytes().expect("encode hard state"),
        );
        self.hard_state = hs;
    }

    /// Records the commit index from a Ready that carried no new hard state otherwise.
    pub fn set_commit(&mut self, commit: u64, wb: &mut WriteBatch) {
        if commit != self.hard_state.commit {
            let mut hs = self.hard_state.clone();
            hs.commit = commit;
            self.set_hard_state(hs, wb);
        }
    }

    /// Notes that entries up to `index` are applied, so they may leave the cache.
    pub fn set_applied(&mut self, index: u64) {
        self.applied_index = self.applied_index.max(index);
        self.trim_cache();
    }

    /// After the apply side persisted truncated state `(index, term)`: stage deletion of the dead
    /// entries and move the first index.
    pub fn compact_to(&mut self, index: u64, term: u64, wb: &mut WriteBatch) {
        if index <= self.truncated_index {
            return;
        }
        assert!(index <= self.last_index, "compact past the last index");
        wb.delete_range(
            CF_RAFT,
            &keys::raft_log_key(self.group_id, self.truncated_index + 1),
            &keys::raft_log_key(self.group_id, index + 1),
        );
        self.truncated_index = index;
        self.truncated_term = term;
        while self.cache.front().is_some_and(|e| e.index <= index) {
            self.pop_cache_front();
        }
    }

    fn pop_cache_front(&mut self) {
        if let Some(e) = self.cache.pop_front() {
            self.cache_bytes -= e.data.len();
        }
    }

    fn pop_cache_back(&mut self) {
        if let Some(e) = self.cache.pop_back() {
            self.cache_bytes -= e.data.len();
        }
    }

    fn trim_cache(&mut self) {
        while (self.cache.len() > MAX_CACHE_ENTRIES || self.cache_bytes > MAX_CACHE_BYTES)
            && self
                .cache
                .front()
                .is_some_and(|e| e.index <= self.applied_index)
        {
            self.pop_cache_front();
        }
    }

    fn cached(&self, index: u64) -> Option<&Entry> {
        let front = self.cache.front()?.index;
        if index < front {
            return None;
        }
        self.cache.get((index - front) as usize)
    }

    fn read_entries(
        &self,
        low: u64,
        high: u64,
        max_size: u64,
        out: &mut Vec<Entry>,
    ) -> raft::Result<()> {
        let mut size = 0u64;
        let mut push = |e: Entry, out: &mut Vec<Entry>| {
            size += u64::from(e.compute_size());
            let keep = out.is_empty() || size <= max_size;
            if keep {
                out.push(e);
            }
            keep
        };
        let cache_front = self.cache.front().map(|e| e.index).unwrap_or(u64::MAX);
        let mut next = low;
        if next < cache_front.min(high) {
            let db_high = cache_front.min(high);
            let mut result = Ok(());
            let mut expected = next;
            let mut limited = false;
            self.engine
                .snapshot()
                .scan(
                    CF_RAFT,
                    &keys::raft_log_key(self.group_id, next),
                    Some(&keys::raft_log_key(self.group_id, db_high)),
                    false,
                    |_, v| match Entry::parse_from_bytes(v) {
                        Ok(e) if e.index == expected => {
                            let keep = push(e, out);
                            if keep {
                                expected += 1;
                            } else {
                                limited = true;
                            }
                            keep
                        }
                        Ok(e) => {
                            result = Err(raft::Error::Store(StorageError::Other(
                                format!("log hole: expected {expected}, found {}", e.index).into(),
                            )));
                            false
                        }
                        Err(e) => {
                            result = Err(raft::Error::CodecError(e));
                            false
                        }
                    },
                )
                .map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))?;
            result?;
            if limited {
                return Ok(());
            }
            if expected < db_high {
                return Err(raft::Error::Store(StorageError::Unavailable));
            }
            next = db_high;
        }
        while next < high {
            let e = self
                .cached(next)
                .cloned()
                .ok_or(raft::Error::Store(StorageError::Unavailable))?;
            if !push(e, out) {
                break;
            }
            next += 1;
        }
        Ok(())
    }
}

impl raft::Storage for RaftLogStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::with_capacity((high - low).min(256) as usize);
        self.read_entries(low, high, max_size.into().unwrap_or(u64::MAX), &mut out)?;
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if idx < self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if idx == self.last_index {
            return Ok(self.last_term);
        }
        if let Some(e) = self.cached(idx) {
            return Ok(e.term);
        }
        let mut out = Vec::with_capacity(1);
        self.read_entries(idx, idx + 1, u64::MAX, &mut out)?;
        out.first()
            .map(|e| e.term)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        match &self.snapshots {
            // Never one older than the log's start: the follower would need entries from
            // before it again.
            Some(source) => source.snapshot(request_index.max(self.truncated_index), to),
            None => Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::EngineOptions;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 10].into(),
            ..Default::default()
        }
    }

    fn setup() -> (tempfile::TempDir, Engine, RaftLogStorage) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        let mut wb = WriteBatch::new();
        bootstrap_group(1, &mut wb);
        engine.write(wb, true).unwrap();
        let s = RaftLogStorage::load(engine.clone(), 1, ConfState::default()).unwrap();
        (dir, engine, s)
    }

    #[test]
    fn fresh_group_starts_after_init_index() {
        let (_d, _e, s) = setup();
        assert_eq!(s.first_index().unwrap(), RAFT_INIT_LOG_INDEX + 1);
        assert_eq!(s.last_index().unwrap(), RAFT_INIT_LOG_INDEX);
        assert_eq!(s.term(RAFT_INIT_LOG_INDEX).unwrap(), RAFT_INIT_LOG_TERM);
        assert_eq!(
            s.initial_state().unwrap().hard_state.commit,
            RAFT_INIT_LOG_INDEX
        );
    }

    #[test]
    fn append_overwrite_and_recover() {
        let (_d, engine, mut s) = setup();
        let mut wb = WriteBatch::new();
        s.append(&(6..=10).map(|i| entry(i, 6)).collect::<Vec<_>>(), &mut wb);
        engine.write(wb, true).unwrap();
        // A new leader overwrites the tail from 8 with a shorter log.
        let mut wb = WriteBatch::new();
        s.append(&[entry(8, 7)], &mut wb);
        let hs = HardState {
            term: 7,
            commit: 7,
            ..Default::default()
        };
        s.set_hard_state(hs.clone(), &mut wb);
        engine.write(wb, true).unwrap();
        assert_eq!(s.last_index().unwrap(), 8);
        assert_eq!(s.term(8).unwrap(), 7);

        let r = RaftLogStorage::load(engine.clone(), 1, ConfState::default()).unwrap();
        assert_eq!(r.last_index().unwrap(), 8);
        assert_eq!(r.term(8).unwrap(), 7);
        assert_eq!(r.term(7).unwrap(), 6);
        assert_eq!(r.initial_state().unwrap().hard_state, hs);
        let got = r
            .entries(6, 9, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            got.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
            vec![(6, 6), (7, 6), (8, 7)]
        );
        assert!(r
            .entries(6, 10, None, GetEntriesContext::empty(false))
            .is_err());
    }

    #[test]
    fn size_limit_returns_at_least_one() {
        let (_d, engine, mut s) = setup();
        let mut wb = WriteBatch::new();
        s.append(&(6..=20).map(|i| entry(i, 6)).collect::<Vec<_>>(), &mut wb);
        engine.write(wb, true).unwrap();
        let r = RaftLogStorage::load(engine, 1, ConfState::default()).unwrap();
        assert_eq!(
            r.entries(6, 21, 0, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            s.entries(6, 21, 0, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            1
        );
        let some = r
            .entries(6, 21, 40, GetEntriesContext::empty(false))
            .unwrap();
        assert!(some.len() > 1 && some.len() < 15);
    }

    #[test]
    fn the_cache_keeps_applied_entries_within_its_byte_budget() {
        let (_d, engine, mut s) = setup();
        let big = |index: u64| Entry {
            index,
            term: 6,
            data: vec![index as u8; 1 << 20].into(),
            ..Default::default()
        };
        let mut wb = WriteBatch::new();
        s.append(&(6..=15).map(big).collect::<Vec<_>>(), &mut wb);
        engine.write(wb, true).unwrap();
        // Nothing applied yet: everything stays cached.
        assert_eq!(s.cache_bytes, 10 << 20);
        s.set_applied(15);
        assert!(s.cache_bytes <= MAX_CACHE_BYTES, "{}", s.cache_bytes);
        // Evicted entries are read back from the engine.
        let got = s
            .entries(6, 16, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 10);
        assert!(got
            .iter()
            .all(|e| e.data.len() == 1 << 20 && e.data[0] == e.index as u8));
    }

    #[test]
    fn compaction_moves_first_index() {
        let (_d, engine, mut s) = setup();
        let mut wb = WriteBatch::new();
        s.append(&(6..=12).map(|i| entry(i, 6)).collect::<Vec<_>>(), &mut wb);
        engine.write(wb, true).unwrap();
        let mut wb = WriteBatch::new();
        let state = ApplyState {
            applied_index: 10,
            applied_term: 6,
            truncated_index: 9,
            truncated_term: 6,
        };
        state.write(1, &mut wb);
        s.compact_to(9, 6, &mut wb);
        engine.write(wb, true).unwrap();
        assert_eq!(s.first_index().unwrap(), 10);
        assert!(matches!(
            s.term(8),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(s.term(9).unwrap(), 6);
        let r = RaftLogStorage::load(engine, 1, ConfState::default()).unwrap();
        assert_eq!(r.first_index().unwrap(), 10);
        assert_eq!(r.last_index().unwrap(), 12);
        assert_eq!(
            r.entries(10, 13, None, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            3
        );
    }
}
