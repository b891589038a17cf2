//! Providers: how one kind of upstream is reached. A provider says, for a request its dialect already rendered:
//! the URL (from the config only), the body's envelope, the family's headers, the authentication or signature of the
//! exact bytes sent, how a streamed answer is framed, and what its errors look like. Everything else — the dialects,
//! translation, retries, the usage tap, plugins — is shared: Bedrock and Vertex are the Anthropic Messages dialect in
//! another envelope, Azure is the OpenAI dialect on other paths.
//!
//! | kind | file | URL | auth | stream framing |
//! |---|---|---|---|---|
//! | `openai`, `anthropic`, `openai-compatible` | `direct.rs` | `base_url` + the endpoint's path | `api_key_env` as a bearer token / `x-api-key` | SSE |
//! | `azure-openai` | `azure.rs` | `/openai/deployments/{model}/…?api-version=` or `/openai/v1/…` | `api-key` | SSE |
//! | `bedrock` | `bedrock.rs` | `/model/{model}/invoke[-with-response-stream]` | SigV4 (`sigv4.rs`) or a bearer API key | AWS event-stream (`eventstream.rs`), re-framed as SSE |
//! | `vertex` | `vertex.rs` | `/v1/projects/{p}/locations/{r}/publishers/anthropic/models/{model}:[stream]rawPredict` | OAuth token (`google.rs`) | SSE |
//!
//! Credentials are read when the upstreams are built (a missing variable or unreadable file stops the start, naming
//! it), held in values marked sensitive, and never logged. A provider whose credentials cannot be obtained for a
//! request (a token endpoint that refuses) fails that attempt with [`Refused::Credentials`], which the client gets
//! as a 503 naming the problem, never the secret.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod azure;
mod bedrock;
mod direct;
pub mod eventstream;
pub mod google;
pub mod sigv4;
mod vertex;

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use http::{HeaderMap, StatusCode};
use serde_json::value::RawValue;

use crate::api::Endpoint;
use crate::config::{Cloud, Upstream};
use crate::error::ApiError;

pub(crate) use bedrock::to_sse as bedrock_event_to_sse;
pub use bedrock::{EVENT_STREAM, Framer};

/// A streamed answer, as SSE bytes in the provider's dialect (whatever the wire framing was).
pub type ByteStream = BoxStream<'static, Result<Bytes, StreamError>>;

/// Why a stream ended early.
#[derive(Debug)]
pub enum StreamError {
    /// The connection broke.
    Transport(reqwest::Error),
    /// The provider said so in its framing (an exception frame), or the framing is corrupt.
    Provider(ApiError),
}

/// What the provider could not do for an attempt.
#[derive(Debug)]
pub enum Refused {
    /// The provider has no such endpoint, or the model cannot be put in its URL.
    Unservable(String),
    /// Credentials could not be obtained (a token endpoint refused or is unreachable).
    Credentials(String),
}

/// The request as it will be sent; [`Provider::authorize`] may add headers (it signs what is here).
pub struct Outgoing {
    pub url: reqwest::Url,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One upstream kind's wire: see the module doc.
pub trait Provider: Send + Sync {
    /// Whether the provider has `endpoint`.
    fn serves(&self, endpoint: Endpoint) -> bool;
    /// Where a request for `endpoint` and `model` (the name sent upstream) goes.
    fn url(&self, endpoint: Endpoint, model: &str, stream: bool) -> Result<reqwest::Url, Refused>;
    /// The dialect's body in the provider's envelope (unchanged by default).
    fn body(&self, _endpoint: Endpoint, body: Bytes, _client: &HeaderMap) -> Bytes {
        body
    }
    /// The family's own headers derived from the client's (Anthropic's `anthropic-version` and `-beta`), and an
    /// `accept` other than SSE for a stream in another framing.
    fn family_headers(&self, _client: &HeaderMap, _stream: bool, _h: &mut HeaderMap) {}
    /// Authenticates the request, last: a signature covers exactly what is in `out`.
    fn authorize<'a>(&'a self, out: &'a mut Outgoing) -> BoxFuture<'a, Result<(), Refused>>;
    /// Whether an answer with these headers is a stream in this provider's framing (else it is read whole).
    fn is_stream(&self, headers: &HeaderMap) -> bool {
        content_type_is(headers, "text/event-stream")
    }
    /// A streamed answer as SSE bytes.
    fn stream(&self, resp: reqwest::Response) -> ByteStream {
        resp.bytes_stream().map(|r| r.map_err(StreamError::Transport)).boxed()
    }
    /// An error answer's body in the family's error shape (unchanged when it already is).
    fn error_body(&self, _status: StatusCode, _headers: &HeaderMap, body: Bytes) -> Bytes {
        body
    }
    /// The upstream refused the gateway's credentials (401/403): forget cached tokens. True when one was dropped, so
    /// the attempt is worth making once more with a new one.
    fn credentials_rejected(&self) -> bool {
        false
    }
    /// A one-line description for the start-up log: where it goes and which credentials, never their values.
    fn describe(&self) -> String;
}

/// Builds the provider of an upstream, reading its credentials with `env` (a missing one is an error naming it).
pub fn build(
    u: &Upstream,
    client: &reqwest::Client,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Box<dyn Provider>> {
    Ok(match &u.cloud {
        Cloud::Direct => Box::new(direct::Direct::new(u, env)?),
        Cloud::Azure { api_version } => Box::new(azure::Azure::new(u, api_version.clone(), env)?),
        Cloud::Bedrock { .. } => Box::new(bedrock::Bedrock::new(u, env)?),
        Cloud::Vertex { .. } => Box::new(vertex::Vertex::new(u, client, env)?),
    })
}

/// The value of an environment variable named for a credential, or an error naming it.
fn required(env: &dyn Fn(&str) -> Option<String>, id: &str, key: &str, name: &str) -> anyhow::Result<String> {
    env(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow::anyhow!("upstream `{id}`: environment variable `{name}` ({key}) is not set"))
}

/// A sensitive header value from a secret, or an error naming where it came from.
fn secret_header(value: &str, id: &str, name: &str) -> anyhow::Result<http::HeaderValue> {
    let mut v = http::HeaderValue::from_str(value)
        .map_err(|_| anyhow::anyhow!("upstream `{id}`: the value in `{name}` is not a valid header value"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// Whether the `content-type` starts with `prefix`.
pub(crate) fn content_type_is(headers: &HeaderMap, prefix: &str) -> bool {
    headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with(prefix))
}

/// A JSON object's top-level fields rewritten: `drop` removed, `add` appended where absent. Bodies that are not an
/// object pass unchanged (the upstream says what is wrong with them).
fn envelope(body: &Bytes, drop: &[&str], add: &[(&str, &str)]) -> Bytes {
    let Ok(fields) = serde_json::from_slice::<BTreeMap<Cow<'_, str>, &RawValue>>(body) else { return body.clone() };
    let mut out = crate::dialect::body::ObjectWriter::with_capacity(body.len() + 64);
    for (k, v) in &fields {
        if !drop.contains(&k.as_ref()) {
            out.put(k, v.get());
        }
    }
    for (k, v) in add {
        if !fields.contains_key(*k) {
            out.put(k, v);
        }
    }
    out.finish()
}

/// The Anthropic headers every Anthropic-dialect upstream gets: the client's `anthropic-version` or a default, and
/// its `anthropic-beta`.
fn anthropic_headers(client: &HeaderMap, h: &mut HeaderMap, default_version: &'static str) {
    let version = client.get("anthropic-version").cloned().unwrap_or(http::HeaderValue::from_static(default_version));
    h.insert("anthropic-version", version);
    if let Some(beta) = client.get("anthropic-beta") {
        h.insert("anthropic-beta", beta.clone());
    }
}

/// The Anthropic body fields a cloud envelope carries instead of headers: `anthropic_version` (the upstream's) and
/// `anthropic_beta` (the client's `anthropic-beta`, as a list).
fn anthropic_envelope(body: &Bytes, client: &HeaderMap, version_json: &str, drop: &[&str]) -> Bytes {
    let beta = client.get("anthropic-beta").and_then(|v| v.to_str().ok()).map(|b| {
        let list: Vec<&str> = b.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        serde_json::to_string(&list).unwrap_or_default()
    });
    let mut add = vec![("anthropic_version", version_json)];
    if let Some(b) = beta.as_deref() {
        add.push(("anthropic_beta", b));
    }
    envelope(body, drop, &add)
}

/// An error body in Anthropic's shape, from a cloud's own (`{"message": …}`, Google's `{"error": {…}}`), with the
/// cloud's error type (when it gave one) before the message.
fn anthropic_error(status: StatusCode, kind: Option<&str>, body: &[u8]) -> Bytes {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    if v.get("type").and_then(|t| t.as_str()) == Some("error") {
        return Bytes::copy_from_slice(body);
    }
    let message = v
        .get("message")
        .or_else(|| v.pointer("/error/message"))
        .and_then(|m| m.as_str())
        .map_or_else(|| format!("the upstream answered HTTP {status}"), str::to_string);
    let message = match kind {
        Some(k) if !k.is_empty() => format!("{k}: {message}"),
        _ => message,
    };
    let shaped = crate::dialect::translate::error_body(
        serde_json::json!({"error": {"message": message}}).to_string().as_bytes(),
        status.as_u16(),
        crate::api::Family::Anthropic,
    );
    Bytes::from(shaped.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn envelope_moves_fields() {
        let b = Bytes::from_static(br#"{"model":"m","stream":true,"max_tokens":5,"messages":[]}"#);
        let mut client = HeaderMap::new();
        client.insert("anthropic-beta", "a-1, b-2".parse().unwrap());
        let out = anthropic_envelope(&b, &client, "\"bedrock-2023-05-31\"", &["model", "stream"]);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"max_tokens": 5, "messages": [], "anthropic_version": "bedrock-2023-05-31",
                                "anthropic_beta": ["a-1", "b-2"]})
        );
        assert_eq!(envelope(&Bytes::from_static(b"[1]"), &["model"], &[]), Bytes::from_static(b"[1]"));
    }

    #[test]
    fn cloud_errors_take_anthropic_shape() {
        let e = anthropic_error(StatusCode::BAD_REQUEST, Some("ValidationException"), br#"{"message":"bad field"}"#);
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], "ValidationException: bad field");
        let g = br#"{"error":{"code":404,"message":"Publisher model not found.","status":"NOT_FOUND"}}"#;
        let v: serde_json::Value = serde_json::from_slice(&anthropic_error(StatusCode::NOT_FOUND, None, g)).unwrap();
        assert_eq!(v["error"]["type"], "not_found_error");
        assert_eq!(v["error"]["message"], "Publisher model not found.");
    }
}
