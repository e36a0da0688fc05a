//! Raft snapshots of PD's state: how a member that is behind the start of the log (it was
//! down while the leader compacted past it, see [`crate::log_gc`]) catches up.
//!
//! A snapshot carries the replicated state exactly as it is persisted — the `pd/meta` record,
//! the member list (`pd/members`, once membership changed) and the `pd/store/*` and
//! `pd/region/*` records of column family `default` — taken from one engine snapshot together
//! with the apply state, so its index and term are those of the last entry applied into it, and
//! its Raft configuration is that of the member list in it ([`crate::members`]). The member's
//! own record (`pd/member`) is never in it.
//!
//! - The leader's raft-rs asks for one through [`raft_log::SnapshotSource`]
//!   ([`PdSnapshotSource`]); it is made on the Raft thread (PD's state is small: about
//!   200 bytes a region) and sent as one Raft message over `pdraftpb.PdRaft`.
//! - The follower stages it ([`stage`]): every replicated record is deleted and the
//!   snapshot's written, in the same synced batch as the log reset
//!   (`RaftLogStorage::apply_snapshot`); then the in-memory state is loaded again from the
//!   engine. A crash leaves the old or the new state, never a mix.
//!
//! A member added to a running group starts with no state at all; its first snapshot is how it
//! gets everything.

use engine::{keys, Engine, WriteBatch, CF_DEFAULT, CF_RAFT};
use prost::Message as _;
use raft::eraftpb::Snapshot;
use raft::StorageError;

use crate::members::{self, MemberList};
use crate::raft_node::PD_RAFT_GROUP_ID;
use crate::{Error, Result};

/// The records of a snapshot, in key order.
#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotData {
    #[prost(bytes = "vec", repeated, tag = "1")]
    keys: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    values: Vec<Vec<u8>>,
}

/// Makes the snapshots a leader sends.
pub(crate) struct PdSnapshotSource {
    pub engine: Engine,
    /// The list while membership never changed (no list in the engine).
    pub initial_members: MemberList,
}

impl raft_log::SnapshotSource for PdSnapshotSource {
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let unavailable = || raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable);
        let snap = self.engine.snapshot();
        let apply = snap
            .get(CF_RAFT, &keys::apply_state_key(PD_RAFT_GROUP_ID))
            .ok()
            .flatten()
            .and_then(|v| raft_log::ApplyState::decode(&v))
            .ok_or_else(unavailable)?;
        if apply.applied_index < request_index {
            return Err(unavailable());
        }
        let list = match snap.get(CF_DEFAULT, members::MEMBER_LIST_KEY) {
            Ok(Some(v)) => members::decode(&v).map_err(|_| unavailable())?,
            Ok(None) => self.initial_members.clone(),
            Err(_) => return Err(unavailable()),
        };
        let mut data = SnapshotData::default();
        for (start, end) in crate::state::replicated_ranges() {
            snap.scan(CF_DEFAULT, &start, Some(&end), false, |k, v| {
                data.keys.push(k.to_vec());
                data.values.push(v.to_vec());
                true
            })
            .map_err(|_| unavailable())?;
        }
        let mut s = Snapshot {
            data: data.encode_to_vec().into(),
            ..Default::default()
        };
        let meta = s.mut_metadata();
        meta.index = apply.applied_index;
        meta.term = apply.applied_term;
        meta.set_conf_state(members::conf_state(&list));
        tracing::info!(
            index = apply.applied_index,
            records = data.keys.len(),
            "PD snapshot made"
        );
        Ok(s)
    }
}

/// Stages the replacement of the replicated state by the snapshot `data` into `wb`; an error
/// if it is not a PD snapshot.
pub(crate) fn stage(data: &[u8], wb: &mut WriteBatch) -> Result<()> {
    let data = SnapshotData::decode(data)
        .map_err(|e| Error::Corrupt(format!("undecodable PD snapshot: {e}")))?;
    if data.keys.len() != data.values.len() {
        return Err(Error::Corrupt(
            "PD snapshot with keys and values of different counts".into(),
        ));
    }
    let ranges = crate::state::replicated_ranges();
    let inside = |k: &[u8]| {
        ranges
            .iter()
            .any(|(s, e)| k >= s.as_slice() && k < e.as_slice())
    };
    if let Some(k) = data.keys.iter().find(|k| !inside(k)) {
        return Err(Error::Corrupt(format!(
            "PD snapshot with a record outside the state: {k:?}"
        )));
    }
    for (start, end) in &ranges {
        wb.delete_range(CF_DEFAULT, start, end);
    }
    for (k, v) in data.keys.iter().zip(&data.values) {
        wb.put(CF_DEFAULT, k, v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_log::SnapshotSource as _;

    fn engine() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &engine::EngineOptions::default()).unwrap();
        (dir, engine)
    }

    fn put(engine: &Engine, pairs: &[(&[u8], &[u8])]) {
        let mut wb = WriteBatch::new();
        for (k, v) in pairs {
            wb.put(CF_DEFAULT, k, v);
        }
        engine.write(wb, true).unwrap();
    }

    fn records(engine: &Engine) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        engine
            .scan(CF_DEFAULT, b"", None, |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                true
            })
            .unwrap();
        out
    }

    #[test]
    fn a_snapshot_carries_the_replicated_state_at_the_applied_index() {
        let (_d, leader) = engine();
        let mut wb = WriteBatch::new();
        raft_log::ApplyState {
            applied_index: 42,
            applied_term: 7,
            truncated_index: 30,
            truncated_term: 6,
        }
        .write(PD_RAFT_GROUP_ID, &mut wb);
        leader.write(wb, true).unwrap();
        put(
            &leader,
            &[
                (b"pd/meta", b"m"),
                (b"pd/store/\0\0\0\0\0\0\0\x01", b"s1"),
                (b"pd/region/\0\0\0\0\0\0\0\x02", b"r2"),
                (b"pd/member", b"leader's own"),
            ],
        );
        let source = PdSnapshotSource {
            engine: leader.clone(),
            initial_members: members::initial(
                [1, 2, 3].map(|id| (id, format!("pd{id}"), format!("http://pd{id}:2379"))),
            ),
        };
        assert!(source.snapshot(43, 2).is_err(), "not applied that far yet");
        let snap = source.snapshot(30, 2).unwrap();
        assert_eq!(
            (snap.get_metadata().index, snap.get_metadata().term),
            (42, 7)
        );
        assert_eq!(snap.get_metadata().get_conf_state().voters, [1, 2, 3]);

        // Once membership changed, the configuration is the list's, which the snapshot carries.
        let mut changed = source.initial_members.clone();
        changed.members[2].learner = true;
        let mut wb = WriteBatch::new();
        members::write(&changed, &mut wb);
        leader.write(wb, true).unwrap();
        let snap = source.snapshot(30, 2).unwrap();
        let cs = snap.get_metadata().get_conf_state();
        assert_eq!(
            (cs.voters.as_slice(), cs.learners.as_slice()),
            (&[1, 2][..], &[3][..])
        );

        // A follower with older state and its own identity.
        let (_d, follower) = engine();
        put(
            &follower,
            &[
                (b"pd/meta", b"old"),
                (b"pd/region/\0\0\0\0\0\0\0\x09", b"gone since"),
                (b"pd/member", b"follower's own"),
            ],
        );
        let mut wb = WriteBatch::new();
        stage(&snap.data, &mut wb).unwrap();
        follower.write(wb, true).unwrap();
        let got = records(&follower);
        let list = changed.encode_to_vec();
        let want: Vec<(Vec<u8>, Vec<u8>)> = [
            (&b"pd/member"[..], &b"follower's own"[..]),
            (b"pd/members", list.as_slice()),
            (b"pd/meta", b"m"),
            (b"pd/region/\0\0\0\0\0\0\0\x02", b"r2"),
            (b"pd/store/\0\0\0\0\0\0\0\x01", b"s1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn what_is_not_a_pd_snapshot_is_refused() {
        let mut wb = WriteBatch::new();
        assert!(stage(b"\xff\xff\xff", &mut wb).is_err());
        let outside = SnapshotData {
            keys: vec![b"pd/member".to_vec()],
            values: vec![b"x".to_vec()],
        };
        assert!(stage(&outside.encode_to_vec(), &mut wb).is_err());
        let uneven = SnapshotData {
            keys: vec![b"pd/meta".to_vec()],
            values: vec![],
        };
        assert!(stage(&uneven.encode_to_vec(), &mut wb).is_err());
        assert!(wb.is_empty(), "nothing staged from a refused snapshot");
    }
}
