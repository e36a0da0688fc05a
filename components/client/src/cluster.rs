//! Routing and retrying one request: find the region (cache, else PD), find the store
//! (cache, else PD), send, and turn the answer into a result or a retry.
//!
//! [`Cluster::send`] is one attempt; it applies what a failure teaches to the caches, sleeps
//! the backoff the failure calls for, and answers `Ok(None)` when the caller should re-resolve
//! the route and try again. Every caller loops on it, re-resolving the region from the cache
//! each time, so one loop serves single-key requests, batch parts and scan steps alike.

use std::future::Future;

use bytes::Bytes;
use parking_lot::RwLock;
use pd_client::PdClient;
use tokio::time::Instant;
use tonic::Code;
use tracing::debug;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::delivery::certainly_not_delivered;
use crate::error::{region_error_summary, Error, Result};
use crate::region_cache::{Recovery, RegionCache, RegionRoute};
use crate::rpc::RawRpc;
use crate::stores::{StoreError, Stores};

/// How a store's `error` begins for a write whose outcome it does not know (server::raw).
const UNDETERMINED_PREFIX: &str = "write outcome undetermined: ";

/// Regions asked from PD per page when looking for the last region.
const SCAN_REGIONS_PAGE: i32 = 64;

/// Everything the client knows about the cluster, shared by all clones of the client.
pub(crate) struct Cluster {
    pub(crate) pd: PdClient,
    pub(crate) config: Config,
    pub(crate) regions: RwLock<RegionCache>,
    stores: Stores,
    /// Turns of replica reads over a region's voters (see [`Cluster::read_key`]).
    next_replica: std::sync::atomic::AtomicUsize,
}

/// Whether a gRPC status means the store could not be reached (or did not answer in time),
/// rather than that it refused the request. (tonic reports HTTP/2 stream and connection
/// errors as `Internal`; our stores never answer it themselves.)
fn is_transport_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
            | Code::Internal
    )
}

/// Whether a PD error may go away by itself soon (the region map is still being filled).
fn pd_error_is_transient(e: &pd_client::Error) -> bool {
    matches!(
        e,
        pd_client::Error::RegionNotFound { .. } | pd_client::Error::NotBootstrapped { .. }
    )
}

impl Cluster {
    pub(crate) fn new(pd: PdClient, config: Config) -> Cluster {
        Cluster {
            stores: Stores::new(&config),
            pd,
            config,
            regions: RwLock::new(RegionCache::new()),
            next_replica: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// A fresh retry budget.
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(&self.config)
    }

    /// Runs a PD call within what is left of the budget. `Ok(None)`: a transient PD error,
    /// already backed off.
    async fn pd_call<T>(
        &self,
        call: impl Future<Output = pd_client::Result<T>>,
        bo: &mut Backoff,
    ) -> Result<Option<T>> {
        match tokio::time::timeout(bo.remaining(Instant::now()), call).await {
            Err(_) => Err(bo.give_up(&"PD did not answer in time", Instant::now())),
            Ok(Ok(v)) => Ok(Some(v)),
            Ok(Err(e)) if pd_error_is_transient(&e) => {
                bo.wait(&e).await?;
                Ok(None)
            }
            Ok(Err(e)) => Err(Error::Pd(e)),
        }
    }

    /// The route of the region containing `key`: from the cache, else from PD.
    pub(crate) async fn locate(&self, key: &[u8], bo: &mut Backoff) -> Result<RegionRoute> {
        let mut loaded = false;
        loop {
            let cached = self.regions.read().locate(key);
            if let Some(route) = cached {
                return Ok(route);
            }
            if loaded {
                bo.wait(&format!("no usable region for key {key:?} in PD's answer"))
                    .await?;
            }
            // `None`: a transient PD error, already backed off.
            let answer = self.pd_call(self.pd.get_region(key), bo).await?;
            loaded = answer.is_some();
            if let Some(info) = answer {
                debug!(region_id = info.region.id, "region loaded from PD");
                self.regions.write().insert(info.region, info.leader);
            }
        }
    }

    /// The route of the region holding the keys just below `upper` (empty: +inf), where a
    /// reverse scan bounded by `upper` starts: from the cache, else from PD.
    pub(crate) async fn locate_before(
        &self,
        upper: &Bytes,
        bo: &mut Backoff,
    ) -> Result<RegionRoute> {
        let mut loaded = false;
        loop {
            let cached = self.regions.read().locate_before(upper);
            if let Some(route) = cached {
                return Ok(route);
            }
            if loaded {
                bo.wait(&format!("no usable region below {upper:?} in PD's answer"))
                    .await?;
            }
            if upper.is_empty() {
                loaded = self.load_last_region(bo).await?;
                continue;
            }
            let answer = self.pd_call(self.pd.get_region(upper), bo).await?;
            loaded = answer.is_some();
            let Some(info) = answer else {
                continue;
            };
            // `upper` is exclusive: if its region starts at it, we need the one before.
            let need_prev = info.region.start_key[..] >= upper[..];
            self.regions.write().insert(info.region, info.leader);
            if need_prev {
                if let Some(Some(prev)) = self.pd_call(self.pd.get_prev_region(upper), bo).await? {
                    self.regions.write().insert(prev.region, prev.leader);
                }
            }
        }
    }

    /// Caches the regions from the start of the keyspace to its end, a page at a time, so that
    /// the last region (whose end is +inf) is known. `false`: a transient PD error, already
    /// backed off.
    async fn load_last_region(&self, bo: &mut Backoff) -> Result<bool> {
        let mut from = Bytes::new();
        loop {
            let page = self
                .pd_call(self.pd.scan_regions(&from, &[], SCAN_REGIONS_PAGE), bo)
                .await?;
            let Some(page) = page else {
                return Ok(false);
            };
            if page.is_empty() {
                return Ok(true);
            }
            let last_end = page.last().map(|r| r.region.end_key.clone());
            {
                let mut cache = self.regions.write();
                for info in page {
                    cache.insert(info.region, info.leader);
                }
            }
            match last_end {
                Some(end) if !end.is_empty() && end > from => from = end,
                _ => return Ok(true),
            }
        }
    }

    /// Sends `req` to `key`'s region until it succeeds or fails for good.
    pub(crate) async fn send_to_key<R: RawRpc>(
        &self,
        key: &[u8],
        req: R,
        bo: &mut Backoff,
    ) -> Result<R::Response> {
        self.send_to_key_as(key, req, bo, false).await
    }

    /// [`Cluster::send_to_key`] for a point read. With [`Config::replica_read`] each attempt
    /// goes to the next voter of the region in turn, marked as a replica read, so that a
    /// follower serves it after a ReadIndex round with the leader.
    pub(crate) async fn read_key<R: RawRpc>(
        &self,
        key: &[u8],
        req: R,
        bo: &mut Backoff,
    ) -> Result<R::Response> {
        self.send_to_key_as(key, req, bo, self.config.replica_read)
            .await
    }

    async fn send_to_key_as<R: RawRpc>(
        &self,
        key: &[u8],
        req: R,
        bo: &mut Backoff,
        replica_read: bool,
    ) -> Result<R::Response> {
        loop {
            let mut route = self.locate(key, bo).await?;
            if replica_read {
                if let Some(peer) = self.next_voter(&route) {
                    route.peer = peer;
                }
            }
            if let Some(resp) = self.send_as(&route, req.clone(), bo, replica_read).await? {
                return Ok(resp);
            }
        }
    }

    /// The region's next voter in turn (see [`Cluster::read_key`]).
    fn next_voter(&self, route: &RegionRoute) -> Option<proto::metapb::Peer> {
        let voters: Vec<_> = route
            .region
            .peers
            .iter()
            .filter(|p| p.role() != proto::metapb::PeerRole::Learner)
            .collect();
        let turn = self
            .next_replica
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        voters.get(turn % voters.len().max(1)).map(|p| **p)
    }

    /// One attempt of `req` at `route`. `Ok(None)`: retryable failure, already applied to the
    /// caches and backed off; re-resolve the route and try again.
    pub(crate) async fn send<R: RawRpc>(
        &self,
        route: &RegionRoute,
        req: R,
        bo: &mut Backoff,
    ) -> Result<Option<R::Response>> {
        self.send_as(route, req, bo, false).await
    }

    /// [`Cluster::send`], as a replica read or not.
    async fn send_as<R: RawRpc>(
        &self,
        route: &RegionRoute,
        mut req: R,
        bo: &mut Backoff,
        replica_read: bool,
    ) -> Result<Option<R::Response>> {
        let mut context = route.context();
        context.replica_read = replica_read;
        req.set_context(context);
        let store_id = route.peer.store_id;
        let pd_timeout = bo.remaining(Instant::now());
        let (address, client) = match self.stores.client(&self.pd, store_id, pd_timeout).await {
            Ok(c) => c,
            Err(StoreError::Fatal(e)) => return Err(e),
            Err(StoreError::PdTimeout) => {
                let why = format!("PD get_store({store_id}) did not answer in time");
                return Err(bo.give_up(&why, Instant::now()));
            }
            Err(StoreError::Unusable(why)) => {
                self.on_send_failure(route, None, &why, bo).await?;
                return Ok(None);
            }
        };
        let timeout = bo.attempt_timeout(self.config.request_timeout, Instant::now())?;
        let status = match tokio::time::timeout(timeout, R::call(client, req)).await {
            Ok(Ok(resp)) => return self.on_response::<R>(route, resp.into_inner(), bo).await,
            Ok(Err(status)) => status,
            // A request that may be resent (a read), cut short by the end of the retry budget
            // rather than by the store's slowness. (A write that timed out may have been
            // delivered: it takes the path below and ends undetermined.)
            Err(_) if R::RESEND_AFTER_LOSS && timeout < self.config.request_timeout => {
                let why = format!("no answer within {timeout:?}, the rest of the retry budget");
                return Err(bo.budget_spent(&why, Instant::now()));
            }
            Err(_) => tonic::Status::deadline_exceeded(format!("no answer within {timeout:?}")),
        };
        match status.code() {
            Code::InvalidArgument => Err(Error::Server(status.message().to_owned())),
            code if is_transport_failure(code) => {
                let why = format!(
                    "{} to store {store_id} at {address}: {code:?}: {}",
                    R::NAME,
                    status.message()
                );
                if !R::RESEND_AFTER_LOSS && !certainly_not_delivered(&status) {
                    // The write may have reached the store and may still apply: resending it
                    // could apply it again after a later write of another client. The next
                    // request avoids this peer all the same.
                    self.forget_peer(route, Some(&address));
                    return Err(Error::Undetermined(why));
                }
                self.on_send_failure(route, Some(&address), &why, bo)
                    .await?;
                Ok(None)
            }
            _ => Err(Error::Grpc(status)),
        }
    }

    async fn on_response<R: RawRpc>(
        &self,
        route: &RegionRoute,
        mut resp: R::Response,
        bo: &mut Backoff,
    ) -> Result<Option<R::Response>> {
        let Some(err) = R::take_region_error(&mut resp) else {
            return match R::take_error(&mut resp) {
                // The store gave up waiting for the write (timeout, shutdown): it may still
                // apply. A region error, by contrast, means it was not proposed.
                Some(message) if message.starts_with(UNDETERMINED_PREFIX) => {
                    Err(Error::Undetermined(format!(
                        "{} to store {}: {message}",
                        R::NAME,
                        route.peer.store_id
                    )))
                }
                Some(message) => Err(Error::Server(message)),
                None => Ok(Some(resp)),
            };
        };
        if err.store_not_match.is_some() {
            self.stores.forget_store(route.peer.store_id);
        }
        let recovery = self.regions.write().on_region_error(route, &err);
        let why = format!(
            "{} to region {} at store {}: {}",
            R::NAME,
            route.region.id,
            route.peer.store_id,
            region_error_summary(&err)
        );
        debug!(
            region_id = route.region.id,
            store_id = route.peer.store_id,
            peer_id = route.peer.id,
            ?recovery,
            "{why}"
        );
        match recovery {
            Recovery::RetryNow => bo.retry_now(&why).await?,
            Recovery::Backoff => match err.server_is_busy.as_ref().map(|b| b.backoff_ms) {
                Some(hint) if hint > 0 => {
                    bo.wait_at_least(&why, std::time::Duration::from_millis(hint))
                        .await?
                }
                _ => bo.wait(&why).await?,
            },
            Recovery::Fail => return Err(Error::Region(Box::new(err))),
        }
        Ok(None)
    }

    /// `route.peer` could not be reached: forget its connection and address, target another
    /// peer (at once) or, with none left, reload the region (after a pause).
    async fn on_send_failure(
        &self,
        route: &RegionRoute,
        address: Option<&str>,
        why: &str,
        bo: &mut Backoff,
    ) -> Result<()> {
        let another_peer = self.forget_peer(route, address);
        debug!(
            region_id = route.region.id,
            store_id = route.peer.store_id,
            another_peer,
            "{why}"
        );
        if another_peer {
            bo.retry_now(&why).await
        } else {
            bo.wait(&why).await
        }
    }

    /// Forgets `route.peer`'s connection and address and targets another peer of the region;
    /// `false` if none is left (the region entry was dropped).
    fn forget_peer(&self, route: &RegionRoute, address: Option<&str>) -> bool {
        if let Some(address) = address {
            self.stores.drop_connection(address);
        }
        self.stores.forget_store(route.peer.store_id);
        self.regions.write().on_send_failure(route)
    }

    /// Whether the cache holds a region for `key` (without building a route).
    pub(crate) fn is_cached(&self, key: &[u8]) -> bool {
        self.regions.read().region_of(key).is_some()
    }
}
