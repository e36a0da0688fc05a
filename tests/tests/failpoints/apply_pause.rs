//! Holding apply workers at `apply_before_write` (a write committed but not applied), released
//! when the guard drops, also when a test fails (a held apply would keep the cluster from
//! shutting down).

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

pub struct ApplyPaused {
    /// Set for a pause of one store's workers, which wait on it instead of the fail point's
    /// own `pause` action.
    released: Option<Arc<(Mutex<bool>, Condvar)>>,
}

impl ApplyPaused {
    /// Holds every apply worker of every store.
    pub fn everywhere() -> ApplyPaused {
        fail::cfg("apply_before_write", "pause").expect("fail point");
        ApplyPaused { released: None }
    }

    /// Holds the apply workers of store `store_id` only (threads `apply-<store>-<i>`).
    pub fn on_store(store_id: u64) -> ApplyPaused {
        let released = Arc::new((Mutex::new(false), Condvar::new()));
        let r = released.clone();
        let prefix = format!("apply-{store_id}-");
        fail::cfg_callback("apply_before_write", move || {
            let on_store = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with(&prefix));
            if on_store {
                let mut done = r.0.lock();
                while !*done {
                    r.1.wait(&mut done);
                }
            }
        })
        .expect("fail point");
        ApplyPaused {
            released: Some(released),
        }
    }
}

impl Drop for ApplyPaused {
    fn drop(&mut self) {
        fail::remove("apply_before_write");
        if let Some(r) = &self.released {
            *r.0.lock() = true;
            r.1.notify_all();
        }
    }
}
