//! A plugin's `reply` (e.g. a cache hit): an answer in the client's API, whole or as events, delivered in the form
//! the client asked for — converted by [`dialect::replay`] when the plugin has the other form — through the usage tap
//! (the log and `on-complete` see its usage) and kept for plugins granted `answer` like any answer.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

use crate::api::Endpoint;
use crate::dialect::{self, replay};
use crate::error::{ApiError, ErrorKind};
use crate::plugin::types::{AnswerBody, Reply};
use crate::record::{Outcome, RequestRecord};
use crate::sse::SseEvent;
use crate::usage::UsageTap;

fn invalid(endpoint: Endpoint, why: &str) -> ApiError {
    ApiError::new(
        ErrorKind::PluginFailed,
        format!(
            "a plugin replied with {why}, which is not a {} answer (policy: the reply is refused)",
            endpoint.path()
        ),
    )
}

/// The client's response for a plugin's reply. `stream`: the client asked for a stream; `include_usage`: chat's
/// usage chunk was asked for.
pub(super) fn respond(
    endpoint: Endpoint,
    stream: bool,
    include_usage: bool,
    r: Reply,
    rec: &mut RequestRecord,
) -> Result<Response, ApiError> {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    let mut tap = UsageTap::new(endpoint, false);
    // An error answer goes as it is (its body is the API's error shape).
    let stream = stream && status.is_success();
    // From a cache: the usage says the input was cached, in the API's terms (the tap and the log see it so too).
    let body = if r.cached && status.is_success() { cached_usage(r.body) } else { r.body };
    let body: Bytes = match (body, stream) {
        (AnswerBody::Whole(b), false) => {
            if serde_json::from_slice::<serde::de::IgnoredAny>(&b).is_err() {
                return Err(invalid(endpoint, "a body that is not JSON"));
            }
            let b = Bytes::from(b);
            tap.on_body(&b);
            b
        }
        (AnswerBody::Whole(b), true) => {
            let v: serde_json::Value =
                serde_json::from_slice(&b).map_err(|_| invalid(endpoint, "a body that is not JSON"))?;
            let events = replay::to_events(endpoint, &v, include_usage)
                .ok_or_else(|| invalid(endpoint, "a whole body it cannot stream"))?;
            framed(&events, &mut tap)
        }
        (AnswerBody::Events(events), true) => {
            let events: Vec<replay::Event> = events.into_iter().map(|e| (e.event, e.data)).collect();
            framed(&events, &mut tap)
        }
        (AnswerBody::Events(events), false) => {
            let events: Vec<replay::Event> = events.into_iter().map(|e| (e.event, e.data)).collect();
            let whole = replay::to_whole(endpoint, &events)
                .ok_or_else(|| invalid(endpoint, "events that are not a whole stream"))?;
            let b = Bytes::from(whole.to_string());
            tap.on_body(&b);
            b
        }
    };
    rec.status = status.as_u16();
    rec.outcome = if r.cached { Outcome::Cached } else { Outcome::Ok };
    rec.stream = stream;
    rec.tap = Some(tap);
    if let Some(chain) = rec.chain.as_mut() {
        chain.capture_start(status.as_u16(), stream);
        chain.capture(&body);
    }
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if stream {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    } else {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok(resp)
}

/// The answer of an identical request in flight (`request.coalesce`), for this client in its form, as a cached reply.
pub(super) fn shared(
    endpoint: Endpoint,
    stream: bool,
    include_usage: bool,
    s: &crate::flight::Shared,
    rec: &mut RequestRecord,
) -> Result<Response, ApiError> {
    let body = if s.stream {
        let events = crate::sse::SseParser::events_of([&s.bytes[..]]);
        AnswerBody::Events(
            events.into_iter().map(|(event, data)| crate::plugin::types::SseEvent { event, data }).collect(),
        )
    } else {
        AnswerBody::Whole(s.bytes.to_vec())
    };
    let reply = Reply { status: s.status, body, headers: Vec::new(), cached: true };
    let mut resp = respond(endpoint, stream, include_usage, reply, rec)?;
    resp.headers_mut().insert("x-weir-coalesced", HeaderValue::from_static("true"));
    crate::telemetry::metrics::METRICS.coalesced.inc();
    Ok(resp)
}

/// The answer with its usage marked as cached input ([`replay::mark_cached`]); data that is not JSON is left as it
/// is (the conversions below refuse what they cannot read).
fn cached_usage(body: AnswerBody) -> AnswerBody {
    let mark = |data: &[u8]| -> Option<String> {
        let mut v: serde_json::Value = serde_json::from_slice(data).ok()?;
        replay::mark_cached(&mut v);
        Some(v.to_string())
    };
    match body {
        AnswerBody::Whole(b) => match mark(&b) {
            Some(m) => AnswerBody::Whole(m.into_bytes()),
            None => AnswerBody::Whole(b),
        },
        AnswerBody::Events(events) => AnswerBody::Events(
            events
                .into_iter()
                .map(|mut e| {
                    if e.data.contains("\"usage\"")
                        && let Some(m) = mark(e.data.as_bytes())
                    {
                        e.data = m;
                    }
                    e
                })
                .collect(),
        ),
    }
}

/// Frames events for the wire, through the usage tap.
fn framed(events: &[replay::Event], tap: &mut UsageTap) -> Bytes {
    let mut out = Vec::new();
    let now = Instant::now();
    for (event, data) in events {
        let raw = dialect::frame(event.as_deref(), data);
        tap.on_event(&SseEvent { raw: raw.clone() }, now);
        out.extend_from_slice(&raw);
    }
    Bytes::from(out)
}
