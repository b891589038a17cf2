//! The plugin contract in every version this gateway accepts, side by side: the only module that knows which
//! versions exist and how they differ. `weir:plugin@0.2.0` is what the gateway speaks — its generated types
//! ([`types`]) are what the chain, the dialects and the completion phase use, and the host's capabilities
//! (`host.rs`) implement its imports. A component built for `0.1.0` is adapted to it at this boundary ([`v0_1`]),
//! keeping 0.1.0's semantics:
//!
//! - no `init`;
//! - `on-request` gets a copy of the whole request (not the `request` resource);
//! - a chunk's text is one `text-delta`: the first answer text of the event (the first answer text of a whole
//!   body), and `replace-text` replaces that text only; reasoning and tool-argument text are not shown;
//! - `flush` takes no stream: it is called at the end of every stream that carried answer text;
//! - the summary has no metadata, and `kv` calls cannot fail (they read as "not set" / 0).
//!
//! Each released contract's WIT is in `wit/v<version>/` and never changes; [`bindings`] generates one module per
//! version from those directories. A new version is added here: its bindings, its `Pre`/`Bindings` variant, and
//! an adapter to the current one.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod bindings;
mod v0_1;

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use super::host::{RequestSnapshot, State};
use bindings::{v1, v2};

pub use bindings::types;

/// The WIT package of the contract.
pub const PACKAGE: &str = "weir:plugin";
/// The version the gateway speaks.
pub const CURRENT: &str = "0.2.0";
/// Every version accepted, the current one first.
pub const VERSIONS: [&str; 2] = [CURRENT, "0.1.0"];

/// Adds the host's side of every accepted version to `linker` (their interface names differ by version, so both
/// live in one linker).
pub fn link(linker: &mut Linker<State>) -> anyhow::Result<()> {
    v1::Plugin::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
        .map_err(|e| anyhow::anyhow!("linking host imports (0.1.0): {e}"))?;
    v2::Plugin::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
        .map_err(|e| anyhow::anyhow!("linking host imports (0.2.0): {e}"))?;
    Ok(())
}

/// Runs `init(config)` on a 0.2.0 instance that was instantiated without bindings (pre-initialization's
/// instrumented copy). `Err`: why not, in words.
pub async fn init_instance(
    store: &mut Store<State>,
    instance: &wasmtime::component::Instance,
    config_json: &str,
) -> Result<(), String> {
    let plugin = v2::Plugin::new(&mut *store, instance).map_err(|e| format!("binding: {e:#}"))?;
    match plugin.weir_plugin_hooks().call_init(store, config_json).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("init returned an error: {}", e.message)),
        Err(e) => Err(format!("init: {e:#}")),
    }
}

/// A component ready to instantiate, for the version it was built against.
pub enum Pre {
    V1(v1::PluginPre<State>),
    V2(v2::PluginPre<State>),
}

/// An instance's exports.
pub enum Bindings {
    V1(v1::Plugin),
    V2(v2::Plugin),
}

/// What a hook call gives back: `Err` is a trap (or another host-side failure); `Ok(Err(message))` is the
/// plugin's own `plugin-error`.
pub type HookResult<T> = wasmtime::Result<Result<T, String>>;

impl Pre {
    /// The typed pre-instance of a component that exports the hooks of `version` (one of [`VERSIONS`]).
    pub fn new(version: &str, pre: InstancePre<State>) -> wasmtime::Result<Pre> {
        Ok(match version {
            "0.1.0" => Pre::V1(v1::PluginPre::new(pre)?),
            _ => Pre::V2(v2::PluginPre::new(pre)?),
        })
    }

    /// Whether the version has `init` (and so can be pre-initialized).
    pub fn has_init(&self) -> bool {
        matches!(self, Pre::V2(_))
    }

    pub async fn instantiate(&self, store: &mut Store<State>) -> wasmtime::Result<Bindings> {
        match self {
            Pre::V1(p) => p.instantiate_async(store).await.map(Bindings::V1),
            Pre::V2(p) => p.instantiate_async(store).await.map(Bindings::V2),
        }
    }

    /// `0.1.0` or `0.2.0`.
    pub fn version(&self) -> &'static str {
        match self {
            Pre::V1(_) => "0.1.0",
            Pre::V2(_) => "0.2.0",
        }
    }
}

impl Bindings {
    /// `init(config)`; nothing for 0.1.0.
    pub async fn init(&self, store: &mut Store<State>, config_json: &str) -> HookResult<()> {
        match self {
            Bindings::V1(_) => Ok(Ok(())),
            Bindings::V2(b) => Ok(b.weir_plugin_hooks().call_init(store, config_json).await?.map_err(|e| e.message)),
        }
    }

    pub async fn on_request(
        &self,
        store: &mut Store<State>,
        req: &Arc<RequestSnapshot>,
    ) -> HookResult<types::RequestDecision> {
        match self {
            Bindings::V2(b) => {
                let handle = store.data_mut().push_request(req.clone())?;
                let rep = handle.rep();
                let r = b.weir_plugin_hooks().call_on_request(&mut *store, handle).await;
                store.data_mut().drop_request(wasmtime::component::Resource::new_own(rep));
                Ok(r?.map_err(|e| e.message))
            }
            Bindings::V1(b) => {
                let r = b.weir_plugin_hooks().call_on_request(store, &v0_1::request(req)).await?;
                Ok(r.map(v0_1::request_decision).map_err(|e| e.message))
            }
        }
    }

    pub async fn on_chunk(&self, store: &mut Store<State>, chunk: &types::Chunk) -> HookResult<types::ChunkDecision> {
        match self {
            Bindings::V2(b) => Ok(b.weir_plugin_hooks().call_on_chunk(store, chunk).await?.map_err(|e| e.message)),
            Bindings::V1(b) => {
                let (old, answer) = v0_1::chunk(chunk);
                Ok(match b.weir_plugin_hooks().call_on_chunk(store, &old).await? {
                    Ok(d) => v0_1::chunk_decision(d, chunk, answer),
                    Err(e) => Err(e.message),
                })
            }
        }
    }

    pub async fn flush(&self, store: &mut Store<State>, stream: types::TextStream) -> HookResult<Option<String>> {
        match self {
            Bindings::V2(b) => Ok(b.weir_plugin_hooks().call_flush(store, stream).await?.map_err(|e| e.message)),
            Bindings::V1(_) if stream.kind != types::TextKind::Answer => Ok(Ok(None)),
            Bindings::V1(b) => Ok(b.weir_plugin_hooks().call_flush(store).await?.map_err(|e| e.message)),
        }
    }

    pub async fn on_complete(&self, store: &mut Store<State>, summary: &types::Summary) -> wasmtime::Result<()> {
        match self {
            Bindings::V2(b) => b.weir_plugin_hooks().call_on_complete(store, summary).await,
            Bindings::V1(b) => b.weir_plugin_hooks().call_on_complete(store, &v0_1::summary(summary)).await,
        }
    }

    /// The check a component passes at load, on a fresh instance: `init(config)` (an error refuses the load), or
    /// for 0.1.0, which has no `init`, `flush` (no inputs and no effects in a fresh instance). `Err(Ok(message))`:
    /// the plugin's own error from `init`; `Err(Err(message))`: a trap or another failure.
    pub async fn smoke(&self, store: &mut Store<State>, config_json: &str) -> Result<(), Result<String, String>> {
        match self {
            Bindings::V2(_) => match self.init(store, config_json).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Ok(e)),
                Err(e) => Err(Err(format!("init: {e:#}"))),
            },
            Bindings::V1(b) => match b.weir_plugin_hooks().call_flush(store).await {
                Ok(_) => Ok(()),
                Err(e) => Err(Err(format!("flush: {e:#}"))),
            },
        }
    }
}
