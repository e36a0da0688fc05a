//! The workloads: what the clients do during the run, and the final reads after the heal.
//!
//! Every client is a task that runs one operation at a time and records it (invoke, then its
//! outcome) as one Jepsen process. Raw writes that end in `Error::Undetermined` (or any error
//! the client cannot classify) are `info`: they may apply later; the task then continues as a
//! new process. Writes the client was told certainly did not happen are `fail`; reads that
//! fail are `fail` too (they had no effect).
//!
//! - **register**: reads, writes and compare-and-swaps of small values (0..5) on a few keys
//!   at a time; each key takes at most [`OPS_PER_KEY`] operations, then a fresh key replaces
//!   it, so that every key's history stays small enough for the linearizability search (as
//!   Jepsen's independent keys). Final reads of every key used.
//! - **set**: unique inserts, each element its own key; a final scan reads them all back.
//! - **bank**: transfers and snapshot reads of every balance (see `super::bank`).
//! - **tso**: timestamps from PD, each client its own PD connection.
//! - **list-append**: transactions appending to and reading lists (see `super::list_append`);
//!   a final snapshot read of every list.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::history::{error_kind, Recorder};
use super::{bank, list_append};
use super::{InjectAnomaly, Workload};

/// Operations one register key takes before the clients move to a fresh one (the checker takes
/// at most 128 per key).
pub const OPS_PER_KEY: u32 = 100;
/// Registers in use at a time.
const ACTIVE_KEYS: usize = 3;
/// A client operation that has not finished after this long is abandoned (as unknown), in case
/// the client's own deadlines do not fire.
pub(super) const OP_DEADLINE: Duration = Duration::from_secs(40);

const REGISTER_PREFIX: &str = "verify/r/";
const SET_PREFIX: &str = "verify/s/";
const SET_END: &str = "verify/s0";

/// What the clients share.
pub struct Shared {
    pub workload: Workload,
    /// PD's endpoints, updated once the nemesis healed (it may have replaced PD members).
    endpoints: parking_lot::Mutex<Vec<String>>,
    pub recorder: Arc<Recorder>,
    pub stop: AtomicBool,
    pub inject: Option<InjectAnomaly>,
    /// Raw clients send reads to every replica in turn (`--replica-read`).
    pub replica_read: bool,
    /// When the run started; anomalies are injected a third of the way in.
    pub started: Instant,
    pub time_limit: Duration,
    /// Register keys: the active slots `(key id, operations so far)` and the next key id.
    keys: Mutex<(Vec<(u64, u32)>, u64)>,
    /// Set elements handed out so far.
    next_element: AtomicU64,
    /// The first acknowledged set element (for the `lost-insert` control).
    first_acknowledged: Mutex<Option<u64>>,
    injected: AtomicBool,
}

impl Shared {
    /// PD's endpoints, for clients made now.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.lock().clone()
    }

    pub fn set_endpoints(&self, endpoints: Vec<String>) {
        *self.endpoints.lock() = endpoints;
    }

    pub fn new(
        workload: Workload,
        endpoints: Vec<String>,
        recorder: Arc<Recorder>,
        inject: Option<InjectAnomaly>,
        replica_read: bool,
        time_limit: Duration,
    ) -> Shared {
        Shared {
            workload,
            endpoints: parking_lot::Mutex::new(endpoints),
            recorder,
            stop: AtomicBool::new(false),
            inject,
            replica_read,
            started: Instant::now(),
            time_limit,
            keys: Mutex::new(((0..ACTIVE_KEYS as u64).map(|k| (k, 0)).collect(), 0)),
            next_element: AtomicU64::new(0),
            first_acknowledged: Mutex::new(None),
            injected: AtomicBool::new(false),
        }
    }

    /// The register key ids used so far.
    fn register_keys_used(&self) -> u64 {
        let keys = self.keys.lock().expect("keys");
        keys.1.max(ACTIVE_KEYS as u64)
    }

    fn pick_register_key(&self, rng: &mut StdRng) -> u64 {
        let mut keys = self.keys.lock().expect("keys");
        let (slots, next) = &mut *keys;
        *next = (*next).max(ACTIVE_KEYS as u64);
        let slot = &mut slots[rng.random_range(0..ACTIVE_KEYS)];
        if slot.1 >= OPS_PER_KEY {
            *slot = (*next, 0);
            *next += 1;
        }
        slot.1 += 1;
        slot.0
    }

    /// Whether this caller injects the anomaly `which` now: true for exactly one caller, the
    /// first to ask once a third of the run is over.
    fn claim_injection(&self, which: InjectAnomaly) -> bool {
        self.should_inject(which)
            && self
                .injected
                .compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Whether the anomaly `which` should be injected now (once, a third of the way in).
    fn should_inject(&self, which: InjectAnomaly) -> bool {
        self.inject == Some(which)
            && !self.injected.load(Ordering::Relaxed)
            && self.started.elapsed() >= self.time_limit / 3
    }
}

/// How one operation ended, for the client that ran it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Done {
    Ok,
    Fail,
    /// Unknown: the client must continue as a new process.
    Unknown,
}

/// A key of the workload's key space to split a region at (the `split` nemesis), and whether
/// it is transactional; drawn from `pick`.
pub fn split_key(workload: Workload, pick: usize) -> (Vec<u8>, bool) {
    let pick = pick as u64;
    match workload {
        Workload::Register => (register_key(pick % 20).into_bytes(), false),
        Workload::Set => (
            format!("{SET_PREFIX}{:012}", pick % 2000).into_bytes(),
            false,
        ),
        Workload::Bank => (bank::split_key(pick), true),
        Workload::ListAppend => (list_append::split_key(pick), true),
        // TSO touches no keys; any split will do.
        Workload::Tso => (format!("verify/t/{}", pick % 100).into_bytes(), false),
    }
}

fn register_key(id: u64) -> String {
    format!("{REGISTER_PREFIX}{id:06}")
}

pub(super) fn client_config() -> client::Config {
    client::Config {
        request_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(2),
        max_retry_time: Duration::from_secs(10),
        ..client::Config::default()
    }
}

async fn raw_client(shared: &Shared, until: Instant) -> Result<client::RawClient> {
    let config = client::Config {
        replica_read: shared.replica_read,
        ..client_config()
    };
    loop {
        match client::RawClient::with_config(shared.endpoints(), config.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > until => bail!("cannot connect a client: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// One client: runs operations until told to stop. `worker` numbers the clients from 0;
/// `concurrency` is their count (process ids advance by it after an unknown outcome).
pub async fn client(shared: Arc<Shared>, worker: u64, concurrency: u64, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ worker);
    let mut process = worker;
    let connect_until = Instant::now() + Duration::from_secs(60);
    match shared.workload {
        Workload::Register => {
            let c = raw_client(&shared, connect_until).await?;
            while !shared.stop.load(Ordering::Relaxed) {
                if worker == 0 && shared.should_inject(InjectAnomaly::StaleRead) {
                    inject_stale_read(&shared, &c, &mut process, concurrency).await;
                    continue;
                }
                let key = register_key(shared.pick_register_key(&mut rng));
                let done = match rng.random_range(0..4) {
                    0 | 1 => read(&shared, &c, process, &key, None).await,
                    2 => write(&shared, &c, process, &key, rng.random_range(0..5)).await,
                    _ => {
                        let expect = rng.random_range(0..6);
                        let expect = (expect < 5).then_some(expect);
                        cas(&shared, &c, process, &key, expect, rng.random_range(0..5)).await
                    }
                };
                if done == Done::Unknown {
                    process += concurrency;
                }
            }
        }
        Workload::Set => {
            let c = raw_client(&shared, connect_until).await?;
            while !shared.stop.load(Ordering::Relaxed) {
                let e = shared.next_element.fetch_add(1, Ordering::Relaxed);
                if add(&shared, &c, process, e).await == Done::Unknown {
                    process += concurrency;
                }
            }
        }
        Workload::Bank => {
            let c = bank::txn_client(&shared.endpoints(), connect_until).await?;
            while !shared.stop.load(Ordering::Relaxed) {
                let r = &shared.recorder;
                // Any client may inject: one of them may be stuck behind locks for long.
                let done = if shared.claim_injection(InjectAnomaly::WrongTotal) {
                    println!("injecting anomaly wrong-total: one read records a balance 1 higher");
                    bank::read(r, &c, process, 1).await
                } else if rng.random_bool(0.3) {
                    bank::read(r, &c, process, 0).await
                } else {
                    bank::transfer(r, &c, process, &mut rng).await
                };
                if done == Done::Unknown {
                    process += concurrency;
                }
            }
        }
        Workload::ListAppend => {
            let c = bank::txn_client(&shared.endpoints(), connect_until).await?;
            while !shared.stop.load(Ordering::Relaxed) {
                let next = || shared.next_element.fetch_add(1, Ordering::Relaxed);
                let r = &shared.recorder;
                if worker == 0 && shared.should_inject(InjectAnomaly::MixedReads) {
                    // Two processes of their own, beyond every client's.
                    let (a, b) = (1_000_000, 1_000_001);
                    if list_append::inject_mixed_reads(r, &c, a, b, next).await {
                        shared.injected.store(true, Ordering::Relaxed);
                        println!(
                            "injecting anomaly mixed-reads: a plain read next to a locking append"
                        );
                    }
                    continue;
                }
                let done = list_append::txn(r, &c, process, &mut rng, next).await;
                if done == Done::Unknown {
                    process += concurrency;
                }
            }
        }
        Workload::Tso => {
            let pd = loop {
                match pd_client::PdClient::connect(shared.endpoints()).await {
                    Ok(pd) => break pd,
                    Err(e) if Instant::now() > connect_until => {
                        bail!("cannot connect to PD: {e}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            let mut last = None;
            while !shared.stop.load(Ordering::Relaxed) {
                let r = &shared.recorder;
                if worker == 0 && shared.should_inject(InjectAnomaly::DuplicateTs) {
                    if let Some(ts) = last {
                        shared.injected.store(true, Ordering::Relaxed);
                        println!("injecting anomaly duplicate-ts: recording timestamp {ts} twice");
                        r.invoke(process, "ts", Value::Null);
                        r.ok(process, "ts", json!(ts));
                        continue;
                    }
                }
                r.invoke(process, "ts", Value::Null);
                match tokio::time::timeout(OP_DEADLINE, pd.get_ts()).await {
                    Ok(Ok(ts)) => {
                        last = Some(ts);
                        r.ok(process, "ts", json!(ts));
                    }
                    Ok(Err(e)) => {
                        r.fail(process, "ts", Value::Null, &e.to_string(), &error_kind(&e))
                    }
                    Err(_) => r.fail(process, "ts", Value::Null, "no answer", "Deadline"),
                }
            }
        }
    }
    Ok(())
}

fn encode(v: u64) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn decode(v: &[u8]) -> Value {
    match std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(n) => json!(n),
        // Not a value any client wrote: the checker reports the history as malformed.
        None => json!(String::from_utf8_lossy(v)),
    }
}

/// How a failed write is recorded: `true` if its outcome is unknown.
fn write_outcome_unknown(e: &client::Error) -> bool {
    // Every error but these may come after the write reached a store. The client reports a
    // write that certainly did not happen with one of them (it never resends one that might
    // have).
    !matches!(
        e,
        client::Error::Timeout { .. }
            | client::Error::Region(_)
            | client::Error::Server(_)
            | client::Error::Pd(_)
            | client::Error::InvalidArgument(_)
    )
}

/// Records the end of a failed write.
fn record_write_error(
    r: &Recorder,
    process: u64,
    f: &str,
    value: Value,
    e: &client::Error,
) -> Done {
    if write_outcome_unknown(e) {
        r.info(process, f, value, &e.to_string(), &error_kind(e));
        Done::Unknown
    } else {
        r.fail(process, f, value, &e.to_string(), &error_kind(e));
        Done::Fail
    }
}

/// A read; `record_instead` replaces what it saw (the `stale-read` control). A read that
/// fails had no effect: never unknown.
async fn read(
    shared: &Shared,
    c: &client::RawClient,
    process: u64,
    key: &str,
    record_instead: Option<u64>,
) -> Done {
    let r = &shared.recorder;
    r.invoke(process, "read", json!([key, null]));
    match tokio::time::timeout(OP_DEADLINE, c.get(key.as_bytes().to_vec())).await {
        Ok(Ok(v)) => {
            let seen = match (record_instead, v) {
                (Some(stale), _) => json!(stale),
                (None, Some(v)) => decode(&v),
                (None, None) => Value::Null,
            };
            r.ok(process, "read", json!([key, seen]));
            Done::Ok
        }
        Ok(Err(e)) => {
            r.fail(
                process,
                "read",
                json!([key, null]),
                &e.to_string(),
                &error_kind(&e),
            );
            Done::Fail
        }
        Err(_) => {
            r.fail(process, "read", json!([key, null]), "no answer", "Deadline");
            Done::Fail
        }
    }
}

async fn write(shared: &Shared, c: &client::RawClient, process: u64, key: &str, v: u64) -> Done {
    let r = &shared.recorder;
    let value = json!([key, v]);
    r.invoke(process, "write", value.clone());
    match tokio::time::timeout(OP_DEADLINE, c.put(key.as_bytes().to_vec(), encode(v))).await {
        Ok(Ok(())) => {
            r.ok(process, "write", value);
            Done::Ok
        }
        Ok(Err(e)) => record_write_error(r, process, "write", value, &e),
        Err(_) => {
            r.info(process, "write", value, "no answer", "Deadline");
            Done::Unknown
        }
    }
}

async fn cas(
    shared: &Shared,
    c: &client::RawClient,
    process: u64,
    key: &str,
    expect: Option<u64>,
    new: u64,
) -> Done {
    let r = &shared.recorder;
    let value = json!([key, {"expect": expect, "new": new}]);
    r.invoke(process, "cas", value.clone());
    let call = c.compare_and_swap(key.as_bytes().to_vec(), expect.map(encode), encode(new));
    match tokio::time::timeout(OP_DEADLINE, call).await {
        Ok(Ok((previous, swapped))) => {
            let previous = previous.map_or(Value::Null, |p| decode(&p));
            r.ok(
                process,
                "cas",
                json!([key, {"expect": expect, "new": new, "swapped": swapped, "previous": previous}]),
            );
            Done::Ok
        }
        Ok(Err(e)) => record_write_error(r, process, "cas", value, &e),
        Err(_) => {
            r.info(process, "cas", value, "no answer", "Deadline");
            Done::Unknown
        }
    }
}

/// The `stale-read` control: on a key of its own, write a value, then another, then record a
/// read that returned the first. Values no other client writes make the anomaly certain.
/// Retried (on fresh keys) until both writes are acknowledged.
async fn inject_stale_read(
    shared: &Shared,
    c: &client::RawClient,
    process: &mut u64,
    concurrency: u64,
) {
    let attempt = shared.next_element.fetch_add(1, Ordering::Relaxed);
    let key = format!("{REGISTER_PREFIX}stale-{attempt}");
    let (old, new) = (1_000_000 + 2 * attempt, 1_000_001 + 2 * attempt);
    for v in [old, new] {
        match write(shared, c, *process, &key, v).await {
            Done::Ok => {}
            Done::Fail => return,
            Done::Unknown => {
                *process += concurrency;
                return;
            }
        }
    }
    println!("injecting anomaly stale-read: key {key} recorded as read {old} after {new}");
    shared.injected.store(true, Ordering::Relaxed);
    read(shared, c, *process, &key, Some(old)).await;
}

/// A set insert.
async fn add(shared: &Shared, c: &client::RawClient, process: u64, e: u64) -> Done {
    let r = &shared.recorder;
    r.invoke(process, "add", json!(e));
    let key = format!("{SET_PREFIX}{e:012}");
    match tokio::time::timeout(OP_DEADLINE, c.put(key.into_bytes(), encode(e))).await {
        Ok(Ok(())) => {
            shared
                .first_acknowledged
                .lock()
                .expect("first acknowledged")
                .get_or_insert(e);
            r.ok(process, "add", json!(e));
            Done::Ok
        }
        Ok(Err(err)) => record_write_error(r, process, "add", json!(e), &err),
        Err(_) => {
            r.info(process, "add", json!(e), "no answer", "Deadline");
            Done::Unknown
        }
    }
}

/// After the heal: reads everything back, retrying until `deadline`. The reads are recorded
/// as operations of process `process`.
pub async fn final_reads(shared: &Shared, process: u64, deadline: Instant) -> Result<()> {
    let r = &shared.recorder;
    if shared.workload == Workload::Bank {
        let c = bank::txn_client(&shared.endpoints(), deadline).await?;
        while bank::read(r, &c, process, 0).await != Done::Ok {
            if Instant::now() > deadline {
                bail!("the final read failed until the deadline");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        return Ok(());
    }
    if shared.workload == Workload::ListAppend {
        let c = bank::txn_client(&shared.endpoints(), deadline).await?;
        while list_append::final_read(r, &c, process).await? != Done::Ok {
            if Instant::now() > deadline {
                bail!("the final read failed until the deadline");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        return Ok(());
    }
    let c = raw_client(shared, deadline).await?;
    match shared.workload {
        Workload::Register => {
            let mut keys: Vec<String> =
                (0..shared.register_keys_used()).map(register_key).collect();
            let stale_keys = shared.next_element.load(Ordering::Relaxed);
            if shared.inject == Some(InjectAnomaly::StaleRead) {
                keys.extend((0..stale_keys).map(|a| format!("{REGISTER_PREFIX}stale-{a}")));
            }
            for key in keys {
                while read(shared, &c, process, &key, None).await != Done::Ok {
                    if Instant::now() > deadline {
                        bail!("final read of {key} failed until the deadline");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Workload::Set => loop {
            let attempted = shared.next_element.load(Ordering::Relaxed);
            let limit = u32::try_from(attempted + 1000).unwrap_or(u32::MAX);
            r.invoke(process, "read", Value::Null);
            match c
                .scan(
                    SET_PREFIX.as_bytes().to_vec(),
                    SET_END.as_bytes().to_vec(),
                    limit,
                )
                .await
            {
                Ok(pairs) => {
                    let mut elements: Vec<Value> = pairs.iter().map(|(_, v)| decode(v)).collect();
                    if shared.inject == Some(InjectAnomaly::LostInsert) {
                        let first = *shared.first_acknowledged.lock().expect("first");
                        if let Some(first) = first {
                            println!("injecting anomaly lost-insert: leaving {first} out of the final read");
                            elements.retain(|v| v.as_u64() != Some(first));
                        }
                    }
                    r.ok(process, "read", Value::Array(elements));
                    break;
                }
                Err(e) => {
                    r.fail(
                        process,
                        "read",
                        Value::Null,
                        &e.to_string(),
                        &error_kind(&e),
                    );
                    if Instant::now() > deadline {
                        bail!("the final read failed until the deadline: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        },
        Workload::Tso | Workload::Bank | Workload::ListAppend => {}
    }
    Ok(())
}
