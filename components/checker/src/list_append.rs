//! The list-append checker (Elle's workload): transactions append unique values to lists
//! and read whole lists; the order each list shows fixes every transaction's place, so the
//! dependencies between transactions can be read off the history and checked for the cycles
//! snapshot isolation forbids.
//!
//! Values: `f` is `txn`; `value` is a list of micro-operations, `["append", key, v]` or
//! `["r", key, list]` (`null` when invoked, the list read when `ok`). Keys are strings or
//! numbers; every value appended to a key is unique for that key.
//!
//! What is inferred (from `ok` transactions, plus `info` ones whose appends were read):
//! - **Version order** of each key: every read of it must be a prefix of the longest one
//!   (else **incompatible-order**); the longest is the order of the appends it holds.
//! - **wr**: the writer of the last value a read saw → the reader. **ww**: the writer of a
//!   value → the writer of the next value of that key. **rw**: a reader → the writer of the
//!   value after the last one it saw (the first value, if it saw none).
//! - A transaction reading a key it appended to sees its own appends at the end, in order
//!   (else **internal**); dependencies use what it saw of others.
//!
//! Anomalies (all forbidden under snapshot isolation, as Elle's `:snapshot-isolation` model
//! says): **G1a** (aborted read: a value of a failed transaction was read), **G1b**
//! (intermediate read: the last value seen is not its writer's last append to that key),
//! **garbage-read** (a value nobody appended), **duplicate-elements**, **G0** (a cycle of ww
//! edges), **G1c** (a cycle of ww and wr edges), **G-single** (a cycle with exactly one rw
//! edge: read skew, lost update). Cycles with two or more rw edges (**G2**, write skew) are
//! allowed under snapshot isolation; they are counted in the stats.
//!
//! Limits (as Elle's): appends never read are not ordered, so they take part in no edge; the
//! search reports one cycle per strongly connected component and kind.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::history::{pair, CheckResult, Event, Outcome};

/// How many examples of each anomaly the details list.
const EXAMPLES: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Dep {
    Ww,
    Wr,
    Rw,
}

/// One micro-operation.
#[derive(Clone, Debug)]
enum Mop {
    Append(String, serde_json::Value),
    Read(String, Option<Vec<serde_json::Value>>),
}

struct Txn {
    outcome: Outcome,
    mops: Vec<Mop>,
    /// Index in the history of the invocation, for people.
    label: String,
}

fn key_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn parse(op_value: &serde_json::Value) -> Result<Vec<Mop>, String> {
    let list = op_value.as_array().ok_or("a txn's value is not a list")?;
    list.iter()
        .map(|m| {
            let m = m.as_array().ok_or("a micro-op is not a list")?;
            match (m.first().and_then(|f| f.as_str()), m.get(1), m.get(2)) {
                (Some("append"), Some(k), Some(v)) => Ok(Mop::Append(key_of(k), v.clone())),
                (Some("r"), Some(k), v) => {
                    let read = match v {
                        None | Some(serde_json::Value::Null) => None,
                        Some(serde_json::Value::Array(l)) => Some(l.clone()),
                        Some(other) => return Err(format!("a read of {other} (not a list)")),
                    };
                    Ok(Mop::Read(key_of(k), read))
                }
                _ => Err(format!(
                    "unknown micro-op {}",
                    serde_json::Value::from(m.clone())
                )),
            }
        })
        .collect()
}

struct Notes<'a> {
    result: &'a mut CheckResult,
    counts: BTreeMap<&'static str, u64>,
    examples: BTreeMap<&'static str, Vec<String>>,
}

impl Notes<'_> {
    fn note(&mut self, kind: &'static str, detail: String) {
        *self.counts.entry(kind).or_default() += 1;
        let list = self.examples.entry(kind).or_default();
        if list.len() < EXAMPLES {
            list.push(detail);
        }
    }

    fn finish(self) {
        for (kind, examples) in self.examples {
            let n = self.counts[kind];
            self.result
                .anomaly(kind, format!("{n} found, e.g. {}", examples.join("; ")));
        }
    }
}

/// Checks a list-append history for the anomalies snapshot isolation forbids; see the module
/// docs.
pub fn check_list_append(history: &[Event]) -> CheckResult {
    let mut result = CheckResult::new();
    let ops = match pair(history) {
        Ok(ops) => ops,
        Err(e) => {
            result.anomaly("malformed-history", e);
            return result;
        }
    };
    let mut txns = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if op.f != "txn" {
            continue;
        }
        // An `ok` completion carries the reads; otherwise what was asked.
        let value = if op.outcome == Outcome::Ok {
            &op.value
        } else {
            &op.invoke_value
        };
        match parse(value) {
            Ok(mops) => txns.push(Txn {
                outcome: op.outcome,
                mops,
                label: format!("T{i}"),
            }),
            Err(e) => {
                result.anomaly("malformed-history", format!("operation {i}: {e}"));
                return result;
            }
        }
    }
    let graph = {
        let mut notes = Notes {
            result: &mut result,
            counts: BTreeMap::new(),
            examples: BTreeMap::new(),
        };
        let graph = infer(&txns, &mut notes);
        let cycles = find_cycles(&graph, txns.len());
        let mut g2 = 0u64;
        for (kind, cycle) in cycles {
            let path = describe(&cycle, &txns);
            match kind {
                "G2" => g2 += 1,
                kind => notes.note(kind, path),
            }
        }
        notes.finish();
        result.stat("g2_cycles_allowed", g2);
        graph
    };
    result.stat("transactions", txns.len() as u64);
    result.stat(
        "committed",
        txns.iter().filter(|t| t.outcome == Outcome::Ok).count() as u64,
    );
    result.stat("dependencies", graph.len() as u64);
    result
}

/// Edges `(from, to) → kinds` between transactions (indexes into `txns`).
type Graph = BTreeMap<(usize, usize), HashSet<Dep>>;

fn infer(txns: &[Txn], notes: &mut Notes) -> Graph {
    // Who appended each value of each key, at which of its appends to that key.
    let mut writer: HashMap<(String, String), (usize, bool)> = HashMap::new();
    for (t, txn) in txns.iter().enumerate() {
        let mut per_key: HashMap<&str, Vec<&serde_json::Value>> = HashMap::new();
        for m in &txn.mops {
            if let Mop::Append(k, v) = m {
                per_key.entry(k).or_default().push(v);
            }
        }
        for (k, vs) in per_key {
            for (i, v) in vs.iter().enumerate() {
                let last = i + 1 == vs.len();
                if writer
                    .insert((k.to_owned(), v.to_string()), (t, last))
                    .is_some()
                {
                    notes.note(
                        "duplicate-appends",
                        format!("{v} appended to {k} more than once"),
                    );
                }
            }
        }
    }
    // Reads of committed transactions, without their own appends.
    struct Seen {
        txn: usize,
        key: String,
        external: Vec<serde_json::Value>,
    }
    let mut seen = Vec::new();
    for (t, txn) in txns.iter().enumerate() {
        if txn.outcome != Outcome::Ok {
            continue;
        }
        let mut own: HashMap<&str, Vec<&serde_json::Value>> = HashMap::new();
        for m in &txn.mops {
            match m {
                Mop::Append(k, v) => own.entry(k).or_default().push(v),
                Mop::Read(k, Some(list)) => {
                    let mine = own.get(k.as_str()).cloned().unwrap_or_default();
                    let split = list.len().saturating_sub(mine.len());
                    if list.len() < mine.len()
                        || list[split..].iter().zip(&mine).any(|(a, b)| a != *b)
                    {
                        notes.note(
                            "internal",
                            format!(
                                "{} read {k} = {} after appending {}",
                                txn.label,
                                serde_json::Value::from(list.clone()),
                                serde_json::Value::from(
                                    mine.into_iter().cloned().collect::<Vec<_>>()
                                )
                            ),
                        );
                        continue;
                    }
                    seen.push(Seen {
                        txn: t,
                        key: k.clone(),
                        external: list[..split].to_vec(),
                    });
                }
                Mop::Read(_, None) => {}
            }
        }
    }
    // Version order per key: the longest read, which every other read must be a prefix of.
    let mut order: HashMap<&str, &Vec<serde_json::Value>> = HashMap::new();
    for s in &seen {
        let longest = order.entry(&s.key).or_insert(&s.external);
        if s.external.len() > longest.len() {
            *longest = &s.external;
        }
    }
    for s in &seen {
        let longest = order[s.key.as_str()];
        if longest[..s.external.len()] != s.external[..] {
            notes.note(
                "incompatible-order",
                format!(
                    "{} read {} = {}, another read {}",
                    txns[s.txn].label,
                    s.key,
                    serde_json::Value::from(s.external.clone()),
                    serde_json::Value::from(longest.clone())
                ),
            );
        }
        let mut distinct = HashSet::new();
        if !s.external.iter().all(|v| distinct.insert(v.to_string())) {
            notes.note(
                "duplicate-elements",
                format!("{} read {} with a value twice", txns[s.txn].label, s.key),
            );
        }
    }
    let mut graph = Graph::new();
    let mut edge = |from: usize, to: usize, dep: Dep| {
        if from != to {
            graph.entry((from, to)).or_default().insert(dep);
        }
    };
    // Version orders: ww edges, and what was read of them.
    for (key, versions) in &order {
        let mut prev: Option<usize> = None;
        for v in versions.iter() {
            let Some(&(w, _)) = writer.get(&(key.to_string(), v.to_string())) else {
                notes.note(
                    "garbage-read",
                    format!("{v} read from {key}, never appended"),
                );
                prev = None;
                continue;
            };
            if txns[w].outcome == Outcome::Fail {
                notes.note(
                    "G1a",
                    format!(
                        "{v} of {key} read, appended by {} which failed",
                        txns[w].label
                    ),
                );
            }
            if let Some(p) = prev {
                edge(p, w, Dep::Ww);
            }
            prev = Some(w);
        }
    }
    for s in &seen {
        let versions = order[s.key.as_str()];
        if let Some(last) = s.external.last() {
            if let Some(&(w, is_last)) = writer.get(&(s.key.clone(), last.to_string())) {
                edge(w, s.txn, Dep::Wr);
                if !is_last && w != s.txn {
                    notes.note(
                        "G1b",
                        format!(
                            "{} read {} ending at {last}, an intermediate append of {}",
                            txns[s.txn].label, s.key, txns[w].label
                        ),
                    );
                }
            }
        }
        // The value after the last one seen: its writer overwrote what this read saw.
        if s.external.len() < versions.len() && versions[..s.external.len()] == s.external[..] {
            let next = &versions[s.external.len()];
            if let Some(&(w, _)) = writer.get(&(s.key.clone(), next.to_string())) {
                edge(s.txn, w, Dep::Rw);
            }
        }
    }
    graph
}

/// Per strongly connected component, the worst cycle: `(kind, transactions in order)`.
fn find_cycles(graph: &Graph, n: usize) -> Vec<(&'static str, Vec<usize>)> {
    let mut adj: Vec<Vec<(usize, Dep)>> = vec![Vec::new(); n];
    for (&(a, b), deps) in graph {
        for &d in deps {
            adj[a].push((b, d));
        }
    }
    let mut out = Vec::new();
    for scc in tarjan(&adj) {
        if scc.len() < 2 {
            continue;
        }
        let members: HashSet<usize> = scc.iter().copied().collect();
        let only = |allowed: &[Dep]| {
            let allowed = allowed.to_vec();
            let members = members.clone();
            let adj = &adj;
            move |a: usize| -> Vec<usize> {
                adj[a]
                    .iter()
                    .filter(|(b, d)| members.contains(b) && allowed.contains(d))
                    .map(|(b, _)| *b)
                    .collect()
            }
        };
        if let Some(c) = cycle_within(&scc, only(&[Dep::Ww])) {
            out.push(("G0", c));
            continue;
        }
        if let Some(c) = cycle_within(&scc, only(&[Dep::Ww, Dep::Wr])) {
            out.push(("G1c", c));
            continue;
        }
        // G-single: one rw edge a → b closed by a path b ⇝ a without rw edges.
        let no_rw = only(&[Dep::Ww, Dep::Wr]);
        let mut single = None;
        'search: for &a in &scc {
            for (b, d) in &adj[a] {
                if *d != Dep::Rw || !members.contains(b) {
                    continue;
                }
                if let Some(mut path) = path_between(*b, a, &no_rw) {
                    path.insert(0, a);
                    path.pop();
                    single = Some(path);
                    break 'search;
                }
            }
        }
        match single {
            Some(c) => out.push(("G-single", c)),
            None => out.push(("G2", scc)),
        }
    }
    out
}

/// Tarjan's strongly connected components.
fn tarjan(adj: &[Vec<(usize, Dep)>]) -> Vec<Vec<usize>> {
    struct State {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    let n = adj.len();
    let mut st = State {
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    // Iterative, so that long histories cannot overflow the stack.
    for root in 0..n {
        if st.index[root].is_some() {
            continue;
        }
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(&mut (v, ref mut child)) = work.last_mut() {
            if *child == 0 && st.index[v].is_none() {
                st.index[v] = Some(st.next);
                st.low[v] = st.next;
                st.next += 1;
                st.stack.push(v);
                st.on_stack[v] = true;
            }
            if let Some(&(w, _)) = adj[v].get(*child) {
                *child += 1;
                match st.index[w] {
                    None => work.push((w, 0)),
                    Some(iw) if st.on_stack[w] => st.low[v] = st.low[v].min(iw),
                    Some(_) => {}
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                st.low[parent] = st.low[parent].min(st.low[v]);
            }
            if Some(st.low[v]) == st.index[v] {
                let mut scc = Vec::new();
                loop {
                    let w = st.stack.pop().expect("on the stack");
                    st.on_stack[w] = false;
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                scc.sort_unstable();
                st.out.push(scc);
            }
        }
    }
    st.out
}

/// A cycle among `nodes` following `next`, if there is one.
fn cycle_within(nodes: &[usize], next: impl Fn(usize) -> Vec<usize>) -> Option<Vec<usize>> {
    for &start in nodes {
        for first in next(start) {
            if let Some(mut path) = path_between(first, start, &next) {
                path.insert(0, start);
                path.pop();
                return Some(path);
            }
        }
    }
    None
}

/// A shortest path `from ⇝ to` following `next` (both ends included), by breadth-first search.
fn path_between(from: usize, to: usize, next: &impl Fn(usize) -> Vec<usize>) -> Option<Vec<usize>> {
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    let mut visited = HashSet::from([from]);
    while let Some(v) = queue.pop_front() {
        if v == to {
            let mut path = vec![to];
            let mut at = to;
            while at != from {
                at = parent[&at];
                path.push(at);
            }
            path.reverse();
            return Some(path);
        }
        for w in next(v) {
            if visited.insert(w) {
                parent.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    None
}

fn describe(cycle: &[usize], txns: &[Txn]) -> String {
    let mut names: Vec<&str> = cycle.iter().map(|&t| txns[t].label.as_str()).collect();
    if let Some(first) = names.first().copied() {
        names.push(first);
    }
    names.join(" -> ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::history::tests::Builder;
    use crate::history::Type;

    /// A history of transactions, each `(process, mops as invoked, mops as completed or None
    /// for fail)`, run one after another.
    fn history(txns: &[(u64, serde_json::Value, Option<serde_json::Value>)]) -> Vec<Event> {
        let mut b = Builder::default();
        for (p, invoked, completed) in txns {
            match completed {
                Some(done) => b.op(*p, Type::Ok, "txn", invoked.clone(), done.clone()),
                None => b.op(*p, Type::Fail, "txn", invoked.clone(), invoked.clone()),
            };
        }
        b.events
    }

    fn kinds(r: &CheckResult) -> Vec<String> {
        r.anomalies.iter().map(|a| a.kind.clone()).collect()
    }

    #[test]
    fn a_serial_history_is_valid() {
        let h = history(&[
            (
                1,
                json!([["append", "x", 1]]),
                Some(json!([["append", "x", 1]])),
            ),
            (
                2,
                json!([["r", "x", null], ["append", "x", 2], ["r", "x", null]]),
                Some(json!([
                    ["r", "x", [1]],
                    ["append", "x", 2],
                    ["r", "x", [1, 2]]
                ])),
            ),
            (
                3,
                json!([["r", "x", null]]),
                Some(json!([["r", "x", [1, 2]]])),
            ),
        ]);
        let r = check_list_append(&h);
        assert!(r.is_valid(), "{r:?}");
        assert_eq!(r.stats["g2_cycles_allowed"], 0);
    }

    #[test]
    fn write_skew_is_allowed_under_snapshot_isolation() {
        // T1 and T2 both read x and y empty, then each appends to one of them: two rw edges.
        let h = history(&[
            (
                1,
                json!([["r", "x", null], ["r", "y", null], ["append", "x", 1]]),
                Some(json!([["r", "x", []], ["r", "y", []], ["append", "x", 1]])),
            ),
            (
                2,
                json!([["r", "x", null], ["r", "y", null], ["append", "y", 1]]),
                Some(json!([["r", "x", []], ["r", "y", []], ["append", "y", 1]])),
            ),
            (
                3,
                json!([["r", "x", null], ["r", "y", null]]),
                Some(json!([["r", "x", [1]], ["r", "y", [1]]])),
            ),
        ]);
        let r = check_list_append(&h);
        assert!(r.is_valid(), "{r:?}");
        assert_eq!(r.stats["g2_cycles_allowed"], 1);
    }

    #[test]
    fn a_lost_update_is_g_single() {
        // T1 and T2 both read x = [0], then append. The final [0, 1, 2] puts T1 before T2
        // (T1 ww T2), yet T2 did not see T1's 1 (T2 rw T1): a cycle with one rw edge.
        let h = history(&[
            (
                0,
                json!([["append", "x", 0]]),
                Some(json!([["append", "x", 0]])),
            ),
            (
                1,
                json!([["r", "x", null], ["append", "x", 1]]),
                Some(json!([["r", "x", [0]], ["append", "x", 1]])),
            ),
            (
                2,
                json!([["r", "x", null], ["append", "x", 2]]),
                Some(json!([["r", "x", [0]], ["append", "x", 2]])),
            ),
            (
                3,
                json!([["r", "x", null]]),
                Some(json!([["r", "x", [0, 1, 2]]])),
            ),
        ]);
        let r = check_list_append(&h);
        assert_eq!(kinds(&r), vec!["G-single"], "{r:?}");
    }

    #[test]
    fn read_skew_is_g_single() {
        // T3 sees T2's append to x but not its append to y.
        let h = history(&[
            (
                1,
                json!([["append", "x", 1], ["append", "y", 1]]),
                Some(json!([["append", "x", 1], ["append", "y", 1]])),
            ),
            (
                2,
                json!([["append", "x", 2], ["append", "y", 2]]),
                Some(json!([["append", "x", 2], ["append", "y", 2]])),
            ),
            // Sees T2's x but not T2's y: T2 wr T3 and T3 rw T2.
            (
                3,
                json!([["r", "x", null], ["r", "y", null]]),
                Some(json!([["r", "x", [1, 2]], ["r", "y", [1]]])),
            ),
            (
                4,
                json!([["r", "y", null]]),
                Some(json!([["r", "y", [1, 2]]])),
            ),
        ]);
        let r = check_list_append(&h);
        assert_eq!(kinds(&r), vec!["G-single"], "{r:?}");
    }

    #[test]
    fn circular_information_flow_is_g1c() {
        // T1 read T2's y and T2 read T1's x.
        let h = history(&[
            (
                1,
                json!([["append", "x", 1], ["r", "y", null]]),
                Some(json!([["append", "x", 1], ["r", "y", [1]]])),
            ),
            (
                2,
                json!([["append", "y", 1], ["r", "x", null]]),
                Some(json!([["append", "y", 1], ["r", "x", [1]]])),
            ),
        ]);
        let r = check_list_append(&h);
        assert_eq!(kinds(&r), vec!["G1c"], "{r:?}");
    }

    #[test]
    fn interleaved_writes_are_g0() {
        // x = [1, 2] and y = [2, 1]: T1 before T2 on x, after it on y.
        let h = history(&[
            (
                1,
                json!([["append", "x", 1], ["append", "y", 1]]),
                Some(json!([["append", "x", 1], ["append", "y", 1]])),
            ),
            (
                2,
                json!([["append", "x", 2], ["append", "y", 2]]),
                Some(json!([["append", "x", 2], ["append", "y", 2]])),
            ),
            (
                3,
                json!([["r", "x", null], ["r", "y", null]]),
                Some(json!([["r", "x", [1, 2]], ["r", "y", [2, 1]]])),
            ),
        ]);
        let r = check_list_append(&h);
        assert_eq!(kinds(&r), vec!["G0"], "{r:?}");
    }

    #[test]
    fn aborted_intermediate_and_garbage_reads_are_caught() {
        let h = history(&[
            (1, json!([["append", "x", 1]]), None),
            (
                2,
                json!([["append", "y", 1], ["append", "y", 2]]),
                Some(json!([["append", "y", 1], ["append", "y", 2]])),
            ),
            (
                3,
                json!([["r", "x", null], ["r", "y", null], ["r", "z", null]]),
                Some(json!([["r", "x", [1]], ["r", "y", [1]], ["r", "z", [9]]])),
            ),
        ]);
        let r = check_list_append(&h);
        let mut found = kinds(&r);
        found.sort();
        assert_eq!(found, vec!["G1a", "G1b", "garbage-read"], "{r:?}");
    }

    #[test]
    fn diverging_orders_and_broken_own_reads_are_caught() {
        let h = history(&[
            (
                1,
                json!([["append", "x", 1]]),
                Some(json!([["append", "x", 1]])),
            ),
            (
                2,
                json!([["append", "x", 2]]),
                Some(json!([["append", "x", 2]])),
            ),
            (
                3,
                json!([["r", "x", null]]),
                Some(json!([["r", "x", [1, 2]]])),
            ),
            (4, json!([["r", "x", null]]), Some(json!([["r", "x", [2]]]))),
            (
                5,
                json!([["append", "y", 5], ["r", "y", null]]),
                Some(json!([["append", "y", 5], ["r", "y", []]])),
            ),
        ]);
        let r = check_list_append(&h);
        let mut found = kinds(&r);
        found.sort();
        assert_eq!(found, vec!["incompatible-order", "internal"], "{r:?}");
    }

    #[test]
    fn unknown_outcomes_count_once_their_appends_are_read() {
        let mut b = Builder::default();
        b.op(
            1,
            Type::Info,
            "txn",
            json!([["append", "x", 1]]),
            json!([["append", "x", 1]]),
        );
        b.op(
            2,
            Type::Ok,
            "txn",
            json!([["r", "x", null]]),
            json!([["r", "x", [1]]]),
        );
        let r = check_list_append(&b.events);
        assert!(r.is_valid(), "{r:?}");
        assert!(!check_list_append(&history(&[(1, json!([["bogus"]]), None)])).is_valid());
    }

    #[test]
    fn sccs_are_found_in_a_long_chain_without_recursion() {
        let n = 50_000;
        let mut adj: Vec<Vec<(usize, Dep)>> =
            (0..n).map(|i| vec![((i + 1) % n, Dep::Ww)]).collect();
        adj[0].push((1, Dep::Wr));
        let sccs = tarjan(&adj);
        assert_eq!(sccs.len(), 1);
        assert_eq!(sccs[0].len(), n);
    }
}
