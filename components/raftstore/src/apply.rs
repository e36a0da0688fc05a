//! Apply workers: execute committed commands on the engine.
//!
//! Each region is pinned to one worker (by region id), so its entries apply in log order. A
//! worker drains every queued task into one write batch, writes it **unsynced** (the Raft log is
//! the durable record; after a crash the unapplied suffix is replayed), then completes the
//! callbacks of the proposals it applied and reports progress back to the peers.
//!
//! Invariants:
//! - The apply state (applied index, truncated state) is written in the same batch as the data of
//!   the entries it covers, so a replay after a crash applies every entry exactly once.
//! - An entry at or below the applied index is skipped (it is a replay).
//! - Nothing reaches the engine before the batch is complete: data, region metadata and apply
//!   states of every entry in it are written in one batch, or not at all. Applying never reads
//!   the engine (commands carry only writes; conditions were decided above Raft).
//! - Applying is deterministic: every replica computes the same result from the same log. A
//!   command that fails a check (stale epoch, key outside the region) fails on every replica and
//!   changes nothing; an engine write error is not a command failure and stops the store.
//!
//! Merge commands are applied here too (`crate::merge::apply`): a target's CommitMerge reaches
//! its worker only once the source replica beside it caught up and stopped (`peer::merge`).
//!
//! Conf change entries are applied here like any command (the new peer list and `conf_ver`
//! are persisted with the apply state; see [`crate::conf_change`]); raft-rs learns of them from
//! the peer. Snapshots of a region are made here, where the applied state is known exactly
//! (see [`crate::snap`]); applying a received snapshot is the peer's, since it resets the log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::{self, Receiver, Sender};
use engine::{keys, Engine, WriteBatch};
use prost::Message as _;
use proto::metapb;
use proto::raft_serverpb::{MergeState, PeerState};
use raft::eraftpb::{ConfChangeV2, Entry, EntryType};
use raft_log::ApplyState;
use tracing::{error, info, warn};

use crate::cmd::{engine_cf, AdminCmd, AdminKind, OpKind, RaftCmd, WriteOp, WriteResponse};
use crate::consistency::{self, ConsistencyEvent, Verdict};
use crate::util::{epoch_conf_ver, epoch_version, key_in_range};
use crate::{Error, Result};

/// Completes a proposal.
pub type WriteCallback = Box<dyn FnOnce(Result<WriteResponse>) + Send>;

/// Committed entries of one region, with the callbacks of the proposals among them.
pub struct ApplyTask {
    pub region_id: u64,
    pub entries: Vec<Entry>,
    /// `(index, term, callback)`, ascending by index.
    pub callbacks: Vec<(u64, u64, WriteCallback)>,
}

impl ApplyTask {
    /// The bytes of command data this task holds (what it adds to the [`ApplyBacklog`]).
    fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.data.len()).sum()
    }
}

/// The bytes of committed entries handed to the apply workers and not yet written: how far
/// apply lags behind commit, store-wide (leaders and followers alike). The server refuses new
/// writes while it passes a limit (`limits.max_apply_backlog_bytes`), so a store whose apply
/// cannot keep up answers ServerIsBusy instead of queueing without bound. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ApplyBacklog {
    bytes: Arc<AtomicUsize>,
}

impl ApplyBacklog {
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        let now = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        crate::metrics::APPLY_BACKLOG_BYTES.set(now as i64);
    }

    fn sub(&self, n: usize) {
        let now = self.bytes.fetch_sub(n, Ordering::Relaxed) - n;
        crate::metrics::APPLY_BACKLOG_BYTES.set(now as i64);
    }
}

/// Progress reported back to a peer after a batch was written.
#[derive(Clone, Debug)]
pub struct ApplyRes {
    pub region_id: u64,
    pub state: ApplyState,
    /// Splits applied in this batch, in order: each lists the regions the parent's range now
    /// consists of (the parent, shrunk, first).
    pub splits: Vec<Vec<metapb::Region>>,
    /// Consistency checks applied in this batch, in order.
    pub consistency: Vec<ConsistencyEvent>,
    /// Conf changes applied in this batch, in order, each with the region after it.
    pub conf_changes: Vec<(ConfChangeV2, metapb::Region)>,
    /// Merge steps applied in this batch, in order (see [`crate::merge`]).
    pub merges: Vec<MergeEvent>,
}

/// A merge step a region applied.
#[derive(Clone, Debug)]
pub enum MergeEvent {
    /// PrepareMerge: the source, with its new epoch, and its merge state.
    Prepared {
        region: metapb::Region,
        state: MergeState,
    },
    /// CommitMerge: the target's merged region, and the source it absorbed.
    Committed {
        region: metapb::Region,
        source: metapb::Region,
    },
    /// RollbackMerge: the source, writable again.
    RolledBack { region: metapb::Region },
}

pub enum ApplyMsg {
    Register {
        region: metapb::Region,
        state: ApplyState,
        /// Set while the region is the source of a prepared merge.
        merge_state: Option<MergeState>,
    },
    Apply(ApplyTask),
    /// Make a snapshot of the region as applied so far (see [`crate::snap`]).
    Snapshot {
        region_id: u64,
        gen: crate::snap::SharedGen,
    },
    /// The replica is gone: forget the region and stage its removal from the engine — its
    /// data (only if `initialized`: an uninitialized replica owns no range; and not if
    /// `keep_data`: a merged source's data is its target's now), its Raft state — leaving a
    /// tombstone with `region` so stale messages cannot bring it back.
    Destroy {
        region: metapb::Region,
        initialized: bool,
        keep_data: bool,
    },
}

/// Where workers report [`ApplyRes`].
pub type ApplyNotifier = Arc<dyn Fn(ApplyRes) + Send + Sync>;

/// Senders to the apply workers.
#[derive(Clone)]
pub struct ApplyRouter {
    senders: Vec<Sender<ApplyMsg>>,
    backlog: ApplyBacklog,
}

impl ApplyRouter {
    pub fn send(&self, region_id: u64, msg: ApplyMsg) {
        let idx = (region_id % self.senders.len() as u64) as usize;
        let bytes = match &msg {
            ApplyMsg::Apply(task) => task.bytes(),
            _ => 0,
        };
        self.backlog.add(bytes);
        if self.senders[idx].send(msg).is_err() {
            self.backlog.sub(bytes);
            warn!(region_id, "apply worker is gone");
        }
    }

    /// The store-wide apply backlog.
    pub fn backlog(&self) -> &ApplyBacklog {
        &self.backlog
    }
}

/// The apply worker threads.
pub struct ApplyPool {
    router: Option<ApplyRouter>,
    workers: Vec<JoinHandle<()>>,
}

impl ApplyPool {
    /// Starts `size` workers for store `store_id` (threads `apply-<store>-<i>`).
    pub fn start(store_id: u64, size: usize, engine: Engine, notifier: ApplyNotifier) -> ApplyPool {
        let mut senders = Vec::new();
        let mut workers = Vec::new();
        let backlog = ApplyBacklog::default();
        for i in 0..size.max(1) {
            let (tx, rx) = channel::unbounded();
            senders.push(tx);
            let worker = Worker {
                engine: engine.clone(),
                notifier: notifier.clone(),
                delegates: HashMap::new(),
                backlog: backlog.clone(),
            };
            workers.push(
                std::thread::Builder::new()
                    .name(format!("apply-{store_id}-{i}"))
                    .spawn(move || worker.run(rx))
                    .expect("spawn apply worker"),
            );
        }
        ApplyPool {
            router: Some(ApplyRouter { senders, backlog }),
            workers,
        }
    }

    pub fn router(&self) -> ApplyRouter {
        self.router.clone().expect("apply pool is running")
    }

    /// Stops the workers once every clone of the router is dropped and their queues drained.
    pub fn shutdown(&mut self) {
        self.router.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

pub(crate) struct Delegate {
    pub(crate) region: metapb::Region,
    pub(crate) state: ApplyState,
    pub(crate) merge_state: Option<MergeState>,
    /// The last `ComputeHash` applied here: its index and this replica's hash.
    hash: Option<(u64, u32)>,
}

struct Worker {
    engine: Engine,
    notifier: ApplyNotifier,
    delegates: HashMap<u64, Delegate>,
    backlog: ApplyBacklog,
}

/// One batch in the making: data, callbacks to run and regions to report after the write.
pub(crate) struct Batch {
    pub(crate) wb: WriteBatch,
    done: Vec<(WriteCallback, Result<WriteResponse>)>,
    touched: Vec<u64>,
    splits: HashMap<u64, Vec<Vec<metapb::Region>>>,
    consistency: HashMap<u64, Vec<ConsistencyEvent>>,
    conf_changes: HashMap<u64, Vec<(ConfChangeV2, metapb::Region)>>,
    pub(crate) merges: HashMap<u64, Vec<MergeEvent>>,
    /// Backlog bytes of the tasks in this batch, given back once it is written.
    backlog: usize,
}

impl Delegate {
    pub(crate) fn new(
        region: metapb::Region,
        state: ApplyState,
        merge_state: Option<MergeState>,
    ) -> Delegate {
        Delegate {
            region,
            state,
            merge_state,
            hash: None,
        }
    }
}

impl Batch {
    pub(crate) fn new() -> Batch {
        Batch {
            wb: WriteBatch::new(),
            done: Vec::new(),
            touched: Vec::new(),
            splits: HashMap::new(),
            consistency: HashMap::new(),
            conf_changes: HashMap::new(),
            merges: HashMap::new(),
            backlog: 0,
        }
    }
}

const MAX_TASKS_PER_BATCH: usize = 512;

impl Worker {
    fn run(mut self, rx: Receiver<ApplyMsg>) {
        while let Ok(first) = rx.recv() {
            let mut batch = Batch::new();
            self.handle(first, &mut batch);
            for msg in rx.try_iter().take(MAX_TASKS_PER_BATCH) {
                self.handle(msg, &mut batch);
            }
            self.finish(batch);
        }
    }

    fn handle(&mut self, msg: ApplyMsg, batch: &mut Batch) {
        match msg {
            ApplyMsg::Register {
                region,
                state,
                merge_state,
            } => {
                self.delegates
                    .insert(region.id, Delegate::new(region, state, merge_state));
            }
            ApplyMsg::Destroy {
                region,
                initialized,
                keep_data,
            } => {
                self.delegates.remove(&region.id);
                if initialized && !keep_data {
                    crate::snap::delete_region_data(&mut batch.wb, &region);
                }
                raft_log::clear_group(region.id, &mut batch.wb);
                crate::bootstrap::write_region_state(&mut batch.wb, &region, PeerState::Tombstone);
                info!(region_id = region.id, "replica destroyed");
            }
            ApplyMsg::Snapshot { region_id, gen } => self.generate_snapshot(region_id, &gen, batch),
            ApplyMsg::Apply(task) => {
                batch.backlog += task.bytes();
                self.apply(task, batch)
            }
        }
    }

    fn finish(&mut self, mut batch: Batch) {
        // Tests pause apply here (a write committed but not applied) or panic here.
        fail::fail_point!("apply_before_write");
        let wb = std::mem::take(&mut batch.wb);
        if !wb.is_empty() {
            let _timer = crate::metrics::APPLY_WRITE_SECONDS.start_timer();
            if let Err(e) = self.engine.write(wb, false) {
                // The state machine cannot go on without its writes: stop rather than diverge.
                error!(%e, "apply write failed");
                panic!("apply write failed: {e}");
            }
        }
        // The development-only volatile engine (a negative control that skips fsyncs) keeps
        // region metadata: a crash loses Raft logs and data written since the last change of
        // a region's shape or membership, never the change itself, which PD already knows.
        let reshaped =
            !batch.splits.is_empty() || !batch.conf_changes.is_empty() || !batch.merges.is_empty();
        if reshaped && self.engine.is_volatile() {
            if let Err(e) = self.engine.flush() {
                error!(%e, "apply flush failed");
                panic!("apply flush failed: {e}");
            }
        }
        self.backlog.sub(batch.backlog);
        for (cb, res) in batch.done {
            cb(res);
        }
        batch.touched.sort_unstable();
        batch.touched.dedup();
        for region_id in batch.touched {
            if let Some(d) = self.delegates.get(&region_id) {
                (self.notifier)(ApplyRes {
                    region_id,
                    state: d.state,
                    splits: batch.splits.remove(&region_id).unwrap_or_default(),
                    consistency: batch.consistency.remove(&region_id).unwrap_or_default(),
                    conf_changes: batch.conf_changes.remove(&region_id).unwrap_or_default(),
                    merges: batch.merges.remove(&region_id).unwrap_or_default(),
                });
            }
        }
    }

    fn apply(&mut self, task: ApplyTask, batch: &mut Batch) {
        let region_id = task.region_id;
        let Some(mut delegate) = self.delegates.remove(&region_id) else {
            for (_, _, cb) in task.callbacks {
                batch.done.push((cb, Err(Error::RegionNotFound(region_id))));
            }
            return;
        };
        let mut callbacks = task.callbacks.into_iter().peekable();
        for entry in task.entries {
            if entry.index <= delegate.state.applied_index {
                continue;
            }
            let result = self.apply_entry(&mut delegate, &entry, batch);
            crate::metrics::APPLIED_ENTRIES.inc();
            delegate.state.applied_index = entry.index;
            delegate.state.applied_term = entry.term;
            while let Some((idx, _, _)) = callbacks.peek() {
                if *idx > entry.index {
                    break;
                }
                let (idx, term, cb) = callbacks.next().expect("peeked");
                if idx == entry.index && term == entry.term {
                    batch.done.push((cb, result.clone()));
                } else {
                    batch.done.push((cb, Err(Error::StaleCommand)));
                }
            }
        }
        for (_, _, cb) in callbacks {
            batch.done.push((cb, Err(Error::StaleCommand)));
        }
        delegate.state.write(region_id, &mut batch.wb);
        batch.touched.push(region_id);
        self.delegates.insert(region_id, delegate);
    }

    fn apply_entry(
        &self,
        d: &mut Delegate,
        entry: &Entry,
        batch: &mut Batch,
    ) -> Result<WriteResponse> {
        match entry.get_entry_type() {
            EntryType::EntryConfChangeV2 => return apply_conf_change(d, entry, batch),
            // Never proposed by this version (conf changes are V2).
            EntryType::EntryConfChange => return Ok(WriteResponse::default()),
            EntryType::EntryNormal if entry.data.is_empty() => {
                // The empty entry a new leader appends.
                return Ok(WriteResponse::default());
            }
            EntryType::EntryNormal => {}
        }
        let cmd = match RaftCmd::decode(&entry.data[..]) {
            Ok(cmd) => cmd,
            Err(e) => {
                // Every replica decodes the same bytes the same way: skip it everywhere.
                error!(region_id = d.region.id, index = entry.index, %e, "undecodable command");
                return Err(Error::InvalidRequest(format!("undecodable command: {e}")));
            }
        };
        if let Some(admin) = &cmd.admin {
            let Some(kind) = admin.admin_kind() else {
                return Err(Error::InvalidRequest(format!(
                    "unknown admin command {} (an entry of another version?)",
                    admin.kind
                )));
            };
            return match kind {
                // Not while merging: a source replica catches up from its own log (see
                // `crate::merge`), which must keep every entry up to the merge.
                AdminKind::CompactLog if d.merge_state.is_some() => Ok(WriteResponse::default()),
                AdminKind::CompactLog => {
                    let s = &mut d.state;
                    if admin.compact_index > s.truncated_index && admin.compact_index <= entry.index
                    {
                        s.truncated_index = admin.compact_index;
                        s.truncated_term = admin.compact_term;
                    }
                    Ok(WriteResponse::default())
                }
                AdminKind::ComputeHash => self.compute_hash(d, entry.index, batch),
                AdminKind::VerifyHash => Ok(verify_hash(d, admin, batch)),
                AdminKind::ChangePeer => Err(Error::InvalidRequest(
                    "a conf change outside a conf change entry".into(),
                )),
                AdminKind::BatchSplit | AdminKind::PrepareMerge | AdminKind::CommitMerge
                    if d.merge_state.is_some() =>
                {
                    Err(Error::ProposalInMergingMode(d.region.id))
                }
                AdminKind::BatchSplit => apply_split(d, &cmd, admin, batch),
                AdminKind::PrepareMerge => {
                    crate::merge::apply::prepare(d, &cmd, admin, entry.index, batch)
                }
                AdminKind::CommitMerge => crate::merge::apply::commit(d, admin, batch),
                AdminKind::RollbackMerge => crate::merge::apply::rollback(d, admin, batch),
            };
        }
        if d.merge_state.is_some() {
            // Proposed under the old epoch by a leader that had not applied PrepareMerge.
            return Err(Error::ProposalInMergingMode(d.region.id));
        }
        let version = cmd.epoch.as_ref().map_or(0, |e| e.version);
        if version != epoch_version(&d.region) {
            return Err(Error::EpochNotMatch {
                msg: format!(
                    "command epoch version {version}, region {}",
                    epoch_version(&d.region)
                ),
                current_regions: vec![d.region.clone()],
            });
        }
        for op in &cmd.ops {
            check_op(&d.region, op)?;
        }
        for op in &cmd.ops {
            let cf = engine_cf(&op.cf).expect("checked");
            match op.op_kind().expect("checked") {
                OpKind::Put => batch.wb.put(cf, &keys::data_key(&op.key), &op.value),
                OpKind::Delete => batch.wb.delete(cf, &keys::data_key(&op.key)),
                OpKind::DeleteRange => {
                    let end = if op.end_key.is_empty() {
                        &d.region.end_key[..]
                    } else {
                        &op.end_key[..]
                    };
                    batch
                        .wb
                        .delete_range(cf, &keys::data_key(&op.key), &keys::data_end_key(end));
                }
            }
        }
        Ok(WriteResponse::default())
    }
}

impl Worker {
    /// Writes out the batch so far, with the apply states covering it: afterwards the engine
    /// holds every region of this worker exactly as applied.
    fn write_out(&self, d: &Delegate, batch: &mut Batch) {
        d.state.write(d.region.id, &mut batch.wb);
        let wb = std::mem::take(&mut batch.wb);
        if let Err(e) = self.engine.write(wb, false) {
            error!(%e, "apply write failed");
            panic!("apply write failed: {e}");
        }
    }

    fn generate_snapshot(&self, region_id: u64, gen: &crate::snap::SharedGen, batch: &mut Batch) {
        let Some(d) = self.delegates.get(&region_id) else {
            *gen.lock() = crate::snap::GenState::Failed;
            return;
        };
        self.write_out(d, batch);
        let mgr = crate::snap::SnapManager::of(&self.engine);
        let made = crate::snap::generate(
            &mgr,
            &self.engine,
            &d.region,
            d.state,
            d.merge_state.as_ref(),
        );
        match made {
            Ok(s) => {
                info!(
                    region_id,
                    index = d.state.applied_index,
                    bytes = crate::snap::decode(&s).map_or(0, |d| d.total_size()),
                    "snapshot generated"
                );
                *gen.lock() = crate::snap::GenState::Ready(s);
            }
            Err(e) => {
                // Read failures are the engine's; raft-rs asks again later.
                error!(region_id, %e, "snapshot generation failed");
                *gen.lock() = crate::snap::GenState::Failed;
            }
        }
    }

    /// `ComputeHash` at `index`: writes out the batch so far together with the apply state
    /// covering it (entries before `index` of this region, and every earlier task of the batch,
    /// which wrote its own), so the engine holds exactly the state as of `index`; then hashes.
    fn compute_hash(
        &self,
        d: &mut Delegate,
        index: u64,
        batch: &mut Batch,
    ) -> Result<WriteResponse> {
        self.write_out(d, batch);
        let hash = consistency::region_hash(&self.engine, &d.region).unwrap_or_else(|e| {
            // A read failure is the engine's, not the command's: stop rather than guess.
            error!(%e, "consistency hash read failed");
            panic!("consistency hash read failed: {e}");
        });
        info!(region_id = d.region.id, index, hash, "region hash computed");
        d.hash = Some((index, hash));
        batch
            .consistency
            .entry(d.region.id)
            .or_default()
            .push(ConsistencyEvent::Computed { index, hash });
        Ok(WriteResponse {
            hash: Some((index, hash)),
            ..Default::default()
        })
    }
}

/// `VerifyHash`: compares the leader's hash with ours; a mismatch is reported, loudly.
fn verify_hash(d: &Delegate, admin: &AdminCmd, batch: &mut Batch) -> WriteResponse {
    let index = admin.hash_index;
    let verdict = consistency::verify(d.hash, index, admin.hash);
    match verdict {
        Verdict::Mismatch { own } => {
            crate::metrics::CONSISTENCY_MISMATCHES.inc();
            error!(
                region_id = d.region.id,
                index,
                leader_hash = admin.hash,
                own_hash = own,
                "REPLICAS DIVERGED: this replica's data differs from the leader's"
            );
        }
        Verdict::Match => info!(region_id = d.region.id, index, "region hash verified"),
        Verdict::Unknown => {}
    }
    batch
        .consistency
        .entry(d.region.id)
        .or_default()
        .push(ConsistencyEvent::Verified { index, verdict });
    WriteResponse::default()
}

/// Applies a conf change entry: checks the epoch it was decided under, computes the new peer
/// list (the same on every replica) and persists it with the bumped `conf_ver`.
fn apply_conf_change(d: &mut Delegate, entry: &Entry, batch: &mut Batch) -> Result<WriteResponse> {
    use protobuf::Message as _;
    let cc = ConfChangeV2::parse_from_bytes(&entry.data)
        .map_err(|e| Error::InvalidRequest(format!("undecodable conf change: {e}")))?;
    let cmd = RaftCmd::decode(&entry.context[..])
        .map_err(|e| Error::InvalidRequest(format!("undecodable conf change context: {e}")))?;
    let epoch = cmd.epoch.unwrap_or_default();
    if d.merge_state.is_some() {
        return Err(Error::ProposalInMergingMode(d.region.id));
    }
    if epoch.version != epoch_version(&d.region) || epoch.conf_ver != epoch_conf_ver(&d.region) {
        return Err(Error::EpochNotMatch {
            msg: "conf change proposed under another epoch".into(),
            current_regions: vec![d.region.clone()],
        });
    }
    let named = cmd.admin.map(|a| a.peers).unwrap_or_default();
    let region = crate::conf_change::apply_changes(&d.region, &cc, &named).inspect_err(|e| {
        warn!(region_id = d.region.id, index = entry.index, %e, "conf change refused");
    })?;
    info!(
        region_id = d.region.id,
        index = entry.index,
        peers = ?region.peers.iter().map(|p| (p.id, p.store_id, p.role)).collect::<Vec<_>>(),
        "conf change applied"
    );
    crate::bootstrap::write_region_state(&mut batch.wb, &region, PeerState::Normal);
    d.region = region.clone();
    batch
        .conf_changes
        .entry(d.region.id)
        .or_default()
        .push((cc, region.clone()));
    Ok(WriteResponse {
        regions: vec![region],
        ..Default::default()
    })
}

/// Applies a split: the parent keeps `[start, first split key)`, each new region takes the range
/// up to the next split key (the last one, up to the parent's end), all with the parent's epoch
/// version bumped by the number of new regions. The new regions' metadata and initial Raft
/// state go into the same batch as the parent's, so every replica creates them at the same log
/// position; the peers themselves are created by the raftstore once the batch is written.
fn apply_split(
    d: &mut Delegate,
    cmd: &RaftCmd,
    admin: &AdminCmd,
    batch: &mut Batch,
) -> Result<WriteResponse> {
    let epoch = cmd.epoch.unwrap_or_default();
    if epoch.version != epoch_version(&d.region) || epoch.conf_ver != epoch_conf_ver(&d.region) {
        return Err(Error::EpochNotMatch {
            msg: "split proposed under another epoch".into(),
            current_regions: vec![d.region.clone()],
        });
    }
    let regions = split_regions(&d.region, admin)?;
    for r in &regions {
        crate::bootstrap::write_region_state(&mut batch.wb, r, PeerState::Normal);
    }
    for r in &regions[1..] {
        raft_log::bootstrap_group(r.id, &mut batch.wb);
    }
    info!(
        region_id = d.region.id,
        new_regions = regions.len() - 1,
        "region split"
    );
    d.region = regions[0].clone();
    batch
        .splits
        .entry(d.region.id)
        .or_default()
        .push(regions.clone());
    Ok(WriteResponse {
        regions,
        ..Default::default()
    })
}

/// The regions `region` becomes when split as `admin` says; an error (the same on every
/// replica) if the split does not fit the region.
pub fn split_regions(region: &metapb::Region, admin: &AdminCmd) -> Result<Vec<metapb::Region>> {
    let keys = &admin.split_keys;
    if keys.is_empty() || keys.len() != admin.new_regions.len() {
        return Err(Error::InvalidRequest(
            "a split needs one new region per split key".into(),
        ));
    }
    let mut prev: &[u8] = &region.start_key;
    for key in keys {
        if key.is_empty() || key[..] <= *prev {
            return Err(Error::InvalidRequest(
                "split keys must ascend strictly and lie inside the region".into(),
            ));
        }
        if !key_in_range(key, &region.start_key, &region.end_key) {
            return Err(Error::KeyNotInRegion {
                key: key.to_vec(),
                region_id: region.id,
                start_key: region.start_key.to_vec(),
                end_key: region.end_key.to_vec(),
            });
        }
        prev = key;
    }
    if admin
        .new_regions
        .iter()
        .any(|ids| ids.peer_ids.len() != region.peers.len())
    {
        return Err(Error::InvalidRequest(
            "a split needs a peer id for every peer of the region".into(),
        ));
    }
    let epoch = metapb::RegionEpoch {
        conf_ver: epoch_conf_ver(region),
        version: epoch_version(region) + keys.len() as u64,
    };
    let mut parent = region.clone();
    parent.end_key = keys[0].clone();
    parent.region_epoch = Some(epoch);
    let mut out = vec![parent];
    for (i, ids) in admin.new_regions.iter().enumerate() {
        out.push(metapb::Region {
            id: ids.region_id,
            start_key: keys[i].clone(),
            end_key: keys
                .get(i + 1)
                .cloned()
                .unwrap_or_else(|| region.end_key.clone()),
            region_epoch: Some(epoch),
            peers: region
                .peers
                .iter()
                .zip(&ids.peer_ids)
                .map(|(p, id)| metapb::Peer {
                    id: *id,
                    store_id: p.store_id,
                    ..*p
                })
                .collect(),
        });
    }
    Ok(out)
}

/// Apply-time checks of one op against the region: deterministic, so every replica agrees.
fn check_op(region: &metapb::Region, op: &WriteOp) -> Result<()> {
    if engine_cf(&op.cf).is_none() {
        return Err(Error::InvalidRequest(format!(
            "unknown column family {:?}",
            op.cf
        )));
    }
    let Some(kind) = op.op_kind() else {
        return Err(Error::InvalidRequest(format!(
            "unknown write kind {} (an entry of another version?)",
            op.kind
        )));
    };
    let not_in_region = |key: &[u8]| Error::KeyNotInRegion {
        key: key.to_vec(),
        region_id: region.id,
        start_key: region.start_key.to_vec(),
        end_key: region.end_key.to_vec(),
    };
    if !key_in_range(&op.key, &region.start_key, &region.end_key) {
        return Err(not_in_region(&op.key));
    }
    if kind == OpKind::DeleteRange && !op.end_key.is_empty() {
        if op.end_key[..] < op.key[..] {
            return Err(Error::InvalidRequest(
                "delete range end before start".into(),
            ));
        }
        if !region.end_key.is_empty() && op.end_key[..] > region.end_key[..] {
            return Err(not_in_region(&op.end_key));
        }
    }
    Ok(())
}
