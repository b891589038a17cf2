//! `weir-sdk`: write Weir gateway plugins in Rust, against the plugin contract `weir:plugin@0.3.0`.
//!
//! A plugin is one [`Plugin`] impl and one [`export!`]:
//!
//! ```ignore
//! use weir_sdk::{ChangesExt, Plugin, PluginError, Request, RequestDecision};
//!
//! #[derive(serde::Deserialize)]
//! struct Config { stamp: String }
//!
//! #[derive(Default)]
//! struct Stamp;
//!
//! impl Plugin for Stamp {
//!     type Config = Config;
//!     fn on_request(&mut self, _req: &Request) -> Result<RequestDecision, PluginError> {
//!         let c = weir_sdk::config::<Self>();
//!         Ok(RequestDecision::ContinueWith(weir_sdk::changes().header("x-stamp", &c.stamp)))
//!     }
//! }
//! weir_sdk::export!(Stamp);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release` and drop the `.wasm` into the gateway's plugins
//! directory. Every hook has a default (continue, pass, nothing to flush, nothing on complete), so implement only
//! what you need. The config is parsed into `Self::Config` once, in `init` (a parse error, or an error from
//! [`Plugin::check`], refuses the load: the gateway keeps the previous version), and read with [`config`].
//! `self` holds per-request state: it is created with `Default` at each request's `on-request` (also when the
//! gateway reuses an instance, so state in `self` never crosses requests; `static`s and `thread_local!`s would).
//!
//! A plugin says how far its instances may be reused with [`Plugin::REUSE`] (default [`Reuse::Never`]: a fresh
//! instance per request). Declaring [`Reuse::WithinTenant`] or [`Reuse::Always`] lets the operator run it with
//! `isolation = "tenant"` or `"shared"`, which saves instantiating it for every request; it is a promise that
//! nothing a request leaves outside `self` (statics, caches) may leak to another tenant's request (or, for
//! `Always`, to any other request).
//!
//! The request is read lazily through [`Request`]: ask for a header or a JSON field and only that crosses into the
//! plugin. Host capabilities are in [`log`], [`kv`] (every call can fail: [`KvError`]), [`trace`] and [`clock`];
//! each must be granted to the plugin in the gateway config. With the `testing` feature (and on a non-Wasm target)
//! they run against an in-memory [`testing`] host, so hooks can be unit-tested with `cargo test`.

// The contract is a copy of `wit/v0.3.0/plugin.wit` inside this crate, so that the SDK builds outside
// this repository too (tests/contract_copy.rs keeps the two equal).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        // Every import: a Rust component imports only what it calls, so `answer` is needed (and must be granted)
        // only by plugins that read answers.
        world: "plugin-full",
        pub_export_macro: true,
        export_macro_name: "__export_weir_bindings",
        default_bindings_module: "weir_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

use std::cell::{Cell, RefCell};

pub mod keys;
pub mod util;

pub use bindings::weir::plugin::types::{
    AnswerBody, ApiFamily, Chunk, ChunkDecision, Header, KvError, PluginError, Principal, Rejection, Reply,
    RequestChanges, RequestDecision, Response, RouteTarget, SseEvent, Summary, TextKind, TextPiece, TextStream, Usage,
};

pub use bindings::exports::weir::plugin::hooks::Reuse;

/// The optional hooks a plugin implements, declared so that the gateway calls no others: a plugin that only
/// decides on requests is not entered for every event of the answer nor after it ends. [`export!`] declares them
/// in the component's manifest. `on-request` is always called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hooks(u8);

impl Hooks {
    /// Only `on-request`.
    pub const NONE: Hooks = Hooks(0);
    /// `on-chunk` and `flush` (a plugin that never holds text back may leave `flush` at its default).
    pub const CHUNKS: Hooks = Hooks(1);
    /// `on-complete`.
    pub const COMPLETE: Hooks = Hooks(2);
    /// Every hook (the default).
    pub const ALL: Hooks = Hooks(3);

    /// Both sets.
    pub const fn and(self, other: Hooks) -> Hooks {
        Hooks(self.0 | other.0)
    }

    /// The manifest's flags.
    #[doc(hidden)]
    pub fn flags(self) -> bindings::exports::weir::plugin::hooks::OptionalHooks {
        use bindings::exports::weir::plugin::hooks::OptionalHooks as F;
        let mut f = F::empty();
        if self.0 & Self::CHUNKS.0 != 0 {
            f = f | F::ON_CHUNK | F::FLUSH;
        }
        if self.0 & Self::COMPLETE.0 != 0 {
            f = f | F::ON_COMPLETE;
        }
        f
    }
}

/// A Weir plugin. Every hook has a default; see the WIT (`sdk/wit/plugin.wit`, this crate's copy of its contract version) for when each runs.
pub trait Plugin: Default + 'static {
    /// The plugin's config table, parsed once per instance by `init` (use [`serde_json::Value`] to take any).
    type Config: serde::de::DeserializeOwned + 'static;

    /// The optional hooks this plugin implements (beyond `on-request`); the gateway skips the others. Default: all
    /// of them. Declare exactly what you override: a hook left out is never called.
    const HOOKS: Hooks = Hooks::ALL;

    /// How far instances of this plugin may be reused across requests (the operator's `isolation` can only be
    /// stricter). Default: never. `self` is reset at every `on-request` whatever this says; declare more only when
    /// what outlives a request (statics, caches, anything built from a request) is safe for the next request of the
    /// same tenant ([`Reuse::WithinTenant`]) or of anyone ([`Reuse::Always`]).
    const REUSE: Reuse = Reuse::Never;

    /// Checks the parsed config beyond what its type says (at load: an error refuses the plugin). Default: ok.
    fn check(config: &Self::Config) -> Result<(), PluginError> {
        let _ = config;
        Ok(())
    }

    /// Before routing, once per request. Default: continue unchanged.
    fn on_request(&mut self, req: &Request) -> Result<RequestDecision, PluginError> {
        let _ = req;
        Ok(RequestDecision::Continue)
    }

    /// For every SSE event of the answer (or once with a whole non-streamed body). Default: pass.
    fn on_chunk(&mut self, chunk: &Chunk) -> Result<ChunkDecision, PluginError> {
        let _ = chunk;
        Ok(ChunkDecision::Pass)
    }

    /// When a stream of text ends: its text still held back, if any. Default: none.
    fn flush(&mut self, stream: TextStream) -> Result<Option<String>, PluginError> {
        let _ = stream;
        Ok(None)
    }

    /// When the request has ended, however it ended (possibly on a fresh instance: see the WIT). Default: nothing.
    fn on_complete(&mut self, summary: &Summary) {
        let _ = summary;
    }
}

/// The config `init` parsed for plugin `P`.
///
/// # Panics
/// Before `init` (the gateway always runs it first; in unit tests, call [`testing::init`]).
pub fn config<P: Plugin>() -> &'static P::Config {
    __private::CONFIG
        .with(|c| c.get())
        .and_then(|c| c.downcast_ref::<P::Config>())
        .expect("init ran with this plugin's config")
}

/// A plugin error with a message (the gateway applies the plugin's failure policy).
pub fn error(message: impl Into<String>) -> PluginError {
    PluginError { message: message.into() }
}

/// An empty set of request changes, to build on.
pub fn changes() -> RequestChanges {
    RequestChanges { set_headers: Vec::new(), body: None, model: None, metadata: Vec::new(), principal: None }
}

/// Builder helpers for [`RequestChanges`].
pub trait ChangesExt {
    fn header(self, name: &str, value: &str) -> Self;
    fn meta(self, key: &str, value: &str) -> Self;
    fn model(self, model: &str) -> Self;
}

impl ChangesExt for RequestChanges {
    fn header(mut self, name: &str, value: &str) -> Self {
        self.set_headers.push(Header { name: name.to_ascii_lowercase(), value: value.to_string() });
        self
    }
    fn meta(mut self, key: &str, value: &str) -> Self {
        self.metadata.push((key.to_string(), value.to_string()));
        self
    }
    fn model(mut self, model: &str) -> Self {
        self.model = Some(model.to_string());
        self
    }
}

/// The request, read lazily from the gateway: each getter asks the host for just that.
pub struct Request<'a>(RequestSource<'a>);

enum RequestSource<'a> {
    Host(&'a bindings::weir::plugin::types::Request),
    #[cfg_attr(all(target_arch = "wasm32", not(feature = "testing")), allow(dead_code))]
    Fake(&'a FakeRequest),
}

/// A request built in memory, for unit tests ([`testing::request`]).
#[derive(Debug, Clone, Default)]
pub struct FakeRequest {
    pub id: String,
    pub family: Option<ApiFamily>,
    pub endpoint: String,
    pub model: String,
    pub stream: bool,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub principal: Option<Principal>,
    pub metadata: Vec<(String, String)>,
    /// What `digest` returns (none: a stand-in computed from the endpoint and body, stable within a test run).
    pub digest: Option<String>,
    /// Headers the hooks added with [`Request::add_response_header`].
    pub response_headers: RefCell<Vec<(String, String)>>,
    /// The key given to [`Request::coalesce`], if any.
    pub coalesce: RefCell<Option<String>>,
}

impl FakeRequest {
    /// This fake as the [`Request`] hooks take.
    pub fn view(&self) -> Request<'_> {
        Request(RequestSource::Fake(self))
    }
}

impl Request<'_> {
    /// The gateway's id for this request.
    pub fn id(&self) -> String {
        match &self.0 {
            RequestSource::Host(r) => r.id(),
            RequestSource::Fake(f) => f.id.clone(),
        }
    }
    pub fn family(&self) -> ApiFamily {
        match &self.0 {
            RequestSource::Host(r) => r.family(),
            RequestSource::Fake(f) => f.family.unwrap_or(ApiFamily::Openai),
        }
    }
    /// `chat.completions`, `responses`, `embeddings`, `messages` or `messages.count_tokens`; `models` for a
    /// model-listing check (see [`Request::is_model_listing`]).
    pub fn endpoint(&self) -> String {
        match &self.0 {
            RequestSource::Host(r) => r.endpoint(),
            RequestSource::Fake(f) => f.endpoint.clone(),
        }
    }
    /// Whether the gateway is only asking if the caller may see [`Request::model`] in `GET /v1/models`: nothing
    /// will be forwarded and `on-complete` will not be called, so plugins that keep accounts (budgets, rate
    /// limits, counters) should return [`RequestDecision::Continue`] and plugins that gate models decide as usual
    /// (a 403 or 404 hides the model).
    pub fn is_model_listing(&self) -> bool {
        self.endpoint() == "models"
    }
    pub fn model(&self) -> String {
        match &self.0 {
            RequestSource::Host(r) => r.model(),
            RequestSource::Fake(f) => f.model.clone(),
        }
    }
    pub fn stream(&self) -> bool {
        match &self.0 {
            RequestSource::Host(r) => r.stream(),
            RequestSource::Fake(f) => f.stream,
        }
    }
    /// The first value of a header (lower-case name).
    pub fn header(&self, name: &str) -> Option<String> {
        match &self.0 {
            RequestSource::Host(r) => r.header(name),
            RequestSource::Fake(f) => f.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()),
        }
    }
    pub fn headers(&self) -> Vec<Header> {
        match &self.0 {
            RequestSource::Host(r) => r.headers(),
            RequestSource::Fake(f) => {
                f.headers.iter().map(|(n, v)| Header { name: n.clone(), value: v.clone() }).collect()
            }
        }
    }
    /// The whole body (a copy: prefer [`Request::json`] for the fields you need).
    pub fn body(&self) -> Vec<u8> {
        match &self.0 {
            RequestSource::Host(r) => r.body(),
            RequestSource::Fake(f) => f.body.clone(),
        }
    }
    pub fn body_size(&self) -> u64 {
        match &self.0 {
            RequestSource::Host(r) => r.body_size(),
            RequestSource::Fake(f) => f.body.len() as u64,
        }
    }
    /// The JSON value at an RFC 6901 pointer (`/max_tokens`, `/messages/0/content`), parsed by the host.
    pub fn json(&self, pointer: &str) -> Option<serde_json::Value> {
        let text = match &self.0 {
            RequestSource::Host(r) => r.json(pointer),
            RequestSource::Fake(f) => {
                let v: serde_json::Value = serde_json::from_slice(&f.body).ok()?;
                v.pointer(pointer).map(|x| x.to_string())
            }
        }?;
        serde_json::from_str(&text).ok()
    }
    /// The caller's identity, set by an earlier plugin.
    pub fn principal(&self) -> Option<Principal> {
        match &self.0 {
            RequestSource::Host(r) => r.principal(),
            RequestSource::Fake(f) => f.principal.clone(),
        }
    }
    /// A metadata value set by an earlier plugin.
    pub fn meta(&self, key: &str) -> Option<String> {
        match &self.0 {
            RequestSource::Host(r) => r.metadata(key),
            RequestSource::Fake(f) => f.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()),
        }
    }
    /// The host's digest of what the request asks (hex SHA-256 over the endpoint and the canonical JSON body,
    /// without `stream` and `stream_options`): the same in every language, for cache keys.
    pub fn digest(&self) -> String {
        match &self.0 {
            RequestSource::Host(r) => r.digest(),
            RequestSource::Fake(f) => f.digest.clone().unwrap_or_else(|| {
                let h = f
                    .endpoint
                    .bytes()
                    .chain(f.body.iter().copied())
                    .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
                format!("fake-{h:016x}")
            }),
        }
    }
    /// Adds a header to the client's response, whatever answers it (credentials, cookies, hop-by-hop and
    /// `content-*` headers fail the plugin).
    pub fn add_response_header(&self, name: &str, value: &str) {
        match &self.0 {
            RequestSource::Host(r) => r.add_response_header(name, value),
            RequestSource::Fake(f) => f.response_headers.borrow_mut().push((name.to_string(), value.to_string())),
        }
    }
    /// Single flight: identical concurrent requests that give the same key (put the tenant in it) make one upstream
    /// call; the others wait (bounded) for its answer and get it as a cached answer.
    pub fn coalesce(&self, key: &str) {
        match &self.0 {
            RequestSource::Host(r) => r.coalesce(key),
            RequestSource::Fake(f) => *f.coalesce.borrow_mut() = Some(key.to_string()),
        }
    }
}

/// What a request will use at most, estimated before it is sent (for reservations: budgets, token rate limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenEstimate {
    /// Prompt bytes / 4, rounded up: read from the body's size, the body itself is not copied into the plugin.
    pub input: u64,
    /// The output limit the client set (`max_tokens`, `max_completion_tokens` or `max_output_tokens`, whichever
    /// its API uses), else `default_max_tokens`.
    pub output: u64,
}

impl Request<'_> {
    /// See [`TokenEstimate`].
    pub fn token_estimate(&self, default_max_tokens: u64) -> TokenEstimate {
        let output = ["/max_tokens", "/max_completion_tokens", "/max_output_tokens"]
            .iter()
            .find_map(|k| self.json(k).as_ref().and_then(serde_json::Value::as_u64))
            .unwrap_or(default_max_tokens);
        TokenEstimate { input: self.body_size().div_ceil(4), output }
    }
}

/// Helpers for [`Chunk`].
pub trait ChunkExt {
    /// The answer text this chunk carries (its first answer piece), if any.
    fn answer(&self) -> Option<&str>;
    /// A `replace-texts` decision: every piece's text replaced by `f(piece)`.
    fn replace_texts(&self, f: impl FnMut(&TextPiece) -> String) -> ChunkDecision;
}

impl ChunkExt for Chunk {
    fn answer(&self) -> Option<&str> {
        self.texts.iter().find(|p| p.stream.kind == TextKind::Answer).map(|p| p.text.as_str())
    }
    fn replace_texts(&self, f: impl FnMut(&TextPiece) -> String) -> ChunkDecision {
        ChunkDecision::ReplaceTexts(self.texts.iter().map(f).collect())
    }
}

/// An answer in the client's API in place of the upstream's (`cached`: from a cache, so the outcome is `cached`).
pub fn reply(body: AnswerBody, headers: &[(&str, &str)], cached: bool) -> RequestDecision {
    let headers = headers.iter().map(|(n, v)| Header { name: n.to_string(), value: v.to_string() }).collect();
    RequestDecision::Reply(Reply { status: 200, body, headers, cached })
}

/// A refusal in the client's API error shape.
pub fn reject(status: u16, message: impl Into<String>) -> RequestDecision {
    reject_with_headers(status, message, &[])
}

/// A refusal with headers on the error response, e.g. `("retry-after", "12")` on a 429.
pub fn reject_with_headers(status: u16, message: impl Into<String>, headers: &[(&str, &str)]) -> RequestDecision {
    let headers = headers.iter().map(|(n, v)| Header { name: n.to_string(), value: v.to_string() }).collect();
    RequestDecision::Reject(Rejection { status, message: message.into(), headers })
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    thread_local! {
        static STATE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
        /// The parsed config (leaked once per instance: it lives as long as the instance).
        pub(crate) static CONFIG: Cell<Option<&'static dyn std::any::Any>> = const { Cell::new(None) };
    }

    /// `init`: parses and checks the config, and keeps it for [`config`].
    pub fn init<P: Plugin>(config_json: &str) -> Result<(), PluginError> {
        let parsed: P::Config = serde_json::from_str(if config_json.is_empty() { "{}" } else { config_json })
            .map_err(|e| error(format!("config: {e}")))?;
        P::check(&parsed)?;
        let leaked: &'static P::Config = Box::leak(Box::new(parsed));
        CONFIG.with(|c| c.set(Some(leaked)));
        Ok(())
    }

    /// Starts a request: a fresh plugin value, also when the gateway reuses an instance.
    pub fn reset<P: Plugin>() {
        STATE.with(|s| *s.borrow_mut() = Some(Box::new(P::default())));
    }

    /// Runs `f` on this instance's plugin value, creating it with `Default` on first use.
    pub fn with<P: Plugin, R>(f: impl FnOnce(&mut P) -> R) -> R {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let any = s.get_or_insert_with(|| Box::new(P::default()));
            f(any.downcast_mut::<P>().expect("one plugin type per component"))
        })
    }

    pub fn request(r: &bindings::weir::plugin::types::Request) -> Request<'_> {
        Request(RequestSource::Host(r))
    }
}

/// Exports a [`Plugin`] type as the component's hooks.
#[macro_export]
macro_rules! export {
    ($ty:ty) => {
        const _: () = {
            struct __WeirHooks;
            impl $crate::bindings::exports::weir::plugin::hooks::Guest for __WeirHooks {
                fn init(config: String) -> Result<(), $crate::PluginError> {
                    $crate::__private::init::<$ty>(&config)
                }
                fn on_request(
                    req: &$crate::bindings::weir::plugin::types::Request,
                ) -> Result<$crate::RequestDecision, $crate::PluginError> {
                    $crate::__private::reset::<$ty>();
                    let req = $crate::__private::request(req);
                    $crate::__private::with::<$ty, _>(|p| <$ty as $crate::Plugin>::on_request(p, &req))
                }
                fn on_chunk(chunk: $crate::Chunk) -> Result<$crate::ChunkDecision, $crate::PluginError> {
                    $crate::__private::with::<$ty, _>(|p| <$ty as $crate::Plugin>::on_chunk(p, &chunk))
                }
                fn flush(stream: $crate::TextStream) -> Result<Option<String>, $crate::PluginError> {
                    $crate::__private::with::<$ty, _>(|p| <$ty as $crate::Plugin>::flush(p, stream))
                }
                fn on_complete(summary: $crate::Summary) {
                    $crate::__private::with::<$ty, _>(|p| <$ty as $crate::Plugin>::on_complete(p, &summary))
                }
                fn manifest() -> $crate::bindings::exports::weir::plugin::hooks::PluginManifest {
                    $crate::bindings::exports::weir::plugin::hooks::PluginManifest {
                        hooks: <$ty as $crate::Plugin>::HOOKS.flags(),
                        reuse: <$ty as $crate::Plugin>::REUSE,
                    }
                }
            }
            // Only Wasm has component exports; natively (unit tests) the hooks are called through the trait.
            #[cfg(target_arch = "wasm32")]
    $crate::bindings::__export_weir_bindings!(__WeirHooks with_types_in $crate::bindings);
        };
    };
}

// ---- host capabilities: the real imports in Wasm, the fake host in native tests ----

#[cfg(not(any(feature = "testing", not(target_arch = "wasm32"))))]
mod host {
    pub use crate::bindings::weir::plugin::{answer, clock, kv, log, metrics, trace};
}

#[cfg(any(feature = "testing", not(target_arch = "wasm32")))]
pub mod testing;
#[cfg(any(feature = "testing", not(target_arch = "wasm32")))]
use testing as host;

/// Logging into the gateway's log (capability `log`).
pub mod log {
    pub use crate::bindings::weir::plugin::log::Level;
    /// Writes one log line attributed to this plugin.
    pub fn write(level: Level, message: &str) {
        super::host::log::write(level, message)
    }
}

/// Namespaced key-value store (capability `kv`). Every call can fail ([`KvError`]): the backend may be shared
/// and unreachable; decide in each plugin whether that fails the request (auth) or is tolerated.
pub mod kv {
    pub use super::KvError;
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        super::host::kv::get(key)
    }
    pub fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        super::host::kv::set(key, value, ttl_ms)
    }
    pub fn increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
        super::host::kv::increment(key, delta, ttl_ms)
    }
    pub fn delete(key: &str) -> Result<(), KvError> {
        super::host::kv::delete(key)
    }
    pub use crate::bindings::weir::plugin::kv::{IncrementOp, Op, Outcome, SetOp};
    /// The most operations one [`batch`] may hold (the contract's limit).
    pub const MAX_BATCH: usize = 1000;
    /// Several operations in one call, applied in order: the calls above one after the other, in one round trip
    /// to a shared backend (Redis). Stops at the first that fails: one result per operation attempted, the last
    /// the error, so a shorter list means the rest were not attempted — except in `on-complete`, where the gateway
    /// attempts every operation (settles must all be made). Not a transaction (what came before a failure stays
    /// applied). More than [`MAX_BATCH`] operations are refused whole: one result, `too-many`.
    pub fn batch(ops: &[Op]) -> Vec<Result<Outcome, KvError>> {
        super::host::kv::batch(ops)
    }
    impl Op {
        pub fn get(key: impl Into<String>) -> Op {
            Op::Get(key.into())
        }
        pub fn set(key: impl Into<String>, value: impl Into<Vec<u8>>, ttl_ms: Option<u64>) -> Op {
            Op::Set(SetOp { key: key.into(), value: value.into(), ttl_ms })
        }
        pub fn increment(key: impl Into<String>, delta: i64, ttl_ms: Option<u64>) -> Op {
            Op::Increment(IncrementOp { key: key.into(), delta, ttl_ms })
        }
        pub fn delete(key: impl Into<String>) -> Op {
            Op::Delete(key.into())
        }
    }
    impl Outcome {
        /// An `increment`'s new value.
        pub fn count(&self) -> Option<i64> {
            match self {
                Outcome::Count(n) => Some(*n),
                _ => None,
            }
        }
    }
    /// A kv error in words (for messages and logs).
    pub fn describe(e: &KvError) -> String {
        match e {
            KvError::Unavailable(m) => format!("kv unavailable: {m}"),
            KvError::Timeout => "kv timed out".into(),
            KvError::TooLarge(n) => format!("kv value larger than {n} bytes"),
            KvError::TooMany(n) => format!("kv batch of more than {n} operations"),
        }
    }
}

/// Attributes and events on the request's span (capability `trace`).
pub mod trace {
    pub fn set_attribute(key: &str, value: &str) {
        super::host::trace::set_attribute(key, value)
    }
    pub fn add_event(name: &str) {
        super::host::trace::add_event(name)
    }
}

/// The answer the client got, in `on-complete` (capability `answer`; a cache stores it).
pub mod answer {
    pub use crate::bindings::weir::plugin::answer::{AnswerState, ClientAnswer};
    /// None outside `on-complete`, when there was no answer (a refusal), or when it was larger than the gateway
    /// keeps (1 MiB).
    pub fn get() -> Option<ClientAnswer> {
        super::host::answer::get()
    }
}

/// Counters of the plugin's own (capability `metrics`): `weir_plugin_events_total{plugin, event}`.
pub mod metrics {
    /// Adds `n` to the counter `event` (1–64 characters of `a-z 0-9 _ . -`; at most 64 events per plugin).
    pub fn count(event: &str, n: u64) {
        super::host::metrics::count(event, n)
    }
}

/// Time (capability `clock`).
pub mod clock {
    pub fn now_unix_ms() -> u64 {
        super::host::clock::now_unix_ms()
    }
    pub fn monotonic_ns() -> u64 {
        super::host::clock::monotonic_ns()
    }
}
