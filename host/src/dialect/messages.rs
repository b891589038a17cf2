//! Anthropic messages: content blocks by `index`; `text_delta` (answer), `thinking_delta` (reasoning) and
//! `input_json_delta` (tool input as JSON text) in `content_block_delta` events; a block ends with
//! `content_block_stop`. A whole answer has `content[]` blocks (`text`, `thinking`; `tool_use` input is structured
//! JSON, not text).

use serde_json::Value;

use super::{Dialect, Ends, Located, TextKind, stream, text_at, u};

pub struct Messages;

impl Dialect for Messages {
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
