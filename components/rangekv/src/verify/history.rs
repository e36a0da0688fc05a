//! Recording a run: the history (one JSON event a line, `checker::history`'s format, and the
//! same events as Jepsen's EDN op maps in `history.edn` for Elle's and Knossos's tools), the
//! nemesis schedule, and the counters the progress lines print.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use checker::history::{Event, Type};
use serde_json::Value;

/// Appends events to a history file as they happen; shared by every client task.
pub struct Recorder {
    start: Instant,
    out: Mutex<Output>,
    pub counters: Counters,
}

struct Output {
    history: BufWriter<File>,
    edn: BufWriter<File>,
    nemesis: BufWriter<File>,
    next_index: u64,
    /// The first write error; later events are dropped and the run fails at the end.
    failed: Option<String>,
}

/// What the progress lines print.
#[derive(Default)]
pub struct Counters {
    pub invoked: AtomicU64,
    pub ok: AtomicU64,
    pub fail: AtomicU64,
    pub info: AtomicU64,
    pub faults: AtomicU64,
    /// Errors by kind (the client error's variant name).
    pub errors: Mutex<BTreeMap<String, u64>>,
}

impl Recorder {
    pub fn create(dir: &Path, start: Instant) -> Result<Recorder> {
        let open = |name: &str| -> Result<BufWriter<File>> {
            let path = dir.join(name);
            Ok(BufWriter::new(
                File::create(&path).with_context(|| format!("creating {}", path.display()))?,
            ))
        };
        Ok(Recorder {
            start,
            out: Mutex::new(Output {
                history: open("history.jsonl")?,
                edn: open("history.edn")?,
                nemesis: open("nemesis.jsonl")?,
                next_index: 0,
                failed: None,
            }),
            counters: Counters::default(),
        })
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn invoke(&self, process: u64, f: &str, value: Value) {
        self.counters.invoked.fetch_add(1, Ordering::Relaxed);
        self.event(process, Type::Invoke, f, value, None);
    }

    pub fn ok(&self, process: u64, f: &str, value: Value) {
        self.counters.ok.fetch_add(1, Ordering::Relaxed);
        self.event(process, Type::Ok, f, value, None);
    }

    /// The operation certainly did not happen.
    pub fn fail(&self, process: u64, f: &str, value: Value, error: &str, kind: &str) {
        self.counters.fail.fetch_add(1, Ordering::Relaxed);
        self.count_error(kind);
        self.event(process, Type::Fail, f, value, Some(error.to_owned()));
    }

    /// The outcome is unknown; `process` must not invoke again.
    pub fn info(&self, process: u64, f: &str, value: Value, error: &str, kind: &str) {
        self.counters.info.fetch_add(1, Ordering::Relaxed);
        self.count_error(kind);
        self.event(process, Type::Info, f, value, Some(error.to_owned()));
    }

    fn count_error(&self, kind: &str) {
        let mut errors = self.counters.errors.lock().expect("counters poisoned");
        *errors.entry(kind.to_owned()).or_default() += 1;
    }

    fn event(&self, process: u64, kind: Type, f: &str, value: Value, error: Option<String>) {
        let mut out = self.out.lock().expect("recorder poisoned");
        // Taken under the lock, so that times increase with the index.
        let time = self.now();
        let event = Event {
            index: out.next_index,
            process,
            kind,
            f: f.to_owned(),
            value,
            time,
            error,
        };
        out.next_index += 1;
        let line = serde_json::to_string(&event).expect("events serialize");
        let edn = checker::edn::event_line(&event);
        if let Err(e) = writeln!(out.history, "{line}").and_then(|()| writeln!(out.edn, "{edn}")) {
            out.failed.get_or_insert_with(|| e.to_string());
        }
    }

    /// One line of the nemesis schedule.
    pub fn nemesis(&self, mut entry: serde_json::Map<String, Value>) {
        let mut out = self.out.lock().expect("recorder poisoned");
        entry.insert("time".into(), self.now().into());
        let line = Value::Object(entry).to_string();
        if let Err(e) = writeln!(out.nemesis, "{line}").and_then(|()| out.nemesis.flush()) {
            out.failed.get_or_insert_with(|| e.to_string());
        }
    }

    /// Writes out what is buffered; fails if any event could not be written.
    pub fn flush(&self) -> Result<()> {
        let mut out = self.out.lock().expect("recorder poisoned");
        if let Some(e) = &out.failed {
            anyhow::bail!("writing the history: {e}");
        }
        out.history.flush()?;
        out.edn.flush()?;
        out.nemesis.flush()?;
        Ok(())
    }
}

/// The kind of an error for the progress lines: its variant name (`Undetermined`, `Timeout`,
/// ...), from its `Debug` form.
pub fn error_kind(e: &impl std::fmt::Debug) -> String {
    let text = format!("{e:?}");
    text.split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or("Error")
        .to_owned()
}
