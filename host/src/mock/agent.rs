//! What a coding agent's requests need from the mock: structured outputs, thinking, the providers' own refusals of
//! requests that translation must not produce, and a scripted counterpart for an agent's tool loop.
//!
//! - **Structured outputs**: a chat `response_format` / Responses `text.format` of type `json_schema`, or Anthropic
//!   `output_config.format`, is answered with JSON valid against the schema (built like forced tool arguments).
//! - **Thinking**: an Anthropic request with `thinking` enabled (or adaptive) gets a thinking block first, signed
//!   (`signature` = a digest of the thinking text), as Anthropic answers.
//! - **Refusals** as the providers give them: `reasoning_effort` to a model without reasoning (OpenAI); a thinking
//!   budget under 1,024 or not below `max_tokens`, thinking with a forced tool, and — with thinking on — a final
//!   assistant turn with tool use that does not start with an unaltered thinking block (Anthropic).
//! - **Agent loop** (`x-mock-agent: {"ToolName": {arguments}, ...}`): when the request offers one of the named tools
//!   and its last turn is the user's, the answer calls that tool with those arguments (the agent runs it); when the
//!   last turn is a tool result, the answer is text quoting the result (`The tool returned: …`), so a test can check
//!   that the agent really ran the tool.

use axum::body::Bytes;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::tools::{self, Call};
use crate::api::Endpoint;

/// The thinking text of the mock's thinking blocks.
pub const THINKING: &str = "The user wants an answer; I will give it.";

/// What an agent script makes of a request.
pub enum Turn {
    /// Call this tool.
    Call(Call),
    /// Answer with this text (after a tool result).
    Reply(String),
}

fn s<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The text of a tool result's content (a string, or parts/blocks with `text`).
fn text_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    }
}

/// The tool result in the request's last turn (after the model's last message), if there is one.
fn last_tool_result(endpoint: Endpoint, body: &Value) -> Option<String> {
    match endpoint {
        Endpoint::ChatCompletions => {
            // Tool messages, and what a client adds after them (translation puts a tool result's images there).
            let msgs = body.get("messages")?.as_array()?;
            let tail = msgs.iter().rev().take_while(|m| s(m, "/role") != Some("assistant"));
            tail.filter(|m| s(m, "/role") == Some("tool")).last().map(|m| text_of(m.get("content")))
        }
        Endpoint::Messages => {
            let last = body.get("messages")?.as_array()?.last()?;
            let blocks = last.get("content")?.as_array()?;
            let r = blocks.iter().rev().find(|b| s(b, "/type") == Some("tool_result"))?;
            Some(text_of(r.get("content")))
        }
        Endpoint::Responses => {
            let items = body.get("input")?.as_array()?;
            let tail = items.iter().rev().take_while(|i| s(i, "/type") != Some("function_call"));
            tail.filter(|i| s(i, "/type") == Some("function_call_output")).last().map(|i| text_of(i.get("output")))
        }
        _ => None,
    }
}

/// The next turn of a scripted agent loop (`script`: tool name → arguments), if the request fits the script.
pub fn scripted(endpoint: Endpoint, body: &Value, script: &Map<String, Value>) -> Option<Turn> {
    if let Some(result) = last_tool_result(endpoint, body) {
        let quoted: String = result.chars().take(400).collect();
        return Some(Turn::Reply(format!("The tool returned: {quoted}")));
    }
    let tools = body.get("tools")?.as_array()?;
    let name = tools.iter().find_map(|t| {
        let name = match endpoint {
            Endpoint::ChatCompletions => s(t, "/function/name"),
            _ => s(t, "/name"),
        }?;
        script.contains_key(name).then_some(name)
    })?;
    let turns = body.get("messages").or(body.get("input")).and_then(Value::as_array).map_or(0, Vec::len);
    let prefix = if endpoint == Endpoint::Messages { "toolu_mock" } else { "call_mock" };
    Some(Turn::Call(Call {
        id: format!("{prefix}_agent{turns:04}"),
        name: name.to_string(),
        arguments: script.get(name).map_or_else(|| "{}".to_string(), Value::to_string),
    }))
}

/// The JSON text a structured-output request must be answered with, if it is one.
pub fn structured(endpoint: Endpoint, body: &Value) -> Option<String> {
    let schema = match endpoint {
        Endpoint::ChatCompletions if s(body, "/response_format/type") == Some("json_schema") => {
            body.pointer("/response_format/json_schema/schema")
        }
        Endpoint::Responses if s(body, "/text/format/type") == Some("json_schema") => {
            body.pointer("/text/format/schema")
        }
        Endpoint::Messages if s(body, "/output_config/format/type") == Some("json_schema") => {
            body.pointer("/output_config/format/schema")
        }
        _ => None,
    }?;
    Some(tools::example(schema, 0).to_string())
}

/// Whether an Anthropic request turns thinking on.
pub fn thinks(body: &Value) -> bool {
    matches!(s(body, "/thinking/type"), Some("enabled" | "adaptive"))
}

/// The signature of a mock thinking block: a digest of its text, so an altered block is detected.
pub fn sign(thinking: &str) -> String {
    format!("mock-signature:{}", STANDARD.encode(Sha256::digest(thinking.as_bytes())))
}

/// The 400 a provider gives this request, if it gives one (see the module doc).
pub fn refusal(endpoint: Endpoint, body: &Value) -> Option<String> {
    let model = s(body, "/model").unwrap_or_default();
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Responses => {
            let effort = body.get("reasoning_effort").or(body.pointer("/reasoning/effort"));
            let plain = ["gpt-4", "gpt-3.5", "chatgpt-4o"].iter().any(|p| model.starts_with(p));
            (plain && effort.is_some_and(|e| !e.is_null()))
                .then(|| "Unsupported parameter: 'reasoning_effort' is not supported with this model.".to_string())
        }
        Endpoint::Messages => thinking_refusal(body),
        _ => None,
    }
}

fn thinking_refusal(body: &Value) -> Option<String> {
    let thinking = body.get("thinking")?;
    if s(thinking, "/type") == Some("enabled") {
        let budget = thinking.get("budget_tokens").and_then(Value::as_u64).unwrap_or(0);
        if budget < 1024 {
            return Some("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024".into());
        }
        if budget >= body.get("max_tokens").and_then(Value::as_u64).unwrap_or(0) {
            return Some("`max_tokens` must be greater than `thinking.budget_tokens`.".into());
        }
    }
    if !thinks(body) {
        return None;
    }
    if matches!(s(body, "/tool_choice/type"), Some("any" | "tool")) {
        return Some("Thinking may not be enabled when tool_choice forces tool use.".into());
    }
    let messages = body.get("messages")?.as_array()?;
    let (i, last) = messages.iter().enumerate().rev().find(|(_, m)| s(m, "/role") == Some("assistant"))?;
    let blocks = last.get("content")?.as_array()?;
    if !blocks.iter().any(|b| s(b, "/type") == Some("tool_use")) {
        return None;
    }
    let first = blocks.first()?;
    match s(first, "/type") {
        Some("thinking")
            if s(first, "/signature") == Some(sign(s(first, "/thinking").unwrap_or_default()).as_str()) =>
        {
            None
        }
        Some("thinking") => Some(format!("messages.{i}.content.0: Invalid `signature` in `thinking` block")),
        Some("redacted_thinking") => None,
        other => Some(format!(
            "messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{}`. With `thinking` \
             enabled, the last `assistant` turn that uses tools must begin with its thinking block.",
            other.unwrap_or("?")
        )),
    }
}

/// An Anthropic answer with a signed thinking block put first: a whole body (`events[0]`), or a stream whose block
/// indices move up by one.
pub fn with_thinking(events: &[Bytes], stream: bool) -> Vec<Bytes> {
    let block = json!({"type": "thinking", "thinking": THINKING, "signature": sign(THINKING)});
    if !stream {
        let Some(mut v) = events.first().and_then(|b| serde_json::from_slice::<Value>(b).ok()) else {
            return events.to_vec();
        };
        if let Some(content) = v.get_mut("content").and_then(Value::as_array_mut) {
            content.insert(0, block);
        }
        return vec![Bytes::from(v.to_string())];
    }
    let mut out = Vec::with_capacity(events.len() + 4);
    for raw in events {
        let text = String::from_utf8_lossy(raw);
        let (event, data) = text.split_once("\ndata: ").unwrap_or(("", &text));
        let event = event.trim_start_matches("event: ");
        let Ok(mut v) = serde_json::from_str::<Value>(data.trim_end()) else {
            out.push(raw.clone());
            continue;
        };
        if let Some(i) = v.get("index").and_then(Value::as_u64) {
            v["index"] = json!(i + 1);
        }
        out.push(super::named_event(event, &v));
        if event == "message_start" {
            let ev = |v: Value| super::named_event(v["type"].as_str().unwrap_or_default(), &v);
            out.push(ev(json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""}})));
            out.push(ev(json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "thinking_delta", "thinking": THINKING}})));
            out.push(ev(json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "signature_delta", "signature": sign(THINKING)}})));
            out.push(ev(json!({"type": "content_block_stop", "index": 0})));
        }
    }
    out
}
