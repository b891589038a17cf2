//! Request bodies across families: chat completions → messages, responses → messages, messages → chat completions.
//!
//! Each converter walks the client's top-level fields: a field is translated, dropped because it does not change
//! the answer (listed in the module doc of `translate`), dropped because the operator said so
//! (`translation.drop_fields`), or refused with a 400 that names it. `null` values count as absent.

use serde_json::{Map, Value, json};

use super::carry;
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

/// Chat function tools → Anthropic tools. Responses tools are flat, and may be grouped in a `namespace` (each inner
/// function becomes a tool named by [`carry::flat_name`], restored in the answer) or be OpenAI's `web_search`.
fn chat_tools(tools: &Value, responses: bool) -> Result<Vec<Value>, ApiError> {
    let list = tools.as_array().ok_or_else(|| refuse("tools", "must be an array".into()))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let path = format!("tools[{i}]");
        match str_at(t, "type") {
            Some("function") => out.push(function_tool(t, responses, &path, None)?),
            Some("namespace") if responses => {
                let ns = str_at(t, "name").ok_or_else(|| refuse(&path, "has no `name`".into()))?;
                let inner =
                    t.get("tools").and_then(Value::as_array).ok_or_else(|| refuse(&path, "has no `tools`".into()))?;
                for (j, f) in inner.iter().enumerate() {
                    let here = format!("{path}.tools[{j}]");
                    if str_at(f, "type").is_some_and(|ty| ty != "function") {
                        return Err(no_equivalent(&format!("{here}.type"), ANTHROPIC));
                    }
                    let mut tool = function_tool(f, true, &here, Some(ns))?;
                    // The namespace's description is what the model reads about the group: kept with each tool.
                    if let Some(d) = str_at(t, "description").filter(|d| !d.is_empty()) {
                        let own = str_at(&tool, "description").map(|o| format!("\n\n{o}")).unwrap_or_default();
                        super::put(&mut tool, "description", json!(format!("{d}{own}")));
                    }
                    out.push(tool);
                }
            }
            // Hosted web search → Anthropic's (the answer's `server_tool_use` comes back as a `web_search_call` item).
            // With live access declined (`external_web_access: false`) OpenAI searches only its cached index, which
            // Anthropic does not have: the tool is left out and the model answers without it.
            Some("web_search" | "web_search_preview") if responses => {
                if t.get("external_web_access") != Some(&json!(false)) {
                    out.push(web_search_tool(t));
                }
            }
            other => {
                let ty = other.unwrap_or("?");
                return Err(no_equivalent(&format!("{path}.type = \"{ty}\""), ANTHROPIC));
            }
        }
    }
    Ok(out)
}

/// OpenAI's `web_search` tool → Anthropic's web search server tool (`user_location` has the same shape on both;
/// `filters.allowed_domains` → `allowed_domains`; `search_context_size` is dropped: Anthropic sizes results itself).
fn web_search_tool(t: &Value) -> Value {
    let mut tool = json!({"type": "web_search_20250305", "name": "web_search"});
    if let Some(loc) = t.get("user_location").filter(|l| l.is_object()) {
        super::put(&mut tool, "user_location", loc.clone());
    }
    if let Some(d) = t.pointer("/filters/allowed_domains").filter(|d| d.is_array()) {
        super::put(&mut tool, "allowed_domains", d.clone());
    }
    tool
}

/// One function tool (chat nests the function; Responses flattens it), renamed when it is in a namespace.
fn function_tool(t: &Value, responses: bool, path: &str, namespace: Option<&str>) -> Result<Value, ApiError> {
    let f = if responses { t } else { t.get("function").ok_or_else(|| refuse(path, "has no `function`".into()))? };
    let name = str_at(f, "name").ok_or_else(|| refuse(path, "has no `name`".into()))?;
    let name = match namespace {
        Some(ns) => carry::flat_name(ns, name),
        None => name.to_string(),
    };
    let schema = f.get("parameters").filter(|p| !p.is_null()).cloned();
    let mut tool = json!({"name": name, "input_schema": schema.unwrap_or(json!({"type": "object", "properties": {}}))});
    if let Some(d) = f.get("description").filter(|d| !d.is_null()) {
        super::put(&mut tool, "description", d.clone());
    }
    Ok(with_cache_control(tool, t))
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
            let name = match str_at(v, "namespace") {
                Some(ns) => carry::flat_name(ns, name),
                None => name.to_string(),
            };
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

/// What an OpenAI request asks beyond turns and tools, settled once the whole body is read.
#[derive(Default)]
struct Asked {
    tool_choice: Option<Value>,
    parallel: Option<bool>,
    /// A thinking budget, from a reasoning effort.
    thinking: Option<u32>,
    /// A JSON schema the answer must follow (structured outputs).
    schema: Option<Value>,
    /// `prompt_cache_key`: the client wants its prompt prefix cached.
    cache: bool,
}

/// OpenAI's JSON-schema output format (chat `response_format`, Responses `text.format`) → its schema. `format` is the
/// object with the `type`; `path` names it in a refusal.
fn output_schema(format: &Value, path: &str, schema_at: &str) -> Result<Option<Value>, ApiError> {
    match str_at(format, "type") {
        None | Some("text") => Ok(None),
        Some("json_schema") => format
            .pointer(schema_at)
            .filter(|s| s.is_object())
            .cloned()
            .map(Some)
            .ok_or_else(|| refuse(path, format!("has no schema at `{}`", schema_at.trim_start_matches('/')))),
        Some(other) => Err(no_equivalent(
            &format!(
                "{path}.type = \"{other}\" (use \"json_schema\": Anthropic has structured outputs, not a JSON mode)"
            ),
            ANTHROPIC,
        )),
    }
}

fn finish_anthropic(mut out: Map<String, Value>, turns: Turns, asked: Asked, opts: &Options<'_>) -> Value {
    let Asked { tool_choice, parallel, thinking, schema, cache } = asked;
    let mut turns = turns;
    if cache {
        mark_cache_breakpoints(&mut out, &mut turns);
    }
    if let Some(s) = turns.system_value() {
        out.insert("system".into(), s);
    }
    out.insert("messages".into(), Value::Array(turns.messages));
    // Anthropic refuses thinking with a forced tool or a temperature other than 1; the client's explicit demand
    // wins and the reasoning request is left out (docs/translation.md, "Reasoning").
    let forced = tool_choice
        .as_ref()
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t == "any" || t == "tool");
    let temperature_ok = out.get("temperature").and_then(Value::as_f64).is_none_or(|t| t == 1.0);
    if let Some(budget) = thinking.filter(|_| !forced && temperature_ok) {
        // OpenAI's output limit includes reasoning, as Anthropic's includes thinking: a client's limit is kept and the
        // budget fits inside it (Anthropic: 1,024 ≤ budget < max_tokens); without one, the answer gets the default
        // on top of the budget.
        let budget = match out.get("max_tokens").and_then(Value::as_u64) {
            Some(max) if max > 1024 => Some(u64::from(budget).min(max - 1)),
            Some(_) => None,
            None => {
                out.insert("max_tokens".into(), json!(u64::from(opts.default_max_tokens) + u64::from(budget)));
                Some(u64::from(budget))
            }
        };
        if let Some(b) = budget {
            out.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": b}));
        }
    }
    out.entry("max_tokens").or_insert(json!(opts.default_max_tokens));
    if let Some(schema) = schema {
        out.insert("output_config".into(), json!({"format": {"type": "json_schema", "schema": schema}}));
    }
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

/// `prompt_cache_key` → Anthropic prompt caching: breakpoints on the last tool, the last system block and the last
/// block of the conversation (3 of the 4 Anthropic allows), so the whole prefix is written once and read after.
fn mark_cache_breakpoints(out: &mut Map<String, Value>, turns: &mut Turns) {
    let ephemeral = json!({"type": "ephemeral"});
    if let Some(last) = out.get_mut("tools").and_then(Value::as_array_mut).and_then(|t| t.last_mut()) {
        super::put(last, "cache_control", ephemeral.clone());
    }
    if let Some(last) = turns.system.last_mut() {
        super::put(last, "cache_control", ephemeral.clone());
    }
    if let Some(m) = turns.messages.last_mut() {
        if let Some(Value::String(s)) = m.get("content").cloned() {
            super::put(m, "content", json!([{"type": "text", "text": s}]));
        }
        if let Some(last) = m.get_mut("content").and_then(Value::as_array_mut).and_then(|c| c.last_mut()) {
            super::put(last, "cache_control", ephemeral);
        }
    }
}

fn chat_to_messages(obj: &Map<String, Value>, opts: &Options<'_>) -> Result<Value, ApiError> {
    let mut out = Map::new();
    let mut turns = Turns::default();
    let mut asked = Asked::default();
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
            "tool_choice" => asked.tool_choice = Some(openai_tool_choice(v)?),
            "parallel_tool_calls" => asked.parallel = v.as_bool(),
            "reasoning_effort" => {
                let e = v.as_str().ok_or_else(|| refuse("reasoning_effort", "must be a string".into()))?;
                asked.thinking = carry::budget_for(e);
            }
            "response_format" => asked.schema = output_schema(v, "response_format", "/json_schema/schema")?,
            "n" if is_default(v, &json!(1)) => {}
            "logprobs" if is_default(v, &json!(false)) => {}
            "frequency_penalty" | "presence_penalty" if v.as_f64() == Some(0.0) => {}
            other if opts.drop_fields.iter().any(|d| d == other) => {}
            other => return Err(no_equivalent(other, ANTHROPIC)),
        }
    }
    Ok(finish_anthropic(out, turns, asked, opts))
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
                let name = match (str_at(item, "namespace"), str_at(item, "name")) {
                    (Some(ns), Some(n)) => json!(carry::flat_name(ns, n)),
                    _ => item.get("name").cloned().unwrap_or(Value::Null),
                };
                let call = json!({
                    "type": "function", "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                    "function": {"name": name, "arguments": item.get("arguments").cloned().unwrap_or(json!("{}"))},
                });
                turns.push("assistant", vec![tool_use_from_chat(&call, &path)?]);
            }
            "function_call_output" => {
                let id = str_at(item, "call_id").ok_or_else(|| refuse(&path, "has no `call_id`".into()))?;
                let output = match item.get("output") {
                    Some(Value::String(s)) => json!(s),
                    Some(Value::Array(parts)) => {
                        let mut blocks = Vec::with_capacity(parts.len());
                        for (j, p) in parts.iter().enumerate() {
                            let here = format!("{path}.output[{j}]");
                            match str_at(p, "type") {
                                Some("input_text" | "output_text") => {
                                    blocks.push(json!({"type": "text", "text": str_at(p, "text").unwrap_or_default()}));
                                }
                                Some("input_image") => {
                                    let url = str_at(p, "image_url").ok_or_else(|| {
                                        no_equivalent(&format!("{here} (an image by file_id)"), ANTHROPIC)
                                    })?;
                                    blocks.push(json!({"type": "image", "source": image_source(url)}));
                                }
                                other => {
                                    let ty = other.unwrap_or("?");
                                    return Err(no_equivalent(&format!("{here}.type = \"{ty}\""), ANTHROPIC));
                                }
                            }
                        }
                        Value::Array(blocks)
                    }
                    _ => json!(""),
                };
                turns.push("user", vec![json!({"type": "tool_result", "tool_use_id": id, "content": output})]);
            }
            // A search the provider ran in an earlier answer: the text after it carries what was found, and Anthropic
            // needs no replay of it.
            "web_search_call" => {}
            // Thinking that Weir returned in an earlier answer goes back as the block it was (with its signature);
            // reasoning items of an OpenAI model cannot be given to another provider's model and are left out.
            "reasoning" => {
                if let Some(block) = str_at(item, "encrypted_content").and_then(carry::unseal) {
                    turns.push("assistant", vec![block]);
                }
            }
            other => return Err(no_equivalent(&format!("{path}.type = \"{other}\""), ANTHROPIC)),
        }
    }
    Ok(())
}

fn responses_to_messages(obj: &Map<String, Value>, opts: &Options<'_>) -> Result<Value, ApiError> {
    let mut out = Map::new();
    let mut turns = Turns::default();
    let mut asked = Asked::default();
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
            "tool_choice" => asked.tool_choice = Some(openai_tool_choice(v)?),
            "parallel_tool_calls" => asked.parallel = v.as_bool(),
            "truncation" if v == "disabled" => {}
            // Thinking comes back as reasoning items; `reasoning.encrypted_content` makes them carry the block
            // (the answer's side reads it: `carry::back`).
            "include" => {
                let list = v.as_array().ok_or_else(|| refuse("include", "must be an array".into()))?;
                if let Some(other) = list.iter().find(|i| *i != "reasoning.encrypted_content") {
                    return Err(no_equivalent(&format!("include = {other}"), ANTHROPIC));
                }
            }
            // `summary` (auto, concise, detailed) is dropped: Anthropic's thinking is itself a summary, and it is
            // what the reasoning item's summary carries.
            "reasoning" => {
                if let Some(e) = v.get("effort").filter(|e| !e.is_null()) {
                    let e = e.as_str().ok_or_else(|| refuse("reasoning.effort", "must be a string".into()))?;
                    asked.thinking = carry::budget_for(e);
                }
            }
            // `verbosity` is dropped (Anthropic has no such control; the model's own length is the default).
            "text" => {
                if let Some(f) = v.get("format").filter(|f| !f.is_null()) {
                    asked.schema = output_schema(f, "text.format", "/schema")?;
                }
            }
            "prompt_cache_key" => asked.cache = true,
            // Who is calling (ids of an installation, a session, a turn): not part of the prompt.
            "client_metadata" => {}
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
    Ok(finish_anthropic(out, turns, asked, opts))
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

/// A `tool_result`'s content → the `tool` message's content, and the images it held (chat tool messages carry text
/// only: the images follow in a user message, and the tool message says so). `tool_reference` blocks (tool search)
/// become a line naming the tool, which is then among the request's tools.
fn tool_message_content(content: &Value, path: &str, images: &mut Vec<Value>) -> Result<Value, ApiError> {
    match content {
        Value::String(s) => Ok(json!(s)),
        Value::Null => Ok(json!("")),
        Value::Array(blocks) => {
            let mut parts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let here = format!("{path}[{j}]");
                match str_at(b, "type") {
                    Some("text") => parts.push(json!({"type": "text", "text": str_at(b, "text").unwrap_or_default()})),
                    Some("image") => {
                        images.push(image_part(b, &here)?);
                        let n = images.len();
                        parts.push(json!({"type": "text", "text": format!("[image {n}: in the next user message]")}));
                    }
                    Some("tool_reference") => {
                        let name = str_at(b, "tool_name").unwrap_or_default();
                        parts.push(json!({"type": "text", "text": format!("Tool `{name}` is now available.")}));
                    }
                    other => {
                        let ty = other.unwrap_or("?");
                        return Err(no_equivalent(&format!("{here}.type = \"{ty}\""), CHAT));
                    }
                }
            }
            Ok(Value::Array(parts))
        }
        _ => Err(refuse(path, "must be a string or an array of blocks".into())),
    }
}

/// Text blocks (a `system` value or a system message's content) → chat content.
fn system_content(v: &Value, path: &str) -> Result<Value, ApiError> {
    match v {
        Value::String(s) => Ok(json!(s)),
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .map(|(j, b)| match str_at(b, "type") {
                Some("text") => Ok(json!({"type": "text", "text": str_at(b, "text").unwrap_or_default()})),
                _ => Err(no_equivalent(&format!("{path}[{j}].type"), CHAT)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        _ => Err(refuse(path, "must be a string or an array of text blocks".into())),
    }
}

fn anthropic_messages(msgs: &[Value], out: &mut Vec<Value>) -> Result<(), ApiError> {
    for (i, m) in msgs.iter().enumerate() {
        let path = format!("messages[{i}]");
        let role = str_at(m, "role").ok_or_else(|| refuse(&path, "has no `role`".into()))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        if role == "system" {
            // A system message within the conversation (Claude Code's environment notes) stays where it is.
            out.push(json!({"role": "system", "content": system_content(content, &format!("{path}.content"))?}));
            continue;
        }
        if let Value::String(s) = content {
            out.push(json!({"role": role, "content": s}));
            continue;
        }
        let blocks = content
            .as_array()
            .ok_or_else(|| refuse(&format!("{path}.content"), "must be a string or an array".into()))?;
        match role {
            "user" => {
                let (mut parts, mut images) = (Vec::new(), Vec::new());
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
                            let c = tool_message_content(
                                b.get("content").unwrap_or(&Value::Null),
                                &format!("{here}.content"),
                                &mut images,
                            )?;
                            out.push(json!({"role": "tool", "tool_call_id": id, "content": c}));
                        }
                        other => {
                            let ty = other.unwrap_or("?");
                            return Err(no_equivalent(&format!("{here}.type = \"{ty}\""), CHAT));
                        }
                    }
                }
                if !images.is_empty() {
                    let n = images.len();
                    let mut c = vec![
                        json!({"type": "text", "text": format!("The {n} image(s) the tool results above refer to:")}),
                    ];
                    c.extend(images);
                    out.push(json!({"role": "user", "content": c}));
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

/// Tools named by a `tool_reference` in a tool result (tool search loaded them), so deferred ones are sent.
fn referenced_tools(messages: Option<&Value>) -> Vec<&str> {
    let mut names = Vec::new();
    for m in messages.and_then(Value::as_array).into_iter().flatten() {
        for b in m.get("content").and_then(Value::as_array).into_iter().flatten() {
            for r in b.get("content").and_then(Value::as_array).into_iter().flatten() {
                if str_at(r, "type") == Some("tool_reference")
                    && let Some(n) = str_at(r, "tool_name")
                {
                    names.push(n);
                }
            }
        }
    }
    names
}

/// Anthropic `thinking` and `output_config.effort` → an OpenAI reasoning effort (`Plan` keeps it only for models
/// that take one: `translation.reasoning_models`).
fn reasoning_effort(thinking: Option<&Value>, output_config: Option<&Value>) -> Result<Option<&'static str>, ApiError> {
    if let Some(e) = output_config.and_then(|o| o.get("effort")).filter(|e| !e.is_null()) {
        let e = e.as_str().ok_or_else(|| refuse("output_config.effort", "must be a string".into()))?;
        return carry::effort_from_anthropic(e)
            .map(Some)
            .ok_or_else(|| refuse("output_config.effort", format!("= \"{e}\" is not a known effort")));
    }
    let Some(t) = thinking.filter(|t| !t.is_null()) else { return Ok(None) };
    match str_at(t, "type") {
        Some("enabled") => Ok(Some(carry::effort_for(t.get("budget_tokens").and_then(Value::as_u64).unwrap_or(0)))),
        Some("adaptive") => Ok(Some("medium")),
        Some("disabled") => Ok(None),
        _ => Err(refuse("thinking.type", "must be \"enabled\", \"adaptive\" or \"disabled\"".into())),
    }
}

fn messages_to_chat(obj: &Map<String, Value>, opts: &Options<'_>) -> Result<Value, ApiError> {
    let mut out = Map::new();
    let mut messages = Vec::new();
    let mut parallel = None;
    let loaded = referenced_tools(obj.get("messages"));
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
                messages.insert(0, json!({"role": "system", "content": system_content(v, "system")?}));
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
                    // A deferred tool (tool search) is not in the model's context until a search loads it.
                    if t.get("defer_loading") == Some(&json!(true))
                        && !str_at(t, "name").is_some_and(|n| loaded.contains(&n))
                    {
                        continue;
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
            "thinking" => {}
            "output_config" => {
                for key in v.as_object().into_iter().flat_map(|o| o.keys()) {
                    if key != "effort" && key != "format" {
                        return Err(no_equivalent(&format!("output_config.{key}"), CHAT));
                    }
                }
                if let Some(f) = v.get("format").filter(|f| !f.is_null()) {
                    if str_at(f, "type") != Some("json_schema") {
                        return Err(no_equivalent("output_config.format.type", CHAT));
                    }
                    let schema = f.get("schema").cloned().unwrap_or(json!({"type": "object"}));
                    out.insert(
                        "response_format".into(),
                        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}}),
                    );
                }
            }
            // Context editing trims old thinking and tool results on Anthropic's side as the context fills; the
            // OpenAI model is sent the whole conversation, as without it (a context overflow is its error).
            "context_management" => {}
            "service_tier" => {}
            other if opts.drop_fields.iter().any(|d| d == other) => {}
            other => return Err(no_equivalent(other, CHAT)),
        }
    }
    if let Some(e) = reasoning_effort(obj.get("thinking"), obj.get("output_config"))? {
        out.insert("reasoning_effort".into(), json!(e));
    }
    if let Some(p) = parallel
        && out.contains_key("tools")
    {
        out.insert("parallel_tool_calls".into(), json!(p));
    }
    out.insert("messages".into(), Value::Array(messages));
    Ok(Value::Object(out))
}
