//! Non-streamed answers across families.

use serde_json::{Value, json};

use super::carry::{self, Back};
use super::{Usage, finish_reason, stop_reason};
use crate::api::Endpoint;

pub(super) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The upstream's answer `v` (for endpoint `upstream`) in the shape of the client's endpoint. `None`: not an answer
/// this translation knows (the body is then passed on unchanged). `back`: what the request's translation renamed or
/// asked for ([`carry::back`]).
pub fn whole(upstream: Endpoint, client: Endpoint, v: &Value, back: &Back) -> Option<Value> {
    match (upstream, client) {
        (Endpoint::Messages, Endpoint::ChatCompletions) => Some(messages_to_chat(v)),
        (Endpoint::Messages, Endpoint::Responses) => Some(messages_to_responses(v, back)),
        (Endpoint::ChatCompletions, Endpoint::Messages) => chat_to_messages(v),
        _ => None,
    }
}

fn messages_to_chat(v: &Value) -> Value {
    let (mut text, mut reasoning, mut calls) = (String::new(), String::new(), Vec::new());
    for b in v.get("content").and_then(Value::as_array).into_iter().flatten() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("thinking") => reasoning.push_str(b.get("thinking").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": b.get("id"), "type": "function",
                "function": {"name": b.get("name"), "arguments": b.get("input").unwrap_or(&json!({})).to_string()},
            })),
            _ => {}
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) },
        "refusal": null, "annotations": [],
    });
    if !reasoning.is_empty() {
        super::put(&mut message, "reasoning_content", json!(reasoning));
    }
    if !calls.is_empty() {
        super::put(&mut message, "tool_calls", Value::Array(calls));
    }
    let stop = v.get("stop_reason").and_then(Value::as_str).unwrap_or("end_turn");
    json!({
        "id": v.get("id"), "object": "chat.completion", "created": now_secs(), "model": v.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(stop)}],
        "usage": Usage::from_anthropic(v.get("usage").unwrap_or(&Value::Null)).to_chat(),
    })
}

fn chat_to_messages(v: &Value) -> Option<Value> {
    let choice = v.get("choices")?.as_array()?.first()?;
    let m = choice.get("message")?;
    let mut content = Vec::new();
    if let Some(r) = m.get("reasoning_content").and_then(Value::as_str).filter(|r| !r.is_empty()) {
        content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    if let Some(t) = m.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    if let Some(r) = m.get("refusal").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": r}));
    }
    for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let args = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
        content.push(json!({
            "type": "tool_use", "id": call.get("id"), "name": call.pointer("/function/name"),
            "input": serde_json::from_str::<Value>(args).unwrap_or(json!({})),
        }));
    }
    let finish = choice.get("finish_reason").and_then(Value::as_str).unwrap_or("stop");
    Some(json!({
        "id": v.get("id"), "type": "message", "role": "assistant", "model": v.get("model"),
        "content": content, "stop_reason": stop_reason(finish), "stop_sequence": null,
        "usage": Usage::from_openai(v.get("usage").unwrap_or(&Value::Null)).to_anthropic(),
    }))
}

/// Output items of a Responses answer from Anthropic content blocks: each text block → a message item; tool use →
/// a function call item (a flattened namespaced tool named as the client knows it); thinking → a reasoning item
/// (summary = the thinking; `encrypted_content` when the client asked, so the block can come back).
pub(super) fn response_items(id: &str, blocks: &[Value], back: &Back) -> Vec<Value> {
    let mut items = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => items.push(json!({
                "id": format!("{id}_{i}"), "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                    "text": b.get("text").and_then(Value::as_str).unwrap_or_default()}],
            })),
            Some("tool_use") => items.push(function_call_item(
                b.get("id").and_then(Value::as_str).unwrap_or_default(),
                b.get("name").and_then(Value::as_str).unwrap_or_default(),
                &b.get("input").unwrap_or(&json!({})).to_string(),
                "completed",
                back,
            )),
            Some("thinking" | "redacted_thinking") => {
                items.push(carry::reasoning_item(&format!("rs_{id}_{i}"), b, back.encrypted_reasoning));
            }
            Some("server_tool_use") if b.get("name").and_then(Value::as_str) == Some("web_search") => {
                let query = b.pointer("/input/query").and_then(Value::as_str).unwrap_or_default();
                items.push(web_search_item(b.get("id").and_then(Value::as_str).unwrap_or_default(), query, true));
            }
            // `web_search_tool_result`: the results are Anthropic's (encrypted); the text after them cites them.
            _ => {}
        }
    }
    items
}

/// A `web_search_call` item for an Anthropic web search (`server_tool_use` block `id`).
pub(super) fn web_search_item(id: &str, query: &str, done: bool) -> Value {
    if !done {
        return json!({"id": format!("ws_{id}"), "type": "web_search_call", "status": "in_progress"});
    }
    json!({"id": format!("ws_{id}"), "type": "web_search_call", "status": "completed",
        "action": {"type": "search", "query": query}})
}

/// A `function_call` item; `name` is the upstream's, restored to the client's namespace and name if renamed.
pub(super) fn function_call_item(call_id: &str, name: &str, arguments: &str, status: &str, back: &Back) -> Value {
    let mut item = json!({"id": format!("fc_{call_id}"), "type": "function_call", "status": status,
        "arguments": arguments, "call_id": call_id, "name": name});
    if let Some((ns, n)) = back.restore(name) {
        super::put(&mut item, "name", json!(n));
        super::put(&mut item, "namespace", json!(ns));
    }
    item
}

/// A Responses `response` object.
pub(super) fn response_object(
    id: &str,
    model: &Value,
    status: &str,
    output: Vec<Value>,
    usage: Option<Value>,
    stop: Option<&str>,
) -> Value {
    let incomplete = (status == "incomplete")
        .then(|| json!({"reason": if stop == Some("refusal") { "content_filter" } else { "max_output_tokens" }}));
    json!({
        "id": id, "object": "response", "created_at": now_secs(), "status": status, "error": null,
        "incomplete_details": incomplete, "instructions": null, "max_output_tokens": null, "model": model,
        "output": output, "parallel_tool_calls": true, "previous_response_id": null,
        "temperature": null, "tool_choice": "auto", "tools": [], "top_p": null,
        "usage": usage, "metadata": {},
    })
}

/// `completed`, or `incomplete` when the answer was cut (Anthropic `max_tokens`, `refusal`).
pub(super) fn response_status(stop: Option<&str>) -> &'static str {
    match stop {
        Some("max_tokens" | "model_context_window_exceeded" | "refusal") => "incomplete",
        _ => "completed",
    }
}

fn messages_to_responses(v: &Value, back: &Back) -> Value {
    let msg_id = v.get("id").and_then(Value::as_str).unwrap_or("weir");
    let blocks: Vec<Value> = v.get("content").and_then(Value::as_array).cloned().unwrap_or_default();
    let stop = v.get("stop_reason").and_then(Value::as_str);
    let usage = Usage::from_anthropic(v.get("usage").unwrap_or(&Value::Null)).to_responses();
    response_object(
        &format!("resp_{msg_id}"),
        v.get("model").unwrap_or(&Value::Null),
        response_status(stop),
        response_items(msg_id, &blocks, back),
        Some(usage),
        stop,
    )
}
