//! Prometheus metrics of a PD member, served at `/metrics` on its client port (next to the
//! HTTP API): timestamps and region heartbeats handled, and, computed when scraped, whether
//! the member leads and how many stores and regions the cluster has.
//!
//! Registered in the process's default registry; the scrape-time gauges describe the member
//! answering the scrape (in a process with several members, as in tests, the last scraped).

use std::sync::LazyLock;

use prometheus::{register_int_counter, register_int_gauge, IntCounter, IntGauge};

use crate::cluster::Cluster;

/// Timestamps handed out (a TSO request for `count` timestamps adds `count`).
pub static TSO_TIMESTAMPS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "rangekv_pd_tso_timestamps_total",
        "Timestamps handed out by this PD member"
    )
    .expect("register metric")
});

/// Region heartbeats received.
pub static REGION_HEARTBEATS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "rangekv_pd_region_heartbeats_total",
        "Region heartbeats received by this PD member"
    )
    .expect("register metric")
});

static IS_LEADER: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "rangekv_pd_is_leader",
        "1 if this PD member is the serving leader, else 0"
    )
    .expect("register metric")
});

static STORES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("rangekv_pd_stores", "Stores registered with the cluster")
        .expect("register metric")
});

static REGIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("rangekv_pd_regions", "Regions in PD's region map")
        .expect("register metric")
});

/// Every metric of the process in Prometheus' text format, the gauges set for `cluster`.
pub fn render(cluster: &Cluster) -> Result<String, prometheus::Error> {
    LazyLock::force(&TSO_TIMESTAMPS);
    LazyLock::force(&REGION_HEARTBEATS);
    IS_LEADER.set(i64::from(cluster.require_leader().is_ok()));
    let (stores, regions) = cluster
        .state()
        .read(|s| (s.stores().count(), s.regions().len()));
    STORES.set(stores as i64);
    REGIONS.set(regions as i64);
    prometheus::TextEncoder::new().encode_to_string(&prometheus::gather())
}
