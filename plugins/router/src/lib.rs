//! `router`: model aliases and routing rules. A rule matches the requested model (and optionally the caller's team
//! or principal, request headers, or metadata set by earlier plugins) and turns the request into a ranked list of
//! upstream candidates, each with its own model name. The gateway then runs retries and failover over that list.
//!
//! `targets` share traffic by `weight` (a weighted random order, so the first choice splits traffic and the others
//! are failovers); `fallbacks` follow in the order given. The first matching rule wins; no match leaves the request
//! to the gateway's own `[[routes]]`. Candidates whose upstream speaks the other API family are skipped by the
//! gateway, so one alias can name an OpenAI and an Anthropic model and serve both APIs.
//! Capabilities: `trace`.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};

use serde::Deserialize;
use weir_sdk::util::matches;
use weir_sdk::{ChangesExt, Plugin, PluginError, Request, RequestDecision, RouteTarget};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    upstream: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    /// For traces and logs; defaults to the rule's position.
    #[serde(default)]
    name: Option<String>,
    /// The requested model (`*` and trailing-`*` patterns).
    model: String,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    principal: Option<String>,
    /// Request headers (lower-case names) and the patterns their values must match.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Metadata from earlier plugins and the patterns their values must match.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    targets: Vec<Target>,
    #[serde(default)]
    fallbacks: Vec<Target>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    rules: Vec<Rule>,
}

#[derive(Default)]
pub struct Router;

impl Rule {
    /// Whether the rule applies (`model` and `principal` read once per request, the rest only when a rule asks).
    fn applies(&self, req: &Request, model: &str, principal: Option<&weir_sdk::Principal>) -> bool {
        matches(&self.model, model)
            && self
                .team
                .as_deref()
                .is_none_or(|t| principal.and_then(|p| p.team.as_deref()).is_some_and(|v| matches(t, v)))
            && self.principal.as_deref().is_none_or(|id| principal.is_some_and(|p| matches(id, &p.id)))
            && self.headers.iter().all(|(k, pat)| req.header(k).is_some_and(|v| matches(pat, &v)))
            && self.metadata.iter().all(|(k, pat)| req.meta(k).is_some_and(|v| matches(pat, &v)))
    }
}

/// A weighted random order of `targets` (Efraimidis–Spirakis: sort by `-ln(u) / w`); weight 0 goes last.
fn weighted_order(targets: &[Target], mut uniform: impl FnMut() -> f64) -> Vec<&Target> {
    let mut keyed: Vec<(f64, &Target)> = targets
        .iter()
        .map(|t| (if t.weight == 0 { f64::INFINITY } else { -(1.0 - uniform()).ln() / f64::from(t.weight) }, t))
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    keyed.into_iter().map(|(_, t)| t).collect()
}

/// A uniform number in [0, 1). std keys each `RandomState` from the platform's randomness (`wasi:random` in the
/// sandbox, which the gateway provides), so hashing a constant with a fresh one is a random draw. Only while `init`
/// makes no `HashMap`: keys drawn there would be in the pre-initialized snapshot, the same in every instance, and
/// every request would draw the same number (`test_weighted_split` fails then; docs/plugins.md, "Pre-initialization").
fn uniform() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl Plugin for Router {
    type Config = Config;
    /// Only decides on requests.
    const HOOKS: weir_sdk::Hooks = weir_sdk::Hooks::NONE;
    // Everything it keeps per request is in `self` (reset at `on-request`); across requests only its config.
    const REUSE: weir_sdk::Reuse = weir_sdk::Reuse::Always;

    fn check(config: &Config) -> Result<(), PluginError> {
        match config.rules.iter().position(|r| r.targets.is_empty()) {
            Some(i) => Err(weir_sdk::error(format!("config: rules[{i}] has no targets"))),
            None => Ok(()),
        }
    }

    fn on_request(&mut self, req: &Request) -> Result<RequestDecision, PluginError> {
        let config = weir_sdk::config::<Self>();
        let model = req.model();
        if req.is_model_listing() {
            // Asked with no model: the aliases this router serves, so that `GET /v1/models` lists them.
            if model.is_empty() {
                let mut names: Vec<&str> =
                    config.rules.iter().map(|r| r.model.as_str()).filter(|m| !m.contains('*')).collect();
                names.sort_unstable();
                names.dedup();
                return Ok(RequestDecision::ContinueWith(weir_sdk::changes().meta("listing.models", &names.join(","))));
            }
            return Ok(RequestDecision::Continue);
        }
        let needs_principal = config.rules.iter().any(|r| r.team.is_some() || r.principal.is_some());
        let principal = if needs_principal { req.principal() } else { None };
        let Some((i, rule)) = config.rules.iter().enumerate().find(|(_, r)| r.applies(req, &model, principal.as_ref()))
        else {
            return Ok(RequestDecision::Continue);
        };
        let name = rule.name.clone().unwrap_or_else(|| format!("rules[{i}]"));
        weir_sdk::trace::set_attribute("rule", &name);
        let ranked = weighted_order(&rule.targets, uniform).into_iter().chain(&rule.fallbacks);
        Ok(RequestDecision::Route(
            ranked.map(|t| RouteTarget { upstream: t.upstream.clone(), model: t.model.clone() }).collect(),
        ))
    }
}

weir_sdk::export!(Router);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::{FakeRequest, Principal, testing};

    const CONFIG: &str = r#"{"rules": [
        {"name": "research-fast", "model": "fast", "team": "research",
         "targets": [{"upstream": "big", "model": "gpt-4o"}]},
        {"name": "beta", "model": "fast", "headers": {"x-tier": "beta*"},
         "targets": [{"upstream": "beta", "model": "gpt-5-nano"}]},
        {"name": "fast", "model": "fast",
         "targets": [{"upstream": "a", "model": "gpt-4o-mini", "weight": 3}, {"upstream": "b", "model": "gpt-4o-mini"}],
         "fallbacks": [{"upstream": "claude", "model": "claude-haiku-4-5"}]}
    ]}"#;

    fn route(req: &FakeRequest) -> Option<Vec<String>> {
        match Router.on_request(&req.view()).unwrap() {
            RequestDecision::Route(t) => Some(t.into_iter().map(|t| t.upstream).collect()),
            RequestDecision::Continue => None,
            _ => panic!("unexpected decision"),
        }
    }

    #[test]
    fn a_model_listing_names_the_aliases_and_routes_nothing() {
        testing::init::<Router>(
            r#"{"rules": [
            {"model": "fast", "targets": [{"upstream": "a"}]},
            {"model": "smart", "targets": [{"upstream": "b"}]},
            {"model": "gpt-*", "targets": [{"upstream": "c"}]}
        ]}"#,
        )
        .unwrap();
        let mut r = testing::request("", b"{}");
        r.endpoint = "models".into();
        match Router.on_request(&r.view()).unwrap() {
            RequestDecision::ContinueWith(c) => {
                assert_eq!(c.metadata, vec![("listing.models".to_string(), "fast,smart".to_string())]);
            }
            _ => panic!("the aliases are named"),
        }
        r.model = "fast".into();
        assert!(matches!(Router.on_request(&r.view()).unwrap(), RequestDecision::Continue), "a listing routes nothing");
    }

    #[test]
    fn first_matching_rule_wins() {
        testing::init::<Router>(CONFIG).unwrap();
        assert_eq!(route(&testing::request("gpt-4o-mini", b"{}")), None, "no rule: the gateway's routes apply");
        let mut r = testing::request("fast", b"{}");
        r.principal = Some(Principal { id: "k1".into(), team: Some("research".into()) });
        assert_eq!(route(&r).unwrap(), ["big"]);
        let mut r = testing::request("fast", b"{}");
        r.headers.push(("x-tier".into(), "beta-2".into()));
        assert_eq!(route(&r).unwrap(), ["beta"]);
        let order = route(&testing::request("fast", b"{}")).unwrap();
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], "claude", "fallbacks come after every target");
    }

    #[test]
    fn init_refuses_a_rule_without_targets() {
        let e = testing::init::<Router>(r#"{"rules": [{"model": "fast", "targets": []}]}"#).unwrap_err();
        assert_eq!(e.message, "config: rules[0] has no targets");
    }

    #[test]
    fn weights_split_traffic() {
        let targets: Vec<Target> = serde_json::from_str(
            r#"[{"upstream": "a", "weight": 3}, {"upstream": "b", "weight": 1}, {"upstream": "off", "weight": 0}]"#,
        )
        .unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rng = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let n = 20_000;
        let firsts = (0..n).filter(|_| weighted_order(&targets, &mut rng)[0].upstream == "a").count();
        let share = firsts as f64 / n as f64;
        assert!((0.72..0.78).contains(&share), "a should come first 3 times in 4, got {share}");
        assert!((0..100).all(|_| weighted_order(&targets, &mut rng)[2].upstream == "off"), "weight 0 is last");
    }
}
