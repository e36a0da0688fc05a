//! API V2 keyspaces: `keyspacepb.Keyspace/LoadKeyspace`, and the region splits at keyspace
//! boundaries.
//!
//! The default keyspace (id 0, name `DEFAULT`, ENABLED) always exists and is the only one:
//! it is a constant, not replicated state, so it exists on every member from the start and
//! needs no bootstrap step. Loading any other name answers kvproto's shape for a missing
//! keyspace: a header error of type `ENTRY_NOT_FOUND` and no keyspace.
//!
//! Regions never span a keyspace boundary (as TiKV's PD splits them when it creates a
//! keyspace): a heartbeat of a region whose range strictly contains one of the default
//! keyspace's boundaries is answered with a `SplitRegion` (policy `USEKEY`) at those keys, and
//! the region's leader splits there through its ordinary split path. The answer repeats on
//! every heartbeat until the region map shows the split, so a lost answer or a failed split
//! is retried; the leader ignores an answer while its split of that region is in flight.
//! For the same reason two regions on either side of a boundary are never merged
//! ([`crate::merge`]).
//!
//! The boundaries are the memcomparable encodings of `r\0\0\0`, `r\0\0\x01`, `x\0\0\0` and
//! `x\0\0\x01`: tikv-client in API V2 locates raw and transactional keys alike by their
//! encoding and decodes region boundaries (so every boundary a V2 client meets must be an
//! encoded key).
//!
//! Deliberately absent: creating, renaming or disabling keyspaces, `LoadKeyspaceByID`,
//! `WatchKeyspaces`, keyspace configuration.

use std::sync::Arc;

use bytes::Bytes;
use engine::codec;
use proto::keyspacepb::keyspace_server::{Keyspace, KeyspaceServer};
use proto::keyspacepb::{KeyspaceMeta, KeyspaceState, LoadKeyspaceRequest, LoadKeyspaceResponse};
use proto::metapb::Region;
use proto::pdpb::{self, CheckPolicy, RegionHeartbeatResponse, ResponseHeader, SplitRegion};
use tonic::{Request, Response, Status};

use crate::cluster::Cluster;

/// Id of the default keyspace.
pub const DEFAULT_KEYSPACE_ID: u32 = 0;
/// Name of the default keyspace (tikv-client's `Config::with_default_keyspace`).
pub const DEFAULT_KEYSPACE_NAME: &str = "DEFAULT";

/// The default keyspace's metadata.
pub fn default_keyspace() -> KeyspaceMeta {
    KeyspaceMeta {
        id: DEFAULT_KEYSPACE_ID,
        name: DEFAULT_KEYSPACE_NAME.to_owned(),
        state: KeyspaceState::Enabled as i32,
        ..Default::default()
    }
}

/// The keyspace named `name`, if it exists.
pub fn load(name: &str) -> Option<KeyspaceMeta> {
    (name == DEFAULT_KEYSPACE_NAME).then(default_keyspace)
}

/// The region boundaries of keyspace `id`, sorted: the encoded first keys of its raw and
/// transactional ranges and of the next keyspace's.
pub fn boundaries(id: u32) -> Vec<Vec<u8>> {
    let key = |mode: u8, id: u32| {
        let [_, a, b, c] = id.to_be_bytes();
        let mut out = Vec::new();
        codec::encode_bytes(&[mode, a, b, c], &mut out);
        out
    };
    vec![
        key(b'r', id),
        key(b'r', id + 1),
        key(b'x', id),
        key(b'x', id + 1),
    ]
}

/// The keyspace boundaries strictly inside `[start, end)` (`end` empty: +inf), sorted.
pub fn boundaries_inside(start: &[u8], end: &[u8]) -> Vec<Vec<u8>> {
    boundaries(DEFAULT_KEYSPACE_ID)
        .into_iter()
        .filter(|b| b[..] > *start && (end.is_empty() || b[..] < *end))
        .collect()
}

/// The keyspace boundaries strictly inside `region` (where it must be split), sorted.
pub fn split_keys(region: &Region) -> Vec<Bytes> {
    boundaries_inside(&region.start_key, &region.end_key)
        .into_iter()
        .map(Bytes::from)
        .collect()
}

/// The operator answering a heartbeat of `region` (led by `leader`) that spans a keyspace
/// boundary, if it does.
pub fn split_operator(
    region: &Region,
    leader: Option<proto::metapb::Peer>,
) -> Option<RegionHeartbeatResponse> {
    let keys = split_keys(region);
    if keys.is_empty() {
        return None;
    }
    tracing::info!(
        region_id = region.id,
        keys = keys.len(),
        "splitting a region at keyspace boundaries"
    );
    Some(RegionHeartbeatResponse {
        region_id: region.id,
        region_epoch: region.region_epoch,
        target_peer: leader,
        split_region: Some(SplitRegion {
            policy: CheckPolicy::Usekey as i32,
            keys,
        }),
        ..Default::default()
    })
}

/// The gRPC service of [`KeyspaceService`] over `cluster`.
pub fn server(cluster: &Arc<Cluster>) -> KeyspaceServer<KeyspaceService> {
    KeyspaceServer::new(KeyspaceService::new(Arc::clone(cluster)))
}

/// `keyspacepb.Keyspace`, served by the PD leader.
#[derive(Clone, Debug)]
pub struct KeyspaceService {
    cluster: Arc<Cluster>,
}

impl KeyspaceService {
    pub fn new(cluster: Arc<Cluster>) -> KeyspaceService {
        KeyspaceService { cluster }
    }
}

#[tonic::async_trait]
impl Keyspace for KeyspaceService {
    async fn load_keyspace(
        &self,
        request: Request<LoadKeyspaceRequest>,
    ) -> Result<Response<LoadKeyspaceResponse>, Status> {
        let req = request.into_inner();
        let checked = self
            .cluster
            .require_leader()
            .and_then(|()| self.cluster.check_header(req.header.as_ref()));
        let resp = match checked {
            Err(e) => LoadKeyspaceResponse {
                header: Some(self.cluster.error_header(&e)),
                keyspace: None,
            },
            Ok(()) => match load(&req.name) {
                Some(meta) => LoadKeyspaceResponse {
                    header: Some(self.cluster.ok_header()),
                    keyspace: Some(meta),
                },
                None => LoadKeyspaceResponse {
                    header: Some(ResponseHeader {
                        error: Some(pdpb::Error {
                            r#type: pdpb::ErrorType::EntryNotFound as i32,
                            message: "keyspace does not exist".to_owned(),
                        }),
                        ..self.cluster.ok_header()
                    }),
                    keyspace: None,
                },
            },
        };
        Ok(Response::new(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_default_keyspace_exists() {
        let meta = load("DEFAULT").expect("the default keyspace");
        assert_eq!((meta.id, meta.state), (0, KeyspaceState::Enabled as i32));
        assert!(load("other").is_none());
        assert!(load("").is_none());
    }

    #[test]
    fn regions_spanning_boundaries_are_split_there() {
        let region = |start: &[u8], end: &[u8]| Region {
            id: 1,
            start_key: Bytes::copy_from_slice(start),
            end_key: Bytes::copy_from_slice(end),
            ..Default::default()
        };
        let b = boundaries(0);
        assert_eq!(b[0], b"r\0\0\0\0\0\0\0\xfb");
        assert_eq!(b[3], b"x\0\0\x01\0\0\0\0\xfb");
        assert_eq!(split_keys(&region(b"", b"")).len(), 4);
        // Boundaries at the region's own edges need no split.
        assert!(split_keys(&region(&b[0], &b[1])).is_empty());
        assert!(split_keys(&region(b"", &b[0])).is_empty());
        assert_eq!(boundaries_inside(&b[0], b""), b[1..].to_vec());
        assert!(boundaries_inside(b"a", b"b").is_empty());
        assert_eq!(
            split_keys(&region(&b[1], b"")),
            vec![Bytes::from(b[2].clone()), Bytes::from(b[3].clone())]
        );
        let op = split_operator(&region(b"a", b"s"), None).expect("an operator");
        let split = op.split_region.expect("a split");
        assert_eq!(split.policy, CheckPolicy::Usekey as i32);
        assert_eq!(
            split.keys,
            vec![Bytes::from(b[0].clone()), Bytes::from(b[1].clone())]
        );
    }
}
