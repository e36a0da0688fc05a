//! The in-process Raft network of the cluster harness.
//!
//! Every message a store flushes passes each installed [`Filter`], which may deliver, drop,
//! delay or duplicate it; delayed messages (and the second copies of duplicated ones) are
//! delivered by a timer thread, so random delays also reorder. [`SimNetwork::set_reorder`]
//! additionally shuffles each flushed batch.
//!
//! Verdicts of several filters combine: a drop wins; otherwise the message waits for the
//! longest delay, and a duplicate's second copy follows the first after the longest
//! duplicate delay.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use proto::raft_serverpb::RaftMessage;
use raftstore::snap::SnapManager;
use raftstore::StoreRouter;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// What a filter decides for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Deliver,
    Drop,
    Delay(Duration),
    /// Deliver the message, and a second copy this long after the first.
    Duplicate(Duration),
}

pub trait Filter: Send + Sync {
    fn check(&self, from_store: u64, to_store: u64, msg: &RaftMessage) -> Verdict;
}

/// Drops messages between stores of different groups (stores in no group are unaffected).
pub struct Partition {
    groups: Vec<HashSet<u64>>,
}

impl Partition {
    pub fn new(groups: &[&[u64]]) -> Partition {
        Partition {
            groups: groups.iter().map(|g| g.iter().copied().collect()).collect(),
        }
    }
}

impl Filter for Partition {
    fn check(&self, from: u64, to: u64, _: &RaftMessage) -> Verdict {
        let group = |s| self.groups.iter().position(|g| g.contains(&s));
        match (group(from), group(to)) {
            (Some(a), Some(b)) if a != b => Verdict::Drop,
            _ => Verdict::Deliver,
        }
    }
}

/// Drops messages from any store of `from` to any store of `to`, but not the other way: a
/// one-way partition (e.g. a leader that can send but not hear, or hear but not send).
pub struct OneWay {
    from: HashSet<u64>,
    to: HashSet<u64>,
}

impl OneWay {
    pub fn new(from: &[u64], to: &[u64]) -> OneWay {
        OneWay {
            from: from.iter().copied().collect(),
            to: to.iter().copied().collect(),
        }
    }
}

impl Filter for OneWay {
    fn check(&self, from: u64, to: u64, _: &RaftMessage) -> Verdict {
        if self.from.contains(&from) && self.to.contains(&to) {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}

/// Duplicates each message with the given probability, the copy following after a random
/// duration up to `max_lag` (seeded): stale copies arrive after newer messages.
pub struct RandomDuplicate {
    rate: f64,
    max_lag: Duration,
    rng: Mutex<StdRng>,
}

impl RandomDuplicate {
    pub fn new(rate: f64, max_lag: Duration, seed: u64) -> RandomDuplicate {
        RandomDuplicate {
            rate,
            max_lag,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }
}

impl Filter for RandomDuplicate {
    fn check(&self, _: u64, _: u64, _: &RaftMessage) -> Verdict {
        let mut rng = self.rng.lock();
        if !rng.random_bool(self.rate) {
            return Verdict::Deliver;
        }
        let lag = rng.random_range(0..=self.max_lag.as_micros() as u64);
        Verdict::Duplicate(Duration::from_micros(lag))
    }
}

/// A filter written as a closure of `(from_store, to_store, message)`.
pub struct FnFilter<F>(pub F);

impl<F> Filter for FnFilter<F>
where
    F: Fn(u64, u64, &RaftMessage) -> Verdict + Send + Sync,
{
    fn check(&self, from: u64, to: u64, msg: &RaftMessage) -> Verdict {
        (self.0)(from, to, msg)
    }
}

/// The raft-rs type of a message (`MsgHup` if it does not decode).
pub fn msg_type(msg: &RaftMessage) -> raft::eraftpb::MessageType {
    use protobuf::Message as _;
    raft::eraftpb::Message::parse_from_bytes(&msg.message)
        .map(|m| m.get_msg_type())
        .unwrap_or(raft::eraftpb::MessageType::MsgHup)
}

/// Drops every message to or from one store.
pub struct Isolate(pub u64);

impl Filter for Isolate {
    fn check(&self, from: u64, to: u64, _: &RaftMessage) -> Verdict {
        if from == self.0 || to == self.0 {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}

/// Drops each message with the given probability (seeded).
pub struct RandomDrop {
    rate: f64,
    rng: Mutex<StdRng>,
}

impl RandomDrop {
    pub fn new(rate: f64, seed: u64) -> RandomDrop {
        RandomDrop {
            rate,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }
}

impl Filter for RandomDrop {
    fn check(&self, _: u64, _: u64, _: &RaftMessage) -> Verdict {
        if self.rng.lock().random_bool(self.rate) {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}

/// Delays each message by a random duration in `[min, max]` (seeded), which also reorders.
pub struct RandomDelay {
    min: Duration,
    max: Duration,
    rng: Mutex<StdRng>,
}

impl RandomDelay {
    pub fn new(min: Duration, max: Duration, seed: u64) -> RandomDelay {
        RandomDelay {
            min,
            max,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }
}

impl Filter for RandomDelay {
    fn check(&self, _: u64, _: u64, _: &RaftMessage) -> Verdict {
        let span = self.max.saturating_sub(self.min).as_micros() as u64;
        let extra = if span == 0 {
            0
        } else {
            self.rng.lock().random_range(0..=span)
        };
        Verdict::Delay(self.min + Duration::from_micros(extra))
    }
}

struct Delayed {
    at: Instant,
    seq: u64,
    to_store: u64,
    msg: RaftMessage,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct Inner {
    routers: RwLock<HashMap<u64, StoreRouter>>,
    /// Every store's snapshot files (kept while a store is down: its files stay on disk).
    snaps: RwLock<HashMap<u64, SnapManager>>,
    filters: RwLock<Vec<Arc<dyn Filter>>>,
    reorder: AtomicBool,
    rng: Mutex<StdRng>,
    delayed: Mutex<(BinaryHeap<Reverse<Delayed>>, u64)>,
    wakeup: Condvar,
    closed: AtomicBool,
}

impl Inner {
    fn deliver_now(&self, to_store: u64, msg: RaftMessage) {
        let router = self.routers.read().get(&to_store).cloned();
        if let Some(r) = router {
            let _ = r.send_raft_message(msg);
        }
    }
}

/// The simulated network shared by the stores of a [`crate::Cluster`].
#[derive(Clone)]
pub struct SimNetwork {
    inner: Arc<Inner>,
}

impl SimNetwork {
    pub fn new(seed: u64) -> SimNetwork {
        let inner = Arc::new(Inner {
            routers: RwLock::default(),
            snaps: RwLock::default(),
            filters: RwLock::default(),
            reorder: AtomicBool::new(false),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            delayed: Mutex::new((BinaryHeap::new(), 0)),
            wakeup: Condvar::new(),
            closed: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("sim-net-delay".into())
            .spawn(move || delay_loop(weak))
            .expect("spawn delay thread");
        SimNetwork { inner }
    }

    pub fn register(&self, store_id: u64, router: StoreRouter, snaps: SnapManager) {
        self.inner.routers.write().insert(store_id, router);
        self.inner.snaps.write().insert(store_id, snaps);
    }

    /// Copies the files of the snapshot `msg` carries from store `from`'s snapshot directory
    /// to the destination store's, as the gRPC transport streams them; false if they could
    /// not be (the message is then not sent, as a failed stream's is not).
    fn copy_snapshot(&self, from: u64, msg: &RaftMessage) -> bool {
        let to = msg.to_peer.as_ref().map_or(0, |p| p.store_id);
        let (Some((key, data)), Some(src), Some(dst)) = (
            raftstore::snap::files_of(msg),
            self.inner.snaps.read().get(&from).cloned(),
            self.inner.snaps.read().get(&to).cloned(),
        ) else {
            return false;
        };
        match raftstore::snap::copy(&src, &dst, key, &data) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(from, to, ?key, %e, "snapshot files not copied");
                false
            }
        }
    }

    pub fn unregister(&self, store_id: u64) {
        self.inner.routers.write().remove(&store_id);
    }

    pub fn add_filter(&self, f: impl Filter + 'static) {
        self.inner.filters.write().push(Arc::new(f));
    }

    pub fn clear_filters(&self) {
        self.inner.filters.write().clear();
    }

    pub fn set_reorder(&self, on: bool) {
        self.inner.reorder.store(on, Ordering::SeqCst);
    }

    /// The transport of one store.
    pub fn transport(&self, store_id: u64) -> SimTransport {
        SimTransport {
            from_store: store_id,
            net: self.clone(),
            buf: Vec::new(),
        }
    }

    fn deliver(&self, from_store: u64, mut msgs: Vec<RaftMessage>) {
        if self.inner.reorder.load(Ordering::SeqCst) {
            msgs.shuffle(&mut *self.inner.rng.lock());
        }
        let filters: Vec<Arc<dyn Filter>> = self.inner.filters.read().clone();
        for msg in msgs {
            let Some(to_store) = msg.to_peer.as_ref().map(|p| p.store_id) else {
                continue;
            };
            let (mut drop, mut delay, mut duplicate) = (false, None::<Duration>, None::<Duration>);
            for f in &filters {
                match f.check(from_store, to_store, &msg) {
                    Verdict::Deliver => {}
                    Verdict::Drop => {
                        drop = true;
                        break;
                    }
                    Verdict::Delay(d) => delay = Some(delay.map_or(d, |e| e.max(d))),
                    Verdict::Duplicate(d) => duplicate = Some(duplicate.map_or(d, |e| e.max(d))),
                }
            }
            if drop {
                continue;
            }
            if let Some(lag) = duplicate {
                self.deliver_later(to_store, msg.clone(), delay.unwrap_or_default() + lag);
            }
            match delay {
                None => self.inner.deliver_now(to_store, msg),
                Some(d) => self.deliver_later(to_store, msg, d),
            }
        }
    }

    fn deliver_later(&self, to_store: u64, msg: RaftMessage, after: Duration) {
        let mut q = self.inner.delayed.lock();
        q.1 += 1;
        let seq = q.1;
        q.0.push(Reverse(Delayed {
            at: Instant::now() + after,
            seq,
            to_store,
            msg,
        }));
        self.inner.wakeup.notify_one();
    }

    /// Stops the delay thread.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.wakeup.notify_all();
    }
}

fn delay_loop(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        let due = {
            let mut q = inner.delayed.lock();
            let now = Instant::now();
            let mut due = Vec::new();
            while q.0.peek().is_some_and(|d| d.0.at <= now) {
                due.push(q.0.pop().expect("peeked").0);
            }
            if due.is_empty() {
                let wait =
                    q.0.peek()
                        .map_or(Duration::from_millis(20), |d| d.0.at - now);
                inner
                    .wakeup
                    .wait_for(&mut q, wait.min(Duration::from_millis(20)));
            }
            due
        };
        for d in due {
            inner.deliver_now(d.to_store, d.msg);
        }
    }
}

/// The [`raftstore::Transport`] of one store in the harness.
#[derive(Clone)]
pub struct SimTransport {
    from_store: u64,
    net: SimNetwork,
    buf: Vec<RaftMessage>,
}

impl raftstore::Transport for SimTransport {
    fn send(&mut self, msg: RaftMessage) {
        self.buf.push(msg);
    }

    fn flush(&mut self) {
        if !self.buf.is_empty() {
            let msgs = std::mem::take(&mut self.buf);
            self.net.deliver(self.from_store, msgs);
        }
    }

    fn send_snapshot(&mut self, msg: RaftMessage) {
        // The files move first (even if a filter then drops the message: a dropped stream
        // may have delivered its files too), then the message as any other.
        if self.net.copy_snapshot(self.from_store, &msg) {
            self.buf.push(msg);
        }
    }
}
