//! Anthropic messages: content blocks by `index`; `text_delta` (answer), `thinking_delta` (reasoning) and
//! `input_json_delta` (tool input as JSON text) in `content_block_delta` events; a block ends with
//! `content_block_stop`. A whole answer has `content[]` blocks (`text`, `thinking`; `tool_use` input is structured
//! JSON, not text).

use bytes::Bytes;
use serde_json::Value;

use super::wire::{self, AnEnvelope, WireUsage};
use super::{Dialect, Ends, Located, Observed, TextKind, Usage, UsageUpdate, stream, text_at, u};
use crate::api::Family;
use crate::error::ApiError;

#[derive(Debug)]
pub struct Messages;

impl Dialect for Messages {
    fn family(&self) -> Family {
        Family::Anthropic
    }

    fn observe_event<'a>(&self, event: Option<&str>, data: &'a str) -> Observed<'a> {
        match event.unwrap_or("") {
            "content_block_delta" => Observed { content: true, ..Observed::default() },
            "ping" | "content_block_start" | "content_block_stop" => Observed::default(),
            "message_stop" => Observed { finished: true, ..Observed::default() },
            "error" => Observed { upstream_error: true, ..Observed::default() },
            _ => {
                let Ok(e) = serde_json::from_str::<AnEnvelope>(data) else { return Observed::default() };
                let (mut id, mut model, mut usage) = (None, None, None::<Usage>);
                if let Some(m) = e.message {
                    (id, model) = (m.id, m.model);
                    usage = m.usage.as_ref().map(WireUsage::anthropic);
                }
                if let Some(u) = &e.usage {
                    usage = Some(usage.unwrap_or_default().updated_by(u.anthropic()));
                }
                Observed {
                    id,
                    model,
                    usage: usage.map(UsageUpdate::Update),
                    finish_reason: e.delta.and_then(|d| d.stop_reason),
                    ..Observed::default()
                }
            }
        }
    }

    fn observe_body<'a>(&self, body: &'a [u8]) -> Observed<'a> {
        wire::observe_anthropic_body(body)
    }

    /// An `event: error` with the Anthropic error body.
    fn error_event(&self, e: &ApiError, _sequence_number: u64) -> Bytes {
        Bytes::from(format!("event: error\ndata: {}\n\n", e.body(Family::Anthropic)))
    }

    fn deltas(&self, event: Option<&str>, v: &Value) -> Vec<Located> {
        if event != Some("content_block_delta") {
            return Vec::new();
        }
        let Some(delta) = v.get("delta") else { return Vec::new() };
        let part = u(v, "index");
        let (key, kind) = match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => ("text", TextKind::Answer),
            Some("thinking_delta") => ("thinking", TextKind::Reasoning),
            Some("input_json_delta") => ("partial_json", TextKind::ToolArguments),
            _ => return Vec::new(),
        };
        text_at(delta, "/delta", key, stream(0, part, kind), false).into_iter().collect()
    }

    fn whole(&self, v: &Value) -> Vec<Located> {
        let mut out = Vec::new();
        for (i, block) in v.get("content").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let base = format!("/content/{i}");
            let found = match block.get("type").and_then(Value::as_str) {
                Some("text") => text_at(block, &base, "text", stream(0, i as u64, TextKind::Answer), false),
                Some("thinking") => text_at(block, &base, "thinking", stream(0, i as u64, TextKind::Reasoning), false),
                _ => None,
            };
            out.extend(found);
        }
        out
    }

    fn ends(&self, event: Option<&str>, v: Option<&Value>, _data: &str) -> Vec<Ends> {
        match event {
            Some("content_block_stop") => {
                let part = v.map_or(0, |v| u(v, "index"));
                vec![Ends { part: Some(part as u32), ..Ends::ALL }]
            }
            Some("message_delta" | "message_stop") => vec![Ends::ALL],
            _ => Vec::new(),
        }
    }

    fn summaries(&self, _event: Option<&str>, _v: &Value) -> Vec<Located> {
        Vec::new()
    }
}
