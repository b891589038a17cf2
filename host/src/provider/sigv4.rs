//! AWS Signature Version 4 for the requests the gateway sends to AWS (Bedrock): the canonical request, the string to
//! sign and the signature, over exactly the bytes and headers sent.
//!
//! Rules that every gateway signing for Bedrock has had to learn (and the tests check against botocore):
//! - the canonical URI is the path *as sent*, URI-encoded once more (outside S3 AWS double-encodes): a model id's
//!   `:` is sent as `%3A` and signed as `%253A`;
//! - only the headers the gateway itself sets are signed (`host`, `x-amz-date`, `content-type`, `accept`,
//!   `x-amz-security-token` when there is one), never a client's forwarded headers or `traceparent`, which AWS
//!   ignores when unsigned;
//! - the payload hash is SHA-256 of the exact body bytes sent; `host` is the URL's authority (with a port only when
//!   it is not the scheme's default), as the HTTP client sends it.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::fmt::Write as _;
use std::time::SystemTime;

use ring::{digest, hmac};

/// An AWS credential set: the secret parts never leave this struct except as signatures.
#[derive(Clone)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKeys").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// What is signed: the request as it goes on the wire.
pub struct Signable<'a> {
    pub method: &'a str,
    /// The URL's authority, as the `host` header carries it.
    pub host: &'a str,
    /// The path as sent (already percent-encoded where the URL needs it).
    pub path: &'a str,
    /// The raw query string (without `?`), or empty.
    pub query: &'a str,
    /// Signed headers other than `host` and `x-amz-date`/`x-amz-security-token` (added here): lower-case names.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The headers to add to the request: `x-amz-date`, `x-amz-security-token` (with a session token) and
/// `authorization`.
#[derive(Debug)]
pub struct Signature {
    pub amz_date: String,
    pub security_token: Option<String>,
    pub authorization: String,
}

/// `YYYYMMDD'T'HHMMSS'Z'` for a time.
pub fn amz_date(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// URI-encodes every byte except the unreserved characters (and `/` when `keep_slash`).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The canonical query string: each name and value URI-encoded, sorted by name then value.
fn canonical_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let decode = |s: &str| percent_decode(s.replace('+', " ").as_str());
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (uri_encode(&decode(k), false), uri_encode(&decode(v), false)),
            None => (uri_encode(&decode(p), false), String::new()),
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hexval = |x: u8| (x as char).to_digit(16);
        if c == b'%'
            && let (Some(h), Some(l)) = (b.get(i + 1).and_then(|x| hexval(*x)), b.get(i + 2).and_then(|x| hexval(*x)))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical request and the signed-header list, for `amz_date` and optional session token.
pub fn canonical_request(r: &Signable<'_>, amz_date: &str, security_token: Option<&str>) -> (String, String) {
    let mut headers: Vec<(String, String)> = Vec::with_capacity(r.headers.len() + 3);
    headers.push(("host".into(), r.host.to_string()));
    headers.push(("x-amz-date".into(), amz_date.to_string()));
    if let Some(t) = security_token {
        headers.push(("x-amz-security-token".into(), t.to_string()));
    }
    for (k, v) in r.headers {
        // Values trimmed, inner runs of spaces collapsed to one.
        let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
        headers.push((k.to_ascii_lowercase(), v));
    }
    headers.sort();
    let signed = headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    let mut c = String::with_capacity(256 + r.path.len());
    c.push_str(r.method);
    c.push('\n');
    c.push_str(&uri_encode(if r.path.is_empty() { "/" } else { r.path }, true));
    c.push('\n');
    c.push_str(&canonical_query(r.query));
    c.push('\n');
    for (k, v) in &headers {
        let _ = writeln!(c, "{k}:{v}");
    }
    c.push('\n');
    c.push_str(&signed);
    c.push('\n');
    c.push_str(&hex(digest::digest(&digest::SHA256, r.body).as_ref()));
    (c, signed)
}

/// Signs `r` for `service` in `region` at time `now`.
pub fn sign(r: &Signable<'_>, keys: &AwsKeys, region: &str, service: &str, now: SystemTime) -> Signature {
    let amz_date = amz_date(now);
    let day = amz_date.get(..8).unwrap_or_default();
    let token = keys.session_token.as_deref();
    let (canonical, signed) = canonical_request(r, &amz_date, token);
    let scope = format!("{day}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let mac = |key: &[u8], data: &str| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes());
    let k_date = mac(format!("AWS4{}", keys.secret_access_key).as_bytes(), day);
    let k_region = mac(k_date.as_ref(), region);
    let k_service = mac(k_region.as_ref(), service);
    let k_signing = mac(k_service.as_ref(), "aws4_request");
    let signature = hex(mac(k_signing.as_ref(), &to_sign).as_ref());
    Signature {
        authorization: format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            keys.access_key_id
        ),
        amz_date,
        security_token: keys.session_token.clone(),
    }
}

/// Parses an `x-amz-date` value back to a time (for the mock's clock-skew check).
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b.get(8) != Some(&b'T') || b.get(15) != Some(&b'Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    // Days from civil (the inverse of `civil_from_days`).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
        assert_eq!(amz_date(t), "20150830T123600Z");
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(t));
        for secs in [0u64, 951_782_400, 4_102_444_800, 1_796_083_200] {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_amz_date(&amz_date(t)), Some(t), "{secs}");
        }
    }

    /// AWS's published SigV4 test suite, `get-vanilla-query-order-key-case` and `post-x-www-form-urlencoded`
    /// (the example credentials `AKIDEXAMPLE`, region us-east-1, service `service`).
    #[test]
    fn matches_the_aws_test_suite() {
        let keys = AwsKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let t = parse_amz_date("20150830T123600Z").unwrap();
        let r = Signable {
            method: "GET",
            host: "example.amazonaws.com",
            path: "/",
            query: "Param2=value2&Param1=value1",
            headers: &[],
            body: b"",
        };
        let s = sign(&r, &keys, "us-east-1", "service", t);
        assert_eq!(
            s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
        let r = Signable {
            method: "POST",
            host: "example.amazonaws.com",
            path: "/",
            query: "",
            headers: &[("content-type", "application/x-www-form-urlencoded")],
            body: b"Param1=value1",
        };
        let s = sign(&r, &keys, "us-east-1", "service", t);
        assert_eq!(
            s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn the_path_is_encoded_twice() {
        let r = Signable {
            method: "POST",
            host: "h",
            path: "/model/anthropic.claude-v1%3A0/invoke",
            query: "",
            headers: &[],
            body: b"{}",
        };
        let (c, _) = canonical_request(&r, "20150830T123600Z", None);
        assert!(c.contains("\n/model/anthropic.claude-v1%253A0/invoke\n"), "{c}");
    }
}
