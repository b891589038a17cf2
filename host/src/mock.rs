//! `weir mock-upstream`: a local stand-in for the OpenAI and Anthropic APIs, for tests, benchmarks and offline demos.
//!
//! It answers `POST /v1/chat/completions`, `/v1/responses`, `/v1/embeddings`, `/v1/messages`,
//! `/v1/messages/count_tokens` and `GET /v1/models` with the providers' framing: the same SSE event types and order,
//! usage objects, `[DONE]`, error bodies and request-id headers. Output is deterministic: answer chunk `i` is
//! `WORDS[i % WORDS.len()]` (or the deltas given in `x-mock-deltas`), input tokens are the size of the prompt fields divided by four. Like OpenAI, it sends
//! the usage chunk of a chat stream only when `stream_options.include_usage` is true.
//!
//! Like the providers, a request whose `tool_choice` forces a tool (OpenAI `required` or a named function, Anthropic
//! `any` or a named tool) is answered with a call to that tool, its arguments built from the tool's JSON schema and
//! streamed in fragments as the provider streams them (`mock/tools.rs`); otherwise the answer is text.
//!
//! Per-request behaviour is scripted with headers (all optional):
//!
//! | header | effect |
//! |---|---|
//! | `x-mock-chunks: N` | N content deltas (default 8) |
//! | `x-mock-deltas: ["a", "b"]` | exactly these content deltas (a JSON array of strings), instead of `WORDS` |
//! | `x-mock-delay-ms: D` | D ms between events of a stream |
//! | `x-mock-header-delay-ms: D` | wait D ms before sending the response headers |
//! | `x-mock-status: S` | answer with HTTP S and the family's error body |
//! | `x-mock-retry-after: V` | `Retry-After: V` on such an error |
//! | `x-mock-fail-times: K` | with `x-mock-tag`: only the first K requests of the tag get `x-mock-status` (default 503) |
//! | `x-mock-reset-after: N` | abort the connection after N events (or half of a non-streamed body) |
//! | `x-mock-stall-after: N` | stop sending after N events, keeping the connection open |
//! | `x-mock-cached-tokens: N`, `x-mock-reasoning-tokens: N` | report these in usage |
//! | `x-mock-stamp: 1` | prefix each streamed event with the SSE comment `: sent_us=<Unix µs>` (benchmarks) |
//! | `x-mock-cut-after: N` | send N events and half of the next, then end the stream cleanly (cut mid-event) |
//! | `x-mock-no-final-blank: 1` | end the stream without the blank line after its last event |
//! | `x-mock-events: [["event", {data}], [null, {data}], ...]` | a streamed answer made of exactly these events (framed by the mock; `data` as given), for shapes the built-in answers do not have: several choices, thinking and tool-use blocks, several output items |
//! | `x-mock-tool-calls: N` | N parallel tool calls when `tool_choice` forces a tool (default 1; see `tools`) |
//! | `x-mock-tag: T` | record the request under T (with its headers and body), readable at `GET /_mock/requests?tag=T` |
//! | `x-mock-agent: {"Tool": {args}, ...}` | play a coding agent's model: call the first offered tool named here, then quote the tool's result (`mock/agent.rs`) |
//!
//! Structured-output requests are answered with JSON valid against their schema, Anthropic requests with thinking on
//! get a signed thinking block first, and requests a provider refuses (`reasoning_effort` to a model without
//! reasoning, a thinking budget that does not fit, a tool-use turn without its thinking) get its 400
//! (`mock/agent.rs`).
//!
//! It also plays Azure OpenAI, Bedrock and Vertex AI, checking their credentials (SigV4, OAuth tokens, `api-key`)
//! and framing their answers (event-stream): `mock/cloud.rs`.
//!
//! With `--api-key KEY`, requests must carry that key the provider's way (`Authorization: Bearer` for OpenAI,
//! `x-api-key` for Anthropic) or get the provider's 401.
//!
//! Answers are serialized once per distinct shape and cached, so the mock is never a benchmark's bottleneck.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::{Endpoint, Family};

mod agent;
mod cloud;
mod tools;

pub use cloud::{AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AZURE_API_KEY, BEDROCK_API_KEY};

/// The deterministic answer text, one entry per content delta.
pub const WORDS: &[&str] =
    &["Hello", " from", " the", " Weir", " mock", " upstream", ".", " This", " answer", " is", " deterministic", "."];
const CREATED: u64 = 1_700_000_000;
const MAX_CHUNKS: usize = 100_000;

/// Shared mock state.
pub struct Mock {
    api_key: Option<String>,
    cache: Mutex<HashMap<String, Arc<Vec<Bytes>>>>,
    tags: Mutex<HashMap<String, Vec<Record>>>,
    cloud: cloud::CloudState,
}

/// What the mock saw of one tagged request.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub path: &'static str,
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    /// `ok`, `missing` or `wrong` (only checked with `--api-key`).
    pub auth: &'static str,
    pub status: u16,
    pub events_total: usize,
    pub events_sent: usize,
    /// `streaming`, `completed`, `disconnected`, `reset`, `stalled`, `error_status`, `unauthorized`.
    pub outcome: &'static str,
    /// Milliseconds from the request's arrival to its end (for streams: to the last event or the disconnect).
    pub ms: f64,
    /// Wall-clock arrival and end, in Unix milliseconds, so tests in another process can compare times.
    pub started_unix_ms: f64,
    pub ended_unix_ms: Option<f64>,
    /// The request's headers (lower-case names) and JSON body, as the upstream received them.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

fn unix_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

pub fn router(api_key: Option<String>) -> Router {
    let mock = Arc::new(Mock {
        api_key,
        cache: Mutex::new(HashMap::new()),
        tags: Mutex::new(HashMap::new()),
        cloud: cloud::CloudState::default(),
    });
    let ep = |e: Endpoint| {
        post(move |State(m): State<Arc<Mock>>, h: HeaderMap, b: Bytes| async move { handle(m, e, h, b).await })
    };
    cloud::routes(Router::new())
        .route("/v1/chat/completions", ep(Endpoint::ChatCompletions))
        .route("/v1/responses", ep(Endpoint::Responses))
        .route("/v1/embeddings", ep(Endpoint::Embeddings))
        .route("/v1/messages", ep(Endpoint::Messages))
        .route("/v1/messages/count_tokens", ep(Endpoint::CountTokens))
        .route("/v1/models", get(models))
        .route("/_mock/requests", get(requests))
        .with_state(mock)
        // Providers take bodies of tens of MiB (images as base64); axum's 2 MB default would refuse them.
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
}

/// Per-request script, from the `x-mock-*` headers.
#[derive(Debug, Default)]
struct Controls {
    chunks: usize,
    /// `x-mock-deltas`, raw (part of the answer cache key) and parsed.
    deltas: Option<(String, Vec<String>)>,
    delay: Duration,
    header_delay: Duration,
    status: Option<u16>,
    retry_after: Option<HeaderValue>,
    fail_times: Option<usize>,
    reset_after: Option<usize>,
    stall_after: Option<usize>,
    cached: u64,
    reasoning: u64,
    tag: Option<String>,
    /// `x-mock-stamp`: prefix each streamed event with an SSE comment `: sent_us=<Unix µs>` (for benchmarks).
    stamp: bool,
    /// `x-mock-events`: the streamed answer's events, framed.
    events: Option<Arc<Vec<Bytes>>>,
    /// `x-mock-cut-after`: end cleanly in the middle of this event.
    cut_after: Option<usize>,
    /// `x-mock-no-final-blank`: leave out the last event's final blank line.
    no_final_blank: bool,
    /// `x-mock-tool-calls`: parallel calls in an answer that a forced `tool_choice` makes a tool call.
    tool_calls: usize,
    /// `x-mock-agent`: tool name → arguments, for an agent's tool loop.
    agent: Option<serde_json::Map<String, Value>>,
}

/// Frames the `x-mock-events` list: `[[event name or null, data], ...]` (a string `data` is sent as is, anything
/// else as its JSON).
fn scripted_events(raw: &str) -> Option<Arc<Vec<Bytes>>> {
    let list: Vec<(Option<String>, Value)> = serde_json::from_str(raw).ok()?;
    let framed = list
        .into_iter()
        .map(|(event, data)| {
            let data = match data {
                Value::String(s) => s,
                other => other.to_string(),
            };
            Bytes::from(match event {
                Some(e) => format!("event: {e}\ndata: {data}\n\n"),
                None => format!("data: {data}\n\n"),
            })
        })
        .collect();
    Some(Arc::new(framed))
}

impl Controls {
    fn from(h: &HeaderMap) -> Controls {
        let s = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
        let n = |n: &str| s(n).and_then(|v| v.trim().parse::<u64>().ok());
        Controls {
            chunks: n("x-mock-chunks").map_or(8, |c| (c as usize).min(MAX_CHUNKS)),
            deltas: s("x-mock-deltas")
                .and_then(|raw| Some((raw.to_string(), serde_json::from_str::<Vec<String>>(raw).ok()?))),
            delay: Duration::from_millis(n("x-mock-delay-ms").unwrap_or(0)),
            header_delay: Duration::from_millis(n("x-mock-header-delay-ms").unwrap_or(0)),
            status: n("x-mock-status").map(|s| s as u16),
            retry_after: h.get("x-mock-retry-after").cloned(),
            fail_times: n("x-mock-fail-times").map(|v| v as usize),
            reset_after: n("x-mock-reset-after").map(|v| v as usize),
            stall_after: n("x-mock-stall-after").map(|v| v as usize),
            cached: n("x-mock-cached-tokens").unwrap_or(0),
            reasoning: n("x-mock-reasoning-tokens").unwrap_or(0),
            tag: s("x-mock-tag").map(str::to_string),
            stamp: s("x-mock-stamp").is_some(),
            events: s("x-mock-events").and_then(scripted_events),
            cut_after: n("x-mock-cut-after").map(|v| v as usize),
            no_final_blank: s("x-mock-no-final-blank").is_some(),
            tool_calls: n("x-mock-tool-calls").map_or(1, |v| (v as usize).clamp(1, 16)),
            agent: s("x-mock-agent").and_then(|raw| serde_json::from_str(raw).ok()),
        }
    }
}

/// The request fields the mock reads.
struct Req {
    model: String,
    stream: bool,
    include_usage: bool,
    prompt_tokens: u64,
    embed_inputs: usize,
    embed_base64: bool,
    dimensions: usize,
    /// The body, for what only some answers read (forced tool calls).
    body: Value,
}

impl Req {
    fn parse(body: &[u8]) -> Result<Req, String> {
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
        let obj = v.as_object().ok_or("the body must be a JSON object")?;
        let model = obj.get("model").and_then(Value::as_str).ok_or("`model` is required")?.to_string();
        let prompt_bytes: usize = ["messages", "input", "system", "prompt", "instructions"]
            .iter()
            .filter_map(|k| obj.get(*k))
            .map(|v| v.to_string().len())
            .sum();
        Ok(Req {
            model,
            stream: obj.get("stream").and_then(Value::as_bool).unwrap_or(false),
            include_usage: v.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false),
            prompt_tokens: (prompt_bytes as u64).div_ceil(4).max(1),
            embed_inputs: match obj.get("input") {
                Some(Value::Array(a)) if a.first().is_some_and(|f| !f.is_number()) => a.len(),
                _ => 1,
            },
            embed_base64: obj.get("encoding_format").and_then(Value::as_str) == Some("base64"),
            dimensions: obj.get("dimensions").and_then(Value::as_u64).map_or(8, |d| d.clamp(1, 4096) as usize),
            body: v,
        })
    }
}

async fn handle(mock: Arc<Mock>, endpoint: Endpoint, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let c = Controls::from(&headers);
    let family = endpoint.family();
    let path = endpoint.upstream_path();

    let auth = auth(&mock, family, &headers);

    if !c.header_delay.is_zero() {
        tokio::time::sleep(c.header_delay).await;
    }

    let req = match Req::parse(&body) {
        Ok(r) => r,
        Err(m) => return error_response(family, 400, &m, None),
    };
    let mut record = Record {
        path,
        model: req.model.clone(),
        stream: req.stream && endpoint.can_stream(),
        include_usage: req.include_usage,
        auth,
        status: 200,
        events_total: 0,
        events_sent: 0,
        outcome: "streaming",
        ms: 0.0,
        started_unix_ms: unix_ms(),
        ended_unix_ms: None,
        headers: Vec::new(),
        body: Value::Null,
    };
    if c.tag.is_some() {
        record.headers =
            headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
        record.body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    }

    let hits = match &c.tag {
        Some(t) => mock.tags.lock().unwrap().get(t).map_or(0, Vec::len) + 1,
        None => 1,
    };
    let fail_status = match (c.status, c.fail_times) {
        (s, Some(k)) if hits <= k => Some(s.unwrap_or(503)),
        (Some(s), None) => Some(s),
        _ => None,
    };
    if auth != "ok" {
        record.status = 401;
        record.outcome = "unauthorized";
        mock.record(&c, record, started);
        let msg = match family {
            Family::OpenAi => "Incorrect API key provided.",
            Family::Anthropic => "invalid x-api-key",
        };
        return error_response(family, 401, msg, None);
    }
    if let Some(status) = fail_status {
        record.status = status;
        record.outcome = "error_status";
        mock.record(&c, record, started);
        return error_response(family, status, "the mock upstream was asked to fail this request", c.retry_after);
    }
    if let Some(message) = agent::refusal(endpoint, &req.body) {
        record.status = 400;
        record.outcome = "error_status";
        mock.record(&c, record, started);
        return error_response(family, 400, &message, None);
    }

    let mut events = match (&c.events, req.stream && endpoint.can_stream()) {
        (Some(events), true) => events.clone(),
        _ => mock.answer(endpoint, &req, &c),
    };
    if req.stream && endpoint.can_stream() {
        events = broken_framing(events, &c);
    }
    record.events_total = events.len();
    let request_id = HeaderValue::from_str(&format!("req_mock_{:012x}", fastrand::u64(..) >> 16)).unwrap();
    let id_header = if family == Family::OpenAi { "x-request-id" } else { "request-id" };

    if !record.stream {
        return whole_response(&mock, events, c, record, started, (id_header, request_id));
    }

    stream_response(mock, events, c, record, started, (id_header, request_id))
}

/// Whether the request carries the mock's key: `ok`, `missing` or `wrong`.
fn auth(mock: &Mock, family: Family, headers: &HeaderMap) -> &'static str {
    match &mock.api_key {
        None => "ok",
        Some(key) => {
            let given = match family {
                Family::OpenAi => headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer ")),
                Family::Anthropic => headers.get("x-api-key").and_then(|v| v.to_str().ok()),
            };
            match given {
                None => "missing",
                Some(g) if g == key => "ok",
                Some(_) => "wrong",
            }
        }
    }
}

/// Broken framings of a streamed answer, as upstreams produce them (`x-mock-cut-after`, `x-mock-no-final-blank`).
fn broken_framing(mut events: Arc<Vec<Bytes>>, c: &Controls) -> Arc<Vec<Bytes>> {
    if let Some(n) = c.cut_after.filter(|n| *n < events.len()) {
        let mut cut: Vec<Bytes> = events[..n].to_vec();
        cut.push(events[n].slice(..events[n].len() / 2));
        events = Arc::new(cut);
    } else if c.no_final_blank
        && let Some(last) = events.last().filter(|l| l.ends_with(b"\n\n"))
    {
        let mut v = events.to_vec();
        let trimmed = last.slice(..last.len() - 1);
        *v.last_mut().expect("not empty") = trimmed;
        events = Arc::new(v);
    }
    events
}

/// A non-streamed answer (or, with `x-mock-reset-after`, half of one and a reset).
fn whole_response(
    mock: &Mock,
    events: Arc<Vec<Bytes>>,
    c: Controls,
    mut record: Record,
    started: Instant,
    (id_header, request_id): (&'static str, HeaderValue),
) -> Response {
    let body = events[0].clone();
    let body = match c.reset_after {
        // A broken non-streamed answer: half the body, then the connection is aborted.
        Some(_) => {
            record.outcome = "reset";
            let half = body.slice(..body.len() / 2);
            Body::from_stream(futures_util::stream::iter([
                Ok(half),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock reset")),
            ]))
        }
        None => {
            record.outcome = "completed";
            record.events_sent = 1;
            Body::from(body)
        }
    };
    mock.record(&c, record, started);
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(id_header, request_id);
    r
}

/// A streamed answer, event by event with the controls' delays, resets and stalls.
fn stream_response(
    mock: Arc<Mock>,
    events: Arc<Vec<Bytes>>,
    c: Controls,
    record: Record,
    started: Instant,
    (id_header, request_id): (&'static str, HeaderValue),
) -> Response {
    let slot = mock.record(&c, record, started);
    let guard = StreamGuard { mock: mock.clone(), slot, started, sent: 0, outcome: "disconnected" };
    let stream = futures_util::stream::unfold((events, 0usize, guard, c), |(events, i, mut g, c)| async move {
        if i > 0 && !c.delay.is_zero() && i < events.len() {
            tokio::time::sleep(c.delay).await;
        }
        if c.reset_after == Some(i) {
            // Let the events before the reset reach the wire first (hyper flushes when the body is pending).
            tokio::time::sleep(Duration::from_millis(10)).await;
            g.outcome = "reset";
            let err = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock reset");
            return Some((Err(err), (Arc::new(Vec::new()), usize::MAX, g, c)));
        }
        if c.stall_after == Some(i) {
            g.outcome = "stalled";
            tokio::time::sleep(Duration::from_secs(300)).await;
            drop(g);
            return None;
        }
        let mut ev = events.get(i)?.clone();
        if c.stamp {
            let us = (unix_ms() * 1e3) as u64;
            ev = Bytes::from([format!(": sent_us={us}\n").as_bytes(), &ev].concat());
        }
        g.sent = i + 1;
        if g.sent == events.len() {
            g.outcome = "completed";
        }
        Some((Ok(ev), (events, i + 1, g, c)))
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(id_header, request_id);
    r
}

/// Updates a streamed request's record when its body ends or is dropped (the client went away).
struct StreamGuard {
    mock: Arc<Mock>,
    slot: Option<(String, usize)>,
    started: Instant,
    sent: usize,
    outcome: &'static str,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some((tag, i)) = &self.slot
            && let Some(r) = self.mock.tags.lock().unwrap().get_mut(tag).and_then(|v| v.get_mut(*i))
        {
            r.events_sent = self.sent;
            r.outcome = self.outcome;
            r.ms = self.started.elapsed().as_secs_f64() * 1e3;
            r.ended_unix_ms = Some(unix_ms());
        }
    }
}

impl Mock {
    /// Stores a tagged request's record; returns where it is, for later updates.
    fn record(&self, c: &Controls, mut r: Record, started: Instant) -> Option<(String, usize)> {
        let tag = c.tag.clone()?;
        r.ms = started.elapsed().as_secs_f64() * 1e3;
        if r.outcome != "streaming" {
            r.ended_unix_ms = Some(unix_ms());
        }
        let mut tags = self.tags.lock().unwrap();
        if tags.len() > 10_000 {
            tags.clear();
        }
        let v = tags.entry(tag.clone()).or_default();
        v.push(r);
        Some((tag, v.len() - 1))
    }

    /// The serialized answer: one element (the body) for non-streamed answers, one per SSE event otherwise.
    fn answer(&self, endpoint: Endpoint, req: &Req, c: &Controls) -> Arc<Vec<Bytes>> {
        let stream = req.stream && endpoint.can_stream();
        let answer = self.content(endpoint, req, c);
        if endpoint == Endpoint::Messages && agent::thinks(&req.body) {
            return Arc::new(agent::with_thinking(&answer, stream));
        }
        answer
    }

    /// The answer's content: tool calls (forced, or an agent script's), structured output, or text.
    fn content(&self, endpoint: Endpoint, req: &Req, c: &Controls) -> Arc<Vec<Bytes>> {
        let stream = req.stream && endpoint.can_stream();
        let u = UsageNumbers { input: req.prompt_tokens, output: 0, cached: c.cached, reasoning: c.reasoning };
        let script = c.agent.as_ref().and_then(|s| agent::scripted(endpoint, &req.body, s));
        let calls = match script {
            Some(agent::Turn::Call(call)) => Some(vec![call]),
            Some(agent::Turn::Reply(text)) => {
                let words: Vec<String> = text.split_inclusive(' ').map(str::to_string).collect();
                return self.text_answer(endpoint, req, c, Some(&(text, words)));
            }
            None => tools::forced(endpoint, &req.body, c.tool_calls),
        };
        if let Some(calls) = calls {
            let model = req.model.as_str();
            return Arc::new(match (endpoint, stream) {
                (Endpoint::ChatCompletions, true) => tools::chat_stream(model, &calls, req.include_usage, u),
                (Endpoint::ChatCompletions, false) => vec![json_bytes(&tools::chat_body(model, &calls, u))],
                (Endpoint::Messages, true) => tools::messages_stream(model, &calls, u),
                (Endpoint::Messages, false) => vec![json_bytes(&tools::message_body(model, &calls, u))],
                (Endpoint::Responses, true) => tools::responses_stream(model, &calls, u),
                (Endpoint::Responses, false) => vec![json_bytes(&tools::response_body(model, &calls, u))],
                _ => return self.text_answer(endpoint, req, c, None),
            });
        }
        if let Some(json) = agent::structured(endpoint, &req.body) {
            let pieces: Vec<String> = json.chars().collect::<Vec<_>>().chunks(12).map(|p| p.iter().collect()).collect();
            return self.text_answer(endpoint, req, c, Some(&(json, pieces)));
        }
        self.text_answer(endpoint, req, c, None)
    }

    /// A text answer: `deltas` (raw, parsed) if given, else `x-mock-deltas`, else `x-mock-chunks` of [`WORDS`].
    fn text_answer(
        &self,
        endpoint: Endpoint,
        req: &Req,
        c: &Controls,
        deltas: Option<&(String, Vec<String>)>,
    ) -> Arc<Vec<Bytes>> {
        let stream = req.stream && endpoint.can_stream();
        let given = deltas.or(c.deltas.as_ref());
        let key = format!(
            "{}|{stream}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            endpoint.as_str(),
            req.model,
            c.chunks,
            given.map_or("", |d| d.0.as_str()),
            req.include_usage,
            req.prompt_tokens,
            c.cached,
            c.reasoning,
            req.embed_inputs,
            req.embed_base64,
            req.dimensions
        );
        if let Some(a) = self.cache.lock().unwrap().get(&key) {
            return a.clone();
        }
        let deltas: Vec<&str> = match given {
            Some((_, d)) => d.iter().map(String::as_str).collect(),
            None => (0..c.chunks).map(|i| WORDS[i % WORDS.len()]).collect(),
        };
        let chunks = deltas.as_slice();
        let u = UsageNumbers {
            input: req.prompt_tokens,
            output: chunks.len() as u64,
            cached: c.cached,
            reasoning: c.reasoning,
        };
        let answer = Arc::new(match (endpoint, stream) {
            (Endpoint::ChatCompletions, true) => chat_stream(&req.model, chunks, req.include_usage, u),
            (Endpoint::ChatCompletions, false) => vec![json_bytes(&chat_body(&req.model, chunks, u))],
            (Endpoint::Responses, true) => responses_stream(&req.model, chunks, u),
            (Endpoint::Responses, false) => vec![json_bytes(&response_object(&req.model, chunks, u, true))],
            (Endpoint::Messages, true) => messages_stream(&req.model, chunks, u),
            (Endpoint::Messages, false) => vec![json_bytes(&message_body(&req.model, chunks, u))],
            (Endpoint::Embeddings, _) => vec![json_bytes(&embeddings(req))],
            (Endpoint::CountTokens, _) => vec![json_bytes(&json!({"input_tokens": req.prompt_tokens}))],
        });
        let mut cache = self.cache.lock().unwrap();
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(key, answer.clone());
        answer
    }
}

#[derive(Clone, Copy)]
struct UsageNumbers {
    input: u64,
    output: u64,
    cached: u64,
    reasoning: u64,
}

fn text(chunks: &[&str]) -> String {
    chunks.concat()
}

fn json_bytes(v: &Value) -> Bytes {
    Bytes::from(v.to_string())
}

fn data_event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn named_event(name: &str, v: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

fn openai_usage(u: UsageNumbers) -> Value {
    json!({
        "prompt_tokens": u.input, "completion_tokens": u.output, "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    })
}

fn chat_chunk(model: &str, choices: Value, usage: Option<Value>) -> Value {
    let mut v = json!({
        "id": "chatcmpl-weirmock", "object": "chat.completion.chunk", "created": CREATED, "model": model,
        "service_tier": "default", "system_fingerprint": "fp_weirmock", "choices": choices,
    });
    if let Some(u) = usage {
        v["usage"] = u;
    }
    v
}

fn chat_stream(model: &str, chunks: &[&str], include_usage: bool, u: UsageNumbers) -> Vec<Bytes> {
    // With include_usage, every chunk carries `"usage": null` and a final chunk with empty choices carries usage.
    let null = include_usage.then_some(Value::Null);
    let mut out = vec![data_event(&chat_chunk(
        model,
        json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}]),
        null.clone(),
    ))];
    for delta in chunks {
        out.push(data_event(&chat_chunk(
            model,
            json!([{"index": 0, "delta": {"content": delta}, "logprobs": null, "finish_reason": null}]),
            null.clone(),
        )));
    }
    out.extend(chat_stream_end(model, "stop", include_usage, u));
    out
}

/// The end of a chat stream: the chunk with `finish_reason`, the usage chunk (with `include_usage`), `[DONE]`.
fn chat_stream_end(model: &str, finish: &str, include_usage: bool, u: UsageNumbers) -> Vec<Bytes> {
    let null = include_usage.then_some(Value::Null);
    let mut out = vec![data_event(&chat_chunk(
        model,
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish}]),
        null,
    ))];
    if include_usage {
        out.push(data_event(&chat_chunk(model, json!([]), Some(openai_usage(u)))));
    }
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

fn chat_body(model: &str, chunks: &[&str], u: UsageNumbers) -> Value {
    json!({
        "id": "chatcmpl-weirmock", "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text(chunks), "refusal": null, "annotations": []},
            "logprobs": null, "finish_reason": "stop"}],
        "usage": openai_usage(u), "service_tier": "default", "system_fingerprint": "fp_weirmock",
    })
}

fn output_message(chunks: &[&str], done: bool) -> Value {
    let content = if done {
        json!([{"type": "output_text", "annotations": [], "logprobs": [], "text": text(chunks)}])
    } else {
        json!([])
    };
    json!({"id": "msg_weirmock", "type": "message", "status": if done { "completed" } else { "in_progress" },
        "content": content, "role": "assistant"})
}

fn response_object(model: &str, chunks: &[&str], u: UsageNumbers, done: bool) -> Value {
    json!({
        "id": "resp_weirmock", "object": "response", "created_at": CREATED,
        "status": if done { "completed" } else { "in_progress" },
        "background": false, "error": null, "incomplete_details": null, "instructions": null,
        "max_output_tokens": null, "model": model,
        "output": if done { json!([output_message(chunks, true)]) } else { json!([]) },
        "parallel_tool_calls": true, "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null}, "service_tier": "default", "store": true,
        "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto",
        "tools": [], "top_p": 1.0, "truncation": "disabled",
        "usage": if done { json!({
            "input_tokens": u.input, "input_tokens_details": {"cached_tokens": u.cached},
            "output_tokens": u.output, "output_tokens_details": {"reasoning_tokens": u.reasoning},
            "total_tokens": u.input + u.output,
        }) } else { Value::Null },
        "user": null, "metadata": {},
    })
}

/// Frames Responses API events, each with its `type` and the next `sequence_number`.
fn sequenced() -> impl FnMut(&str, Value) -> Bytes {
    let mut seq = 0u64;
    move |name: &str, mut v: Value| {
        v["type"] = json!(name);
        v["sequence_number"] = json!(seq);
        seq += 1;
        named_event(name, &v)
    }
}

fn responses_stream(model: &str, chunks: &[&str], u: UsageNumbers) -> Vec<Bytes> {
    let mut ev = sequenced();
    let item = |extra: Value| {
        let mut v = json!({"item_id": "msg_weirmock", "output_index": 0, "content_index": 0});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v
    };
    let full = text(chunks);
    let mut out = vec![
        ev("response.created", json!({"response": response_object(model, chunks, u, false)})),
        ev("response.in_progress", json!({"response": response_object(model, chunks, u, false)})),
        ev("response.output_item.added", json!({"output_index": 0, "item": output_message(chunks, false)})),
        ev(
            "response.content_part.added",
            item(json!({"part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}})),
        ),
    ];
    for delta in chunks {
        out.push(ev("response.output_text.delta", item(json!({"delta": delta, "logprobs": []}))));
    }
    out.push(ev("response.output_text.done", item(json!({"text": full, "logprobs": []}))));
    out.push(ev(
        "response.content_part.done",
        item(json!({"part": {"type": "output_text", "annotations": [], "logprobs": [], "text": full}})),
    ));
    out.push(ev("response.output_item.done", json!({"output_index": 0, "item": output_message(chunks, true)})));
    out.push(ev("response.completed", json!({"response": response_object(model, chunks, u, true)})));
    out
}

fn anthropic_usage(u: UsageNumbers, output: u64) -> Value {
    // Anthropic's input_tokens excludes cache reads.
    json!({"input_tokens": u.input.saturating_sub(u.cached), "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cached, "output_tokens": output, "service_tier": "standard"})
}

fn message_body(model: &str, chunks: &[&str], u: UsageNumbers) -> Value {
    json!({
        "id": "msg_weirmock", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text(chunks)}],
        "stop_reason": "end_turn", "stop_sequence": null, "usage": anthropic_usage(u, u.output),
    })
}

fn messages_stream(model: &str, chunks: &[&str], u: UsageNumbers) -> Vec<Bytes> {
    let mut start = message_body(model, &[], u);
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    start["usage"] = anthropic_usage(u, 1);
    let mut out = vec![
        named_event("message_start", &json!({"type": "message_start", "message": start})),
        named_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        named_event("ping", &json!({"type": "ping"})),
    ];
    for delta in chunks {
        out.push(named_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": delta}}),
        ));
    }
    out.push(named_event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
    out.push(named_event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": u.output}}),
    ));
    out.push(named_event("message_stop", &json!({"type": "message_stop"})));
    out
}

fn embeddings(req: &Req) -> Value {
    let data: Vec<Value> = (0..req.embed_inputs)
        .map(|i| {
            let v: Vec<f32> = (0..req.dimensions).map(|j| (((i * 31 + j * 7) % 97) as f32 / 97.0) - 0.5).collect();
            let embedding = if req.embed_base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({"object": "list", "data": data, "model": req.model,
        "usage": {"prompt_tokens": req.prompt_tokens, "total_tokens": req.prompt_tokens}})
}

/// Standard base64 with padding (the encoding OpenAI uses for `encoding_format: "base64"`).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An error in the provider's own shape.
fn error_response(family: Family, status: u16, message: &str, retry_after: Option<HeaderValue>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match family {
        Family::OpenAi => {
            let (ty, code) = match status.as_u16() {
                401 => ("invalid_request_error", json!("invalid_api_key")),
                429 => ("requests", json!("rate_limit_exceeded")),
                400..=499 => ("invalid_request_error", Value::Null),
                _ => ("server_error", Value::Null),
            };
            json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
        }
        Family::Anthropic => {
            let ty = match status.as_u16() {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": ty, "message": message}, "request_id": "req_weirmock"})
        }
    };
    let mut r = (status, axum::Json(body)).into_response();
    if let Some(ra) = retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, ra);
    }
    r
}

async fn models() -> Response {
    let data: Vec<Value> = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-3-5-haiku-latest"]
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": CREATED, "owned_by": "weir-mock"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

#[derive(serde::Deserialize)]
struct TagQuery {
    tag: String,
}

async fn requests(State(mock): State<Arc<Mock>>, Query(q): Query<TagQuery>) -> Response {
    let records = mock.tags.lock().unwrap().get(&q.tag).cloned().unwrap_or_default();
    axum::Json(records).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseParser;

    fn u() -> UsageNumbers {
        UsageNumbers { input: 10, output: 3, cached: 2, reasoning: 1 }
    }

    const THREE: &[&str] = &["a", "b", "c"];

    #[test]
    fn streams_are_well_framed_and_carry_usage() {
        let all = |evs: Vec<Bytes>| evs.iter().flat_map(|b| b.to_vec()).collect::<Vec<u8>>();
        for (endpoint, evs) in [
            (Endpoint::ChatCompletions, chat_stream("m", THREE, true, u())),
            (Endpoint::Responses, responses_stream("m", THREE, u())),
            (Endpoint::Messages, messages_stream("m", THREE, u())),
        ] {
            let n = evs.len();
            let mut p = SseParser::new();
            p.push(&all(evs));
            let mut tap = crate::usage::UsageTap::new(endpoint, false);
            let mut count = 0;
            while let Some(ev) = p.next_event() {
                tap.on_event(&ev, Instant::now());
                count += 1;
            }
            assert_eq!(count, n);
            assert!(tap.finished, "{endpoint:?}");
            assert_eq!(tap.usage.input_tokens, Some(10), "{endpoint:?}");
            assert_eq!(tap.usage.output_tokens, Some(3), "{endpoint:?}");
            assert_eq!(tap.usage.cached_tokens, Some(2), "{endpoint:?}");
        }
        let no_usage = all(chat_stream("m", THREE, false, u()));
        assert!(!String::from_utf8(no_usage).unwrap().contains("prompt_tokens"), "usage only when asked");
    }

    #[test]
    fn base64_matches_reference() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
