//! OpenAI responses: output items by `output_index`, content parts by `content_index`. Text arrives in
//! `response.output_text.delta` (answer), `response.reasoning_text.delta` and `response.reasoning_summary_text.delta`
//! (reasoning), `response.function_call_arguments.delta` (tool arguments); and is **repeated whole** by the `*.done`
//! events, `response.content_part.done`, `response.output_item.done` and `response.completed`, which the host
//! rewrites to what was actually sent.

use bytes::Bytes;
use serde_json::{Value, json};

use super::wire::{self, OaEnvelope};
use super::{Dialect, Ends, Located, Observed, TextKind, TextStream, UsageUpdate, stream, text_at, u};
use crate::api::Family;
use crate::error::ApiError;

#[derive(Debug)]
pub struct Responses;

/// Texts of one output item at `base` (`item` is the item object).
fn item_texts(o: u64, item: &Value, base: &str, out: &mut Vec<Located>) {
    match item.get("type").and_then(Value::as_str) {
        Some("message") => {
            for (c, part) in item.get("content").and_then(Value::as_array).into_iter().flatten().enumerate() {
                if part.get("type").and_then(Value::as_str) == Some("output_text") {
                    let s = stream(o, c as u64, TextKind::Answer);
                    out.extend(text_at(part, &format!("{base}/content/{c}"), "text", s, true));
                }
            }
        }
        Some("reasoning") => {
            for key in ["summary", "content"] {
                for (i, part) in item.get(key).and_then(Value::as_array).into_iter().flatten().enumerate() {
                    let s = stream(o, i as u64, TextKind::Reasoning);
                    out.extend(text_at(part, &format!("{base}/{key}/{i}"), "text", s, true));
                }
            }
        }
        Some("function_call") => {
            out.extend(text_at(item, base, "arguments", stream(o, 0, TextKind::ToolArguments), true));
        }
        _ => {}
    }
}

fn kind_of(event: &str) -> Option<TextKind> {
    Some(match event {
        e if e.starts_with("response.output_text.") => TextKind::Answer,
        e if e.starts_with("response.reasoning_text.") || e.starts_with("response.reasoning_summary_text.") => {
            TextKind::Reasoning
        }
        e if e.starts_with("response.function_call_arguments.") => TextKind::ToolArguments,
        _ => return None,
    })
}

/// The stream of a `*.delta` / `*.done` event.
fn event_stream(event: &str, v: &Value) -> Option<TextStream> {
    let kind = kind_of(event)?;
    let part = match kind {
        TextKind::Answer => u(v, "content_index"),
        TextKind::Reasoning => v.get("summary_index").or(v.get("content_index")).and_then(Value::as_u64).unwrap_or(0),
        TextKind::ToolArguments => 0,
    };
    Some(stream(u(v, "output_index"), part, kind))
}

impl Dialect for Responses {
    fn family(&self) -> Family {
        Family::OpenAi
    }

    fn observe_event<'a>(&self, event: Option<&str>, data: &'a str) -> Observed<'a> {
        let ty = event.unwrap_or("");
        if ty.ends_with(".delta") {
            let content = ty.starts_with("response.output_text")
                || ty.starts_with("response.refusal")
                || ty.starts_with("response.function_call_arguments");
            return Observed { content, ..Observed::default() };
        }
        if ty == "error" {
            return Observed { upstream_error: true, ..Observed::default() };
        }
        let Ok(e) = serde_json::from_str::<OaEnvelope>(data) else { return Observed::default() };
        let Some(r) = e.response else { return Observed::default() };
        let finished = matches!(ty, "response.completed" | "response.incomplete" | "response.failed");
        Observed {
            usage: r.usage.as_ref().map(|u| UsageUpdate::Replace(u.openai())),
            finish_reason: if finished { r.status } else { None },
            finished,
            id: r.id,
            model: r.model,
            ..Observed::default()
        }
    }

    fn observe_body<'a>(&self, body: &'a [u8]) -> Observed<'a> {
        wire::observe_openai_body(body)
    }

    /// An `error` event (`type`, `code`, `message`, `param`, `sequence_number`), with the same `error` object so that
    /// the SDK raises it rather than yielding it.
    fn error_event(&self, e: &ApiError, sequence_number: u64) -> Bytes {
        let (ty, code, _) = e.types();
        let data = json!({
            "type": "error", "code": code, "message": e.message, "param": null,
            "sequence_number": sequence_number,
            "error": {"type": ty, "code": code, "message": e.message},
        });
        Bytes::from(format!("event: error\ndata: {data}\n\n"))
    }

    fn deltas(&self, event: Option<&str>, v: &Value) -> Vec<Located> {
        let Some(event) = event.filter(|e| e.ends_with(".delta")) else { return Vec::new() };
        let Some(s) = event_stream(event, v) else { return Vec::new() };
        text_at(v, "", "delta", s, false).into_iter().collect()
    }

    fn whole(&self, v: &Value) -> Vec<Located> {
        let mut out = Vec::new();
        for (o, item) in v.get("output").and_then(Value::as_array).into_iter().flatten().enumerate() {
            item_texts(o as u64, item, &format!("/output/{o}"), &mut out);
        }
        out.retain(|l| !l.text.is_empty());
        out
    }

    fn ends(&self, event: Option<&str>, v: Option<&Value>, _data: &str) -> Vec<Ends> {
        let (Some(event), Some(v)) = (event, v) else { return Vec::new() };
        match event {
            "response.completed" | "response.incomplete" | "response.failed" => vec![Ends::ALL],
            "response.output_item.done" => vec![Ends { choice: Some(u(v, "output_index") as u32), ..Ends::ALL }],
            e if e.ends_with(".done") => match event_stream(e, v) {
                Some(s) => vec![Ends { choice: Some(s.choice), part: Some(s.part), kind: Some(s.kind) }],
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    fn summaries(&self, event: Option<&str>, v: &Value) -> Vec<Located> {
        let Some(event) = event else { return Vec::new() };
        let mut out = Vec::new();
        match event {
            "response.output_text.done" | "response.reasoning_text.done" | "response.reasoning_summary_text.done" => {
                if let Some(s) = event_stream(event, v) {
                    out.extend(text_at(v, "", "text", s, true));
                }
            }
            "response.function_call_arguments.done" => {
                out.extend(text_at(v, "", "arguments", stream(u(v, "output_index"), 0, TextKind::ToolArguments), true));
            }
            "response.content_part.done" | "response.reasoning_summary_part.done" => {
                let kind = if event.contains("reasoning") { TextKind::Reasoning } else { TextKind::Answer };
                let part = v.get("summary_index").or(v.get("content_index")).and_then(Value::as_u64).unwrap_or(0);
                if let Some(p) = v.get("part") {
                    out.extend(text_at(p, "/part", "text", stream(u(v, "output_index"), part, kind), true));
                }
            }
            "response.output_item.done" => {
                if let Some(item) = v.get("item") {
                    item_texts(u(v, "output_index"), item, "/item", &mut out);
                }
            }
            "response.completed" | "response.incomplete" => {
                for (o, item) in
                    v.pointer("/response/output").and_then(Value::as_array).into_iter().flatten().enumerate()
                {
                    item_texts(o as u64, item, &format!("/response/output/{o}"), &mut out);
                }
            }
            _ => {}
        }
        out
    }

    fn repeats_text(&self) -> bool {
        true
    }

    fn is_summary(&self, event: Option<&str>) -> bool {
        event.is_some_and(|e| e.ends_with(".done") || e == "response.completed" || e == "response.incomplete")
    }

    fn after_whole_replace(&self, v: &mut Value) {
        // `output_text` (when present) is the concatenation of the answer texts.
        if v.get("output_text").is_some_and(Value::is_string) {
            let text: String =
                self.whole(v).into_iter().filter(|l| l.stream.kind == TextKind::Answer).map(|l| l.text).collect();
            v["output_text"] = Value::String(text);
        }
    }
}
