//! The list-append workload (Elle's): transactions of one to four micro-operations on a few
//! keys, each an append of a value unique in the run or a read of a whole list; checked by
//! `checker::list_append` for the cycles and reads snapshot isolation forbids.
//!
//! A list is stored as its values joined by commas; an append reads the list in the
//! transaction and writes it back one longer. Reads in a transaction see its own earlier
//! appends, as the checker expects. Optimistic transactions read everything from their start
//! snapshot. Pessimistic ones first lock every list they touch with `get_for_update`, in key
//! order, and work on what those locking reads returned, because in
//! TiKV's pessimistic transactions a plain read sees the start snapshot while a locking read
//! sees the latest committed value: a transaction mixing the two can see one transaction's
//! write to one key and miss its write to another (a G-single this checker reports; the first
//! run of this workload found exactly that, with plain reads next to locking appends). The
//! outcome is recorded like the bank's transfers: a commit whose outcome is unknown is `info`,
//! any other failure `fail` (nothing was written). The final read is one transaction reading
//! every list.

use anyhow::Result;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

use super::history::{error_kind, Recorder};
use super::workload::{Done, OP_DEADLINE};

/// Lists `0..KEYS`.
const KEYS: u64 = 8;

const PREFIX: &str = "verify/l/";

fn list_key(k: u64) -> Vec<u8> {
    format!("{PREFIX}{k:03}").into_bytes()
}

/// A list key to split a region at (the `split` nemesis).
pub fn split_key(pick: u64) -> Vec<u8> {
    list_key(1 + pick % (KEYS - 1))
}

/// The values of a stored list; a value that is not one is kept as text, for the checker to
/// call garbage.
fn decode(v: Option<&[u8]>) -> Vec<Value> {
    let Some(v) = v else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(v);
    if text.is_empty() {
        return Vec::new();
    }
    text.split(',')
        .map(|e| e.parse::<u64>().map_or_else(|_| json!(e), |n| json!(n)))
        .collect()
}

fn encode(list: &[Value]) -> String {
    let parts: Vec<String> = list
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    parts.join(",")
}

/// A micro-operation to run: append `value` to list `key`, or read it.
enum Mop {
    Append(u64, u64),
    Read(u64),
}

fn as_json(mops: &[Mop], reads: Option<&[Vec<Value>]>) -> Value {
    let mut read = reads.map(|r| r.iter());
    Value::Array(
        mops.iter()
            .map(|m| match m {
                Mop::Append(k, v) => json!(["append", k, v]),
                Mop::Read(k) => match read.as_mut().and_then(|r| r.next()) {
                    Some(list) => json!(["r", k, list]),
                    None => json!(["r", k, null]),
                },
            })
            .collect(),
    )
}

/// One transaction; values come from `next_value`, unique in the run.
pub async fn txn(
    r: &Recorder,
    c: &client::TransactionClient,
    process: u64,
    rng: &mut StdRng,
    mut next_value: impl FnMut() -> u64,
) -> Done {
    let n = rng.random_range(1..=4);
    let mops: Vec<Mop> = (0..n)
        .map(|_| {
            let k = rng.random_range(0..KEYS);
            if rng.random_bool(0.5) {
                Mop::Append(k, next_value())
            } else {
                Mop::Read(k)
            }
        })
        .collect();
    let pessimistic = rng.random_bool(0.5);
    r.invoke(process, "txn", as_json(&mops, None));
    let run = async {
        let mut t = if pessimistic {
            c.begin_pessimistic().await
        } else {
            c.begin_optimistic().await
        }
        .map_err(Failed::Before)?;
        let body = async {
            let mut reads = Vec::new();
            // Pessimistic: lock every list first, in key order (so that two transactions never
            // wait for each other in a cycle: stores have no deadlock detector yet), then work
            // on what the locking reads returned.
            let mut locked: std::collections::BTreeMap<u64, Vec<Value>> = Default::default();
            if pessimistic {
                let mut keys: Vec<u64> = mops
                    .iter()
                    .map(|m| match m {
                        Mop::Read(k) | Mop::Append(k, _) => *k,
                    })
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                for k in keys {
                    let v = t.get_for_update(list_key(k)).await?;
                    locked.insert(k, decode(v.as_deref()));
                }
            }
            for m in &mops {
                match m {
                    Mop::Read(k) => {
                        let list = match locked.get(k) {
                            Some(list) => list.clone(),
                            None => decode(t.get(list_key(*k)).await?.as_deref()),
                        };
                        reads.push(list);
                    }
                    Mop::Append(k, value) => {
                        let mut list = match locked.get(k) {
                            Some(list) => list.clone(),
                            None => decode(t.get(list_key(*k)).await?.as_deref()),
                        };
                        list.push(json!(value));
                        t.put(list_key(*k), encode(&list)).await?;
                        if let Some(l) = locked.get_mut(k) {
                            *l = list;
                        }
                    }
                }
            }
            Ok::<_, client::Error>(reads)
        }
        .await;
        match body {
            Ok(reads) => match t.commit().await {
                Ok(_) => Ok(reads),
                Err(e) => Err(Failed::Commit(e)),
            },
            Err(e) => {
                let _ = t.rollback().await;
                Err(Failed::Before(e))
            }
        }
    };
    let asked = as_json(&mops, None);
    match tokio::time::timeout(OP_DEADLINE, run).await {
        Ok(Ok(reads)) => {
            r.ok(process, "txn", as_json(&mops, Some(&reads)));
            Done::Ok
        }
        Ok(Err(Failed::Commit(e @ client::Error::Undetermined(_)))) => {
            r.info(process, "txn", asked, &e.to_string(), &error_kind(&e));
            Done::Unknown
        }
        Ok(Err(Failed::Before(e) | Failed::Commit(e))) => {
            r.fail(process, "txn", asked, &e.to_string(), &error_kind(&e));
            Done::Fail
        }
        Err(_) => {
            r.info(process, "txn", asked, "no answer", "Deadline");
            Done::Unknown
        }
    }
}

/// The `mixed-reads` negative control, made to happen rather than hoped for: a pessimistic
/// transaction A reads list 0 with a plain (snapshot) read; transaction B (process `b`) then
/// appends to lists 0 and 1 and commits; A appends to list 1 with a locking read, which sees
/// B's append, and commits. A missed B's append to 0 yet built on its append to 1: a cycle
/// with one rw edge (G-single). Both are recorded like any transaction; `true` once done.
pub async fn inject_mixed_reads(
    r: &Recorder,
    c: &client::TransactionClient,
    a: u64,
    b: u64,
    mut next_value: impl FnMut() -> u64,
) -> bool {
    let (va, vb0, vb1) = (next_value(), next_value(), next_value());
    let run = async {
        let mut ta = c.begin_pessimistic().await?;
        let seen = decode(ta.get(list_key(0)).await?.as_deref());
        let mut tb = c.begin_optimistic().await?;
        let mut b_mops = Vec::new();
        for (k, v) in [(0, vb0), (1, vb1)] {
            let mut list = decode(tb.get(list_key(k)).await?.as_deref());
            list.push(json!(v));
            tb.put(list_key(k), encode(&list)).await?;
            b_mops.push(Mop::Append(k, v));
        }
        tb.commit().await?;
        let mut list = decode(ta.get_for_update(list_key(1)).await?.as_deref());
        list.push(json!(va));
        ta.put(list_key(1), encode(&list)).await?;
        ta.commit().await?;
        Ok::<_, client::Error>((seen, b_mops))
    };
    match tokio::time::timeout(OP_DEADLINE, run).await {
        Ok(Ok((seen, b_mops))) => {
            // Recorded as they happened: A's read before B, B, then A's append and commit.
            let a_mops = [Mop::Read(0), Mop::Append(1, va)];
            r.invoke(a, "txn", as_json(&a_mops, None));
            r.invoke(b, "txn", as_json(&b_mops, None));
            r.ok(b, "txn", as_json(&b_mops, None));
            r.ok(a, "txn", as_json(&a_mops, Some(&[seen])));
            true
        }
        Ok(Err(e)) => {
            eprintln!("mixed-reads injection attempt failed: {e}");
            false
        }
        Err(_) => false,
    }
}

/// Why a transaction did not commit.
enum Failed {
    /// Before the commit: nothing of it was written.
    Before(client::Error),
    /// The commit failed: certainly not committed, unless `Undetermined`.
    Commit(client::Error),
}

/// The final read: one snapshot of every list, recorded as a read-only transaction.
pub async fn final_read(r: &Recorder, c: &client::TransactionClient, process: u64) -> Result<Done> {
    let mops: Vec<Mop> = (0..KEYS).map(Mop::Read).collect();
    r.invoke(process, "txn", as_json(&mops, None));
    let run = async {
        let ts = c.current_timestamp().await?;
        let snapshot = c.snapshot(ts);
        let mut reads = Vec::new();
        for k in 0..KEYS {
            let v = snapshot.get(list_key(k)).await?;
            reads.push(decode(v.as_deref()));
        }
        Ok::<_, client::Error>(reads)
    };
    Ok(match tokio::time::timeout(OP_DEADLINE, run).await {
        Ok(Ok(reads)) => {
            r.ok(process, "txn", as_json(&mops, Some(&reads)));
            Done::Ok
        }
        Ok(Err(e)) => {
            let asked = as_json(&mops, None);
            r.fail(process, "txn", asked, &e.to_string(), &error_kind(&e));
            Done::Fail
        }
        Err(_) => {
            r.fail(
                process,
                "txn",
                as_json(&mops, None),
                "no answer",
                "Deadline",
            );
            Done::Fail
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_and_garbage_stays_visible() {
        let list = vec![json!(1), json!(22), json!(333)];
        assert_eq!(decode(Some(encode(&list).as_bytes())), list);
        assert!(decode(None).is_empty());
        assert!(decode(Some(b"")).is_empty());
        assert_eq!(decode(Some(b"1,x")), vec![json!(1), json!("x")]);
        let m = [Mop::Append(1, 5), Mop::Read(2)];
        assert_eq!(
            as_json(&m, Some(&[vec![json!(5)]])),
            json!([["append", 1, 5], ["r", 2, [5]]])
        );
        assert_eq!(split_key(0), b"verify/l/001".to_vec());
    }
}
