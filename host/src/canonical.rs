//! The request digest (`request.digest` in the plugin contract; below the plugins and the dialects, which both use
//! the API types only): lower-case hex SHA-256 over the endpoint and the
//! body in canonical JSON, leaving out what changes only how the answer is delivered (`stream`, `stream_options`).
//!
//! Canonical JSON here: object keys sorted by their UTF-8 bytes, no whitespace, strings as serde_json escapes them
//! (only `"`, `\` and control characters, as `\n`-style or `\u00XX`), numbers in one form — an integer as its
//! decimal digits, a number with an integral value (`1.0`, `1e0`, `-0.0`) as that integer when it fits in 64 bits,
//! any other as the shortest text that reads back as the same double. Two bodies that differ only in key order,
//! whitespace or number spelling have the same digest.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::Endpoint;

/// The digest of a request `body` (JSON) to `endpoint`; `None` when the body is not JSON.
pub fn digest(endpoint: Endpoint, body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let mut out = String::with_capacity(body.len());
    out.push_str(endpoint.as_str());
    out.push('\n');
    write(&v, &mut out, true);
    let hash = Sha256::digest(out.as_bytes());
    Some(hash.iter().map(|b| format!("{b:02x}")).collect())
}

fn write(v: &Value, out: &mut String, top: bool) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => number(n, out),
        Value::String(s) => out.push_str(&Value::String(s.clone()).to_string()),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(x, out, false);
            }
            out.push(']');
        }
        Value::Object(o) => {
            let mut keys: Vec<&String> =
                o.keys().filter(|k| !(top && matches!(k.as_str(), "stream" | "stream_options"))).collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = o.get(k) {
                    write(x, out, false);
                }
            }
            out.push('}');
        }
    }
}

fn number(n: &serde_json::Number, out: &mut String) {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else if let Some(f) = n.as_f64() {
        if f.fract() == 0.0 && f.abs() < 9.2e18 {
            out.push_str(&(f as i64).to_string());
        } else {
            // Rust's shortest round-trip form of the double.
            out.push_str(&format!("{f:?}"));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn spelling_does_not_change_the_digest_and_meaning_does() {
        let d = |s: &str| digest(Endpoint::ChatCompletions, s.as_bytes()).unwrap();
        let a = d(r#"{"model":"m","temperature":1,"messages":[{"role":"user","content":"hi"}],"stream":true}"#);
        let b = d(r#"{ "messages" : [ {"content":"hi","role":"user"} ], "temperature": 1.0e0, "model": "m" }"#);
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(a, d(r#"{"model":"m","temperature":0.5,"messages":[{"role":"user","content":"hi"}]}"#));
        assert_ne!(a, d(r#"{"model":"m","temperature":1,"messages":[{"role":"user","content":"hi!"}]}"#));
        // `stream` only at the top: inside the body it is content.
        assert_ne!(d(r#"{"m":{"stream":1}}"#), d(r#"{"m":{}}"#));
        assert_ne!(
            a,
            digest(Endpoint::Messages, br#"{"model":"m","temperature":1,"messages":[{"role":"user","content":"hi"}]}"#)
                .unwrap()
        );
        assert_eq!(d(r#"{"x":"\u00e9\n"}"#), d("{\"x\":\"é\\n\"}"));
        assert_eq!(d(r#"{"x":0.1}"#), d(r#"{"x":1e-1}"#));
        assert!(digest(Endpoint::ChatCompletions, b"{not json").is_none());
    }
}
