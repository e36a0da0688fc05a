//! Membership changes of a region: which peers it has and in which role, as Raft's conf
//! changes (raft-rs `ConfChangeV2`) move it.
//!
//! Protocol (TiKV's): a change is proposed as a `ConfChangeV2` entry whose context is a
//! [`crate::cmd::RaftCmd`] carrying the region epoch it was decided under and the peers it names
//! (with their stores, which Raft's node ids alone do not say). Every replica applying the entry
//! checks the epoch and computes the new peer list with [`apply_changes`]; the peer then feeds the
//! same `ConfChangeV2` to raft-rs. Accepted or refused, the decision is the same everywhere.
//!
//! - One change (add a learner, promote a learner, remove a peer) is a simple change.
//! - Several changes at once enter joint consensus: a voter being added is `IncomingVoter`, a
//!   voter turned learner `DemotingVoter`; both old and new voter sets must agree until the
//!   leader proposes the empty change that leaves the joint state ([`leave_joint`]).
//!
//! Invariants:
//! - The region's peer list is the persisted conf state: [`conf_state_of`] derives voters,
//!   outgoing voters, learners and next learners from the roles, so a restart (or a snapshot)
//!   restores exactly what raft-rs had.
//! - Every applied change bumps the epoch's `conf_ver` by the number of changes (leaving joint
//!   counts one), so requests and commands decided under the old membership are refused.
//! - Removing a voter goes through demotion when it is one of several changes (a voter never
//!   leaves in the same step as another voter joins).
//!
//! Deliberately absent: deciding what to change (PD's operators do), and the leader's safety
//! checks on the live cluster (see `peer::admin`).

use proto::metapb::{self, PeerRole};
use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};

use crate::{Error, Result};

/// One requested change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerChange {
    pub kind: ChangeKind,
    pub peer: metapb::Peer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// Add a new voter, or promote a learner.
    AddVoter,
    /// Add a new learner, or demote a voter.
    AddLearner,
    Remove,
}

impl ChangeKind {
    pub fn raft_type(self) -> ConfChangeType {
        match self {
            ChangeKind::AddVoter => ConfChangeType::AddNode,
            ChangeKind::AddLearner => ConfChangeType::AddLearnerNode,
            ChangeKind::Remove => ConfChangeType::RemoveNode,
        }
    }

    pub fn from_raft(t: ConfChangeType) -> ChangeKind {
        match t {
            ConfChangeType::AddNode => ChangeKind::AddVoter,
            ConfChangeType::AddLearnerNode => ChangeKind::AddLearner,
            ConfChangeType::RemoveNode => ChangeKind::Remove,
        }
    }
}

/// The raft-rs conf change for `changes`: simple for one change, joint (left explicitly) for
/// several.
pub fn to_raft(changes: &[PeerChange]) -> ConfChangeV2 {
    let mut cc = ConfChangeV2::default();
    for c in changes {
        let mut single = ConfChangeSingle::default();
        single.set_change_type(c.kind.raft_type());
        single.node_id = c.peer.id;
        cc.mut_changes().push(single);
    }
    if changes.len() > 1 {
        cc.set_transition(ConfChangeTransition::Explicit);
    }
    cc
}

/// The conf change that leaves a joint state.
pub fn leave_joint() -> ConfChangeV2 {
    ConfChangeV2::default()
}

/// Whether the region is in a joint state.
pub fn is_joint(region: &metapb::Region) -> bool {
    region
        .peers
        .iter()
        .any(|p| matches!(p.role(), PeerRole::IncomingVoter | PeerRole::DemotingVoter))
}

/// Raft's conf state as the region's peer roles say.
pub fn conf_state_of(region: &metapb::Region) -> raft::eraftpb::ConfState {
    let ids = |pred: &dyn Fn(PeerRole) -> bool| -> Vec<u64> {
        region
            .peers
            .iter()
            .filter(|p| pred(p.role()))
            .map(|p| p.id)
            .collect()
    };
    let mut cs = raft::eraftpb::ConfState {
        voters: ids(&|r| matches!(r, PeerRole::Voter | PeerRole::IncomingVoter)),
        learners: ids(&|r| r == PeerRole::Learner),
        ..Default::default()
    };
    if is_joint(region) {
        cs.voters_outgoing = ids(&|r| matches!(r, PeerRole::Voter | PeerRole::DemotingVoter));
        cs.learners_next = ids(&|r| r == PeerRole::DemotingVoter);
    }
    cs
}

/// The region after `cc` (with the stores of new peers from `named`), or why every replica
/// refuses it. Bumps `conf_ver`.
pub fn apply_changes(
    region: &metapb::Region,
    cc: &ConfChangeV2,
    named: &[metapb::Peer],
) -> Result<metapb::Region> {
    let refuse = |msg: String| Err(Error::InvalidRequest(format!("conf change refused: {msg}")));
    let mut out = region.clone();
    let joint_now = is_joint(region);
    if cc.leave_joint() {
        if !joint_now {
            return refuse("leave joint while not in a joint state".into());
        }
        for p in &mut out.peers {
            match p.role() {
                PeerRole::IncomingVoter => p.set_role(PeerRole::Voter),
                PeerRole::DemotingVoter => p.set_role(PeerRole::Learner),
                _ => {}
            }
        }
        bump_conf_ver(&mut out, 1);
        return Ok(out);
    }
    if joint_now {
        return refuse("the region is in a joint state".into());
    }
    let joint = cc.enter_joint().is_some();
    let changes = cc.get_changes();
    for c in changes {
        let id = c.node_id;
        let existing = out.peers.iter().position(|p| p.id == id);
        match (ChangeKind::from_raft(c.get_change_type()), existing) {
            (ChangeKind::AddVoter, Some(i)) => match out.peers[i].role() {
                PeerRole::Learner => out.peers[i].set_role(if joint {
                    PeerRole::IncomingVoter
                } else {
                    PeerRole::Voter
                }),
                _ => return refuse(format!("peer {id} is already a voter")),
            },
            (ChangeKind::AddLearner, Some(i)) => match out.peers[i].role() {
                PeerRole::Voter if joint => out.peers[i].set_role(PeerRole::DemotingVoter),
                PeerRole::Voter => return refuse(format!("demoting voter {id} needs joint")),
                _ => return refuse(format!("peer {id} is already a learner")),
            },
            (ChangeKind::AddVoter | ChangeKind::AddLearner, None) => {
                let Some(named) = named.iter().find(|p| p.id == id) else {
                    return refuse(format!("no store named for new peer {id}"));
                };
                if out.peers.iter().any(|p| p.store_id == named.store_id) {
                    return refuse(format!("store {} already has a peer", named.store_id));
                }
                let mut p = *named;
                p.set_role(match (c.get_change_type(), joint) {
                    (ConfChangeType::AddNode, true) => PeerRole::IncomingVoter,
                    (ConfChangeType::AddNode, false) => PeerRole::Voter,
                    _ => PeerRole::Learner,
                });
                out.peers.push(p);
            }
            (ChangeKind::Remove, Some(i)) => {
                if joint && out.peers[i].role() == PeerRole::Voter {
                    return refuse(format!("voter {id} must be demoted before it is removed"));
                }
                out.peers.remove(i);
            }
            (ChangeKind::Remove, None) => return refuse(format!("peer {id} is not a member")),
        }
    }
    if !out
        .peers
        .iter()
        .any(|p| matches!(p.role(), PeerRole::Voter | PeerRole::IncomingVoter))
    {
        return refuse("no voter would be left".into());
    }
    bump_conf_ver(&mut out, changes.len() as u64);
    Ok(out)
}

fn bump_conf_ver(region: &mut metapb::Region, by: u64) {
    let epoch = region.region_epoch.get_or_insert_with(Default::default);
    epoch.conf_ver += by;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64, store_id: u64, role: PeerRole) -> metapb::Peer {
        let mut p = metapb::Peer {
            id,
            store_id,
            ..Default::default()
        };
        p.set_role(role);
        p
    }

    fn region(peers: Vec<metapb::Peer>) -> metapb::Region {
        metapb::Region {
            id: 1,
            peers,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 5,
                version: 3,
            }),
            ..Default::default()
        }
    }

    fn three() -> metapb::Region {
        region(vec![
            peer(1, 1, PeerRole::Voter),
            peer(2, 2, PeerRole::Voter),
            peer(3, 3, PeerRole::Voter),
        ])
    }

    fn change(kind: ChangeKind, id: u64, store: u64) -> PeerChange {
        PeerChange {
            kind,
            peer: peer(id, store, PeerRole::Voter),
        }
    }

    fn apply(r: &metapb::Region, changes: &[PeerChange]) -> Result<metapb::Region> {
        let named: Vec<_> = changes.iter().map(|c| c.peer).collect();
        apply_changes(r, &to_raft(changes), &named)
    }

    fn roles(r: &metapb::Region) -> Vec<(u64, PeerRole)> {
        r.peers.iter().map(|p| (p.id, p.role())).collect()
    }

    #[test]
    fn add_learner_then_promote_then_remove_bumps_conf_ver_each_time() {
        let r = apply(&three(), &[change(ChangeKind::AddLearner, 4, 4)]).unwrap();
        assert_eq!(roles(&r)[3], (4, PeerRole::Learner));
        assert_eq!(r.region_epoch.unwrap().conf_ver, 6);
        assert_eq!(r.region_epoch.unwrap().version, 3);
        assert_eq!(conf_state_of(&r).learners, vec![4]);
        let r = apply(&r, &[change(ChangeKind::AddVoter, 4, 4)]).unwrap();
        assert_eq!(conf_state_of(&r).voters, vec![1, 2, 3, 4]);
        let r = apply(&r, &[change(ChangeKind::Remove, 1, 1)]).unwrap();
        assert_eq!(conf_state_of(&r).voters, vec![2, 3, 4]);
        assert_eq!(r.region_epoch.unwrap().conf_ver, 8);
    }

    #[test]
    fn replacing_a_voter_goes_through_a_joint_state() {
        let r = apply(&three(), &[change(ChangeKind::AddLearner, 4, 4)]).unwrap();
        let joint = apply(
            &r,
            &[
                change(ChangeKind::AddVoter, 4, 4),
                change(ChangeKind::AddLearner, 1, 1),
            ],
        )
        .unwrap();
        assert!(is_joint(&joint));
        let cs = conf_state_of(&joint);
        assert_eq!(cs.voters, vec![2, 3, 4]);
        assert_eq!(cs.voters_outgoing, vec![1, 2, 3]);
        assert_eq!(cs.learners_next, vec![1]);
        assert!(cs.learners.is_empty());
        // Nothing else may change until the joint state is left.
        assert!(apply(&joint, &[change(ChangeKind::Remove, 1, 1)]).is_err());
        let left = apply_changes(&joint, &leave_joint(), &[]).unwrap();
        assert!(!is_joint(&left));
        assert_eq!(conf_state_of(&left).voters, vec![2, 3, 4]);
        assert_eq!(conf_state_of(&left).learners, vec![1]);
        assert_eq!(left.region_epoch.unwrap().conf_ver, 9);
        let done = apply(&left, &[change(ChangeKind::Remove, 1, 1)]).unwrap();
        assert_eq!(done.peers.len(), 3);
    }

    #[test]
    fn refused_changes() {
        let r = three();
        // A second peer on a store.
        assert!(apply(&r, &[change(ChangeKind::AddLearner, 9, 2)]).is_err());
        // Removing a stranger, promoting a voter, demoting without joint.
        assert!(apply(&r, &[change(ChangeKind::Remove, 9, 9)]).is_err());
        assert!(apply(&r, &[change(ChangeKind::AddVoter, 1, 1)]).is_err());
        assert!(apply(&r, &[change(ChangeKind::AddLearner, 1, 1)]).is_err());
        // Removing a voter in a joint change (it must be demoted).
        assert!(apply(
            &r,
            &[
                change(ChangeKind::AddLearner, 4, 4),
                change(ChangeKind::Remove, 1, 1)
            ]
        )
        .is_err());
        // Leaving a joint state that was never entered; leaving no voter.
        assert!(apply_changes(&r, &leave_joint(), &[]).is_err());
        let one = region(vec![peer(1, 1, PeerRole::Voter)]);
        assert!(apply(&one, &[change(ChangeKind::Remove, 1, 1)]).is_err());
    }
}
