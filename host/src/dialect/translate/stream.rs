//! Streamed answers across families: one translator per answer, fed the upstream's SSE events in order, giving the
//! client's events (framed) back. Each keeps only what the client's format needs later (ids, open blocks, usage and
//! the stop reason, which OpenAI and Anthropic send at different points).
//!
//! - Anthropic → chat: `message_start` → the role chunk; text, thinking (`reasoning_content`) and tool input deltas →
//!   content deltas of choice 0 (a `tool_use` block start → the tool call's id and name, one tool call index per
//!   block); `message_delta` → the chunk with `finish_reason`; `message_stop` → the usage chunk (always: the usage
//!   tap hides it when the client did not ask) and `[DONE]`.
//! - chat → Anthropic: the first chunk → `message_start`; each kind of delta opens its content block (text,
//!   thinking, one `tool_use` per tool call index), closing the block before it as Anthropic does; the usage chunk and
//!   `finish_reason` are kept until `[DONE]`, which gives the blocks' `content_block_stop`, `message_delta` (stop
//!   reason and usage) and `message_stop`.
//! - Anthropic → responses: `response.created`/`in_progress`; a text block → a message item (`output_item.added`,
//!   `content_part.added`, `output_text.delta`…, the `*.done` events); a `tool_use` block → a function call item
//!   (`function_call_arguments.delta`/`.done`, a flattened namespaced tool named as the client knows it); a
//!   thinking block → a reasoning item (`reasoning_summary_part.added`, `reasoning_summary_text.delta`…, with
//!   `encrypted_content` when the client asked); `message_stop` → `response.completed` (or `response.incomplete`
//!   when the answer was cut) with every item and the usage.

use bytes::Bytes;
use serde_json::{Value, json};

use super::carry::{self, Back};
use super::whole::{function_call_item, response_object, response_status, web_search_item};
use super::{Usage, finish_reason, stop_reason, stream_error};
use crate::api::Endpoint;
use crate::dialect::frame;

/// Translates one streamed answer.
pub enum StreamTranslator {
    MessagesToChat(MessagesToChat),
    ChatToMessages(ChatToMessages),
    MessagesToResponses(MessagesToResponses),
}

impl StreamTranslator {
    /// The translator for an upstream of `upstream` answering a client of `client`, if they differ. `back`: what the
    /// request's translation renamed or asked for ([`carry::back`]).
    pub fn new(upstream: Endpoint, client: Endpoint, back: Back) -> Option<StreamTranslator> {
        match (upstream, client) {
            (Endpoint::Messages, Endpoint::ChatCompletions) => Some(Self::MessagesToChat(MessagesToChat::default())),
            (Endpoint::ChatCompletions, Endpoint::Messages) => Some(Self::ChatToMessages(ChatToMessages::default())),
            (Endpoint::Messages, Endpoint::Responses) => {
                Some(Self::MessagesToResponses(MessagesToResponses { back, ..MessagesToResponses::default() }))
            }
            _ => None,
        }
    }

    /// The client's events for one upstream event (none, one or several), appended to `out`.
    pub fn event(&mut self, event: Option<&str>, data: &str, out: &mut Vec<Bytes>) {
        match self {
            Self::MessagesToChat(t) => t.event(event, data, out),
            Self::ChatToMessages(t) => t.event(data, out),
            Self::MessagesToResponses(t) => t.event(event, data, out),
        }
    }
}

fn parse(data: &str) -> Option<Value> {
    if data.starts_with('{') { serde_json::from_str(data).ok() } else { None }
}

fn s<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn idx(v: &Value) -> u64 {
    v.get("index").and_then(Value::as_u64).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------------------------

#[derive(Default)]
pub struct MessagesToChat {
    id: String,
    model: Value,
    created: u64,
    /// Anthropic block index → chat tool call index, for `tool_use` blocks.
    tools: Vec<(u64, u64)>,
    usage: Usage,
    finish: Option<&'static str>,
    /// The serialized envelope every chunk shares (see `chunk`).
    prefix: String,
}

impl MessagesToChat {
    /// One chunk of choice 0. The envelope is the same for every chunk: serialized once (at `message_start`), so a
    /// text delta costs one small serialization.
    fn chunk(&mut self, delta: Value, finish: Option<&str>) -> Bytes {
        if self.prefix.is_empty() {
            let envelope = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": null});
            let text = envelope.to_string();
            // `{...}` without its closing brace, to append `"choices":[...]}` to.
            self.prefix = format!("{},", text.strip_suffix('}').unwrap_or(&text));
        }
        let finish = finish.map_or(Value::Null, |f| json!(f));
        let data = format!(
            r#"{}"choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]}}"#,
            self.prefix
        );
        frame(None, &data)
    }

    /// A content block begins: a tool call's header, or a text block's initial text.
    fn block_start(&mut self, v: &Value, out: &mut Vec<Bytes>) {
        let block = v.get("content_block").unwrap_or(&Value::Null);
        match s(block, "/type") {
            Some("tool_use") => {
                let k = self.tools.len() as u64;
                self.tools.push((idx(v), k));
                out.push(self.chunk(
                    json!({"tool_calls": [{"index": k, "id": block.get("id"), "type": "function",
                        "function": {"name": block.get("name"), "arguments": ""}}]}),
                    None,
                ));
            }
            Some("text") => {
                if let Some(t) = s(block, "/text").filter(|t| !t.is_empty()) {
                    out.push(self.chunk(json!({"content": t}), None));
                }
            }
            _ => {}
        }
    }

    /// A content block's delta: text, thinking, or a tool call's arguments.
    fn block_delta(&mut self, v: &Value, out: &mut Vec<Bytes>) {
        let d = v.get("delta").unwrap_or(&Value::Null);
        let delta = match s(d, "/type") {
            Some("text_delta") => json!({"content": d.get("text")}),
            Some("thinking_delta") => json!({"reasoning_content": d.get("thinking")}),
            Some("input_json_delta") => {
                let part = s(d, "/partial_json").unwrap_or_default();
                let Some(&(_, k)) = self.tools.iter().find(|(b, _)| *b == idx(v)) else { return };
                if part.is_empty() {
                    return;
                }
                json!({"tool_calls": [{"index": k, "function": {"arguments": part}}]})
            }
            _ => return,
        };
        out.push(self.chunk(delta, None));
    }

    fn event(&mut self, event: Option<&str>, data: &str, out: &mut Vec<Bytes>) {
        if event == Some("error") {
            out.push(stream_error(data, Endpoint::ChatCompletions));
            return;
        }
        let Some(v) = parse(data) else { return };
        match event.or(s(&v, "/type")) {
            Some("message_start") => {
                self.id = s(&v, "/message/id").unwrap_or("chatcmpl-weir").to_string();
                self.model = v.pointer("/message/model").cloned().unwrap_or(Value::Null);
                self.created = super::whole::now_secs();
                if let Some(u) = v.pointer("/message/usage") {
                    self.usage = Usage::from_anthropic(u);
                }
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            Some("content_block_start") => self.block_start(&v, out),
            Some("content_block_delta") => self.block_delta(&v, out),
            Some("message_delta") => {
                if let Some(u) = v.get("usage") {
                    self.usage.merge_anthropic_delta(u);
                }
                if let Some(r) = s(&v, "/delta/stop_reason") {
                    let f = finish_reason(r);
                    self.finish = Some(f);
                    out.push(self.chunk(json!({}), Some(f)));
                }
            }
            Some("message_stop") => {
                if self.finish.is_none() {
                    out.push(self.chunk(json!({}), Some("stop")));
                }
                let usage = json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "system_fingerprint": null, "choices": [], "usage": self.usage.to_chat(),
                });
                out.push(frame(None, &usage.to_string()));
                out.push(frame(None, "[DONE]"));
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Block {
    Text,
    Thinking,
    Tool(u64),
}

#[derive(Default)]
pub struct ChatToMessages {
    started: bool,
    /// Blocks in order of appearance (their position is the Anthropic index), and the one open.
    blocks: Vec<Block>,
    open: Option<usize>,
    finish: Option<String>,
    usage: Option<Usage>,
    ended: bool,
}

impl ChatToMessages {
    fn block(&mut self, b: Block, start: Value, out: &mut Vec<Bytes>) -> usize {
        if let Some(i) = self.blocks.iter().position(|x| *x == b) {
            return i;
        }
        self.close(out);
        let i = self.blocks.len();
        self.blocks.push(b);
        self.open = Some(i);
        let ev = json!({"type": "content_block_start", "index": i, "content_block": start});
        out.push(frame(Some("content_block_start"), &ev.to_string()));
        i
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if let Some(i) = self.open.take() {
            out.push(frame(Some("content_block_stop"), &json!({"type": "content_block_stop", "index": i}).to_string()));
        }
    }

    fn delta(i: usize, delta: Value) -> Bytes {
        frame(
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": i, "delta": delta}).to_string(),
        )
    }

    fn event(&mut self, data: &str, out: &mut Vec<Bytes>) {
        if self.ended {
            return;
        }
        if data.starts_with("[DONE]") {
            self.close(out);
            let usage = self.usage.unwrap_or_default().to_anthropic();
            let stop = stop_reason(self.finish.as_deref().unwrap_or("stop"));
            let ev =
                json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": usage});
            out.push(frame(Some("message_delta"), &ev.to_string()));
            out.push(frame(Some("message_stop"), r#"{"type":"message_stop"}"#));
            self.ended = true;
            return;
        }
        let Some(v) = parse(data) else { return };
        if v.get("error").is_some_and(|e| !e.is_null()) {
            out.push(stream_error(data, Endpoint::Messages));
            return;
        }
        if !self.started {
            self.started = true;
            let start = json!({"type": "message_start", "message": {
                "id": v.get("id"), "type": "message", "role": "assistant", "model": v.get("model"),
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0},
            }});
            out.push(frame(Some("message_start"), &start.to_string()));
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(Usage::from_openai(u));
        }
        let Some(choice) = v.get("choices").and_then(Value::as_array).and_then(|c| c.iter().find(|c| idx(c) == 0))
        else {
            return;
        };
        let d = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(t) = s(d, "/reasoning_content").filter(|t| !t.is_empty()) {
            let i = self.block(Block::Thinking, json!({"type": "thinking", "thinking": "", "signature": ""}), out);
            out.push(Self::delta(i, json!({"type": "thinking_delta", "thinking": t})));
        }
        if let Some(t) = s(d, "/content").filter(|t| !t.is_empty()) {
            let i = self.block(Block::Text, json!({"type": "text", "text": ""}), out);
            out.push(Self::delta(i, json!({"type": "text_delta", "text": t})));
        }
        if let Some(t) = s(d, "/refusal").filter(|t| !t.is_empty()) {
            let i = self.block(Block::Text, json!({"type": "text", "text": ""}), out);
            out.push(Self::delta(i, json!({"type": "text_delta", "text": t})));
        }
        for call in d.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let start =
                json!({"type": "tool_use", "id": call.get("id"), "name": call.pointer("/function/name"), "input": {}});
            let i = self.block(Block::Tool(idx(call)), start, out);
            if let Some(a) = s(call, "/function/arguments").filter(|a| !a.is_empty()) {
                out.push(Self::delta(i, json!({"type": "input_json_delta", "partial_json": a})));
            }
        }
        if let Some(f) = s(choice, "/finish_reason") {
            self.finish = Some(f.to_string());
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------

enum Item {
    Message {
        id: String,
        text: String,
    },
    Call {
        call_id: String,
        name: String,
        args: String,
    },
    /// A thinking block (`thinking`, `signature`) or a redacted one (`data`), built up from its deltas.
    Reasoning {
        id: String,
        block: Value,
    },
    /// An Anthropic web search (`server_tool_use`): its query (JSON input text) as it streams.
    Search {
        id: String,
        input: String,
    },
    /// A block that becomes no item.
    Skipped,
}

#[derive(Default)]
pub struct MessagesToResponses {
    id: String,
    msg_id: String,
    model: Value,
    seq: u64,
    /// Anthropic block index → (output index, item).
    items: Vec<(u64, usize, Item)>,
    outputs: usize,
    usage: Usage,
    stop: Option<String>,
    back: Back,
}

impl MessagesToResponses {
    fn ev(&mut self, name: &str, mut v: Value) -> Bytes {
        super::put(&mut v, "type", json!(name));
        super::put(&mut v, "sequence_number", json!(self.seq));
        self.seq += 1;
        frame(Some(name), &v.to_string())
    }

    fn item_json(&self, item: &Item, done: bool) -> Value {
        let status = if done { "completed" } else { "in_progress" };
        match item {
            Item::Message { id, text } => {
                let content = if done {
                    json!([{"type": "output_text", "annotations": [], "logprobs": [], "text": text}])
                } else {
                    json!([])
                };
                json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
            }
            Item::Call { call_id, name, args } => {
                function_call_item(call_id, name, if done { args } else { "" }, status, &self.back)
            }
            Item::Reasoning { id, block } if done => carry::reasoning_item(id, block, self.back.encrypted_reasoning),
            Item::Reasoning { id, .. } => json!({"id": id, "type": "reasoning", "summary": []}),
            Item::Search { id, input } => {
                let q: Value = serde_json::from_str(input).unwrap_or(Value::Null);
                web_search_item(id, q.get("query").and_then(Value::as_str).unwrap_or_default(), done)
            }
            Item::Skipped => Value::Null,
        }
    }

    fn response(&self, status: &str, done: bool) -> Value {
        let output = if done {
            self.items.iter().map(|(_, _, it)| self.item_json(it, true)).filter(|v| !v.is_null()).collect()
        } else {
            Vec::new()
        };
        let usage = done.then(|| self.usage.to_responses());
        response_object(&self.id, &self.model, status, output, usage, self.stop.as_deref())
    }

    /// A content block begins: a message or function-call output item (and a message's content part).
    fn block_start(&mut self, v: &Value, out: &mut Vec<Bytes>) {
        let block = v.get("content_block").unwrap_or(&Value::Null);
        let item = match s(block, "/type") {
            Some("text") => Item::Message { id: format!("{}_{}", self.msg_id, idx(v)), text: String::new() },
            Some("tool_use") => Item::Call {
                call_id: s(block, "/id").unwrap_or_default().to_string(),
                name: s(block, "/name").unwrap_or_default().to_string(),
                args: String::new(),
            },
            Some("thinking" | "redacted_thinking") => {
                let mut block = block.clone();
                if s(&block, "/type") == Some("thinking") {
                    let (t, sig) =
                        (s(&block, "/thinking").unwrap_or_default(), s(&block, "/signature").unwrap_or_default());
                    let (t, sig) = (json!(t), json!(sig));
                    super::put(&mut block, "thinking", t);
                    super::put(&mut block, "signature", sig);
                }
                Item::Reasoning { id: format!("rs_{}_{}", self.msg_id, idx(v)), block }
            }
            Some("server_tool_use") if s(block, "/name") == Some("web_search") => {
                Item::Search { id: s(block, "/id").unwrap_or_default().to_string(), input: String::new() }
            }
            _ => Item::Skipped,
        };
        let output_index = self.outputs;
        if !matches!(item, Item::Skipped) {
            self.outputs += 1;
            let added = json!({"output_index": output_index, "item": self.item_json(&item, false)});
            let e = self.ev("response.output_item.added", added);
            out.push(e);
            let part = match &item {
                Item::Message { id, .. } => Some((
                    "response.content_part.added",
                    json!({"item_id": id,
                    "output_index": output_index, "content_index": 0,
                    "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}}),
                )),
                Item::Reasoning { id, block } if s(block, "/type") == Some("thinking") => Some((
                    "response.reasoning_summary_part.added",
                    json!({"item_id": id, "output_index": output_index,
                        "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
                )),
                _ => None,
            };
            if let Some((name, body)) = part {
                let e = self.ev(name, body);
                out.push(e);
            }
            if let Item::Search { id, .. } = &item {
                let at = json!({"item_id": format!("ws_{id}"), "output_index": output_index});
                for name in ["response.web_search_call.in_progress", "response.web_search_call.searching"] {
                    let e = self.ev(name, at.clone());
                    out.push(e);
                }
            }
        }
        self.items.push((idx(v), output_index, item));
    }

    /// A content block's delta: output text, or a function call's arguments.
    fn block_delta(&mut self, v: &Value, out: &mut Vec<Bytes>) {
        let d = v.get("delta").cloned().unwrap_or(Value::Null);
        let b = idx(v);
        let Some(pos) = self.items.iter().position(|(i, _, _)| *i == b) else { return };
        let ev = match self.items.get_mut(pos) {
            Some((_, oi, Item::Message { id, text })) if s(&d, "/type") == Some("text_delta") => {
                let t = s(&d, "/text").unwrap_or_default();
                text.push_str(t);
                (
                    "response.output_text.delta",
                    json!({"item_id": id, "output_index": oi, "content_index": 0, "delta": t, "logprobs": []}),
                )
            }
            Some((_, oi, Item::Call { call_id, args, .. })) if s(&d, "/type") == Some("input_json_delta") => {
                let t = s(&d, "/partial_json").unwrap_or_default();
                if t.is_empty() {
                    return;
                }
                args.push_str(t);
                (
                    "response.function_call_arguments.delta",
                    json!({"item_id": format!("fc_{call_id}"), "output_index": oi, "delta": t}),
                )
            }
            Some((_, oi, Item::Reasoning { id, block })) if s(&d, "/type") == Some("thinking_delta") => {
                let t = s(&d, "/thinking").unwrap_or_default();
                let all = format!("{}{t}", s(block, "/thinking").unwrap_or_default());
                super::put(block, "thinking", json!(all));
                (
                    "response.reasoning_summary_text.delta",
                    json!({"item_id": id, "output_index": oi, "summary_index": 0, "delta": t}),
                )
            }
            Some((_, _, Item::Search { input, .. })) if s(&d, "/type") == Some("input_json_delta") => {
                input.push_str(s(&d, "/partial_json").unwrap_or_default());
                return;
            }
            Some((_, _, Item::Reasoning { block, .. })) if s(&d, "/type") == Some("signature_delta") => {
                let all = format!(
                    "{}{}",
                    s(block, "/signature").unwrap_or_default(),
                    s(&d, "/signature").unwrap_or_default()
                );
                super::put(block, "signature", json!(all));
                return;
            }
            _ => return,
        };
        let e = self.ev(ev.0, ev.1);
        out.push(e);
    }

    /// A content block ends: its `*.done` events, then `response.output_item.done`.
    fn block_stop(&mut self, v: &Value, out: &mut Vec<Bytes>) {
        let b = idx(v);
        let Some((_, oi, item)) = self.items.iter().find(|(i, _, _)| *i == b) else { return };
        let (oi, done) = (*oi, self.item_json(item, true));
        let evs: Vec<(&str, Value)> = match item {
            Item::Message { id, text } => vec![
                (
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": oi, "content_index": 0, "text": text, "logprobs": []}),
                ),
                (
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": oi, "content_index": 0,
                    "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": text}}),
                ),
            ],
            Item::Call { call_id, args, .. } => vec![(
                "response.function_call_arguments.done",
                json!({"item_id": format!("fc_{call_id}"), "output_index": oi, "arguments": args}),
            )],
            Item::Reasoning { id, block } if s(block, "/type") == Some("thinking") => {
                let text = s(block, "/thinking").unwrap_or_default();
                vec![
                    (
                        "response.reasoning_summary_text.done",
                        json!({"item_id": id, "output_index": oi, "summary_index": 0, "text": text}),
                    ),
                    (
                        "response.reasoning_summary_part.done",
                        json!({"item_id": id, "output_index": oi, "summary_index": 0,
                            "part": {"type": "summary_text", "text": text}}),
                    ),
                ]
            }
            Item::Reasoning { .. } => Vec::new(),
            Item::Search { id, .. } => {
                vec![("response.web_search_call.completed", json!({"item_id": format!("ws_{id}"), "output_index": oi}))]
            }
            Item::Skipped => return,
        };
        for (name, body) in evs {
            let e = self.ev(name, body);
            out.push(e);
        }
        let e = self.ev("response.output_item.done", json!({"output_index": oi, "item": done}));
        out.push(e);
    }

    fn event(&mut self, event: Option<&str>, data: &str, out: &mut Vec<Bytes>) {
        if event == Some("error") {
            out.push(stream_error(data, Endpoint::Responses));
            return;
        }
        let Some(v) = parse(data) else { return };
        match event.or(s(&v, "/type")) {
            Some("message_start") => {
                self.msg_id = s(&v, "/message/id").unwrap_or("weir").to_string();
                self.id = format!("resp_{}", self.msg_id);
                self.model = v.pointer("/message/model").cloned().unwrap_or(Value::Null);
                if let Some(u) = v.pointer("/message/usage") {
                    self.usage = Usage::from_anthropic(u);
                }
                let r = self.response("in_progress", false);
                let e = self.ev("response.created", json!({"response": r}));
                out.push(e);
                let r = self.response("in_progress", false);
                let e = self.ev("response.in_progress", json!({"response": r}));
                out.push(e);
            }
            Some("content_block_start") => self.block_start(&v, out),
            Some("content_block_delta") => self.block_delta(&v, out),
            Some("content_block_stop") => self.block_stop(&v, out),
            Some("message_delta") => {
                if let Some(u) = v.get("usage") {
                    self.usage.merge_anthropic_delta(u);
                }
                self.stop = s(&v, "/delta/stop_reason").map(str::to_string);
            }
            Some("message_stop") => {
                let status = response_status(self.stop.as_deref());
                let r = self.response(status, true);
                let name = if status == "completed" { "response.completed" } else { "response.incomplete" };
                let e = self.ev(name, json!({"response": r}));
                out.push(e);
            }
            _ => {}
        }
    }
}
