//! The pure parts of a transaction, free of IO so that they are unit-tested: the write
//! buffer (what reads of the transaction's own writes see, what a commit sends), the commit
//! plan (primary and mutations), the walk of a transactional scan over regions whose ranges
//! are encoded keys, and what to do with a lock given its transaction's status.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use proto::kvrpcpb::{self, prewrite_request::PessimisticAction, Action, Op};
use proto::metapb::Region;

use crate::codec;
use crate::plan::next_key;
use crate::{Key, KvPair, Value};

/// A timestamp of PD's TSO: `physical_ms << 18 | logical`.
pub type Timestamp = u64;

const LOGICAL_BITS: u32 = 18;

/// The physical part (milliseconds) of a timestamp.
pub fn physical_ms(ts: Timestamp) -> u64 {
    ts >> LOGICAL_BITS
}

/// What a transaction does to a key when it commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BufferedOp {
    Put(Value),
    /// A put that fails the commit with [`crate::Error::AlreadyExists`] if the key exists.
    Insert(Value),
    Delete,
    /// Nothing written, but the key must exist for the transaction to commit: an insert
    /// deleted again.
    CheckNotExists,
    /// Nothing written; the key only takes part in conflict detection (locked keys).
    Lock,
}

/// What the buffer knows about a read of the transaction's own key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BufferedRead {
    /// The transaction wrote this value.
    Value(Value),
    /// The transaction deleted the key.
    Deleted,
    /// The transaction did not write the key: read the snapshot.
    NotWritten,
}

/// A write the buffer refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BufferError {
    /// An insert of a key the transaction itself already wrote a value to.
    AlreadyWritten(Key),
}

/// The transaction's writes, kept locally until commit, by key.
#[derive(Clone, Debug, Default)]
pub struct Buffer {
    ops: BTreeMap<Key, BufferedOp>,
}

impl Buffer {
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn put(&mut self, key: Key, value: Value) {
        self.ops.insert(key, BufferedOp::Put(value));
    }

    /// An insert. Of a key the transaction deleted: a put (the key is absent as far as the
    /// transaction is concerned). Of a key it wrote a value to: refused.
    pub fn insert(&mut self, key: Key, value: Value) -> Result<(), BufferError> {
        let op = match self.ops.get(&key) {
            Some(BufferedOp::Put(_) | BufferedOp::Insert(_)) => {
                return Err(BufferError::AlreadyWritten(key))
            }
            Some(BufferedOp::Delete) => BufferedOp::Put(value),
            Some(BufferedOp::CheckNotExists | BufferedOp::Lock) | None => BufferedOp::Insert(value),
        };
        self.ops.insert(key, op);
        Ok(())
    }

    /// A delete; of a key inserted by this transaction, a check that it does not exist.
    pub fn delete(&mut self, key: Key) {
        let op = match self.ops.get(&key) {
            Some(BufferedOp::Insert(_) | BufferedOp::CheckNotExists) => BufferedOp::CheckNotExists,
            _ => BufferedOp::Delete,
        };
        self.ops.insert(key, op);
    }

    /// Makes `key` take part in the commit's conflict detection; a written key already does.
    pub fn lock(&mut self, key: Key) {
        self.ops.entry(key).or_insert(BufferedOp::Lock);
    }

    pub fn get(&self, key: &[u8]) -> BufferedRead {
        match self.ops.get(key) {
            Some(BufferedOp::Put(v) | BufferedOp::Insert(v)) => BufferedRead::Value(v.clone()),
            Some(BufferedOp::Delete | BufferedOp::CheckNotExists) => BufferedRead::Deleted,
            Some(BufferedOp::Lock) | None => BufferedRead::NotWritten,
        }
    }

    /// Keys of `[lower, upper)` (empty upper: +inf) that the transaction wrote or deleted.
    fn written_in(&self, lower: &Key, upper: &Key) -> impl Iterator<Item = (&Key, &BufferedOp)> {
        let upper = upper.clone();
        (self.ops.range(lower.clone()..))
            .take_while(move |(k, _)| upper.is_empty() || **k < upper)
            .filter(|(_, op)| !matches!(op, BufferedOp::Lock))
    }

    /// How many more pairs a snapshot scan of `[lower, upper)` must ask for so that, after
    /// the transaction's deletes hide some, `limit` pairs are still known: one per deleted
    /// key of the range.
    pub fn scan_extra(&self, lower: &Key, upper: &Key) -> usize {
        self.written_in(lower, upper)
            .filter(|(_, op)| matches!(op, BufferedOp::Delete | BufferedOp::CheckNotExists))
            .count()
    }

    /// Merges a snapshot scan of `[lower, upper)` with the transaction's writes: at most
    /// `limit` pairs in scan order. `snapshot` is in scan order and was asked for
    /// `limit + scan_extra` pairs; unless it was `exhausted` (fewer came back), it proves
    /// nothing past its last key, so writes past it are left out — at least `limit` pairs
    /// up to that key survive the transaction's deletes, so none of them would be returned.
    pub fn merge_scan(
        &self,
        snapshot: Vec<KvPair>,
        lower: &Key,
        upper: &Key,
        limit: usize,
        reverse: bool,
        exhausted: bool,
    ) -> Vec<KvPair> {
        let frontier = if exhausted {
            None
        } else {
            snapshot.last().map(|(k, _)| k.clone())
        };
        let mut merged: BTreeMap<Key, Value> = snapshot.into_iter().collect();
        for (key, op) in self.written_in(lower, upper) {
            let within = match &frontier {
                None => true,
                Some(f) if reverse => key >= f,
                Some(f) => key <= f,
            };
            if !within {
                continue;
            }
            match op {
                BufferedOp::Put(v) | BufferedOp::Insert(v) => {
                    merged.insert(key.clone(), v.clone());
                }
                BufferedOp::Delete | BufferedOp::CheckNotExists => {
                    merged.remove(key);
                }
                BufferedOp::Lock => {}
            }
        }
        if reverse {
            merged.into_iter().rev().take(limit).collect()
        } else {
            merged.into_iter().take(limit).collect()
        }
    }
}

/// One mutation of a commit, with the encoded key its region is looked up by.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedMutation {
    pub encoded: Bytes,
    pub mutation: kvrpcpb::Mutation,
    pub pessimistic_action: PessimisticAction,
}

impl PlannedMutation {
    pub fn key(&self) -> &Key {
        &self.mutation.key
    }
}

/// What a commit sends: the primary key and every mutation in key order (the primary's
/// among them).
#[derive(Clone, Debug, PartialEq)]
pub struct CommitPlan {
    pub primary: Key,
    pub mutations: Vec<PlannedMutation>,
}

impl CommitPlan {
    /// The plan of committing `buffer`, or `None` if it holds nothing. The primary is
    /// `primary` if given (a pessimistic transaction's first locked key: its lock already
    /// names it), else the smallest key. Keys in `pessimistically_locked` are checked to
    /// still hold this transaction's pessimistic lock when prewritten.
    pub fn new(
        buffer: &Buffer,
        primary: Option<&Key>,
        pessimistically_locked: &BTreeSet<Key>,
    ) -> Option<CommitPlan> {
        let mutations: Vec<PlannedMutation> = (buffer.ops.iter())
            .map(|(key, op)| {
                let (op, value) = match op {
                    BufferedOp::Put(v) => (Op::Put, v.clone()),
                    BufferedOp::Insert(v) => (Op::Insert, v.clone()),
                    BufferedOp::Delete => (Op::Del, Value::new()),
                    BufferedOp::CheckNotExists => (Op::CheckNotExists, Value::new()),
                    BufferedOp::Lock => (Op::Lock, Value::new()),
                };
                PlannedMutation {
                    encoded: codec::encode(key),
                    mutation: kvrpcpb::Mutation {
                        op: op as i32,
                        key: key.clone(),
                        value,
                        ..Default::default()
                    },
                    pessimistic_action: if pessimistically_locked.contains(key) {
                        PessimisticAction::DoPessimisticCheck
                    } else {
                        PessimisticAction::SkipPessimisticCheck
                    },
                }
            })
            .collect();
        let primary = match primary {
            Some(p) => p.clone(),
            None => mutations.first()?.key().clone(),
        };
        if mutations.is_empty() {
            return None;
        }
        debug_assert!(mutations.iter().any(|m| *m.key() == primary));
        Some(CommitPlan { primary, mutations })
    }

    /// The mutations other than the primary's.
    pub fn secondaries(&self) -> impl Iterator<Item = &PlannedMutation> {
        self.mutations.iter().filter(|m| *m.key() != self.primary)
    }
}

/// Whether a lock of a transaction started at `lock_ts` with `ttl_ms` has expired at
/// `current_ts` (the stores' rule: its TTL counts from its start's physical time).
pub fn lock_expired(lock_ts: Timestamp, ttl_ms: u64, current_ts: Timestamp) -> bool {
    physical_ms(lock_ts).saturating_add(ttl_ms) < physical_ms(current_ts)
}

/// What one key of an async-commit transaction says (`KvCheckSecondaryLocks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecondaryState {
    /// Still locked by the transaction: its lock's `min_commit_ts`, and whether the lock is an
    /// async-commit one.
    Locked {
        min_commit_ts: Timestamp,
        use_async_commit: bool,
    },
    Committed(Timestamp),
    /// No lock and no commit record: the check wrote a rollback there, so the transaction can
    /// never commit.
    RolledBack,
}

/// The fate of an async-commit transaction whose primary lock expired, from the states of all
/// its keys (TiKV's rule): any key committed ⇒ committed at that ts; any key rolled back ⇒
/// rolled back; every key still holding an async-commit lock ⇒ every prewrite succeeded, so
/// it is committed at the largest `min_commit_ts`; a key with a lock that is not async-commit
/// (the transaction fell back to two-phase commit) ⇒ undecided here (`None`).
pub fn async_commit_fate(states: &[SecondaryState]) -> Option<TxnFate> {
    if let Some(ts) = states.iter().find_map(|s| match s {
        SecondaryState::Committed(ts) => Some(*ts),
        _ => None,
    }) {
        return Some(TxnFate::Committed(ts));
    }
    if states.contains(&SecondaryState::RolledBack) {
        return Some(TxnFate::RolledBack);
    }
    let mut commit_ts = 0;
    for s in states {
        match s {
            SecondaryState::Locked {
                min_commit_ts,
                use_async_commit: true,
            } => commit_ts = commit_ts.max(*min_commit_ts),
            _ => return None,
        }
    }
    (commit_ts > 0).then_some(TxnFate::Committed(commit_ts))
}

/// What became of a lock's transaction, as its primary told (`KvCheckTxnStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnFate {
    Committed(Timestamp),
    RolledBack,
    /// Still running (or its primary not written yet): the reader must wait.
    Alive,
}

impl TxnFate {
    /// The fate told by a check-txn-status answer without region error or abort.
    pub fn of(resp: &kvrpcpb::CheckTxnStatusResponse) -> TxnFate {
        if resp
            .error
            .as_ref()
            .is_some_and(|e| e.txn_not_found.is_some())
        {
            // Neither lock nor record at the primary, and we did not ask to roll back: its
            // prewrite may still be on its way.
            return TxnFate::Alive;
        }
        if resp.commit_version > 0 {
            return TxnFate::Committed(resp.commit_version);
        }
        if resp.lock_info.is_some() || resp.lock_ttl > 0 {
            return TxnFate::Alive;
        }
        match Action::try_from(resp.action) {
            Ok(Action::MinCommitTsPushed) => TxnFate::Alive,
            _ => TxnFate::RolledBack,
        }
    }
}

/// What to do with one lock met by a read or a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockResolution {
    /// `KvResolveLock` of the key: commit at `commit_ts` (0: roll back).
    Resolve { commit_ts: Timestamp },
    /// `KvPessimisticRollback` of the key: a pessimistic lock of a transaction that is over
    /// (a pessimistic lock is not part of the commit unless prewritten).
    PessimisticRollback { for_update_ts: Timestamp },
    /// The transaction is alive: back off and try again.
    Wait,
}

impl LockResolution {
    pub fn of(lock: &kvrpcpb::LockInfo, fate: TxnFate) -> LockResolution {
        let pessimistic = lock.lock_type == Op::PessimisticLock as i32;
        match fate {
            TxnFate::Alive => LockResolution::Wait,
            _ if pessimistic => LockResolution::PessimisticRollback {
                for_update_ts: lock.lock_for_update_ts,
            },
            TxnFate::Committed(commit_ts) => LockResolution::Resolve { commit_ts },
            TxnFate::RolledBack => LockResolution::Resolve { commit_ts: 0 },
        }
    }
}

/// A transactional scan of the raw range `[lower, upper)`, at most `limit` pairs, walked
/// region by region forward or in reverse.
///
/// The walk's position is an **encoded** key (regions are located by it), while requests
/// carry **raw** bounds: the store encodes them and clamps the scan to the region. A position
/// that is a region boundary not decoding to any key (an operator's split key) is sent as an
/// open bound, which the store clamps to the region's start (forward) or end (reverse); pairs
/// outside the position are then dropped ([`TxnScanWalk::keeps`]), in case the region reaches
/// past the position.
#[derive(Clone, Debug)]
pub struct TxnScanWalk {
    lower: Key,
    upper: Key,
    lower_enc: Bytes,
    upper_enc: Bytes,
    reverse: bool,
    /// Encoded. Forward: the next key to read (inclusive). Reverse: the bound below which to
    /// read next (exclusive; empty: +inf).
    cursor: Bytes,
    remaining: u32,
    done: bool,
}

/// The bounds and limit of one `ScanRequest` (raw keys; see [`kvrpcpb::ScanRequest`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnScanRequest {
    pub start_key: Key,
    pub end_key: Key,
    pub limit: u32,
}

impl TxnScanWalk {
    pub fn new(lower: Key, upper: Key, limit: u32, reverse: bool) -> TxnScanWalk {
        let lower_enc = codec::encode(&lower);
        let upper_enc = if upper.is_empty() {
            Bytes::new()
        } else {
            codec::encode(&upper)
        };
        let done = limit == 0 || (!upper.is_empty() && lower >= upper);
        let cursor = if reverse {
            upper_enc.clone()
        } else {
            lower_enc.clone()
        };
        TxnScanWalk {
            lower,
            upper,
            lower_enc,
            upper_enc,
            reverse,
            cursor,
            remaining: limit,
            done,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn is_reverse(&self) -> bool {
        self.reverse
    }

    /// Forward: the encoded key whose region is read next. Reverse: the encoded exclusive
    /// bound whose region (holding the keys just below it) is read next.
    pub fn cursor(&self) -> &Bytes {
        &self.cursor
    }

    /// The request for the region at the cursor, asking at most `batch` pairs.
    pub fn request(&self, batch: u32) -> TxnScanRequest {
        let limit = self.remaining.min(batch.max(1));
        let at_cursor = codec::decode_exact(&self.cursor).unwrap_or_default();
        if self.reverse {
            TxnScanRequest {
                start_key: at_cursor,
                end_key: self.lower.clone(),
                limit,
            }
        } else {
            TxnScanRequest {
                start_key: at_cursor,
                end_key: self.upper.clone(),
                limit,
            }
        }
    }

    /// Whether a pair the store returned lies on the unread side of the cursor.
    pub fn keeps(&self, key: &[u8]) -> bool {
        let enc = codec::encode(key);
        if self.reverse {
            (self.cursor.is_empty() || enc < self.cursor) && enc >= self.lower_enc
        } else {
            enc >= self.cursor && (self.upper_enc.is_empty() || enc < self.upper_enc)
        }
    }

    /// Records the answer of `region` to a request that asked `asked` pairs and got `got`
    /// (before dropping any), `kept` of which were kept, the last (in scan order) being
    /// `last_key` (raw).
    pub fn advance(
        &mut self,
        region: &Region,
        asked: u32,
        got: usize,
        kept: usize,
        last_key: Option<&Key>,
    ) {
        let kept = u32::try_from(kept).unwrap_or(u32::MAX);
        self.remaining = self.remaining.saturating_sub(kept);
        if self.remaining == 0 {
            self.done = true;
            return;
        }
        let full = u32::try_from(got).unwrap_or(u32::MAX) >= asked;
        match last_key {
            // A full answer: the region may hold more past the last key.
            Some(last) if full => {
                if self.reverse {
                    self.cursor = codec::encode(last);
                    self.done = *last <= self.lower;
                } else {
                    let next = next_key(last);
                    self.done = !self.upper.is_empty() && next >= self.upper;
                    self.cursor = codec::encode(&next);
                }
            }
            _ if self.reverse => {
                let start = &region.start_key;
                if start.is_empty() || start[..] <= self.lower_enc[..] {
                    self.done = true;
                } else {
                    self.cursor = start.clone();
                }
            }
            _ => {
                let end = &region.end_key;
                if end.is_empty() || (!self.upper_enc.is_empty() && end[..] >= self.upper_enc[..]) {
                    self.done = true;
                } else {
                    self.cursor = end.clone();
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "txn_plan_tests.rs"]
mod tests;
