//! A store's snapshot files: where they live, how they are written, moved and ingested.
//!
//! Layout, under the engine's directory (`<engine dir>/snap`, so that ingestion can hard-link
//! the files into the database):
//! - `gen_<region>_<term>_<index>/`: a snapshot this store made as a leader, one SST file per
//!   non-empty data column family (`<cf>.sst`). A region keeps only its newest one; a
//!   transport opens the files before it streams them, so removing them does not cut a send
//!   short.
//! - `rcv_<region>_<term>_<index>/`: a snapshot received, complete and checked (sizes and
//!   CRC32 against the snapshot's own listing) and synced before the directory is renamed into
//!   place from its `.tmp` twin. It stays until the replica has ingested it *and* written its
//!   region state back to normal, so a crash in between can ingest it again.
//!
//! What travels between stores is the snapshot message (with [`super::SnapshotData`] listing
//! the files) followed by the files' bytes, in listing order ([`SnapManager::reader`] on the
//! sender, [`SnapManager::receiver`] on the receiver).
//!
//! This module does IO only; the decisions (what to delete, when to ingest) are the peer's
//! (`peer::membership`) and the store's at start-up.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use engine::{keys, Engine};
use proto::metapb;
use proto::raft_serverpb::MergeState;
use raft_log::ApplyState;

use super::{SnapFile, SnapshotData, DATA_CFS};
use crate::{Error, Result};

/// Names one snapshot of one region: its region and the Raft index and term it was taken at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SnapKey {
    pub region_id: u64,
    pub term: u64,
    pub index: u64,
}

impl SnapKey {
    fn name(&self) -> String {
        format!("{}_{}_{}", self.region_id, self.term, self.index)
    }

    /// Parses the tail of a directory name (`<region>_<term>_<index>`).
    fn parse(s: &str) -> Option<SnapKey> {
        let mut it = s.split('_').map(|p| p.parse::<u64>().ok());
        let key = SnapKey {
            region_id: it.next()??,
            term: it.next()??,
            index: it.next()??,
        };
        it.next().is_none().then_some(key)
    }
}

/// The snapshot files of one store (see the module docs). Holds only a path: clones and
/// instances made from the same engine directory agree.
#[derive(Clone, Debug)]
pub struct SnapManager {
    dir: PathBuf,
}

const GEN: &str = "gen_";
const RCV: &str = "rcv_";
const TMP: &str = ".tmp";

impl SnapManager {
    /// The snapshot files of the store whose engine lives in `engine_dir`.
    pub fn new(engine_dir: &Path) -> SnapManager {
        SnapManager {
            dir: engine_dir.join("snap"),
        }
    }

    pub fn of(engine: &Engine) -> SnapManager {
        SnapManager::new(engine.path())
    }

    fn gen_dir(&self, key: SnapKey) -> PathBuf {
        self.dir.join(format!("{GEN}{}", key.name()))
    }

    fn rcv_dir(&self, key: SnapKey) -> PathBuf {
        self.dir.join(format!("{RCV}{}", key.name()))
    }

    /// Writes the snapshot of `region` as of `state` from what `engine` holds now (the caller
    /// made sure that is exactly the state at `state.applied_index`): one SST file per
    /// non-empty data column family. Removes the region's older generated snapshots.
    pub fn generate(
        &self,
        engine: &Engine,
        region: &metapb::Region,
        state: ApplyState,
        merge_state: Option<&MergeState>,
    ) -> Result<SnapshotData> {
        let key = SnapKey {
            region_id: region.id,
            term: state.applied_term,
            index: state.applied_index,
        };
        let dir = self.gen_dir(key);
        let tmp = tmp_of(&dir);
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        let snap = engine.snapshot();
        let (start, end) = (
            keys::data_key(&region.start_key),
            keys::data_end_key(&region.end_key),
        );
        let mut files = Vec::new();
        for cf in DATA_CFS {
            let path = tmp.join(format!("{cf}.sst"));
            if let Some(size) = snap.export_sst(cf, &start, &end, &path)? {
                files.push(SnapFile {
                    cf: cf.to_owned(),
                    size,
                    checksum: checksum_of(&path)?,
                });
            }
        }
        for old in self.list(GEN)? {
            if old.region_id == region.id && old != key {
                let _ = fs::remove_dir_all(self.gen_dir(old));
            }
        }
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&tmp, &dir)?;
        Ok(SnapshotData {
            region: Some(region.clone()),
            merge_state: merge_state.cloned(),
            files,
        })
    }

    /// The bytes of a generated snapshot's files, in listing order. The files are opened
    /// here, so a later removal does not cut the read short.
    pub fn reader(&self, key: SnapKey, data: &SnapshotData) -> Result<SnapReader> {
        let dir = self.gen_dir(key);
        let mut files = Vec::new();
        for f in &data.files {
            let file = File::open(dir.join(format!("{}.sst", f.cf)))?;
            if file.metadata()?.len() != f.size {
                return Err(Error::Engine(format!(
                    "snapshot file {} of {key:?} changed size",
                    f.cf
                )));
            }
            files.push(file.take(f.size));
        }
        Ok(SnapReader { files, at: 0 })
    }

    /// Starts receiving the files of the snapshot `key` that `data` lists.
    pub fn receiver(&self, key: SnapKey, data: &SnapshotData) -> Result<SnapWriter> {
        let dir = self.rcv_dir(key);
        let tmp = tmp_of(&dir);
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        Ok(SnapWriter {
            dir,
            tmp,
            files: data.files.clone(),
            at: 0,
            written: 0,
            current: None,
        })
    }

    /// Whether every file `data` lists for `key` was received whole.
    pub fn is_received(&self, key: SnapKey, data: &SnapshotData) -> bool {
        let dir = self.rcv_dir(key);
        dir.is_dir()
            && data.files.iter().all(|f| {
                fs::metadata(dir.join(format!("{}.sst", f.cf))).is_ok_and(|m| m.len() == f.size)
            })
    }

    /// Ingests the received snapshot `key` into `engine`, every column family it has a file
    /// for. The received files stay (ingestion takes hard links), so this may run again after
    /// a crash. The caller deleted the region's old data beforehand.
    pub fn ingest(&self, engine: &Engine, key: SnapKey) -> Result<()> {
        let dir = self.rcv_dir(key);
        if !dir.is_dir() {
            return Err(Error::Engine(format!(
                "received snapshot {key:?} is missing from {}",
                self.dir.display()
            )));
        }
        for cf in DATA_CFS {
            let file = dir.join(format!("{cf}.sst"));
            if !file.exists() {
                continue;
            }
            let link = dir.join(format!("{cf}.ingest"));
            let _ = fs::remove_file(&link);
            fs::hard_link(&file, &link)?;
            let r = engine.ingest(cf, std::slice::from_ref(&link));
            let _ = fs::remove_file(&link);
            r?;
        }
        Ok(())
    }

    /// Removes the region's received snapshots up to `index` (the one just applied and any
    /// older ones that arrived too late).
    pub fn remove_received(&self, region_id: u64, index: u64) {
        for k in self.list(RCV).unwrap_or_default() {
            if k.region_id == region_id && k.index <= index {
                let _ = fs::remove_dir_all(self.rcv_dir(k));
            }
        }
    }

    /// Removes the region's generated snapshots (no longer offered to followers).
    pub fn remove_generated(&self, region_id: u64) {
        for k in self.list(GEN).unwrap_or_default() {
            if k.region_id == region_id {
                let _ = fs::remove_dir_all(self.gen_dir(k));
            }
        }
    }

    /// At start-up: removes every generated snapshot, every partial one and every received
    /// one but those in `keep` (replicas that crashed while applying them).
    pub fn clean_up(&self, keep: &[SnapKey]) -> Result<()> {
        fs::create_dir_all(&self.dir)?;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let kept = name
                .strip_prefix(RCV)
                .and_then(SnapKey::parse)
                .is_some_and(|k| keep.contains(&k));
            if !kept {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    /// The complete snapshots of one kind (`GEN` or `RCV`).
    fn list(&self, prefix: &str) -> Result<Vec<SnapKey>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(k) = name.strip_prefix(prefix).and_then(SnapKey::parse) {
                out.push(k);
            }
        }
        Ok(out)
    }
}

fn tmp_of(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(TMP);
    PathBuf::from(s)
}

fn checksum_of(path: &Path) -> Result<u32> {
    let mut h = crc32fast::Hasher::new();
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

/// The bytes of a snapshot's files, one after the other.
pub struct SnapReader {
    files: Vec<io::Take<File>>,
    at: usize,
}

impl Read for SnapReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(f) = self.files.get_mut(self.at) {
            let n = f.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.at += 1;
        }
        Ok(0)
    }
}

/// Writes a snapshot's bytes as they arrive into the files its listing names (see
/// [`SnapManager::receiver`]); [`SnapWriter::finish`] checks and publishes them.
pub struct SnapWriter {
    dir: PathBuf,
    tmp: PathBuf,
    files: Vec<SnapFile>,
    /// The file being written, and how much of it is.
    at: usize,
    written: u64,
    current: Option<(File, crc32fast::Hasher)>,
}

impl SnapWriter {
    /// Appends the next bytes of the stream.
    pub fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let Some(spec) = self.files.get(self.at) else {
                return Err(Error::InvalidRequest(
                    "more snapshot bytes than its files hold".into(),
                ));
            };
            if spec.size == 0 {
                // Never listed (decode refuses it); skipped rather than looped on.
                self.at += 1;
                continue;
            }
            if self.current.is_none() {
                let file = File::create(self.tmp.join(format!("{}.sst", spec.cf)))?;
                self.current = Some((file, crc32fast::Hasher::new()));
            }
            let take = ((spec.size - self.written) as usize).min(data.len());
            let (file, hasher) = self.current.as_mut().expect("opened above");
            file.write_all(&data[..take])?;
            hasher.update(&data[..take]);
            self.written += take as u64;
            data = &data[take..];
            if self.written == spec.size {
                self.close_current()?;
            }
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        let spec = &self.files[self.at];
        let (file, hasher) = self.current.take().expect("a file is open");
        if hasher.finalize() != spec.checksum {
            return Err(Error::InvalidRequest(format!(
                "snapshot file {} fails its checksum",
                spec.cf
            )));
        }
        file.sync_all()?;
        self.at += 1;
        self.written = 0;
        Ok(())
    }

    /// Checks that every file arrived whole and publishes the snapshot; synced, so a replica
    /// that applies it and crashes finds it again.
    pub fn finish(self) -> Result<()> {
        if self.at != self.files.len() {
            return Err(Error::InvalidRequest(
                "snapshot stream ended before its files did".into(),
            ));
        }
        let _ = fs::remove_dir_all(&self.dir);
        fs::rename(&self.tmp, &self.dir)?;
        if let Some(parent) = self.dir.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(())
    }
}

impl Drop for SnapWriter {
    fn drop(&mut self) {
        // Unfinished (or finished: then it was renamed away and this finds nothing).
        let _ = fs::remove_dir_all(&self.tmp);
    }
}

/// Copies a generated snapshot from one store's files to another's, as a transport would
/// (used by in-process transports).
pub fn copy(from: &SnapManager, to: &SnapManager, key: SnapKey, data: &SnapshotData) -> Result<()> {
    let mut reader = from.reader(key, data)?;
    let mut writer = to.receiver(key, data)?;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        writer.write(&buf[..n])?;
    }
    writer.finish()
}
