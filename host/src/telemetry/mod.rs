//! Observability: OTLP traces with the OpenTelemetry GenAI conventions ([`trace`]) and Prometheus metrics
//! ([`metrics`]). Both are fed once per request, when it ends, from its record ([`finish`]); on the request path the
//! gateway only notes ids and instants.
//!
//! Spans of a request (all in the caller's trace when it sent `traceparent`):
//! - `SERVER` `"{operation} {model}"`: `gen_ai.*` (operation, provider, request/response model, response id, finish
//!   reasons, token usage), `http.*`, TTFT, the principal id, plugin attributes (`weir.plugin.<name>.<key>`) and
//!   per-plugin `on-chunk` call count and total time;
//! - `CLIENT` `"upstream {id}"`, one per attempt: attempt number, outcome, retry reason, status;
//! - `INTERNAL` `"plugin {name} {hook}"`, one per hook call (`on-chunk` only with `chunk_spans`).
//!
//! Privacy: no header values, no keys and no prompt or completion text, unless `capture_content` is on.

// No panics on the request path (see docs/gateway-core.md, "No panic from the wire"); tests and start-up code opt
// out where they must, with a reason.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod metrics;
pub mod trace;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use opentelemetry::trace::{Event, SpanKind, Status};
use opentelemetry::{Array, KeyValue, StringValue, Value};

use crate::api::Endpoint;
use crate::completion::Ended as Line;
use crate::config::TelemetryConfig;
use crate::plugin::Chain;
use crate::record::Outcome;
use metrics::{
    AttemptLabels, EndpointLabels, METRICS, ModelLabels, RequestLabels, RetryLabels, TokenLabels, TranslationLabels,
};
use trace::{ExportStats, ExportTarget, TraceCtx, Tracer};

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

fn operation(e: Endpoint) -> &'static str {
    match e {
        Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Messages => "chat",
        Endpoint::Embeddings => "embeddings",
        Endpoint::CountTokens => "count_tokens",
    }
}

/// Metrics and spans of one finished request. `chain`: its plugins, after `on-complete`.
pub fn finish(line: &Line, chain: Option<&Chain>) {
    record_metrics(line);
    if let (Some(tracer), Some(t)) = (tracer(), &line.trace)
        && t.sampled
    {
        tracer.submit(spans(tracer, t, line, chain));
    }
}

fn record_metrics(line: &Line) {
    let m = &*METRICS;
    let endpoint = line.endpoint.as_str();
    m.requests
        .get_or_create(&RequestLabels {
            family: line.endpoint.family().as_str(),
            endpoint,
            status: line.status,
            outcome: line.outcome.as_str(),
        })
        .inc();
    if let Some(provider) = line.provider.filter(|p| *p != line.endpoint.family().as_str()) {
        m.translated.get_or_create(&TranslationLabels { endpoint, provider }).inc();
    }
    let n = line.attempts.len();
    for (k, a) in line.attempts.iter().enumerate() {
        m.attempts.get_or_create(&AttemptLabels { upstream: a.upstream.clone(), outcome: a.outcome }).inc();
        if k + 1 < n {
            m.retries.get_or_create(&RetryLabels { upstream: a.upstream.clone(), reason: a.outcome }).inc();
        }
    }
    let model = line.upstream_model.clone().or_else(|| line.model.clone()).unwrap_or_default();
    if let Some(i) = line.usage.input_tokens {
        m.tokens.get_or_create(&TokenLabels { model: model.clone(), direction: "input" }).inc_by(i);
    }
    if let Some(o) = line.usage.output_tokens {
        m.tokens.get_or_create(&TokenLabels { model: model.clone(), direction: "output" }).inc_by(o);
    }
    if let Some(ttft) = line.ttft_ms {
        m.ttft.get_or_create(&EndpointLabels { endpoint }).observe(ttft / 1e3);
    }
    m.duration.get_or_create(&EndpointLabels { endpoint }).observe(line.duration_ms / 1e3);
    if let Some(tps) = line.tokens_per_s {
        m.tokens_per_second.get_or_create(&ModelLabels { model }).observe(tps);
    }
}

fn s(v: impl Into<StringValue>) -> Value {
    Value::String(v.into())
}

fn spans(tracer: &Tracer, t: &TraceCtx, line: &Line, chain: Option<&Chain>) -> Vec<opentelemetry_sdk::trace::SpanData> {
    let mut out = Vec::with_capacity(2 + line.attempts.len());
    out.push(server_span(tracer, t, line, chain));
    attempt_spans(tracer, t, line, &mut out);
    if let Some(chain) = chain {
        plugin_spans(tracer, t, chain, &mut out);
    }
    out
}

/// The request's own span: `SERVER` `"{operation} {model}"`.
fn server_span(
    tracer: &Tracer,
    t: &TraceCtx,
    line: &Line,
    chain: Option<&Chain>,
) -> opentelemetry_sdk::trace::SpanData {
    let end = t.time(line.ended);
    let u = &line.usage;
    let request_model = line.model.clone().unwrap_or_default();
    let mut a = vec![
        KeyValue::new("gen_ai.operation.name", operation(line.endpoint)),
        KeyValue::new("gen_ai.provider.name", line.provider.unwrap_or(line.endpoint.family().as_str())),
        KeyValue::new("gen_ai.request.model", request_model.clone()),
        KeyValue::new("http.request.method", "POST"),
        KeyValue::new("http.route", line.endpoint.path()),
        KeyValue::new("url.path", line.endpoint.path()),
        KeyValue::new("http.response.status_code", line.status as i64),
        KeyValue::new("weir.request_id", line.request_id.clone()),
        KeyValue::new("weir.outcome", line.outcome.as_str()),
        KeyValue::new("weir.stream", line.stream),
        KeyValue::new("weir.attempts", line.attempts.len() as i64),
    ];
    let mut opt = |k: &'static str, v: Option<Value>| {
        if let Some(v) = v {
            a.push(KeyValue::new(k, v));
        }
    };
    opt("gen_ai.response.model", line.response_model.clone().map(s));
    opt("gen_ai.response.id", line.response_id.clone().map(s));
    opt(
        "gen_ai.response.finish_reasons",
        line.finish_reason.clone().map(|f| Value::Array(Array::String(vec![StringValue::from(f)]))),
    );
    opt("gen_ai.usage.input_tokens", u.input_tokens.map(|v| Value::I64(v as i64)));
    opt("gen_ai.usage.output_tokens", u.output_tokens.map(|v| Value::I64(v as i64)));
    opt("gen_ai.usage.cache_read.input_tokens", u.cached_tokens.map(|v| Value::I64(v as i64)));
    opt("weir.usage.reasoning_tokens", u.reasoning_tokens.map(|v| Value::I64(v as i64)));
    opt("weir.time_to_first_token_ms", line.ttft_ms.map(Value::F64));
    opt("weir.output_tokens_per_second", line.tokens_per_s.map(Value::F64));
    opt("weir.upstream", line.upstream.clone().map(s));
    opt("weir.upstream_model", line.upstream_model.clone().map(s));
    opt("weir.principal.id", line.principal.clone().map(s));
    opt("error.type", (line.outcome != Outcome::Ok).then(|| s(line.outcome.as_str())));
    opt("gen_ai.input.messages", line.input_capture.clone().map(s));
    opt(
        "gen_ai.output.messages",
        line.output_capture.as_ref().map(|text| {
            s(serde_json::json!([{"role": "assistant", "parts": [{"type": "text", "content": text}]}]).to_string())
        }),
    );
    if let Some(chain) = chain {
        for (k, v) in chain.attributes() {
            a.push(KeyValue::new(k, v));
        }
        for (name, calls, total) in chain.chunk_summary() {
            a.push(KeyValue::new(format!("weir.plugin.{name}.on_chunk.calls"), calls as i64));
            a.push(KeyValue::new(format!("weir.plugin.{name}.on_chunk.total_us"), total.as_micros() as i64));
        }
    }
    let status = match line.outcome {
        Outcome::Ok | Outcome::ClientError | Outcome::Cancelled => Status::Unset,
        _ => Status::error(line.error.clone().unwrap_or_default()),
    };
    let mut server = tracer.span(
        t,
        t.span_id,
        t.parent,
        SpanKind::Server,
        format!("{} {request_model}", operation(line.endpoint)),
        (t.start, end),
        a,
        status,
    );
    if let Some(chain) = chain {
        server.events.events =
            chain.events().into_iter().map(|(name, at)| Event::new(name, t.time(at), Vec::new(), 0)).collect();
    }
    server
}

/// One `CLIENT` span per upstream attempt.
fn attempt_spans(tracer: &Tracer, t: &TraceCtx, line: &Line, out: &mut Vec<opentelemetry_sdk::trace::SpanData>) {
    let n = line.attempts.len();
    for (k, at) in line.attempts.iter().enumerate() {
        let mut a = vec![
            KeyValue::new("weir.upstream", at.upstream.clone()),
            KeyValue::new("weir.attempt", (k + 1) as i64),
            KeyValue::new("weir.attempt.outcome", at.outcome),
        ];
        if let Some(st) = at.status {
            a.push(KeyValue::new("http.response.status_code", st as i64));
        }
        if at.outcome != "ok" {
            a.push(KeyValue::new("error.type", at.outcome));
            if k + 1 < n {
                a.push(KeyValue::new("weir.retry.reason", at.outcome));
            }
        }
        let status = if at.outcome == "ok" { Status::Unset } else { Status::error(at.outcome) };
        out.push(tracer.span(
            t,
            at.span_id,
            Some(t.span_id),
            SpanKind::Client,
            format!("upstream {}", at.upstream),
            (t.time(at.started), t.time(at.started) + at.elapsed),
            a,
            status,
        ));
    }
}

/// One `INTERNAL` span per plugin hook call.
fn plugin_spans(tracer: &Tracer, t: &TraceCtx, chain: &Chain, out: &mut Vec<opentelemetry_sdk::trace::SpanData>) {
    for call in chain.calls() {
        let (name, version) = chain.plugin_identity(call.plugin);
        let mut a = vec![
            KeyValue::new("weir.plugin.name", name.to_string()),
            KeyValue::new("weir.plugin.version", version.to_string()),
            KeyValue::new("weir.plugin.hook", metrics::hook_name(call.hook)),
            KeyValue::new("weir.plugin.decision", call.outcome),
        ];
        let status = match &call.error {
            Some(e) => {
                a.push(KeyValue::new("error.type", "plugin_failure"));
                Status::error(e.clone())
            }
            None => Status::Unset,
        };
        let start = t.time(call.start);
        out.push(tracer.span(
            t,
            trace::new_span_id(),
            Some(t.span_id),
            SpanKind::Internal,
            format!("plugin {name} {}", metrics::hook_name(call.hook)),
            (start, start + call.took),
            a,
            status,
        ));
    }
}

/// One plugin hook call, as the chain records it for spans.
#[derive(Debug, Clone)]
pub struct HookCall {
    pub plugin: usize,
    /// Index into [`metrics::HOOKS`].
    pub hook: usize,
    pub start: Instant,
    pub took: Duration,
    /// The decision (`continue`, `route`, `pass`, `hold`, …) or `failed`.
    pub outcome: &'static str,
    pub error: Option<String>,
}
