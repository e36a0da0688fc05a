//! Which PD group a member's data directory belongs to, and whether a member may start on it.
//!
//! A PD member's Raft state (its log, its term and its vote) is what makes it a safe voter. A
//! member that comes back with an empty data directory and rejoins as a voter has forgotten its
//! vote (it can vote twice in one term) and its log (it can help elect a member whose log misses
//! committed entries, losing committed TSO and id bounds, so timestamps repeat). PD has no Raft
//! snapshots and no membership changes yet, so such a member cannot be re-added safely either:
//! it must not start.
//!
//! The rules, modelled on etcd's `--initial-cluster-state`:
//! - The first start of a member on an empty data directory writes, in one synced batch, the
//!   initial Raft state of the group (the same on every member) and a [`MemberRecord`]: this
//!   member's name and the names of all members (the voters). From then on the directory
//!   belongs to that group.
//! - Empty data directory: with [`InitialClusterState::New`] (the default, so that scripts that
//!   create a group keep working) the member bootstraps as above; with
//!   [`InitialClusterState::Existing`] it refuses to start ([`Error::EmptyDataDir`]), naming
//!   what the operator can do.
//! - Data directory with data: it is loaded, never bootstrapped again, whatever the initial
//!   cluster state says. Its record must name this member and the same members as
//!   `initial_cluster` (names, not URLs: a member id is derived from its name, and addresses may
//!   change between restarts); otherwise the member refuses ([`Error::ForeignDataDir`]).
//! - The cluster id, once initialized, is persisted by the state machine (`pd/meta`). Before it
//!   loads or bootstraps anything, a member asks its peers for their cluster id and members
//!   (`GetMembers`, which followers answer too; [`ask_peers`]) and refuses to start if a peer
//!   that answers belongs to another cluster or names other members ([`check_peers`]). While
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
//! reachable peer that knows the member's cluster) stops it. Replacing a lost member needs
//! membership changes, which do not exist yet.

use std::path::Path;
use std::time::Duration;

use engine::{Engine, WriteBatch, CF_DEFAULT, CF_RAFT};
use prost::Message;
use raft_log::ApplyState;

use crate::config::InitialClusterState;
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
        }
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

    fn write(&self, wb: &mut WriteBatch) {
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
            InitialClusterState::Existing => Err(Error::EmptyDataDir {
                name: expected.name.clone(),
                data_dir: dir,
            }),
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
        if record.members != expected.members {
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
        StartAction::LoadAndRecord => expected.write(&mut wb),
    }
    match action {
        StartAction::Bootstrap => {
            tracing::info!(members = ?expected.members, "bootstrapped a new PD member")
        }
        StartAction::UpgradeSingleNode => {
            tracing::info!("gave the state of a single-node PD its Raft group")
        }
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

/// Checks the answers of the reachable peers against this member: same members, and the same
/// cluster id when both know one (`cluster_id` is this member's, 0 if its data has none). Pure.
pub(crate) fn check_peers(
    expected: &MemberRecord,
    cluster_id: u64,
    answers: &[PeerAnswer],
    data_dir: &Path,
) -> Result<()> {
    let dir = data_dir.display().to_string();
    for answer in answers {
        if answer.members != expected.members {
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

        type Expect = std::result::Result<StartAction, &'static str>;
        let table: Vec<(&str, &Found, InitialClusterState, Expect)> = vec![
            ("empty, new", &empty, New, Ok(StartAction::Bootstrap)),
            ("empty, existing", &empty, Existing, Err("holds no PD data")),
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
        check_peers(&me, 7, std::slice::from_ref(&same), dir).unwrap();
        // Either side may not know the cluster id yet.
        check_peers(&me, 0, std::slice::from_ref(&same), dir).unwrap();
        check_peers(&me, 7, &[peer(0, &["pd1", "pd2", "pd3"])], dir).unwrap();
        check_peers(&me, 7, &[], dir).unwrap();
        let err = check_peers(&me, 8, std::slice::from_ref(&same), dir).unwrap_err();
        assert!(err.to_string().contains("cluster 8"), "{err}");
        assert!(err.to_string().contains("cluster 7"), "{err}");
        let err = check_peers(&me, 7, &[peer(7, &["pd1", "pd2"])], dir).unwrap_err();
        assert!(err.to_string().contains("belongs to a group"), "{err}");
    }
}
