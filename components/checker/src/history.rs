//! The history format: one JSON object per line, one line per event, as Jepsen records them.
//!
//! A client operation is two events of the same `process`: an `invoke` when the client calls
//! it, then its completion:
//! - `ok`: it happened, and `value` holds what it observed (a read's value);
//! - `fail`: it certainly did not happen (the client was told so);
//! - `info`: its outcome is unknown: it may have happened, may still happen later, or never.
//!
//! A process runs one operation at a time. After an `info` it never invokes again (its
//! operation may still be in flight); the client goes on as a new process, as in Jepsen.
//!
//! ```text
//! {"index":0,"process":3,"type":"invoke","f":"write","value":["r/0",2],"time":120400}
//! {"index":1,"process":3,"type":"ok","f":"write","value":["r/0",2],"time":981230}
//! ```
//!
//! `time` is nanoseconds since the run started, from a monotonic clock. Field names and the
//! meaning of `type` follow Jepsen's (and Elle's) histories; `value` is workload-specific and
//! described by each checker.

use std::collections::HashMap;
use std::io::BufRead;

use serde::{Deserialize, Serialize};

/// The kind of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Type {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the history, from 0.
    pub index: u64,
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: Type,
    /// The function: `read`, `write`, `cas`, `add`, `ts`, ...
    pub f: String,
    #[serde(default)]
    pub value: serde_json::Value,
    /// Nanoseconds since the run started.
    pub time: u64,
    /// Why the operation failed or is unknown, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail,
    /// Unknown: the client could not tell, or the history ended before it did.
    Info,
}

/// An invocation paired with its completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    pub process: u64,
    pub f: String,
    /// The invocation's value (what the client asked for).
    pub invoke_value: serde_json::Value,
    /// The completion's value (what it observed); the invocation's value for `info`.
    pub value: serde_json::Value,
    pub outcome: Outcome,
    /// Invocation time.
    pub call: u64,
    /// Completion time; `None` when the outcome is unknown.
    pub ret: Option<u64>,
}

/// Reads a history written one event per line; blank lines are skipped.
pub fn read_history(reader: impl BufRead) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("line {}: {e}", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        events.push(serde_json::from_str(&line).map_err(|e| format!("line {}: {e}", i + 1))?);
    }
    Ok(events)
}

/// Pairs every invocation with the next completion of the same process, in invocation order.
/// An invocation without completion (the history ended first) counts as `info`; a completion
/// without invocation is an error (the history is malformed).
pub fn pair(history: &[Event]) -> Result<Vec<Operation>, String> {
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut ops: Vec<Operation> = Vec::new();
    for e in history {
        match e.kind {
            Type::Invoke => {
                if open.contains_key(&e.process) {
                    return Err(format!(
                        "event {}: process {} invoked while its previous operation is open",
                        e.index, e.process
                    ));
                }
                open.insert(e.process, ops.len());
                ops.push(Operation {
                    process: e.process,
                    f: e.f.clone(),
                    invoke_value: e.value.clone(),
                    value: e.value.clone(),
                    outcome: Outcome::Info,
                    call: e.time,
                    ret: None,
                });
            }
            kind => {
                let Some(i) = open.remove(&e.process) else {
                    return Err(format!(
                        "event {}: completion of process {} without an invocation",
                        e.index, e.process
                    ));
                };
                let op = &mut ops[i];
                if op.f != e.f {
                    return Err(format!(
                        "event {}: completes `{}` but process {} invoked `{}`",
                        e.index, e.f, e.process, op.f
                    ));
                }
                match kind {
                    Type::Ok => {
                        op.outcome = Outcome::Ok;
                        op.value = e.value.clone();
                        op.ret = Some(e.time);
                    }
                    Type::Fail => {
                        op.outcome = Outcome::Fail;
                        op.ret = Some(e.time);
                    }
                    Type::Info | Type::Invoke => {}
                }
            }
        }
    }
    Ok(ops)
}

/// Whether a history is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validity {
    Valid,
    /// At least one anomaly was found.
    Invalid,
    /// The checker could not decide (search budget exhausted, no final read, ...).
    Unknown,
}

/// One thing wrong with a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// A stable name: `not-linearizable`, `lost`, `unexpected`, `duplicate`, ...
    pub kind: String,
    /// For people: which key or values, and the operations involved.
    pub detail: String,
}

/// What a checker concluded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub validity: Validity,
    pub anomalies: Vec<Anomaly>,
    /// Why the result is unknown, if it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undecided: Vec<String>,
    /// Counts for people (operations checked, acknowledged inserts, ...).
    pub stats: serde_json::Map<String, serde_json::Value>,
}

impl CheckResult {
    pub(crate) fn new() -> CheckResult {
        CheckResult {
            validity: Validity::Valid,
            anomalies: Vec::new(),
            undecided: Vec::new(),
            stats: serde_json::Map::new(),
        }
    }

    pub(crate) fn anomaly(&mut self, kind: &str, detail: String) {
        self.anomalies.push(Anomaly {
            kind: kind.to_owned(),
            detail,
        });
        self.validity = Validity::Invalid;
    }

    pub(crate) fn undecided(&mut self, why: String) {
        self.undecided.push(why);
        if self.validity == Validity::Valid {
            self.validity = Validity::Unknown;
        }
    }

    pub(crate) fn stat(&mut self, name: &str, value: impl Into<serde_json::Value>) {
        self.stats.insert(name.to_owned(), value.into());
    }

    pub fn is_valid(&self) -> bool {
        self.validity == Validity::Valid
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// Builds histories in tests: `invoke` then `ok` / `fail` / `info` per process, with times
    /// counting up by one per event.
    #[derive(Default)]
    pub struct Builder {
        pub events: Vec<Event>,
    }

    impl Builder {
        pub fn push(
            &mut self,
            process: u64,
            kind: Type,
            f: &str,
            value: serde_json::Value,
        ) -> &mut Self {
            let index = self.events.len() as u64;
            self.events.push(Event {
                index,
                process,
                kind,
                f: f.to_owned(),
                value,
                time: index,
                error: None,
            });
            self
        }

        /// A complete operation: invoke then `kind` right after.
        pub fn op(
            &mut self,
            process: u64,
            kind: Type,
            f: &str,
            invoke: serde_json::Value,
            done: serde_json::Value,
        ) -> &mut Self {
            self.push(process, Type::Invoke, f, invoke);
            self.push(process, kind, f, done)
        }
    }

    #[test]
    fn events_round_trip_as_json_lines() {
        let mut b = Builder::default();
        b.op(1, Type::Ok, "write", json!(["r/0", 2]), json!(["r/0", 2]));
        let text: String = b
            .events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        assert!(text.starts_with(r#"{"index":0,"process":1,"type":"invoke","f":"write""#));
        let back = read_history(text.as_bytes()).unwrap();
        assert_eq!(back, b.events);
    }

    #[test]
    fn pairing_matches_completions_to_invocations_per_process() {
        let mut b = Builder::default();
        b.push(1, Type::Invoke, "read", json!(null))
            .push(2, Type::Invoke, "write", json!(5))
            .push(2, Type::Info, "write", json!(5))
            .push(1, Type::Ok, "read", json!(5))
            .push(3, Type::Invoke, "write", json!(6));
        let ops = pair(&b.events).unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!((ops[0].outcome, ops[0].ret), (Outcome::Ok, Some(3)));
        assert_eq!(ops[0].value, json!(5));
        assert_eq!((ops[1].outcome, ops[1].ret), (Outcome::Info, None));
        assert_eq!(
            (ops[2].outcome, ops[2].ret),
            (Outcome::Info, None),
            "no completion: unknown"
        );
    }

    #[test]
    fn malformed_histories_are_refused() {
        let mut b = Builder::default();
        b.push(1, Type::Ok, "read", json!(null));
        assert!(pair(&b.events).is_err(), "completion without invocation");
        let mut b = Builder::default();
        b.push(1, Type::Invoke, "read", json!(null))
            .push(1, Type::Invoke, "read", json!(null));
        assert!(pair(&b.events).is_err(), "two open operations");
    }
}
