//! Holding one store's synced Raft log writes at `raft_before_save` (every poll round that
//! has something to log stops there), released when the guard drops, also when a test fails.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

#[derive(Default)]
struct Gate {
    open: bool,
    /// Held writes to let through before holding again.
    permits: usize,
    /// Writes held now.
    held: usize,
}

/// Holds the synced log writes of one store's pollers (threads `raftstore-<store>-<i>`);
/// opens when dropped, also when a test fails.
pub struct SaveGate {
    gate: Arc<(Mutex<Gate>, Condvar)>,
}

impl SaveGate {
    pub fn on_store(store_id: u64) -> SaveGate {
        let gate: Arc<(Mutex<Gate>, Condvar)> = Arc::default();
        let g = gate.clone();
        let prefix = format!("raftstore-{store_id}-");
        fail::cfg_callback("raft_before_save", move || {
            let on_store = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with(&prefix));
            if !on_store {
                return;
            }
            let mut state = g.0.lock();
            while !state.open && state.permits == 0 {
                state.held += 1;
                g.1.wait(&mut state);
                state.held -= 1;
            }
            if !state.open {
                state.permits -= 1;
            }
        })
        .expect("fail point");
        SaveGate { gate }
    }

    pub fn held(&self) -> usize {
        self.gate.0.lock().held
    }

    pub fn let_one_through(&self) {
        self.gate.0.lock().permits += 1;
        self.gate.1.notify_all();
    }
}

impl Drop for SaveGate {
    fn drop(&mut self) {
        fail::remove("raft_before_save");
        self.gate.0.lock().open = true;
        self.gate.1.notify_all();
    }
}
