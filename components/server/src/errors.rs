//! The one place internal errors become wire errors.
//!
//! Region errors go into the response's `region_error`, exactly where TiKV puts them, because
//! clients re-route and retry on them; everything else is a message in the response's `error`.

use proto::errorpb;
use raftstore::Error;

/// Either a region error or a plain message, as a raw response carries them.
pub enum WireError {
    Region(Box<errorpb::Error>),
    Other(String),
}

/// Converts a raftstore error.
pub fn to_wire(e: &Error) -> WireError {
    let message = e.to_string();
    let mut err = errorpb::Error {
        message: message.clone(),
        ..Default::default()
    };
    match e {
        Error::NotLeader { region_id, leader } => {
            err.not_leader = Some(errorpb::NotLeader {
                region_id: *region_id,
                leader: *leader,
            });
        }
        Error::RegionNotFound(region_id) => {
            err.region_not_found = Some(errorpb::RegionNotFound {
                region_id: *region_id,
            });
        }
        Error::EpochNotMatch {
            current_regions, ..
        } => {
            err.epoch_not_match = Some(errorpb::EpochNotMatch {
                current_regions: current_regions.clone(),
            });
        }
        Error::KeyNotInRegion {
            key,
            region_id,
            start_key,
            end_key,
        } => {
            err.key_not_in_region = Some(errorpb::KeyNotInRegion {
                key: key.clone().into(),
                region_id: *region_id,
                start_key: start_key.clone().into(),
                end_key: end_key.clone().into(),
            });
        }
        Error::StoreNotMatch { requested, actual } => {
            err.store_not_match = Some(errorpb::StoreNotMatch {
                request_store_id: *requested,
                actual_store_id: *actual,
            });
        }
        Error::RaftEntryTooLarge { region_id, size } => {
            err.raft_entry_too_large = Some(errorpb::RaftEntryTooLarge {
                region_id: *region_id,
                entry_size: *size,
            });
        }
        Error::ProposalInMergingMode(region_id) => {
            err.proposal_in_merging_mode = Some(errorpb::ProposalInMergingMode {
                region_id: *region_id,
            });
        }
        Error::StaleCommand => err.stale_command = Some(errorpb::StaleCommand {}),
        Error::ServerIsBusy(reason) => {
            err.server_is_busy = Some(errorpb::ServerIsBusy {
                reason: reason.clone(),
                backoff_ms: crate::admission::BUSY_BACKOFF_MS,
            });
        }
        Error::Shutdown => {
            err.server_is_busy = Some(errorpb::ServerIsBusy {
                reason: "store is shutting down".into(),
                ..Default::default()
            });
        }
        Error::InvalidRequest(_) | Error::Engine(_) => return WireError::Other(message),
    }
    WireError::Region(Box::new(err))
}
