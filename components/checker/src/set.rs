//! The set checker: clients insert unique elements, and a final read after the cluster healed
//! must hold exactly what the insert outcomes allow.
//!
//! Values: `add` has the element (an unsigned integer) as its value; `read` is invoked with
//! `null` and completes `ok` with the array of elements found. The last successful read is the
//! final one.
//!
//! Rules, for every element `e`:
//! - `add e` acknowledged (`ok`): `e` must be in the final read, else it is **lost** (an
//!   acknowledged write did not survive);
//! - `add e` unknown (`info`, or no completion): `e` may or may not be there (counted as
//!   *recovered* when it is);
//! - `add e` failed (`fail`: the client was told it certainly did not happen): `e` must not be
//!   there, else it is **failed-but-present**;
//! - never attempted: `e` must not be there, else it is **unexpected**.
//!
//! Caveat: only the final read is checked; reads during the run are not (Jepsen's `set-full`
//! also checks when each element became visible, and that it stayed).

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{pair, CheckResult, Event, Outcome};

/// How many examples of each anomaly the details list.
const EXAMPLES: usize = 20;

/// Checks a set history; see the module docs.
pub fn check_set(history: &[Event]) -> CheckResult {
    let mut result = CheckResult::new();
    let ops = match pair(history) {
        Ok(ops) => ops,
        Err(e) => {
            result.anomaly("malformed-history", e);
            return result;
        }
    };
    let mut adds: BTreeMap<u64, Outcome> = BTreeMap::new();
    let mut final_read: Option<BTreeSet<u64>> = None;
    for op in &ops {
        match op.f.as_str() {
            "add" => {
                let Some(e) = op.invoke_value.as_u64() else {
                    result.anomaly(
                        "malformed-history",
                        format!("add of {} (not an element)", op.invoke_value),
                    );
                    continue;
                };
                if adds.insert(e, op.outcome).is_some() {
                    result.anomaly("malformed-history", format!("element {e} was added twice"));
                }
            }
            "read" if op.outcome == Outcome::Ok => {
                let elements: Option<BTreeSet<u64>> = op
                    .value
                    .as_array()
                    .and_then(|a| a.iter().map(|v| v.as_u64()).collect());
                match elements {
                    Some(elements) => final_read = Some(elements),
                    None => result.anomaly(
                        "malformed-history",
                        format!("read of {} (not an array of elements)", op.value),
                    ),
                }
            }
            "read" => {}
            f => result.anomaly("malformed-history", format!("unknown function {f}")),
        }
    }
    let count = |o: Outcome| adds.values().filter(|v| **v == o).count() as u64;
    result.stat("attempted", adds.len() as u64);
    result.stat("acknowledged", count(Outcome::Ok));
    result.stat("failed", count(Outcome::Fail));
    result.stat("unknown", count(Outcome::Info));
    let Some(read) = final_read else {
        result.undecided("no successful final read".to_owned());
        return result;
    };
    result.stat("read", read.len() as u64);
    let lost: Vec<u64> = adds
        .iter()
        .filter(|(e, o)| **o == Outcome::Ok && !read.contains(e))
        .map(|(e, _)| *e)
        .collect();
    let failed_present: Vec<u64> = adds
        .iter()
        .filter(|(e, o)| **o == Outcome::Fail && read.contains(e))
        .map(|(e, _)| *e)
        .collect();
    let unexpected: Vec<u64> = read
        .iter()
        .filter(|e| !adds.contains_key(e))
        .copied()
        .collect();
    let recovered = adds
        .iter()
        .filter(|(e, o)| **o == Outcome::Info && read.contains(e))
        .count();
    result.stat("recovered", recovered as u64);
    result.stat("lost", lost.len() as u64);
    for (kind, elements, what) in [
        (
            "lost",
            &lost,
            "acknowledged insert(s) missing from the final read",
        ),
        (
            "failed-but-present",
            &failed_present,
            "insert(s) the client was told failed are in the final read",
        ),
        (
            "unexpected",
            &unexpected,
            "element(s) in the final read were never inserted",
        ),
    ] {
        if !elements.is_empty() {
            result.anomaly(
                kind,
                format!(
                    "{} {what}: {:?}{}",
                    elements.len(),
                    &elements[..elements.len().min(EXAMPLES)],
                    if elements.len() > EXAMPLES {
                        " ..."
                    } else {
                        ""
                    }
                ),
            );
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::Builder;
    use crate::history::{Type, Validity};
    use serde_json::json;

    fn history(adds: &[(u64, Type)], read: Option<&[u64]>) -> Vec<Event> {
        let mut b = Builder::default();
        for (e, t) in adds {
            b.op(1, *t, "add", json!(e), json!(e));
        }
        if let Some(read) = read {
            b.op(2, Type::Ok, "read", json!(null), json!(read));
        }
        b.events
    }

    fn kinds(r: &CheckResult) -> Vec<&str> {
        r.anomalies.iter().map(|a| a.kind.as_str()).collect()
    }

    #[test]
    fn table() {
        use Type::{Fail, Info, Ok};
        struct Case {
            name: &'static str,
            adds: &'static [(u64, Type)],
            read: Option<&'static [u64]>,
            validity: Validity,
            anomalies: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "every acknowledged insert read back",
                adds: &[(1, Ok), (2, Ok)],
                read: Some(&[1, 2]),
                validity: Validity::Valid,
                anomalies: &[],
            },
            Case {
                name: "unknown inserts may go either way",
                adds: &[(1, Ok), (2, Info), (3, Info)],
                read: Some(&[1, 3]),
                validity: Validity::Valid,
                anomalies: &[],
            },
            Case {
                name: "an acknowledged insert is lost",
                adds: &[(1, Ok), (2, Ok)],
                read: Some(&[2]),
                validity: Validity::Invalid,
                anomalies: &["lost"],
            },
            Case {
                name: "an element nobody inserted appears",
                adds: &[(1, Ok)],
                read: Some(&[1, 7]),
                validity: Validity::Invalid,
                anomalies: &["unexpected"],
            },
            Case {
                name: "a failed insert appears",
                adds: &[(1, Ok), (2, Fail)],
                read: Some(&[1, 2]),
                validity: Validity::Invalid,
                anomalies: &["failed-but-present"],
            },
            Case {
                name: "no final read: unknown",
                adds: &[(1, Ok)],
                read: None,
                validity: Validity::Unknown,
                anomalies: &[],
            },
        ];
        for c in cases {
            let r = check_set(&history(c.adds, c.read));
            assert_eq!(r.validity, c.validity, "{}: {r:?}", c.name);
            assert_eq!(kinds(&r), c.anomalies, "{}", c.name);
        }
    }

    #[test]
    fn the_last_read_is_the_final_one_and_stats_count_outcomes() {
        let mut b = Builder::default();
        b.op(1, Type::Ok, "add", json!(1), json!(1))
            .op(2, Type::Ok, "read", json!(null), json!([]))
            .op(1, Type::Info, "add", json!(2), json!(2))
            .op(2, Type::Ok, "read", json!(null), json!([1, 2]));
        let r = check_set(&b.events);
        assert!(r.is_valid(), "{r:?}");
        assert_eq!(r.stats["recovered"], 1);
        assert_eq!(r.stats["acknowledged"], 1);
    }
}
