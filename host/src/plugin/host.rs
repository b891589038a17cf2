//! The host side of one plugin instance: its store data, the capabilities it imports (for every contract version),
//! the request resource (0.2.0 and later), and its limits.
//!
//! Host functions are tested directly through the generated `Host` traits, without Wasm (see the tests below).

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use bytes::Bytes;
use wasmtime::component::Resource;

use super::contract::bindings::v3;
use super::hook::Hook;
use super::kv::{Kv, KvError};
use crate::api::{Endpoint, Family};

/// Largest stdout/stderr kept per instance; the rest is dropped.
const OUTPUT_CAP: usize = 16 << 10;
/// Extra memory an instance may use per byte of the input it is given (request body, whole answer), beyond its
/// configured cap: a plugin that parses a JSON body keeps the bytes, the parsed tree, and the rewritten body.
pub const MEMORY_PER_INPUT_BYTE: usize = 8;
/// Trace attributes kept per instance.
const MAX_ATTRIBUTES: usize = 64;
/// Largest value a plugin may store in `kv` (the store refuses larger ones, whoever sets them).
pub use super::kv::MAX_VALUE as MAX_KV_VALUE;

/// The request as the `request` resource shows it: built once per request (and again after a plugin changes
/// it), shared by every plugin's handle; the body is parsed as JSON at most once, when a plugin first asks.
pub struct RequestSnapshot {
    pub id: String,
    pub family: Family,
    pub endpoint: Endpoint,
    pub model: String,
    pub stream: bool,
    pub headers: Arc<http::HeaderMap>,
    pub body: Bytes,
    pub principal: Option<v3::types::Principal>,
    pub metadata: Vec<(String, String)>,
    /// A model-listing check (`GET /v1/models`): plugins see the endpoint `models` and `model` is the candidate.
    pub listing: bool,
    /// The body parsed as JSON, when a plugin first asks; shared with the next snapshot while the body is the same.
    json: Arc<std::sync::OnceLock<Option<serde_json::Value>>>,
    /// The request's digest (`request.digest`), when a plugin first asks; shared like `json`.
    digest: Arc<std::sync::OnceLock<String>>,
    /// What plugins ask of the gateway beyond their decisions (`request.add-response-header`, `request.coalesce`):
    /// one per request, shared by every snapshot of it.
    pub asked: Asked,
}

/// What plugins asked during `on-request` through the request resource.
#[derive(Default)]
pub struct AskedOf {
    /// Headers for the client's response.
    pub response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The single-flight key, if one was given.
    pub coalesce: Option<String>,
}

/// [`AskedOf`], shared by a request's snapshots.
pub type Asked = Arc<std::sync::Mutex<AskedOf>>;

impl RequestSnapshot {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        family: Family,
        endpoint: Endpoint,
        model: String,
        stream: bool,
        headers: Arc<http::HeaderMap>,
        body: Bytes,
        principal: Option<v3::types::Principal>,
        metadata: Vec<(String, String)>,
    ) -> RequestSnapshot {
        RequestSnapshot {
            id,
            family,
            endpoint,
            model,
            stream,
            headers,
            body,
            principal,
            metadata,
            listing: false,
            json: Arc::default(),
            digest: Arc::default(),
            asked: Asked::default(),
        }
    }

    /// See `request.digest` in the contract (`dialect/canonical.rs`).
    pub fn digest(&self) -> String {
        self.digest.get_or_init(|| crate::canonical::digest(self.endpoint, &self.body).unwrap_or_default()).clone()
    }

    /// The endpoint as plugins see it: `models` for a model-listing check.
    pub fn endpoint_name(&self) -> &'static str {
        if self.listing { "models" } else { self.endpoint.as_str() }
    }

    /// The same request for a shadow version (`super::shadow`): what it asks through the request resource is kept
    /// apart, never applied.
    pub fn for_shadow(&self) -> RequestSnapshot {
        RequestSnapshot {
            id: self.id.clone(),
            family: self.family,
            endpoint: self.endpoint,
            model: self.model.clone(),
            stream: self.stream,
            headers: self.headers.clone(),
            body: self.body.clone(),
            principal: self.principal.clone(),
            metadata: self.metadata.clone(),
            listing: self.listing,
            json: self.json.clone(),
            digest: self.digest.clone(),
            asked: Asked::default(),
        }
    }

    /// Keeps `previous`'s parsed body when the body did not change (a plugin changed only the model, metadata or
    /// principal), so the body is parsed at most once per version of it.
    pub fn sharing_parse_with(mut self, previous: &RequestSnapshot) -> RequestSnapshot {
        if self.body.as_ptr() == previous.body.as_ptr() && self.body.len() == previous.body.len() {
            self.json = previous.json.clone();
            self.digest = previous.digest.clone();
        }
        self
    }

    /// The JSON value at an RFC 6901 pointer, as JSON text.
    pub fn json(&self, pointer: &str) -> Option<String> {
        let v = self.json.get_or_init(|| serde_json::from_slice(&self.body).ok()).as_ref()?;
        v.pointer(pointer).map(|x| x.to_string())
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn headers_list(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect()
    }
}

/// The host object behind one `request` handle.
pub struct RequestHandle(pub Arc<RequestSnapshot>);

/// What an instance knows about its plugin (shared by all its instances).
pub struct PluginContext {
    pub name: String,
    pub config_json: String,
    pub kv: Arc<dyn Kv>,
    pub memory_cap: usize,
    /// The event names it has counted (`metrics`), at most [`MAX_PLUGIN_EVENTS`].
    pub events: std::sync::Mutex<std::collections::HashSet<String>>,
    /// An ignored `metrics.count` was logged (once per plugin version).
    pub events_warned: std::sync::atomic::AtomicBool,
}

/// Distinct `metrics` events a plugin may count (each is a series of `weir_plugin_events_total`).
pub const MAX_PLUGIN_EVENTS: usize = 64;

/// Store data of one instance.
pub struct State {
    /// Built at the guest's first WASI call ([`WasiView::ctx`]): most hook calls make none (a pre-initialized Rust
    /// guest usually none at all), and building and dropping a context for each fresh instance is a measurable
    /// part of a plugin's per-request cost.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    pub plugin: Arc<PluginContext>,
    /// The current hook call's budget of guest running time, and what it has used (checked at every epoch tick;
    /// time spent yielded to other requests is not charged).
    pub budget: Duration,
    pub used: Duration,
    /// When the guest last started running (set again each time it resumes after yielding).
    pub running_since: Arc<std::sync::Mutex<Instant>>,
    /// Set when the guest tried to grow past its memory cap.
    pub out_of_memory: bool,
    /// The largest size any of its linear memories has grown to (a reused instance past its limit is retired).
    pub memory_peak: usize,
    /// How much of `output` has been logged already.
    pub output_logged: usize,
    /// Memory allowed on top of the plugin's cap for the largest input given to this instance
    /// ([`MEMORY_PER_INPUT_BYTE`] per byte).
    pub memory_allowance: usize,
    /// `trace` attributes set by the guest, namespaced.
    pub attributes: Vec<(String, String)>,
    /// `trace` events added by the guest (namespaced names), with when.
    pub events: Vec<(String, Instant)>,
    /// The guest's stdout and stderr (once its WASI context exists).
    pub output: Option<MemoryOutputPipe>,
    /// The hook being called (`init` while instantiating), for the yields metric.
    pub hook: Hook,
    /// The current call is `on-complete`: `kv.increment` settles ([`Kv::settle`]: kept and applied later when the
    /// backend cannot take it now).
    pub settling: bool,
    /// The client's answer, during an `on-complete` call of a plugin granted `answer`.
    pub answer: Option<v3::weir::plugin::answer::ClientAnswer>,
    /// For a recorded request (`[record]`): the kv values the plugin read before it changed them.
    pub kv_log: Option<Box<KvLog>>,
    /// The engine's epoch ticker (none in unit tests without an engine), and this store's count in it while a call
    /// may be running ([`start_call`] to [`stop_ticking`]).
    pub ticker: Option<Arc<super::engine::Ticker>>,
    ticking: Option<super::engine::Ticking>,
}

/// The kv state a plugin read in one request, for its fixture (`super::fixtures`): the first value seen of each key
/// (its own key, without the plugin's namespace) that it read or incremented before writing it. A replay seeds its
/// store with these, so the plugin decides on the state it had.
#[derive(Default)]
pub struct KvLog {
    touched: std::collections::HashSet<String>,
    pub reads: Vec<(String, Option<Vec<u8>>)>,
}

impl KvLog {
    fn read(&mut self, key: &str, value: Option<Vec<u8>>) {
        if self.touched.insert(key.to_string()) {
            self.reads.push((key.to_string(), value));
        }
    }

    fn wrote(&mut self, key: &str) {
        self.touched.insert(key.to_string());
    }
}

impl State {
    /// A store's data. Its WASI context, made at the guest's first WASI call, is deny-all: no preopened
    /// directories, no sockets, no environment, no arguments; stdout and stderr go to a bounded buffer that the
    /// gateway logs.
    pub fn new(plugin: Arc<PluginContext>) -> State {
        State {
            wasi: None,
            table: ResourceTable::new(),
            plugin,
            budget: Duration::from_secs(3600),
            used: Duration::ZERO,
            running_since: Arc::new(std::sync::Mutex::new(Instant::now())),
            out_of_memory: false,
            memory_peak: 0,
            output_logged: 0,
            memory_allowance: 0,
            attributes: Vec::new(),
            events: Vec::new(),
            output: None,
            hook: Hook::Init,
            settling: false,
            answer: None,
            kv_log: None,
            ticker: None,
            ticking: None,
        }
    }

    /// Lets this instance grow by [`MEMORY_PER_INPUT_BYTE`] per byte of `input` beyond its cap (a plugin that
    /// parses a large body holds a few copies of it), never below what an earlier input allowed.
    pub fn allow_input(&mut self, input: usize) {
        self.memory_allowance = self.memory_allowance.max(input.saturating_mul(MEMORY_PER_INPUT_BYTE));
    }

    /// Starts a hook call with this budget of guest running time (see [`start_call`], which also re-arms the
    /// store's deadline check).
    fn start_call(&mut self, hook: Hook, budget: Duration) {
        if self.ticking.is_none() {
            self.ticking = self.ticker.as_ref().map(super::engine::Ticker::enter);
        }
        self.hook = hook;
        self.budget = budget;
        self.used = Duration::ZERO;
        self.settling = false;
        *self.running_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
    }

    /// `key` in this plugin's namespace (`<plugin>/<key>`): on every kv operation, so without the formatter.
    pub(super) fn key(&self, key: &str) -> String {
        let name = &self.plugin.name;
        let mut out = String::with_capacity(name.len() + 1 + key.len());
        out.push_str(name);
        out.push('/');
        out.push_str(key);
        out
    }

    /// Gives the guest a handle to `request` (0.2.0 and later), to pass to `on-request`.
    pub fn push_request(&mut self, request: Arc<RequestSnapshot>) -> wasmtime::Result<Resource<RequestHandle>> {
        Ok(self.table.push(RequestHandle(request))?)
    }

    /// Takes the handle back after the call.
    pub fn drop_request(&mut self, handle: Resource<RequestHandle>) {
        let _ = self.table.delete(handle);
    }

    fn request(&self, handle: &Resource<RequestHandle>) -> wasmtime::Result<&Arc<RequestSnapshot>> {
        Ok(&self.table.get(handle)?.0)
    }

    /// A value of `len` bytes was handed to the guest (a kv read): like a large body, it may take the guest more
    /// time and memory to work through — [`super::chain::DEADLINE_PER_MIB`] more budget per MiB, and the memory
    /// allowance of an input that size.
    fn took_in(&mut self, len: usize) {
        self.budget = self.budget.saturating_add(super::hook::time_for(len, super::chain::DEADLINE_PER_MIB));
        self.allow_input(len);
    }

    /// Time spent waiting on a host call (kv) is not the guest's: its running time restarts now.
    fn resume_running(&mut self) {
        *self.running_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let output = &mut self.output;
        let ctx = self.wasi.get_or_insert_with(|| {
            let pipe = output.get_or_insert_with(|| MemoryOutputPipe::new(OUTPUT_CAP));
            WasiCtxBuilder::new().stdout(pipe.clone()).stderr(pipe.clone()).build()
        });
        WasiCtxView { ctx, table: &mut self.table }
    }
}

impl ResourceLimiter for State {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.plugin.memory_cap.saturating_add(self.memory_allowance) {
            self.out_of_memory = true;
            return Ok(false);
        }
        self.memory_peak = self.memory_peak.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

impl v3::types::Host for State {}

impl v3::types::HostRequest for State {
    fn id(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<String> {
        Ok(self.request(&r)?.id.clone())
    }
    fn family(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<v3::types::ApiFamily> {
        Ok(match self.request(&r)?.family {
            Family::OpenAi => v3::types::ApiFamily::Openai,
            Family::Anthropic => v3::types::ApiFamily::Anthropic,
        })
    }
    fn endpoint(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<String> {
        Ok(self.request(&r)?.endpoint_name().to_string())
    }
    fn model(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<String> {
        Ok(self.request(&r)?.model.clone())
    }
    fn stream(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<bool> {
        Ok(self.request(&r)?.stream)
    }
    fn header(&mut self, r: Resource<RequestHandle>, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.request(&r)?.header(&name.to_ascii_lowercase()))
    }
    fn headers(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<Vec<v3::types::Header>> {
        Ok(self
            .request(&r)?
            .headers_list()
            .into_iter()
            .map(|(name, value)| v3::types::Header { name, value })
            .collect())
    }
    fn body(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.request(&r)?.body.to_vec())
    }
    fn body_size(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<u64> {
        Ok(self.request(&r)?.body.len() as u64)
    }
    fn json(&mut self, r: Resource<RequestHandle>, pointer: String) -> wasmtime::Result<Option<String>> {
        Ok(self.request(&r)?.json(&pointer))
    }
    fn principal(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<Option<v3::types::Principal>> {
        Ok(self.request(&r)?.principal.clone())
    }
    fn metadata(&mut self, r: Resource<RequestHandle>, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.request(&r)?.metadata.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()))
    }
    fn all_metadata(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.request(&r)?.metadata.clone())
    }
    fn digest(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<String> {
        Ok(self.request(&r)?.digest())
    }
    fn add_response_header(&mut self, r: Resource<RequestHandle>, name: String, value: String) -> wasmtime::Result<()> {
        // A header plugins may not set fails the plugin (a trap names it), as a refused rejection header does.
        let h = super::chain::client_header(&name, &value).map_err(wasmtime::Error::msg)?;
        let req = self.request(&r)?;
        req.asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).response_headers.push(h);
        Ok(())
    }
    fn coalesce(&mut self, r: Resource<RequestHandle>, key: String) -> wasmtime::Result<()> {
        let req = self.request(&r)?;
        req.asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).coalesce = Some(key);
        Ok(())
    }
    fn drop(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<()> {
        self.drop_request(r);
        Ok(())
    }
}

impl v3::weir::plugin::metrics::Host for State {
    fn count(&mut self, event: String, n: u64) {
        let valid = (1..=64).contains(&event.len())
            && event.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
        let admitted = valid && {
            let mut seen = self.plugin.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if seen.contains(&event) {
                true
            } else if seen.len() < MAX_PLUGIN_EVENTS {
                seen.insert(event.clone());
                true
            } else {
                false
            }
        };
        if !admitted {
            if self.plugin.events_warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            tracing::warn!(target: "weir::plugin", plugin = %self.plugin.name, event = %event.chars().take(80).collect::<String>(),
                "metrics.count ignored: an event name is 1-64 characters of a-z 0-9 _ . - and a plugin counts at most 64");
            return;
        }
        crate::telemetry::metrics::METRICS
            .plugin_events
            .get_or_create(&crate::telemetry::metrics::PluginEventLabels { plugin: self.plugin.name.clone(), event })
            .inc_by(n);
    }
}

impl v3::weir::plugin::answer::Host for State {
    fn get(&mut self) -> Option<v3::weir::plugin::answer::ClientAnswer> {
        self.answer.clone()
    }
}

impl v3::weir::plugin::log::Host for State {
    fn write(&mut self, level: v3::weir::plugin::log::Level, message: String) {
        use v3::weir::plugin::log::Level;
        let plugin = self.plugin.name.as_str();
        match level {
            Level::Debug => tracing::debug!(target: "weir::plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "weir::plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "weir::plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "weir::plugin", plugin, "{message}"),
        }
    }
}

impl v3::weir::plugin::config::Host for State {
    fn get_json(&mut self) -> String {
        self.plugin.config_json.clone()
    }
}

impl v3::weir::plugin::trace::Host for State {
    fn set_attribute(&mut self, key: String, value: String) {
        if self.attributes.len() < MAX_ATTRIBUTES {
            self.attributes.push((format!("weir.plugin.{}.{key}", self.plugin.name), value));
        }
    }
    fn add_event(&mut self, name: String) {
        tracing::debug!(target: "weir::plugin", plugin = %self.plugin.name, event = %name, "plugin trace event");
        if self.events.len() < MAX_ATTRIBUTES {
            self.events.push((format!("weir.plugin.{}.{name}", self.plugin.name), Instant::now()));
        }
    }
}

impl v3::weir::plugin::clock::Host for State {
    fn now_unix_ms(&mut self) -> u64 {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
    fn monotonic_ns(&mut self) -> u64 {
        static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
        START.elapsed().as_nanos() as u64
    }
}

/// A `kv` TTL in milliseconds as a duration.
pub(super) fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

fn kv_error(e: KvError) -> v3::types::KvError {
    match e {
        KvError::Unavailable(m) => v3::types::KvError::Unavailable(m),
        KvError::Timeout => v3::types::KvError::Timeout,
        KvError::TooLarge(n) => v3::types::KvError::TooLarge(n as u64),
    }
}

type KvResult<T> = Result<T, v3::types::KvError>;

/// The most operations one `kv.batch` may hold (the contract says 1,000); a longer batch fails whole with `too-many`.
pub const MAX_KV_BATCH: usize = 1000;

/// How long a `kv` call may wait for the backend before it fails with `timeout`.
pub const KV_TIMEOUT: Duration = Duration::from_secs(1);

async fn bounded<T>(f: impl std::future::Future<Output = super::kv::KvResult<T>>) -> super::kv::KvResult<T> {
    tokio::time::timeout(KV_TIMEOUT, f).await.unwrap_or(Err(KvError::Timeout))
}

impl v3::weir::plugin::kv::Host for State {
    async fn get(&mut self, key: String) -> KvResult<Option<Vec<u8>>> {
        let kv = self.plugin.kv.clone();
        let k = self.key(&key);
        let r = bounded(kv.get(&k)).await.map_err(kv_error);
        if let Ok(Some(v)) = &r {
            self.took_in(v.len());
        }
        if let (Some(log), Ok(v)) = (self.kv_log.as_mut(), &r) {
            log.read(&key, v.clone());
        }
        self.resume_running();
        r
    }
    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> KvResult<()> {
        let kv = self.plugin.kv.clone();
        let k = self.key(&key);
        let r = bounded(kv.set(&k, value, ttl(ttl_ms))).await.map_err(kv_error);
        if let Some(log) = self.kv_log.as_mut() {
            log.wrote(&key);
        }
        self.resume_running();
        r
    }
    async fn increment(&mut self, key: String, delta: i64, ttl_ms: Option<u64>) -> KvResult<i64> {
        let kv = self.plugin.kv.clone();
        let k = self.key(&key);
        let r = if self.settling {
            // Not cut by `bounded`: the backend bounds the attempt itself and must then keep the settle.
            kv.settle(&k, delta, ttl(ttl_ms)).await
        } else {
            bounded(kv.increment(&k, delta, ttl(ttl_ms))).await
        };
        let r = r.map_err(kv_error);
        if let (Some(log), Ok(new)) = (self.kv_log.as_mut(), &r) {
            // The value it had: what the increment started from.
            log.read(&key, Some(new.saturating_sub(delta).to_string().into_bytes()));
        }
        self.resume_running();
        r
    }
    async fn delete(&mut self, key: String) -> KvResult<()> {
        let kv = self.plugin.kv.clone();
        let k = self.key(&key);
        let r = bounded(kv.delete(&k)).await.map_err(kv_error);
        if let Some(log) = self.kv_log.as_mut() {
            log.wrote(&key);
        }
        self.resume_running();
        r
    }
    /// The single calls above, in order, in one crossing and in one backend call ([`Kv::batch`]: one log write on
    /// the file store, one round trip to Redis outside `on-complete`): namespacing, the timeout (for the whole
    /// batch), the memory allowance for values read, and a fixture's log of what was read (from the results, in
    /// order, as the single calls log it). It stops at the first failure, which is the last result; in
    /// `on-complete` each increment is a settle and every operation is attempted.
    async fn batch(&mut self, ops: Vec<v3::weir::plugin::kv::Op>) -> Vec<KvResult<v3::weir::plugin::kv::Outcome>> {
        use super::kv::{Op as StoreOp, Outcome as StoreOutcome};
        use v3::weir::plugin::kv::{Op, Outcome};
        if ops.len() > MAX_KV_BATCH {
            // Refused whole, before any key is namespaced: one store pass (one Redis script, one lock of the file
            // store) per batch is bounded for every other plugin's calls. Logged, since `on-complete` ignores it.
            tracing::warn!(target: "weir::plugin", plugin = %self.plugin.name, operations = ops.len(),
                "kv batch refused: more than {MAX_KV_BATCH} operations");
            return vec![Err(v3::types::KvError::TooMany(MAX_KV_BATCH as u32))];
        }
        // Only while recording: the plugin's own keys and deltas, for the fixture's log.
        let recorded = self.kv_log.is_some().then(|| ops.clone());
        let ops: Vec<StoreOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Get(key) => StoreOp::Get(self.key(&key)),
                Op::Set(o) => StoreOp::Set(self.key(&o.key), o.value, ttl(o.ttl_ms)),
                Op::Increment(o) => StoreOp::Increment(self.key(&o.key), o.delta, ttl(o.ttl_ms)),
                Op::Delete(key) => StoreOp::Delete(self.key(&key)),
            })
            .collect();
        let kv = self.plugin.kv.clone();
        let done = if self.settling {
            // Not cut by the timeout: a backend bounds each settle itself and must then keep it (as `increment`).
            kv.batch(ops, true).await
        } else {
            tokio::time::timeout(KV_TIMEOUT, kv.batch(ops, false)).await.unwrap_or_else(|_| vec![Err(KvError::Timeout)])
        };
        if let (Some(log), Some(ops)) = (self.kv_log.as_mut(), recorded) {
            for (op, r) in ops.iter().zip(&done) {
                match (op, r) {
                    (Op::Get(key), Ok(StoreOutcome::Value(v))) => log.read(key, v.clone()),
                    // The value it had: what the increment started from.
                    (Op::Increment(o), Ok(StoreOutcome::Count(n))) => {
                        log.read(&o.key, Some(n.saturating_sub(o.delta).to_string().into_bytes()))
                    }
                    (Op::Set(o), _) => log.wrote(&o.key),
                    (Op::Delete(key), _) => log.wrote(key),
                    _ => {}
                }
            }
        }
        let mut out = Vec::with_capacity(done.len());
        for r in done {
            out.push(match r {
                Ok(StoreOutcome::Value(v)) => {
                    if let Some(v) = &v {
                        self.took_in(v.len());
                    }
                    Ok(Outcome::Value(v))
                }
                Ok(StoreOutcome::Count(n)) => Ok(Outcome::Count(n)),
                Ok(StoreOutcome::Done) => Ok(Outcome::Done),
                Err(e) => Err(kv_error(e)),
            });
        }
        self.resume_running();
        out
    }
}

/// Starts a call of `hook` (or an instantiation: `init`) on `store` with this budget of guest running time: the
/// budget is charged from now, and the next deadline check is one epoch tick from now. Every call must start here:
/// a deadline left from an earlier call (an instance's `on-request` long before its `on-complete`) has already
/// passed, so the call's first check would yield the guest to the scheduler at once — a fiber switch and a trip to
/// the back of the run queue (milliseconds under load) for nothing.
///
/// It also keeps the engine's epoch ticker running until [`stop_ticking`] (or the store's end).
pub fn start_call(store: &mut wasmtime::Store<State>, hook: Hook, budget: Duration) {
    store.data_mut().start_call(hook, budget);
    store.set_epoch_deadline(1);
}

/// The call [`start_call`] started is over (returned, trapped, or the instance is made): the ticker may park when
/// no other store has a call. The next call must start at [`start_call`] again, as every call does.
pub fn stop_ticking(store: &mut wasmtime::Store<State>) {
    store.data_mut().ticking = None;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;
    use crate::plugin::contract::bindings::v1;
    use crate::plugin::kv::MemoryKv;

    fn state(name: &str, kv: Arc<dyn Kv>) -> State {
        State::new(Arc::new(PluginContext {
            name: name.into(),
            config_json: r#"{"a":1}"#.into(),
            kv,
            memory_cap: 1 << 20,
            events: Default::default(),
            events_warned: Default::default(),
        }))
    }

    #[test]
    fn kv_is_namespaced_per_plugin() {
        let kv: Arc<dyn Kv> = Arc::new(MemoryKv::default());
        let mut a = state("a", kv.clone());
        let mut b = state("b", kv.clone());
        use v1::weir::plugin::kv::Host as _;
        a.set("k".into(), b"1".to_vec(), None);
        assert_eq!(b.get("k".into()), None, "b cannot see a's keys");
        assert_eq!(a.increment("n".into(), 5, None), 5);
        assert_eq!(b.increment("n".into(), 1, None), 1);
        assert_eq!(kv.get_now("a/k").unwrap().as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn config_trace_and_memory_cap() {
        let mut s = state("p", Arc::new(MemoryKv::default()));
        assert_eq!(v1::weir::plugin::config::Host::get_json(&mut s), r#"{"a":1}"#);
        v1::weir::plugin::trace::Host::set_attribute(&mut s, "verdict".into(), "ok".into());
        assert_eq!(s.attributes, [("weir.plugin.p.verdict".to_string(), "ok".to_string())]);
        assert!(s.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!s.memory_growing(0, (1 << 20) + 65536, None).unwrap());
        assert!(s.out_of_memory);
    }

    /// A backend that never answers, or always fails.
    struct Broken(Option<KvError>);

    impl Kv for Broken {
        fn get<'a>(
            &'a self,
            _: &'a str,
        ) -> futures_util::future::BoxFuture<'a, super::super::kv::KvResult<Option<Vec<u8>>>> {
            self.answer()
        }
        fn set<'a>(
            &'a self,
            _: &'a str,
            _: Vec<u8>,
            _: Option<Duration>,
        ) -> futures_util::future::BoxFuture<'a, super::super::kv::KvResult<()>> {
            self.answer()
        }
        fn increment<'a>(
            &'a self,
            _: &'a str,
            _: i64,
            _: Option<Duration>,
        ) -> futures_util::future::BoxFuture<'a, super::super::kv::KvResult<i64>> {
            self.answer()
        }
        fn delete<'a>(&'a self, _: &'a str) -> futures_util::future::BoxFuture<'a, super::super::kv::KvResult<()>> {
            self.answer()
        }
    }

    impl Broken {
        fn answer<'a, T: Send + 'a>(&'a self) -> futures_util::future::BoxFuture<'a, super::super::kv::KvResult<T>> {
            match &self.0 {
                None => Box::pin(std::future::pending()),
                Some(e) => Box::pin(std::future::ready(Err(e.clone()))),
            }
        }
    }

    #[test]
    fn request_resource_reads_lazily() {
        use v3::types::HostRequest as _;
        let mut headers = http::HeaderMap::new();
        headers.insert("x-tier", http::HeaderValue::from_static("beta"));
        let body = Bytes::from_static(br#"{"model":"m","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#);
        let snap = Arc::new(RequestSnapshot::new(
            "req_1".into(),
            Family::Anthropic,
            Endpoint::Messages,
            "m".into(),
            true,
            Arc::new(headers),
            body.clone(),
            None,
            vec![("auth.team".into(), "ml".into())],
        ));
        let mut s = state("p", Arc::new(MemoryKv::default()));
        let r = s.push_request(snap.clone()).unwrap();
        let again = || Resource::<RequestHandle>::new_borrow(r.rep());
        assert_eq!(s.header(again(), "X-Tier".into()).unwrap().as_deref(), Some("beta"), "names are case-insensitive");
        assert_eq!(s.json(again(), "/max_tokens".into()).unwrap().as_deref(), Some("50"));
        assert_eq!(s.json(again(), "/messages/0/content".into()).unwrap().as_deref(), Some("\"hi\""));
        assert_eq!(s.json(again(), "/nope".into()).unwrap(), None);
        assert_eq!(s.body_size(again()).unwrap(), body.len() as u64);
        assert_eq!(s.metadata(again(), "auth.team".into()).unwrap().as_deref(), Some("ml"));
        assert_eq!(s.endpoint(again()).unwrap(), "messages");
        assert!(s.stream(again()).unwrap());
        s.drop_request(Resource::new_own(r.rep()));
        assert!(s.model(again()).is_err(), "a handle is valid only during its on-request call");
    }

    #[tokio::test(start_paused = true)]
    async fn kv_calls_fail_within_the_timeout_and_never_hang() {
        use v3::weir::plugin::kv::Host as _;
        let mut s = state("p", Arc::new(Broken(None)));
        let started = tokio::time::Instant::now();
        assert_eq!(s.get("k".into()).await, Err(v3::types::KvError::Timeout));
        assert_eq!(s.increment("n".into(), 1, None).await, Err(v3::types::KvError::Timeout));
        assert!(started.elapsed() >= KV_TIMEOUT * 2 && started.elapsed() < KV_TIMEOUT * 3);

        let mut s = state("p", Arc::new(Broken(Some(KvError::Unavailable("connection refused".into())))));
        assert_eq!(
            s.set("k".into(), b"v".to_vec(), None).await,
            Err(v3::types::KvError::Unavailable("connection refused".into()))
        );
        // 0.1.0 components cannot see errors: a failing store reads as empty.
        assert_eq!(v1::weir::plugin::kv::Host::get(&mut s, "k".into()), None);

        // The store's cap holds for both contract versions (0.1.0's set cannot report it: nothing is stored).
        let mut s = state("p", Arc::new(crate::plugin::kv::Capped::new(Arc::new(MemoryKv::default()), MAX_KV_VALUE)));
        let big = vec![0u8; MAX_KV_VALUE + 1];
        assert_eq!(s.set("k".into(), big.clone(), None).await, Err(v3::types::KvError::TooLarge(MAX_KV_VALUE as u64)));
        v1::weir::plugin::kv::Host::set(&mut s, "k1".into(), big, None);
        assert_eq!(v1::weir::plugin::kv::Host::get(&mut s, "k1".into()), None);
        assert_eq!(s.set("k".into(), b"v".to_vec(), None).await, Ok(()));
        assert_eq!(v3::weir::plugin::kv::Host::get(&mut s, "k".into()).await, Ok(Some(b"v".to_vec())));
    }

    #[tokio::test]
    async fn a_batch_is_its_calls_in_order_and_stops_at_the_first_failure() {
        use v3::weir::plugin::kv::{Host as _, IncrementOp, Op, Outcome, SetOp};
        let store: Arc<dyn Kv> = Arc::new(crate::plugin::kv::Capped::new(Arc::new(MemoryKv::default()), 16));
        let mut s = state("p", store.clone());
        let set = |key: &str, value: &[u8]| Op::Set(SetOp { key: key.into(), value: value.to_vec(), ttl_ms: None });
        let add = |key: &str, delta| Op::Increment(IncrementOp { key: key.into(), delta, ttl_ms: None });
        let done =
            s.batch(vec![add("n", 5), set("k", b"v"), Op::Get("k".into()), add("n", -2), Op::Get("none".into())]).await;
        assert_eq!(
            done,
            [
                Ok(Outcome::Count(5)),
                Ok(Outcome::Done),
                Ok(Outcome::Value(Some(b"v".to_vec()))),
                Ok(Outcome::Count(3)),
                Ok(Outcome::Value(None))
            ]
        );
        assert_eq!(store.get_now("p/n").unwrap().as_deref(), Some(&b"3"[..]), "namespaced as the single calls");

        // A value over the cap fails its operation; the ones before it stay applied, the ones after are not tried.
        let done = s.batch(vec![Op::Delete("k".into()), set("big", &[0; 17]), add("n", 1)]).await;
        assert_eq!(done, [Ok(Outcome::Done), Err(v3::types::KvError::TooLarge(16))]);
        assert_eq!(store.get_now("p/k").unwrap(), None);
        assert_eq!(store.get_now("p/n").unwrap().as_deref(), Some(&b"3"[..]), "not attempted");
        assert_eq!(s.batch(vec![]).await, []);

        // In on-complete, the single calls (increments are settles): the same results.
        s.settling = true;
        assert_eq!(
            s.batch(vec![add("n", 2), Op::Get("n".into())]).await,
            [Ok(Outcome::Count(5)), Ok(Outcome::Value(Some(b"5".to_vec())))]
        );
        let done = s.batch(vec![set("big", &[0; 17]), add("n", 1)]).await;
        assert_eq!(done, [Err(v3::types::KvError::TooLarge(16)), Ok(Outcome::Count(6))], "every operation attempted");

        // More than the limit: refused whole, in on-complete too; the limit itself is a batch like any other.
        assert_eq!(MAX_KV_BATCH, weir_sdk::kv::MAX_BATCH, "the SDK says the same limit");
        let many = vec![add("n", 1); MAX_KV_BATCH + 1];
        assert_eq!(s.batch(many.clone()).await, [Err(v3::types::KvError::TooMany(MAX_KV_BATCH as u32))]);
        s.settling = false;
        assert_eq!(s.batch(many.clone()).await, [Err(v3::types::KvError::TooMany(MAX_KV_BATCH as u32))]);
        assert_eq!(store.get_now("p/n").unwrap().as_deref(), Some(&b"6"[..]), "none attempted");
        let done = s.batch(many[1..].to_vec()).await;
        assert_eq!((done.len(), done.last()), (MAX_KV_BATCH, Some(&Ok(Outcome::Count(1006)))));

        // A backend that is down: the first operation's error, and nothing more.
        let mut s = state("p", Arc::new(Broken(Some(KvError::Unavailable("down".into())))));
        assert_eq!(
            s.batch(vec![add("n", 1), add("m", 1)]).await,
            [Err(v3::types::KvError::Unavailable("down".into()))]
        );
    }

    #[tokio::test]
    async fn a_recorded_batch_logs_what_it_read_as_the_single_calls_do() {
        use v3::weir::plugin::kv::{Host as _, IncrementOp, Op, SetOp};
        let store: Arc<dyn Kv> = Arc::new(MemoryKv::default());
        store.set_now("p/n", b"3".to_vec(), None).unwrap();
        store.set_now("p/k", b"v".to_vec(), None).unwrap();
        let mut s = state("p", store);
        s.kv_log = Some(Box::default());
        let ops = vec![
            Op::Increment(IncrementOp { key: "n".into(), delta: 2, ttl_ms: None }),
            Op::Get("n".into()),
            Op::Set(SetOp { key: "w".into(), value: b"x".to_vec(), ttl_ms: None }),
            Op::Get("w".into()),
            Op::Get("k".into()),
        ];
        assert_eq!(s.batch(ops).await.len(), 5);
        let log = s.kv_log.take().unwrap();
        assert_eq!(
            log.reads,
            [("n".to_string(), Some(b"3".to_vec())), ("k".to_string(), Some(b"v".to_vec()))],
            "the value before the increment; nothing for a key it wrote first"
        );
    }

    #[tokio::test]
    async fn a_large_value_read_gives_the_call_time_and_memory_for_it() {
        let mut s = state("p", Arc::new(crate::plugin::kv::Capped::new(Arc::new(MemoryKv::default()), 8 << 20)));
        s.start_call(Hook::OnRequest, Duration::from_millis(20));
        use v3::weir::plugin::kv::Host as _;
        s.set("small".into(), vec![1; 10], None).await.unwrap();
        s.set("big".into(), vec![1; 4 << 20], None).await.unwrap();
        assert_eq!(s.budget, Duration::from_millis(20), "writes take nothing in");
        v3::weir::plugin::kv::Host::get(&mut s, "small".into()).await.unwrap();
        let small = Duration::from_nanos(100_000_000 * 10 / (1 << 20));
        assert_eq!((s.budget, s.memory_allowance), (Duration::from_millis(20) + small, 10 * MEMORY_PER_INPUT_BYTE));
        v3::weir::plugin::kv::Host::get(&mut s, "big".into()).await.unwrap();
        assert_eq!(s.budget, Duration::from_millis(20) + small + 4 * crate::plugin::chain::DEADLINE_PER_MIB);
        assert_eq!(s.memory_allowance, (4 << 20) * MEMORY_PER_INPUT_BYTE);
    }
}
