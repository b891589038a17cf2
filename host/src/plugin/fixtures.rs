//! Recorded traffic (`[record]`): a sample of live requests written as fixtures, one JSON object per line, for
//! replaying through a plugin offline (`weir plugin replay`, `plugin/replay.rs`).
//!
//! A fixture holds what the plugin chain was given and what it decided: the request as it entered the chain
//! (endpoint, model, stream, headers, body), each plugin's `on-request` decision, each piece of the answer as
//! `on-chunk` would see it (with its time from the request's start), and the completion summary. It never holds a
//! credential: `authorization`, `x-api-key`, cookies and every header whose name says key, token, secret or auth are
//! written as `[credential]`. Prompt and answer text are written only with `content = true`; otherwise every string
//! in the body and the answer's events is replaced by a placeholder of the same length (whitespace kept, every other
//! character `x`), except the fields that say what a message *is* rather than what it says ([`KEEP`]: model, role,
//! type, ids, finish reasons), so that a replayed policy still sees the request's shape. The principal and the
//! plugins' metadata are not written. The kv values each plugin read before changing them are written too (only
//! counters unless `content = true`), so that a replay decides on the state the plugin had.
//!
//! Fixtures are written by one thread from a bounded queue: a request never waits for the disk, and a fixture that
//! finds the queue full is dropped and counted in the log.

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::{Map, Value, json};

use super::types;
use crate::api::{Endpoint, Family};
use crate::config::RecordConfig;

/// The fixture format's version (`"v"`).
pub const VERSION: u64 = 1;

/// What a credential header's value is written as.
pub const CREDENTIAL: &str = "[credential]";

/// Body and event fields kept as they are without `content = true`: what a message is, not what it says.
pub const KEEP: &[&str] = &[
    "model",
    "role",
    "type",
    "object",
    "id",
    "tool_call_id",
    "tool_use_id",
    "call_id",
    "finish_reason",
    "stop_reason",
    "status",
    "event",
    "media_type",
    "service_tier",
    "reasoning_effort",
    "effort",
    "encoding_format",
];

/// How many fixtures may wait for the writer.
const QUEUE: usize = 256;

struct Recorder {
    config: RecordConfig,
    sample: crate::sync::Sampler,
    tx: std::sync::mpsc::SyncSender<String>,
    dropped: AtomicU64,
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

/// Starts recording as `config` says: opens (creating) the file for appending, and the writer thread.
pub fn start(config: &RecordConfig) -> anyhow::Result<()> {
    let path = &config.path;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("[record] {}: cannot create: {e}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("[record] {}: cannot open: {e}", path.display()))?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(QUEUE);
    let shown: PathBuf = path.clone();
    std::thread::Builder::new().name("weir-record".into()).spawn(move || {
        for line in rx {
            if let Err(e) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
                tracing::error!(file = %shown.display(), error = %e, "cannot write a fixture");
            }
        }
    })?;
    let r = Recorder { config: config.clone(), sample: Default::default(), tx, dropped: AtomicU64::new(0) };
    if RECORDER.set(r).is_err() {
        anyhow::bail!("[record] started twice");
    }
    tracing::warn!(file = %path.display(), sample = config.sample, content = config.content,
        "recording fixtures{}", if config.content { " WITH prompt and answer text" } else { " (text replaced by placeholders)" });
    Ok(())
}

/// A fixture for this request, if recording is on, records `endpoint` and the request is in the sample.
pub fn sampled(endpoint: Endpoint) -> Option<Box<Fixture>> {
    let r = RECORDER.get()?;
    let wanted = r.config.endpoints.is_empty() || r.config.endpoints.iter().any(|e| e == endpoint.as_str());
    if !wanted || !r.sample.take(r.config.sample) {
        return None;
    }
    Some(Box::new(Fixture::new(r.config.content, r.config.max_fixture)))
}

/// One request's fixture, filled in as the chain runs and written when it completes.
pub struct Fixture {
    started: Instant,
    content: bool,
    max: usize,
    size: usize,
    truncated: bool,
    request: Map<String, Value>,
    decisions: Vec<Value>,
    chunks: Vec<Value>,
    kv: Vec<Value>,
    kv_withheld: usize,
}

impl Fixture {
    pub fn new(content: bool, max: usize) -> Fixture {
        Fixture {
            started: Instant::now(),
            content,
            max,
            size: 0,
            truncated: false,
            request: Map::new(),
            decisions: Vec::new(),
            chunks: Vec::new(),
            kv: Vec::new(),
            kv_withheld: 0,
        }
    }

    /// The request as it enters the chain.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        id: &str,
        family: Family,
        endpoint: Endpoint,
        model: &str,
        stream: bool,
        headers: &http::HeaderMap,
        body: &[u8],
    ) {
        let headers: Vec<Value> = headers
            .iter()
            .filter_map(|(name, value)| {
                let value = if is_credential(name.as_str()) { CREDENTIAL } else { value.to_str().ok()? };
                Some(json!([name.as_str(), value]))
            })
            .collect();
        let body = match serde_json::from_slice::<Value>(body) {
            Ok(v) if self.content => v,
            Ok(v) => mask(v, None),
            Err(_) => Value::String(placeholder(&String::from_utf8_lossy(body))),
        };
        self.size += body.to_string().len();
        self.request = json!({
            "id": id,
            "family": family.as_str(),
            "endpoint": endpoint.as_str(),
            "model": model,
            "stream": stream,
            "headers": headers,
            "body": body,
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
    }

    /// Plugin `plugin`'s decision in `on-request`.
    pub fn decision(&mut self, plugin: &str, decision: &types::RequestDecision) {
        self.decisions.push(json!({"plugin": plugin, "hook": "on-request", "decision": describe(decision)}));
    }

    /// The kv values plugin `plugin` read before changing them ([`super::host::KvLog`]), for a replay to seed its
    /// store with. Without `content = true` only counters (decimal integers) and absent keys are written: any other
    /// value may hold text (a cached answer), and is counted in `kv_withheld` instead.
    pub fn kv(&mut self, plugin: &str, reads: Vec<(String, Option<Vec<u8>>)>) {
        use base64::Engine as _;
        for (key, value) in reads {
            let value = match value {
                None => Value::Null,
                Some(v) if is_counter(&v) => Value::String(String::from_utf8_lossy(&v).into_owned()),
                Some(_) if !self.content => {
                    self.kv_withheld += 1;
                    continue;
                }
                Some(v) => match String::from_utf8(v) {
                    Ok(text) => Value::String(text),
                    Err(e) => json!({"base64": base64::engine::general_purpose::STANDARD.encode(e.into_bytes())}),
                },
            };
            let entry = json!({"plugin": plugin, "key": key, "value": value});
            self.size += entry.to_string().len();
            self.kv.push(entry);
        }
    }

    /// A piece of the answer, as it reaches the first plugin.
    pub fn chunk(&mut self, chunk: &types::Chunk) {
        if self.truncated {
            return;
        }
        let data = if self.content {
            chunk.data.clone()
        } else {
            match serde_json::from_str::<Value>(&chunk.data) {
                Ok(v) => mask(v, None).to_string(),
                Err(_) if chunk.data == "[DONE]" => chunk.data.clone(),
                Err(_) => placeholder(&chunk.data),
            }
        };
        let texts: Vec<Value> = chunk
            .texts
            .iter()
            .map(|t| {
                let text = if self.content { t.text.clone() } else { placeholder(&t.text) };
                json!({"stream": stream_json(&t.stream), "text": text})
            })
            .collect();
        let v = json!({
            "ms": (self.started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
            "index": chunk.index,
            "event": chunk.event,
            "data": data,
            "texts": texts,
            "whole_body": chunk.whole_body,
        });
        let len = v.to_string().len();
        if self.size + len > self.max {
            self.truncated = true;
            return;
        }
        self.size += len;
        self.chunks.push(v);
    }

    /// Writes the fixture with the request's summary (without its principal and metadata). A request refused before
    /// the chain saw it (malformed input) has no fixture: nothing to replay.
    pub fn finish(self, s: &types::Summary) {
        let Some(r) = RECORDER.get() else { return };
        if self.request.is_empty() {
            return;
        }
        let mut v = self.request;
        v.insert("v".into(), VERSION.into());
        v.insert("recorded_at".into(), httpdate::fmt_http_date(std::time::SystemTime::now()).into());
        v.insert("content".into(), self.content.into());
        v.insert("decisions".into(), self.decisions.into());
        v.insert("chunks".into(), self.chunks.into());
        v.insert("truncated".into(), self.truncated.into());
        v.insert("kv".into(), self.kv.into());
        v.insert("kv_withheld".into(), self.kv_withheld.into());
        v.insert(
            "summary".into(),
            json!({
                "model": s.model,
                "status": s.status,
                "outcome": s.outcome,
                "upstream": s.upstream,
                "attempts": s.attempts,
                "usage": {
                    "input_tokens": s.usage.input_tokens,
                    "output_tokens": s.usage.output_tokens,
                    "cached_tokens": s.usage.cached_tokens,
                    "reasoning_tokens": s.usage.reasoning_tokens,
                },
                "ttft_ms": s.ttft_ms,
                "duration_ms": s.duration_ms,
                "error": s.error,
                "partial": s.partial,
            }),
        );
        let mut line = Value::Object(v).to_string();
        line.push('\n');
        if r.tx.try_send(line).is_err() {
            let n = r.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "fixtures dropped: the writer is behind");
            }
        }
    }
}

/// A counter's value: a decimal integer.
fn is_counter(v: &[u8]) -> bool {
    std::str::from_utf8(v).is_ok_and(|s| s.parse::<i64>().is_ok())
}

/// Whether a header carries a credential (never recorded).
pub fn is_credential(name: &str) -> bool {
    matches!(name, "authorization" | "proxy-authorization" | "cookie" | "x-api-key" | "api-key")
        || ["key", "token", "secret", "auth", "session", "password"].iter().any(|w| name.contains(w))
}

/// Same length, whitespace kept, every other character `x`.
pub fn placeholder(text: &str) -> String {
    text.chars().map(|c| if c.is_whitespace() { c } else { 'x' }).collect()
}

/// `v` with every string replaced by its placeholder, except under the keys in [`KEEP`].
fn mask(v: Value, key: Option<&str>) -> Value {
    match v {
        Value::String(s) if key.is_some_and(|k| KEEP.contains(&k)) => Value::String(s),
        Value::String(s) => Value::String(placeholder(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| mask(x, key)).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, x)| (k.clone(), mask(x, Some(&k)))).collect()),
        other => other,
    }
}

/// A decision as JSON: its kind and what it changes (what replay prints and compares).
pub fn describe(d: &types::RequestDecision) -> Value {
    use types::RequestDecision as D;
    match d {
        D::Continue => json!({"kind": "continue"}),
        D::ContinueWith(c) => json!({
            "kind": "continue-with",
            "headers": c.set_headers.iter().map(|h| json!([h.name, h.value])).collect::<Vec<_>>(),
            "model": c.model,
            "body_changed": c.body.is_some(),
            "metadata": c.metadata.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "principal": c.principal.as_ref().map(|p| p.id.clone()),
        }),
        D::Route(targets) => json!({
            "kind": "route",
            "targets": targets.iter().map(|t| json!([t.upstream, t.model])).collect::<Vec<_>>(),
        }),
        D::Respond(r) => json!({"kind": "respond", "status": r.status}),
        D::Reject(r) => json!({"kind": "reject", "status": r.status, "message": r.message}),
        D::Reply(r) => json!({"kind": "reply", "cached": r.cached}),
    }
}

/// A text stream as JSON (`[choice, part, kind]`).
pub fn stream_json(s: &types::TextStream) -> Value {
    json!([s.choice, s.part, text_kind(s.kind)])
}

/// A text kind as written in a fixture, read back ([`text_kind`]'s inverse; unknown: the answer).
pub fn text_kind_of(name: &str) -> types::TextKind {
    match name {
        "reasoning" => types::TextKind::Reasoning,
        "tool-arguments" => types::TextKind::ToolArguments,
        _ => types::TextKind::Answer,
    }
}

pub fn text_kind(k: types::TextKind) -> &'static str {
    match k {
        types::TextKind::Answer => "answer",
        types::TextKind::Reasoning => "reasoning",
        types::TextKind::ToolArguments => "tool-arguments",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn text_is_replaced_by_same_length_placeholders_and_shape_is_kept() {
        let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "My card is 4111 1111"}],
                          "max_tokens": 5, "tools": [{"type": "function", "function": {"name": "lookup"}}]});
        let m = mask(body, None);
        assert_eq!(m["model"], "gpt-4o-mini");
        assert_eq!(m["messages"][0]["role"], "user");
        assert_eq!(m["messages"][0]["content"], "xx xxxx xx xxxx xxxx");
        assert_eq!(m["max_tokens"], 5);
        assert_eq!(m["tools"][0]["type"], "function");
        assert_eq!(m["tools"][0]["function"]["name"], "xxxxxx");
    }

    #[test]
    fn an_answer_past_max_fixture_stops_being_recorded_and_says_so() {
        let piece = |i: u32| types::Chunk {
            index: i,
            event: None,
            data: format!("{{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}", "word ".repeat(20)),
            texts: vec![types::TextPiece {
                stream: types::TextStream { choice: 0, part: 0, kind: types::TextKind::Answer },
                text: "word ".repeat(20),
            }],
            whole_body: false,
        };
        let mut f = Fixture::new(false, 2048);
        for i in 0..100 {
            f.chunk(&piece(i));
        }
        assert!(f.truncated, "100 pieces of ~300 bytes do not fit in 2 KiB");
        assert!(!f.chunks.is_empty() && f.chunks.len() < 10, "{}", f.chunks.len());
        assert!(f.size <= 2048);
        let kept: Vec<u64> = f.chunks.iter().map(|c| c["index"].as_u64().unwrap()).collect();
        assert_eq!(kept, (0..kept.len() as u64).collect::<Vec<_>>(), "the first pieces, in order, none after a gap");
        assert_eq!(f.chunks[0]["texts"][0]["text"], placeholder(&"word ".repeat(20)));
    }

    #[test]
    fn credentials_are_recognised_by_name() {
        for h in ["authorization", "x-api-key", "cookie", "x-goog-api-key", "x-auth-token", "openai-session"] {
            assert!(is_credential(h), "{h}");
        }
        for h in ["content-type", "x-team", "anthropic-version", "user-agent"] {
            assert!(!is_credential(h), "{h}");
        }
    }
}
