//! The plugin runtime: WebAssembly components implementing `wit/v<version>/plugin.wit`, run by wasmtime.
//!
//! - [`engine`]: the wasmtime engine (pooling allocator, epoch deadlines, compile cache, import checks);
//! - [`contract`]: every contract version (bindings, instantiating and calling, older versions adapted to 0.3.0):
//!   the only place that knows versions;
//! - [`hook`]: the hooks as one type (names, deadlines, metrics, the optional-hook declaration);
//! - [`host`]: the capabilities plugins import (log, config, kv, trace, clock) and per-instance limits;
//! - [`kv`]: the store behind the `kv` capability;
//! - [`registry`]: loading, the live set (`ArcSwap`), the watched directory, admin;
//! - [`chain`]: one request's run through the plugins, with failure policies;
//! - [`report`]: what the plugins did in a request, as a value for the completion phase;
//! - [`instance`]: one plugin instance's lifecycle in a request (fresh, reused, failed, poisoned);
//! - [`shadow`]: shadow versions (`NAME.shadow.wasm`) run beside the live plugin, their decisions compared;
//! - [`pool`]: reuse of instances across requests by isolation mode (`request`, `tenant`, `shared`);
//! - [`fixtures`]: recorded requests (`[record]`), written as the chain runs;
//! - [`replay`]: `weir plugin replay`, recorded fixtures through a plugin offline (and against another version);
//! - [`bench`]: `weir plugin bench`, a plugin's cost measured in process.

// No panics on the request path (see docs/gateway-core.md, "No panic from the wire"); tests and start-up code opt
// out where they must, with a reason.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod bench;
pub mod chain;
pub mod contract;
pub mod engine;
pub mod fixtures;
pub mod hook;
pub mod host;
pub mod instance;
pub mod kv;
pub mod pool;
pub mod registry;
pub mod replay;
pub mod report;
pub mod shadow;

pub use chain::{Chain, ChunkVerdict, RequestEffects, RequestView};
pub use contract::types;
pub use registry::Registry;
pub use report::PluginReport;
