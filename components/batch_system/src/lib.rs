//! A generic batch system: many finite-state machines (FSMs), each with a mailbox, driven by a
//! small pool of poller threads.
//!
//! Protocol:
//! - Every FSM has a mailbox: an unbounded crossbeam channel plus a "scheduled" flag. Sending to
//!   an idle mailbox flips the flag and pushes the FSM onto the shared run queue; sending to a
//!   scheduled mailbox only enqueues the message.
//! - A poller takes a batch of scheduled FSMs off the run queue, calls
//!   [`PollHandler::handle`] on each (which drains its messages), then [`PollHandler::end`] once
//!   for the whole batch — the hook where the raftstore group-commits its log writes — and
//!   releases them. Releasing re-schedules an FSM whose mailbox received messages meanwhile.
//!
//! Invariants:
//! - An FSM is owned by at most one poller at a time, so handlers need no locks on FSM state.
//! - A message sent to a live mailbox is handled eventually: either the sender schedules the FSM,
//!   or the poller holding it sees the message on release.
//!
//! Deliberately absent: priorities, fairness between busy FSMs beyond batch size, and dynamic
//! resizing of the poller pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::{self, Receiver, Sender, TryRecvError};
use parking_lot::{Mutex, RwLock};

/// A state machine driven by the batch system.
pub trait Fsm: Send + 'static {
    type Message: Send + 'static;

    /// Takes the next pending message, if any.
    fn try_recv(&mut self) -> Option<Self::Message>;
    /// Whether messages are waiting (checked when the poller releases the FSM).
    fn has_pending(&self) -> bool;
    /// A stopped FSM is dropped by the poller instead of being released.
    fn is_stopped(&self) -> bool;
}

/// Per-poller logic.
pub trait PollHandler<F: Fsm>: Send + 'static {
    /// Called before a batch is handled.
    fn begin(&mut self, batch_size: usize);
    /// Handles the messages of one FSM.
    fn handle(&mut self, fsm: &mut F);
    /// Called once after every FSM of the batch was handled, before any is released.
    fn end(&mut self, batch: &mut [Box<F>]);
}

struct State<F: Fsm> {
    scheduled: AtomicBool,
    fsm: Mutex<Option<Box<F>>>,
}

/// The sending side of one FSM's mailbox.
pub struct Mailbox<F: Fsm> {
    sender: Sender<F::Message>,
    state: Arc<State<F>>,
}

impl<F: Fsm> Clone for Mailbox<F> {
    fn clone(&self) -> Self {
        Mailbox {
            sender: self.sender.clone(),
            state: self.state.clone(),
        }
    }
}

/// Failed to deliver: the FSM is gone.
#[derive(Debug)]
pub struct Disconnected<M>(pub M);

/// Maps FSM ids to mailboxes and schedules FSMs onto pollers.
pub struct Router<F: Fsm> {
    mailboxes: Arc<RwLock<HashMap<u64, Mailbox<F>>>>,
    run_queue: Sender<Task<F>>,
}

enum Task<F: Fsm> {
    Run(Box<F>, Arc<State<F>>),
    Stop,
}

impl<F: Fsm> Clone for Router<F> {
    fn clone(&self) -> Self {
        Router {
            mailboxes: self.mailboxes.clone(),
            run_queue: self.run_queue.clone(),
        }
    }
}

impl<F: Fsm> Router<F> {
    /// Registers `fsm` under `id`, whose messages arrive on the receiver that `fsm` polls from
    /// `sender`'s channel. Replaces any previous FSM with that id.
    pub fn register(&self, id: u64, sender: Sender<F::Message>, fsm: Box<F>) {
        let state = Arc::new(State {
            scheduled: AtomicBool::new(false),
            fsm: Mutex::new(Some(fsm)),
        });
        let mailbox = Mailbox { sender, state };
        self.mailboxes.write().insert(id, mailbox.clone());
        if mailbox
            .state
            .fsm
            .lock()
            .as_ref()
            .is_some_and(|f| f.has_pending())
        {
            self.schedule(&mailbox.state);
        }
    }

    /// Forgets the mailbox of `id`; messages sent afterwards fail with [`Disconnected`].
    pub fn unregister(&self, id: u64) {
        self.mailboxes.write().remove(&id);
    }

    /// Sends `msg` to FSM `id`.
    pub fn send(&self, id: u64, msg: F::Message) -> Result<(), Disconnected<F::Message>> {
        let mailbox = match self.mailboxes.read().get(&id) {
            Some(m) => m.clone(),
            None => return Err(Disconnected(msg)),
        };
        self.send_to(&mailbox, msg)
    }

    fn send_to(
        &self,
        mailbox: &Mailbox<F>,
        msg: F::Message,
    ) -> Result<(), Disconnected<F::Message>> {
        mailbox.sender.send(msg).map_err(|e| Disconnected(e.0))?;
        self.schedule(&mailbox.state);
        Ok(())
    }

    /// Sends a message built by `make` to every registered FSM.
    pub fn broadcast(&self, mut make: impl FnMut() -> F::Message) {
        let all: Vec<Mailbox<F>> = self.mailboxes.read().values().cloned().collect();
        for m in all {
            let _ = self.send_to(&m, make());
        }
    }

    /// Ids of every registered FSM, sorted.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.mailboxes.read().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn contains(&self, id: u64) -> bool {
        self.mailboxes.read().contains_key(&id)
    }

    fn schedule(&self, state: &Arc<State<F>>) {
        if state.scheduled.swap(true, Ordering::AcqRel) {
            return; // Already queued or held by a poller, which re-checks on release.
        }
        let fsm = state.fsm.lock().take();
        match fsm {
            Some(fsm) => {
                let _ = self.run_queue.send(Task::Run(fsm, state.clone()));
            }
            None => {
                // The FSM is being destroyed; nothing to drive.
                state.scheduled.store(false, Ordering::Release);
            }
        }
    }
}

/// Builds one [`PollHandler`] per poller thread.
pub trait HandlerBuilder<F: Fsm>: Send + 'static {
    type Handler: PollHandler<F>;
    fn build(&mut self) -> Self::Handler;
}

/// The poller pool and its router.
pub struct BatchSystem<F: Fsm> {
    router: Router<F>,
    run_queue: Receiver<Task<F>>,
    pollers: Vec<JoinHandle<()>>,
    max_batch: usize,
    name: String,
}

/// Creates a batch system; pollers start with [`BatchSystem::spawn`].
pub fn create_system<F: Fsm>(name: &str, max_batch: usize) -> (Router<F>, BatchSystem<F>) {
    let (tx, rx) = channel::unbounded();
    let router = Router {
        mailboxes: Arc::default(),
        run_queue: tx,
    };
    let system = BatchSystem {
        router: router.clone(),
        run_queue: rx,
        pollers: Vec::new(),
        max_batch: max_batch.max(1),
        name: name.to_owned(),
    };
    (router, system)
}

impl<F: Fsm> BatchSystem<F> {
    /// Starts `count` poller threads, each with a handler from `builder`.
    pub fn spawn<B: HandlerBuilder<F>>(&mut self, count: usize, mut builder: B) {
        for i in 0..count {
            let handler = builder.build();
            let poller = Poller {
                router: self.router.clone(),
                run_queue: self.run_queue.clone(),
                handler,
                max_batch: self.max_batch,
            };
            let handle = std::thread::Builder::new()
                .name(format!("{}-{i}", self.name))
                .spawn(move || poller.run())
                .expect("spawn poller thread");
            self.pollers.push(handle);
        }
    }

    /// Stops every poller: unregisters all FSMs (dropping their mailboxes) and waits for the
    /// threads to exit.
    pub fn shutdown(&mut self) {
        let ids = self.router.ids();
        let states: Vec<Arc<State<F>>> = {
            let mut boxes = self.router.mailboxes.write();
            ids.iter()
                .filter_map(|id| boxes.remove(id))
                .map(|m| m.state)
                .collect()
        };
        for s in &states {
            s.fsm.lock().take();
        }
        for _ in 0..self.pollers.len() {
            let _ = self.router.run_queue.send(Task::Stop);
        }
        for h in self.pollers.drain(..) {
            let _ = h.join();
        }
        // FSMs still queued would otherwise live as long as any router clone.
        while self.run_queue.try_recv().is_ok() {}
    }
}

impl<F: Fsm> Drop for BatchSystem<F> {
    fn drop(&mut self) {
        if !self.pollers.is_empty() {
            self.shutdown();
        }
    }
}

struct Poller<F: Fsm, H> {
    router: Router<F>,
    run_queue: Receiver<Task<F>>,
    handler: H,
    max_batch: usize,
}

impl<F: Fsm, H: PollHandler<F>> Poller<F, H> {
    fn run(mut self) {
        let mut batch: Vec<Box<F>> = Vec::with_capacity(self.max_batch);
        let mut states: Vec<Arc<State<F>>> = Vec::with_capacity(self.max_batch);
        loop {
            match self.run_queue.recv() {
                Ok(Task::Run(fsm, state)) => {
                    batch.push(fsm);
                    states.push(state);
                }
                Ok(Task::Stop) | Err(_) => return,
            }
            let mut stop = false;
            while batch.len() < self.max_batch {
                match self.run_queue.try_recv() {
                    Ok(Task::Run(fsm, state)) => {
                        batch.push(fsm);
                        states.push(state);
                    }
                    Ok(Task::Stop) => {
                        stop = true;
                        break;
                    }
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                }
            }
            self.handler.begin(batch.len());
            for fsm in batch.iter_mut() {
                self.handler.handle(fsm);
            }
            self.handler.end(&mut batch);
            for (fsm, state) in batch.drain(..).zip(states.drain(..)) {
                self.release(fsm, state);
            }
            if stop {
                return;
            }
        }
    }

    fn release(&self, fsm: Box<F>, state: Arc<State<F>>) {
        if fsm.is_stopped() {
            // Leave `scheduled` set so that nobody schedules the dead FSM again.
            return;
        }
        let pending = fsm.has_pending();
        *state.fsm.lock() = Some(fsm);
        state.scheduled.store(false, Ordering::Release);
        // A sender that saw `scheduled == true` relied on us to notice its message.
        if pending || state.fsm.lock().as_ref().is_some_and(|f| f.has_pending()) {
            self.router.schedule(&state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use test_util::wait_until;

    struct Counter {
        rx: Receiver<u64>,
        sum: Arc<AtomicU64>,
        stopped: bool,
    }

    impl Fsm for Counter {
        type Message = u64;
        fn try_recv(&mut self) -> Option<u64> {
            self.rx.try_recv().ok()
        }
        fn has_pending(&self) -> bool {
            !self.rx.is_empty()
        }
        fn is_stopped(&self) -> bool {
            self.stopped
        }
    }

    struct Handler {
        ends: Arc<AtomicU64>,
    }

    impl PollHandler<Counter> for Handler {
        fn begin(&mut self, _: usize) {}
        fn handle(&mut self, fsm: &mut Counter) {
            while let Some(v) = fsm.try_recv() {
                if v == u64::MAX {
                    fsm.stopped = true;
                    return;
                }
                fsm.sum.fetch_add(v, Ordering::Relaxed);
            }
        }
        fn end(&mut self, _: &mut [Box<Counter>]) {
            self.ends.fetch_add(1, Ordering::Relaxed);
        }
    }

    struct Builder(Arc<AtomicU64>);
    impl HandlerBuilder<Counter> for Builder {
        type Handler = Handler;
        fn build(&mut self) -> Handler {
            Handler {
                ends: self.0.clone(),
            }
        }
    }

    const DEADLINE: Duration = Duration::from_secs(10);

    #[test]
    fn every_message_is_handled_under_concurrent_senders() {
        let (router, mut system) = create_system::<Counter>("test", 8);
        let ends = Arc::new(AtomicU64::new(0));
        system.spawn(2, Builder(ends.clone()));
        let sums: Vec<Arc<AtomicU64>> = (0..16).map(|_| Arc::new(AtomicU64::new(0))).collect();
        for (id, sum) in sums.iter().enumerate() {
            let (tx, rx) = channel::unbounded();
            router.register(
                id as u64,
                tx,
                Box::new(Counter {
                    rx,
                    sum: sum.clone(),
                    stopped: false,
                }),
            );
        }
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let router = router.clone();
                std::thread::spawn(move || {
                    for i in 0..2000u64 {
                        router.send(i % 16, 1).unwrap();
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        wait_until("all 8000 messages to be handled", DEADLINE, || {
            sums.iter().map(|s| s.load(Ordering::Relaxed)).sum::<u64>() == 8000
        });
        assert!(ends.load(Ordering::Relaxed) > 0);
        system.shutdown();
    }

    #[test]
    fn stopped_fsm_is_dropped_and_unknown_id_fails() {
        let (router, mut system) = create_system::<Counter>("test", 4);
        system.spawn(1, Builder(Arc::new(AtomicU64::new(0))));
        let sum = Arc::new(AtomicU64::new(0));
        let (tx, rx) = channel::unbounded();
        router.register(
            1,
            tx,
            Box::new(Counter {
                rx,
                sum: sum.clone(),
                stopped: false,
            }),
        );
        router.send(1, 5).unwrap();
        router.send(1, u64::MAX).unwrap();
        wait_until("the FSM to be dropped", DEADLINE, || {
            Arc::strong_count(&sum) == 1
        });
        assert!(router.send(2, 1).is_err());
        system.shutdown();
    }
}
