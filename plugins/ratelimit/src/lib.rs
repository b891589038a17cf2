//! `ratelimit`: requests per minute and tokens per minute, per key and per team (from the principal an auth plugin
//! set), held across replicas when the gateway's kv is shared (`[kv] backend = "redis"`).
//!
//! Config: `limits = [{ key = "…" | team = "…", rpm = 60, tpm = 100000 }, …]` (`*` and trailing-`*` patterns; for
//! each scope the first entry that matches applies; `rpm` and `tpm` are each optional), `default_max_tokens`
//! (the output estimate for requests that set no `max_tokens`, default 1024), `fail_closed` (refuse with 503 when
//! the store cannot be reached; default false: let requests through, as most gateways' rate limiters do).
//!
//! **Algorithm: a sliding window over two one-minute counters.** A request adds its cost (1 request; its token
//! estimate) to this minute's counter with one atomic increment, reads the previous minute's, and counts
//! `previous × (the share of the previous minute still inside the last 60 s) + this minute's`. Over the limit → it
//! takes its cost back and is refused with 429, `retry-after` (seconds; the official SDKs wait that long and retry),
//! `retry-after-ms`, and `x-ratelimit-limit-*`, `x-ratelimit-remaining-*`, `x-ratelimit-reset-*` for requests and
//! tokens (OpenAI's header names). Atomic increments make the limit hold across concurrent requests and replicas;
//! the window is the usual two-counter approximation (exact for a steady rate, off by at most the previous minute's
//! unevenness). A compare-and-set algorithm such as GCRA would need a primitive `kv` does not have.
//!
//! Tokens are reserved at request time (prompt bytes / 4 + `max_tokens` or `default_max_tokens`) and settled to the
//! actual usage in `on-complete` (the counter and estimate travel in the request's metadata, so a fresh instance can
//! settle). A model listing (`GET /v1/models`) counts nothing.
//! Capabilities: `config`, `kv`, `trace`, `clock`.

use serde::Deserialize;
use weir_sdk::{ChangesExt, KvError, Plugin, PluginError, Principal, Request, RequestDecision, Summary};

const MINUTE_MS: u64 = 60_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    rpm: Option<u64>,
    #[serde(default)]
    tpm: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    limits: Vec<Limit>,
    #[serde(default = "default_max_tokens")]
    default_max_tokens: u64,
    #[serde(default)]
    fail_closed: bool,
    /// Count the tokens of answers served from a cache (outcome `cached`) against `tpm` (default false: a cached
    /// answer counts as a request, not as tokens).
    #[serde(default)]
    count_cached_tokens: bool,
}

fn default_max_tokens() -> u64 {
    1024
}

#[derive(Default)]
pub struct RateLimit;

/// What a request is counted against: (scope, id, limit).
fn applicable<'a>(config: &'a Config, p: &Principal) -> Vec<(&'static str, String, &'a Limit)> {
    let mut out = Vec::new();
    if let Some(l) = config.limits.iter().find(|l| l.key.as_deref().is_some_and(|k| weir_sdk::util::matches(k, &p.id)))
    {
        out.push(("key", p.id.clone(), l));
    }
    if let Some(team) = &p.team
        && let Some(l) =
            config.limits.iter().find(|l| l.team.as_deref().is_some_and(|t| weir_sdk::util::matches(t, team)))
    {
        out.push(("team", team.clone(), l));
    }
    out
}

/// One counter checked for this request.
struct Window {
    kind: &'static str,
    scope: &'static str,
    id: String,
    limit: u64,
    cost: i64,
    key: String,
}

/// The outcome of taking `cost` from a window: (fits, count before this request, retry after ms).
fn take(w: &Window, now: u64) -> Result<(bool, f64, u64), KvError> {
    let minute = now / MINUTE_MS;
    let after = weir_sdk::kv::increment(&w.key, w.cost, Some(2 * MINUTE_MS))?;
    let prev_key = weir_sdk::keys::key(&["rl", w.kind, w.scope, &w.id, &minute.saturating_sub(1).to_string()]);
    let prev = weir_sdk::kv::get(&prev_key)?
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0)
        .max(0) as f64;
    let into = (now % MINUTE_MS) as f64 / MINUTE_MS as f64;
    let current = (after - w.cost).max(0) as f64;
    let before = prev * (1.0 - into) + current;
    let limit = w.limit as f64;
    if before + w.cost as f64 <= limit {
        return Ok((true, before, 0));
    }
    // When would it fit? If this minute alone is full, at the next minute; else once enough of the previous
    // minute has slid out of the window.
    let to_next_minute = MINUTE_MS - now % MINUTE_MS;
    let wait = if current + w.cost as f64 > limit || prev <= 0.0 {
        to_next_minute
    } else {
        let needed_into = 1.0 - (limit - current - w.cost as f64) / prev;
        (((needed_into - into) * MINUTE_MS as f64).ceil() as u64).clamp(1, to_next_minute)
    };
    Ok((false, before, wait))
}

/// Tokens the request may use: `Request::token_estimate`, input and output together.
fn estimate(config: &Config, req: &Request) -> i64 {
    let t = req.token_estimate(config.default_max_tokens);
    t.input.saturating_add(t.output).min(i64::MAX as u64) as i64
}

/// Metadata under which the token reservation travels: `<estimate> <counter key> ...`.
const RESERVED_META: &str = "ratelimit.tokens";

impl Plugin for RateLimit {
    type Config = Config;
    /// Counts in on-complete; never looks at the answer.
    const HOOKS: weir_sdk::Hooks = weir_sdk::Hooks::COMPLETE;
    // Everything it keeps per request is in `self` (reset at `on-request`); across requests only its config.
    const REUSE: weir_sdk::Reuse = weir_sdk::Reuse::Always;

    fn check(c: &Config) -> Result<(), PluginError> {
        for (i, l) in c.limits.iter().enumerate() {
            if l.key.is_some() == l.team.is_some() {
                return Err(weir_sdk::error(format!("config: limits[{i}] needs exactly one of `key` and `team`")));
            }
            if l.rpm.is_none() && l.tpm.is_none() {
                return Err(weir_sdk::error(format!("config: limits[{i}] sets neither `rpm` nor `tpm`")));
            }
        }
        Ok(())
    }

    fn on_request(&mut self, req: &Request) -> Result<RequestDecision, PluginError> {
        let config = weir_sdk::config::<Self>();
        if req.is_model_listing() {
            return Ok(RequestDecision::Continue);
        }
        let Some(principal) = req.principal() else { return Ok(RequestDecision::Continue) };
        let now = weir_sdk::clock::now_unix_ms();
        let minute = now / MINUTE_MS;
        let tokens = estimate(config, req);
        let mut windows = Vec::new();
        for (scope, id, l) in applicable(config, &principal) {
            for (kind, limit, cost) in [("requests", l.rpm, 1), ("tokens", l.tpm, tokens)] {
                if let Some(limit) = limit {
                    let key = weir_sdk::keys::key(&["rl", kind, scope, &id, &minute.to_string()]);
                    windows.push(Window { kind, scope, id: id.clone(), limit, cost, key });
                }
            }
        }
        let mut taken: Vec<&Window> = Vec::new();
        let give_back = |taken: &[&Window]| {
            for w in taken {
                let _ = weir_sdk::kv::increment(&w.key, -w.cost, None);
            }
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        for w in &windows {
            let (fits, before, wait_ms) = match take(w, now) {
                Ok(r) => r,
                Err(e) => {
                    give_back(&taken);
                    weir_sdk::trace::set_attribute("store_error", &weir_sdk::kv::describe(&e));
                    if config.fail_closed {
                        return Ok(weir_sdk::reject(
                            503,
                            "the gateway cannot check rate limits right now; retry later",
                        ));
                    }
                    return Ok(RequestDecision::Continue);
                }
            };
            taken.push(w);
            let remaining = (w.limit as f64 - before - w.cost as f64).max(0.0) as u64;
            let reset_s = (MINUTE_MS - now % MINUTE_MS).div_ceil(1000);
            headers.push((format!("x-ratelimit-limit-{}", w.kind), w.limit.to_string()));
            headers.push((format!("x-ratelimit-remaining-{}", w.kind), remaining.to_string()));
            headers.push((format!("x-ratelimit-reset-{}", w.kind), format!("{reset_s}s")));
            if !fits {
                give_back(&taken);
                weir_sdk::trace::set_attribute("limited", &format!("{}/{}/{}", w.scope, w.id, w.kind));
                let retry_s = wait_ms.div_ceil(1000).max(1).to_string();
                let retry_ms = wait_ms.max(1).to_string();
                headers.push(("retry-after".into(), retry_s.clone()));
                headers.push(("retry-after-ms".into(), retry_ms));
                let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                let unit = if w.kind == "requests" { "requests" } else { "tokens" };
                let msg = format!(
                    "rate limit exceeded: {} `{}` may use {} {unit} per minute; retry in {retry_s}s",
                    w.scope, w.id, w.limit
                );
                return Ok(weir_sdk::reject_with_headers(429, msg, &h));
            }
        }
        let token_keys: Vec<String> = windows.iter().filter(|w| w.kind == "tokens").map(|w| w.key.clone()).collect();
        if token_keys.is_empty() {
            return Ok(RequestDecision::Continue);
        }
        let record = weir_sdk::keys::Reservation { amount: tokens, keys: token_keys };
        Ok(RequestDecision::ContinueWith(weir_sdk::changes().meta(RESERVED_META, &record.encode())))
    }

    fn on_complete(&mut self, s: &Summary) {
        // Settle the token reservation to what was used (on whatever instance this runs: it is in the metadata).
        let Some((_, record)) = s.metadata.iter().find(|(k, _)| k == RESERVED_META) else { return };
        let Some(weir_sdk::keys::Reservation { amount: est, keys }) = weir_sdk::keys::Reservation::decode(record)
        else {
            return;
        };
        let u = &s.usage;
        // An answer from a cache used no model tokens: it counts as a request only, unless the operator counts
        // its tokens too (`count_cached_tokens`).
        let cached = s.outcome == "cached" && !weir_sdk::config::<Self>().count_cached_tokens;
        let used = if cached {
            0
        } else {
            (u.input_tokens.unwrap_or(0) + u.output_tokens.unwrap_or(0)).min(i64::MAX as u64) as i64
        };
        if used != est {
            for key in &keys {
                let _ = weir_sdk::kv::increment(key, used - est, None);
            }
        }
    }
}

weir_sdk::export!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::{FakeRequest, testing};

    const CONFIG: &str = r#"{"limits": [
        {"key": "small", "rpm": 3},
        {"key": "tok", "tpm": 1000},
        {"team": "ml", "rpm": 5}
    ], "default_max_tokens": 100}"#;

    fn request(key: &str, team: &str, body: &[u8]) -> FakeRequest {
        let mut r = testing::request("m", body);
        r.principal = Some(Principal { id: key.into(), team: Some(team.into()) });
        r
    }

    fn status(d: &RequestDecision) -> u16 {
        match d {
            RequestDecision::Reject(r) => r.status,
            _ => 200,
        }
    }

    #[test]
    fn requests_per_minute_per_key_and_team_with_retry_after() {
        testing::init::<RateLimit>(CONFIG).unwrap();
        testing::set_now_ms(1_800_000_000_000 + 30_000);
        let small = request("small", "other", b"{}");
        let got: Vec<u16> = (0..5).map(|_| status(&RateLimit.on_request(&small.view()).unwrap())).collect();
        assert_eq!(got, [200, 200, 200, 429, 429]);
        match RateLimit.on_request(&small.view()).unwrap() {
            RequestDecision::Reject(r) => {
                let h = |n: &str| r.headers.iter().find(|h| h.name == n).map(|h| h.value.clone());
                assert_eq!(h("retry-after").as_deref(), Some("30"), "the minute ends in 30 s");
                assert_eq!(h("x-ratelimit-limit-requests").as_deref(), Some("3"));
                assert_eq!(h("x-ratelimit-remaining-requests").as_deref(), Some("0"));
                assert!(r.message.contains("3 requests per minute"), "{}", r.message);
            }
            _ => panic!("limited"),
        }
        // The team limit: two keys of team ml share 5.
        let (a, b) = (request("a", "ml", b"{}"), request("b", "ml", b"{}"));
        let got: Vec<u16> =
            (0..6).map(|i| status(&RateLimit.on_request(&if i % 2 == 0 { &a } else { &b }.view()).unwrap())).collect();
        assert_eq!(got, [200, 200, 200, 200, 200, 429]);
    }

    #[test]
    fn the_window_slides() {
        testing::init::<RateLimit>(CONFIG).unwrap();
        let t0 = 1_800_000_000_000;
        testing::set_now_ms(t0 + 50_000);
        let small = request("small", "x", b"{}");
        for _ in 0..3 {
            assert_eq!(status(&RateLimit.on_request(&small.view()).unwrap()), 200);
        }
        // 15 s into the next minute, three quarters of the previous minute's 3 still count: 2.25 + 1 > 3.
        testing::set_now_ms(t0 + 60_000 + 15_000);
        assert_eq!(status(&RateLimit.on_request(&small.view()).unwrap()), 429);
        // 45 s in, a quarter counts: 0.75 + 1 <= 3, and again 1.75 + 1 <= 3.
        testing::set_now_ms(t0 + 60_000 + 45_000);
        assert_eq!(status(&RateLimit.on_request(&small.view()).unwrap()), 200);
        assert_eq!(status(&RateLimit.on_request(&small.view()).unwrap()), 200);
        assert_eq!(status(&RateLimit.on_request(&small.view()).unwrap()), 429);
    }

    #[test]
    fn tokens_are_reserved_and_settled() {
        testing::init::<RateLimit>(CONFIG).unwrap();
        testing::set_now_ms(1_800_000_000_000);
        let body = br#"{"model":"m","max_tokens":400}"#;
        let r = request("tok", "x", body);
        let meta = match RateLimit.on_request(&r.view()).unwrap() {
            RequestDecision::ContinueWith(c) => c.metadata,
            _ => panic!("fits"),
        };
        assert_eq!(status(&RateLimit.on_request(&r.view()).unwrap()), 200, "2 × 408 fit in 1000");
        assert_eq!(status(&RateLimit.on_request(&r.view()).unwrap()), 429, "a third does not");
        // The first request used 50 tokens: its reservation of 408 is settled, and there is room again.
        let s = Summary { metadata: meta, ..testing::summary("m", 20, 30) };
        RateLimit.on_complete(&s);
        assert_eq!(status(&RateLimit.on_request(&r.view()).unwrap()), 200);
    }

    #[test]
    fn store_errors_fail_open_unless_configured() {
        testing::init::<RateLimit>(CONFIG).unwrap();
        testing::fail_kv(Some(KvError::Unavailable("down".into())));
        assert_eq!(status(&RateLimit.on_request(&request("small", "x", b"{}").view()).unwrap()), 200);
        testing::init::<RateLimit>(r#"{"limits": [{"key": "*", "rpm": 1}], "fail_closed": true}"#).unwrap();
        testing::fail_kv(Some(KvError::Timeout));
        assert_eq!(status(&RateLimit.on_request(&request("small", "x", b"{}").view()).unwrap()), 503);
        testing::fail_kv(None);
    }

    #[test]
    fn listing_counts_nothing_and_bad_configs_are_refused() {
        testing::init::<RateLimit>(CONFIG).unwrap();
        let mut r = request("small", "x", b"{}");
        r.endpoint = "models".into();
        for _ in 0..10 {
            assert_eq!(status(&RateLimit.on_request(&r.view()).unwrap()), 200);
        }
        assert!(testing::init::<RateLimit>(r#"{"limits": [{"key": "a", "team": "b", "rpm": 1}]}"#).is_err());
        assert!(testing::init::<RateLimit>(r#"{"limits": [{"key": "a"}]}"#).is_err());
    }
}
