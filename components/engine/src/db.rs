use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    ColumnFamilyDescriptor, Direction, IngestExternalFileOptions, IteratorMode, Options,
    ReadOptions, SstFileWriter, WriteOptions, DB,
};

use crate::{Error, Result};

/// User values of raw KV, and MVCC values of transactions.
pub const CF_DEFAULT: &str = "default";
/// Percolator locks.
pub const CF_LOCK: &str = "lock";
/// Percolator commit records.
pub const CF_WRITE: &str = "write";
/// Raft logs, hard states, apply states and region metadata.
pub const CF_RAFT: &str = "raft";
/// Every column family, in the order they are opened.
pub const ALL_CFS: [&str; 4] = [CF_DEFAULT, CF_LOCK, CF_WRITE, CF_RAFT];

/// Tuning knobs of the engine; the defaults suit tests and small machines.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Memtable size per column family, bytes.
    pub write_buffer_size: usize,
    /// Background compaction and flush threads.
    pub background_jobs: i32,
    /// DEVELOPMENT ONLY, LOSES ACKNOWLEDGED WRITES: every write skips RocksDB's write-ahead
    /// log (and so its fsync) and lives only in memtables until a flush, which persists all
    /// column families as one consistent cut (atomic flush). A kill -9 then loses what a power
    /// cut loses on a machine whose store skipped its fsyncs: the negative control of
    /// `rangekv verify --inject-anomaly no-fsync`. [`Engine::flush`] is the only way to make
    /// writes durable (the store flushes after bootstrap writes, splits and membership
    /// changes, so that a crash loses data, not region metadata PD already knows).
    pub unsafe_volatile: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            write_buffer_size: 32 << 20,
            background_jobs: 2,
            unsafe_volatile: false,
        }
    }
}

/// A handle to the store's RocksDB. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Engine {
    db: Arc<DB>,
    volatile: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.db.path())
            .finish()
    }
}

impl Engine {
    /// Opens (creating if missing) the database at `path` with all column families.
    pub fn open(path: impl AsRef<Path>, opts: &EngineOptions) -> Result<Engine> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(opts.background_jobs);
        // Every Raft round ends in a synced WAL write. Reusing old WAL files overwrites blocks
        // already allocated, so the fdatasync need not also commit the file's growth to the
        // filesystem journal (about 30% off each sync on ext4 here). Records carry their log
        // number, so recovery never replays a recycled file's old contents. (RocksDB refuses
        // writes without the WAL on a database that recycles, hence not when volatile.)
        if !opts.unsafe_volatile {
            db_opts.set_recycle_log_file_num(4);
        }
        // Without the WAL, only a flush persists: it must cut every column family at once.
        db_opts.set_atomic_flush(opts.unsafe_volatile);
        if opts.unsafe_volatile {
            // ... and a clean close does not flush either: closing is crashing, so that a test
            // can crash an engine by dropping it.
            db_opts = db_opts.get_options_from_string("avoid_flush_during_shutdown=true")?;
        }
        let cfs = ALL_CFS.iter().map(|name| {
            let mut cf_opts = Options::default();
            cf_opts.set_write_buffer_size(opts.write_buffer_size);
            if *name != CF_RAFT {
                cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
            }
            ColumnFamilyDescriptor::new(*name, cf_opts)
        });
        let db = DB::open_cf_descriptors(&db_opts, path, cfs)?;
        Ok(Engine {
            db: Arc::new(db),
            volatile: opts.unsafe_volatile,
        })
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| Error::UnknownCf(name.to_owned()))
    }

    /// Reads the latest value of `key` in column family `cf`.
    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf)?, key)?)
    }

    /// Writes `batch` atomically; with `sync` the write is on disk when this returns.
    pub fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.ops {
            let cf = self.cf(op.cf)?;
            match op.kind {
                OpKind::Put(k, v) => wb.put_cf(&cf, k, v),
                OpKind::Delete(k) => wb.delete_cf(&cf, k),
                OpKind::DeleteRange(s, e) => wb.delete_range_cf(&cf, s, e),
            }
        }
        let mut wo = WriteOptions::default();
        if self.volatile {
            wo.disable_wal(true);
        } else {
            wo.set_sync(sync);
        }
        self.db.write_opt(wb, &wo)?;
        Ok(())
    }

    /// Takes a consistent point-in-time view of the whole database.
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            engine: self,
            snap: self.db.snapshot(),
        }
    }

    /// Scans `[start, end)` of `cf` on the latest state; see [`Snapshot::scan`].
    pub fn scan(
        &self,
        cf: &str,
        start: &[u8],
        end: Option<&[u8]>,
        f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.snapshot().scan(cf, start, end, false, f)
    }

    /// Flushes memtables of every column family to SST files, as one consistent cut when the
    /// engine is volatile (see [`EngineOptions::unsafe_volatile`]).
    pub fn flush(&self) -> Result<()> {
        let cfs = ALL_CFS
            .iter()
            .map(|name| self.cf(name))
            .collect::<Result<Vec<_>>>()?;
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        Ok(())
    }

    /// Adds the SST files at `paths` (made by [`Snapshot::export_sst`]) to column family `cf`.
    /// Their keys shadow every older version (a memtable holding keys of their range is
    /// flushed first). The files are moved into the database: a caller that needs them
    /// afterwards passes hard links.
    pub fn ingest(&self, cf: &str, paths: &[PathBuf]) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let mut opts = IngestExternalFileOptions::default();
        opts.set_move_files(true);
        self.db
            .ingest_external_file_cf_opts(self.cf(cf)?, &opts, paths.to_vec())?;
        Ok(())
    }

    /// Whether writes skip the write-ahead log (development only).
    pub fn is_volatile(&self) -> bool {
        self.volatile
    }

    /// The database's directory.
    pub fn path(&self) -> &Path {
        self.db.path()
    }
}

/// A consistent view of the database at the moment it was taken.
pub struct Snapshot<'a> {
    engine: &'a Engine,
    snap: rocksdb::SnapshotWithThreadMode<'a, DB>,
}

impl Snapshot<'_> {
    /// Reads `key` in `cf` as of the snapshot.
    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let cf = self.engine.cf(cf)?;
        Ok(self.snap.get_cf(&cf, key)?)
    }

    /// Visits the keys of `cf` in `[start, end)` (`end = None`: to the end of the column family),
    /// ascending, or descending when `reverse`. The visitor returns `false` to stop.
    pub fn scan(
        &self,
        cf: &str,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
        mut f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let handle = self.engine.cf(cf)?;
        let mut ro = ReadOptions::default();
        ro.set_snapshot(&self.snap);
        ro.set_iterate_lower_bound(start.to_vec());
        if let Some(end) = end {
            ro.set_iterate_upper_bound(end.to_vec());
        }
        let mode = if reverse {
            IteratorMode::End
        } else {
            IteratorMode::From(start, Direction::Forward)
        };
        for item in self.engine.db.iterator_cf_opt(&handle, ro, mode) {
            let (k, v) = item?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }
}

impl Snapshot<'_> {
    /// Writes the keys of `cf` in `[start, end)` as of the snapshot into a new SST file at
    /// `path`, synced, for [`Engine::ingest`] on this or another store. Returns the file's
    /// size, or `None` (and no file) when the range is empty.
    pub fn export_sst(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
        path: &Path,
    ) -> Result<Option<u64>> {
        let mut opts = Options::default();
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let mut writer = SstFileWriter::create(&opts);
        let mut opened = false;
        let mut failed = None;
        self.scan(cf, start, Some(end), false, |k, v| {
            let r = if opened {
                writer.put(k, v)
            } else {
                opened = true;
                writer.open(path).and_then(|()| writer.put(k, v))
            };
            match r {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        if !opened {
            return Ok(None);
        }
        writer.finish()?;
        std::fs::File::open(path)?.sync_all()?;
        Ok(Some(std::fs::metadata(path)?.len()))
    }
}

enum OpKind {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    DeleteRange(Vec<u8>, Vec<u8>),
}

struct Op {
    cf: &'static str,
    kind: OpKind,
}

/// A set of writes applied atomically by [`Engine::write`].
///
/// It is engine-independent (plain owned bytes) so that it can be built on any thread and sent
/// across channels; the RocksDB batch is assembled at write time.
#[derive(Default)]
pub struct WriteBatch {
    ops: Vec<Op>,
    size: usize,
}

impl WriteBatch {
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    pub fn put(&mut self, cf: &'static str, key: &[u8], value: &[u8]) {
        self.size += key.len() + value.len();
        self.ops.push(Op {
            cf,
            kind: OpKind::Put(key.to_vec(), value.to_vec()),
        });
    }

    pub fn delete(&mut self, cf: &'static str, key: &[u8]) {
        self.size += key.len();
        self.ops.push(Op {
            cf,
            kind: OpKind::Delete(key.to_vec()),
        });
    }

    /// Deletes every key in `[start, end)` of `cf`.
    pub fn delete_range(&mut self, cf: &'static str, start: &[u8], end: &[u8]) {
        self.size += start.len() + end.len();
        self.ops.push(Op {
            cf,
            kind: OpKind::DeleteRange(start.to_vec(), end.to_vec()),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn count(&self) -> usize {
        self.ops.len()
    }

    /// Approximate payload bytes.
    pub fn data_size(&self) -> usize {
        self.size
    }

    /// Moves every operation of `other` to the end of this batch.
    pub fn append(&mut self, other: &mut WriteBatch) {
        self.size += other.size;
        self.ops.append(&mut other.ops);
        other.size = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        (dir, engine)
    }

    #[test]
    fn batch_is_atomic_across_cfs_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
            let mut wb = WriteBatch::new();
            wb.put(CF_DEFAULT, b"a", b"1");
            wb.put(CF_RAFT, b"r", b"2");
            engine.write(wb, true).unwrap();
        }
        let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        assert_eq!(engine.get(CF_DEFAULT, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(engine.get(CF_RAFT, b"r").unwrap(), Some(b"2".to_vec()));
        assert_eq!(engine.get(CF_LOCK, b"a").unwrap(), None);
    }

    #[test]
    fn a_volatile_engine_keeps_only_what_was_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let volatile = EngineOptions {
            unsafe_volatile: true,
            ..EngineOptions::default()
        };
        {
            let engine = Engine::open(dir.path(), &volatile).unwrap();
            assert!(engine.is_volatile());
            let mut wb = WriteBatch::new();
            wb.put(CF_DEFAULT, b"a", b"1");
            wb.put(CF_RAFT, b"r", b"1");
            engine.write(wb, true).unwrap();
            engine.flush().unwrap();
            let mut wb = WriteBatch::new();
            wb.put(CF_DEFAULT, b"a", b"2");
            wb.put(CF_RAFT, b"r", b"2");
            engine.write(wb, true).unwrap();
            assert_eq!(engine.get(CF_DEFAULT, b"a").unwrap(), Some(b"2".to_vec()));
        }
        let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
        assert_eq!(engine.get(CF_DEFAULT, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(engine.get(CF_RAFT, b"r").unwrap(), Some(b"1".to_vec()));
    }

    #[test]
    fn snapshot_does_not_see_later_writes() {
        let (_dir, engine) = open();
        let mut wb = WriteBatch::new();
        wb.put(CF_DEFAULT, b"k", b"old");
        engine.write(wb, false).unwrap();
        let snap = engine.snapshot();
        let mut wb = WriteBatch::new();
        wb.put(CF_DEFAULT, b"k", b"new");
        wb.put(CF_DEFAULT, b"k2", b"x");
        engine.write(wb, false).unwrap();
        assert_eq!(snap.get(CF_DEFAULT, b"k").unwrap(), Some(b"old".to_vec()));
        assert_eq!(snap.get(CF_DEFAULT, b"k2").unwrap(), None);
        assert_eq!(engine.get(CF_DEFAULT, b"k").unwrap(), Some(b"new".to_vec()));
    }

    #[test]
    fn scan_bounds_and_reverse() {
        let (_dir, engine) = open();
        let mut wb = WriteBatch::new();
        for k in [b"a", b"b", b"c", b"d"] {
            wb.put(CF_DEFAULT, k, k);
        }
        engine.write(wb, false).unwrap();
        let collect = |start: &[u8], end: Option<&[u8]>, reverse: bool| {
            let mut out = Vec::new();
            engine
                .snapshot()
                .scan(CF_DEFAULT, start, end, reverse, |k, _| {
                    out.push(k.to_vec());
                    true
                })
                .unwrap();
            out
        };
        assert_eq!(
            collect(b"b", Some(b"d"), false),
            vec![b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(
            collect(b"b", Some(b"d"), true),
            vec![b"c".to_vec(), b"b".to_vec()]
        );
        assert_eq!(collect(b"", None, true).len(), 4);
        let mut wb = WriteBatch::new();
        wb.delete_range(CF_DEFAULT, b"a", b"c");
        engine.write(wb, false).unwrap();
        assert_eq!(
            collect(b"", None, false),
            vec![b"c".to_vec(), b"d".to_vec()]
        );
    }

    #[test]
    fn an_exported_range_ingests_into_another_engine_over_older_versions() {
        let (_dir, src) = open();
        let mut wb = WriteBatch::new();
        for k in [b"a", b"b", b"c", b"d"] {
            wb.put(CF_WRITE, k, b"new");
        }
        src.write(wb, false).unwrap();
        let out = tempfile::tempdir().unwrap();
        let file = out.path().join("write.sst");
        let snap = src.snapshot();
        assert_eq!(
            snap.export_sst(CF_WRITE, b"x", b"z", &file).unwrap(),
            None,
            "an empty range makes no file"
        );
        assert!(!file.exists());
        assert!(
            snap.export_sst(CF_WRITE, b"b", b"d", &file)
                .unwrap()
                .unwrap()
                > 0
        );

        let (_dir2, dst) = open();
        let mut wb = WriteBatch::new();
        wb.put(CF_WRITE, b"a", b"kept");
        wb.put(CF_WRITE, b"b", b"old");
        dst.write(wb, false).unwrap();
        dst.ingest(CF_WRITE, std::slice::from_ref(&file)).unwrap();
        let mut got = Vec::new();
        dst.scan(CF_WRITE, b"", None, |k, v| {
            got.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), b"kept".to_vec()),
                (b"b".to_vec(), b"new".to_vec()),
                (b"c".to_vec(), b"new".to_vec()),
            ]
        );
        assert_eq!(
            dst.get(CF_DEFAULT, b"b").unwrap(),
            None,
            "only the named cf"
        );
    }
}
