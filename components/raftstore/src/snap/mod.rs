//! Raft snapshots of a region: making one on the leader's store, and applying one on a replica
//! that fell behind the leader's first log index (or was just added).
//!
//! Protocol:
//! 1. raft-rs on the leader asks its storage for a snapshot; [`PeerSnapshotSource`] answers
//!    "temporarily unavailable" and asks the region's apply worker to make one
//!    ([`crate::apply::ApplyMsg::Snapshot`]). The worker writes out its pending batch, so the
//!    engine holds exactly the region as of its applied index, and exports every data column
//!    family of the region's range from one engine snapshot into SST files
//!    ([`SnapManager::generate`], [`files`]). raft-rs asks again on the follower's next
//!    heartbeat response and gets it.
//! 2. The snapshot message carries the region (range, epoch, peers, hence the conf state), its
//!    merge state and the list of its files with their sizes and checksums
//!    ([`SnapshotData`]); the transport moves the message and then the files' bytes (between
//!    processes over the `Snapshot` gRPC stream, in chunks, throttled; in-process by
//!    [`files::copy`]). The receiver keeps them in its own snapshot directory, checked and
//!    synced, before the message reaches the replica.
//! 3. The replica accepts the message only if the files are there ([`SnapManager::is_received`]).
//!    It waits until its apply worker has applied everything it was given, then stages in the
//!    round's synced write batch: deletion of the old range's data and of the snapshot's
//!    range, the region state `Applying` (with the new region and merge state) and the log
//!    reset ([`stage_apply`], `RaftLogStorage::apply_snapshot`). Once that batch is on disk it
//!    ingests the files ([`SnapManager::ingest`]) and writes the state `Normal` (or `Merging`),
//!    synced ([`finish_apply`]); only then are the files removed, and only then does the apply
//!    worker get entries after the snapshot.
//! 4. A store restarted with a region in `Applying` ingests the same files again and finishes
//!    ([`recover_applying`]): ingesting twice gives the same data, and nothing was written over
//!    the range after the deletion but the ingestion.
//!
//! Invariants:
//! - A snapshot's index and term are the apply state's, and its data is the region's as of
//!   that index: entries after it are applied on top, entries up to it never again.
//! - A replica never applies a snapshot whose range overlaps another region it hosts (checked
//!   on receipt by the store), nor one older than what it has committed (raft-rs).
//! - After a crash a replica has its old state or the snapshot's: the synced batch of step 3
//!   either happened (and the files are on disk, synced before the message was delivered) or
//!   did not.
//!
//! Costs: generating runs on the apply worker and stalls its other regions while the files
//! are written; no snapshot is ever held in memory whole. Ingesting flushes a memtable that
//! holds keys of the range (the deletion just staged is such a key), as TiKV's does.

mod files;

use std::sync::Arc;

use bytes::Bytes;
use engine::{keys, Engine, WriteBatch, CF_DEFAULT, CF_LOCK, CF_WRITE};
use parking_lot::Mutex;
use prost::Message as _;
use proto::metapb;
use proto::raft_serverpb::{MergeState, PeerState, RaftMessage, RegionLocalState};
use protobuf::Message as _;
use raft::eraftpb::{Snapshot, SnapshotMetadata};
use raft::StorageError;
use raft_log::ApplyState;

use crate::apply::{ApplyMsg, ApplyRouter};
use crate::conf_change::conf_state_of;
use crate::{Error, Result};

pub use files::{copy, SnapKey, SnapManager, SnapReader, SnapWriter};

/// The data column families a snapshot carries.
pub const DATA_CFS: [&str; 3] = [CF_DEFAULT, CF_LOCK, CF_WRITE];

/// What a snapshot's `data` holds: the region and the list of its files (their bytes travel
/// after the message, in this order).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotData {
    #[prost(message, optional, tag = "1")]
    pub region: Option<metapb::Region>,
    /// Set if the region is the source of a prepared merge (see [`crate::merge`]).
    #[prost(message, optional, tag = "3")]
    pub merge_state: Option<MergeState>,
    #[prost(message, repeated, tag = "4")]
    pub files: Vec<SnapFile>,
}

/// One SST file of a snapshot: the keys of one data column family in the region's range.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapFile {
    #[prost(string, tag = "1")]
    pub cf: String,
    #[prost(uint64, tag = "2")]
    pub size: u64,
    /// CRC32 (IEEE) of the file's bytes.
    #[prost(uint32, tag = "3")]
    pub checksum: u32,
}

impl SnapshotData {
    /// Bytes of all files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Makes the snapshot of `region` at `state` from what `engine` holds now (the caller made
/// sure that is exactly the state as of `state.applied_index`), its files in `mgr`.
pub fn generate(
    mgr: &SnapManager,
    engine: &Engine,
    region: &metapb::Region,
    state: ApplyState,
    merge_state: Option<&MergeState>,
) -> Result<Snapshot> {
    let data = mgr.generate(engine, region, state, merge_state)?;
    let mut meta = SnapshotMetadata {
        index: state.applied_index,
        term: state.applied_term,
        ..Default::default()
    };
    meta.set_conf_state(conf_state_of(region));
    let mut s = Snapshot::default();
    s.set_metadata(meta);
    s.data = Bytes::from(data.encode_to_vec());
    Ok(s)
}

/// Decodes a snapshot's data, refusing listings no generator makes.
pub fn decode(snap: &Snapshot) -> Result<SnapshotData> {
    let data = SnapshotData::decode(&snap.data[..])
        .map_err(|e| Error::InvalidRequest(format!("undecodable snapshot: {e}")))?;
    if data.region.is_none() {
        return Err(Error::InvalidRequest("snapshot without a region".into()));
    }
    for (i, f) in data.files.iter().enumerate() {
        let known = DATA_CFS.contains(&f.cf.as_str());
        let repeated = data.files[..i].iter().any(|g| g.cf == f.cf);
        if !known || repeated || f.size == 0 {
            return Err(Error::InvalidRequest(format!(
                "malformed snapshot file listing {:?}",
                f.cf
            )));
        }
    }
    Ok(data)
}

/// The key of a snapshot's files.
pub fn key_of(snap: &Snapshot, data: &SnapshotData) -> SnapKey {
    SnapKey {
        region_id: data.region.as_ref().map_or(0, |r| r.id),
        term: snap.get_metadata().term,
        index: snap.get_metadata().index,
    }
}

/// The snapshot a Raft message carries: its files' key and listing. `None` if `msg` holds no
/// decodable snapshot message.
pub fn files_of(msg: &RaftMessage) -> Option<(SnapKey, SnapshotData)> {
    let m = raft::eraftpb::Message::parse_from_bytes(&msg.message).ok()?;
    if m.get_msg_type() != raft::eraftpb::MessageType::MsgSnapshot {
        return None;
    }
    let snap = m.get_snapshot();
    let data = decode(snap).ok()?;
    Some((key_of(snap, &data), data))
}

/// Stages the synced part of applying a snapshot into `wb`: the data of `old` (the replica's
/// range before, if it had one) and of the snapshot's range go, and the region state becomes
/// `Applying`. The caller adds the log reset, and ingests the files once `wb` is on disk.
pub fn stage_apply(wb: &mut WriteBatch, old: Option<&metapb::Region>, data: &SnapshotData) {
    let region = data.region.as_ref().expect("decode checked");
    for r in old.into_iter().chain(std::iter::once(region)) {
        delete_region_data(wb, r);
    }
    crate::bootstrap::write_applying_state(wb, region, data.merge_state.as_ref());
}

/// Ends applying a snapshot whose [`stage_apply`] batch is on disk: ingests its files, writes
/// the region state it leaves (`Normal`, or `Merging` for a prepared merge source), synced,
/// and then removes the files. Answers that state.
pub fn finish_apply(
    mgr: &SnapManager,
    engine: &Engine,
    key: SnapKey,
    region: &metapb::Region,
    merge_state: Option<&MergeState>,
) -> Result<PeerState> {
    mgr.ingest(engine, key)?;
    let mut wb = WriteBatch::new();
    let state = match merge_state {
        Some(m) => {
            crate::bootstrap::write_merging_state(&mut wb, region, m);
            PeerState::Merging
        }
        None => {
            crate::bootstrap::write_region_state(&mut wb, region, PeerState::Normal);
            PeerState::Normal
        }
    };
    engine.write(wb, true)?;
    mgr.remove_received(key.region_id, key.index);
    Ok(state)
}

/// At start-up, before any region is loaded: finishes every snapshot apply a crash cut short
/// (a region in `Applying`) and removes every other snapshot file. Answers the states as they
/// are afterwards.
pub fn recover_applying(
    mgr: &SnapManager,
    engine: &Engine,
    mut states: Vec<RegionLocalState>,
) -> Result<Vec<RegionLocalState>> {
    // (position in `states`, the snapshot its apply state names)
    let mut applying = Vec::new();
    for (i, s) in states.iter().enumerate() {
        let Some(region) = s
            .region
            .as_ref()
            .filter(|_| s.state == PeerState::Applying as i32)
        else {
            continue;
        };
        let apply = ApplyState::load(engine, region.id)?.ok_or_else(|| {
            Error::Engine(format!(
                "region {} is applying without an apply state",
                region.id
            ))
        })?;
        let key = SnapKey {
            region_id: region.id,
            term: apply.applied_term,
            index: apply.applied_index,
        };
        applying.push((i, key));
    }
    let keep: Vec<SnapKey> = applying.iter().map(|(_, k)| *k).collect();
    mgr.clean_up(&keep)?;
    for (i, key) in applying {
        let s = &mut states[i];
        let region = s.region.as_ref().expect("an applying state has a region");
        let state = finish_apply(mgr, engine, key, region, s.merge_state.as_ref())?;
        tracing::info!(
            region_id = region.id,
            index = key.index,
            "interrupted snapshot apply finished"
        );
        s.state = state as i32;
    }
    Ok(states)
}

/// Stages the deletion of `region`'s data in every data column family.
pub fn delete_region_data(wb: &mut WriteBatch, region: &metapb::Region) {
    let (start, end) = (
        keys::data_key(&region.start_key),
        keys::data_end_key(&region.end_key),
    );
    for cf in DATA_CFS {
        wb.delete_range(cf, &start, &end);
    }
}

/// Where a leader's snapshot is in the making.
#[derive(Default)]
pub enum GenState {
    #[default]
    Idle,
    Generating,
    Ready(Snapshot),
    Failed,
}

pub type SharedGen = Arc<Mutex<GenState>>;

/// The snapshot source of one region's log storage (see the module docs).
pub struct PeerSnapshotSource {
    pub region_id: u64,
    pub gen: SharedGen,
    pub apply: ApplyRouter,
}

impl raft_log::SnapshotSource for PeerSnapshotSource {
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let mut gen = self.gen.lock();
        match &*gen {
            // A snapshot made before `to` joined does not name it: raft-rs there would refuse
            // it, so only a newer one will do.
            GenState::Ready(s) if s.get_metadata().index >= request_index && names(s, to) => {
                return Ok(s.clone())
            }
            GenState::Generating => {}
            GenState::Idle | GenState::Ready(_) | GenState::Failed => {
                *gen = GenState::Generating;
                crate::metrics::SNAPSHOTS_GENERATED.inc();
                self.apply.send(
                    self.region_id,
                    ApplyMsg::Snapshot {
                        region_id: self.region_id,
                        gen: self.gen.clone(),
                    },
                );
            }
        }
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

/// Whether the snapshot's conf state has peer `id` (a follower refuses one without itself).
pub fn names(snap: &Snapshot, id: u64) -> bool {
    let cs = snap.get_metadata().get_conf_state();
    cs.voters
        .iter()
        .chain(&cs.learners)
        .chain(&cs.voters_outgoing)
        .any(|v| *v == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::EngineOptions;

    fn region(id: u64, start: &[u8], end: &[u8]) -> metapb::Region {
        metapb::Region {
            id,
            start_key: start.to_vec().into(),
            end_key: end.to_vec().into(),
            peers: vec![metapb::Peer {
                id: 10,
                store_id: 1,
                ..Default::default()
            }],
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 2,
                version: 3,
            }),
        }
    }

    fn put(engine: &Engine, cf: &'static str, k: &[u8], v: &[u8]) {
        let mut wb = WriteBatch::new();
        wb.put(cf, &keys::data_key(k), v);
        engine.write(wb, false).unwrap();
    }

    fn all(engine: &Engine, cf: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        engine
            .snapshot()
            .scan(
                cf,
                &keys::data_key(b""),
                Some(&keys::data_end_key(b"")),
                false,
                |k, v| {
                    out.push((keys::origin_key(k).to_vec(), v.to_vec()));
                    true
                },
            )
            .unwrap();
        out
    }

    fn engine() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        (dir, e)
    }

    const STATE: ApplyState = ApplyState {
        applied_index: 42,
        applied_term: 6,
        truncated_index: 40,
        truncated_term: 6,
    };

    /// A leader's engine with region 7 = [k, x) and keys around it, its snapshot, and the
    /// snapshot's files copied to a second store.
    fn made_and_sent() -> (
        (tempfile::TempDir, Engine),
        (tempfile::TempDir, Engine),
        Snapshot,
    ) {
        let src = engine();
        put(&src.1, CF_DEFAULT, b"a", b"outside");
        put(&src.1, CF_DEFAULT, b"m", b"1");
        put(&src.1, CF_LOCK, b"n", b"lock");
        put(&src.1, CF_WRITE, b"o", b"write");
        put(&src.1, CF_DEFAULT, b"z", b"outside");
        let r = region(7, b"k", b"x");
        let snap = generate(&SnapManager::of(&src.1), &src.1, &r, STATE, None).unwrap();
        let dst = engine();
        let data = decode(&snap).unwrap();
        copy(
            &SnapManager::of(&src.1),
            &SnapManager::of(&dst.1),
            key_of(&snap, &data),
            &data,
        )
        .unwrap();
        (src, dst, snap)
    }

    /// The receiver's engine before the snapshot: its old range [k, z) of region 7.
    fn stale_receiver(dst: &Engine) -> metapb::Region {
        put(dst, CF_DEFAULT, b"a", b"kept");
        put(dst, CF_DEFAULT, b"l", b"stale, inside the new range");
        put(dst, CF_DEFAULT, b"y", b"stale, in the old range only");
        region(7, b"k", b"z")
    }

    fn assert_holds_the_snapshot(dst: &Engine) {
        assert_eq!(
            all(dst, CF_DEFAULT),
            vec![
                (b"a".to_vec(), b"kept".to_vec()),
                (b"m".to_vec(), b"1".to_vec())
            ]
        );
        assert_eq!(all(dst, CF_LOCK), vec![(b"n".to_vec(), b"lock".to_vec())]);
        assert_eq!(all(dst, CF_WRITE), vec![(b"o".to_vec(), b"write".to_vec())]);
        let states = crate::bootstrap::load_region_states(dst).unwrap();
        assert_eq!(states.len(), 1);
        assert_eq!(states[0].state, PeerState::Normal as i32);
        assert_eq!(states[0].region.as_ref(), Some(&region(7, b"k", b"x")));
    }

    #[test]
    fn a_snapshot_carries_exactly_the_region_and_replaces_the_old_range() {
        let (_s, (_d, dst), snap) = made_and_sent();
        assert!(names(&snap, 10) && !names(&snap, 11));
        assert_eq!(snap.get_metadata().index, 42);
        assert_eq!(snap.get_metadata().term, 6);
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![10]);
        let data = decode(&snap).unwrap();
        let cfs: Vec<&str> = data.files.iter().map(|f| f.cf.as_str()).collect();
        assert_eq!(cfs, DATA_CFS, "one file per non-empty column family");
        let (key, mgr) = (key_of(&snap, &data), SnapManager::of(&dst));
        assert!(mgr.is_received(key, &data));

        let old = stale_receiver(&dst);
        let mut wb = WriteBatch::new();
        stage_apply(&mut wb, Some(&old), &data);
        dst.write(wb, true).unwrap();
        finish_apply(&mgr, &dst, key, data.region.as_ref().unwrap(), None).unwrap();
        assert_holds_the_snapshot(&dst);
        assert!(!mgr.is_received(key, &data), "files removed once applied");
    }

    #[test]
    fn a_crash_between_the_synced_batch_and_ingestion_is_finished_at_start_up() {
        let (_s, (dir, dst), snap) = made_and_sent();
        let data = decode(&snap).unwrap();
        let old = stale_receiver(&dst);
        let mut wb = WriteBatch::new();
        stage_apply(&mut wb, Some(&old), &data);
        STATE.write(7, &mut wb);
        dst.write(wb, true).unwrap();
        // The crash: nothing is ingested. Left over from before it, too: a generated
        // snapshot and a partial receive.
        drop(dst);
        let mgr = SnapManager::new(dir.path());
        std::fs::create_dir_all(dir.path().join("snap/gen_3_1_9")).unwrap();
        std::fs::create_dir_all(dir.path().join("snap/rcv_4_1_9.tmp")).unwrap();

        let dst = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        let states = crate::bootstrap::load_region_states(&dst).unwrap();
        assert_eq!(states[0].state, PeerState::Applying as i32);
        let states = recover_applying(&mgr, &dst, states).unwrap();
        assert_eq!(states[0].state, PeerState::Normal as i32);
        assert_holds_the_snapshot(&dst);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("snap"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "every snapshot file is gone: {left:?}");

        // Recovering again (a crash right after the ingestion) changes nothing.
        let states = recover_applying(&mgr, &dst, states).unwrap();
        assert_eq!(states[0].state, PeerState::Normal as i32);
        assert_holds_the_snapshot(&dst);
    }

    #[test]
    fn a_received_stream_must_match_its_listing() {
        let (src, _d, snap) = made_and_sent();
        let data = decode(&snap).unwrap();
        let key = key_of(&snap, &data);
        let from = SnapManager::of(&src.1);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut from.reader(key, &data).unwrap(), &mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, data.total_size());
        let to = engine();
        let mgr = SnapManager::of(&to.1);
        std::fs::create_dir_all(to.0.path().join("snap")).unwrap();

        let mut short = mgr.receiver(key, &data).unwrap();
        short.write(&bytes[..bytes.len() - 1]).unwrap();
        assert!(short.finish().is_err(), "a stream cut short");
        let mut long = mgr.receiver(key, &data).unwrap();
        assert!(
            long.write(&[bytes.clone(), vec![0]].concat()).is_err(),
            "bytes past the files"
        );
        let mut flipped = bytes.clone();
        flipped[3] ^= 1;
        let mut bad = mgr.receiver(key, &data).unwrap();
        assert!(bad.write(&flipped).is_err(), "a checksum mismatch");
        drop((long, bad));
        assert!(!mgr.is_received(key, &data));

        // In pieces of any size, the same bytes are the snapshot.
        let mut good = mgr.receiver(key, &data).unwrap();
        for piece in bytes.chunks(7) {
            good.write(piece).unwrap();
        }
        good.finish().unwrap();
        assert!(mgr.is_received(key, &data));
    }

    #[test]
    fn malformed_snapshot_data_is_refused() {
        let mut s = Snapshot {
            data: Bytes::from_static(b"\xff\xff\xff"),
            ..Default::default()
        };
        assert!(decode(&s).is_err());
        s.data = Bytes::from(SnapshotData::default().encode_to_vec());
        assert!(decode(&s).is_err(), "no region");
        let listing = |files: Vec<(&str, u64)>| SnapshotData {
            region: Some(region(1, b"", b"")),
            files: files
                .into_iter()
                .map(|(cf, size)| SnapFile {
                    cf: cf.into(),
                    size,
                    checksum: 0,
                })
                .collect(),
            merge_state: None,
        };
        for (files, why) in [
            (
                vec![("raft", 10)],
                "raft cf must never come from a snapshot",
            ),
            (vec![("default", 10), ("default", 10)], "a cf twice"),
            (vec![("lock", 0)], "an empty file"),
        ] {
            s.data = Bytes::from(listing(files).encode_to_vec());
            assert!(decode(&s).is_err(), "{why}");
        }
        s.data = Bytes::from(listing(vec![("default", 10), ("write", 3)]).encode_to_vec());
        assert!(decode(&s).is_ok());
    }
}
