//! The answer phase: a whole answer through `on-chunk` once ([`whole_body_plugins`]), or a streamed one event by
//! event through the usage tap, the translator and the plugins ([`AnswerStream`]).
//!
//! Streaming: [`AnswerStream`] pulls from the upstream only when the client side asks for more (hyper polls it
//! when the socket can take data), so a slow client slows the upstream read instead of growing a buffer; at most
//! one upstream chunk plus one incomplete event are held. When the client disconnects, hyper drops the body: the
//! upstream response is dropped with it (closing that connection, which cancels the upstream request) and dropping
//! the record ends the request as cancelled, with the usage seen so far.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderValue, header};

use super::{App, Forward, set_upstream_header};
use crate::api::Endpoint;
use crate::dialect::{self, Located, TextStream, translate};
use crate::error::{ApiError, ErrorKind};
use crate::plugin::types;
use crate::plugin::{Chain, ChunkVerdict};
use crate::provider::StreamError;
use crate::record::{Outcome, RequestRecord};
use crate::sse::{SseEvent, SseParser};
use crate::upstream::retry;
use crate::upstream::{Answer, AnswerBody};
use crate::usage::{UsageTap, Verdict};

/// The answer of the attempt that succeeded, noted in the record and turned into the client's response: a whole
/// answer translated (when the upstream is of the other family), tapped and passed through `on-chunk`; a streamed
/// one with its headers ready and its body left to [`AnswerStream`].
pub(super) async fn forward(
    app: &Arc<App>,
    endpoint: Endpoint,
    mut answer: Answer,
    mut tap: UsageTap,
    back: translate::Back,
    rec: &mut RequestRecord,
) -> Result<Forward, ApiError> {
    rec.upstream = Some(app.upstreams.get(answer.upstream).id.clone());
    rec.provider = Some(app.config.upstream(answer.upstream).kind);
    rec.upstream_model = answer.model.take();
    rec.upstream_request_id = answer
        .headers
        .get("x-request-id")
        .or_else(|| answer.headers.get("request-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    rec.status = answer.status.as_u16();
    rec.outcome = Outcome::Ok;

    let content_type = match (&answer.body, answer.headers.get(header::CONTENT_TYPE)) {
        // A stream reaches the client as SSE, whatever its framing upstream (Bedrock's event-stream).
        (AnswerBody::Stream(_), Some(ct)) if ct.as_bytes().starts_with(b"text/event-stream") => ct.clone(),
        (AnswerBody::Stream(_), _) => HeaderValue::from_static("text/event-stream; charset=utf-8"),
        (AnswerBody::Full(_), ct) => ct.cloned().unwrap_or(HeaderValue::from_static("application/json")),
    };
    // An answer of the other family is translated first: the tap and the plugins see the client's format.
    let (mut resp, upstream) = match answer.body {
        AnswerBody::Full(b) => {
            let b = if answer.endpoint == endpoint {
                b
            } else {
                match serde_json::from_slice(&b)
                    .ok()
                    .and_then(|v| translate::whole(answer.endpoint, endpoint, &v, &back))
                {
                    Some(v) => Bytes::from(v.to_string()),
                    None => b,
                }
            };
            tap.on_body(&b);
            if crate::telemetry::capture_content() {
                rec.output_capture = serde_json::from_slice(&b)
                    .ok()
                    .and_then(|v| dialect::answer_text(&dialect::of(endpoint).whole(&v)));
            }
            let b = match rec.chain.as_mut() {
                Some(chain) if chain.reads_answer() => whole_body_plugins(chain, endpoint, b).await?,
                _ => b,
            };
            if let Some(chain) = rec.chain.as_mut() {
                chain.capture_start(answer.status.as_u16(), false);
                chain.capture(&b);
            }
            (Response::new(Body::from(b)), None)
        }
        AnswerBody::Stream(upstream) => (Response::new(Body::empty()), Some(upstream)),
    };
    *resp.status_mut() = answer.status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    set_upstream_header(h, &app.upstreams.get(answer.upstream).id);
    Ok(match upstream {
        None => {
            rec.tap = Some(tap);
            Forward::Whole(resp)
        }
        Some(upstream) => {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            if let Some(chain) = rec.chain.as_mut() {
                chain.capture_start(answer.status.as_u16(), true);
            }
            let translator = translate::StreamTranslator::new(answer.endpoint, endpoint, back);
            Forward::Stream { resp, upstream, tap, translator }
        }
    })
}

/// Runs `on-chunk` once over a whole non-streamed answer, with every text it holds.
pub(super) async fn whole_body_plugins(chain: &mut Chain, endpoint: Endpoint, body: Bytes) -> Result<Bytes, ApiError> {
    let Ok(data) = std::str::from_utf8(&body) else { return Ok(body) };
    let d = dialect::of(endpoint);
    let mut parsed: Option<serde_json::Value> = serde_json::from_str(data).ok();
    let located = parsed.as_ref().map(|v| d.whole(v)).unwrap_or_default();
    let chunk = types::Chunk {
        index: 0,
        event: None,
        data: data.to_string(),
        texts: located.iter().map(|l| types::TextPiece { stream: l.stream, text: l.text.clone() }).collect(),
        whole_body: true,
    };
    match chain.on_chunk(chunk, 0).await? {
        ChunkVerdict::Forward { texts: None, data: None } => Ok(body),
        ChunkVerdict::Forward { texts: None, data: Some(d) } => Ok(Bytes::from(d)),
        ChunkVerdict::Forward { texts: Some(texts), data } => {
            if let Some(new) = data {
                parsed = serde_json::from_str(&new).ok();
            }
            let Some(mut v) = parsed else { return Ok(body) };
            for (l, t) in located.iter().zip(&texts) {
                dialect::set(&mut v, &l.pointer, t);
            }
            d.after_whole_replace(&mut v);
            Ok(Bytes::from(v.to_string()))
        }
        ChunkVerdict::Drop => {
            Err(ApiError::rejected(http::StatusCode::FORBIDDEN, "the answer was withheld by a plugin"))
        }
        ChunkVerdict::Abort(reason) => Err(ApiError::rejected(http::StatusCode::FORBIDDEN, reason)),
    }
}

/// The streams of text of one answer (a handful: a linear search is the fastest map).
#[derive(Default)]
struct Streams(Vec<(TextStream, StreamState)>);

impl Streams {
    fn get(&self, s: &TextStream) -> Option<&StreamState> {
        self.0.iter().find(|(k, _)| k == s).map(|(_, v)| v)
    }
    #[allow(clippy::indexing_slicing, reason = "`i` is the position of an element found or just pushed")]
    fn entry(&mut self, s: TextStream) -> &mut StreamState {
        let i = match self.0.iter().position(|(k, _)| *k == s) {
            Some(i) => i,
            None => {
                self.0.push((s, StreamState::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }
}

/// What the answer stream knows of one stream of text.
#[derive(Default)]
struct StreamState {
    /// Text of this stream may still come (it has not ended).
    open: bool,
    /// The stream's last text event (refcounted bytes, parsed only if a flush needs it) and where its text is.
    template: Option<(SseEvent, String)>,
    /// The text the client was sent, after plugins (kept only where the surface repeats text in summary events).
    forwarded: String,
    /// Whether plugins changed any of it (then summary events are rewritten).
    changed: bool,
}

/// Streams an upstream SSE answer to the client event by event, through the usage tap and the plugins' `on-chunk`,
/// with the idle timeout. Written as an async state machine (driven by `futures_util::stream::unfold`) so that
/// plugin hooks can be awaited between events.
pub(super) struct AnswerStream {
    /// The client's dialect (chosen once: every event is read and every text sent in it).
    dialect: &'static dyn dialect::Dialect,
    upstream: crate::provider::ByteStream,
    parser: SseParser,
    idle: Duration,
    /// The stream's own working state while it runs: the usage tap and the request's plugins. Both go back into
    /// the record when the stream ends, or when it is dropped (then the record ends the request as cancelled).
    tap: Option<UsageTap>,
    chain: Option<Chain>,
    /// The request's record, taken when the stream ends.
    rec: Option<RequestRecord>,
    /// Bytes ready for the client.
    ready: VecDeque<Bytes>,
    /// Plugin bookkeeping: events seen, and each stream of text the answer carried.
    index: u32,
    streams: Streams,
    done: bool,
    /// Turns the upstream's events into the client's, when the upstream is of the other API family.
    pub(super) translator: Option<translate::StreamTranslator>,
}

impl AnswerStream {
    pub(super) fn new(
        endpoint: Endpoint,
        upstream: crate::provider::ByteStream,
        tap: UsageTap,
        idle: Duration,
        rec: RequestRecord,
    ) -> Self {
        crate::telemetry::metrics::METRICS.open_streams.inc();
        let mut rec = rec;
        let chain = rec.chain.take();
        AnswerStream {
            tap: Some(tap),
            chain,
            dialect: dialect::of(endpoint),
            upstream,
            parser: SseParser::new(),
            idle,
            rec: Some(rec),
            ready: VecDeque::new(),
            index: 0,
            streams: Streams::default(),
            done: false,
            translator: None,
        }
    }

    pub(super) fn into_stream(self) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
        futures_util::stream::unfold(self, |mut s| async move { s.next().await.map(|b| (Ok(b), s)) })
    }

    /// The next bytes for the client, or `None` at the end.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                if let Some(chain) = self.chain.as_mut() {
                    chain.capture(&b);
                }
                return Some(b);
            }
            if self.done {
                return None;
            }
            if let Some(ev) = self.parser.next_event() {
                self.on_upstream_event(ev).await;
                // The answer's last event: end here, so a client that closes right after it still counts as served.
                if !self.done && self.tap.as_ref().is_some_and(|t| t.finished) {
                    self.finish();
                }
                continue;
            }
            let next = tokio::select! {
                n = tokio::time::timeout(self.idle, self.upstream.next()) => n,
                () = crate::server::drain_over() => {
                    self.fail(ApiError::new(
                        ErrorKind::ShuttingDown,
                        "the gateway is shutting down and its drain time is over; retry the request",
                    ));
                    continue;
                }
            };
            match next {
                Ok(Some(Ok(chunk))) => self.parser.push(&chunk),
                Ok(Some(Err(StreamError::Transport(e)))) => self.fail(ApiError::new(
                    ErrorKind::UpstreamFailed,
                    format!("the upstream connection broke mid-stream: {}", retry::describe_error(&e)),
                )),
                Ok(Some(Err(StreamError::Provider(e)))) => self.fail(e),
                Ok(None) => {
                    // A last event without its final blank line is complete; one cut inside a line is dropped
                    // (never forwarded), so the error event below starts on an event boundary.
                    if !self.tap.as_ref().is_some_and(|t| t.finished)
                        && let Some(last) = self.parser.finish()
                    {
                        self.on_upstream_event(last).await;
                        if self.done {
                            continue;
                        }
                    }
                    if self.tap.as_ref().is_some_and(|t| t.finished) {
                        self.finish();
                    } else {
                        self.fail(ApiError::new(
                            ErrorKind::UpstreamFailed,
                            "the upstream closed the stream before it was complete",
                        ));
                    }
                }
                Err(_) => self.fail(ApiError::new(
                    ErrorKind::UpstreamTimeout,
                    format!("the upstream sent nothing for {:?} (timeouts.idle)", self.idle),
                )),
            }
        }
    }

    /// One event from the upstream: as it is, or translated into the client's events.
    async fn on_upstream_event(&mut self, ev: SseEvent) {
        let Some(t) = self.translator.as_mut() else { return self.on_event(ev).await };
        let mut out = Vec::new();
        let f = ev.fields();
        t.event(f.event, &f.data, &mut out);
        for raw in out {
            if self.done {
                break;
            }
            self.on_event(SseEvent { raw }).await;
        }
    }

    async fn on_event(&mut self, ev: SseEvent) {
        let Some(tap) = self.tap.as_mut() else { return };
        if tap.on_event(&ev, Instant::now()) == Verdict::Drop {
            return;
        }
        let capture = crate::telemetry::capture_content();
        let plugins = self.chain.as_ref().is_some_and(Chain::reads_answer);
        if !plugins && !capture {
            self.ready.push_back(ev.raw);
            return;
        }
        let d = self.dialect;
        let f = ev.fields();
        let event = f.event.map(str::to_string);
        let parsed: Option<serde_json::Value> =
            if f.data.starts_with('{') { serde_json::from_str(&f.data).ok() } else { None };
        let located = parsed.as_ref().map(|v| d.deltas(f.event, v)).unwrap_or_default();
        if capture
            && let Some(t) = dialect::answer_text(&located)
            && let Some(rec) = self.rec.as_mut()
        {
            rec.output_capture.get_or_insert_with(String::new).push_str(&t);
        }
        if !plugins {
            self.ready.push_back(ev.raw);
            return;
        }
        // Streams that end here: held text is flushed before this event (after it, for a stream whose last text
        // is in this very event, such as a chat chunk carrying both text and its finish reason).
        let ends = d.ends(f.event, parsed.as_ref(), &f.data);
        let ending: Vec<TextStream> = self
            .streams
            .0
            .iter()
            .filter(|(s, st)| st.open && ends.iter().any(|e| e.matches(s)))
            .map(|(s, _)| *s)
            .collect();
        let (after, before): (Vec<TextStream>, Vec<TextStream>) =
            ending.into_iter().partition(|s| located.iter().any(|l| l.stream == *s));
        for s in before {
            if !self.flush_stream(s).await {
                return;
            }
        }
        for l in &located {
            let st = self.streams.entry(l.stream);
            st.open = true;
            st.template = Some((ev.clone(), l.pointer.clone()));
        }
        let chunk = types::Chunk {
            index: self.index,
            event: event.clone(),
            data: f.data.to_string(),
            texts: located.iter().map(|l| types::TextPiece { stream: l.stream, text: l.text.clone() }).collect(),
            whole_body: false,
        };
        self.index += 1;
        let Some(chain) = self.chain.as_mut() else { return };
        let verdict = match chain.on_chunk(chunk, 0).await {
            Err(e) => return self.fail(e),
            Ok(ChunkVerdict::Abort(reason)) => {
                return self.fail(ApiError::rejected(http::StatusCode::FORBIDDEN, reason));
            }
            Ok(v) => v,
        };
        // What to send for this event (none: dropped or held).
        let out: Option<String> = match verdict {
            ChunkVerdict::Drop | ChunkVerdict::Abort(_) => None,
            ChunkVerdict::Forward { texts: None, data: None } => {
                for l in &located {
                    self.sent(l.stream, &l.text, &l.text);
                }
                Some(f.data.to_string())
            }
            // The plugin took the event over: sent as it gave it.
            ChunkVerdict::Forward { texts: None, data: Some(new) } => Some(new),
            ChunkVerdict::Forward { texts: Some(texts), data } => {
                let base = match data {
                    Some(new) => serde_json::from_str(&new).ok(),
                    None => parsed,
                };
                match base {
                    Some(mut v) => {
                        for (l, t) in located.iter().zip(&texts) {
                            dialect::set(&mut v, &l.pointer, t);
                            self.sent(l.stream, &l.text, t);
                        }
                        Some(v.to_string())
                    }
                    None => Some(f.data.to_string()),
                }
            }
        };
        if let Some(out) = out {
            let out = self.rewrite_summaries(event.as_deref(), out);
            if out == f.data {
                self.ready.push_back(ev.raw.clone());
            } else {
                self.ready.push_back(dialect::frame(event.as_deref(), &out));
            }
        }
        for s in after {
            if !self.flush_stream(s).await {
                return;
            }
        }
    }

    /// Notes what the client got of a stream's text (`original` as the upstream sent it, `sent` after plugins).
    fn sent(&mut self, s: TextStream, original: &str, sent: &str) {
        let keep = self.dialect.repeats_text();
        let st = self.streams.entry(s);
        if keep {
            st.forwarded.push_str(sent);
        }
        st.changed |= original != sent;
    }

    /// Runs the plugins' `flush` for one stream that ends, and sends what they release as text events of that
    /// stream. `false`: the answer was stopped.
    async fn flush_stream(&mut self, s: TextStream) -> bool {
        self.streams.entry(s).open = false;
        let Some(chain) = self.chain.as_mut() else { return true };
        let texts = match chain.flush(s).await {
            Err(e) => {
                self.fail(e);
                return false;
            }
            Ok(Err(reason)) => {
                self.fail(ApiError::rejected(http::StatusCode::FORBIDDEN, reason));
                return false;
            }
            Ok(Ok(texts)) => texts,
        };
        let d = self.dialect;
        for t in texts {
            let Some((template, pointer)) = self.streams.get(&s).and_then(|st| st.template.clone()) else {
                tracing::warn!("plugin flushed text but the answer had no text event to carry it");
                continue;
            };
            let tf = template.fields();
            let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&tf.data) else { continue };
            d.template(&mut v, &s);
            dialect::set(&mut v, &pointer, &t);
            self.ready.push_back(dialect::frame(tf.event, &v.to_string()));
            let keep = d.repeats_text();
            let st = self.streams.entry(s);
            if keep {
                st.forwarded.push_str(&t);
            }
            st.changed = true;
        }
        true
    }

    /// Events that repeat a stream's whole text (Responses `*.done`, `response.completed` ...) carry what the
    /// client was actually sent of that stream, when plugins changed it.
    fn rewrite_summaries(&self, event: Option<&str>, data: String) -> String {
        let d = self.dialect;
        if !d.is_summary(event) || !self.streams.0.iter().any(|(_, s)| s.changed) || !data.starts_with('{') {
            return data;
        }
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&data) else { return data };
        let fields: Vec<Located> = d.summaries(event, &v);
        let mut changed = false;
        for l in fields {
            if let Some(st) = self.streams.get(&l.stream).filter(|s| s.changed) {
                dialect::set(&mut v, &l.pointer, &st.forwarded);
                changed = true;
            }
        }
        if changed { v.to_string() } else { data }
    }

    /// Ends the stream with an error event in the client's format.
    fn fail(&mut self, e: ApiError) {
        let seq = self.tap.as_ref().map_or(0, |t| t.events);
        self.ready.push_back(self.dialect.error_event(&e, seq));
        if let Some(rec) = &mut self.rec {
            rec.outcome = Outcome::from_source(e.source());
            rec.error = Some(e.message);
        }
        self.finish();
    }

    /// Ends the request with what the tap saw.
    fn finish(&mut self) {
        self.done = true;
        if let Some(mut rec) = self.rec.take() {
            rec.tap = self.tap.take();
            rec.chain = self.chain.take();
            // The request ends before its last bytes leave (they are still queued): what the client is sent is kept
            // for plugins granted the answer now (a client that goes away now still counts as served).
            if let Some(chain) = rec.chain.as_mut() {
                for b in &self.ready {
                    chain.capture(b);
                }
            }
            if rec.error.is_none()
                && let Some(e) = rec.tap.as_ref().and_then(|t| t.stream_error.clone())
            {
                rec.outcome = Outcome::UpstreamError;
                rec.error = Some(e);
            }
            rec.finish();
        }
    }
}

impl Drop for AnswerStream {
    /// A stream dropped before it ended (the client went away): the tap and the plugins go back into the record,
    /// which, dropped right after, ends the request as cancelled with what was seen.
    fn drop(&mut self) {
        crate::telemetry::metrics::METRICS.open_streams.dec();
        if let Some(rec) = self.rec.as_mut() {
            rec.tap = self.tap.take();
            rec.chain = self.chain.take();
        }
    }
}
