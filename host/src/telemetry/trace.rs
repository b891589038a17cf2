//! OTLP traces. A request's spans are built **when it ends**, from what the gateway recorded along the way (times,
//! ids, attempts, plugin calls): the server span, one client span per upstream attempt, one span per plugin hook
//! call. Nothing span-shaped lives on the request path; it only notes instants and ids. The ids that must be known
//! early are made early: the server span's when the request arrives, each attempt's when it starts (it goes
//! upstream in `traceparent`).
//!
//! Export never blocks a request: finished spans go into a bounded queue (`telemetry.queue`); a thread of its own
//! drains it every 20 ms, at a lower scheduling priority, and sends the spans in batches with the `opentelemetry-otlp` exporter (gRPC or
//! HTTP/protobuf). A full queue or a failed export drops spans and counts them (`weir_spans_dropped_total`), and a
//! warning is logged at most once a minute.
//!
//! Why not `tracing-opentelemetry`: a request's work is spread over the handler, a streaming body polled by hyper
//! and an `on-complete` task, and its spans need exact times from the record (the attempt loop, the first token).
//! Building `SpanData` from the record is simpler than carrying `tracing` spans across those tasks and cheaper on
//! the hot path; `tracing` stays the logging API.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use tokio::sync::mpsc;

use crate::config::TelemetryConfig;

pub use crate::config::OtlpProtocol as Protocol;

/// Where spans go, resolved from `[telemetry]` and the standard `OTEL_*` variables (config first).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportTarget {
    pub protocol: Protocol,
    /// For HTTP, the full URL including `/v1/traces`.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub service_name: String,
}

impl ExportTarget {
    /// `None`: tracing is off (no endpoint and no protocol, in the config or the environment).
    pub fn resolve(c: &TelemetryConfig, env: impl Fn(&str) -> Option<String>) -> Result<Option<ExportTarget>, String> {
        let endpoint = c.otlp_endpoint.clone().or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT")).filter(|s| !s.is_empty());
        let from_env = env("OTEL_EXPORTER_OTLP_PROTOCOL").filter(|s| !s.is_empty());
        if endpoint.is_none() && c.otlp_protocol.is_none() && from_env.is_none() {
            return Ok(None);
        }
        let protocol = match (c.otlp_protocol, from_env) {
            (Some(p), _) => p,
            (None, Some(p)) => Protocol::parse(&p)
                .ok_or_else(|| format!("OTLP protocol `{p}` is not supported: use `grpc` or `http/protobuf`"))?,
            (None, None) => Protocol::HttpProtobuf,
        };
        let base = endpoint.unwrap_or_else(|| match protocol {
            Protocol::Grpc => "http://localhost:4317".into(),
            Protocol::HttpProtobuf => "http://localhost:4318".into(),
        });
        let url = match protocol {
            Protocol::Grpc => base,
            Protocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
        };
        let mut headers: Vec<(String, String)> = c.otlp_headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if headers.is_empty()
            && let Some(h) = env("OTEL_EXPORTER_OTLP_HEADERS")
        {
            for pair in h.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| "OTEL_EXPORTER_OTLP_HEADERS must be `key=value,key2=value2`".to_string())?;
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let service_name = c.service_name.clone().or_else(|| env("OTEL_SERVICE_NAME")).unwrap_or_else(|| "weir".into());
        Ok(Some(ExportTarget { protocol, url, headers, service_name }))
    }
}

/// The trace context of one request: its trace, its server span, and the caller's span if it sent `traceparent`.
#[derive(Debug, Clone)]
pub struct TraceCtx {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent: Option<u64>,
    pub sampled: bool,
    /// The caller's `tracestate`, parsed once (an invalid one is dropped, as W3C allows); sent upstream as is.
    pub tracestate: TraceState,
    pub start: SystemTime,
    pub start_instant: Instant,
}

impl TraceCtx {
    /// The `traceparent` to send upstream for a span of this trace.
    pub fn traceparent(&self, span: u64) -> String {
        format!("00-{:032x}-{span:016x}-{:02x}", self.trace_id, u8::from(self.sampled))
    }

    /// Wall-clock time of an instant of this request.
    pub fn time(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.start_instant) {
            Some(d) => self.start + d,
            None => self.start - self.start_instant.duration_since(at),
        }
    }
}

/// A new random span id (never zero).
pub fn new_span_id() -> u64 {
    fastrand::u64(1..)
}

/// Parses a W3C `traceparent`: (trace id, parent span id, sampled). Invalid headers are ignored (a new trace).
pub fn parse_traceparent(v: &str) -> Option<(u128, u64, bool)> {
    let mut parts = v.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ![version, trace, span, flags].iter().all(|s| hex(s)) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok().filter(|&t| t != 0)?;
    let span_id = u64::from_str_radix(span, 16).ok().filter(|&s| s != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id, span_id, flags & 1 == 1))
}

/// Counters of the export pipeline: the `/metrics` counters themselves (clones share the value).
#[derive(Debug, Clone, Default)]
pub struct ExportStats {
    pub exported: prometheus_client::metrics::counter::Counter,
    pub dropped: prometheus_client::metrics::counter::Counter,
}

/// The span pipeline: a bounded queue in front of a batching export task.
pub struct Tracer {
    tx: mpsc::Sender<SpanData>,
    /// Traces whose id falls under this bound are sampled (trace-id ratio sampling).
    sample_bound: u64,
    pub capture_content: bool,
    pub chunk_spans: bool,
    scope: InstrumentationScope,
    pub stats: ExportStats,
}

impl Tracer {
    /// Starts the exporter on a thread of its own (with a single-threaded runtime), so that encoding and sending
    /// batches never takes a worker thread from requests. Returns once the exporter is built.
    pub fn start(
        c: &TelemetryConfig,
        target: &ExportTarget,
        http: reqwest::Client,
        stats: ExportStats,
    ) -> anyhow::Result<Tracer> {
        let (tx, rx) = mpsc::channel(c.queue.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let (target_owned, export_stats) = (target.clone(), stats.clone());
        std::thread::Builder::new().name("weir-otlp".into()).spawn(move || {
            lower_priority();
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return drop(ready_tx.send(Err(e.into()))),
            };
            rt.block_on(async move {
                match build_exporter(&target_owned, http) {
                    Ok(exporter) => {
                        let _ = ready_tx.send(Ok(()));
                        export_loop(exporter, rx, export_stats, target_owned.url).await;
                    }
                    Err(e) => drop(ready_tx.send(Err(e))),
                }
            });
        })?;
        ready_rx.recv().map_err(|_| anyhow::anyhow!("the OTLP exporter thread ended"))??;
        Ok(Tracer {
            tx,
            sample_bound: (c.sampling_ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            capture_content: c.capture_content,
            chunk_spans: c.chunk_spans,
            scope: InstrumentationScope::builder("weir").with_version(env!("CARGO_PKG_VERSION")).build(),
            stats,
        })
    }

    /// A tracer whose spans go nowhere (the queue's receiver is gone), for building spans in tests.
    #[cfg(test)]
    pub fn detached() -> Tracer {
        let (tx, _) = mpsc::channel(1);
        let counter = prometheus_client::metrics::counter::Counter::default;
        Tracer {
            tx,
            sample_bound: u64::MAX,
            capture_content: false,
            chunk_spans: false,
            scope: InstrumentationScope::builder("weir").build(),
            stats: ExportStats { exported: counter(), dropped: counter() },
        }
    }

    /// The trace context of a new request: the caller's trace if it sent a valid `traceparent` (its sampling
    /// decision too), else a new trace sampled by ratio.
    pub fn begin(&self, headers: &HeaderMap) -> TraceCtx {
        let parent = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(parse_traceparent);
        let (trace_id, parent, sampled) = match parent {
            Some((t, p, s)) => (t, Some(p), s),
            None => {
                let t = fastrand::u128(1..);
                (t, None, (t as u64) <= self.sample_bound && self.sample_bound > 0)
            }
        };
        let tracestate = match parent {
            Some(_) => headers.get("tracestate").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or_default(),
            None => TraceState::default(),
        };
        TraceCtx {
            trace_id,
            span_id: new_span_id(),
            parent,
            sampled,
            tracestate,
            start: SystemTime::now(),
            start_instant: Instant::now(),
        }
    }

    fn context(&self, t: &TraceCtx, span: u64) -> SpanContext {
        let flags = if t.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        SpanContext::new(TraceId::from(t.trace_id), SpanId::from(span), flags, false, t.tracestate.clone())
    }

    /// A finished span of this trace.
    #[allow(clippy::too_many_arguments)]
    pub fn span(
        &self,
        t: &TraceCtx,
        span: u64,
        parent: Option<u64>,
        kind: SpanKind,
        name: String,
        (start, end): (SystemTime, SystemTime),
        attributes: Vec<KeyValue>,
        status: Status,
    ) -> SpanData {
        SpanData {
            span_context: self.context(t, span),
            parent_span_id: parent.map_or(SpanId::INVALID, SpanId::from),
            parent_span_is_remote: parent.is_some() && parent == t.parent,
            span_kind: kind,
            name: Cow::Owned(name),
            start_time: start,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }

    /// Queues a request's spans for export; never waits. A full queue drops them (counted).
    pub fn submit(&self, spans: Vec<SpanData>) {
        for s in spans {
            if self.tx.try_send(s).is_err() {
                self.stats.dropped.inc();
            }
        }
    }
}

/// Lowers this thread's scheduling priority (nice 10; Linux applies it per thread), so that on a busy machine
/// encoding and sending spans waits for the request workers instead of preempting them.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// The OTLP exporter for `target` (inside the exporter thread's runtime: the gRPC channel lives there).
fn build_exporter(target: &ExportTarget, http: reqwest::Client) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    let timeout = Duration::from_secs(5);
    let mut exporter = match target.protocol {
        Protocol::Grpc => {
            let mut headers = HeaderMap::new();
            for (k, v) in &target.headers {
                let key = http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
                    .map_err(|_| anyhow::anyhow!("invalid OTLP header name `{k}`"))?;
                let value = v.parse().map_err(|_| anyhow::anyhow!("invalid value for OTLP header `{k}`"))?;
                headers.insert(key, value);
            }
            let metadata = opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers);
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(target.url.clone())
                .with_timeout(timeout)
                .with_metadata(metadata)
                .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
                .build()?
        }
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(target.url.clone())
            .with_timeout(timeout)
            .with_headers(target.headers.iter().cloned().collect::<HashMap<_, _>>())
            .with_http_client(http)
            .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
            .build()?,
    };
    exporter.set_resource(&Resource::builder_empty().with_service_name(target.service_name.clone()).build());
    Ok(exporter)
}

const BATCH: usize = 512;
/// How often the exporter drains the queue. It polls instead of waiting on the queue, so a request handing over its
/// spans never has to wake the exporter thread.
const TICK: Duration = Duration::from_millis(20);

async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<SpanData>,
    stats: ExportStats,
    url: String,
) {
    let mut last_warning: Option<Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    while open {
        tick.tick().await;
        loop {
            let mut batch = Vec::with_capacity(BATCH);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            let (n, full) = (batch.len() as u64, batch.len() == BATCH);
            match exporter.export(batch).await {
                Ok(()) => {
                    stats.exported.inc_by(n);
                }
                Err(e) => {
                    stats.dropped.inc_by(n);
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        last_warning = Some(Instant::now());
                        tracing::warn!(collector = %url, error = %e, dropped = n,
                            "could not export spans; they are dropped (counted in weir_spans_dropped_total), requests are unaffected");
                    }
                }
            }
            if !full {
                break;
            }
        }
    }
}

/// The line that says where spans go.
pub fn describe(target: &ExportTarget, c: &TelemetryConfig) -> String {
    format!(
        "traces: OTLP {} to {} as service `{}`, sampling {}, content capture {}",
        target.protocol.as_str(),
        target.url,
        target.service_name,
        c.sampling_ratio,
        if c.capture_content { "ON" } else { "off" }
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn parses_traceparent_strictly() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(ok), Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, true)));
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(parse_traceparent(unsampled).map(|p| p.2), Some(false));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn resolves_targets_from_config_then_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let none = TelemetryConfig::default();
        assert_eq!(ExportTarget::resolve(&none, env(&[])).unwrap(), None, "off unless configured");
        assert_eq!(ExportTarget::resolve(&none, env(&[("OTEL_SERVICE_NAME", "x")])).unwrap(), None);
        let t =
            ExportTarget::resolve(&none, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])).unwrap().unwrap();
        assert_eq!(
            (t.protocol, t.url.as_str(), t.service_name.as_str()),
            (Protocol::HttpProtobuf, "http://c:4318/v1/traces", "weir")
        );
        let t = ExportTarget::resolve(
            &none,
            env(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=1, b = 2"),
                ("OTEL_SERVICE_NAME", "gw"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.url, "http://localhost:4317");
        assert_eq!(t.headers, [("a".to_string(), "1".to_string()), ("b".to_string(), "2".to_string())]);
        assert_eq!(t.service_name, "gw");
        let c = TelemetryConfig {
            otlp_endpoint: Some("http://cfg:4317".into()),
            otlp_protocol: Some(Protocol::Grpc),
            ..Default::default()
        };
        let t = ExportTarget::resolve(&c, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318")])).unwrap().unwrap();
        assert_eq!(t.url, "http://cfg:4317", "the config wins over the environment");
        assert!(ExportTarget::resolve(&none, env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")])).is_err());
    }
}
