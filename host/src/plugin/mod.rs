//! The plugin runtime: WebAssembly components implementing `wit/plugin.wit`, run by wasmtime.
//!
//! - [`engine`]: the wasmtime engine (pooling allocator, epoch deadlines, compile cache, import checks);
//! - [`bindings`]: the one `bindgen!`;
//! - [`host`]: the capabilities plugins import (log, config, kv, trace, clock) and per-instance limits;
//! - [`kv`]: the store behind the `kv` capability;
//! - [`registry`]: loading, the live set (`ArcSwap`), the watched directory, admin;
//! - [`chain`]: one request's run through the plugins, with failure policies;
//! - [`instance`]: one plugin instance's lifecycle in a request (fresh, warm, pooled, failed, poisoned);
//! - [`text`]: the provider-neutral text of answers, read and re-encoded for `on-chunk`;
//! - [`bench`]: `weir plugin bench`, a plugin's cost measured in process.

pub mod bench;
pub mod bindings;
pub mod chain;
pub mod engine;
pub mod host;
pub mod instance;
pub mod kv;
pub mod registry;
pub mod text;

pub use chain::{Chain, ChunkVerdict, RequestEffects, RequestView};
pub use registry::Registry;
