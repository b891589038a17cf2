//! The usage tap: token usage, time to first token and the response's identity, read natively from every SSE event
//! (streamed answers) or from the body (non-streamed answers), for both API families. Where each surface keeps
//! these is its dialect's knowledge: `Dialect::observe_event` / `observe_body` return an [`Observed`] value, and the
//! tap applies it ([`UsageTap::apply`]) and holds what was seen.
//!
//! The tap observes; it never fails a request. An event it cannot parse is passed on and ignored. Its one decision
//! is [`Verdict::Drop`] for the usage-only chunk of an OpenAI chat stream when the gateway asked for it on the
//! client's behalf (`stream_options.include_usage`) and the client did not.
//!
//! Token counts are normalised across families: `input_tokens` includes cached input (OpenAI reports it that way;
//! for Anthropic the gateway adds `cache_read_input_tokens` and `cache_creation_input_tokens`), and
//! `cached_tokens` is the part of the input read from the provider's prompt cache.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Instant;

use crate::api::Endpoint;
use crate::dialect::{Dialect, Observed, UsageUpdate};
use crate::sse::SseEvent;

pub use crate::dialect::Usage;

/// The stream error the tap records when the upstream sent an error event.
pub const UPSTREAM_ERROR_EVENT: &str = "upstream sent an error event";

/// What to do with an observed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    Drop,
}

/// Accumulates what one response reveals.
#[derive(Debug)]
pub struct UsageTap {
    dialect: &'static dyn Dialect,
    /// The gateway injected `include_usage`; hide the usage-only chunk from the client.
    strip_injected_usage: bool,
    pub usage: Usage,
    pub response_model: Option<String>,
    pub response_id: Option<String>,
    pub finish_reason: Option<String>,
    /// When the first event carrying generated content was seen.
    pub first_token_at: Option<Instant>,
    pub events: u64,
    /// The upstream reported an error inside the stream.
    pub stream_error: Option<String>,
    /// The stream's terminal event was seen (`[DONE]`, `message_stop`, `response.completed` …).
    pub finished: bool,
}

impl UsageTap {
    pub fn new(endpoint: Endpoint, strip_injected_usage: bool) -> UsageTap {
        UsageTap {
            dialect: crate::dialect::of(endpoint),
            strip_injected_usage,
            usage: Usage::default(),
            response_model: None,
            response_id: None,
            finish_reason: None,
            first_token_at: None,
            events: 0,
            stream_error: None,
            finished: false,
        }
    }

    /// Observes one SSE event of a streamed answer.
    pub fn on_event(&mut self, ev: &SseEvent, now: Instant) -> Verdict {
        self.events += 1;
        let f = ev.fields();
        let seen = self.dialect.observe_event(f.event, &f.data);
        self.apply(seen, now)
    }

    /// Observes the whole body of a non-streamed answer.
    pub fn on_body(&mut self, body: &[u8]) {
        let seen = self.dialect.observe_body(body);
        self.apply(seen, Instant::now());
        self.finished = true;
    }

    /// Applies what the dialect observed (at `now`). Its one decision: the usage-only chunk is hidden from the
    /// client when the gateway asked for it on the client's behalf.
    pub fn apply(&mut self, seen: Observed<'_>, now: Instant) -> Verdict {
        if seen.content {
            self.first_token_at.get_or_insert(now);
        }
        if seen.finished {
            self.finished = true;
        }
        if seen.upstream_error {
            self.stream_error = Some(UPSTREAM_ERROR_EVENT.into());
        }
        if let Some(r) = seen.finish_reason {
            self.finish_reason = Some(r.into_owned());
        }
        if self.response_id.is_none() {
            self.response_id = seen.id.map(|s| s.into_owned());
        }
        if self.response_model.is_none() {
            self.response_model = seen.model.map(|s| s.into_owned());
        }
        match seen.usage {
            Some(UsageUpdate::Replace(u)) => self.usage = u,
            Some(UsageUpdate::Update(u)) => self.usage = self.usage.updated_by(u),
            None => {}
        }
        if seen.usage_only && self.strip_injected_usage { Verdict::Drop } else { Verdict::Forward }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;
    use crate::sse::SseParser;

    fn run(endpoint: Endpoint, strip: bool, stream: &str) -> (UsageTap, String) {
        let mut tap = UsageTap::new(endpoint, strip);
        let mut p = SseParser::new();
        p.push(stream.as_bytes());
        let mut out = String::new();
        while let Some(ev) = p.next_event() {
            if tap.on_event(&ev, Instant::now()) == Verdict::Forward {
                out.push_str(std::str::from_utf8(&ev.raw).unwrap());
            }
        }
        (tap, out)
    }

    const CHAT: &str = concat!(
        "data: {\"id\":\"c1\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":1,\"total_tokens\":13,\"prompt_tokens_details\":{\"cached_tokens\":4},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn openai_chat_stream_usage_and_strip() {
        let (tap, out) = run(Endpoint::ChatCompletions, true, CHAT);
        assert_eq!(
            tap.usage,
            Usage { input_tokens: Some(12), output_tokens: Some(1), cached_tokens: Some(4), reasoning_tokens: Some(0) }
        );
        assert_eq!(tap.finish_reason.as_deref(), Some("stop"));
        assert_eq!(tap.response_id.as_deref(), Some("c1"));
        assert!(tap.first_token_at.is_some() && tap.finished);
        assert!(!out.contains("prompt_tokens"), "injected usage chunk is hidden");
        assert!(out.ends_with("data: [DONE]\n\n"));
        let (_, out) = run(Endpoint::ChatCompletions, false, CHAT);
        assert_eq!(out, CHAT, "a client that asked for usage gets every event unchanged");
    }

    #[test]
    fn anthropic_stream_usage() {
        let s = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-3-5-haiku-latest\",\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":5,\"cache_creation_input_tokens\":0,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let (tap, out) = run(Endpoint::Messages, false, s);
        assert_eq!(out, s);
        assert_eq!(
            tap.usage,
            Usage { input_tokens: Some(15), output_tokens: Some(7), cached_tokens: Some(5), reasoning_tokens: None }
        );
        assert_eq!(tap.finish_reason.as_deref(), Some("end_turn"));
        assert_eq!(tap.response_model.as_deref(), Some("claude-3-5-haiku-latest"));
        assert!(tap.finished);
    }

    #[test]
    fn responses_stream_usage() {
        let s = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-4o-mini\",\"status\":\"in_progress\",\"usage\":null}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-4o-mini\",\"status\":\"completed\",\"usage\":{\"input_tokens\":9,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":3,\"output_tokens_details\":{\"reasoning_tokens\":2},\"total_tokens\":12}}}\n\n",
        );
        let (tap, _) = run(Endpoint::Responses, false, s);
        assert_eq!(
            tap.usage,
            Usage { input_tokens: Some(9), output_tokens: Some(3), cached_tokens: Some(0), reasoning_tokens: Some(2) }
        );
        assert_eq!(tap.finish_reason.as_deref(), Some("completed"));
        assert!(tap.first_token_at.is_some() && tap.finished);
    }

    #[test]
    fn non_streamed_bodies() {
        let mut t = UsageTap::new(Endpoint::Embeddings, false);
        t.on_body(
            br#"{"object":"list","model":"text-embedding-3-small","usage":{"prompt_tokens":5,"total_tokens":5}}"#,
        );
        assert_eq!(t.usage.input_tokens, Some(5));
        let mut t = UsageTap::new(Endpoint::CountTokens, false);
        t.on_body(br#"{"input_tokens":42}"#);
        assert_eq!(t.usage.input_tokens, Some(42));
        let mut t = UsageTap::new(Endpoint::Messages, false);
        t.on_body(br#"{"id":"m","model":"c","stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":4}}"#);
        assert_eq!((t.usage.input_tokens, t.usage.output_tokens), (Some(3), Some(4)));
        let mut t = UsageTap::new(Endpoint::ChatCompletions, false);
        t.on_body(b"not json");
        assert_eq!(t.usage, Usage::default(), "garbage is ignored, never an error");
    }
}
