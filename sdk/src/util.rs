//! Small helpers that policies keep needing: name patterns and calendar dates (plugins have no time-zone database
//! and should not pull in a date crate for this).

/// Whether `name` matches `pattern`: `*` alone matches everything, a trailing `*` matches a prefix, anything else
/// must be equal.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// Whether any of `patterns` matches `name`.
pub fn matches_any<'a>(patterns: impl IntoIterator<Item = &'a str>, name: &str) -> bool {
    patterns.into_iter().any(|p| matches(p, name))
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    // By table, not `format!` per byte: auth hashes every request's key, and a formatted byte cost ~0.2 µs in Wasm.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The UTC calendar date (year, month 1–12, day 1–31) of a Unix time in milliseconds.
pub fn date(unix_ms: u64) -> (i64, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm.
    let z = (unix_ms / 86_400_000) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a UTC calendar date.
pub fn days(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM:SSZ` into Unix milliseconds.
pub fn parse_utc(s: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let sep = |i: usize, c: u8| s.as_bytes().get(i) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-')) {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let secs = match s.len() {
        10 => 0,
        20 if (sep(10, b'T') || sep(10, b' ')) && sep(13, b':') && sep(16, b':') && sep(19, b'Z') => {
            let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
            if h > 23 || mi > 59 || se > 60 {
                return None;
            }
            u64::from(h * 3600 + mi * 60 + se)
        }
        _ => return None,
    };
    let days = days(i64::from(y), m, d);
    (days >= 0).then(|| days as u64 * 86_400_000 + secs * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff, 0x5c]), "000fa0ff5c");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn patterns() {
        assert!(matches("*", "anything") && matches("claude-*", "claude-haiku-4-5") && matches("gpt-4o", "gpt-4o"));
        assert!(!matches("gpt-4o", "gpt-4o-mini") && !matches("claude-*", "gpt-4o"));
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(date(0), (1970, 1, 1));
        assert_eq!(date(1_795_305_600_000), (2026, 11, 22));
        assert_eq!(date(951_782_400_000), (2000, 2, 29));
        for day in [0i64, 59, 60, 365, 10_957, 11_016, 20_514, 40_000] {
            let (y, m, d) = date(day as u64 * 86_400_000);
            assert_eq!(days(y, m, d), day);
        }
        assert_eq!(parse_utc("2026-11-22"), Some(1_795_305_600_000));
        assert_eq!(parse_utc("2026-11-22T01:02:03Z"), Some(1_795_305_600_000 + 3_723_000));
        for bad in ["2026-13-01", "2026/11/22", "2026-11-22T25:00:00Z", "tomorrow", "2026-11-22T01:02:03+01:00"] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }
}
