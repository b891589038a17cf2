//! Request bodies across families: chat completions → messages, responses → messages, messages → chat completions.
//!
//! Each converter walks the client's top-level fields: a field is translated, dropped because it does not change
//! the answer (listed in the module doc of `translate`), dropped because the operator said so
//! (`translation.drop_fields`), or refused with a 400 that names it. `null` values count as absent.

use serde_json::{Map, Value, json};

use crate::api::Endpoint;
use crate::config::UpstreamKind;
use crate::error::{ApiError, ErrorKind};

/// What a translation needs from the config.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// `max_tokens` for Anthropic when the client set none.
    pub default_max_tokens: u32,
    /// Top-level fields to drop instead of refusing (`translation.drop_fields`).
    pub drop_fields: &'a [String],
    /// The kind of the upstream (OpenAI's own API takes `max_completion_tokens`, compatible servers `max_tokens`).
    pub kind: UpstreamKind,
}

/// The body for an upstream of endpoint `to`, from a client's body for `from` (both already valid JSON objects).
pub fn request(from: Endpoint, to: Endpoint, body: &Value, opts: &Options<'_>) -> Result<Value, ApiError> {
    let obj = body.as_object().ok_or_else(|| refuse("the body", "must be a JSON object".into()))?;
    match (from, to) {
        (Endpoint::ChatCompletions, Endpoint::Messages) => chat_to_messages(obj, opts),
        (Endpoint::Responses, Endpoint::Messages) => responses_to_messages(obj, opts),
        (Endpoint::Messages, Endpoint::ChatCompletions) => messages_to_chat(obj, opts),
        _ => Err(ApiError::new(
            ErrorKind::InvalidRequest,
            format!("{} cannot be translated to {}", from.path(), to.path()),
        )),
    }
}

fn refuse(field: &str, why: String) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, format!("`{field}` {why}"))
}

fn no_equivalent(field: &str, target: &str) -> ApiError {
    refuse(
        field,
        format!(
            "has no equivalent in the {target} API, which serves this model; remove it (or list it in the \
             gateway's translation.drop_fields to have it dropped)"
        ),
    )
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// `v` is absent, `null`, or equal to the default given.
fn is_default(v: &Value, default: &Value) -> bool {
    v.is_null() || v == default
}

// ---------------------------------------------------------------------------------------------------------------
// OpenAI → Anthropic
// ---------------------------------------------------------------------------------------------------------------

const ANTHROPIC: &str = "Anthropic Messages";

/// Builds Anthropic's alternating turns: consecutive blocks of one role go into one message.
#[derive(Default)]
struct Turns {
    system: Vec<Value>,
    messages: Vec<Value>,
}

impl Turns {
    fn push(&mut self, role: &str, blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        if let Some(last) = self.messages.last_mut()
            && last.get("role").and_then(Value::as_str) == Some(role)
        {
            if let Some(Value::String(s)) = last.get("content").cloned() {
                super::put(last, "content", json!([{"type": "text", "text": s}]));
            }
            if let Some(arr) = last.get_mut("content").and_then(Value::as_array_mut) {
                arr.extend(blocks);
            }
            return;
        }
        self.messages.push(json!({"role": role, "content": blocks}));
    }

    /// A plain string message stays a string (so a round trip keeps it).
    fn push_text(&mut self, role: &str, text: &str) {
        if self.messages.last().and_then(|m| m.get("role")).and_then(Value::as_str) == Some(role) {
            self.push(role, vec![json!({"type": "text", "text": text})]);
        } else {
            self.messages.push(json!({"role": role, "content": text}));
        }
    }

    fn system_value(&self) -> Option<Value> {
        match self.system.as_slice() {
            [] => None,
            [only] if only.get("cache_control").is_none() => only.get("text").cloned(),
            blocks => Some(Value::Array(blocks.to_vec())),
        }
    }
}

/// A `data:` URL (`data:image/png;base64,...`) → Anthropic base64 source; any other URL → a URL source.
fn image_source(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((media, data)) = rest.split_once(";base64,")
    {
        return json!({"type": "base64", "media_type": media, "data": data});
    }
    json!({"type": "url", "url": url})
}

fn with_cache_control(mut block: Value, from: &Value) -> Value {
    if let Some(cc) = from.get("cache_control").filter(|c| !c.is_null()) {
        super::put(&mut block, "cache_control", cc.clone());
    }
    block
}

/// Chat content parts (or a string) → Anthropic blocks.
fn chat_parts(content: &Value, path: &str) -> Result<Vec<Value>, ApiError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let here = format!("{path}[{j}]");
                match str_at(p, "type") {
                    Some("text") => {
                        let text = str_at(p, "text").ok_or_else(|| refuse(&here, "has no `text`".into()))?;
                        out.push(with_cache_control(json!({"type": "text", "text": text}), p));
                    }
                    Some("refusal") => {
                        let text = str_at(p, "refusal").unwrap_or_default();
                        out.push(json!({"type": "text", "text": text}));
                    }
                    Some("image_url") => {
                        let url = p
                            .pointer("/image_url/url")
                            .and_then(Value::as_str)
                            .ok_or_else(|| refuse(&here, "has no `image_url.url`".into()))?;
                        out.push(with_cache_control(json!({"type": "image", "source": image_source(url)}), p));
                    }
                    Some(other) => return Err(no_equivalent(&format!("{here}.type = \"{other}\""), ANTHROPIC)),
                    None => return Err(refuse(&here, "has no `type`".into())),
                }
            }
            Ok(out)
        }
        _ => Err(refuse(path, "must be a string or an array of content parts".into())),
    }
}

/// A message-level `cache_control` (an OpenAI-compatible extension) marks the message's last block.
fn mark_last(mut blocks: Vec<Value>, m: &Value) -> Vec<Value> {
    if let (Some(cc), Some(last)) = (m.get("cache_control").filter(|c| !c.is_null()), blocks.last_mut()) {
        super::put(last, "cache_control", cc.clone());
    }
    blocks
}

fn tool_use_from_chat(call: &Value, path: &str) -> Result<Value, ApiError> {
    if str_at(call, "type").is_some_and(|t| t != "function") {
        return Err(no_equivalent(&format!("{path}.type"), ANTHROPIC));
    }
    let id = str_at(call, "id").ok_or_else(|| refuse(path, "has no `id`".into()))?;
    let f = call.get("function").ok_or_else(|| refuse(path, "has no `function`".into()))?;
    let name = str_at(f, "name").ok_or_else(|| refuse(&format!("{path}.function"), "has no `name`".into()))?;
    let args = str_at(f, "arguments").unwrap_or("{}");
    let input: Value = if args.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(args).map_err(|e| {
            refuse(&format!("{path}.function.arguments"), format!("must be a JSON object for the {ANTHROPIC} API: {e}"))
        })?
    };
    if !input.is_object() {
        return Err(refuse(&format!("{path}.function.arguments"), "must be a JSON object".into()));
    }
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

/// `tool` message content → `tool_result` content (a string, or text blocks).
fn tool_result_content(content: &Value, path: &str) -> Result<Value, ApiError> {
    match content {
        Value::String(s) => Ok(Value::String(s.clone())),
        Value::Null => Ok(Value::String(String::new())),
        _ => Ok(Value::Array(chat_parts(content, path)?)),
    }
}

fn chat_messages(msgs: &[Value], turns: &mut Turns) -> Result<(), ApiError> {
    for (i, m) in msgs.iter().enumerate() {
        let path = format!("messages[{i}]");
        let content = m.get("content").unwrap_or(&Value::Null);
        match str_at(m, "role") {
            Some("system" | "developer") => {
                let blocks = mark_last(chat_parts(content, &format!("{path}.content"))?, m);
                turns.system.extend(blocks);
            }
            Some("user") => match content {
                Value::String(s) if m.get("cache_control").is_none() => turns.push_text("user", s),
                _ => turns.push("user", mark_last(chat_parts(content, &format!("{path}.content"))?, m)),
            },
            Some("assistant") => {
                let mut blocks = chat_parts(content, &format!("{path}.content"))?;
                for (j, call) in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    blocks.push(tool_use_from_chat(call, &format!("{path}.tool_calls[{j}]"))?);
                }
                if m.get("function_call").is_some_and(|f| !f.is_null()) {
                    return Err(no_equivalent(&format!("{path}.function_call (use tool_calls)"), ANTHROPIC));
                }
                match (content, blocks.len()) {
                    (Value::String(s), 1) if m.get("cache_control").is_none() => turns.push_text("assistant", s),
                    _ => turns.push("assistant", mark_last(blocks, m)),
                }
            }
            Some("tool") => {
                let id = str_at(m, "tool_call_id").ok_or_else(|| refuse(&path, "has no `tool_call_id`".into()))?;
                let result = json!({
                    "type": "tool_result", "tool_use_id": id,
                    "content": tool_result_content(content, &format!("{path}.content"))?,
                });
                turns.push("user", mark_last(vec![result], m));
            }
            Some(other) => return Err(no_equivalent(&format!("{path}.role = \"{other}\""), ANTHROPIC)),
            None => return Err(refuse(&path, "has no `role`".into())),
        }
    }
    Ok(())
}

/// Chat function tools → Anthropic tools.
fn chat_tools(tools: &Value, responses: bool) -> Result<Vec<Value>, ApiError> {
    let list = tools.as_array().ok_or_else(|| refuse("tools", "must be an array".into()))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let path = format!("tools[{i}]");
        if str_at(t, "type") != Some("function") {
            let ty = str_at(t, "type").unwrap_or("?");
            return Err(no_equivalent(&format!("{path}.type = \"{ty}\""), ANTHROPIC));
        }
        // Chat nests the function; Responses flattens it.
        let f =
            if responses { t } else { t.get("function").ok_or_else(|| refuse(&path, "has no `function`".into()))? };
        let name = str_at(f, "name").ok_or_else(|| refuse(&path, "has no `name`".into()))?;
        let schema = f.get("parameters").filter(|p| !p.is_null()).cloned();
        let mut tool =
            json!({"name": name, "input_schema": schema.unwrap_or(json!({"type": "object", "properties": {}}))});
        if let Some(d) = f.get("description").filter(|d| !d.is_null()) {
            super::put(&mut tool, "description", d.clone());
        }
        out.push(with_cache_control(tool, t));
    }
    Ok(out)
}

/// `tool_choice` of either OpenAI API → Anthropic's.
fn openai_tool_choice(v: &Value) -> Result<Value, ApiError> {
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "required" => Ok(json!({"type": "any"})),
            "none" => Ok(json!({"type": "none"})),
            other => Err(refuse("tool_choice", format!("= \"{other}\" is not a known choice"))),
        },
        Value::Object(_) if str_at(v, "type") == Some("function") => {
            let name = v
                .pointer("/function/name")
                .or(v.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| refuse("tool_choice", "names no function".into()))?;
            Ok(json!({"type": "tool", "name": name}))
        }
        _ => Err(no_equivalent("tool_choice", ANTHROPIC)),
    }
}

/// Fields both OpenAI APIs translate the same way; `true` when `key` was handled.
fn common_openai_field(key: &str, v: &Value, out: &mut Map<String, Value>) -> Result<bool, ApiError> {
    match key {
        "model" | "temperature" | "top_p" => {
            out.insert(key.into(), v.clone());
        }
        "stream" => {
            out.insert("stream".into(), v.clone());
        }
        "user" => {
            out.insert("metadata".into(), json!({"user_id": v}));
        }
        // No effect on the answer: stored-completion tags, the service tier, usage in streams (Anthropic always
        // reports it).
        "store" | "metadata" | "service_tier" | "stream_options" => {}
        _ => return Ok(false),
    }
    Ok(true)
}

fn finish_anthropic(
    mut out: Map<String, Value>,
    turns: Turns,
    tool_choice: Option<Value>,
    parallel: Option<bool>,
    opts: &Options<'_>,
) -> Value {
    if let Some(s) = turns.system_value() {
        out.insert("system".into(), s);
    }
    out.insert("messages".into(), Value::Array(turns.messages));
    out.entry("max_tokens").or_insert(json!(opts.default_max_tokens));
    let mut choice = tool_choice;
    if parallel == Some(false) && out.contains_key("tools") {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c.get("type").and_then(Value::as_str) != Some("none") {
            super::put(c, "disable_parallel_tool_use", json!(true));
        }
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    Value::Object(out)
}

fn chat_to_messages(obj: &Map<String, Value>, opts: &Options<'_>) -> Result<Value, ApiError> {
    let mut out = Map::new();
    let mut turns = Turns::default();
    let (mut tool_choice, mut parallel) = (None, None);
    for (k, v) in obj {
        if v.is_null() || common_openai_field(k, v, &mut out)? {
            continue;
        }
        match k.as_str() {
            "messages" => {
                let msgs = v.as_array().ok_or_else(|| refuse("messages", "must be an array".into()))?;
                chat_messages(msgs, &mut turns)?;
            }
            "max_tokens" | "max_completion_tokens" => {
                out.insert("max_tokens".into(), v.clone());
            }
            "stop" => {
                let seqs = match v {
                    Value::String(s) => vec![Value::String(s.clone())],
                    Value::Array(a) => a.clone(),
                    _ => return Err(refuse("stop", "must be a string or an array of strings".into())),
                };
                out.insert("stop_sequences".into(), Value::Array(seqs));
            }
            "tools" => {
                out.insert("tools".into(), Value::Array(chat_tools(v, false)?));
            }
            "tool_choice" => tool_choice = Some(openai_tool_choice(v)?),
            "parallel_tool_calls" => parallel = v.as_bool(),
            "n" if is_default(v, &json!(1)) => {}
            "response_format" if str_at(v, "type") == Some("text") => {}
            "logprobs" if is_default(v, &json!(false)) => {}
            "frequency_penalty" | "presence_penalty" if v.as_f64() == Some(0.0) => {}
            other if opts.drop_fields.iter().any(|d| d == other) => {}
            other => return Err(no_equivalent(other, ANTHROPIC)),
        }
    }
    Ok(finish_anthropic(out, turns, tool_choice, parallel, opts))
}

/// Responses `input` items → Anthropic turns.
fn responses_input(input: &Value, turns: &mut Turns) -> Result<(), ApiError> {
    let items = match input {
        Value::String(s) => {
            turns.push_text("user", s);
            return Ok(());
        }
        Value::Array(items) => items,
        _ => return Err(refuse("input", "must be a string or an array of items".into())),
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("input[{i}]");
        match str_at(item, "type").unwrap_or("message") {
            "message" => {
                let role = str_at(item, "role").ok_or_else(|| refuse(&path, "has no `role`".into()))?;
                let content = item.get("content").unwrap_or(&Value::Null);
                let blocks = match content {
                    Value::String(s) if s.is_empty() => Vec::new(),
                    Value::String(s) => vec![json!({"type": "text", "text": s})],
                    Value::Array(parts) => {
                        let mut out = Vec::new();
                        for (j, p) in parts.iter().enumerate() {
                            let here = format!("{path}.content[{j}]");
                            match str_at(p, "type") {
                                Some("input_text" | "output_text") => {
                                    out.push(json!({"type": "text", "text": str_at(p, "text").unwrap_or_default()}));
                                }
                                Some("refusal") => {
                                    out.push(json!({"type": "text", "text": str_at(p, "refusal").unwrap_or_default()}));
                                }
                                Some("input_image") => {
                                    let url = str_at(p, "image_url").ok_or_else(|| {
                                        no_equivalent(&format!("{here} (an image by file_id)"), ANTHROPIC)
                                    })?;
                                    out.push(json!({"type": "image", "source": image_source(url)}));
                                }
                                other => {
                                    let ty = other.unwrap_or("?");
                                    return Err(no_equivalent(&format!("{here}.type = \"{ty}\""), ANTHROPIC));
                                }
                            }
                        }
                        out
                    }
                    _ => return Err(refuse(&format!("{path}.content"), "must be a string or an array".into())),
                };
                match role {
                    "system" | "developer" => turns.system.extend(blocks),
                    "user" | "assistant" => match content {
                        Value::String(s) if !s.is_empty() => turns.push_text(role, s),
                        _ => turns.push(role, blocks),
                    },
                    other => return Err(no_equivalent(&format!("{path}.role = \"{other}\""), ANTHROPIC)),
                }
            }
            "function_call" => {
                let call = json!({
                    "type": "function", "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                    "function": {"name": item.get("name").cloned().unwrap_or(Value::Null),
                                 "arguments": item.get("arguments").cloned().unwrap_or(json!("{}"))},
                });
                turns.push("assistant", vec![tool_use_from_chat(&call, &path)?]);
            }
            "function_call_output" => {
                let id = str_at(item, "call_id").ok_or_else(|| refuse(&path, "has no `call_id`".into()))?;
                let output = match item.get("output") {
                    Some(Value::String(s)) => json!(s),
                    Some(Value::Array(parts)) => Value::Array(
                        parts
                            .iter()
                            .filter_map(|p| str_at(p, "text"))
                            .map(|t| json!({"type": "text", "text": t}))
                            .collect(),
                    ),
                    _ => json!(""),
                };
                turns.push("user", vec![json!({"type": "tool_result", "tool_use_id": id, "content": output})]);
            }
            // Reasoning items of an earlier OpenAI answer cannot be given to another provider's model.
            "reasoning" => {}
            other => return Err(no_equivalent(&format!("{path}.type = \"{other}\""), ANTHROPIC)),
        }
    }
    Ok(())
}

fn responses_to_messages(obj: &Map<String, Value>, opts: &Options<'_>) -> Result<Value, ApiError> {
    let mut out = Map::new();
    let mut turns = Turns::default();
    let (mut tool_choice, mut parallel) = (None, None);
    for (k, v) in obj {
        if v.is_null() || common_openai_field(k, v, &mut out)? {
            continue;
        }
        match k.as_str() {
            "instructions" => {
                let s = v.as_str().ok_or_else(|| refuse("instructions", "must be a string".into()))?;
                turns.system.insert(0, json!({"type": "text", "text": s}));
            }
            "input" => responses_input(v, &mut turns)?,
            "max_output_tokens" => {
                out.insert("max_tokens".into(), v.clone());
            }
            "tools" => {
                out.insert("tools".into(), Value::Array(chat_tools(v, true)?));
            }
            "tool_choice" => tool_choice = Some(openai_tool_choice(v)?),
            "parallel_tool_calls" => parallel = v.as_bool(),
            "truncation" if v == "disabled" => {}
            "include" if v.as_array().is_some_and(Vec::is_empty) => {}
            "text" if v.pointer("/format/type").is_none_or(|t| t == "text") => {}
            "previous_response_id" | "conversation" => {
                return Err(refuse(
                    k,
                    format!(
                        "needs state stored by OpenAI, and this model is served through the {ANTHROPIC} API; send the \
                         whole conversation in `input` instead"
                    ),
                ));
            }
            other if opts.drop_fields.iter().any(|d| d == other) => {}
            other => return Err(no_equivalent(other, ANTHROPIC)),
        }
    }
    Ok(finish_anthropic(out, turns, tool_choice, parallel, opts))
}

// ---------------------------------------------------------------------------------------------------------------
// Anthropic → OpenAI chat completions
// ---------------------------------------------------------------------------------------------------------------

const CHAT: &str = "OpenAI Chat Completions";

/// A `source` of an Anthropic image → an `image_url` part.
fn image_part(block: &Value, path: &str) -> Result<Value, ApiError> {
    let src = block.get("source").ok_or_else(|| refuse(path, "has no `source`".into()))?;
    let url = match str_at(src, "type") {
        Some("base64") => format!(
            "data:{};base64,{}",
            str_at(src, "media_type").unwrap_or("image/png"),
            str_at(src, "data").unwrap_or_default()
        ),
        Some("url") => str_at(src, "url").unwrap_or_default().to_string(),
        _ => return Err(no_equivalent(&format!("{path}.source.type"), CHAT)),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn tool_result_text(content: &Value, path: &str) -> Result<Value, ApiError> {
    match content {
        Value::String(s) => Ok(json!(s)),
        Value::Null => Ok(json!("")),
        Value::Array(blocks) => {
            let mut parts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                match str_at(b, "type") {
                    Some("text") => parts.push(json!({"type": "text", "text": str_at(b, "text").unwrap_or_default()})),
                    _ => return Err(no_equivalent(&format!("{path}[{j}] (only text in tool results)"), CHAT)),
                }
            }
            Ok(Value::Array(parts))
        }
        _ => Err(refuse(path, "must be a string or an array of blocks".into())),
    }
}

fn anthropic_messages(msgs: &[Value], out: &mut Vec<Value>) -> Result<(), ApiError> {
    for (i, m) in msgs.iter().enumerate() {
        let path = format!("messages[{i}]");
        let role = str_at(m, "role").ok_or_else(|| refuse(&path, "has no `role`".into()))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        if let Value::String(s) = content {
            out.push(json!({"role": role, "content": s}));
            continue;
        }
        let blocks = content
            .as_array()
            .ok_or_else(|| refuse(&format!("{path}.content"), "must be a string or an array".into()))?;
        match role {
            "user" => {
                let mut parts = Vec::new();
                for (j, b) in blocks.iter().enumerate() {
                    let here = format!("{path}.content[{j}]");
                    match str_at(b, "type") {
                        Some("text") => {
                            parts.push(json!({"type": "text", "text": str_at(b, "text").unwrap_or_default()}))
                        }
                        Some("image") => parts.push(image_part(b, &here)?),
                        Some("tool_result") => {
                            let id =
                                str_at(b, "tool_use_id").ok_or_else(|| refuse(&here, "has no `tool_use_id`".into()))?;
                            let c =
                                tool_result_text(b.get("content").unwrap_or(&Value::Null), &format!("{here}.content"))?;
                            out.push(json!({"role": "tool", "tool_call_id": id, "content": c}));
                        }
                        other => {
                            let ty = other.unwrap_or("?");
                            return Err(no_equivalent(&format!("{here}.type = \"{ty}\""), CHAT));
                        }
                    }
                }
                if !parts.is_empty() {
                    out.push(json!({"role": "user", "content": parts}));
                }
            }
            "assistant" => {
                let (mut text, mut calls) = (String::new(), Vec::new());
                for (j, b) in blocks.iter().enumerate() {
                    let here = format!("{path}.content[{j}]");
                    match str_at(b, "type") {
                        Some("text") => text.push_str(str_at(b, "text").unwrap_or_default()),
                        Some("tool_use") => {
                            let input = b.get("input").cloned().unwrap_or(json!({}));
                            calls.push(json!({
                                "id": b.get("id").cloned().unwrap_or(Value::Null), "type": "function",
                                "function": {"name": b.get("name").cloned().unwrap_or(Value::Null),
                                             "arguments": input.to_string()},
                            }));
                        }
                        // Thinking is signed by Anthropic for its own models; another provider cannot use it.
                        Some("thinking" | "redacted_thinking") => {}
                        other => {
                            let ty = other.unwrap_or("?");
                            return Err(no_equivalent(&format!("{here}.type = \"{ty}\""), CHAT));
                        }
                    }
                }
                let mut msg = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
                if !calls.is_empty() {
                    super::put(&mut msg, "tool_calls", Value::Array(calls));
                }
                out.push(msg);
            }
            other => return Err(no_equivalent(&format!("{path}.role = \"{other}\""), CHAT)),
        }
    }
    Ok(())
}

fn messages_to_chat(obj: &Map<String, Value>, opts: &Options<'_>) -> Result<Value, ApiError> {
    let mut out = Map::new();
    let mut messages = Vec::new();
    let mut parallel = None;
    for (k, v) in obj {
        if v.is_null() {
            continue;
        }
        match k.as_str() {
            "model" | "temperature" | "top_p" => {
                out.insert(k.clone(), v.clone());
            }
            "stream" => {
                out.insert("stream".into(), v.clone());
                if v == true {
                    out.insert("stream_options".into(), json!({"include_usage": true}));
                }
            }
            "max_tokens" => {
                let key = if opts.kind == UpstreamKind::Openai { "max_completion_tokens" } else { "max_tokens" };
                out.insert(key.into(), v.clone());
            }
            "system" => {
                let content = match v {
                    Value::String(s) => json!(s),
                    Value::Array(blocks) => Value::Array(
                        blocks
                            .iter()
                            .enumerate()
                            .map(|(j, b)| match str_at(b, "type") {
                                Some("text") => {
                                    Ok(json!({"type": "text", "text": str_at(b, "text").unwrap_or_default()}))
                                }
                                _ => Err(no_equivalent(&format!("system[{j}].type"), CHAT)),
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => return Err(refuse("system", "must be a string or an array of text blocks".into())),
                };
                messages.insert(0, json!({"role": "system", "content": content}));
            }
            "messages" => {
                let msgs = v.as_array().ok_or_else(|| refuse("messages", "must be an array".into()))?;
                anthropic_messages(msgs, &mut messages)?;
            }
            "stop_sequences" => {
                out.insert("stop".into(), v.clone());
            }
            "tools" => {
                let list = v.as_array().ok_or_else(|| refuse("tools", "must be an array".into()))?;
                let mut tools = Vec::with_capacity(list.len());
                for (i, t) in list.iter().enumerate() {
                    if str_at(t, "type").is_some_and(|ty| ty != "custom") {
                        let ty = str_at(t, "type").unwrap_or("?");
                        return Err(no_equivalent(&format!("tools[{i}].type = \"{ty}\""), CHAT));
                    }
                    let mut f = json!({
                        "name": t.get("name").cloned().unwrap_or(Value::Null),
                        "parameters": t.get("input_schema").cloned().unwrap_or(json!({"type": "object"})),
                    });
                    if let Some(d) = t.get("description").filter(|d| !d.is_null()) {
                        super::put(&mut f, "description", d.clone());
                    }
                    tools.push(json!({"type": "function", "function": f}));
                }
                out.insert("tools".into(), Value::Array(tools));
            }
            "tool_choice" => {
                let choice = match str_at(v, "type") {
                    Some("auto") => json!("auto"),
                    Some("any") => json!("required"),
                    Some("none") => json!("none"),
                    Some("tool") => {
                        json!({"type": "function", "function": {"name": v.get("name").cloned().unwrap_or(Value::Null)}})
                    }
                    _ => return Err(no_equivalent("tool_choice", CHAT)),
                };
                if v.get("disable_parallel_tool_use") == Some(&json!(true)) {
                    parallel = Some(false);
                }
                out.insert("tool_choice".into(), choice);
            }
            "metadata" => {
                if let Some(u) = v.get("user_id").filter(|u| !u.is_null()) {
                    out.insert("user".into(), u.clone());
                }
            }
            "service_tier" => {}
            "thinking" if str_at(v, "type") == Some("disabled") => {}
            other if opts.drop_fields.iter().any(|d| d == other) => {}
            other => return Err(no_equivalent(other, CHAT)),
        }
    }
    if let Some(p) = parallel
        && out.contains_key("tools")
    {
        out.insert("parallel_tool_calls".into(), json!(p));
    }
    out.insert("messages".into(), Value::Array(messages));
    Ok(Value::Object(out))
}
