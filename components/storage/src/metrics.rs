//! Prometheus metrics of the storage layer (the read pool), registered in the process's
//! default registry.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_gauge, Histogram, IntCounter, IntGauge,
};

/// Reads waiting in the read pools of this process for a thread.
pub static READ_POOL_QUEUE_LENGTH: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "rangekv_readpool_queue_length",
        "Reads waiting in the read pool for a thread"
    )
    .expect("register metric")
});

/// How long reads waited in the read pool's queue before a thread took them.
pub static READ_POOL_WAIT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "rangekv_readpool_wait_seconds",
        "Time reads waited in the read pool's queue for a thread",
        prometheus::exponential_buckets(0.00001, 2.0, 22).expect("buckets")
    )
    .expect("register metric")
});

/// Reads refused because the read pool's queue was full (answered ServerIsBusy).
pub static READ_POOL_REJECTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "rangekv_readpool_rejected_total",
        "Reads refused with ServerIsBusy because the read pool's queue was full"
    )
    .expect("register metric")
});
