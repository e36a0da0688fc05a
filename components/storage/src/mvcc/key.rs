//! MVCC keys: the memcomparable encoding of a user key, optionally followed by a timestamp
//! encoded descending (`engine::codec`), so all versions of a key are adjacent and newest first.

use engine::codec;

use super::TimeStamp;

/// An encoded user key, with or without a timestamp suffix.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Vec<u8>);

impl Key {
    /// Encodes a user key (no timestamp).
    pub fn from_raw(raw: &[u8]) -> Key {
        let mut out = Vec::with_capacity(raw.len() / 8 * 9 + 9 + 8);
        codec::encode_bytes(raw, &mut out);
        Key(out)
    }

    /// Wraps bytes that are already an encoded key (with or without a timestamp).
    pub fn from_encoded(encoded: Vec<u8>) -> Key {
        Key(encoded)
    }

    /// This key (which must have no timestamp) at `ts`.
    pub fn append_ts(&self, ts: TimeStamp) -> Key {
        let mut out = Vec::with_capacity(self.0.len() + 8);
        out.extend_from_slice(&self.0);
        codec::encode_u64_desc(ts, &mut out);
        Key(out)
    }

    /// Splits an encoded key with a timestamp into the key and the timestamp.
    pub fn split_on_ts(encoded: &[u8]) -> Option<(&[u8], TimeStamp)> {
        if encoded.len() < 8 {
            return None;
        }
        let (key, ts) = encoded.split_at(encoded.len() - 8);
        let (ts, _) = codec::decode_u64_desc(ts).ok()?;
        Some((key, ts))
    }

    /// The user key (decodes the memcomparable form; must have no timestamp).
    pub fn to_raw(&self) -> engine::Result<Vec<u8>> {
        codec::decode_bytes(&self.0).map(|(raw, _)| raw)
    }

    pub fn as_encoded(&self) -> &[u8] {
        &self.0
    }

    pub fn into_encoded(self) -> Vec<u8> {
        self.0
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match codec::decode_bytes(&self.0) {
            Ok((raw, [])) => {
                write!(f, "Key({:?})", String::from_utf8_lossy(&raw))
            }
            Ok((raw, rest)) => match codec::decode_u64_desc(rest) {
                Ok((ts, _)) => write!(f, "Key({:?}@{ts})", String::from_utf8_lossy(&raw)),
                Err(_) => write!(f, "Key({:x?})", self.0),
            },
            Err(_) => write!(f, "Key({:x?})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_newest_first_and_never_interleave_with_longer_keys() {
        let a = Key::from_raw(b"a");
        let a0 = Key::from_raw(b"a\0");
        let mut keys = [
            a.append_ts(5).into_encoded(),
            a0.append_ts(9).into_encoded(),
            a.append_ts(7).into_encoded(),
            a0.append_ts(1).into_encoded(),
        ];
        keys.sort();
        let order: Vec<(Vec<u8>, u64)> = keys
            .iter()
            .map(|k| {
                let (key, ts) = Key::split_on_ts(k).unwrap();
                (Key::from_encoded(key.to_vec()).to_raw().unwrap(), ts)
            })
            .collect();
        assert_eq!(
            order,
            vec![
                (b"a".to_vec(), 7),
                (b"a".to_vec(), 5),
                (b"a\0".to_vec(), 9),
                (b"a\0".to_vec(), 1)
            ]
        );
    }
}
