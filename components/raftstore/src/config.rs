use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};

/// Raftstore tuning. Defaults suit a small cluster on a laptop; tests shorten the tick.
#[derive(Clone, Debug)]
pub struct Config {
    /// One Raft tick.
    pub raft_base_tick: Duration,
    /// Ticks without a leader before a follower campaigns.
    pub raft_election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub raft_heartbeat_ticks: usize,
    /// Largest encoded command accepted into the log.
    pub raft_entry_max_size: usize,
    /// Largest append message in bytes.
    pub raft_max_size_per_msg: u64,
    /// Unacknowledged append messages per follower.
    pub raft_max_inflight_msgs: usize,
    /// Ticks between Raft log GC checks on the leader.
    pub raft_log_gc_ticks: usize,
    /// Compact only once this many entries could be removed.
    pub raft_log_gc_threshold: u64,
    /// Once the log holds more entries than this, compact to the applied index even if some
    /// replica still needs them: it catches up from a snapshot (TiKV's
    /// `raft-log-gc-count-limit`).
    pub raft_log_gc_count_limit: u64,
    /// A snapshot sent to a follower that has not caught up after this long is deemed lost,
    /// and another is made.
    pub snapshot_timeout: Duration,
    /// Poller threads of the raftstore.
    pub store_pool_size: usize,
    /// Apply worker threads.
    pub apply_pool_size: usize,
    /// Most peers handled in one poll round (one group commit).
    pub max_batch_size: usize,
    /// Most messages one peer handles in one round before yielding.
    pub messages_per_tick: usize,
    /// Pending ReadIndex requests older than this are answered with an error.
    pub read_index_timeout: Duration,
    /// Proposals a leader keeps waiting for apply before it answers new ones `ServerIsBusy`
    /// (clients back off), so an overloaded or cut-off leader does not queue without bound.
    pub max_pending_proposals: usize,
    /// Send a poll round's leader appends before the round's synced log write, so followers
    /// persist in parallel with the leader (Raft allows it: an entry commits once any
    /// majority persisted it). Off only to measure the difference (benches/).
    pub send_appends_before_persist: bool,
    /// Propose client writes that reach a leader together as one entry (TiKV's command
    /// batching, see `peer::propose::BatchedWrites`). Off by default until it has run under
    /// the whole fault suite for longer.
    pub batch_client_writes: bool,
    /// Hand committed entries that are already persisted here to apply as soon as the Ready
    /// is taken, not after the round's synced write (see `Peer::collect_ready`). Off by
    /// default until it has run under the whole fault suite for longer.
    pub apply_before_persist: bool,
    /// Idle regions stop ticking (see [`crate::hibernate`]).
    pub hibernate_regions: bool,
    /// Ticks a leader must be idle before it asks its followers to hibernate.
    pub hibernate_ticks: usize,
    /// DEVELOPMENT ONLY, BREAKS LINEARIZABILITY: followers answer replica reads from their own
    /// applied state without asking the leader. A negative control for `rangekv verify`
    /// (the register checker must catch the stale reads); never set it on real data.
    pub unsafe_follower_reads: bool,
    /// Wall time for leases and timeouts (Raft itself runs on ticks).
    pub clock: Arc<dyn Clock>,
    /// Told when something PD routes by changes for one of this store's peers.
    pub on_region_change: Option<RegionChangeObserver>,
}

/// Called on a raftstore thread, with a region id, whenever a peer of this store gains or loses
/// leadership or its region's range or epoch changes. Must not block (e.g. send on a channel).
#[derive(Clone)]
pub struct RegionChangeObserver(pub Arc<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for RegionChangeObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegionChangeObserver")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            raft_base_tick: Duration::from_millis(100),
            raft_election_ticks: 10,
            raft_heartbeat_ticks: 2,
            raft_entry_max_size: 8 << 20,
            raft_max_size_per_msg: 1 << 20,
            raft_max_inflight_msgs: 256,
            raft_log_gc_ticks: 10,
            raft_log_gc_threshold: 64,
            raft_log_gc_count_limit: 20_000,
            snapshot_timeout: Duration::from_secs(60),
            store_pool_size: 2,
            apply_pool_size: 2,
            max_batch_size: 256,
            messages_per_tick: 4096,
            read_index_timeout: Duration::from_secs(5),
            max_pending_proposals: 8192,
            send_appends_before_persist: true,
            batch_client_writes: false,
            apply_before_persist: false,
            hibernate_regions: true,
            hibernate_ticks: 20,
            unsafe_follower_reads: false,
            clock: Arc::new(SystemClock),
            on_region_change: None,
        }
    }
}

impl Config {
    /// The leader lease: strictly shorter than the time a follower that has heard from the
    /// leader refuses to vote for anyone else (the election timeout minus one tick of
    /// granularity), with two more ticks of margin for scheduling delays and clock drift.
    pub fn lease_duration(&self) -> Duration {
        self.raft_base_tick * (self.raft_election_ticks.saturating_sub(3).max(1) as u32)
    }

    pub fn election_timeout(&self) -> Duration {
        self.raft_base_tick * self.raft_election_ticks as u32
    }

    /// Checks the configuration for values that would break Raft's assumptions.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.raft_heartbeat_ticks == 0 || self.raft_election_ticks <= self.raft_heartbeat_ticks {
            return Err("raft election ticks must exceed heartbeat ticks (> 0)".into());
        }
        if self.raft_election_ticks < 5 {
            return Err("raft election ticks must be at least 5 for leader leases".into());
        }
        if self.store_pool_size == 0 || self.apply_pool_size == 0 {
            return Err("pool sizes must be positive".into());
        }
        if self.max_pending_proposals == 0 {
            return Err("max_pending_proposals must be positive".into());
        }
        if self.raft_log_gc_count_limit <= self.raft_log_gc_threshold {
            return Err("raft_log_gc_count_limit must exceed raft_log_gc_threshold".into());
        }
        if self.raft_base_tick.is_zero() {
            return Err("raft base tick must be positive".into());
        }
        Ok(())
    }
}
