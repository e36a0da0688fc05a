//! API V2 keyspaces on the store: which keys a request of each API version may touch, how raw
//! keys and values of API V2 are stored, and which stored ranges API V1 never sees.
//!
//! As in TiKV, an API V2 key starts with its *mode* and its keyspace id (3 bytes, big endian):
//! `r` + id for raw keys, `x` + id for transactional keys. The default keyspace has id 0 and
//! is the only one that exists (PD creates no other), so its keys start with `r\0\0\0` or
//! `x\0\0\0`.
//!
//! Storage, as TiKV's API V2 has it:
//! - Raw keys of API V2 are stored, routed and checked against regions in their memcomparable
//!   encoding, like transactional keys (tikv-client asks PD for the region of a V2 raw key by
//!   its encoding and decodes region boundaries). TiKV appends a timestamp for its raw MVCC;
//!   rangekv keeps one version of a raw key and appends none.
//! - Raw values of API V2 are `user value ++ [expire ts, u64 big endian] ++ flags`, where the
//!   flags byte has bit 0 set when an expire ts (Unix seconds) is present and bit 1 for a
//!   delete marker (rangekv deletes keys instead of writing markers, but reads honour them). A
//!   value whose expire ts is not after now reads as absent.
//!
//! Invariants:
//! - An API V2 request only touches keys of its mode in an existing keyspace; a range's end
//!   may be the first key of the next keyspace (that is how clients bound "the whole
//!   keyspace") but nothing beyond.
//! - An API V1 request never writes into a keyspace's ranges, and its scans skip them (TiKV, with
//!   V2 storage, refuses V1 raw requests altogether and V1 transactional requests outside
//!   TiDB's key ranges; rangekv serves both APIs on one store, so it fences V1 off instead).
//!   Raw V1 keys are stored as they are, so the fenced raw range is `[r\0\0\0, MCE(r\0\0\x01))`
//!   (covering both plain and encoded keys of the keyspace); V1 transactional keys are
//!   encoded, so for them the fence is the plain key range `[r\0\0\0, r\0\0\x01)` (and the
//!   same for `x`).
//!
//! Deliberately absent: keyspaces other than the default, keyspace ids in `Context` (clients
//! leave them unset), raw MVCC (timestamps on raw keys) and delete markers written on delete.

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use engine::codec;
use proto::kvrpcpb::{ApiVersion, Context};

/// The default keyspace, the only one there is.
pub const DEFAULT_KEYSPACE_ID: u32 = 0;
/// Bytes of an API V2 key prefix: the mode and a 3-byte keyspace id.
pub const PREFIX_LEN: usize = 4;

const RAW_MODE: u8 = b'r';
const TXN_MODE: u8 = b'x';

/// Bit 0 of a V2 raw value's flags byte: an expire ts precedes it.
const FLAG_EXPIRE_TS: u8 = 0b01;
/// Bit 1 of a V2 raw value's flags byte: the key was deleted.
const FLAG_DELETE: u8 = 0b10;

/// Which API the request speaks (from `Context.api_version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    V1,
    V2,
}

impl Api {
    /// The API of a request; V1TTL is refused (TTL is offered through V2 only).
    pub fn of(ctx: &Context) -> Result<Api, String> {
        match ApiVersion::try_from(ctx.api_version) {
            Ok(ApiVersion::V1) => Ok(Api::V1),
            Ok(ApiVersion::V2) => Ok(Api::V2),
            _ => Err(format!(
                "API version {} is not supported (only V1, and V2 with keyspaces)",
                ctx.api_version
            )),
        }
    }
}

/// The kind of data a key belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMode {
    Raw,
    Txn,
}

impl KeyMode {
    fn byte(self) -> u8 {
        match self {
            KeyMode::Raw => RAW_MODE,
            KeyMode::Txn => TXN_MODE,
        }
    }
}

/// The first key of keyspace `id` in `mode`: `[mode, id as 3 bytes big endian]`.
pub fn prefix(mode: KeyMode, id: u32) -> [u8; PREFIX_LEN] {
    assert!(id < 1 << 24, "keyspace id {id} does not fit 3 bytes");
    let [_, a, b, c] = id.to_be_bytes();
    [mode.byte(), a, b, c]
}

/// The memcomparable encoding of `key`.
pub fn encode(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() / 8 * 9 + 9);
    codec::encode_bytes(key, &mut out);
    out
}

/// Region boundaries of the default keyspace, sorted: the encoded first keys of the raw and
/// transactional ranges of keyspace 0 and of the keyspace after it. PD splits regions there.
pub fn default_keyspace_boundaries() -> Vec<Vec<u8>> {
    [KeyMode::Raw, KeyMode::Txn]
        .into_iter()
        .flat_map(|mode| {
            [
                encode(&prefix(mode, DEFAULT_KEYSPACE_ID)),
                encode(&prefix(mode, DEFAULT_KEYSPACE_ID + 1)),
            ]
        })
        .collect()
}

/// Checks that a V2 key of `mode` carries the prefix of an existing keyspace.
pub fn check_v2_key(mode: KeyMode, key: &[u8]) -> Result<(), String> {
    let Some(head) = key.get(..PREFIX_LEN) else {
        return Err(format!(
            "API V2 key {} is shorter than the {PREFIX_LEN}-byte mode and keyspace prefix",
            key.escape_ascii()
        ));
    };
    if head[0] != mode.byte() {
        return Err(format!(
            "API V2 {} key must start with {:?}, got {}",
            mode_name(mode),
            mode.byte() as char,
            key.escape_ascii()
        ));
    }
    let id = u32::from_be_bytes([0, head[1], head[2], head[3]]);
    if id != DEFAULT_KEYSPACE_ID {
        return Err(format!(
            "keyspace {id} does not exist (only the default keyspace, {DEFAULT_KEYSPACE_ID}, does)"
        ));
    }
    Ok(())
}

/// Checks a V2 range bound of `mode`: the start must be a key of an existing keyspace; an end
/// may also be the first key of the next keyspace. Empty bounds are not allowed (they reach
/// beyond the keyspace).
pub fn check_v2_bound(mode: KeyMode, bound: &[u8], is_end: bool) -> Result<(), String> {
    if is_end && bound == prefix(mode, DEFAULT_KEYSPACE_ID + 1) {
        return Ok(());
    }
    if bound.is_empty() {
        return Err(format!(
            "API V2 {} range bound must not be empty",
            mode_name(mode)
        ));
    }
    check_v2_key(mode, bound)
}

fn mode_name(mode: KeyMode) -> &'static str {
    match mode {
        KeyMode::Raw => "raw",
        KeyMode::Txn => "transactional",
    }
}

/// A sorted list of disjoint key ranges `[start, end)`.
pub type Fence = Vec<(Vec<u8>, Vec<u8>)>;

/// [`v1_raw_fence`], built once.
pub static V1_RAW_FENCE: LazyLock<Fence> = LazyLock::new(v1_raw_fence);
/// [`v1_txn_fence`], built once.
pub static V1_TXN_FENCE: LazyLock<Fence> = LazyLock::new(v1_txn_fence);
/// [`v1_txn_fence_encoded`], built once.
pub static V1_TXN_FENCE_ENCODED: LazyLock<Fence> = LazyLock::new(v1_txn_fence_encoded);

/// Ranges of keyspace data that V1 requests never touch, in the key space of V1 raw keys
/// (stored unencoded), sorted and disjoint; see the module docs.
pub fn v1_raw_fence() -> Fence {
    [KeyMode::Raw, KeyMode::Txn]
        .into_iter()
        .map(|mode| {
            (
                prefix(mode, DEFAULT_KEYSPACE_ID).to_vec(),
                encode(&prefix(mode, DEFAULT_KEYSPACE_ID + 1)),
            )
        })
        .collect()
}

/// Ranges of keyspace data that V1 transactional requests never touch, as plain user keys.
pub fn v1_txn_fence() -> Fence {
    [KeyMode::Raw, KeyMode::Txn]
        .into_iter()
        .map(|mode| {
            (
                prefix(mode, DEFAULT_KEYSPACE_ID).to_vec(),
                prefix(mode, DEFAULT_KEYSPACE_ID + 1).to_vec(),
            )
        })
        .collect()
}

/// The same ranges as [`v1_txn_fence`], encoded: where keyspace data sits among stored
/// transactional keys.
pub fn v1_txn_fence_encoded() -> Fence {
    v1_txn_fence()
        .into_iter()
        .map(|(s, e)| (encode(&s), encode(&e)))
        .collect()
}

/// The default keyspace's transactional range, encoded: `[MCE(x\0\0\0), MCE(x\0\0\x01))`.
pub static V2_TXN_RANGE_ENCODED: LazyLock<(Vec<u8>, Vec<u8>)> = LazyLock::new(|| {
    (
        encode(&prefix(KeyMode::Txn, DEFAULT_KEYSPACE_ID)),
        encode(&prefix(KeyMode::Txn, DEFAULT_KEYSPACE_ID + 1)),
    )
});

/// Checks an encoded transactional key of a request of `api`: in V2 it must lie in the
/// default keyspace's transactional range, in V1 outside every keyspace. Checking the encoded
/// key is exact because the encoding preserves order.
pub fn check_txn_key(api: Api, encoded: &[u8]) -> Result<(), String> {
    let shown = || match codec::decode_bytes(encoded) {
        Ok((key, _)) => key.escape_ascii().to_string(),
        Err(_) => encoded.escape_ascii().to_string(),
    };
    match api {
        Api::V1 => check_v1_key(&V1_TXN_FENCE_ENCODED, encoded).map_err(|_| {
            format!(
                "key {} belongs to an API V2 keyspace: use API V2 to access it",
                shown()
            )
        }),
        Api::V2 => {
            let (start, end) = &*V2_TXN_RANGE_ENCODED;
            if encoded >= &start[..] && encoded < &end[..] {
                Ok(())
            } else {
                Err(format!(
                    "API V2 transactional key {} must start with 'x' and the default keyspace's id ({DEFAULT_KEYSPACE_ID})",
                    shown()
                ))
            }
        }
    }
}

/// Checks an encoded transactional range bound of a V2 request: inside the default keyspace,
/// or (an end) its end.
pub fn check_v2_txn_bound(encoded: &[u8], is_end: bool) -> Result<(), String> {
    if is_end && encoded == &V2_TXN_RANGE_ENCODED.1[..] {
        return Ok(());
    }
    if encoded.is_empty() {
        return Err("API V2 transactional range bound must not be empty".into());
    }
    check_txn_key(Api::V2, encoded)
}

/// Checks that a V1 key stays out of `fence`.
pub fn check_v1_key(fence: &[(Vec<u8>, Vec<u8>)], key: &[u8]) -> Result<(), String> {
    if fence.iter().any(|(s, e)| key >= &s[..] && key < &e[..]) {
        return Err(format!(
            "key {} belongs to an API V2 keyspace: use API V2 to access it",
            key.escape_ascii()
        ));
    }
    Ok(())
}

/// `[lower, upper)` (an empty `upper` meaning unbounded) without the ranges of `fence`
/// (sorted, disjoint), as the pieces that remain, in ascending order.
pub fn outside_fence(
    fence: &[(Vec<u8>, Vec<u8>)],
    lower: &[u8],
    upper: &[u8],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let below = |a: &[u8], b: &[u8]| b.is_empty() || a < b;
    let mut pieces = Vec::new();
    let mut from = lower.to_vec();
    for (s, e) in fence {
        if !below(&from, upper) {
            break;
        }
        if e[..] <= from[..] {
            continue;
        }
        // The piece before this fence range, up to its start or `upper`.
        if s[..] > from[..] {
            let to = if below(s, upper) {
                s.clone()
            } else {
                upper.to_vec()
            };
            pieces.push((from.clone(), to));
        }
        from = e.clone();
    }
    if below(&from, upper) {
        pieces.push((from, upper.to_vec()));
    }
    pieces
}

/// The wall clock in Unix seconds, as TiKV's TTLs count.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Encodes a V2 raw value; `ttl` 0 means it never expires, otherwise it expires `ttl` seconds
/// after `now_secs`.
pub fn encode_raw_value(value: &[u8], ttl: u64, now_secs: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 9);
    out.extend_from_slice(value);
    if ttl == 0 {
        out.push(0);
    } else {
        out.extend_from_slice(&now_secs.saturating_add(ttl).to_be_bytes());
        out.push(FLAG_EXPIRE_TS);
    }
    out
}

/// A decoded V2 raw value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawValue<'a> {
    pub user_value: &'a [u8],
    /// When it expires, Unix seconds.
    pub expire_ts: Option<u64>,
    pub is_delete: bool,
}

impl RawValue<'_> {
    /// Whether a read at `now_secs` sees it.
    pub fn is_live(&self, now_secs: u64) -> bool {
        !self.is_delete && self.expire_ts.is_none_or(|ts| ts > now_secs)
    }

    /// Seconds it has left at `now_secs` (0: no TTL).
    pub fn ttl(&self, now_secs: u64) -> u64 {
        self.expire_ts.map_or(0, |ts| ts.saturating_sub(now_secs))
    }
}

/// Decodes a stored V2 raw value.
pub fn decode_raw_value(stored: &[u8]) -> Result<RawValue<'_>, String> {
    let Some((&flags, rest)) = stored.split_last() else {
        return Err("corrupt API V2 raw value: empty".into());
    };
    if flags & !(FLAG_EXPIRE_TS | FLAG_DELETE) != 0 {
        return Err(format!("corrupt API V2 raw value: flags {flags:#04x}"));
    }
    let (user_value, expire_ts) = if flags & FLAG_EXPIRE_TS != 0 {
        let Some(split) = rest.len().checked_sub(8) else {
            return Err("corrupt API V2 raw value: expire ts cut short".into());
        };
        let (value, ts) = rest.split_at(split);
        let ts: [u8; 8] = ts.try_into().expect("split 8 bytes off");
        (value, Some(u64::from_be_bytes(ts)))
    } else {
        (rest, None)
    };
    Ok(RawValue {
        user_value,
        expire_ts,
        is_delete: flags & FLAG_DELETE != 0,
    })
}

/// The user value a V2 read at `now_secs` sees, if any.
pub fn live_raw_value(stored: &[u8], now_secs: u64) -> Result<Option<&[u8]>, String> {
    let value = decode_raw_value(stored)?;
    Ok(value.is_live(now_secs).then_some(value.user_value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_boundaries_match_tikv_client() {
        assert_eq!(prefix(KeyMode::Raw, 0), [b'r', 0, 0, 0]);
        assert_eq!(prefix(KeyMode::Txn, 0xDEAD), [b'x', 0, 0xDE, 0xAD]);
        let b = default_keyspace_boundaries();
        assert_eq!(b[0], b"r\0\0\0\0\0\0\0\xfb");
        assert_eq!(b[1], b"r\0\0\x01\0\0\0\0\xfb");
        assert_eq!(b[2], b"x\0\0\0\0\0\0\0\xfb");
        assert_eq!(b[3], b"x\0\0\x01\0\0\0\0\xfb");
        assert!(b.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn v2_keys_need_their_mode_and_an_existing_keyspace() {
        assert!(check_v2_key(KeyMode::Raw, b"r\0\0\0k").is_ok());
        assert!(check_v2_key(KeyMode::Raw, b"r\0\0\0").is_ok());
        assert!(check_v2_key(KeyMode::Txn, b"x\0\0\0k").is_ok());
        let wrong_mode = check_v2_key(KeyMode::Raw, b"x\0\0\0k").unwrap_err();
        assert!(wrong_mode.contains("must start with 'r'"), "{wrong_mode}");
        assert!(check_v2_key(KeyMode::Txn, b"r\0\0\0k").is_err());
        assert!(check_v2_key(KeyMode::Raw, b"k").is_err());
        assert!(check_v2_key(KeyMode::Raw, b"r\0\0").is_err());
        let unknown = check_v2_key(KeyMode::Raw, b"r\0\0\x05k").unwrap_err();
        assert!(unknown.contains("keyspace 5 does not exist"), "{unknown}");
        // The next keyspace's first key may end a range, nothing else outside.
        assert!(check_v2_bound(KeyMode::Raw, b"r\0\0\x01", true).is_ok());
        assert!(check_v2_bound(KeyMode::Raw, b"r\0\0\x01", false).is_err());
        assert!(check_v2_bound(KeyMode::Raw, b"", true).is_err());
        assert!(check_v2_bound(KeyMode::Raw, b"s", true).is_err());
    }

    #[test]
    fn v1_keys_stay_out_of_keyspaces() {
        let raw = v1_raw_fence();
        assert!(check_v1_key(&raw, b"a").is_ok());
        assert!(check_v1_key(&raw, b"rabbit").is_ok());
        assert!(check_v1_key(&raw, b"r\0\0").is_ok());
        assert!(check_v1_key(&raw, b"r\0\0\0k").is_err());
        assert!(check_v1_key(&raw, b"x\0\0\0k").is_err());
        // Plain "r\0\0\x01" sorts inside the encoded keyspace range: fenced for raw V1.
        assert!(check_v1_key(&raw, b"r\0\0\x01").is_err());
        assert!(check_v1_key(&raw, b"r\0\0\x01\x01").is_ok());
        let txn = v1_txn_fence();
        assert!(check_v1_key(&txn, b"x\0\0\0k").is_err());
        assert!(check_v1_key(&txn, b"x\0\0\x01").is_ok());
        assert!(check_v1_key(&txn, b"xylophone").is_ok());
    }

    #[test]
    fn txn_keys_are_checked_in_encoded_form() {
        let enc = |k: &[u8]| encode(k);
        assert!(check_txn_key(Api::V2, &enc(b"x\0\0\0k")).is_ok());
        assert!(check_txn_key(Api::V2, &enc(b"x\0\0\0")).is_ok());
        // A short key whose encoding starts like the prefix is not in the keyspace.
        assert!(check_txn_key(Api::V2, &enc(b"x\0\0")).is_err());
        assert!(check_txn_key(Api::V2, &enc(b"r\0\0\0k")).is_err());
        assert!(check_txn_key(Api::V2, &enc(b"k")).is_err());
        assert!(check_txn_key(Api::V1, &enc(b"k")).is_ok());
        assert!(check_txn_key(Api::V1, &enc(b"x\0\0")).is_ok());
        assert!(check_txn_key(Api::V1, &enc(b"x\0\0\0k")).is_err());
        assert!(check_txn_key(Api::V1, &enc(b"r\0\0\0k")).is_err());
        assert!(check_v2_txn_bound(&enc(b"x\0\0\x01"), true).is_ok());
        assert!(check_v2_txn_bound(&enc(b"x\0\0\x01"), false).is_err());
        assert!(check_v2_txn_bound(b"", true).is_err());
    }

    #[test]
    fn v1_ranges_skip_the_fence() {
        let fence = vec![
            (b"c".to_vec(), b"e".to_vec()),
            (b"g".to_vec(), b"h".to_vec()),
        ];
        let pieces = |l: &[u8], u: &[u8]| {
            outside_fence(&fence, l, u)
                .into_iter()
                .map(|(s, e)| (String::from_utf8(s).unwrap(), String::from_utf8(e).unwrap()))
                .collect::<Vec<_>>()
        };
        let p = |s: &str, e: &str| (s.to_owned(), e.to_owned());
        assert_eq!(pieces(b"", b""), vec![p("", "c"), p("e", "g"), p("h", "")]);
        assert_eq!(pieces(b"a", b"d"), vec![p("a", "c")]);
        assert_eq!(pieces(b"d", b"f"), vec![p("e", "f")]);
        assert_eq!(pieces(b"c", b"e"), Vec::<(String, String)>::new());
        assert_eq!(pieces(b"f", b"z"), vec![p("f", "g"), p("h", "z")]);
        assert_eq!(pieces(b"i", b""), vec![p("i", "")]);
    }

    #[test]
    fn raw_values_round_trip_and_expire() {
        let plain = encode_raw_value(b"v", 0, 1_000);
        assert_eq!(plain, b"v\0");
        let v = decode_raw_value(&plain).unwrap();
        assert_eq!(
            (v.user_value, v.expire_ts, v.ttl(5_000)),
            (&b"v"[..], None, 0)
        );
        assert_eq!(live_raw_value(&plain, u64::MAX).unwrap(), Some(&b"v"[..]));

        let ttl = encode_raw_value(b"v", 10, 1_000);
        assert_eq!(ttl, b"v\0\0\0\0\0\0\x03\xf2\x01");
        let v = decode_raw_value(&ttl).unwrap();
        assert_eq!(v.expire_ts, Some(1_010));
        assert_eq!(v.ttl(1_004), 6);
        assert_eq!(live_raw_value(&ttl, 1_009).unwrap(), Some(&b"v"[..]));
        assert_eq!(live_raw_value(&ttl, 1_010).unwrap(), None);

        // An empty user value, a delete marker, and corrupt encodings.
        assert_eq!(
            live_raw_value(&encode_raw_value(b"", 0, 0), 0).unwrap(),
            Some(&b""[..])
        );
        assert_eq!(live_raw_value(b"v\x02", 0).unwrap(), None);
        assert!(decode_raw_value(b"").is_err());
        assert!(decode_raw_value(b"v\x04").is_err());
        assert!(decode_raw_value(b"\0\0\x01").is_err());
    }
}
