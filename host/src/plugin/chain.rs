//! One request's run through the plugin chain: an instance per plugin (created at its first hook, kept until the
//! request ends; lifecycle in [`super::instance`]), each hook under its deadline, and each failure handled by the
//! plugin's failure policy.
//!
//! A plugin that fails (trap, deadline, memory cap, returned error, invalid decision) is not called again in this
//! request: its store may be dead. `fail-closed` turns the failure into a gateway error for this request only;
//! `fail-open` skips the plugin. Either way the failure stays with this request: it is counted once per request,
//! and only a plugin that fails across many requests is quarantined (see `registry.rs`). A request that is
//! cancelled (dropped at an await point) is neither a success nor a failure of any plugin.
//!
//! `on-complete` is owed to every plugin whose `on-request` started, however the request ended: it runs on the
//! plugin's own instance when that can still be entered, otherwise on a fresh one.
//!
//! Beside the plugins, a request may carry a shadow version's run for a plugin (`super::shadow`: called just before
//! the live version's hook, its decision compared, never applied) and its fixture (`super::fixtures`: what the chain
//! was given and decided, written at the end). A request with neither pays a few branches for them.
//!
//! Deadlines grow with the input a hook is given: `on-request` and a whole-body `on-chunk` get
//! [`DEADLINE_PER_MIB`] more per MiB of body, so a legitimately large prompt or answer is not a plugin failure.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire"; denied in plugin/mod.rs).
#![allow(
    clippy::indexing_slicing,
    reason = "every index is a plugin's position in `set.plugins`, and `slots`, `started` and `chunks` have one \
              entry per plugin, made together with the chain"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use wasmtime::Store;

use super::contract::HookResult;
use super::hook::Hook;
use super::host::{Asked, RequestSnapshot, State};
use super::instance::{CompleteOn, Live, Slot};
use super::registry::{LoadedPlugin, PluginSet};
use super::report::{ChunkTotals, HookCall, PluginReport};
use super::shadow::ShadowRun;
use super::types::{self, ChunkDecision, RequestDecision};
use crate::api::{Endpoint, Family};
use crate::config::{FailurePolicy, NEVER_FORWARDED};
use crate::error::{ApiError, ErrorKind};

/// Extra guest running time a hook gets per MiB of input (request body, or a whole non-streamed answer), on top of
/// its configured deadline.
pub const DEADLINE_PER_MIB: Duration = Duration::from_millis(100);

/// What the request looks like to `on-request`.
pub struct RequestView<'a> {
    pub id: &'a str,
    pub endpoint: Endpoint,
    pub headers: &'a http::HeaderMap,
    pub body: Bytes,
    pub model: String,
    pub stream: bool,
    /// A model-listing check (`GET /v1/models` asks the chain once per model; see `ingress::visible_models`).
    pub listing: bool,
}

impl RequestView<'_> {
    /// The request as plugins see it now (shared by their handles; rebuilt after a plugin changes it).
    fn snapshot(&self, family: Family, headers: &Arc<http::HeaderMap>, chain: &Chain) -> RequestSnapshot {
        let mut s = RequestSnapshot::new(
            self.id.to_string(),
            family,
            self.endpoint,
            self.model.clone(),
            self.stream,
            headers.clone(),
            self.body.clone(),
            chain.principal.clone(),
            chain.metadata.clone(),
        );
        s.listing = self.listing;
        s.asked = chain.asked.clone();
        s
    }
}

/// What the chain decided for a request.
#[derive(Default)]
pub struct RequestEffects {
    /// A new body (when any plugin replaced it).
    pub body: Option<Bytes>,
    /// A new model name.
    pub model: Option<String>,
    /// Headers to set on the upstream request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Upstream ids (with model rewrites) to try instead of the model's configured candidates.
    pub route: Option<Vec<(String, Option<String>)>>,
    /// Answer without calling an upstream.
    pub respond: Option<types::Response>,
    /// Answer in the client's API, whole or streamed, without calling an upstream (`reply`).
    pub reply: Option<types::Reply>,
    /// Headers for the client's response, whatever answers it (`request.add-response-header`).
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// The single-flight key a plugin gave (`request.coalesce`).
    pub coalesce: Option<String>,
}

/// The chain's verdict on one piece of the answer.
#[derive(Debug, PartialEq)]
pub enum ChunkVerdict {
    /// Forward, with the texts (one per piece of the chunk, in order) and/or the data replaced where `Some`.
    Forward {
        texts: Option<Vec<String>>,
        data: Option<String>,
    },
    Drop,
    Abort(String),
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.set.plugins.iter().map(|p| &p.name)).finish()
    }
}

/// One request's plugin instances.
pub struct Chain {
    set: Arc<PluginSet>,
    slots: Vec<Slot>,
    family: Family,
    pub principal: Option<types::Principal>,
    pub metadata: Vec<(String, String)>,
    /// Hook calls for spans (`on-chunk` only with `telemetry.chunk_spans`).
    calls: Vec<HookCall>,
    /// Per plugin: `on-chunk` calls and their total time.
    chunks: Vec<(u32, Duration)>,
    chunk_spans: bool,
    /// Whether any plugin reads the answer ([`Chain::reads_answer`]), decided once per request: it is asked per
    /// event.
    reads_answer: bool,
    /// Per plugin: whether its `on-request` started (it is then owed `on-complete`).
    started: Vec<bool>,
    /// Size of the input the current hook call is given, for its deadline.
    input_len: usize,
    /// Trace attributes and events recorded by fresh instances that ran `on-complete`.
    late_attributes: Vec<(String, String)>,
    late_events: Vec<(String, Instant)>,
    /// What plugins asked through the request resource, shared with the request snapshots they see.
    asked: Asked,
    /// The client's answer as it went out, kept for plugins granted `answer` (none without such a plugin).
    answer: Option<Capture>,
    /// Requests wait on this one's answer (`coalesce`): it is kept even without a plugin granted `answer`.
    sharing: bool,
    /// Per plugin: its shadow version's run, when it has one and this request is in its sample (empty when no
    /// plugin has a shadow, and until `on-request`: a listing check is never sampled).
    shadows: Vec<Option<ShadowRun>>,
    /// This request's fixture, when it is recorded (`[record]`, `super::fixtures`).
    fixture: Option<Box<crate::plugin::fixtures::Fixture>>,
}

/// The client's answer as the gateway sent it, up to the set's `answer_max` bytes.
#[derive(Default)]
struct Capture {
    status: u16,
    stream: bool,
    /// A whole body, or the framed events of a stream.
    parts: Vec<Bytes>,
    size: usize,
    /// Larger than the cap: nothing is given.
    over: bool,
}

/// The most of an answer kept for requests waiting on it (`coalesce`) when no plugin granted `answer` says more.
pub const ANSWER_CAPTURE_MIN: usize = super::kv::MAX_VALUE;

impl Chain {
    pub fn new(set: Arc<PluginSet>, family: Family) -> Chain {
        let slots = set.plugins.iter().map(|_| Slot::Idle).collect();
        let chunks = vec![(0, Duration::ZERO); set.plugins.len()];
        let chunk_spans = crate::telemetry::chunk_spans();
        let started = vec![false; set.plugins.len()];
        let reads_answer = set.plugins.iter().any(|p| p.hooks.calls(Hook::OnChunk));
        Chain {
            shadows: Vec::new(),
            fixture: None,
            set,
            slots,
            family,
            principal: None,
            metadata: Vec::new(),
            calls: Vec::new(),
            chunks,
            chunk_spans,
            reads_answer,
            started,
            input_len: 0,
            late_attributes: Vec::new(),
            late_events: Vec::new(),
            asked: Asked::default(),
            answer: None,
            sharing: false,
        }
    }

    /// Records this request as a fixture (`[record]`): what the chain is given and decides, written at its end.
    /// The answer is then read event by event, as for a plugin that reads it.
    pub fn record(&mut self, fixture: Box<crate::plugin::fixtures::Fixture>) {
        self.fixture = Some(fixture);
        self.reads_answer = true;
    }

    /// Whether this request is recorded (then the chain runs even without plugins).
    pub fn recording(&self) -> bool {
        self.fixture.is_some()
    }

    /// Whether a plugin is granted the client's answer (`answer`): then the answer is kept as it goes out.
    fn wants_answer(&self) -> bool {
        self.set.answer_max > 0
    }

    /// The answer to the client begins (status, whole or streamed): from here, what goes out is kept for plugins
    /// granted `answer`, and for requests waiting on this one (`coalesce`) ([`Chain::capture`]).
    pub fn capture_start(&mut self, status: u16, stream: bool) {
        if self.wants_answer() || self.sharing {
            self.answer = Some(Capture { status, stream, ..Capture::default() });
        }
    }

    /// This request's answer will be given to requests waiting on it (single flight): keep it.
    pub fn share_answer(&mut self) {
        self.sharing = true;
    }

    /// The answer as the client got it, complete and under the cap: (status, streamed, the bytes sent).
    pub fn sent_answer(&self) -> Option<(u16, bool, Bytes)> {
        let c = self.answer.as_ref().filter(|c| !c.over && !c.parts.is_empty())?;
        Some((c.status, c.stream, Bytes::from(c.parts.concat())))
    }

    /// Keeps bytes the client was sent: the whole body, or framed events.
    pub fn capture(&mut self, bytes: &Bytes) {
        let Some(c) = self.answer.as_mut().filter(|c| !c.over) else { return };
        c.size += bytes.len();
        if c.size > self.set.answer_max.max(ANSWER_CAPTURE_MIN) {
            c.over = true;
            c.parts = Vec::new();
            return;
        }
        c.parts.push(bytes.clone());
    }

    /// Headers plugins added for the client's response so far (taken: each is sent once).
    pub fn take_response_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        std::mem::take(&mut self.asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).response_headers)
    }

    /// The captured answer as the contract gives it, in the state `summary` says it ended in.
    fn client_answer(&self, summary: &types::Summary) -> Option<super::contract::AnswerOf> {
        use super::contract::{AnswerBody, AnswerState, SseEvent};
        let c = self.answer.as_ref().filter(|c| !c.over && !c.parts.is_empty())?;
        let body = if c.stream {
            let events = crate::sse::SseParser::events_of(c.parts.iter().map(|p| &p[..]));
            AnswerBody::Events(events.into_iter().map(|(event, data)| SseEvent { event, data }).collect())
        } else {
            AnswerBody::Whole(c.parts.concat())
        };
        let state = if summary.status >= 400 || (summary.error.is_some() && summary.outcome != "cancelled") {
            AnswerState::Failed
        } else if summary.partial || (summary.outcome != "ok" && summary.outcome != "cached") {
            AnswerState::Cut
        } else {
            AnswerState::Complete
        };
        Some(super::contract::AnswerOf { status: c.status, stream: c.stream, body, state })
    }

    /// Notes one hook call of plugin `i` (started at `start`) for metrics and spans.
    fn note(&mut self, i: usize, hook: Hook, start: Instant, outcome: &'static str, error: Option<String>) {
        let took = start.elapsed();
        self.set.plugins[i].metrics.call(hook, took);
        if let Hook::OnChunk = hook {
            let c = &mut self.chunks[i];
            c.0 += 1;
            c.1 += took;
            if !self.chunk_spans {
                return;
            }
        }
        self.calls.push(HookCall { plugin: i, hook, start, took, outcome, error });
    }

    pub fn is_empty(&self) -> bool {
        self.set.plugins.is_empty()
    }

    /// Whether any plugin of the chain reads the answer (declared `on-chunk`/`flush`). When none does, the answer
    /// goes through as if there were no chain: no per-event parse, no text extraction, no chunk built.
    pub fn reads_answer(&self) -> bool {
        self.reads_answer
    }

    /// The live instance of plugin `i`, creating it on first use, with the hook's deadline started. `Ok(None)`: the
    /// plugin is out for this request (failed, skipped, or its instance was left poisoned by a cancellation).
    async fn instance(&mut self, i: usize, hook: Hook) -> Result<Option<&mut Live>, ApiError> {
        let p = self.set.plugins[i].clone();
        if matches!(self.slots[i], Slot::Idle) {
            if let Some(until) = p.quarantined_for() {
                self.slots[i] = Slot::Skipped;
                let msg = format!("is quarantined for {until:?} more after failing in many requests");
                return match p.settings.failure {
                    FailurePolicy::FailOpen => Ok(None),
                    FailurePolicy::FailClosed => Err(plugin_error(&p, hook, &msg)),
                };
            }
            match super::instance::acquire(&p, self.input_len, self.principal.as_ref()).await {
                Ok(mut live) => {
                    if self.fixture.is_some() {
                        live.store.data_mut().kv_log = Some(Box::default());
                    }
                    self.slots[i] = Slot::Live(Box::new(live));
                }
                Err(msg) => {
                    self.fail(i, hook, &format!("could not be instantiated: {msg}"))?;
                    return Ok(None);
                }
            }
        }
        let live = self.slots[i].usable();
        if let Some(live) = live {
            live.start_hook(&p.settings, hook, self.input_len);
            return Ok(Some(live));
        }
        Ok(None)
    }

    /// Records a failure of plugin `i`, takes it out of this request, and applies its failure policy.
    fn fail(&mut self, i: usize, hook: Hook, msg: &str) -> Result<(), ApiError> {
        let p = &self.set.plugins[i];
        if let Slot::Live(mut live) = std::mem::replace(&mut self.slots[i], Slot::Failed) {
            live.drain_output(&p.name);
        }
        p.record_failure(&format!("{}: {msg}", hook.name()));
        p.metrics.failure(hook);
        tracing::warn!(target: "weir::plugin", plugin = %p.name, version = %p.version, hook = hook.name(), policy = ?p.settings.failure, "plugin failed: {msg}");
        match p.settings.failure {
            FailurePolicy::FailOpen => Ok(()),
            FailurePolicy::FailClosed => Err(plugin_error(p, hook, msg)),
        }
    }

    /// The one handler of a hook call's result: the call is noted (metrics, spans) with its decision's label or
    /// its failure, and a failure goes to [`Chain::fail`]. `Ok(Some(value))`: the hook's value; `Ok(None)`: the
    /// plugin failed and is out of this request (fail-open); `Err`: it failed and its policy is fail-closed.
    fn conclude<T>(
        &mut self,
        i: usize,
        hook: Hook,
        t0: Instant,
        judged: Result<T, Failure>,
        label: impl Fn(&T) -> &'static str,
    ) -> Result<Option<T>, ApiError> {
        match judged {
            Ok(value) => {
                self.note(i, hook, t0, label(&value), None);
                Ok(Some(value))
            }
            Err(f) => {
                self.note(i, hook, t0, f.label, Some(f.message.clone()));
                self.fail(i, hook, &f.message).map(|()| None)
            }
        }
    }

    /// Runs `on-request` through every plugin in order.
    pub async fn on_request(&mut self, view: &mut RequestView<'_>) -> Result<RequestEffects, ApiError> {
        let mut fx = RequestEffects::default();
        let headers = Arc::new(view.headers.clone());
        // Built once, shared by every plugin's handle; rebuilt when a plugin changes the request.
        let mut req = Arc::new(view.snapshot(self.family, &headers, self));
        if let Some(f) = self.fixture.as_mut().filter(|_| !view.listing) {
            f.request(view.id, self.family, view.endpoint, &view.model, view.stream, view.headers, &view.body);
        }
        if !view.listing && !self.set.shadows.is_empty() {
            let sampled = |s: &Arc<super::shadow::Shadow>| s.sampled().then(|| ShadowRun::new(s.clone()));
            self.shadows = self.set.shadows.iter().map(|s| s.as_ref().and_then(sampled)).collect();
        }
        for i in 0..self.set.plugins.len() {
            let p = self.set.plugins[i].clone();
            let t0 = Instant::now();
            self.input_len = req.body.len();
            self.started[i] = !p.is_quarantined();
            if self.instance(i, Hook::OnRequest).await?.is_none() {
                continue;
            }
            // A shadow version is given the request first, so that both read the same kv state.
            if let Some(Some(shadow)) = self.shadows.get_mut(i) {
                shadow.on_request(&req).await;
            }
            let (live, result) = match self.slots[i].shielded_on_request(&req).await {
                Some(done) => done,
                None => {
                    let gone = Err(Failure::new("failed", "on-request could not be started: its instance was gone"));
                    self.conclude(i, Hook::OnRequest, t0, gone, |_: &()| "")?;
                    continue;
                }
            };
            let judged = judge(result, &live.store, Hook::OnRequest, &p);
            self.slots[i] = Slot::Live(live);
            if let Some(Some(shadow)) = self.shadows.get_mut(i) {
                shadow.compare_request(judged.as_ref().ok());
            }
            let Some(decision) = self.conclude(i, Hook::OnRequest, t0, judged, request_label)? else { continue };
            if let Some(f) = self.fixture.as_mut() {
                f.decision(&p.name, &decision);
            }
            match decision {
                RequestDecision::Continue => {}
                RequestDecision::ContinueWith(c) => {
                    if let Err(msg) = self.apply_changes(c, view, &mut fx) {
                        self.fail(i, Hook::OnRequest, &msg)?;
                    }
                    req = Arc::new(view.snapshot(self.family, &headers, self).sharing_parse_with(&req));
                }
                RequestDecision::Route(targets) => {
                    if targets.is_empty() {
                        self.fail(i, Hook::OnRequest, "returned an empty route")?;
                        continue;
                    }
                    fx.route = Some(targets.into_iter().map(|t| (t.upstream, t.model)).collect());
                }
                RequestDecision::Respond(r) => {
                    fx.respond = Some(r);
                    fx.response_headers = self.take_response_headers();
                    return Ok(fx);
                }
                RequestDecision::Reply(r) => {
                    let mut headers = self.take_response_headers();
                    match rejection_headers(&r.headers) {
                        Ok(h) => headers.extend(h),
                        Err(msg) => {
                            self.fail(i, Hook::OnRequest, &msg)?;
                            continue;
                        }
                    }
                    fx.response_headers = headers;
                    fx.reply = Some(r);
                    return Ok(fx);
                }
                // Discovering the models plugins serve (a listing check for no model): every plugin is asked.
                RequestDecision::Reject(_) if view.listing && view.model.is_empty() => {}
                RequestDecision::Reject(r) => {
                    let p = &self.set.plugins[i];
                    let status = http::StatusCode::from_u16(r.status)
                        .ok()
                        .filter(|s| s.is_client_error() || s.is_server_error())
                        .unwrap_or(http::StatusCode::FORBIDDEN);
                    let headers = match rejection_headers(&r.headers) {
                        Ok(h) => h,
                        Err(msg) => {
                            self.fail(i, Hook::OnRequest, &msg)?;
                            continue;
                        }
                    };
                    tracing::debug!(target: "weir::plugin", plugin = %p.name, status = status.as_u16(), "request rejected by plugin");
                    let mut all = self.take_response_headers();
                    all.extend(headers);
                    return Err(ApiError { headers: all, ..ApiError::rejected(status, r.message) });
                }
            }
        }
        fx.response_headers = self.take_response_headers();
        fx.coalesce = self.asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).coalesce.take();
        Ok(fx)
    }

    /// Finishes the `on-request` calls that were still running when the request was dropped, taking back their
    /// instances ([`Slot::settle`]).
    async fn settle_in_flight(&mut self) {
        for i in 0..self.slots.len() {
            if let Some((live, e)) = self.slots[i].settle().await {
                let msg = super::instance::describe(&e, &live.store, Hook::OnRequest, &self.set.plugins[i]);
                // The request is gone: nobody to answer, so the policy's verdict is moot.
                let _ = self.fail(i, Hook::OnRequest, &msg);
            }
        }
    }

    fn apply_changes(
        &mut self,
        c: types::RequestChanges,
        view: &mut RequestView<'_>,
        fx: &mut RequestEffects,
    ) -> Result<(), String> {
        for h in c.set_headers {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| format!("returned an invalid header name {:?}", h.name))?;
            if NEVER_FORWARDED.contains(&name.as_str()) {
                return Err(format!("tried to set `{name}`, which only the gateway may set"));
            }
            let value = HeaderValue::from_str(&h.value)
                .map_err(|_| format!("returned an invalid value for header `{name}` (control characters?)"))?;
            fx.headers.retain(|(n, _)| n != name);
            fx.headers.push((name, value));
        }
        if let Some(body) = c.body {
            serde_json::from_slice::<serde::de::IgnoredAny>(&body)
                .map_err(|e| format!("returned a body that is not JSON: {e}"))?;
            view.body = Bytes::from(body);
            fx.body = Some(view.body.clone());
        }
        if let Some(m) = c.model {
            view.model.clone_from(&m);
            fx.model = Some(m);
        }
        for (k, v) in c.metadata {
            self.metadata.retain(|(key, _)| *key != k);
            self.metadata.push((k, v));
        }
        if c.principal.is_some() {
            self.principal = c.principal;
        }
        Ok(())
    }

    /// Runs one plugin's `on-chunk`. `Ok(None)`: the plugin is out (fail-open) and the chunk goes on unchanged.
    async fn chunk_one(&mut self, i: usize, chunk: &types::Chunk) -> Result<Option<ChunkDecision>, ApiError> {
        if !matches!(self.slots[i], Slot::Live(_)) || !self.set.plugins[i].hooks.calls(Hook::OnChunk) {
            return Ok(None);
        }
        let p = self.set.plugins[i].clone();
        let t0 = Instant::now();
        self.input_len = if chunk.whole_body { chunk.data.len() } else { 0 };
        let Some(live) = self.instance(i, Hook::OnChunk).await? else { return Ok(None) };
        live.begin_call();
        let result = live.bindings.on_chunk(&mut live.store, chunk).await;
        live.end_call();
        let judged = judge(result, &live.store, Hook::OnChunk, &p);
        self.conclude(i, Hook::OnChunk, t0, judged, chunk_label)
    }

    /// Runs `on-chunk` through the plugins from `from` on. Each sees what the previous ones made of the chunk.
    pub async fn on_chunk(&mut self, mut chunk: types::Chunk, from: usize) -> Result<ChunkVerdict, ApiError> {
        if let Some(f) = self.fixture.as_mut().filter(|_| from == 0) {
            f.chunk(&chunk);
        }
        let (mut texts, mut data) = (None, None);
        for i in from..self.set.plugins.len() {
            if let Some(Some(shadow)) = self.shadows.get_mut(i) {
                shadow.on_chunk(&chunk).await;
            }
            let decision = self.chunk_one(i, &chunk).await?;
            if let Some(Some(shadow)) = self.shadows.get_mut(i) {
                shadow.compare_chunk(decision.as_ref());
            }
            match decision {
                None | Some(ChunkDecision::Pass) => {}
                Some(ChunkDecision::ReplaceTexts(t)) => {
                    if t.len() != chunk.texts.len() {
                        let msg = format!(
                            "returned {} replacement texts for an event that has {}",
                            t.len(),
                            chunk.texts.len()
                        );
                        self.fail(i, Hook::OnChunk, &msg)?;
                        continue;
                    }
                    for (piece, new) in chunk.texts.iter_mut().zip(&t) {
                        piece.text.clone_from(new);
                    }
                    texts = Some(t);
                }
                Some(ChunkDecision::ReplaceData(d)) => {
                    chunk.data = d.clone();
                    data = Some(d);
                    texts = None;
                }
                Some(ChunkDecision::Drop | ChunkDecision::Hold) => return Ok(ChunkVerdict::Drop),
                Some(ChunkDecision::Abort(reason)) => {
                    let p = &self.set.plugins[i];
                    return Ok(ChunkVerdict::Abort(format!("the answer was stopped by plugin `{}`: {reason}", p.name)));
                }
            }
        }
        Ok(ChunkVerdict::Forward { texts, data })
    }

    /// At the end of one stream of text: each plugin's text held for that stream, passed through the plugins after
    /// it. Returns the texts to send, in order.
    pub async fn flush(&mut self, stream: types::TextStream) -> Result<Result<Vec<String>, String>, ApiError> {
        let mut out = Vec::new();
        for i in 0..self.set.plugins.len() {
            if !matches!(self.slots[i], Slot::Live(_)) || !self.set.plugins[i].hooks.calls(Hook::Flush) {
                continue;
            }
            let p = self.set.plugins[i].clone();
            if let Some(Some(shadow)) = self.shadows.get_mut(i) {
                shadow.flush(stream).await;
            }
            let t0 = Instant::now();
            self.input_len = 0;
            let Some(live) = self.instance(i, Hook::Flush).await? else { continue };
            live.begin_call();
            let result = live.bindings.flush(&mut live.store, stream).await;
            live.end_call();
            let judged = judge(result, &live.store, Hook::Flush, &p);
            let held = self.conclude(i, Hook::Flush, t0, judged, flush_label)?.flatten();
            if let Some(Some(shadow)) = self.shadows.get_mut(i) {
                shadow.compare_flush(held.as_deref());
            }
            let Some(text) = held.filter(|t| !t.is_empty()) else { continue };
            let chunk = types::Chunk {
                index: u32::MAX,
                event: None,
                data: String::new(),
                texts: vec![types::TextPiece { stream, text: text.clone() }],
                whole_body: false,
            };
            match self.on_chunk(chunk, i + 1).await? {
                ChunkVerdict::Forward { texts, .. } => {
                    out.push(texts.and_then(|t| t.into_iter().next()).unwrap_or(text))
                }
                ChunkVerdict::Drop => {}
                ChunkVerdict::Abort(reason) => return Ok(Err(reason)),
            }
        }
        Ok(Ok(out))
    }

    /// The completion phase's plugin part: `on-complete` for every plugin whose `on-request` started — on its own
    /// instance when that can still be entered, else on a fresh one — then each plugin's request counted as a
    /// success or a failure (a cancelled request counts as neither). Returns the chain for its trace attributes;
    /// [`Chain::release`] it after.
    pub async fn on_complete(mut self, summary: types::Summary, cancelled: bool) -> Chain {
        self.settle_in_flight().await;
        let mut summary = summary;
        summary.principal = self.principal.clone();
        summary.metadata = self.metadata.clone();
        let answer = self.client_answer(&summary);
        let answer_len = self.answer.as_ref().filter(|_| answer.is_some()).map_or(0, |c| c.size);
        if let Some(mut f) = self.fixture.take() {
            for (slot, p) in self.slots.iter_mut().zip(&self.set.plugins) {
                if let Slot::Live(live) = slot
                    && let Some(log) = live.store.data_mut().kv_log.take()
                {
                    f.kv(&p.name, log.reads);
                }
            }
            f.finish(&summary);
        }
        for i in 0..self.set.plugins.len() {
            let p = self.set.plugins[i].clone();
            let reads_answer = p.settings.capabilities.contains(&crate::config::Capability::Answer);
            // A plugin given the answer may hold it and a copy or two: memory and time grow with it, as for a body.
            let input = if reads_answer { answer_len } else { 0 };
            let t0 = Instant::now();
            let mut fresh_live;
            let owed = self.started[i] && p.hooks.calls(Hook::OnComplete);
            let (live, is_fresh) = match self.slots[i].complete_on(owed) {
                CompleteOn::Nothing => continue,
                CompleteOn::Own(live) => {
                    live.start_hook(&p.settings, Hook::OnComplete, input);
                    (live, false)
                }
                CompleteOn::Fresh => match super::instance::fresh(&p, input).await {
                    Ok(live) => {
                        fresh_live = live;
                        fresh_live.start_hook(&p.settings, Hook::OnComplete, input);
                        (&mut fresh_live, true)
                    }
                    Err(msg) => {
                        let failed =
                            Err(Failure::new("failed", format!("could not be instantiated for on-complete: {msg}")));
                        let _ = self.conclude(i, Hook::OnComplete, t0, failed, |()| "ok");
                        continue;
                    }
                },
            };
            live.store.data_mut().settling = true;
            if reads_answer {
                live.store.data_mut().answer.clone_from(&answer);
            }
            live.begin_call();
            let result = live.bindings.on_complete(&mut live.store, &summary).await;
            live.end_call();
            live.store.data_mut().answer = None;
            let judged = judge(result.map(Ok), &live.store, Hook::OnComplete, &p);
            if is_fresh {
                // A fresh instance: keep what it recorded for the trace.
                let data = live.store.data_mut();
                self.late_attributes.append(&mut data.attributes);
                self.late_events.append(&mut data.events);
            }
            if is_fresh && matches!(self.slots[i], Slot::Poisoned) {
                p.record_cancelled_mid_call();
            }
            // After `on-complete` the request has its answer: a fail-closed failure here changes nothing for it.
            let _ = self.conclude(i, Hook::OnComplete, t0, judged, |()| "ok");
        }
        for shadow in std::mem::take(&mut self.shadows).into_iter().flatten() {
            shadow.on_complete(&summary, answer.as_ref(), answer_len).await;
        }
        for (i, slot) in self.slots.iter().enumerate() {
            let p = &self.set.plugins[i];
            match slot {
                Slot::Failed => p.record_request(false),
                Slot::Live(_) if !cancelled => p.record_request(true),
                _ => {}
            }
        }
        self
    }

    /// Releases the instances after `on-complete` ([`Slot::release`]: back to the pool where isolation allows, before
    /// the request's log line is written, so a client that saw the line can count on the instance being back).
    /// What the instances recorded for the trace is kept in the chain, for the report.
    pub fn release(&mut self) {
        for (mut slot, p) in std::mem::take(&mut self.slots).into_iter().zip(&self.set.plugins) {
            if let Slot::Live(live) = &mut slot {
                let data = live.store.data_mut();
                self.late_attributes.append(&mut data.attributes);
                self.late_events.append(&mut data.events);
            }
            slot.release(p, self.principal.as_ref());
        }
    }

    /// Tops up each plugin's reserve of fresh instances; run by the completion phase, off the response path, after
    /// [`Chain::release`] freed this request's instances ([`super::instance::refill`]).
    pub fn refill(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        super::instance::refill(self.set.clone())
    }

    /// What the plugins did in this request, as a value for the log line, spans and metrics: made after
    /// `on-complete` and [`Chain::release`] (then everything the instances recorded is in the chain), or without
    /// them when a request ends outside the runtime.
    pub fn into_report(mut self) -> PluginReport {
        let mut attributes = self.collect_live(|s| &s.attributes);
        attributes.append(&mut self.late_attributes);
        let mut events = self.collect_live(|s| &s.events);
        events.append(&mut self.late_events);
        let plugins = self.set.identities.clone();
        let chunks = (self.chunks.iter().enumerate())
            .filter(|(_, (calls, _))| *calls > 0)
            .map(|(plugin, &(calls, total))| ChunkTotals { plugin, calls, total })
            .collect();
        PluginReport { plugins, attributes, events, chunks, calls: std::mem::take(&mut self.calls) }
    }

    /// What each live instance recorded, in plugin order.
    fn collect_live<T: Clone>(&self, field: impl Fn(&State) -> &Vec<T>) -> Vec<T> {
        self.slots
            .iter()
            .filter_map(|s| match s {
                Slot::Live(l) => Some(field(l.store.data()).iter().cloned()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

/// A failed hook call: its label for spans (`error`: the plugin returned an error; `failed`: it trapped, ran out
/// of time or memory, or could not run) and the message.
pub(super) struct Failure {
    label: &'static str,
    pub(super) message: String,
}

impl Failure {
    fn new(label: &'static str, message: impl Into<String>) -> Failure {
        Failure { label, message: message.into() }
    }
}

/// A hook call's result as the chain handles it: the value, or why the call failed, in words.
pub(super) fn judge<T>(
    result: HookResult<T>,
    store: &Store<State>,
    hook: Hook,
    p: &LoadedPlugin,
) -> Result<T, Failure> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Failure::new("error", format!("returned an error: {e}"))),
        Err(e) => Err(Failure::new("failed", super::instance::describe(&e, store, hook, p))),
    }
}

pub(super) fn request_label(d: &RequestDecision) -> &'static str {
    match d {
        RequestDecision::Continue => "continue",
        RequestDecision::ContinueWith(_) => "continue-with",
        RequestDecision::Route(_) => "route",
        RequestDecision::Respond(_) => "respond",
        RequestDecision::Reject(_) => "reject",
        RequestDecision::Reply(_) => "reply",
    }
}

pub(super) fn chunk_label(d: &ChunkDecision) -> &'static str {
    match d {
        ChunkDecision::Pass => "pass",
        ChunkDecision::ReplaceTexts(_) => "replace-texts",
        ChunkDecision::ReplaceData(_) => "replace-data",
        ChunkDecision::Drop => "drop",
        ChunkDecision::Hold => "hold",
        ChunkDecision::Abort(_) => "abort",
    }
}

fn flush_label(held: &Option<String>) -> &'static str {
    if held.as_deref().is_some_and(|t| !t.is_empty()) { "flushed" } else { "nothing-held" }
}

/// A rejection's headers, checked: never credentials, cookies, hop-by-hop or `content-*` headers.
fn rejection_headers(headers: &[types::Header]) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    headers.iter().map(|h| client_header(&h.name, &h.value)).collect()
}

/// A header a plugin puts on the client's response (a rejection's, a reply's, `add-response-header`): credentials,
/// cookies, hop-by-hop, `content-*` and the gateway's own are refused, with why.
pub(crate) fn client_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("gave a response header `{name}` that is not a header name"))?;
    let n = name.as_str();
    if NEVER_FORWARDED.contains(&n)
        || n.starts_with("content-")
        || n == "set-cookie"
        || n == "x-weir-error-source"
        || n == "x-request-id"
    {
        return Err(format!("gave a response header `{n}`, which plugins may not set"));
    }
    let value =
        HeaderValue::from_str(value).map_err(|_| format!("gave a response header `{n}` with an invalid value"))?;
    Ok((name, value))
}

fn plugin_error(p: &LoadedPlugin, hook: Hook, msg: &str) -> ApiError {
    ApiError::new(
        ErrorKind::PluginFailed,
        format!("plugin `{}` {msg} (in {}; policy fail-closed)", p.name, hook.name()),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    //! The chain over real components: `misbehave` (tests/guests) fails on demand, by request header.
    use super::*;
    use crate::config::PluginSettings;
    use crate::plugin::registry::testing;

    fn settings(failure: FailurePolicy) -> PluginSettings {
        let mut s = PluginSettings { failure, ..PluginSettings::default() };
        s.timeouts.on_request = Duration::from_millis(50);
        s
    }

    fn plugin(name: &str, failure: FailurePolicy) -> Arc<LoadedPlugin> {
        testing::load(name, "misbehave", settings(failure))
    }

    /// Runs `on-request` with `x-misbehave: <mode>` (none when empty).
    async fn on_request(chain: &mut Chain, mode: &str) -> Result<RequestEffects, ApiError> {
        let mut headers = http::HeaderMap::new();
        if !mode.is_empty() {
            headers.insert("x-misbehave", HeaderValue::from_str(mode).unwrap());
        }
        let mut view = RequestView {
            id: "req_test",
            endpoint: Endpoint::ChatCompletions,
            headers: &headers,
            body: Bytes::from_static(br#"{"model":"m","messages":[]}"#),
            model: "m".into(),
            stream: false,
            listing: false,
        };
        chain.on_request(&mut view).await
    }

    fn summary() -> types::Summary {
        types::Summary {
            request_id: "req_test".into(),
            model: "m".into(),
            status: 200,
            outcome: "ok".into(),
            upstream: None,
            attempts: 1,
            usage: types::Usage {
                input_tokens: None,
                output_tokens: None,
                cached_tokens: None,
                reasoning_tokens: None,
            },
            ttft_ms: None,
            duration_ms: 1.0,
            principal: None,
            metadata: Vec::new(),
            error: None,
            partial: false,
        }
    }

    /// (plugin, hook, outcome) of each noted call.
    fn calls(r: &PluginReport) -> Vec<(String, &'static str, &'static str)> {
        r.calls.iter().map(|c| (r.identity(c).0.to_string(), c.hook.name(), c.outcome)).collect()
    }

    #[tokio::test]
    async fn a_trap_fails_closed_naming_the_plugin_and_hook() {
        let set = testing::set(vec![plugin("strict", FailurePolicy::FailClosed)]);
        let mut chain = Chain::new(set, Family::OpenAi);
        let e = on_request(&mut chain, "trap").await.err().expect("fail-closed");
        assert_eq!(e.kind, ErrorKind::PluginFailed);
        assert!(e.message.starts_with("plugin `strict` trapped"), "{}", e.message);
        assert!(e.message.ends_with("(in on-request; policy fail-closed)"), "{}", e.message);
    }

    #[tokio::test]
    async fn fail_open_skips_the_plugin_and_still_owes_it_on_complete() {
        let set =
            testing::set(vec![plugin("lenient", FailurePolicy::FailOpen), plugin("next", FailurePolicy::FailClosed)]);
        let mut chain = Chain::new(set.clone(), Family::OpenAi);
        // Both plugins read the same header: `error` makes each return its own error.
        let fx = on_request(&mut chain, "").await.unwrap();
        assert!(fx.respond.is_none() && fx.route.is_none());
        let mut chain = Chain::new(set, Family::OpenAi);
        let _ = on_request(&mut chain, "error").await.err().expect("the second plugin is fail-closed");
        let mut chain = chain.on_complete(summary(), false).await;
        chain.release();
        let report = chain.into_report();
        assert_eq!(
            calls(&report),
            [
                ("lenient".into(), "on-request", "error"),
                ("next".into(), "on-request", "error"),
                ("lenient".into(), "on-complete", "ok"),
                ("next".into(), "on-complete", "ok"),
            ],
            "on-complete is owed to both, on fresh instances: their own were failed"
        );
        assert_eq!(report.calls[0].error.as_deref(), Some("returned an error: asked to fail"));
    }

    #[tokio::test]
    async fn a_deadline_is_a_failure_with_the_deadline_in_words() {
        let set = testing::set(vec![plugin("spin", FailurePolicy::FailClosed)]);
        let mut chain = Chain::new(set, Family::OpenAi);
        let e = on_request(&mut chain, "loop").await.err().expect("fail-closed");
        assert!(e.message.contains("exceeded its on-request deadline of 50ms"), "{}", e.message);
    }

    #[tokio::test]
    async fn an_on_request_dropped_mid_call_is_finished_before_on_complete() {
        let set = testing::set(vec![plugin("spin", FailurePolicy::FailClosed)]);
        let mut chain = Chain::new(set, Family::OpenAi);
        // The guest spins until its 50 ms deadline, yielding at each epoch tick: the request gives up first.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), on_request(&mut chain, "loop")).await;
        assert!(gave_up.is_err(), "the call was still running");
        assert!(matches!(chain.slots[0], Slot::InFlight(_)), "the call stays with the slot");
        let mut chain = chain.on_complete(summary(), true).await;
        chain.release();
        let report = chain.into_report();
        // The completion phase finished the call (it hit its deadline), then ran on-complete on a fresh instance.
        assert_eq!(calls(&report), [("spin".into(), "on-complete", "ok")]);
    }

    #[tokio::test]
    async fn a_quarantined_plugin_is_skipped_or_refuses_by_its_policy() {
        for (policy, refused) in [(FailurePolicy::FailOpen, false), (FailurePolicy::FailClosed, true)] {
            let p = plugin("flaky", policy);
            for _ in 0..100 {
                p.record_request(false);
            }
            assert!(p.is_quarantined());
            let mut chain = Chain::new(testing::set(vec![p]), Family::OpenAi);
            let r = on_request(&mut chain, "").await;
            assert_eq!(r.is_err(), refused, "{policy:?}");
            if let Err(e) = r {
                assert!(e.message.contains("is quarantined for"), "{}", e.message);
            }
            let report = chain.on_complete(summary(), false).await.into_report();
            assert!(report.calls.is_empty(), "a skipped plugin is never called, on-complete included");
        }
    }
}
