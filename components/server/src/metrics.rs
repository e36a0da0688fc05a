//! Prometheus metrics of the gRPC service, registered in the process's
//! default registry.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, HistogramVec,
    IntCounterVec, IntGauge,
};

/// Requests by method and outcome (`ok`, `region_error`, `error`).
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "rangekv_grpc_requests_total",
        "Client requests by method and outcome",
        &["method", "outcome"]
    )
    .expect("register metric")
});

/// Request latency by method.
pub static REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "rangekv_grpc_request_seconds",
        "Client request latency by method",
        &["method"],
        prometheus::exponential_buckets(0.0001, 2.0, 18).expect("buckets")
    )
    .expect("register metric")
});

/// Pessimistic lock requests that met another transaction's lock and waited for it.
pub static PESSIMISTIC_LOCK_WAITS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "rangekv_pessimistic_lock_waits_total",
        "Pessimistic lock requests that waited for another transaction's lock"
    )
    .expect("register metric")
});

/// Regions this store hosts (set when `/metrics` is scraped).
pub static STORE_REGIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "rangekv_store_regions",
        "Regions this store hosts a replica of"
    )
    .expect("register metric")
});

/// Regions this store leads (set when `/metrics` is scraped).
pub static STORE_LEADERS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "rangekv_store_leaders",
        "Regions whose leader is on this store"
    )
    .expect("register metric")
});
