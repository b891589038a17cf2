//! `cache`: an exact-match response cache. A request that asks exactly what an earlier one of the same tenant asked
//! is answered with the earlier answer, without calling an upstream — whole or streamed, whichever the client asks
//! now (the gateway converts: contract `reply`).
//!
//! **Key.** The host's request digest (SHA-256 of the endpoint and the canonical JSON body without `stream` and
//! `stream_options`: key order, whitespace and number spelling do not matter, the model does) under the tenant's
//! scope (`scope = "principal"`, the default: the caller's key id; `"team"`; `"global"`, only if configured), with
//! the headers that change what Anthropic answers (`anthropic-version`, `anthropic-beta`), and the request headers
//! named in `vary` (headers a later plugin routes by). A request without a principal is not cached unless
//! `anonymous = true`.
//!
//! **Never cached:** errors; answers that were cut, failed or stopped by the output limit (unless
//! `length_truncated = true`); Responses requests that keep server state (`store` not false, `previous_response_id`,
//! `conversation`); answers that are sampled (`temperature` absent or above 0) unless the model matches `sampled`
//! (patterns; the operator accepts one sample for all); anything over its `kv_max_value` (1 MiB unless
//! set).
//!
//! **One upstream call for a burst.** A miss gives its key to `request.coalesce`: identical requests of the same
//! tenant that arrive while it runs wait for its answer (bounded by `plugin_runtime.coalesce_wait`) and get it as a
//! cached answer (`x-weir-coalesced: true`); if it fails or is cancelled, each goes on by itself.
//!
//! **Headers.** `Cache-Control: no-store` (neither look up nor store), `no-cache` (do not look up; store),
//! `max-age=N` (accept a stored answer at most N seconds old); `x-weir-cache-ttl: N` (keep this answer N seconds,
//! at most `max_ttl`). The response says `x-weir-cache: HIT` (with `age`), `MISS` (looked up; the answer will be
//! stored if it may), `STORED` (not looked up, `no-cache`; will be stored) or `BYPASS` (not cacheable, and why in
//! `x-weir-cache-reason`).
//!
//! **Stored value:** `{"v": 1, "at": unix ms, "status": 200, "whole": "<body>"}` or `{…, "events": [[event, data],
//! …]}` with the kv TTL; a value that does not read back is a miss and is deleted. A kv that is down is a bypass
//! (`x-weir-cache: BYPASS`, reason `kv-unavailable`): the request goes on.
//! **Counted** (`metrics`: `weir_plugin_events_total{plugin="cache", event}`): `hit`, `miss`, `no_cache`, `store`,
//! `stored_bytes`, `store_failed`, `discarded` (corrupt or old entries), `bypass.<reason>`.
//! Capabilities: `config`, `kv`, `clock`, `answer`, `metrics` (and `trace` for `weir.plugin.cache.*` attributes).

use serde::Deserialize;
use serde_json::{Value, json};
use weir_sdk::answer::AnswerState;
use weir_sdk::{AnswerBody, ChangesExt, Plugin, PluginError, Request, RequestDecision, SseEvent, Summary};

const KEY_META: &str = "cache.key";
const TTL_META: &str = "cache.ttl";
const FORMAT: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum Scope {
    #[default]
    Principal,
    Team,
    Global,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seconds an answer is kept (default 300).
    #[serde(default = "default_ttl")]
    ttl: u64,
    /// The most `x-weir-cache-ttl` may ask (default one day).
    #[serde(default = "default_max_ttl")]
    max_ttl: u64,
    #[serde(default)]
    scope: Scope,
    /// Cache requests that no plugin gave a principal (they share one scope: only with care).
    #[serde(default)]
    anonymous: bool,
    /// Models whose sampled answers (temperature absent or above 0) may be cached.
    #[serde(default)]
    sampled: Vec<String>,
    /// Cache answers stopped by the output limit.
    #[serde(default)]
    length_truncated: bool,
    /// Request headers whose values are part of the key, like HTTP's `Vary` (names, or prefixes ending in `*`;
    /// case-insensitive): headers a later plugin routes by, or that change the upstream's answer.
    #[serde(default)]
    vary: Vec<String>,
}

fn default_ttl() -> u64 {
    300
}
fn default_max_ttl() -> u64 {
    86_400
}

#[derive(Default)]
pub struct Cache;

/// Why a request is not cacheable, for `x-weir-cache-reason`.
fn bypass(req: &Request, why: &str) -> Result<RequestDecision, PluginError> {
    req.add_response_header("x-weir-cache", "BYPASS");
    req.add_response_header("x-weir-cache-reason", why);
    weir_sdk::trace::set_attribute("result", "bypass");
    weir_sdk::metrics::count(&format!("bypass.{why}"), 1);
    Ok(RequestDecision::Continue)
}

/// `Cache-Control` directives of the request.
#[derive(Default, Debug, PartialEq)]
struct Control {
    no_store: bool,
    no_cache: bool,
    max_age: Option<u64>,
}

fn control(header: Option<String>) -> Control {
    let mut c = Control::default();
    for d in header.unwrap_or_default().split(',') {
        let d = d.trim().to_ascii_lowercase();
        match d.split_once('=') {
            None if d == "no-store" => c.no_store = true,
            None if d == "no-cache" => c.no_cache = true,
            Some(("max-age", n)) => c.max_age = n.trim().trim_matches('"').parse().ok(),
            _ => {}
        }
    }
    c
}

/// Why the request asks for an answer that must not be reused, if it does.
fn uncacheable(req: &Request, config: &Config) -> Option<&'static str> {
    let endpoint = req.endpoint();
    if !matches!(endpoint.as_str(), "chat.completions" | "responses" | "messages") {
        return Some("endpoint");
    }
    if endpoint == "responses" {
        let store = req.json("/store");
        if store != Some(Value::Bool(false)) {
            return Some("responses-store");
        }
        if req.json("/previous_response_id").is_some_and(|v| !v.is_null())
            || req.json("/conversation").is_some_and(|v| !v.is_null())
        {
            return Some("responses-state");
        }
    }
    let sampled = match req.json("/temperature") {
        Some(Value::Number(t)) => t.as_f64().is_none_or(|t| t > 0.0),
        _ => true,
    };
    if sampled && !weir_sdk::util::matches_any(config.sampled.iter().map(String::as_str), &req.model()) {
        return Some("sampled");
    }
    None
}

/// The kv key of a request's answer (see the module doc), or `None` when it has no scope.
fn key(req: &Request, config: &Config) -> Option<String> {
    let principal = req.principal();
    let (kind, id) = match (config.scope, &principal) {
        (Scope::Global, _) => ("global", String::new()),
        (Scope::Team, Some(p)) => ("team", p.team.clone().unwrap_or_else(|| p.id.clone())),
        (Scope::Principal, Some(p)) => ("principal", p.id.clone()),
        (_, None) if config.anonymous => ("anonymous", String::new()),
        (_, None) => return None,
    };
    let version = req.header("anthropic-version").unwrap_or_default();
    let beta = req.header("anthropic-beta").unwrap_or_default();
    let digest = req.digest();
    let mut parts = vec!["answer", kind, &id, &digest, &version, &beta];
    // `vary` headers, sorted by name, as `name: value` parts after the fixed ones.
    let mut varied: Vec<String> = if config.vary.is_empty() {
        Vec::new()
    } else {
        req.headers()
            .into_iter()
            .filter(|h| {
                weir_sdk::util::matches_any(config.vary.iter().map(String::as_str), &h.name.to_ascii_lowercase())
            })
            .map(|h| format!("{}: {}", h.name.to_ascii_lowercase(), h.value))
            .collect()
    };
    varied.sort();
    parts.extend(varied.iter().map(String::as_str));
    Some(weir_sdk::keys::key(&parts))
}

/// A stored answer, as the client got it.
struct Stored {
    at: u64,
    status: u16,
    body: AnswerBody,
}

fn decode(raw: &[u8]) -> Option<Stored> {
    let v: Value = serde_json::from_slice(raw).ok()?;
    if v.get("v")?.as_u64()? != FORMAT {
        return None;
    }
    let body = if let Some(w) = v.get("whole") {
        AnswerBody::Whole(w.as_str()?.as_bytes().to_vec())
    } else {
        let events = v.get("events")?.as_array()?;
        AnswerBody::Events(
            events
                .iter()
                .map(|e| {
                    let e = e.as_array()?;
                    Some(SseEvent {
                        event: e.first()?.as_str().map(str::to_string),
                        data: e.get(1)?.as_str()?.to_string(),
                    })
                })
                .collect::<Option<_>>()?,
        )
    };
    Some(Stored { at: v.get("at")?.as_u64()?, status: v.get("status")?.as_u64()? as u16, body })
}

fn encode(at: u64, status: u16, body: &AnswerBody) -> Vec<u8> {
    let mut v = json!({"v": FORMAT, "at": at, "status": status});
    match body {
        AnswerBody::Whole(b) => v["whole"] = json!(String::from_utf8_lossy(b)),
        AnswerBody::Events(es) => v["events"] = es.iter().map(|e| json!([e.event, e.data])).collect(),
    }
    v.to_string().into_bytes()
}

/// Whether an answer was stopped by the output limit (chat `length`, Anthropic `max_tokens`, Responses `incomplete`).
fn truncated(body: &AnswerBody) -> bool {
    let cut = |v: &Value| {
        v.pointer("/choices")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["finish_reason"] == "length"))
            || v.get("stop_reason").is_some_and(|s| s == "max_tokens" || s == "model_context_window_exceeded")
            || v.pointer("/delta/stop_reason").is_some_and(|s| s == "max_tokens")
            || v.get("status").is_some_and(|s| s == "incomplete")
            || v.pointer("/response/status").is_some_and(|s| s == "incomplete")
    };
    match body {
        AnswerBody::Whole(b) => serde_json::from_slice::<Value>(b).is_ok_and(|v| cut(&v)),
        AnswerBody::Events(es) => es.iter().any(|e| serde_json::from_str::<Value>(&e.data).is_ok_and(|v| cut(&v))),
    }
}

impl Plugin for Cache {
    type Config = Config;
    const HOOKS: weir_sdk::Hooks = weir_sdk::Hooks::COMPLETE;
    // Nothing outlives a request in the instance: answers live in kv, under the tenant's key.
    const REUSE: weir_sdk::Reuse = weir_sdk::Reuse::Always;

    fn check(c: &Config) -> Result<(), PluginError> {
        if c.ttl == 0 || c.ttl > c.max_ttl {
            return Err(weir_sdk::error("config: `ttl` must be between 1 and `max_ttl` seconds"));
        }
        Ok(())
    }

    fn on_request(&mut self, req: &Request) -> Result<RequestDecision, PluginError> {
        if req.is_model_listing() {
            return Ok(RequestDecision::Continue);
        }
        let config = weir_sdk::config::<Self>();
        let cc = control(req.header("cache-control"));
        if cc.no_store {
            return bypass(req, "no-store");
        }
        if let Some(why) = uncacheable(req, config) {
            return bypass(req, why);
        }
        let Some(key) = key(req, config) else { return bypass(req, "no-principal") };
        let ttl = req
            .header("x-weir-cache-ttl")
            .and_then(|t| t.trim().parse::<u64>().ok())
            .map_or(config.ttl, |t| t.clamp(1, config.max_ttl));
        let now = weir_sdk::clock::now_unix_ms();
        if !cc.no_cache {
            match weir_sdk::kv::get(&key) {
                Err(_) => return bypass(req, "kv-unavailable"),
                Ok(None) => {}
                Ok(Some(raw)) => match decode(&raw) {
                    None => {
                        // Corrupt, or of another format: a miss, and gone.
                        let _ = weir_sdk::kv::delete(&key);
                        weir_sdk::trace::add_event("discarded");
                        weir_sdk::metrics::count("discarded", 1);
                    }
                    Some(s) => {
                        let age = now.saturating_sub(s.at) / 1000;
                        if cc.max_age.is_none_or(|m| age <= m) {
                            weir_sdk::trace::set_attribute("result", "hit");
                            weir_sdk::metrics::count("hit", 1);
                            let age = age.to_string();
                            let headers = [("x-weir-cache", "HIT"), ("age", age.as_str())];
                            let mut d = weir_sdk::reply(s.body, &headers, true);
                            if let RequestDecision::Reply(r) = &mut d {
                                r.status = s.status;
                            }
                            return Ok(d);
                        }
                    }
                },
            }
        }
        let state = if cc.no_cache { "STORED" } else { "MISS" };
        req.add_response_header("x-weir-cache", state);
        // Identical requests of this tenant arriving while this one runs wait for its answer: one upstream call.
        req.coalesce(&key);
        weir_sdk::trace::set_attribute("result", if cc.no_cache { "stored" } else { "miss" });
        weir_sdk::metrics::count(if cc.no_cache { "no_cache" } else { "miss" }, 1);
        Ok(RequestDecision::ContinueWith(weir_sdk::changes().meta(KEY_META, &key).meta(TTL_META, &ttl.to_string())))
    }

    fn on_complete(&mut self, s: &Summary) {
        let meta = |k: &str| s.metadata.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let Some(key) = meta(KEY_META) else { return };
        let ttl: u64 = meta(TTL_META).and_then(|t| t.parse().ok()).unwrap_or(300);
        if s.outcome != "ok" || s.status != 200 {
            return;
        }
        let Some(a) = weir_sdk::answer::get() else { return };
        if a.state != AnswerState::Complete || a.status != 200 {
            return;
        }
        if truncated(&a.body) && !weir_sdk::config::<Self>().length_truncated {
            weir_sdk::trace::set_attribute("stored", "no: cut by the output limit");
            return;
        }
        let value = encode(weir_sdk::clock::now_unix_ms(), a.status, &a.body);
        match weir_sdk::kv::set(key, &value, Some(ttl.saturating_mul(1000))) {
            Ok(()) => {
                weir_sdk::trace::set_attribute("stored", "yes");
                weir_sdk::metrics::count("store", 1);
                weir_sdk::metrics::count("stored_bytes", value.len() as u64);
            }
            Err(e) => {
                weir_sdk::trace::set_attribute("stored", &format!("no: {}", weir_sdk::kv::describe(&e)));
                weir_sdk::metrics::count("store_failed", 1);
            }
        }
    }
}

weir_sdk::export!(Cache);

#[cfg(test)]
mod tests;
