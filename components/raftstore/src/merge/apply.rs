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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::AdminKind;
    use proto::metapb::{Peer, Region, RegionEpoch};
    use raft_log::ApplyState;

    fn region(id: u64, start: &[u8], end: &[u8], version: u64) -> Region {
        Region {
            id,
            start_key: start.to_vec().into(),
            end_key: end.to_vec().into(),
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version,
            }),
            peers: (1..=3)
                .map(|s| Peer {
                    id: id * 10 + s,
                    store_id: s,
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn prepare_cmd(source: &Region, target: &Region) -> (RaftCmd, AdminCmd) {
        let admin = AdminCmd {
            kind: AdminKind::PrepareMerge as i32,
            target: Some(target.clone()),
            ..Default::default()
        };
        let cmd = RaftCmd {
            region_id: source.id,
            epoch: source.region_epoch,
            ops: vec![],
            admin: Some(admin.clone()),
        };
        (cmd, admin)
    }

    #[test]
    fn prepare_records_the_merge_and_only_under_the_current_epoch() {
        let (source, target) = (region(2, b"m", b"", 3), region(1, b"", b"m", 5));
        let mut d = Delegate::new(source.clone(), ApplyState::default(), None);
        let mut batch = Batch::new();
        let (mut cmd, admin) = prepare_cmd(&source, &target);
        cmd.epoch = Some(RegionEpoch {
            conf_ver: 1,
            version: 2,
        });
        assert!(matches!(
            prepare(&mut d, &cmd, &admin, 10, &mut batch),
            Err(Error::EpochNotMatch { .. })
        ));
        assert!(batch.wb.is_empty() && d.merge_state.is_none());
        let (cmd, admin) = prepare_cmd(&source, &target);
        prepare(&mut d, &cmd, &admin, 10, &mut batch).unwrap();
        let state = d.merge_state.clone().unwrap();
        assert_eq!((state.min_index, state.commit), (10, 9));
        assert_eq!(state.target.as_ref(), Some(&target));
        assert_eq!(d.region.region_epoch.unwrap().version, 4);
        assert_eq!(batch.merges[&2].len(), 1);
        assert!(!batch.wb.is_empty());
    }

    #[test]
    fn commit_absorbs_the_source_only_at_the_recorded_epoch() {
        let (source, target) = (region(2, b"m", b"", 3), region(1, b"", b"m", 5));
        let state = MergeState {
            min_index: 10,
            target: Some(target.clone()),
            commit: 9,
        };
        let admin = AdminCmd {
            kind: AdminKind::CommitMerge as i32,
            source: Some(crate::merge::prepared_region(&source)),
            merge_state: Some(state),
            ..Default::default()
        };
        // The target split meanwhile: refused, nothing written.
        let mut moved = Delegate::new(region(1, b"", b"g", 6), ApplyState::default(), None);
        let mut batch = Batch::new();
        assert!(commit(&mut moved, &admin, &mut batch).is_err());
        assert!(batch.wb.is_empty() && batch.merges.is_empty());
        // At the recorded epoch: one region over both ranges.
        let mut d = Delegate::new(target.clone(), ApplyState::default(), None);
        commit(&mut d, &admin, &mut batch).unwrap();
        assert_eq!(
            (&d.region.start_key[..], &d.region.end_key[..]),
            (&b""[..], &b""[..])
        );
        assert_eq!(d.region.region_epoch.unwrap().version, 6);
        assert!(!batch.wb.is_empty());
    }

    #[test]
    fn rollback_needs_the_same_merge_attempt() {
        let (source, target) = (region(2, b"m", b"", 3), region(1, b"", b"m", 5));
        let mut d = Delegate::new(source.clone(), ApplyState::default(), None);
        let mut batch = Batch::new();
        let rollback_of = |min_index| AdminCmd {
            kind: AdminKind::RollbackMerge as i32,
            merge_state: Some(MergeState {
                min_index,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            rollback(&mut d, &rollback_of(10), &mut batch).is_err(),
            "not merging"
        );
        let (cmd, admin) = prepare_cmd(&source, &target);
        prepare(&mut d, &cmd, &admin, 10, &mut batch).unwrap();
        assert!(
            rollback(&mut d, &rollback_of(7), &mut batch).is_err(),
            "another attempt"
        );
        rollback(&mut d, &rollback_of(10), &mut batch).unwrap();
        assert!(d.merge_state.is_none());
        assert_eq!(d.region.region_epoch.unwrap().version, 5);
    }
}
