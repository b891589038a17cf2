//! OpenAI chat completions: `choices[]`, each with its `index`; text in `delta.content` (streamed) or
//! `message.content` (whole), reasoning in `reasoning_content` (OpenAI-compatible providers), tool-call arguments in
//! `tool_calls[].function.arguments` (one stream per tool call index).

use bytes::Bytes;
use serde_json::Value;

use super::wire::{self, Delta, OaEnvelope};
use super::{Dialect, Ends, Located, Observed, TextKind, TextStream, UsageUpdate, stream, text_at, u};
use crate::api::Family;
use crate::error::ApiError;

#[derive(Debug)]
pub struct Chat;

/// Texts of one choice's `delta` or `message` object at `base`.
fn choice_texts(choice: u64, obj: &Value, base: &str, out: &mut Vec<Located>) {
    if let Some(l) = text_at(obj, base, "reasoning_content", stream(choice, 0, TextKind::Reasoning), false) {
        out.push(l);
    }
    if let Some(l) = text_at(obj, base, "content", stream(choice, 0, TextKind::Answer), false) {
        out.push(l);
    }
    for (j, call) in obj.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(j as u64);
        let Some(f) = call.get("function") else { continue };
        let s = stream(choice, index, TextKind::ToolArguments);
        if let Some(l) = text_at(f, &format!("{base}/tool_calls/{j}/function"), "arguments", s, false) {
            out.push(l);
        }
    }
}

fn choices(v: &Value) -> impl Iterator<Item = (usize, &Value)> {
    v.get("choices").and_then(Value::as_array).into_iter().flatten().enumerate()
}

impl Dialect for Chat {
    fn family(&self) -> Family {
        Family::OpenAi
    }

    fn asks_for_stream_usage(&self) -> bool {
        true
    }

    fn observe_event<'a>(&self, _event: Option<&str>, data: &'a str) -> Observed<'a> {
        if data.starts_with("[DONE]") {
            return Observed { finished: true, ..Observed::default() };
        }
        let Ok(c) = serde_json::from_str::<OaEnvelope>(data) else { return Observed::default() };
        Observed {
            content: c.choices.iter().any(|ch| ch.delta.as_ref().is_some_and(Delta::has_content)),
            finish_reason: c.choices.iter().rev().find_map(|ch| ch.finish_reason.clone()),
            usage_only: c.usage.is_some() && c.choices.is_empty(),
            usage: c.usage.as_ref().map(|u| UsageUpdate::Replace(u.openai())),
            upstream_error: c.error.is_some(),
            id: c.id,
            model: c.model,
            finished: false,
        }
    }

    fn observe_body<'a>(&self, body: &'a [u8]) -> Observed<'a> {
        wire::observe_openai_body(body)
    }

    /// A `data:` event whose JSON has an `error` object (the shape OpenAI sends; the SDK raises it).
    fn error_event(&self, e: &ApiError, _sequence_number: u64) -> Bytes {
        Bytes::from(format!("data: {}\n\n", e.body(Family::OpenAi)))
    }

    fn deltas(&self, _event: Option<&str>, v: &Value) -> Vec<Located> {
        let mut out = Vec::new();
        for (k, c) in choices(v) {
            if let Some(delta) = c.get("delta") {
                choice_texts(u(c, "index"), delta, &format!("/choices/{k}/delta"), &mut out);
            }
        }
        out
    }

    fn whole(&self, v: &Value) -> Vec<Located> {
        let mut out = Vec::new();
        for (k, c) in choices(v) {
            if let Some(m) = c.get("message") {
                choice_texts(u(c, "index"), m, &format!("/choices/{k}/message"), &mut out);
            }
        }
        out
    }

    fn ends(&self, _event: Option<&str>, v: Option<&Value>, data: &str) -> Vec<Ends> {
        if data.starts_with("[DONE]") {
            return vec![Ends::ALL];
        }
        let Some(v) = v else { return Vec::new() };
        choices(v)
            .filter(|(_, c)| c.get("finish_reason").is_some_and(|f| !f.is_null()))
            .map(|(_, c)| Ends { choice: Some(u(c, "index") as u32), ..Ends::ALL })
            .collect()
    }

    fn summaries(&self, _event: Option<&str>, _v: &Value) -> Vec<Located> {
        Vec::new()
    }

    fn template(&self, v: &mut Value, s: &TextStream) {
        // A tool call's id, type and name appear in its first delta only (SDKs concatenate what repeats).
        let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else { return };
        for c in choices {
            if let Some(f) = c.get_mut("finish_reason") {
                *f = Value::Null;
            }
            let Some(calls) = c.pointer_mut("/delta/tool_calls").and_then(Value::as_array_mut) else { continue };
            calls.retain(|call| s.kind == TextKind::ToolArguments && u(call, "index") == u64::from(s.part));
            for call in calls {
                if let Some(o) = call.as_object_mut() {
                    o.remove("id");
                    o.remove("type");
                }
                if let Some(f) = call.get_mut("function").and_then(Value::as_object_mut) {
                    f.remove("name");
                }
            }
        }
    }
}
