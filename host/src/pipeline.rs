//! One proxied request from body to log line: parse → resolve the model's candidates → the attempt loop (retries and
//! failover, before any byte reaches the client) → forward the answer (streamed event by event, or whole) through the
//! usage tap → hand the record to the completion phase (`completion.rs`).
//!
//! Plugins (when configured) run at three points: `on-request` after the body is validated and before routing;
//! `on-chunk` for every event (or once for a whole non-streamed body), with each stream of text's held text flushed
//! before the event that ends that stream (`dialect/` says which); `on-complete` in the completion phase, off the
//! response path, before the log line.
//!
//! Streaming: [`AnswerStream`] pulls from the upstream only when the client side asks for more (hyper polls it
//! when the socket can take data), so a slow client slows the upstream read instead of growing a buffer; at most
//! one upstream chunk plus one incomplete event are held. When the client disconnects, hyper drops the body: the
//! upstream response is dropped with it (closing that connection, which cancels the upstream request) and dropping
//! the record ends the request as cancelled, with the usage seen so far.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, header};
use http_body_util::BodyExt;
use serde_json::value::RawValue;

use crate::api::Endpoint;
use crate::config::{Candidate, Config, UpstreamIdx, UpstreamKind};
use crate::dialect::{self, Located, TextStream, translate};
use crate::error::{ApiError, ErrorKind};
use crate::plugin::bindings::types;
use crate::plugin::{Chain, ChunkVerdict, Registry, RequestEffects, RequestView};
use crate::record::{Outcome, RequestRecord};
use crate::sse::{SseEvent, SseParser};
use crate::upstream::retry::{self, FailureClass};
use crate::upstream::{AnswerBody, AttemptRequest, Failure, Upstreams};
use crate::usage::{UsageTap, Verdict};

/// Everything request handlers share.
pub struct App {
    pub config: Config,
    pub upstreams: Upstreams,
    /// The plugin runtime, when any plugin or a plugins directory is configured.
    pub plugins: Option<Arc<Registry>>,
    /// Set on SIGTERM: `/readyz` answers 503 so load balancers stop sending traffic.
    pub draining: AtomicBool,
    /// The admin API's bearer token (from `[admin] token_env`).
    pub admin_token: Option<String>,
}

impl App {
    pub fn new(config: Config, plugins: Option<Arc<Registry>>) -> anyhow::Result<Arc<App>> {
        let upstreams = Upstreams::new(&config)?;
        let admin_token = match &config.admin_token_env {
            None => None,
            Some(env) => match std::env::var(env) {
                Ok(t) if !t.is_empty() => Some(t),
                _ => anyhow::bail!("[admin] token_env: environment variable `{env}` is not set"),
            },
        };
        Ok(Arc::new(App { config, upstreams, plugins, draining: AtomicBool::new(false), admin_token }))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// What the pipeline forwards once an upstream answered.
// Built and moved once per request; boxing the larger variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Forward {
    /// A complete response (a non-streamed answer, a plugin's answer, or an upstream error passed through).
    Whole(Response),
    /// Headers are ready; the body is the upstream's SSE stream, forwarded through the tap (and the plugins).
    Stream {
        resp: Response,
        upstream: reqwest::Response,
        tap: UsageTap,
        translator: Option<translate::StreamTranslator>,
    },
}

/// Handles one request to a proxied endpoint. The record is finished here, or handed to the stream.
pub async fn proxy(app: Arc<App>, endpoint: Endpoint, headers: HeaderMap, body: Body) -> Response {
    let mut rec = RequestRecord::new(endpoint);
    rec.trace = crate::telemetry::tracer().map(|t| t.begin(&headers));
    // One snapshot of the plugin set for the whole request, streams included.
    rec.chain = app.plugins.as_ref().map(|r| Chain::new(r.snapshot(), endpoint.family())).filter(|c| !c.is_empty());
    // Request ids are `req_` and hex digits: always a valid header value.
    let request_id = HeaderValue::from_str(&rec.request_id).unwrap_or(HeaderValue::from_static("req_unknown"));
    let mut resp = match run(&app, endpoint, &headers, body, &mut rec).await {
        Ok(Forward::Whole(resp)) => {
            rec.finish();
            resp
        }
        Ok(Forward::Stream { mut resp, upstream, tap, translator }) => {
            let mut stream = AnswerStream::new(endpoint, upstream, tap, app.config.timeouts.idle, rec);
            stream.translator = translator;
            *resp.body_mut() = Body::from_stream(stream.into_stream());
            resp
        }
        Err(e) => {
            rec.status = e.status().as_u16();
            rec.outcome = Outcome::from_source(e.source());
            rec.error = Some(e.message.clone());
            rec.finish();
            e.to_response(endpoint.family())
        }
    };
    resp.headers_mut().insert("x-request-id", request_id);
    resp
}

async fn run(
    app: &Arc<App>,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Body,
    rec: &mut RequestRecord,
) -> Result<Forward, ApiError> {
    let family = endpoint.family();
    let limits = &app.config.limits;
    let mut bytes = match tokio::time::timeout(limits.body_timeout, read_body(headers, body, limits.max_body)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ApiError::new(
                ErrorKind::RequestTimeout,
                format!("the request body did not arrive within {:?} (limits.body_timeout)", limits.body_timeout),
            ));
        }
    };
    check_depth(&bytes, app.config.limits.max_json_depth)?;
    let mut effects = RequestEffects::default();
    if let Some(chain) = rec.chain.as_mut() {
        // Malformed input is refused before any plugin sees it.
        let parsed = RequestBody::parse(&bytes, endpoint)?;
        rec.model = Some(parsed.model.to_string());
        rec.stream = parsed.stream;
        let mut view = RequestView {
            id: &rec.request_id,
            endpoint,
            headers,
            body: bytes.clone(),
            model: parsed.model.to_string(),
            stream: parsed.stream,
            listing: false,
        };
        drop(parsed);
        effects = chain.on_request(&mut view).await?;
        rec.principal = chain.principal.as_ref().map(|p| p.id.clone());
        if let Some(r) = effects.respond.take() {
            rec.status = r.status;
            rec.outcome = Outcome::Ok;
            rec.model = Some(view.model);
            return Ok(Forward::Whole(plugin_response(r)));
        }
        if effects.body.is_some() || effects.model.is_some() {
            let body = effects.body.take().unwrap_or(view.body);
            bytes = match &effects.model {
                Some(m) => RequestBody::parse(&body, endpoint)?.render(Some(m)),
                None => body,
            };
        }
    }
    let req = RequestBody::parse(&bytes, endpoint)?;
    rec.model = Some(req.model.to_string());
    rec.stream = req.stream;
    if crate::telemetry::capture_content() {
        rec.input_capture = input_messages(&bytes);
    }

    let routed;
    let route: &[Candidate] = match effects.route.take() {
        Some(targets) => {
            routed = plugin_route(&app.config, targets)?;
            &routed
        }
        None => app.config.routes.get(req.model.as_ref()).ok_or_else(|| {
            ApiError::new(
                ErrorKind::ModelNotFound,
                format!(
                    "model `{}` is not served by this gateway; GET /v1/models lists the models it serves",
                    req.model
                ),
            )
        })?,
    };
    let mut plan = app.upstreams.plan(route, endpoint, &app.config.translation);
    if plan.is_empty() {
        let why = if matches!(endpoint, Endpoint::Embeddings | Endpoint::CountTokens) {
            format!("the other API family has no {} endpoint", endpoint.path())
        } else {
            "translation between the API families is off (translation.enabled = false)".to_string()
        };
        return Err(ApiError::new(
            ErrorKind::InvalidRequest,
            format!("model `{}` is served only by upstreams of the other API family, and {why}", req.model),
        ));
    }
    // Candidates of the other family get the body translated, once per upstream kind; a refusal leaves them out,
    // and is the answer when no candidate is left.
    let mut translated: Vec<(UpstreamKind, serde_json::Value)> = Vec::new();
    let mut refusal = None;
    if plan.iter().any(|c| app.config.upstream(c.upstream).kind.family() != family) {
        let client_body: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(ErrorKind::InvalidRequest, format!("the request body is not valid JSON: {e}"))
        })?;
        plan.retain(|c| {
            let kind = app.config.upstream(c.upstream).kind;
            if kind.family() == family || translated.iter().any(|(k, _)| *k == kind) {
                return true;
            }
            let Some(target) = translate::target(endpoint, kind.family()) else { return false };
            let opts = translate::Options {
                default_max_tokens: app.config.translation.default_max_tokens,
                drop_fields: &app.config.translation.drop_fields,
                kind,
            };
            match translate::request(endpoint, target, &client_body, &opts) {
                Ok(v) => {
                    translated.push((kind, v));
                    true
                }
                Err(e) => {
                    refusal.get_or_insert(e);
                    false
                }
            }
        });
        if plan.is_empty()
            && let Some(e) = refusal
        {
            return Err(e);
        }
    }

    let body_for = |c: &Candidate| {
        let kind = app.config.upstream(c.upstream).kind;
        match translated.iter().find(|(k, _)| *k == kind && kind.family() != family) {
            None => req.render(c.model.as_deref()),
            Some((_, v)) => {
                let mut v = v.clone();
                if let Some(m) = &c.model {
                    translate::put(&mut v, "model", serde_json::Value::from(m.as_str()));
                }
                Bytes::from(v.to_string())
            }
        }
    };
    let attempt = AttemptRequest {
        endpoint,
        client_headers: headers,
        extra_headers: &effects.headers,
        stream: req.stream,
        body_for: &body_for,
        trace: rec.trace.as_ref(),
    };
    let outcome = retry::run(&app.upstreams, &app.config.retry, &plan, &attempt).await;
    rec.attempts = outcome.attempts;
    let mut answer = match outcome.result {
        Ok(a) => a,
        Err(f) => return failure_response(app, f, rec),
    };

    rec.upstream = Some(app.upstreams.get(answer.upstream).id.clone());
    rec.provider = Some(app.config.upstream(answer.upstream).kind.family().as_str());
    rec.upstream_model = answer.model.take();
    rec.upstream_request_id = answer
        .headers
        .get("x-request-id")
        .or_else(|| answer.headers.get("request-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    rec.status = answer.status.as_u16();
    rec.outcome = Outcome::Ok;

    let content_type =
        answer.headers.get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static("application/json"));
    let mut tap = UsageTap::new(endpoint, req.injected_usage);
    // An answer of the other family is translated first: the tap and the plugins see the client's format.
    let (mut resp, upstream) = match answer.body {
        AnswerBody::Full(b) => {
            let b = if answer.endpoint == endpoint {
                b
            } else {
                match serde_json::from_slice(&b).ok().and_then(|v| translate::whole(answer.endpoint, endpoint, &v)) {
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
            let translator = translate::StreamTranslator::new(answer.endpoint, endpoint);
            Forward::Stream { resp, upstream, tap, translator }
        }
    })
}

/// A plugin's own answer.
fn plugin_response(r: crate::plugin::bindings::types::Response) -> Response {
    let mut resp = Response::new(Body::from(r.body));
    *resp.status_mut() = http::StatusCode::from_u16(r.status).unwrap_or(http::StatusCode::OK);
    let ct = r.content_type.as_deref().and_then(|c| HeaderValue::from_str(c).ok());
    resp.headers_mut().insert(header::CONTENT_TYPE, ct.unwrap_or(HeaderValue::from_static("application/json")));
    resp
}

/// A plugin's route: upstream ids from the config, in order, never URLs.
fn plugin_route(config: &Config, targets: Vec<(String, Option<String>)>) -> Result<Vec<Candidate>, ApiError> {
    targets
        .into_iter()
        .enumerate()
        .map(|(i, (id, model))| {
            let idx = config.upstreams.iter().position(|u| u.id == id).ok_or_else(|| {
                ApiError::new(
                    ErrorKind::PluginFailed,
                    format!("a plugin routed to upstream `{id}`, which is not in the config"),
                )
            })?;
            Ok(Candidate { upstream: UpstreamIdx(idx), weight: 1, priority: i as u32, model })
        })
        .collect()
}

/// Runs `on-chunk` once over a whole non-streamed answer, with every text it holds.
async fn whole_body_plugins(chain: &mut Chain, endpoint: Endpoint, body: Bytes) -> Result<Bytes, ApiError> {
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

fn set_upstream_header(h: &mut HeaderMap, upstream_id: &str) {
    if let Ok(v) = HeaderValue::from_str(upstream_id) {
        h.insert("x-weir-upstream", v);
    }
}

/// Turns the attempt loop's final failure into the client's response.
fn failure_response(app: &App, f: Failure, rec: &mut RequestRecord) -> Result<Forward, ApiError> {
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
        (FailureClass::Auth(s), _) => Err(ApiError::new(
            ErrorKind::UpstreamAuth,
            format!("upstream `{id}` rejected the gateway's credentials (HTTP {s}); check its api_key_env"),
        )),
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

/// Reads the request body, refusing more than `limit` bytes with 413. An oversized upload is read on and discarded
/// (up to [`drain_cap`] bytes, within `limits.body_timeout` like any body) before the 413 is sent: a client that is
/// still writing when the gateway answers would otherwise get a reset or a broken pipe instead of the 413. A body
/// declared (`content-length`) beyond the cap is refused at once, unread.
async fn read_body(headers: &HeaderMap, mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
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
fn check_depth(body: &[u8], limit: usize) -> Result<(), ApiError> {
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

/// Request validation as the pipeline does it, for the fuzz targets: the depth check, the parse, and the rewrites
/// (model renamed, usage injected) that an upstream attempt renders.
pub(crate) fn validate_for_fuzzing(body: &Bytes, endpoint: Endpoint, max_depth: usize) -> Result<usize, ApiError> {
    check_depth(body, max_depth)?;
    let req = RequestBody::parse(body, endpoint)?;
    Ok(req.render(None).len() + req.render(Some("fuzz-model")).len())
}

/// The request body as parsed by the gateway: top-level fields kept as raw JSON (borrowed, not copied), the few
/// fields the gateway reads, and the rewrites it must make.
struct RequestBody<'a> {
    original: &'a Bytes,
    fields: BTreeMap<Cow<'a, str>, &'a RawValue>,
    model: Cow<'a, str>,
    stream: bool,
    /// `stream_options` with `include_usage: true`, when the gateway must ask for usage the client did not ask for.
    injected_stream_options: Option<String>,
    injected_usage: bool,
}

impl<'a> RequestBody<'a> {
    fn parse(bytes: &'a Bytes, endpoint: Endpoint) -> Result<RequestBody<'a>, ApiError> {
        let invalid = |m: String| ApiError::new(ErrorKind::InvalidRequest, m);
        let fields: BTreeMap<Cow<'a, str>, &'a RawValue> = serde_json::from_slice(bytes).map_err(|e| {
            if e.is_data() {
                invalid("the request body must be a JSON object".into())
            } else {
                invalid(format!("the request body is not valid JSON: {e}"))
            }
        })?;
        let model: Cow<'a, str> = match fields.get("model") {
            None => return Err(invalid("the request body has no `model`".into())),
            Some(raw) => serde_json::from_str(raw.get()).map_err(|_| invalid("`model` must be a string".into()))?,
        };
        let stream = match fields.get("stream") {
            Some(raw) if endpoint.can_stream() => match raw.get() {
                "true" => true,
                "false" | "null" => false,
                _ => return Err(invalid("`stream` must be a boolean".into())),
            },
            _ => false,
        };
        let mut injected_stream_options = None;
        if stream && dialect::of(endpoint).asks_for_stream_usage() {
            let mut opts: serde_json::Map<String, serde_json::Value> = match fields.get("stream_options") {
                Some(raw) if raw.get() != "null" => {
                    serde_json::from_str(raw.get()).map_err(|_| invalid("`stream_options` must be an object".into()))?
                }
                _ => serde_json::Map::new(),
            };
            if opts.get("include_usage") != Some(&serde_json::Value::Bool(true)) {
                opts.insert("include_usage".into(), serde_json::Value::Bool(true));
                injected_stream_options = Some(serde_json::Value::Object(opts).to_string());
            }
        }
        Ok(RequestBody {
            original: bytes,
            injected_usage: injected_stream_options.is_some(),
            fields,
            model,
            stream,
            injected_stream_options,
        })
    }

    /// The body to send upstream: the client's bytes unchanged unless the model is rewritten or usage injected.
    fn render(&self, model: Option<&str>) -> Bytes {
        if model.is_none() && self.injected_stream_options.is_none() {
            return self.original.clone();
        }
        let model_json = model.map(|m| serde_json::Value::from(m).to_string());
        let mut out = Vec::with_capacity(self.original.len() + 64);
        out.push(b'{');
        let mut first = true;
        let mut put = |k: &str, v: &str, out: &mut Vec<u8>| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            out.extend_from_slice(serde_json::Value::from(k).to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(v.as_bytes());
        };
        for (k, v) in &self.fields {
            let v = match k.as_ref() {
                "model" => model_json.as_deref().unwrap_or(v.get()),
                "stream_options" => self.injected_stream_options.as_deref().unwrap_or(v.get()),
                _ => v.get(),
            };
            put(k, v, &mut out);
        }
        if let Some(opts) = &self.injected_stream_options
            && !self.fields.contains_key("stream_options")
        {
            put("stream_options", opts, &mut out);
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

/// The streams of text of one answer (a handful: a linear search is the fastest map).
#[derive(Default)]
struct Streams(Vec<(TextStream, StreamState)>);

impl Streams {
    fn get(&self, s: &TextStream) -> Option<&StreamState> {
        self.0.iter().find(|(k, _)| k == s).map(|(_, v)| v)
    }
    fn entry(&mut self, s: TextStream) -> &mut StreamState {
        if !self.0.iter().any(|(k, _)| *k == s) {
            self.0.push((s, StreamState::default()));
        }
        let found = self.0.iter_mut().find(|(k, _)| *k == s).map(|(_, v)| v);
        // Just ensured present; the fallback is never taken.
        found.unwrap_or_else(|| unreachable!("stream state inserted above"))
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
struct AnswerStream {
    endpoint: Endpoint,
    upstream: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: SseParser,
    idle: Duration,
    /// The request's record, with the usage tap in it; taken when the stream ends. If the stream is dropped
    /// before (the client went away), dropping the record ends the request as cancelled.
    rec: Option<RequestRecord>,
    /// Bytes ready for the client.
    ready: VecDeque<Bytes>,
    /// Plugin bookkeeping: events seen, and each stream of text the answer carried.
    index: u32,
    streams: Streams,
    done: bool,
    /// Turns the upstream's events into the client's, when the upstream is of the other API family.
    translator: Option<translate::StreamTranslator>,
}

impl AnswerStream {
    fn new(endpoint: Endpoint, upstream: reqwest::Response, tap: UsageTap, idle: Duration, rec: RequestRecord) -> Self {
        crate::telemetry::metrics::METRICS.open_streams.inc();
        let mut rec = rec;
        rec.tap = Some(tap);
        AnswerStream {
            endpoint,
            upstream: Box::pin(upstream.bytes_stream()),
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

    fn into_stream(self) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
        futures_util::stream::unfold(self, |mut s| async move { s.next().await.map(|b| (Ok(b), s)) })
    }

    fn tap(&self) -> Option<&UsageTap> {
        self.rec.as_ref().and_then(|r| r.tap.as_ref())
    }

    /// The next bytes for the client, or `None` at the end.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Some(b);
            }
            if self.done {
                return None;
            }
            if let Some(ev) = self.parser.next_event() {
                self.on_upstream_event(ev).await;
                // The answer's last event: end here, so a client that closes right after it still counts as served.
                if !self.done && self.tap().is_some_and(|t| t.finished) {
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
                Ok(Some(Err(e))) => self.fail(ApiError::new(
                    ErrorKind::UpstreamFailed,
                    format!("the upstream connection broke mid-stream: {}", retry::describe_error(&e)),
                )),
                Ok(None) => {
                    // A last event without its final blank line is complete; one cut inside a line is dropped
                    // (never forwarded), so the error event below starts on an event boundary.
                    if !self.tap().is_some_and(|t| t.finished)
                        && let Some(last) = self.parser.finish()
                    {
                        self.on_upstream_event(last).await;
                        if self.done {
                            continue;
                        }
                    }
                    if self.tap().is_some_and(|t| t.finished) {
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
        let Some(rec) = self.rec.as_mut() else { return };
        let Some(tap) = rec.tap.as_mut() else { return };
        if tap.on_event(&ev, Instant::now()) == Verdict::Drop {
            return;
        }
        let capture = crate::telemetry::capture_content();
        let plugins = rec.chain.as_ref().is_some_and(Chain::reads_answer);
        if !plugins && !capture {
            self.ready.push_back(ev.raw);
            return;
        }
        let d = dialect::of(self.endpoint);
        let f = ev.fields();
        let event = f.event.map(str::to_string);
        let parsed: Option<serde_json::Value> =
            if f.data.starts_with('{') { serde_json::from_str(&f.data).ok() } else { None };
        let located = parsed.as_ref().map(|v| d.deltas(f.event, v)).unwrap_or_default();
        if capture && let Some(t) = dialect::answer_text(&located) {
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
        let Some(chain) = self.rec.as_mut().and_then(|r| r.chain.as_mut()) else { return };
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
        let keep = dialect::of(self.endpoint).repeats_text();
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
        let Some(chain) = self.rec.as_mut().and_then(|r| r.chain.as_mut()) else { return true };
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
        let d = dialect::of(self.endpoint);
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
        let d = dialect::of(self.endpoint);
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
        let seq = self.tap().map_or(0, |t| t.events);
        self.ready.push_back(e.sse_event(self.endpoint, seq));
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
    fn drop(&mut self) {
        crate::telemetry::metrics::METRICS.open_streams.dec();
    }
}

/// The prompt of a request body for `gen_ai.input.messages` (only with content capture on): the messages and, where
/// the API has them, the system prompt or instructions, as JSON.
fn input_messages(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut out = serde_json::Map::new();
    for key in ["system", "instructions", "messages", "input", "prompt"] {
        if let Some(x) = v.get(key) {
            out.insert(key.to_string(), x.clone());
        }
    }
    Some(serde_json::Value::Object(out).to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn body_passes_through_unless_rewritten() {
        let b = Bytes::from_static(br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#);
        let r = RequestBody::parse(&b, Endpoint::ChatCompletions).unwrap();
        assert!(!r.stream && !r.injected_usage);
        assert_eq!(r.render(None), b, "unchanged body is the same bytes");
        let v: serde_json::Value = serde_json::from_slice(&r.render(Some("other"))).unwrap();
        assert_eq!(v["model"], "other");
        assert_eq!(v["messages"][0]["content"], "hi");
    }

    #[test]
    fn injects_include_usage_keeping_other_options() {
        let b = Bytes::from_static(br#"{"model":"m","stream":true,"stream_options":{"x":1},"messages":[]}"#);
        let r = RequestBody::parse(&b, Endpoint::ChatCompletions).unwrap();
        assert!(r.stream && r.injected_usage);
        let v: serde_json::Value = serde_json::from_slice(&r.render(None)).unwrap();
        assert_eq!(v["stream_options"], serde_json::json!({"x": 1, "include_usage": true}));
        let b = Bytes::from_static(br#"{"model":"m","stream":true,"messages":[]}"#);
        let v: serde_json::Value =
            serde_json::from_slice(&RequestBody::parse(&b, Endpoint::ChatCompletions).unwrap().render(None)).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        let b = Bytes::from_static(br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#);
        let r = RequestBody::parse(&b, Endpoint::ChatCompletions).unwrap();
        assert!(!r.injected_usage, "the client asked itself");
        assert_eq!(r.render(None), b);
        let b = Bytes::from_static(br#"{"model":"m","stream":true}"#);
        assert!(!RequestBody::parse(&b, Endpoint::Messages).unwrap().injected_usage, "Anthropic always reports usage");
    }

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

    #[test]
    fn rejects_bad_bodies_clearly() {
        let msg = |s: &'static str| {
            RequestBody::parse(&Bytes::from_static(s.as_bytes()), Endpoint::Messages).err().unwrap().message
        };
        assert!(msg("{\"model\": ").contains("not valid JSON"));
        assert!(msg("[1,2]").contains("JSON object"));
        assert!(msg("{\"messages\":[]}").contains("no `model`"));
        assert!(msg("{\"model\":5}").contains("`model` must be a string"));
        assert!(msg("{\"model\":\"m\",\"stream\":\"yes\"}").contains("`stream` must be a boolean"));
    }
}
