//! The attempt loop's final failure as the client's answer: an upstream's own error passed through (re-shaped when
//! the upstream is of the other family), or the gateway's error naming the upstream and the attempts made.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, header};

use super::{App, Forward, set_upstream_header};
use crate::api::Family;
use crate::config::Cloud;
use crate::dialect::translate;
use crate::error::{ApiError, ErrorKind};
use crate::record::{Outcome, RequestRecord};
use crate::upstream::Failure;
use crate::upstream::retry::FailureClass;

/// Turns the attempt loop's final failure into the client's response.
pub(super) fn failure_response(app: &App, f: Failure, rec: &mut RequestRecord) -> Result<Forward, ApiError> {
    let id = &app.upstreams.get(f.upstream).id;
    let n = rec.attempts.len();
    let tries = if n == 1 { "1 attempt".to_string() } else { format!("{n} attempts") };
    match (f.class, f.response) {
        // The request itself was wrong, or the upstream rate-limits us and we could not wait: the upstream's own
        // error body is already in the client's API shape, so it passes through unchanged.
        (FailureClass::ClientError(_) | FailureClass::RateLimited, Some(r)) => {
            rec.status = r.status.as_u16();
            rec.outcome =
                if f.class == FailureClass::RateLimited { Outcome::UpstreamError } else { Outcome::ClientError };
            rec.upstream = Some(id.clone());
            rec.error = Some(format!("upstream `{id}` {} after {tries}", f.detail));
            // An upstream of the other family (a translated request) said it in its own shape: re-shaped.
            let (body, content_type) = if app.config.upstream(f.upstream).kind.family() == rec.endpoint.family() {
                (r.body, r.content_type)
            } else {
                let v = translate::error_body(&r.body, r.status.as_u16(), rec.endpoint.family());
                (Bytes::from(v.to_string()), None)
            };
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = r.status;
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, content_type.unwrap_or(HeaderValue::from_static("application/json")));
            h.insert(
                "x-weir-error-source",
                HeaderValue::from_static(if rec.outcome == Outcome::ClientError { "client" } else { "upstream" }),
            );
            if let Some(ra) = f.retry_after {
                h.insert(header::RETRY_AFTER, HeaderValue::from(ra.as_secs_f64().ceil() as u64));
            }
            set_upstream_header(h, id);
            Ok(Forward::Whole(resp))
        }
        (FailureClass::Auth(s), r) => {
            // A cloud's reason is safe to repeat and says what to fix (a signature, a clock skewed past SigV4's
            // window, a revoked key); OpenAI's echoes part of the key, so direct upstreams' reasons are not passed.
            let reason = match (&app.config.upstream(f.upstream).cloud, r) {
                (Cloud::Direct, _) | (_, None) => String::new(),
                (_, Some(r)) => translate::error_body(&r.body, s, Family::Anthropic)
                    .pointer("/error/message")
                    .and_then(|m| m.as_str())
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default(),
            };
            Err(ApiError::new(
                ErrorKind::UpstreamAuth,
                format!(
                    "upstream `{id}` rejected the gateway's credentials (HTTP {s}{reason}); check its api_key_env or \
                     cloud credentials"
                ),
            ))
        }
        (FailureClass::Credentials, _) => {
            Err(ApiError::new(ErrorKind::UpstreamCredentials, format!("upstream `{id}`: {} ({tries})", f.detail)))
        }
        (FailureClass::Timeout, _) => {
            Err(ApiError::new(ErrorKind::UpstreamTimeout, format!("upstream `{id}`: {} ({tries})", f.detail)))
        }
        (FailureClass::RateLimited, None) => Err(ApiError {
            retry_after: f.retry_after,
            ..ApiError::new(ErrorKind::RateLimited, format!("upstream `{id}` is rate limiting ({tries})"))
        }),
        (FailureClass::ClientError(_), None) => {
            Err(ApiError::new(ErrorKind::UpstreamFailed, format!("upstream `{id}` {} ({tries})", f.detail)))
        }
        (FailureClass::Connect | FailureClass::ServerError(_) | FailureClass::Protocol, _) => {
            let verb = if f.class == FailureClass::Connect { "unreachable: " } else { "" };
            Err(ApiError::new(ErrorKind::UpstreamFailed, format!("upstream `{id}` {verb}{} ({tries})", f.detail)))
        }
    }
}
