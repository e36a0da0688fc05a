//! Value formats of the HTTP API as PD's Go code writes them: hex keys, sizes, durations,
//! RFC 3339 times.

use std::fmt::Write as _;

use super::MIB;

/// A key as PD shows region keys: upper-case hex.
pub(super) fn hex_key(key: &[u8]) -> String {
    hex::encode_upper(key)
}

/// A region size in MiB as PD keeps it: at least 1 for a region that reported any size.
pub(super) fn size_mib(bytes: u64) -> u64 {
    if bytes > 0 {
        (bytes / MIB).max(1)
    } else {
        0
    }
}

/// Bytes as PD's `ByteSize` marshals them (go-units' `BytesSize`: binary units, 4 significant
/// digits), e.g. `"0B"`, `"1000B"`, `"1.5GiB"`.
pub(super) fn byte_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{}{}", go_g4(size), UNITS[unit])
}

/// `v` formatted as Go's `%.4g` for the values [`byte_size`] produces (`0 <= v < 10000`): four
/// significant digits, trailing zeros dropped.
pub(super) fn go_g4(v: f64) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    // Rounded to 4 significant digits first, so that the exponent accounts for carries
    // (999.96 -> 1000).
    let rounded: f64 = format!("{v:.3e}").parse().unwrap_or(v);
    let exponent = rounded.abs().log10().floor() as i32;
    let decimals = usize::try_from(3 - exponent).unwrap_or(0);
    let fixed = format!("{rounded:.decimals$}");
    if fixed.contains('.') {
        fixed.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        fixed
    }
}

/// A Unix time in ms as RFC 3339 in UTC, fractional seconds without trailing zeros (Go's
/// `time.Time` JSON).
pub(super) fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        day_secs / 3600,
        day_secs % 3600 / 60,
        day_secs % 60
    );
    push_fraction(&mut out, unix_ms % 1000);
    out.push('Z');
    out
}

/// `.mmm` without trailing zeros, nothing for 0.
pub(super) fn push_fraction(out: &mut String, ms: u64) {
    if ms > 0 {
        let digits = format!("{ms:03}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub(super) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A duration in ms as Go's `time.Duration` prints it: `"1h2m3.5s"`, `"2m0s"`, `"250ms"`.
pub(super) fn go_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (hours, minutes, secs) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    let mut out = String::new();
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let _ = write!(out, "{secs}");
    push_fraction(&mut out, ms % 1000);
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_as_go_units() {
        assert_eq!(byte_size(0), "0B");
        assert_eq!(byte_size(1000), "1000B");
        assert_eq!(byte_size(1024), "1KiB");
        assert_eq!(byte_size(1536), "1.5KiB");
        assert_eq!(byte_size(3 << 30), "3GiB");
        assert_eq!(byte_size(1_000_000_000_000), "931.3GiB");
        // Rounds to 4 significant digits, carrying into the next digit.
        assert_eq!(byte_size(1023 * 1024 + 1023), "1024KiB");
    }

    #[test]
    fn times_and_durations_as_go() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_120), "2023-11-14T22:13:20.12Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(250), "250ms");
        assert_eq!(go_duration(120_000), "2m0s");
        assert_eq!(go_duration(3_723_500), "1h2m3.5s");
        assert_eq!(go_duration(3_600_000), "1h0m0s");
    }
}
