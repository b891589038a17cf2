//! The per-request record: everything the gateway learns about one request while it runs. When the request ends —
//! normally, with an error, or because the client went away (then `cancelled`, marked `partial`) — the record is
//! frozen into an [`Ended`] and handed to the completion phase (`completion.rs`), exactly once.
//!
//! The record holds no credentials, and no prompt or completion text unless content capture is on
//! (`telemetry.capture_content`): then `input_capture` / `output_capture` hold the prompt and the answer's text for
//! the span's `gen_ai.input.messages` / `gen_ai.output.messages`. Otherwise it is ids, counts and timings.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use crate::api::Endpoint;
use crate::completion::Ended;
use crate::error::Source;
use crate::plugin::Chain;
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

    /// Ends the request: hands the record to the completion phase (once).
    pub fn finish(mut self) {
        self.end();
    }

    /// Freezes the record into [`Ended`] and runs the completion phase. Reached from [`RequestRecord::finish`], or
    /// from `Drop` when the request was dropped before it ended (the client went away): that is the only `Drop`
    /// involved, and it only marks the record cancelled first.
    fn end(&mut self) {
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
        let ended = Ended {
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
        crate::completion::complete(ended, self.chain.take());
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        if !self.logged {
            self.outcome = Outcome::Cancelled;
            if self.error.is_none() {
                self.error = Some("client went away before the answer was complete".into());
            }
            self.end();
        }
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
