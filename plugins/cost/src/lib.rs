//! `cost`: what each request cost, who spent it, and budgets.
//!
//! On completion the cost is computed from the usage the gateway measured and a price table in the config (USD
//! per million tokens: input, output, cached input), set as the trace attribute `usd`, and added to the caller's
//! spend in `kv`: per key and per team (from the principal an auth plugin set), per UTC day and per month, in
//! nano-dollars under `spend/{key,team}/<id>/<YYYY-MM-DD|YYYY-MM>` (keys built by `weir_sdk::keys`: an id with `/`,
//! `%` or a control character has them escaped; spaces stay as written).
//!
//! Budgets (`budgets = [{ key = "…" | team = "…", usd = 5.0, period = "day" | "month" }]`, `"*"` for every key or
//! team) refuse a request with 429 when the spend is already at or over the budget. Concurrent requests cannot
//! all slip under it: each request first *reserves* an estimate (prompt bytes / 4 input tokens, plus `max_tokens`
//! or `default_max_tokens` output tokens) with one atomic increment per counter, is refused if the spend before its
//! own reservation had reached the budget (and then takes the reservation back), and on completion settles the
//! reservation to the actual cost — or to nothing if the request failed. So a budget is overspent by at most one
//! request's reservation (plus what a request costs beyond its estimate).
//! Capabilities: `config`, `kv`, `trace`, `clock`.

use std::collections::BTreeMap;

use serde::Deserialize;
use weir_sdk::kv::Op;
use weir_sdk::{ChangesExt, KvError, Plugin, PluginError, Request, RequestDecision, Summary};

/// USD per million tokens.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Defaults to the input price.
    #[serde(default)]
    pub cached_input: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Period {
    Day,
    Month,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Budget {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    team: Option<String>,
    usd: f64,
    period: Period,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Model name (or a trailing-`*` prefix) → price. `default` prices models not listed.
    prices: BTreeMap<String, Price>,
    #[serde(default)]
    budgets: Vec<Budget>,
    /// The output estimate for requests that set no `max_tokens`.
    #[serde(default = "default_max_tokens")]
    default_max_tokens: u64,
}

fn default_max_tokens() -> u64 {
    4096
}

const NANO: f64 = 1e9;
const DAY_MS: u64 = 86_400_000;

impl Config {
    /// The price of `model`: exact name, else the longest matching `prefix*`, else `default`.
    fn price(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.prices.get(model) {
            return Some(*p);
        }
        let prefixed = self
            .prices
            .iter()
            .filter_map(|(k, p)| Some((k.strip_suffix('*')?, p)))
            .filter(|(prefix, _)| model.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.len());
        prefixed.map(|(_, p)| *p).or_else(|| self.prices.get("default").copied())
    }

    /// The most any listed model charges, for estimates of models without a price.
    fn dearest(&self) -> Price {
        let max = |f: fn(&Price) -> f64| self.prices.values().map(f).fold(0.0, f64::max);
        Price { input: max(|p| p.input), output: max(|p| p.output), cached_input: None }
    }
}

/// Cost in nano-dollars.
pub fn cost_nano(p: Price, input: u64, cached: u64, output: u64) -> i64 {
    let uncached = input.saturating_sub(cached) as f64;
    let per_token = |usd_per_m: f64| usd_per_m * NANO / 1e6;
    let c = uncached * per_token(p.input)
        + cached as f64 * per_token(p.cached_input.unwrap_or(p.input))
        + output as f64 * per_token(p.output);
    c.round() as i64
}

/// Nano-dollars as dollars with six decimals: what `format!("{:.6}", nano as f64 / 1e9)` gives, by integer
/// arithmetic (float formatting was a tenth of this plugin's time per request). Only an exact tie (a multiple of
/// 500 nano-dollars that is not one of 1,000) can round differently, so those take the float path.
fn usd(nano: i64) -> String {
    let n = nano.unsigned_abs();
    if n % 1000 == 500 {
        return format!("{:.6}", nano as f64 / NANO);
    }
    let micro = (n + 500) / 1000;
    let sign = if nano < 0 { "-" } else { "" };
    format!("{sign}{}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

/// One spend counter this request reserved on.
#[derive(Debug)]
struct Counter {
    key: String,
    ttl_ms: u64,
}

#[derive(Default)]
pub struct Cost {
    counters: Vec<Counter>,
    reserved: i64,
    /// Set when the request was refused: nothing to settle.
    refused: bool,
}

/// The counters a request of `principal` at `now_ms` adds to: with the scope, the id and the period of each.
fn counters(principal: &weir_sdk::Principal, now_ms: u64) -> Vec<(Counter, &'static str, &str, Period)> {
    with_labels(now_ms, |day, month| {
        let mut out = Vec::with_capacity(4);
        let mut add = |scope: &'static str, id| {
            for (period, label, ttl) in [(Period::Day, day, 2 * DAY_MS), (Period::Month, month, 32 * DAY_MS)] {
                let key = weir_sdk::keys::key(&["spend", scope, id, label]);
                out.push((Counter { key, ttl_ms: ttl }, scope, id, period));
            }
        };
        add("key", &principal.id);
        if let Some(team) = &principal.team {
            add("team", team);
        }
        out
    })
}

/// Runs `f` with the UTC day (`YYYY-MM-DD`) and month (`YYYY-MM`) of `now_ms`. They are kept for the day they were
/// made: every request of that day (of any tenant: they come from the clock alone) has the same two labels.
fn with_labels<R>(now_ms: u64, f: impl FnOnce(&str, &str) -> R) -> R {
    use std::cell::RefCell;
    thread_local!(static LABELS: RefCell<(u64, String, String)> = const { RefCell::new((u64::MAX, String::new(), String::new())) });
    let today = now_ms / DAY_MS;
    LABELS.with_borrow_mut(|(day, d, m)| {
        if *day != today {
            let (year, month, date) = weir_sdk::util::date(now_ms);
            (*day, *d, *m) = (today, format!("{year:04}-{month:02}-{date:02}"), format!("{year:04}-{month:02}"));
        }
        f(d, m)
    })
}

/// The most the request can cost: `Request::token_estimate` at the model's price (or the dearest listed).
fn estimate(config: &Config, req: &Request, model: &str) -> i64 {
    let t = req.token_estimate(config.default_max_tokens);
    cost_nano(config.price(model).unwrap_or_else(|| config.dearest()), t.input, 0, t.output)
}

/// A kv failure before anything was reserved refuses the request (a budget that cannot be checked is not
/// enforced by letting requests through): 503 in the client's shape.
fn unavailable(e: &KvError) -> RequestDecision {
    weir_sdk::trace::set_attribute("budget", "unavailable");
    weir_sdk::reject(
        503,
        format!("the gateway cannot check budgets right now ({}); retry later", weir_sdk::kv::describe(e)),
    )
}

impl Plugin for Cost {
    type Config = Config;
    /// Settles in on-complete; never looks at the answer.
    const HOOKS: weir_sdk::Hooks = weir_sdk::Hooks::COMPLETE;
    // Everything it keeps per request is in `self` (reset at `on-request`); across requests only its config.
    const REUSE: weir_sdk::Reuse = weir_sdk::Reuse::Always;

    fn check(c: &Config) -> Result<(), PluginError> {
        match c.budgets.iter().position(|b| b.key.is_some() == b.team.is_some() || b.usd.is_nan() || b.usd < 0.0) {
            Some(i) => Err(weir_sdk::error(format!(
                "config: budgets[{i}] needs exactly one of `key` and `team`, and `usd` >= 0"
            ))),
            None => Ok(()),
        }
    }

    fn on_request(&mut self, req: &Request) -> Result<RequestDecision, PluginError> {
        {
            let config = weir_sdk::config::<Self>();
            if req.is_model_listing() {
                return Ok(RequestDecision::Continue);
            }
            let Some(principal) = req.principal() else { return Ok(RequestDecision::Continue) };
            let model = req.model();
            let est = estimate(config, req, &model);
            let now = weir_sdk::clock::now_unix_ms();
            let counters = counters(&principal, now);
            let keys: Vec<&str> = counters.iter().map(|(c, ..)| c.key.as_str()).collect();
            let record = weir_sdk::keys::Reservation::encode_parts(est, &keys);
            let reservation = reservation_key(&req.id());
            // One kv call: reserve on every counter, then write the reservation down under the request id (and
            // return it as metadata), so that `on-complete` can settle it on a fresh instance (the gateway uses one
            // when this instance failed). A client hanging up cannot stop this hook half-way (the gateway runs
            // `on-request` to its end); a trap after the batch would leave the estimate counted, erring towards the
            // budget.
            let mut ops: Vec<Op> =
                counters.iter().map(|(c, ..)| Op::increment(c.key.as_str(), est, Some(c.ttl_ms))).collect();
            ops.push(Op::set(reservation.as_str(), record.as_bytes(), Some(RESERVATION_TTL_MS)));
            let done = weir_sdk::kv::batch(&ops);
            // The spend before this request's reservation, per counter (the batch stops at a failed increment).
            let mut before = Vec::with_capacity(counters.len());
            for r in done.iter().take(counters.len()) {
                match r {
                    Ok(o) => before.push(o.count().unwrap_or(est) - est),
                    Err(e) => {
                        // Give back what was taken (best effort: the store is failing).
                        give_back(counters.iter().take(before.len()).map(|(c, ..)| c), est, None);
                        self.refused = true;
                        return Ok(unavailable(e));
                    }
                }
            }
            let over = counters.iter().zip(&before).find_map(|((_, scope, id, period), &before)| {
                let budget = config.budgets.iter().find(|b| {
                    let pattern = if *scope == "key" { &b.key } else { &b.team };
                    b.period == *period
                        && pattern.as_deref().is_some_and(|p| weir_sdk::util::matches(p, id))
                        && before >= (b.usd * NANO).round() as i64
                })?;
                Some((budget, scope, id, period, before))
            });
            if let Some((b, scope, id, period, before)) = over {
                give_back(counters.iter().map(|(c, ..)| c), est, Some(&reservation));
                self.refused = true;
                let when = if *period == Period::Day { "today (UTC)" } else { "this month (UTC)" };
                weir_sdk::trace::set_attribute("budget", "exceeded");
                return Ok(weir_sdk::reject(
                    429,
                    format!(
                        "budget exceeded: {scope} `{id}` has spent ${} of its ${:.2} budget {when}",
                        usd(before),
                        b.usd
                    ),
                ));
            }
            weir_sdk::trace::set_attribute("reserved_usd", &usd(est));
            let taken: Vec<Counter> = counters.into_iter().map(|(c, ..)| c).collect();
            self.counters = taken;
            self.reserved = est;
            // Also in the request's metadata, which `on-complete` receives on whatever instance it runs.
            Ok(RequestDecision::ContinueWith(weir_sdk::changes().meta(RESERVED_META, &record)))
        }
    }

    fn on_complete(&mut self, s: &Summary) {
        if self.refused {
            return;
        }
        if self.counters.is_empty() {
            // A fresh instance: the reservation, if one was made, is in the metadata (or in kv).
            self.recall(s);
        }
        {
            let config = weir_sdk::config::<Self>();
            let u = &s.usage;
            let actual = match config.price(&s.model) {
                // Served from a cache: nothing was spent; what the answer would have cost is recorded as saved.
                Some(p) if s.outcome == "cached" => {
                    let c = cost_nano(
                        p,
                        u.input_tokens.unwrap_or(0),
                        u.cached_tokens.unwrap_or(0),
                        u.output_tokens.unwrap_or(0),
                    );
                    weir_sdk::trace::set_attribute("usd", "0");
                    weir_sdk::trace::set_attribute("saved_usd", &usd(c));
                    0
                }
                Some(p) => {
                    let c = cost_nano(
                        p,
                        u.input_tokens.unwrap_or(0),
                        u.cached_tokens.unwrap_or(0),
                        u.output_tokens.unwrap_or(0),
                    );
                    weir_sdk::trace::set_attribute("usd", &usd(c));
                    c
                }
                None => {
                    weir_sdk::trace::set_attribute("usd", "unknown");
                    weir_sdk::log::write(
                        weir_sdk::log::Level::Warn,
                        &format!("no price for model `{}`: its cost is not counted", s.model),
                    );
                    0
                }
            };
            // Settle the reservation to the actual cost (a failed request costs what it used, usually nothing).
            // Increments in `on-complete` are settles: a backend that cannot take one now (Redis down) journals it
            // and applies it exactly once later, so errors here are not retried.
            // In one kv call.
            if !self.counters.is_empty() {
                let mut ops: Vec<Op> =
                    self.counters.iter().map(|c| Op::increment(c.key.as_str(), actual - self.reserved, None)).collect();
                ops.push(Op::delete(reservation_key(&s.request_id)));
                let _ = weir_sdk::kv::batch(&ops);
            } else if let Some(p) = &s.principal {
                // No reservation was made (no principal at on-request time): count it now.
                let ops: Vec<Op> = counters(p, weir_sdk::clock::now_unix_ms())
                    .into_iter()
                    .map(|(c, ..)| Op::increment(c.key, actual, Some(c.ttl_ms)))
                    .collect();
                let _ = weir_sdk::kv::batch(&ops);
            }
        }
    }
}

/// Takes a reservation of `est` back from `counters` (and deletes the reservation record, if it was written), in
/// one kv call; best effort: this runs when the store failed or the request was refused.
fn give_back<'a>(counters: impl Iterator<Item = &'a Counter>, est: i64, record: Option<&str>) {
    let mut ops: Vec<Op> = counters.map(|c| Op::increment(c.key.as_str(), -est, None)).collect();
    ops.extend(record.map(Op::delete));
    if !ops.is_empty() {
        let _ = weir_sdk::kv::batch(&ops);
    }
}

/// How long a reservation record outlives its request at most (a request never runs this long).
const RESERVATION_TTL_MS: u64 = DAY_MS;

fn reservation_key(request_id: &str) -> String {
    weir_sdk::keys::key(&["reservation", request_id])
}

/// The metadata key under which the reservation travels with the request: a `weir_sdk::keys::Reservation` of
/// nano-dollars and counter keys.
const RESERVED_META: &str = "cost.reservation";

impl Cost {
    /// Loads the reservation `on-request` made for this request on another instance: from the request's metadata
    /// (0.2.0 hands it to `on-complete`), else from kv (written before the metadata, in case `on-request` was
    /// interrupted between the two).
    fn recall(&mut self, s: &Summary) {
        let record = match s.metadata.iter().find(|(k, _)| k == RESERVED_META) {
            Some((_, v)) => v.clone(),
            None => match weir_sdk::kv::get(&reservation_key(&s.request_id)) {
                Ok(Some(r)) => String::from_utf8_lossy(&r).into_owned(),
                _ => return,
            },
        };
        let Some(r) = weir_sdk::keys::Reservation::decode(&record) else { return };
        self.reserved = r.amount;
        self.counters = r.keys.into_iter().map(|key| Counter { key, ttl_ms: 0 }).collect();
    }
}

weir_sdk::export!(Cost);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::{FakeRequest, Principal, testing};

    const CONFIG: &str = r#"{
        "prices": {"gpt-4o-mini": {"input": 0.15, "output": 0.6, "cached_input": 0.075},
                   "claude-*": {"input": 1.0, "output": 5.0}},
        "budgets": [{"key": "small", "usd": 0.0001, "period": "day"}, {"team": "*", "usd": 100, "period": "month"}],
        "default_max_tokens": 100
    }"#;

    fn request(key: &str) -> FakeRequest {
        let mut r = testing::request("gpt-4o-mini", br#"{"model":"gpt-4o-mini","max_tokens":50}"#);
        r.principal = Some(Principal { id: key.into(), team: Some("ml".into()) });
        r
    }

    fn summary(key: &str, input: u64, output: u64) -> Summary {
        Summary {
            upstream: Some("openai".into()),
            principal: Some(Principal { id: key.into(), team: Some("ml".into()) }),
            ..testing::summary("gpt-4o-mini", input, output)
        }
    }

    fn spend(key: &str) -> i64 {
        let v = weir_sdk::kv::get(key).unwrap().unwrap_or_default();
        String::from_utf8(v).unwrap().parse().unwrap_or(0)
    }

    #[test]
    fn prices() {
        assert_eq!(
            cost_nano(Price { input: 0.15, output: 0.6, cached_input: Some(0.075) }, 1000, 200, 500),
            120_000 + 15_000 + 300_000
        );
        let c: Config = serde_json::from_str(CONFIG).unwrap();
        assert_eq!(c.price("claude-haiku-4-5").unwrap().output, 5.0);
        assert!(c.price("gpt-4o").is_none());
    }

    #[test]
    fn usd_is_what_float_formatting_gave() {
        let mut values = vec![0, 1, 499, 500, 501, 999, 1_000, 1_500, 2_500, 450_000, 999_999_499, 999_999_500];
        values.extend([123_456_789_012, 5_000_000_000, i64::MAX / 1000, 7_777_777_777_777]);
        values.extend((0..10_000).map(|i| i * 7_919 + 13));
        for n in values.iter().flat_map(|&n| [n, -n]) {
            assert_eq!(usd(n), format!("{:.6}", n as f64 / NANO), "{n}");
        }
    }

    #[test]
    fn the_day_and_month_change_at_midnight_utc() {
        let p = Principal { id: "k".into(), team: Some("ml".into()) };
        let keys = |now| counters(&p, now).into_iter().map(|(c, ..)| c.key).collect::<Vec<_>>();
        let last_ms_of_november = 1_796_083_200_000 - 1;
        assert_eq!(
            keys(last_ms_of_november),
            ["spend/key/k/2026-11-30", "spend/key/k/2026-11", "spend/team/ml/2026-11-30", "spend/team/ml/2026-11"]
        );
        assert_eq!(keys(last_ms_of_november + 1)[..2], ["spend/key/k/2026-12-01", "spend/key/k/2026-12"]);
        assert_eq!(keys(last_ms_of_november)[0], "spend/key/k/2026-11-30", "and back: kept per day, not forever");
    }

    #[test]
    fn reserves_then_settles_to_the_actual_cost() {
        testing::init::<Cost>(CONFIG).unwrap();
        testing::set_now_ms(1_795_305_600_000);
        let mut p = Cost::default();
        assert!(matches!(p.on_request(&request("k").view()).unwrap(), RequestDecision::ContinueWith(_)));
        let reserved = spend("spend/key/k/2026-11-22");
        assert!(reserved > 0);
        assert_eq!(spend("spend/team/ml/2026-11"), reserved);
        p.on_complete(&summary("k", 1000, 500));
        assert_eq!(spend("spend/key/k/2026-11-22"), 150_000 + 300_000);
        assert_eq!(spend("spend/key/k/2026-11"), 450_000);
        assert_eq!(testing::attributes().last().unwrap(), &("usd".to_string(), "0.000450".to_string()));
    }

    #[test]
    fn a_fresh_instance_settles_the_reservation_from_kv() {
        testing::init::<Cost>(CONFIG).unwrap();
        testing::set_now_ms(1_795_305_600_000);
        let mut reserving = Cost::default();
        let mut req = request("k");
        req.id = "req_fresh".into();
        let RequestDecision::ContinueWith(changes) = reserving.on_request(&req.view()).unwrap() else { panic!() };
        assert!(spend("spend/key/k/2026-11-22") > 0);
        // `on-complete` on another instance, which never saw the request (partial usage of a cancelled stream).
        let mut s = summary("k", 1000, 100);
        s.request_id = "req_fresh".into();
        s.outcome = "cancelled".into();
        s.partial = true;
        s.metadata = changes.metadata.clone();
        Cost::default().on_complete(&s);
        assert_eq!(spend("spend/key/k/2026-11-22"), 150_000 + 60_000, "settled to the partial usage");
        assert_eq!(spend("spend/team/ml/2026-11"), 210_000);
        assert_eq!(weir_sdk::kv::get("reservation/req_fresh").unwrap(), None, "the record is removed once settled");
        // The same from kv alone (on-request interrupted before its metadata reached the gateway).
        let RequestDecision::ContinueWith(_) = Cost::default().on_request(&req.view()).unwrap() else { panic!() };
        s.metadata.clear();
        Cost::default().on_complete(&s);
        assert_eq!(spend("spend/key/k/2026-11-22"), 2 * (150_000 + 60_000));
    }

    #[test]
    fn an_unavailable_store_refuses_instead_of_overspending() {
        testing::init::<Cost>(CONFIG).unwrap();
        testing::fail_kv(Some(KvError::Timeout));
        match Cost::default().on_request(&request("k").view()).unwrap() {
            RequestDecision::Reject(r) => assert_eq!(r.status, 503, "{}", r.message),
            _ => panic!("a budget that cannot be checked refuses"),
        }
        testing::fail_kv(None);
    }

    #[test]
    fn refuses_once_the_budget_is_spent() {
        testing::init::<Cost>(CONFIG).unwrap();
        testing::set_now_ms(1_795_305_600_000);
        let mut first = Cost::default();
        assert!(matches!(first.on_request(&request("small").view()).unwrap(), RequestDecision::ContinueWith(_)));
        first.on_complete(&summary("small", 100_000, 100_000));
        let mut second = Cost::default();
        match second.on_request(&request("small").view()).unwrap() {
            RequestDecision::Reject(r) => {
                assert_eq!(r.status, 429);
                assert!(r.message.contains("key `small`"), "{}", r.message);
            }
            _ => panic!("over budget"),
        }
        second.on_complete(&summary("small", 0, 0));
        assert_eq!(spend("spend/key/small/2026-11-22"), 75_000_000, "the refused request reserved nothing");
        assert_eq!(spend("spend/team/ml/2026-11"), 75_000_000, "on no counter");
        let id = request("small").view().id();
        assert_eq!(weir_sdk::kv::get(&reservation_key(&id)), Ok(None), "and kept no reservation record");
    }
}
