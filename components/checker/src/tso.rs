//! The timestamp checker: what PD's TSO promises its clients.
//!
//! Values: `ts` is invoked with `null` and completes `ok` with the timestamp (an unsigned
//! integer). Failed and unknown requests handed nothing out that anyone saw, and are ignored.
//!
//! Rules:
//! - **duplicate**: no timestamp is handed out twice, to whichever clients;
//! - **non-monotonic**: each client (process) sees its timestamps strictly increase, in the
//!   order it asked for them;
//! - **stale**: a timestamp asked for after another was received is greater than it (real-time
//!   order across clients, which Percolator's snapshot reads rely on: a transaction that starts
//!   after another committed must read at a later timestamp).

use std::collections::{BTreeMap, HashMap};

use crate::history::{pair, CheckResult, Event, Outcome};

const EXAMPLES: usize = 10;

/// Checks a timestamp history; see the module docs.
pub fn check_tso(history: &[Event]) -> CheckResult {
    let mut result = CheckResult::new();
    let ops = match pair(history) {
        Ok(ops) => ops,
        Err(e) => {
            result.anomaly("malformed-history", e);
            return result;
        }
    };
    // (call, ret, process, ts) of every timestamp received, in call order.
    let mut got: Vec<(u64, u64, u64, u64)> = Vec::new();
    for op in ops.iter().filter(|op| op.outcome == Outcome::Ok) {
        match (op.f.as_str(), op.value.as_u64(), op.ret) {
            ("ts", Some(ts), Some(ret)) => got.push((op.call, ret, op.process, ts)),
            _ => result.anomaly(
                "malformed-history",
                format!("{} completed with {}", op.f, op.value),
            ),
        }
    }
    got.sort_unstable();
    result.stat("timestamps", got.len() as u64);
    result.stat(
        "failed-or-unknown",
        ops.iter().filter(|op| op.outcome != Outcome::Ok).count() as u64,
    );

    let mut holders: HashMap<u64, Vec<u64>> = HashMap::new();
    for (_, _, process, ts) in &got {
        holders.entry(*ts).or_default().push(*process);
    }
    let duplicates: BTreeMap<u64, Vec<u64>> =
        holders.into_iter().filter(|(_, p)| p.len() > 1).collect();
    if !duplicates.is_empty() {
        let examples: Vec<String> = duplicates
            .iter()
            .take(EXAMPLES)
            .map(|(ts, p)| format!("{ts} to processes {p:?}"))
            .collect();
        result.anomaly(
            "duplicate",
            format!(
                "{} timestamp(s) handed out more than once: {}",
                duplicates.len(),
                examples.join("; ")
            ),
        );
    }

    let mut last: HashMap<u64, u64> = HashMap::new();
    let mut backwards = Vec::new();
    for (_, _, process, ts) in &got {
        if let Some(prev) = last.insert(*process, *ts) {
            if *ts <= prev {
                backwards.push(format!("process {process}: {prev} then {ts}"));
            }
        }
    }
    if !backwards.is_empty() {
        result.anomaly(
            "non-monotonic",
            format!(
                "{} timestamp(s) not above the same client's previous one: {}",
                backwards.len(),
                backwards[..backwards.len().min(EXAMPLES)].join("; ")
            ),
        );
    }

    // Sweep in call order, folding in every timestamp received before the call.
    let mut by_ret: Vec<(u64, u64, u64)> = got.iter().map(|(_, r, p, ts)| (*r, *ts, *p)).collect();
    by_ret.sort_unstable();
    let (mut next, mut max_before): (usize, Option<(u64, u64)>) = (0, None);
    let mut stale = Vec::new();
    for (call, _, process, ts) in &got {
        while next < by_ret.len() && by_ret[next].0 < *call {
            let (_, t, p) = by_ret[next];
            if max_before.is_none_or(|(m, _)| t > m) {
                max_before = Some((t, p));
            }
            next += 1;
        }
        if let Some((m, p)) = max_before {
            if *ts <= m && !duplicates.contains_key(ts) {
                stale.push(format!(
                    "process {process} got {ts} after process {p} had received {m}"
                ));
            }
        }
    }
    if !stale.is_empty() {
        result.anomaly(
            "stale",
            format!(
                "{} timestamp(s) not above one received before they were asked for: {}",
                stale.len(),
                stale[..stale.len().min(EXAMPLES)].join("; ")
            ),
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::Builder;
    use crate::history::Type;
    use serde_json::json;

    fn kinds(r: &CheckResult) -> Vec<&str> {
        r.anomalies.iter().map(|a| a.kind.as_str()).collect()
    }

    /// `(process, ts)` in sequence: each invoked after the previous returned.
    fn sequential(ts: &[(u64, u64)]) -> Vec<Event> {
        let mut b = Builder::default();
        for (p, t) in ts {
            b.op(*p, Type::Ok, "ts", json!(null), json!(t));
        }
        b.events
    }

    #[test]
    fn table() {
        let cases: [(&str, Vec<Event>, &[&str]); 5] = [
            (
                "increasing across and within clients",
                sequential(&[(1, 10), (2, 11), (1, 12)]),
                &[],
            ),
            (
                "handed out twice",
                sequential(&[(1, 10), (2, 10)]),
                &["duplicate"],
            ),
            (
                "a client's timestamps go backwards",
                sequential(&[(1, 10), (1, 9)]),
                &["non-monotonic", "stale"],
            ),
            (
                "another client gets a smaller one later",
                sequential(&[(1, 10), (2, 9)]),
                &["stale"],
            ),
            (
                "a client repeats one of its own",
                sequential(&[(1, 10), (1, 10)]),
                &["duplicate", "non-monotonic"],
            ),
        ];
        for (name, h, expected) in cases {
            let r = check_tso(&h);
            assert_eq!(kinds(&r), expected, "{name}: {r:?}");
            assert_eq!(r.is_valid(), expected.is_empty(), "{name}");
        }
    }

    #[test]
    fn concurrent_requests_may_be_answered_in_any_order() {
        let mut b = Builder::default();
        b.push(1, Type::Invoke, "ts", json!(null))
            .push(2, Type::Invoke, "ts", json!(null))
            .push(2, Type::Ok, "ts", json!(20))
            .push(1, Type::Ok, "ts", json!(10))
            .op(3, Type::Fail, "ts", json!(null), json!(null))
            .op(4, Type::Info, "ts", json!(null), json!(null));
        let r = check_tso(&b.events);
        assert!(r.is_valid(), "{r:?}");
        assert_eq!(r.stats["failed-or-unknown"], 2);
    }
}
