//! The plugin contract in every version this gateway accepts, side by side: the only module that knows which
//! versions exist and how they differ. `weir:plugin@0.3.0` is what the gateway speaks — its generated types
//! ([`types`]) are what the chain, the dialects and the completion phase use, and the host's capabilities
//! (`host.rs`) implement its imports. Components built for older versions are adapted to it at this boundary,
//! keeping their version's semantics.
//!
//! `0.2.0` ([`v0_2`]) differs only in having no `manifest`: its optional hooks come from its `weir:hooks` custom
//! section (or are all called), and it declares no reuse, so it runs with a fresh instance per request.
//!
//! `0.1.0` ([`v0_1`]), in addition:
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

/// Serves an older version's `log`, `config`, `trace` and `clock` imports — unchanged since 0.1.0 but generated as
/// types of their own per version — with the current implementations.
macro_rules! unchanged_capabilities {
    ($v:ident) => {
        impl $v::weir::plugin::log::Host for State {
            fn write(&mut self, level: $v::weir::plugin::log::Level, message: String) {
                use super::bindings::v3::weir::plugin::log::{Host, Level};
                use $v::weir::plugin::log::Level as Old;
                let level = match level {
                    Old::Debug => Level::Debug,
                    Old::Info => Level::Info,
                    Old::Warn => Level::Warn,
                    Old::Error => Level::Error,
                };
                Host::write(self, level, message)
            }
        }
        impl $v::weir::plugin::config::Host for State {
            fn get_json(&mut self) -> String {
                super::bindings::v3::weir::plugin::config::Host::get_json(self)
            }
        }
        impl $v::weir::plugin::trace::Host for State {
            fn set_attribute(&mut self, key: String, value: String) {
                super::bindings::v3::weir::plugin::trace::Host::set_attribute(self, key, value)
            }
            fn add_event(&mut self, name: String) {
                super::bindings::v3::weir::plugin::trace::Host::add_event(self, name)
            }
        }
        impl $v::weir::plugin::clock::Host for State {
            fn now_unix_ms(&mut self) -> u64 {
                super::bindings::v3::weir::plugin::clock::Host::now_unix_ms(self)
            }
            fn monotonic_ns(&mut self) -> u64 {
                super::bindings::v3::weir::plugin::clock::Host::monotonic_ns(self)
            }
        }
    };
}
use unchanged_capabilities;

mod v0_1;
mod v0_2;

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use super::hook::Hooks;
use super::host::{RequestSnapshot, State};
use crate::config::Isolation;
use bindings::{v1, v2, v3};

pub use bindings::types;
/// The `answer` interface's types (0.3.0): the client's answer given to `on-complete`.
pub use bindings::v3::weir::plugin::answer::{AnswerState, ClientAnswer as AnswerOf};
pub use bindings::v3::weir::plugin::types::{AnswerBody, SseEvent};

/// The WIT package of the contract.
pub const PACKAGE: &str = "weir:plugin";
/// The version the gateway speaks.
pub const CURRENT: &str = "0.3.0";
/// Every version accepted, the current one first.
pub const VERSIONS: [&str; 3] = [CURRENT, "0.2.0", "0.1.0"];

/// Adds the host's side of every accepted version to `linker` (their interface names differ by version, so both
/// live in one linker).
pub fn link(linker: &mut Linker<State>) -> anyhow::Result<()> {
    v1::Plugin::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
        .map_err(|e| anyhow::anyhow!("linking host imports (0.1.0): {e}"))?;
    v2::Plugin::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
        .map_err(|e| anyhow::anyhow!("linking host imports (0.2.0): {e}"))?;
    v3::Plugin::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
        .map_err(|e| anyhow::anyhow!("linking host imports (0.3.0): {e}"))?;
    Ok(())
}

/// Runs `init(config)` on an instance of a component with `init` (0.2.0 or later) that was instantiated without
/// bindings (pre-initialization's instrumented copy). `Err`: why not, in words.
pub async fn init_instance(
    store: &mut Store<State>,
    instance: &wasmtime::component::Instance,
    config_json: &str,
) -> Result<(), String> {
    let result = match v3::Plugin::new(&mut *store, instance) {
        Ok(plugin) => plugin.weir_plugin_hooks().call_init(store, config_json).await.map(|r| r.map_err(|e| e.message)),
        Err(_) => match v2::Plugin::new(&mut *store, instance) {
            Ok(plugin) => {
                plugin.weir_plugin_hooks().call_init(store, config_json).await.map(|r| r.map_err(|e| e.message))
            }
            Err(e) => return Err(format!("binding: {e:#}")),
        },
    };
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("init returned an error: {e}")),
        Err(e) => Err(format!("init: {e:#}")),
    }
}

/// What a component declares about itself: 0.3.0's `manifest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The optional hooks it implements.
    pub hooks: Hooks,
    /// The loosest isolation it tolerates (`reuse`: never → `request`, within-tenant → `tenant`, always → `shared`).
    pub reuse: Isolation,
}

/// A component ready to instantiate, for the version it was built against.
pub enum Pre {
    V1(v1::PluginPre<State>),
    V2(v2::PluginPre<State>),
    V3(v3::PluginPre<State>),
}

/// An instance's exports.
pub enum Bindings {
    V1(v1::Plugin),
    V2(v2::Plugin),
    V3(v3::Plugin),
}

/// What a hook call gives back: `Err` is a trap (or another host-side failure); `Ok(Err(message))` is the
/// plugin's own `plugin-error`.
pub type HookResult<T> = wasmtime::Result<Result<T, String>>;

impl Pre {
    /// The typed pre-instance of a component that exports the hooks of `version` (one of [`VERSIONS`]).
    pub fn new(version: &str, pre: InstancePre<State>) -> wasmtime::Result<Pre> {
        Ok(match version {
            "0.1.0" => Pre::V1(v1::PluginPre::new(pre)?),
            "0.2.0" => Pre::V2(v2::PluginPre::new(pre)?),
            _ => Pre::V3(v3::PluginPre::new(pre)?),
        })
    }

    /// Whether the version has `init` (and so can be pre-initialized).
    pub fn has_init(&self) -> bool {
        !matches!(self, Pre::V1(_))
    }

    pub async fn instantiate(&self, store: &mut Store<State>) -> wasmtime::Result<Bindings> {
        match self {
            Pre::V1(p) => p.instantiate_async(store).await.map(Bindings::V1),
            Pre::V2(p) => p.instantiate_async(store).await.map(Bindings::V2),
            Pre::V3(p) => p.instantiate_async(store).await.map(Bindings::V3),
        }
    }

    /// One of [`VERSIONS`].
    pub fn version(&self) -> &'static str {
        match self {
            Pre::V1(_) => "0.1.0",
            Pre::V2(_) => "0.2.0",
            Pre::V3(_) => "0.3.0",
        }
    }
}

impl Bindings {
    /// `init(config)`; nothing for 0.1.0.
    pub async fn init(&self, store: &mut Store<State>, config_json: &str) -> HookResult<()> {
        match self {
            Bindings::V1(_) => Ok(Ok(())),
            Bindings::V2(b) => Ok(b.weir_plugin_hooks().call_init(store, config_json).await?.map_err(|e| e.message)),
            Bindings::V3(b) => Ok(b.weir_plugin_hooks().call_init(store, config_json).await?.map_err(|e| e.message)),
        }
    }

    /// The component's manifest; `None` for versions without one (0.2.0 and 0.1.0).
    pub async fn manifest(&self, store: &mut Store<State>) -> wasmtime::Result<Option<Manifest>> {
        use v3::exports::weir::plugin::hooks::{OptionalHooks as H, Reuse};
        let Bindings::V3(b) = self else { return Ok(None) };
        let m = b.weir_plugin_hooks().call_manifest(store).await?;
        let hooks = Hooks {
            chunks: m.hooks.contains(H::ON_CHUNK),
            flush: m.hooks.contains(H::FLUSH),
            complete: m.hooks.contains(H::ON_COMPLETE),
        };
        let reuse = match m.reuse {
            Reuse::Never => Isolation::Request,
            Reuse::WithinTenant => Isolation::Tenant,
            Reuse::Always => Isolation::Shared,
        };
        Ok(Some(Manifest { hooks, reuse }))
    }

    pub async fn on_request(
        &self,
        store: &mut Store<State>,
        req: &Arc<RequestSnapshot>,
    ) -> HookResult<types::RequestDecision> {
        match self {
            Bindings::V3(b) => {
                let handle = store.data_mut().push_request(req.clone())?;
                let rep = handle.rep();
                let r = b.weir_plugin_hooks().call_on_request(&mut *store, handle).await;
                store.data_mut().drop_request(wasmtime::component::Resource::new_own(rep));
                Ok(r?.map_err(|e| e.message))
            }
            Bindings::V2(b) => {
                let handle = store.data_mut().push_request(req.clone())?;
                let rep = handle.rep();
                let r = b.weir_plugin_hooks().call_on_request(&mut *store, handle).await;
                store.data_mut().drop_request(wasmtime::component::Resource::new_own(rep));
                Ok(r?.map(v0_2::request_decision).map_err(|e| e.message))
            }
            Bindings::V1(b) => {
                let r = b.weir_plugin_hooks().call_on_request(store, &v0_1::request(req)).await?;
                Ok(r.map(v0_1::request_decision).map_err(|e| e.message))
            }
        }
    }

    pub async fn on_chunk(&self, store: &mut Store<State>, chunk: &types::Chunk) -> HookResult<types::ChunkDecision> {
        match self {
            Bindings::V3(b) => Ok(b.weir_plugin_hooks().call_on_chunk(store, chunk).await?.map_err(|e| e.message)),
            Bindings::V2(b) => Ok(b
                .weir_plugin_hooks()
                .call_on_chunk(store, &v0_2::chunk(chunk))
                .await?
                .map(v0_2::chunk_decision)
                .map_err(|e| e.message)),
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
            Bindings::V3(b) => Ok(b.weir_plugin_hooks().call_flush(store, stream).await?.map_err(|e| e.message)),
            Bindings::V2(b) => {
                Ok(b.weir_plugin_hooks().call_flush(store, v0_2::text_stream(stream)).await?.map_err(|e| e.message))
            }
            Bindings::V1(_) if stream.kind != types::TextKind::Answer => Ok(Ok(None)),
            Bindings::V1(b) => Ok(b.weir_plugin_hooks().call_flush(store).await?.map_err(|e| e.message)),
        }
    }

    pub async fn on_complete(&self, store: &mut Store<State>, summary: &types::Summary) -> wasmtime::Result<()> {
        match self {
            Bindings::V3(b) => b.weir_plugin_hooks().call_on_complete(store, summary).await,
            Bindings::V2(b) => b.weir_plugin_hooks().call_on_complete(store, &v0_2::summary(summary)).await,
            Bindings::V1(b) => b.weir_plugin_hooks().call_on_complete(store, &v0_1::summary(summary)).await,
        }
    }

    /// The check a component passes at load, on a fresh instance: `init(config)` (an error refuses the load) and
    /// then `manifest` (0.3.0), or for 0.1.0, which has neither, `flush` (no inputs and no effects in a fresh
    /// instance). Without a config (`weir plugin check` of a bare component), `init` is skipped and only the
    /// manifest is read. `Ok`: the manifest, if the version has one. `Err(Ok(message))`: the plugin's own error
    /// from `init`; `Err(Err(message))`: a trap or another failure.
    pub async fn smoke(
        &self,
        store: &mut Store<State>,
        config_json: Option<&str>,
    ) -> Result<Option<Manifest>, Result<String, String>> {
        match (self, config_json) {
            (Bindings::V1(b), Some(_)) => match b.weir_plugin_hooks().call_flush(store).await {
                Ok(_) => Ok(None),
                Err(e) => Err(Err(format!("flush: {e:#}"))),
            },
            (_, Some(config)) => match self.init(store, config).await {
                Ok(Ok(())) => self.manifest(store).await.map_err(|e| Err(format!("manifest: {e:#}"))),
                Ok(Err(e)) => Err(Ok(e)),
                Err(e) => Err(Err(format!("init: {e:#}"))),
            },
            (_, None) => self.manifest(store).await.map_err(|e| Err(format!("manifest: {e:#}"))),
        }
    }
}
