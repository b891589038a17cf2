//! Entry points for fuzzing: each takes arbitrary bytes and must return without panicking, whatever they are.
//! `fuzz/fuzz_targets/` runs them under libFuzzer (`make fuzz`); `host/tests/fuzz_corpus.rs` replays the
//! checked-in corpus (`fuzz/corpus/<target>/`) and a batch of mutations of it in `make test`.
//!
//! Where one input must choose among several variants (an endpoint, streamed or whole), its first byte chooses, so
//! every part of the input space is reachable from one byte string and a corpus file replays the same path.

// Input from the wire: no panics (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;

use crate::api::Endpoint;
use crate::config::{Capability, Config, PluginRuntime};
use crate::dialect;
use crate::plugin::engine::PluginEngine;
use crate::sse::{SseEvent, SseParser};
use crate::usage::UsageTap;

/// A fuzz target: arbitrary bytes in, no panic.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the directory names under `fuzz/corpus/`).
pub const TARGETS: [(&str, Target); 8] = [
    ("sse", sse),
    ("answer", answer),
    ("request", request),
    ("config", config),
    ("plugin", plugin),
    ("translate", translate),
    ("eventstream", eventstream),
    ("sigv4", sigv4),
];

/// The event-stream decoder, fed in chunks whose sizes the first byte chooses, and each message it accepts turned
/// into the SSE event Bedrock's answer carries (or the error that ends the stream).
pub fn eventstream(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let step = match sel % 33 {
        0 => rest.len().max(1),
        n => usize::from(n),
    };
    let mut d = crate::provider::eventstream::Decoder::default();
    let (mut scratch, mut out) = (Vec::new(), bytes::BytesMut::new());
    for chunk in rest.chunks(step) {
        d.push(chunk);
        loop {
            match d.next_message() {
                Ok(Some(m)) => {
                    let _ = m.header(":message-type");
                    let _ = crate::provider::bedrock_event_to_sse(&m, &mut scratch, &mut out);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = d.has_partial();
}

/// The SigV4 canonicalizer and signer over arbitrary request parts: the input's lines are the path, the query, a
/// header value, the host and the date to parse; the whole input is the body.
pub fn sigv4(data: &[u8]) {
    use crate::provider::sigv4;
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let mut next = || lines.next().unwrap_or("");
    let (path, query, value, host, date) = (next(), next(), next(), next(), next());
    let headers = [("content-type", value), ("accept", value)];
    let r = sigv4::Signable { method: "POST", host, path, query, headers: &headers, body: data };
    let keys = sigv4::AwsKeys { access_key_id: "AKID".into(), secret_access_key: "secret".into(), session_token: None };
    let now = sigv4::parse_amz_date(date).unwrap_or(std::time::SystemTime::UNIX_EPOCH);
    let s = sigv4::sign(&r, &keys, "us-east-1", "bedrock", now);
    let _ = sigv4::parse_amz_date(&s.amz_date);
    let _ = sigv4::uri_encode(path, true);
}

/// The first byte's choice of endpoint, and the rest.
fn endpoint_and_rest(data: &[u8]) -> Option<(u8, Endpoint, &[u8])> {
    let (&sel, rest) = data.split_first()?;
    let all = Endpoint::ALL;
    let endpoint = all.get(usize::from(sel) % all.len()).copied()?;
    Some((sel, endpoint, rest))
}

/// The SSE parser, fed the input in chunks whose sizes the first byte chooses (1 to 16 bytes, or all at once), then
/// every event's fields.
pub fn sse(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let step = match sel % 17 {
        0 => rest.len().max(1),
        n => usize::from(n),
    };
    let mut parser = SseParser::new();
    for chunk in rest.chunks(step) {
        parser.push(chunk);
        while let Some(ev) = parser.next_event() {
            let _ = ev.fields();
        }
    }
    if let Some(ev) = parser.finish() {
        let _ = ev.fields();
    }
}

/// An upstream answer through the usage tap and the dialect of the endpoint the first byte chooses: a streamed
/// answer (high bit set: the rest is SSE) or a whole body.
pub fn answer(data: &[u8]) {
    let Some((sel, endpoint, rest)) = endpoint_and_rest(data) else { return };
    let d = dialect::of(endpoint);
    let mut tap = UsageTap::new(endpoint, sel & 0x40 != 0);
    if sel & 0x80 == 0 {
        tap.on_body(rest);
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest) {
            let _ = dialect::answer_text(&d.whole(&v));
        }
        return;
    }
    let mut parser = SseParser::new();
    parser.push(rest);
    let now = Instant::now();
    let mut on = |ev: &SseEvent| {
        let _ = tap.on_event(ev, now);
        let f = ev.fields();
        let v = serde_json::from_str::<serde_json::Value>(&f.data).ok();
        if let Some(v) = &v {
            let _ = d.deltas(f.event, v);
            let _ = d.summaries(f.event, v);
            let _ = d.is_summary(f.event);
        }
        let _ = d.ends(f.event, v.as_ref(), &f.data);
    };
    while let Some(ev) = parser.next_event() {
        on(&ev);
    }
    if let Some(ev) = parser.finish() {
        on(&ev);
    }
}

/// A client's request body for the endpoint the first byte chooses: depth limit, parse, and the rewrites an upstream
/// attempt renders.
pub fn request(data: &[u8]) {
    let Some((_, endpoint, rest)) = endpoint_and_rest(data) else { return };
    let _ = crate::pipeline::validate_for_fuzzing(&Bytes::copy_from_slice(rest), endpoint, 64);
}

/// Translation between the families, in the direction the first byte chooses (OpenAI chat → Anthropic, OpenAI
/// responses → Anthropic, Anthropic → OpenAI chat): with the high bit set, the rest is the upstream's SSE answer fed
/// to a stream translator whose output goes through the client's usage tap; otherwise the rest, as JSON, is
/// translated as a request, as a whole answer and as an error body. Both paths also go through the replay of a
/// plugin's `reply` (`dialect::replay`): events put together into a whole answer, a whole answer made events.
pub fn translate(data: &[u8]) {
    use crate::dialect::translate as t;
    let Some((&sel, rest)) = data.split_first() else { return };
    let (client, upstream) = match sel % 3 {
        0 => (Endpoint::ChatCompletions, Endpoint::Messages),
        1 => (Endpoint::Responses, Endpoint::Messages),
        _ => (Endpoint::Messages, Endpoint::ChatCompletions),
    };
    if sel & 0x80 != 0 {
        let Some(mut translator) = t::StreamTranslator::new(upstream, client, t::Back::default()) else { return };
        let mut tap = UsageTap::new(client, sel & 0x40 != 0);
        let mut parser = SseParser::new();
        parser.push(rest);
        let now = Instant::now();
        let mut out = Vec::new();
        let mut events = Vec::new();
        while let Some(ev) = parser.next_event().or_else(|| parser.finish()) {
            let f = ev.fields();
            translator.event(f.event, &f.data, &mut out);
            events.push((f.event.map(str::to_string), f.data.to_string()));
        }
        if let Some(whole) = crate::dialect::replay::to_whole(upstream, &events) {
            let _ = crate::dialect::replay::to_events(upstream, &whole, true);
        }
        for raw in out {
            let _ = tap.on_event(&SseEvent { raw }, now);
        }
        return;
    }
    let _ = t::error_body(rest, 400, client.family());
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest) else { return };
    let opts = t::Options {
        default_max_tokens: 4096,
        drop_fields: &[],
        kind: if sel & 0x40 != 0 {
            crate::config::UpstreamKind::Openai
        } else {
            crate::config::UpstreamKind::Anthropic
        },
    };
    if let Ok(translated) = t::request(client, upstream, &v, &opts) {
        let _ = translated.to_string();
    }
    if let Some(answer) = t::whole(upstream, client, &v, &t::back(client, &v)) {
        let _ = answer.to_string();
    }
    if let Some(events) = crate::dialect::replay::to_events(upstream, &v, sel & 0x40 != 0) {
        let _ = crate::dialect::replay::to_whole(upstream, &events);
    }
}

/// The config loader on arbitrary text (environment variables it names may or may not exist; it reads no file).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = Config::parse(text, Path::new("fuzz.toml")) {
        let _ = crate::summary::of(&c, |_| None);
    }
}

/// `weir plugin check` on arbitrary bytes: validation and compilation of a component with every capability granted.
pub fn plugin(data: &[u8]) {
    static ENGINE: OnceLock<Option<Arc<PluginEngine>>> = OnceLock::new();
    let engine = ENGINE.get_or_init(|| {
        // Its own compile cache (mode 0700, as the engine requires), so fuzzing never writes into the user's.
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("weir-fuzz-cache-{}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).ok()?;
        let rt = PluginRuntime { max_instances: 2, cache_dir: Some(dir), ..Default::default() };
        PluginEngine::new(&rt).ok()
    });
    if let Some(engine) = engine {
        let _ = engine.compile(data, &Capability::ALL);
    }
}
