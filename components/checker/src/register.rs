//! Linearizability of single-key registers (Wing & Gong's search with Lowe's memoization), for
//! histories recorded by tests and by `rangekv verify` while concurrent clients run under faults.
//!
//! An operation has a call time and, if the client learned its outcome, a return time. A write
//! whose outcome is unknown (the client timed out) may have taken effect at any point after its
//! call, or never: it gets an infinite return time and need not be linearized. Failed reads
//! have no effect and are simply not recorded.
//!
//! The search linearizes, one at a time, any operation that no other pending operation must
//! precede (no pending operation returned before it was called) and whose recorded outcome is
//! consistent with the register's state; it memoizes (set linearized, state) pairs. It succeeds
//! once every operation with a known outcome is linearized.
//!
//! [`check_register_history`] applies it to a recorded [`history`](crate::history) of many
//! independent registers (keys), one key at a time: linearizability is compositional, so the
//! whole history is linearizable if and only if every key's is. Its values:
//! - `read`: invoke `[key, null]`, ok `[key, value or null]`;
//! - `write`: `[key, value]`;
//! - `cas`: invoke `[key, {"expect": e, "new": n}]` (`e` null: the key must be absent), ok
//!   `[key, {"expect": e, "new": n, "swapped": bool, "previous": value or null}]`.
//!
//! Values are unsigned integers; every register starts empty.
//!
//! Caveats: at most 128 operations per key (the workload moves to a new key before that), and
//! the search gives up (an unknown verdict, never a false one) after a budget of explored
//! states.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use crate::history::{pair, CheckResult, Operation, Outcome};

/// What a client did to the register and what it observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A read that returned this value.
    Read(Option<u64>),
    /// A write of this value.
    Write(u64),
    /// A delete: the register becomes empty.
    Delete,
    /// A compare-and-swap: `expect` → `new`; `outcome` is `Some((swapped, previous))` when
    /// known.
    Cas {
        expect: Option<u64>,
        new: u64,
        outcome: Option<(bool, Option<u64>)>,
    },
}

/// One operation of a history.
#[derive(Clone, Debug)]
pub struct Event {
    pub op: Op,
    /// When the client called it (any monotonic unit).
    pub call: u64,
    /// When it returned; `None` if the outcome is unknown (the operation may or may not have
    /// taken effect).
    pub ret: Option<u64>,
}

impl Event {
    fn known(&self) -> bool {
        self.ret.is_some()
    }

    fn ret_or_inf(&self) -> u64 {
        self.ret.unwrap_or(u64::MAX)
    }

    /// The state after applying this operation to `state`, if its recorded outcome is possible.
    fn step(&self, state: Option<u64>) -> Option<Option<u64>> {
        match &self.op {
            Op::Read(v) => (*v == state).then_some(state),
            Op::Write(v) => Some(Some(*v)),
            Op::Delete => Some(None),
            Op::Cas {
                expect,
                new,
                outcome: Some((swapped, previous)),
            } => {
                if *previous != state || (*expect == state) != *swapped {
                    return None;
                }
                Some(if *swapped { Some(*new) } else { state })
            }
            // Unknown outcome: linearizing it only matters if it swapped.
            Op::Cas {
                expect,
                new,
                outcome: None,
            } => (*expect == state).then_some(Some(*new)),
        }
    }
}

/// Checks that `history` (one register, initially `initial`) is linearizable. At most 128
/// operations.
pub fn check_register(initial: Option<u64>, history: &[Event]) -> Result<(), String> {
    match check_register_bounded(initial, history, usize::MAX) {
        Linearizable::Yes => Ok(()),
        Linearizable::No { explored } => {
            let mut ops = history.to_vec();
            ops.sort_by_key(|e| e.call);
            Err(format!(
                "not linearizable ({} operations, {explored} explored states): {ops:#?}",
                ops.len(),
            ))
        }
        Linearizable::GaveUp { explored } => Err(format!("gave up after {explored} states")),
    }
}

/// The answer of [`check_register_bounded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linearizable {
    Yes,
    No {
        explored: usize,
    },
    /// More than the budget of states would have to be explored.
    GaveUp {
        explored: usize,
    },
}

/// [`check_register`], exploring at most `max_states` (set linearized, state) pairs.
pub fn check_register_bounded(
    initial: Option<u64>,
    history: &[Event],
    max_states: usize,
) -> Linearizable {
    assert!(history.len() <= 128, "at most 128 operations per key");
    let mut ops = history.to_vec();
    ops.sort_by_key(|e| e.call);
    let must: u128 = ops
        .iter()
        .enumerate()
        .filter(|(_, e)| e.known())
        .fold(0, |m, (i, _)| m | (1u128 << i));
    let mut search = Search {
        ops: &ops,
        must,
        seen: HashSet::new(),
        max_states,
    };
    match search.run(0, initial) {
        Some(true) => Linearizable::Yes,
        Some(false) => Linearizable::No {
            explored: search.seen.len(),
        },
        None => Linearizable::GaveUp {
            explored: search.seen.len(),
        },
    }
}

struct Search<'a> {
    ops: &'a [Event],
    must: u128,
    seen: HashSet<(u128, Option<u64>)>,
    max_states: usize,
}

impl Search<'_> {
    /// `Some(found)`, or `None` once the budget is spent.
    fn run(&mut self, done: u128, state: Option<u64>) -> Option<bool> {
        if done & self.must == self.must {
            return Some(true);
        }
        if !self.seen.insert((done, state)) {
            return Some(false);
        }
        if self.seen.len() > self.max_states {
            return None;
        }
        let ops = self.ops;
        let pending = || (0..ops.len()).filter(move |i| done & (1u128 << i) == 0);
        let first_return = pending()
            .map(|i| ops[i].ret_or_inf())
            .min()
            .unwrap_or(u64::MAX);
        for i in pending() {
            if ops[i].call > first_return {
                // Sorted by call: every later operation also started after some pending one
                // ended.
                break;
            }
            if let Some(next) = ops[i].step(state) {
                if self.run(done | (1u128 << i), next)? {
                    return Some(true);
                }
            }
        }
        Some(false)
    }
}

/// States explored per key before [`check_register_history`] gives up on it.
pub const DEFAULT_MAX_STATES: usize = 2_000_000;

/// Checks a recorded history of independent registers; see the module docs for its values.
/// Failed operations are left out (they had no effect), as are reads of unknown outcome.
pub fn check_register_history(history: &[crate::history::Event], max_states: usize) -> CheckResult {
    let mut result = CheckResult::new();
    let ops = match pair(history) {
        Ok(ops) => ops,
        Err(e) => {
            result.anomaly("malformed-history", e);
            return result;
        }
    };
    let mut keys: BTreeMap<String, Vec<(Event, &Operation)>> = BTreeMap::new();
    let mut counts = [0u64; 3];
    for op in &ops {
        let parsed = match register_event(op) {
            Ok(parsed) => parsed,
            Err(e) => {
                result.anomaly("malformed-history", e);
                continue;
            }
        };
        counts[match op.outcome {
            Outcome::Ok => 0,
            Outcome::Fail => 1,
            Outcome::Info => 2,
        }] += 1;
        if let Some((key, event)) = parsed {
            keys.entry(key).or_default().push((event, op));
        }
    }
    result.stat("ok", counts[0]);
    result.stat("fail", counts[1]);
    result.stat("info", counts[2]);
    result.stat("keys", keys.len() as u64);
    let mut checked = 0u64;
    for (key, events) in &keys {
        if events.len() > 128 {
            result.undecided(format!(
                "key {key}: {} operations, more than the checker takes (128)",
                events.len()
            ));
            continue;
        }
        let plain: Vec<Event> = events.iter().map(|(e, _)| e.clone()).collect();
        checked += plain.len() as u64;
        match check_register_bounded(None, &plain, max_states) {
            Linearizable::Yes => {}
            Linearizable::No { explored } => {
                let mut lines: Vec<String> = events
                    .iter()
                    .map(|(e, op)| describe(e, op.process))
                    .collect();
                lines.sort();
                result.anomaly(
                    "not-linearizable",
                    format!(
                        "key {key}: no order of its {} operations explains what clients saw \
                         ({explored} states explored); operations (call..return ns):\n  {}",
                        plain.len(),
                        lines.join("\n  ")
                    ),
                );
            }
            Linearizable::GaveUp { explored } => result.undecided(format!(
                "key {key}: gave up after {explored} states ({} operations)",
                plain.len()
            )),
        }
    }
    result.stat("checked-operations", checked);
    result
}

fn describe(e: &Event, process: u64) -> String {
    let ret = e.ret.map_or("?".to_owned(), |r| r.to_string());
    let what = match &e.op {
        Op::Read(v) => format!("read -> {v:?}"),
        Op::Write(v) => format!("write {v}"),
        Op::Delete => "delete".to_owned(),
        Op::Cas {
            expect,
            new,
            outcome,
        } => match outcome {
            Some((swapped, prev)) => {
                format!("cas {expect:?} -> {new}: swapped {swapped}, previous {prev:?}")
            }
            None => format!("cas {expect:?} -> {new}: unknown"),
        },
    };
    format!("{:>14}..{ret:<14} process {process}: {what}", e.call)
}

/// The key and register event of one operation; `None` for operations without effect.
fn register_event(op: &Operation) -> Result<Option<(String, Event)>, String> {
    let bad = || {
        format!(
            "unexpected {} value {} / {}",
            op.f, op.invoke_value, op.value
        )
    };
    let key_of = |v: &Value| -> Result<(String, Value), String> {
        match v.as_array().map(Vec::as_slice) {
            Some([Value::String(k), x]) => Ok((k.clone(), x.clone())),
            _ => Err(bad()),
        }
    };
    let int = |v: &Value| -> Result<Option<u64>, String> {
        match v {
            Value::Null => Ok(None),
            v => v.as_u64().map(Some).ok_or_else(bad),
        }
    };
    let (key, invoked) = key_of(&op.invoke_value)?;
    let ret = op.ret;
    let event = |op| Event {
        op,
        call: 0,
        ret: None,
    };
    let mut ev = match (op.f.as_str(), op.outcome) {
        (_, Outcome::Fail) | ("read", Outcome::Info) => return Ok(None),
        ("read", Outcome::Ok) => {
            let (k, v) = key_of(&op.value)?;
            if k != key {
                return Err(bad());
            }
            event(Op::Read(int(&v)?))
        }
        ("write", _) => event(Op::Write(int(&invoked)?.ok_or_else(bad)?)),
        ("cas", outcome) => {
            let expect = int(&invoked["expect"])?;
            let new = int(&invoked["new"])?.ok_or_else(bad)?;
            let outcome = if outcome == Outcome::Ok {
                let (_, done) = key_of(&op.value)?;
                let swapped = done["swapped"].as_bool().ok_or_else(bad)?;
                Some((swapped, int(&done["previous"])?))
            } else {
                None
            };
            event(Op::Cas {
                expect,
                new,
                outcome,
            })
        }
        _ => return Err(bad()),
    };
    ev.call = op.call;
    ev.ret = if op.outcome == Outcome::Info {
        None
    } else {
        ret
    };
    Ok(Some((key, ev)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(op: Op, call: u64, ret: Option<u64>) -> Event {
        Event { op, call, ret }
    }

    #[test]
    fn sequential_history() {
        let h = [
            ev(Op::Write(1), 0, Some(1)),
            ev(Op::Read(Some(1)), 2, Some(3)),
            ev(
                Op::Cas {
                    expect: Some(1),
                    new: 2,
                    outcome: Some((true, Some(1))),
                },
                4,
                Some(5),
            ),
            ev(Op::Read(Some(2)), 6, Some(7)),
        ];
        assert!(check_register(None, &h).is_ok());
    }

    #[test]
    fn stale_read_after_a_completed_write_is_caught() {
        let h = [
            ev(Op::Write(1), 0, Some(1)),
            ev(Op::Write(2), 2, Some(3)),
            ev(Op::Read(Some(1)), 4, Some(5)),
        ];
        assert!(check_register(None, &h).is_err());
    }

    #[test]
    fn concurrent_operations_may_order_either_way() {
        let h = [
            ev(Op::Write(1), 0, Some(10)),
            ev(Op::Write(2), 1, Some(9)),
            ev(Op::Read(Some(1)), 11, Some(12)),
        ];
        assert!(check_register(None, &h).is_ok());
        let h = [
            ev(Op::Write(1), 0, Some(10)),
            ev(Op::Read(Some(1)), 1, Some(2)),
            ev(Op::Read(None), 3, Some(4)),
        ];
        assert!(check_register(None, &h).is_err(), "value cannot vanish");
    }

    #[test]
    fn unknown_writes_may_or_may_not_happen() {
        let h = [
            ev(Op::Write(1), 0, None),
            ev(Op::Read(None), 1, Some(2)),
            ev(Op::Read(Some(1)), 3, Some(4)),
        ];
        assert!(check_register(None, &h).is_ok());
        let h = [ev(Op::Write(1), 0, None), ev(Op::Read(None), 5, Some(6))];
        assert!(check_register(None, &h).is_ok());
        // But a value nobody wrote cannot appear.
        let h = [ev(Op::Write(1), 0, None), ev(Op::Read(Some(7)), 5, Some(6))];
        assert!(check_register(None, &h).is_err());
    }

    #[test]
    fn deletes_empty_the_register() {
        let h = [
            ev(Op::Write(1), 0, Some(1)),
            ev(Op::Delete, 2, Some(3)),
            ev(Op::Read(None), 4, Some(5)),
        ];
        assert!(check_register(None, &h).is_ok());
        let h = [
            ev(Op::Write(1), 0, Some(1)),
            ev(Op::Delete, 2, Some(3)),
            ev(Op::Read(Some(1)), 4, Some(5)),
        ];
        assert!(check_register(None, &h).is_err());
    }

    #[test]
    fn a_write_applied_twice_around_another_is_caught() {
        // A's put(1) is answered, B's put(2) is answered, then A's put(1) applies again.
        let h = [
            ev(Op::Write(1), 0, Some(1)),
            ev(Op::Write(2), 2, Some(3)),
            ev(Op::Read(Some(2)), 4, Some(5)),
            ev(Op::Read(Some(1)), 6, Some(7)),
        ];
        assert!(check_register(None, &h).is_err());
    }

    #[test]
    fn cas_outcomes_must_match_the_state() {
        let lost_swap = [
            ev(Op::Write(1), 0, Some(1)),
            ev(
                Op::Cas {
                    expect: Some(1),
                    new: 2,
                    outcome: Some((false, Some(1))),
                },
                2,
                Some(3),
            ),
        ];
        assert!(check_register(None, &lost_swap).is_err());
        let double_swap = [
            ev(Op::Write(1), 0, Some(1)),
            ev(
                Op::Cas {
                    expect: Some(1),
                    new: 2,
                    outcome: Some((true, Some(1))),
                },
                2,
                Some(5),
            ),
            ev(
                Op::Cas {
                    expect: Some(1),
                    new: 3,
                    outcome: Some((true, Some(1))),
                },
                2,
                Some(5),
            ),
        ];
        assert!(check_register(None, &double_swap).is_err());
    }

    mod histories {
        use super::super::*;
        use crate::history::tests::Builder;
        use crate::history::{Type, Validity};
        use serde_json::json;

        fn cas(expect: Option<u64>, new: u64) -> serde_json::Value {
            json!(["r/0", {"expect": expect, "new": new}])
        }

        fn cas_done(
            expect: Option<u64>,
            new: u64,
            swapped: bool,
            prev: Option<u64>,
        ) -> serde_json::Value {
            json!(["r/0", {"expect": expect, "new": new, "swapped": swapped, "previous": prev}])
        }

        #[test]
        fn a_valid_history_of_two_keys() {
            let mut b = Builder::default();
            b.op(1, Type::Ok, "write", json!(["r/0", 1]), json!(["r/0", 1]))
                .op(2, Type::Ok, "write", json!(["r/1", 7]), json!(["r/1", 7]))
                .op(
                    1,
                    Type::Ok,
                    "cas",
                    cas(Some(1), 2),
                    cas_done(Some(1), 2, true, Some(1)),
                )
                .op(2, Type::Ok, "read", json!(["r/0", null]), json!(["r/0", 2]))
                .op(3, Type::Fail, "write", json!(["r/0", 9]), json!(["r/0", 9]))
                .op(3, Type::Ok, "read", json!(["r/1", null]), json!(["r/1", 7]));
            let r = check_register_history(&b.events, DEFAULT_MAX_STATES);
            assert_eq!(r.validity, Validity::Valid, "{r:?}");
            assert_eq!(r.stats["keys"], 2);
        }

        #[test]
        fn a_stale_read_is_caught_and_named() {
            let mut b = Builder::default();
            b.op(1, Type::Ok, "write", json!(["r/0", 1]), json!(["r/0", 1]))
                .op(1, Type::Ok, "write", json!(["r/0", 2]), json!(["r/0", 2]))
                .op(2, Type::Ok, "read", json!(["r/0", null]), json!(["r/0", 1]));
            let r = check_register_history(&b.events, DEFAULT_MAX_STATES);
            assert_eq!(r.validity, Validity::Invalid);
            assert_eq!(r.anomalies[0].kind, "not-linearizable");
            assert!(
                r.anomalies[0].detail.starts_with("key r/0"),
                "{}",
                r.anomalies[0].detail
            );
        }

        #[test]
        fn unknown_writes_may_apply_later_but_failed_ones_never() {
            let mut b = Builder::default();
            b.op(1, Type::Info, "write", json!(["r/0", 1]), json!(["r/0", 1]))
                .op(
                    2,
                    Type::Ok,
                    "read",
                    json!(["r/0", null]),
                    json!(["r/0", null]),
                )
                .op(2, Type::Ok, "read", json!(["r/0", null]), json!(["r/0", 1]));
            assert!(check_register_history(&b.events, DEFAULT_MAX_STATES).is_valid());
            let mut b = Builder::default();
            b.op(1, Type::Fail, "write", json!(["r/0", 1]), json!(["r/0", 1]))
                .op(2, Type::Ok, "read", json!(["r/0", null]), json!(["r/0", 1]));
            assert!(!check_register_history(&b.events, DEFAULT_MAX_STATES).is_valid());
        }

        #[test]
        fn a_failed_cas_that_saw_the_expected_value_is_caught() {
            let mut b = Builder::default();
            b.op(1, Type::Ok, "write", json!(["r/0", 1]), json!(["r/0", 1]))
                .op(
                    1,
                    Type::Ok,
                    "cas",
                    cas(Some(1), 2),
                    cas_done(Some(1), 2, false, Some(1)),
                );
            assert!(!check_register_history(&b.events, DEFAULT_MAX_STATES).is_valid());
            // An unknown CAS may have swapped.
            let mut b = Builder::default();
            b.op(1, Type::Ok, "write", json!(["r/0", 1]), json!(["r/0", 1]))
                .op(1, Type::Info, "cas", cas(Some(1), 2), cas(Some(1), 2))
                .op(2, Type::Ok, "read", json!(["r/0", null]), json!(["r/0", 2]));
            assert!(check_register_history(&b.events, DEFAULT_MAX_STATES).is_valid());
        }

        #[test]
        fn an_exhausted_budget_is_unknown_not_invalid() {
            // Many concurrent unknown writes make the search wide.
            let mut b = Builder::default();
            for p in 0..12 {
                b.push(p, Type::Invoke, "write", json!(["r/0", p]));
            }
            for p in 0..12 {
                b.push(p, Type::Info, "write", json!(["r/0", p]));
            }
            b.op(
                20,
                Type::Ok,
                "read",
                json!(["r/0", null]),
                json!(["r/0", 99]),
            );
            let r = check_register_history(&b.events, 100);
            assert_eq!(r.validity, Validity::Unknown, "{r:?}");
            assert!(r.undecided[0].contains("gave up"));
        }

        #[test]
        fn values_that_do_not_parse_make_the_history_invalid() {
            let mut b = Builder::default();
            b.op(1, Type::Ok, "write", json!({"k": 1}), json!(null));
            let r = check_register_history(&b.events, DEFAULT_MAX_STATES);
            assert_eq!(r.anomalies[0].kind, "malformed-history");
        }
    }
}
