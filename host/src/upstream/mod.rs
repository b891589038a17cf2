//! Upstreams: the HTTP client, one attempt against one upstream, per-upstream health (cooldown), and the order in
//! which a request's candidates are tried. Retrying lives in [`retry`], and only there. What differs between kinds
//! of upstream (URL, envelope, authentication, stream framing, error shape) is the upstream's
//! [`Provider`](crate::provider::Provider).
//!
//! Safety rules enforced here: URLs come only from the config (the provider builds them from `base_url` and the
//! config's settings, the model sent being the only request-dependent part); redirects are never followed; the
//! client's credentials are never forwarded (the upstream's own, from the environment variables or files the config
//! names, are set instead, marked sensitive); only headers the operator listed in `forward_headers` pass through.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod retry;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::api::Endpoint;
use crate::config::{Candidate, Config, CooldownConfig, Timeouts, TranslationConfig, Upstream, UpstreamIdx};
use crate::provider::{ByteStream, Outgoing, Provider, Refused};
use retry::FailureClass;

/// Largest upstream error body kept (for pass-through and diagnostics).
const MAX_ERROR_BODY: usize = 64 << 10;
/// Largest non-streamed answer accepted from an upstream.
const MAX_ANSWER_BODY: usize = 64 << 20;

/// The upstreams of one config, with their keys and health.
pub struct Upstreams {
    client: reqwest::Client,
    entries: Vec<Entry>,
    timeouts: Timeouts,
    cooldown: CooldownConfig,
    forward_headers: Vec<String>,
}

struct Entry {
    cfg: Upstream,
    provider: Box<dyn Provider>,
    health: Health,
}

/// A candidate of the plan with the endpoint its upstream is asked: the client's, or its translation for an
/// upstream of the other family. Decided once, by [`Upstreams::plan`], and used by every later step.
#[derive(Debug, Clone)]
pub struct Planned {
    pub candidate: Candidate,
    pub endpoint: Endpoint,
}

/// What one request asks of an upstream; the same for every attempt except the body's model.
pub struct AttemptRequest<'a> {
    pub endpoint: Endpoint,
    /// The model the client asked for (sent unless the candidate renames it).
    pub model: &'a str,
    pub client_headers: &'a HeaderMap,
    /// Headers set by plugins (already validated: no credentials, no hop-by-hop headers).
    pub extra_headers: &'a [(HeaderName, HeaderValue)],
    pub stream: bool,
    /// The body for a candidate (the model may be rewritten per candidate).
    pub body_for: &'a (dyn Fn(&Planned) -> Bytes + Sync),
    /// The request's trace, when tracing is on: each attempt sends `traceparent` naming its own span.
    pub trace: Option<&'a crate::telemetry::trace::TraceCtx>,
}

/// A successful attempt.
pub struct Answer {
    pub upstream: UpstreamIdx,
    /// The endpoint the upstream was asked (the client's, or its translation for an upstream of the other family).
    pub endpoint: Endpoint,
    /// The model name sent to that upstream, when the candidate rewrote it.
    pub model: Option<String>,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: AnswerBody,
}

pub enum AnswerBody {
    /// A non-streamed answer, read whole (so a failure while reading it could still be retried).
    Full(Bytes),
    /// An SSE stream in the upstream's dialect (re-framed by the provider when its wire framing is another), to be
    /// forwarded as it arrives.
    Stream(ByteStream),
}

/// A failed attempt.
#[derive(Debug)]
pub struct Failure {
    pub upstream: UpstreamIdx,
    pub class: FailureClass,
    pub retry_after: Option<Duration>,
    /// Human explanation, safe to log (no credentials, no content).
    pub detail: String,
    /// The upstream's own error response, when it sent one.
    pub response: Option<ErrorResponse>,
    /// The upstream refused cached credentials that are now dropped: worth one more try with new ones.
    pub retry_with_new_credentials: bool,
}

#[derive(Debug)]
pub struct ErrorResponse {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

impl Upstreams {
    /// Builds the client and resolves every upstream's key from its environment variable.
    pub fn new(config: &Config) -> anyhow::Result<Upstreams> {
        Upstreams::with_keys(config, |name| std::env::var(name).ok())
    }

    /// Like [`Upstreams::new`], with keys looked up by `key_of(env_var_name)`.
    pub fn with_keys(config: &Config, key_of: impl Fn(&str) -> Option<String>) -> anyhow::Result<Upstreams> {
        // TLS to real providers uses rustls with the `ring` provider (quick to build, no cmake); installing it twice
        // is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(config.timeouts.connect)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let mut entries = Vec::new();
        for u in &config.upstreams {
            let provider = crate::provider::build(u, &client, &key_of)?;
            entries.push(Entry { cfg: u.clone(), provider, health: Health::default() });
        }
        Ok(Upstreams {
            client,
            entries,
            timeouts: config.timeouts,
            cooldown: config.cooldown,
            forward_headers: config.forward_headers.clone(),
        })
    }

    #[allow(clippy::indexing_slicing, reason = "UpstreamIdx values come only from the validated config: in range")]
    pub fn get(&self, idx: UpstreamIdx) -> &Upstream {
        &self.entries[idx.0].cfg
    }

    /// One line per upstream for the start-up log: kind, where, which credentials (never their values).
    pub fn describe(&self) -> Vec<(String, String)> {
        self.entries.iter().map(|e| (e.cfg.id.clone(), e.provider.describe())).collect()
    }

    /// The order in which to try `route`'s candidates for a request to `endpoint`: candidates that cannot serve it
    /// are left out (another family, unless translation is on and the endpoint has a translation); upstreams in
    /// cooldown go last; then, with `translation.prefer_same_family`, the client's own family before the other (no
    /// translation while a same-family candidate is healthy: the other family is the failover); then by priority;
    /// within one priority, a weighted random order.
    #[allow(clippy::indexing_slicing, reason = "UpstreamIdx values come only from the validated config: in range")]
    pub fn plan(&self, route: &[Candidate], endpoint: Endpoint, translation: &TranslationConfig) -> Vec<Planned> {
        let now = now_ms();
        let family = endpoint.family();
        // The endpoint an upstream is asked, if it can serve this request.
        let target = |entry: &Entry| {
            let family_of = entry.cfg.kind.family();
            let target = match family_of == family {
                true => Some(endpoint),
                false if translation.enabled => crate::dialect::translate::target(endpoint, family_of),
                false => None,
            }?;
            entry.provider.serves(target).then_some(target)
        };
        let mut keyed: Vec<((bool, bool, u32, f64), Planned)> = route
            .iter()
            .filter_map(|c| {
                let entry = &self.entries[c.upstream.0];
                let target = target(entry)?;
                let cooling = entry.health.cooling(now);
                let other = translation.prefer_same_family && entry.cfg.kind.family() != family;
                // Efraimidis–Spirakis: sorting by -ln(u)/w gives a weighted random permutation.
                let r = if c.weight == 0 { f64::INFINITY } else { -(1.0 - fastrand::f64()).ln() / c.weight as f64 };
                Some(((cooling, other, c.priority, r), Planned { candidate: c.clone(), endpoint: target }))
            })
            .collect();
        keyed.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        keyed.into_iter().map(|(_, c)| c).collect()
    }

    /// One attempt: send the request and, for non-streamed answers, read the whole body.
    pub async fn attempt(&self, planned: &Planned, req: &AttemptRequest<'_>, span: u64) -> Result<Answer, Failure> {
        match self.attempt_once(planned, req, span).await {
            // The upstream refused a cached token (revoked, or expired early): asked again at once with a new one.
            Err(f) if f.retry_with_new_credentials => self.attempt_once(planned, req, span).await,
            r => r,
        }
    }

    #[allow(clippy::indexing_slicing, reason = "UpstreamIdx values come only from the validated config: in range")]
    async fn attempt_once(&self, planned: &Planned, req: &AttemptRequest<'_>, span: u64) -> Result<Answer, Failure> {
        let (cand, endpoint) = (&planned.candidate, planned.endpoint);
        let idx = cand.upstream;
        let entry = &self.entries[idx.0];
        let fail = |class, detail: String| Failure {
            upstream: idx,
            class,
            retry_after: None,
            detail,
            response: None,
            retry_with_new_credentials: false,
        };

        let model = cand.model.as_deref().unwrap_or(req.model);
        let url = match entry.provider.url(endpoint, model, req.stream) {
            Ok(u) => u,
            Err(r) => return Err(refused(idx, r)),
        };
        let mut headers = self.upstream_headers(entry, req);
        if let Some(t) = req.trace {
            if let Ok(v) = HeaderValue::from_str(&t.traceparent(span)) {
                headers.insert("traceparent", v);
            }
            let state = t.tracestate.header();
            if let (false, Ok(v)) = (state.is_empty(), HeaderValue::from_str(&state)) {
                headers.insert("tracestate", v);
            }
        }
        let body = entry.provider.body(endpoint, (req.body_for)(planned), req.client_headers);
        let mut out = Outgoing { url, headers, body };
        if let Err(r) = entry.provider.authorize(&mut out).await {
            return Err(refused(idx, r));
        }
        let send = self.client.post(out.url).headers(out.headers).body(out.body).send();
        let resp = match tokio::time::timeout(self.timeouts.first_byte, send).await {
            Err(_) => {
                return Err(fail(
                    FailureClass::Timeout,
                    format!("no response headers within {:?} (timeouts.first_byte)", self.timeouts.first_byte),
                ));
            }
            Ok(Err(e)) => return Err(fail(retry::classify_error(&e), retry::describe_error(&e))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let headers = resp.headers().clone();

        if !status.is_success() {
            let retry_after = retry::parse_retry_after(&headers);
            let body = self.read_body(resp, MAX_ERROR_BODY).await.unwrap_or_default();
            let body = entry.provider.error_body(status, &headers, body);
            let class = retry::classify_status(status);
            let retry_with_new_credentials =
                matches!(class, FailureClass::Auth(_)) && entry.provider.credentials_rejected();
            return Err(Failure {
                upstream: idx,
                class,
                retry_after,
                retry_with_new_credentials,
                detail: format!("answered HTTP {status}"),
                response: Some(ErrorResponse {
                    status,
                    content_type: headers.get(header::CONTENT_TYPE).cloned(),
                    body,
                }),
            });
        }

        let body = if req.stream && entry.provider.is_stream(&headers) {
            AnswerBody::Stream(entry.provider.stream(resp))
        } else {
            match self.read_body(resp, MAX_ANSWER_BODY).await {
                Ok(b) => AnswerBody::Full(b),
                Err((class, detail)) => return Err(fail(class, detail)),
            }
        };
        Ok(Answer { upstream: idx, endpoint, model: cand.model.clone(), status, headers, body })
    }

    /// Reads a whole body, allowing at most `timeouts.idle` between chunks.
    async fn read_body(&self, resp: reqwest::Response, limit: usize) -> Result<Bytes, (FailureClass, String)> {
        let mut stream = resp.bytes_stream();
        let mut buf = BytesMut::new();
        loop {
            match tokio::time::timeout(self.timeouts.idle, stream.next()).await {
                Err(_) => {
                    return Err((
                        FailureClass::Timeout,
                        format!("body stalled for {:?} (timeouts.idle)", self.timeouts.idle),
                    ));
                }
                Ok(None) => return Ok(buf.freeze()),
                Ok(Some(Err(e))) => return Err((FailureClass::Connect, retry::describe_error(&e))),
                Ok(Some(Ok(chunk))) => {
                    if buf.len() + chunk.len() > limit {
                        return Err((FailureClass::Protocol, format!("body larger than {limit} bytes")));
                    }
                    buf.extend_from_slice(&chunk);
                }
            }
        }
    }

    fn upstream_headers(&self, entry: &Entry, req: &AttemptRequest<'_>) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(8);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(if req.stream { "text/event-stream" } else { "application/json" }),
        );
        let client = req.client_headers;
        entry.provider.family_headers(client, req.stream, &mut h);
        if !self.forward_headers.is_empty() {
            for (name, value) in client {
                if header_matches(&self.forward_headers, name.as_str()) {
                    h.append(name.clone(), value.clone());
                }
            }
        }
        for (name, value) in req.extra_headers {
            h.insert(name.clone(), value.clone());
        }
        for (name, value) in &entry.cfg.headers {
            h.insert(name.clone(), value.clone());
        }
        h
    }

    /// Records an attempt's outcome for cooldown. Returns true when this failure put the upstream into cooldown.
    #[allow(clippy::indexing_slicing, reason = "UpstreamIdx values come only from the validated config: in range")]
    pub fn record(&self, idx: UpstreamIdx, ok: bool) -> bool {
        let health = &self.entries[idx.0].health;
        if ok {
            health.failures.store(0, Ordering::Relaxed);
            return false;
        }
        let n = health.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.cooldown.failures.max(1) {
            health.until_ms.store(now_ms() + self.cooldown.duration.as_millis() as u64, Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// A provider's refusal as an attempt's failure.
fn refused(idx: UpstreamIdx, r: Refused) -> Failure {
    let (class, detail) = match r {
        Refused::Unservable(d) => (FailureClass::Protocol, d),
        Refused::Credentials(d) => (FailureClass::Credentials, format!("no credentials: {d}")),
    };
    Failure { upstream: idx, class, retry_after: None, detail, response: None, retry_with_new_credentials: false }
}

/// Whether `name` (lower-case) matches one of the `forward_headers` patterns.
fn header_matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == p,
    })
}

/// Consecutive failures and the end of the current cooldown, per upstream.
#[derive(Default)]
struct Health {
    failures: AtomicU32,
    until_ms: AtomicU64,
}

impl Health {
    fn cooling(&self, now_ms: u64) -> bool {
        self.until_ms.load(Ordering::Relaxed) > now_ms
    }
}

fn now_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64 + 1
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        let text = format!(
            r#"
listen = "127.0.0.1:0"
forward_headers = ["x-mock-*", "x-trace"]
{extra}
[[upstreams]]
id = "a"
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
models = ["m"]
[[upstreams]]
id = "b"
kind = "openai"
base_url = "http://127.0.0.1:2/v1"
models = ["m"]
weight = 3
[[upstreams]]
id = "c"
kind = "anthropic"
base_url = "http://127.0.0.1:3/v1"
models = ["m"]
[[routes]]
model = "ordered"
candidates = [{{ upstream = "b" }}, {{ upstream = "a" }}]
"#
        );
        Config::parse(&text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn plan_filters_family_and_keeps_order() {
        let c = config("");
        let u = Upstreams::new(&c).unwrap();
        let ids = |p: Vec<Planned>| p.iter().map(|c| u.get(c.candidate.upstream).id.clone()).collect::<Vec<_>>();
        let on = TranslationConfig::default();
        let off = TranslationConfig { enabled: false, ..TranslationConfig::default() };
        let mixed = TranslationConfig { prefer_same_family: false, ..TranslationConfig::default() };
        assert_eq!(ids(u.plan(&c.routes["ordered"], Endpoint::ChatCompletions, &on)), ["b", "a"]);
        assert_eq!(ids(u.plan(&c.routes["m"], Endpoint::Messages, &off)), ["c"]);
        assert_eq!(ids(u.plan(&c.routes["m"], Endpoint::CountTokens, &on)), ["c"], "no OpenAI equivalent");
        assert_eq!(ids(u.plan(&c.routes["m"], Endpoint::Embeddings, &on)).len(), 2, "no Anthropic equivalent");
        let plan = ids(u.plan(&c.routes["m"], Endpoint::Messages, &on));
        assert_eq!(plan.len(), 3, "translated to chat completions");
        assert_eq!(plan[0], "c", "the client's own family first");
        assert_eq!(ids(u.plan(&c.routes["m"], Endpoint::ChatCompletions, &on))[2], "c", "the other family last");
        let firsts = (0..3000).filter(|_| ids(u.plan(&c.routes["m"], Endpoint::Messages, &mixed))[0] != "c").count();
        assert!(firsts > 1500, "without the preference, weights decide across families ({firsts}/3000)");
        // Weighted split among a and b (weights 1 and 3): b first about 3/4 of the time.
        let first_b =
            (0..4000).filter(|_| ids(u.plan(&c.routes["m"], Endpoint::ChatCompletions, &off))[0] == "b").count();
        assert!((2700..3300).contains(&first_b), "b first {first_b}/4000 times");
    }

    #[test]
    fn cooldown_moves_upstream_last() {
        let c = config("[cooldown]\nfailures = 2\nduration = \"1m\"\n");
        let u = Upstreams::new(&c).unwrap();
        let b = c.routes["ordered"][0].upstream;
        assert!(!u.record(b, false));
        assert!(u.record(b, false), "second consecutive failure starts the cooldown");
        let plan = u.plan(&c.routes["ordered"], Endpoint::ChatCompletions, &TranslationConfig::default());
        assert_eq!(u.get(plan[0].candidate.upstream).id, "a");
        assert_eq!(u.get(plan[1].candidate.upstream).id, "b", "a cooling upstream is still tried, last");
    }

    #[test]
    fn headers_replace_credentials_and_filter() {
        let mut cfg = config("");
        cfg.upstreams[0].api_key_env = Some("KEY_A".into());
        let u = Upstreams::with_keys(&cfg, |name| (name == "KEY_A").then(|| "sk-upstream".to_string())).unwrap();
        assert!(Upstreams::with_keys(&cfg, |_| None).is_err(), "a missing key is an error at startup");
        let mut client = HeaderMap::new();
        client.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer client-key"));
        client.insert("x-api-key", HeaderValue::from_static("client-key"));
        client.insert("x-mock-delay-ms", HeaderValue::from_static("5"));
        client.insert("x-other", HeaderValue::from_static("no"));
        let body = |_: &Planned| Bytes::new();
        let req = AttemptRequest {
            endpoint: Endpoint::ChatCompletions,
            model: "m",
            client_headers: &client,
            extra_headers: &[],
            stream: true,
            body_for: &body,
            trace: None,
        };
        let mut out = Outgoing {
            url: u.entries[0].provider.url(Endpoint::ChatCompletions, "m", true).unwrap(),
            headers: u.upstream_headers(&u.entries[0], &req),
            body: Bytes::new(),
        };
        assert!(!out.headers.contains_key(header::AUTHORIZATION), "the client's key is not forwarded");
        futures_util::FutureExt::now_or_never(u.entries[0].provider.authorize(&mut out)).unwrap().unwrap();
        let h = out.headers;
        assert_eq!(h[header::AUTHORIZATION], "Bearer sk-upstream");
        assert!(h[header::AUTHORIZATION].is_sensitive());
        assert!(!h.contains_key("x-api-key"));
        assert_eq!(h["x-mock-delay-ms"], "5");
        assert!(!h.contains_key("x-other"));
        let h = u.upstream_headers(&u.entries[2], &req);
        assert_eq!(h["anthropic-version"], "2023-06-01");
        assert!(!h.contains_key(header::AUTHORIZATION) && !h.contains_key("x-api-key"), "no key configured, none sent");
    }
}
