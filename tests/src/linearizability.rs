//! A linearizability checker for single-key registers (Wing & Gong's search with Lowe's
//! memoization), for histories recorded by tests that run concurrent clients under faults.
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

use std::collections::HashSet;

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
    assert!(history.len() <= 128, "at most 128 operations per key");
    let mut ops = history.to_vec();
    ops.sort_by_key(|e| e.call);
    let must: u128 = ops
        .iter()
        .enumerate()
        .filter(|(_, e)| e.known())
        .fold(0, |m, (i, _)| m | (1u128 << i));
    let mut seen = HashSet::new();
    if search(&ops, must, 0, initial, &mut seen) {
        Ok(())
    } else {
        Err(format!(
            "not linearizable ({} operations, {} explored states): {ops:#?}",
            ops.len(),
            seen.len()
        ))
    }
}

fn search(
    ops: &[Event],
    must: u128,
    done: u128,
    state: Option<u64>,
    seen: &mut HashSet<(u128, Option<u64>)>,
) -> bool {
    if done & must == must {
        return true;
    }
    if !seen.insert((done, state)) {
        return false;
    }
    let pending = || (0..ops.len()).filter(move |i| done & (1u128 << i) == 0);
    let first_return = pending()
        .map(|i| ops[i].ret_or_inf())
        .min()
        .unwrap_or(u64::MAX);
    for i in pending() {
        if ops[i].call > first_return {
            // Sorted by call: every later operation also started after some pending one ended.
            break;
        }
        if let Some(next) = ops[i].step(state) {
            if search(ops, must, done | (1u128 << i), next, seen) {
                return true;
            }
        }
    }
    false
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
}
