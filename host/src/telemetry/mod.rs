//! Observability's infrastructure: the OTLP trace exporter ([`trace`]) and the Prometheus registry ([`metrics`]).
//! It knows no request types: the completion phase (`completion/`) turns a finished request's record into its
//! spans and metrics and hands them here. On the request path the gateway only notes ids and instants.
//!
//! Privacy: no header values, no keys and no prompt or completion text are exported, unless `capture_content` is on.

// No panics on the request path (see docs/gateway-core.md, "No panic from the wire"); tests and start-up code opt
// out where they must, with a reason.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod metrics;
pub mod trace;

use std::sync::OnceLock;

use crate::config::TelemetryConfig;
use metrics::METRICS;
use trace::{ExportStats, ExportTarget, Tracer};

static TRACER: OnceLock<Tracer> = OnceLock::new();

/// Starts trace export if configured (inside the runtime) and logs where spans go.
pub fn init(c: &TelemetryConfig, http: reqwest::Client) -> anyhow::Result<()> {
    let Some(target) = ExportTarget::resolve(c, |k| std::env::var(k).ok()).map_err(anyhow::Error::msg)? else {
        tracing::info!("traces: off (set [telemetry] otlp_endpoint or OTEL_EXPORTER_OTLP_ENDPOINT to export them)");
        return Ok(());
    };
    let stats = ExportStats { exported: METRICS.spans_exported.clone(), dropped: METRICS.spans_dropped.clone() };
    let tracer = Tracer::start(c, &target, http, stats)?;
    tracing::info!("{}", trace::describe(&target, c));
    let _ = TRACER.set(tracer);
    Ok(())
}

/// The tracer, when traces are on.
pub fn tracer() -> Option<&'static Tracer> {
    TRACER.get()
}

/// Whether prompt and completion text is captured (only with tracing on and `capture_content`).
pub fn capture_content() -> bool {
    tracer().is_some_and(|t| t.capture_content)
}

/// Whether `on-chunk` calls get a span each.
pub fn chunk_spans() -> bool {
    tracer().is_some_and(|t| t.chunk_spans)
}
