//! What translation costs per request, in process: `cargo run --release -p weir --example translate_bench`
//! (bench/translation.sh runs it). Prints a Markdown table: the median and p99 of each step for a typical chat
//! request with tools (~1.2 KB), a whole answer, and a streamed answer of 64 text deltas, beside the baseline of
//! parsing the same JSON once (which the gateway does anyway for plugins and the usage tap). Then the coding agents'
//! recorded requests (host/tests/agents), at their real size (each placeholder for the client's text filled with as
//! many characters), each beside the baseline of parsing it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir::api::Endpoint;
use weir::config::UpstreamKind;
use weir::dialect::translate::{self, Options, StreamTranslator};

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

fn measure(name: &str, n: usize, mut f: impl FnMut()) {
    for _ in 0..n / 10 {
        f();
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    println!("| {name} | {:.1} | {:.1} |", pct(&mut times, 0.5), pct(&mut times, 0.99));
}

fn main() {
    let chat = json!({
        "model": "claude-haiku-4-5", "max_tokens": 256, "temperature": 0.3, "stream": true,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant that answers questions about the weather."},
            {"role": "user", "content": "What is the weather in Paris and in Oslo today? Answer in one sentence."},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "14 degrees, cloudy"},
            {"role": "tool", "tool_call_id": "call_2", "content": "3 degrees, snow"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string",
            "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}],
    });
    let bytes = chat.to_string();
    let opts = Options { default_max_tokens: 4096, drop_fields: &[], kind: UpstreamKind::Anthropic };
    let messages = translate::request(Endpoint::ChatCompletions, Endpoint::Messages, &chat, &opts).unwrap();
    let answer = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "It is 14 degrees and cloudy in Paris, and 3 degrees with snow in Oslo."}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 310, "output_tokens": 24}})
    .to_string();
    let mut events: Vec<(Option<&str>, String)> = vec![(
        Some("message_start"),
        json!({"type": "message_start",
        "message": {"id": "msg_1", "model": "claude-haiku-4-5", "usage": {"input_tokens": 310, "output_tokens": 1}}})
        .to_string(),
    )];
    events.push((
        Some("content_block_start"),
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.into(),
    ));
    for i in 0..64 {
        events.push((
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": format!(" word{i}")}})
            .to_string(),
        ));
    }
    events.push((Some("content_block_stop"), r#"{"type":"content_block_stop","index":0}"#.into()));
    events.push((
        Some("message_delta"),
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":64}}"#.into(),
    ));
    events.push((Some("message_stop"), r#"{"type":"message_stop"}"#.into()));

    println!("request {} bytes, answer {} bytes, stream {} events", bytes.len(), answer.len(), events.len());
    println!();
    println!("| step | p50 µs | p99 µs |");
    println!("|---|---|---|");
    let n = 20_000;
    measure("baseline: parse the request body once", n, || {
        std::hint::black_box(serde_json::from_str::<Value>(&bytes).unwrap());
    });
    measure("request chat → messages (parse + translate + serialize)", n, || {
        let v: Value = serde_json::from_str(&bytes).unwrap();
        let out = translate::request(Endpoint::ChatCompletions, Endpoint::Messages, &v, &opts).unwrap();
        std::hint::black_box(out.to_string());
    });
    let back_opts = Options { kind: UpstreamKind::Openai, ..opts };
    let messages_bytes = messages.to_string();
    measure("request messages → chat (parse + translate + serialize)", n, || {
        let v: Value = serde_json::from_str(&messages_bytes).unwrap();
        let out = translate::request(Endpoint::Messages, Endpoint::ChatCompletions, &v, &back_opts).unwrap();
        std::hint::black_box(out.to_string());
    });
    measure("whole answer messages → chat (parse + translate + serialize)", n, || {
        let v: Value = serde_json::from_str(&answer).unwrap();
        std::hint::black_box(
            translate::whole(Endpoint::Messages, Endpoint::ChatCompletions, &v, &translate::Back::default())
                .unwrap()
                .to_string(),
        );
    });
    measure("streamed answer messages → chat, all 69 events", n / 10, || {
        let mut t =
            StreamTranslator::new(Endpoint::Messages, Endpoint::ChatCompletions, translate::Back::default()).unwrap();
        let mut out = Vec::new();
        for (e, d) in &events {
            t.event(*e, d, &mut out);
        }
        std::hint::black_box(out);
    });
    agents(n / 10);
    measure("one text delta event messages → chat", n, || {
        let mut t =
            StreamTranslator::new(Endpoint::Messages, Endpoint::ChatCompletions, translate::Back::default()).unwrap();
        let mut out = Vec::new();
        t.event(events[2].0, &events[2].1, &mut out);
        std::hint::black_box(out);
    });
}

/// A recorded agent request with its texts back at their original length.
fn recorded(name: &str) -> (Endpoint, String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agents").join(name);
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    fn fill(v: &mut Value) {
        match v {
            Value::String(s) => {
                if let Some(n) =
                    s.strip_prefix('<').and_then(|r| r.split_once(" characters")).and_then(|(n, _)| n.parse().ok())
                {
                    *s = "x".repeat(n);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(fill),
            Value::Object(o) => o.values_mut().for_each(fill),
            _ => {}
        }
    }
    let mut body = rec["body"].clone();
    fill(&mut body);
    let endpoint = if rec["endpoint"] == "/v1/messages" { Endpoint::Messages } else { Endpoint::Responses };
    (endpoint, body.to_string())
}

fn agents(n: usize) {
    for (name, to, kind) in [
        ("claude-code-2.1.328-on-gpt-turn-2.json", Endpoint::ChatCompletions, UpstreamKind::Openai),
        ("codex-0.169.0-on-claude-turn-2.json", Endpoint::Messages, UpstreamKind::Anthropic),
    ] {
        let (from, bytes) = recorded(name);
        let opts = Options { default_max_tokens: 4096, drop_fields: &[], kind };
        let label = format!("{} ({:.0} KB)", name.trim_end_matches(".json"), bytes.len() as f64 / 1024.0);
        measure(&format!("baseline: parse {label}"), n, || {
            std::hint::black_box(serde_json::from_str::<Value>(&bytes).unwrap());
        });
        measure(
            &format!("request {} → {} (parse + back + translate + serialize)", from.as_str(), to.as_str()),
            n,
            || {
                let v: Value = serde_json::from_str(&bytes).unwrap();
                let back = translate::back(from, &v);
                let out = translate::request(from, to, &v, &opts).unwrap();
                std::hint::black_box((back, out.to_string()));
            },
        );
    }
}
