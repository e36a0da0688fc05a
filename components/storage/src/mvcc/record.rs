//! What the `lock` and `write` column families hold (TiKV's layout; our own value encoding).
//!
//! - `lock`: `key → Lock`. A prewritten (or pessimistically locked) key of a transaction not yet
//!   committed or rolled back.
//! - `write`: `key + commit_ts → Write`. A commit (Put / Delete / Lock) or a rollback (at the
//!   transaction's start_ts, protecting it from a late prewrite). Small values live inline
//!   (`short_value`); larger ones in `default` at `key + start_ts`.

use prost::Message as _;

use super::TimeStamp;

/// Values up to this size live inline in the lock and write records (as in TiKV).
pub const SHORT_VALUE_MAX_LEN: usize = 255;

/// The kinds of [`Lock`] (TiKV's `Op` for locks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum LockType {
    Put = 0,
    Delete = 1,
    /// Locks the key without changing it (e.g. SELECT ... FOR UPDATE committed as a lock).
    Lock = 2,
    /// A pessimistic lock taken before prewrite.
    Pessimistic = 3,
}

/// A lock record.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Lock {
    #[prost(enumeration = "LockType", tag = "1")]
    pub lock_type: i32,
    #[prost(bytes = "vec", tag = "2")]
    pub primary: Vec<u8>,
    #[prost(uint64, tag = "3")]
    pub start_ts: u64,
    #[prost(uint64, tag = "4")]
    pub ttl: u64,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub short_value: Option<Vec<u8>>,
    #[prost(uint64, tag = "6")]
    pub for_update_ts: u64,
    #[prost(uint64, tag = "7")]
    pub txn_size: u64,
    #[prost(uint64, tag = "8")]
    pub min_commit_ts: u64,
    #[prost(bool, tag = "9")]
    pub use_async_commit: bool,
    #[prost(bytes = "vec", repeated, tag = "10")]
    pub secondaries: Vec<Vec<u8>>,
}

impl Lock {
    pub fn kind(&self) -> LockType {
        LockType::try_from(self.lock_type).unwrap_or(LockType::Lock)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    pub fn parse(bytes: &[u8]) -> Result<Lock, prost::DecodeError> {
        Lock::decode(bytes)
    }

    /// Whether a read at `ts` must wait for (or resolve) this lock. Locks that change nothing
    /// (Lock, Pessimistic) never block reads, nor does a lock of a transaction that started
    /// after the read, or whose commit can only land after `ts` (`min_commit_ts > ts`).
    pub fn blocks_read_at(&self, ts: TimeStamp) -> bool {
        matches!(self.kind(), LockType::Put | LockType::Delete)
            && self.start_ts <= ts
            && !(self.use_async_commit && self.min_commit_ts > ts)
    }
}

/// The kinds of [`Write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum WriteType {
    Put = 0,
    Delete = 1,
    Lock = 2,
    Rollback = 3,
}

/// A write record.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Write {
    #[prost(enumeration = "WriteType", tag = "1")]
    pub write_type: i32,
    #[prost(uint64, tag = "2")]
    pub start_ts: u64,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub short_value: Option<Vec<u8>>,
    /// A rollback of another transaction whose start_ts equals this record's commit_ts was
    /// folded into this commit record (they share the key + ts slot).
    #[prost(bool, tag = "4")]
    pub has_overlapped_rollback: bool,
}

impl Write {
    pub fn new(kind: WriteType, start_ts: TimeStamp, short_value: Option<Vec<u8>>) -> Write {
        Write {
            write_type: kind as i32,
            start_ts,
            short_value,
            has_overlapped_rollback: false,
        }
    }

    pub fn kind(&self) -> WriteType {
        WriteType::try_from(self.write_type).unwrap_or(WriteType::Rollback)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    pub fn parse(bytes: &[u8]) -> Result<Write, prost::DecodeError> {
        Write::decode(bytes)
    }

    /// Whether this record holds data (Put or Delete), as opposed to Lock or Rollback.
    pub fn is_data(&self) -> bool {
        matches!(self.kind(), WriteType::Put | WriteType::Delete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_locks_block_a_read() {
        let lock = |kind: LockType, start_ts: u64| Lock {
            lock_type: kind as i32,
            start_ts,
            ..Default::default()
        };
        assert!(lock(LockType::Put, 10).blocks_read_at(10));
        assert!(lock(LockType::Delete, 5).blocks_read_at(10));
        assert!(!lock(LockType::Put, 11).blocks_read_at(10), "younger txn");
        assert!(!lock(LockType::Lock, 5).blocks_read_at(10));
        assert!(!lock(LockType::Pessimistic, 5).blocks_read_at(10));
        let mut async_lock = lock(LockType::Put, 5);
        async_lock.use_async_commit = true;
        async_lock.min_commit_ts = 11;
        assert!(!async_lock.blocks_read_at(10), "commits after the read");
        async_lock.min_commit_ts = 10;
        assert!(async_lock.blocks_read_at(10));
    }

    #[test]
    fn records_round_trip() {
        let w = Write::new(WriteType::Put, 7, Some(b"v".to_vec()));
        assert_eq!(Write::parse(&w.to_bytes()).unwrap(), w);
        let l = Lock {
            lock_type: LockType::Delete as i32,
            primary: b"p".to_vec(),
            start_ts: 3,
            ttl: 100,
            secondaries: vec![b"s".to_vec()],
            ..Default::default()
        };
        assert_eq!(Lock::parse(&l.to_bytes()).unwrap(), l);
    }
}
