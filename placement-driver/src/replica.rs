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

use std::collections::BTreeMap;

use proto::metapb::{Peer, PeerRole, Region, StoreState};

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
    /// Counts steps seen done and operators ended (see [`ReplicaScheduler::progress`]).
    progress: u64,
}

impl ReplicaScheduler {
    pub fn new(config: ReplicaConfig) -> ReplicaScheduler {
        ReplicaScheduler {
            config,
            operators: BTreeMap::new(),
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
        if self.operators.contains_key(&region.id) {
            return Err(format!("region {} already has an operator", region.id));
        }
        if self.operators.len() >= self.config.max_operators {
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
        if self.operators.len() >= self.config.max_operators {
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
        .filter(|(id, s)| {
            s.state == StoreState::Up
                && alive(config, s)
                && !region.peers.iter().any(|p| p.store_id == **id)
        })
        .min_by_key(|(id, _)| (sizes.get(id).copied().unwrap_or(0), **id))
        .map(|(id, _)| *id)
}

fn new_peer(store_id: u64, alloc_id: &mut dyn FnMut() -> Option<u64>) -> Option<Peer> {
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
mod tests {
    use super::*;

    fn peer(id: u64, store_id: u64, role: PeerRole) -> Peer {
        let mut p = Peer {
            id,
            store_id,
            ..Default::default()
        };
        p.set_role(role);
        p
    }

    fn region(peers: Vec<Peer>) -> Region {
        test_util::region(1).peers(peers).build()
    }

    fn voters(stores: &[u64]) -> Region {
        region(
            stores
                .iter()
                .map(|s| peer(10 + s, *s, PeerRole::Voter))
                .collect(),
        )
    }

    /// A store holding `region_count` empty regions.
    fn store(region_count: u64) -> StoreInfo {
        sized(region_count * MIN_REGION_SIZE)
    }

    fn sized(region_size: u64) -> StoreInfo {
        StoreInfo {
            state: StoreState::Up,
            since_heartbeat_ms: Some(1000),
            region_size,
        }
    }

    fn stores(counts: &[(u64, u64)]) -> BTreeMap<u64, StoreInfo> {
        counts.iter().map(|(id, c)| (*id, store(*c))).collect()
    }

    const MIB: u64 = 1 << 20;

    /// Stores weighing the given MiB.
    fn stores_mib(mib: &[(u64, u64)]) -> BTreeMap<u64, StoreInfo> {
        mib.iter().map(|(id, m)| (*id, sized(m * MIB))).collect()
    }

    fn ids() -> impl FnMut() -> Option<u64> {
        let mut next = 100;
        move || {
            next += 1;
            Some(next)
        }
    }

    fn run(
        s: &mut ReplicaScheduler,
        r: &Region,
        leader: u64,
        st: &BTreeMap<u64, StoreInfo>,
        now: u64,
    ) -> Option<Command> {
        run_sized(s, r, 0, leader, st, now)
    }

    /// [`run`] for a region of `size` bytes.
    fn run_sized(
        s: &mut ReplicaScheduler,
        r: &Region,
        size: u64,
        leader: u64,
        st: &BTreeMap<u64, StoreInfo>,
        now: u64,
    ) -> Option<Command> {
        let leader = *r.peers.iter().find(|p| p.store_id == leader).unwrap();
        s.on_heartbeat(
            RegionView {
                region: r,
                leader: &leader,
                down_peers: &[],
                pending_peers: &[],
                approximate_size: size,
            },
            st,
            now,
            &mut ids(),
        )
    }

    #[test]
    fn a_transfer_asked_by_hand_is_carried_out_and_checked() {
        let config = ReplicaConfig {
            balance_regions: false,
            ..Default::default()
        };
        let mut s = ReplicaScheduler::new(config);
        let st = stores(&[(1, 5), (2, 5), (3, 5), (4, 5)]);
        let r = voters(&[1, 2, 3]);
        let to = peer(99, 4, PeerRole::Voter);
        let from = r.peers[1];
        // Refused: a stranger as the source, a store that already holds one as the target.
        assert!(s
            .add_transfer_peer(&r, 0, peer(77, 4, PeerRole::Voter), to, 0)
            .is_err());
        assert!(s
            .add_transfer_peer(&r, 0, from, peer(99, 3, PeerRole::Voter), 0)
            .is_err());
        s.add_transfer_peer(&r, 0, from, to, 0).unwrap();
        assert!(
            s.add_transfer_peer(&r, 0, from, to, 0).is_err(),
            "one per region"
        );
        let learner = peer(99, 4, PeerRole::Learner);
        assert_eq!(
            run(&mut s, &r, 1, &st, 1),
            Some(Command::AddLearner(learner))
        );
        let mut r2 = r.clone();
        r2.peers.push(learner);
        assert_eq!(
            run(&mut s, &r2, 1, &st, 2),
            Some(Command::AddVoter(learner))
        );
        r2.peers[3].set_role(PeerRole::Voter);
        assert_eq!(run(&mut s, &r2, 1, &st, 3), Some(Command::Remove(from)));
    }

    #[test]
    fn a_balanced_cluster_is_left_alone() {
        let mut s = ReplicaScheduler::new(ReplicaConfig::default());
        let st = stores(&[(1, 10), (2, 10), (3, 10), (4, 9)]);
        assert_eq!(run(&mut s, &voters(&[1, 2, 3]), 1, &st, 0), None);
        assert!(s.operators().is_empty());
    }

    #[test]
    fn a_new_store_receives_replicas_step_by_step() {
        let mut s = ReplicaScheduler::new(ReplicaConfig::default());
        let st = stores(&[(1, 10), (2, 10), (3, 10), (4, 0)]);
        let r = voters(&[1, 2, 3]);
        // The source is the fullest store, ties to the smallest id: store 1's replica, which
        // leads, moves to store 4.
        let learner = peer(101, 4, PeerRole::Learner);
        assert_eq!(
            run(&mut s, &r, 1, &st, 0),
            Some(Command::AddLearner(learner))
        );
        // Not done yet: asked again.
        assert_eq!(
            run(&mut s, &r, 1, &st, 1),
            Some(Command::AddLearner(learner))
        );
        let mut r2 = r.clone();
        r2.peers.push(learner);
        assert_eq!(
            run(&mut s, &r2, 1, &st, 2),
            Some(Command::AddVoter(learner))
        );
        r2.peers[3].set_role(PeerRole::Voter);
        // The replica to remove leads: leadership moves first, to the smallest healthy store.
        assert_eq!(
            run(&mut s, &r2, 1, &st, 3),
            Some(Command::TransferLeader(peer(12, 2, PeerRole::Voter)))
        );
        assert_eq!(
            run(&mut s, &r2, 2, &st, 4),
            Some(Command::Remove(peer(11, 1, PeerRole::Voter)))
        );
        r2.peers.remove(0);
        assert_eq!(run(&mut s, &r2, 2, &st, 5), None);
        assert!(s.operators().is_empty());
    }

    #[test]
    fn a_down_store_s_replica_is_replaced_then_removed() {
        let config = ReplicaConfig {
            max_store_down_ms: 5000,
            balance_regions: false,
            ..Default::default()
        };
        let mut s = ReplicaScheduler::new(config);
        let mut st = stores(&[(1, 5), (2, 5), (3, 5), (4, 8)]);
        let r = voters(&[1, 2, 3]);
        assert_eq!(
            run(&mut s, &r, 1, &st, 0),
            None,
            "balance is off; nothing is down"
        );
        st.get_mut(&3).unwrap().since_heartbeat_ms = Some(6000);
        let learner = peer(101, 4, PeerRole::Learner);
        assert_eq!(
            run(&mut s, &r, 1, &st, 1),
            Some(Command::AddLearner(learner))
        );
        assert_eq!(
            s.operators()[&1].steps[2],
            Step::Remove(peer(13, 3, PeerRole::Voter))
        );
        // A store never heard from, or gone, is as bad as a down one.
        let mut s = ReplicaScheduler::new(config);
        st.get_mut(&3).unwrap().since_heartbeat_ms = None;
        assert_eq!(
            run(&mut s, &r, 1, &st, 1),
            Some(Command::AddLearner(learner))
        );
        let mut s = ReplicaScheduler::new(config);
        st.get_mut(&3).unwrap().since_heartbeat_ms = Some(0);
        st.get_mut(&3).unwrap().state = StoreState::Offline;
        assert_eq!(
            run(&mut s, &r, 1, &st, 1),
            Some(Command::AddLearner(learner))
        );
        // Without a target store, a 3-replica region keeps its bad replica.
        let mut s = ReplicaScheduler::new(config);
        st.remove(&4);
        assert_eq!(run(&mut s, &r, 1, &st, 1), None);
    }

    #[test]
    fn missing_and_extra_voters_and_left_over_learners() {
        let config = ReplicaConfig {
            balance_regions: false,
            ..Default::default()
        };
        let st = stores(&[(1, 5), (2, 5), (3, 7), (4, 3)]);
        let mut s = ReplicaScheduler::new(config);
        assert_eq!(
            run(&mut s, &voters(&[1, 2]), 1, &st, 0),
            Some(Command::AddLearner(peer(101, 4, PeerRole::Learner)))
        );
        let mut s = ReplicaScheduler::new(config);
        assert_eq!(
            run(&mut s, &voters(&[1, 2, 3, 4]), 1, &st, 0),
            Some(Command::Remove(peer(13, 3, PeerRole::Voter)))
        );
        let mut with_learner = voters(&[1, 2]);
        with_learner.peers.push(peer(14, 4, PeerRole::Learner));
        let mut s = ReplicaScheduler::new(config);
        assert_eq!(
            run(&mut s, &with_learner, 1, &st, 0),
            Some(Command::AddVoter(peer(14, 4, PeerRole::Learner)))
        );
        let mut full = voters(&[1, 2, 3]);
        full.peers.push(peer(14, 4, PeerRole::Learner));
        let mut s = ReplicaScheduler::new(config);
        assert_eq!(
            run(&mut s, &full, 1, &st, 0),
            Some(Command::Remove(peer(14, 4, PeerRole::Learner)))
        );
    }

    #[test]
    fn operators_are_limited_counted_and_time_out() {
        let config = ReplicaConfig {
            max_operators: 2,
            operator_timeout_ms: 100,
            ..Default::default()
        };
        let mut s = ReplicaScheduler::new(config);
        // Stores 1-3 hold 4 regions each, store 4 none: a gap of 4.
        let st = stores(&[(1, 4), (2, 4), (3, 4), (4, 0)]);
        let region = |id: u64| {
            test_util::region(id)
                .peers([1, 2, 3].map(|s| peer(id * 10 + s, s, PeerRole::Voter)))
                .build()
        };
        assert!(run(&mut s, &region(1), 1, &st, 0).is_some());
        // Pending: store 4 counts 1, store 1 counts 3; the gap (2) still allows a move.
        assert!(run(&mut s, &region(2), 1, &st, 0).is_some());
        // The limit.
        assert_eq!(run(&mut s, &region(3), 1, &st, 0), None);
        // Timed out operators go; the region is looked at afresh.
        assert!(run(&mut s, &region(1), 1, &st, 500).is_some());
        assert_eq!(s.operators()[&1].started_ms, 500);
        // A gap below the threshold moves nothing.
        let mut s = ReplicaScheduler::new(config);
        let st = stores(&[(1, 4), (2, 4), (3, 4), (4, 3)]);
        assert_eq!(run(&mut s, &region(1), 1, &st, 0), None);
    }

    #[test]
    fn a_store_takes_part_in_a_limited_number_of_operators() {
        let config = ReplicaConfig {
            max_operators: 10,
            max_store_operators: 2,
            ..Default::default()
        };
        let mut s = ReplicaScheduler::new(config);
        // Stores 1-3 hold 10 regions each, store 4 none: every region wants to move there.
        let st = stores(&[(1, 10), (2, 10), (3, 10), (4, 0)]);
        let region = |id: u64| {
            test_util::region(id)
                .peers([1, 2, 3].map(|s| peer(id * 10 + s, s, PeerRole::Voter)))
                .build()
        };
        assert!(run(&mut s, &region(1), 1, &st, 0).is_some());
        assert!(run(&mut s, &region(2), 1, &st, 0).is_some());
        // Store 4 already receives two new replicas: the third waits, though the cluster-wide
        // limit has room.
        assert_eq!(run(&mut s, &region(3), 1, &st, 0), None);
        assert_eq!(s.operators().len(), 2);
        // Once one finishes (its peers as the operator left them), another may start.
        let first = s.operators()[&1].clone();
        let mut moved = region(1);
        for step in &first.steps {
            match step {
                Step::AddLearner(p) => {
                    let mut p = *p;
                    p.set_role(PeerRole::Voter);
                    moved.peers.push(p);
                }
                Step::Promote(_) => {}
                Step::Remove(p) => moved.peers.retain(|q| q.id != p.id),
            }
        }
        let leader = moved.peers[0].store_id;
        assert_eq!(run(&mut s, &moved, leader, &st, 0), None);
        assert_eq!(s.operators().len(), 1);
        assert!(run(&mut s, &region(3), 1, &st, 0).is_some());
    }

    #[test]
    fn stores_are_weighed_by_the_sizes_of_their_regions() {
        // Store 4 holds as many regions as the others would (no count says so), but 90 MiB
        // against their 100: a 4 MiB region moves to it, a 10 MiB one would overshoot.
        let st = stores_mib(&[(1, 100), (2, 100), (3, 100), (4, 90)]);
        let r = voters(&[1, 2, 3]);
        let mut s = ReplicaScheduler::default();
        assert_eq!(run_sized(&mut s, &r, 10 * MIB, 1, &st, 0), None);
        let cmd = run_sized(&mut s, &r, 4 * MIB, 1, &st, 0);
        assert!(
            matches!(cmd, Some(Command::AddLearner(p)) if p.store_id == 4),
            "{cmd:?}"
        );
        assert_eq!(s.operators()[&1].weight, 4 * MIB);
        // The source is the heaviest holder, not the one with most regions.
        let st = stores_mib(&[(1, 50), (2, 300), (3, 100), (4, 10)]);
        let mut s = ReplicaScheduler::default();
        run_sized(&mut s, &r, 8 * MIB, 1, &st, 0).expect("a move");
        assert_eq!(
            s.operators()[&1].steps[2],
            Step::Remove(peer(12, 2, PeerRole::Voter))
        );
    }

    #[test]
    fn store_excess_sums_what_regions_weigh_above_an_empty_one() {
        let regions: [(u64, &[u64]); 3] = [(0, &[1, 2, 3]), (5 * MIB, &[1, 2, 4]), (7, &[4])];
        let w = store_excess(regions.into_iter());
        assert_eq!(w[&1], 4 * MIB);
        assert_eq!(
            w.get(&3),
            None,
            "empty regions add nothing above their count"
        );
        assert_eq!(w[&4], 4 * MIB);
        assert_eq!(w.get(&5), None);
    }

    #[test]
    fn a_region_never_measured_weighs_as_an_empty_one() {
        assert_eq!(region_weight(0), MIN_REGION_SIZE);
        assert_eq!(region_weight(5), MIN_REGION_SIZE);
        assert_eq!(region_weight(3 * MIB), 3 * MIB);
        // Empty regions everywhere: the count rule (a gap of at least 2 regions).
        let r = voters(&[1, 2, 3]);
        let mut s = ReplicaScheduler::default();
        assert_eq!(
            run(&mut s, &r, 1, &stores(&[(1, 5), (2, 5), (3, 5), (4, 4)]), 0),
            None
        );
        assert!(run(&mut s, &r, 1, &stores(&[(1, 5), (2, 5), (3, 5), (4, 3)]), 0).is_some());
    }

    #[test]
    fn operators_in_flight_weigh_on_their_stores_by_their_region() {
        let config = ReplicaConfig {
            max_operators: 10,
            max_store_operators: 10,
            ..Default::default()
        };
        let mut s = ReplicaScheduler::new(config);
        let st = stores_mib(&[(1, 200), (2, 200), (3, 200), (4, 150)]);
        let region = |id: u64| {
            test_util::region(id)
                .peers([1, 2, 3].map(|s| peer(id * 10 + s, s, PeerRole::Voter)))
                .build()
        };
        // A 20 MiB region moves from store 1 to store 4 (a gap of 50 ≥ 40; pending, store 4
        // weighs 170) ...
        assert!(run_sized(&mut s, &region(1), 20 * MIB, 1, &st, 0).is_some());
        // ... so another 20 MiB one no longer may (200 on store 2 against 170: 30 < 40), a
        // 5 MiB one still may.
        assert_eq!(run_sized(&mut s, &region(2), 20 * MIB, 1, &st, 0), None);
        assert!(run_sized(&mut s, &region(3), 5 * MIB, 1, &st, 0).is_some());
    }
}
