//! [`Snapshot`]: reads of the transactional data as of one timestamp.
//!
//! A read returns the newest version committed at or before the timestamp. A lock of a
//! transaction that may commit at or before it blocks the read: the lock is resolved
//! (`lock_resolver.rs`) and the read retried, at once if the lock is gone, after a backoff if
//! its transaction is alive — until the operation's retry budget runs out
//! ([`Error::Timeout`]). Reads are always safe to send again.

use std::sync::Arc;

use proto::kvrpcpb::{self, KeyError, LockInfo};

use crate::cluster::Cluster;
use crate::codec;
use crate::error::{Error, Result};
use crate::lock_resolver::{resolve_locks, unexpected_key_error};
use crate::txn_batch::{TxnBatchGet, TxnKey};
use crate::txn_plan::{Timestamp, TxnScanWalk};
use crate::{Key, KvPair, Value};

/// A read-only view of the transactional data as of a timestamp. Cheap to clone.
#[derive(Clone)]
pub struct Snapshot {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) ts: Timestamp,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("ts", &self.ts).finish()
    }
}

/// The lock a key error reports, or the error to return.
fn lock_of(e: KeyError) -> Result<LockInfo> {
    match e.locked {
        Some(lock) => Ok(lock),
        None => Err(unexpected_key_error(e)),
    }
}

pub(crate) fn non_empty(key: Key) -> Result<Key> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("key must not be empty".to_owned()));
    }
    Ok(key)
}

impl Snapshot {
    /// The timestamp this snapshot reads at.
    pub fn timestamp(&self) -> Timestamp {
        self.ts
    }

    /// The value of `key`, if it has one.
    pub async fn get(&self, key: impl Into<Key>) -> Result<Option<Value>> {
        let key = non_empty(key.into())?;
        let encoded = codec::encode(&key);
        let cluster = &self.cluster;
        let mut bo = cluster.backoff();
        loop {
            let req = kvrpcpb::GetRequest {
                key: key.clone(),
                version: self.ts,
                ..Default::default()
            };
            let resp = cluster.send_to_key(&encoded, req, &mut bo).await?;
            let Some(e) = resp.error else {
                return Ok((!resp.not_found).then_some(resp.value));
            };
            self.after_locks(vec![lock_of(e)?], &mut bo).await?;
        }
    }

    /// Resolves `locks`; backs off if some transaction is alive.
    async fn after_locks(
        &self,
        locks: Vec<LockInfo>,
        bo: &mut crate::backoff::Backoff,
    ) -> Result<()> {
        let first = locks.first().map(|l| (l.key.clone(), l.lock_version));
        if resolve_locks(&self.cluster, self.ts, locks, bo).await? {
            bo.retry_now(&"locks resolved").await
        } else {
            let (key, ts) = first.unwrap_or_default();
            let why = format!("key {key:?} locked by live transaction {ts}");
            bo.wait(&why).await
        }
    }

    /// The values of those of `keys` that have one, sorted by key.
    pub async fn batch_get(
        &self,
        keys: impl IntoIterator<Item = impl Into<Key>>,
    ) -> Result<Vec<KvPair>> {
        let keys: Vec<Key> = (keys.into_iter())
            .map(|k| non_empty(k.into()))
            .collect::<Result<_>>()?;
        let mut pending = TxnKey::sorted(keys);
        let mut found = Vec::new();
        let mut bo = self.cluster.backoff();
        while !pending.is_empty() {
            let op = TxnBatchGet { ts: self.ts };
            let pairs = (self.cluster)
                .run_batch(&op, pending.clone(), bo.clone())
                .await?;
            let mut locks = Vec::new();
            for pair in pairs {
                match pair.error {
                    Some(e) => locks.push(lock_of(e)?),
                    None => found.push((pair.key, pair.value)),
                }
            }
            if locks.is_empty() {
                break;
            }
            // Read again every key not found yet: a whole-request error names one lock only.
            let have: std::collections::BTreeSet<Key> =
                found.iter().map(|(k, _)| k.clone()).collect();
            pending.retain(|k| !have.contains(&k.raw));
            self.after_locks(locks, &mut bo).await?;
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// At most `limit` pairs of `[start, end)` (empty `end`: +inf) in key order.
    pub async fn scan(
        &self,
        start: impl Into<Key>,
        end: impl Into<Key>,
        limit: u32,
    ) -> Result<Vec<KvPair>> {
        self.scan_walk(start.into(), end.into(), limit, false).await
    }

    /// At most `limit` pairs of `[start, end)` (empty `end`: +inf) in descending key order.
    pub async fn scan_reverse(
        &self,
        start: impl Into<Key>,
        end: impl Into<Key>,
        limit: u32,
    ) -> Result<Vec<KvPair>> {
        self.scan_walk(start.into(), end.into(), limit, true).await
    }

    pub(crate) async fn scan_walk(
        &self,
        start: Key,
        end: Key,
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<KvPair>> {
        if !end.is_empty() && start > end {
            return Err(Error::InvalidArgument(format!(
                "range end {end:?} is before its start {start:?}"
            )));
        }
        let cluster = &self.cluster;
        let mut walk = TxnScanWalk::new(start, end, limit, reverse);
        let mut out = Vec::new();
        let mut bo = cluster.backoff();
        while !walk.is_done() {
            let route = if walk.is_reverse() {
                cluster.locate_before(walk.cursor(), &mut bo).await?
            } else {
                cluster.locate(walk.cursor(), &mut bo).await?
            };
            let range = walk.request(cluster.config.scan_batch_size);
            let req = kvrpcpb::ScanRequest {
                start_key: range.start_key,
                end_key: range.end_key,
                limit: range.limit,
                version: self.ts,
                reverse,
                ..Default::default()
            };
            let Some(mut resp) = cluster.send(&route, req, &mut bo).await? else {
                continue;
            };
            let mut locks = Vec::new();
            if let Some(e) = resp.error.take() {
                locks.push(lock_of(e)?);
            }
            for pair in &mut resp.pairs {
                if let Some(e) = pair.error.take() {
                    locks.push(lock_of(e)?);
                }
            }
            if !locks.is_empty() {
                // Resolve and read this step again.
                self.after_locks(locks, &mut bo).await?;
                continue;
            }
            resp.pairs.truncate(range.limit as usize);
            let got = resp.pairs.len();
            let last = resp.pairs.last().map(|p| p.key.clone());
            let kept: Vec<KvPair> = (resp.pairs.into_iter())
                .filter(|p| walk.keeps(&p.key))
                .map(|p| (p.key, p.value))
                .collect();
            walk.advance(&route.region, range.limit, got, kept.len(), last.as_ref());
            out.extend(kept);
            // Progress was made: the retry budget restarts.
            bo = cluster.backoff();
        }
        Ok(out)
    }
}
