//! The status server: plain HTTP next to the gRPC port, for operators and monitoring.
//!
//! - `GET /metrics`: every metric of the process in Prometheus' text format.
//! - `GET /status`: the store's id and, per region it hosts, range, epoch, role and indexes
//!   (JSON).
//!
//! Deliberately absent: profiling and config endpoints, TLS.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use raftstore::StoreRouter;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Clone)]
struct AppState {
    router: StoreRouter,
}

/// Serves the status endpoints on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    router: StoreRouter,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(AppState { router });
    axum::serve(crate::net::nodelay_listener(listener), app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|v| *v).await;
        })
        .await
}

async fn metrics() -> impl IntoResponse {
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
            "leader_store_id": s.leader.map(|l| l.store_id),
            "term": s.term,
            "commit_index": s.commit_index,
            "applied_index": s.applied_index,
            "first_index": s.first_index,
            "last_index": s.last_index,
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
