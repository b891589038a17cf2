//! The `bindgen!`s: host-side types and traits generated from the plugin contract, one module per version. Every
//! version's world is linked into one linker (their interface names differ by version), so a component built for
//! 0.1.0 or 0.2.0 keeps loading with its version's semantics next to 0.3.0 components.
//!
//! Exports are called asynchronously so that a guest interrupted by its epoch deadline can yield to the tokio
//! scheduler (see `engine.rs`). Imports are synchronous host functions that return at once, except `kv` (0.2.0 and later),
//! which is async: a shared backend's round trip never blocks a runtime worker.

/// `weir:plugin@0.1.0` (`wit/v0.1.0/plugin.wit`).
pub mod v1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "plugin",
        exports: { default: async },
    });
    pub use self::weir::plugin::types;
}

/// The bindings of a version from 0.2.0 on: `kv` async (a shared store's round trip), the `request` resource backed by
/// [`crate::plugin::host::RequestHandle`].
macro_rules! bindgen_since_0_2 {
    ($path:literal, $world:literal) => {
        wasmtime::component::bindgen!({
            path: $path,
            world: $world,
            imports: {
                "weir:plugin/kv": async,
                "weir:plugin/types": trappable,
            },
            exports: { default: async },
            additional_derives: [PartialEq],
            with: {
                "weir:plugin/types.request": crate::plugin::host::RequestHandle,
            },
        });
    };
}

/// `weir:plugin@0.2.0` (`wit/v0.2.0/plugin.wit`), adapted to 0.3.0 (`v0_2.rs`).
pub mod v2 {
    bindgen_since_0_2!("../wit/v0.2.0", "plugin");
    pub use self::weir::plugin::types;
}

/// `weir:plugin@0.3.0` (`wit/v0.3.0/plugin.wit`): what the gateway itself speaks. Its world `plugin-full` (every
/// import, `answer` included) is what the host links; components built for `plugin` import a subset of it.
pub mod v3 {
    bindgen_since_0_2!("../wit/v0.3.0", "plugin-full");
    pub use self::weir::plugin::types;
    pub use self::{PluginFull as Plugin, PluginFullPre as PluginPre};
}

/// The current contract's types, which the chain works with (older versions are converted at the boundary).
pub use v3::types;
