//! A mock cluster for the client: a real placement driver on loopback and mock stores that
//! route like real ones (store, leader, epoch and key checks, in TiKV's order) over one
//! shared in-memory map. Tests change the "truth" (leaders, splits, dead stores) and watch the
//! client adapt.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use client::{Config, RawClient};
use parking_lot::Mutex;
use pd_client::PdClient;
use placement_driver::{PdConfig, PdHandle};
use proto::errorpb;
use proto::kvrpcpb::{self, Context, KvPair};
use proto::metapb::{Region, RegionEpoch, Store};
use proto::tikvpb::tikv_server::{Tikv, TikvServer};
use test_util::{peer, region, RegionBuilder};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// Stores with a mock server; store [`DEAD_STORE`] is registered in PD but nothing listens on
/// its port (connections are refused).
pub const STORES: [u64; 3] = [1, 2, 3];
pub const DEAD_STORE: u64 = 4;
/// Values longer than this are refused with `RaftEntryTooLarge`.
pub const ENTRY_LIMIT: usize = 1024;
/// A key the stores refuse with a validation error.
pub const FORBIDDEN: &[u8] = b"forbidden";
/// A compare-and-swap or put of this key is applied, then answered as undetermined in the response's
/// `error` (as when the store timed out waiting for a write that still committed).
pub const APPLIED_THEN_TIMED_OUT: &[u8] = b"applied-then-timed-out";
/// A write of this key (put, batch put, delete) is applied, then answered only after
/// [`SLOW_ANSWER`]: a client with a shorter request timeout loses the answer.
pub const APPLIED_THEN_SLOW: &[u8] = b"applied-then-slow";
pub const SLOW_ANSWER: Duration = Duration::from_secs(2);

/// The cluster's truth, shared by all mock stores.
#[derive(Default)]
pub struct World {
    pub data: BTreeMap<Bytes, Bytes>,
    pub regions: BTreeMap<u64, Region>,
    /// Leader store of each region; `None`: an election that never ends.
    pub leaders: HashMap<u64, Option<u64>>,
    /// Requests received per store.
    pub requests: HashMap<u64, usize>,
}

fn in_region(key: &[u8], r: &Region) -> bool {
    key >= &r.start_key[..] && (r.end_key.is_empty() || key < &r.end_key[..])
}

enum Failure {
    Region(Box<errorpb::Error>),
    Status(Status),
}

fn region_error(message: &str, fill: impl FnOnce(&mut errorpb::Error)) -> Failure {
    let mut err = errorpb::Error {
        message: message.to_owned(),
        ..Default::default()
    };
    fill(&mut err);
    Failure::Region(Box::new(err))
}

struct MockStore {
    store_id: u64,
    world: Arc<Mutex<World>>,
}

impl MockStore {
    /// The checks of a real store, in TiKV's order; the region on success.
    fn check(&self, ctx: Option<&Context>, keys: &[&[u8]]) -> Result<Region, Failure> {
        let mut w = self.world.lock();
        *w.requests.entry(self.store_id).or_default() += 1;
        let ctx = ctx.ok_or_else(|| Failure::Status(Status::invalid_argument("no context")))?;
        let requested = ctx.peer.map_or(0, |p| p.store_id);
        if requested != self.store_id {
            return Err(region_error("store not match", |e| {
                e.store_not_match = Some(errorpb::StoreNotMatch {
                    request_store_id: requested,
                    actual_store_id: self.store_id,
                })
            }));
        }
        let region = w
            .regions
            .get(&ctx.region_id)
            .filter(|r| r.peers.iter().any(|p| p.store_id == self.store_id))
            .cloned()
            .ok_or_else(|| {
                region_error("region not found", |e| {
                    e.region_not_found = Some(errorpb::RegionNotFound {
                        region_id: ctx.region_id,
                    })
                })
            })?;
        let leader = w.leaders.get(&region.id).copied().flatten();
        if leader != Some(self.store_id) {
            return Err(region_error("not leader", |e| {
                e.not_leader = Some(errorpb::NotLeader {
                    region_id: region.id,
                    leader: leader.map(|s| peer(region.id * 10 + s, s)),
                })
            }));
        }
        let version = |r: Option<&RegionEpoch>| r.map(|e| e.version);
        if version(ctx.region_epoch.as_ref()) != version(region.region_epoch.as_ref()) {
            return Err(region_error("epoch not match", |e| {
                e.epoch_not_match = Some(errorpb::EpochNotMatch {
                    current_regions: vec![region.clone()],
                })
            }));
        }
        for key in keys {
            if !in_region(key, &region) {
                return Err(region_error("key not in region", |e| {
                    e.key_not_in_region = Some(errorpb::KeyNotInRegion {
                        key: Bytes::copy_from_slice(key),
                        region_id: region.id,
                        start_key: region.start_key.clone(),
                        end_key: region.end_key.clone(),
                    })
                }));
            }
        }
        Ok(region)
    }
}

/// Answers a failure in the response's `region_error`, or as a status.
macro_rules! fail {
    ($resp:ty, $failure:expr) => {
        match $failure {
            Failure::Region(e) => {
                return Ok(Response::new(<$resp>::default().with_region_error(*e)));
            }
            Failure::Status(s) => return Err(s),
        }
    };
}

trait WithRegionError {
    fn with_region_error(self, e: errorpb::Error) -> Self;
}

macro_rules! with_region_error {
    ($($t:ty),*) => {$(
        impl WithRegionError for $t {
            fn with_region_error(mut self, e: errorpb::Error) -> Self {
                self.region_error = Some(e);
                self
            }
        }
    )*};
}

with_region_error!(
    kvrpcpb::RawGetResponse,
    kvrpcpb::RawBatchGetResponse,
    kvrpcpb::RawPutResponse,
    kvrpcpb::RawBatchPutResponse,
    kvrpcpb::RawDeleteResponse,
    kvrpcpb::RawBatchDeleteResponse,
    kvrpcpb::RawScanResponse,
    kvrpcpb::RawDeleteRangeResponse,
    kvrpcpb::RawCasResponse
);

async fn answer_slowly_if(slow: bool) {
    if slow {
        tokio::time::sleep(SLOW_ANSWER).await;
    }
}

fn too_large(region_id: u64, size: usize) -> Failure {
    region_error("entry too large", |e| {
        e.raft_entry_too_large = Some(errorpb::RaftEntryTooLarge {
            region_id,
            entry_size: size as u64,
        })
    })
}

#[tonic::async_trait]
impl Tikv for MockStore {
    async fn raw_get(
        &self,
        req: Request<kvrpcpb::RawGetRequest>,
    ) -> Result<Response<kvrpcpb::RawGetResponse>, Status> {
        let req = req.into_inner();
        if let Err(f) = self.check(req.context.as_ref(), &[&req.key]) {
            fail!(kvrpcpb::RawGetResponse, f);
        }
        let value = self.world.lock().data.get(&req.key).cloned();
        Ok(Response::new(kvrpcpb::RawGetResponse {
            not_found: value.is_none(),
            value: value.unwrap_or_default(),
            ..Default::default()
        }))
    }

    async fn raw_batch_get(
        &self,
        req: Request<kvrpcpb::RawBatchGetRequest>,
    ) -> Result<Response<kvrpcpb::RawBatchGetResponse>, Status> {
        let req = req.into_inner();
        if req.keys.iter().any(|k| &k[..] == FORBIDDEN) {
            return Err(Status::invalid_argument("forbidden key"));
        }
        let keys: Vec<&[u8]> = req.keys.iter().map(|k| &k[..]).collect();
        if let Err(f) = self.check(req.context.as_ref(), &keys) {
            fail!(kvrpcpb::RawBatchGetResponse, f);
        }
        let w = self.world.lock();
        let pairs = (req.keys.iter())
            .filter_map(|k| {
                w.data.get(k).map(|v| KvPair {
                    key: k.clone(),
                    value: v.clone(),
                    ..Default::default()
                })
            })
            .collect();
        Ok(Response::new(kvrpcpb::RawBatchGetResponse {
            pairs,
            ..Default::default()
        }))
    }

    async fn raw_put(
        &self,
        req: Request<kvrpcpb::RawPutRequest>,
    ) -> Result<Response<kvrpcpb::RawPutResponse>, Status> {
        let req = req.into_inner();
        if &req.key[..] == FORBIDDEN {
            return Ok(Response::new(kvrpcpb::RawPutResponse {
                error: "forbidden key".to_owned(),
                ..Default::default()
            }));
        }
        let region = match self.check(req.context.as_ref(), &[&req.key]) {
            Ok(r) => r,
            Err(f) => fail!(kvrpcpb::RawPutResponse, f),
        };
        if req.value.len() > ENTRY_LIMIT {
            fail!(
                kvrpcpb::RawPutResponse,
                too_large(region.id, req.value.len())
            );
        }
        let slow = req.key[..] == *APPLIED_THEN_SLOW;
        let timed_out = req.key[..] == *APPLIED_THEN_TIMED_OUT;
        self.world.lock().data.insert(req.key, req.value);
        if timed_out {
            return Ok(Response::new(kvrpcpb::RawPutResponse {
                error: "write outcome undetermined: no result within 5s".to_owned(),
                ..Default::default()
            }));
        }
        answer_slowly_if(slow).await;
        Ok(Response::new(Default::default()))
    }

    async fn raw_batch_put(
        &self,
        req: Request<kvrpcpb::RawBatchPutRequest>,
    ) -> Result<Response<kvrpcpb::RawBatchPutResponse>, Status> {
        let req = req.into_inner();
        let keys: Vec<&[u8]> = req.pairs.iter().map(|p| &p.key[..]).collect();
        if let Err(f) = self.check(req.context.as_ref(), &keys) {
            fail!(kvrpcpb::RawBatchPutResponse, f);
        }
        let slow = req.pairs.iter().any(|p| p.key[..] == *APPLIED_THEN_SLOW);
        {
            let mut w = self.world.lock();
            for p in req.pairs {
                w.data.insert(p.key, p.value);
            }
        }
        answer_slowly_if(slow).await;
        Ok(Response::new(Default::default()))
    }

    async fn raw_delete(
        &self,
        req: Request<kvrpcpb::RawDeleteRequest>,
    ) -> Result<Response<kvrpcpb::RawDeleteResponse>, Status> {
        let req = req.into_inner();
        if let Err(f) = self.check(req.context.as_ref(), &[&req.key]) {
            fail!(kvrpcpb::RawDeleteResponse, f);
        }
        self.world.lock().data.remove(&req.key);
        answer_slowly_if(req.key[..] == *APPLIED_THEN_SLOW).await;
        Ok(Response::new(Default::default()))
    }

    async fn raw_batch_delete(
        &self,
        req: Request<kvrpcpb::RawBatchDeleteRequest>,
    ) -> Result<Response<kvrpcpb::RawBatchDeleteResponse>, Status> {
        let req = req.into_inner();
        let keys: Vec<&[u8]> = req.keys.iter().map(|k| &k[..]).collect();
        if let Err(f) = self.check(req.context.as_ref(), &keys) {
            fail!(kvrpcpb::RawBatchDeleteResponse, f);
        }
        let mut w = self.world.lock();
        for k in &req.keys {
            w.data.remove(k);
        }
        Ok(Response::new(Default::default()))
    }

    async fn raw_scan(
        &self,
        req: Request<kvrpcpb::RawScanRequest>,
    ) -> Result<Response<kvrpcpb::RawScanResponse>, Status> {
        let req = req.into_inner();
        let checked: Vec<&[u8]> = if req.reverse {
            vec![]
        } else {
            vec![&req.start_key]
        };
        let region = match self.check(req.context.as_ref(), &checked) {
            Ok(r) => r,
            Err(f) => fail!(kvrpcpb::RawScanResponse, f),
        };
        let (lower, upper) = if req.reverse {
            (&req.end_key, &req.start_key)
        } else {
            (&req.start_key, &req.end_key)
        };
        let below = |k: &Bytes| upper.is_empty() || k < upper;
        let w = self.world.lock();
        let matching = |(k, _): &(&Bytes, &Bytes)| in_region(k, &region) && *k >= lower && below(k);
        let to_pair = |(k, v): (&Bytes, &Bytes)| KvPair {
            key: k.clone(),
            value: if req.key_only {
                Bytes::new()
            } else {
                v.clone()
            },
            ..Default::default()
        };
        let limit = req.limit as usize;
        let kvs = if req.reverse {
            w.data
                .iter()
                .rev()
                .filter(matching)
                .take(limit)
                .map(to_pair)
                .collect()
        } else {
            w.data
                .iter()
                .filter(matching)
                .take(limit)
                .map(to_pair)
                .collect()
        };
        Ok(Response::new(kvrpcpb::RawScanResponse {
            kvs,
            ..Default::default()
        }))
    }

    async fn raw_delete_range(
        &self,
        req: Request<kvrpcpb::RawDeleteRangeRequest>,
    ) -> Result<Response<kvrpcpb::RawDeleteRangeResponse>, Status> {
        let req = req.into_inner();
        let region = match self.check(req.context.as_ref(), &[&req.start_key]) {
            Ok(r) => r,
            Err(f) => fail!(kvrpcpb::RawDeleteRangeResponse, f),
        };
        let end = if req.end_key.is_empty() {
            region.end_key.clone()
        } else {
            req.end_key.clone()
        };
        if !region.end_key.is_empty() && (end.is_empty() || end > region.end_key) {
            return Ok(Response::new(kvrpcpb::RawDeleteRangeResponse {
                error: "range end outside the region".to_owned(),
                ..Default::default()
            }));
        }
        self.world
            .lock()
            .data
            .retain(|k, _| !(*k >= req.start_key && (end.is_empty() || *k < end)));
        Ok(Response::new(Default::default()))
    }

    async fn raw_compare_and_swap(
        &self,
        req: Request<kvrpcpb::RawCasRequest>,
    ) -> Result<Response<kvrpcpb::RawCasResponse>, Status> {
        let req = req.into_inner();
        if let Err(f) = self.check(req.context.as_ref(), &[&req.key]) {
            fail!(kvrpcpb::RawCasResponse, f);
        }
        let mut w = self.world.lock();
        let previous = w.data.get(&req.key).cloned();
        let succeed = match &previous {
            None => req.previous_not_exist,
            Some(v) => !req.previous_not_exist && *v == req.previous_value,
        };
        if succeed {
            w.data.insert(req.key.clone(), req.value);
        }
        if req.key[..] == *APPLIED_THEN_TIMED_OUT {
            return Ok(Response::new(kvrpcpb::RawCasResponse {
                error: "write outcome undetermined: no result within 5s".to_owned(),
                ..Default::default()
            }));
        }
        Ok(Response::new(kvrpcpb::RawCasResponse {
            succeed,
            previous_not_exist: previous.is_none(),
            previous_value: previous.unwrap_or_default(),
            ..Default::default()
        }))
    }
}

/// A running mock store's server: its shutdown signal and its task.
type MockServer = (oneshot::Sender<()>, JoinHandle<()>);

/// PD, three mock stores and a dead one, and regions `["", "g")` = 1 (leader on store 1),
/// `["g", "p")` = 2 (store 2), `["p", "")` = 3 (store 3, its first peer on the dead store).
pub struct MockCluster {
    pub world: Arc<Mutex<World>>,
    pub pd: PdClient,
    /// The running mock stores' servers: a shutdown signal and the server task.
    servers: Mutex<HashMap<u64, MockServer>>,
    _pd_server: PdHandle,
    _dir: tempfile::TempDir,
}

impl MockCluster {
    pub async fn start() -> MockCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let pd_server = placement_driver::start(PdConfig::for_test(dir.path()))
            .await
            .expect("PD starts");
        let pd = PdClient::connect(vec![pd_server.addr().to_string()])
            .await
            .expect("PD client connects");
        let world = Arc::new(Mutex::new(World::default()));
        let mut stores = Vec::new();
        let mut servers = HashMap::new();
        for store_id in STORES {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("local addr");
            let service = MockStore {
                store_id,
                world: Arc::clone(&world),
            };
            let (stop, stopped) = oneshot::channel::<()>();
            let server = tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(TikvServer::new(service))
                    .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                        let _ = stopped.await;
                    })
                    .await;
            });
            servers.insert(store_id, (stop, server));
            stores.push(Store {
                id: store_id,
                address: addr.to_string(),
                ..Default::default()
            });
        }
        // A store whose port nobody listens on.
        let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        stores.push(Store {
            id: DEAD_STORE,
            address: dead.local_addr().expect("local addr").to_string(),
            ..Default::default()
        });
        drop(dead);

        let regions = [
            region(1).range("", "g").version(2).voters_on(&[1, 2, 3]),
            region(2).range("g", "p").version(2).voters_on(&[1, 2, 3]),
            region(3)
                .range("p", "")
                .version(2)
                .voters_on(&[DEAD_STORE, 1, 2, 3]),
        ]
        .into_iter()
        .map(RegionBuilder::build)
        .collect::<Vec<_>>();
        pd.bootstrap(stores[0].clone(), region(1).voters_on(&[1]).build())
            .await
            .expect("bootstrap");
        for store in &stores[1..] {
            pd.put_store(store.clone()).await.expect("put store");
        }
        pd.report_batch_split(regions.clone())
            .await
            .expect("report split");
        {
            let mut w = world.lock();
            for (r, leader) in regions.into_iter().zip([1, 2, 3]) {
                w.leaders.insert(r.id, Some(leader));
                w.regions.insert(r.id, r);
            }
        }
        MockCluster {
            world,
            pd,
            servers: Mutex::new(servers),
            _pd_server: pd_server,
            _dir: dir,
        }
    }

    pub fn client(&self, config: Config) -> RawClient {
        RawClient::with_pd_client(self.pd.clone(), config)
    }

    /// Splits region `id` at `key` in the truth and in PD; the new right half gets `new_id`
    /// and the same leader.
    pub async fn split(&self, id: u64, key: &str, new_id: u64) {
        let (left, right) = {
            let mut w = self.world.lock();
            let old = w.regions.get(&id).cloned().expect("region exists");
            let version = old.region_epoch.map_or(0, |e| e.version) + 1;
            let stores: Vec<u64> = old.peers.iter().map(|p| p.store_id).collect();
            let left = region(id)
                .range(&old.start_key, key)
                .version(version)
                .voters_on(&stores)
                .build();
            let right = region(new_id)
                .range(key, &old.end_key)
                .version(version)
                .voters_on(&stores)
                .build();
            let leader = w.leaders.get(&id).copied().flatten();
            w.leaders.insert(new_id, leader);
            w.regions.insert(id, left.clone());
            w.regions.insert(new_id, right.clone());
            (left, right)
        };
        self.pd
            .report_batch_split(vec![left, right])
            .await
            .expect("report split");
    }

    /// Stops store `store_id`'s server as a crash would look to clients: once this returns,
    /// its connections are closed and its port refuses new ones.
    pub async fn stop_store(&self, store_id: u64) {
        let (stop, server) = self
            .servers
            .lock()
            .remove(&store_id)
            .expect("the store runs");
        let _ = stop.send(());
        within("the mock store stops", server)
            .await
            .expect("server task");
    }

    pub fn set_leader(&self, region_id: u64, store: Option<u64>) {
        self.world.lock().leaders.insert(region_id, store);
    }

    pub fn requests(&self, store_id: u64) -> usize {
        self.world
            .lock()
            .requests
            .get(&store_id)
            .copied()
            .unwrap_or(0)
    }
}

/// A config with a short retry budget, so that failing tests fail fast.
pub fn test_config() -> Config {
    Config {
        max_retry_time: Duration::from_secs(5),
        request_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

/// Runs `f` with a deadline.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in time"))
}
