//! `allowlist`: refuses requests for models that are not on the configured list (403, in the client's API shape),
//! counts requests per model in `kv`, and marks allowed requests with a header and a trace attribute.
//!
//! Config: `models = ["gpt-4o-mini", "claude-*"]` (a trailing `*` matches a prefix).
//! Capabilities: `kv`, `trace`.

use serde::Deserialize;
use weir_sdk::{ChangesExt, Plugin, PluginError, Request, RequestDecision};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    models: Vec<String>,
}

#[derive(Default)]
pub struct Allowlist;

impl Plugin for Allowlist {
    type Config = Config;
    /// Only decides on requests.
    const HOOKS: weir_sdk::Hooks = weir_sdk::Hooks::NONE;
    // Everything it keeps per request is in `self` (reset at `on-request`); across requests only its config.
    const REUSE: weir_sdk::Reuse = weir_sdk::Reuse::Always;

    fn on_request(&mut self, req: &Request) -> Result<RequestDecision, PluginError> {
        let models = &weir_sdk::config::<Self>().models;
        let model = req.model();
        if !weir_sdk::util::matches_any(models.iter().map(String::as_str), &model) {
            weir_sdk::trace::set_attribute("verdict", "denied");
            return Ok(weir_sdk::reject(403, format!("model `{model}` is not allowed by this gateway's policy")));
        }
        if req.is_model_listing() {
            return Ok(RequestDecision::Continue);
        }
        // A counter, not a decision: a kv failure does not stop the request.
        let n = weir_sdk::kv::increment(&format!("requests/{model}"), 1, None).unwrap_or(-1);
        weir_sdk::trace::set_attribute("verdict", "allowed");
        Ok(RequestDecision::ContinueWith(
            weir_sdk::changes().header("x-weir-allowlist", "allowed").meta("allowlist.count", &n.to_string()),
        ))
    }
}

weir_sdk::export!(Allowlist);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing;

    #[test]
    fn allows_listed_models_and_counts() {
        testing::init::<Allowlist>(r#"{"models": ["gpt-4o-mini", "claude-*"]}"#).unwrap();
        let mut p = Allowlist;
        for model in ["gpt-4o-mini", "claude-haiku-4-5", "gpt-4o-mini"] {
            match p.on_request(&testing::request(model, b"{}").view()).unwrap() {
                RequestDecision::ContinueWith(c) => assert_eq!(c.set_headers[0].value, "allowed"),
                _ => panic!("{model} should be allowed"),
            }
        }
        assert_eq!(weir_sdk::kv::get("requests/gpt-4o-mini").unwrap().as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn rejects_others_with_403() {
        testing::init::<Allowlist>(r#"{"models": ["gpt-4o-mini"]}"#).unwrap();
        match Allowlist.on_request(&testing::request("gpt-4o", b"{}").view()).unwrap() {
            RequestDecision::Reject(r) => {
                assert_eq!(r.status, 403);
                assert!(r.message.contains("gpt-4o"));
            }
            _ => panic!("gpt-4o should be refused"),
        }
        assert_eq!(testing::attributes(), [("verdict".to_string(), "denied".to_string())]);
    }
}
