//! `weir-sdk`: write Weir gateway plugins in Rust.
//!
//! A plugin is one [`Plugin`] impl and one [`export!`]:
//!
//! ```ignore
//! use weir_sdk::{Plugin, Request, RequestDecision, PluginError};
//!
//! #[derive(Default)]
//! struct Stamp;
//!
//! impl Plugin for Stamp {
//!     fn on_request(&mut self, req: &Request) -> Result<RequestDecision, PluginError> {
//!         Ok(RequestDecision::ContinueWith(weir_sdk::changes().header("x-stamp", "1")))
//!     }
//! }
//! weir_sdk::export!(Stamp);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release` and drop the `.wasm` into the gateway's plugins
//! directory. Every hook has a default (continue, pass, nothing to flush, nothing on complete), so implement only
//! what you need. `self` holds per-request state: it is created with `Default` at each request's `on-request`
//! (also when the gateway reuses a warm instance, so state in `self` never crosses requests; `static`s would).
//!
//! Host capabilities are in [`log`], [`config`], [`kv`], [`trace`] and [`clock`]; each must be granted to the plugin in
//! the gateway config. With the `testing` feature (and on a non-Wasm target) they run against an in-memory
//! [`testing`] host, so hooks can be unit-tested with `cargo test`.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_weir_bindings",
        default_bindings_module: "weir_sdk::bindings",
    });
}

use std::cell::RefCell;

pub mod util;

pub use bindings::weir::plugin::types::{
    ApiFamily, Chunk, ChunkDecision, Header, PluginError, Principal, Rejection, Request, RequestChanges,
    RequestDecision, Response, RouteTarget, Summary, Usage,
};

/// A Weir plugin. Every hook has a default; see the WIT (`wit/plugin.wit`) for when each runs.
pub trait Plugin: Default + 'static {
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

    /// At the end of a normal answer: text still held back, if any. Default: none.
    fn flush(&mut self) -> Result<Option<String>, PluginError> {
        Ok(None)
    }

    /// When the request has ended, however it ended. Default: nothing.
    fn on_complete(&mut self, summary: &Summary) {
        let _ = summary;
    }
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

/// Typed access to a [`Request`].
pub trait RequestExt {
    /// The first header with this (lower-case) name.
    fn header(&self, name: &str) -> Option<&str>;
    /// The body parsed as JSON.
    fn json(&self) -> Result<serde_json::Value, PluginError>;
    /// A metadata value set by an earlier plugin.
    fn meta(&self, key: &str) -> Option<&str>;
}

impl RequestExt for Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.name == name).map(|h| h.value.as_str())
    }
    fn json(&self) -> Result<serde_json::Value, PluginError> {
        serde_json::from_slice(&self.body).map_err(|e| error(format!("request body: {e}")))
    }
    fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A refusal in the client's API error shape.
pub fn reject(status: u16, message: impl Into<String>) -> RequestDecision {
    RequestDecision::Reject(Rejection { status, message: message.into() })
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    thread_local! {
        static STATE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
    }

    /// Starts a request: a fresh plugin value, also when the gateway reuses a warm instance.
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
}

/// Exports a [`Plugin`] type as the component's hooks.
#[macro_export]
macro_rules! export {
    ($ty:ty) => {
        const _: () = {
            struct __WeirHooks;
            impl $crate::bindings::exports::weir::plugin::hooks::Guest for __WeirHooks {
                fn on_request(req: $crate::Request) -> Result<$crate::RequestDecision, $crate::PluginError> {
                    $crate::__private::reset::<$ty>();
                    $crate::__private::with::<$ty, _>(|p| <$ty as $crate::Plugin>::on_request(p, &req))
                }
                fn on_chunk(chunk: $crate::Chunk) -> Result<$crate::ChunkDecision, $crate::PluginError> {
                    $crate::__private::with::<$ty, _>(|p| <$ty as $crate::Plugin>::on_chunk(p, &chunk))
                }
                fn flush() -> Result<Option<String>, $crate::PluginError> {
                    $crate::__private::with::<$ty, _>(|p| <$ty as $crate::Plugin>::flush(p))
                }
                fn on_complete(summary: $crate::Summary) {
                    $crate::__private::with::<$ty, _>(|p| <$ty as $crate::Plugin>::on_complete(p, &summary))
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
    pub use crate::bindings::weir::plugin::{clock, config, kv, log, trace};
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

/// The plugin's config table (capability `config`).
pub mod config {
    /// The config table as JSON.
    pub fn json() -> serde_json::Value {
        serde_json::from_str(&super::host::config::get_json()).unwrap_or(serde_json::Value::Null)
    }
}

/// Namespaced key-value store (capability `kv`).
pub mod kv {
    pub fn get(key: &str) -> Option<Vec<u8>> {
        super::host::kv::get(key)
    }
    pub fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) {
        super::host::kv::set(key, value, ttl_ms)
    }
    pub fn increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> i64 {
        super::host::kv::increment(key, delta, ttl_ms)
    }
    pub fn delete(key: &str) {
        super::host::kv::delete(key)
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

/// Time (capability `clock`).
pub mod clock {
    pub fn now_unix_ms() -> u64 {
        super::host::clock::now_unix_ms()
    }
    pub fn monotonic_ns() -> u64 {
        super::host::clock::monotonic_ns()
    }
}
