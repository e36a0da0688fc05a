//! Screens Raft messages from other stores before raft-rs steps them.
//!
//! raft-rs trusts its input: a message no correct peer sends can make it panic (a heartbeat
//! committing past the end of the log, an append response acknowledging entries never sent,
//! a read-index request without its context entry, an append whose entries are not
//! consecutive) or act on the network's word as if it were local (`MsgHup` starts an
//! election, `MsgPropose` appends whatever it carries, a term-0 message counts as one of the
//! current term). Region peers and PD members step what came off the network, so both drop
//! such messages here, with the rule they broke, and step only what a correct member of the
//! group could have sent.
//!
//! What it checks: a message's shape (types that never cross the network, terms, entry
//! sequences, snapshot metadata) and its bounds against this replica's log (commit and
//! acknowledged indexes within the log). What it does not: whether a well-formed message from
//! a member tells the truth. Members are authenticated (mutual TLS) and trusted, as in TiKV
//! and etcd; a forged but well-formed message from a member can still mislead Raft.
//!
//! Pure: the caller passes the replica's log bounds; no IO, no state.

use raft::eraftpb::{Message, MessageType};

/// This replica's log, as far as the checks need it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogView {
    /// This replica's Raft peer id.
    pub id: u64,
    /// This replica's current term.
    pub term: u64,
    /// This replica leads its group.
    pub is_leader: bool,
    /// The index of the last entry (persisted or not).
    pub last_index: u64,
}

/// No term reaches this (at one election a millisecond, 8,900 years); raft-rs would overflow
/// on a term near `u64::MAX` at the next election.
pub const MAX_TERM: u64 = 1 << 48;

/// Why a message was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// A type raft-rs only makes for itself (`MsgHup`, `MsgBeat`, `MsgPropose`, …).
    LocalOnly,
    /// Not addressed to this replica, or from no one (id 0, or not the envelope's sender).
    Misaddressed,
    /// Term 0, which raft-rs reads as "the current term": only read-index requests, which a
    /// follower forwards to its leader, carry it.
    NoTerm,
    /// A term above [`MAX_TERM`].
    TermTooLarge,
    /// A leader transfer request to a replica that does not lead: raft-rs would forward it
    /// with its term set, which it refuses (by panicking) to send.
    NotLeader,
    /// Entries not consecutive after the message's index, or terms out of order.
    MalformedEntries,
    /// A commit or acknowledged index past the end of this replica's log.
    BeyondLog,
    /// A read-index message without exactly one context entry.
    MalformedReadIndex,
    /// Snapshot metadata no leader produces (index or term 0, a term above the message's,
    /// no voters, a peer both voter and learner).
    MalformedSnapshot,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self {
            Rejected::LocalOnly => "a local-only message type",
            Rejected::Misaddressed => "misaddressed",
            Rejected::NoTerm => "no term",
            Rejected::TermTooLarge => "a term too large",
            Rejected::NotLeader => "a leader transfer request to a follower",
            Rejected::MalformedEntries => "malformed entries",
            Rejected::BeyondLog => "an index beyond the log",
            Rejected::MalformedReadIndex => "a malformed read index",
            Rejected::MalformedSnapshot => "malformed snapshot metadata",
        };
        f.write_str(why)
    }
}

/// Checks `m`, which arrived in an envelope from peer `envelope_from` (0: the envelope named
/// no sender), against this replica's log.
pub fn check(m: &Message, envelope_from: u64, log: &LogView) -> Result<(), Rejected> {
    use MessageType::*;
    let kind = m.get_msg_type();
    if matches!(
        kind,
        MsgHup | MsgBeat | MsgPropose | MsgUnreachable | MsgSnapStatus | MsgCheckQuorum
    ) {
        return Err(Rejected::LocalOnly);
    }
    if m.to != log.id || m.from == 0 || m.from == log.id {
        return Err(Rejected::Misaddressed);
    }
    if envelope_from != 0 && m.from != envelope_from {
        return Err(Rejected::Misaddressed);
    }
    // A read-index request always travels without one (a follower forwarding it to its
    // leader must not set it; raft-rs panics if it is set when it forwards one again).
    if (m.term == 0) != (kind == MsgReadIndex) {
        return Err(if m.term == 0 {
            Rejected::NoTerm
        } else {
            Rejected::MalformedReadIndex
        });
    }
    if m.term > MAX_TERM || m.log_term > MAX_TERM {
        return Err(Rejected::TermTooLarge);
    }
    // raft-rs acts on the indexes of a message of an older term only to tell its sender the
    // newer term: a stale leader's commit or a stale follower's ack may lie beyond a log a
    // newer leader truncated.
    let current = m.term >= log.term;
    match kind {
        MsgAppend => check_entries(m)?,
        MsgHeartbeat if current && m.commit > log.last_index => return Err(Rejected::BeyondLog),
        MsgAppendResponse if current && m.index > log.last_index => {
            return Err(Rejected::BeyondLog)
        }
        MsgReadIndex | MsgReadIndexResp if m.entries.len() != 1 => {
            return Err(Rejected::MalformedReadIndex)
        }
        MsgRequestVote | MsgRequestPreVote if m.log_term > m.term => {
            return Err(Rejected::MalformedEntries)
        }
        MsgSnapshot => check_snapshot(m)?,
        MsgTransferLeader if !log.is_leader => return Err(Rejected::NotLeader),
        _ => {}
    }
    Ok(())
}

/// An append's entries follow its `index` one by one, with terms that never decrease, start
/// no lower than the term at `index` and never exceed the message's term. Every entry has a
/// term: only the empty log's index 0 has term 0 (raft-rs reads an index past the end of its
/// log as term 0 too, so an append "after" it would match).
fn check_entries(m: &Message) -> Result<(), Rejected> {
    if m.log_term > m.term || (m.index > 0) != (m.log_term > 0) {
        return Err(Rejected::MalformedEntries);
    }
    let mut prev_term = m.log_term;
    for (i, e) in m.entries.iter().enumerate() {
        let expected = m
            .index
            .checked_add(i as u64 + 1)
            .ok_or(Rejected::MalformedEntries)?;
        if e.index != expected || e.term == 0 || e.term < prev_term || e.term > m.term {
            return Err(Rejected::MalformedEntries);
        }
        prev_term = e.term;
    }
    Ok(())
}

fn check_snapshot(m: &Message) -> Result<(), Rejected> {
    let Some(snap) = m.snapshot.as_ref() else {
        return Err(Rejected::MalformedSnapshot);
    };
    let meta = snap.get_metadata();
    if meta.index == 0 || meta.term == 0 || meta.term > m.term {
        return Err(Rejected::MalformedSnapshot);
    }
    let cs = meta.get_conf_state();
    if cs.voters.is_empty() {
        return Err(Rejected::MalformedSnapshot);
    }
    // A learner is no voter; one being demoted (`learners_next`) still votes in the outgoing
    // half of a joint configuration, never in the incoming one.
    let learner_votes = cs
        .learners
        .iter()
        .any(|l| cs.voters.contains(l) || cs.voters_outgoing.contains(l))
        || cs.learners_next.iter().any(|l| cs.voters.contains(l));
    if learner_votes {
        return Err(Rejected::MalformedSnapshot);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::{ConfState, Entry, Snapshot};

    use super::*;

    const ME: u64 = 2;
    const LEADER: u64 = 1;

    fn log() -> LogView {
        LogView {
            id: ME,
            term: 3,
            is_leader: false,
            last_index: 10,
        }
    }

    fn msg(kind: MessageType) -> Message {
        let mut m = Message::default();
        m.set_msg_type(kind);
        m.from = LEADER;
        m.to = ME;
        m.term = 3;
        m
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    fn snapshot(index: u64, term: u64, voters: Vec<u64>, learners: Vec<u64>) -> Message {
        let mut m = msg(MessageType::MsgSnapshot);
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = index;
        snap.mut_metadata().term = term;
        snap.mut_metadata().set_conf_state(ConfState {
            voters,
            learners,
            ..Default::default()
        });
        m.set_snapshot(snap);
        m
    }

    #[test]
    fn well_formed_messages_pass() {
        let mut append = msg(MessageType::MsgAppend);
        (append.index, append.log_term, append.commit) = (10, 2, 12);
        append.entries = vec![entry(11, 2), entry(12, 3)].into();
        let mut heartbeat = msg(MessageType::MsgHeartbeat);
        heartbeat.commit = 10;
        let mut ack = msg(MessageType::MsgAppendResponse);
        ack.index = 10;
        let mut read = msg(MessageType::MsgReadIndex);
        read.term = 0;
        read.entries = vec![Entry::default()].into();
        let mut vote = msg(MessageType::MsgRequestVote);
        vote.log_term = 3;
        for m in [
            append,
            heartbeat,
            ack,
            read,
            vote,
            msg(MessageType::MsgTimeoutNow),
            msg(MessageType::MsgHeartbeatResponse),
            snapshot(20, 3, vec![1, 2, 3], vec![4]),
        ] {
            assert_eq!(check(&m, LEADER, &log()), Ok(()), "{m:?}");
        }
        // An envelope without a sender leaves the inner one to speak for itself.
        assert_eq!(check(&msg(MessageType::MsgHeartbeat), 0, &log()), Ok(()));
    }

    #[test]
    fn local_only_types_never_come_from_the_network() {
        use MessageType::*;
        for kind in [
            MsgHup,
            MsgBeat,
            MsgPropose,
            MsgUnreachable,
            MsgSnapStatus,
            MsgCheckQuorum,
        ] {
            assert_eq!(
                check(&msg(kind), LEADER, &log()),
                Err(Rejected::LocalOnly),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_message_must_be_to_this_replica_from_its_envelope_sender() {
        let mut to_other = msg(MessageType::MsgHeartbeat);
        to_other.to = 7;
        let mut from_nobody = msg(MessageType::MsgHeartbeat);
        from_nobody.from = 0;
        let mut from_self = msg(MessageType::MsgHeartbeat);
        from_self.from = ME;
        for m in [to_other, from_nobody, from_self] {
            assert_eq!(check(&m, 0, &log()), Err(Rejected::Misaddressed));
        }
        let m = msg(MessageType::MsgHeartbeat);
        assert_eq!(check(&m, 3, &log()), Err(Rejected::Misaddressed));
    }

    #[test]
    fn only_read_index_requests_go_without_a_term() {
        let mut append = msg(MessageType::MsgAppend);
        append.term = 0;
        assert_eq!(check(&append, LEADER, &log()), Err(Rejected::NoTerm));
        let mut read = msg(MessageType::MsgReadIndex);
        read.term = 0;
        read.entries = vec![Entry::default()].into();
        assert_eq!(check(&read, LEADER, &log()), Ok(()));
    }

    #[test]
    fn append_entries_must_follow_the_index_with_ordered_terms() {
        let cases: [(u64, u64, Vec<Entry>); 5] = [
            (10, 2, vec![entry(12, 2)]),               // a gap
            (10, 2, vec![entry(11, 2), entry(11, 2)]), // a repeat
            (10, 2, vec![entry(11, 3), entry(12, 2)]), // terms decrease
            (10, 2, vec![entry(11, 1)]),               // below the term at index
            (10, 2, vec![entry(11, 4)]),               // above the message's term
        ];
        for (index, log_term, entries) in cases {
            let mut m = msg(MessageType::MsgAppend);
            (m.index, m.log_term) = (index, log_term);
            m.entries = entries.into();
            assert_eq!(
                check(&m, LEADER, &log()),
                Err(Rejected::MalformedEntries),
                "{m:?}"
            );
        }
        let mut m = msg(MessageType::MsgAppend);
        (m.index, m.log_term) = (u64::MAX, 2);
        m.entries = vec![entry(0, 2)].into();
        assert_eq!(check(&m, LEADER, &log()), Err(Rejected::MalformedEntries));
        // The term at an index claimed to exceed the message's own, or to be 0 past index 0.
        for (index, log_term) in [(0, 4), (10, 4), (20, 0), (0, 1)] {
            let mut m = msg(MessageType::MsgAppend);
            (m.index, m.log_term) = (index, log_term);
            assert_eq!(check(&m, LEADER, &log()), Err(Rejected::MalformedEntries));
        }
        let mut m = msg(MessageType::MsgAppend);
        m.entries = vec![entry(1, 0)].into();
        assert_eq!(check(&m, LEADER, &log()), Err(Rejected::MalformedEntries));
    }

    #[test]
    fn terms_stay_below_the_bound() {
        let mut m = msg(MessageType::MsgRequestVote);
        m.term = MAX_TERM + 1;
        assert_eq!(check(&m, LEADER, &log()), Err(Rejected::TermTooLarge));
        let mut m = msg(MessageType::MsgAppendResponse);
        m.log_term = u64::MAX;
        assert_eq!(check(&m, LEADER, &log()), Err(Rejected::TermTooLarge));
    }

    #[test]
    fn commits_and_acknowledgements_stay_within_the_log() {
        let mut heartbeat = msg(MessageType::MsgHeartbeat);
        heartbeat.commit = 11;
        assert_eq!(check(&heartbeat, LEADER, &log()), Err(Rejected::BeyondLog));
        let mut ack = msg(MessageType::MsgAppendResponse);
        ack.index = 11;
        assert_eq!(check(&ack, LEADER, &log()), Err(Rejected::BeyondLog));
        // An append's own commit is bounded by raft-rs against its entries.
        let mut append = msg(MessageType::MsgAppend);
        append.commit = 1000;
        assert_eq!(check(&append, LEADER, &log()), Ok(()));
        // A stale leader's heartbeat only learns the newer term from the answer.
        heartbeat.term = 2;
        assert_eq!(check(&heartbeat, LEADER, &log()), Ok(()));
        ack.term = 2;
        assert_eq!(check(&ack, LEADER, &log()), Ok(()));
    }

    #[test]
    fn read_index_messages_carry_one_context_entry() {
        for kind in [MessageType::MsgReadIndex, MessageType::MsgReadIndexResp] {
            for n in [0, 2] {
                let mut m = msg(kind);
                if kind == MessageType::MsgReadIndex {
                    m.term = 0;
                }
                m.entries = vec![Entry::default(); n].into();
                assert_eq!(check(&m, LEADER, &log()), Err(Rejected::MalformedReadIndex));
            }
        }
    }

    #[test]
    fn read_index_requests_travel_without_a_term() {
        let mut m = msg(MessageType::MsgReadIndex);
        m.entries = vec![Entry::default()].into();
        assert_eq!(check(&m, LEADER, &log()), Err(Rejected::MalformedReadIndex));
    }

    #[test]
    fn only_a_leader_takes_leader_transfer_requests() {
        let m = msg(MessageType::MsgTransferLeader);
        assert_eq!(check(&m, LEADER, &log()), Err(Rejected::NotLeader));
        let leader = LogView {
            is_leader: true,
            ..log()
        };
        assert_eq!(check(&m, LEADER, &leader), Ok(()));
    }

    #[test]
    fn a_vote_cannot_claim_a_log_newer_than_its_term() {
        let mut vote = msg(MessageType::MsgRequestPreVote);
        vote.log_term = 4;
        assert_eq!(
            check(&vote, LEADER, &log()),
            Err(Rejected::MalformedEntries)
        );
    }

    #[test]
    fn snapshot_metadata_must_be_one_a_leader_makes() {
        for m in [
            msg(MessageType::MsgSnapshot), // no snapshot at all
            snapshot(0, 3, vec![1, 2, 3], vec![]),
            snapshot(20, 0, vec![1, 2, 3], vec![]),
            snapshot(20, 4, vec![1, 2, 3], vec![]),
            snapshot(20, 3, vec![], vec![2]),
            snapshot(20, 3, vec![1, 2, 3], vec![3]),
        ] {
            assert_eq!(
                check(&m, LEADER, &log()),
                Err(Rejected::MalformedSnapshot),
                "{m:?}"
            );
        }
    }
}
