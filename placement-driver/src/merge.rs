//! Region merge, PD's side: which two adjacent regions to merge, moving the source's replicas
//! onto the target's stores first, and telling the source region's leader, as TiKV's PD does.
//!
//! The stores merge: the source region's leader proposes PrepareMerge naming the target (after
//! which the source takes no writes), the target applies CommitMerge, which extends its range
//! over the source's and bumps its epoch version above both, and the source's replicas go
//! away; if the target changed in between, the source rolls back (RollbackMerge). PD only
//! decides and asks.
//!
//! Protocol:
//! 1. **Check.** On a heartbeat from the leader of a region with no operator, the merge
//!    checker ([`choose_target`]) looks at the region as a *source*, then at its two
//!    neighbours as *targets*. The rules, each its own function:
//!    - [`check_small`]: merging is on, the source was measured (its leader reported a size
//!      above 0) and is small: `approximate_size <= max_region_size` and
//!      `approximate_keys <= max_region_keys`, as its leader last reported them.
//!    - [`check_settled`], for source and target: PD did not see the region's epoch version
//!      change (a split or a merge) within `split_merge_interval`, so a region just split is
//!      not merged back at once. PD remembers the version it last saw of each region and when
//!      it first saw that version in the current term; a region first seen in the term counts
//!      as changed then, so a PD leader that just took over merges nothing for an interval.
//!    - [`check_healthy`], for source and target: a known leader, every peer a voter, exactly
//!      `max_replicas` peers, no down or pending peer, no operator (a replica operator, a
//!      leader transfer in flight, another merge).
//!    - [`check_pair`]: the target ends where the source starts or starts where it ends, and
//!      the merged range holds no keyspace boundary ([`crate::keyspace`]: regions in
//!      different keyspaces never merge).
//!    - [`check_target_size`]: the target is small too (within the same two bounds), so the
//!      merged region is at most twice the bounds and the store does not split it again.
//!
//!    Of the neighbours that pass, one with its replicas on the source's stores is preferred
//!    (it merges without moving a replica), then the smaller one (by size, then keys); ties go
//!    to the previous region.
//! 2. **Move.** The stores merge only regions with voters on the same stores. If the chosen
//!    target's replicas are elsewhere, [`plan_move`] plans one replica move of the *source*
//!    (the target stays where it is): a new replica on the smallest-id store of the target's
//!    that the source lacks, in place of the source's replica on a store the target does not
//!    use (a follower before the leader, then the smallest store id). The new replica's store
//!    must be Up, alive and below `max_store_operators` (the replica scheduler's tests for a
//!    store receiving a replica), else nothing moves. The move is a replica operator
//!    (`merge-transfer-peer`: add learner, promote, move leadership off the leaving replica
//!    if it leads, remove it) that the replica scheduler carries out like its own, and that
//!    counts against `max_operators`; the heartbeat is answered with its first step. One move
//!    at a time: while it runs the source is busy; when it ends, the next heartbeat checks the
//!    pair afresh (every rule again) and moves another replica or, once the stores match,
//!    merges. A region that would not merge (too large, just split, unhealthy, ...) is never
//!    moved for merging.
//! 3. **Operate.** A [`MergeOperator`] names the source and the target as they were when it
//!    was made. Each heartbeat of the source's leader is answered with `merge { target }`
//!    (kvproto's `pdpb.RegionHeartbeatResponse.merge`); the leader proposes PrepareMerge, or
//!    ignores the answer while its merge is under way. The operator ends when the source
//!    leaves PD's region map: the target's heartbeat with the merged range and a higher
//!    version makes the source stale, the region map drops it and [`Merges::forget_regions`]
//!    runs. The source's epoch may change meanwhile (PrepareMerge bumps its version and
//!    conf_ver, RollbackMerge its version) without ending the operator; it is cancelled when
//!    the source's range changed (it split), when the target's epoch or range is no longer the
//!    one the operator names (the store would roll the merge back), and dropped after
//!    `operator_timeout`.
//! 4. **Exclusion.** While the operator lives, the target's heartbeats are answered with
//!    nothing and neither region gets another operator (replica checker, balance-region,
//!    balance-leader). A merge counts against `max_operators` like a replica operator.
//! 5. **By hand** ([`Merges::add`], PD's `operator add merge-region`): the pair and health
//!    rules hold, and the replicas must already be on the same stores ([`check_same_stores`]:
//!    nothing is moved for a merge by hand); the size and interval rules do not; merging may
//!    even be off.
//!
//! Invariants:
//! - At most one operator per region: a region is the source or the target of at most one
//!   merge and then has no replica operator; a merge is only made when neither region has one.
//!   A move for merging is a replica operator of the source like any other.
//! - Every merge asked for names two adjacent regions with voters on the same stores, within
//!   one keyspace, as PD's region map had them when the operator was made.
//! - A move for merging only adds a replica on a store of the target's and only removes one on
//!   a store the target does not use: each one brings the pair a store closer.
//! - Soft state of the PD leader's term: a new term (or a node that leads again) starts with
//!   no operator and no region seen, so nothing merges during its first interval.
//! - Deterministic: the same view and history give the same decision.
//!
//! Differences from TiKV's PD:
//! - Aligning the replicas: TiKV's PD puts the source's moves and the merge in one operator;
//!   here each move is its own replica operator and the merge is decided afresh once the
//!   stores match (so a target that changed in between is noticed before merging). TiKV's PD
//!   takes the smaller neighbour whatever its stores; here a neighbour needing no move comes
//!   first.
//! - The target bound: TiKV's PD takes targets up to the larger of 500 MiB and 4x the stores'
//!   `region-max-size`, refusing a merge whose result the store would split again into a
//!   small remainder (it reads the stores' split size). PD here does not know the stores'
//!   split settings, so it takes only small targets: a merged region is at most twice
//!   `max_merge_region_size` (keep that below the stores' `region_max_size`).
//! - A size of 0 reads as empty, as in TiKV's PD (a data set that shrank leaves empty
//!   regions, and those are what merging is for). The store reports 0 also for a region it
//!   has not measured yet, but its size checker measures every region a store leads within
//!   its check interval, and a region that split recently is not merged anyway.
//! - Driven by the source leader's heartbeats, not by a scan of every region; no separate
//!   `merge-schedule-limit`, no hot-region or one-way-merge options, no placement rules or
//!   labels.

use std::collections::{BTreeMap, HashMap};

use proto::metapb::{Peer, PeerRole, Region};

use crate::region_map::epoch;
use crate::replica::ReplicaConfig;

/// Default `max_merge_region_size` (PD's 20 MiB).
pub const DEFAULT_MAX_MERGE_REGION_SIZE: u64 = 20 << 20;
/// Default `max_merge_region_keys` (PD's 200,000).
pub const DEFAULT_MAX_MERGE_REGION_KEYS: u64 = 200_000;
/// Default `split_merge_interval` (PD's 1 hour).
pub const DEFAULT_SPLIT_MERGE_INTERVAL_MS: u64 = 60 * 60 * 1000;

/// The merge checker's settings, from [`crate::PdConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergeConfig {
    /// Whether the checker runs (merges by hand are taken either way).
    pub enabled: bool,
    /// A region at most this large (bytes) may merge.
    pub max_region_size: u64,
    /// A region with at most this many keys may merge.
    pub max_region_keys: u64,
    /// A region whose epoch version PD saw change within this long does not merge.
    pub split_merge_interval_ms: u64,
}

impl Default for MergeConfig {
    fn default() -> Self {
        MergeConfig {
            enabled: true,
            max_region_size: DEFAULT_MAX_MERGE_REGION_SIZE,
            max_region_keys: DEFAULT_MAX_MERGE_REGION_KEYS,
            split_merge_interval_ms: DEFAULT_SPLIT_MERGE_INTERVAL_MS,
        }
    }
}

/// A region as PD knows it for merging: its entry in the region map and what its leader last
/// reported.
#[derive(Clone, Copy, Debug)]
pub struct MergeCandidate<'a> {
    pub region: &'a Region,
    /// Whether PD knows its leader.
    pub has_leader: bool,
    /// Whether its leader reports down or pending peers.
    pub unhealthy_peers: bool,
    pub approximate_size: u64,
    pub approximate_keys: u64,
    /// Another operator is on it (a replica operator, a leader transfer, a merge).
    pub busy: bool,
}

/// Why a region does not merge (or a merge asked for by hand is refused).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("merge scheduling is off")]
    Disabled,
    #[error("a region cannot merge into itself")]
    SameRegion,
    #[error(
        "region {region_id} is too large to merge ({size} bytes, {keys} keys; at most \
         {max_size} bytes and {max_keys} keys)"
    )]
    TooLarge {
        region_id: u64,
        size: u64,
        keys: u64,
        max_size: u64,
        max_keys: u64,
    },
    #[error(
        "region {region_id} split or merged {ago_ms} ms ago, within split_merge_interval \
         ({interval_ms} ms)"
    )]
    RecentlyChanged {
        region_id: u64,
        ago_ms: u64,
        interval_ms: u64,
    },
    #[error("region {region_id} has no known leader")]
    NoLeader { region_id: u64 },
    #[error("region {region_id} has a replica that is not a voter")]
    NotAllVoters { region_id: u64 },
    #[error("region {region_id} has {peers} replicas, not {want}")]
    ReplicaCount {
        region_id: u64,
        peers: usize,
        want: usize,
    },
    #[error("region {region_id} has down or pending replicas")]
    UnhealthyPeers { region_id: u64 },
    #[error("region {region_id} has an operator")]
    Busy { region_id: u64 },
    #[error("regions {source_id} and {target_id} are not adjacent")]
    NotAdjacent { source_id: u64, target_id: u64 },
    #[error("regions {source_id} and {target_id} are in different keyspaces")]
    KeyspaceBoundary { source_id: u64, target_id: u64 },
    #[error("regions {source_id} and {target_id} have replicas on different stores")]
    DifferentStores { source_id: u64, target_id: u64 },
    #[error("store {store_id} is not Up and alive")]
    StoreUnfit { store_id: u64 },
    #[error("store {store_id} already receives max_store_operators replicas")]
    StoreBusy { store_id: u64 },
    #[error("region {region_id} has no neighbour")]
    NoNeighbour { region_id: u64 },
    #[error("too many operators in flight")]
    TooManyOperators,
}

/// Rule 1 (source): merging is on and the region is small (or empty).
pub fn check_small(config: &MergeConfig, source: &MergeCandidate<'_>) -> Result<(), Refusal> {
    if !config.enabled {
        return Err(Refusal::Disabled);
    }
    within_bounds(config, source)
}

/// Rule 5 (target): the target is within the bounds too (a size of 0 is empty).
pub fn check_target_size(config: &MergeConfig, target: &MergeCandidate<'_>) -> Result<(), Refusal> {
    within_bounds(config, target)
}

fn within_bounds(config: &MergeConfig, c: &MergeCandidate<'_>) -> Result<(), Refusal> {
    if c.approximate_size > config.max_region_size || c.approximate_keys > config.max_region_keys {
        return Err(Refusal::TooLarge {
            region_id: c.region.id,
            size: c.approximate_size,
            keys: c.approximate_keys,
            max_size: config.max_region_size,
            max_keys: config.max_region_keys,
        });
    }
    Ok(())
}

/// Rule 2 (source and target): the region's epoch version did not change (as PD saw it: at
/// `changed_ms`) within the split-merge interval.
pub fn check_settled(
    config: &MergeConfig,
    region_id: u64,
    changed_ms: u64,
    now_ms: u64,
) -> Result<(), Refusal> {
    let ago_ms = now_ms.saturating_sub(changed_ms);
    if ago_ms < config.split_merge_interval_ms {
        return Err(Refusal::RecentlyChanged {
            region_id,
            ago_ms,
            interval_ms: config.split_merge_interval_ms,
        });
    }
    Ok(())
}

/// Rule 3 (source and target): no operator, a known leader, `max_replicas` voters and nothing
/// else, none down or pending.
pub fn check_healthy(c: &MergeCandidate<'_>, max_replicas: usize) -> Result<(), Refusal> {
    let region_id = c.region.id;
    if c.busy {
        return Err(Refusal::Busy { region_id });
    }
    if !c.has_leader {
        return Err(Refusal::NoLeader { region_id });
    }
    if c.region.peers.iter().any(|p| p.role() != PeerRole::Voter) {
        return Err(Refusal::NotAllVoters { region_id });
    }
    if c.region.peers.len() != max_replicas {
        return Err(Refusal::ReplicaCount {
            region_id,
            peers: c.region.peers.len(),
            want: max_replicas,
        });
    }
    if c.unhealthy_peers {
        return Err(Refusal::UnhealthyPeers { region_id });
    }
    Ok(())
}

/// `[start, end)` of `a` and `b` merged, if they are adjacent (`end` empty: +inf).
pub fn merged_range<'a>(a: &'a Region, b: &'a Region) -> Option<(&'a [u8], &'a [u8])> {
    if !a.end_key.is_empty() && a.end_key == b.start_key {
        Some((&a.start_key[..], &b.end_key[..]))
    } else if !b.end_key.is_empty() && b.end_key == a.start_key {
        Some((&b.start_key[..], &a.end_key[..]))
    } else {
        None
    }
}

/// The stores of a region's replicas, sorted (one entry per replica).
fn stores(region: &Region) -> Vec<u64> {
    let mut stores: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
    stores.sort_unstable();
    stores
}

/// Rule 4 (the pair): adjacent, in one keyspace.
pub fn check_pair(source: &Region, target: &Region) -> Result<(), Refusal> {
    let (source_id, target_id) = (source.id, target.id);
    if source_id == target_id {
        return Err(Refusal::SameRegion);
    }
    let (start, end) = merged_range(source, target).ok_or(Refusal::NotAdjacent {
        source_id,
        target_id,
    })?;
    if !crate::keyspace::boundaries_inside(start, end).is_empty() {
        return Err(Refusal::KeyspaceBoundary {
            source_id,
            target_id,
        });
    }
    Ok(())
}

/// Whether the two regions have their replicas on the same stores (what the stores merge).
pub fn same_stores(source: &Region, target: &Region) -> bool {
    stores(source) == stores(target)
}

/// The pair's replicas are on the same stores (a merge by hand moves none).
pub fn check_same_stores(source: &Region, target: &Region) -> Result<(), Refusal> {
    if !same_stores(source, target) {
        return Err(Refusal::DifferentStores {
            source_id: source.id,
            target_id: target.id,
        });
    }
    Ok(())
}

/// A replica move of a merge's source: its replica `from` goes, a new one on `to_store` comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MovePlan {
    pub from: Peer,
    pub to_store: u64,
}

/// Rule 6 (the pair on different stores): the one replica move that brings the source a store
/// closer to the target's stores, the target staying where it is; `None` if they are on the
/// same stores already (the pair merges). The new replica goes to the smallest-id store of the
/// target's that the source lacks, which must be able to take one (`store_ok`: Up, alive,
/// below `max_store_operators`); it replaces the source's replica on a store the target does
/// not use, a follower before `leader`, then the smallest store id.
pub fn plan_move(
    source: &Region,
    leader: &Peer,
    target: &Region,
    store_ok: &dyn Fn(u64) -> Result<(), Refusal>,
) -> Result<Option<MovePlan>, Refusal> {
    if same_stores(source, target) {
        return Ok(None);
    }
    let (source_stores, target_stores) = (stores(source), stores(target));
    let to_store = target_stores
        .iter()
        .copied()
        .find(|s| !source_stores.contains(s));
    let from = source
        .peers
        .iter()
        .filter(|p| !target_stores.contains(&p.store_id))
        .min_by_key(|p| (p.id == leader.id, p.store_id))
        .copied();
    let (Some(to_store), Some(from)) = (to_store, from) else {
        // Not one move apart (a store holding two replicas): nothing the checker fixes.
        return Err(Refusal::DifferentStores {
            source_id: source.id,
            target_id: target.id,
        });
    };
    store_ok(to_store)?;
    Ok(Some(MovePlan { from, to_store }))
}

/// The merge checker: the region `source` should merge into, among its neighbours `prev`
/// (ending where it starts) and `next` (starting where it ends), or why it merges into none
/// (the previous neighbour's refusal if both refuse). A neighbour on the source's stores comes
/// first, then the smaller; the target may be on other stores ([`plan_move`] then moves the
/// source's replicas first). `changed_ms` gives when PD saw a region's epoch version change
/// (see [`check_settled`]).
pub fn choose_target<'a>(
    config: &MergeConfig,
    max_replicas: usize,
    source: &MergeCandidate<'_>,
    prev: Option<&MergeCandidate<'a>>,
    next: Option<&MergeCandidate<'a>>,
    changed_ms: &dyn Fn(u64) -> u64,
    now_ms: u64,
) -> Result<&'a Region, Refusal> {
    check_small(config, source)?;
    check_settled(
        config,
        source.region.id,
        changed_ms(source.region.id),
        now_ms,
    )?;
    check_healthy(source, max_replicas)?;
    let fits = |t: &MergeCandidate<'_>| {
        check_pair(source.region, t.region)?;
        check_healthy(t, max_replicas)?;
        check_settled(config, t.region.id, changed_ms(t.region.id), now_ms)?;
        check_target_size(config, t)
    };
    let mut refusal = None;
    let mut best: Option<&MergeCandidate<'a>> = None;
    for t in [prev, next].into_iter().flatten() {
        match fits(t) {
            Ok(()) => {
                let key = |c: &MergeCandidate<'_>| {
                    let moves = !same_stores(source.region, c.region);
                    (moves, c.approximate_size, c.approximate_keys)
                };
                if best.is_none_or(|b| key(t) < key(b)) {
                    best = Some(t);
                }
            }
            Err(e) => {
                refusal.get_or_insert(e);
            }
        }
    }
    match (best, refusal) {
        (Some(t), _) => Ok(t.region),
        (None, Some(e)) => Err(e),
        (None, None) => Err(Refusal::NoNeighbour {
            region_id: source.region.id,
        }),
    }
}

/// A merge in flight: `source` into `target`, as PD's region map had them when it was made.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeOperator {
    /// `merge-region` (the checker) or `admin-merge-region` (by hand), PD's names.
    pub kind: &'static str,
    pub source: Region,
    pub target: Region,
    pub started_ms: u64,
}

/// Where a merge stands, judged on a heartbeat of its source or target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Running,
    /// The source left the region map (the merge happened).
    Finished,
    /// The source's range or the target changed: the merge cannot happen as asked.
    Cancelled(&'static str),
    TimedOut,
}

impl MergeOperator {
    /// Judges the operator given the source and the target as the region map has them now
    /// (`None`: not there); see the module docs.
    pub fn progress(
        &self,
        source_now: Option<&Region>,
        target_now: Option<&Region>,
        now_ms: u64,
        timeout_ms: u64,
    ) -> Progress {
        let Some(source_now) = source_now else {
            return Progress::Finished;
        };
        if now_ms.saturating_sub(self.started_ms) > timeout_ms {
            return Progress::TimedOut;
        }
        if source_now.start_key != self.source.start_key
            || source_now.end_key != self.source.end_key
        {
            return Progress::Cancelled("the source's range changed");
        }
        match target_now {
            None => Progress::Cancelled("the target is gone"),
            Some(t)
                if epoch(t) != epoch(&self.target)
                    || t.start_key != self.target.start_key
                    || t.end_key != self.target.end_key =>
            {
                Progress::Cancelled("the target changed")
            }
            Some(_) => Progress::Running,
        }
    }
}

/// What a heartbeat of a region taking part in a merge is answered with.
#[derive(Clone, Debug, PartialEq)]
pub enum MergeAnswer {
    /// To the source's leader: merge into this target.
    Merge(Region),
    /// The region is a merge's target: nothing, and no other operator.
    Wait,
    /// To the source's leader: add the learner `to`, the first step of a replica move that
    /// brings the source onto its target's stores (the replica scheduler makes it a replica
    /// operator and carries out the rest).
    Move(PeerMove),
}

/// A replica move the merge checker asks of a source (see [`plan_move`]): its replica `from`
/// is replaced by the new learner `to`, on a store of region `target_id`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerMove {
    pub target_id: u64,
    pub from: Peer,
    pub to: Peer,
}

/// A heartbeat of `source`'s leader with its neighbours, for [`Merges::on_heartbeat`].
#[derive(Clone, Copy, Debug)]
pub struct MergeView<'a> {
    /// The PD leader's term.
    pub term: u64,
    /// The source's leader (whose heartbeat this is).
    pub leader: Peer,
    pub source: MergeCandidate<'a>,
    pub prev: Option<MergeCandidate<'a>>,
    pub next: Option<MergeCandidate<'a>>,
}

/// What the rest of the operator model tells [`Merges`].
#[derive(Clone, Copy)]
pub struct OtherOperators<'a> {
    /// Whether a region has another operator (a replica operator, a leader transfer).
    pub busy: &'a dyn Fn(u64) -> bool,
    /// Whether one more operator may start (`max_operators`).
    pub room: bool,
    /// Whether a store may receive a new replica now (Up, alive, below
    /// `max_store_operators`).
    pub store_ok: &'a dyn Fn(u64) -> Result<(), Refusal>,
}

/// The merge checker's soft state and the merges in flight; see the module docs.
#[derive(Debug, Default)]
pub struct Merges {
    term: u64,
    /// Per region: the epoch version PD last saw, and when it first saw it in this term.
    seen: HashMap<u64, (u64, u64)>,
    /// By source region id.
    operators: BTreeMap<u64, MergeOperator>,
}

impl Merges {
    /// The merges in flight, by source region id.
    pub fn operators(&self) -> &BTreeMap<u64, MergeOperator> {
        &self.operators
    }

    pub fn len(&self) -> usize {
        self.operators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operators.is_empty()
    }

    /// The merge `region_id` takes part in, as source or target.
    pub fn involving(&self, region_id: u64) -> Option<&MergeOperator> {
        self.operators
            .get(&region_id)
            .or_else(|| self.operators.values().find(|op| op.target.id == region_id))
    }

    /// Forgets regions that left the region map, and the merges they took part in (a merge
    /// whose source left is done).
    pub fn forget_regions(&mut self, ids: &[u64]) {
        for id in ids {
            self.seen.remove(id);
        }
        self.operators.retain(|source, op| {
            let merged = ids.contains(source);
            if merged || ids.contains(&op.target.id) {
                tracing::info!(
                    source_id = *source,
                    target_id = op.target.id,
                    kind = op.kind,
                    merged,
                    "merge operator ended: a region left the region map"
                );
                return false;
            }
            true
        });
    }

    /// Starts afresh in a new term of PD leadership.
    fn enter_term(&mut self, term: u64) {
        if term != self.term {
            self.term = term;
            self.seen.clear();
            self.operators.clear();
        }
    }

    /// Notes `region`'s epoch version at `now_ms`; answers when PD first saw that version.
    fn observe(&mut self, region: &Region, now_ms: u64) -> u64 {
        let version = epoch(region).version;
        let entry = self.seen.entry(region.id).or_insert((version, now_ms));
        if entry.0 != version {
            *entry = (version, now_ms);
        }
        entry.1
    }

    /// On a heartbeat of `view.source`'s leader: the answer of the merge it takes part in, or
    /// a new merge the checker makes of it, or a replica move toward the target it chose (a
    /// new peer's id from `alloc_id`). `lookup` finds a region in PD's region map.
    pub fn on_heartbeat(
        &mut self,
        config: &ReplicaConfig,
        view: MergeView<'_>,
        lookup: &dyn Fn(u64) -> Option<Region>,
        others: OtherOperators<'_>,
        now_ms: u64,
        alloc_id: &mut dyn FnMut() -> Option<u64>,
    ) -> Option<MergeAnswer> {
        let busy = others.busy;
        self.enter_term(view.term);
        let id = view.source.region.id;
        for c in [Some(&view.source), view.prev.as_ref(), view.next.as_ref()]
            .into_iter()
            .flatten()
        {
            self.observe(c.region, now_ms);
        }
        if let Some(op) = self.involving(id).cloned() {
            let is_source = op.source.id == id;
            let (source_now, target_now) = if is_source {
                (Some(view.source.region.clone()), lookup(op.target.id))
            } else {
                (lookup(op.source.id), Some(view.source.region.clone()))
            };
            let progress = op.progress(
                source_now.as_ref(),
                target_now.as_ref(),
                now_ms,
                config.operator_timeout_ms,
            );
            if progress == Progress::Running {
                return Some(if is_source {
                    MergeAnswer::Merge(op.target)
                } else {
                    MergeAnswer::Wait
                });
            }
            tracing::info!(
                source_id = op.source.id,
                target_id = op.target.id,
                kind = op.kind,
                ?progress,
                "merge operator ended"
            );
            self.operators.remove(&op.source.id);
            return None;
        }
        if !config.merge.enabled || !others.room || busy(id) {
            return None;
        }
        let mark = |c: MergeCandidate<'_>| -> bool {
            c.busy || busy(c.region.id) || self.involving(c.region.id).is_some()
        };
        let source = MergeCandidate {
            busy: mark(view.source),
            ..view.source
        };
        let prev = view.prev.map(|c| MergeCandidate { busy: mark(c), ..c });
        let next = view.next.map(|c| MergeCandidate { busy: mark(c), ..c });
        let seen = |region_id: u64| self.seen.get(&region_id).map_or(now_ms, |s| s.1);
        let target = choose_target(
            &config.merge,
            config.max_replicas,
            &source,
            prev.as_ref(),
            next.as_ref(),
            &seen,
            now_ms,
        )
        .ok()?
        .clone();
        if let Some(plan) = plan_move(source.region, &view.leader, &target, others.store_ok).ok()? {
            let to = crate::replica::new_peer(plan.to_store, alloc_id)?;
            tracing::info!(
                source_id = id,
                target_id = target.id,
                from_store = plan.from.store_id,
                to_store = plan.to_store,
                "merge checker: moving a replica onto the target's stores"
            );
            return Some(MergeAnswer::Move(PeerMove {
                target_id: target.id,
                from: plan.from,
                to,
            }));
        }
        tracing::info!(
            source_id = id,
            target_id = target.id,
            size = source.approximate_size,
            keys = source.approximate_keys,
            "merge operator created"
        );
        self.operators.insert(
            id,
            MergeOperator {
                kind: "merge-region",
                source: source.region.clone(),
                target: target.clone(),
                started_ms: now_ms,
            },
        );
        Some(MergeAnswer::Merge(target))
    }

    /// Adds a merge asked for by hand (PD's `operator add merge-region`): the pair and health
    /// rules apply, the size and interval rules do not.
    pub fn add(
        &mut self,
        config: &ReplicaConfig,
        term: u64,
        source: MergeCandidate<'_>,
        target: MergeCandidate<'_>,
        others: OtherOperators<'_>,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let busy = others.busy;
        self.enter_term(term);
        check_pair(source.region, target.region)?;
        check_same_stores(source.region, target.region)?;
        for c in [&source, &target] {
            let c = MergeCandidate {
                busy: c.busy || busy(c.region.id) || self.involving(c.region.id).is_some(),
                ..*c
            };
            check_healthy(&c, config.max_replicas)?;
        }
        if !others.room {
            return Err(Refusal::TooManyOperators);
        }
        tracing::info!(
            source_id = source.region.id,
            target_id = target.region.id,
            "merge operator added by hand"
        );
        self.operators.insert(
            source.region.id,
            MergeOperator {
                kind: "admin-merge-region",
                source: source.region.clone(),
                target: target.region.clone(),
                started_ms: now_ms,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests;
