//! Which PD group a member's data directory belongs to, and whether a member may start on it.
//!
//! A PD member's Raft state (its log, its term and its vote) is what makes it a safe voter. A
//! member that comes back with an empty data directory and rejoins as a voter has forgotten its
//! vote (it can vote twice in one term) and its log (it can help elect a member whose log misses
//! committed entries, losing committed TSO and id bounds, so timestamps repeat): it must not
//! start. Its way back is a membership change ([`crate::members`]): remove it, add it again
//! (it gets a new member id), and start it on the empty directory to join.
//!
//! The rules, modelled on etcd's `--initial-cluster-state`:
//! - The first start of a member on an empty data directory writes, in one synced batch, the
//!   initial Raft state of the group (the same on every member) and a [`MemberRecord`]: this
//!   member's name and the names of all members (the voters). From then on the directory
//!   belongs to that group.
//! - Empty data directory: with [`InitialClusterState::New`] (the default, so that scripts that
//!   create a group keep working) the member bootstraps as above; with
//!   [`InitialClusterState::Existing`] it **joins** a running group: it asks the members of
//!   its `initial_cluster` for the group's member list (`PdRaft/Members`, [`ask_members`]) and
//!   starts only if the list has it as a learner, i.e. an operator added it
//!   (`rangekv ctl member add`); it takes the member id the list gives it, writes a record
//!   marked `joined`, and starts with no Raft state, which the leader's first snapshot brings
//!   ([`join`]). Still a voter of the list: it is a wiped member, refused
//!   ([`Error::EmptyDataDir`]); not in the list, or no member answers: refused
//!   ([`Error::CannotJoin`]). Each error names what the operator can do.
//! - A directory with a `joined` record and no Raft state is a member that joined and has not
//!   had its snapshot yet: it joins again. The snapshot's batch clears the mark, so a member
//!   that once had Raft state and lost it is refused as corrupt, never taken for a new one.
//! - Data directory with data: it is loaded, never bootstrapped again, whatever the initial
//!   cluster state says. Its record must name this member and, while the group's membership
//!   never changed, the same members as `initial_cluster` (names, not URLs: a member id is
//!   derived from its name, and addresses may change between restarts); otherwise the member
//!   refuses ([`Error::ForeignDataDir`]). Once membership changed, the replicated member list
//!   in the directory is the group and `initial_cluster` is not consulted (as etcd).
//! - The cluster id, once initialized, is persisted by the state machine (`pd/meta`). Before it
//!   loads or bootstraps anything, a member asks its peers for their cluster id and members
//!   (`GetMembers`, which followers answer too; [`ask_peers`]) and refuses to start if a peer
//!   that answers belongs to another cluster or, for a member about to bootstrap, names other
//!   members ([`check_peers`]). While
//!   running, every PD-to-PD Raft stream carries the sender's cluster id, and a member refuses
//!   the streams of another cluster (see [`crate::transport`]).
//! - A member that has data but no record was written by a version before records existed; the
//!   record is written from `initial_cluster` (nothing else can be checked). A directory holding
//!   the state of a single-node PD from before replication (state but no Raft log) is upgraded
//!   only for a single-node PD. Anything else partial is refused as corrupt.
//!
//! [`inspect`] reads what the directory holds, [`decide`] is the pure decision (table-tested
//! below), and [`prepare`] carries it out.
//!
//! Implementation caveats: with the default `new`, a member whose data was wiped and that is
//! restarted while none of its peers can be reached bootstraps again; only `existing` (or a
//! reachable peer that knows the member's cluster) stops it.

use std::path::Path;
use std::time::Duration;

use engine::{Engine, WriteBatch, CF_DEFAULT, CF_RAFT};
use prost::Message;
use raft_log::ApplyState;

use crate::config::InitialClusterState;
use crate::members::{MemberList, PdMember};
use crate::raft_node::PD_RAFT_GROUP_ID;
use crate::{Error, Result};

/// Key of the [`MemberRecord`] in the default column family of PD's engine.
pub const MEMBER_KEY: &[u8] = b"pd/member";

/// Which group a data directory belongs to; written once, when the member bootstraps.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct MemberRecord {
    /// Name of the member owning the directory.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Names of every member (voter) of the group, sorted.
    #[prost(string, repeated, tag = "2")]
    pub members: Vec<String>,
    /// The member id; 0 for [`crate::members::member_id`] of the name (a member of
    /// `initial_cluster`, or a record from before membership changes).
    #[prost(uint64, tag = "3")]
    pub id: u64,
    /// The member joined a running group and has not had its first snapshot yet.
    #[prost(bool, tag = "4")]
    pub joined: bool,
}

impl MemberRecord {
    /// The record of member `name` in a group of `members` (in any order; empty means a
    /// single-node PD).
    pub fn new(name: &str, members: impl IntoIterator<Item = String>) -> MemberRecord {
        let mut members: Vec<String> = members.into_iter().collect();
        if members.is_empty() {
            members.push(name.to_owned());
        }
        members.sort();
        members.dedup();
        MemberRecord {
            name: name.to_owned(),
            members,
            id: 0,
            joined: false,
        }
    }

    /// This member's id.
    pub fn member_id(&self) -> u64 {
        if self.id != 0 {
            self.id
        } else {
            crate::members::member_id(&self.name)
        }
    }

    /// Stages clearing the `joined` mark, if the record has it: the member has Raft state now.
    pub(crate) fn stage_joined_done(engine: &Engine, wb: &mut WriteBatch) -> Result<()> {
        if let Some(mut record) = MemberRecord::load(engine)? {
            if record.joined {
                record.joined = false;
                record.write(wb);
            }
        }
        Ok(())
    }

    /// Loads the record, if any.
    pub fn load(engine: &Engine) -> Result<Option<MemberRecord>> {
        engine
            .get(CF_DEFAULT, MEMBER_KEY)?
            .map(|data| {
                MemberRecord::decode(data.as_slice())
                    .map_err(|e| Error::Corrupt(format!("member record: {e}")))
            })
            .transpose()
    }

    pub(crate) fn write(&self, wb: &mut WriteBatch) {
        wb.put(CF_DEFAULT, MEMBER_KEY, &self.encode_to_vec());
    }
}

/// What a data directory holds, as far as starting a member is concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Found {
    /// PD's Raft group is bootstrapped (its apply state exists).
    pub raft_group: bool,
    /// Some Raft state exists (log entries, hard state or apply state).
    pub raft_data: bool,
    /// Some state machine record exists (`pd/meta`, stores, regions).
    pub state_data: bool,
    /// The group's membership changed at least once (a replicated member list exists).
    pub members_changed: bool,
    pub record: Option<MemberRecord>,
}

impl Found {
    /// Nothing at all: a new or wiped directory.
    pub fn is_empty(&self) -> bool {
        !self.raft_data && !self.state_data && self.record.is_none()
    }
}

/// What [`prepare`] does with the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StartAction {
    /// Empty directory, new group: write the initial Raft state and the record.
    Bootstrap,
    /// Empty directory (or one that joined and has no snapshot yet), running group: join it if
    /// it added this member (see [`join`]); the record is written, no Raft state.
    Join,
    /// The directory belongs to this member of this group: load it.
    Load,
    /// Data from before member records existed: write the record, then load.
    LoadAndRecord,
    /// The state of a single-node PD from before replication: bootstrap the Raft group of one
    /// over it and write the record.
    UpgradeSingleNode,
}

/// Reads what the data directory holds.
pub(crate) fn inspect(engine: &Engine) -> Result<Found> {
    let raft_group = ApplyState::load(engine, PD_RAFT_GROUP_ID)
        .map_err(crate::raft_node::log_error)?
        .is_some();
    let raft_data = raft_group || any_key(engine, CF_RAFT, |_| true)?;
    let state_data = any_key(engine, CF_DEFAULT, |key| key != MEMBER_KEY)?;
    Ok(Found {
        raft_group,
        raft_data,
        state_data,
        members_changed: crate::members::load(engine)?.is_some(),
        record: MemberRecord::load(engine)?,
    })
}

fn any_key(engine: &Engine, cf: &str, mut wanted: impl FnMut(&[u8]) -> bool) -> Result<bool> {
    let mut found = false;
    engine.scan(cf, b"", None, |key, _| {
        found = wanted(key);
        !found
    })?;
    Ok(found)
}

/// Decides whether and how a member may start on a directory holding `found`; `expected` is
/// what its configuration says. Pure; see the module docs for the rules.
pub(crate) fn decide(
    found: &Found,
    expected: &MemberRecord,
    state: InitialClusterState,
    data_dir: &Path,
) -> Result<StartAction> {
    let dir = data_dir.display().to_string();
    if found.is_empty() {
        return match state {
            InitialClusterState::New => Ok(StartAction::Bootstrap),
            InitialClusterState::Existing => Ok(StartAction::Join),
        };
    }
    if let Some(record) = &found.record {
        if record.name != expected.name {
            return Err(Error::ForeignDataDir {
                data_dir: dir,
                detail: format!(
                    "it is the data of member {:?}, not of {:?}",
                    record.name, expected.name
                ),
            });
        }
        if record.joined && !found.raft_data && !found.state_data {
            return Ok(StartAction::Join);
        }
        if record.members != expected.members && !found.members_changed && !record.joined {
            return Err(Error::ForeignDataDir {
                data_dir: dir,
                detail: format!(
                    "it belongs to a group of members {:?}, but initial_cluster names {:?}",
                    record.members, expected.members
                ),
            });
        }
        if !found.raft_group {
            return Err(Error::Corrupt(format!(
                "data directory {dir} holds the member record of {:?} but no PD Raft state \
                 (partly deleted?); restore it, the member will not bootstrap over it",
                record.name
            )));
        }
        return Ok(StartAction::Load);
    }
    if found.raft_group {
        return Ok(StartAction::LoadAndRecord);
    }
    if found.raft_data {
        return Err(Error::Corrupt(format!(
            "data directory {dir} holds PD Raft data but no Raft group state (partly deleted?); \
             restore it, the member will not bootstrap over it"
        )));
    }
    // State machine records only: a single-node PD from before replication.
    if expected.members.len() == 1 {
        Ok(StartAction::UpgradeSingleNode)
    } else {
        Err(Error::ForeignDataDir {
            data_dir: dir,
            detail: "it holds the state of a single-node PD (no Raft log), which cannot become \
                     one member of a replicated group"
                .to_owned(),
        })
    }
}

/// Carries out `action` on the engine (synced): after it the Raft group is bootstrapped and the
/// record written.
pub(crate) fn prepare(
    engine: &Engine,
    action: &StartAction,
    expected: &MemberRecord,
) -> Result<()> {
    let mut wb = WriteBatch::new();
    match action {
        StartAction::Load => return Ok(()),
        StartAction::Bootstrap | StartAction::UpgradeSingleNode => {
            raft_log::bootstrap_group(PD_RAFT_GROUP_ID, &mut wb);
            expected.write(&mut wb);
        }
        StartAction::Join => expected.write(&mut wb),
        StartAction::LoadAndRecord => expected.write(&mut wb),
    }
    match action {
        StartAction::Bootstrap => {
            tracing::info!(members = ?expected.members, "bootstrapped a new PD member")
        }
        StartAction::UpgradeSingleNode => {
            tracing::info!("gave the state of a single-node PD its Raft group")
        }
        StartAction::Join => tracing::info!(
            member_id = expected.member_id(),
            "joining a running PD group; waiting for the leader's snapshot"
        ),
        _ => tracing::info!(
            members = ?expected.members,
            "recorded the group of a data directory from before member records"
        ),
    }
    engine.write(wb, true)?;
    Ok(())
}

/// What a peer answered to `Hello` at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PeerAnswer {
    /// The peer's name, for messages.
    pub name: String,
    /// The peer's cluster id, 0 if not initialized yet.
    pub cluster_id: u64,
    /// The peer's group, sorted names.
    pub members: Vec<String>,
}

/// Asks every peer `(name, url)` for its cluster id and members with `GetMembers`, all at once,
/// each within `timeout`; peers that do not answer in time are left out (they cannot be checked).
pub(crate) async fn ask_peers(
    peers: &[(String, String)],
    security: &security::SecurityManager,
    timeout: Duration,
) -> Vec<PeerAnswer> {
    let asks = peers.iter().map(|(name, url)| async move {
        match tokio::time::timeout(timeout, ask_peer(url, security)).await {
            Ok(Ok((cluster_id, members))) => Some(PeerAnswer {
                name: name.clone(),
                cluster_id,
                members,
            }),
            Ok(Err(e)) => {
                tracing::debug!(peer = %name, %url, error = %e, "PD peer not checked");
                None
            }
            Err(_) => {
                tracing::debug!(peer = %name, %url, "PD peer did not answer in time; not checked");
                None
            }
        }
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn ask_peer(
    url: &str,
    security: &security::SecurityManager,
) -> std::result::Result<(u64, Vec<String>), String> {
    use proto::pdpb::pd_client::PdClient;
    use proto::pdpb::{GetMembersRequest, RequestHeader};
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1));
    let mut client = PdClient::new(
        security
            .connect(endpoint)
            .await
            .map_err(|e| e.to_string())?,
    );
    let resp = client
        .get_members(GetMembersRequest {
            header: Some(RequestHeader::default()),
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let cluster_id = resp.header.map_or(0, |h| h.cluster_id);
    let mut members: Vec<String> = resp.members.into_iter().map(|m| m.name).collect();
    members.sort();
    Ok((cluster_id, members))
}

/// Checks the answers of the reachable peers against this member: the same cluster id when
/// both know one (`cluster_id` is this member's, 0 if its data has none), and, for a member
/// about to bootstrap (`compare_members`), the same members. Pure.
pub(crate) fn check_peers(
    expected: &MemberRecord,
    cluster_id: u64,
    answers: &[PeerAnswer],
    data_dir: &Path,
    compare_members: bool,
) -> Result<()> {
    let dir = data_dir.display().to_string();
    for answer in answers {
        if compare_members && answer.members != expected.members {
            return Err(Error::PeerMismatch {
                detail: format!(
                    "initial_cluster names members {:?}, but the running member {:?} belongs \
                     to a group of {:?}",
                    expected.members, answer.name, answer.members
                ),
            });
        }
        if cluster_id != 0 && answer.cluster_id != 0 && answer.cluster_id != cluster_id {
            return Err(Error::ForeignDataDir {
                data_dir: dir,
                detail: format!(
                    "it holds the data of cluster {cluster_id}, but the running member {:?} \
                     belongs to cluster {}",
                    answer.name, answer.cluster_id
                ),
            });
        }
    }
    Ok(())
}

/// What a running member answered to `PdRaft/Members`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MembersAnswer {
    /// The name the asking member knows the peer by.
    pub peer: String,
    pub cluster_id: u64,
    pub list: MemberList,
}

/// Asks every peer `(name, url)` for the group's member list, all at once, each within
/// `timeout`; peers that do not answer in time are left out.
pub(crate) async fn ask_members(
    peers: &[(String, String)],
    security: &security::SecurityManager,
    timeout: Duration,
) -> Vec<MembersAnswer> {
    use proto::pdraftpb::pd_raft_client::PdRaftClient;
    use proto::pdraftpb::MembersRequest;
    let asks = peers.iter().map(|(name, url)| async move {
        let ask = async {
            let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(1));
            let channel = security
                .connect(endpoint)
                .await
                .map_err(|e| e.to_string())?;
            let resp = PdRaftClient::new(channel)
                .members(MembersRequest {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            Ok::<_, String>(MembersAnswer {
                peer: name.clone(),
                cluster_id: resp.cluster_id,
                list: resp.list.unwrap_or_default(),
            })
        };
        match tokio::time::timeout(timeout, ask).await {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(e)) => {
                tracing::debug!(peer = %name, %url, error = %e, "PD peer gave no member list");
                None
            }
            Err(_) => None,
        }
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Refuses to bootstrap member `name` when a running group's list (the `answers`) has it as a
/// learner: it was added to that group and must join it, not found a group of its own.
pub(crate) fn check_not_added(name: &str, answers: &[MembersAnswer]) -> Result<()> {
    if let Some(answer) = answers
        .iter()
        .find(|a| a.list.members.iter().any(|m| m.name == name && m.learner))
    {
        return Err(Error::Config(format!(
            "PD member {name:?} was added to the running group (member {:?} lists it as a \
             learner): start it with --initial-cluster-state existing to join, not new",
            answer.peer
        )));
    }
    Ok(())
}

/// Decides whether member `name`, serving at `advertise` (`host:port`), may join the running
/// group the `answers` describe, and if so, as which member and with which list. Pure; the
/// rules are in the module docs. The list of a member that knows the cluster id and has the
/// most members (the newest) is taken.
pub(crate) fn join(
    name: &str,
    advertise: &str,
    answers: &[MembersAnswer],
    data_dir: &Path,
) -> Result<(PdMember, MemberList)> {
    let cannot = |detail: String| Error::CannotJoin {
        name: name.to_owned(),
        detail,
    };
    let mut found: Option<(&PdMember, &MembersAnswer)> = None;
    for answer in answers {
        let Some(me) = answer.list.members.iter().find(|m| m.name == name) else {
            continue;
        };
        if !me.learner {
            return Err(Error::EmptyDataDir {
                name: name.to_owned(),
                data_dir: data_dir.display().to_string(),
            });
        }
        let better = found.is_none_or(|(_, best)| {
            (answer.cluster_id != 0, answer.list.members.len())
                > (best.cluster_id != 0, best.list.members.len())
        });
        if better {
            found = Some((me, answer));
        }
    }
    if answers.is_empty() {
        return Err(cannot(
            "no member of its initial_cluster answered; start it once the group runs, with \
             initial_cluster naming running members"
                .to_owned(),
        ));
    }
    let Some((me, answer)) = found else {
        let known: Vec<&str> = answers[0]
            .list
            .members
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        return Err(cannot(format!(
            "it is not a member of the running group (members {known:?}); add it first: \
             rangekv ctl member add {name} http://{advertise}"
        )));
    };
    if crate::config::strip_scheme(&me.url) != advertise {
        return Err(cannot(format!(
            "the group added it at {}, but it serves at {advertise}",
            me.url
        )));
    }
    Ok((me.clone(), answer.list.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, members: &[&str]) -> MemberRecord {
        MemberRecord::new(name, members.iter().map(|m| m.to_string()))
    }

    #[test]
    fn records_sort_members_and_a_single_node_names_itself() {
        assert_eq!(
            record("b", &["c", "a", "b"]).members,
            vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]
        );
        assert_eq!(record("solo", &[]).members, vec!["solo".to_owned()]);
    }

    #[test]
    fn the_start_decision_table() {
        use InitialClusterState::{Existing, New};
        let dir = Path::new("/data/pd2");
        let me = record("pd2", &["pd1", "pd2", "pd3"]);
        let empty = Found::default();
        let loaded = Found {
            raft_group: true,
            raft_data: true,
            state_data: true,
            members_changed: false,
            record: Some(me.clone()),
        };
        let legacy = Found {
            record: None,
            ..loaded.clone()
        };
        let single_node_state = Found {
            state_data: true,
            ..Found::default()
        };
        let other_name = Found {
            record: Some(record("pd3", &["pd1", "pd2", "pd3"])),
            ..loaded.clone()
        };
        let other_group = Found {
            record: Some(record("pd2", &["pd1", "pd2", "pd4"])),
            ..loaded.clone()
        };
        let record_only = Found {
            record: Some(me.clone()),
            ..Found::default()
        };
        let log_without_group = Found {
            raft_data: true,
            ..Found::default()
        };
        let joining = Found {
            record: Some(MemberRecord {
                id: 44,
                joined: true,
                ..me.clone()
            }),
            ..Found::default()
        };
        let joined_then_lost_raft = Found {
            record: Some(MemberRecord {
                id: 44,
                ..me.clone()
            }),
            state_data: true,
            members_changed: true,
            ..Found::default()
        };
        let changed_group = Found {
            members_changed: true,
            ..other_group.clone()
        };

        type Expect = std::result::Result<StartAction, &'static str>;
        let table: Vec<(&str, &Found, InitialClusterState, Expect)> = vec![
            ("empty, new", &empty, New, Ok(StartAction::Bootstrap)),
            ("empty, existing", &empty, Existing, Ok(StartAction::Join)),
            ("own data, new", &loaded, New, Ok(StartAction::Load)),
            (
                "own data, existing",
                &loaded,
                Existing,
                Ok(StartAction::Load),
            ),
            (
                "pre-record data",
                &legacy,
                New,
                Ok(StartAction::LoadAndRecord),
            ),
            (
                "pre-record data, existing",
                &legacy,
                Existing,
                Ok(StartAction::LoadAndRecord),
            ),
            (
                "another member's data",
                &other_name,
                New,
                Err("not of \"pd2\""),
            ),
            (
                "another group's data",
                &other_group,
                Existing,
                Err("belongs to a group"),
            ),
            (
                "record without raft",
                &record_only,
                New,
                Err("no PD Raft state"),
            ),
            (
                "joined, no snapshot yet",
                &joining,
                Existing,
                Ok(StartAction::Join),
            ),
            (
                "joined, had a snapshot, raft state lost",
                &joined_then_lost_raft,
                Existing,
                Err("no PD Raft state"),
            ),
            (
                "membership changed since initial_cluster",
                &changed_group,
                New,
                Ok(StartAction::Load),
            ),
            (
                "raft without group",
                &log_without_group,
                New,
                Err("no Raft group state"),
            ),
            (
                "single-node state",
                &single_node_state,
                New,
                Err("single-node PD"),
            ),
        ];
        for (what, found, state, expect) in table {
            let got = decide(found, &me, state, dir);
            match (got, expect) {
                (Ok(action), Ok(want)) => assert_eq!(action, want, "{what}"),
                (Err(e), Err(text)) => {
                    let msg = e.to_string();
                    assert!(msg.contains(text), "{what}: {msg}");
                    assert!(
                        msg.contains("/data/pd2"),
                        "{what} names the directory: {msg}"
                    );
                }
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
        // The state of a single-node PD from before replication is upgraded, for one node only.
        let solo = record("pd", &[]);
        assert_eq!(
            decide(&single_node_state, &solo, New, dir).unwrap(),
            StartAction::UpgradeSingleNode
        );
    }

    #[test]
    fn peers_of_another_group_or_cluster_are_refused() {
        let dir = Path::new("/data/pd1");
        let me = record("pd1", &["pd1", "pd2", "pd3"]);
        let peer = |cluster_id: u64, members: &[&str]| PeerAnswer {
            name: "pd2".to_owned(),
            cluster_id,
            members: record("pd2", members).members,
        };
        let same = peer(7, &["pd1", "pd2", "pd3"]);
        check_peers(&me, 7, std::slice::from_ref(&same), dir, true).unwrap();
        // Either side may not know the cluster id yet.
        check_peers(&me, 0, std::slice::from_ref(&same), dir, true).unwrap();
        check_peers(&me, 7, &[peer(0, &["pd1", "pd2", "pd3"])], dir, true).unwrap();
        check_peers(&me, 7, &[], dir, true).unwrap();
        let err = check_peers(&me, 8, std::slice::from_ref(&same), dir, false).unwrap_err();
        assert!(err.to_string().contains("cluster 8"), "{err}");
        assert!(err.to_string().contains("cluster 7"), "{err}");
        let err = check_peers(&me, 7, &[peer(7, &["pd1", "pd2"])], dir, true).unwrap_err();
        assert!(err.to_string().contains("belongs to a group"), "{err}");
        // A member loading its own data does not compare members: the group may have changed
        // them while it was down.
        check_peers(&me, 7, &[peer(7, &["pd1", "pd2"])], dir, false).unwrap();
    }

    #[test]
    fn a_member_joins_only_as_a_learner_the_group_added() {
        let dir = Path::new("/data/pd4");
        let m = |id: u64, name: &str, learner: bool| PdMember {
            id,
            name: name.to_owned(),
            url: format!("http://10.0.0.{id}:2379"),
            learner,
        };
        let answer = |peer: &str, cluster_id: u64, members: Vec<PdMember>| MembersAnswer {
            peer: peer.to_owned(),
            cluster_id,
            list: MemberList {
                members,
                removed_ids: vec![],
            },
        };
        let old = answer("pd2", 7, vec![m(1, "pd1", false), m(2, "pd2", false)]);
        let added = answer(
            "pd1",
            7,
            vec![m(1, "pd1", false), m(2, "pd2", false), m(4, "pd4", true)],
        );
        let (me, list) = join("pd4", "10.0.0.4:2379", &[old.clone(), added.clone()], dir).unwrap();
        assert_eq!((me.id, list.members.len()), (4, 3));
        let err = join("pd4", "10.0.0.9:2379", std::slice::from_ref(&added), dir).unwrap_err();
        assert!(err.to_string().contains("serves at 10.0.0.9:2379"), "{err}");
        let err = join("pd4", "10.0.0.4:2379", std::slice::from_ref(&old), dir).unwrap_err();
        assert!(matches!(err, Error::CannotJoin { .. }), "{err}");
        assert!(
            err.to_string().contains("rangekv ctl member add pd4"),
            "{err}"
        );
        let err = join("pd4", "10.0.0.4:2379", &[], dir).unwrap_err();
        assert!(err.to_string().contains("no member"), "{err}");
        // A wiped voter may not come back under its old identity.
        let err = join("pd2", "10.0.0.2:2379", std::slice::from_ref(&added), dir).unwrap_err();
        assert!(matches!(err, Error::EmptyDataDir { .. }), "{err}");
        // An added member started as `new` would found a group of its own: refused.
        let err = check_not_added("pd4", &[old.clone(), added.clone()]).unwrap_err();
        assert!(
            err.to_string().contains("--initial-cluster-state existing"),
            "{err}"
        );
        check_not_added("pd4", &[old]).unwrap();
        check_not_added("pd1", &[added]).unwrap();
    }
}
