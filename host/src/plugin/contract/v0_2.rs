//! `weir:plugin@0.2.0` adapted to the current contract. 0.3.0 only added `manifest`, so the adapter is a change of
//! generated types, field by field: 0.2.0's imports are served by the current capabilities, and its hooks' values
//! are converted at the call. A 0.2.0 component has no manifest: its optional hooks come from its `weir:hooks`
//! custom section, and it may not be reused across requests (`isolation = "request"` only).

use super::bindings::{types, v2, v3};
use crate::plugin::host::{RequestHandle, State};
use wasmtime::component::Resource;

use v2::types as old;

impl v2::types::Host for State {}

super::unchanged_capabilities!(v2);

impl v2::types::HostRequest for State {
    fn id(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<String> {
        types::HostRequest::id(self, r)
    }
    fn family(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<old::ApiFamily> {
        Ok(match types::HostRequest::family(self, r)? {
            types::ApiFamily::Openai => old::ApiFamily::Openai,
            types::ApiFamily::Anthropic => old::ApiFamily::Anthropic,
        })
    }
    fn endpoint(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<String> {
        types::HostRequest::endpoint(self, r)
    }
    fn model(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<String> {
        types::HostRequest::model(self, r)
    }
    fn stream(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<bool> {
        types::HostRequest::stream(self, r)
    }
    fn header(&mut self, r: Resource<RequestHandle>, name: String) -> wasmtime::Result<Option<String>> {
        types::HostRequest::header(self, r, name)
    }
    fn headers(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<Vec<old::Header>> {
        let headers = types::HostRequest::headers(self, r)?;
        Ok(headers.into_iter().map(|h| old::Header { name: h.name, value: h.value }).collect())
    }
    fn body(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<Vec<u8>> {
        types::HostRequest::body(self, r)
    }
    fn body_size(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<u64> {
        types::HostRequest::body_size(self, r)
    }
    fn json(&mut self, r: Resource<RequestHandle>, pointer: String) -> wasmtime::Result<Option<String>> {
        types::HostRequest::json(self, r, pointer)
    }
    fn principal(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<Option<old::Principal>> {
        Ok(types::HostRequest::principal(self, r)?.map(|p| old::Principal { id: p.id, team: p.team }))
    }
    fn metadata(&mut self, r: Resource<RequestHandle>, key: String) -> wasmtime::Result<Option<String>> {
        types::HostRequest::metadata(self, r, key)
    }
    fn all_metadata(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<Vec<(String, String)>> {
        types::HostRequest::all_metadata(self, r)
    }
    fn drop(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<()> {
        types::HostRequest::drop(self, r)
    }
}

fn kv_error(e: types::KvError) -> old::KvError {
    match e {
        types::KvError::Unavailable(m) => old::KvError::Unavailable(m),
        types::KvError::Timeout => old::KvError::Timeout,
        types::KvError::TooLarge(n) => old::KvError::TooLarge(n),
        // Only a 0.3.0 `batch` fails so, and 0.2.0 has no batch.
        types::KvError::TooMany(n) => old::KvError::Unavailable(format!("more than {n} operations in one batch")),
    }
}

impl v2::weir::plugin::kv::Host for State {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, old::KvError> {
        v3::weir::plugin::kv::Host::get(self, key).await.map_err(kv_error)
    }
    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), old::KvError> {
        v3::weir::plugin::kv::Host::set(self, key, value, ttl_ms).await.map_err(kv_error)
    }
    async fn increment(&mut self, key: String, delta: i64, ttl_ms: Option<u64>) -> Result<i64, old::KvError> {
        v3::weir::plugin::kv::Host::increment(self, key, delta, ttl_ms).await.map_err(kv_error)
    }
    async fn delete(&mut self, key: String) -> Result<(), old::KvError> {
        v3::weir::plugin::kv::Host::delete(self, key).await.map_err(kv_error)
    }
}

fn principal(p: old::Principal) -> types::Principal {
    types::Principal { id: p.id, team: p.team }
}

fn header(h: old::Header) -> types::Header {
    types::Header { name: h.name, value: h.value }
}

pub(super) fn request_decision(d: old::RequestDecision) -> types::RequestDecision {
    use old::RequestDecision as D;
    match d {
        D::Continue => types::RequestDecision::Continue,
        D::ContinueWith(c) => types::RequestDecision::ContinueWith(types::RequestChanges {
            set_headers: c.set_headers.into_iter().map(header).collect(),
            body: c.body,
            model: c.model,
            metadata: c.metadata,
            principal: c.principal.map(principal),
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
            headers: r.headers.into_iter().map(header).collect(),
        }),
    }
}

pub(super) fn text_stream(s: types::TextStream) -> old::TextStream {
    old::TextStream {
        choice: s.choice,
        part: s.part,
        kind: match s.kind {
            types::TextKind::Answer => old::TextKind::Answer,
            types::TextKind::Reasoning => old::TextKind::Reasoning,
            types::TextKind::ToolArguments => old::TextKind::ToolArguments,
        },
    }
}

pub(super) fn chunk(c: &types::Chunk) -> old::Chunk {
    old::Chunk {
        index: c.index,
        event: c.event.clone(),
        data: c.data.clone(),
        texts: c.texts.iter().map(|p| old::TextPiece { stream: text_stream(p.stream), text: p.text.clone() }).collect(),
        whole_body: c.whole_body,
    }
}

pub(super) fn chunk_decision(d: old::ChunkDecision) -> types::ChunkDecision {
    use old::ChunkDecision as D;
    match d {
        D::Pass => types::ChunkDecision::Pass,
        D::ReplaceTexts(t) => types::ChunkDecision::ReplaceTexts(t),
        D::ReplaceData(d) => types::ChunkDecision::ReplaceData(d),
        D::Drop => types::ChunkDecision::Drop,
        D::Hold => types::ChunkDecision::Hold,
        D::Abort(r) => types::ChunkDecision::Abort(r),
    }
}

pub(super) fn summary(s: &types::Summary) -> old::Summary {
    let s = s.clone();
    old::Summary {
        request_id: s.request_id,
        model: s.model,
        status: s.status,
        outcome: s.outcome,
        upstream: s.upstream,
        attempts: s.attempts,
        usage: old::Usage {
            input_tokens: s.usage.input_tokens,
            output_tokens: s.usage.output_tokens,
            cached_tokens: s.usage.cached_tokens,
            reasoning_tokens: s.usage.reasoning_tokens,
        },
        ttft_ms: s.ttft_ms,
        duration_ms: s.duration_ms,
        principal: s.principal.map(|p| old::Principal { id: p.id, team: p.team }),
        metadata: s.metadata,
        error: s.error,
        partial: s.partial,
    }
}
