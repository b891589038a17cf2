//! A finished request's spans, built from its frozen record (GenAI semantic conventions), all in the caller's
//! trace when it sent `traceparent`:
//! - `SERVER` `"{operation} {model}"`: `gen_ai.*` (operation, provider, request/response model, response id, finish
//!   reasons, token usage), `http.*`, TTFT, the principal id, plugin attributes (`weir.plugin.<name>.<key>`) and
//!   per-plugin `on-chunk` call count and total time;
//! - `CLIENT` `"upstream {id}"`, one per attempt: attempt number, outcome, retry reason, status;
//! - `INTERNAL` `"plugin {name} {hook}"`, one per hook call (`on-chunk` only with `chunk_spans`).
//!
//! Privacy: no header values, no keys and no prompt or completion text, unless `capture_content` is on.

use opentelemetry::trace::{Event, SpanKind, Status};
use opentelemetry::{Array, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::SpanData;

use crate::api::Endpoint;
use crate::plugin::PluginReport;
use crate::record::{Ended, Outcome};
use crate::telemetry::trace::{self, TraceCtx, Tracer};

/// The spans of `line`, when it has a sampled trace.
pub fn of(tracer: &Tracer, line: &Ended) -> Option<Vec<SpanData>> {
    let t = line.trace.as_ref()?;
    t.sampled.then(|| spans(tracer, t, line))
}

pub(crate) fn operation(e: Endpoint) -> &'static str {
    match e {
        Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Messages => "chat",
        Endpoint::Embeddings => "embeddings",
        Endpoint::CountTokens => "count_tokens",
    }
}

fn s(v: impl Into<StringValue>) -> Value {
    Value::String(v.into())
}

fn spans(tracer: &Tracer, t: &TraceCtx, line: &Ended) -> Vec<SpanData> {
    let mut out = Vec::with_capacity(2 + line.attempts.len());
    out.push(server_span(tracer, t, line));
    attempt_spans(tracer, t, line, &mut out);
    if let Some(report) = &line.plugins {
        plugin_spans(tracer, t, report, &mut out);
    }
    out
}

/// The request's own span: `SERVER` `"{operation} {model}"`.
fn server_span(tracer: &Tracer, t: &TraceCtx, line: &Ended) -> SpanData {
    let end = t.time(line.ended);
    let u = &line.usage;
    let request_model = line.model.clone().unwrap_or_default();
    let mut a = vec![
        KeyValue::new("gen_ai.operation.name", operation(line.endpoint)),
        KeyValue::new(
            "gen_ai.provider.name",
            line.provider.map_or(line.endpoint.family().as_str(), |k| k.gen_ai_provider()),
        ),
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
    if let Some(report) = &line.plugins {
        for (k, v) in &report.attributes {
            a.push(KeyValue::new(k.clone(), v.clone()));
        }
        for c in &report.chunks {
            let name = report.plugin(c.plugin).0;
            a.push(KeyValue::new(format!("weir.plugin.{name}.on_chunk.calls"), c.calls as i64));
            a.push(KeyValue::new(format!("weir.plugin.{name}.on_chunk.total_us"), c.total.as_micros() as i64));
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
    if let Some(report) = &line.plugins {
        server.events.events =
            report.events.iter().map(|(name, at)| Event::new(name.clone(), t.time(*at), Vec::new(), 0)).collect();
    }
    server
}

/// One `CLIENT` span per upstream attempt.
fn attempt_spans(tracer: &Tracer, t: &TraceCtx, line: &Ended, out: &mut Vec<SpanData>) {
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
fn plugin_spans(tracer: &Tracer, t: &TraceCtx, report: &PluginReport, out: &mut Vec<SpanData>) {
    for call in &report.calls {
        let (name, version) = report.identity(call);
        let mut a = vec![
            KeyValue::new("weir.plugin.name", name.to_string()),
            KeyValue::new("weir.plugin.version", version.to_string()),
            KeyValue::new("weir.plugin.hook", call.hook.name()),
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
            format!("plugin {name} {}", call.hook.name()),
            (start, start + call.took),
            a,
            status,
        ));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::plugin::hook::Hook;
    use crate::plugin::report::{ChunkTotals, HookCall};
    use crate::upstream::retry::AttemptLog;

    fn attr<'a>(s: &'a SpanData, key: &str) -> Option<&'a Value> {
        s.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
    }

    /// A streamed chat request that failed over once and ran two plugins.
    fn ended(tracer: &Tracer) -> Ended {
        let mut r = crate::record::tests::record(Endpoint::ChatCompletions);
        let t = tracer.begin(&http::HeaderMap::new());
        let now = Instant::now();
        r.trace = Some(t);
        r.model = Some("gpt-4o-mini".into());
        r.upstream = Some("b".into());
        r.status = 200;
        r.outcome = Outcome::Ok;
        r.stream = true;
        r.provider = Some(crate::config::UpstreamKind::Anthropic);
        r.attempts = vec![
            AttemptLog {
                upstream: "a".into(),
                outcome: "connect",
                started: now,
                elapsed: Duration::from_millis(2),
                status: None,
                span_id: 11,
            },
            AttemptLog {
                upstream: "b".into(),
                outcome: "ok",
                started: now,
                elapsed: Duration::from_millis(9),
                status: Some(200),
                span_id: 12,
            },
        ];
        r.finish();
        let mut e = crate::record::tests::ended().pop().unwrap();
        e.plugins = Some(PluginReport {
            plugins: vec![("auth".into(), "v1".into()), ("redact".into(), "v2".into())].into(),
            attributes: vec![("weir.plugin.auth.key".into(), "team-a".into())],
            events: vec![("weir.plugin.redact.found".into(), now)],
            chunks: vec![ChunkTotals { plugin: 1, calls: 3, total: Duration::from_micros(42) }],
            calls: vec![
                HookCall {
                    plugin: 0,
                    hook: Hook::OnRequest,
                    start: now,
                    took: Duration::from_micros(30),
                    outcome: "continue",
                    error: None,
                },
                HookCall {
                    plugin: 1,
                    hook: Hook::Flush,
                    start: now,
                    took: Duration::from_micros(5),
                    outcome: "failed",
                    error: Some("trapped: unreachable".into()),
                },
            ],
        });
        e
    }

    #[test]
    fn a_request_has_its_server_span_one_client_span_per_attempt_and_one_span_per_hook_call() {
        let tracer = Tracer::detached();
        let line = ended(&tracer);
        let t = line.trace.as_ref().unwrap();
        let spans = of(&tracer, &line).expect("sampled");
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(
            names,
            ["chat gpt-4o-mini", "upstream a", "upstream b", "plugin auth on-request", "plugin redact flush"]
        );
        let server = &spans[0];
        assert_eq!(server.span_kind, SpanKind::Server);
        assert_eq!(server.span_context.span_id(), opentelemetry::trace::SpanId::from(t.span_id));
        assert_eq!(attr(server, "gen_ai.provider.name"), Some(&s("anthropic")));
        assert_eq!(attr(server, "weir.attempts"), Some(&Value::I64(2)));
        assert_eq!(attr(server, "weir.plugin.auth.key"), Some(&s("team-a")));
        assert_eq!(attr(server, "weir.plugin.redact.on_chunk.calls"), Some(&Value::I64(3)));
        assert_eq!(attr(server, "weir.plugin.redact.on_chunk.total_us"), Some(&Value::I64(42)));
        assert_eq!(attr(server, "error.type"), None);
        assert_eq!(attr(server, "gen_ai.input.messages"), None, "no content without capture");
        assert_eq!(server.events.events.len(), 1);
        for child in &spans[1..] {
            assert_eq!(child.parent_span_id, opentelemetry::trace::SpanId::from(t.span_id));
            assert_eq!(child.span_context.trace_id(), server.span_context.trace_id());
        }
        let (a, b) = (&spans[1], &spans[2]);
        assert_eq!(a.span_context.span_id(), opentelemetry::trace::SpanId::from(11));
        assert_eq!(attr(a, "weir.retry.reason"), Some(&s("connect")));
        assert!(matches!(a.status, Status::Error { .. }));
        assert_eq!(attr(b, "http.response.status_code"), Some(&Value::I64(200)));
        assert_eq!(b.status, Status::Unset);
        let failed = &spans[4];
        assert_eq!(attr(failed, "weir.plugin.version"), Some(&s("v2")));
        assert_eq!(attr(failed, "weir.plugin.decision"), Some(&s("failed")));
        assert_eq!(failed.status, Status::error("trapped: unreachable"));
        assert_eq!(failed.end_time.duration_since(failed.start_time).unwrap(), Duration::from_micros(5));
    }

    #[test]
    fn an_unsampled_or_untraced_request_has_no_spans() {
        let tracer = Tracer::detached();
        let mut line = ended(&tracer);
        line.trace.as_mut().unwrap().sampled = false;
        assert!(of(&tracer, &line).is_none());
        line.trace = None;
        assert!(of(&tracer, &line).is_none());
    }
}
