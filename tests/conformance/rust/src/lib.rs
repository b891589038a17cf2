//! The conformance plugin in Rust (`weir-sdk`). Behaviour: `tests/conformance/README.md`; the same plugin exists in
//! Python and JavaScript, and `tests/e2e/test_conformance.py` checks that all three behave identically.

use serde_json::{Value, json};
use weir_sdk::{
    AnswerBody, ApiFamily, ChangesExt, Chunk, ChunkDecision, ChunkExt, Plugin, PluginError, Principal, Request,
    RequestDecision, Response, RouteTarget, SseEvent, Summary, TextStream, kv, log, trace,
};

/// Every kv call of this plugin is expected to work (the gateway's store is in memory).
fn ok<T>(r: Result<T, weir_sdk::KvError>) -> Result<T, PluginError> {
    r.map_err(|e| weir_sdk::error(kv::describe(&e)))
}

fn config() -> &'static Value {
    weir_sdk::config::<Conformance>()
}

#[derive(Default)]
pub struct Conformance {
    mode: String,
    held: String,
    text_events: u32,
}

fn setting(cfg: &Value, key: &str) -> String {
    cfg.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn answer(req: &Request, text: &str) -> Vec<u8> {
    let model = req.model();
    let body = match req.family() {
        ApiFamily::Anthropic => json!({
            "id": "conformance", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }),
        ApiFamily::Openai => json!({
            "id": "conformance", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }),
    };
    body.to_string().into_bytes()
}

/// The chat-completions stream of `text` in two deltas (split after its 5th character), as SSE events.
fn chat_events(req: &Request, text: &str) -> Vec<SseEvent> {
    let model = req.model();
    let chunk = |delta: Value, finish: Value| SseEvent {
        event: None,
        data: json!({
            "id": "conformance", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
        .to_string(),
    };
    let cut = text.char_indices().nth(5).map_or(text.len(), |(i, _)| i);
    vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": &text[..cut]}), Value::Null),
        chunk(json!({"content": &text[cut..]}), Value::Null),
        chunk(json!({}), json!("stop")),
        SseEvent { event: None, data: "[DONE]".into() },
    ]
}

impl Plugin for Conformance {
    type Config = Value;

    fn on_request(&mut self, req: &Request) -> Result<RequestDecision, PluginError> {
        let cfg = config();
        let mode = req.header("x-conformance").filter(|m| !m.is_empty());
        let mode = mode
            .unwrap_or_else(|| Some(setting(cfg, "default_mode")).filter(|m| !m.is_empty()).unwrap_or("pass".into()));
        // The SDK resets the plugin value at each on-request; this is the whole per-request state.
        *self = Conformance { mode: mode.clone(), ..Default::default() };
        let n = ok(kv::increment("requests", 1, None))?;
        ok(kv::set("last_mode", mode.as_bytes(), None))?;
        trace::set_attribute("mode", &mode);
        trace::set_attribute("requests", &n.to_string());
        trace::add_event("request");
        log::write(log::Level::Info, &format!("conformance request {n} mode={mode}"));

        Ok(match mode.as_str() {
            "reject" => weir_sdk::reject(403, format!("{} ({})", setting(cfg, "reject_message"), req.model())),
            "respond" => {
                // Through `kv.batch` (one operation), so the three languages exercise it: the value read.
                let stored = kv::batch(&[kv::Op::get("greeting")]).pop().map(ok).transpose()?;
                let stored = match stored {
                    Some(kv::Outcome::Value(v)) => v,
                    _ => None,
                };
                let text = stored.map_or_else(|| setting(cfg, "greeting"), |v| String::from_utf8_lossy(&v).into());
                RequestDecision::Respond(Response { status: 200, content_type: None, body: answer(req, &text) })
            }
            "rewrite" => {
                let mut changes = weir_sdk::changes().header("x-conformance-seen", "rewrite");
                changes.model = Some(setting(cfg, "rewrite_model"));
                changes.metadata.push(("conformance.mode".into(), "rewrite".into()));
                changes.principal =
                    Some(Principal { id: "conformance-user".into(), team: Some("conformance-team".into()) });
                RequestDecision::ContinueWith(changes)
            }
            "route" => RequestDecision::Route(vec![RouteTarget {
                upstream: setting(cfg, "route_upstream"),
                model: Some(setting(cfg, "route_model")),
            }]),
            "error" => return Err(weir_sdk::error("conformance error requested")),
            "forget" => {
                // Through `kv.batch` too: an operation that gives nothing back.
                if let Some(r) = kv::batch(&[kv::Op::delete("greeting")]).pop() {
                    ok(r)?;
                }
                RequestDecision::Continue
            }
            "reply" => {
                req.add_response_header("x-conformance-digest", &req.digest());
                let body = AnswerBody::Whole(answer(req, &setting(cfg, "greeting")));
                weir_sdk::reply(body, &[("x-conformance-reply", "whole")], true)
            }
            "reply-events" if req.family() == ApiFamily::Anthropic => {
                weir_sdk::reject(400, "reply-events is for OpenAI clients")
            }
            "reply-events" => {
                let body = AnswerBody::Events(chat_events(req, &setting(cfg, "greeting")));
                weir_sdk::reply(body, &[("x-conformance-reply", "events")], false)
            }
            "digest" => {
                let digest = req.digest();
                req.add_response_header("x-conformance-digest", &digest);
                req.coalesce(&format!("conformance/{digest}"));
                RequestDecision::Continue
            }
            _ => RequestDecision::Continue,
        })
    }

    fn on_chunk(&mut self, chunk: &Chunk) -> Result<ChunkDecision, PluginError> {
        let Some(text) = chunk.answer() else { return Ok(ChunkDecision::Pass) };
        let replace = |t: String| chunk.replace_texts(|_| t.clone());
        self.text_events += 1;
        Ok(match self.mode.as_str() {
            "upper" => replace(text.to_uppercase()),
            "hold" => {
                self.held.push_str(text);
                ChunkDecision::Hold
            }
            "pairs" if self.text_events % 2 == 1 => {
                self.held.push_str(text);
                ChunkDecision::Hold
            }
            "pairs" => replace(std::mem::take(&mut self.held) + text),
            "drop" if text.contains("mock") => ChunkDecision::Drop,
            "abort" => {
                let word = setting(config(), "abort_word");
                if text.contains(&word) {
                    ChunkDecision::Abort(format!("conformance abort: {word}"))
                } else {
                    ChunkDecision::Pass
                }
            }
            _ => ChunkDecision::Pass,
        })
    }

    fn flush(&mut self, _stream: TextStream) -> Result<Option<String>, PluginError> {
        let held = std::mem::take(&mut self.held);
        Ok((!held.is_empty()).then(|| if self.mode == "hold" { format!("[{held}]") } else { held }))
    }

    fn on_complete(&mut self, s: &Summary) {
        let summary = json!({
            "model": s.model,
            "status": s.status,
            "outcome": s.outcome,
            "upstream": s.upstream,
            "attempts": s.attempts,
            "input_tokens": s.usage.input_tokens,
            "output_tokens": s.usage.output_tokens,
            "partial": s.partial,
            "principal": s.principal.as_ref().map(|p| &p.id),
            "has_ttft": s.ttft_ms.is_some(),
            "has_error": s.error.is_some(),
            "text_events": self.text_events,
        });
        let _ = kv::set(&format!("summary/{}", s.request_id), summary.to_string().as_bytes(), None);
        let _ = kv::increment("completed", 1, None);
    }
}

weir_sdk::export!(Conformance);
