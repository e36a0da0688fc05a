//! Prometheus metrics of the raftstore, registered in the process's default registry.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge,
    Histogram, IntCounter, IntCounterVec, IntGauge,
};

/// Poll rounds that wrote a synced batch of Raft state.
pub static LOG_WRITES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "rangekv_raftstore_log_writes_total",
        "Synced Raft log write batches (one per poll round with work)"
    )
    .expect("register metric")
});

/// Duration of the synced write of one poll round.
pub static LOG_WRITE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "rangekv_raftstore_log_write_seconds",
        "Duration of one synced Raft log write batch",
        prometheus::exponential_buckets(0.0001, 2.0, 16).expect("buckets")
    )
    .expect("register metric")
});

/// Peers whose log writes shared one synced batch (the group commit's width).
pub static GROUP_COMMIT_PEERS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "rangekv_raftstore_group_commit_peers",
        "Peers handled in a poll round whose writes shared one synced batch",
        prometheus::exponential_buckets(1.0, 2.0, 12).expect("buckets")
    )
    .expect("register metric")
});

/// Client writes that shared one Raft entry, for entries carrying more than one.
pub static BATCHED_WRITES: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "rangekv_raftstore_batched_writes",
        "Client writes proposed together as one entry (entries of two or more)",
        prometheus::exponential_buckets(2.0, 2.0, 10).expect("buckets")
    )
    .expect("register metric")
});

/// Proposals by kind (`write`, `compact_log`, `split`).
pub static PROPOSALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "rangekv_raftstore_proposals_total",
        "Commands proposed to Raft, by kind",
        &["kind"]
    )
    .expect("register metric")
});

/// Read grants by path (`lease`, `read_index`).
pub static READS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "rangekv_raftstore_reads_total",
        "Linearizable read grants, by how leadership was confirmed",
        &["path"]
    )
    .expect("register metric")
});

/// Entries applied.
pub static APPLIED_ENTRIES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "rangekv_raftstore_applied_entries_total",
        "Committed entries applied to the engine"
    )
    .expect("register metric")
});

/// Duration of one apply batch's (unsynced) engine write.
/// Bytes of committed entries waiting for the apply workers (see `apply::ApplyBacklog`).
pub static APPLY_BACKLOG_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "rangekv_raftstore_apply_backlog_bytes",
        "Bytes of committed entries handed to the apply workers and not yet written"
    )
    .expect("register metric")
});

pub static APPLY_WRITE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "rangekv_raftstore_apply_write_seconds",
        "Duration of one apply batch's engine write",
        prometheus::exponential_buckets(0.0001, 2.0, 16).expect("buckets")
    )
    .expect("register metric")
});

/// Label handles resolved once, so the raftstore loop does no label lookup per event.
pub static LEASE_READS: LazyLock<IntCounter> =
    LazyLock::new(|| READS.with_label_values(&["lease"]));
/// Peers of this store that hibernate (do not tick).
pub static HIBERNATED_PEERS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "rangekv_raftstore_hibernated_peers",
        "Region replicas of this store that hibernate (idle: no ticks)"
    )
    .expect("register metric")
});

/// Lease reads granted by the [`crate::local_reader`] on the caller's thread.
pub static LOCAL_LEASE_READS: LazyLock<IntCounter> =
    LazyLock::new(|| READS.with_label_values(&["local_lease"]));
pub static READ_INDEX_READS: LazyLock<IntCounter> =
    LazyLock::new(|| READS.with_label_values(&["read_index"]));
pub static WRITE_PROPOSALS: LazyLock<IntCounter> =
    LazyLock::new(|| PROPOSALS.with_label_values(&["write"]));
pub static COMPACT_LOG_PROPOSALS: LazyLock<IntCounter> =
    LazyLock::new(|| PROPOSALS.with_label_values(&["compact_log"]));
pub static SPLIT_PROPOSALS: LazyLock<IntCounter> =
    LazyLock::new(|| PROPOSALS.with_label_values(&["split"]));

/// Consistency checks in which this store's replica differed from the leader's.
pub static CONSISTENCY_MISMATCHES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "rangekv_consistency_mismatches_total",
        "Consistency checks whose hash on this store differed from the leader's (divergence)"
    )
    .expect("register metric")
});

/// Snapshots generation was started for (leader side).
pub static SNAPSHOTS_GENERATED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "rangekv_raftstore_snapshots_generated_total",
        "Region snapshots made for followers behind the leader's first log index"
    )
    .expect("register metric")
});

/// Snapshot messages handed to the transport.
pub static SNAPSHOTS_SENT: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "rangekv_raftstore_snapshots_sent_total",
        "Region snapshots sent to followers"
    )
    .expect("register metric")
});

/// Snapshots applied by replicas of this store.
pub static SNAPSHOTS_APPLIED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "rangekv_raftstore_snapshots_applied_total",
        "Region snapshots applied by replicas of this store"
    )
    .expect("register metric")
});
