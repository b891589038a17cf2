//! The intake phase: the request body read within its limits (size, time) and checked for nesting before anything
//! parses it.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::BodyExt;

use crate::error::{ApiError, ErrorKind};

/// Reads the request body, refusing more than `limit` bytes with 413. An oversized upload is read on and discarded
/// (up to [`drain_cap`] bytes, within `limits.body_timeout` like any body) before the 413 is sent: a client that is
/// still writing when the gateway answers would otherwise get a reset or a broken pipe instead of the 413. A body
/// declared (`content-length`) beyond the cap is refused at once, unread.
pub(super) async fn read_body(headers: &HeaderMap, mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("request body is larger than the gateway's limit of {limit} bytes"),
        )
    };
    let cap = drain_cap(limit);
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let mut oversized = declared.is_some_and(|n| n > limit as u64);
    // A body that arrives in one frame (the usual case) is kept as it came, without a copy.
    let mut frames: Vec<Bytes> = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::new(ErrorKind::InvalidRequest, format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if oversized || seen > limit {
            oversized = true;
            frames.clear();
            if seen > cap {
                break;
            }
            continue;
        }
        frames.push(data);
    }
    if oversized {
        return Err(too_large());
    }
    Ok(match frames.len() {
        0 => Bytes::new(),
        1 => frames.swap_remove(0),
        _ => Bytes::from(frames.concat()),
    })
}

/// How much of an oversized upload is read and discarded so that its client gets the 413 (see [`read_body`]).
fn drain_cap(limit: usize) -> usize {
    limit.saturating_mul(4).max(16 << 20)
}

/// Refuses a body whose arrays and objects nest deeper than `limit` (`limits.max_json_depth`), before anything
/// parses it: a linear scan that skips strings, so a deeply nested body costs one pass, not a recursion.
pub(crate) fn check_depth(body: &[u8], limit: usize) -> Result<(), ApiError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(ApiError::new(
                        ErrorKind::InvalidRequest,
                        format!(
                            "the request body nests arrays and objects more than {limit} levels deep \
                             (limits.max_json_depth)"
                        ),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_limited_before_parsing() {
        let deep = |n: usize| format!("{{\"model\":\"m\",\"x\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert!(check_depth(deep(63).as_bytes(), 64).is_ok(), "63 arrays inside the top-level object");
        let e = check_depth(deep(64).as_bytes(), 64).unwrap_err();
        assert!(e.message.contains("more than 64 levels") && e.message.contains("max_json_depth"), "{}", e.message);
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        let quoted = format!("{{\"model\":\"{}\\\"{}\"}}", "[".repeat(500), "{".repeat(500));
        assert!(check_depth(quoted.as_bytes(), 64).is_ok(), "brackets inside strings do not count");
    }
}
