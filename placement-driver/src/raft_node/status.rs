//! What a PD member publishes about itself for the rest of the process: the leadership as
//! known here (term, leader, whether it serves, its lease), the members, the cluster id and
//! the state of the Raft log. The Raft thread writes it; services read it without locking the
//! Raft thread out.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::lease::Lease;
use crate::members::MemberList;
use crate::Error;

/// What this node knows about the leadership of the PD group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Leadership {
    /// The current Raft term as known here.
    pub term: u64,
    /// Member id of the leader of `term`, 0 if unknown.
    pub leader_id: u64,
    /// This node leads `term` and has applied an entry of `term` (see the module docs).
    pub ready: bool,
}

/// Where this node's Raft log begins and ends, for introspection (tests, diagnostics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftLogState {
    /// The first entry still in the log (`truncated index + 1`).
    pub first_index: u64,
    pub last_index: u64,
    /// The last entry applied to the state machine here.
    pub applied_index: u64,
    /// Log GC checks this node made as a ready leader (see [`crate::log_gc`]).
    pub gc_checks: u64,
    /// `CompactLog` commands this node proposed as leader.
    pub gc_proposals: u64,
}

#[derive(Debug, Default)]
struct StatusInner {
    leadership: Leadership,
    lease: Lease,
    cluster_id: u64,
    stopped: bool,
    /// This member applied its own removal from the group: its Raft node stopped for good.
    removed: bool,
    log: RaftLogState,
    members: MemberList,
}

/// A member of the PD group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    /// Client and peer URL (`http://host:port`).
    pub url: String,
    /// Receives the log but does not vote yet (see [`crate::members`]).
    pub learner: bool,
}

/// Leadership, lease and cluster id of this node, published by the Raft thread.
#[derive(Debug)]
pub struct NodeStatus {
    member_id: u64,
    inner: Mutex<StatusInner>,
    changes: watch::Sender<Leadership>,
}

impl NodeStatus {
    pub(crate) fn new(member_id: u64, cluster_id: u64, members: MemberList) -> NodeStatus {
        NodeStatus {
            member_id,
            inner: Mutex::new(StatusInner {
                cluster_id,
                members,
                ..Default::default()
            }),
            changes: watch::channel(Leadership::default()).0,
        }
    }

    /// This node's member (= Raft peer) id.
    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    pub fn leadership(&self) -> Leadership {
        self.inner.lock().leadership
    }

    /// All members of the group as known here (this node included, unless it was removed), in
    /// the order they joined.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.inner
            .lock()
            .members
            .members
            .iter()
            .map(|m| MemberInfo {
                id: m.id,
                name: m.name.clone(),
                url: m.url.clone(),
                learner: m.learner,
            })
            .collect()
    }

    /// The member list as known here, with the ids of removed members.
    pub fn member_list(&self) -> MemberList {
        self.inner.lock().members.clone()
    }

    pub(crate) fn set_member_list(&self, list: MemberList) {
        self.inner.lock().members = list;
    }

    /// Whether this member applied its own removal from the group.
    pub fn is_removed(&self) -> bool {
        self.inner.lock().removed
    }

    pub(super) fn set_removed(&self) {
        self.inner.lock().removed = true;
    }

    /// The error answering a leader-only request this node may not serve: it names the leader
    /// when another member is known to lead.
    pub fn not_leader(&self) -> Error {
        let leader_id = self.leadership().leader_id;
        let leader = (leader_id != self.member_id)
            .then(|| self.members().into_iter().find(|m| m.id == leader_id))
            .flatten()
            .map(|m| format!("{} at {}", m.name, m.url));
        Error::NotLeader { leader }
    }

    /// Notified on every leadership change.
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.changes.subscribe()
    }

    /// The cluster id, 0 until the `InitCluster` command is applied here.
    pub fn cluster_id(&self) -> u64 {
        self.inner.lock().cluster_id
    }

    /// Where this node's Raft log begins and ends, as of the last Ready handled.
    pub fn raft_log_state(&self) -> RaftLogState {
        self.inner.lock().log
    }

    pub(super) fn set_raft_log_state(&self, log: RaftLogState) {
        self.inner.lock().log = log;
    }

    /// Whether the Raft thread has stopped (shutdown or storage failure).
    pub fn is_stopped(&self) -> bool {
        self.inner.lock().stopped
    }

    /// The term in which this node may serve leader-only requests now: it leads, is ready, and
    /// holds the lease. `None` otherwise.
    pub fn serving_term(&self) -> Option<u64> {
        self.serving_term_at(Instant::now())
    }

    pub(super) fn serving_term_at(&self, now: Instant) -> Option<u64> {
        let inner = self.inner.lock();
        let l = inner.leadership;
        let leased = inner.lease.holds(now);
        (l.ready && l.leader_id == self.member_id && leased && !inner.stopped).then_some(l.term)
    }

    pub(super) fn set_leadership(&self, leadership: Leadership) {
        let mut inner = self.inner.lock();
        if inner.leadership == leadership {
            return;
        }
        if !(leadership.ready && leadership.term == inner.leadership.term) {
            // A new term, or not ready (yet / any more): any lease is void.
            inner.lease.expire();
        }
        inner.leadership = leadership;
        drop(inner);
        self.changes.send_replace(leadership);
    }

    /// A quorum acknowledged a round this leader sent at `sent_at` in `term`.
    pub(super) fn renew_lease(&self, term: u64, sent_at: Instant, duration: Duration) {
        let mut inner = self.inner.lock();
        if inner.leadership.term == term && inner.leadership.ready {
            inner.lease.renew(sent_at, duration);
        }
    }

    pub(super) fn update_lease(&self, f: impl FnOnce(&mut Lease)) {
        f(&mut self.inner.lock().lease);
    }

    pub(super) fn set_cluster_id(&self, cluster_id: u64) {
        self.inner.lock().cluster_id = cluster_id;
    }

    pub(super) fn set_stopped(&self) {
        let mut inner = self.inner.lock();
        inner.stopped = true;
        inner.lease.expire();
        inner.leadership.ready = false;
        let leadership = inner.leadership;
        drop(inner);
        self.changes.send_replace(leadership);
    }
}
