//! The only retry code: failure classification, backoff with full jitter, `Retry-After`, and the attempt loop that
//! retries and fails over across a request's candidates.
//!
//! The loop runs strictly before anything is sent to the client: it returns either an [`Answer`] whose headers
//! have not yet been forwarded, or the final failure. Once the pipeline starts writing to the client there is no
//! path back into this loop, which is how "never retry after the first byte" holds by construction.
//!
//! Order of attempts: the candidates in plan order; a failed candidate is retried only after the others had their
//! turn, and not before its backoff (or its `Retry-After`, whichever is longer) has passed. A `Retry-After` longer
//! than `retry.max_retry_after` takes that candidate out of the rotation.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, StatusCode, header};

use super::{Answer, AttemptRequest, Failure, Planned, Upstreams};
use crate::config::{RetryConfig, RetryOn};

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Could not connect, or the connection broke before a complete answer.
    Connect,
    /// No headers within `first_byte`, or a body stalled past `idle`.
    Timeout,
    /// HTTP 429.
    RateLimited,
    /// HTTP 5xx (including Anthropic's 529 "overloaded").
    ServerError(u16),
    /// HTTP 401 or 403: the upstream rejected the gateway's key.
    Auth(u16),
    /// Any other 4xx: the request itself is wrong; retrying cannot help.
    ClientError(u16),
    /// The upstream answered something unusable (e.g. an oversized body), or cannot be asked this request.
    Protocol,
    /// The gateway could not obtain credentials for the upstream (a token endpoint refused or is unreachable):
    /// retried and failed over like a connection failure (`retry_on = ["connect"]`).
    Credentials,
}

impl FailureClass {
    /// The config name of this class, if a policy can retry it.
    pub fn retry_on(self) -> Option<RetryOn> {
        match self {
            FailureClass::Connect | FailureClass::Credentials => Some(RetryOn::Connect),
            FailureClass::Timeout => Some(RetryOn::Timeout),
            FailureClass::RateLimited => Some(RetryOn::RateLimited),
            FailureClass::ServerError(_) => Some(RetryOn::ServerError),
            FailureClass::Auth(_) | FailureClass::ClientError(_) | FailureClass::Protocol => None,
        }
    }

    /// Whether this failure says something about the upstream's health (and so counts toward cooldown).
    pub fn is_upstream_fault(self) -> bool {
        !matches!(self, FailureClass::ClientError(_))
    }

    /// Low-cardinality label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Connect => "connect",
            FailureClass::Timeout => "timeout",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::ServerError(_) => "server_error",
            FailureClass::Auth(_) => "auth",
            FailureClass::ClientError(_) => "client_error",
            FailureClass::Protocol => "protocol",
            FailureClass::Credentials => "credentials",
        }
    }
}

/// Classifies a non-success HTTP status.
pub fn classify_status(status: StatusCode) -> FailureClass {
    match status.as_u16() {
        429 => FailureClass::RateLimited,
        401 | 403 => FailureClass::Auth(status.as_u16()),
        s @ 400..=499 => FailureClass::ClientError(s),
        s @ 500..=599 => FailureClass::ServerError(s),
        // 1xx/3xx (redirects are not followed) and anything unexpected.
        _ => FailureClass::Protocol,
    }
}

/// Classifies a transport error from the HTTP client.
pub fn classify_error(e: &reqwest::Error) -> FailureClass {
    if e.is_timeout() { FailureClass::Timeout } else { FailureClass::Connect }
}

/// The innermost cause of a transport error ("Connection refused (os error 111)"), without the URL.
pub fn describe_error(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The longest `Retry-After` the gateway represents (a year); longer values (`1e20`) saturate to it instead of
/// overflowing a `Duration` (which panics).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(365 * 24 * 3600);

/// `Retry-After` as seconds or an HTTP date, saturated at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_nan() || secs < 0.0 {
            return None;
        }
        return Some(Duration::try_from_secs_f64(secs).unwrap_or(MAX_RETRY_AFTER).min(MAX_RETRY_AFTER));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// Full-jitter backoff before the `n`-th retry (n ≥ 1) of one upstream: uniform in `[0, min(cap, base·2^(n-1)))`.
pub fn backoff(policy: &RetryConfig, n: u32) -> Duration {
    let exp = policy.backoff_base.saturating_mul(1u32 << (n.saturating_sub(1)).min(20));
    exp.min(policy.backoff_cap).mul_f64(fastrand::f64())
}

/// One attempt as it is logged.
#[derive(Debug, Clone)]
pub struct AttemptLog {
    pub upstream: String,
    /// `ok` or a [`FailureClass`] label.
    pub outcome: &'static str,
    pub started: Instant,
    pub elapsed: Duration,
    /// The HTTP status the upstream answered with, if it answered.
    pub status: Option<u16>,
    /// The attempt's span id (sent upstream in `traceparent` when tracing is on).
    pub span_id: u64,
}

/// The result of the attempt loop.
pub struct Outcome {
    pub result: Result<Answer, Failure>,
    pub attempts: Vec<AttemptLog>,
}

/// Tries the plan's candidates until one answers, a failure is not retryable, or attempts run out.
#[allow(
    clippy::indexing_slicing,
    reason = "every index is a position in `plan`, found by iterating 0..plan.len(); the per-candidate vectors have plan.len() entries"
)]
pub async fn run(ups: &Upstreams, policy: &RetryConfig, plan: &[Planned], req: &AttemptRequest<'_>) -> Outcome {
    let mut attempts = Vec::new();
    let mut failures = vec![0u32; plan.len()];
    let mut out_of_rotation = vec![false; plan.len()];
    let mut ready_at: Vec<Option<Instant>> = vec![None; plan.len()];
    let mut next = 0;
    let mut last: Option<Failure> = None;

    for _ in 0..policy.attempts {
        let Some(i) = (0..plan.len()).map(|k| (next + k) % plan.len()).find(|&i| !out_of_rotation[i]) else {
            break;
        };
        next = i + 1;
        if let Some(at) = ready_at[i] {
            tokio::time::sleep_until(at.into()).await;
        }
        let started = Instant::now();
        let planned = &plan[i];
        let cand = &planned.candidate;
        let id = &ups.get(cand.upstream).id;
        let span_id = crate::telemetry::trace::new_span_id();
        match ups.attempt(planned, req, span_id).await {
            Ok(answer) => {
                ups.record(cand.upstream, true);
                attempts.push(AttemptLog {
                    upstream: id.clone(),
                    outcome: "ok",
                    started,
                    elapsed: started.elapsed(),
                    status: Some(answer.status.as_u16()),
                    span_id,
                });
                return Outcome { result: Ok(answer), attempts };
            }
            Err(f) => {
                attempts.push(AttemptLog {
                    upstream: id.clone(),
                    outcome: f.class.as_str(),
                    started,
                    elapsed: started.elapsed(),
                    status: f.response.as_ref().map(|r| r.status.as_u16()),
                    span_id,
                });
                if f.class.is_upstream_fault() && ups.record(cand.upstream, false) {
                    tracing::warn!(upstream = %id, reason = f.class.as_str(), "upstream put in cooldown after consecutive failures");
                }
                let retryable = f.class.retry_on().is_some_and(|c| policy.retry_on.contains(&c));
                if !retryable {
                    return Outcome { result: Err(f), attempts };
                }
                tracing::debug!(upstream = %id, reason = f.class.as_str(), detail = %f.detail, "attempt failed; will retry");
                failures[i] += 1;
                let wait = backoff(policy, failures[i]);
                match f.retry_after {
                    Some(ra) if ra > policy.max_retry_after => out_of_rotation[i] = true,
                    Some(ra) => ready_at[i] = Some(Instant::now() + ra.max(wait)),
                    None => ready_at[i] = Some(Instant::now() + wait),
                }
                last = Some(f);
            }
        }
    }
    match last {
        Some(f) => Outcome { result: Err(f), attempts },
        // The first iteration always attempts (retry.attempts >= 1 is validated, the caller never passes an empty
        // plan, and nothing is out of rotation before a failure), and every attempt that does not return sets
        // `last`.
        None => unreachable!("an empty plan or zero attempts"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn classifies_statuses() {
        assert_eq!(classify_status(StatusCode::TOO_MANY_REQUESTS), FailureClass::RateLimited);
        assert_eq!(classify_status(StatusCode::SERVICE_UNAVAILABLE), FailureClass::ServerError(503));
        assert_eq!(classify_status(StatusCode::from_u16(529).unwrap()), FailureClass::ServerError(529));
        assert_eq!(classify_status(StatusCode::UNAUTHORIZED), FailureClass::Auth(401));
        assert_eq!(classify_status(StatusCode::BAD_REQUEST), FailureClass::ClientError(400));
        assert_eq!(
            classify_status(StatusCode::FOUND),
            FailureClass::Protocol,
            "redirects are failures, never followed"
        );
        assert_eq!(FailureClass::ClientError(400).retry_on(), None);
        assert!(!FailureClass::ClientError(400).is_upstream_fault());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_retry_after(&h), None);
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("0.5"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(500)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        h.insert(header::RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let d = parse_retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(28) && d <= Duration::from_secs(30), "{d:?}");
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h), None);
        // Values no Duration can hold saturate instead of panicking.
        for huge in ["1e20", "1e300", "inf", "18446744073709551616"] {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static(huge));
            assert_eq!(parse_retry_after(&h), Some(MAX_RETRY_AFTER), "{huge}");
        }
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("-1"));
        assert_eq!(parse_retry_after(&h), None);
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p = RetryConfig {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(250),
            ..RetryConfig::default()
        };
        for n in 1..8 {
            for _ in 0..100 {
                let d = backoff(&p, n);
                let bound = Duration::from_millis(100 * (1 << (n - 1))).min(p.backoff_cap);
                assert!(d < bound, "n={n} {d:?} >= {bound:?}");
            }
        }
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| backoff(&p, 3)).collect();
        assert!(distinct.len() > 40, "jittered");
    }
}
