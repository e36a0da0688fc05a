//! The memcomparable encoding of transactional keys, as the stores use it.
//!
//! Stores keep transactional data under the memcomparable encoding of each user key, and the
//! ranges of regions holding transactional data are in that encoded form. A transactional
//! client therefore locates a key's region by its **encoded** form while it sends the **raw**
//! key in requests, as TiKV's own clients do. The encoding (engine's `codec::encode_bytes`):
//! the key is cut into groups of 8 bytes, the last one (empty if the length is a multiple of
//! 8) padded with zeros; each group is followed by a marker byte `0xff - padding`. Comparing
//! encodings compares the keys, and no encoding is a prefix of another.
//!
//! A region boundary need not be the encoding of any key (a split key chosen by an operator);
//! [`decode_exact`] tells whether it is.

use bytes::Bytes;

const GROUP: usize = 8;
const MARKER: u8 = 0xff;

/// The memcomparable encoding of `key`.
pub fn encode(key: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity((key.len() / GROUP + 1) * (GROUP + 1));
    let mut rest = key;
    loop {
        let take = rest.len().min(GROUP);
        let (group, tail) = rest.split_at(take);
        out.extend_from_slice(group);
        let pad = GROUP - take;
        out.extend(std::iter::repeat_n(0u8, pad));
        out.push(MARKER - pad as u8);
        rest = tail;
        if pad > 0 {
            return out.into();
        }
    }
}

/// The key whose encoding is exactly `encoded` (nothing left over), if there is one.
pub fn decode_exact(encoded: &[u8]) -> Option<Bytes> {
    let mut key = Vec::with_capacity(encoded.len());
    let mut data = encoded;
    loop {
        if data.len() < GROUP + 1 {
            return None;
        }
        let (group, rest) = data.split_at(GROUP + 1);
        data = rest;
        let pad = usize::from(MARKER - group[GROUP]);
        if pad > GROUP {
            return None;
        }
        let real = GROUP - pad;
        if group[real..GROUP].iter().any(|b| *b != 0) {
            return None;
        }
        key.extend_from_slice(&group[..real]);
        if pad != 0 {
            return data.is_empty().then(|| key.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_documented_format() {
        assert_eq!(&encode(b"")[..], &[0, 0, 0, 0, 0, 0, 0, 0, 0xf7]);
        assert_eq!(&encode(b"abc")[..], b"abc\0\0\0\0\0\xfa");
        assert_eq!(
            &encode(b"12345678")[..],
            b"12345678\xff\0\0\0\0\0\0\0\0\xf7"
        );
        assert_eq!(
            &encode(b"123456789")[..],
            b"12345678\xff9\0\0\0\0\0\0\0\xf8"
        );
    }

    #[test]
    fn keeps_order_and_round_trips() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\0",
            b"\0\0",
            b"a",
            b"a\0",
            b"a\xff",
            b"abcdefg",
            b"abcdefgh",
            b"abcdefgh\0",
            b"abcdefghi",
            b"b",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ];
        for a in &keys {
            assert_eq!(decode_exact(&encode(a)).as_deref(), Some(*a));
            for b in &keys {
                assert_eq!(a.cmp(b), encode(a).cmp(&encode(b)), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn arbitrary_bytes_are_not_encodings() {
        assert_eq!(decode_exact(b"k2"), None);
        let mut trailing = encode(b"k").to_vec();
        trailing.push(1);
        assert_eq!(decode_exact(&trailing), None);
        let mut bad_padding = encode(b"ab").to_vec();
        bad_padding[3] = 1;
        assert_eq!(decode_exact(&bad_padding), None);
        assert_eq!(decode_exact(b"abcdefgh\x00"), None, "marker below 0xf7");
    }
}
