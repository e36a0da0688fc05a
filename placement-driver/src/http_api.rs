//! PD's HTTP API: the read-only part of TiKV PD's `/pd/api/v1` that pd-ctl and client test
//! harnesses use, with PD's paths and JSON shapes.
//!
//! It is served on the client port, as PD does: the gRPC server accepts HTTP/1.1 next to HTTP/2
//! (hyper detects the protocol per connection), and [`routes`] puts these paths in front of the
//! gRPC services in one router. gRPC requests (HTTP/2, `content-type: application/grpc`) to an
//! unknown method still get gRPC's `Unimplemented`; anything else unknown gets a 404.
//!
//! Probes for orchestrators and load balancers, at the root: `GET /health` answers 200 while
//! the process serves HTTP; `GET /ready` answers 200 once this member knows PD's leader, else
//! 503 (`{ready, member_id, leader_id, is_leader}`). `GET /metrics` serves Prometheus' text
//! format ([`crate::metrics`]).
//!
//! Endpoints (all `GET`, under `/pd/api/v1`):
//!
//! | path | answer | served by |
//! |---|---|---|
//! | `/ping` | empty 200 | any member |
//! | `/members` | `GetMembersResponse` as JSON: `header`, `members`, `leader`, `etcd_leader` | any member |
//! | `/leader` | the leader's `Member`, `null` if unknown | any member |
//! | `/health` | `[{name, member_id, client_urls, health}]`: a member is healthy if it answers `GetMembers` within 1 s | any member |
//! | `/stores` | `{count, stores: [{store, status}]}`; Up and Offline stores, or those of `?state=<0/1/2>` (repeatable) | leader |
//! | `/store/{id}` | one `{store, status}` (tombstones too) | leader |
//! | `/regions` | `{count, regions: [RegionInfo]}` in key order | leader |
//! | `/regions/count` | `{count, regions: null}` | leader |
//! | `/region/id/{id}` | one `RegionInfo` | leader |
//! | `/region/key/{key}` | the `RegionInfo` of the region containing `key` | leader |
//! | `/cluster` (PD's path; also `/config/cluster`) | `metapb.Cluster`: `{id, max_peer_count}` | leader |
//! | `/gc/safepoint` | `{service_gc_safe_points, min_service_gc_safe_point, gc_safe_point}` | leader |
//!
//! JSON conventions, as PD's (its `pkg/response` types and Go's `encoding/json` of kvproto):
//! - Protobuf messages keep their field names and omit zero fields (`omitempty`): a peer without
//!   a role has no `role`, an epoch `{conf_ver: 0, version: 1}` is `{"version": 1}`.
//! - Region keys are upper-case hex of the key bytes (`"start_key": "6D"`); an unknown leader is
//!   `"leader": {"role_name": ""}`; `approximate_size` is in MiB (1 for a non-empty region
//!   smaller than that).
//! - Store sizes are strings with binary units (`"capacity": "1000GiB"`), times RFC 3339 (in
//!   UTC here), durations Go-style (`"1h2m3s"`). `state_name` is `Up`, `Offline` or
//!   `Tombstone`; an Up store last heard from more than 20 s ago is `Disconnected`, more than
//!   30 min ago `Down`.
//! - Errors are a JSON string with an HTTP status, PD's error code in brackets where PD has
//!   one: 400 for a malformed id or key, 404 for an unknown store or region (`"[PD:core:
//!   ErrStoreNotFound]store 9 not found"`), 500 before bootstrap for region paths, 503 on a
//!   member that may not serve.
//! - `/region/key/{key}` takes the key query-escaped, as PD's Go client sends it
//!   (`url.QueryEscape`: `%XX` bytes, `+` for a space), or hex with `?format=hex`.
//!
//! Leader-only paths answer from this node's state only on a serving leader (the same check as
//! the gRPC service, [`Cluster::require_leader`]). A follower does not proxy to the leader as
//! PD does: it answers 503 with the "not leader" error naming the leader (name and URL), and
//! `/members` (answered everywhere) names it too.
//!
//! Not served (PD has them): anything that writes (store state, labels, weights, operators,
//! schedulers, config changes, removing members or GC safe points), scan and top-N region
//! queries, hot-region statistics, placement rules, `/config` and `/version`. Stores' scores
//! are approximations: `leader_score` is the leader count and `region_score` the region size
//! (PD weighs them by policy and free space); region sizes come from heartbeats.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use proto::metapb;
use proto::pdpb::{self, GetClusterConfigRequest, GetMembersRequest};
use serde::Serialize;

use crate::cluster::Cluster;
use crate::heartbeat::{RegionStatus, StoreStatus};
use crate::membership;
use crate::Error;

/// Where the API lives on the client port.
pub const API_PREFIX: &str = "/pd/api/v1";

/// How long `/health` waits for each other member's answer.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// An Up store last heard from longer ago than this is shown as `Disconnected` (PD's value).
const STORE_DISCONNECTED_MS: u64 = 20_000;

/// An Up store last heard from longer ago than this is shown as `Down` (PD's default
/// `max-store-down-time`).
const STORE_DOWN_MS: u64 = 30 * 60 * 1000;

const MIB: u64 = 1 << 20;

/// The HTTP API's routes, with a fallback that answers gRPC's `Unimplemented` to gRPC requests
/// and 404 to others; the gRPC services are added to these routes (see [`crate::server`]).
pub fn routes(cluster: Arc<Cluster>) -> tonic::service::Routes {
    let api = Router::new()
        .route("/ping", get(ping))
        .route("/members", get(members))
        .route("/leader", get(leader))
        .route("/health", get(health))
        .route("/stores", get(stores))
        .route("/store/{id}", get(store))
        .route("/regions", get(regions))
        .route("/regions/count", get(region_count))
        .route("/region/id/{id}", get(region_by_id))
        .route("/region/key/{key}", get(region_by_key))
        .route("/cluster", get(cluster_meta))
        .route("/config/cluster", get(cluster_meta))
        .route("/gc/safepoint", get(gc_safe_point))
        .fallback(not_found)
        .with_state(cluster.clone());
    let probes = Router::new()
        .route("/health", get(alive))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(cluster);
    Router::new()
        .nest(API_PREFIX, api)
        .merge(probes)
        .fallback(unrouted)
        .into()
}

type Result<T> = std::result::Result<T, ApiError>;

/// An error answer: an HTTP status and a message, sent as a JSON string (as PD does).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

/// The one conversion of PD's errors to HTTP answers.
impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let (status, message) = match &e {
            Error::NotLeader { .. } | Error::ShuttingDown => {
                (StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            Error::StoreNotFound { store_id } => (
                StatusCode::NOT_FOUND,
                format!("[PD:core:ErrStoreNotFound]store {store_id} not found"),
            ),
            Error::RegionNotFound { region_id } => (
                StatusCode::NOT_FOUND,
                format!("[PD:region:ErrRegionNotFound]region {region_id} not found"),
            ),
            Error::InvalidArgument(_) => (StatusCode::BAD_REQUEST, e.to_string()),
            // PD answers 500 here too.
            Error::NotBootstrapped => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "[PD:cluster:ErrNotBootstrapped]TiKV cluster not bootstrapped, please start \
                 TiKV first"
                    .to_owned(),
            ),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        ApiError { status, message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json(self.status, &self.message)
    }
}

/// `body` as JSON, with PD's content type.
fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
            bytes,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn ok<T: Serialize + ?Sized>(body: &T) -> Result<Response> {
    Ok(json(StatusCode::OK, body))
}

async fn not_found() -> ApiError {
    ApiError::not_found("404 page not found")
}

async fn unrouted(headers: HeaderMap) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        tonic::Status::unimplemented("").into_http()
    } else {
        not_found().await.into_response()
    }
}

// ---- handlers ----

/// `/health`: the process serves HTTP (liveness).
async fn alive() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "alive"}))
}

/// `/metrics`: Prometheus' text format (see [`crate::metrics`]).
async fn metrics(State(cluster): State<Arc<Cluster>>) -> Response {
    match crate::metrics::render(&cluster) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `/ready`: this member knows PD's leader (itself or another), so PD's gRPC is served or
/// forwarded; 503 while an election is under way or the member is cut off.
async fn ready(State(cluster): State<Arc<Cluster>>) -> Response {
    let leader_id = cluster.state().leadership().leader_id;
    let known = leader_id != 0
        && cluster
            .state()
            .status()
            .members()
            .iter()
            .any(|m| m.id == leader_id);
    let code = if known {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "ready": known,
        "member_id": cluster.member().member_id,
        "leader_id": leader_id,
        "is_leader": cluster.require_leader().is_ok(),
    });
    json(code, &body)
}

async fn ping() -> StatusCode {
    StatusCode::OK
}

async fn members(State(cluster): State<Arc<Cluster>>) -> Result<Response> {
    let resp = cluster.on_get_members(GetMembersRequest::default()).await?;
    ok(&MembersJson {
        header: HeaderJson {
            cluster_id: cluster.cluster_id(),
        },
        members: resp.members.iter().map(MemberJson::from).collect(),
        leader: resp.leader.as_ref().map(MemberJson::from),
        etcd_leader: resp.etcd_leader.as_ref().map(MemberJson::from),
    })
}

async fn leader(State(cluster): State<Arc<Cluster>>) -> Result<Response> {
    let resp = cluster.on_get_members(GetMembersRequest::default()).await?;
    ok(&resp.leader.as_ref().map(MemberJson::from))
}

async fn health(State(cluster): State<Arc<Cluster>>) -> Result<Response> {
    let status = cluster.state().status();
    let own_id = status.member_id();
    let others: Vec<(String, String)> = status
        .members()
        .iter()
        .filter(|m| m.id != own_id)
        .map(|m| (m.name.clone(), m.url.clone()))
        .collect();
    let answered: HashSet<String> = membership::ask_peers(&others, HEALTH_CHECK_TIMEOUT)
        .await
        .into_iter()
        .map(|answer| answer.name)
        .collect();
    let members = cluster
        .on_get_members(GetMembersRequest::default())
        .await?
        .members;
    let healths: Vec<HealthJson> = members
        .into_iter()
        .map(|m| HealthJson {
            health: m.member_id == own_id || answered.contains(&m.name),
            name: m.name,
            member_id: m.member_id,
            client_urls: m.client_urls,
        })
        .collect();
    ok(&healths)
}

async fn stores(State(cluster): State<Arc<Cluster>>, uri: Uri) -> Result<Response> {
    cluster.require_leader()?;
    let mut states = Vec::new();
    for value in query_values(&uri, "state") {
        let value = String::from_utf8_lossy(&value?).into_owned();
        let state = value
            .parse::<i32>()
            .ok()
            .and_then(|s| metapb::StoreState::try_from(s).ok())
            .ok_or_else(|| ApiError::bad_request(format!("unknown StoreState: {value}")))?;
        states.push(state);
    }
    if states.is_empty() {
        states = vec![metapb::StoreState::Up, metapb::StoreState::Offline];
    }
    let stores: Vec<metapb::Store> = cluster.state().read(|s| {
        s.stores()
            .filter(|store| states.contains(&store.state()))
            .cloned()
            .collect()
    });
    let counts = StoreCounts::of(&cluster);
    let stores: Vec<StoreInfo> = stores
        .iter()
        .map(|s| StoreInfo::new(&cluster, s, &counts))
        .collect();
    ok(&StoresJson {
        count: stores.len(),
        stores,
    })
}

async fn store(State(cluster): State<Arc<Cluster>>, uri: Uri) -> Result<Response> {
    cluster.require_leader()?;
    let store_id = parse_id(&uri, "store")?;
    let store = cluster
        .state()
        .read(|s| s.store(store_id).cloned())
        .ok_or(Error::StoreNotFound { store_id })?;
    ok(&StoreInfo::new(
        &cluster,
        &store,
        &StoreCounts::of(&cluster),
    ))
}

async fn regions(State(cluster): State<Arc<Cluster>>) -> Result<Response> {
    require_bootstrapped_leader(&cluster)?;
    let regions: Vec<metapb::Region> = cluster
        .state()
        .read(|s| s.regions().iter().cloned().collect());
    let regions = region_infos(&cluster, &regions);
    ok(&RegionsJson {
        count: regions.len(),
        regions: Some(regions),
    })
}

async fn region_count(State(cluster): State<Arc<Cluster>>) -> Result<Response> {
    require_bootstrapped_leader(&cluster)?;
    ok(&RegionsJson {
        count: cluster.state().read(|s| s.regions().len()),
        regions: None,
    })
}

async fn region_by_id(State(cluster): State<Arc<Cluster>>, uri: Uri) -> Result<Response> {
    require_bootstrapped_leader(&cluster)?;
    let region_id = parse_id(&uri, "region")?;
    if region_id == 0 {
        return Err(ApiError::bad_request(
            "[PD:region:ErrRegionInvalidID]invalid region id",
        ));
    }
    let region = cluster
        .state()
        .read(|s| s.regions().get(region_id).cloned())
        .ok_or(Error::RegionNotFound { region_id })?;
    one_region(&cluster, region)
}

async fn region_by_key(State(cluster): State<Arc<Cluster>>, uri: Uri) -> Result<Response> {
    require_bootstrapped_leader(&cluster)?;
    let mut key = query_unescape(last_segment(&uri))?;
    if let Some(format) = query_values(&uri, "format").next() {
        if format? == b"hex" {
            key = hex::decode(&key).map_err(|e| {
                ApiError::bad_request(format!(
                    "invalid hex key {:?}: {e}",
                    String::from_utf8_lossy(&key)
                ))
            })?;
        }
    }
    let region = cluster
        .state()
        .read(|s| s.regions().find_by_key(&key).cloned())
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "[PD:region:ErrRegionNotFound]no region contains key {}",
                hex_key(&key)
            ))
        })?;
    one_region(&cluster, region)
}

async fn cluster_meta(State(cluster): State<Arc<Cluster>>) -> Result<Response> {
    cluster.require_leader()?;
    let meta = cluster
        .on_get_cluster_config(GetClusterConfigRequest::default())
        .await?
        .cluster
        .unwrap_or_default();
    ok(&ClusterJson {
        id: meta.id,
        max_peer_count: meta.max_peer_count,
    })
}

async fn gc_safe_point(State(cluster): State<Arc<Cluster>>) -> Result<Response> {
    cluster.require_leader()?;
    let safe_point = cluster.state().read(|s| s.meta().gc_safe_point);
    // rangekv has no service safe points: as PD without them, the GC worker's safe point stands
    // for the one service, never expiring.
    ok(&GcSafePointsJson {
        service_gc_safe_points: vec![ServiceSafePointJson {
            service_id: "gc_worker",
            expired_at: i64::MAX,
            safe_point,
        }],
        min_service_gc_safe_point: safe_point,
        gc_safe_point: safe_point,
    })
}

// ---- request parsing ----

fn require_bootstrapped_leader(cluster: &Cluster) -> Result<()> {
    cluster.require_leader()?;
    if cluster.state().read(|s| s.is_bootstrapped()) {
        Ok(())
    } else {
        Err(Error::NotBootstrapped.into())
    }
}

/// The last path segment, still percent-encoded (a path parameter is always the last segment
/// here, and an encoded one holds no `/`).
fn last_segment(uri: &Uri) -> &str {
    uri.path().rsplit('/').next().unwrap_or_default()
}

fn parse_id(uri: &Uri, what: &str) -> Result<u64> {
    let segment = last_segment(uri);
    segment
        .parse()
        .map_err(|e| ApiError::bad_request(format!("invalid {what} id {segment:?}: {e}")))
}

/// Decodes `%XX` escapes and `+` (a space), as Go's `url.QueryUnescape`.
fn query_unescape(s: &str) -> Result<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let byte = bytes
                    .get(i + 1..i + 3)
                    .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| {
                        let bad: String = s[i..].chars().take(3).collect();
                        ApiError::bad_request(format!("invalid URL escape {bad:?}"))
                    })?;
                out.push(byte);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The unescaped values of query parameter `name`, in order.
fn query_values<'a>(uri: &'a Uri, name: &'a str) -> impl Iterator<Item = Result<Vec<u8>>> + 'a {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(move |pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| query_unescape(value))
        })
}

// ---- JSON shapes (PD's `pkg/response` and kvproto's Go JSON) ----

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Serialize)]
struct HeaderJson {
    #[serde(skip_serializing_if = "is_zero")]
    cluster_id: u64,
}

/// `pdpb.Member`.
#[derive(Serialize)]
struct MemberJson {
    #[serde(skip_serializing_if = "is_zero")]
    name: String,
    #[serde(skip_serializing_if = "is_zero")]
    member_id: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    peer_urls: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    client_urls: Vec<String>,
    #[serde(skip_serializing_if = "is_zero")]
    leader_priority: i32,
    #[serde(skip_serializing_if = "is_zero")]
    deploy_path: String,
    #[serde(skip_serializing_if = "is_zero")]
    binary_version: String,
    #[serde(skip_serializing_if = "is_zero")]
    git_hash: String,
    #[serde(skip_serializing_if = "is_zero")]
    dc_location: String,
}

impl From<&pdpb::Member> for MemberJson {
    fn from(m: &pdpb::Member) -> MemberJson {
        MemberJson {
            name: m.name.clone(),
            member_id: m.member_id,
            peer_urls: m.peer_urls.clone(),
            client_urls: m.client_urls.clone(),
            leader_priority: m.leader_priority,
            deploy_path: m.deploy_path.clone(),
            binary_version: m.binary_version.clone(),
            git_hash: m.git_hash.clone(),
            dc_location: m.dc_location.clone(),
        }
    }
}

/// `pdpb.GetMembersResponse`.
#[derive(Serialize)]
struct MembersJson {
    header: HeaderJson,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    members: Vec<MemberJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leader: Option<MemberJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd_leader: Option<MemberJson>,
}

#[derive(Serialize)]
struct HealthJson {
    name: String,
    member_id: u64,
    client_urls: Vec<String>,
    health: bool,
}

#[derive(Serialize)]
struct ClusterJson {
    #[serde(skip_serializing_if = "is_zero")]
    id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    max_peer_count: u32,
}

#[derive(Serialize)]
struct ServiceSafePointJson {
    service_id: &'static str,
    expired_at: i64,
    safe_point: u64,
}

#[derive(Serialize)]
struct GcSafePointsJson {
    service_gc_safe_points: Vec<ServiceSafePointJson>,
    #[serde(skip_serializing_if = "is_zero")]
    min_service_gc_safe_point: u64,
    gc_safe_point: u64,
}

/// A peer: `metapb.Peer` plus `role_name` (and `is_learner`), as PD's `MetaPeer`.
#[derive(Serialize)]
struct MetaPeer {
    role_name: String,
    #[serde(skip_serializing_if = "is_zero")]
    is_learner: bool,
    #[serde(skip_serializing_if = "is_zero")]
    id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    store_id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    role: i32,
    #[serde(skip_serializing_if = "is_zero")]
    is_witness: bool,
}

impl MetaPeer {
    fn new(peer: Option<&metapb::Peer>) -> MetaPeer {
        let Some(peer) = peer else {
            return MetaPeer {
                role_name: String::new(),
                is_learner: false,
                id: 0,
                store_id: 0,
                role: 0,
                is_witness: false,
            };
        };
        let role_name = metapb::PeerRole::try_from(peer.role).map_or_else(
            |_| peer.role.to_string(),
            |role| role.as_str_name().to_owned(),
        );
        MetaPeer {
            role_name,
            is_learner: peer.role == metapb::PeerRole::Learner as i32,
            id: peer.id,
            store_id: peer.store_id,
            role: peer.role,
            is_witness: peer.is_witness,
        }
    }
}

/// `pdpb.PeerStats` with the peer as a [`MetaPeer`].
#[derive(Serialize)]
struct DownPeerJson {
    peer: MetaPeer,
    #[serde(skip_serializing_if = "is_zero")]
    down_seconds: u64,
}

#[derive(Serialize)]
struct EpochJson {
    #[serde(skip_serializing_if = "is_zero")]
    conf_ver: u64,
    #[serde(skip_serializing_if = "is_zero")]
    version: u64,
}

/// PD's `RegionInfo`.
#[derive(Serialize)]
struct RegionInfo {
    id: u64,
    start_key: String,
    end_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<EpochJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    peers: Vec<MetaPeer>,
    leader: MetaPeer,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    down_peers: Vec<DownPeerJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pending_peers: Vec<MetaPeer>,
    cpu_usage: u64,
    written_bytes: u64,
    read_bytes: u64,
    written_keys: u64,
    read_keys: u64,
    approximate_size: u64,
    approximate_keys: u64,
    approximate_kv_size: u64,
    approximate_columnar_kv_size: u64,
}

impl RegionInfo {
    fn new(
        region: &metapb::Region,
        leader: Option<&metapb::Peer>,
        status: Option<&RegionStatus>,
    ) -> RegionInfo {
        let stats = status.cloned().unwrap_or_default();
        RegionInfo {
            id: region.id,
            start_key: hex_key(&region.start_key),
            end_key: hex_key(&region.end_key),
            epoch: region.region_epoch.map(|e| EpochJson {
                conf_ver: e.conf_ver,
                version: e.version,
            }),
            peers: region
                .peers
                .iter()
                .map(|p| MetaPeer::new(Some(p)))
                .collect(),
            leader: MetaPeer::new(leader),
            down_peers: stats
                .down_peers
                .iter()
                .map(|d| DownPeerJson {
                    peer: MetaPeer::new(d.peer.as_ref()),
                    down_seconds: d.down_seconds,
                })
                .collect(),
            pending_peers: stats
                .pending_peers
                .iter()
                .map(|p| MetaPeer::new(Some(p)))
                .collect(),
            cpu_usage: 0,
            written_bytes: stats.bytes_written,
            read_bytes: stats.bytes_read,
            written_keys: stats.keys_written,
            read_keys: stats.keys_read,
            approximate_size: size_mib(stats.approximate_size),
            approximate_keys: stats.approximate_keys,
            approximate_kv_size: 0,
            approximate_columnar_kv_size: 0,
        }
    }
}

#[derive(Serialize)]
struct RegionsJson {
    count: usize,
    /// `None` (JSON `null`) for `/regions/count`, as PD answers.
    regions: Option<Vec<RegionInfo>>,
}

fn region_infos(cluster: &Cluster, regions: &[metapb::Region]) -> Vec<RegionInfo> {
    regions
        .iter()
        .zip(cluster.region_statuses(regions))
        .map(|(region, (leader, status))| RegionInfo::new(region, leader.as_ref(), status.as_ref()))
        .collect()
}

fn one_region(cluster: &Cluster, region: metapb::Region) -> Result<Response> {
    let infos = region_infos(cluster, std::slice::from_ref(&region));
    ok(&infos[0])
}

/// `metapb.StoreLabel`.
#[derive(Serialize)]
struct LabelJson {
    #[serde(skip_serializing_if = "is_zero")]
    key: String,
    #[serde(skip_serializing_if = "is_zero")]
    value: String,
}

/// `metapb.Store` plus `state_name`, as PD's `MetaStore`.
#[derive(Serialize)]
struct MetaStore {
    #[serde(skip_serializing_if = "is_zero")]
    id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    address: String,
    #[serde(skip_serializing_if = "is_zero")]
    state: i32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    labels: Vec<LabelJson>,
    #[serde(skip_serializing_if = "is_zero")]
    version: String,
    #[serde(skip_serializing_if = "is_zero")]
    peer_address: String,
    #[serde(skip_serializing_if = "is_zero")]
    status_address: String,
    #[serde(skip_serializing_if = "is_zero")]
    git_hash: String,
    #[serde(skip_serializing_if = "is_zero")]
    start_timestamp: i64,
    #[serde(skip_serializing_if = "is_zero")]
    deploy_path: String,
    #[serde(skip_serializing_if = "is_zero")]
    last_heartbeat: i64,
    #[serde(skip_serializing_if = "is_zero")]
    physically_destroyed: bool,
    state_name: String,
}

/// PD's `StoreStatus`.
#[derive(Serialize)]
struct StoreStatusJson {
    capacity: String,
    available: String,
    used_size: String,
    leader_count: u64,
    leader_weight: f64,
    leader_score: f64,
    leader_size: u64,
    region_count: u64,
    region_weight: f64,
    region_score: f64,
    region_size: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pending_peer_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    sending_snap_count: u32,
    #[serde(skip_serializing_if = "is_zero")]
    receiving_snap_count: u32,
    #[serde(skip_serializing_if = "is_zero")]
    is_busy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_ts: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_heartbeat_ts: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uptime: Option<String>,
}

/// PD's `StoreInfo`.
#[derive(Serialize)]
struct StoreInfo {
    store: MetaStore,
    status: StoreStatusJson,
}

#[derive(Serialize)]
struct StoresJson {
    count: usize,
    stores: Vec<StoreInfo>,
}

/// Per store: regions and leaders it holds, their sizes (MiB) and pending peers, from one pass
/// over the region map and the heartbeat soft state.
#[derive(Default)]
struct StoreCounts(BTreeMap<u64, StoreCount>);

#[derive(Clone, Copy, Default)]
struct StoreCount {
    regions: u64,
    region_size: u64,
    leaders: u64,
    leader_size: u64,
    pending_peers: u64,
}

impl StoreCounts {
    fn of(cluster: &Cluster) -> StoreCounts {
        let regions: Vec<metapb::Region> = cluster
            .state()
            .read(|s| s.regions().iter().cloned().collect());
        let mut counts = StoreCounts::default();
        for (region, (leader, status)) in regions.iter().zip(cluster.region_statuses(&regions)) {
            let size = status.as_ref().map_or(0, |s| size_mib(s.approximate_size));
            for peer in &region.peers {
                let count = counts.0.entry(peer.store_id).or_default();
                count.regions += 1;
                count.region_size += size;
            }
            if let Some(leader) = leader {
                let count = counts.0.entry(leader.store_id).or_default();
                count.leaders += 1;
                count.leader_size += size;
            }
            for pending in status.iter().flat_map(|s| &s.pending_peers) {
                counts.0.entry(pending.store_id).or_default().pending_peers += 1;
            }
        }
        counts
    }
}

impl StoreInfo {
    fn new(cluster: &Cluster, store: &metapb::Store, counts: &StoreCounts) -> StoreInfo {
        let heard = cluster.store_status(store.id);
        let count = counts.0.get(&store.id).copied().unwrap_or_default();
        let state_name = store_state_name(store, heard.as_ref(), cluster.now_ms());
        let StoreStatus {
            stats,
            last_heartbeat_ms,
        } = heard.unwrap_or_default();
        let start_ms = u64::from(stats.start_time) * 1000;
        let heartbeat_ns =
            i64::try_from(last_heartbeat_ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
        StoreInfo {
            store: MetaStore {
                id: store.id,
                address: store.address.clone(),
                state: store.state,
                labels: store
                    .labels
                    .iter()
                    .map(|l| LabelJson {
                        key: l.key.clone(),
                        value: l.value.clone(),
                    })
                    .collect(),
                version: store.version.clone(),
                peer_address: store.peer_address.clone(),
                status_address: store.status_address.clone(),
                git_hash: store.git_hash.clone(),
                start_timestamp: store.start_timestamp,
                deploy_path: store.deploy_path.clone(),
                last_heartbeat: if last_heartbeat_ms > 0 {
                    heartbeat_ns
                } else {
                    store.last_heartbeat
                },
                physically_destroyed: store.physically_destroyed,
                state_name,
            },
            status: StoreStatusJson {
                capacity: byte_size(stats.capacity),
                available: byte_size(stats.available),
                used_size: byte_size(stats.used_size),
                leader_count: count.leaders,
                leader_weight: 1.0,
                leader_score: count.leaders as f64,
                leader_size: count.leader_size,
                region_count: count.regions,
                region_weight: 1.0,
                region_score: count.region_size as f64,
                region_size: count.region_size,
                pending_peer_count: count.pending_peers,
                sending_snap_count: stats.sending_snap_count,
                receiving_snap_count: stats.receiving_snap_count,
                is_busy: stats.is_busy,
                start_ts: (start_ms > 0).then(|| rfc3339(start_ms)),
                last_heartbeat_ts: (last_heartbeat_ms > 0).then(|| rfc3339(last_heartbeat_ms)),
                uptime: (start_ms > 0 && last_heartbeat_ms > start_ms)
                    .then(|| go_duration(last_heartbeat_ms - start_ms)),
            },
        }
    }
}

/// PD's name for a store's state: Up stores not heard from for a while are `Disconnected`, then
/// `Down`. A store this node has not heard from at all (e.g. just after a PD leader change)
/// keeps its recorded state.
fn store_state_name(store: &metapb::Store, heard: Option<&StoreStatus>, now_ms: u64) -> String {
    let state = store.state();
    if state == metapb::StoreState::Up {
        if let Some(heard) = heard {
            let silent = now_ms.saturating_sub(heard.last_heartbeat_ms);
            if silent > STORE_DOWN_MS {
                return "Down".to_owned();
            }
            if silent > STORE_DISCONNECTED_MS {
                return "Disconnected".to_owned();
            }
        }
    }
    state.as_str_name().to_owned()
}

// ---- formats ----

/// A key as PD shows region keys: upper-case hex.
fn hex_key(key: &[u8]) -> String {
    hex::encode_upper(key)
}

/// A region size in MiB as PD keeps it: at least 1 for a region that reported any size.
fn size_mib(bytes: u64) -> u64 {
    if bytes > 0 {
        (bytes / MIB).max(1)
    } else {
        0
    }
}

/// Bytes as PD's `ByteSize` marshals them (go-units' `BytesSize`: binary units, 4 significant
/// digits), e.g. `"0B"`, `"1000B"`, `"1.5GiB"`.
fn byte_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{}{}", go_g4(size), UNITS[unit])
}

/// `v` formatted as Go's `%.4g` for the values [`byte_size`] produces (`0 <= v < 10000`): four
/// significant digits, trailing zeros dropped.
fn go_g4(v: f64) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    // Rounded to 4 significant digits first, so that the exponent accounts for carries
    // (999.96 -> 1000).
    let rounded: f64 = format!("{v:.3e}").parse().unwrap_or(v);
    let exponent = rounded.abs().log10().floor() as i32;
    let decimals = usize::try_from(3 - exponent).unwrap_or(0);
    let fixed = format!("{rounded:.decimals$}");
    if fixed.contains('.') {
        fixed.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        fixed
    }
}

/// A Unix time in ms as RFC 3339 in UTC, fractional seconds without trailing zeros (Go's
/// `time.Time` JSON).
fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        day_secs / 3600,
        day_secs % 3600 / 60,
        day_secs % 60
    );
    push_fraction(&mut out, unix_ms % 1000);
    out.push('Z');
    out
}

/// `.mmm` without trailing zeros, nothing for 0.
fn push_fraction(out: &mut String, ms: u64) {
    if ms > 0 {
        let digits = format!("{ms:03}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A duration in ms as Go's `time.Duration` prints it: `"1h2m3.5s"`, `"2m0s"`, `"250ms"`.
fn go_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (hours, minutes, secs) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    let mut out = String::new();
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let _ = write!(out, "{secs}");
    push_fraction(&mut out, ms % 1000);
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_as_go_units() {
        assert_eq!(byte_size(0), "0B");
        assert_eq!(byte_size(1000), "1000B");
        assert_eq!(byte_size(1024), "1KiB");
        assert_eq!(byte_size(1536), "1.5KiB");
        assert_eq!(byte_size(3 << 30), "3GiB");
        assert_eq!(byte_size(1_000_000_000_000), "931.3GiB");
        // Rounds to 4 significant digits, carrying into the next digit.
        assert_eq!(byte_size(1023 * 1024 + 1023), "1024KiB");
    }

    #[test]
    fn times_and_durations_as_go() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_120), "2023-11-14T22:13:20.12Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(250), "250ms");
        assert_eq!(go_duration(120_000), "2m0s");
        assert_eq!(go_duration(3_723_500), "1h2m3.5s");
        assert_eq!(go_duration(3_600_000), "1h0m0s");
    }

    #[test]
    fn keys_unescape_as_go_query_unescape() {
        assert_eq!(query_unescape("a%2Fb+c").unwrap(), b"a/b c");
        assert_eq!(query_unescape("%00%FF").unwrap(), vec![0, 255]);
        assert!(query_unescape("%zz").is_err());
        assert!(query_unescape("a%4").is_err());
        assert!(query_unescape("%+1").is_err());
        assert_eq!(hex_key(b"m\x00"), "6D00");
    }

    #[test]
    fn up_stores_silent_for_long_are_disconnected_then_down() {
        let store = metapb::Store {
            id: 1,
            ..Default::default()
        };
        let heard = |ms| StoreStatus {
            last_heartbeat_ms: ms,
            ..Default::default()
        };
        let now = 100 * 60 * 1000;
        assert_eq!(store_state_name(&store, None, now), "Up");
        assert_eq!(
            store_state_name(&store, Some(&heard(now - 1000)), now),
            "Up"
        );
        assert_eq!(
            store_state_name(&store, Some(&heard(now - 21_000)), now),
            "Disconnected"
        );
        assert_eq!(store_state_name(&store, Some(&heard(0)), now), "Down");
        let mut tomb = store.clone();
        tomb.set_state(metapb::StoreState::Tombstone);
        assert_eq!(store_state_name(&tomb, Some(&heard(0)), now), "Tombstone");
    }
}
