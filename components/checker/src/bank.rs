//! The bank checker: clients move money between accounts in transactions and read every
//! balance in one snapshot; under snapshot isolation every such read sees the same total.
//!
//! Values: `transfer` has `{"from": a, "to": b, "amount": n}` (accounts are numbers
//! `0..accounts`); its outcome does not matter to the rules. `read` is invoked with `null` and
//! completes `ok` with an object from account (as a string, since JSON keys are strings) to
//! balance: `{"0": 100, "1": 95, ...}`.
//!
//! Rules, for every successful read (during the run and the final one):
//! - it holds every account and no other: else **wrong-accounts** (a transfer's write seen
//!   without the account's creation, or a key from nowhere);
//! - the balances add up to the total the accounts were created with: else **wrong-total**
//!   (a read saw part of a transfer, or a transfer was lost or applied twice — read skew, lost
//!   update);
//! - no balance is negative: else **negative-balance** (two transfers out of one account both
//!   decided on a balance that covered only one — write skew on the account).
//!
//! Without a successful read the verdict is unknown.
//!
//! Caveat (as Jepsen's bank checker): transfers are not checked one by one; a transfer lost
//! in a way that keeps the total (e.g. one never applied) goes unnoticed here — the set and
//! register workloads cover lost acknowledged writes.

use std::collections::BTreeMap;

use crate::history::{pair, CheckResult, Event, Outcome};

/// How many examples of each anomaly the details list.
const EXAMPLES: usize = 10;

/// What the accounts were created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bank {
    /// Accounts `0..accounts`.
    pub accounts: u64,
    /// The sum of all balances.
    pub total: i64,
}

/// Checks a bank history against `bank`; see the module docs.
pub fn check_bank(history: &[Event], bank: Bank) -> CheckResult {
    let mut result = CheckResult::new();
    let ops = match pair(history) {
        Ok(ops) => ops,
        Err(e) => {
            result.anomaly("malformed-history", e);
            return result;
        }
    };
    let mut examples: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut note = |kind: &'static str, detail: String| {
        *counts.entry(kind).or_default() += 1;
        let list = examples.entry(kind).or_default();
        if list.len() < EXAMPLES {
            list.push(detail);
        }
    };
    let (mut reads, mut transfers) = (0u64, [0u64; 3]);
    for op in &ops {
        match (op.f.as_str(), op.outcome) {
            ("transfer", o) => {
                transfers[o as usize] += 1;
            }
            ("read", Outcome::Ok) => {
                reads += 1;
                let Some(balances) = op.value.as_object() else {
                    note(
                        "malformed-history",
                        format!("read of {} (not an object)", op.value),
                    );
                    continue;
                };
                let mut parsed = BTreeMap::new();
                for (account, balance) in balances {
                    match (account.parse::<u64>(), balance.as_i64()) {
                        (Ok(a), Some(b)) => {
                            parsed.insert(a, b);
                        }
                        _ => note(
                            "malformed-history",
                            format!("read of {account:?} = {balance} (not an account balance)"),
                        ),
                    }
                }
                let at = format!("read by process {} at {} ns", op.process, op.call);
                let expected = (0..bank.accounts).collect::<Vec<_>>();
                if parsed.keys().copied().collect::<Vec<_>>() != expected {
                    note(
                        "wrong-accounts",
                        format!(
                            "{at} holds accounts {:?}",
                            parsed.keys().collect::<Vec<_>>()
                        ),
                    );
                }
                let total: i64 = parsed.values().sum();
                if total != bank.total {
                    note(
                        "wrong-total",
                        format!("{at} adds up to {total}, not {}: {}", bank.total, op.value),
                    );
                }
                let negative: Vec<(u64, i64)> = parsed
                    .iter()
                    .filter(|(_, b)| **b < 0)
                    .map(|(a, b)| (*a, *b))
                    .collect();
                if !negative.is_empty() {
                    note(
                        "negative-balance",
                        format!("{at} has negative balances {negative:?}"),
                    );
                }
            }
            ("read", _) => {}
            (f, _) => note("malformed-history", format!("unknown function {f}")),
        }
    }
    result.stat("reads", reads);
    result.stat("transfers-ok", transfers[Outcome::Ok as usize]);
    result.stat("transfers-failed", transfers[Outcome::Fail as usize]);
    result.stat("transfers-unknown", transfers[Outcome::Info as usize]);
    for (kind, list) in examples {
        let n = counts[kind];
        let more = if n as usize > list.len() { " ..." } else { "" };
        result.anomaly(kind, format!("{n} read(s): {}{more}", list.join("; ")));
    }
    if reads == 0 && result.anomalies.is_empty() {
        result.undecided("no successful read".to_owned());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::Builder;
    use crate::history::{Type, Validity};
    use serde_json::{json, Value};

    const BANK: Bank = Bank {
        accounts: 3,
        total: 30,
    };

    fn read(balances: &[(u64, i64)]) -> Value {
        Value::Object(
            balances
                .iter()
                .map(|(a, b)| (a.to_string(), json!(b)))
                .collect(),
        )
    }

    fn kinds(r: &CheckResult) -> Vec<&str> {
        r.anomalies.iter().map(|a| a.kind.as_str()).collect()
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            reads: &'static [&'static [(u64, i64)]],
            validity: Validity,
            anomalies: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "every read adds up",
                reads: &[&[(0, 10), (1, 10), (2, 10)], &[(0, 0), (1, 25), (2, 5)]],
                validity: Validity::Valid,
                anomalies: &[],
            },
            Case {
                name: "a read sees half of a transfer",
                reads: &[&[(0, 10), (1, 10), (2, 10)], &[(0, 5), (1, 10), (2, 10)]],
                validity: Validity::Invalid,
                anomalies: &["wrong-total"],
            },
            Case {
                name: "a balance below zero that still adds up",
                reads: &[&[(0, -5), (1, 25), (2, 10)]],
                validity: Validity::Invalid,
                anomalies: &["negative-balance"],
            },
            Case {
                name: "an account missing",
                reads: &[&[(0, 15), (1, 15)]],
                validity: Validity::Invalid,
                anomalies: &["wrong-accounts"],
            },
            Case {
                name: "an account from nowhere",
                reads: &[&[(0, 10), (1, 10), (2, 10), (7, 0)]],
                validity: Validity::Invalid,
                anomalies: &["wrong-accounts"],
            },
            Case {
                name: "no read: unknown",
                reads: &[],
                validity: Validity::Unknown,
                anomalies: &[],
            },
        ];
        for c in cases {
            let mut b = Builder::default();
            b.op(
                1,
                Type::Ok,
                "transfer",
                json!({"from": 0, "to": 1, "amount": 5}),
                json!({"from": 0, "to": 1, "amount": 5}),
            );
            for r in c.reads {
                b.op(2, Type::Ok, "read", Value::Null, read(r));
            }
            let r = check_bank(&b.events, BANK);
            assert_eq!(r.validity, c.validity, "{}: {r:?}", c.name);
            assert_eq!(kinds(&r), c.anomalies, "{}", c.name);
        }
    }

    #[test]
    fn failed_reads_are_ignored_and_outcomes_are_counted() {
        let mut b = Builder::default();
        let t = json!({"from": 0, "to": 2, "amount": 1});
        b.op(1, Type::Ok, "transfer", t.clone(), t.clone())
            .op(3, Type::Info, "transfer", t.clone(), t.clone())
            .op(2, Type::Fail, "read", Value::Null, Value::Null)
            .op(
                2,
                Type::Ok,
                "read",
                Value::Null,
                read(&[(0, 9), (1, 10), (2, 11)]),
            );
        let r = check_bank(&b.events, BANK);
        assert!(r.is_valid(), "{r:?}");
        assert_eq!(r.stats["reads"], 1);
        assert_eq!(r.stats["transfers-unknown"], 1);
    }
}
