//! The contract versions side by side: a component is built for `weir:plugin@0.1.0` or `@0.2.0`, and this module
//! is the only place that knows the difference. It instantiates either and calls its hooks with the 0.2.0 types the
//! chain works with, converting for 0.1.0 components so that they keep 0.1.0's semantics:
//!
//! - no `init`;
//! - `on-request` gets a copy of the whole request (not the `request` resource);
//! - a chunk's text is one `text-delta`: the first answer text of the event (the first answer text of a whole
//!   body), and `replace-text` replaces that text only; reasoning and tool-argument text are not shown;
//! - `flush` takes no stream: it is called at the end of every stream that carried answer text;
//! - the summary has no metadata, and `kv` calls cannot fail (see `host.rs`).

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use wasmtime::Store;

use super::bindings::{types, v1, v2};
use super::host::{RequestSnapshot, State};
use crate::api::Family;

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
                let r = b.weir_plugin_hooks().call_on_request(store, &v1_request(req)).await?;
                Ok(r.map(request_decision).map_err(|e| e.message))
            }
        }
    }

    pub async fn on_chunk(&self, store: &mut Store<State>, chunk: &types::Chunk) -> HookResult<types::ChunkDecision> {
        match self {
            Bindings::V2(b) => Ok(b.weir_plugin_hooks().call_on_chunk(store, chunk).await?.map_err(|e| e.message)),
            Bindings::V1(b) => {
                let answer = chunk.texts.iter().position(|p| p.stream.kind == types::TextKind::Answer);
                let old = v1::types::Chunk {
                    index: chunk.index,
                    event: chunk.event.clone(),
                    data: chunk.data.clone(),
                    text_delta: answer.and_then(|i| chunk.texts.get(i)).map(|p| p.text.clone()),
                    whole_body: chunk.whole_body,
                };
                let d = match b.weir_plugin_hooks().call_on_chunk(store, &old).await? {
                    Ok(d) => d,
                    Err(e) => return Ok(Err(e.message)),
                };
                use v1::types::ChunkDecision as D;
                Ok(Ok(match d {
                    D::Pass => types::ChunkDecision::Pass,
                    D::ReplaceText(t) => match answer {
                        Some(i) => {
                            let texts = chunk.texts.iter().enumerate();
                            let texts = texts.map(|(k, p)| if k == i { t.clone() } else { p.text.clone() }).collect();
                            types::ChunkDecision::ReplaceTexts(texts)
                        }
                        None => return Ok(Err("replaced the text of an event that has no text".into())),
                    },
                    D::ReplaceData(d) => types::ChunkDecision::ReplaceData(d),
                    D::Drop => types::ChunkDecision::Drop,
                    D::Hold => types::ChunkDecision::Hold,
                    D::Abort(r) => types::ChunkDecision::Abort(r),
                }))
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
            Bindings::V1(b) => {
                let s = summary.clone();
                let old = v1::types::Summary {
                    request_id: s.request_id,
                    model: s.model,
                    status: s.status,
                    outcome: s.outcome,
                    upstream: s.upstream,
                    attempts: s.attempts,
                    usage: v1::types::Usage {
                        input_tokens: s.usage.input_tokens,
                        output_tokens: s.usage.output_tokens,
                        cached_tokens: s.usage.cached_tokens,
                        reasoning_tokens: s.usage.reasoning_tokens,
                    },
                    ttft_ms: s.ttft_ms,
                    duration_ms: s.duration_ms,
                    principal: s.principal.map(|p| v1::types::Principal { id: p.id, team: p.team }),
                    error: s.error,
                    partial: s.partial,
                };
                b.weir_plugin_hooks().call_on_complete(store, &old).await
            }
        }
    }
}

/// The whole request, copied, as 0.1.0's `on-request` takes it.
fn v1_request(r: &RequestSnapshot) -> v1::types::Request {
    v1::types::Request {
        id: r.id.clone(),
        family: match r.family {
            Family::OpenAi => v1::types::ApiFamily::Openai,
            Family::Anthropic => v1::types::ApiFamily::Anthropic,
        },
        endpoint: r.endpoint_name().to_string(),
        headers: r.headers_list().into_iter().map(|(name, value)| v1::types::Header { name, value }).collect(),
        body: r.body.to_vec(),
        model: r.model.clone(),
        stream: r.stream,
        principal: r.principal.clone().map(|p| v1::types::Principal { id: p.id, team: p.team }),
        metadata: r.metadata.clone(),
    }
}

fn request_decision(d: v1::types::RequestDecision) -> types::RequestDecision {
    use v1::types::RequestDecision as D;
    match d {
        D::Continue => types::RequestDecision::Continue,
        D::ContinueWith(c) => types::RequestDecision::ContinueWith(types::RequestChanges {
            set_headers: c.set_headers.into_iter().map(|h| types::Header { name: h.name, value: h.value }).collect(),
            body: c.body,
            model: c.model,
            metadata: c.metadata,
            principal: c.principal.map(|p| types::Principal { id: p.id, team: p.team }),
        }),
        D::Route(targets) => types::RequestDecision::Route(
            targets.into_iter().map(|t| types::RouteTarget { upstream: t.upstream, model: t.model }).collect(),
        ),
        D::Respond(r) => types::RequestDecision::Respond(types::Response {
            status: r.status,
            content_type: r.content_type,
            body: r.body,
        }),
        D::Reject(r) => types::RequestDecision::Reject(types::Rejection {
            status: r.status,
            message: r.message,
            headers: Vec::new(),
        }),
    }
}
