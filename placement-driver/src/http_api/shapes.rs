//! The JSON shapes of the HTTP API: PD's `pkg/response` types and kvproto messages as Go's
//! `encoding/json` renders them.

use std::collections::BTreeMap;

use axum::response::Response;
use proto::metapb;
use proto::pdpb;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::heartbeat::{RegionStatus, StoreStatus};

use super::*;

pub(super) fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Serialize)]
pub(super) struct HeaderJson {
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) cluster_id: u64,
}

/// `pdpb.Member`.
#[derive(Serialize)]
pub(super) struct MemberJson {
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) name: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) member_id: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) peer_urls: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) client_urls: Vec<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) leader_priority: i32,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) deploy_path: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) binary_version: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) git_hash: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) dc_location: String,
    /// A learner of PD's Raft group (added, not yet caught up); not in PD's JSON.
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) is_learner: bool,
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
            is_learner: false,
        }
    }
}

/// `pdpb.GetMembersResponse`.
#[derive(Serialize)]
pub(super) struct MembersJson {
    pub(super) header: HeaderJson,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) members: Vec<MemberJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) leader: Option<MemberJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) etcd_leader: Option<MemberJson>,
}

#[derive(Serialize)]
pub(super) struct HealthJson {
    pub(super) name: String,
    pub(super) member_id: u64,
    pub(super) client_urls: Vec<String>,
    pub(super) health: bool,
}

#[derive(Serialize)]
pub(super) struct ClusterJson {
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) max_peer_count: u32,
}

#[derive(Serialize)]
pub(super) struct ServiceSafePointJson {
    pub(super) service_id: &'static str,
    pub(super) expired_at: i64,
    pub(super) safe_point: u64,
}

#[derive(Serialize)]
pub(super) struct GcSafePointsJson {
    pub(super) service_gc_safe_points: Vec<ServiceSafePointJson>,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) min_service_gc_safe_point: u64,
    pub(super) gc_safe_point: u64,
}

/// A peer: `metapb.Peer` plus `role_name` (and `is_learner`), as PD's `MetaPeer`.
#[derive(Serialize)]
pub(super) struct MetaPeer {
    pub(super) role_name: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) is_learner: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) store_id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) role: i32,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) is_witness: bool,
}

impl MetaPeer {
    pub(super) fn new(peer: Option<&metapb::Peer>) -> MetaPeer {
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
pub(super) struct DownPeerJson {
    pub(super) peer: MetaPeer,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) down_seconds: u64,
}

#[derive(Serialize)]
pub(super) struct EpochJson {
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) conf_ver: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) version: u64,
}

/// PD's `RegionInfo`.
#[derive(Serialize)]
pub(super) struct RegionInfo {
    pub(super) id: u64,
    pub(super) start_key: String,
    pub(super) end_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) epoch: Option<EpochJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) peers: Vec<MetaPeer>,
    pub(super) leader: MetaPeer,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) down_peers: Vec<DownPeerJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) pending_peers: Vec<MetaPeer>,
    pub(super) cpu_usage: u64,
    pub(super) written_bytes: u64,
    pub(super) read_bytes: u64,
    pub(super) written_keys: u64,
    pub(super) read_keys: u64,
    pub(super) approximate_size: u64,
    pub(super) approximate_keys: u64,
    pub(super) approximate_kv_size: u64,
    pub(super) approximate_columnar_kv_size: u64,
}

impl RegionInfo {
    pub(super) fn new(
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
pub(super) struct RegionsJson {
    pub(super) count: usize,
    /// `None` (JSON `null`) for `/regions/count`, as PD answers.
    pub(super) regions: Option<Vec<RegionInfo>>,
}

pub(super) fn region_infos(cluster: &Cluster, regions: &[metapb::Region]) -> Vec<RegionInfo> {
    regions
        .iter()
        .zip(cluster.region_statuses(regions))
        .map(|(region, (leader, status))| RegionInfo::new(region, leader.as_ref(), status.as_ref()))
        .collect()
}

pub(super) fn one_region(cluster: &Cluster, region: metapb::Region) -> Result<Response> {
    let infos = region_infos(cluster, std::slice::from_ref(&region));
    ok(&infos[0])
}

/// `metapb.StoreLabel`.
#[derive(Serialize)]
pub(super) struct LabelJson {
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) key: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) value: String,
}

/// `metapb.Store` plus `state_name`, as PD's `MetaStore`.
#[derive(Serialize)]
pub(super) struct MetaStore {
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) address: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) state: i32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) labels: Vec<LabelJson>,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) version: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) peer_address: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) status_address: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) git_hash: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) start_timestamp: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) deploy_path: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) last_heartbeat: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) physically_destroyed: bool,
    pub(super) state_name: String,
}

/// PD's `StoreStatus`.
#[derive(Serialize)]
pub(super) struct StoreStatusJson {
    pub(super) capacity: String,
    pub(super) available: String,
    pub(super) used_size: String,
    pub(super) leader_count: u64,
    pub(super) leader_weight: f64,
    pub(super) leader_score: f64,
    pub(super) leader_size: u64,
    pub(super) region_count: u64,
    pub(super) region_weight: f64,
    pub(super) region_score: f64,
    pub(super) region_size: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) pending_peer_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) sending_snap_count: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) receiving_snap_count: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) is_busy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) start_ts: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) last_heartbeat_ts: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) uptime: Option<String>,
}

/// PD's `StoreInfo`.
#[derive(Serialize)]
pub(super) struct StoreInfo {
    pub(super) store: MetaStore,
    pub(super) status: StoreStatusJson,
}

#[derive(Serialize)]
pub(super) struct StoresJson {
    pub(super) count: usize,
    pub(super) stores: Vec<StoreInfo>,
}

/// Per store: regions and leaders it holds, their sizes (MiB) and pending peers, from one pass
/// over the region map and the heartbeat soft state.
#[derive(Default)]
pub(super) struct StoreCounts(BTreeMap<u64, StoreCount>);

#[derive(Clone, Copy, Default)]
pub(super) struct StoreCount {
    pub(super) regions: u64,
    pub(super) region_size: u64,
    pub(super) leaders: u64,
    pub(super) leader_size: u64,
    pub(super) pending_peers: u64,
}

impl StoreCounts {
    pub(super) fn of(cluster: &Cluster) -> StoreCounts {
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
    pub(super) fn new(cluster: &Cluster, store: &metapb::Store, counts: &StoreCounts) -> StoreInfo {
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
pub(super) fn store_state_name(
    store: &metapb::Store,
    heard: Option<&StoreStatus>,
    now_ms: u64,
) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
