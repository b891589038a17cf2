//! `auth`: virtual keys. Each client sends its own gateway key (`Authorization: Bearer <key>`, or `x-api-key` on the
//! Anthropic API); this plugin finds it by its SHA-256, establishes the caller's principal (key id and team) for the
//! plugins after it, and refuses what the key may not do:
//!
//! - no key, or a key it does not know → 401;
//! - a revoked or expired key, or a model the key may not use → 403.
//!
//! Refusals are in the client's API error shape (the gateway renders them). Keys are never stored, logged or sent
//! on: the config and `kv` hold hashes only, and the gateway never forwards a client's credentials upstream.
//!
//! Keys come from the config (`keys = [...]`) or from `kv` (keys issued while the gateway runs): `keys/<sha256 hex>`
//! holds the same record as JSON, and `revoked/<key id>` (any value) revokes a key of either kind.
//! Capabilities: `config`, `kv`, `trace`.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use weir_sdk::{ApiFamily, ChangesExt, Plugin, PluginError, Principal, Request, RequestDecision, RequestExt};

/// One virtual key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Key {
    /// A stable id for logs, traces and budgets (never the key).
    pub id: String,
    /// `sha256:<hex>` of the key (`printf %s "$KEY" | sha256sum`). Only in the config; kv records are found by it.
    #[serde(default)]
    pub hash: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    /// Models the key may use (`*` and trailing-`*` patterns). Missing: all.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC).
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub revoked: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    keys: Vec<Key>,
}

thread_local! {
    // The config never changes under a running instance (a new config is a new plugin version), so it is parsed
    // once per instance: once per request by default, once per warm instance with `warm_instances`.
    static CONFIG: Result<Config, String> = serde_json::from_value(weir_sdk::config::json())
        .map_err(|e| format!("config: {e}"));
}

#[derive(Default)]
pub struct Auth;

/// `sha256:<hex>` of a key.
pub fn key_hash(key: &str) -> String {
    format!("sha256:{}", weir_sdk::util::hex(&Sha256::digest(key.as_bytes())))
}

fn presented_key(req: &Request) -> Option<&str> {
    let bearer = req.header("authorization").and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    bearer.or_else(|| req.header("x-api-key").map(str::trim)).filter(|k| !k.is_empty())
}

fn find(config: &Config, hash: &str) -> Result<Option<Key>, PluginError> {
    if let Some(k) = config.keys.iter().find(|k| k.hash.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(hash))) {
        return Ok(Some(k.clone()));
    }
    let hex = &hash["sha256:".len()..];
    match weir_sdk::kv::get(&format!("keys/{hex}")) {
        None => Ok(None),
        Some(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| weir_sdk::error(format!("kv record keys/{}…: {e}", &hex[..8]))),
    }
}

impl Plugin for Auth {
    fn on_request(&mut self, req: &Request) -> Result<RequestDecision, PluginError> {
        CONFIG.with(|c| match c {
            Ok(config) => decide(config, req),
            Err(e) => Err(weir_sdk::error(e.clone())),
        })
    }
}

fn decide(config: &Config, req: &Request) -> Result<RequestDecision, PluginError> {
    let deny = |status, verdict: &str, message: String| {
        weir_sdk::trace::set_attribute("verdict", verdict);
        Ok(weir_sdk::reject(status, message))
    };
    let Some(presented) = presented_key(req) else {
        let how = match req.family {
            ApiFamily::Openai => "`Authorization: Bearer <key>`",
            ApiFamily::Anthropic => "`x-api-key: <key>`",
        };
        return deny(401, "missing", format!("no API key: send your Weir virtual key as {how}"));
    };
    let Some(key) = find(config, &key_hash(presented))? else {
        return deny(401, "unknown", "invalid API key: this gateway does not know it".into());
    };
    if key.revoked || weir_sdk::kv::get(&format!("revoked/{}", key.id)).is_some() {
        return deny(403, "revoked", format!("API key `{}` has been revoked", key.id));
    }
    if let Some(expires) = &key.expires {
        match weir_sdk::util::parse_utc(expires) {
            Some(t) if weir_sdk::clock::now_unix_ms() < t => {}
            Some(_) => return deny(403, "expired", format!("API key `{}` expired at {expires}", key.id)),
            None => return Err(weir_sdk::error(format!("key `{}`: `expires = {expires:?}` is not a date", key.id))),
        }
    }
    if let Some(models) = &key.models
        && !weir_sdk::util::matches_any(models.iter().map(String::as_str), &req.model)
    {
        let list = models.join(", ");
        let msg = format!("API key `{}` may not use model `{}` (allowed: {list})", key.id, req.model);
        return deny(403, "model_denied", msg);
    }
    weir_sdk::trace::set_attribute("verdict", "ok");
    weir_sdk::trace::set_attribute("key_id", &key.id);
    let mut changes = weir_sdk::changes().meta("auth.key_id", &key.id);
    if let Some(team) = &key.team {
        changes = changes.meta("auth.team", team);
    }
    changes.principal = Some(Principal { id: key.id, team: key.team });
    Ok(RequestDecision::ContinueWith(changes))
}

weir_sdk::export!(Auth);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::{Header, testing};

    fn config() -> String {
        serde_json::json!({"keys": [
            {"id": "demo", "hash": key_hash("sk-weir-demo"), "team": "platform", "models": ["gpt-4o-mini", "claude-*"]},
            {"id": "old", "hash": key_hash("sk-old"), "expires": "2026-01-01"},
            {"id": "gone", "hash": key_hash("sk-gone"), "revoked": true},
        ]})
        .to_string()
    }

    fn request(model: &str, header: (&str, &str)) -> Request {
        let mut r = testing::request(model, b"{}");
        r.headers.push(Header { name: header.0.into(), value: header.1.into() });
        r
    }

    fn status(d: RequestDecision) -> u16 {
        match d {
            RequestDecision::Reject(r) => r.status,
            RequestDecision::ContinueWith(_) => 200,
            _ => panic!("unexpected decision"),
        }
    }

    #[test]
    fn known_key_sets_the_principal() {
        testing::reset(&config());
        testing::set_now_ms(1_795_305_600_000);
        match Auth.on_request(&request("claude-haiku-4-5", ("x-api-key", "sk-weir-demo"))).unwrap() {
            RequestDecision::ContinueWith(c) => {
                let p = c.principal.unwrap();
                assert_eq!((p.id.as_str(), p.team.as_deref()), ("demo", Some("platform")));
                assert!(c.set_headers.is_empty(), "nothing is sent upstream");
            }
            _ => panic!("the demo key is valid"),
        }
    }

    #[test]
    fn refusals() {
        testing::reset(&config());
        testing::set_now_ms(1_795_305_600_000);
        let bearer = |k: &str| ("authorization", format!("Bearer {k}"));
        let check = |model: &str, h: (&str, String)| status(Auth.on_request(&request(model, (h.0, &h.1))).unwrap());
        assert_eq!(status(Auth.on_request(&testing::request("gpt-4o-mini", b"{}")).unwrap()), 401);
        assert_eq!(check("gpt-4o-mini", bearer("sk-nope")), 401);
        assert_eq!(check("gpt-4o-mini", bearer("sk-old")), 403);
        assert_eq!(check("gpt-4o-mini", bearer("sk-gone")), 403);
        assert_eq!(check("gpt-4o", bearer("sk-weir-demo")), 403);
        assert_eq!(check("gpt-4o-mini", bearer("sk-weir-demo")), 200);
        weir_sdk::kv::set("revoked/demo", b"1", None);
        assert_eq!(check("gpt-4o-mini", bearer("sk-weir-demo")), 403);
    }

    #[test]
    fn keys_issued_in_kv() {
        testing::reset(r#"{"keys": []}"#);
        let hex = &key_hash("sk-runtime")["sha256:".len()..];
        weir_sdk::kv::set(&format!("keys/{hex}"), br#"{"id": "rt", "team": "ml"}"#, None);
        assert_eq!(status(Auth.on_request(&request("m", ("authorization", "Bearer sk-runtime"))).unwrap()), 200);
        assert_eq!(status(Auth.on_request(&request("m", ("authorization", "Bearer sk-other"))).unwrap()), 401);
    }
}
