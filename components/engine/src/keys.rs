//! Key layout inside the engine.
//!
//! - Data keys (column families `default`, `lock`, `write`): `b'z' ++ user_key`. The prefix keeps
//!   room for local metadata below it and makes "end of keyspace" the fixed key `b'{'`.
//! - Local keys (column family `raft`): `0x01 ++ kind`, and for per-region state
//!   `0x01 ++ 0x02 ++ region_id (u64 BE) ++ suffix [++ index (u64 BE)]`, so that all the state of
//!   one region is contiguous and its log entries sort by index.

/// Prefix of every user key in the data column families.
pub const DATA_PREFIX: u8 = b'z';
/// The smallest key above every data key.
pub const DATA_MAX_KEY: &[u8] = b"{";

const LOCAL_PREFIX: u8 = 0x01;
const STORE_IDENT_KEY: &[u8] = &[LOCAL_PREFIX, 0x01];
const REGION_PREFIX: u8 = 0x02;

const RAFT_LOG_SUFFIX: u8 = 0x01;
const HARD_STATE_SUFFIX: u8 = 0x02;
const APPLY_STATE_SUFFIX: u8 = 0x03;
const REGION_STATE_SUFFIX: u8 = 0x04;

/// Maps a user key to its engine key.
pub fn data_key(key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 1);
    v.push(DATA_PREFIX);
    v.extend_from_slice(key);
    v
}

/// Maps a region end key (empty = unbounded) to the exclusive engine upper bound.
pub fn data_end_key(end: &[u8]) -> Vec<u8> {
    if end.is_empty() {
        DATA_MAX_KEY.to_vec()
    } else {
        data_key(end)
    }
}

/// Strips the data prefix. Panics on a key that is not a data key: that is a bug of the caller.
pub fn origin_key(key: &[u8]) -> &[u8] {
    assert!(key.first() == Some(&DATA_PREFIX), "not a data key: {key:?}");
    &key[1..]
}

/// The key of the store's identity (cluster id, store id).
pub fn store_ident_key() -> &'static [u8] {
    STORE_IDENT_KEY
}

fn region_key(region_id: u64, suffix: u8, extra: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(11 + extra);
    v.push(LOCAL_PREFIX);
    v.push(REGION_PREFIX);
    v.extend_from_slice(&region_id.to_be_bytes());
    v.push(suffix);
    v
}

/// The key of the Raft log entry `index` of `region_id`.
pub fn raft_log_key(region_id: u64, index: u64) -> Vec<u8> {
    let mut v = region_key(region_id, RAFT_LOG_SUFFIX, 8);
    v.extend_from_slice(&index.to_be_bytes());
    v
}

/// Decodes the index from a key made by [`raft_log_key`].
pub fn raft_log_index(key: &[u8]) -> Option<u64> {
    if key.len() != 19 {
        return None;
    }
    Some(u64::from_be_bytes(key[11..].try_into().ok()?))
}

pub fn raft_hard_state_key(region_id: u64) -> Vec<u8> {
    region_key(region_id, HARD_STATE_SUFFIX, 0)
}

pub fn apply_state_key(region_id: u64) -> Vec<u8> {
    region_key(region_id, APPLY_STATE_SUFFIX, 0)
}

pub fn region_state_key(region_id: u64) -> Vec<u8> {
    region_key(region_id, REGION_STATE_SUFFIX, 0)
}

/// The range `[start, end)` holding every region-state key of the store.
pub fn region_state_range() -> (Vec<u8>, Vec<u8>) {
    (
        vec![LOCAL_PREFIX, REGION_PREFIX],
        vec![LOCAL_PREFIX, REGION_PREFIX + 1],
    )
}

/// Decodes the region id from a region-state key; `None` for any other local key.
pub fn region_id_of_state_key(key: &[u8]) -> Option<u64> {
    if key.len() == 11
        && key[0] == LOCAL_PREFIX
        && key[1] == REGION_PREFIX
        && key[10] == REGION_STATE_SUFFIX
    {
        return Some(u64::from_be_bytes(key[2..10].try_into().ok()?));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_region_then_index() {
        let mut keys = [
            raft_log_key(2, 1),
            raft_log_key(1, 300),
            raft_log_key(1, 2),
            raft_hard_state_key(1),
        ];
        keys.sort();
        assert_eq!(keys[0], raft_log_key(1, 2));
        assert_eq!(keys[1], raft_log_key(1, 300));
        assert_eq!(keys[2], raft_hard_state_key(1));
        assert_eq!(raft_log_index(&raft_log_key(7, 42)), Some(42));
    }

    #[test]
    fn region_state_keys_decode_and_stay_in_range() {
        let (s, e) = region_state_range();
        let k = region_state_key(99);
        assert!(k >= s && k < e);
        assert_eq!(region_id_of_state_key(&k), Some(99));
        assert_eq!(region_id_of_state_key(&apply_state_key(99)), None);
    }

    #[test]
    fn data_keys() {
        assert_eq!(origin_key(&data_key(b"abc")), b"abc");
        assert!(data_key(&[0xff; 8]).as_slice() < DATA_MAX_KEY);
        assert_eq!(data_end_key(b""), DATA_MAX_KEY);
    }
}
