//! The completion phase: the one place where a request ends. It takes the immutable [`Ended`] record of how the
//! request ended and, in this order: runs `on-complete` for every plugin whose `on-request` started (on a fresh
//! instance where its own can no longer be entered; see `plugin/chain.rs`), turns the chain into a
//! [`crate::plugin::PluginReport`] that goes into the record, then writes the request's log line, its metrics and
//! its spans ([`spans`]) from that record alone: nothing here reads a live chain.
//!
//! `on-complete` runs off the response path (accounting never delays the client) on a task of its own, so a
//! client that hangs up cannot cancel it; the log line is written after it so that attributes plugins set there
//! (a request's cost) are on it.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod metrics;
pub mod spans;

use crate::plugin::Chain;
use crate::plugin::types;
use crate::record::{Ended, Outcome, ms};

/// Ends a request: plugins' `on-complete`, then the log line, spans and metrics.
pub fn complete(ended: Ended, chain: Option<Chain>) {
    let Some(chain) = chain else {
        return publish(ended);
    };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        // No runtime (a request record dropped outside one, e.g. at shutdown): log without `on-complete`.
        return publish(Ended { plugins: Some(chain.into_report()), ..ended });
    };
    rt.spawn(async move {
        let cancelled = ended.outcome == Outcome::Cancelled;
        let mut chain = chain.on_complete(summary(&ended), cancelled).await;
        chain.release();
        let refill = chain.refill();
        publish(Ended { plugins: Some(chain.into_report()), ..ended });
        refill.await;
    });
}

/// The log line, the metrics and the spans of a request, all from its frozen record.
fn publish(ended: Ended) {
    log_line(&ended);
    metrics::count(&ended);
    if let Some(tracer) = crate::telemetry::tracer()
        && let Some(spans) = spans::of(tracer, &ended)
    {
        tracer.submit(spans);
    }
}

/// What `on-complete` is given (the chain adds the principal and metadata).
fn summary(ended: &Ended) -> types::Summary {
    let u = &ended.usage;
    types::Summary {
        request_id: ended.request_id.clone(),
        model: ended.upstream_model.clone().or_else(|| ended.model.clone()).unwrap_or_default(),
        status: ended.status,
        outcome: ended.outcome.as_str().to_string(),
        upstream: ended.upstream.clone(),
        attempts: ended.attempts.len() as u32,
        usage: types::Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cached_tokens: u.cached_tokens,
            reasoning_tokens: u.reasoning_tokens,
        },
        ttft_ms: ended.ttft_ms,
        duration_ms: ended.duration_ms,
        principal: None,
        metadata: Vec::new(),
        error: ended.error.clone(),
        partial: ended.outcome == Outcome::Cancelled,
    }
}

/// The request's log line (`weir::request`): ids, counts and timings, never text.
fn log_line(ended: &Ended) {
    let attributes = ended.plugins.as_ref().and_then(|r| r.attributes_line());
    let u = &ended.usage;
    tracing::info!(
        target: "weir::request",
        request_id = %ended.request_id,
        endpoint = ended.endpoint.as_str(),
        family = ended.endpoint.family().as_str(),
        model = ended.model.as_deref(),
        upstream_model = ended.upstream_model.as_deref(),
        stream = ended.stream,
        status = ended.status,
        outcome = ended.outcome.as_str(),
        partial = ended.outcome == Outcome::Cancelled,
        upstream = ended.upstream.as_deref(),
        provider = ended.provider.map(|k| k.gen_ai_provider()),
        upstream_request_id = ended.upstream_request_id.as_deref(),
        attempts = ended.attempts.len(),
        attempt_outcomes = ended
            .attempts
            .iter()
            .map(|a| format!("{}:{}:{}ms", a.upstream, a.outcome, ms(a.elapsed)))
            .collect::<Vec<_>>()
            .join(","),
        trace_id = ended.trace.as_ref().map(|t| format!("{:032x}", t.trace_id)),
        response_model = ended.response_model.as_deref(),
        finish_reason = ended.finish_reason.as_deref(),
        input_tokens = u.input_tokens,
        output_tokens = u.output_tokens,
        cached_tokens = u.cached_tokens,
        reasoning_tokens = u.reasoning_tokens,
        events = ended.events,
        ttft_ms = ended.ttft_ms,
        tokens_per_s = ended.tokens_per_s,
        duration_ms = ended.duration_ms,
        error = ended.error.as_deref(),
        principal = ended.principal.as_deref(),
        plugin_attributes = attributes.as_deref(),
        "request"
    );
}
