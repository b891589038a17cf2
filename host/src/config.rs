//! Typed gateway configuration: TOML in, a validated [`Config`] out, and errors that name the file, line and key.
//!
//! Parsing happens in two steps. Serde (with `deny_unknown_fields`) turns the TOML into the `Raw*` structs, so
//! unknown keys and wrong types are reported by the TOML parser with a line, column and snippet. Then
//! [`Config::from_raw`] checks what types cannot (references between tables, URLs, limits) and reports the line of
//! the offending value, taken from the `Spanned` fields.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::api::Family;

/// A configuration error. `Display` starts with `file:line:column` when the position is known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    /// The TOML is malformed, has an unknown key, or a value of the wrong type. The message from the TOML
    /// parser already carries the line, column and a snippet.
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    /// The TOML is well formed but a value is invalid.
    #[error("{file}:{line}:{column}: `{key}`: {message}")]
    Invalid { file: PathBuf, line: usize, column: usize, key: String, message: String },
}

/// The validated configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub log: LogConfig,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub retry: RetryConfig,
    pub cooldown: CooldownConfig,
    /// Client header names (lower-case; a trailing `*` matches a prefix) copied to the upstream request.
    pub forward_headers: Vec<String>,
    pub upstreams: Vec<Upstream>,
    /// Requested model name → ordered candidates.
    pub routes: BTreeMap<String, Vec<Candidate>>,
    /// Run the built-in mock upstream inside the gateway process (for demos and offline use).
    pub mock_upstream: Option<SocketAddr>,
    /// Plugins listed in the config, in order.
    pub plugins: Vec<PluginSpec>,
    /// A directory watched for `<name>.wasm` (+ optional `<name>.toml`) plugins.
    pub plugins_dir: Option<PathBuf>,
    pub plugin_runtime: PluginRuntime,
    /// The environment variable holding the admin API's bearer token (`[admin] token_env`). Without it, the admin
    /// routes that change state are off.
    pub admin_token_env: Option<String>,
    /// `[admin] listen`: serve `/admin/*` on this address only (not on the API port).
    pub admin_listen: Option<SocketAddr>,
    /// `[kv]`: where plugin state lives.
    pub kv: KvConfig,
    /// Traces (OTLP) — off unless an endpoint or protocol is set here or in the standard `OTEL_*` variables.
    pub telemetry: TelemetryConfig,
    /// `[translation]`: serving a client of one API family from an upstream of the other.
    pub translation: TranslationConfig,
    /// `[record]`: fixtures of live traffic for `weir plugin replay` (none without the section).
    pub record: Option<RecordConfig>,
}

/// `[record]`: a sample of live requests written as fixtures, one JSON line each (`crate::plugin::fixtures`), for replaying
/// through a plugin offline (`weir plugin replay`). Credentials are never written; prompt and answer text only with
/// `content = true` (else same-length placeholders).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// The JSONL file fixtures are appended to (relative to the config file's directory).
    pub path: PathBuf,
    /// The share of requests recorded, 0 to 1.
    pub sample: f64,
    /// The endpoints recorded (`chat.completions`, `responses`, `messages`, `embeddings`); empty: all.
    pub endpoints: Vec<String>,
    /// Record prompt and answer text as it was (opt in); otherwise every text is replaced by a placeholder of the
    /// same length.
    pub content: bool,
    /// The most bytes of one fixture: past it, the answer's pieces stop being recorded (the fixture says so).
    #[serde(deserialize_with = "de_bytes")]
    pub max_fixture: usize,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            path: PathBuf::from("weir-data/fixtures.jsonl"),
            sample: 1.0,
            endpoints: Vec::new(),
            content: false,
            max_fixture: 4 << 20,
        }
    }
}

/// `[translation]`: a client of one API family served by an upstream of the other (see `dialect/translate`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranslationConfig {
    /// Whether routes may cross families (on by default). Off: upstreams of the other family are left out, as
    /// before translation existed.
    pub enabled: bool,
    /// `max_tokens` sent to Anthropic upstreams when an OpenAI client set none (Anthropic requires it).
    pub default_max_tokens: u32,
    /// Candidates of the client's own family are tried before those of the other (default): translation is used
    /// when no same-family candidate is healthy, or the model is served only by the other family. Off: the route's
    /// priorities and weights alone decide, across families.
    pub prefer_same_family: bool,
    /// Top-level request fields with no equivalent in the other family that are dropped instead of refused with
    /// 400 (e.g. `seed`, `top_k`). Empty by default: nothing changes meaning silently.
    pub drop_fields: Vec<String>,
    /// OpenAI models that take `reasoning_effort` (exact names, or a prefix ending in `*`): an Anthropic client's
    /// thinking request becomes an effort for these and is left out for the others, which refuse it.
    pub reasoning_models: Vec<String>,
}

impl Default for TranslationConfig {
    fn default() -> Self {
        TranslationConfig {
            enabled: true,
            default_max_tokens: 4096,
            prefer_same_family: true,
            drop_fields: Vec::new(),
            reasoning_models: ["o1*", "o3*", "o4*", "gpt-5*", "codex-*"].map(String::from).to_vec(),
        }
    }
}

/// The OTLP transport, as the config and `OTEL_EXPORTER_OTLP_PROTOCOL` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    /// From the environment variable's value.
    pub fn parse(s: &str) -> Option<OtlpProtocol> {
        match s {
            "grpc" => Some(OtlpProtocol::Grpc),
            "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// `[telemetry]`: OTLP trace export. Each key falls back to its standard environment variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`): `http://host:4317` for gRPC, `http://host:4318` for
    /// HTTP (`/v1/traces` is appended).
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (`OTEL_EXPORTER_OTLP_PROTOCOL`; default `http/protobuf`).
    pub otlp_protocol: Option<OtlpProtocol>,
    /// Headers sent to the collector, e.g. an API key (`OTEL_EXPORTER_OTLP_HEADERS`: `k1=v1,k2=v2`).
    pub otlp_headers: BTreeMap<String, String>,
    /// `service.name` of the spans (`OTEL_SERVICE_NAME`; default `weir`).
    pub service_name: Option<String>,
    /// Share of new traces recorded, 0.0–1.0; a client's `traceparent` decides for traces it continues.
    pub sampling_ratio: f64,
    /// Record prompt and completion text on the request span (`gen_ai.input.messages`, `gen_ai.output.messages`).
    /// Off by default: spans carry no content.
    pub capture_content: bool,
    /// One span per `on-chunk` call (debugging) instead of a count and total time on the request span.
    pub chunk_spans: bool,
    /// Spans waiting for export; when the collector is slow or down, more are dropped (and counted).
    pub queue: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            otlp_protocol: None,
            otlp_headers: BTreeMap::new(),
            service_name: None,
            sampling_ratio: 1.0,
            capture_content: false,
            chunk_spans: false,
            queue: 8192,
        }
    }
}

/// Host capabilities a plugin can be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Log,
    Config,
    Kv,
    Trace,
    Clock,
    /// The client's answer in `on-complete` (0.3.0 `answer`, world `plugin-full`): a cache.
    Answer,
    /// Counters of the plugin's own (0.3.0 `metrics`, world `plugin-full`).
    Metrics,
}

impl Capability {
    pub const ALL: [Capability; 7] = [
        Capability::Log,
        Capability::Config,
        Capability::Kv,
        Capability::Trace,
        Capability::Clock,
        Capability::Answer,
        Capability::Metrics,
    ];

    /// The WIT interface name of this capability.
    pub fn interface(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Config => "config",
            Capability::Kv => "kv",
            Capability::Trace => "trace",
            Capability::Clock => "clock",
            Capability::Answer => "answer",
            Capability::Metrics => "metrics",
        }
    }
}

/// What happens to a request when a plugin fails (traps, times out, runs out of memory, returns an error).
/// Serialized as in the config (`fail-closed`, `fail-open`), e.g. by `/admin/plugins`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// The request fails with a gateway error naming the plugin (the default: auth, redaction and routing must
    /// never silently pass through).
    #[default]
    FailClosed,
    /// The plugin is skipped for this request.
    FailOpen,
}

/// Per-hook deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HookTimeouts {
    /// Instantiation plus `init` (0.2.0): parsing the config, compiling patterns — slower than a hook, and for
    /// interpreted guests much slower.
    #[serde(deserialize_with = "de_duration")]
    pub init: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub on_request: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub on_chunk: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub on_complete: Duration,
}

impl Default for HookTimeouts {
    fn default() -> Self {
        HookTimeouts {
            init: Duration::from_millis(250),
            on_request: Duration::from_millis(20),
            on_chunk: Duration::from_millis(5),
            on_complete: Duration::from_millis(20),
        }
    }
}

/// How one plugin runs: everything but where its code comes from. Shared by `[[plugins]]` entries and the
/// `<name>.toml` files of the plugins directory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginSettings {
    /// Lower runs first; ties by name.
    pub order: i32,
    pub failure: FailurePolicy,
    pub capabilities: Vec<Capability>,
    /// Memory cap per instance.
    #[serde(deserialize_with = "de_bytes")]
    pub memory: usize,
    pub timeouts: HookTimeouts,
    /// Whether an instance serves more than one request (docs/plugins.md, "Isolation"): `request` (a fresh instance
    /// per request), `tenant` (reused for requests of one tenant only) or `shared` (reused for any request). At most
    /// what the component declares in its manifest (a looser setting refuses the load); unset: what it declares.
    pub isolation: Option<Isolation>,
    /// Bounds on a reused instance (`tenant` and `shared`).
    pub reuse: ReuseLimits,
    /// Replaced by `isolation` and `reuse.instances`: refused with a message saying so.
    pub warm_instances: Option<toml::Value>,
    /// Pre-initialize a 0.2.0 component at load: run its `init(config)` once and snapshot the result
    /// (wasmtime-wizer), so that every fresh instance starts initialized instead of running `init` again. `init`
    /// must then be deterministic (what it computes is shared by every instance). Components larger than 8 MiB
    /// (interpreted guests, which pre-initialize their runtime themselves) are not.
    pub pre_initialize: bool,
    /// The most bytes (keys and values) the plugin may keep in `kv`: beyond it, its least recently used keys are
    /// deleted (`plugin/kv/quota.rs`; for a cache). None: no quota (TTLs and the plugin's own keys bound it).
    #[serde(deserialize_with = "de_opt_bytes")]
    pub kv_quota: Option<usize>,
    /// The largest value the plugin may store in `kv`, and the largest client answer `answer.get` gives it (1 MiB
    /// unless set; at most 32 MiB and a quarter of `memory`, since the guest holds a value while it reads or writes
    /// it). For a cache of long answers.
    #[serde(deserialize_with = "de_opt_bytes")]
    pub kv_max_value: Option<usize>,
    /// For a shadow version (`NAME.shadow.wasm`): the share of live requests it runs on, 0 to 1 (1 unless set). Its
    /// `.toml` (`NAME.shadow.toml`, else the live `NAME.toml`) is read as for any plugin; this key is ignored in a
    /// live plugin's settings.
    pub shadow_sample: f64,
    /// The plugin's own settings, readable through the `config` capability.
    pub config: toml::Table,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            order: 100,
            failure: FailurePolicy::FailClosed,
            capabilities: Vec::new(),
            memory: 32 << 20,
            timeouts: HookTimeouts::default(),
            isolation: None,
            reuse: ReuseLimits::default(),
            warm_instances: None,
            pre_initialize: true,
            kv_quota: None,
            kv_max_value: None,
            shadow_sample: 1.0,
            config: toml::Table::new(),
        }
    }
}

/// How far a plugin's instances may be reused across requests, strictest first (so `a <= b`: `a` isolates at least
/// as much as `b`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A fresh instance per request.
    Request,
    /// An instance is reused only for requests of one tenant (the principal's team, else its id).
    Tenant,
    /// An instance is reused for any request.
    Shared,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Request => "request",
            Isolation::Tenant => "tenant",
            Isolation::Shared => "shared",
        }
    }
}

/// When a reused instance is retired. An instance that failed in any way (trap, deadline, memory cap, an error it
/// returned, a call cut short by a cancellation) is never reused at all.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReuseLimits {
    /// Requests an instance serves before it is dropped.
    pub max_requests: u32,
    /// An instance left idle longer than this is dropped.
    #[serde(deserialize_with = "de_duration")]
    pub idle: Duration,
    /// Idle instances kept for reuse per plugin, all tenants together (the least recently used goes first).
    pub instances: usize,
    /// An instance whose linear memory grew past this is dropped after its request. Default: three quarters of the
    /// plugin's `memory`.
    #[serde(deserialize_with = "de_opt_bytes")]
    pub memory: Option<usize>,
}

impl Default for ReuseLimits {
    fn default() -> Self {
        ReuseLimits { max_requests: 1000, idle: Duration::from_secs(10), instances: 16, memory: None }
    }
}

/// A `[[plugins]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    pub name: String,
    pub file: PathBuf,
    pub settings: PluginSettings,
}

/// Engine-wide plugin settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginRuntime {
    /// Plugin instances alive at once (across all requests); sizes the pooling allocator.
    pub max_instances: u32,
    /// Largest memory cap any plugin may ask for.
    #[serde(deserialize_with = "de_bytes")]
    pub max_memory: usize,
    /// Where compiled plugins are cached, keyed by content hash and engine settings.
    pub cache_dir: Option<PathBuf>,
    /// A plugin is quarantined (skipped if fail-open, refusing if fail-closed) when, within `quarantine_window`,
    /// at least `quarantine_after` requests failed in it and they were at least `quarantine_rate` of the requests
    /// that reached it. Cancelled requests count neither way.
    pub quarantine_after: u32,
    pub quarantine_rate: f64,
    #[serde(deserialize_with = "de_duration")]
    pub quarantine_window: Duration,
    /// First quarantine period; doubles for each quarantine that follows another within a window, up to 5 minutes.
    #[serde(deserialize_with = "de_duration")]
    pub quarantine_for: Duration,
    /// How long a request waits for the answer of an identical one in flight (`request.coalesce`, single flight)
    /// before it goes on by itself.
    #[serde(deserialize_with = "de_duration")]
    pub coalesce_wait: Duration,
}

impl Default for PluginRuntime {
    fn default() -> Self {
        PluginRuntime {
            max_instances: 1000,
            max_memory: 256 << 20,
            cache_dir: None,
            quarantine_after: 20,
            quarantine_rate: 0.5,
            quarantine_window: Duration::from_secs(60),
            quarantine_for: Duration::from_secs(1),
            coalesce_wait: Duration::from_secs(60),
        }
    }
}

/// Index of an upstream in [`Config::upstreams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpstreamIdx(pub usize);

#[derive(Debug, Clone)]
pub struct Upstream {
    pub id: String,
    pub kind: UpstreamKind,
    /// Base URL without a trailing slash, including the API version prefix (`https://api.openai.com/v1`).
    pub base_url: String,
    /// Name of the environment variable that holds the API key (the key itself never appears in config).
    pub api_key_env: Option<String>,
    pub models: Vec<String>,
    pub weight: u32,
    /// Extra static headers sent to this upstream.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// What a cloud provider needs beyond the base URL (region, project, credentials); `Direct` for the others.
    pub cloud: Cloud,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamKind {
    Openai,
    Anthropic,
    OpenaiCompatible,
    /// Azure OpenAI: the OpenAI dialect on deployment paths, `api-key` auth.
    AzureOpenai,
    /// Anthropic models on AWS Bedrock (InvokeModel), SigV4-signed, streams in AWS event-stream framing.
    Bedrock,
    /// Anthropic models on Google Vertex AI (rawPredict), OAuth bearer tokens from a service account.
    Vertex,
}

impl UpstreamKind {
    /// The API family this upstream speaks.
    pub fn family(self) -> Family {
        match self {
            UpstreamKind::Openai | UpstreamKind::OpenaiCompatible | UpstreamKind::AzureOpenai => Family::OpenAi,
            UpstreamKind::Anthropic | UpstreamKind::Bedrock | UpstreamKind::Vertex => Family::Anthropic,
        }
    }

    /// The OpenTelemetry GenAI `gen_ai.provider.name` of this kind.
    pub fn gen_ai_provider(self) -> &'static str {
        match self {
            UpstreamKind::Openai | UpstreamKind::OpenaiCompatible => "openai",
            UpstreamKind::Anthropic => "anthropic",
            UpstreamKind::AzureOpenai => "azure.ai.openai",
            UpstreamKind::Bedrock => "aws.bedrock",
            UpstreamKind::Vertex => "gcp.vertex_ai",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::Openai => "openai",
            UpstreamKind::Anthropic => "anthropic",
            UpstreamKind::OpenaiCompatible => "openai-compatible",
            UpstreamKind::AzureOpenai => "azure-openai",
            UpstreamKind::Bedrock => "bedrock",
            UpstreamKind::Vertex => "vertex",
        }
    }
}

impl Upstream {
    /// The environment variables this upstream's credentials need (an optional session token is not listed).
    pub fn credential_envs(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.api_key_env.as_deref().into_iter().collect();
        match &self.cloud {
            Cloud::Bedrock { credentials: AwsCredentials::Keys { access_key_env, secret_key_env, .. }, .. } => {
                v.extend([access_key_env.as_str(), secret_key_env.as_str()]);
            }
            Cloud::Vertex { credentials: GoogleCredentials::Env(e), .. } => v.push(e),
            _ => {}
        }
        v
    }
}

/// A cloud upstream's settings, checked. Credentials are named (environment variables, files), never inline.
#[derive(Debug, Clone, PartialEq)]
pub enum Cloud {
    /// `openai`, `anthropic`, `openai-compatible`: the base URL and `api_key_env` say it all.
    Direct,
    /// `azure-openai`: with `api_version`, the classic deployment paths
    /// (`/openai/deployments/{model}/…?api-version=`); without, the v1 API (`/openai/v1/…`, the deployment in
    /// `model`). The key (`api_key_env`) is sent as `api-key`.
    Azure { api_version: Option<String> },
    /// `bedrock`: SigV4 in `region`, or a Bedrock API key (`api_key_env`, sent as a bearer token).
    Bedrock { region: String, anthropic_version: String, credentials: AwsCredentials },
    /// `vertex`: a service-account or application-default-credentials JSON file.
    Vertex { project: String, region: String, anthropic_version: String, credentials: GoogleCredentials },
}

/// Where an AWS upstream's credentials are.
#[derive(Debug, Clone, PartialEq)]
pub enum AwsCredentials {
    /// Access key id, secret key and optional session token, each from the environment variable named.
    Keys { access_key_env: String, secret_key_env: String, session_token_env: Option<String> },
    /// A Bedrock API key (`AWS_BEARER_TOKEN_BEDROCK`), from the environment variable named by `api_key_env`.
    Bearer,
}

/// Where a Google upstream's credentials file is: a path in the config, or the environment variable naming one
/// (`GOOGLE_APPLICATION_CREDENTIALS` by default, as Google's libraries do).
#[derive(Debug, Clone, PartialEq)]
pub enum GoogleCredentials {
    File(PathBuf),
    Env(String),
}

/// One upstream a model may be served by.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub upstream: UpstreamIdx,
    /// Share of traffic among candidates with the same priority.
    pub weight: u32,
    /// Lower is tried first. Defaults to the position in the list, so a plain list is an ordered failover chain.
    pub priority: u32,
    /// Model name sent to this upstream instead of the requested one.
    pub model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `weir=debug`; `WEIR_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted request body; larger bodies get 413.
    #[serde(deserialize_with = "de_bytes")]
    pub max_body: usize,
    /// A client that has not sent its full request headers within this time is disconnected.
    #[serde(deserialize_with = "de_duration")]
    pub client_header_timeout: Duration,
    /// On SIGTERM/SIGINT, open requests get at most this long to finish.
    #[serde(deserialize_with = "de_duration")]
    pub drain: Duration,
    /// On SIGTERM/SIGINT, `/readyz` answers 503 at once but the listener keeps accepting for this long (answering
    /// with `connection: close`), so a load balancer sees the gateway leave before it stops taking connections
    /// (the Kubernetes pre-stop pattern). Then the listener closes and `drain` starts.
    #[serde(deserialize_with = "de_duration")]
    pub drain_delay: Duration,
    /// Deepest nesting of arrays and objects accepted in a request body (1–128); deeper bodies get 400 before any
    /// plugin sees them. Real requests (messages, content parts, tool schemas) stay well under the default 64.
    pub max_json_depth: usize,
    /// A connection on which no byte moved either way for this long is closed (idle keep-alive, or a client that
    /// stopped reading).
    #[serde(deserialize_with = "de_duration")]
    pub keep_alive_idle: Duration,
    /// A request body that has not fully arrived this long after the headers gets 408.
    #[serde(deserialize_with = "de_duration")]
    pub body_timeout: Duration,
    /// Client connections served at once; more are shed with 503. Default: the open-file limit (raised to its hard
    /// limit at start) minus a reserve.
    pub max_connections: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 10 << 20,
            client_header_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            max_json_depth: 64,
            keep_alive_idle: Duration::from_secs(75),
            body_timeout: Duration::from_secs(30),
            max_connections: None,
        }
    }
}

/// Upstream timeouts. There is deliberately no total timeout: a healthy stream may run for minutes.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP (and TLS) connect.
    #[serde(deserialize_with = "de_duration")]
    pub connect: Duration,
    /// From sending the request to receiving the response headers.
    #[serde(deserialize_with = "de_duration")]
    pub first_byte: Duration,
    /// Longest silence between two body chunks (and between the headers and the first chunk).
    #[serde(deserialize_with = "de_duration")]
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(5), first_byte: Duration::from_secs(60), idle: Duration::from_secs(60) }
    }
}

/// Failure classes a retry policy can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// The upstream could not be reached (refused, DNS, TLS, reset before the headers).
    Connect,
    /// No headers within `first_byte`, or the body of a non-streamed answer stalled past `idle`.
    Timeout,
    /// HTTP 429.
    RateLimited,
    /// HTTP 5xx (and 529).
    ServerError,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Total attempts per request across all candidates (1 = no retry).
    pub attempts: u32,
    /// Backoff before retrying the same upstream: random in `[0, min(cap, base * 2^n))` ("full jitter").
    #[serde(deserialize_with = "de_duration")]
    pub backoff_base: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub backoff_cap: Duration,
    pub retry_on: Vec<RetryOn>,
    /// A `Retry-After` longer than this is not waited for: that upstream is not retried.
    #[serde(deserialize_with = "de_duration")]
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 3,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(2),
            retry_on: vec![RetryOn::Connect, RetryOn::Timeout, RetryOn::RateLimited, RetryOn::ServerError],
            max_retry_after: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CooldownConfig {
    /// Consecutive failures after which an upstream is moved to the back of every candidate list.
    pub failures: u32,
    #[serde(deserialize_with = "de_duration")]
    pub duration: Duration,
}

impl Default for CooldownConfig {
    fn default() -> Self {
        CooldownConfig { failures: 3, duration: Duration::from_secs(30) }
    }
}

// ---- raw (as written) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Spanned<String>,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    timeouts: Timeouts,
    #[serde(default)]
    retry: Option<Spanned<RetryConfig>>,
    #[serde(default)]
    cooldown: CooldownConfig,
    #[serde(default)]
    forward_headers: Vec<Spanned<String>>,
    #[serde(default)]
    upstreams: Vec<RawUpstream>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    mock_upstream: Option<RawMock>,
    #[serde(default)]
    plugins: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    plugins_dir: Option<PathBuf>,
    #[serde(default)]
    plugin_runtime: PluginRuntime,
    #[serde(default)]
    admin: Option<RawAdmin>,
    #[serde(default)]
    kv: Option<Spanned<RawKv>>,
    #[serde(default)]
    telemetry: Option<Spanned<TelemetryConfig>>,
    #[serde(default)]
    translation: Option<Spanned<TranslationConfig>>,
    #[serde(default)]
    record: Option<Spanned<RecordConfig>>,
}

/// Where plugin state (`kv`) lives: `[kv]`. Absent: the file store in `weir-data/` beside the config file.
#[derive(Debug, Clone, PartialEq)]
pub enum KvConfig {
    Memory,
    /// `backend = "file"`: a directory (created, mode 0700) and how often the log is fdatasync'ed.
    File {
        dir: PathBuf,
        sync_every: Duration,
    },
    Redis(RedisKvConfig),
}

impl KvConfig {
    /// The backend in words, for the startup log and `check-config` (never a password).
    pub fn describe(&self) -> String {
        match self {
            KvConfig::Memory => "memory (this process only: lost on exit)".into(),
            KvConfig::File { dir, sync_every } => {
                format!("file store in {} (durable on acknowledgment; fdatasync every {sync_every:?})", dir.display())
            }
            KvConfig::Redis(r) => {
                // A password in the URL is not logged.
                let url = match r.url.split_once('@') {
                    Some((scheme_auth, host)) => {
                        format!("{}://…@{host}", scheme_auth.split("://").next().unwrap_or("redis"))
                    }
                    None => r.url.clone(),
                };
                format!(
                    "redis {url} (prefix `{}`, {} connections, timeout {:?}; journal in {})",
                    r.prefix,
                    r.pool_size,
                    r.timeout,
                    r.journal_dir.display()
                )
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisKvConfig {
    /// `redis://[user@]host:port/db` or `rediss://` (TLS). A password in the URL is allowed but `password_env` is
    /// better (the config then holds no secret).
    pub url: String,
    pub password_env: Option<String>,
    /// Prepended to every key (several gateways fleets, or other applications, may share one Redis).
    pub prefix: String,
    pub pool_size: usize,
    /// Every operation (connecting included) fails after this; at most 1 s.
    pub timeout: Duration,
    /// The directory of the local journal of settles Redis could not take.
    pub journal_dir: PathBuf,
    pub journal_max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
enum KvBackendKind {
    Memory,
    #[default]
    File,
    Redis,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKv {
    #[serde(default)]
    backend: KvBackendKind,
    #[serde(default)]
    path: Option<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    sync_every: Option<Duration>,
    #[serde(default)]
    url: Option<Spanned<String>>,
    #[serde(default)]
    password_env: Option<Spanned<String>>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    pool_size: Option<usize>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    journal: Option<String>,
    #[serde(default)]
    journal_max: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default)]
    token_env: Option<String>,
    #[serde(default)]
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMock {
    listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    id: Spanned<String>,
    kind: UpstreamKind,
    #[serde(default)]
    base_url: Option<Spanned<String>>,
    #[serde(default)]
    api_key_env: Option<Spanned<String>>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    // Cloud upstreams (checked per kind in `cloud`).
    #[serde(default)]
    region: Option<Spanned<String>>,
    #[serde(default)]
    project: Option<Spanned<String>>,
    #[serde(default)]
    api_version: Option<Spanned<String>>,
    #[serde(default)]
    anthropic_version: Option<Spanned<String>>,
    #[serde(default)]
    access_key_env: Option<Spanned<String>>,
    #[serde(default)]
    secret_key_env: Option<Spanned<String>>,
    #[serde(default)]
    session_token_env: Option<Spanned<String>>,
    #[serde(default)]
    credentials_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    credentials_env: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    model: Spanned<String>,
    candidates: Spanned<Vec<RawCandidate>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCandidate {
    upstream: Spanned<String>,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    model: Option<String>,
}

fn one() -> u32 {
    1
}

/// Headers a client may never choose for the upstream: credentials, cookies, and hop-by-hop headers.
pub const NEVER_FORWARDED: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
];

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: path.to_path_buf(), source })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { file: path.to_path_buf(), message: e.to_string() })?;
        Config::from_raw(raw, &Positions { text, file: path })
    }

    fn from_raw(raw: RawConfig, at: &Positions) -> Result<Config, ConfigError> {
        let listen = parse_addr(&raw.listen, "listen", at)?;
        let mock_upstream = match &raw.mock_upstream {
            Some(m) => Some(parse_addr(&m.listen, "mock_upstream.listen", at)?),
            None => None,
        };
        let admin_listen = match raw.admin.as_ref().and_then(|a| a.listen.as_ref()) {
            Some(l) => Some(parse_addr(l, "admin.listen", at)?),
            None => None,
        };
        let telemetry = check_telemetry(raw.telemetry.as_ref(), at)?;
        check_retry(raw.retry.as_ref(), at)?;

        let forward_headers = forward_headers(&raw.forward_headers, at)?;

        let base = at.file.parent().unwrap_or(Path::new("."));
        let (upstreams, by_id) = upstreams(&raw.upstreams, base, at)?;

        let routes = routes(&raw.routes, &upstreams, &by_id, at)?;

        let plugins = plugins(&raw.plugins, &raw.plugin_runtime, base, at)?;

        if !(1..=128).contains(&raw.limits.max_json_depth) {
            return Err(ConfigError::Parse {
                file: at.file.to_path_buf(),
                message: "`limits.max_json_depth` must be between 1 and 128".into(),
            });
        }
        let q = &raw.plugin_runtime;
        if !(q.quarantine_rate > 0.0 && q.quarantine_rate <= 1.0) || q.quarantine_window.is_zero() {
            return Err(ConfigError::Parse {
                file: at.file.to_path_buf(),
                message: "`plugin_runtime.quarantine_rate` must be in (0, 1] and `quarantine_window` above 0".into(),
            });
        }
        let translation = match raw.translation {
            None => TranslationConfig::default(),
            Some(t) => {
                if t.get_ref().default_max_tokens == 0 {
                    return Err(at.invalid(&t, "translation.default_max_tokens", "must be at least 1"));
                }
                t.into_inner()
            }
        };
        let record = match raw.record {
            None => None,
            Some(r) => {
                let c = r.get_ref();
                if !(0.0..=1.0).contains(&c.sample) {
                    return Err(at.invalid(&r, "record.sample", "must be between 0 and 1"));
                }
                const RECORDABLE: [&str; 4] = ["chat.completions", "responses", "messages", "embeddings"];
                if let Some(e) = c.endpoints.iter().find(|e| !RECORDABLE.contains(&e.as_str())) {
                    let msg = format!("unknown endpoint `{e}` (one of {})", RECORDABLE.join(", "));
                    return Err(at.invalid(&r, "record.endpoints", &msg));
                }
                if c.max_fixture < 1024 {
                    return Err(at.invalid(&r, "record.max_fixture", "must be at least 1KiB"));
                }
                let mut c = r.into_inner();
                c.path = base.join(&c.path);
                Some(c)
            }
        };
        Ok(Config {
            record,
            translation,
            plugins,
            plugins_dir: raw.plugins_dir.map(|d| base.join(d)),
            plugin_runtime: raw.plugin_runtime,
            listen,
            log: raw.log,
            limits: raw.limits,
            timeouts: raw.timeouts,
            retry: raw.retry.map(Spanned::into_inner).unwrap_or_default(),
            cooldown: raw.cooldown,
            forward_headers,
            upstreams,
            routes,
            mock_upstream,
            kv: kv_config(raw.kv.as_ref(), base, at)?,
            admin_token_env: raw.admin.and_then(|a| a.token_env),
            admin_listen,
            telemetry,
        })
    }

    pub fn upstream(&self, idx: UpstreamIdx) -> &Upstream {
        &self.upstreams[idx.0]
    }

    /// Environment variables named for credentials (`api_key_env`, the AWS keys, the Google credentials path) that
    /// are not set.
    pub fn missing_key_envs(&self) -> Vec<(&str, &str)> {
        self.upstreams
            .iter()
            .flat_map(|u| u.credential_envs().into_iter().map(|e| (u.id.as_str(), e)))
            .filter(|(_, e)| std::env::var_os(e).is_none())
            .collect()
    }
}

/// `[telemetry]`, checked (the protocol is checked by its type).
fn check_telemetry(t: Option<&Spanned<TelemetryConfig>>, at: &Positions) -> Result<TelemetryConfig, ConfigError> {
    Ok(match t {
        Some(t) => {
            let c = t.get_ref();
            if !(0.0..=1.0).contains(&c.sampling_ratio) {
                return Err(at.invalid(t, "telemetry.sampling_ratio", "must be between 0.0 and 1.0"));
            }
            if let Some(e) = &c.otlp_endpoint
                && e.parse::<http::Uri>().map_or(true, |u| u.scheme().is_none() || u.host().is_none())
            {
                return Err(at.invalid(t, "telemetry.otlp_endpoint", "must be a URL such as http://127.0.0.1:4317"));
            }
            c.clone()
        }
        None => TelemetryConfig::default(),
    })
}

fn check_retry(retry: Option<&Spanned<RetryConfig>>, at: &Positions) -> Result<(), ConfigError> {
    if let Some(retry) = retry {
        let r = retry.get_ref();
        if r.attempts == 0 || r.attempts > 10 {
            return Err(at.invalid(retry, "retry.attempts", "must be between 1 and 10"));
        }
        if r.backoff_base > r.backoff_cap {
            return Err(at.invalid(retry, "retry.backoff_base", "must not exceed retry.backoff_cap"));
        }
    }
    Ok(())
}

/// `forward_headers`, lower-cased; credentials and hop-by-hop headers refused.
fn forward_headers(raw: &[Spanned<String>], at: &Positions) -> Result<Vec<String>, ConfigError> {
    let mut forward_headers = Vec::new();
    for h in raw {
        let name = h.get_ref().to_ascii_lowercase();
        let bare = name.strip_suffix('*').unwrap_or(&name);
        if HeaderName::from_bytes(bare.as_bytes()).is_err() && !bare.is_empty() {
            return Err(at.invalid(h, "forward_headers", "not a valid header name"));
        }
        if bare.is_empty() || NEVER_FORWARDED.iter().any(|n| n.starts_with(bare)) {
            return Err(at.invalid(
                h,
                "forward_headers",
                "would forward credentials or hop-by-hop headers; the gateway sets those itself",
            ));
        }
        forward_headers.push(name);
    }
    Ok(forward_headers)
}

/// The `[[upstreams]]`, checked, and their index by id.
fn upstreams(
    raw: &[RawUpstream],
    base: &Path,
    at: &Positions,
) -> Result<(Vec<Upstream>, HashMap<String, UpstreamIdx>), ConfigError> {
    let mut upstreams = Vec::new();
    let mut by_id: HashMap<String, UpstreamIdx> = HashMap::new();
    for (i, u) in raw.iter().enumerate() {
        let key = |k: &str| format!("upstreams[{i}].{k}");
        let id = u.id.get_ref();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(at.invalid(&u.id, &key("id"), "use letters, digits, `-` and `_`"));
        }
        if by_id.insert(id.clone(), UpstreamIdx(i)).is_some() {
            return Err(at.invalid(&u.id, &key("id"), &format!("duplicate upstream id `{id}`")));
        }
        for (env, k) in [
            (&u.api_key_env, "api_key_env"),
            (&u.access_key_env, "access_key_env"),
            (&u.secret_key_env, "secret_key_env"),
            (&u.session_token_env, "session_token_env"),
            (&u.credentials_env, "credentials_env"),
        ] {
            if let Some(env) = env {
                let name = env.get_ref();
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(at.invalid(
                        env,
                        &key(k),
                        "must be the *name* of an environment variable (the secret itself never goes in the config)",
                    ));
                }
            }
        }
        let cloud = cloud(u, base, at, &key)?;
        let base_url = match (&u.base_url, &cloud) {
            (Some(b), _) => validate_base_url(b.get_ref()).map_err(|m| at.invalid(b, &key("base_url"), &m))?,
            (None, Cloud::Bedrock { region, .. }) => format!("https://bedrock-runtime.{region}.amazonaws.com"),
            (None, Cloud::Vertex { region, .. }) => match region.as_str() {
                "global" => "https://aiplatform.googleapis.com".to_string(),
                r @ ("us" | "eu") => format!("https://aiplatform.{r}.rep.googleapis.com"),
                r => format!("https://{r}-aiplatform.googleapis.com"),
            },
            (None, _) => {
                return Err(at.invalid(&u.id, &format!("upstreams[{i}]"), "needs a `base_url`"));
            }
        };
        let mut headers = Vec::new();
        for (name, value) in &u.headers {
            let hn = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| at.invalid(value, &key("headers"), &format!("`{name}` is not a header name")))?;
            if NEVER_FORWARDED.contains(&hn.as_str()) {
                return Err(at.invalid(
                    value,
                    &key("headers"),
                    &format!("`{name}` is set by the gateway; use api_key_env for credentials"),
                ));
            }
            let hv = HeaderValue::from_str(value.get_ref())
                .map_err(|_| at.invalid(value, &key("headers"), "not a valid header value"))?;
            headers.push((hn, hv));
        }
        upstreams.push(Upstream {
            id: id.clone(),
            kind: u.kind,
            base_url,
            api_key_env: u.api_key_env.as_ref().map(|s| s.get_ref().clone()),
            models: u.models.clone(),
            weight: u.weight,
            headers,
            cloud,
        });
    }
    Ok((upstreams, by_id))
}

/// A cloud upstream's own keys, checked for its kind; keys of another kind are refused by name.
fn cloud(u: &RawUpstream, base: &Path, at: &Positions, key: &dyn Fn(&str) -> String) -> Result<Cloud, ConfigError> {
    let kind = u.kind;
    let name = kind.as_str();
    let allowed: &[&str] = match kind {
        UpstreamKind::Openai | UpstreamKind::Anthropic | UpstreamKind::OpenaiCompatible => &[],
        UpstreamKind::AzureOpenai => &["api_version"],
        UpstreamKind::Bedrock => {
            &["region", "anthropic_version", "access_key_env", "secret_key_env", "session_token_env"]
        }
        UpstreamKind::Vertex => &["region", "project", "anthropic_version", "credentials_file", "credentials_env"],
    };
    let given: [(&str, Option<&Spanned<String>>); 8] = [
        ("region", u.region.as_ref()),
        ("project", u.project.as_ref()),
        ("api_version", u.api_version.as_ref()),
        ("anthropic_version", u.anthropic_version.as_ref()),
        ("access_key_env", u.access_key_env.as_ref()),
        ("secret_key_env", u.secret_key_env.as_ref()),
        ("session_token_env", u.session_token_env.as_ref()),
        ("credentials_env", u.credentials_env.as_ref()),
    ];
    for (k, v) in given {
        if let Some(v) = v
            && !allowed.contains(&k)
        {
            return Err(at.invalid(v, &key(k), &format!("is not a setting of a `{name}` upstream")));
        }
    }
    if let Some(f) = &u.credentials_file
        && kind != UpstreamKind::Vertex
    {
        return Err(at.invalid(f, &key("credentials_file"), &format!("is not a setting of a `{name}` upstream")));
    }
    // Region and project names go into host names and paths: letters, digits and `-` only.
    let word = |v: &Option<Spanned<String>>, k: &str| -> Result<String, ConfigError> {
        let Some(v) = v else {
            return Err(at.invalid(&u.id, &key(k), &format!("a `{name}` upstream needs `{k}`")));
        };
        let s = v.get_ref();
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(at.invalid(v, &key(k), "use letters, digits and `-`"));
        }
        Ok(s.clone())
    };
    let version = |default: &str| -> Result<String, ConfigError> {
        match &u.anthropic_version {
            None => Ok(default.to_string()),
            Some(v) if HeaderValue::from_str(v.get_ref()).is_ok() && !v.get_ref().is_empty() => Ok(v.get_ref().clone()),
            Some(v) => Err(at.invalid(v, &key("anthropic_version"), "not a version string")),
        }
    };
    let env = |v: &Option<Spanned<String>>| v.as_ref().map(|s| s.get_ref().clone());
    Ok(match kind {
        UpstreamKind::Openai | UpstreamKind::Anthropic | UpstreamKind::OpenaiCompatible => Cloud::Direct,
        UpstreamKind::AzureOpenai => {
            if let Some(v) = &u.api_version {
                let s = v.get_ref();
                if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
                    return Err(at.invalid(v, &key("api_version"), "expected a version like `2024-10-21`"));
                }
            }
            Cloud::Azure { api_version: env(&u.api_version) }
        }
        UpstreamKind::Bedrock => {
            let credentials = match (&u.api_key_env, &u.access_key_env, &u.secret_key_env) {
                (Some(k), Some(_), _) | (Some(k), _, Some(_)) => {
                    return Err(at.invalid(
                        k,
                        &key("api_key_env"),
                        "a Bedrock API key (api_key_env) and access keys (access_key_env, secret_key_env) \
                         exclude each other",
                    ));
                }
                (Some(_), None, None) => AwsCredentials::Bearer,
                (None, a, s) => AwsCredentials::Keys {
                    access_key_env: env(a).unwrap_or_else(|| "AWS_ACCESS_KEY_ID".into()),
                    secret_key_env: env(s).unwrap_or_else(|| "AWS_SECRET_ACCESS_KEY".into()),
                    session_token_env: env(&u.session_token_env),
                },
            };
            Cloud::Bedrock {
                region: word(&u.region, "region")?,
                anthropic_version: version("bedrock-2023-05-31")?,
                credentials,
            }
        }
        UpstreamKind::Vertex => {
            if let Some(k) = &u.api_key_env {
                return Err(at.invalid(
                    k,
                    &key("api_key_env"),
                    "a `vertex` upstream authenticates with credentials_file or credentials_env",
                ));
            }
            let credentials = match (&u.credentials_file, &u.credentials_env) {
                (Some(f), Some(_)) => {
                    return Err(at.invalid(f, &key("credentials_file"), "give credentials_file or credentials_env"));
                }
                (Some(f), None) => GoogleCredentials::File(base.join(f.get_ref())),
                (None, e) => GoogleCredentials::Env(env(e).unwrap_or_else(|| "GOOGLE_APPLICATION_CREDENTIALS".into())),
            };
            Cloud::Vertex {
                project: word(&u.project, "project")?,
                region: word(&u.region, "region")?,
                anthropic_version: version("vertex-2023-10-16")?,
                credentials,
            }
        }
    })
}

/// Every model's candidates: implicit routes (each model an upstream lists, served by all upstreams listing it, as
/// one weighted tier), replaced by the explicit `[[routes]]` for their model.
fn routes(
    raw: &[RawRoute],
    upstreams: &[Upstream],
    by_id: &HashMap<String, UpstreamIdx>,
    at: &Positions,
) -> Result<BTreeMap<String, Vec<Candidate>>, ConfigError> {
    // Implicit routes: every model an upstream lists is served by all upstreams listing it, as one weighted tier.
    let mut routes: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for (i, u) in upstreams.iter().enumerate() {
        for m in &u.models {
            routes.entry(m.clone()).or_default().push(Candidate {
                upstream: UpstreamIdx(i),
                weight: u.weight,
                priority: 0,
                model: None,
            });
        }
    }
    // Explicit routes replace the implicit ones for their model.
    let mut explicit = HashMap::new();
    for (i, r) in raw.iter().enumerate() {
        let model = r.model.get_ref();
        if model.is_empty() {
            return Err(at.invalid(&r.model, &format!("routes[{i}].model"), "must not be empty"));
        }
        if explicit.insert(model.clone(), i).is_some() {
            return Err(at.invalid(&r.model, &format!("routes[{i}].model"), "another route has this model"));
        }
        if r.candidates.get_ref().is_empty() {
            return Err(at.invalid(&r.candidates, &format!("routes[{i}].candidates"), "must not be empty"));
        }
        let mut candidates = Vec::new();
        for (j, c) in r.candidates.get_ref().iter().enumerate() {
            let Some(&idx) = by_id.get(c.upstream.get_ref()) else {
                let known: Vec<_> = upstreams.iter().map(|u| u.id.as_str()).collect();
                return Err(at.invalid(
                    &c.upstream,
                    &format!("routes[{i}].candidates[{j}].upstream"),
                    &format!("no upstream `{}` (defined: {})", c.upstream.get_ref(), known.join(", ")),
                ));
            };
            candidates.push(Candidate {
                upstream: idx,
                weight: c.weight.unwrap_or(upstreams[idx.0].weight),
                priority: c.priority.unwrap_or(j as u32),
                model: c.model.clone(),
            });
        }
        routes.insert(model.clone(), candidates);
    }
    Ok(routes)
}

/// The `[[plugins]]`: `name` and `file` say where the code is; everything else is the plugin's settings.
fn plugins(
    raw: &[Spanned<toml::Table>],
    runtime: &PluginRuntime,
    base: &Path,
    at: &Positions,
) -> Result<Vec<PluginSpec>, ConfigError> {
    let mut plugins = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, entry) in raw.iter().enumerate() {
        // `name` and `file` say where the code is; everything else is the plugin's settings.
        let mut rest = entry.get_ref().clone();
        let mut take = |key: &str| match rest.remove(key) {
            Some(toml::Value::String(s)) => Ok(s),
            Some(_) => Err(at.invalid(entry, &format!("plugins[{i}].{key}"), "must be a string")),
            None => Err(at.invalid(entry, &format!("plugins[{i}].{key}"), "is required")),
        };
        let name = take("name")?;
        let file = take("file")?;
        if !valid_plugin_name(&name) {
            return Err(at.invalid(entry, &format!("plugins[{i}].name"), "use letters, digits, `-` and `_`"));
        }
        if !names.insert(name.clone()) {
            return Err(at.invalid(entry, &format!("plugins[{i}].name"), &format!("two plugins are named `{name}`")));
        }
        let settings: PluginSettings = toml::Value::Table(rest)
            .try_into()
            .map_err(|e: toml::de::Error| at.invalid(entry, &format!("plugins[{i}]"), e.message()))?;
        check_plugin_settings(&settings, runtime).map_err(|m| at.invalid(entry, &format!("plugins[{i}]"), &m))?;
        plugins.push(PluginSpec { name, file: base.join(file), settings });
    }
    Ok(plugins)
}

/// Plugin names become file names, metric labels and kv namespaces.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The largest `kv_max_value` a plugin may be given: well under the file store's largest log record.
pub const KV_MAX_VALUE_LIMIT: usize = 32 << 20;

/// Checks what types cannot about one plugin's settings.
pub fn check_plugin_settings(s: &PluginSettings, rt: &PluginRuntime) -> Result<(), String> {
    if s.memory < (1 << 20) || s.memory > rt.max_memory {
        return Err(format!("memory must be between 1MiB and plugin_runtime.max_memory ({} bytes)", rt.max_memory));
    }
    if s.warm_instances.is_some() {
        return Err("`warm_instances` was replaced by `isolation`: \"shared\" reuses instances across all requests \
                    (as `warm_instances` did), \"tenant\" only within one tenant; `reuse.instances` is how many idle \
                    instances are kept (docs/plugins.md, \"Isolation\")"
            .into());
    }
    if let Some(m) = s.kv_max_value
        && (!(1024..=KV_MAX_VALUE_LIMIT).contains(&m) || m > s.memory / 4)
    {
        return Err(format!(
            "kv_max_value must be between 1KiB and 32MiB, and at most a quarter of `memory` ({} bytes): the plugin \
             holds a value in its memory while it reads or writes it",
            s.memory
        ));
    }
    if !(0.0..=1.0).contains(&s.shadow_sample) {
        return Err("shadow_sample must be between 0 and 1 (the share of requests a shadow version runs on)".into());
    }
    let r = &s.reuse;
    if r.max_requests == 0 || r.instances == 0 || r.instances > 4096 {
        return Err("reuse.max_requests must be at least 1, reuse.instances between 1 and 4096".into());
    }
    if r.idle.is_zero() || r.idle > Duration::from_secs(3600) {
        return Err("reuse.idle must be between 1ms and 1h".into());
    }
    if r.memory.is_some_and(|m| m < (1 << 20)) {
        return Err("reuse.memory must be at least 1MiB".into());
    }
    let t = &s.timeouts;
    for (name, d) in
        [("init", t.init), ("on_request", t.on_request), ("on_chunk", t.on_chunk), ("on_complete", t.on_complete)]
    {
        if d.is_zero() || d > Duration::from_secs(10) {
            return Err(format!("timeouts.{name} must be between 1ms and 10s"));
        }
    }
    Ok(())
}

/// Reads a `<name>.toml` beside a plugin in the plugins directory.
pub fn load_plugin_settings(path: &Path, rt: &PluginRuntime) -> Result<PluginSettings, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: path.to_path_buf(), source })?;
    let s: PluginSettings =
        toml::from_str(&text).map_err(|e| ConfigError::Parse { file: path.to_path_buf(), message: e.to_string() })?;
    check_plugin_settings(&s, rt).map_err(|message| ConfigError::Parse { file: path.to_path_buf(), message })?;
    Ok(s)
}

/// Maps byte offsets to line/column for error messages.
struct Positions<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Positions<'_> {
    fn invalid<T>(&self, value: &Spanned<T>, key: &str, message: &str) -> ConfigError {
        let offset = value.span().start.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = offset - before.rfind('\n').map_or(0, |p| p + 1) + 1;
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.to_string(),
            message: message.to_string(),
        }
    }
}

fn parse_addr(s: &Spanned<String>, key: &str, at: &Positions) -> Result<SocketAddr, ConfigError> {
    s.get_ref().parse().map_err(|_| at.invalid(s, key, "expected an address like `127.0.0.1:8080`"))
}

fn validate_base_url(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must start with http:// or https://".into()),
    }
    if uri.authority().is_none() {
        return Err("has no host".into());
    }
    if uri.query().is_some() {
        return Err("must not have a query string".into());
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Parses `250ms`, `2s`, `1.5s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration like `250ms`, `2s` or `5m`"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unit must be ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is too long a duration"))
}

/// `[kv]`, validated; paths are relative to the config file's directory.
fn kv_config(raw: Option<&Spanned<RawKv>>, base: &Path, at: &Positions) -> Result<KvConfig, ConfigError> {
    let default = RawKv::default();
    let k = raw.map_or(&default, |r| r.get_ref());
    let dir = base.join(k.path.as_deref().unwrap_or("weir-data"));
    let only = |what: &str, set: bool, backend: &str| -> Result<(), ConfigError> {
        match (set, raw) {
            (true, Some(r)) => {
                Err(at.invalid(r, &format!("kv.{what}"), &format!("applies to backend = \"{backend}\" only")))
            }
            _ => Ok(()),
        }
    };
    let redis_only = [
        ("url", k.url.is_some()),
        ("password_env", k.password_env.is_some()),
        ("prefix", k.prefix.is_some()),
        ("pool_size", k.pool_size.is_some()),
        ("timeout", k.timeout.is_some()),
        ("journal", k.journal.is_some()),
        ("journal_max", k.journal_max.is_some()),
    ];
    match k.backend {
        KvBackendKind::Memory => {
            only("path", k.path.is_some(), "file")?;
            only("sync_every", k.sync_every.is_some(), "file")?;
            for (what, set) in redis_only {
                only(what, set, "redis")?;
            }
            Ok(KvConfig::Memory)
        }
        KvBackendKind::File => {
            for (what, set) in redis_only {
                only(what, set, "redis")?;
            }
            Ok(KvConfig::File { dir, sync_every: k.sync_every.unwrap_or(Duration::from_millis(100)) })
        }
        KvBackendKind::Redis => {
            // `backend = "redis"` comes from a `[kv]` table, so there is one to point at.
            let Some(r) = raw else { return Ok(KvConfig::Memory) };
            only("path", k.path.is_some(), "file")?;
            only("sync_every", k.sync_every.is_some(), "file")?;
            let Some(url) = &k.url else {
                return Err(at.invalid(r, "kv.url", "is required with backend = \"redis\" (redis://host:6379/0)"));
            };
            let u = url.get_ref();
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                return Err(at.invalid(url, "kv.url", "must start with redis:// or rediss:// (TLS)"));
            }
            if let Some(env) = &k.password_env {
                let name = env.get_ref();
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(at.invalid(env, "kv.password_env", "must be the *name* of an environment variable"));
                }
            }
            let timeout = k.timeout.unwrap_or(Duration::from_millis(250));
            if timeout.is_zero() || timeout > Duration::from_secs(1) {
                return Err(at.invalid(
                    r,
                    "kv.timeout",
                    "must be more than 0 and at most 1s (plugins wait at most 1 s for kv)",
                ));
            }
            let pool_size = k.pool_size.unwrap_or(4);
            if pool_size == 0 || pool_size > 64 {
                return Err(at.invalid(r, "kv.pool_size", "must be between 1 and 64"));
            }
            Ok(KvConfig::Redis(RedisKvConfig {
                url: u.clone(),
                password_env: k.password_env.as_ref().map(|e| e.get_ref().clone()),
                prefix: k.prefix.clone().unwrap_or_else(|| "weir:".into()),
                pool_size,
                timeout,
                journal_dir: base.join(k.journal.as_deref().unwrap_or("weir-data")),
                journal_max: k.journal_max.unwrap_or(100_000),
            }))
        }
    }
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// Parses `1048576`, `512KiB`, `10MiB`, `1GiB` (also `KB`/`MB`/`GB` as powers of 1000).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("`{s}` is not a size like `10MiB`"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(format!("`{s}`: unit must be B, KiB, MiB, GiB, KB, MB or GB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too large"))
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        N(usize),
        S(String),
    }
    match Size::deserialize(d)? {
        Size::N(n) => Ok(n),
        Size::S(s) => parse_bytes(&s).map_err(serde::de::Error::custom),
    }
}

fn de_opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    de_bytes(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:8080"

[[upstreams]]
id = "a"
kind = "openai"
base_url = "http://127.0.0.1:9/v1/"
models = ["gpt-4o-mini"]

[[upstreams]]
id = "b"
kind = "anthropic"
base_url = "https://api.anthropic.com/v1"
api_key_env = "ANTHROPIC_API_KEY"
models = ["claude-3-5-haiku-latest"]

[[routes]]
model = "fast"
candidates = [{ upstream = "a", model = "gpt-4o-mini" }, { upstream = "b" }]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("weir.toml"))
    }

    #[test]
    fn parses_and_derives_routes() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.upstreams[0].base_url, "http://127.0.0.1:9/v1");
        let fast = &c.routes["fast"];
        assert_eq!(fast.len(), 2);
        assert_eq!((fast[0].priority, fast[1].priority), (0, 1));
        assert_eq!(fast[0].model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(c.routes["gpt-4o-mini"][0].upstream, UpstreamIdx(0));
        assert_eq!(c.retry.attempts, 3);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = parse(&GOOD.replace("listen =", "lisen =")).unwrap_err().to_string();
        assert!(err.starts_with("weir.toml: "), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn unknown_upstream_in_route_names_position() {
        let err = parse(&GOOD.replace("{ upstream = \"b\" }", "{ upstream = \"c\" }")).unwrap_err().to_string();
        assert!(err.starts_with("weir.toml:19:"), "{err}");
        assert!(err.contains("routes[0].candidates[1].upstream"), "{err}");
        assert!(err.contains("no upstream `c`"), "{err}");
    }

    #[test]
    fn rejects_bad_values() {
        let e = parse(&GOOD.replace("http://127.0.0.1:9/v1/", "ftp://x")).unwrap_err().to_string();
        assert!(e.contains("upstreams[0].base_url") && e.contains("http://"), "{e}");
        let e = parse(&GOOD.replace("\"ANTHROPIC_API_KEY\"", "\"sk-ant-123 456\"")).unwrap_err().to_string();
        assert!(e.contains("api_key_env"), "{e}");
        let e = parse(&format!("forward_headers = [\"authorization\"]\n{GOOD}")).unwrap_err().to_string();
        assert!(e.contains("forward_headers"), "{e}");
        let e = parse(&format!("{GOOD}\n[timeouts]\nidle = \"5 parsecs\"\n")).unwrap_err().to_string();
        assert!(e.contains("unit must be"), "{e}");
    }

    #[test]
    fn kv_max_value_is_bounded_by_the_limit_and_the_plugins_memory() {
        let rt = PluginRuntime::default();
        let with = |max: &str, memory: usize| {
            let s =
                PluginSettings { kv_max_value: Some(parse_bytes(max).unwrap()), memory, ..PluginSettings::default() };
            check_plugin_settings(&s, &rt)
        };
        assert!(with("4MiB", 32 << 20).is_ok());
        assert!(with("8MiB", 32 << 20).is_ok(), "a quarter of memory");
        let e = with("9MiB", 32 << 20).unwrap_err();
        assert!(e.contains("kv_max_value") && e.contains("quarter of `memory`"), "{e}");
        assert!(with("64MiB", 256 << 20).unwrap_err().contains("32MiB"), "over the store's limit");
        assert!(with("100", 32 << 20).is_err(), "under 1KiB");
    }

    #[test]
    fn validates_translation() {
        let t = parse(GOOD).unwrap().translation;
        assert!(t.enabled && t.prefer_same_family && t.default_max_tokens == 4096 && t.drop_fields.is_empty());
        let with = |t: &str| parse(&format!("{GOOD}\n[translation]\n{t}\n"));
        let t = with("enabled = false\ndrop_fields = [\"seed\"]").unwrap().translation;
        assert!(!t.enabled && t.drop_fields == ["seed"]);
        let e = with("default_max_tokens = 0").unwrap_err().to_string();
        assert!(e.contains("translation.default_max_tokens") && e.contains("at least 1"), "{e}");
        assert!(with("max_tokens = 5").unwrap_err().to_string().contains("max_tokens"), "unknown keys are refused");
    }

    #[test]
    fn validates_telemetry() {
        let with = |t: &str| parse(&format!("{GOOD}\n[telemetry]\n{t}\n"));
        let c = with("otlp_endpoint = \"http://127.0.0.1:4317\"\notlp_protocol = \"grpc\"\ncapture_content = true")
            .unwrap();
        assert_eq!(c.telemetry.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert!(c.telemetry.capture_content && !c.telemetry.chunk_spans && c.telemetry.sampling_ratio == 1.0);
        for (bad, key) in [
            ("sampling_ratio = 1.5", "telemetry.sampling_ratio"),
            ("otlp_protocol = \"http/json\"", "expected `grpc` or `http/protobuf`"),
            ("otlp_endpoint = \"localhost:4317\"", "telemetry.otlp_endpoint"),
            ("otlp_endpoit = \"http://x\"", "otlp_endpoit"),
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
        assert!(!parse(GOOD).unwrap().telemetry.capture_content, "content capture is off by default");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("99999999999999999999999h").unwrap_err().contains("too long"));
        assert_eq!(parse_bytes("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("1XB").is_err());
    }
}
