//! Replica scheduling: keeping every region at `max_replicas` healthy voters (the replica
//! checker) and spreading replicas evenly over the stores (balance-region), through operators
//! that the region's leader carries out one step per heartbeat (PD's operator model).
//!
//! An [`Operator`] moves a region through steps: add a learner on the target store, promote
//! it, remove the replica it replaces (after moving leadership off it, since a leader cannot
//! remove itself). On each heartbeat from the region's leader PD checks the reported region
//! against the current step: a step seen done advances the operator; the answer is the command
//! of the first step not yet done. An operator not finished within `operator_timeout_ms` is
//! dropped (a store may have refused a step); the checkers then look at the region afresh.
//!
//! Checkers, in order, for a region without an operator:
//! 1. **Replica checker.** A peer is *bad* if its store is gone (Tombstone), being drained
//!    (Offline), or down (no store heartbeat for `max_store_down_ms`). A learner left over (by
//!    an operator that timed out) is promoted if the region lacks voters, else removed. A bad
//!    peer is replaced by one on the best store; lacking voters, one is added; extra voters are
//!    removed from the fullest store.
//! 2. **Balance-region.** Stores are weighed by the sizes of the regions they hold (each
//!    region's `approximate_size` from its leader's heartbeats, at least [`MIN_REGION_SIZE`],
//!    so that empty and not yet measured regions count as PD's "empty region" size and a
//!    cluster of small regions balances by count). The region's peer on the heaviest store
//!    that holds it moves to the lightest store that does not, if the gap is at least twice
//!    the region's weight (so that the move cannot make the gap point the other way and move
//!    it back) and at least `balance_threshold` empty regions.
//!
//! Invariants:
//! - A target store is `Up`, alive, and holds no replica of the region.
//! - Replicas are added before any is removed, so a region never drops below its voters
//!   because of a move; a down replica is removed only after its replacement is a voter.
//! - At most one operator per region, at most `max_operators` cluster-wide, and at most
//!   `max_store_operators` adding a replica to any one store (a store receiving snapshots for
//!   many new replicas at once would fall behind on all of them; removals cost a store
//!   nothing, so draining one is not throttled by it); store weights
//!   include the effect of pending operators, so a burst of heartbeats does not pile moves onto
//!   one store.
//! - Decisions are deterministic: ties go to the smallest store id.
//!
//! Operators are soft state of the PD leader: a new leader starts with none and the checkers
//! recreate what is still needed from the regions' state.
//!
//! Merges ([`crate::merge`]) are operators too and live here with the others: a region taking
//! part in a merge (as source or target) gets no replica operator, a merge is only made of
//! regions without one, and merges count against `max_operators`. The merge checker's replica
//! moves (bringing a source onto its target's stores) are replica operators
//! ([`MERGE_MOVE_KIND`]), limited and carried out like the others.

use std::collections::BTreeMap;

use proto::metapb::{Peer, PeerRole, Region, StoreState};

use crate::merge::{
    MergeAnswer, MergeCandidate, MergeConfig, MergeView, Merges, OtherOperators, Refusal,
};

/// The kind of the replica operators the merge checker makes (a transfer-peer for a merge).
pub const MERGE_MOVE_KIND: &str = "merge-transfer-peer";

/// Settings of replica scheduling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    pub max_replicas: usize,
    /// A store without a heartbeat for this long is down; its replicas are replaced.
    pub max_store_down_ms: u64,
    /// Region-count gap that makes balance-region move a replica (raised to at least 2).
    pub balance_threshold: u64,
    /// Operators in flight cluster-wide.
    pub max_operators: usize,
    /// Operators in flight that add a replica to any one store.
    pub max_store_operators: usize,
    pub operator_timeout_ms: u64,
    /// Whether balance-region runs (the replica checker always does).
    pub balance_regions: bool,
    /// The merge checker's settings ([`crate::merge`]).
    pub merge: MergeConfig,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            max_replicas: 3,
            max_store_down_ms: 30 * 60 * 1000,
            balance_threshold: 2,
            max_operators: 4,
            max_store_operators: 2,
            operator_timeout_ms: 10 * 60 * 1000,
            balance_regions: true,
            merge: MergeConfig::default(),
        }
    }
}

/// What an empty or not yet measured region weighs (TiKV's PD: 1 MiB as well).
pub const MIN_REGION_SIZE: u64 = 1 << 20;

/// The weight of a region of `approximate_size` bytes in balance decisions.
pub fn region_weight(approximate_size: u64) -> u64 {
    approximate_size.max(MIN_REGION_SIZE)
}

/// Per store, what the regions with a replica on it weigh above [`MIN_REGION_SIZE`], summed;
/// `regions` yields each region's approximate size and the stores of its peers. A store's
/// weight is this plus its region count times [`MIN_REGION_SIZE`].
pub fn store_excess<'a>(regions: impl Iterator<Item = (u64, &'a [u64])>) -> BTreeMap<u64, u64> {
    let mut excess = BTreeMap::new();
    for (size, stores) in regions {
        let above = region_weight(size) - MIN_REGION_SIZE;
        if above == 0 {
            continue;
        }
        for store in stores {
            *excess.entry(*store).or_default() += above;
        }
    }
    excess
}

/// What PD knows of a store for scheduling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreInfo {
    pub state: StoreState,
    /// Milliseconds since its last store heartbeat (`None`: never heard from).
    pub since_heartbeat_ms: Option<u64>,
    /// The weights ([`region_weight`]) of the regions with a replica on it, summed.
    pub region_size: u64,
}

/// One step of an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    AddLearner(Peer),
    Promote(Peer),
    Remove(Peer),
}

/// What the region's leader is asked to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    AddLearner(Peer),
    /// Add `Peer` as a voter (promote the learner).
    AddVoter(Peer),
    Remove(Peer),
    TransferLeader(Peer),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    pub kind: &'static str,
    pub steps: Vec<Step>,
    pub current: usize,
    pub started_ms: u64,
    /// The region's weight when the operator was made: what its steps add to and take from
    /// their stores.
    pub weight: u64,
}

impl Step {
    fn done(&self, region: &Region) -> bool {
        let find = |id: u64| region.peers.iter().find(|p| p.id == id);
        match self {
            Step::AddLearner(p) => find(p.id).is_some(),
            Step::Promote(p) => find(p.id).is_some_and(|p| p.role() == PeerRole::Voter),
            Step::Remove(p) => find(p.id).is_none(),
        }
    }

    /// The store a replica is added to by this step.
    fn added_to(&self) -> Option<u64> {
        match self {
            Step::AddLearner(p) => Some(p.store_id),
            _ => None,
        }
    }

    /// Effect of a pending step on its store: +1 replica on a store gaining one, -1 losing one.
    fn delta(&self) -> Option<(u64, i64)> {
        match self {
            Step::AddLearner(p) => Some((p.store_id, 1)),
            Step::Remove(p) => Some((p.store_id, -1)),
            Step::Promote(_) => None,
        }
    }
}

/// The region as its leader reported it.
pub struct RegionView<'a> {
    pub region: &'a Region,
    pub leader: &'a Peer,
    /// Peers the leader reports down.
    pub down_peers: &'a [u64],
    /// Peers the leader reports pending (behind its log: catching up from a snapshot).
    pub pending_peers: &'a [u64],
    /// The region's size as its leader last measured it (0: not yet).
    pub approximate_size: u64,
}

/// Soft state of replica scheduling; see the module docs.
#[derive(Debug, Default)]
pub struct ReplicaScheduler {
    config: ReplicaConfig,
    operators: BTreeMap<u64, Operator>,
    /// The merges in flight and what the merge checker remembers.
    merges: Merges,
    /// Counts steps seen done and operators ended (see [`ReplicaScheduler::progress`]).
    progress: u64,
}

impl ReplicaScheduler {
    pub fn new(config: ReplicaConfig) -> ReplicaScheduler {
        ReplicaScheduler {
            config,
            operators: BTreeMap::new(),
            merges: Merges::default(),
            progress: 0,
        }
    }

    /// Changes whenever an operator's step is seen done or an operator ends: then what the
    /// region map holds and what is still pending moved between each other, and store weights
    /// summed before must be summed again.
    pub fn progress(&self) -> u64 {
        self.progress
    }

    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    pub fn operators(&self) -> &BTreeMap<u64, Operator> {
        &self.operators
    }

    /// The merges in flight.
    pub fn merges(&self) -> &Merges {
        &self.merges
    }

    /// Whether one more operator (of any kind) may start.
    fn has_room(&self) -> bool {
        self.operators.len() + self.merges.len() < self.config.max_operators
    }

    /// Whether `region_id` takes part in an operator of any kind.
    fn is_busy(&self, region_id: u64) -> bool {
        self.operators.contains_key(&region_id) || self.merges.involving(region_id).is_some()
    }

    /// Adds an operator an operator's hand asked for (PD's `/operators` API): moves the
    /// region's replica `from` to the new peer `to` (a learner on another store). Refused
    /// while the region has an operator, or if the operator limit is reached.
    pub fn add_transfer_peer(
        &mut self,
        region: &Region,
        approximate_size: u64,
        from: Peer,
        to: Peer,
        now_ms: u64,
    ) -> Result<(), String> {
        if self.is_busy(region.id) {
            return Err(format!("region {} already has an operator", region.id));
        }
        if !self.has_room() {
            return Err("too many operators in flight".into());
        }
        if !region.peers.iter().any(|p| p.id == from.id) {
            return Err(format!(
                "peer {} is not a replica of region {}",
                from.id, region.id
            ));
        }
        if region.peers.iter().any(|p| p.store_id == to.store_id) {
            return Err(format!(
                "store {} already holds a replica of region {}",
                to.store_id, region.id
            ));
        }
        let mut to = to;
        to.set_role(PeerRole::Learner);
        self.operators.insert(
            region.id,
            Operator {
                kind: "transfer-peer",
                steps: vec![Step::AddLearner(to), Step::Promote(to), Step::Remove(from)],
                current: 0,
                started_ms: now_ms,
                weight: region_weight(approximate_size),
            },
        );
        Ok(())
    }

    pub fn forget_regions(&mut self, ids: &[u64]) {
        for id in ids {
            if self.operators.remove(id).is_some() {
                self.progress += 1;
            }
        }
        self.merges.forget_regions(ids);
    }

    /// The merge checker on a heartbeat of `view.source`'s leader, after the replica checkers
    /// found nothing to do (see [`Merges::on_heartbeat`]); `transferring` tells a region with
    /// a leader transfer in flight. A replica move it asks for becomes the source's replica
    /// operator ([`MERGE_MOVE_KIND`]), new peers' ids from `alloc_id`.
    pub fn on_merge_heartbeat(
        &mut self,
        view: MergeView<'_>,
        lookup: &dyn Fn(u64) -> Option<Region>,
        transferring: &dyn Fn(u64) -> bool,
        stores: &BTreeMap<u64, StoreInfo>,
        now_ms: u64,
        alloc_id: &mut dyn FnMut() -> Option<u64>,
    ) -> Option<MergeAnswer> {
        let room = self.has_room();
        let counts = self.store_operator_counts();
        let config = self.config;
        let operators = &self.operators;
        let busy = |id: u64| operators.contains_key(&id) || transferring(id);
        let store_ok = |id: u64| can_receive(&config, stores, &counts, id);
        let others = OtherOperators {
            busy: &busy,
            room,
            store_ok: &store_ok,
        };
        let answer =
            self.merges
                .on_heartbeat(&self.config, view, lookup, others, now_ms, alloc_id)?;
        if let MergeAnswer::Move(m) = answer {
            let steps = vec![
                Step::AddLearner(m.to),
                Step::Promote(m.to),
                Step::Remove(m.from),
            ];
            tracing::info!(
                region_id = view.source.region.id,
                kind = MERGE_MOVE_KIND,
                ?steps,
                "operator created"
            );
            self.operators.insert(
                view.source.region.id,
                Operator {
                    kind: MERGE_MOVE_KIND,
                    steps,
                    current: 0,
                    started_ms: now_ms,
                    weight: region_weight(view.source.approximate_size),
                },
            );
        }
        Some(answer)
    }

    /// Adds a merge asked for by hand (see [`Merges::add`]).
    pub fn add_merge(
        &mut self,
        term: u64,
        source: MergeCandidate<'_>,
        target: MergeCandidate<'_>,
        transferring: &dyn Fn(u64) -> bool,
        now_ms: u64,
    ) -> Result<(), crate::merge::Refusal> {
        let room = self.has_room();
        let operators = &self.operators;
        let busy = |id: u64| operators.contains_key(&id) || transferring(id);
        // A merge by hand moves no replica.
        let others = OtherOperators {
            busy: &busy,
            room,
            store_ok: &|_| Ok(()),
        };
        self.merges
            .add(&self.config, term, source, target, others, now_ms)
    }

    /// On a heartbeat from the leader of `view.region`: advances its operator or makes one;
    /// returns what the leader should do now. `alloc_id` gives ids for new peers.
    pub fn on_heartbeat(
        &mut self,
        view: RegionView<'_>,
        stores: &BTreeMap<u64, StoreInfo>,
        now_ms: u64,
        alloc_id: &mut dyn FnMut() -> Option<u64>,
    ) -> Option<Command> {
        let region = view.region;
        if self.merges.involving(region.id).is_some() {
            // The merge's heartbeat answer comes from the merge checker.
            return None;
        }
        if let Some(op) = self.operators.get_mut(&region.id) {
            if now_ms.saturating_sub(op.started_ms) > self.config.operator_timeout_ms {
                tracing::info!(region_id = region.id, kind = op.kind, "operator timed out");
                self.operators.remove(&region.id);
                self.progress += 1;
            } else {
                while op.current < op.steps.len() && op.steps[op.current].done(region) {
                    op.current += 1;
                    self.progress += 1;
                }
                if op.current == op.steps.len() {
                    tracing::info!(region_id = region.id, kind = op.kind, "operator finished");
                    self.operators.remove(&region.id);
                    return None;
                }
                return next_command(op, &view, stores);
            }
        }
        if !self.has_room() {
            return None;
        }
        let sizes = self.effective_sizes(stores);
        let (kind, steps) = check_replicas(&self.config, &view, stores, &sizes, now_ms, alloc_id)
            .or_else(|| {
            self.config
                .balance_regions
                .then(|| balance_region(&self.config, &view, stores, &sizes, alloc_id))
                .flatten()
        })?;
        // The store limit: a store this operator adds a replica to must have room.
        let busy = self.store_operator_counts();
        if steps.iter().filter_map(Step::added_to).any(|store| {
            busy.get(&store).copied().unwrap_or(0) >= self.config.max_store_operators.max(1)
        }) {
            return None;
        }
        tracing::info!(region_id = region.id, kind, ?steps, "operator created");
        let op = Operator {
            kind,
            steps,
            current: 0,
            started_ms: now_ms,
            weight: region_weight(view.approximate_size),
        };
        let cmd = next_command(&op, &view, stores);
        self.operators.insert(region.id, op);
        cmd
    }

    /// Per store, the operators in flight that add a replica to it.
    fn store_operator_counts(&self) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for op in self.operators.values() {
            for store in op.steps.iter().filter_map(Step::added_to) {
                *counts.entry(store).or_default() += 1;
            }
        }
        counts
    }

    /// Region weights per store with pending operators' not yet done steps applied.
    fn effective_sizes(&self, stores: &BTreeMap<u64, StoreInfo>) -> BTreeMap<u64, i64> {
        let mut sizes: BTreeMap<u64, i64> = stores
            .iter()
            .map(|(id, s)| (*id, s.region_size as i64))
            .collect();
        for op in self.operators.values() {
            for step in &op.steps[op.current..] {
                if let Some((store, d)) = step.delta() {
                    *sizes.entry(store).or_default() += d * op.weight as i64;
                }
            }
        }
        sizes
    }
}

/// What the leader is asked for the operator's current step; nothing while that step is the
/// promotion of a learner still catching up (it would be a voter that cannot vote yet).
fn next_command(
    op: &Operator,
    view: &RegionView<'_>,
    stores: &BTreeMap<u64, StoreInfo>,
) -> Option<Command> {
    let step = op.steps[op.current];
    if let Step::Promote(p) = step {
        if view.pending_peers.contains(&p.id) {
            return None;
        }
    }
    Some(command(step, view.region, view.leader, stores))
}

/// The command for `step` given the region's state: a removal of the leader first moves
/// leadership to another voter (preferring one on a healthy store).
fn command(
    step: Step,
    region: &Region,
    leader: &Peer,
    stores: &BTreeMap<u64, StoreInfo>,
) -> Command {
    match step {
        Step::AddLearner(p) => Command::AddLearner(p),
        Step::Promote(p) => Command::AddVoter(p),
        Step::Remove(p) if p.id == leader.id => {
            let to = region
                .peers
                .iter()
                .filter(|q| q.id != p.id && q.role() == PeerRole::Voter)
                .min_by_key(|q| {
                    let healthy = stores
                        .get(&q.store_id)
                        .is_some_and(|s| s.state == StoreState::Up);
                    (!healthy, q.store_id)
                })
                .copied();
            match to {
                Some(to) => Command::TransferLeader(to),
                None => Command::Remove(p),
            }
        }
        Step::Remove(p) => Command::Remove(p),
    }
}

fn alive(config: &ReplicaConfig, s: &StoreInfo) -> bool {
    s.since_heartbeat_ms
        .is_some_and(|ms| ms <= config.max_store_down_ms)
}

/// A store fit to receive a replica: Up and alive.
fn fit(config: &ReplicaConfig, s: &StoreInfo) -> bool {
    s.state == StoreState::Up && alive(config, s)
}

/// Whether store `id` may receive a new replica now: fit ([`fit`]) and adding replicas in
/// fewer than `max_store_operators` operators (`counts`).
fn can_receive(
    config: &ReplicaConfig,
    stores: &BTreeMap<u64, StoreInfo>,
    counts: &BTreeMap<u64, usize>,
    id: u64,
) -> Result<(), Refusal> {
    if !stores.get(&id).is_some_and(|s| fit(config, s)) {
        return Err(Refusal::StoreUnfit { store_id: id });
    }
    if counts.get(&id).copied().unwrap_or(0) >= config.max_store_operators.max(1) {
        return Err(Refusal::StoreBusy { store_id: id });
    }
    Ok(())
}

/// A store fit to receive a replica of `region`: Up, alive, holding none of it. The lightest
/// (by region weights), ties to the smallest id.
fn best_target(
    config: &ReplicaConfig,
    region: &Region,
    stores: &BTreeMap<u64, StoreInfo>,
    sizes: &BTreeMap<u64, i64>,
) -> Option<u64> {
    stores
        .iter()
        .filter(|(id, s)| fit(config, s) && !region.peers.iter().any(|p| p.store_id == **id))
        .min_by_key(|(id, _)| (sizes.get(id).copied().unwrap_or(0), **id))
        .map(|(id, _)| *id)
}

/// A new learner on `store_id`.
pub(crate) fn new_peer(store_id: u64, alloc_id: &mut dyn FnMut() -> Option<u64>) -> Option<Peer> {
    let mut p = Peer {
        id: alloc_id()?,
        store_id,
        ..Default::default()
    };
    p.set_role(PeerRole::Learner);
    Some(p)
}

type Plan = (&'static str, Vec<Step>);

fn check_replicas(
    config: &ReplicaConfig,
    view: &RegionView<'_>,
    stores: &BTreeMap<u64, StoreInfo>,
    sizes: &BTreeMap<u64, i64>,
    now_ms: u64,
    alloc_id: &mut dyn FnMut() -> Option<u64>,
) -> Option<Plan> {
    let _ = now_ms;
    let region = view.region;
    let bad = |p: &Peer| match stores.get(&p.store_id) {
        None => true,
        Some(s) => s.state != StoreState::Up || !alive(config, s),
    };
    let voters: Vec<&Peer> = region
        .peers
        .iter()
        .filter(|p| p.role() == PeerRole::Voter)
        .collect();
    // A learner without an operator: finish or undo what was left.
    if let Some(l) = region.peers.iter().find(|p| p.role() == PeerRole::Learner) {
        let healthy_voters = voters.iter().filter(|p| !bad(p)).count();
        return Some(if !bad(l) && healthy_voters < config.max_replicas {
            ("promote-learner", vec![Step::Promote(*l)])
        } else {
            ("remove-learner", vec![Step::Remove(*l)])
        });
    }
    if let Some(b) = voters.iter().find(|p| bad(p)) {
        if let Some(target) = best_target(config, region, stores, sizes) {
            let p = new_peer(target, alloc_id)?;
            return Some((
                "replace-bad-replica",
                vec![Step::AddLearner(p), Step::Promote(p), Step::Remove(**b)],
            ));
        }
        if voters.len() > config.max_replicas {
            return Some(("remove-bad-replica", vec![Step::Remove(**b)]));
        }
        return None;
    }
    if voters.len() < config.max_replicas {
        let target = best_target(config, region, stores, sizes)?;
        let p = new_peer(target, alloc_id)?;
        return Some(("add-replica", vec![Step::AddLearner(p), Step::Promote(p)]));
    }
    if voters.len() > config.max_replicas {
        let extra = voters
            .iter()
            .max_by_key(|p| (sizes.get(&p.store_id).copied().unwrap_or(0), p.store_id))?;
        return Some(("remove-extra-replica", vec![Step::Remove(**extra)]));
    }
    None
}

fn balance_region(
    config: &ReplicaConfig,
    view: &RegionView<'_>,
    stores: &BTreeMap<u64, StoreInfo>,
    sizes: &BTreeMap<u64, i64>,
    alloc_id: &mut dyn FnMut() -> Option<u64>,
) -> Option<Plan> {
    let region = view.region;
    if !view.down_peers.is_empty() || !view.pending_peers.is_empty() {
        return None;
    }
    let size = |store: u64| sizes.get(&store).copied().unwrap_or(0);
    let source = region
        .peers
        .iter()
        .filter(|p| p.role() == PeerRole::Voter)
        .max_by_key(|p| (size(p.store_id), std::cmp::Reverse(p.store_id)))?;
    let target = best_target(config, region, stores, sizes)?;
    let weight = region_weight(view.approximate_size) as i64;
    let threshold = (config.balance_threshold as i64 * MIN_REGION_SIZE as i64).max(2 * weight);
    if size(source.store_id) - size(target) < threshold {
        return None;
    }
    let p = new_peer(target, alloc_id)?;
    Some((
        "balance-region",
        vec![Step::AddLearner(p), Step::Promote(p), Step::Remove(*source)],
    ))
}

#[cfg(test)]
mod tests;
