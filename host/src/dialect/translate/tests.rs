use serde_json::{Value, json};

use super::*;
use crate::config::UpstreamKind;

fn endpoint(name: &str) -> Endpoint {
    *Endpoint::ALL.iter().find(|e| e.as_str() == name).unwrap()
}

fn opts(kind: UpstreamKind) -> Options<'static> {
    Options { default_max_tokens: 4096, drop_fields: &[], kind }
}

/// Timestamps are the translation's clock: zeroed before comparing.
fn unclock(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if k == "created" || k == "created_at" {
                    *x = json!(0);
                } else {
                    unclock(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(unclock),
        _ => {}
    }
}

fn run_stream(from: Endpoint, to: Endpoint, input: &[Value], back: Back) -> Value {
    let mut t = StreamTranslator::new(from, to, back).unwrap();
    let mut out = Vec::new();
    for ev in input {
        let name = ev[0].as_str();
        let data = match &ev[1] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        t.event(name, &data, &mut out);
    }
    let mut events = Vec::new();
    for raw in out {
        let e = crate::sse::SseEvent { raw };
        let f = e.fields();
        let data = serde_json::from_str(&f.data).unwrap_or(Value::String(f.data.to_string()));
        events.push(json!([f.event, data]));
    }
    Value::Array(events)
}

/// Golden pairs in `host/tests/golden/translate/`: inputs taken from the providers' API references, expected
/// outputs reviewed by hand. `WEIR_BLESS=1` writes the current output as the expectation (review the diff).
#[test]
fn golden_pairs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/translate");
    let bless = std::env::var_os("WEIR_BLESS").is_some();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let mut case: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let (from, to) = (endpoint(case["from"].as_str().unwrap()), endpoint(case["to"].as_str().unwrap()));
        let kind = if to == Endpoint::ChatCompletions { UpstreamKind::Openai } else { UpstreamKind::Anthropic };
        // An answer's case may give the client's request, for what the answer needs of it (renamed tools, sealed
        // reasoning).
        let back = case.get("client_request").map_or_else(Back::default, |r| super::back(to, r));
        let mut got = match case["kind"].as_str().unwrap() {
            "request" => request(from, to, &case["input"], &opts(kind)).unwrap(),
            "whole" => whole(from, to, &case["input"], &back).unwrap(),
            "stream" => run_stream(from, to, case["input"].as_array().unwrap(), back),
            k => panic!("{}: unknown kind {k}", path.display()),
        };
        unclock(&mut got);
        if bless {
            case["expected"] = got;
            std::fs::write(&path, serde_json::to_string_pretty(&case).unwrap() + "\n").unwrap();
        } else {
            assert!(!case["expected"].is_null(), "{}: no expectation yet (WEIR_BLESS=1, then review)", path.display());
            assert_eq!(got, case["expected"], "{}", path.display());
        }
        n += 1;
    }
    assert!(n >= 9, "{n} golden files");
}

// ---- OpenAI → Anthropic → OpenAI keeps every field both sides support ----------------------------------------

struct Gen(fastrand::Rng);

impl Gen {
    fn word(&mut self) -> String {
        const W: &[&str] = &["alpha", "beta", "Grüße", "naïve \"quoted\"", "line\nbreak", "emoji 🦀", "", "{json}"];
        let n = self.0.usize(1..4);
        (0..n).map(|_| W[self.0.usize(..W.len())]).collect::<Vec<_>>().join(" ").trim().to_string() + "x"
    }

    fn args(&mut self) -> Value {
        let mut o = serde_json::Map::new();
        for i in 0..self.0.usize(0..4) {
            let v = match self.0.u8(0..4) {
                0 => json!(self.word()),
                1 => json!(self.0.i64(-1000..1000)),
                2 => json!(self.0.bool()),
                _ => json!([self.word(), {"nested": self.0.u32(..)}]),
            };
            o.insert(format!("k{i}"), v);
        }
        Value::Object(o)
    }

    fn user_content(&mut self) -> Value {
        if self.0.bool() {
            return json!(self.word());
        }
        let parts: Vec<Value> = (0..self.0.usize(1..4))
            .map(|_| match self.0.u8(0..3) {
                0 => json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", self.0.u64(..))}}),
                1 => json!({"type": "image_url", "image_url": {"url": format!("https://example.com/{}.jpg", self.0.u16(..))}}),
                _ => json!({"type": "text", "text": self.word()}),
            })
            .collect();
        Value::Array(parts)
    }

    /// A chat request of the fields both APIs have, with roles in an order Anthropic accepts.
    fn request(&mut self) -> Value {
        let mut messages = Vec::new();
        if self.0.bool() {
            messages.push(json!({"role": "system", "content": self.word()}));
        }
        let mut call_no = 0;
        for _ in 0..self.0.usize(1..4) {
            messages.push(json!({"role": "user", "content": self.user_content()}));
            let calls: Vec<Value> = (0..self.0.usize(0..3))
                .map(|_| {
                    call_no += 1;
                    json!({"id": format!("call_{call_no}"), "type": "function",
                        "function": {"name": format!("tool_{}", self.0.u8(0..3)), "arguments": self.args().to_string()}})
                })
                .collect();
            let text = if calls.is_empty() || self.0.bool() { json!(self.word()) } else { Value::Null };
            let mut a = json!({"role": "assistant", "content": text});
            if !calls.is_empty() {
                a["tool_calls"] = json!(calls);
            }
            messages.push(a);
            for c in &calls {
                messages.push(json!({"role": "tool", "tool_call_id": c["id"], "content": self.word()}));
            }
        }
        messages.push(json!({"role": "user", "content": self.user_content()}));
        let mut r = json!({"model": "m", "messages": messages});
        let o = r.as_object_mut().unwrap();
        if self.0.bool() {
            o.insert("max_completion_tokens".into(), json!(self.0.u32(1..100_000)));
        }
        if self.0.bool() {
            o.insert("temperature".into(), json!(self.0.u8(0..=10) as f64 / 10.0));
        }
        if self.0.bool() {
            o.insert("top_p".into(), json!(self.0.u8(1..=10) as f64 / 10.0));
        }
        if self.0.bool() {
            o.insert("stop".into(), json!([self.word()]));
        }
        if self.0.bool() {
            o.insert("stream".into(), json!(self.0.bool()));
        }
        if self.0.bool() {
            o.insert("user".into(), json!(self.word()));
        }
        if self.0.bool() {
            let tools: Vec<Value> = (0..3)
                .map(|i| {
                    let mut f = json!({"name": format!("tool_{i}"),
                        "parameters": {"type": "object", "properties": {"k0": {"type": "string"}}, "required": ["k0"]}});
                    if self.0.bool() {
                        f["description"] = json!(self.word());
                    }
                    json!({"type": "function", "function": f})
                })
                .collect();
            o.insert("tools".into(), json!(tools));
            let choice = match self.0.u8(0..5) {
                0 => Some(json!("auto")),
                1 => Some(json!("required")),
                2 => Some(json!("none")),
                3 => Some(json!({"type": "function", "function": {"name": "tool_1"}})),
                _ => None,
            };
            if let Some(c) = choice {
                o.insert("tool_choice".into(), c);
            }
            if self.0.bool() && o.get("tool_choice") != Some(&json!("none")) {
                o.insert("parallel_tool_calls".into(), json!(false));
            }
        }
        r
    }
}

/// The same request in the terms both sides share: `max_tokens` is OpenAI's `max_completion_tokens`, a string
/// content is one text part, tool-call arguments are compared as JSON, usage reporting in streams is implied, and
/// `tool_choice` is `auto` when tools are given without one (the default of both APIs).
fn normalize(mut v: Value) -> Value {
    let o = v.as_object_mut().unwrap();
    if o.contains_key("tools") {
        o.entry("tool_choice").or_insert(json!("auto"));
    }
    if let Some(m) = o.remove("max_tokens") {
        o.insert("max_completion_tokens".into(), m);
    }
    o.remove("stream_options");
    for m in o.get_mut("messages").and_then(Value::as_array_mut).into_iter().flatten() {
        if m["role"] == "user"
            && let Some(s) = m["content"].as_str()
        {
            m["content"] = json!([{"type": "text", "text": s}]);
        }
        for c in m.get_mut("tool_calls").and_then(Value::as_array_mut).into_iter().flatten() {
            let args: Value = serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
            c["function"]["arguments"] = args;
        }
    }
    v
}

#[test]
fn openai_to_anthropic_to_openai_keeps_every_shared_field() {
    let seed = std::env::var("WEIR_PROP_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_u64);
    let mut g = Gen(fastrand::Rng::with_seed(seed));
    for case in 0..500 {
        let original = g.request();
        let there = request(Endpoint::ChatCompletions, Endpoint::Messages, &original, &opts(UpstreamKind::Anthropic))
            .unwrap_or_else(|e| panic!("case {case} (seed {seed}): {}\n{original:#}", e.message));
        let back = request(Endpoint::Messages, Endpoint::ChatCompletions, &there, &opts(UpstreamKind::Openai))
            .unwrap_or_else(|e| panic!("case {case} (seed {seed}): {}\n{there:#}", e.message));
        let mut expected = normalize(original.clone());
        // Anthropic always needs max_tokens: the default appears on the way back.
        expected.as_object_mut().unwrap().entry("max_completion_tokens").or_insert(json!(4096));
        assert_eq!(normalize(back), expected, "case {case} (seed {seed})\nvia Anthropic: {there:#}");
    }
}

#[test]
fn refusals_name_the_field() {
    let chat = |extra: Value| {
        let mut b = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        request(Endpoint::ChatCompletions, Endpoint::Messages, &b, &opts(UpstreamKind::Anthropic))
            .map_err(|e| e.message)
    };
    assert!(chat(json!({"seed": 1})).unwrap_err().contains("`seed` has no equivalent"));
    assert!(chat(json!({"n": 3})).unwrap_err().contains("`n`"));
    assert!(chat(json!({"n": 1, "seed": null, "logprobs": false, "presence_penalty": 0})).is_ok(), "defaults pass");
    let e = chat(json!({"response_format": {"type": "json_object"}})).unwrap_err();
    assert!(e.contains("`response_format.type = \"json_object\"") && e.contains("json_schema"), "{e}");
    let audio = json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]});
    assert!(chat(audio).unwrap_err().contains("messages[0].content[0].type = \"input_audio\""));
    let bad_args = json!({"messages": [{"role": "assistant", "content": null, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]});
    assert!(chat(bad_args).unwrap_err().contains("messages[0].tool_calls[0].function.arguments"));
    let dropping = Options { drop_fields: &["seed".to_string()], ..opts(UpstreamKind::Anthropic) };
    let b = json!({"model": "m", "seed": 4, "messages": []});
    assert!(request(Endpoint::ChatCompletions, Endpoint::Messages, &b, &dropping).unwrap().get("seed").is_none());
    let m = json!({"model": "m", "max_tokens": 5, "messages": [], "top_k": 3});
    let e = request(Endpoint::Messages, Endpoint::ChatCompletions, &m, &opts(UpstreamKind::Openai)).unwrap_err();
    assert!(e.message.contains("`top_k`") && e.message.contains("OpenAI Chat Completions"), "{}", e.message);
    let compatible = request(
        Endpoint::Messages,
        Endpoint::ChatCompletions,
        &json!({"model": "m", "max_tokens": 5, "messages": []}),
        &opts(UpstreamKind::OpenaiCompatible),
    )
    .unwrap();
    assert_eq!(compatible["max_tokens"], 5, "OpenAI-compatible servers take max_tokens");
}

#[test]
fn usage_and_stop_reasons_keep_their_meaning() {
    let a = json!({"input_tokens": 10, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 5, "output_tokens": 7});
    let u = Usage::from_anthropic(&a);
    assert_eq!((u.input, u.cache_read, u.output), (45, 30, 7));
    assert_eq!(u.to_chat()["prompt_tokens"], 45);
    assert_eq!(u.to_anthropic(), a, "Anthropic → neutral → Anthropic is exact");
    let o = Usage::from_openai(&u.to_chat());
    assert_eq!((o.input, o.cache_read, o.output), (45, 30, 7));
    for (anthropic, openai) in
        [("end_turn", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"), ("refusal", "content_filter")]
    {
        assert_eq!(finish_reason(anthropic), openai);
        assert_eq!(stop_reason(openai), anthropic);
    }
    assert_eq!(finish_reason("stop_sequence"), "stop");
}

#[test]
fn error_bodies_change_shape() {
    let an = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let v = error_body(an, 529, crate::api::Family::OpenAi);
    assert_eq!(v["error"]["message"], "Overloaded");
    assert_eq!(v["error"]["type"], "overloaded_error");
    let oa =
        br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
    let v = error_body(oa, 429, crate::api::Family::Anthropic);
    assert_eq!(v, json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}}));
    let v = error_body(b"<html>bad gateway</html>", 502, crate::api::Family::Anthropic);
    assert_eq!(v["error"]["message"], "the upstream answered HTTP 502");
}

#[test]
fn streams_cut_anywhere_never_panic_and_never_end_early() {
    // Every prefix of a translated stream: the client's terminal event appears only once the upstream's did.
    let case: Value =
        serde_json::from_str(include_str!("../../../tests/golden/translate/stream_messages_to_chat.json")).unwrap();
    let input = case["input"].as_array().unwrap();
    for cut in 0..input.len() {
        let out = run_stream(Endpoint::Messages, Endpoint::ChatCompletions, &input[..cut], Back::default());
        assert!(!out.to_string().contains("[DONE]"), "cut at {cut}");
    }
}

// ---- what the coding agents send ----------------------------------------------------------------------------------

/// Every field name, `type` value and role in a recorded body (not inside schemas, tool arguments or the client's own
/// metadata ids, whose keys are the client's data).
fn names(v: &Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                out.insert(k.clone());
                if matches!(k.as_str(), "type" | "role")
                    && let Some(s) = x.as_str()
                {
                    out.insert(s.to_string());
                }
                let opaque =
                    matches!(k.as_str(), "input_schema" | "parameters" | "schema" | "arguments" | "client_metadata")
                        || (k == "input" && o.get("type") == Some(&json!("tool_use")));
                if !opaque {
                    names(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| names(x, out)),
        _ => {}
    }
}

/// Requests Claude Code and Codex sent through Weir (`host/tests/agents`, the clients' texts replaced by their
/// lengths): each translates to the other family, and docs/translation.md ("What the coding agents send") names every
/// field, type and role in them — so a new client version that sends something new fails here, not at a user's.
#[test]
fn recorded_agent_requests_translate_and_are_documented() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("../docs/translation.md")).unwrap();
    let section = doc.split("## What the coding agents send").nth(1).unwrap().split("\n## ").next().unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(root.join("tests/agents")).unwrap() {
        let path = entry.unwrap().path();
        let rec: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let (from, to, kind) = match rec["endpoint"].as_str().unwrap() {
            "/v1/messages" => (Endpoint::Messages, Endpoint::ChatCompletions, UpstreamKind::Openai),
            "/v1/responses" => (Endpoint::Responses, Endpoint::Messages, UpstreamKind::Anthropic),
            other => panic!("{}: endpoint {other}", path.display()),
        };
        let body = &rec["body"];
        let out = request(from, to, body, &opts(kind)).unwrap_or_else(|e| panic!("{}: {}", path.display(), e.message));
        assert!(out["messages"].as_array().is_some_and(|m| !m.is_empty()), "{}", path.display());
        let mut seen = std::collections::BTreeSet::new();
        names(body, &mut seen);
        let missing: Vec<_> = seen.iter().filter(|name| !section.contains(&format!("`{name}`"))).collect();
        assert!(missing.is_empty(), "{}: not in docs/translation.md's agents section: {missing:?}", path.display());
        n += 1;
    }
    assert!(n >= 6, "{n} recorded requests");
}

#[test]
fn codex_turns_round_trip_namespaces_and_thinking() {
    let body = json!({"model": "claude", "include": ["reasoning.encrypted_content"], "tools": [
        {"type": "namespace", "name": "agents", "tools": [{"type": "function", "name": "spawn", "parameters": {"type": "object"}}]}]});
    let back = super::back(Endpoint::Responses, &body);
    assert_eq!(back.restore("agents__spawn"), Some(("agents", "spawn")));
    let thinking = json!({"type": "thinking", "thinking": "Plan.", "signature": "sig"});
    let answer = json!({"id": "msg_1", "model": "claude", "stop_reason": "tool_use", "usage": {}, "content": [
        thinking, {"type": "tool_use", "id": "toolu_1", "name": "agents__spawn", "input": {}}]});
    let r = whole(Endpoint::Messages, Endpoint::Responses, &answer, &back).unwrap();
    let (item, call) = (&r["output"][0], &r["output"][1]);
    assert_eq!((call["name"].as_str(), call["namespace"].as_str()), (Some("spawn"), Some("agents")));
    assert_eq!(item["summary"][0]["text"], "Plan.");
    // The next turn gives both items back: the signed block heads the assistant turn, the call has its flat name.
    let next = json!({"model": "claude", "input": [{"role": "user", "content": "go"}, item, call,
        {"type": "function_call_output", "call_id": "toolu_1", "output": "ok"}]});
    let m = request(Endpoint::Responses, Endpoint::Messages, &next, &opts(UpstreamKind::Anthropic)).unwrap();
    assert_eq!(
        m["messages"][1]["content"],
        json!([thinking, {"type": "tool_use", "id": "toolu_1", "name": "agents__spawn", "input": {}}])
    );
    // Without `include`, the item has no encrypted_content, and nothing of it goes back.
    let plain = whole(Endpoint::Messages, Endpoint::Responses, &answer, &Back::default()).unwrap();
    assert!(plain["output"][0].get("encrypted_content").is_none());
}
