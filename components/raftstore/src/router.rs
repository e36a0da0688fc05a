//! The [`StoreRouter`]: the handle through which the server, PD's heartbeats and tests reach
//! the peers of one store. It turns calls into peer messages (proposals, reads, admin
//! commands) and their callbacks into futures, delivers Raft messages from other stores
//! (creating a replica when a message proves one belongs here) and grants lease reads on the
//! caller's thread through the local reader.
//!
//! It does not decide anything a peer decides (leadership, epochs, key ranges): a message the
//! peer rejects is answered by the peer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use batch_system::Router;
use bytes::Bytes;
use futures::channel::oneshot;
use parking_lot::Mutex;
use proto::metapb;
use proto::raft_serverpb::RaftMessage;

use crate::cmd::{WriteOp, WriteResponse};
use crate::peer::{PeerFsm, PeerMsg, PeerStatus};
use crate::store::{PeerFactory, ReadGrant, RequestHeader};
use crate::{Error, Result};

/// The handle through which the server and tests reach the peers of a store.
#[derive(Clone)]
pub struct StoreRouter {
    pub(crate) store_id: u64,
    pub(crate) router: Router<PeerFsm>,
    pub(crate) pending: Arc<Mutex<PendingMessages>>,
    pub(crate) factory: Arc<PeerFactory>,
    pub(crate) apply_backlog: crate::apply::ApplyBacklog,
    pub(crate) local_reader: crate::local_reader::LocalReader,
}

/// Raft messages for regions this store does not host yet, kept briefly: the replica of a
/// region just split off is created when this store applies the split, and the new region's
/// first vote requests may arrive before that. Delivering them at creation saves an election
/// timeout. Bounded in count and age; whatever is dropped, Raft sends again.
#[derive(Default)]
pub(crate) struct PendingMessages {
    by_region: HashMap<u64, Vec<(Instant, RaftMessage)>>,
    count: usize,
}

const PENDING_MAX_MESSAGES: usize = 4096;
const PENDING_MAX_AGE: Duration = Duration::from_secs(3);

impl PendingMessages {
    pub(crate) fn push(&mut self, msg: RaftMessage) {
        let now = Instant::now();
        if self.count >= PENDING_MAX_MESSAGES {
            self.by_region.retain(|_, msgs| {
                msgs.retain(|(at, _)| now.duration_since(*at) < PENDING_MAX_AGE);
                !msgs.is_empty()
            });
            self.count = self.by_region.values().map(Vec::len).sum();
            if self.count >= PENDING_MAX_MESSAGES {
                return;
            }
        }
        self.by_region
            .entry(msg.region_id)
            .or_default()
            .push((now, msg));
        self.count += 1;
    }

    pub(crate) fn take(&mut self, region_id: u64) -> Vec<RaftMessage> {
        let msgs = self.by_region.remove(&region_id).unwrap_or_default();
        self.count -= msgs.len();
        let now = Instant::now();
        msgs.into_iter()
            .filter(|(at, _)| now.duration_since(*at) < PENDING_MAX_AGE)
            .map(|(_, m)| m)
            .collect()
    }
}

impl StoreRouter {
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// Whether this store has not heard from `store_id` for an election timeout (see
    /// [`crate::hibernate`]'s store liveness): true of a store that is down, even while the
    /// regions it shares with this one sleep.
    pub fn is_store_silent(&self, store_id: u64) -> bool {
        self.factory.liveness.is_down(store_id)
    }

    /// How far this store's apply lags behind commit, in bytes.
    pub fn apply_backlog(&self) -> &crate::apply::ApplyBacklog {
        &self.apply_backlog
    }

    /// Delivers a Raft message from another store. A message for a region this store does not
    /// host creates an uninitialized replica when it proves this store was added to the region
    /// (see `PeerFactory::maybe_create`); otherwise it is kept for a short while in case the
    /// region is about to be created here by a split.
    pub fn send_raft_message(&self, msg: RaftMessage) -> Result<()> {
        if let Some(from) = &msg.from_peer {
            self.factory.liveness.heard(from.store_id);
        }
        let region_id = msg.region_id;
        if region_id == 0 {
            // A store's liveness beacon: noted above, nothing else to do.
            return Ok(());
        }
        match self.router.send(region_id, PeerMsg::Raft(Box::new(msg))) {
            Ok(()) => Ok(()),
            Err(batch_system::Disconnected(PeerMsg::Raft(msg))) => {
                if self.factory.maybe_create(&msg) {
                    return self
                        .router
                        .send(region_id, PeerMsg::Raft(msg))
                        .map_err(|_| Error::RegionNotFound(region_id));
                }
                if msg
                    .to_peer
                    .as_ref()
                    .is_some_and(|p| p.store_id == self.store_id)
                    && !msg.is_tombstone
                {
                    self.pending.lock().push(*msg);
                }
                Err(Error::RegionNotFound(region_id))
            }
            Err(_) => Err(Error::RegionNotFound(region_id)),
        }
    }

    /// Tells the leader of `region_id` whether the snapshot it sent to peer `to` was
    /// delivered (the transport's report).
    pub fn report_snapshot(&self, region_id: u64, to: u64, delivered: bool) {
        let _ = self
            .router
            .send(region_id, PeerMsg::SnapshotStatus { to, delivered });
    }

    /// Changes the membership of `region_id` (its leader must be on this store), if the region
    /// still has `epoch`'s `conf_ver`. Answers with the region after the change.
    pub async fn change_peer(
        &self,
        region_id: u64,
        epoch: Option<metapb::RegionEpoch>,
        changes: Vec<crate::conf_change::PeerChange>,
    ) -> Result<metapb::Region> {
        let resp = self
            .admin(region_id, |cb| PeerMsg::ChangePeer { epoch, changes, cb })
            .await?;
        first_region(resp, "the change")
    }

    /// Sends the admin command `msg` builds around its callback to `region_id`'s peer and
    /// waits for its answer.
    async fn admin(
        &self,
        region_id: u64,
        msg: impl FnOnce(crate::apply::WriteCallback) -> PeerMsg,
    ) -> Result<WriteResponse> {
        let (tx, rx) = oneshot::channel();
        self.send(
            region_id,
            msg(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        )?;
        rx.await.unwrap_or(Err(Error::Shutdown))
    }

    fn send(&self, region_id: u64, msg: PeerMsg) -> Result<()> {
        self.router.send(region_id, msg).map_err(|e| {
            let err = Error::RegionNotFound(region_id);
            match e.0 {
                PeerMsg::Propose { cb, .. } => cb(Err(err.clone())),
                PeerMsg::Read { cb, .. } => cb(Err(err.clone())),
                PeerMsg::Split { cb, .. } => cb(Err(err.clone())),
                PeerMsg::ChangePeer { cb, .. } => cb(Err(err.clone())),
                PeerMsg::PrepareMerge { cb, .. } => cb(Err(err.clone())),
                _ => {}
            }
            err
        })
    }

    /// Proposes `ops` to the region named by `header`; `cb` runs when they are applied (or fail).
    pub fn propose(
        &self,
        header: RequestHeader,
        ops: Vec<WriteOp>,
        cb: impl FnOnce(Result<WriteResponse>) + Send + 'static,
    ) {
        let region_id = header.region_id;
        let _ = self.send(
            region_id,
            PeerMsg::Propose {
                header,
                ops,
                cb: Box::new(cb),
            },
        );
    }

    /// Asks for a linearizable read grant on the region named by `header`.
    pub fn read(&self, header: RequestHeader, cb: impl FnOnce(Result<ReadGrant>) + Send + 'static) {
        if let Some(grant) = self.local_read(&header) {
            cb(Ok(grant));
            return;
        }
        let region_id = header.region_id;
        let _ = self.send(
            region_id,
            PeerMsg::Read {
                header,
                cb: Box::new(cb),
            },
        );
    }

    /// Splits the region named by `header` at `split_keys` (ascending, inside the region),
    /// giving the new regions the ids in `ids` (one per key, from PD). Answers with every
    /// region the parent's range now consists of.
    pub async fn split(
        &self,
        header: RequestHeader,
        split_keys: Vec<Bytes>,
        ids: Vec<crate::cmd::SplitIds>,
    ) -> Result<Vec<metapb::Region>> {
        let region_id = header.region_id;
        let resp = self
            .admin(region_id, |cb| PeerMsg::Split {
                header,
                split_keys,
                ids,
                cb,
            })
            .await?;
        Ok(resp.regions)
    }

    /// Asks the leader of `source_id` (on this store) to merge the region into `target`, an
    /// adjacent region with replicas on the same stores, at the epoch `target` names (see
    /// [`crate::merge`]). Answers once PrepareMerge applied: the source, now merging, which
    /// the target then absorbs (or, if the target changed meanwhile, which rolls back).
    pub async fn prepare_merge(
        &self,
        source_id: u64,
        target: metapb::Region,
    ) -> Result<metapb::Region> {
        let resp = self
            .admin(source_id, |cb| PeerMsg::PrepareMerge { target, cb })
            .await?;
        first_region(resp, "the merge")
    }

    /// Asks the leader of `region_id` to hand leadership to `to`, if the region still has
    /// `epoch` (scheduling decisions made under another epoch are dropped).
    pub fn transfer_leader(
        &self,
        region_id: u64,
        to: metapb::Peer,
        epoch: Option<metapb::RegionEpoch>,
    ) -> Result<()> {
        self.send(region_id, PeerMsg::TransferLeader { to, epoch })
    }

    /// Starts a consistency check of `region_id` on its leader (this store's peer must lead):
    /// answers with the `ComputeHash` entry's index and the leader's hash once it applied it;
    /// every replica then compares (see [`crate::consistency`]).
    pub async fn check_consistency(&self, region_id: u64) -> Result<(u64, u32)> {
        let resp = self
            .admin(region_id, |cb| PeerMsg::CheckConsistency { cb })
            .await?;
        resp.hash
            .ok_or_else(|| Error::InvalidRequest("the check produced no hash".into()))
    }

    /// [`StoreRouter::propose`] as a future.
    pub async fn write(&self, header: RequestHeader, ops: Vec<WriteOp>) -> Result<WriteResponse> {
        let (tx, rx) = oneshot::channel();
        self.propose(header, ops, move |r| {
            let _ = tx.send(r);
        });
        rx.await.unwrap_or(Err(Error::Shutdown))
    }

    /// A grant under the lease the region's leader published, on this thread, if it covers
    /// `header` (see [`crate::local_reader`]); `None` when only the peer can decide.
    pub fn local_read(&self, header: &RequestHeader) -> Option<ReadGrant> {
        let now = self.factory.cfg.clock.now();
        self.local_reader.try_grant(self.store_id, header, now)
    }

    /// [`StoreRouter::read`] as a future.
    pub async fn read_grant(&self, header: RequestHeader) -> Result<ReadGrant> {
        let (tx, rx) = oneshot::channel();
        self.read(header, move |r| {
            let _ = tx.send(r);
        });
        rx.await.unwrap_or(Err(Error::Shutdown))
    }

    /// Regions of this store that tick (not hibernating).
    pub fn awake_regions(&self) -> usize {
        self.factory.awake.len()
    }

    /// The status of the local peer of `region_id`.
    pub async fn peer_status(&self, region_id: u64) -> Result<PeerStatus> {
        let (tx, rx) = oneshot::channel();
        self.router
            .send(
                region_id,
                PeerMsg::Query(Box::new(move |s| {
                    let _ = tx.send(s);
                })),
            )
            .map_err(|_| Error::RegionNotFound(region_id))?;
        rx.await.map_err(|_| Error::Shutdown)
    }

    /// Ids of every region with a peer on this store, sorted.
    pub fn region_ids(&self) -> Vec<u64> {
        self.router.ids()
    }
}

/// The region an admin command answered with (`what` produced it).
fn first_region(resp: WriteResponse, what: &str) -> Result<metapb::Region> {
    resp.regions
        .into_iter()
        .next()
        .ok_or_else(|| Error::InvalidRequest(format!("{what} produced no region")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(region_id: u64) -> RaftMessage {
        RaftMessage {
            region_id,
            ..Default::default()
        }
    }

    #[test]
    fn pending_messages_are_bounded_and_taken_per_region() {
        let mut pending = PendingMessages::default();
        for i in 0..(PENDING_MAX_MESSAGES as u64 + 10) {
            pending.push(msg(i % 3));
        }
        assert_eq!(pending.count, PENDING_MAX_MESSAGES);
        let taken = pending.take(1);
        assert!(!taken.is_empty() && taken.iter().all(|m| m.region_id == 1));
        assert_eq!(pending.count, PENDING_MAX_MESSAGES - taken.len());
        assert!(pending.take(1).is_empty());
        assert!(pending.take(7).is_empty());
    }
}
