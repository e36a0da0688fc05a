//! Random Raft messages for fuzz tests of the stores' and PD's Raft services (proptest
//! strategies and builders): random fields ([`fields`], [`raft_message`]) and messages with
//! one defect no correct member produces ([`defect`], [`malformed`]), which
//! `raft_group::validate` must drop before raft-rs steps them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use protobuf::ProtobufEnum as _;
use raft::eraftpb::{self, MessageType};
use raft_group::validate::MAX_TERM;

/// One thing a correct member never does.
#[derive(Clone, Debug)]
pub enum Defect {
    LocalOnly(MessageType),
    NoTerm(MessageType),
    HugeTerm(MessageType),
    EntryGap,
    EntryTermZero,
    CommitPastLog,
    AckPastLog,
    ReadIndexEntries(usize),
    SnapshotWithoutVoters,
    VoteLogNewerThanTerm(MessageType),
}

/// A snapshot's index, term, voters, learners and data.
pub type SnapshotFields = (u64, u64, Vec<u64>, Vec<u64>, Vec<u8>);

/// The random fields of a Raft message.
#[derive(Clone, Debug)]
pub struct Fields {
    pub kind: i32,
    pub term_back: u64,
    pub term_ahead: u64,
    pub log_term: u64,
    pub index: u64,
    pub commit: u64,
    pub entries: Vec<(u64, u64, i32, Vec<u8>)>,
    pub reject: bool,
    pub reject_hint: u64,
    pub context: Vec<u8>,
    pub snapshot: Option<SnapshotFields>,
    pub epoch: (u64, u64),
}

/// Up to `max` random bytes.
pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// Small numbers mostly (they hit real terms and indexes), sometimes anything.
pub fn num() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..40, 1 => any::<u64>()]
}

/// Random fields; the term is chosen by the caller (`term_back` and `term_ahead` are offsets
/// from the receiver's term, `epoch` offsets from its region epoch, for those who know them).
pub fn fields() -> impl Strategy<Value = Fields> {
    let entries = prop::collection::vec((num(), num(), 0i32..4, bytes(24)), 0..4);
    let snapshot = prop::option::of((
        num(),
        num(),
        prop::collection::vec(0u64..8, 0..4),
        prop::collection::vec(0u64..8, 0..2),
        bytes(32),
    ));
    (
        (0i32..20, 1u64..4, 0u64..3, num(), num(), num()),
        (entries, any::<bool>(), num(), bytes(9), snapshot),
        (0u64..4, 0u64..4),
    )
        .prop_map(
            |(
                (kind, term_back, term_ahead, log_term, index, commit),
                (entries, reject, reject_hint, context, snapshot),
                epoch,
            )| Fields {
                kind,
                term_back,
                term_ahead,
                log_term,
                index,
                commit,
                entries,
                reject,
                reject_hint,
                context,
                snapshot,
                epoch,
            },
        )
}

/// The message type numbered `k`; an unknown number is an append.
pub fn kind_of(k: i32) -> MessageType {
    MessageType::from_i32(k).unwrap_or(MessageType::MsgAppend)
}

/// Any defect.
pub fn defect() -> impl Strategy<Value = Defect> {
    use MessageType::*;
    let any_kind = (0i32..19).prop_map(kind_of);
    let vote = prop_oneof![Just(MsgRequestVote), Just(MsgRequestPreVote)];
    prop_oneof![
        prop_oneof![
            Just(MsgHup),
            Just(MsgBeat),
            Just(MsgPropose),
            Just(MsgUnreachable),
            Just(MsgSnapStatus),
            Just(MsgCheckQuorum)
        ]
        .prop_map(Defect::LocalOnly),
        any_kind
            .clone()
            .prop_filter("read index goes without a term", |k| *k != MsgReadIndex)
            .prop_map(Defect::NoTerm),
        any_kind.prop_map(Defect::HugeTerm),
        Just(Defect::EntryGap),
        Just(Defect::EntryTermZero),
        Just(Defect::CommitPastLog),
        Just(Defect::AckPastLog),
        prop_oneof![Just(0usize), Just(2usize)].prop_map(Defect::ReadIndexEntries),
        Just(Defect::SnapshotWithoutVoters),
        vote.prop_map(Defect::VoteLogNewerThanTerm),
    ]
}

/// A Raft message of type `kind` and term `term` carrying the random fields `f`.
pub fn raft_message(kind: MessageType, f: &Fields, term: u64) -> eraftpb::Message {
    let mut m = eraftpb::Message::default();
    m.set_msg_type(kind);
    m.term = term;
    m.log_term = f.log_term;
    m.index = f.index;
    m.commit = f.commit;
    m.reject = f.reject;
    m.reject_hint = f.reject_hint;
    m.context = Bytes::from(f.context.clone());
    m.entries = f
        .entries
        .iter()
        .map(|(index, term, kind, data)| {
            let mut e = eraftpb::Entry {
                index: *index,
                term: *term,
                ..Default::default()
            };
            e.set_entry_type(eraftpb::EntryType::from_i32(*kind % 3).unwrap_or_default());
            e.data = Bytes::from(data.clone());
            e
        })
        .collect::<Vec<_>>()
        .into();
    if let Some((index, term, voters, learners, data)) = &f.snapshot {
        let mut s = eraftpb::Snapshot::default();
        s.mut_metadata().index = *index;
        s.mut_metadata().term = *term;
        s.mut_metadata().mut_conf_state().voters = voters.clone();
        s.mut_metadata().mut_conf_state().learners = learners.clone();
        s.data = Bytes::from(data.clone());
        m.set_snapshot(s);
    }
    m
}

/// A Raft message with `defect` for a replica whose id is `receiver` and whose log ends at
/// `last_index`; `term` is its term unless the defect is the term.
pub fn malformed(
    defect: &Defect,
    f: &Fields,
    term: u64,
    last_index: u64,
    receiver: u64,
) -> eraftpb::Message {
    use MessageType::*;
    match defect {
        Defect::LocalOnly(kind) => raft_message(*kind, f, term),
        Defect::NoTerm(kind) => raft_message(*kind, f, 0),
        Defect::HugeTerm(kind) => {
            raft_message(*kind, f, MAX_TERM.saturating_add(1 + f.index % 1000))
        }
        Defect::EntryGap => {
            let mut m = raft_message(MsgAppend, f, term);
            let mut e = eraftpb::Entry::default();
            (e.index, e.term) = (f.index.saturating_add(2), term);
            m.entries = vec![e].into();
            m
        }
        Defect::EntryTermZero => {
            let mut m = raft_message(MsgAppend, f, term);
            let e = eraftpb::Entry {
                index: f.index.wrapping_add(1),
                ..Default::default()
            };
            m.entries = vec![e].into();
            m
        }
        Defect::CommitPastLog => {
            let mut m = raft_message(MsgHeartbeat, f, term);
            m.commit = last_index + 1 + (1 << 40) + f.commit % 1000;
            m
        }
        Defect::AckPastLog => {
            let mut m = raft_message(MsgAppendResponse, f, term);
            m.index = last_index + 1 + (1 << 40) + f.index % 1000;
            m
        }
        Defect::ReadIndexEntries(n) => {
            let mut m = raft_message(MsgReadIndex, f, 0);
            m.entries = vec![eraftpb::Entry::default(); *n].into();
            m
        }
        Defect::SnapshotWithoutVoters => {
            let mut m = raft_message(MsgSnapshot, f, term);
            let mut s = eraftpb::Snapshot::default();
            s.mut_metadata().index = f.index.max(1);
            s.mut_metadata().term = term;
            s.mut_metadata().mut_conf_state().learners = vec![receiver];
            m.set_snapshot(s);
            m
        }
        Defect::VoteLogNewerThanTerm(kind) => {
            let mut m = raft_message(*kind, f, term);
            m.log_term = term + 1 + f.log_term % 10;
            m
        }
    }
}

/// Counts panics on every thread from now on (a poller's or Raft thread's panic would
/// otherwise show only in its log), then chains to the hook installed before.
pub fn count_panics() -> Arc<AtomicUsize> {
    let panics = Arc::new(AtomicUsize::new(0));
    let counter = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    panics
}
