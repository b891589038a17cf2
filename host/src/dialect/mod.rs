//! Provider dialects: one module per API surface, each the one place that knows its wire format. The pipeline, the
//! usage tap and the error encoder ask the [`Dialect`] of the request's endpoint and never match on formats
//! themselves; a new provider surface is one new module (plus its arms in [`of`] and in `translate`).
//!
//! A dialect says:
//! - where generated text lives, per *stream* ([`TextStream`]: choice, part, kind), so that text of different
//!   choices (OpenAI `n` > 1, Responses output items), content blocks, reasoning and tool-call arguments never mixes,
//!   which events end a stream and which repeat text already streamed (for plugins and redaction);
//! - where usage, the answer's id and model, the finish reason, the first token and the end of the answer are:
//!   `observe_event` and `observe_body` return them as an [`Observed`] value, which the usage tap applies (the
//!   serde shapes are in `wire.rs`);
//! - how a mid-stream error is said so that the surface's SDK raises it (`error_event`);
//! - whether a streamed request must ask for usage (`asks_for_stream_usage`: OpenAI chat's `include_usage`).
//!
//! Translation between the families (a client of one served by an upstream of the other) is `translate/`.
//!
//! | surface | streamed text | ends a stream | repeats text (summary) |
//! |---|---|---|---|
//! | chat completions | `choices[].delta.content` / `.reasoning_content` / `.tool_calls[].function.arguments` | the choice's `finish_reason`, `[DONE]` | — |
//! | responses | `response.output_text.delta`, `response.reasoning_*text.delta`, `response.function_call_arguments.delta` | the matching `*.done`, `response.output_item.done`, `response.completed` | `*.done`, `content_part.done`, `output_item.done`, `response.completed` |
//! | messages | `content_block_delta`: `text_delta`, `thinking_delta`, `input_json_delta` | `content_block_stop`, `message_stop` | — |

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod body;
mod chat;
mod messages;
pub mod replay;
mod responses;
pub mod translate;
mod wire;

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::Value;

use crate::api::{Endpoint, Family};
use crate::error::ApiError;
pub use crate::plugin::types::{TextKind, TextStream};

/// Normalised token usage. `None` means the upstream did not report it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
}

impl Usage {
    /// This usage with every count `newer` reports replacing the one here (Anthropic reports usage in
    /// `message_start` and again, cumulatively, in `message_delta`: later values win, missing ones stay).
    pub fn updated_by(self, newer: Usage) -> Usage {
        Usage {
            input_tokens: newer.input_tokens.or(self.input_tokens),
            output_tokens: newer.output_tokens.or(self.output_tokens),
            cached_tokens: newer.cached_tokens.or(self.cached_tokens),
            reasoning_tokens: newer.reasoning_tokens.or(self.reasoning_tokens),
        }
    }
}

/// How an event's usage applies to what was seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageUpdate {
    /// The whole usage so far (OpenAI).
    Replace(Usage),
    /// The counts it reports replace earlier ones; the others stay (Anthropic).
    Update(Usage),
}

/// What one streamed event, or a whole answer, says about usage, identity and the answer's end: the dialect reads
/// it; the usage tap (`crate::usage`) applies it. Strings borrow from the event's data.
#[derive(Debug, Default, PartialEq)]
pub struct Observed<'a> {
    pub id: Option<Cow<'a, str>>,
    pub model: Option<Cow<'a, str>>,
    pub usage: Option<UsageUpdate>,
    pub finish_reason: Option<Cow<'a, str>>,
    /// The event carries generated content (text, a refusal, a tool call): the first such event is the TTFT.
    pub content: bool,
    /// The answer's terminal event (`[DONE]`, `message_stop`, `response.completed` …).
    pub finished: bool,
    /// The upstream reported an error inside the stream.
    pub upstream_error: bool,
    /// The event carries usage and nothing else (OpenAI chat's usage chunk, which the gateway may have asked for
    /// on the client's behalf).
    pub usage_only: bool,
}

/// A piece of text found in an event or body: its stream, where it is (an RFC 6901 pointer), and the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub stream: TextStream,
    pub pointer: String,
    pub text: String,
}

/// Which open streams an event ends. `None` fields match anything.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Ends {
    pub choice: Option<u32>,
    pub part: Option<u32>,
    pub kind: Option<TextKind>,
}

impl Ends {
    pub const ALL: Ends = Ends { choice: None, part: None, kind: None };

    pub fn matches(&self, s: &TextStream) -> bool {
        self.choice.is_none_or(|c| c == s.choice)
            && self.part.is_none_or(|p| p == s.part)
            && self.kind.is_none_or(|k| k == s.kind)
    }
}

/// One API surface's knowledge of its wire format: where text lives (for plugins), where usage, identity and the
/// end of an answer are (for the usage tap), how a mid-stream error is said, and what the gateway must ask for.
pub trait Dialect: Sync + std::fmt::Debug {
    /// The API family of this surface.
    fn family(&self) -> Family;
    /// What one streamed event says for the usage tap.
    fn observe_event<'a>(&self, event: Option<&str>, data: &'a str) -> Observed<'a>;
    /// What a whole (non-streamed) answer says for the usage tap.
    fn observe_body<'a>(&self, body: &'a [u8]) -> Observed<'a>;
    /// One SSE event reporting `e` after the stream started, in the shape this surface's SDK raises.
    fn error_event(&self, e: &ApiError, sequence_number: u64) -> Bytes;
    /// Whether a streamed request must ask for usage explicitly (`stream_options.include_usage`).
    fn asks_for_stream_usage(&self) -> bool {
        false
    }
    /// The text deltas a streamed event carries (`v`: its parsed `data`).
    fn deltas(&self, event: Option<&str>, v: &Value) -> Vec<Located>;
    /// Every text of a whole (non-streamed) answer, in order.
    fn whole(&self, v: &Value) -> Vec<Located>;
    /// Which streams end at this event (`v` is `None` when the data is not JSON, e.g. `[DONE]`).
    fn ends(&self, event: Option<&str>, v: Option<&Value>, data: &str) -> Vec<Ends>;
    /// Fields of this event that repeat a stream's whole text.
    fn summaries(&self, event: Option<&str>, v: &Value) -> Vec<Located>;
    /// Whether any event of this surface repeats text already streamed (then the host keeps what it sent).
    fn repeats_text(&self) -> bool {
        false
    }
    /// Whether this event may repeat text (checked by name, before any parsing).
    fn is_summary(&self, _event: Option<&str>) -> bool {
        false
    }
    /// Makes a copy of a stream's last text event fit to carry more text of that stream alone (drops what must
    /// appear once, such as a tool call's id and name).
    fn template(&self, _v: &mut Value, _stream: &TextStream) {}
    /// Keeps convenience fields of a whole body in step after its texts were replaced.
    fn after_whole_replace(&self, _v: &mut Value) {}
}

/// The dialect of an endpoint.
pub fn of(endpoint: Endpoint) -> &'static dyn Dialect {
    match endpoint {
        Endpoint::ChatCompletions => &chat::Chat,
        Endpoint::Responses => &responses::Responses,
        Endpoint::Messages => &messages::Messages,
        Endpoint::Embeddings => &NoText(Family::OpenAi),
        Endpoint::CountTokens => &NoText(Family::Anthropic),
    }
}

/// Embeddings (OpenAI) and token counting (Anthropic): answers without generated text, never streamed.
#[derive(Debug)]
struct NoText(Family);

impl Dialect for NoText {
    fn family(&self) -> Family {
        self.0
    }
    fn observe_event<'a>(&self, _: Option<&str>, _: &'a str) -> Observed<'a> {
        Observed::default()
    }
    fn observe_body<'a>(&self, body: &'a [u8]) -> Observed<'a> {
        match self.0 {
            Family::OpenAi => wire::observe_openai_body(body),
            Family::Anthropic => wire::observe_anthropic_body(body),
        }
    }
    fn error_event(&self, e: &ApiError, sequence_number: u64) -> Bytes {
        match self.0 {
            Family::OpenAi => chat::Chat.error_event(e, sequence_number),
            Family::Anthropic => messages::Messages.error_event(e, sequence_number),
        }
    }
    fn deltas(&self, _: Option<&str>, _: &Value) -> Vec<Located> {
        Vec::new()
    }
    fn whole(&self, _: &Value) -> Vec<Located> {
        Vec::new()
    }
    fn ends(&self, _: Option<&str>, _: Option<&Value>, _: &str) -> Vec<Ends> {
        Vec::new()
    }
    fn summaries(&self, _: Option<&str>, _: &Value) -> Vec<Located> {
        Vec::new()
    }
}

/// Sets the string at `pointer` (which a dialect returned for this value).
pub fn set(v: &mut Value, pointer: &str, text: &str) {
    if let Some(slot) = v.pointer_mut(pointer) {
        *slot = Value::String(text.to_string());
    }
}

fn stream(choice: u64, part: u64, kind: TextKind) -> TextStream {
    TextStream {
        choice: u32::try_from(choice).unwrap_or(u32::MAX),
        part: u32::try_from(part).unwrap_or(u32::MAX),
        kind,
    }
}

/// A located text if `v[key]` is a string (empty strings included only when `keep_empty`).
fn text_at(v: &Value, base: &str, key: &str, stream: TextStream, keep_empty: bool) -> Option<Located> {
    let t = v.get(key)?.as_str()?;
    (keep_empty || !t.is_empty()).then(|| Located { stream, pointer: format!("{base}/{key}"), text: t.to_string() })
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The answer text of a streamed event or body, for content capture (`gen_ai.output.messages`).
pub fn answer_text(texts: &[Located]) -> Option<String> {
    let t: String = texts.iter().filter(|l| l.stream.kind == TextKind::Answer).map(|l| l.text.as_str()).collect();
    (!t.is_empty()).then_some(t)
}

/// Frames one SSE event.
pub fn frame(event: Option<&str>, data: &str) -> bytes::Bytes {
    match event {
        Some(e) => bytes::Bytes::from(format!("event: {e}\ndata: {data}\n\n")),
        None => bytes::Bytes::from(format!("data: {data}\n\n")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests;
