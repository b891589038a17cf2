//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format. Labels are bounded: API family,
//! endpoint, status, outcome, upstream ids and plugin names from the config, model names the gateway serves, failure
//! classes. Never a key, a principal or any content.
//!
//! Per-plugin handles are created once per loaded plugin (`plugin::hook::HookMetrics`), so a hook call costs a few
//! atomic operations, not a label lookup.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub family: &'static str,
    pub endpoint: &'static str,
    pub status: u16,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TranslationLabels {
    /// The client's endpoint.
    pub endpoint: &'static str,
    /// The family of the upstream that answered.
    pub provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub upstream: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub upstream: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: String,
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
    pub hook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub plugin: String,
    /// `reused`, `reserve` (made ahead, fresh) or `new` (instantiated on the request's path).
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KvLabels {
    pub backend: &'static str,
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginEventLabels {
    pub plugin: String,
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KvPluginLabels {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowLabels {
    /// The live plugin's name.
    pub plugin: String,
    /// `requests`: the hook that ran (`on-request`); differences: what the shadow did differently (its decision
    /// where the live version's differed: `continue`, `continue-with`, `route`, `respond`, `reject`, `reply`;
    /// `on-chunk` for an answer it would have changed differently; `failed`).
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub translated: Family<TranslationLabels, Counter>,
    pub attempts: Family<AttemptLabels, Counter>,
    pub retries: Family<RetryLabels, Counter>,
    pub tokens: Family<TokenLabels, Counter>,
    pub ttft: Histograms<EndpointLabels>,
    pub duration: Histograms<EndpointLabels>,
    pub tokens_per_second: Histograms<ModelLabels>,
    pub open_streams: Gauge,
    pub open_connections: Gauge,
    pub connections_shed: Counter,
    pub plugin_calls: Family<PluginLabels, Counter>,
    pub plugin_failures: Family<PluginLabels, Counter>,
    pub plugin_seconds: Histograms<PluginLabels>,
    pub plugin_yields: Family<PluginLabels, Counter>,
    pub plugin_instances: Family<InstanceLabels, Counter>,
    pub reloads: Family<ReloadLabels, Counter>,
    pub spans_exported: Counter,
    pub spans_dropped: Counter,
    pub kv_errors: Family<KvLabels, Counter>,
    pub kv_journal_depth: Gauge,
    pub kv_journal_replayed: Counter,
    pub kv_journal_dropped: Counter,
    pub kv_bytes: Family<KvPluginLabels, Gauge>,
    pub kv_evictions: Family<KvPluginLabels, Counter>,
    pub coalesced: Counter,
    pub plugin_events: Family<PluginEventLabels, Counter>,
    pub shadow_requests: Family<ShadowLabels, Counter>,
    pub shadow_differences: Family<ShadowLabels, Counter>,
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16)) // 1 ms … 33 s
}
fn plugin_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.000_005, 2.0, 16)) // 5 µs … 160 ms
}
fn per_second() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 12)) // 1 … 2048 tokens/s
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::with_prefix("weir"),
            requests: Family::default(),
            translated: Family::default(),
            attempts: Family::default(),
            retries: Family::default(),
            tokens: Family::default(),
            ttft: Family::new_with_constructor(seconds),
            duration: Family::new_with_constructor(seconds),
            tokens_per_second: Family::new_with_constructor(per_second),
            open_streams: Gauge::default(),
            open_connections: Gauge::default(),
            connections_shed: Counter::default(),
            plugin_calls: Family::default(),
            plugin_failures: Family::default(),
            plugin_seconds: Family::new_with_constructor(plugin_seconds),
            plugin_yields: Family::default(),
            plugin_instances: Family::default(),
            reloads: Family::default(),
            spans_exported: Counter::default(),
            spans_dropped: Counter::default(),
            kv_errors: Family::default(),
            kv_journal_depth: Gauge::default(),
            kv_journal_replayed: Counter::default(),
            kv_journal_dropped: Counter::default(),
            kv_bytes: Family::default(),
            kv_evictions: Family::default(),
            coalesced: Counter::default(),
            plugin_events: Family::default(),
            shadow_requests: Family::default(),
            shadow_differences: Family::default(),
        };
        let mut r = m.registry;
        r.register("requests", "Requests by API family, endpoint, status and outcome", m.requests.clone());
        r.register(
            "translated_requests",
            "Requests answered by an upstream of the other API family, by client endpoint and provider",
            m.translated.clone(),
        );
        r.register("upstream_attempts", "Upstream attempts by upstream and outcome", m.attempts.clone());
        r.register(
            "upstream_retries",
            "Attempts that failed and were retried, by upstream and reason",
            m.retries.clone(),
        );
        r.register("tokens", "Tokens by model (as sent upstream) and direction (input, output)", m.tokens.clone());
        r.register("time_to_first_token_seconds", "Time from arrival to the first generated token", m.ttft.clone());
        r.register("request_duration_seconds", "Time from arrival to the end of the answer", m.duration.clone());
        r.register(
            "output_tokens_per_second",
            "Output tokens per second after the first token",
            m.tokens_per_second.clone(),
        );
        r.register(
            "kv_errors",
            "Plugin kv operations the backend failed (unavailable or timed out)",
            m.kv_errors.clone(),
        );
        r.register(
            "kv_journal_depth",
            "Settles waiting in the local journal for the kv backend to come back",
            m.kv_journal_depth.clone(),
        );
        r.register(
            "kv_journal_replayed",
            "Journaled settles applied to the kv backend (each exactly once)",
            m.kv_journal_replayed.clone(),
        );
        r.register(
            "kv_journal_dropped",
            "Settles lost because the journal was full or could not be written",
            m.kv_journal_dropped.clone(),
        );
        r.register(
            "kv_bytes",
            "Bytes (keys and values) a plugin with a kv_quota keeps, as this process counts them",
            m.kv_bytes.clone(),
        );
        r.register(
            "kv_evictions",
            "Keys deleted to keep a plugin within its kv_quota (least recently used first)",
            m.kv_evictions.clone(),
        );
        r.register(
            "coalesced_requests",
            "Requests answered with the answer of an identical request in flight (request.coalesce)",
            m.coalesced.clone(),
        );
        r.register(
            "plugin_events",
            "Counters of the plugins' own (the metrics capability), by plugin and event",
            m.plugin_events.clone(),
        );
        r.register(
            "plugin_shadow_requests",
            "Requests a shadow version (NAME.shadow.wasm) ran on beside the live plugin, by plugin",
            m.shadow_requests.clone(),
        );
        r.register(
            "plugin_shadow_differences",
            "Decisions of a shadow version that differ from the live plugin's, by plugin and kind",
            m.shadow_differences.clone(),
        );
        r.register("open_streams", "Streamed answers in progress", m.open_streams.clone());
        r.register("open_connections", "Client connections open", m.open_connections.clone());
        r.register(
            "connections_shed",
            "Connections refused with 503 because the connection limit was reached",
            m.connections_shed.clone(),
        );
        r.register("plugin_calls", "Plugin hook calls by plugin and hook", m.plugin_calls.clone());
        r.register(
            "plugin_failures",
            "Plugin hook failures (traps, deadlines, errors, invalid decisions)",
            m.plugin_failures.clone(),
        );
        r.register(
            "plugin_call_duration_seconds",
            "Plugin hook call time, instantiation included",
            m.plugin_seconds.clone(),
        );
        r.register(
            "plugin_yields",
            "Times a plugin's guest code was paused at an epoch tick so other requests could run, by hook (a call \
             that spans a tick pauses once; a spinning one at every tick)",
            m.plugin_yields.clone(),
        );
        r.register(
            "plugin_instances",
            "Plugin instances given to requests, by where they came from: reused (isolation tenant or shared), reserve \
             (fresh, made ahead) or new (instantiated on the request's path)",
            m.plugin_instances.clone(),
        );
        r.register("plugin_reloads", "Plugin loads from the watched directory by outcome", m.reloads.clone());
        r.register("spans_exported", "Spans sent to the OTLP collector", m.spans_exported.clone());
        r.register(
            "spans_dropped",
            "Spans dropped: export queue full or the collector failed",
            m.spans_dropped.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
