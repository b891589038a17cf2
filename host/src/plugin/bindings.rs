//! The only `bindgen!`: host-side types and traits generated from `wit/plugin.wit`.
//!
//! Exports are called asynchronously so that a guest interrupted by its epoch deadline can yield to the tokio
//! scheduler (see `engine.rs`); imports are synchronous host functions that return at once.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    exports: { default: async },
});

pub use weir::plugin::types;
