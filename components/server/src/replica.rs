//! PD's replica operators as the store carries them out: a region heartbeat answer asking for
//! a membership change becomes a conf change proposed to the region's leader here.
//!
//! Deliberately absent: deciding anything (PD does), retrying (PD asks again on the region's
//! next heartbeat until its operator is done or timed out).

use proto::pdpb::{ConfChangeType, RegionHeartbeatResponse};
use raftstore::conf_change::{ChangeKind, PeerChange};

/// The membership change a heartbeat answer asks for, if any.
pub fn peer_change(resp: &RegionHeartbeatResponse) -> Option<PeerChange> {
    let change = resp.change_peer.as_ref()?;
    let peer = change.peer?;
    let kind = match ConfChangeType::try_from(change.change_type).ok()? {
        ConfChangeType::AddNode => ChangeKind::AddVoter,
        ConfChangeType::AddLearnerNode => ChangeKind::AddLearner,
        ConfChangeType::RemoveNode => ChangeKind::Remove,
    };
    Some(PeerChange { kind, peer })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::metapb::Peer;
    use proto::pdpb::ChangePeer;

    #[test]
    fn heartbeat_answers_map_to_conf_changes() {
        let peer = Peer {
            id: 7,
            store_id: 4,
            ..Default::default()
        };
        let answer = |t: ConfChangeType| RegionHeartbeatResponse {
            change_peer: Some(ChangePeer {
                peer: Some(peer),
                change_type: t as i32,
            }),
            ..Default::default()
        };
        for (t, kind) in [
            (ConfChangeType::AddNode, ChangeKind::AddVoter),
            (ConfChangeType::AddLearnerNode, ChangeKind::AddLearner),
            (ConfChangeType::RemoveNode, ChangeKind::Remove),
        ] {
            assert_eq!(peer_change(&answer(t)), Some(PeerChange { kind, peer }));
        }
        assert_eq!(peer_change(&RegionHeartbeatResponse::default()), None);
        let unknown = RegionHeartbeatResponse {
            change_peer: Some(ChangePeer {
                peer: Some(peer),
                change_type: 99,
            }),
            ..Default::default()
        };
        assert_eq!(peer_change(&unknown), None);
    }
}
