//! An in-process cluster: N stores, each with its own RocksDB in a temporary directory, joined
//! by a [`SimNetwork`], bootstrapped with pre-split regions replicated on every store.
//!
//! Requests go through [`server::RawStorage`], the layer the gRPC service calls, so the harness
//! exercises the same validation, region checks and read path as a real client.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use engine::{keys, Engine, EngineOptions, CF_DEFAULT};
use proto::errorpb;
use proto::kvrpcpb::{self, Context};
use proto::metapb;
use raftstore::peer::PeerStatus;
use raftstore::Store;
use server::raw::Failure;
use server::{Limits, RawStorage};
use tempfile::TempDir;

use crate::network::{Filter, SimNetwork};

/// A running (or partly stopped) in-process cluster.
pub struct Cluster {
    pub cfg: raftstore::Config,
    pub limits: Limits,
    pub net: SimNetwork,
    /// The regions the cluster was bootstrapped with.
    pub regions: Vec<metapb::Region>,
    /// Where keys are routed now: the bootstrap layout, updated by splits and by the current
    /// regions that `EpochNotMatch` errors carry.
    route: parking_lot::RwLock<Vec<metapb::Region>>,
    next_split_id: std::sync::atomic::AtomicU64,
    store_ids: Vec<u64>,
    dirs: HashMap<u64, TempDir>,
    engines: HashMap<u64, Engine>,
    stores: HashMap<u64, Store>,
    storages: HashMap<u64, RawStorage>,
    txns: HashMap<u64, server::txn::TxnStorage>,
    runtime: tokio::runtime::Runtime,
}

/// A raftstore config with a short tick so that tests run fast.
pub fn test_config() -> raftstore::Config {
    raftstore::Config {
        raft_base_tick: Duration::from_millis(50),
        raft_election_ticks: 10,
        raft_heartbeat_ticks: 2,
        raft_log_gc_ticks: 5,
        raft_log_gc_threshold: 16,
        snapshot_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

impl Cluster {
    /// `stores` stores; regions split at `split_keys` (sorted), each replicated on every store.
    pub fn new(stores: u64, split_keys: &[&[u8]]) -> Cluster {
        Self::with_config(stores, split_keys, test_config())
    }

    pub fn with_config(stores: u64, split_keys: &[&[u8]], cfg: raftstore::Config) -> Cluster {
        Self::with_limits(stores, split_keys, cfg, Limits::default())
    }

    /// [`Cluster::with_config`] with request limits (e.g. a short request timeout).
    pub fn with_limits(
        stores: u64,
        split_keys: &[&[u8]],
        cfg: raftstore::Config,
        limits: Limits,
    ) -> Cluster {
        test_util::init_logging();
        let store_ids: Vec<u64> = (1..=stores).collect();
        let mut bounds: Vec<Vec<u8>> = vec![vec![]];
        bounds.extend(split_keys.iter().map(|k| k.to_vec()));
        bounds.push(vec![]);
        let mut next_peer_id = 1000;
        let regions: Vec<metapb::Region> = bounds
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let peers = store_ids
                    .iter()
                    .map(|s| {
                        next_peer_id += 1;
                        metapb::Peer {
                            id: next_peer_id,
                            store_id: *s,
                            ..Default::default()
                        }
                    })
                    .collect();
                metapb::Region {
                    id: i as u64 + 1,
                    start_key: w[0].clone().into(),
                    end_key: w[1].clone().into(),
                    region_epoch: Some(metapb::RegionEpoch {
                        conf_ver: 1,
                        version: 1,
                    }),
                    peers,
                }
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut cluster = Cluster {
            cfg,
            limits,
            net: SimNetwork::new(42),
            route: parking_lot::RwLock::new(regions.clone()),
            next_split_id: std::sync::atomic::AtomicU64::new(1_000_000),
            regions,
            store_ids: store_ids.clone(),
            dirs: HashMap::new(),
            engines: HashMap::new(),
            stores: HashMap::new(),
            storages: HashMap::new(),
            txns: HashMap::new(),
            runtime,
        };
        for id in store_ids {
            let dir = tempfile::tempdir().expect("temp dir");
            let engine = Engine::open(dir.path(), &EngineOptions::default()).expect("open engine");
            raftstore::bootstrap::bootstrap_store(&engine, 1, id).expect("bootstrap store");
            for r in &cluster.regions {
                raftstore::bootstrap::bootstrap_region(&engine, r).expect("bootstrap region");
            }
            drop(engine);
            cluster.dirs.insert(id, dir);
            cluster.start_store(id);
        }
        cluster
    }

    pub fn store_ids(&self) -> &[u64] {
        &self.store_ids
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Runs `f` on the harness's runtime in the background.
    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(f)
    }

    /// The snapshot files (directories, see `raftstore::snap::SnapManager`) on store `id`.
    pub fn snapshot_files(&self, id: u64) -> Vec<String> {
        let dir = self.dirs[&id].path().join("snap");
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Starts (or restarts) store `id` from its data directory.
    pub fn start_store(&mut self, id: u64) {
        assert!(!self.stores.contains_key(&id), "store {id} is running");
        let engine =
            Engine::open(self.dirs[&id].path(), &EngineOptions::default()).expect("open engine");
        let store = Store::start(id, engine.clone(), self.cfg.clone(), self.net.transport(id))
            .expect("start store");
        self.net.register(
            id,
            store.router(),
            raftstore::snap::SnapManager::of(&engine),
        );
        let raw = RawStorage::new(store.router(), engine.clone(), self.limits.clone());
        let sched = storage::scheduler::TxnScheduler::new(raw.kv().clone());
        self.txns
            .insert(id, server::txn::TxnStorage::new(sched, self.limits.clone()));
        self.storages.insert(id, raw);
        self.engines.insert(id, engine);
        self.stores.insert(id, store);
    }

    /// Stops store `id` as a crash would look to the others: it vanishes from the network, its
    /// threads stop and its engine is closed. (Unsynced applied state may be lost, as in a
    /// crash; the synced Raft log is not.)
    pub fn stop_store(&mut self, id: u64) {
        self.net.unregister(id);
        self.storages.remove(&id);
        self.txns.remove(&id);
        if let Some(mut store) = self.stores.remove(&id) {
            store.shutdown();
        }
        self.engines.remove(&id);
    }

    /// Stops store `id` as a planned stop would: it first hands its leaderships to other
    /// stores. Returns how many regions it still led when it stopped.
    pub fn stop_store_gracefully(&mut self, id: u64) -> usize {
        let still_leading = self
            .stores
            .get(&id)
            .map_or(0, |s| s.transfer_leaders_away(Duration::from_secs(10)));
        self.stop_store(id);
        still_leading
    }

    /// Adds an empty store `id` (bootstrapped, hosting no region) and starts it.
    pub fn add_store(&mut self, id: u64) {
        assert!(!self.dirs.contains_key(&id), "store {id} exists");
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open(dir.path(), &EngineOptions::default()).expect("open engine");
        raftstore::bootstrap::bootstrap_store(&engine, 1, id).expect("bootstrap store");
        drop(engine);
        self.dirs.insert(id, dir);
        self.store_ids.push(id);
        self.start_store(id);
    }

    /// Changes the membership of `region_id` through its leader, retrying while leadership
    /// moves; answers with the region after the change.
    pub fn change_peer(
        &self,
        region_id: u64,
        changes: Vec<raftstore::conf_change::PeerChange>,
    ) -> Result<metapb::Region> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // No leader (a cut may leave the region without a quorum for a while) is an
            // error to report, not a reason to panic.
            let Some(leader) = self.leader_store(region_id) else {
                if Instant::now() >= deadline {
                    bail!("no leader of region {region_id}");
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let Some(st) = self.peer_status(leader, region_id) else {
                if Instant::now() >= deadline {
                    bail!("the leader of region {region_id} vanished");
                }
                continue;
            };
            let router = self.stores[&leader].router();
            let changes = changes.clone();
            let res = self.block_on(async move {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    router.change_peer(region_id, st.region.region_epoch, changes),
                )
                .await
            });
            match res {
                Ok(Ok(region)) => {
                    self.update_route(std::slice::from_ref(&region));
                    return Ok(region);
                }
                Ok(Err(
                    e @ (raftstore::Error::InvalidRequest(_)
                    | raftstore::Error::EpochNotMatch { .. }),
                )) => return Err(anyhow!("{e}")),
                other if Instant::now() < deadline => {
                    tracing::debug!(?other, "change peer retry");
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => bail!("change peer of region {region_id} failed: {other:?}"),
            }
        }
    }

    /// Creates store `store_id`'s replica of `region` from the initial state.
    pub fn create_peer(&self, store_id: u64, region: &metapb::Region) {
        self.stores[&store_id]
            .create_peer(region)
            .expect("create peer");
    }

    pub fn restart_store(&mut self, id: u64) {
        self.stop_store(id);
        self.start_store(id);
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.stores.contains_key(&id)
    }

    pub fn add_filter(&self, f: impl Filter + 'static) {
        self.net.add_filter(f);
    }

    pub fn clear_filters(&self) {
        self.net.clear_filters();
    }

    pub fn engine(&self, store_id: u64) -> &Engine {
        &self.engines[&store_id]
    }

    pub fn storage(&self, store_id: u64) -> &RawStorage {
        &self.storages[&store_id]
    }

    /// The transactional API of a running store (one per store, sharing its concurrency
    /// manager across requests).
    pub fn txn(&self, store_id: u64) -> &server::txn::TxnStorage {
        &self.txns[&store_id]
    }

    /// The region whose range holds `key`, as far as the harness knows.
    pub fn region_for_key(&self, key: &[u8]) -> metapb::Region {
        let contains = |r: &metapb::Region| {
            key >= &r.start_key[..] && (r.end_key.is_empty() || key < &r.end_key[..])
        };
        if let Some(r) = self.route.read().iter().find(|r| contains(r)) {
            return r.clone();
        }
        // A gap left by an update that named only part of an old range: ask the stores.
        let region = self
            .hosted_region_for_key(key)
            .expect("some running store has a region holding the key");
        self.update_route(std::slice::from_ref(&region));
        region
    }

    /// The newest region holding `key` that a running store hosts, if any.
    pub fn hosted_region_for_key(&self, key: &[u8]) -> Option<metapb::Region> {
        let contains = |r: &metapb::Region| {
            key >= &r.start_key[..] && (r.end_key.is_empty() || key < &r.end_key[..])
        };
        let mut best: Option<metapb::Region> = None;
        for store in self.stores.values() {
            let router = store.router();
            for id in router.region_ids() {
                let Some(st) = self.peer_status(router.store_id(), id) else {
                    continue;
                };
                let version = |r: &metapb::Region| r.region_epoch.map_or(0, |e| e.version);
                if contains(&st.region)
                    && best
                        .as_ref()
                        .is_none_or(|b| version(b) < version(&st.region))
                {
                    best = Some(st.region);
                }
            }
        }
        best
    }

    /// Learns `regions` (newer epochs replace what they overlap).
    pub fn update_route(&self, regions: &[metapb::Region]) {
        let mut route = self.route.write();
        for r in regions {
            let version = r.region_epoch.map_or(0, |e| e.version);
            let overlaps = |o: &metapb::Region| {
                (r.end_key.is_empty() || o.start_key < r.end_key)
                    && (o.end_key.is_empty() || r.start_key < o.end_key)
            };
            if route
                .iter()
                .any(|o| overlaps(o) && o.region_epoch.map_or(0, |e| e.version) > version)
            {
                continue;
            }
            route.retain(|o| !overlaps(o));
            route.push(r.clone());
        }
        route.sort_by(|a, b| a.start_key.cmp(&b.start_key));
    }

    /// Drops `region_id` from the route (it was merged away).
    pub fn forget_route(&self, region_id: u64) {
        self.route.write().retain(|r| r.id != region_id);
    }

    /// Whether some running store hosts a replica of `region_id`.
    pub fn is_hosted(&self, region_id: u64) -> bool {
        self.stores
            .values()
            .any(|s| s.router().region_ids().contains(&region_id))
    }

    /// Asks the leader of `source_id` to merge it into `target_id` (retrying while the source
    /// is busy, has no leader yet, or sees another epoch of the target); returns the source as
    /// PrepareMerge left it. The merge then completes (or rolls back) on its own.
    pub fn prepare_merge(&self, source_id: u64, target_id: u64) -> Result<metapb::Region> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let result = match self.leader_store(source_id) {
                Some(store) if self.storages.contains_key(&store) => {
                    match self.peer_status(store, target_id) {
                        Some(target) => {
                            let router = self.storages[&store].router().clone();
                            self.block_on(router.prepare_merge(source_id, target.region))
                        }
                        None => Err(raftstore::Error::RegionNotFound(target_id)),
                    }
                }
                _ => Err(raftstore::Error::StaleCommand),
            };
            match result {
                Ok(region) => return Ok(region),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(%e, "prepare merge retry");
                }
                Err(e) => bail!("merge of {source_id} into {target_id} failed: {e}"),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Splits the region holding `key` at `key` (ids from a counter of the harness); returns
    /// the regions the parent's range became.
    pub fn split(&self, key: &[u8]) -> Result<Vec<metapb::Region>> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let region = self.region_for_key(key);
            let ids = vec![raftstore::cmd::SplitIds {
                region_id: self
                    .next_split_id
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                peer_ids: region
                    .peers
                    .iter()
                    .map(|_| {
                        self.next_split_id
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                    })
                    .collect(),
            }];
            let result = match self.leader_store(region.id) {
                Some(store) if self.storages.contains_key(&store) => {
                    let header = raftstore::RequestHeader {
                        replica_read: false,
                        region_id: region.id,
                        epoch: region.region_epoch,
                        peer: region.peers.iter().find(|p| p.store_id == store).cloned(),
                        keys: vec![],
                    };
                    let router = self.storages[&store].router().clone();
                    self.block_on(router.split(header, vec![Bytes::copy_from_slice(key)], ids))
                }
                _ => Err(raftstore::Error::StaleCommand),
            };
            match result {
                Ok(regions) => {
                    self.update_route(&regions);
                    return Ok(regions);
                }
                Err(raftstore::Error::EpochNotMatch {
                    current_regions, ..
                }) => self.update_route(&current_regions),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(%e, "split retry");
                }
                Err(e) => bail!("split at {key:?} failed: {e}"),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The status of region `region_id`'s peer on `store_id`, if the store runs.
    pub fn peer_status(&self, store_id: u64, region_id: u64) -> Option<PeerStatus> {
        let store = self.stores.get(&store_id)?;
        let router = store.router();
        self.block_on(async move {
            tokio::time::timeout(Duration::from_secs(5), router.peer_status(region_id))
                .await
                .ok()?
                .ok()
        })
    }

    /// The store of the leader with the highest term among running stores, if any.
    pub fn leader_store(&self, region_id: u64) -> Option<u64> {
        self.store_ids
            .iter()
            .filter_map(|s| self.peer_status(*s, region_id).map(|st| (*s, st)))
            .filter(|(_, st)| st.is_leader)
            .max_by_key(|(_, st)| st.term)
            .map(|(s, _)| s)
    }

    /// Waits until region `region_id` has a leader among running stores.
    pub fn wait_leader(&self, region_id: u64, timeout: Duration) -> u64 {
        let mut found = None;
        crate::wait_until(&format!("a leader of region {region_id}"), timeout, || {
            found = self.leader_store(region_id);
            found.is_some()
        });
        found.expect("found")
    }

    /// The request context for `region` aimed at its peer on `store_id`.
    pub fn context(&self, region: &metapb::Region, store_id: u64) -> Context {
        Context {
            region_id: region.id,
            region_epoch: region.region_epoch,
            peer: region
                .peers
                .iter()
                .find(|p| p.store_id == store_id)
                .cloned(),
            ..Default::default()
        }
    }

    /// Runs `op` against the leader of the key's region, retrying region errors (and following
    /// NotLeader hints) until `timeout`.
    fn with_leader<T>(
        &self,
        key: &[u8],
        timeout: Duration,
        mut op: impl FnMut(&RawStorage, Context) -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut target: Option<u64> = None;
        let mut last_err = String::from("no attempt");
        let mut pause = Duration::from_millis(5);
        while Instant::now() < deadline {
            let region = self.region_for_key(key);
            let store = match target.take().or_else(|| self.leader_store(region.id)) {
                Some(s) if self.storages.contains_key(&s) => s,
                _ if !self.is_hosted(region.id) => {
                    // Merged away: route by what the stores host now.
                    if let Some(r) = self.hosted_region_for_key(key) {
                        self.forget_route(region.id);
                        self.update_route(std::slice::from_ref(&r));
                        continue;
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                    continue;
                }
                _ => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                    continue;
                }
            };
            match op(&self.storages[&store], self.context(&region, store)) {
                Ok(v) => return Ok(v),
                Err(Failure::Region(e)) => {
                    last_err = format!("{e:?}");
                    if let Some(l) = e.not_leader.as_ref().and_then(|n| n.leader.as_ref()) {
                        target = Some(l.store_id);
                    }
                    if let Some(enm) = &e.epoch_not_match {
                        self.update_route(&enm.current_regions);
                    }
                }
                Err(Failure::Message(m)) => bail!("request failed: {m}"),
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        Err(anyhow!("timed out; last error: {last_err}"))
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.with_leader(key, Duration::from_secs(15), |s, ctx| {
            let req = kvrpcpb::RawPutRequest {
                context: Some(ctx),
                key: Bytes::copy_from_slice(key),
                value: Bytes::copy_from_slice(value),
                ..Default::default()
            };
            let resp = self.block_on(s.raw_put(req))?;
            check_message(resp.error)
        })
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with_leader(key, Duration::from_secs(15), |s, ctx| {
            let req = kvrpcpb::RawGetRequest {
                context: Some(ctx),
                key: Bytes::copy_from_slice(key),
                ..Default::default()
            };
            let resp = self.block_on(s.raw_get(req))?;
            check_message(resp.error.clone())?;
            Ok((!resp.not_found).then(|| resp.value.to_vec()))
        })
    }

    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.with_leader(key, Duration::from_secs(15), |s, ctx| {
            let req = kvrpcpb::RawDeleteRequest {
                context: Some(ctx),
                key: Bytes::copy_from_slice(key),
                ..Default::default()
            };
            let resp = self.block_on(s.raw_delete(req))?;
            check_message(resp.error)
        })
    }

    pub fn must_put(&self, key: &[u8], value: &[u8]) {
        self.put(key, value)
            .unwrap_or_else(|e| panic!("put {:?}: {e}", String::from_utf8_lossy(key)));
    }

    pub fn must_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get(key)
            .unwrap_or_else(|e| panic!("get {:?}: {e}", String::from_utf8_lossy(key)))
    }

    /// Reads `key` straight from `store_id`'s engine (no Raft): to check replication.
    pub fn local_get(&self, store_id: u64, key: &[u8]) -> Option<Vec<u8>> {
        self.engines[&store_id]
            .get(CF_DEFAULT, &keys::data_key(key))
            .expect("engine read")
    }

    /// Waits until the engine of every running store with a replica of the key's region holds
    /// `value` for `key`.
    pub fn wait_replicated(&self, key: &[u8], value: Option<&[u8]>, timeout: Duration) {
        crate::wait_until("replication to every running replica", timeout, || {
            let region_id = self.region_for_key(key).id;
            self.stores
                .keys()
                .filter(|s| self.peer_status(**s, region_id).is_some())
                .all(|s| self.local_get(*s, key).as_deref() == value)
        });
    }

    /// A put sent to `store_id`'s peer without retry: the raw outcome.
    pub fn put_on(
        &self,
        store_id: u64,
        key: &[u8],
        value: &[u8],
    ) -> std::result::Result<(), Failure> {
        let region = self.region_for_key(key);
        let req = kvrpcpb::RawPutRequest {
            context: Some(self.context(&region, store_id)),
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            ..Default::default()
        };
        self.block_on(self.storages[&store_id].raw_put(req))
            .map(|_| ())
    }

    /// A get sent to `store_id`'s peer without retry: the raw outcome.
    pub fn get_on(
        &self,
        store_id: u64,
        key: &[u8],
    ) -> std::result::Result<Option<Vec<u8>>, Failure> {
        let region = self.region_for_key(key);
        let req = kvrpcpb::RawGetRequest {
            context: Some(self.context(&region, store_id)),
            key: Bytes::copy_from_slice(key),
            ..Default::default()
        };
        let resp = self.block_on(self.storages[&store_id].raw_get(req))?;
        Ok((!resp.not_found).then(|| resp.value.to_vec()))
    }

    /// Runs a consistency check of `region_id` (see `raftstore::consistency`) and waits until
    /// every running replica compared its hash with the leader's. Errors name the replicas whose
    /// data differs from the leader's.
    pub fn check_consistency(&self, region_id: u64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        // A check whose leader lost its leadership before proposing the verification never
        // completes on the replicas: start another one then.
        let (leader, index, hash, statuses) = 'check: loop {
            if Instant::now() > deadline {
                bail!("no consistency check of region {region_id} completed within 60s");
            }
            let leader = self.wait_leader(region_id, Duration::from_secs(30));
            let router = self.stores[&leader].router();
            let started = self.block_on(async move {
                tokio::time::timeout(Duration::from_secs(10), router.check_consistency(region_id))
                    .await
            });
            let (index, hash) = match started {
                Ok(Ok(started)) => started,
                other => {
                    tracing::debug!(?other, "consistency check retry");
                    continue;
                }
            };
            let verified_by = Instant::now() + Duration::from_secs(15);
            while Instant::now() < verified_by.min(deadline) {
                let statuses: Vec<(u64, PeerStatus)> = self
                    .stores
                    .keys()
                    .filter_map(|s| self.peer_status(*s, region_id).map(|st| (*s, st)))
                    .collect();
                if statuses
                    .iter()
                    .all(|(_, st)| st.last_verified.is_some_and(|(i, _)| i >= index))
                {
                    break 'check (leader, index, hash, statuses);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            tracing::debug!(
                region_id,
                index,
                "a consistency check did not complete; again"
            );
        };
        let diverged: Vec<String> = statuses
            .iter()
            .filter(|(_, st)| {
                st.hash.is_some_and(|(i, h)| i == index && h != hash)
                    || st.last_verified.is_some_and(|(i, v)| {
                        i == index && matches!(v, raftstore::consistency::Verdict::Mismatch { .. })
                    })
            })
            .map(|(s, st)| format!("store {s} (hash {:?}, leader's {hash})", st.hash))
            .collect();
        if !diverged.is_empty() {
            bail!(
                "region {region_id} diverged at index {index} from the leader on store {leader}: {}",
                diverged.join(", ")
            );
        }
        Ok(())
    }

    /// [`Cluster::check_consistency`] of every region the harness knows; panics on divergence.
    pub fn must_be_consistent(&self) {
        // Merges in flight end first (merged or rolled back): the regions to compare are known.
        crate::wait_until("no region is merging", Duration::from_secs(30), || {
            self.stores.iter().all(|(s, store)| {
                store
                    .router()
                    .region_ids()
                    .into_iter()
                    .all(|id| self.peer_status(*s, id).is_none_or(|st| !st.merging))
            })
        });
        let ids: Vec<u64> = self.route.read().iter().map(|r| r.id).collect();
        // A region merged away has nothing left to compare.
        for id in ids.into_iter().filter(|id| self.is_hosted(*id)) {
            self.check_consistency(id)
                .unwrap_or_else(|e| panic!("consistency check: {e:#}"));
        }
    }

    /// Stops every store.
    pub fn shutdown(&mut self) {
        for id in self.store_ids.clone() {
            self.stop_store(id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
        self.net.close();
    }
}

fn check_message(error: String) -> std::result::Result<(), Failure> {
    if error.is_empty() {
        Ok(())
    } else {
        Err(Failure::Message(error))
    }
}

/// Whether a region error is of the kind a client answers by retrying elsewhere or later.
pub fn is_retryable(e: &errorpb::Error) -> bool {
    e.not_leader.is_some()
        || e.epoch_not_match.is_some()
        || e.server_is_busy.is_some()
        || e.stale_command.is_some()
        || e.proposal_in_merging_mode.is_some()
}
