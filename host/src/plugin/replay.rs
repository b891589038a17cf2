//! `weir plugin replay PLUGIN.wasm FIXTURES [--config C] [--against OLD.wasm]`: recorded requests
//! (`super::fixtures`) run offline through one plugin — `on-request` with the recorded request, `on-chunk` with each
//! recorded piece of the answer, `flush` at the end of each text stream, `on-complete` with the recorded summary —
//! on the gateway's own chain (`super::chain`), so failure policies, limits and checks are the gateway's. Each
//! request is reported as a few lines: what the plugin decided (allowed, with its changes; refused, with status and
//! message; answered itself), what it did to the answer (pieces changed, dropped, stopped, and the text sent), and
//! the metadata it set.
//!
//! With `--against OLD.wasm` both versions replay the same fixtures, and only the requests whose reports differ are
//! printed (old and new lines); the command then exits non-zero: a CI check for a policy change. A change of settings
//! alone is checked the same way (`--against-config OLD.toml`, the same component or another).
//!
//! Each version has a kv store of its own, in memory, kept across the fixtures in order; before each fixture it is
//! seeded with the values the recorded plugin of the same name read in that request (`kv` in the fixture: counters,
//! and any value with `content = true`), so the plugin decides on the state it had then. Fixtures are replayed as the first plugin would have seen them: the
//! request as it entered the chain, before any other plugin changed it. Credentials were never recorded (they read
//! `[credential]`), so a policy that checks keys refuses them; text recorded without `content = true` is
//! placeholders of the same length.

#![allow(
    clippy::indexing_slicing,
    reason = "a serde_json::Value index answers Null for what is missing: it never panics"
)]

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::Value;

use super::chain::{Chain, ChunkVerdict, RequestView};
use super::registry::{PluginSet, load_standalone};
use super::types;
use crate::api::{Endpoint, Family};
use crate::config::{PluginRuntime, PluginSettings, load_plugin_settings};

/// Which version to compare with: its component and its settings file (`None`: the new version's).
pub struct Against<'a> {
    pub wasm: &'a Path,
    pub config: Option<&'a Path>,
}

/// Replays `fixtures` through `wasm` with its settings `config` (and `against`, when given); prints the reports.
/// Returns whether any request's report differs between the two versions.
pub fn run(wasm: &Path, fixtures: &Path, config: Option<&Path>, against: Option<Against<'_>>) -> anyhow::Result<bool> {
    let settings_of = |config: Option<&Path>| -> anyhow::Result<PluginSettings> {
        Ok(match config {
            Some(p) => load_plugin_settings(p, &PluginRuntime::default())?,
            None => PluginSettings::default(),
        })
    };
    let settings = settings_of(config)?;
    let name = plugin_name(wasm);
    let text = std::fs::read_to_string(fixtures).with_context(|| format!("{}", fixtures.display()))?;
    let recorded = parse(&text).with_context(|| format!("{}", fixtures.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let load = |path: &Path, settings: PluginSettings| -> anyhow::Result<Arc<PluginSet>> {
        let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
        let p = load_standalone(&name, &bytes, settings, format!("replay: {}", path.display()))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Arc::new(PluginSet::new(vec![p])))
    };
    let new = load(wasm, settings.clone())?;
    let new_reports = rt.block_on(replay_all(&new, &recorded))?;
    let Some(against) = against else {
        for lines in &new_reports {
            println!("{}", lines.join("\n  "));
        }
        println!("{} requests replayed through {}", new_reports.len(), wasm.display());
        return Ok(false);
    };
    let old_settings = match against.config {
        Some(_) => settings_of(against.config)?,
        None => settings,
    };
    let old = load(against.wasm, old_settings)?;
    let old_reports = rt.block_on(replay_all(&old, &recorded))?;
    let mut differ = 0;
    for (old, new) in old_reports.iter().zip(&new_reports) {
        if old == new {
            continue;
        }
        differ += 1;
        println!("{}", new.first().map_or("", String::as_str));
        for (o, n) in old.iter().zip(new).skip(1) {
            if o != n {
                println!("  - {o}\n  + {n}");
            }
        }
        for extra in old.iter().skip(new.len()) {
            println!("  - {extra}");
        }
        for extra in new.iter().skip(old.len()) {
            println!("  + {extra}");
        }
    }
    let old_name = match against.config {
        Some(c) => format!("{} with {}", against.wasm.display(), c.display()),
        None => against.wasm.display().to_string(),
    };
    println!("{differ} of {} requests decided differently than by {old_name}", new_reports.len());
    Ok(differ > 0)
}

/// The plugin's name from its file: `NAME.wasm` or `NAME.shadow.wasm`.
fn plugin_name(wasm: &Path) -> String {
    let stem = wasm.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
    stem.strip_suffix(super::shadow::SUFFIX).unwrap_or(stem).to_string()
}

/// The fixtures of a JSONL file (blank lines skipped), each checked for its format version. A last line without its
/// newline that is not JSON was cut by a gateway that stopped mid-write (`kill -9`): it is skipped, with a note.
fn parse(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) if n + 1 == lines.len() && !text.ends_with('\n') => {
                eprintln!("note: line {} is cut (the gateway stopped while writing it): skipped", n + 1);
                break;
            }
            Err(e) => return Err(e).with_context(|| format!("line {}: not JSON", n + 1)),
        };
        if v["v"].as_u64() != Some(crate::plugin::fixtures::VERSION) {
            bail!("line {}: not a fixture of format {} (`\"v\"`)", n + 1, crate::plugin::fixtures::VERSION);
        }
        out.push(v);
    }
    Ok(out)
}

async fn replay_all(set: &Arc<PluginSet>, fixtures: &[Value]) -> anyhow::Result<Vec<Vec<String>>> {
    let mut out = Vec::new();
    for (n, f) in fixtures.iter().enumerate() {
        out.push(replay_one(set, f).await.with_context(|| format!("fixture {}", n + 1))?);
    }
    Ok(out)
}

/// One fixture through the chain: its report lines (the first names the request).
async fn replay_one(set: &Arc<PluginSet>, f: &Value) -> anyhow::Result<Vec<String>> {
    let endpoint = endpoint_of(f["endpoint"].as_str().unwrap_or_default())?;
    let family = if f["family"] == "anthropic" { Family::Anthropic } else { Family::OpenAi };
    let id = f["id"].as_str().unwrap_or("req_unknown");
    let model = f["model"].as_str().unwrap_or_default();
    let stream = f["stream"].as_bool().unwrap_or(false);
    let mut headers = http::HeaderMap::new();
    for h in f["headers"].as_array().into_iter().flatten() {
        let (Some(n), Some(v)) = (h[0].as_str(), h[1].as_str()) else { continue };
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(n.as_bytes()), http::HeaderValue::from_str(v)) {
            headers.append(n, v);
        }
    }
    let body = match &f["body"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    seed(set, f).await?;
    let mut lines = vec![format!("{id} {} {model}{}", endpoint.path(), if stream { " (streamed)" } else { "" })];
    let mut chain = Chain::new(set.clone(), family);
    let mut view = RequestView {
        id,
        endpoint,
        headers: &headers,
        body: bytes::Bytes::from(body),
        model: model.to_string(),
        stream,
        listing: false,
    };
    let answered = match chain.on_request(&mut view).await {
        Err(e) => {
            lines.push(format!("refused: {} {}", e.status().as_u16(), e.message));
            true
        }
        Ok(fx) => {
            if let Some(r) = &fx.respond {
                lines.push(format!("answered by the plugin: status {}", r.status));
                true
            } else if let Some(r) = &fx.reply {
                lines.push(format!(
                    "answered by the plugin: status {}{}",
                    r.status,
                    if r.cached { " (cached)" } else { "" }
                ));
                true
            } else {
                lines.push(allowed(&fx, &view.model, model));
                false
            }
        }
    };
    if !answered {
        lines.push(answer(&mut chain, f).await);
    }
    if !chain.metadata.is_empty() {
        let m: Vec<String> = chain.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
        lines.push(format!("metadata: {}", m.join(", ")));
    }
    let mut chain = chain.on_complete(summary(id, &f["summary"]), false).await;
    chain.release();
    Ok(lines)
}

/// Puts into the plugin's store the kv values the recorded plugin of the same name read in this request, so that it
/// decides on the state it had then.
async fn seed(set: &Arc<PluginSet>, f: &Value) -> anyhow::Result<()> {
    use base64::Engine as _;
    let Some(p) = set.plugins.first() else { return Ok(()) };
    for e in f["kv"].as_array().into_iter().flatten().filter(|e| e["plugin"] == p.name.as_str()) {
        let key = format!("{}/{}", p.name, e["key"].as_str().unwrap_or_default());
        let kv = &p.context.kv;
        let value = match &e["value"] {
            Value::Null => None,
            Value::String(s) => Some(s.clone().into_bytes()),
            other => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(other["base64"].as_str().unwrap_or_default())
                    .context("a kv value in base64")?,
            ),
        };
        match value {
            None => kv.delete(&key).await,
            Some(v) => kv.set(&key, v, None).await,
        }
        .map_err(|e| anyhow::anyhow!("seeding kv {key}: {e}"))?;
    }
    Ok(())
}

/// "allowed", with what the plugin changed.
fn allowed(fx: &super::chain::RequestEffects, model_now: &str, model_was: &str) -> String {
    let mut changes = Vec::new();
    if model_now != model_was {
        changes.push(format!("model → {model_now}"));
    }
    for (n, v) in &fx.headers {
        changes.push(format!("header {n}: {}", v.to_str().unwrap_or("(not text)")));
    }
    if fx.body.is_some() {
        changes.push("body rewritten".into());
    }
    if let Some(route) = &fx.route {
        let r: Vec<String> = route.iter().map(|(u, m)| m.as_ref().map_or(u.clone(), |m| format!("{u}:{m}"))).collect();
        changes.push(format!("routed to {}", r.join(", ")));
    }
    if changes.is_empty() { "allowed".into() } else { format!("allowed: {}", changes.join("; ")) }
}

/// The recorded answer through `on-chunk` and `flush`: what the client would have been sent.
async fn answer(chain: &mut Chain, f: &Value) -> String {
    let (mut events, mut changed, mut dropped) = (0, 0, 0);
    let mut text = String::new();
    let mut streams: Vec<types::TextStream> = Vec::new();
    for c in f["chunks"].as_array().into_iter().flatten() {
        let chunk = chunk_of(c);
        for t in &chunk.texts {
            if !streams.contains(&t.stream) {
                streams.push(t.stream);
            }
        }
        events += 1;
        let original: String = chunk.texts.iter().map(|t| t.text.as_str()).collect();
        match chain.on_chunk(chunk, 0).await {
            Err(e) => return format!("answer failed: {}", e.message),
            Ok(ChunkVerdict::Abort(reason)) => return format!("answer stopped after {events} events: {reason}"),
            Ok(ChunkVerdict::Drop) => dropped += 1,
            Ok(ChunkVerdict::Forward { texts, data }) => {
                if texts.is_some() || data.is_some() {
                    changed += 1;
                }
                match texts {
                    Some(t) => text.push_str(&t.concat()),
                    None => text.push_str(&original),
                }
            }
        }
    }
    for s in streams {
        match chain.flush(s).await {
            Err(e) => return format!("answer failed: {}", e.message),
            Ok(Err(reason)) => return format!("answer stopped at its end: {reason}"),
            Ok(Ok(held)) => text.push_str(&held.concat()),
        }
    }
    let mut shown: String = text.chars().take(200).collect();
    if shown.len() < text.len() {
        shown.push_str(&format!("… ({} chars)", text.chars().count()));
    }
    format!("answer: {events} events, {changed} changed, {dropped} dropped; text: {shown:?}")
}

fn chunk_of(c: &Value) -> types::Chunk {
    let texts = c["texts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| types::TextPiece {
            stream: types::TextStream {
                choice: t["stream"][0].as_u64().unwrap_or(0) as u32,
                part: t["stream"][1].as_u64().unwrap_or(0) as u32,
                kind: super::fixtures::text_kind_of(t["stream"][2].as_str().unwrap_or_default()),
            },
            text: t["text"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    types::Chunk {
        index: c["index"].as_u64().unwrap_or(0) as u32,
        event: c["event"].as_str().map(String::from),
        data: c["data"].as_str().unwrap_or_default().to_string(),
        texts,
        whole_body: c["whole_body"].as_bool().unwrap_or(false),
    }
}

fn summary(id: &str, s: &Value) -> types::Summary {
    let u = &s["usage"];
    let n = |v: &Value| v.as_u64();
    types::Summary {
        request_id: id.to_string(),
        model: s["model"].as_str().unwrap_or_default().to_string(),
        status: s["status"].as_u64().unwrap_or(200) as u16,
        outcome: s["outcome"].as_str().unwrap_or("ok").to_string(),
        upstream: s["upstream"].as_str().map(String::from),
        attempts: s["attempts"].as_u64().unwrap_or(1) as u32,
        usage: types::Usage {
            input_tokens: n(&u["input_tokens"]),
            output_tokens: n(&u["output_tokens"]),
            cached_tokens: n(&u["cached_tokens"]),
            reasoning_tokens: n(&u["reasoning_tokens"]),
        },
        ttft_ms: s["ttft_ms"].as_f64(),
        duration_ms: s["duration_ms"].as_f64().unwrap_or(0.0),
        principal: None,
        metadata: Vec::new(),
        error: s["error"].as_str().map(String::from),
        partial: s["partial"].as_bool().unwrap_or(false),
    }
}

fn endpoint_of(name: &str) -> anyhow::Result<Endpoint> {
    [Endpoint::ChatCompletions, Endpoint::Responses, Endpoint::Messages, Endpoint::Embeddings]
        .into_iter()
        .find(|e| e.as_str() == name)
        .with_context(|| format!("unknown endpoint {name:?}"))
}
