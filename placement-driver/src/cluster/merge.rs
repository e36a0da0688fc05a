//! Region merge on the serving leader: the merge checker on a region's heartbeats, and merges
//! asked for by hand. The rules and the operator are in [`crate::merge`]; this gathers what
//! they look at (the region map's neighbours, the leaders' reports, leader transfers in
//! flight, the stores) and answers the source's leader with kvproto's `merge { target }`, or
//! with the first step of a replica move onto the target's stores.

use std::collections::BTreeMap;

use proto::metapb;
use proto::pdpb::{Merge, RegionHeartbeatRequest, RegionHeartbeatResponse};

use super::Cluster;
use crate::heartbeat::HeartbeatCache;
use crate::merge::{MergeAnswer, MergeCandidate, MergeOperator, MergeView};
use crate::region_map::RegionMap;
use crate::replica::StoreInfo;
use crate::{Error, Result};

/// The regions before and after `region` in the map (by start key); whether they touch it is
/// the merge checker's business.
fn neighbours(
    map: &RegionMap,
    region: &metapb::Region,
) -> (Option<metapb::Region>, Option<metapb::Region>) {
    let prev = map.prev_region(&region.start_key).cloned();
    let next = if region.end_key.is_empty() {
        None
    } else {
        map.find_by_key(&region.end_key).cloned()
    };
    (prev, next)
}

/// `region` as its leader last reported it, with no operator (the scheduler marks those).
fn candidate<'a>(heartbeats: &HeartbeatCache, region: &'a metapb::Region) -> MergeCandidate<'a> {
    let status = heartbeats.region(region.id);
    MergeCandidate {
        region,
        has_leader: heartbeats.leader_of(region).is_some(),
        unhealthy_peers: status
            .is_some_and(|s| !s.down_peers.is_empty() || !s.pending_peers.is_empty()),
        approximate_size: status.map_or(0, |s| s.approximate_size),
        approximate_keys: status.map_or(0, |s| s.approximate_keys),
        busy: false,
    }
}

impl Cluster {
    /// Regions with a leader transfer in flight (balance-leader's pending transfers).
    fn transferring(&self) -> Vec<u64> {
        self.leader_scheduler
            .as_ref()
            .map(|s| s.lock().pending().keys().copied().collect())
            .unwrap_or_default()
    }

    /// Runs the merge checker on a recorded heartbeat of `region` (after the replica checkers
    /// found nothing to do): `None` if the region takes part in no merge and needs no replica
    /// moved for one, else what its leader is answered with. Only heartbeats from the recorded
    /// leader are considered. `stores` as replica scheduling sees them.
    pub(super) async fn schedule_merge(
        &self,
        req: &RegionHeartbeatRequest,
        region: &metapb::Region,
        stores: &BTreeMap<u64, StoreInfo>,
    ) -> Result<Option<MergeAnswer>> {
        let Some(term) = self.state.serving_term() else {
            return Ok(None);
        };
        match self.replica_scheduler.lock().as_ref() {
            None => return Ok(None),
            // Nothing to check and no merge to answer for: spare the lookups.
            Some(s) if !s.config().merge.enabled && s.merges().is_empty() => return Ok(None),
            Some(_) => {}
        }
        let now_ms = self.clock.now_ms();
        let (prev, next) = self.state.read(|s| neighbours(s.regions(), region));
        let transferring = self.transferring();
        let view = {
            let heartbeats = self.heartbeats.lock();
            let leader = heartbeats.leader_of(region);
            let Some(leader) = leader.filter(|l| Some(*l) == req.leader) else {
                return Ok(None);
            };
            MergeView {
                term,
                leader,
                source: candidate(&heartbeats, region),
                prev: prev.as_ref().map(|r| candidate(&heartbeats, r)),
                next: next.as_ref().map(|r| candidate(&heartbeats, r)),
            }
        };
        let lookup = |id: u64| self.state.read(|s| s.regions().get(id).cloned());
        let mut wanted_ids = false;
        let answer = {
            let mut pool = self.id_pool.lock();
            let mut alloc = || {
                let id = pool.pop();
                wanted_ids |= id.is_none();
                id
            };
            let mut scheduler = self.replica_scheduler.lock();
            let Some(scheduler) = scheduler.as_mut() else {
                return Ok(None);
            };
            scheduler.on_merge_heartbeat(
                view,
                &lookup,
                &|id| transferring.contains(&id),
                stores,
                now_ms,
                &mut alloc,
            )
        };
        if wanted_ids {
            self.refill_id_pool().await?;
        }
        Ok(answer)
    }

    /// The answer asking `region`'s leader (who sent `req`) to merge into `target`.
    pub(super) fn merge_response(
        &self,
        req: &RegionHeartbeatRequest,
        region: &metapb::Region,
        target: metapb::Region,
    ) -> RegionHeartbeatResponse {
        RegionHeartbeatResponse {
            header: Some(self.ok_header()),
            region_id: region.id,
            region_epoch: region.region_epoch,
            target_peer: req.leader,
            merge: Some(Merge {
                target: Some(target),
            }),
            ..Default::default()
        }
    }

    /// Merges region `source_id` into region `target_id` (PD's `operator add merge-region`):
    /// they must be adjacent, in one keyspace, on the same stores and healthy, with no
    /// replica or merge operator; their sizes and the split-merge interval do not matter, nor
    /// does a leader transfer balance-leader has in flight (a hot region always has one; the
    /// source's new leader gets the merge on its heartbeats). Carried out on the source's next
    /// heartbeats.
    pub async fn merge_regions(&self, source_id: u64, target_id: u64) -> Result<()> {
        self.require_leader()?;
        self.require_bootstrapped()?;
        let term = self
            .state
            .serving_term()
            .ok_or_else(|| self.state.not_leader())?;
        let (source, target) = self.state.read(|s| {
            (
                s.regions().get(source_id).cloned(),
                s.regions().get(target_id).cloned(),
            )
        });
        let source = source.ok_or(Error::RegionNotFound {
            region_id: source_id,
        })?;
        let target = target.ok_or(Error::RegionNotFound {
            region_id: target_id,
        })?;
        let (source, target) = {
            let heartbeats = self.heartbeats.lock();
            (
                candidate(&heartbeats, &source),
                candidate(&heartbeats, &target),
            )
        };
        let now_ms = self.clock.now_ms();
        let mut scheduler = self.replica_scheduler.lock();
        let scheduler = scheduler.as_mut().ok_or_else(|| {
            Error::InvalidArgument("replica scheduling is off (schedule_replicas = false)".into())
        })?;
        scheduler
            .add_merge(term, source, target, &|_| false, now_ms)
            .map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    /// The merges in flight (soft state of the serving leader), by source region id.
    pub fn merge_operators(&self) -> Vec<MergeOperator> {
        self.replica_scheduler
            .lock()
            .as_ref()
            .map(|s| s.merges().operators().values().cloned().collect())
            .unwrap_or_default()
    }
}
