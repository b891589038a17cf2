//! Translation between the API families: a client of one family served by an upstream of the other.
//!
//! | client endpoint | upstream of the other family |
//! |---|---|
//! | OpenAI chat completions | Anthropic messages |
//! | OpenAI responses | Anthropic messages (text, function and namespaced tools, web search, reasoning) |
//! | Anthropic messages | OpenAI chat completions |
//! | embeddings, count tokens | — (no equivalent: such upstreams are left out of the plan) |
//!
//! Three parts, each a pure function of the wire JSON: [`request`] (the client's body → the upstream's), [`whole`]
//! (a non-streamed answer → the client's shape) and [`stream`] (one translator per streamed answer, upstream SSE
//! events in, the client's SSE events out). What an answer needs of its request — tools renamed out of a namespace,
//! thinking to seal for a Responses client — is a [`Back`], made by [`back`] from the client's body beside the
//! request's translation. Reasoning effort ↔ thinking budgets and the sealing live in `carry`. Errors of the upstream
//! are re-shaped by [`error_body`]. The pipeline translates an answer *before* the usage tap and the plugins see it,
//! so both always see the client's format.
//!
//! Rules (the full table is in `docs/translation.md`):
//! - a field with no equivalent is refused with a 400 that names it, unless the operator listed it in
//!   `translation.drop_fields`; fields that do not change the answer (`store`, `metadata`, `service_tier`,
//!   `stream_options`, `client_metadata`, `context_management`…) are dropped and documented, and so is what the
//!   coding agents send on every request that the target cannot honour (`text.verbosity`; thinking for an OpenAI model
//!   without reasoning) — every field Claude Code and Codex send is listed in the doc, and a test holds it there;
//! - Anthropic requires `max_tokens`: `translation.default_max_tokens` (4096) when the client gave none;
//! - usage keeps its meaning: OpenAI's prompt tokens include cached input, Anthropic's `input_tokens` do not, so
//!   cache reads are moved across (`cache_read_input_tokens` ↔ `prompt_tokens_details.cached_tokens`);
//! - stop reasons: `end_turn`/`stop_sequence` ↔ `stop`, `max_tokens` ↔ `length`, `tool_use` ↔ `tool_calls`,
//!   `refusal` ↔ `content_filter`.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod carry;
mod request;
mod stream;
mod whole;

pub use carry::{Back, back, is_reasoning_model};
pub use request::{Options, request};
pub use stream::StreamTranslator;
pub use whole::whole;

use serde::Deserialize;
use serde_json::{Value, json};

use super::wire::WireUsage;
use crate::api::{Endpoint, Family};

/// The endpoint an upstream of `family` is asked when a client called `client`: the same endpoint within a family,
/// its translation across families, `None` when the other family has no equivalent.
pub fn target(client: Endpoint, family: Family) -> Option<Endpoint> {
    if client.family() == family {
        return Some(client);
    }
    match client {
        Endpoint::ChatCompletions | Endpoint::Responses => Some(Endpoint::Messages),
        Endpoint::Messages => Some(Endpoint::ChatCompletions),
        Endpoint::Embeddings | Endpoint::CountTokens => None,
    }
}

/// Sets `key` in a JSON object (a no-op on anything else: every caller passes an object it built).
pub(crate) fn put(v: &mut Value, key: &str, val: Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_string(), val);
    }
}

/// Token usage with the meaning made explicit (see the module doc).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Usage {
    /// All input tokens, cached ones included.
    pub input: u64,
    pub output: u64,
    /// Input read from the prompt cache.
    pub cache_read: u64,
    /// Input written to the prompt cache (Anthropic only).
    pub cache_creation: u64,
    pub reasoning: Option<u64>,
}

/// A usage object through the tap's own reading of it (`dialect/wire.rs`), so both agree on what a field means.
fn wire(u: &Value) -> WireUsage {
    WireUsage::deserialize(u).unwrap_or_default()
}

impl Usage {
    pub fn from_anthropic(u: &Value) -> Usage {
        let w = wire(u);
        let n = w.anthropic();
        Usage {
            input: n.input_tokens.unwrap_or(0),
            output: n.output_tokens.unwrap_or(0),
            cache_read: n.cached_tokens.unwrap_or(0),
            cache_creation: w.cache_creation_input_tokens.unwrap_or(0),
            reasoning: None,
        }
    }

    /// From a chat completions or responses usage object.
    pub fn from_openai(u: &Value) -> Usage {
        let n = wire(u).openai();
        Usage {
            input: n.input_tokens.unwrap_or(0),
            output: n.output_tokens.unwrap_or(0),
            cache_read: n.cached_tokens.unwrap_or(0),
            cache_creation: 0,
            reasoning: n.reasoning_tokens,
        }
    }

    /// A `message_delta`'s usage: the output count so far, and the input counts when it repeats them.
    pub fn merge_anthropic_delta(&mut self, u: &Value) {
        let d = Usage::from_anthropic(u);
        self.output = d.output;
        if u.get("input_tokens").is_some() {
            (self.input, self.cache_read, self.cache_creation) = (d.input, d.cache_read, d.cache_creation);
        }
    }

    pub fn to_anthropic(self) -> Value {
        json!({
            "input_tokens": self.input.saturating_sub(self.cache_read + self.cache_creation),
            "cache_creation_input_tokens": self.cache_creation,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": self.output,
        })
    }

    pub fn to_chat(self) -> Value {
        json!({
            "prompt_tokens": self.input,
            "completion_tokens": self.output,
            "total_tokens": self.input + self.output,
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning.unwrap_or(0)},
        })
    }

    pub fn to_responses(self) -> Value {
        json!({
            "input_tokens": self.input,
            "input_tokens_details": {"cached_tokens": self.cache_read},
            "output_tokens": self.output,
            "output_tokens_details": {"reasoning_tokens": self.reasoning.unwrap_or(0)},
            "total_tokens": self.input + self.output,
        })
    }
}

/// Anthropic `stop_reason` → chat `finish_reason`.
pub(crate) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn
        _ => "stop",
    }
}

/// Chat `finish_reason` → Anthropic `stop_reason`.
pub(crate) fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// An upstream's error body re-shaped for a client of `client` (message and type kept; the status is the
/// upstream's). A body that is not a recognisable error becomes a generic one with its status.
pub fn error_body(body: &[u8], status: u16, client: Family) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = v.get("error").filter(|e| e.is_object());
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("the upstream answered HTTP {status}"));
    let given = err.and_then(|e| e.get("type")).and_then(Value::as_str);
    let by_status = match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    };
    match client {
        Family::OpenAi => {
            let code = err.and_then(|e| e.get("code")).cloned().unwrap_or(Value::Null);
            json!({"error": {"message": message, "type": given.unwrap_or(by_status), "param": null, "code": code}})
        }
        Family::Anthropic => {
            // Anthropic's SDK and clients know its own type names; OpenAI's are mapped by status.
            json!({"type": "error", "error": {"type": by_status, "message": message}})
        }
    }
}

/// A mid-stream error event of the upstream (its `data`), for the client's endpoint.
pub(crate) fn stream_error(data: &str, client: Endpoint) -> bytes::Bytes {
    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let message = v
        .pointer("/error/message")
        .or(v.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("the upstream reported an error mid-stream")
        .to_string();
    let e = crate::error::ApiError::new(crate::error::ErrorKind::UpstreamFailed, message);
    super::of(client).error_event(&e, 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests;
