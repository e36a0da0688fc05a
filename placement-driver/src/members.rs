//! The membership of PD's Raft group: the replicated member list, and how a membership change
//! (`rangekv ctl member add/remove`, PD's `/pd/api/v1/members`) becomes a Raft conf change.
//!
//! Protocol (etcd's with learners; TiKV moves region replicas the same way):
//! - **Add**: the leader checks the request against its list ([`plan`]), gives the new member a
//!   fresh id ([`choose_id`]) and proposes a raft-rs `ConfChangeV2` *AddLearnerNode* whose
//!   context is the [`MemberChange`]. A learner gets the log (a snapshot first: its log is
//!   empty) but never votes, so a member that is added and never started, or is slow to catch
//!   up, costs the group neither availability nor a larger quorum.
//! - **Promote**: a ready leader promotes a learner (*AddNode*) once its log has everything
//!   committed but for [`MAX_PROMOTE_LAG`] entries and it answers ([`learner_to_promote`]).
//! - **Remove**: *RemoveNode* of a voter or learner. The removed member stops its Raft node when
//!   it applies its own removal; a removed leader thus stops leading, and the others elect a new
//!   leader once its heartbeats stop (an election timeout).
//! - Every member applies a committed change to its list with [`apply`] (deterministic: the
//!   same list on every member) and writes the new list with the applied index in one batch, so
//!   after a crash the list and the applied index agree, and raft-rs's `ConfState` is always
//!   [`conf_state`] of the list loaded with it.
//! - One change at a time, each of one member: raft-rs refuses a conf change while an earlier one
//!   is not applied, and a single-member `ConfChangeV2` is a simple change, never a joint one, so
//!   any two majorities of consecutive configurations intersect.
//!
//! The list ([`MemberList`], `pdraftpb`) is written on the first change (key
//! [`MEMBER_LIST_KEY`], inside the replicated state that snapshots carry); until then every
//! member's list is its `initial_cluster`, all voters ([`initial`]): the start-up checks of
//! [`crate::membership`] make sure they agree.
//!
//! Member ids: a member of `initial_cluster` has [`member_id`] of its name. An added member gets
//! that id too unless some member ever had it (a name removed and added again: its old
//! incarnation may have votes the new one does not remember), then one derived from the name
//! and the log index; removed ids are kept in the list and never given out again.
//!
//! Pure: no IO, no Raft; `crate::raft_node::conf_change` carries the decisions out.

use engine::{Engine, WriteBatch, CF_DEFAULT};
use prost::Message as _;
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState};

pub use proto::pdraftpb::member_change::Kind as ChangeKind;
pub use proto::pdraftpb::{MemberChange, MemberList, PdMember};

use crate::{Error, Result};

/// Key of the replicated [`MemberList`] in column family `default`.
pub const MEMBER_LIST_KEY: &[u8] = b"pd/members";

/// A learner whose log is at most this many entries behind the commit index is promoted.
pub const MAX_PROMOTE_LAG: u64 = 100;

/// Longest member name.
const MAX_NAME_LEN: usize = 64;

/// What an operator asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberRequest {
    /// Add a member `name` serving at `url`, as a learner (promoted once caught up).
    Add { name: String, url: String },
    /// Remove the member `name`.
    Remove { name: String },
    /// Promote the learner `id` (the leader asks this itself).
    Promote { id: u64 },
}

/// A stable, non-zero member id derived from a name (64-bit FNV-1a).
pub fn member_id(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

/// The list of a group that never changed: `(id, name, url)` of `initial_cluster`, all voters.
pub fn initial(members: impl IntoIterator<Item = (u64, String, String)>) -> MemberList {
    MemberList {
        members: members
            .into_iter()
            .map(|(id, name, url)| PdMember {
                id,
                name,
                url,
                learner: false,
            })
            .collect(),
        removed_ids: Vec::new(),
    }
}

/// raft-rs's configuration of `list`.
pub fn conf_state(list: &MemberList) -> ConfState {
    let (learners, voters): (Vec<&PdMember>, Vec<&PdMember>) =
        list.members.iter().partition(|m| m.learner);
    ConfState {
        voters: voters.iter().map(|m| m.id).collect(),
        learners: learners.iter().map(|m| m.id).collect(),
        ..Default::default()
    }
}

/// Loads the replicated list, `None` if membership never changed.
pub fn load(engine: &Engine) -> Result<Option<MemberList>> {
    engine
        .get(CF_DEFAULT, MEMBER_LIST_KEY)?
        .map(|data| decode(&data))
        .transpose()
}

/// Decodes a stored list.
pub fn decode(data: &[u8]) -> Result<MemberList> {
    MemberList::decode(data).map_err(|e| Error::Corrupt(format!("PD member list: {e}")))
}

/// Stages writing `list`.
pub fn write(list: &MemberList, wb: &mut WriteBatch) {
    wb.put(CF_DEFAULT, MEMBER_LIST_KEY, &list.encode_to_vec());
}

/// An id for a member `name` added at log `index`: see the module docs.
pub fn choose_id(list: &MemberList, name: &str, index: u64) -> u64 {
    let taken = |id: u64| list.members.iter().any(|m| m.id == id) || list.removed_ids.contains(&id);
    let mut id = member_id(name);
    let mut salt = index;
    while taken(id) {
        id = member_id(&format!("{name}#{salt}"));
        salt += 1;
    }
    id
}

/// Checks `request` against `list` on the leader and makes the change to propose; `index` is
/// the index the proposal will get (it seeds a fresh id). Rejections are `InvalidArgument`.
pub fn plan(list: &MemberList, request: &MemberRequest, index: u64) -> Result<MemberChange> {
    let invalid = |msg: String| Err(Error::InvalidArgument(msg));
    match request {
        MemberRequest::Add { name, url } => {
            check_name(name)?;
            let url = check_url(url)?;
            if list.members.iter().any(|m| m.name == *name) {
                return invalid(format!("{name:?} is already a PD member"));
            }
            if let Some(m) = list
                .members
                .iter()
                .find(|m| crate::config::strip_scheme(&m.url) == crate::config::strip_scheme(&url))
            {
                return invalid(format!("PD member {:?} already serves at {url}", m.name));
            }
            Ok(MemberChange {
                kind: ChangeKind::AddLearner as i32,
                member: Some(PdMember {
                    id: choose_id(list, name, index),
                    name: name.clone(),
                    url,
                    learner: true,
                }),
            })
        }
        MemberRequest::Remove { name } => {
            let Some(m) = list.members.iter().find(|m| m.name == *name) else {
                return invalid(format!("{name:?} is not a PD member"));
            };
            let voters = list.members.iter().filter(|m| !m.learner).count();
            if !m.learner && voters == 1 {
                return invalid(format!(
                    "{name:?} is the only voting PD member; add another before removing it"
                ));
            }
            Ok(MemberChange {
                kind: ChangeKind::Remove as i32,
                member: Some(m.clone()),
            })
        }
        MemberRequest::Promote { id } => match list.members.iter().find(|m| m.id == *id) {
            Some(m) if m.learner => Ok(MemberChange {
                kind: ChangeKind::Promote as i32,
                member: Some(PdMember {
                    learner: false,
                    ..m.clone()
                }),
            }),
            Some(m) => invalid(format!("PD member {:?} already votes", m.name)),
            None => invalid(format!("no PD member has id {id}")),
        },
    }
}

/// The raft-rs conf change carrying out `change` (one member: a simple change).
pub fn conf_change(change: &MemberChange) -> ConfChangeV2 {
    let id = change.member.as_ref().map_or(0, |m| m.id);
    let change_type = match change.kind() {
        ChangeKind::AddLearner => ConfChangeType::AddLearnerNode,
        ChangeKind::Promote => ConfChangeType::AddNode,
        ChangeKind::Remove => ConfChangeType::RemoveNode,
    };
    let mut single = ConfChangeSingle::default();
    single.set_change_type(change_type);
    single.node_id = id;
    let mut cc = ConfChangeV2::default();
    cc.set_changes(vec![single].into());
    cc
}

/// The list after a committed `change`; every member computes the same. An error (the change
/// does not fit the list, which a leader's [`plan`] prevents) leaves the list as it is.
pub fn apply(list: &MemberList, change: &MemberChange) -> std::result::Result<MemberList, String> {
    let member = change
        .member
        .as_ref()
        .filter(|m| m.id != 0)
        .ok_or("a member change without a member")?;
    let mut next = list.clone();
    let pos = next.members.iter().position(|m| m.id == member.id);
    match (change.kind(), pos) {
        (ChangeKind::AddLearner, None) => {
            if next.removed_ids.contains(&member.id) {
                return Err(format!("member id {} was removed before", member.id));
            }
            if next.members.iter().any(|m| m.name == member.name) {
                return Err(format!("{:?} is already a member", member.name));
            }
            next.members.push(PdMember {
                learner: true,
                ..member.clone()
            });
        }
        (ChangeKind::AddLearner, Some(_)) => {
            return Err(format!("member {} is already in the group", member.id))
        }
        (ChangeKind::Promote, Some(i)) if next.members[i].learner => {
            next.members[i].learner = false;
        }
        (ChangeKind::Promote, _) => {
            return Err(format!(
                "member {} is not a learner of the group",
                member.id
            ))
        }
        (ChangeKind::Remove, Some(i)) => {
            next.members.remove(i);
            next.removed_ids.push(member.id);
        }
        (ChangeKind::Remove, None) => {
            return Err(format!("member {} is not in the group", member.id))
        }
    }
    Ok(next)
}

/// What the leader knows of a member's log: how far it matches, and whether it answered
/// within the last election timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub matched: u64,
    pub recent_active: bool,
}

/// The learner a leader whose commit index is `committed` should promote now, if any: one that
/// answers and lags by at most [`MAX_PROMOTE_LAG`] entries.
pub fn learner_to_promote(
    list: &MemberList,
    committed: u64,
    progress: impl Fn(u64) -> Option<Progress>,
) -> Option<u64> {
    list.members
        .iter()
        .filter(|m| m.learner)
        .find(|m| {
            progress(m.id).is_some_and(|p| {
                p.recent_active && p.matched > 0 && p.matched + MAX_PROMOTE_LAG >= committed
            })
        })
        .map(|m| m.id)
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid PD member name {name:?}: 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.'"
        )))
    }
}

/// The member URL `url` normalized to `http(s)://host:port`.
fn check_url(url: &str) -> Result<String> {
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let parsed: Option<axum::http::Uri> = with_scheme.parse().ok();
    match parsed {
        Some(uri)
            if matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.port_u16().is_some()
                && uri.host().is_some_and(|h| !h.is_empty())
                && uri.path_and_query().is_none_or(|p| p.as_str() == "/") =>
        {
            Ok(with_scheme.trim_end_matches('/').to_owned())
        }
        _ => Err(Error::InvalidArgument(format!(
            "invalid PD member URL {url:?}: expected http://host:port"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, learner: bool) -> PdMember {
        PdMember {
            id,
            name: name.to_owned(),
            url: format!("http://10.0.0.{id}:2379"),
            learner,
        }
    }

    fn group() -> MemberList {
        MemberList {
            members: vec![
                member(1, "a", false),
                member(2, "b", false),
                member(3, "c", false),
            ],
            removed_ids: vec![],
        }
    }

    fn add(name: &str, url: &str) -> MemberRequest {
        MemberRequest::Add {
            name: name.to_owned(),
            url: url.to_owned(),
        }
    }

    fn remove(name: &str) -> MemberRequest {
        MemberRequest::Remove {
            name: name.to_owned(),
        }
    }

    #[test]
    fn an_added_member_is_a_learner_with_the_id_of_its_name() {
        let change = plan(&group(), &add("d", "10.0.0.4:2379"), 10).unwrap();
        assert_eq!(change.kind(), ChangeKind::AddLearner);
        let m = change.member.clone().unwrap();
        assert_eq!(
            (m.id, m.url.as_str(), m.learner),
            (member_id("d"), "http://10.0.0.4:2379", true)
        );
        let next = apply(&group(), &change).unwrap();
        assert_eq!(next.members.len(), 4);
        let cs = conf_state(&next);
        assert_eq!(
            (cs.voters, cs.learners),
            (vec![1, 2, 3], vec![member_id("d")])
        );
        // The same change applied twice (a replay the applied index missed) is refused, not doubled.
        assert!(apply(&next, &change).is_err());
    }

    #[test]
    fn bad_add_requests_are_refused() {
        let table = [
            (add("", "10.0.0.4:2379"), "invalid PD member name"),
            (add("d e", "10.0.0.4:2379"), "invalid PD member name"),
            (
                add(&"x".repeat(65), "10.0.0.4:2379"),
                "invalid PD member name",
            ),
            (add("d", "10.0.0.4"), "invalid PD member URL"),
            (add("d", "ftp://10.0.0.4:21"), "invalid PD member URL"),
            (
                add("d", "http://10.0.0.4:2379/path"),
                "invalid PD member URL",
            ),
            (add("b", "10.0.0.9:2379"), "already a PD member"),
            (add("d", "http://10.0.0.2:2379"), "already serves at"),
            (add("d", "10.0.0.2:2379"), "already serves at"),
        ];
        for (request, want) in table {
            let err = plan(&group(), &request, 10).unwrap_err().to_string();
            assert!(err.contains(want), "{request:?}: {err}");
        }
    }

    #[test]
    fn a_name_added_again_gets_a_new_id() {
        let change = plan(&group(), &remove("c"), 10).unwrap();
        let without_c = apply(&group(), &change).unwrap();
        assert_eq!(without_c.removed_ids, vec![3]);
        // A name that had the id of its name before: c's old id here is 3, so take a list where
        // c had member_id("c").
        let mut list = group();
        list.members[2].id = member_id("c");
        let removed = apply(&list, &plan(&list, &remove("c"), 11).unwrap()).unwrap();
        let again = plan(&removed, &add("c", "10.0.0.3:2379"), 12).unwrap();
        let id = again.member.as_ref().unwrap().id;
        assert_ne!(id, member_id("c"));
        assert_ne!(id, 0);
        let back = apply(&removed, &again).unwrap();
        assert!(back.members.iter().any(|m| m.name == "c" && m.id == id));
        // A removed id is never accepted again, even from a change made elsewhere.
        let stale = MemberChange {
            kind: ChangeKind::AddLearner as i32,
            member: Some(PdMember {
                id: member_id("c"),
                name: "c".to_owned(),
                url: "http://10.0.0.3:2379".to_owned(),
                learner: true,
            }),
        };
        assert!(apply(&removed, &stale)
            .unwrap_err()
            .contains("removed before"));
    }

    #[test]
    fn removal_rules() {
        let err = plan(&group(), &remove("z"), 10).unwrap_err().to_string();
        assert!(err.contains("not a PD member"), "{err}");
        let solo = MemberList {
            members: vec![member(1, "a", false), member(4, "d", true)],
            removed_ids: vec![],
        };
        let err = plan(&solo, &remove("a"), 10).unwrap_err().to_string();
        assert!(err.contains("only voting PD member"), "{err}");
        // A learner can always go, and so can a voter when another votes.
        let next = apply(&solo, &plan(&solo, &remove("d"), 10).unwrap()).unwrap();
        assert_eq!(conf_state(&next).voters, vec![1]);
        let next = apply(&group(), &plan(&group(), &remove("a"), 10).unwrap()).unwrap();
        assert_eq!(conf_state(&next).voters, vec![2, 3]);
        let cc = conf_change(&plan(&group(), &remove("a"), 10).unwrap());
        assert_eq!(cc.changes.len(), 1);
        assert_eq!(cc.changes[0].get_change_type(), ConfChangeType::RemoveNode);
        assert_eq!(cc.changes[0].node_id, 1);
        assert!(cc.enter_joint().is_none(), "a simple change, never joint");
    }

    #[test]
    fn promotion_rules() {
        let mut list = group();
        list.members.push(member(4, "d", true));
        let err = plan(&list, &MemberRequest::Promote { id: 1 }, 10).unwrap_err();
        assert!(err.to_string().contains("already votes"), "{err}");
        let change = plan(&list, &MemberRequest::Promote { id: 4 }, 10).unwrap();
        assert_eq!(
            conf_change(&change).changes[0].get_change_type(),
            ConfChangeType::AddNode
        );
        let next = apply(&list, &change).unwrap();
        assert_eq!(conf_state(&next).voters, vec![1, 2, 3, 4]);
        assert!(apply(&next, &change).is_err(), "promoted once");
    }

    #[test]
    fn a_learner_is_promoted_once_caught_up_and_answering() {
        let mut list = group();
        list.members.push(member(4, "d", true));
        let at = |matched, recent_active| {
            move |id: u64| {
                (id == 4).then_some(Progress {
                    matched,
                    recent_active,
                })
            }
        };
        let table = [
            (at(0, true), None, "nothing yet (no snapshot)"),
            (at(500, true), Some(4), "caught up"),
            (at(400, true), Some(4), "within the lag"),
            (at(399, true), None, "too far behind"),
            (at(500, false), None, "not answering"),
        ];
        for (progress, want, what) in table {
            assert_eq!(learner_to_promote(&list, 500, progress), want, "{what}");
        }
        assert_eq!(
            learner_to_promote(&group(), 500, |_| None),
            None,
            "no learner"
        );
    }

    #[test]
    fn the_initial_list_is_all_voters() {
        let list = initial([(1, "a".to_owned(), "http://x:1".to_owned())]);
        assert_eq!(conf_state(&list).voters, vec![1]);
        assert!(conf_state(&list).learners.is_empty());
        assert_eq!(decode(&list.encode_to_vec()).unwrap(), list);
        assert!(decode(b"\xff\xff").is_err());
    }
}
