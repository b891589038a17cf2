//! One proxied request from body to log line, as a driver over phases, each a module or function of its own:
//!
//! 1. **intake** ([`intake`]): the body read within `limits` (size, time, nesting);
//! 2. **parse**: the body as the gateway reads it ([`crate::dialect::body::RequestBody`]), once (again only when a
//!    plugin rewrote it);
//! 3. **plugins on the request** ([`on_request`]): `on-request` of the chain (when plugins are configured), which may
//!    answer, rewrite the body or the model, set headers, or route;
//! 4. **plan** ([`plan`]): the model's candidates (or the plugins' route), ordered by health and family, each with
//!    the body it is sent (translated once per upstream kind of the other family);
//! 5. **attempt** ([`crate::upstream::retry`]): retries and failover, before any byte reaches the client; its final
//!    failure becomes the client's answer in [`failure`];
//! 6. **answer** ([`answer`]): whole (through `on-chunk` once) or streamed event by event, through the usage tap;
//! 7. **completion** (`crate::completion`): `on-complete`, off the response path, then the log line, spans and
//!    metrics from the frozen record.
//!
//! The [`RequestRecord`] collects what happened; it is finished here, or handed to the answer stream, which
//! finishes it when the stream ends (or is dropped: the client went away).

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod answer;
mod failure;
mod intake;
mod plan;
mod reply;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use crate::api::Endpoint;
use crate::config::Config;
use crate::dialect::body::RequestBody;
use crate::dialect::translate;
use crate::error::{ApiError, ErrorKind};
use crate::plugin::{Chain, Registry, RequestEffects, RequestView};
use crate::record::{Outcome, RequestRecord};
use crate::upstream::retry;
use crate::upstream::{AttemptRequest, Upstreams};
use crate::usage::UsageTap;

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
        upstream: crate::provider::ByteStream,
        tap: UsageTap,
        translator: Option<translate::StreamTranslator>,
    },
}

/// Handles one request to a proxied endpoint. The record is finished here, or handed to the stream.
pub async fn proxy(app: Arc<App>, endpoint: Endpoint, headers: HeaderMap, body: Body) -> Response {
    let mut rec = RequestRecord::new(endpoint, crate::completion::complete);
    rec.trace = crate::telemetry::tracer().map(|t| t.begin(&headers));
    // One snapshot of the plugin set for the whole request, streams included.
    rec.chain = app.plugins.as_ref().map(|r| Chain::new(r.snapshot(), endpoint.family())).filter(|c| !c.is_empty());
    // A recorded request (`[record]`) goes through the chain even when there are no plugins: that is where the
    // fixture is filled in.
    if let Some(fixture) = crate::plugin::fixtures::sampled(endpoint) {
        let family = endpoint.family();
        rec.chain.get_or_insert_with(|| Chain::new(Default::default(), family)).record(fixture);
    }
    // Request ids are `req_` and hex digits: always a valid header value.
    let request_id = HeaderValue::from_str(&rec.request_id).unwrap_or(HeaderValue::from_static("req_unknown"));
    let result = run(&app, endpoint, &headers, body, &mut rec).await;
    // Headers plugins added for the client (`request.add-response-header`), whatever answers.
    let added = std::mem::take(&mut rec.response_headers);
    let mut resp = match result {
        Ok(Forward::Whole(resp)) => {
            rec.finish();
            resp
        }
        Ok(Forward::Stream { mut resp, upstream, tap, translator }) => {
            let mut stream = answer::AnswerStream::new(endpoint, upstream, tap, app.config.timeouts.idle, rec);
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
    for (name, value) in added {
        resp.headers_mut().append(name, value);
    }
    resp.headers_mut().insert("x-request-id", request_id);
    resp
}

/// The request body, read whole within `limits.max_body` and `limits.body_timeout`.
pub async fn read_body(app: &App, headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, ApiError> {
    let limits = &app.config.limits;
    match tokio::time::timeout(limits.body_timeout, intake::read_body(headers, body, limits.max_body)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            ErrorKind::RequestTimeout,
            format!("the request body did not arrive within {:?} (limits.body_timeout)", limits.body_timeout),
        )),
    }
}

async fn run(
    app: &Arc<App>,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Body,
    rec: &mut RequestRecord,
) -> Result<Forward, ApiError> {
    let limits = &app.config.limits;
    let bytes = read_body(app, headers, body).await?;
    intake::check_depth(&bytes, limits.max_json_depth)?;
    // Parsed once; again only when a plugin rewrote the body or the model.
    let parsed = RequestBody::parse(&bytes, endpoint)?;
    rec.model = Some(parsed.model.to_string());
    rec.stream = parsed.stream;
    let (rewritten, mut effects) = match on_request(endpoint, headers, &bytes, &parsed, rec).await? {
        OnRequest::Answered(resp) => return Ok(Forward::Whole(resp)),
        OnRequest::Continue(rewritten, effects) => (rewritten, effects),
    };
    if let Some(key) = effects.coalesce.take() {
        match crate::flight::join(key) {
            crate::flight::Join::Leader(leader) => {
                rec.flight = Some(leader);
                if let Some(c) = rec.chain.as_mut() {
                    c.share_answer();
                }
            }
            crate::flight::Join::Follower(f) => {
                if let Some(shared) = f.answer(app.config.plugin_runtime.coalesce_wait).await {
                    let resp = reply::shared(endpoint, parsed.stream, asks_usage(endpoint, &parsed), &shared, rec)?;
                    return Ok(Forward::Whole(resp));
                }
            }
        }
    }
    let (bytes, req) = match &rewritten {
        None => (&bytes, parsed),
        Some(b) => {
            let req = RequestBody::parse(b, endpoint)?;
            rec.model = Some(req.model.to_string());
            rec.stream = req.stream;
            (b, req)
        }
    };
    if crate::telemetry::capture_content() {
        rec.input_capture = input_messages(bytes);
    }
    let plan = plan::Plan::new(app, endpoint, &req, bytes, effects.route.take())?;
    let body_for = |p: &crate::upstream::Planned| plan.body_for(app, &req, p);
    let attempt = AttemptRequest {
        endpoint,
        model: &req.model,
        client_headers: headers,
        extra_headers: &effects.headers,
        stream: req.stream,
        body_for: &body_for,
        trace: rec.trace.as_ref(),
    };
    let outcome = retry::run(&app.upstreams, &app.config.retry, &plan.candidates, &attempt).await;
    rec.attempts = outcome.attempts;
    match outcome.result {
        Ok(answer) => {
            let tap = UsageTap::new(endpoint, req.injected_usage);
            answer::forward(app, endpoint, answer, tap, plan.back(), rec).await
        }
        Err(f) => failure::failure_response(app, f, rec),
    }
}

/// What the plugins made of the request.
// Built and moved once per request; boxing the larger variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum OnRequest {
    /// A plugin answered (or refused) it: this is the response.
    Answered(Response),
    /// On, with the body a plugin rewrote (its own, or the client's with another model), if one did, and the
    /// plugins' other effects.
    Continue(Option<Bytes>, RequestEffects),
}

/// The chain's `on-request` (nothing without a chain), over the request as parsed (malformed input was refused
/// before any plugin sees it).
async fn on_request(
    endpoint: Endpoint,
    headers: &HeaderMap,
    bytes: &Bytes,
    parsed: &RequestBody<'_>,
    rec: &mut RequestRecord,
) -> Result<OnRequest, ApiError> {
    let Some(chain) = rec.chain.as_mut() else { return Ok(OnRequest::Continue(None, RequestEffects::default())) };
    let mut view = RequestView {
        id: &rec.request_id,
        endpoint,
        headers,
        body: bytes.clone(),
        model: parsed.model.to_string(),
        stream: parsed.stream,
        listing: false,
    };
    let mut effects = chain.on_request(&mut view).await?;
    rec.principal = chain.principal.as_ref().map(|p| p.id.clone());
    rec.response_headers = std::mem::take(&mut effects.response_headers);
    if let Some(r) = effects.respond.take() {
        rec.status = r.status;
        rec.outcome = Outcome::Ok;
        rec.model = Some(view.model);
        return Ok(OnRequest::Answered(plugin_response(r)));
    }
    if let Some(r) = effects.reply.take() {
        rec.model = Some(view.model);
        let usage = asks_usage(endpoint, parsed);
        return Ok(OnRequest::Answered(reply::respond(endpoint, parsed.stream, usage, r, rec)?));
    }
    // A plugin that changes the body also changes `view.body`; with only the model changed, the body is the
    // client's, already parsed.
    let rewritten = match (effects.body.take(), &effects.model) {
        (None, None) => return Ok(OnRequest::Continue(None, effects)),
        (None, Some(m)) => parsed.render(Some(m)),
        (Some(body), None) => body,
        (Some(body), Some(m)) => RequestBody::parse(&body, endpoint)?.render(Some(m)),
    };
    Ok(OnRequest::Continue(Some(rewritten), effects))
}

/// Whether a streaming chat client asked for the usage chunk (otherwise the gateway asks for it upstream and hides
/// it): an answer the gateway makes itself, a plugin's reply, has it only when asked.
fn asks_usage(endpoint: Endpoint, parsed: &RequestBody<'_>) -> bool {
    endpoint == Endpoint::ChatCompletions && parsed.stream && !parsed.injected_usage
}

/// A plugin's own answer.
fn plugin_response(r: crate::plugin::types::Response) -> Response {
    let mut resp = Response::new(Body::from(r.body));
    *resp.status_mut() = http::StatusCode::from_u16(r.status).unwrap_or(http::StatusCode::OK);
    let ct = r.content_type.as_deref().and_then(|c| HeaderValue::from_str(c).ok());
    resp.headers_mut().insert(header::CONTENT_TYPE, ct.unwrap_or(HeaderValue::from_static("application/json")));
    resp
}

fn set_upstream_header(h: &mut HeaderMap, upstream_id: &str) {
    if let Ok(v) = HeaderValue::from_str(upstream_id) {
        h.insert("x-weir-upstream", v);
    }
}

/// Request validation as the pipeline does it, for the fuzz targets: the depth check, the parse, and the rewrites
/// (model renamed, usage injected) that an upstream attempt renders.
pub(crate) fn validate_for_fuzzing(body: &Bytes, endpoint: Endpoint, max_depth: usize) -> Result<usize, ApiError> {
    intake::check_depth(body, max_depth)?;
    let req = RequestBody::parse(body, endpoint)?;
    Ok(req.render(None).len() + req.render(Some("fuzz-model")).len())
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
