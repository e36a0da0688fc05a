//! The status server: plain HTTP next to the gRPC port, for operators and monitoring.
//!
//! - `GET /health`: 200 while the process serves HTTP at all (liveness).
//! - `GET /ready`: 200 when the store serves: it is registered with PD (the status server
//!   starts only after that), its last store heartbeat reached PD, and every region it hosts
//!   knows its leader; else 503 with the reasons (readiness, for load balancers and
//!   orchestrators; see [`not_ready_reasons`]).
//! - `GET /metrics`: every metric of the process in Prometheus' text format, with the
//!   store's region and leader counts taken at the scrape.
//! - `GET /status`: the store's id and, per region it hosts, range, epoch, role, indexes and
//!   the last consistency check (JSON).
//! - `POST /regions/{id}/consistency-check`: on the region's leader, starts a consistency check
//!   (`raftstore::consistency`) and answers `{"index", "hash"}` once the leader hashed its copy;
//!   each replica's verdict then shows in its store's `/status`. `rangekv ctl region check`
//!   drives this.
//! - `POST /regions/{id}/transfer-leader/{store_id}`: on the region's leader, starts handing
//!   the leadership to the replica on `store_id` (answers 202 at once; the transfer is Raft's
//!   and may not happen: the target may lag or be down). For operators and fault campaigns
//!   (`rangekv verify`'s leader shuffles); PD's balance moves leaders on its own.
//! - `GET /mvcc/hex/{key}`: this store's lock, commit records and stored values of one
//!   transactional user key (hex), as its engine holds them now (`rangekv ctl txn mvcc`).
//!
//! Deliberately absent: profiling and config endpoints, TLS.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use raftstore::consistency::Verdict;
use raftstore::StoreRouter;
use serde_json::json;
use tokio::sync::watch;

/// What the node's background tasks tell the status server about its links, for `/ready`.
/// Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Health {
    pd_reachable: Arc<AtomicBool>,
}

impl Health {
    /// Records whether the last store heartbeat reached PD.
    pub fn set_pd_reachable(&self, reachable: bool) {
        self.pd_reachable.store(reachable, Ordering::Relaxed);
    }

    pub fn pd_reachable(&self) -> bool {
        self.pd_reachable.load(Ordering::Relaxed)
    }
}

/// Why a store is not ready to serve (empty: ready), given whether PD answered its last
/// heartbeat and, per region it hosts, `(region id, leader known)`.
pub fn not_ready_reasons(pd_reachable: bool, regions: &[(u64, bool)]) -> Vec<String> {
    let mut reasons = Vec::new();
    if !pd_reachable {
        reasons.push("the last store heartbeat did not reach PD".to_owned());
    }
    let leaderless: Vec<u64> = regions
        .iter()
        .filter(|(_, known)| !known)
        .map(|(id, _)| *id)
        .collect();
    if !leaderless.is_empty() {
        reasons.push(format!("regions without a known leader: {leaderless:?}"));
    }
    reasons
}

#[derive(Clone)]
struct AppState {
    router: StoreRouter,
    engine: engine::Engine,
    health: Health,
}

/// Serves the status endpoints on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: security::Accepted,
    router: StoreRouter,
    engine: engine::Engine,
    health: Health,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/health", get(alive))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/regions/{id}/consistency-check", post(check_consistency))
        .route(
            "/regions/{id}/transfer-leader/{store_id}",
            post(transfer_leader),
        )
        .route("/mvcc/hex/{key}", get(mvcc))
        .with_state(AppState {
            router,
            engine,
            health,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|v| *v).await;
        })
        .await
}

async fn alive() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": "alive"}).to_string(),
    )
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let mut regions = Vec::new();
    for id in state.router.region_ids() {
        // A region removed meanwhile is no reason to be unready.
        if let Ok(s) = state.router.peer_status(id).await {
            regions.push((id, s.leader.is_some()));
        }
    }
    let reasons = not_ready_reasons(state.health.pd_reachable(), &regions);
    let code = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": reasons.is_empty(),
        "store_id": state.router.store_id(),
        "region_count": regions.len(),
        "reasons": reasons,
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Region and leader counts, as of this scrape (one status message per region).
    let ids = state.router.region_ids();
    let mut leaders = 0;
    for id in &ids {
        if let Ok(s) = state.router.peer_status(*id).await {
            leaders += i64::from(s.is_leader);
        }
    }
    crate::metrics::STORE_REGIONS.set(ids.len() as i64);
    crate::metrics::STORE_LEADERS.set(leaders);
    // Counters of rare events show from the start (as 0), so that alerts on them can tell
    // "none yet" from "not scraped".
    std::sync::LazyLock::force(&raftstore::metrics::CONSISTENCY_MISMATCHES);
    std::sync::LazyLock::force(&crate::metrics::PESSIMISTIC_LOCK_WAITS);
    std::sync::LazyLock::force(&storage::metrics::READ_POOL_REJECTED);
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&prometheus::gather()) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn status(State(state): State<AppState>) -> impl IntoResponse {
    let mut regions = Vec::new();
    for id in state.router.region_ids() {
        let Ok(s) = state.router.peer_status(id).await else {
            continue;
        };
        let epoch = s.region.region_epoch.unwrap_or_default();
        regions.push(json!({
            "id": id,
            "start_key": String::from_utf8_lossy(&s.region.start_key),
            "end_key": String::from_utf8_lossy(&s.region.end_key),
            "epoch": {"conf_ver": epoch.conf_ver, "version": epoch.version},
            "peer_id": s.peer_id,
            "is_leader": s.is_leader,
            "asleep": s.asleep,
            "leader_store_id": s.leader.map(|l| l.store_id),
            "term": s.term,
            "commit_index": s.commit_index,
            "applied_index": s.applied_index,
            "first_index": s.first_index,
            "last_index": s.last_index,
            "hash": s.hash.map(|(index, hash)| json!({"index": index, "hash": hash})),
            "last_verified": s.last_verified.map(|(index, verdict)| json!({
                "index": index,
                "verdict": match verdict {
                    Verdict::Match => "match",
                    Verdict::Mismatch { .. } => "mismatch",
                    Verdict::Unknown => "unknown",
                },
            })),
        }));
    }
    let leaders = regions.iter().filter(|r| r["is_leader"] == true).count();
    let body = json!({
        "store_id": state.router.store_id(),
        "region_count": regions.len(),
        "leader_count": leaders,
        "regions": regions,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn transfer_leader(
    State(state): State<AppState>,
    Path((id, store_id)): Path<(u64, u64)>,
) -> impl IntoResponse {
    let answer = |code: StatusCode, body: serde_json::Value| {
        (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
    };
    let status = match state.router.peer_status(id).await {
        Ok(s) => s,
        Err(e) => {
            return answer(
                StatusCode::NOT_FOUND,
                json!({"region_id": id, "error": e.to_string()}),
            )
        }
    };
    if !status.is_leader {
        return answer(
            StatusCode::CONFLICT,
            json!({"region_id": id, "error": "not the leader here",
                   "leader_store_id": status.leader.map(|l| l.store_id)}),
        );
    }
    let Some(to) = status
        .region
        .peers
        .iter()
        .find(|p| p.store_id == store_id)
        .copied()
    else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"region_id": id, "error": format!("no replica on store {store_id}")}),
        );
    };
    match state
        .router
        .transfer_leader(id, to, status.region.region_epoch)
    {
        Ok(()) => answer(
            StatusCode::ACCEPTED,
            json!({"region_id": id, "to_store_id": store_id, "to_peer_id": to.id}),
        ),
        Err(e) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"region_id": id, "error": e.to_string()}),
        ),
    }
}

async fn check_consistency(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> impl IntoResponse {
    let check = state.router.check_consistency(id);
    match tokio::time::timeout(std::time::Duration::from_secs(30), check).await {
        Ok(Ok((index, hash))) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"region_id": id, "index": index, "hash": hash}).to_string(),
        ),
        Ok(Err(e)) => {
            let code = match &e {
                raftstore::Error::NotLeader { .. } => StatusCode::CONFLICT,
                raftstore::Error::RegionNotFound(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            (
                code,
                [(header::CONTENT_TYPE, "application/json")],
                json!({"region_id": id, "error": e.to_string()}).to_string(),
            )
        }
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"region_id": id, "error": "the check did not finish in 30s"}).to_string(),
        ),
    }
}

async fn mvcc(State(state): State<AppState>, Path(hex): Path<String>) -> impl IntoResponse {
    let json_error = |code: StatusCode, msg: String| {
        (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            json!({ "error": msg }).to_string(),
        )
    };
    let Ok(raw) = hex::decode(&hex) else {
        return json_error(StatusCode::BAD_REQUEST, format!("{hex:?} is not hex"));
    };
    let engine = state.engine.clone();
    let history = tokio::task::spawn_blocking(move || {
        let snap = engine.snapshot();
        storage::mvcc::MvccReader::new(&snap).key_history(&storage::mvcc::Key::from_raw(&raw))
    })
    .await;
    let h = match history {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let lock = h.lock.map(|l| {
        json!({
            "type": format!("{:?}", l.kind()),
            "start_ts": l.start_ts,
            "primary": String::from_utf8_lossy(&l.primary),
            "ttl": l.ttl,
            "for_update_ts": l.for_update_ts,
            "min_commit_ts": l.min_commit_ts,
            "use_async_commit": l.use_async_commit,
            "short_value": l.short_value.as_deref().map(String::from_utf8_lossy),
        })
    });
    let writes: Vec<_> = h
        .writes
        .iter()
        .map(|(commit_ts, w)| {
            json!({
                "commit_ts": commit_ts,
                "type": format!("{:?}", w.kind()),
                "start_ts": w.start_ts,
                "short_value": w.short_value.as_deref().map(String::from_utf8_lossy),
                "has_overlapped_rollback": w.has_overlapped_rollback,
            })
        })
        .collect();
    let values: Vec<_> = h
        .values
        .iter()
        .map(|(start_ts, v)| json!({"start_ts": start_ts, "len": v.len()}))
        .collect();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({
            "store_id": state.router.store_id(),
            "lock": lock,
            "writes": writes,
            "values": values,
        })
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::not_ready_reasons;

    #[test]
    fn ready_needs_pd_and_a_known_leader_for_every_region() {
        struct Case {
            name: &'static str,
            pd: bool,
            regions: &'static [(u64, bool)],
            reasons: usize,
        }
        let cases = [
            Case {
                name: "PD answers, every leader known",
                pd: true,
                regions: &[(1, true), (2, true)],
                reasons: 0,
            },
            Case {
                name: "no regions yet (a new store) is ready once PD answers",
                pd: true,
                regions: &[],
                reasons: 0,
            },
            Case {
                name: "PD unreachable",
                pd: false,
                regions: &[(1, true)],
                reasons: 1,
            },
            Case {
                name: "a region electing",
                pd: true,
                regions: &[(1, true), (2, false)],
                reasons: 1,
            },
            Case {
                name: "both",
                pd: false,
                regions: &[(2, false)],
                reasons: 2,
            },
        ];
        for c in cases {
            let reasons = not_ready_reasons(c.pd, c.regions);
            assert_eq!(reasons.len(), c.reasons, "{}: {reasons:?}", c.name);
        }
        assert!(not_ready_reasons(true, &[(7, false)])[0].contains("[7]"));
    }
}
