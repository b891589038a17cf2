//! The completion phase: the one place where a request ends. It takes the immutable [`Ended`] record of how the
//! request ended and, in this order: runs `on-complete` for every plugin whose `on-request` started (on a fresh
//! instance where its own can no longer be entered; see `plugin/chain.rs`), then writes the request's log line,
//! its spans and its metrics from that same record.
//!
//! `on-complete` runs off the response path (accounting never delays the client) on a task of its own, so a
//! client that hangs up cannot cancel it; the log line is written after it so that attributes plugins set there
//! (a request's cost) are on it.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Instant;

use crate::api::Endpoint;
use crate::plugin::Chain;
use crate::plugin::bindings::types;
use crate::record::{Outcome, ms};
use crate::telemetry::trace::TraceCtx;
use crate::upstream::retry::AttemptLog;

/// Ends a request: plugins' `on-complete`, then the log line, spans and metrics.
pub fn complete(ended: Ended, chain: Option<Chain>) {
    let Some(chain) = chain else {
        ended.emit(None);
        return crate::telemetry::finish(&ended, None);
    };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        // No runtime (a request record dropped outside one, e.g. at shutdown): log without `on-complete`.
        ended.emit(Some(&chain));
        return crate::telemetry::finish(&ended, Some(&chain));
    };
    rt.spawn(async move {
        let cancelled = ended.outcome == Outcome::Cancelled;
        let chain = chain.on_complete(ended.summary(), cancelled).await;
        let mut chain = chain;
        chain.release();
        ended.emit(Some(&chain));
        crate::telemetry::finish(&ended, Some(&chain));
        let refill = chain.refill();
        drop(chain);
        refill.await;
    });
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
    pub provider: Option<&'static str>,
    pub input_capture: Option<String>,
    pub output_capture: Option<String>,
    pub ended: Instant,
}

impl Ended {
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
            metadata: Vec::new(),
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
            provider = self.provider,
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
