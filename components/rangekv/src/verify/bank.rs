//! The bank workload: transfers between accounts in transactions, and reads of every balance
//! from one snapshot (checked by `checker::bank`: every read adds up to the same total, no
//! balance is negative).
//!
//! - Set-up, before the run: one transaction creates [`ACCOUNTS`] accounts of [`INITIAL`]
//!   each (if an earlier attempt's outcome was unknown, the next one finds all of them or
//!   none, and goes on accordingly).
//! - `transfer`: a transaction — optimistic or pessimistic, drawn from the seed — reads both
//!   balances (pessimistic: `get_for_update`, in key order), refuses if the source cannot cover the amount
//!   (recorded `fail`), writes both and commits. A commit whose outcome is unknown is `info`;
//!   any other failure means nothing was committed (`fail`).
//! - `read`: a snapshot at a fresh timestamp, one batch get of every account.
//! - The final read after the heal is one more such read.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use checker::bank::Bank;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::history::{error_kind, Recorder};
use super::workload::{client_config, Done, OP_DEADLINE};

/// Accounts `0..ACCOUNTS`.
pub const ACCOUNTS: u64 = 8;
/// What each account starts with.
pub const INITIAL: i64 = 100;
/// What the checker holds every read to.
pub const BANK: Bank = Bank {
    accounts: ACCOUNTS,
    total: ACCOUNTS as i64 * INITIAL,
};
/// Most a transfer moves.
const MAX_AMOUNT: i64 = 5;

const PREFIX: &str = "verify/b/";

fn account_key(a: u64) -> Vec<u8> {
    format!("{PREFIX}{a:03}").into_bytes()
}

/// An account key to split a region at (the `split` nemesis): accounts then live in several
/// regions and transfers cross them.
pub fn split_key(pick: u64) -> Vec<u8> {
    account_key(1 + pick % (ACCOUNTS - 1))
}

fn all_keys() -> Vec<Vec<u8>> {
    (0..ACCOUNTS).map(account_key).collect()
}

/// The account a key names, if it is one.
fn account_of(key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key.strip_prefix(PREFIX.as_bytes())?)
        .ok()?
        .parse()
        .ok()
}

fn balance_of(v: &[u8]) -> Result<i64> {
    match std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()) {
        Some(b) => Ok(b),
        None => bail!(
            "a balance is not a number: {:?}",
            String::from_utf8_lossy(v)
        ),
    }
}

pub async fn txn_client(endpoints: &[String], until: Instant) -> Result<client::TransactionClient> {
    loop {
        match client::TransactionClient::with_config(endpoints.to_vec(), client_config()).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > until => bail!("cannot connect a client: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Creates the accounts, retrying until `deadline` (see the module docs).
pub async fn setup(endpoints: &[String], deadline: Instant) -> Result<()> {
    let c = txn_client(endpoints, deadline).await?;
    loop {
        let attempt = async {
            let mut t = c.begin_optimistic().await?;
            let found = t.batch_get(all_keys()).await?;
            match found.len() as u64 {
                ACCOUNTS => return Ok(true),
                0 => {}
                _ => return Ok::<_, client::Error>(false),
            }
            for k in all_keys() {
                t.insert(k, INITIAL.to_string()).await?;
            }
            t.commit().await?;
            Ok(true)
        };
        match tokio::time::timeout(OP_DEADLINE, attempt).await {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) => bail!("some accounts exist and others do not: not a fresh cluster"),
            Ok(Err(e)) if Instant::now() > deadline => bail!("creating the accounts: {e}"),
            Err(_) if Instant::now() > deadline => bail!("creating the accounts: no answer"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// One transfer (see the module docs).
pub async fn transfer(
    r: &Recorder,
    c: &client::TransactionClient,
    process: u64,
    rng: &mut StdRng,
) -> Done {
    let from = rng.random_range(0..ACCOUNTS);
    let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
    let amount = rng.random_range(1..=MAX_AMOUNT);
    let pessimistic = rng.random_bool(0.5);
    let value = json!({"from": from, "to": to, "amount": amount});
    r.invoke(process, "transfer", value.clone());
    let run = async {
        let mut t = if pessimistic {
            c.begin_pessimistic().await
        } else {
            c.begin_optimistic().await
        }
        .map_err(Failed::Before)?;
        let decided = async {
            let (a, b) = (account_key(from), account_key(to));
            let (fa, fb) = if pessimistic {
                // Lock in key order, as applications do: two transfers between the same
                // accounts in opposite directions then never wait for each other in a cycle
                // (stores have no deadlock detector yet; a cycle would last until a lock wait
                // times out).
                if a < b {
                    let fa = t.get_for_update(a.clone()).await?;
                    (fa, t.get_for_update(b.clone()).await?)
                } else {
                    let fb = t.get_for_update(b.clone()).await?;
                    (t.get_for_update(a.clone()).await?, fb)
                }
            } else {
                (t.get(a.clone()).await?, t.get(b.clone()).await?)
            };
            let (Some(fa), Some(fb)) = (fa, fb) else {
                return Ok(Err("an account is missing".to_owned()));
            };
            let (fa, fb) = match (balance_of(&fa), balance_of(&fb)) {
                (Ok(x), Ok(y)) => (x, y),
                (Err(e), _) | (_, Err(e)) => return Ok(Err(e.to_string())),
            };
            if fa < amount {
                return Ok(Err(format!("insufficient funds: {fa} < {amount}")));
            }
            t.put(a, (fa - amount).to_string()).await?;
            t.put(b, (fb + amount).to_string()).await?;
            Ok::<_, client::Error>(Ok(()))
        }
        .await;
        match decided {
            Ok(Ok(())) => t.commit().await.map(|_| ()).map_err(Failed::Commit),
            Ok(Err(why)) => {
                let _ = t.rollback().await;
                Err(Failed::Refused(why))
            }
            Err(e) => {
                let _ = t.rollback().await;
                Err(Failed::Before(e))
            }
        }
    };
    match tokio::time::timeout(OP_DEADLINE, run).await {
        Ok(Ok(())) => {
            r.ok(process, "transfer", value);
            Done::Ok
        }
        Ok(Err(Failed::Refused(why))) => {
            r.fail(process, "transfer", value, &why, "Refused");
            Done::Fail
        }
        Ok(Err(Failed::Commit(e @ client::Error::Undetermined(_)))) => {
            r.info(process, "transfer", value, &e.to_string(), &error_kind(&e));
            Done::Unknown
        }
        Ok(Err(Failed::Before(e) | Failed::Commit(e))) => {
            r.fail(process, "transfer", value, &e.to_string(), &error_kind(&e));
            Done::Fail
        }
        Err(_) => {
            r.info(process, "transfer", value, "no answer", "Deadline");
            Done::Unknown
        }
    }
}

/// Why a transfer did not commit.
enum Failed {
    /// Before the commit: nothing of it was written.
    Before(client::Error),
    /// The source could not cover the amount (or the data was not what the workload wrote).
    Refused(String),
    /// The commit failed: certainly not committed, unless `Undetermined`.
    Commit(client::Error),
}

/// A snapshot read of every balance; `add_to_first` records the first balance that much
/// higher than read (the `wrong-total` control). A read that fails had no effect.
pub async fn read(
    r: &Recorder,
    c: &client::TransactionClient,
    process: u64,
    add_to_first: i64,
) -> Done {
    r.invoke(process, "read", Value::Null);
    let run = async {
        let ts = c.current_timestamp().await?;
        let pairs = c.snapshot(ts).batch_get(all_keys()).await?;
        Ok::<_, client::Error>(pairs)
    };
    match tokio::time::timeout(OP_DEADLINE, run).await {
        Ok(Ok(pairs)) => {
            let mut balances = Map::new();
            for (i, (k, v)) in pairs.iter().enumerate() {
                let account = account_of(k).map_or_else(
                    || String::from_utf8_lossy(k).into_owned(),
                    |a| a.to_string(),
                );
                let mut balance = match balance_of(v) {
                    Ok(b) => json!(b),
                    // Not a balance any client wrote: the checker reports it as malformed.
                    Err(_) => json!(String::from_utf8_lossy(v)),
                };
                if i == 0 && add_to_first != 0 {
                    balance = json!(balance.as_i64().unwrap_or(0) + add_to_first);
                }
                balances.insert(account, balance);
            }
            r.ok(process, "read", Value::Object(balances));
            Done::Ok
        }
        Ok(Err(e)) => {
            r.fail(
                process,
                "read",
                Value::Null,
                &e.to_string(),
                &error_kind(&e),
            );
            Done::Fail
        }
        Err(_) => {
            r.fail(process, "read", Value::Null, "no answer", "Deadline");
            Done::Fail
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_keys_round_trip_and_others_are_not_accounts() {
        for a in [0, 7, 123] {
            assert_eq!(account_of(&account_key(a)), Some(a));
        }
        assert_eq!(account_of(b"verify/r/000001"), None);
        assert_eq!(account_of(b"verify/b/x"), None);
        assert_eq!(BANK.total, 800);
    }
}
