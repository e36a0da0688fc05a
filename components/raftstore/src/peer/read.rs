//! Reads on a leader, linearizable: by lease, or by ReadIndex.
//!
//! - **Lease**: a leader whose lease is valid and that has applied an entry of its current term
//!   answers at once. The lease is renewed to `t + lease_duration` whenever a quorum
//!   acknowledged something the leader sent at time `t` (a committed proposal of this term, or
//!   a ReadIndex round). With check-quorum on, a follower that acknowledged at or after `t`
//!   refuses to vote for another candidate until an election timeout later, and the lease is
//!   shorter than that, so no other leader can exist while the lease holds. The grant waits
//!   until the leader applied everything it knows committed: a follower may have applied (and
//!   served, to a replica read) a committed entry its leader has not applied yet, and a read
//!   must not go back in time behind a replica read that ended before it started.
//! - **ReadIndex** otherwise: raft-rs confirms leadership with a heartbeat round and returns the
//!   commit index; the read is answered once the apply side has reached it. Reads that arrived
//!   in one round share one ReadIndex request; later reads never join an earlier request.
//! - **A new leader holds its reads** until it has committed an entry of its own term (after an
//!   election, a transfer, or a split region's first campaign): before that it cannot know the
//!   commit index, and raft-rs 0.7 silently drops a ReadIndex request made then. Held reads
//!   are served as soon as that entry commits: under the lease its commit starts once it is
//!   applied, or else by a ReadIndex round issued at that moment.
//! - Rounds are answered **by request id**, each as soon as the apply side reached its index;
//!   a round that raft-rs lost never holds others back, and times out by itself.
//! - **Replica reads** (a request the client sent to a follower on purpose, TiKV's replica
//!   read): the follower issues its own ReadIndex, which raft-rs forwards to the leader; the
//!   leader confirms its leadership with a heartbeat round and answers with its commit index,
//!   and the follower serves the read once it applied that far. As linearizable as a leader
//!   read, at the cost of a round trip to the leader. A follower that knows no leader refuses
//!   (NotLeader); a round the leader dropped (it has not committed in its term yet) times out.
//!   The development-only `unsafe_follower_reads` skips the round: a negative control.

use super::*;
use raft_group::lease::Lease;

pub(super) struct PendingRead {
    pub(super) id: u64,
    pub(super) issued_at: Instant,
    /// Set once a quorum confirmed leadership.
    pub(super) read_index: Option<u64>,
    pub(super) callbacks: Vec<(RequestHeader, ReadCallback)>,
}

/// What decides whether a leader may read under its lease (see [`Peer::lease_valid`]).
struct LeaseView {
    is_leader: bool,
    transferring: bool,
    applied_index: u64,
    last_committed_split: u64,
    lease: Lease,
    /// The region is merging into another (see [`crate::merge`]), which will serve its range.
    merging: bool,
}

impl LeaseView {
    fn allows_read(&self, now: Instant) -> bool {
        self.is_leader
            && !self.transferring
            && !self.merging
            && self.applied_index >= self.last_committed_split
            && self.lease.holds(now)
    }
}

impl Peer {
    pub(super) fn on_read(&mut self, header: RequestHeader, cb: ReadCallback) {
        if header.replica_read && !self.is_leader() {
            self.on_replica_read(header, cb);
            return;
        }
        if let Err(e) = self.check_request(&header) {
            cb(Err(e));
            return;
        }
        if self.lease_valid(self.cfg.clock.now()) && self.applied.applied_term == self.raw.raft.term
        {
            self.lease_read(header, cb);
            return;
        }
        self.reads_to_issue.push((header, cb));
    }

    /// A read under a valid lease: answered once this leader applied everything it knows
    /// committed. A follower may apply a committed entry before its leader does and serve it
    /// to a replica read; a lease read answered from the leader's applied state before that
    /// entry would then go back in time. The wait is for entries already committed, so it
    /// lasts no longer than their apply.
    fn lease_read(&mut self, header: RequestHeader, cb: ReadCallback) {
        self.lease_reads += 1;
        crate::metrics::LEASE_READS.inc();
        let committed = self.raw.raft.raft_log.committed;
        if self.applied.applied_index >= committed {
            self.grant(&header, cb);
            return;
        }
        let id = self.next_read_id;
        self.next_read_id = self.next_read_id.wrapping_add(1);
        self.pending_reads.push_back(PendingRead {
            id,
            issued_at: self.cfg.clock.now(),
            read_index: Some(committed),
            callbacks: vec![(header, cb)],
        });
    }

    /// A read sent to this follower on purpose; see the module docs.
    fn on_replica_read(&mut self, header: RequestHeader, cb: ReadCallback) {
        if let Err(e) = self.check_routing(&header) {
            cb(Err(e));
            return;
        }
        if self.cfg.unsafe_follower_reads {
            // The negative control: whatever this replica applied so far, however stale.
            self.grant(&header, cb);
            return;
        }
        if self.raw.raft.leader_id == raft::INVALID_ID {
            cb(Err(Error::NotLeader {
                region_id: self.region.id,
                leader: None,
            }));
            return;
        }
        self.start_read_index(vec![(header, cb)]);
    }

    /// Notes the start and end of a leader transfer. One that ended with this peer still
    /// leading was aborted, yet the transferee may still receive a delayed MsgTimeoutNow and be
    /// elected at once (it skips the followers' lease check): no round sent for an election
    /// timeout renews the lease (see `raft_group::lease`).
    pub(super) fn observe_transfer(&mut self) {
        let transferring = self.is_leader() && self.raw.raft.lead_transferee.is_some();
        if transferring && !self.transfer_seen {
            self.lease.begin_transfer();
        }
        if self.transfer_seen && !transferring && self.is_leader() {
            info!(
                region_id = self.region.id,
                "leader transfer aborted; no lease from rounds sent for an election timeout"
            );
            self.lease
                .abort_transfer(self.cfg.clock.now(), self.cfg.election_timeout());
        }
        self.transfer_seen = transferring;
    }

    /// A leader handing over leadership has no lease: the transferee may be elected at once
    /// (MsgTimeoutNow skips the followers' lease check), long before this lease would end.
    /// Nor has a leader whose split committed but is not applied here yet: the other replicas
    /// may already have applied it and elected a leader of the new region, which takes writes
    /// in a range this peer still believes is its own.
    pub(super) fn lease_valid(&self, now: Instant) -> bool {
        LeaseView {
            is_leader: self.is_leader(),
            transferring: self.raw.raft.lead_transferee.is_some(),
            applied_index: self.applied.applied_index,
            last_committed_split: self.last_committed_split,
            lease: self.lease,
            merging: self.merge_busy(),
        }
        .allows_read(now)
    }

    /// Publishes to the store's [`crate::local_reader`] what this peer's lease allows now (see
    /// its invariants: call it before the round's messages leave).
    pub(super) fn publish_lease(&mut self, ctx: &PollContext<impl crate::Transport>) {
        // Also only while everything known committed is applied (see `lease_read`): the
        // messages that tell followers of a newer commit leave after this publication.
        let allowed = self.is_leader()
            && !self.merge_busy()
            && self.raw.raft.lead_transferee.is_none()
            && self.applied.applied_index >= self.last_committed_split
            && self.applied.applied_index >= self.raw.raft.raft_log.committed
            && self.applied.applied_term == self.raw.raft.term;
        let lease = match self.lease.until() {
            Some(valid_until) if allowed => Some(crate::local_reader::LeaseRef {
                region: &self.region,
                term: self.raw.raft.term,
                valid_until,
            }),
            _ => None,
        };
        if lease.is_none() && self.read_slot.is_none() {
            return;
        }
        let slot = self
            .read_slot
            .get_or_insert_with(|| ctx.local_reader.slot(self.region.id));
        slot.publish(lease, self.cfg.lease_duration() / 8);
    }

    pub(super) fn renew_lease(&mut self, since: Instant) {
        if !self.is_leader() || self.raw.raft.lead_transferee.is_some() {
            return;
        }
        self.lease.renew(since, self.cfg.lease_duration());
    }

    /// Whether the leader has committed an entry of its current term, without which raft-rs
    /// drops ReadIndex requests.
    fn committed_in_term(&self) -> bool {
        let log = &self.raw.raft.raft_log;
        log.term(log.committed)
            .is_ok_and(|t| t == self.raw.raft.term)
    }

    /// Serves or issues the reads waiting to be issued (those that arrived this round, and
    /// those a new leader holds): under the lease if it is now valid, else by one ReadIndex
    /// round, else (no entry of this term committed yet) not yet.
    pub(super) fn issue_read_index(&mut self) {
        if self.reads_to_issue.is_empty() || !self.is_leader() {
            return;
        }
        if self.lease_valid(self.cfg.clock.now()) && self.applied.applied_term == self.raw.raft.term
        {
            for (header, cb) in std::mem::take(&mut self.reads_to_issue) {
                self.lease_read(header, cb);
            }
            return;
        }
        if !self.committed_in_term() {
            return;
        }
        let reads = std::mem::take(&mut self.reads_to_issue);
        self.start_read_index(reads);
    }

    /// Starts one raft-rs ReadIndex round for `callbacks`, answered by request id (on a
    /// follower, raft-rs forwards it to the leader).
    fn start_read_index(&mut self, callbacks: Vec<(RequestHeader, ReadCallback)>) {
        let id = self.next_read_id;
        self.next_read_id = self.next_read_id.wrapping_add(1);
        self.read_index_rounds += 1;
        crate::metrics::READ_INDEX_READS.inc_by(callbacks.len() as u64);
        self.raw.read_index(id.to_be_bytes().to_vec());
        self.pending_reads.push_back(PendingRead {
            id,
            issued_at: self.cfg.clock.now(),
            read_index: None,
            callbacks,
        });
    }

    /// Answers every round whose index the apply side has reached, in whatever order the
    /// rounds were issued.
    pub(super) fn answer_ready_reads(&mut self) {
        let applied = self.applied.applied_index;
        let (ready, waiting): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.pending_reads)
            .into_iter()
            .partition(|r| r.read_index.is_some_and(|idx| idx <= applied));
        self.pending_reads = waiting;
        for r in ready {
            for (header, cb) in r.callbacks {
                self.grant(&header, cb);
            }
        }
    }

    /// Fails the rounds that raft-rs has not confirmed within `timeout`.
    pub(super) fn expire_reads(&mut self, now: Instant, timeout: std::time::Duration) {
        let expired =
            |r: &PendingRead| r.read_index.is_none() && now.duration_since(r.issued_at) > timeout;
        let (gone, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.pending_reads)
            .into_iter()
            .partition(expired);
        self.pending_reads = kept;
        for r in gone {
            for (_, cb) in r.callbacks {
                cb(Err(Error::ServerIsBusy("read index timed out".into())));
            }
        }
    }

    /// Reads waiting on this peer: held, or in a ReadIndex round (for status and tests).
    pub(super) fn reads_waiting(&self) -> usize {
        self.reads_to_issue.len()
            + self
                .pending_reads
                .iter()
                .map(|r| r.callbacks.len())
                .sum::<usize>()
    }

    /// Grants a confirmed read, re-checking the region: it may have split meanwhile.
    /// Leadership is not re-checked: the lease or the ReadIndex round confirmed it.
    fn grant(&self, header: &RequestHeader, cb: ReadCallback) {
        let current = epoch_version(&self.region);
        if self.merge_busy() {
            // It applied PrepareMerge while the read waited: its target may serve the range.
            cb(Err(Error::ProposalInMergingMode(self.region.id)));
        } else if header.epoch.as_ref().map(|e| e.version) != Some(current) {
            cb(Err(Error::EpochNotMatch {
                msg: "region changed while reading".into(),
                current_regions: vec![self.region.clone()],
            }));
        } else {
            cb(Ok(ReadGrant {
                region: self.region.clone(),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn view(now: Instant) -> LeaseView {
        LeaseView {
            is_leader: true,
            transferring: false,
            applied_index: 10,
            last_committed_split: 0,
            lease: leased(now, Duration::from_millis(100)),
            merging: false,
        }
    }

    fn leased(now: Instant, d: Duration) -> Lease {
        let mut lease = Lease::default();
        lease.renew(now, d);
        lease
    }

    #[test]
    fn a_lease_read_needs_leadership_time_and_no_pending_transfer_or_split() {
        let now = Instant::now();
        assert!(view(now).allows_read(now));
        assert!(
            !view(now).allows_read(now + Duration::from_millis(100)),
            "expired"
        );
        assert!(!LeaseView {
            is_leader: false,
            ..view(now)
        }
        .allows_read(now));
        assert!(!LeaseView {
            transferring: true,
            ..view(now)
        }
        .allows_read(now));
        assert!(!LeaseView {
            lease: Lease::default(),
            ..view(now)
        }
        .allows_read(now));
        assert!(!LeaseView {
            merging: true,
            ..view(now)
        }
        .allows_read(now));
        // A split committed at 11 but applied only to 10: no lease read until it is applied.
        assert!(!LeaseView {
            last_committed_split: 11,
            ..view(now)
        }
        .allows_read(now));
        assert!(LeaseView {
            last_committed_split: 10,
            ..view(now)
        }
        .allows_read(now));
        // After an aborted transfer: no lease until a round sent after the gate renews it.
        let mut lease = leased(now, Duration::from_millis(100));
        lease.abort_transfer(now, Duration::from_millis(50));
        lease.renew(now + Duration::from_millis(10), Duration::from_millis(100));
        let gated = LeaseView { lease, ..view(now) };
        assert!(!gated.allows_read(now + Duration::from_millis(60)));
        lease.renew(now + Duration::from_millis(50), Duration::from_millis(100));
        assert!(LeaseView { lease, ..view(now) }.allows_read(now + Duration::from_millis(60)));
    }
}
