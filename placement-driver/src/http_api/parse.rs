//! Request parsing of the HTTP API: path parameters and query values, and the leader check.

use axum::http::Uri;

use super::{ApiError, Result};
use crate::cluster::Cluster;
use crate::Error;

pub(super) fn require_bootstrapped_leader(cluster: &Cluster) -> Result<()> {
    cluster.require_leader()?;
    if cluster.state().read(|s| s.is_bootstrapped()) {
        Ok(())
    } else {
        Err(Error::NotBootstrapped.into())
    }
}

/// The last path segment, still percent-encoded (a path parameter is always the last segment
/// here, and an encoded one holds no `/`).
pub(super) fn last_segment(uri: &Uri) -> &str {
    uri.path().rsplit('/').next().unwrap_or_default()
}

pub(super) fn parse_id(uri: &Uri, what: &str) -> Result<u64> {
    let segment = last_segment(uri);
    segment
        .parse()
        .map_err(|e| ApiError::bad_request(format!("invalid {what} id {segment:?}: {e}")))
}

/// Decodes `%XX` escapes and `+` (a space), as Go's `url.QueryUnescape`.
pub(super) fn query_unescape(s: &str) -> Result<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let byte = bytes
                    .get(i + 1..i + 3)
                    .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| {
                        let bad: String = s[i..].chars().take(3).collect();
                        ApiError::bad_request(format!("invalid URL escape {bad:?}"))
                    })?;
                out.push(byte);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The unescaped values of query parameter `name`, in order.
pub(super) fn query_values<'a>(
    uri: &'a Uri,
    name: &'a str,
) -> impl Iterator<Item = Result<Vec<u8>>> + 'a {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(move |pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| query_unescape(value))
        })
}

#[cfg(test)]
mod tests {
    use super::super::format::hex_key;
    use super::*;

    #[test]
    fn keys_unescape_as_go_query_unescape() {
        assert_eq!(query_unescape("a%2Fb+c").unwrap(), b"a/b c");
        assert_eq!(query_unescape("%00%FF").unwrap(), vec![0, 255]);
        assert!(query_unescape("%zz").is_err());
        assert!(query_unescape("a%4").is_err());
        assert!(query_unescape("%+1").is_err());
        assert_eq!(hex_key(b"m\x00"), "6D00");
    }
}
