//! The per-request record: everything the gateway learns about one request while it runs. When the request ends —
//! normally, with an error, or because the client went away (then `cancelled`, marked `partial`) — the record is
//! frozen into an [`Ended`] and handed to the completion phase (`completion/`), exactly once.
//!
//! The record holds no credentials, and no prompt or completion text unless content capture is on
//! (`telemetry.capture_content`): then `input_capture` / `output_capture` hold the prompt and the answer's text for
//! the span's `gen_ai.input.messages` / `gen_ai.output.messages`. Otherwise it is ids, counts and timings.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use crate::api::Endpoint;
use crate::error::Source;
use crate::plugin::{Chain, PluginReport};
use crate::telemetry::trace::TraceCtx;
use crate::upstream::retry::AttemptLog;
use crate::usage::UsageTap;

/// How a request ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A plugin answered from a cache (`reply` with `cached`).
    Cached,
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
            Outcome::Cached => "cached",
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

/// How a request ended: the owned, immutable contents of its log line, spans and metrics.
pub struct Ended {
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
    pub provider: Option<crate::config::UpstreamKind>,
    pub input_capture: Option<String>,
    pub output_capture: Option<String>,
    pub ended: Instant,
    /// What the plugins did, set by the completion phase after `on-complete`.
    pub plugins: Option<PluginReport>,
}

/// Where a frozen record goes: the completion phase (`crate::completion::complete`), given by whoever makes the
/// record, so that the record does not depend on what consumes it.
pub type OnEnd = fn(Ended, Option<Chain>);

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
    /// What the usage tap saw (put here by the answer when it ends).
    pub tap: Option<UsageTap>,
    /// The principal id a plugin established (never a key).
    pub principal: Option<String>,
    /// Headers plugins added for the client's response (`request.add-response-header`), until it is made.
    pub response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Requests wait on this one's answer (`request.coalesce`): it is published when the request ends.
    pub flight: Option<crate::flight::Leader>,
    /// This request's plugin instances, held by the record while the driver runs so that a request dropped at any
    /// await point still hands them to the completion phase (`on-complete` is owed to every plugin whose
    /// `on-request` started; it runs before the log line). A streamed answer takes them, and the tap, for as long as
    /// it runs and puts them back when it ends or is dropped.
    pub chain: Option<Chain>,
    /// The trace context, when tracing is on.
    pub trace: Option<TraceCtx>,
    /// The kind of upstream that answered (its `gen_ai.provider.name` and API family).
    pub provider: Option<crate::config::UpstreamKind>,
    /// Prompt and completion text, only with `telemetry.capture_content`.
    pub input_capture: Option<String>,
    pub output_capture: Option<String>,
    logged: bool,
    on_end: OnEnd,
}

impl RequestRecord {
    pub fn new(endpoint: Endpoint, on_end: OnEnd) -> RequestRecord {
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
            response_headers: Vec::new(),
            flight: None,
            chain: None,
            trace: None,
            provider: None,
            input_capture: None,
            output_capture: None,
            logged: false,
            on_end,
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
        if let Some(leader) = self.flight.take() {
            // Only a complete answer is shared; anything else and the followers go on by themselves.
            let complete = self.outcome == Outcome::Ok && self.status == 200 && self.error.is_none();
            let sent = self.chain.as_ref().filter(|_| complete).and_then(Chain::sent_answer);
            leader.publish(sent.map(|(status, stream, bytes)| crate::flight::Shared { status, stream, bytes }));
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
            plugins: None,
        };
        (self.on_end)(ended, self.chain.take());
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        static ENDED: RefCell<Vec<Ended>> = const { RefCell::new(Vec::new()) };
    }

    /// An `on_end` that keeps what it is given, for this thread's test to read.
    fn keep(e: Ended, chain: Option<Chain>) {
        assert!(chain.is_none());
        ENDED.with(|v| v.borrow_mut().push(e));
    }

    /// The records that ended on this thread since the last call.
    pub(crate) fn ended() -> Vec<Ended> {
        ENDED.with(|v| std::mem::take(&mut *v.borrow_mut()))
    }

    /// A record that ends into [`ended`].
    pub(crate) fn record(endpoint: Endpoint) -> RequestRecord {
        RequestRecord::new(endpoint, keep)
    }

    #[test]
    fn a_finished_record_ends_once_with_what_it_learnt() {
        let mut r = record(Endpoint::ChatCompletions);
        r.model = Some("gpt-4o-mini".into());
        r.status = 200;
        r.outcome = Outcome::Ok;
        let mut tap = UsageTap::new(Endpoint::ChatCompletions, false);
        tap.usage.output_tokens = Some(50);
        tap.first_token_at = Some(r.started);
        tap.finish_reason = Some("stop".into());
        r.tap = Some(tap);
        std::thread::sleep(Duration::from_millis(5));
        r.finish();
        let ended = ended();
        assert_eq!(ended.len(), 1, "ends exactly once (finish, then no second end from Drop)");
        let e = &ended[0];
        assert!(e.request_id.starts_with("req_") && e.request_id.len() == 20, "{}", e.request_id);
        assert_eq!((e.status, e.outcome, e.model.as_deref()), (200, Outcome::Ok, Some("gpt-4o-mini")));
        assert_eq!(e.finish_reason.as_deref(), Some("stop"));
        assert_eq!(e.ttft_ms, Some(0.0));
        let tps = e.tokens_per_s.unwrap();
        assert!(tps > 0.0 && tps <= 50.0 / 0.005, "50 tokens over at least 5 ms: {tps}");
        assert!(e.duration_ms >= 5.0);
        assert!(e.plugins.is_none(), "the plugins' report is the completion phase's to add");
        assert!(e.error.is_none());
    }

    #[test]
    fn a_record_dropped_before_it_finished_ends_as_cancelled() {
        let mut r = record(Endpoint::Messages);
        r.status = 200;
        r.outcome = Outcome::Ok;
        drop(r);
        let first = ended();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].outcome, Outcome::Cancelled);
        assert_eq!(first[0].error.as_deref(), Some("client went away before the answer was complete"));
        assert_eq!((first[0].ttft_ms, first[0].tokens_per_s), (None, None), "no tap, no timings");

        // An error already known is kept.
        let mut r = record(Endpoint::Messages);
        r.error = Some("upstream timed out".into());
        drop(r);
        assert_eq!(ended()[0].error.as_deref(), Some("upstream timed out"));
    }

    #[test]
    fn outcomes_name_their_source() {
        assert_eq!(Outcome::from_source(Source::Client), Outcome::ClientError);
        assert_eq!(Outcome::from_source(Source::Upstream).as_str(), "upstream_error");
        assert_eq!(Outcome::from_source(Source::Gateway).as_str(), "gateway_error");
        assert_eq!(ms(Duration::from_micros(1500)), 1.5);
    }
}
