//! Memcomparable encodings: byte strings and integers encoded so that comparing the encoded bytes
//! compares the values. MVCC keys are `encode_bytes(user_key) ++ encode_u64_desc(ts)`, so that all
//! versions of a key are adjacent and sort newest first.
//!
//! Byte strings are cut into groups of 8 bytes; each group is padded with zeros and followed by a
//! marker byte `0xff - padding`, so a shorter string sorts before any of its extensions.

use crate::{Error, Result};

const GROUP: usize = 8;
const MARKER: u8 = 0xff;

/// Encodes `key` memcomparably, appending to `out`.
pub fn encode_bytes(key: &[u8], out: &mut Vec<u8>) {
    out.reserve((key.len() / GROUP + 1) * (GROUP + 1));
    for chunk in key.chunks(GROUP).chain(if key.len().is_multiple_of(GROUP) {
        Some(&[][..])
    } else {
        None
    }) {
        out.extend_from_slice(chunk);
        let pad = GROUP - chunk.len();
        out.extend(std::iter::repeat_n(0u8, pad));
        out.push(MARKER - pad as u8);
    }
}

/// Decodes a string written by [`encode_bytes`] from the front of `data`; returns it and the rest.
pub fn decode_bytes(mut data: &[u8]) -> Result<(Vec<u8>, &[u8])> {
    let mut key = Vec::with_capacity(data.len());
    loop {
        if data.len() < GROUP + 1 {
            return Err(Error::Codec("truncated group".into()));
        }
        let (group, rest) = data.split_at(GROUP + 1);
        data = rest;
        let pad = (MARKER - group[GROUP]) as usize;
        if pad > GROUP {
            return Err(Error::Codec(format!("bad marker {:#x}", group[GROUP])));
        }
        let real = GROUP - pad;
        if group[real..GROUP].iter().any(|b| *b != 0) {
            return Err(Error::Codec("non-zero padding".into()));
        }
        key.extend_from_slice(&group[..real]);
        if pad != 0 {
            return Ok((key, data));
        }
    }
}

/// Appends `v` so that larger values sort first.
pub fn encode_u64_desc(v: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&(!v).to_be_bytes());
}

/// Reads a value written by [`encode_u64_desc`] from the front of `data`.
pub fn decode_u64_desc(data: &[u8]) -> Result<(u64, &[u8])> {
    if data.len() < 8 {
        return Err(Error::Codec("truncated u64".into()));
    }
    let (head, rest) = data.split_at(8);
    let v = u64::from_be_bytes(head.try_into().expect("8 bytes"));
    Ok((!v, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(k: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_bytes(k, &mut v);
        v
    }

    #[test]
    fn known_lengths() {
        assert_eq!(enc(b"").len(), 9);
        assert_eq!(enc(b"12345678").len(), 18);
        assert_eq!(enc(b"123456789").len(), 18);
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode_bytes(b"abc").is_err());
        let mut bad = enc(b"ab");
        bad[3] = 1;
        assert!(decode_bytes(&bad).is_err());
    }

    proptest! {
        #[test]
        fn bytes_round_trip_and_keep_order(a in proptest::collection::vec(any::<u8>(), 0..40),
                                           b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let (ea, eb) = (enc(&a), enc(&b));
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
            let mut with_tail = ea.clone();
            with_tail.extend_from_slice(b"tail");
            let (decoded, rest) = decode_bytes(&with_tail).unwrap();
            prop_assert_eq!(decoded, a);
            prop_assert_eq!(rest, b"tail");
        }

        #[test]
        fn mvcc_versions_sort_newest_first(k in proptest::collection::vec(any::<u8>(), 0..20), t1: u64, t2: u64) {
            let key = |t| { let mut v = enc(&k); encode_u64_desc(t, &mut v); v };
            prop_assert_eq!(t1.cmp(&t2).reverse(), key(t1).cmp(&key(t2)));
            let (t, _) = decode_u64_desc(&key(t1)[enc(&k).len()..]).unwrap();
            prop_assert_eq!(t, t1);
        }
    }
}
