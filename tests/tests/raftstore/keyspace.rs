//! API V2 keyspaces on a replicated cluster whose regions are split at the default keyspace's
//! boundaries (as PD splits them): raw put/get/scan with TTL in V2, prefix checks, and V1
//! fenced off the keyspace.

use std::time::Duration;

use bytes::Bytes;
use proto::kvrpcpb::{
    ApiVersion, Context, RawGetKeyTtlRequest, RawGetRequest, RawPutRequest, RawScanRequest,
};
use server::raw::Failure;
use tests::Cluster;

const DEADLINE: Duration = Duration::from_secs(20);

/// The memcomparable encoding of `key` (how V2 keys are stored and routed).
fn enc(key: &[u8]) -> Vec<u8> {
    server::keyspace::encode(key)
}

/// `r\0\0\0` + `user`: a raw key of the default keyspace.
fn rk(user: &str) -> Bytes {
    let mut k = b"r\0\0\0".to_vec();
    k.extend_from_slice(user.as_bytes());
    Bytes::from(k)
}

struct Keyspace {
    cluster: Cluster,
}

impl Keyspace {
    fn start() -> Keyspace {
        let bounds = server::keyspace::default_keyspace_boundaries();
        let splits: Vec<&[u8]> = bounds.iter().map(|b| &b[..]).collect();
        let cluster = Cluster::new(3, &splits);
        Keyspace { cluster }
    }

    /// The context of a V2 request (or V1) for the region that holds `stored`, at its leader.
    fn ctx(&self, stored: &[u8], api: ApiVersion) -> (u64, Context) {
        let region = self.cluster.region_for_key(stored);
        let leader = self.cluster.wait_leader(region.id, DEADLINE);
        let mut ctx = self.cluster.context(&region, leader);
        ctx.api_version = api as i32;
        (leader, ctx)
    }

    fn put(&self, key: Bytes, value: &str, ttl: u64) -> Result<(), Failure> {
        let (leader, ctx) = self.ctx(&enc(&key), ApiVersion::V2);
        let req = RawPutRequest {
            context: Some(ctx),
            key,
            value: Bytes::copy_from_slice(value.as_bytes()),
            ttl,
            ..Default::default()
        };
        let storage = self.cluster.storage(leader);
        self.cluster.block_on(storage.raw_put(req)).map(|_| ())
    }

    fn get(&self, key: Bytes, api: ApiVersion) -> Result<Option<String>, Failure> {
        let (leader, ctx) = self.ctx(&enc(&key), api);
        let req = RawGetRequest {
            context: Some(ctx),
            key,
            ..Default::default()
        };
        let resp = self
            .cluster
            .block_on(self.cluster.storage(leader).raw_get(req))?;
        Ok((!resp.not_found).then(|| String::from_utf8_lossy(&resp.value).into_owned()))
    }

    fn ttl(&self, key: Bytes) -> Result<Option<u64>, Failure> {
        let (leader, ctx) = self.ctx(&enc(&key), ApiVersion::V2);
        let req = RawGetKeyTtlRequest {
            context: Some(ctx),
            key,
            ..Default::default()
        };
        let resp = self
            .cluster
            .block_on(self.cluster.storage(leader).raw_get_key_ttl(req))?;
        Ok((!resp.not_found).then_some(resp.ttl))
    }

    /// Scans the whole default keyspace (raw) with `api`, routed to its region.
    fn scan(&self, api: ApiVersion, start: &[u8], end: &[u8]) -> Result<Vec<String>, Failure> {
        let (leader, ctx) = self.ctx(&enc(b"r\0\0\0"), api);
        let req = RawScanRequest {
            context: Some(ctx),
            start_key: Bytes::copy_from_slice(start),
            end_key: Bytes::copy_from_slice(end),
            limit: 100,
            ..Default::default()
        };
        let resp = self
            .cluster
            .block_on(self.cluster.storage(leader).raw_scan(req))?;
        Ok(resp
            .kvs
            .iter()
            .map(|kv| {
                format!(
                    "{}={}",
                    kv.key.escape_ascii(),
                    String::from_utf8_lossy(&kv.value)
                )
            })
            .collect())
    }
}

fn message(r: Result<impl std::fmt::Debug, Failure>) -> String {
    match r {
        Err(Failure::Message(m)) => m,
        other => panic!("expected a request error, got {other:?}"),
    }
}

#[test]
fn v2_raw_put_get_scan_with_ttl() {
    let ks = Keyspace::start();
    // Region 2 is exactly the default keyspace's raw range.
    let region = &ks.cluster.regions[1];
    assert_eq!(&region.start_key[..], &enc(b"r\0\0\0")[..]);
    assert_eq!(&region.end_key[..], &enc(b"r\0\0\x01")[..]);

    ks.put(rk("a"), "1", 0).expect("put a");
    ks.put(rk("b"), "2", 3600).expect("put b with a TTL");
    ks.put(rk("c"), "3", 1).expect("put c with a TTL of 1 s");
    assert_eq!(
        ks.get(rk("a"), ApiVersion::V2).expect("get a"),
        Some("1".into())
    );
    assert_eq!(ks.ttl(rk("a")).expect("ttl of a"), Some(0));
    let ttl = ks.ttl(rk("b")).expect("ttl of b").expect("b exists");
    assert!((3590..=3600).contains(&ttl), "ttl {ttl}");
    assert_eq!(ks.ttl(rk("missing")).expect("ttl of a missing key"), None);

    // The whole keyspace, as tikv-client bounds it: [r\0\0\0, r\0\0\x01).
    let all = || {
        ks.scan(ApiVersion::V2, b"r\0\0\0", b"r\0\0\x01")
            .expect("scan")
    };
    assert_eq!(
        all(),
        [
            r"r\x00\x00\x00a=1",
            r"r\x00\x00\x00b=2",
            r"r\x00\x00\x00c=3"
        ]
    );

    // c expires: gets, scans and its TTL stop seeing it.
    test_util::wait_until("c to expire", DEADLINE, || {
        ks.get(rk("c"), ApiVersion::V2).expect("get c").is_none()
    });
    assert_eq!(all(), [r"r\x00\x00\x00a=1", r"r\x00\x00\x00b=2"]);
    assert_eq!(ks.ttl(rk("c")).expect("ttl of c"), None);
}

#[test]
fn keys_must_match_the_api_and_the_keyspace() {
    let ks = Keyspace::start();
    ks.put(rk("a"), "1", 0).expect("put a");
    // Wrong mode, unknown keyspace, no prefix.
    let wrong_mode = message(ks.put(Bytes::from_static(b"x\0\0\0a"), "1", 0));
    assert!(wrong_mode.contains("must start with 'r'"), "{wrong_mode}");
    let unknown = message(ks.put(Bytes::from_static(b"r\0\0\x07a"), "1", 0));
    assert!(unknown.contains("keyspace 7 does not exist"), "{unknown}");
    let unbounded = message(ks.scan(ApiVersion::V2, b"r\0\0\0", b""));
    assert!(unbounded.contains("must not be empty"), "{unbounded}");

    // API V1 cannot reach into the keyspace: point reads are refused, scans see nothing.
    let v1 = message(ks.get(rk("a"), ApiVersion::V1));
    assert!(v1.contains("belongs to an API V2 keyspace"), "{v1}");
    assert_eq!(
        ks.scan(ApiVersion::V1, &enc(b"r\0\0\0"), b"")
            .expect("V1 scan"),
        Vec::<String>::new()
    );
    // V1 TTL stays refused.
    let (leader, mut ctx) = ks.ctx(b"a", ApiVersion::V1);
    ctx.api_version = ApiVersion::V1 as i32;
    let req = RawPutRequest {
        context: Some(ctx),
        key: Bytes::from_static(b"a"),
        value: Bytes::from_static(b"1"),
        ttl: 5,
        ..Default::default()
    };
    let ttl = message(ks.cluster.block_on(ks.cluster.storage(leader).raw_put(req)));
    assert!(ttl.contains("TTL is not supported"), "{ttl}");
}
