//! Raft snapshots between stores: a snapshot (a region's data, as SST files) does not travel
//! in the batched Raft stream, whose messages are bounded by the gRPC message size and which
//! it would hold up, but over its own `Snapshot` client stream, in chunks.
//!
//! Protocol: the first [`SnapshotChunk`] carries the Raft message, whose snapshot data lists
//! the files (`raftstore::snap::SnapshotData`); the chunks after it carry the files' bytes in
//! listing order. The receiver writes them into its own snapshot directory as they come,
//! checks every file against the listing (size, checksum), syncs them, and only then delivers
//! the message as if it had come over the Raft stream: a replica never sees a snapshot whose
//! files it does not have.
//!
//! Limits: a store sends at most `max_sends` and receives at most `max_receives` snapshots at
//! a time (more are refused with `RESOURCE_EXHAUSTED`; the leader's raftstore sends another
//! after its snapshot timeout), sends at most `send_bytes_per_sec` (TiKV's
//! `snap-io-max-bytes-per-sec`), and refuses a snapshot larger than `max_bytes`. Neither side
//! holds more than a chunk of a snapshot in memory.
//!
//! This module holds the stream's receiving rules ([`Receiver`]); the transport and the
//! service do the network IO.

use proto::raft_serverpb::{RaftMessage, SnapshotChunk};
use raftstore::snap::{files_of, SnapManager, SnapWriter};

/// Bytes of snapshot data per chunk.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Limits of snapshot transfer, per store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotLimits {
    pub max_sends: usize,
    pub max_receives: usize,
    pub send_bytes_per_sec: u64,
    pub max_bytes: usize,
}

impl Default for SnapshotLimits {
    fn default() -> Self {
        SnapshotLimits {
            max_sends: 4,
            max_receives: 4,
            send_bytes_per_sec: 100 << 20,
            max_bytes: 1 << 30,
        }
    }
}

/// Why a received snapshot stream is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    #[error("the first snapshot chunk must carry the raft message, and only the first")]
    Misplaced,
    #[error("snapshot larger than {0} bytes")]
    TooLarge(usize),
    #[error("the stream carried no snapshot message")]
    NotASnapshot,
    #[error("snapshot files: {0}")]
    Files(String),
}

/// Receives one stream into the store's snapshot files.
pub struct Receiver {
    mgr: SnapManager,
    max_bytes: usize,
    head: Option<(RaftMessage, SnapWriter)>,
}

impl Receiver {
    pub fn new(mgr: SnapManager, max_bytes: usize) -> Receiver {
        Receiver {
            mgr,
            max_bytes,
            head: None,
        }
    }

    /// Takes the next chunk (file writes: call from a thread that may block).
    pub fn push(&mut self, chunk: SnapshotChunk) -> Result<(), ReceiveError> {
        match (chunk.message, &mut self.head) {
            (Some(m), None) => {
                let (key, data) = files_of(&m).ok_or(ReceiveError::NotASnapshot)?;
                if data.total_size() > self.max_bytes as u64 {
                    return Err(ReceiveError::TooLarge(self.max_bytes));
                }
                let writer = self
                    .mgr
                    .receiver(key, &data)
                    .map_err(|e| ReceiveError::Files(e.to_string()))?;
                self.head = Some((m, writer));
                if !chunk.data.is_empty() {
                    return Err(ReceiveError::Misplaced);
                }
                Ok(())
            }
            (None, Some((_, writer))) => writer
                .write(&chunk.data)
                .map_err(|e| ReceiveError::Files(e.to_string())),
            _ => Err(ReceiveError::Misplaced),
        }
    }

    /// The Raft message, once every file it lists is in place.
    pub fn finish(self) -> Result<RaftMessage, ReceiveError> {
        let (msg, writer) = self.head.ok_or(ReceiveError::NotASnapshot)?;
        writer
            .finish()
            .map_err(|e| ReceiveError::Files(e.to_string()))?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use engine::{keys, Engine, EngineOptions, WriteBatch, CF_DEFAULT};
    use proto::metapb;
    use protobuf::Message as _;
    use raft::eraftpb::{self, MessageType};
    use std::io::Read as _;

    /// A store holding 3 KiB-ish of region 9 and the message of its snapshot.
    fn leader() -> (tempfile::TempDir, SnapManager, RaftMessage) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        let mut wb = WriteBatch::new();
        for i in 0..100u32 {
            wb.put(
                CF_DEFAULT,
                &keys::data_key(&i.to_be_bytes()),
                &[i as u8; 30],
            );
        }
        engine.write(wb, false).unwrap();
        let region = metapb::Region {
            id: 9,
            peers: vec![metapb::Peer {
                id: 2,
                store_id: 2,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mgr = SnapManager::of(&engine);
        let state = raft_log::ApplyState {
            applied_index: 77,
            applied_term: 5,
            truncated_index: 70,
            truncated_term: 5,
        };
        let snap = raftstore::snap::generate(&mgr, &engine, &region, state, None).unwrap();
        let mut m = eraftpb::Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.to = 2;
        m.set_snapshot(snap);
        let msg = RaftMessage {
            region_id: 9,
            message: Bytes::from(m.write_to_bytes().unwrap()),
            ..Default::default()
        };
        (dir, mgr, msg)
    }

    /// The chunks a sender makes of `msg` with `chunk` bytes a chunk.
    fn chunks(mgr: &SnapManager, msg: &RaftMessage, chunk: usize) -> Vec<SnapshotChunk> {
        let (key, data) = files_of(msg).unwrap();
        let mut bytes = Vec::new();
        mgr.reader(key, &data)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        let mut out = vec![SnapshotChunk {
            message: Some(msg.clone()),
            data: Bytes::new(),
        }];
        out.extend(bytes.chunks(chunk).map(|c| SnapshotChunk {
            message: None,
            data: Bytes::copy_from_slice(c),
        }));
        out
    }

    fn receive(
        to: &SnapManager,
        chunks: Vec<SnapshotChunk>,
        max: usize,
    ) -> Result<RaftMessage, ReceiveError> {
        let mut r = Receiver::new(to.clone(), max);
        for c in chunks {
            r.push(c)?;
        }
        r.finish()
    }

    #[test]
    fn a_streamed_snapshot_arrives_with_its_files() {
        let (_dir, mgr, msg) = leader();
        let (key, data) = files_of(&msg).unwrap();
        assert!(data.total_size() > 1000);
        let chunks = chunks(&mgr, &msg, 1000);
        assert!(chunks.len() > 2);
        let to_dir = tempfile::tempdir().unwrap();
        let to = SnapManager::new(to_dir.path());
        assert!(!to.is_received(key, &data));
        assert_eq!(receive(&to, chunks, 1 << 20).unwrap(), msg);
        assert!(to.is_received(key, &data));
    }

    #[test]
    fn malformed_streams_are_refused() {
        let (_dir, mgr, msg) = leader();
        let (key, data) = files_of(&msg).unwrap();
        let all = chunks(&mgr, &msg, 1000);
        let to_dir = tempfile::tempdir().unwrap();
        let to = SnapManager::new(to_dir.path());
        let size = data.total_size() as usize;
        assert_eq!(
            receive(&to, all.clone(), size - 1),
            Err(ReceiveError::TooLarge(size - 1))
        );
        // Data before the head, or a second head.
        assert_eq!(
            receive(&to, all[1..].to_vec(), 1 << 20),
            Err(ReceiveError::Misplaced)
        );
        let mut twice = all.clone();
        twice.insert(1, all[0].clone());
        assert_eq!(receive(&to, twice, 1 << 20), Err(ReceiveError::Misplaced));
        assert_eq!(receive(&to, vec![], 10), Err(ReceiveError::NotASnapshot));
        // Cut short, or a byte changed.
        assert!(matches!(
            receive(&to, all[..all.len() - 1].to_vec(), 1 << 20),
            Err(ReceiveError::Files(_))
        ));
        let mut flipped = all.clone();
        let mut bytes = flipped[1].data.to_vec();
        bytes[0] ^= 0xff;
        flipped[1].data = Bytes::from(bytes);
        assert!(matches!(
            receive(&to, flipped, 1 << 20),
            Err(ReceiveError::Files(_))
        ));
        assert!(!to.is_received(key, &data), "nothing refused is kept");
        // Not a snapshot message.
        let mut m = eraftpb::Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        let append = RaftMessage {
            message: Bytes::from(m.write_to_bytes().unwrap()),
            ..Default::default()
        };
        assert!(files_of(&append).is_none());
        let chunk = SnapshotChunk {
            message: Some(append),
            data: Bytes::new(),
        };
        assert_eq!(
            receive(&to, vec![chunk], 10),
            Err(ReceiveError::NotASnapshot)
        );
    }
}
