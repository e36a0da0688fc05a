//! PD's HTTP API: the part of TiKV PD's `/pd/api/v1` that pd-ctl and client test harnesses
//! use, with PD's paths and JSON shapes: reads, plus removing a store (`DELETE /store/{id}`)
//! and operators by hand (`POST /operators`: `transfer-peer` moves a replica, `merge-region`
//! merges two regions).
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
//! | `/members` | `GetMembersResponse` as JSON: `header`, `members` (a learner has `"is_learner": true`), `leader`, `etcd_leader` | any member |
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
//! Operators, on the leader: `GET /operators` lists the replica operators and merges in flight
//! (`{region_id, desc, step, steps}`; a merge under its source's id, with `target_region_id`).
//! `POST /operators` takes PD's bodies: `{"name": "transfer-peer", "region_id", "from_store_id",
//! "to_store_id"}`, or `{"name": "merge-region", "source_region_id", "target_region_id"}`
//! (pd-ctl's `operator add merge-region`), which the merge checker's pair and health rules must
//! allow (adjacent, one keyspace, same stores, healthy, no operator; else 400, 404 for an
//! unknown region) but not its size and split-merge-interval rules.
//!
//! Membership ([`crate::members`]), on the leader: `POST /members` with `{"name", "url"}` adds a
//! member (a learner until it caught up; answers the member), `DELETE /members/name/{name}`
//! (PD's path) removes one. Both answer once the change is applied on the leader; a second
//! change while one is in progress is refused (400).
//!
//! Not served (PD has them): anything else that writes (store state, labels, weights,
//! schedulers, config changes or GC safe points), scan and top-N region
//! queries, hot-region statistics, placement rules, `/config` and `/version`. Stores' scores
//! are approximations: `leader_score` is the leader count and `region_score` the region size
//! (PD weighs them by policy and free space); region sizes come from heartbeats.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use proto::metapb;
use proto::pdpb::{GetClusterConfigRequest, GetMembersRequest};
use serde::Serialize;

use crate::cluster::Cluster;
use crate::membership;
use crate::Error;

mod format;
mod parse;
mod shapes;

use format::*;
use parse::*;
use shapes::*;

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
        .route("/members", get(members).post(add_member))
        .route("/members/name/{name}", axum::routing::delete(remove_member))
        .route("/leader", get(leader))
        .route("/health", get(health))
        .route("/stores", get(stores))
        .route("/store/{id}", get(store).delete(remove_store))
        .route("/regions", get(regions))
        .route("/regions/count", get(region_count))
        .route("/region/id/{id}", get(region_by_id))
        .route("/region/key/{key}", get(region_by_key))
        .route("/cluster", get(cluster_meta))
        .route("/config/cluster", get(cluster_meta))
        .route("/gc/safepoint", get(gc_safe_point))
        .route("/operators", get(operators).post(add_operator))
        .route("/schedulers", get(schedulers))
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
            Error::MembershipChangeInProgress => (StatusCode::CONFLICT, e.to_string()),
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
    let learners: HashSet<u64> = cluster
        .state()
        .status()
        .members()
        .iter()
        .filter(|m| m.learner)
        .map(|m| m.id)
        .collect();
    ok(&MembersJson {
        header: HeaderJson {
            cluster_id: cluster.cluster_id(),
        },
        members: resp
            .members
            .iter()
            .map(|m| MemberJson {
                is_learner: learners.contains(&m.member_id),
                ..MemberJson::from(m)
            })
            .collect(),
        leader: resp.leader.as_ref().map(MemberJson::from),
        etcd_leader: resp.etcd_leader.as_ref().map(MemberJson::from),
    })
}

/// The body of `POST /members`.
#[derive(serde::Deserialize)]
struct AddMemberInput {
    name: String,
    url: String,
}

#[derive(Serialize)]
struct ChangedMember {
    name: String,
    member_id: u64,
    url: String,
    is_learner: bool,
}

async fn add_member(
    State(cluster): State<Arc<Cluster>>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let input: AddMemberInput = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid member: {e}")))?;
    let list = cluster
        .change_members(crate::members::MemberRequest::Add {
            name: input.name.clone(),
            url: input.url,
        })
        .await?;
    let m = list
        .members
        .iter()
        .find(|m| m.name == input.name)
        .ok_or_else(|| ApiError::from(Error::Internal("added member not in the list".into())))?;
    ok(&ChangedMember {
        name: m.name.clone(),
        member_id: m.id,
        url: m.url.clone(),
        is_learner: m.learner,
    })
}

async fn remove_member(
    State(cluster): State<Arc<Cluster>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Response> {
    cluster
        .change_members(crate::members::MemberRequest::Remove { name: name.clone() })
        .await?;
    ok(&format!("removed PD member {name}"))
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
    let answered: HashSet<String> =
        membership::ask_peers(&others, cluster.security(), HEALTH_CHECK_TIMEOUT)
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

/// The body of `POST /operators` (PD's shape): the fields of the operator `name`.
#[derive(serde::Deserialize)]
struct OperatorInput {
    name: String,
    region_id: Option<u64>,
    from_store_id: Option<u64>,
    to_store_id: Option<u64>,
    source_region_id: Option<u64>,
    target_region_id: Option<u64>,
}

/// `POST /operators`: `{"name": "transfer-peer", "region_id": …, "from_store_id": …,
/// "to_store_id": …}` moves a replica by hand, `{"name": "merge-region", "source_region_id":
/// …, "target_region_id": …}` merges two regions.
async fn add_operator(
    State(cluster): State<Arc<Cluster>>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let input: OperatorInput = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid operator: {e}")))?;
    match input.name.as_str() {
        "transfer-peer" => {
            let (Some(region_id), Some(from), Some(to)) =
                (input.region_id, input.from_store_id, input.to_store_id)
            else {
                return Err(ApiError::bad_request(
                    "transfer-peer needs region_id, from_store_id and to_store_id",
                ));
            };
            cluster.transfer_peer(region_id, from, to).await?;
        }
        "merge-region" => {
            let (Some(source), Some(target)) = (input.source_region_id, input.target_region_id)
            else {
                return Err(ApiError::bad_request(
                    "merge-region needs source_region_id and target_region_id",
                ));
            };
            cluster.merge_regions(source, target).await?;
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown operator {other:?} (transfer-peer or merge-region)"
            )))
        }
    }
    ok(&"The operator is created.")
}

/// `GET /schedulers`: the names of the checkers and schedulers running (PD's names).
async fn schedulers(State(cluster): State<Arc<Cluster>>) -> Result<Response> {
    cluster.require_leader()?;
    ok(&cluster.schedulers())
}

/// `GET /operators`: the replica operators and merges in flight.
async fn operators(State(cluster): State<Arc<Cluster>>) -> Result<Response> {
    cluster.require_leader()?;
    let mut ops: Vec<serde_json::Value> = cluster
        .replica_operators()
        .into_iter()
        .map(|(region_id, op)| {
            serde_json::json!({
                "region_id": region_id,
                "desc": op.kind,
                "step": op.current,
                "steps": op.steps.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>(),
            })
        })
        .collect();
    ops.extend(cluster.merge_operators().into_iter().map(|op| {
        serde_json::json!({
            "region_id": op.source.id,
            "desc": op.kind,
            "step": 0,
            "steps": [format!("MergeRegion {{ source: {}, target: {} }}", op.source.id, op.target.id)],
            "target_region_id": op.target.id,
        })
    }));
    ok(&ops)
}

/// `DELETE /store/{id}`: the store goes Offline and is drained (PD's `store delete`).
async fn remove_store(State(cluster): State<Arc<Cluster>>, uri: Uri) -> Result<Response> {
    let store_id = parse_id(&uri, "store")?;
    cluster.remove_store(store_id).await?;
    ok(&"The store is set as Offline.")
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
