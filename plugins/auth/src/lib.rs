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
//! holds the same record as JSON, and `revoked/<key id>` (any value) revokes a key of either kind (the id as one
//! part of a kv key, `weir_sdk::keys`: `/`, `%` and control characters escaped). Key ids and team names are 1 to 128
//! bytes without control characters, spaces allowed; a config that breaks this is refused at load, an issued record
//! that does when it is looked up (the request gets a 500 naming the record). When `kv` cannot be reached, auth fails
//! closed: 503, nothing is forwarded.
//! Capabilities: `kv`, `trace`, `clock`.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use weir_sdk::{ApiFamily, ChangesExt, Plugin, PluginError, Principal, Request, RequestDecision};

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

impl Key {
    /// Whether the id and team can name counters and principals (`weir_sdk::keys::check_name`).
    fn check_names(&self) -> Result<(), String> {
        weir_sdk::keys::check_name("key id", &self.id)?;
        match &self.team {
            Some(team) => weir_sdk::keys::check_name(&format!("key `{}`: team", self.id), team),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    keys: Vec<Key>,
}

#[derive(Default)]
pub struct Auth;

/// `sha256:<hex>` of a key.
pub fn key_hash(key: &str) -> String {
    format!("sha256:{}", weir_sdk::util::hex(&Sha256::digest(key.as_bytes())))
}

fn presented_key(req: &Request) -> Option<String> {
    let bearer = req.header("authorization").and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim().to_string())
    });
    bearer.or_else(|| req.header("x-api-key").map(|k| k.trim().to_string())).filter(|k| !k.is_empty())
}

/// Why a key could not be looked up.
enum Lookup {
    /// The key store (kv) cannot be reached: fail closed.
    Unavailable(String),
    Failed(PluginError),
}

fn find(config: &Config, hash: &str) -> Result<Option<Key>, Lookup> {
    if let Some(k) = config.keys.iter().find(|k| k.hash.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(hash))) {
        return Ok(Some(k.clone()));
    }
    let hex = &hash["sha256:".len()..];
    match weir_sdk::kv::get(&format!("keys/{hex}")) {
        Err(e) => Err(Lookup::Unavailable(weir_sdk::kv::describe(&e))),
        Ok(None) => Ok(None),
        Ok(Some(raw)) => {
            let failed = |e: String| Lookup::Failed(weir_sdk::error(format!("kv record keys/{}…: {e}", &hex[..8])));
            let key: Key = serde_json::from_slice(&raw).map_err(|e| failed(e.to_string()))?;
            key.check_names().map_err(failed)?;
            Ok(Some(key))
        }
    }
}

impl Plugin for Auth {
    type Config = Config;
    /// Only decides on requests.
    const HOOKS: weir_sdk::Hooks = weir_sdk::Hooks::NONE;
    // Everything it keeps per request is in `self` (reset at `on-request`); across requests only its config.
    const REUSE: weir_sdk::Reuse = weir_sdk::Reuse::Always;

    fn check(config: &Config) -> Result<(), PluginError> {
        for k in &config.keys {
            k.check_names().map_err(weir_sdk::error)?;
            match &k.hash {
                Some(h) if h.len() == "sha256:".len() + 64 && h.starts_with("sha256:") => {}
                _ => return Err(weir_sdk::error(format!("key `{}`: `hash` must be \"sha256:<64 hex digits>\"", k.id))),
            }
            if let Some(e) = &k.expires
                && weir_sdk::util::parse_utc(e).is_none()
            {
                return Err(weir_sdk::error(format!("key `{}`: `expires = {e:?}` is not a date", k.id)));
            }
        }
        Ok(())
    }

    fn on_request(&mut self, req: &Request) -> Result<RequestDecision, PluginError> {
        decide(weir_sdk::config::<Self>(), req)
    }
}

fn decide(config: &Config, req: &Request) -> Result<RequestDecision, PluginError> {
    let deny = |status, verdict: &str, message: String| {
        weir_sdk::trace::set_attribute("verdict", verdict);
        Ok(weir_sdk::reject(status, message))
    };
    let unavailable = |why: String| {
        weir_sdk::trace::set_attribute("verdict", "store_unavailable");
        weir_sdk::trace::set_attribute("store_error", &why);
        Ok(weir_sdk::reject(503, "the gateway cannot check API keys right now (key store unavailable); retry later"))
    };
    let Some(presented) = presented_key(req) else {
        let how = match req.family() {
            ApiFamily::Openai => "`Authorization: Bearer <key>`",
            ApiFamily::Anthropic => "`x-api-key: <key>`",
        };
        return deny(401, "missing", format!("no API key: send your Weir virtual key as {how}"));
    };
    let key = match find(config, &key_hash(&presented)) {
        Ok(Some(key)) => key,
        Ok(None) => return deny(401, "unknown", "invalid API key: this gateway does not know it".into()),
        Err(Lookup::Unavailable(why)) => return unavailable(why),
        Err(Lookup::Failed(e)) => return Err(e),
    };
    let revoked = match weir_sdk::kv::get(&weir_sdk::keys::key(&["revoked", &key.id])) {
        Ok(r) => r.is_some(),
        Err(e) => return unavailable(weir_sdk::kv::describe(&e)),
    };
    if key.revoked || revoked {
        return deny(403, "revoked", format!("API key `{}` has been revoked", key.id));
    }
    if let Some(expires) = &key.expires {
        match weir_sdk::util::parse_utc(expires) {
            Some(t) if weir_sdk::clock::now_unix_ms() < t => {}
            Some(_) => return deny(403, "expired", format!("API key `{}` expired at {expires}", key.id)),
            None => return Err(weir_sdk::error(format!("key `{}`: `expires = {expires:?}` is not a date", key.id))),
        }
    }
    let model = req.model();
    if let Some(models) = &key.models
        && !weir_sdk::util::matches_any(models.iter().map(String::as_str), &model)
    {
        let list = models.join(", ");
        let msg = format!("API key `{}` may not use model `{model}` (allowed: {list})", key.id);
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
    use weir_sdk::{FakeRequest, KvError, testing};

    fn config() -> String {
        serde_json::json!({"keys": [
            {"id": "demo", "hash": key_hash("sk-weir-demo"), "team": "platform", "models": ["gpt-4o-mini", "claude-*"]},
            {"id": "old", "hash": key_hash("sk-old"), "expires": "2026-01-01"},
            {"id": "gone", "hash": key_hash("sk-gone"), "revoked": true},
        ]})
        .to_string()
    }

    fn request(model: &str, header: (&str, &str)) -> FakeRequest {
        let mut r = testing::request(model, b"{}");
        r.headers.push((header.0.into(), header.1.into()));
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
        testing::init::<Auth>(&config()).unwrap();
        testing::set_now_ms(1_795_305_600_000);
        match Auth.on_request(&request("claude-haiku-4-5", ("x-api-key", "sk-weir-demo")).view()).unwrap() {
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
        testing::init::<Auth>(&config()).unwrap();
        testing::set_now_ms(1_795_305_600_000);
        let bearer = |k: &str| ("authorization", format!("Bearer {k}"));
        let check =
            |model: &str, h: (&str, String)| status(Auth.on_request(&request(model, (h.0, &h.1)).view()).unwrap());
        assert_eq!(status(Auth.on_request(&testing::request("gpt-4o-mini", b"{}").view()).unwrap()), 401);
        assert_eq!(check("gpt-4o-mini", bearer("sk-nope")), 401);
        assert_eq!(check("gpt-4o-mini", bearer("sk-old")), 403);
        assert_eq!(check("gpt-4o-mini", bearer("sk-gone")), 403);
        assert_eq!(check("gpt-4o", bearer("sk-weir-demo")), 403);
        assert_eq!(check("gpt-4o-mini", bearer("sk-weir-demo")), 200);
        weir_sdk::kv::set("revoked/demo", b"1", None).unwrap();
        assert_eq!(check("gpt-4o-mini", bearer("sk-weir-demo")), 403);
    }

    #[test]
    fn keys_issued_in_kv() {
        testing::init::<Auth>(r#"{"keys": []}"#).unwrap();
        let hex = &key_hash("sk-runtime")["sha256:".len()..];
        weir_sdk::kv::set(&format!("keys/{hex}"), br#"{"id": "rt", "team": "ml"}"#, None).unwrap();
        let ok = request("m", ("authorization", "Bearer sk-runtime"));
        assert_eq!(status(Auth.on_request(&ok.view()).unwrap()), 200);
        assert_eq!(status(Auth.on_request(&request("m", ("authorization", "Bearer sk-other")).view()).unwrap()), 401);
    }

    #[test]
    fn an_unavailable_key_store_fails_closed() {
        testing::init::<Auth>(&config()).unwrap();
        testing::set_now_ms(1_795_305_600_000);
        testing::fail_kv(Some(KvError::Unavailable("connection refused".into())));
        let r = request("gpt-4o-mini", ("authorization", "Bearer sk-weir-demo"));
        assert_eq!(status(Auth.on_request(&r.view()).unwrap()), 503, "revocations cannot be checked: refuse");
        let unknown = request("gpt-4o-mini", ("authorization", "Bearer sk-issued-at-runtime"));
        assert_eq!(status(Auth.on_request(&unknown.view()).unwrap()), 503);
        testing::fail_kv(None);
        assert_eq!(status(Auth.on_request(&r.view()).unwrap()), 200);
    }

    #[test]
    fn init_refuses_a_bad_config() {
        let e = testing::init::<Auth>(r#"{"keys": [{"id": "x", "hash": "md5:abc"}]}"#).unwrap_err();
        assert!(e.message.contains("key `x`"), "{}", e.message);
        let e = testing::init::<Auth>(r#"{"kees": []}"#).unwrap_err();
        assert!(e.message.starts_with("config: unknown field `kees`"), "{}", e.message);
        let h = key_hash("k");
        let e = testing::init::<Auth>(&format!(r#"{{"keys": [{{"id": "a", "hash": "{h}", "team": "ML\nOps"}}]}}"#))
            .unwrap_err();
        assert!(e.message.contains("key `a`: team") && e.message.contains("control character"), "{}", e.message);
        let ok = format!(r#"{{"keys": [{{"id": "key one", "hash": "{h}", "team": "ML Ops"}}]}}"#);
        assert!(testing::init::<Auth>(&ok).is_ok(), "spaces are fine");
    }
}
