//! `redact`: finds PII and secrets — email addresses, phone numbers, credit-card numbers (Luhn-checked), IBANs
//! (checksum-verified), IPv4 addresses, API keys and tokens (`sk-…`, `AKIA…`, `Bearer …`, private-key blocks) — in
//! what clients send and in what models answer, streamed or not, in both API families.
//!
//! Per kind, a mode: `mask` (`[EMAIL]`), `hash` (`[EMAIL:1f2e3d4c]`, the same value gives the same tag within a
//! request), `block` (refuse the request with 400, or stop the answer), or `off`. `allow` lists values that are not
//! personal data (an agent's `noreply@…` trailer, a company's own domain); `scope = "conversation"` leaves the
//! system prompt, instructions and system/developer messages alone, so an agent's own instructions reach the model
//! intact while what its user and tools wrote is still scanned.
//!
//! Requests: the text of messages, system prompts, instructions and inputs (plain strings and the text parts of
//! structured content). Answers: every stream of text the gateway reports (each choice, each content block; answer,
//! reasoning and tool-call arguments alike) goes through its own [`redact::Stream`], which emits exactly what
//! redacting the whole text would give, holding back only from the first place where a pattern might be starting
//! (see `detect.rs`); a stream's held text is flushed when the gateway says that stream ended. A non-streamed body's
//! texts are redacted whole. Events that repeat whole texts (the Responses API's `*.done`, `response.completed`) are
//! rewritten by the gateway to what was sent; this plugin also redacts them whole, in case they hold text that was
//! never streamed. Capabilities: `trace`.

pub mod detect;
pub mod redact;

use std::collections::HashMap;

use detect::{KINDS, Kind};
use redact::{Allow, Blocked, Mode, Policy, Stream};
use serde::Deserialize;
use serde_json::Value;
use weir_sdk::{Chunk, ChunkDecision, Plugin, PluginError, Request, RequestDecision, TextStream};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Redact requests (default true).
    #[serde(default = "yes")]
    requests: bool,
    /// Redact answers (default true).
    #[serde(default = "yes")]
    responses: bool,
    /// The mode for kinds not in `modes` (default `mask`).
    #[serde(default = "mask")]
    default: Mode,
    /// Per kind: `email`, `phone`, `credit_card`, `iban`, `ipv4`, `secret`.
    #[serde(default)]
    modes: HashMap<String, Mode>,
    /// Values that are not personal data and are never redacted: exact (`noreply@anthropic.com`) or with one `*` at
    /// the start or end (`*@example.com`, `10.*`); case-insensitive. Default: none.
    #[serde(default)]
    allow: Vec<String>,
    /// Which parts of a request are scanned: `all` (the default: every text field) or `conversation` (the messages
    /// of users, assistants and tools; not the system prompt, `instructions`, or system/developer messages, which
    /// an application or an agent writes, not its user). Answers are always scanned.
    #[serde(default)]
    scope: Scope,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    #[default]
    All,
    Conversation,
}

fn yes() -> bool {
    true
}

fn mask() -> Mode {
    Mode::Mask
}

impl Config {
    fn modes(&self) -> Result<HashMap<Kind, Mode>, String> {
        if let Some(bad) = self.modes.keys().find(|k| !KINDS.iter().any(|kind| kind.name() == k.as_str())) {
            let names: Vec<&str> = KINDS.iter().map(|k| k.name()).collect();
            return Err(format!("config: modes.{bad}: unknown kind (known: {})", names.join(", ")));
        }
        Ok(KINDS.iter().map(|&k| (k, self.modes.get(k.name()).copied().unwrap_or(self.default))).collect())
    }

    fn allow(&self) -> Result<Vec<Allow>, String> {
        self.allow.iter().map(|p| Allow::parse(p).map_err(|e| format!("config: allow: {e}"))).collect()
    }
}

/// Top-level request fields an application or agent writes (with `scope = "conversation"`, not scanned).
const INSTRUCTION_KEYS: &[&str] = &["system", "instructions", "tools"];
/// Message roles an application or agent writes.
const INSTRUCTION_ROLES: &[&str] = &["system", "developer"];

/// Redacts the request body within `scope`. Returns whether anything changed.
fn redact_request(policy: &Policy, scope: Scope, body: &mut Value) -> Result<bool, Blocked> {
    let Value::Object(map) = body else { return redact_json(policy, body) };
    if scope == Scope::All {
        return redact_json(policy, body);
    }
    let mut changed = false;
    for (k, v) in map.iter_mut() {
        if INSTRUCTION_KEYS.contains(&k.as_str()) {
            continue;
        }
        match (k.as_str(), v) {
            // Messages (chat, Anthropic) and input items (Responses): skip those of instruction roles.
            ("messages" | "input", Value::Array(items)) => {
                for item in items {
                    let role = item.get("role").and_then(Value::as_str).unwrap_or("");
                    if !INSTRUCTION_ROLES.contains(&role) {
                        changed |= match item {
                            Value::String(s) => redact_string(policy, s)?,
                            _ => redact_json(policy, item)?,
                        };
                    }
                }
            }
            (k, Value::String(s)) if TEXT_KEYS.contains(&k) => changed |= redact_string(policy, s)?,
            (_, v) => changed |= redact_json(policy, v)?,
        }
    }
    Ok(changed)
}

/// Keys whose string values are text a person or a model wrote (in requests and answers of both families).
const TEXT_KEYS: &[&str] =
    &["content", "text", "input", "instructions", "system", "prompt", "delta", "arguments", "refusal", "partial_json"];

/// Redacts every text string in a JSON value. Returns whether anything changed.
fn redact_json(policy: &Policy, v: &mut Value) -> Result<bool, Blocked> {
    let mut changed = false;
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                changed |= match v {
                    Value::String(s) if TEXT_KEYS.contains(&k.as_str()) => redact_string(policy, s)?,
                    _ => redact_json(policy, v)?,
                };
            }
        }
        // Arrays of plain strings sit under a text key (`"input": ["…", "…"]`).
        Value::Array(items) => {
            for item in items {
                changed |= match item {
                    Value::String(s) => redact_string(policy, s)?,
                    _ => redact_json(policy, item)?,
                };
            }
        }
        _ => {}
    }
    Ok(changed)
}

fn redact_string(policy: &Policy, s: &mut String) -> Result<bool, Blocked> {
    Ok(match policy.text(s)? {
        Some(new) => {
            *s = new;
            true
        }
        None => false,
    })
}

#[derive(Default)]
pub struct Redact {
    /// This request's policy (set by `on-request`).
    policy: Option<Policy>,
    /// One redactor per stream of text (choice, part, kind): streams never mix.
    streams: Vec<(TextStream, Stream)>,
    /// A blocked finding in text released by `flush`: the next event stops the answer.
    blocked: Option<Kind>,
}

fn blocked_answer(kind: Kind) -> ChunkDecision {
    weir_sdk::trace::set_attribute("blocked", kind.name());
    ChunkDecision::Abort(format!("the answer contained {}, which this gateway's policy blocks", kind.describe()))
}

/// The redactor of stream `s`.
fn stream_of(streams: &mut Vec<(TextStream, Stream)>, s: TextStream) -> &mut Stream {
    match streams.iter().position(|(k, _)| *k == s) {
        Some(i) => &mut streams[i].1,
        None => {
            streams.push((s, Stream::default()));
            &mut streams.last_mut().expect("just pushed").1
        }
    }
}

/// Events that repeat whole texts (Responses summary events).
fn repeats_whole_text(chunk: &Chunk) -> bool {
    chunk.event.as_deref().is_some_and(|e| e.ends_with(".done") || e.ends_with(".completed"))
}

impl Plugin for Redact {
    type Config = Config;
    /// Rewrites the answer; nothing to do once it ended.
    const HOOKS: weir_sdk::Hooks = weir_sdk::Hooks::CHUNKS;
    // Everything it keeps per request is in `self` (reset at `on-request`); across requests only its config.
    const REUSE: weir_sdk::Reuse = weir_sdk::Reuse::Always;

    fn check(config: &Config) -> Result<(), PluginError> {
        config.modes().map_err(weir_sdk::error)?;
        config.allow().map(|_| ()).map_err(weir_sdk::error)
    }

    fn on_request(&mut self, req: &Request) -> Result<RequestDecision, PluginError> {
        let config = weir_sdk::config::<Self>();
        if req.is_model_listing() {
            return Ok(RequestDecision::Continue);
        }
        let modes = config.modes().map_err(weir_sdk::error)?;
        let allow = config.allow().map_err(weir_sdk::error)?;
        let policy = Policy::new(modes, &req.id(), allow);
        let mut decision = RequestDecision::Continue;
        if config.requests {
            let mut body: Value = serde_json::from_slice(&req.body()).map_err(|e| weir_sdk::error(e.to_string()))?;
            match redact_request(&policy, config.scope, &mut body) {
                Err(Blocked(kind)) => {
                    weir_sdk::trace::set_attribute("blocked", kind.name());
                    let msg = format!(
                        "the request contains {}, which this gateway's policy does not allow to be sent",
                        kind.describe()
                    );
                    return Ok(weir_sdk::reject(400, msg));
                }
                Ok(true) => {
                    weir_sdk::trace::set_attribute("request", "redacted");
                    let mut changes = weir_sdk::changes();
                    changes.body = Some(serde_json::to_vec(&body).map_err(|e| weir_sdk::error(e.to_string()))?);
                    decision = RequestDecision::ContinueWith(changes);
                }
                Ok(false) => {}
            }
        }
        if config.responses {
            self.policy = Some(policy);
        }
        Ok(decision)
    }

    fn on_chunk(&mut self, chunk: &Chunk) -> Result<ChunkDecision, PluginError> {
        let Some(policy) = &self.policy else { return Ok(ChunkDecision::Pass) };
        if let Some(kind) = self.blocked {
            return Ok(blocked_answer(kind));
        }
        if chunk.whole_body {
            // Every text of a whole answer, redacted whole.
            let mut out = Vec::with_capacity(chunk.texts.len());
            let mut changed = false;
            for p in &chunk.texts {
                match policy.text(&p.text) {
                    Err(Blocked(kind)) => return Ok(blocked_answer(kind)),
                    Ok(Some(t)) => {
                        changed = true;
                        out.push(t);
                    }
                    Ok(None) => out.push(p.text.clone()),
                }
            }
            return Ok(if changed { ChunkDecision::ReplaceTexts(out) } else { ChunkDecision::Pass });
        }
        if !chunk.texts.is_empty() {
            // Each piece through its own stream's redactor; a piece whose text is all held is sent empty (and the
            // event is held when all of its text is).
            let mut out = Vec::with_capacity(chunk.texts.len());
            let mut same = true;
            for p in &chunk.texts {
                let s = stream_of(&mut self.streams, p.stream);
                let was_holding = s.holding();
                let sent = match s.push(policy, &p.text) {
                    Err(Blocked(kind)) => return Ok(blocked_answer(kind)),
                    Ok(sent) => sent,
                };
                same &= !was_holding && !s.holding() && sent == p.text;
                out.push(sent);
            }
            return Ok(if same {
                ChunkDecision::Pass
            } else if out.iter().all(String::is_empty) {
                ChunkDecision::Hold
            } else {
                ChunkDecision::ReplaceTexts(out)
            });
        }
        if !repeats_whole_text(chunk) || !chunk.data.starts_with('{') {
            return Ok(ChunkDecision::Pass);
        }
        let mut v: Value = serde_json::from_str(&chunk.data).map_err(|e| weir_sdk::error(e.to_string()))?;
        Ok(match redact_json(policy, &mut v) {
            Err(Blocked(kind)) => blocked_answer(kind),
            Ok(true) => ChunkDecision::ReplaceData(v.to_string()),
            Ok(false) => ChunkDecision::Pass,
        })
    }

    fn flush(&mut self, stream: TextStream) -> Result<Option<String>, PluginError> {
        let Some(policy) = &self.policy else { return Ok(None) };
        match stream_of(&mut self.streams, stream).finish(policy) {
            Ok(rest) => Ok(Some(rest).filter(|r| !r.is_empty())),
            Err(Blocked(kind)) => {
                self.blocked = Some(kind);
                Ok(None)
            }
        }
    }
}

weir_sdk::export!(Redact);
