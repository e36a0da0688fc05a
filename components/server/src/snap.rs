//! Raft snapshots between stores: a snapshot (a region's data) does not travel in the batched
//! Raft stream, whose messages are bounded by the gRPC message size and which it would hold
//! up, but over its own `Snapshot` client stream, in chunks.
//!
//! Protocol: the first [`SnapshotChunk`] carries the Raft message with its snapshot's data
//! left out; every chunk carries the next piece of the data. The receiver puts the data back
//! and delivers the message as if it had come over the Raft stream.
//!
//! Limits: a store sends at most `max_sends` and receives at most `max_receives` snapshots at
//! a time (more are refused with `RESOURCE_EXHAUSTED`; the leader's raftstore sends another
//! after its snapshot timeout), sends at most `send_bytes_per_sec` (TiKV's
//! `snap-io-max-bytes-per-sec`), and refuses a snapshot larger than `max_bytes`.
//!
//! This module holds the pure parts (splitting and reassembly); the transport and the service
//! do the IO.

use bytes::{Bytes, BytesMut};
use proto::raft_serverpb::{RaftMessage, SnapshotChunk};
use protobuf::Message as _;
use raft::eraftpb::{self, MessageType};

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

/// Splits a snapshot message into the chunks of one stream. `None` if `msg` holds no
/// decodable snapshot message.
pub fn to_chunks(msg: RaftMessage, chunk_bytes: usize) -> Option<Vec<SnapshotChunk>> {
    let mut m = eraftpb::Message::parse_from_bytes(&msg.message).ok()?;
    if m.get_msg_type() != MessageType::MsgSnapshot {
        return None;
    }
    let data = std::mem::take(&mut m.mut_snapshot().data);
    let head = RaftMessage {
        message: Bytes::from(m.write_to_bytes().ok()?),
        ..msg
    };
    let mut chunks = vec![SnapshotChunk {
        message: Some(head),
        data: Bytes::new(),
    }];
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + chunk_bytes.max(1)).min(data.len());
        chunks.push(SnapshotChunk {
            message: None,
            data: data.slice(offset..end),
        });
        offset = end;
    }
    Some(chunks)
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
}

/// Reassembles one received stream.
pub struct Assembler {
    head: Option<RaftMessage>,
    data: BytesMut,
    max_bytes: usize,
}

impl Assembler {
    pub fn new(max_bytes: usize) -> Assembler {
        Assembler {
            head: None,
            data: BytesMut::new(),
            max_bytes,
        }
    }

    pub fn push(&mut self, chunk: SnapshotChunk) -> Result<(), ReceiveError> {
        match (chunk.message, self.head.is_some()) {
            (Some(m), false) => self.head = Some(m),
            (None, true) => {}
            _ => return Err(ReceiveError::Misplaced),
        }
        if self.data.len() + chunk.data.len() > self.max_bytes {
            return Err(ReceiveError::TooLarge(self.max_bytes));
        }
        self.data.extend_from_slice(&chunk.data);
        Ok(())
    }

    /// The Raft message with its snapshot's data back in place.
    pub fn finish(self) -> Result<RaftMessage, ReceiveError> {
        let head = self.head.ok_or(ReceiveError::NotASnapshot)?;
        let mut m = eraftpb::Message::parse_from_bytes(&head.message)
            .map_err(|_| ReceiveError::NotASnapshot)?;
        if m.get_msg_type() != MessageType::MsgSnapshot {
            return Err(ReceiveError::NotASnapshot);
        }
        m.mut_snapshot().data = self.data.freeze();
        Ok(RaftMessage {
            message: Bytes::from(m.write_to_bytes().map_err(|_| ReceiveError::NotASnapshot)?),
            ..head
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_message(data: &[u8]) -> RaftMessage {
        let mut m = eraftpb::Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.to = 2;
        m.mut_snapshot().mut_metadata().index = 77;
        m.mut_snapshot().data = Bytes::copy_from_slice(data);
        RaftMessage {
            region_id: 9,
            message: Bytes::from(m.write_to_bytes().unwrap()),
            ..Default::default()
        }
    }

    fn reassemble(chunks: Vec<SnapshotChunk>, max: usize) -> Result<RaftMessage, ReceiveError> {
        let mut a = Assembler::new(max);
        for c in chunks {
            a.push(c)?;
        }
        a.finish()
    }

    #[test]
    fn chunks_reassemble_into_the_same_message() {
        let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let msg = snapshot_message(&data);
        let chunks = to_chunks(msg.clone(), 1000).unwrap();
        // The head, then 1000 + 1000 + 500 bytes.
        assert_eq!(chunks.len(), 4);
        assert!(chunks[0].message.is_some() && chunks[1..].iter().all(|c| c.message.is_none()));
        assert!(chunks[0].message.as_ref().unwrap().message.len() < 100);
        assert_eq!(reassemble(chunks, 1 << 20).unwrap(), msg);
        // An empty snapshot is one chunk.
        let empty = snapshot_message(b"");
        let chunks = to_chunks(empty.clone(), 1000).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(reassemble(chunks, 10).unwrap(), empty);
    }

    #[test]
    fn malformed_streams_are_refused() {
        let chunks = to_chunks(snapshot_message(&[1; 3000]), 1000).unwrap();
        assert_eq!(
            reassemble(chunks.clone(), 2999),
            Err(ReceiveError::TooLarge(2999))
        );
        // Data before the head, or a second head.
        assert_eq!(
            reassemble(chunks[1..].to_vec(), 1 << 20),
            Err(ReceiveError::Misplaced)
        );
        let mut twice = chunks.clone();
        twice.insert(1, chunks[0].clone());
        assert_eq!(reassemble(twice, 1 << 20), Err(ReceiveError::Misplaced));
        assert_eq!(reassemble(vec![], 10), Err(ReceiveError::NotASnapshot));
        // Not a snapshot message.
        let mut m = eraftpb::Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        let append = RaftMessage {
            message: Bytes::from(m.write_to_bytes().unwrap()),
            ..Default::default()
        };
        assert!(to_chunks(append.clone(), 10).is_none());
        let head = SnapshotChunk {
            message: Some(append),
            data: Bytes::new(),
        };
        assert_eq!(reassemble(vec![head], 10), Err(ReceiveError::NotASnapshot));
    }
}
