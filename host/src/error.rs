//! The one place that builds error responses, in the client's API shape.
//!
//! Every error knows who failed ([`Source`]): the client (4xx), an upstream (502/504, or the upstream's own 429), or
//! the gateway's own configuration (502 when an upstream rejects the configured key). The source is also sent as the `x-weir-error-source` header and is the
//! low-cardinality `outcome` in the request log.
//!
//! Shapes:
//! - OpenAI: `{"error":{"message","type","param","code"}}`
//! - Anthropic: `{"type":"error","error":{"type","message"}}`
//!
//! Mid-stream errors (after the first byte, when the status can no longer change) are rendered as one SSE event
//! that the official SDKs raise as an exception, in the shape of the client's dialect (`Dialect::error_event`). An upstream's own error body is passed through unchanged, or re-shaped for a
//! client of the other family by `dialect::translate::error_body`.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;

use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::api::Family;

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Client,
    Upstream,
    Gateway,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Client => "client",
            Source::Upstream => "upstream",
            Source::Gateway => "gateway",
        }
    }
}

/// What went wrong; decides the status and the error type names of both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed JSON, missing `model`, wrong types.
    InvalidRequest,
    /// No such route.
    NotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The model is not served by this gateway (for this API family).
    ModelNotFound,
    /// Body over `limits.max_body`.
    PayloadTooLarge,
    /// The body did not arrive within `limits.body_timeout`.
    RequestTimeout,
    /// The upstream answered 429 and the gateway could not retry.
    RateLimited,
    /// An upstream failed (connection refused, 5xx, broken stream) and retries were exhausted or not allowed.
    UpstreamFailed,
    /// An upstream did not answer in time (first byte or idle gap).
    UpstreamTimeout,
    /// The upstream rejected the gateway's own credentials: an operator problem, not the client's.
    UpstreamAuth,
    /// The gateway could not obtain credentials for the upstream (a token endpoint refused or is unreachable).
    UpstreamCredentials,
    /// A fail-closed plugin failed (trapped, timed out, ran out of memory, returned an error) or is quarantined.
    PluginFailed,
    /// A plugin refused the request; the status is the plugin's.
    Rejected,
    /// The gateway is shutting down: a stream still open at the end of the drain time.
    ShuttingDown,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound | ErrorKind::ModelNotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::UpstreamFailed | ErrorKind::UpstreamAuth => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::PluginFailed => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Rejected => StatusCode::FORBIDDEN,
            ErrorKind::ShuttingDown | ErrorKind::UpstreamCredentials => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn source(self) -> Source {
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::NotFound
            | ErrorKind::MethodNotAllowed
            | ErrorKind::ModelNotFound
            | ErrorKind::PayloadTooLarge
            | ErrorKind::RequestTimeout => Source::Client,
            ErrorKind::RateLimited | ErrorKind::UpstreamFailed | ErrorKind::UpstreamTimeout => Source::Upstream,
            ErrorKind::UpstreamAuth
            | ErrorKind::UpstreamCredentials
            | ErrorKind::PluginFailed
            | ErrorKind::ShuttingDown => Source::Gateway,
            ErrorKind::Rejected => Source::Client,
        }
    }

    /// OpenAI `error.type` and `error.code`.
    fn openai(self) -> (&'static str, &'static str) {
        match self {
            ErrorKind::InvalidRequest => ("invalid_request_error", "invalid_request"),
            ErrorKind::NotFound => ("invalid_request_error", "unknown_url"),
            ErrorKind::MethodNotAllowed => ("invalid_request_error", "method_not_allowed"),
            ErrorKind::ModelNotFound => ("invalid_request_error", "model_not_found"),
            ErrorKind::PayloadTooLarge => ("invalid_request_error", "request_too_large"),
            ErrorKind::RequestTimeout => ("invalid_request_error", "request_timeout"),
            ErrorKind::RateLimited => ("rate_limit_error", "rate_limit_exceeded"),
            ErrorKind::UpstreamFailed => ("upstream_error", "upstream_failed"),
            ErrorKind::UpstreamTimeout => ("upstream_error", "upstream_timeout"),
            ErrorKind::UpstreamAuth => ("server_error", "upstream_auth_failed"),
            ErrorKind::UpstreamCredentials => ("server_error", "upstream_credentials_unavailable"),
            ErrorKind::PluginFailed => ("server_error", "plugin_failed"),
            ErrorKind::Rejected => ("invalid_request_error", "rejected"),
            ErrorKind::ShuttingDown => ("server_error", "shutting_down"),
        }
    }

    /// Anthropic `error.type`.
    fn anthropic(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::MethodNotAllowed => "invalid_request_error",
            ErrorKind::NotFound | ErrorKind::ModelNotFound => "not_found_error",
            ErrorKind::PayloadTooLarge => "request_too_large",
            ErrorKind::RequestTimeout => "invalid_request_error",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::UpstreamFailed
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamAuth
            | ErrorKind::UpstreamCredentials
            | ErrorKind::PluginFailed
            | ErrorKind::ShuttingDown => "api_error",
            ErrorKind::Rejected => "permission_error",
        }
    }
}

/// An error the gateway itself reports to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// Overrides the kind's status (a plugin's rejection carries its own).
    pub status: Option<StatusCode>,
    /// Extra headers on the error response (a plugin's rejection: `retry-after`, `x-ratelimit-*`).
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError { kind, message: message.into(), retry_after: None, status: None, headers: Vec::new() }
    }

    /// A plugin's refusal with its own status. The error types follow the status, as the providers' do.
    pub fn rejected(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status: Some(status), ..ApiError::new(ErrorKind::Rejected, message) }
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or(self.kind.status())
    }

    /// Who is at fault: for rejections, a 5xx status means the gateway.
    pub fn source(&self) -> Source {
        match self.status {
            Some(s) if s.is_server_error() => Source::Gateway,
            _ => self.kind.source(),
        }
    }

    /// OpenAI `error.type`, OpenAI `error.code`, Anthropic `error.type`.
    pub(crate) fn types(&self) -> (&'static str, &'static str, &'static str) {
        let (oa_type, code) = self.kind.openai();
        let an_type = self.kind.anthropic();
        if self.kind != ErrorKind::Rejected {
            return (oa_type, code, an_type);
        }
        match self.status().as_u16() {
            401 => ("authentication_error", code, "authentication_error"),
            403 => ("permission_error", code, "permission_error"),
            404 => ("invalid_request_error", code, "not_found_error"),
            429 => ("rate_limit_error", code, "rate_limit_error"),
            400..=499 => ("invalid_request_error", code, "invalid_request_error"),
            _ => ("server_error", code, "api_error"),
        }
    }

    /// The JSON error body in `family`'s shape.
    pub fn body(&self, family: Family) -> serde_json::Value {
        match family {
            Family::OpenAi => {
                let (ty, code, _) = self.types();
                json!({"error": {"message": self.message, "type": ty, "param": null, "code": code}})
            }
            Family::Anthropic => {
                json!({"type": "error", "error": {"type": self.types().2, "message": self.message}})
            }
        }
    }

    /// A complete HTTP error response in `family`'s shape.
    pub fn to_response(&self, family: Family) -> Response {
        let mut resp = Response::new(Body::from(self.body(family).to_string()));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert("x-weir-error-source", HeaderValue::from_static(self.source().as_str()));
        if let Some(ra) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(ra.as_secs_f64().ceil() as u64));
        }
        for (name, value) in &self.headers {
            h.insert(name.clone(), value.clone());
        }
        resp
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn shapes_per_family() {
        let e = ApiError::new(ErrorKind::ModelNotFound, "no model `x`");
        let o = e.body(Family::OpenAi);
        assert_eq!(o["error"]["code"], "model_not_found");
        assert_eq!(o["error"]["message"], "no model `x`");
        let a = e.body(Family::Anthropic);
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "not_found_error");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(e.kind.source(), Source::Client);
    }
}
