//! Latches: mutual exclusion between commands that touch the same keys on one store.
//!
//! A command that reads and then writes (compare-and-swap, every transactional command) holds
//! the latches of its keys **exclusively** from before its read until its writes are applied,
//! so no other command of this store can change those keys in between. A blind write (a raw
//! put or delete: it decides nothing) holds them **shared** from before it is proposed until it
//! is applied: blind writes of one key do not wait for each other (their order is the log's,
//! and pipelining them through Raft is what keeps a hot key fast), but a read-decide-write
//! waits for every one in flight, and blind writes arriving after it wait for it. Together
//! with two facts of the raftstore this makes the read-decide-write sequence atomic:
//! - a read grant is given only once the leader has applied every entry committed before the
//!   read arrived, including the empty entry of its own term, so entries of earlier leaders
//!   that touch the key are already applied;
//! - every entry a leader appends after that comes from this store, and those touching the key
//!   wait for its latch.
//!
//! Protocol:
//! - Keys hash into a fixed number of slots (false sharing only costs waiting, never safety).
//!   A command takes the slots of all its keys in ascending slot order, so two commands never
//!   wait on each other in a cycle. Waiters are served first come, first served (a shared
//!   request queued behind an exclusive one waits for it, so blind writes cannot starve a
//!   compare-and-swap).
//! - Commands over a key *range* (delete-range) take the store-wide range latch exclusively;
//!   every point command takes it shared before its slots. A range command therefore waits for
//!   every point command in flight and blocks new ones until its writes are applied. Range
//!   writes are rare; a per-range lock table can replace this when they are not.
//! - A [`LatchGuard`] releases everything it holds when dropped. Whoever proposes the writes
//!   moves the guard into the proposal's completion callback, so a client that stops waiting
//!   (timeout, disconnect) does not release the latch of a write that may still apply.
//!
//! Deliberately absent: deadlock detection (there are no cycles to detect), priorities.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// The default number of key slots.
pub const DEFAULT_SLOTS: usize = 4096;

/// The latch table of one store. Cheap to clone (shared).
#[derive(Clone)]
pub struct Latches {
    slots: Arc<[Arc<RwLock<()>>]>,
    range: Arc<RwLock<()>>,
    waiting: Arc<AtomicUsize>,
}

/// What a command holds; released on drop.
pub struct LatchGuard {
    // Field order is drop order: slots before the range latch they were taken under.
    _slots: Vec<Held>,
    _range: Held,
}

enum Held {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

impl Default for Latches {
    fn default() -> Self {
        Latches::new(DEFAULT_SLOTS)
    }
}

impl Latches {
    pub fn new(slots: usize) -> Latches {
        Latches {
            slots: (0..slots.max(1))
                .map(|_| Arc::new(RwLock::new(())))
                .collect(),
            range: Arc::new(RwLock::new(())),
            waiting: Arc::default(),
        }
    }

    /// How many commands are waiting for a latch right now (tests and metrics).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// The slot indices `keys` occupy: ascending, without duplicates.
    pub fn slots_of<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<usize> {
        let mut slots: Vec<usize> = keys
            .iter()
            .map(|k| {
                let mut h = DefaultHasher::new();
                k.as_ref().hash(&mut h);
                (h.finish() % self.slots.len() as u64) as usize
            })
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots
    }

    /// Waits for the latches of `keys`, exclusively (a point command that reads, decides and
    /// writes).
    pub async fn acquire<K: AsRef<[u8]>>(&self, keys: &[K]) -> LatchGuard {
        self.acquire_slots(keys, true).await
    }

    /// Waits for the latches of `keys`, shared with other blind writes (a point command that
    /// writes without reading).
    pub async fn acquire_shared<K: AsRef<[u8]>>(&self, keys: &[K]) -> LatchGuard {
        self.acquire_slots(keys, false).await
    }

    async fn acquire_slots<K: AsRef<[u8]>>(&self, keys: &[K], exclusive: bool) -> LatchGuard {
        let _waiting = Waiting::new(&self.waiting);
        let range = Held::Shared(self.range.clone().read_owned().await);
        let mut slots = Vec::new();
        for i in self.slots_of(keys) {
            let slot = self.slots[i].clone();
            slots.push(if exclusive {
                Held::Exclusive(slot.write_owned().await)
            } else {
                Held::Shared(slot.read_owned().await)
            });
        }
        LatchGuard {
            _slots: slots,
            _range: range,
        }
    }

    /// Waits until no point command holds latches, and keeps new ones out (a range command).
    pub async fn acquire_range(&self) -> LatchGuard {
        let _waiting = Waiting::new(&self.waiting);
        LatchGuard {
            _slots: Vec::new(),
            _range: Held::Exclusive(self.range.clone().write_owned().await),
        }
    }
}

/// Counts a waiter for as long as it lives (also when its future is dropped while waiting).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Whether `fut` is still pending after the runtime had time to run it.
    async fn blocked<F: std::future::Future>(fut: F) -> bool {
        tokio::time::timeout(Duration::from_millis(50), fut)
            .await
            .is_err()
    }

    #[test]
    fn slots_are_sorted_and_unique() {
        let latches = Latches::new(8);
        let slots = latches.slots_of(&[b"a".as_ref(), b"b", b"a", b"c", b"d", b"e"]);
        assert!(slots.windows(2).all(|w| w[0] < w[1]), "{slots:?}");
        assert!(slots.iter().all(|s| *s < 8));
    }

    #[tokio::test]
    async fn the_same_key_waits_for_the_holder() {
        let latches = Latches::default();
        let held = latches.acquire(&[b"k"]).await;
        assert_eq!(latches.waiting(), 0);
        assert!(blocked(latches.acquire(&[b"k"])).await);
        assert_eq!(latches.waiting(), 0, "a dropped waiter no longer counts");
        drop(held);
        let _again = latches.acquire(&[b"k"]).await;
    }

    #[tokio::test]
    async fn blind_writes_share_a_key_and_exclude_a_read_decide_write_both_ways() {
        let latches = Latches::default();
        let first = latches.acquire_shared(&[b"k"]).await;
        let second = latches.acquire_shared(&[b"k"]).await;
        // A compare-and-swap waits for every blind write in flight...
        let mut cas = Box::pin(latches.acquire(&[b"k"]));
        assert!(blocked(cas.as_mut()).await);
        drop(first);
        assert!(blocked(cas.as_mut()).await);
        // ...and, queued, keeps later blind writes out (no starvation).
        let mut later = Box::pin(latches.acquire_shared(&[b"k"]));
        assert!(blocked(later.as_mut()).await);
        drop(second);
        let held = cas.await;
        assert!(blocked(later.as_mut()).await, "waits for the CAS's write");
        drop(held);
        let _later = later.await;
    }

    #[tokio::test]
    async fn other_keys_do_not_wait() {
        let latches = Latches::new(DEFAULT_SLOTS);
        let (a, b) = (b"a".as_ref(), b"b".as_ref());
        assert_ne!(latches.slots_of(&[a]), latches.slots_of(&[b]));
        let _held = latches.acquire(&[a]).await;
        let _other = latches.acquire(&[b]).await;
    }

    #[tokio::test]
    async fn a_command_over_several_keys_waits_for_any_of_them() {
        let latches = Latches::default();
        let held = latches.acquire(&[b"y"]).await;
        assert!(blocked(latches.acquire(&[b"x", b"y", b"z"])).await);
        drop(held);
        let _all = latches.acquire(&[b"z", b"y", b"x"]).await;
    }

    #[tokio::test]
    async fn a_range_command_excludes_point_commands_both_ways() {
        let latches = Latches::default();
        let point = latches.acquire(&[b"k"]).await;
        assert!(blocked(latches.acquire_range()).await);
        drop(point);
        let range = latches.acquire_range().await;
        assert!(blocked(latches.acquire(&[b"other"])).await);
        drop(range);
        let _point = latches.acquire(&[b"other"]).await;
    }

    #[tokio::test]
    async fn opposite_key_orders_do_not_deadlock() {
        let latches = Latches::new(64);
        let mut tasks = Vec::new();
        for i in 0..50u32 {
            let latches = latches.clone();
            tasks.push(tokio::spawn(async move {
                let keys: Vec<Vec<u8>> = if i % 2 == 0 {
                    (0..20u8).map(|k| vec![k]).collect()
                } else {
                    (0..20u8).rev().map(|k| vec![k]).collect()
                };
                let _g = latches.acquire(&keys).await;
                tokio::task::yield_now().await;
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("no deadlock")
                .expect("task");
        }
    }
}
