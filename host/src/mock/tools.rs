//! Forced tool calls, as the providers answer them: when `tool_choice` forces a tool (OpenAI `required` or a named
//! function; Anthropic `any` or a named tool), the answer is a call to that tool with arguments built from the tool's
//! JSON schema (every property, the first `enum` value, `minimum` for numbers …), streamed in fragments the way each
//! provider streams them. `x-mock-tool-calls: N` makes N parallel calls (cycling through the tools).

use axum::body::Bytes;
use serde_json::{Value, json};

use super::{CREATED, UsageNumbers, anthropic_usage, chat_chunk, data_event, named_event, openai_usage};
use crate::api::Endpoint;

/// One call the answer makes.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// The calls a request forces (`None`: the request does not force a tool).
pub fn forced(endpoint: Endpoint, body: &Value, calls: usize) -> Option<Vec<Call>> {
    let choice = body.get("tool_choice")?;
    let tools = body.get("tools")?.as_array()?;
    // (name, schema) of each tool, in the request's shape.
    let list: Vec<(&str, &Value)> = tools
        .iter()
        .filter_map(|t| match endpoint {
            Endpoint::ChatCompletions => {
                let f = t.get("function")?;
                Some((f.get("name")?.as_str()?, f.get("parameters").unwrap_or(&Value::Null)))
            }
            Endpoint::Responses => Some((t.get("name")?.as_str()?, t.get("parameters").unwrap_or(&Value::Null))),
            _ => Some((t.get("name")?.as_str()?, t.get("input_schema").unwrap_or(&Value::Null))),
        })
        .collect();
    let named = match endpoint {
        Endpoint::Messages => match choice.get("type").and_then(Value::as_str)? {
            "any" => None,
            "tool" => Some(choice.get("name")?.as_str()?),
            _ => return None,
        },
        _ => match choice {
            Value::String(s) if s == "required" => None,
            Value::Object(_) if choice.get("type").and_then(Value::as_str) == Some("function") => {
                Some(choice.pointer("/function/name").or(choice.get("name"))?.as_str()?)
            }
            _ => return None,
        },
    };
    let pool: Vec<(&str, &Value)> = match named {
        Some(n) => list.into_iter().filter(|(name, _)| *name == n).collect(),
        None => list,
    };
    if pool.is_empty() {
        return None;
    }
    let prefix = if endpoint == Endpoint::Messages { "toolu_mock" } else { "call_mock" };
    Some(
        (0..calls.max(1))
            .filter_map(|k| {
                let (name, schema) = pool.get(k % pool.len())?;
                Some(Call {
                    id: format!("{prefix}{k:04}"),
                    name: name.to_string(),
                    arguments: example(schema, 0).to_string(),
                })
            })
            .collect(),
    )
}

/// A value that satisfies `schema` (the common JSON Schema keywords tool schemas use).
pub fn example(schema: &Value, depth: usize) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema.get(key).and_then(Value::as_array).and_then(|a| a.first()) {
            return example(first, depth + 1);
        }
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "object",
    };
    match ty {
        "object" => {
            let mut out = serde_json::Map::new();
            for (k, v) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
                out.insert(k.clone(), example(v, depth + 1));
            }
            Value::Object(out)
        }
        "array" => {
            let n = schema.get("minItems").and_then(Value::as_u64).unwrap_or(1).max(1) as usize;
            let item = example(schema.get("items").unwrap_or(&json!({"type": "string"})), depth + 1);
            Value::Array(vec![item; n.min(8)])
        }
        "string" => {
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            match schema.get("format").and_then(Value::as_str) {
                Some("date") => json!("2026-11-30"),
                Some("date-time") => json!("2026-11-30T12:00:00Z"),
                Some("email") => json!("someone@example.com"),
                Some("uri") => json!("https://example.com/"),
                _ => json!(format!("{:x<min$}", "example")),
            }
        }
        "integer" => json!(schema.get("minimum").and_then(Value::as_i64).unwrap_or(1)),
        "number" => json!(schema.get("minimum").and_then(Value::as_f64).unwrap_or(1.5)),
        "boolean" => json!(true),
        _ => Value::Null,
    }
}

/// Argument text in the fragments a provider streams (a few characters each).
fn fragments(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(7).map(|c| c.iter().collect()).collect()
}

fn output_tokens(calls: &[Call]) -> u64 {
    calls.iter().map(|c| fragments(&c.arguments).len() as u64 + 2).sum()
}

pub fn chat_body(model: &str, calls: &[Call], mut u: UsageNumbers) -> Value {
    u.output = output_tokens(calls);
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
        .collect();
    json!({
        "id": "chatcmpl-weirmock", "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": tool_calls,
            "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "tool_calls"}],
        "usage": openai_usage(u), "service_tier": "default", "system_fingerprint": "fp_weirmock",
    })
}

/// OpenAI streams a tool call as: its index, id, type and name with empty arguments (the first one in the chunk
/// that also carries the role), then argument fragments by index; `finish_reason: "tool_calls"`.
pub fn chat_stream(model: &str, calls: &[Call], include_usage: bool, mut u: UsageNumbers) -> Vec<Bytes> {
    u.output = output_tokens(calls);
    let null = include_usage.then_some(Value::Null);
    let mut out = Vec::new();
    for (k, c) in calls.iter().enumerate() {
        let head = json!([{"index": k, "id": c.id, "type": "function", "function": {"name": c.name, "arguments": ""}}]);
        let delta = if k == 0 {
            json!({"role": "assistant", "content": null, "tool_calls": head, "refusal": null})
        } else {
            json!({"tool_calls": head})
        };
        out.push(data_event(&chat_chunk(
            model,
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]),
            null.clone(),
        )));
        for f in fragments(&c.arguments) {
            out.push(data_event(&chat_chunk(
                model,
                json!([{"index": 0, "delta": {"tool_calls": [{"index": k, "function": {"arguments": f}}]}, "logprobs": null, "finish_reason": null}]),
                null.clone(),
            )));
        }
    }
    out.extend(super::chat_stream_end(model, "tool_calls", include_usage, u));
    out
}

pub fn message_body(model: &str, calls: &[Call], u: UsageNumbers) -> Value {
    let content: Vec<Value> = calls
        .iter()
        .map(|c| {
            let input: Value = serde_json::from_str(&c.arguments).unwrap_or(json!({}));
            json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input})
        })
        .collect();
    json!({
        "id": "msg_weirmock", "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": "tool_use", "stop_sequence": null, "usage": anthropic_usage(u, output_tokens(calls)),
    })
}

/// Anthropic streams each tool call as a `tool_use` block: `content_block_start` with empty `input`, an
/// `input_json_delta` with empty `partial_json`, the fragments, `content_block_stop`; `stop_reason: "tool_use"`.
pub fn messages_stream(model: &str, calls: &[Call], u: UsageNumbers) -> Vec<Bytes> {
    let mut start = message_body(model, &[], u);
    start["stop_reason"] = Value::Null;
    start["usage"] = anthropic_usage(u, 1);
    let mut out = vec![named_event("message_start", &json!({"type": "message_start", "message": start}))];
    for (k, c) in calls.iter().enumerate() {
        out.push(named_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": k,
                "content_block": {"type": "tool_use", "id": c.id, "name": c.name, "input": {}}}),
        ));
        if k == 0 {
            out.push(named_event("ping", &json!({"type": "ping"})));
        }
        for f in std::iter::once(String::new()).chain(fragments(&c.arguments)) {
            out.push(named_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": k, "delta": {"type": "input_json_delta", "partial_json": f}}),
            ));
        }
        out.push(named_event("content_block_stop", &json!({"type": "content_block_stop", "index": k})));
    }
    out.push(named_event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": output_tokens(calls)}}),
    ));
    out.push(named_event("message_stop", &json!({"type": "message_stop"})));
    out
}

fn function_call_item(c: &Call, done: bool) -> Value {
    json!({"id": format!("fc_{}", c.id), "type": "function_call", "status": if done { "completed" } else { "in_progress" },
        "arguments": if done { c.arguments.as_str() } else { "" }, "call_id": c.id, "name": c.name})
}

fn responses_usage(u: UsageNumbers, output: u64) -> Value {
    json!({"input_tokens": u.input, "input_tokens_details": {"cached_tokens": u.cached},
        "output_tokens": output, "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.input + output})
}

pub fn response_body(model: &str, calls: &[Call], u: UsageNumbers) -> Value {
    let mut r = super::response_object(model, &[], u, true);
    r["output"] = calls.iter().map(|c| function_call_item(c, true)).collect();
    r["usage"] = responses_usage(u, output_tokens(calls));
    r
}

/// The Responses API streams each call as a `function_call` output item: `output_item.added` with empty arguments,
/// `function_call_arguments.delta` fragments, `function_call_arguments.done`, `output_item.done`.
pub fn responses_stream(model: &str, calls: &[Call], u: UsageNumbers) -> Vec<Bytes> {
    let mut ev = super::sequenced();
    let mut out = vec![
        ev("response.created", json!({"response": super::response_object(model, &[], u, false)})),
        ev("response.in_progress", json!({"response": super::response_object(model, &[], u, false)})),
    ];
    for (k, c) in calls.iter().enumerate() {
        let id = format!("fc_{}", c.id);
        out.push(ev("response.output_item.added", json!({"output_index": k, "item": function_call_item(c, false)})));
        for f in fragments(&c.arguments) {
            out.push(ev(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": k, "delta": f}),
            ));
        }
        out.push(ev(
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": k, "arguments": c.arguments}),
        ));
        out.push(ev("response.output_item.done", json!({"output_index": k, "item": function_call_item(c, true)})));
    }
    out.push(ev("response.completed", json!({"response": response_body(model, calls, u)})));
    out
}
