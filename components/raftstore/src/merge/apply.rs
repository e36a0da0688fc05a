//! Applying the merge commands on the apply worker (the protocol is in the parent module).
//! Each is deterministic: the same verdict and the same writes on every replica.

use proto::raft_serverpb::{MergeState, PeerState};

use crate::apply::{Batch, Delegate, MergeEvent};
use crate::bootstrap::{write_merging_state, write_region_state};
use crate::cmd::{AdminCmd, RaftCmd, WriteResponse};
use crate::{Error, Result};

/// PrepareMerge at `index` on the source: new epoch, state `Merging`.
pub(crate) fn prepare(
    d: &mut Delegate,
    cmd: &RaftCmd,
    admin: &AdminCmd,
    index: u64,
    batch: &mut Batch,
) -> Result<WriteResponse> {
    if cmd.epoch != d.region.region_epoch {
        return Err(Error::EpochNotMatch {
            msg: "merge prepared under another epoch".into(),
            current_regions: vec![d.region.clone()],
        });
    }
    let target = admin
        .target
        .as_ref()
        .ok_or_else(|| Error::InvalidRequest("PrepareMerge without a target".into()))?;
    super::check_pair(&d.region, target).map_err(Error::InvalidRequest)?;
    let region = super::prepared_region(&d.region);
    let state = MergeState {
        min_index: index,
        target: Some(target.clone()),
        commit: index - 1,
    };
    write_merging_state(&mut batch.wb, &region, &state);
    tracing::info!(
        region_id = region.id,
        target = target.id,
        index,
        "merge prepared"
    );
    d.region = region.clone();
    d.merge_state = Some(state.clone());
    batch
        .merges
        .entry(region.id)
        .or_default()
        .push(MergeEvent::Prepared {
            region: region.clone(),
            state,
        });
    Ok(WriteResponse {
        regions: vec![region],
        ..Default::default()
    })
}

/// CommitMerge on the target: the merged range, and the source's `Tombstone` in the same batch.
/// The replica made sure the source replica beside it caught up and stopped applying.
pub(crate) fn commit(
    d: &mut Delegate,
    admin: &AdminCmd,
    batch: &mut Batch,
) -> Result<WriteResponse> {
    let (Some(source), Some(state)) = (admin.source.as_ref(), admin.merge_state.as_ref()) else {
        return Err(Error::InvalidRequest(
            "CommitMerge without its source".into(),
        ));
    };
    super::check_commit(&d.region, source, state).map_err(|msg| Error::EpochNotMatch {
        msg,
        current_regions: vec![d.region.clone()],
    })?;
    let merged = super::merged_region(&d.region, source);
    write_region_state(&mut batch.wb, &merged, PeerState::Normal);
    write_region_state(&mut batch.wb, source, PeerState::Tombstone);
    tracing::info!(
        region_id = merged.id,
        source = source.id,
        epoch = ?merged.region_epoch,
        "merge committed"
    );
    d.region = merged.clone();
    batch
        .merges
        .entry(merged.id)
        .or_default()
        .push(MergeEvent::Committed {
            region: merged.clone(),
            source: source.clone(),
        });
    Ok(WriteResponse {
        regions: vec![merged],
        ..Default::default()
    })
}

/// RollbackMerge on the source: state `Normal` again, under a new version.
pub(crate) fn rollback(
    d: &mut Delegate,
    admin: &AdminCmd,
    batch: &mut Batch,
) -> Result<WriteResponse> {
    let Some(current) = &d.merge_state else {
        return Err(Error::InvalidRequest("no merge to roll back".into()));
    };
    if admin.merge_state.as_ref().map(|s| s.min_index) != Some(current.min_index) {
        return Err(Error::InvalidRequest(
            "rollback of another merge attempt".into(),
        ));
    }
    let region = super::rolled_back_region(&d.region);
    write_region_state(&mut batch.wb, &region, PeerState::Normal);
    tracing::info!(region_id = region.id, "merge rolled back");
    d.region = region.clone();
    d.merge_state = None;
    batch
        .merges
        .entry(region.id)
        .or_default()
        .push(MergeEvent::RolledBack {
            region: region.clone(),
        });
    Ok(WriteResponse {
        regions: vec![region],
        ..Default::default()
    })
}
