//! Bedrock and Vertex AI spoken to clients: the Anthropic SDK's `AnthropicBedrock` / `AnthropicVertex` clients,
//! Claude Code with `ANTHROPIC_BEDROCK_BASE_URL` or `ANTHROPIC_VERTEX_BASE_URL` (and the skip-auth settings), and
//! anything else that speaks those envelopes can point at Weir, which holds the cloud credentials. The request is
//! unwrapped into the Messages request it carries and goes through the same pipeline as `/v1/messages` — the
//! client's Weir key (`Authorization: Bearer`, as those clients send an API key or access token), plugins, routes,
//! translation, any upstream — and the answer is wrapped back:
//!
//! | route | request | answer |
//! |---|---|---|
//! | `POST /model/{model}/invoke` | Messages body without `model`/`stream`, with `anthropic_version`, `anthropic_beta` | the Messages JSON, usage also in `x-amzn-bedrock-*-token-count` |
//! | `POST /model/{model}/invoke-with-response-stream` | the same | AWS event-stream `chunk` frames (encoded here), an `error` event as an exception frame |
//! | `POST /v1/projects/{p}/locations/{r}/publishers/anthropic/models/{model}:rawPredict` / `:streamRawPredict` | Messages body without `model`, with `anthropic_version` | Anthropic JSON / SSE |
//!
//! Errors are in the envelope's shape: Bedrock's `{"message"}` with `x-amzn-ErrorType`; Anthropic's for Vertex (as
//! Vertex answers for Anthropic models). The client's `anthropic_version` is not forwarded: each upstream gets its
//! own (an Anthropic upstream the `anthropic-version` header, a cloud upstream its configured `anthropic_version`).

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::api::{Endpoint, Family};
use crate::error::{ApiError, ErrorKind};
use crate::pipeline::{self, App};
use crate::provider::{EVENT_STREAM, Framer};

/// `POST /model/{model}/{invoke | invoke-with-response-stream}`.
pub async fn bedrock(
    State(app): State<Arc<App>>,
    Path((model, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let stream = match action.as_str() {
        "invoke" => false,
        "invoke-with-response-stream" => true,
        _ => return bedrock_error(StatusCode::NOT_FOUND, "UnknownOperationException", "Unknown operation"),
    };
    let (headers, body) = match unwrap(&app, headers, body, &model, Some(stream)).await {
        Ok(r) => r,
        Err(e) => return to_bedrock_error(e.to_response(Family::Anthropic)).await,
    };
    let resp = pipeline::proxy(app, Endpoint::Messages, headers, Body::from(body)).await;
    if !resp.status().is_success() {
        return to_bedrock_error(resp).await;
    }
    if !crate::provider::content_type_is(resp.headers(), "text/event-stream") {
        return with_token_headers(resp).await;
    }
    let (mut parts, body) = resp.into_parts();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    let state = (crate::sse::SseParser::new(), Framer::default());
    let framed = body
        .into_data_stream()
        .scan(state, |(parser, framer), chunk| {
            let out: Vec<Result<Bytes, axum::Error>> = match chunk {
                Err(e) => vec![Err(e)],
                Ok(c) => {
                    parser.push(&c);
                    let mut frames = Vec::new();
                    while let Some(ev) = parser.next_event() {
                        if let Some(f) = framer.frame(&ev.fields().data) {
                            frames.push(Ok(f));
                        }
                    }
                    frames
                }
            };
            std::future::ready(Some(futures_util::stream::iter(out)))
        })
        .flatten();
    Response::from_parts(parts, Body::from_stream(framed))
}

/// `POST /v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:{rawPredict | streamRawPredict}`.
pub async fn vertex(
    State(app): State<Arc<App>>,
    Path((_project, _region, call)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let not_found = || {
        ApiError::new(ErrorKind::NotFound, format!("no such Vertex AI method `{call}`")).to_response(Family::Anthropic)
    };
    let Some((model, action)) = call.rsplit_once(':') else { return not_found() };
    let stream = match action {
        "rawPredict" => None,
        "streamRawPredict" => Some(true),
        _ => return not_found(),
    };
    match unwrap(&app, headers, body, model, stream).await {
        Ok((headers, body)) => pipeline::proxy(app, Endpoint::Messages, headers, Body::from(body)).await,
        Err(e) => e.to_response(Family::Anthropic),
    }
}

/// The Messages request a cloud envelope carries: `model` from the path, `stream` from the route (when it says),
/// `anthropic_beta` back into the `anthropic-beta` header, `anthropic_version` dropped.
async fn unwrap(
    app: &App,
    mut headers: HeaderMap,
    body: Body,
    model: &str,
    stream: Option<bool>,
) -> Result<(HeaderMap, Bytes), ApiError> {
    let bytes = pipeline::read_body(app, &headers, body).await?;
    let invalid = |m: &str| ApiError::new(ErrorKind::InvalidRequest, m.to_string());
    let mut obj: Map<String, Value> = match serde_json::from_slice(&bytes) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err(invalid("the request body must be a JSON object")),
        Err(e) => return Err(invalid(&format!("the request body is not valid JSON: {e}"))),
    };
    if model.is_empty() {
        return Err(invalid("the path names no model"));
    }
    obj.remove("anthropic_version");
    if let Some(beta) = obj.remove("anthropic_beta") {
        let list: Vec<&str> = match &beta {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            Value::String(s) => vec![s.as_str()],
            _ => return Err(invalid("`anthropic_beta` must be a list of strings")),
        };
        let value = HeaderValue::from_str(&list.join(","))
            .map_err(|_| invalid("`anthropic_beta` holds a value that cannot be a header"))?;
        headers.insert("anthropic-beta", value);
    }
    obj.insert("model".into(), Value::from(model));
    if let Some(s) = stream {
        obj.insert("stream".into(), Value::from(s));
    }
    headers.remove(header::CONTENT_LENGTH);
    Ok((headers, Bytes::from(Value::Object(obj).to_string())))
}

fn bedrock_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut r = Response::new(Body::from(json!({ "message": message }).to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(kind) {
        h.insert("x-amzn-errortype", v);
    }
    r
}

/// An Anthropic-shaped error answer in Bedrock's shape (the status and the gateway's headers kept).
async fn to_bedrock_error(resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let message = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("the request failed");
    let kind = match parts.status.as_u16() {
        400 | 413 | 422 => "ValidationException",
        401 | 403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 | 504 => "ModelTimeoutException",
        429 => "ThrottlingException",
        503 | 529 => "ServiceUnavailableException",
        _ => "InternalServerException",
    };
    let mut r = bedrock_error(parts.status, kind, message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            r.headers_mut().insert(name.clone(), value.clone());
        }
    }
    r
}

/// A whole answer with Bedrock's usage headers.
async fn with_token_headers(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
        for (name, ptr) in [
            ("x-amzn-bedrock-input-token-count", "/usage/input_tokens"),
            ("x-amzn-bedrock-output-token-count", "/usage/output_tokens"),
        ] {
            if let Some(n) = v.pointer(ptr).and_then(Value::as_u64) {
                parts.headers.insert(name, HeaderValue::from(n));
            }
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}
