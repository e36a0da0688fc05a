use proto::metapb;

/// Whether `key` lies in `[start, end)`, with an empty `end` meaning unbounded.
pub fn key_in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    key >= start && (end.is_empty() || key < end)
}

pub fn find_peer_on_store(region: &metapb::Region, store_id: u64) -> Option<&metapb::Peer> {
    region.peers.iter().find(|p| p.store_id == store_id)
}

pub fn find_peer(region: &metapb::Region, peer_id: u64) -> Option<&metapb::Peer> {
    region.peers.iter().find(|p| p.id == peer_id)
}

pub fn epoch_version(region: &metapb::Region) -> u64 {
    region.region_epoch.as_ref().map_or(0, |e| e.version)
}

pub fn epoch_conf_ver(region: &metapb::Region) -> u64 {
    region.region_epoch.as_ref().map_or(0, |e| e.conf_ver)
}
