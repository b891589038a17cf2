//! The per-request record: everything the gateway learns about one request, logged as exactly one structured line
//! when the request ends — normally, with an error, or because the client went away (then marked `partial`).
//!
//! The record holds no prompt or completion text and no credentials, only ids, counts and timings.

use std::time::{Duration, Instant};

use crate::api::Endpoint;
use crate::error::Source;
use crate::plugin::Chain;
use crate::plugin::bindings::types;
use crate::telemetry::trace::TraceCtx;
use crate::upstream::retry::AttemptLog;
use crate::usage::UsageTap;

/// How a request ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    ClientError,
    UpstreamError,
    GatewayError,
    /// The client disconnected before the answer was complete.
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientError => "client_error",
            Outcome::UpstreamError => "upstream_error",
            Outcome::GatewayError => "gateway_error",
            Outcome::Cancelled => "cancelled",
        }
    }

    pub fn from_source(s: Source) -> Outcome {
        match s {
            Source::Client => Outcome::ClientError,
            Source::Upstream => Outcome::UpstreamError,
            Source::Gateway => Outcome::GatewayError,
        }
    }
}

/// One request's record. Dropping it unfinished logs it as cancelled.
#[derive(Debug)]
pub struct RequestRecord {
    pub request_id: String,
    pub endpoint: Endpoint,
    pub started: Instant,
    pub model: Option<String>,
    /// The model name sent to the upstream that answered, when routing rewrote it.
    pub upstream_model: Option<String>,
    pub stream: bool,
    pub upstream: Option<String>,
    pub upstream_request_id: Option<String>,
    pub attempts: Vec<AttemptLog>,
    pub status: u16,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub tap: Option<UsageTap>,
    /// The principal id a plugin established (never a key).
    pub principal: Option<String>,
    /// This request's plugin instances; `on-complete` runs on them after the record is logged.
    pub chain: Option<Chain>,
    /// The trace context, when tracing is on.
    pub trace: Option<TraceCtx>,
    /// The API of the upstream that answered (`gen_ai.provider.name`).
    pub provider: Option<&'static str>,
    /// Prompt and completion text, only with `telemetry.capture_content`.
    pub input_capture: Option<String>,
    pub output_capture: Option<String>,
    logged: bool,
}

impl RequestRecord {
    pub fn new(endpoint: Endpoint) -> RequestRecord {
        RequestRecord {
            request_id: format!("req_{:016x}", fastrand::u64(..)),
            endpoint,
            started: Instant::now(),
            model: None,
            upstream_model: None,
            stream: false,
            upstream: None,
            upstream_request_id: None,
            attempts: Vec::new(),
            status: 0,
            outcome: Outcome::Cancelled,
            error: None,
            tap: None,
            principal: None,
            chain: None,
            trace: None,
            provider: None,
            input_capture: None,
            output_capture: None,
            logged: false,
        }
    }

    /// Logs the record (once).
    pub fn finish(mut self) {
        self.log();
    }

    fn log(&mut self) {
        if std::mem::replace(&mut self.logged, true) {
            return;
        }
        let end = Instant::now();
        let duration = end - self.started;
        let tap = self.tap.as_ref();
        let usage = tap.map(|t| t.usage).unwrap_or_default();
        let first = tap.and_then(|t| t.first_token_at);
        let tokens_per_s = match (first, usage.output_tokens) {
            (Some(f), Some(out)) if end > f && out > 0 => {
                Some(((out as f64 / (end - f).as_secs_f64()) * 10.0).round() / 10.0)
            }
            _ => None,
        };
        let line = Line {
            request_id: std::mem::take(&mut self.request_id),
            endpoint: self.endpoint,
            model: self.model.take(),
            upstream_model: self.upstream_model.take(),
            stream: self.stream,
            status: self.status,
            outcome: self.outcome,
            upstream: self.upstream.take(),
            upstream_request_id: self.upstream_request_id.take(),
            attempts: std::mem::take(&mut self.attempts),
            response_model: tap.and_then(|t| t.response_model.clone()),
            response_id: tap.and_then(|t| t.response_id.clone()),
            finish_reason: tap.and_then(|t| t.finish_reason.clone()),
            usage,
            events: tap.map(|t| t.events),
            ttft_ms: first.map(|f| ms(f - self.started)),
            tokens_per_s,
            duration_ms: ms(duration),
            error: self.error.take(),
            principal: self.principal.take(),
            trace: self.trace.take(),
            provider: self.provider,
            input_capture: self.input_capture.take(),
            output_capture: self.output_capture.take(),
            ended: end,
        };
        let Some(chain) = self.chain.take() else {
            line.emit(None);
            return crate::telemetry::finish(&line, None);
        };
        let rt = match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt,
            Err(_) => {
                line.emit(Some(&chain));
                return crate::telemetry::finish(&line, Some(&chain));
            }
        };
        // `on-complete` runs off the response path (accounting never delays the client), and the line is written
        // after it, so attributes that plugins set there (a request's cost) are on it.
        rt.spawn(async move {
            let chain = chain.on_complete(line.summary()).await;
            line.emit(Some(&chain));
            crate::telemetry::finish(&line, Some(&chain));
            chain.release();
        });
    }
}

/// The owned contents of a request's log line (and of its spans and metrics).
pub struct Line {
    pub request_id: String,
    pub endpoint: Endpoint,
    pub model: Option<String>,
    pub upstream_model: Option<String>,
    pub stream: bool,
    pub status: u16,
    pub outcome: Outcome,
    pub upstream: Option<String>,
    pub upstream_request_id: Option<String>,
    pub attempts: Vec<AttemptLog>,
    pub response_model: Option<String>,
    pub response_id: Option<String>,
    pub finish_reason: Option<String>,
    pub usage: crate::usage::Usage,
    pub events: Option<u64>,
    pub ttft_ms: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub duration_ms: f64,
    pub error: Option<String>,
    pub principal: Option<String>,
    pub trace: Option<TraceCtx>,
    pub provider: Option<&'static str>,
    pub input_capture: Option<String>,
    pub output_capture: Option<String>,
    pub ended: Instant,
}

impl Line {
    fn summary(&self) -> types::Summary {
        let u = &self.usage;
        types::Summary {
            request_id: self.request_id.clone(),
            model: self.upstream_model.clone().or_else(|| self.model.clone()).unwrap_or_default(),
            status: self.status,
            outcome: self.outcome.as_str().to_string(),
            upstream: self.upstream.clone(),
            attempts: self.attempts.len() as u32,
            usage: types::Usage {
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
                cached_tokens: u.cached_tokens,
                reasoning_tokens: u.reasoning_tokens,
            },
            ttft_ms: self.ttft_ms,
            duration_ms: self.duration_ms,
            principal: None,
            error: self.error.clone(),
            partial: self.outcome == Outcome::Cancelled,
        }
    }

    fn emit(&self, chain: Option<&Chain>) {
        let attributes = chain
            .map(|c| c.attributes())
            .filter(|a| !a.is_empty())
            .map(|a| a.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","));
        let u = &self.usage;
        tracing::info!(
            target: "weir::request",
            request_id = %self.request_id,
            endpoint = self.endpoint.as_str(),
            family = self.endpoint.family().as_str(),
            model = self.model.as_deref(),
            upstream_model = self.upstream_model.as_deref(),
            stream = self.stream,
            status = self.status,
            outcome = self.outcome.as_str(),
            partial = self.outcome == Outcome::Cancelled,
            upstream = self.upstream.as_deref(),
            upstream_request_id = self.upstream_request_id.as_deref(),
            attempts = self.attempts.len(),
            attempt_outcomes = self
                .attempts
                .iter()
                .map(|a| format!("{}:{}:{}ms", a.upstream, a.outcome, ms(a.elapsed)))
                .collect::<Vec<_>>()
                .join(","),
            trace_id = self.trace.as_ref().map(|t| format!("{:032x}", t.trace_id)),
            response_model = self.response_model.as_deref(),
            finish_reason = self.finish_reason.as_deref(),
            input_tokens = u.input_tokens,
            output_tokens = u.output_tokens,
            cached_tokens = u.cached_tokens,
            reasoning_tokens = u.reasoning_tokens,
            events = self.events,
            ttft_ms = self.ttft_ms,
            tokens_per_s = self.tokens_per_s,
            duration_ms = self.duration_ms,
            error = self.error.as_deref(),
            principal = self.principal.as_deref(),
            plugin_attributes = attributes.as_deref(),
            "request"
        );
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        if !self.logged {
            self.outcome = Outcome::Cancelled;
            if self.error.is_none() {
                self.error = Some("client went away before the answer was complete".into());
            }
            self.log();
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
