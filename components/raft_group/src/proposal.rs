//! The proposals a leader waits on, settled as their log positions commit: one queue for
//! region peers and PD's group.
//!
//! A proposal is known by the index and term raft-rs gave its entry. Entries commit in index
//! order, so when the entry at `index` with `term` commits:
//! - every proposal below `index` is **stale**: its entry was replaced by another leader's (it
//!   never reached this position, or a later leader overwrote it);
//! - the proposal at `index` is **committed** if its term is `term`, stale otherwise (another
//!   leader's entry took its position).
//!
//! An entry is applied at one position only, so a stale proposal's command never takes effect;
//! its owner answers it with a retryable error (the command may be proposed again).
//!
//! Pure: no IO, no clock (the caller stamps when it proposed).

use std::collections::VecDeque;
use std::time::Instant;

/// One proposal waiting for its entry to commit.
#[derive(Debug)]
pub struct Proposal<T> {
    pub index: u64,
    pub term: u64,
    /// Before its entry left this node: a quorum committing it renews a leader's lease from
    /// here.
    pub proposed_at: Instant,
    /// What the owner answers once settled (a callback, a channel).
    pub payload: T,
}

/// How a proposal was settled.
#[derive(Debug)]
pub enum Settled<T> {
    /// Its entry committed at its position.
    Committed(Proposal<T>),
    /// Its entry will never commit.
    Stale(Proposal<T>),
}

/// Proposals in index order; see the module docs.
#[derive(Debug)]
pub struct ProposalQueue<T> {
    queue: VecDeque<Proposal<T>>,
}

impl<T> Default for ProposalQueue<T> {
    fn default() -> Self {
        ProposalQueue {
            queue: VecDeque::new(),
        }
    }
}

impl<T> ProposalQueue<T> {
    /// Queues a proposal; its index is above every queued one (raft-rs appends in order; a
    /// new leader's proposals come after the old term's, which are then stale).
    pub fn push(&mut self, proposal: Proposal<T>) {
        debug_assert!(self.queue.back().is_none_or(|p| p.index < proposal.index));
        self.queue.push_back(proposal);
    }

    /// Settles what the commit of the entry at `index` with `term` decides, in index order,
    /// through `f`. Returns whether a proposal was at `index` (committed or not).
    pub fn settle(&mut self, index: u64, term: u64, mut f: impl FnMut(Settled<T>)) -> bool {
        while self.queue.front().is_some_and(|p| p.index < index) {
            f(Settled::Stale(
                self.queue.pop_front().expect("front exists"),
            ));
        }
        if self.queue.front().is_none_or(|p| p.index != index) {
            return false;
        }
        let p = self.queue.pop_front().expect("front exists");
        f(if p.term == term {
            Settled::Committed(p)
        } else {
            Settled::Stale(p)
        });
        true
    }

    /// Every queued proposal, leaving the queue empty (leadership lost, shutdown).
    pub fn drain(&mut self) -> impl Iterator<Item = Proposal<T>> + '_ {
        self.queue.drain(..)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(positions: &[(u64, u64)]) -> ProposalQueue<&'static str> {
        let mut q = ProposalQueue::default();
        let at = Instant::now();
        for (index, term) in positions {
            q.push(Proposal {
                index: *index,
                term: *term,
                proposed_at: at,
                payload: "",
            });
        }
        q
    }

    fn settle(q: &mut ProposalQueue<&'static str>, index: u64, term: u64) -> Vec<(u64, bool)> {
        let mut out = Vec::new();
        q.settle(index, term, |s| match s {
            Settled::Committed(p) => out.push((p.index, true)),
            Settled::Stale(p) => out.push((p.index, false)),
        });
        out
    }

    #[test]
    fn a_proposal_commits_at_its_position_in_its_term() {
        let mut q = queue(&[(5, 2), (6, 2)]);
        assert_eq!(settle(&mut q, 5, 2), [(5, true)]);
        assert_eq!(q.len(), 1);
        assert_eq!(settle(&mut q, 6, 2), [(6, true)]);
        assert!(q.is_empty());
    }

    #[test]
    fn another_term_at_its_position_makes_it_stale() {
        let mut q = queue(&[(5, 2)]);
        assert_eq!(settle(&mut q, 5, 3), [(5, false)]);
    }

    #[test]
    fn proposals_skipped_by_a_commit_are_stale() {
        let mut q = queue(&[(5, 2), (6, 2), (8, 2)]);
        // A new leader's entry at 7 commits: 5 and 6 never will at their positions.
        assert_eq!(settle(&mut q, 7, 3), [(5, false), (6, false)]);
        assert_eq!(q.len(), 1);
        // An entry with no proposal of this node leaves the rest waiting.
        let mut q = queue(&[(9, 2)]);
        let mut calls = 0;
        assert!(!q.settle(8, 2, |_| calls += 1));
        assert_eq!((calls, q.len()), (0, 1));
    }

    #[test]
    fn draining_hands_out_everything() {
        let mut q = queue(&[(5, 2), (6, 2)]);
        let drained: Vec<u64> = q.drain().map(|p| p.index).collect();
        assert_eq!(drained, [5, 6]);
        assert!(q.is_empty());
    }
}
