//! The writes a transactional command makes, collected before they are proposed through Raft
//! as plain puts and deletes (apply decides nothing).

use bytes::Bytes;
use engine::{CF_DEFAULT, CF_LOCK, CF_WRITE};
use raftstore::cmd::WriteOp;

use super::{Key, Lock, TimeStamp, Write};

/// One modification of the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Modify {
    Put {
        cf: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: &'static str,
        key: Vec<u8>,
    },
}

impl Modify {
    /// The raftstore op (keys are encoded keys; apply adds the data prefix).
    pub fn into_write_op(self) -> WriteOp {
        match self {
            Modify::Put { cf, key, value } => {
                WriteOp::put(cf, Bytes::from(key), Bytes::from(value))
            }
            Modify::Delete { cf, key } => WriteOp::delete(cf, Bytes::from(key)),
        }
    }

    /// Adds this modification to an engine batch (tests write MVCC data directly).
    pub fn write_to(&self, wb: &mut engine::WriteBatch) {
        match self {
            Modify::Put { cf, key, value } => wb.put(cf, &engine::keys::data_key(key), value),
            Modify::Delete { cf, key } => wb.delete(cf, &engine::keys::data_key(key)),
        }
    }
}

/// The modifications of one command.
#[derive(Debug, Default)]
pub struct MvccTxn {
    pub modifies: Vec<Modify>,
}

impl MvccTxn {
    pub fn new() -> MvccTxn {
        MvccTxn::default()
    }

    pub fn put_lock(&mut self, key: &Key, lock: &Lock) {
        self.modifies.push(Modify::Put {
            cf: CF_LOCK,
            key: key.as_encoded().to_vec(),
            value: lock.to_bytes(),
        });
    }

    pub fn unlock_key(&mut self, key: &Key) {
        self.modifies.push(Modify::Delete {
            cf: CF_LOCK,
            key: key.as_encoded().to_vec(),
        });
    }

    pub fn put_value(&mut self, key: &Key, start_ts: TimeStamp, value: Vec<u8>) {
        self.modifies.push(Modify::Put {
            cf: CF_DEFAULT,
            key: key.append_ts(start_ts).into_encoded(),
            value,
        });
    }

    pub fn delete_value(&mut self, key: &Key, start_ts: TimeStamp) {
        self.modifies.push(Modify::Delete {
            cf: CF_DEFAULT,
            key: key.append_ts(start_ts).into_encoded(),
        });
    }

    pub fn put_write(&mut self, key: &Key, commit_ts: TimeStamp, write: &Write) {
        self.modifies.push(Modify::Put {
            cf: CF_WRITE,
            key: key.append_ts(commit_ts).into_encoded(),
            value: write.to_bytes(),
        });
    }

    pub fn delete_write(&mut self, key: &Key, commit_ts: TimeStamp) {
        self.modifies.push(Modify::Delete {
            cf: CF_WRITE,
            key: key.append_ts(commit_ts).into_encoded(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.modifies.is_empty()
    }

    pub fn into_write_ops(self) -> Vec<WriteOp> {
        self.modifies
            .into_iter()
            .map(Modify::into_write_op)
            .collect()
    }
}
