//! An answer in the other form of its own API: a whole body as that API's event sequence, and a stream's events put
//! together into the whole body. For answers a plugin gives (`reply`, e.g. a cache) in the form it has, to a client
//! that asked for the other: a streamed request served from a stored whole answer, and the reverse.
//!
//! The events are the ones the providers send (and the SDKs' stream helpers accumulate): chat completions — a role
//! chunk, content / reasoning / tool-call deltas per choice, the finish chunk, the usage chunk when the client asked
//! (`stream_options.include_usage`), `[DONE]`; Anthropic — `message_start`, each block's start / delta / stop,
//! `message_delta`, `message_stop`; Responses — `response.created`, each output item's added / delta / done events,
//! `response.completed`. Text goes in one delta per block: a replay has nothing to pace.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use serde_json::{Map, Value, json};

use crate::api::Endpoint;

/// One event: its `event:` name and its `data:` text.
pub type Event = (Option<String>, String);

fn s<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// Sets `key` in a JSON object (a no-op on anything else).
fn put(v: &mut Value, key: &str, val: Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_string(), val);
    }
}

fn named(name: &str, mut v: Value) -> Event {
    if let Some(o) = v.as_object_mut() {
        o.insert("type".into(), json!(name));
    }
    (Some(name.to_string()), v.to_string())
}

/// A whole answer of `endpoint` as its event sequence (`include_usage`: chat's usage chunk, which OpenAI sends only
/// when asked). `None`: not an answer of that API.
pub fn to_events(endpoint: Endpoint, whole: &Value, include_usage: bool) -> Option<Vec<Event>> {
    match endpoint {
        Endpoint::ChatCompletions => chat_events(whole, include_usage),
        Endpoint::Messages => messages_events(whole),
        Endpoint::Responses => responses_events(whole),
        _ => None,
    }
}

/// A stream's events of `endpoint` put together into the whole answer. `None`: the events are not a complete
/// answer of that API.
pub fn to_whole(endpoint: Endpoint, events: &[Event]) -> Option<Value> {
    let parsed: Vec<(Option<&str>, Value)> = events
        .iter()
        .filter(|(_, d)| d.trim() != "[DONE]")
        .map(|(e, d)| Some((e.as_deref(), serde_json::from_str(d).ok()?)))
        .collect::<Option<_>>()?;
    match endpoint {
        Endpoint::ChatCompletions => chat_whole(&parsed),
        Endpoint::Messages => messages_whole(&parsed),
        Endpoint::Responses => parsed
            .iter()
            .rev()
            .find(|(e, v)| e.or(s(v, "/type")) == Some("response.completed"))
            .and_then(|(_, v)| v.get("response").cloned()),
        _ => None,
    }
}

/// Marks the usage of an answer served from a cache as cached input, in the API's own terms: chat's
/// `prompt_tokens_details.cached_tokens` and the Responses API's `input_tokens_details.cached_tokens` become the whole
/// input; Anthropic's input moves to `cache_read_input_tokens`. `v` is a whole answer or one event's data; the usage
/// objects it holds (at the top, or in `message` / `response`) are changed, anything else is left alone.
pub fn mark_cached(v: &mut Value) {
    for at in ["", "/message", "/response"] {
        if let Some(u) = v.pointer_mut(&format!("{at}/usage")).filter(|u| u.is_object()) {
            mark_usage(u);
        }
    }
}

fn mark_usage(u: &mut Value) {
    let n = |u: &Value, k: &str| u.get(k).and_then(Value::as_u64);
    if let Some(prompt) = n(u, "prompt_tokens") {
        let mut details = u.get("prompt_tokens_details").cloned().filter(Value::is_object).unwrap_or(json!({}));
        put(&mut details, "cached_tokens", json!(prompt));
        put(u, "prompt_tokens_details", details);
    } else if let (Some(input), Some(_)) = (n(u, "input_tokens"), n(u, "total_tokens")) {
        let mut details = u.get("input_tokens_details").cloned().filter(Value::is_object).unwrap_or(json!({}));
        put(&mut details, "cached_tokens", json!(input));
        put(u, "input_tokens_details", details);
    } else if let Some(input) = n(u, "input_tokens") {
        let all =
            input + n(u, "cache_read_input_tokens").unwrap_or(0) + n(u, "cache_creation_input_tokens").unwrap_or(0);
        put(u, "input_tokens", json!(0));
        put(u, "cache_creation_input_tokens", json!(0));
        put(u, "cache_read_input_tokens", json!(all));
    }
}

// ---- chat completions ---------------------------------------------------------------------------------------------

fn chat_events(v: &Value, include_usage: bool) -> Option<Vec<Event>> {
    let choices = v.get("choices")?.as_array()?;
    let envelope = |choices: Value, usage: Value| {
        json!({"id": v.get("id"), "object": "chat.completion.chunk", "created": v.get("created"),
            "model": v.get("model"), "system_fingerprint": v.get("system_fingerprint"), "choices": choices,
            "usage": usage})
    };
    let mut out = Vec::new();
    let mut push = |c: Value| out.push((None, envelope(c, Value::Null).to_string()));
    for (n, choice) in choices.iter().enumerate() {
        let i = choice.get("index").cloned().unwrap_or(json!(n));
        let m = choice.get("message").unwrap_or(&Value::Null);
        push(
            json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
        );
        if let Some(r) = s(m, "/reasoning_content").filter(|r| !r.is_empty()) {
            push(json!([{"index": i, "delta": {"reasoning_content": r}, "logprobs": null, "finish_reason": null}]));
        }
        if let Some(t) = s(m, "/content").filter(|t| !t.is_empty()) {
            push(json!([{"index": i, "delta": {"content": t}, "logprobs": null, "finish_reason": null}]));
        }
        if let Some(r) = s(m, "/refusal").filter(|r| !r.is_empty()) {
            push(json!([{"index": i, "delta": {"refusal": r}, "logprobs": null, "finish_reason": null}]));
        }
        for (k, call) in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let delta = json!({"tool_calls": [{"index": k, "id": call.get("id"), "type": "function",
                "function": {"name": call.pointer("/function/name"), "arguments": call.pointer("/function/arguments")}}]});
            push(json!([{"index": i, "delta": delta, "logprobs": null, "finish_reason": null}]));
        }
        push(json!([{"index": i, "delta": {}, "logprobs": null, "finish_reason": choice.get("finish_reason")}]));
    }
    if include_usage {
        out.push((None, envelope(json!([]), v.get("usage").cloned().unwrap_or(Value::Null)).to_string()));
    }
    out.push((None, "[DONE]".to_string()));
    Some(out)
}

fn chat_whole(events: &[(Option<&str>, Value)]) -> Option<Value> {
    let first = &events.first()?.1;
    // choice index → (message, finish reason)
    let mut choices: Vec<(u64, Map<String, Value>, Value)> = Vec::new();
    let mut usage = Value::Null;
    for (_, v) in events {
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            usage = u.clone();
        }
        for c in v.get("choices").and_then(Value::as_array).into_iter().flatten() {
            let i = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let pos = match choices.iter().position(|(n, _, _)| *n == i) {
                Some(p) => p,
                None => {
                    let mut m = Map::new();
                    m.insert("role".into(), json!("assistant"));
                    choices.push((i, m, Value::Null));
                    choices.len() - 1
                }
            };
            let (_, msg, finish) = choices.get_mut(pos)?;
            let d = c.get("delta").unwrap_or(&Value::Null);
            for key in ["content", "reasoning_content", "refusal"] {
                if let Some(t) = s(d, &format!("/{key}")).filter(|t| !t.is_empty() || msg.contains_key(key)) {
                    let was = msg.get(key).and_then(Value::as_str).unwrap_or_default();
                    msg.insert(key.into(), json!(format!("{was}{t}")));
                }
            }
            for call in d.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let k = call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                let calls = msg.entry("tool_calls").or_insert(json!([])).as_array_mut()?;
                while calls.len() <= k {
                    calls.push(json!({"id": null, "type": "function", "function": {"name": "", "arguments": ""}}));
                }
                let slot = calls.get_mut(k)?;
                if let Some(id) = call.get("id").filter(|x| !x.is_null()) {
                    put(slot, "id", id.clone());
                }
                for f in ["name", "arguments"] {
                    if let Some(t) = call.pointer(&format!("/function/{f}")).and_then(Value::as_str) {
                        let all = format!(
                            "{}{t}",
                            slot.pointer(&format!("/function/{f}")).and_then(Value::as_str).unwrap_or_default()
                        );
                        if let Some(func) = slot.get_mut("function") {
                            put(func, f, json!(all));
                        }
                    }
                }
            }
            if let Some(f) = c.get("finish_reason").filter(|f| !f.is_null()) {
                *finish = f.clone();
            }
        }
    }
    let choices: Vec<Value> = choices
        .into_iter()
        .map(|(i, mut msg, finish)| {
            msg.entry("content").or_insert(Value::Null);
            msg.entry("refusal").or_insert(Value::Null);
            json!({"index": i, "message": msg, "logprobs": null, "finish_reason": finish})
        })
        .collect();
    if choices.iter().any(|c| c["finish_reason"].is_null()) {
        return None;
    }
    Some(json!({"id": first.get("id"), "object": "chat.completion", "created": first.get("created"),
        "model": first.get("model"), "choices": choices, "usage": usage}))
}

// ---- Anthropic messages -------------------------------------------------------------------------------------------

fn messages_events(v: &Value) -> Option<Vec<Event>> {
    let blocks = v.get("content")?.as_array()?;
    let usage = v.get("usage").cloned().unwrap_or(json!({}));
    let mut start = v.clone();
    if let Some(o) = start.as_object_mut() {
        o.insert("content".into(), json!([]));
        o.insert("stop_reason".into(), Value::Null);
        o.insert("stop_sequence".into(), Value::Null);
        let mut u = usage.clone();
        put(&mut u, "output_tokens", json!(1));
        o.insert("usage".into(), u);
    }
    let mut out = vec![named("message_start", json!({"message": start}))];
    for (i, b) in blocks.iter().enumerate() {
        let (empty, delta) = match s(b, "/type") {
            Some("text") => (
                json!({"type": "text", "text": ""}),
                vec![json!({"type": "text_delta", "text": s(b, "/text").unwrap_or_default()})],
            ),
            Some("thinking") => (
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                vec![
                    json!({"type": "thinking_delta", "thinking": s(b, "/thinking").unwrap_or_default()}),
                    json!({"type": "signature_delta", "signature": s(b, "/signature").unwrap_or_default()}),
                ],
            ),
            Some("tool_use" | "server_tool_use") => {
                let mut head = b.clone();
                put(&mut head, "input", json!({}));
                let input = b.get("input").unwrap_or(&json!({})).to_string();
                (head, vec![json!({"type": "input_json_delta", "partial_json": input})])
            }
            // Blocks that are sent whole (redacted thinking, search results).
            _ => (b.clone(), Vec::new()),
        };
        out.push(named("content_block_start", json!({"index": i, "content_block": empty})));
        for d in delta {
            out.push(named("content_block_delta", json!({"index": i, "delta": d})));
        }
        out.push(named("content_block_stop", json!({"index": i})));
    }
    out.push(named(
        "message_delta",
        json!({"delta": {"stop_reason": v.get("stop_reason"), "stop_sequence": v.get("stop_sequence")}, "usage": usage}),
    ));
    out.push(named("message_stop", json!({})));
    Some(out)
}

fn messages_whole(events: &[(Option<&str>, Value)]) -> Option<Value> {
    let mut msg: Option<Value> = None;
    let mut blocks: Vec<Value> = Vec::new();
    let mut partial_json: Vec<String> = Vec::new();
    let mut stopped = false;
    for (e, v) in events {
        match e.or(s(v, "/type")) {
            Some("message_start") => msg = v.get("message").cloned(),
            Some("content_block_start") => {
                blocks.push(v.get("content_block").cloned().unwrap_or(Value::Null));
                partial_json.push(String::new());
            }
            Some("content_block_delta") => {
                let i = v.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                let (b, pj) = (blocks.get_mut(i)?, partial_json.get_mut(i)?);
                let d = v.get("delta").unwrap_or(&Value::Null);
                match s(d, "/type") {
                    Some(ty @ ("text_delta" | "thinking_delta" | "signature_delta")) => {
                        let field = match ty {
                            "text_delta" => "text",
                            "thinking_delta" => "thinking",
                            _ => "signature",
                        };
                        let all = format!(
                            "{}{}",
                            s(b, &format!("/{field}")).unwrap_or_default(),
                            s(d, &format!("/{field}")).unwrap_or_default()
                        );
                        put(b, field, json!(all));
                    }
                    Some("input_json_delta") => pj.push_str(s(d, "/partial_json").unwrap_or_default()),
                    _ => {}
                }
            }
            Some("message_delta") => {
                let m = msg.as_mut()?;
                for key in ["stop_reason", "stop_sequence"] {
                    if let Some(x) = v.pointer(&format!("/delta/{key}")) {
                        put(m, key, x.clone());
                    }
                }
                if let Some(u) = v.get("usage").and_then(Value::as_object) {
                    for (k, x) in u {
                        if let Some(usage) = m.get_mut("usage") {
                            put(usage, k, x.clone());
                        }
                    }
                }
            }
            Some("message_stop") => stopped = true,
            _ => {}
        }
    }
    let mut m = msg.filter(|_| stopped)?;
    for (b, pj) in blocks.iter_mut().zip(partial_json) {
        if !pj.is_empty() {
            put(b, "input", serde_json::from_str(&pj).ok()?);
        }
    }
    put(&mut m, "content", Value::Array(blocks));
    Some(m)
}

// ---- Responses ----------------------------------------------------------------------------------------------------

fn responses_events(v: &Value) -> Option<Vec<Event>> {
    let output = v.get("output")?.as_array()?;
    let mut seq = 0u64;
    let mut ev = |name: &str, mut body: Value| {
        put(&mut body, "sequence_number", json!(seq));
        seq += 1;
        named(name, body)
    };
    let mut head = v.clone();
    put(&mut head, "status", json!("in_progress"));
    put(&mut head, "output", json!([]));
    put(&mut head, "usage", Value::Null);
    let mut out = vec![
        ev("response.created", json!({"response": head.clone()})),
        ev("response.in_progress", json!({"response": head})),
    ];
    for (oi, item) in output.iter().enumerate() {
        let id = item.get("id").cloned().unwrap_or(Value::Null);
        let mut added = item.clone();
        put(&mut added, "status", json!("in_progress"));
        match s(item, "/type") {
            Some("message") => {
                put(&mut added, "content", json!([]));
                out.push(ev("response.output_item.added", json!({"output_index": oi, "item": added})));
                for (ci, part) in item.get("content").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    let text = s(part, "/text").unwrap_or_default();
                    let mut empty = part.clone();
                    put(&mut empty, "text", json!(""));
                    out.push(ev(
                        "response.content_part.added",
                        json!({"item_id": id, "output_index": oi, "content_index": ci, "part": empty}),
                    ));
                    out.push(ev(
                        "response.output_text.delta",
                        json!({"item_id": id, "output_index": oi, "content_index": ci, "delta": text, "logprobs": []}),
                    ));
                    out.push(ev(
                        "response.output_text.done",
                        json!({"item_id": id, "output_index": oi, "content_index": ci, "text": text, "logprobs": []}),
                    ));
                    out.push(ev(
                        "response.content_part.done",
                        json!({"item_id": id, "output_index": oi, "content_index": ci, "part": part}),
                    ));
                }
            }
            Some("function_call") => {
                let args = s(item, "/arguments").unwrap_or_default();
                put(&mut added, "arguments", json!(""));
                out.push(ev("response.output_item.added", json!({"output_index": oi, "item": added})));
                out.push(ev(
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": oi, "delta": args}),
                ));
                out.push(ev(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": oi, "arguments": args}),
                ));
            }
            _ => out.push(ev("response.output_item.added", json!({"output_index": oi, "item": added}))),
        }
        out.push(ev("response.output_item.done", json!({"output_index": oi, "item": item})));
    }
    let end = if s(v, "/status") == Some("incomplete") { "response.incomplete" } else { "response.completed" };
    out.push(ev(end, json!({"response": v})));
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    fn round_trip(endpoint: Endpoint, whole: Value) {
        let events = to_events(endpoint, &whole, true).unwrap();
        assert_eq!(to_whole(endpoint, &events).unwrap(), whole, "{endpoint:?}");
    }

    #[test]
    fn whole_answers_survive_a_trip_through_their_events() {
        round_trip(
            Endpoint::ChatCompletions,
            json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                 "logprobs": null, "finish_reason": "tool_calls"},
                {"index": 1, "message": {"role": "assistant", "content": "Hi there", "refusal": null},
                 "logprobs": null, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}),
        );
        round_trip(
            Endpoint::Messages,
            json!({"id": "m1", "type": "message", "role": "assistant", "model": "claude", "content": [
                {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
                {"type": "text", "text": "Hello"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 9, "output_tokens": 4}}),
        );
        round_trip(
            Endpoint::Responses,
            json!({"id": "resp_1", "object": "response", "status": "completed", "model": "gpt", "output": [
                {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Hello", "annotations": []}]},
                {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "c", "name": "f", "arguments": "{}"}],
                "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}}),
        );
    }

    #[test]
    fn cached_usage_is_said_in_each_apis_terms() {
        let mut chat = json!({"usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}});
        mark_cached(&mut chat);
        assert_eq!(chat["usage"]["prompt_tokens_details"]["cached_tokens"], 12);
        let mut responses = json!({"response": {"usage": {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9,
            "input_tokens_details": {"cached_tokens": 0}}}});
        mark_cached(&mut responses);
        assert_eq!(responses["response"]["usage"]["input_tokens_details"]["cached_tokens"], 7);
        let mut start =
            json!({"message": {"usage": {"input_tokens": 9, "cache_read_input_tokens": 1, "output_tokens": 1}}});
        mark_cached(&mut start);
        assert_eq!(
            start["message"]["usage"],
            json!({"input_tokens": 0, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 10, "output_tokens": 1})
        );
        let mut delta = json!({"usage": {"output_tokens": 5}});
        mark_cached(&mut delta);
        assert_eq!(delta, json!({"usage": {"output_tokens": 5}}), "no input count: nothing to move");
    }

    #[test]
    fn a_cut_stream_is_not_a_whole_answer() {
        let whole = json!({"id": "m1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn", "stop_sequence": null, "usage": {}});
        let events = to_events(Endpoint::Messages, &whole, true).unwrap();
        assert!(to_whole(Endpoint::Messages, &events[..events.len() - 1]).is_none());
        assert!(to_whole(Endpoint::Messages, &[(None, "not json".into())]).is_none());
        let chat = json!({"id": "c", "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}]});
        let events = to_events(Endpoint::ChatCompletions, &chat, false).unwrap();
        assert!(to_whole(Endpoint::ChatCompletions, &events[..2]).is_none(), "no finish reason yet");
        assert!(!events.iter().any(|(_, d)| d.contains("\"choices\":[]")), "no usage chunk when not asked");
    }
}
