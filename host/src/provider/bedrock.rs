//! `bedrock` upstreams: Anthropic models on AWS Bedrock's InvokeModel API. The Messages body goes without `model`
//! and `stream` (the model is in the path: `/model/{id}/invoke`, or `/invoke-with-response-stream` for a stream),
//! with `anthropic_version` (the upstream's `anthropic_version`, default `bedrock-2023-05-31`) and the client's
//! `anthropic-beta` header as the body's `anthropic_beta`. Requests are SigV4-signed for the service name `bedrock`
//! (`sigv4.rs`), or carry a Bedrock API key as a bearer token.
//!
//! A streamed answer is AWS event-stream: each `chunk` event's payload is `{"bytes": base64(one Anthropic stream
//! event)}`, re-framed here as the SSE event it encodes, so the Anthropic dialect, the usage tap, translation and
//! plugins see what they see from Anthropic itself. An exception frame (throttling, validation, model errors) ends
//! the stream with an error in the client's format carrying Bedrock's message; a frame failing its checksums ends it
//! the same way, and nothing of that frame is forwarded. Errors before the stream are `{"message": …}` with the type
//! in `x-amzn-ErrorType`, re-shaped as Anthropic errors.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::eventstream::{Decoder, Message};
use super::sigv4::{self, AwsKeys, Signable};
use super::{ByteStream, Outgoing, Provider, Refused, StreamError};
use crate::api::Endpoint;
use crate::config::{AwsCredentials, Cloud, Upstream};
use crate::error::{ApiError, ErrorKind};

/// The SigV4 service name of the Bedrock runtime (not `bedrock-runtime`).
const SERVICE: &str = "bedrock";
pub const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

enum Auth {
    Keys(AwsKeys),
    Bearer(HeaderValue),
}

pub struct Bedrock {
    base: String,
    region: String,
    /// `anthropic_version` as a JSON string, ready for the body.
    version_json: String,
    auth: Auth,
    describe: String,
}

impl Bedrock {
    pub fn new(u: &Upstream, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Bedrock> {
        let Cloud::Bedrock { region, anthropic_version, credentials } = &u.cloud else {
            anyhow::bail!("upstream `{}` is not a bedrock upstream", u.id);
        };
        let (auth, which) = match credentials {
            AwsCredentials::Bearer => {
                let name = u.api_key_env.as_deref().unwrap_or("AWS_BEARER_TOKEN_BEDROCK");
                let key = super::required(env, &u.id, "api_key_env", name)?;
                (
                    Auth::Bearer(super::secret_header(&format!("Bearer {key}"), &u.id, name)?),
                    format!("API key from ${name}"),
                )
            }
            AwsCredentials::Keys { access_key_env, secret_key_env, session_token_env } => {
                let keys = AwsKeys {
                    access_key_id: super::required(env, &u.id, "access_key_env", access_key_env)?,
                    secret_access_key: super::required(env, &u.id, "secret_key_env", secret_key_env)?,
                    session_token: session_token_env.as_deref().and_then(env).filter(|t| !t.is_empty()),
                };
                let token = session_token_env.as_deref().map(|t| format!(" + ${t}")).unwrap_or_default();
                (Auth::Keys(keys), format!("SigV4 with ${access_key_env} + ${secret_key_env}{token}"))
            }
        };
        Ok(Bedrock {
            base: u.base_url.clone(),
            region: region.clone(),
            version_json: serde_json::Value::from(anthropic_version.as_str()).to_string(),
            auth,
            describe: format!("bedrock at {} (region {region}), {which}", u.base_url),
        })
    }
}

impl Provider for Bedrock {
    fn serves(&self, endpoint: Endpoint) -> bool {
        endpoint == Endpoint::Messages
    }

    fn url(&self, endpoint: Endpoint, model: &str, stream: bool) -> Result<reqwest::Url, Refused> {
        if endpoint != Endpoint::Messages {
            return Err(Refused::Unservable(format!("Bedrock has no {} endpoint", endpoint.path())));
        }
        let action = if stream { "invoke-with-response-stream" } else { "invoke" };
        let url = format!("{}/model/{}/{action}", self.base, sigv4::uri_encode(model, false));
        reqwest::Url::parse(&url).map_err(|e| Refused::Unservable(format!("cannot build the URL: {e}")))
    }

    fn body(&self, _endpoint: Endpoint, body: Bytes, client: &HeaderMap) -> Bytes {
        super::anthropic_envelope(&body, client, &self.version_json, &["model", "stream"])
    }

    fn family_headers(&self, _client: &HeaderMap, stream: bool, h: &mut HeaderMap) {
        h.insert(header::ACCEPT, HeaderValue::from_static(if stream { EVENT_STREAM } else { "application/json" }));
    }

    fn authorize<'a>(&'a self, out: &'a mut Outgoing) -> BoxFuture<'a, Result<(), Refused>> {
        let result = match &self.auth {
            Auth::Bearer(v) => {
                out.headers.insert(header::AUTHORIZATION, v.clone());
                Ok(())
            }
            Auth::Keys(keys) => sign(out, keys, &self.region),
        };
        Box::pin(std::future::ready(result))
    }

    fn is_stream(&self, headers: &HeaderMap) -> bool {
        super::content_type_is(headers, EVENT_STREAM)
    }

    fn stream(&self, resp: reqwest::Response) -> ByteStream {
        reframe(resp.bytes_stream().map(|r| r.map_err(StreamError::Transport)).boxed())
    }

    fn error_body(&self, status: StatusCode, headers: &HeaderMap, body: Bytes) -> Bytes {
        // `x-amzn-ErrorType: ValidationException:http://internal.amazon.com/...`
        let kind =
            headers.get("x-amzn-errortype").and_then(|v| v.to_str().ok()).map(|v| v.split(':').next().unwrap_or(v));
        super::anthropic_error(status, kind, &body)
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

/// Signs `out` with SigV4: `host`, `x-amz-date`, `content-type`, `accept` and the session token are signed.
fn sign(out: &mut Outgoing, keys: &AwsKeys, region: &str) -> Result<(), Refused> {
    let host = match (out.url.host_str(), out.url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => return Err(Refused::Unservable("the URL has no host".into())),
    };
    let value = |h: &HeaderMap, n: header::HeaderName| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (ct, accept) = (value(&out.headers, header::CONTENT_TYPE), value(&out.headers, header::ACCEPT));
    let signed = [("accept", accept.as_str()), ("content-type", ct.as_str())];
    let s = sigv4::sign(
        &Signable {
            method: "POST",
            host: &host,
            path: out.url.path(),
            query: out.url.query().unwrap_or(""),
            headers: &signed,
            body: &out.body,
        },
        keys,
        region,
        SERVICE,
        SystemTime::now(),
    );
    let bad = |what: &str| Refused::Credentials(format!("the AWS {what} is not a valid header value"));
    out.headers.insert("x-amz-date", HeaderValue::from_str(&s.amz_date).map_err(|_| bad("date"))?);
    if let Some(t) = &s.security_token {
        let mut v = HeaderValue::from_str(t).map_err(|_| bad("session token"))?;
        v.set_sensitive(true);
        out.headers.insert("x-amz-security-token", v);
    }
    let mut v = HeaderValue::from_str(&s.authorization).map_err(|_| bad("access key id"))?;
    v.set_sensitive(true);
    out.headers.insert(header::AUTHORIZATION, v);
    Ok(())
}

/// Event-stream bytes in, the Anthropic SSE events they carry out.
pub fn reframe(upstream: ByteStream) -> ByteStream {
    struct State {
        upstream: ByteStream,
        decoder: Decoder,
        /// Base64-decoded event, reused across frames.
        scratch: Vec<u8>,
        /// An error to end with, after the events decoded before it are sent.
        pending: Option<StreamError>,
        done: bool,
    }
    let s = State { upstream, decoder: Decoder::default(), scratch: Vec::new(), pending: None, done: false };
    futures_util::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(e) = s.pending.take() {
                s.done = true;
                return Some((Err(e), s));
            }
            if s.done {
                return None;
            }
            let mut out = BytesMut::new();
            loop {
                match s.decoder.next_message() {
                    Ok(Some(m)) => {
                        if let Err(e) = to_sse(&m, &mut s.scratch, &mut out) {
                            s.pending = Some(StreamError::Provider(e));
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let e = ApiError::new(ErrorKind::UpstreamFailed, format!("Bedrock's answer stream: {e}"));
                        s.pending = Some(StreamError::Provider(e));
                        break;
                    }
                }
            }
            if !out.is_empty() {
                return Some((Ok(out.freeze()), s));
            }
            if s.pending.is_some() {
                continue;
            }
            match s.upstream.next().await {
                Some(Ok(chunk)) => s.decoder.push(&chunk),
                Some(Err(e)) => s.pending = Some(e),
                None if s.decoder.has_partial() => {
                    let e = ApiError::new(
                        ErrorKind::UpstreamFailed,
                        format!("Bedrock's answer stream: {}", super::eventstream::FrameError::Truncated),
                    );
                    s.pending = Some(StreamError::Provider(e));
                }
                None => s.done = true,
            }
        }
    })
    .boxed()
}

/// One event-stream message as SSE, appended to `out`: a `chunk` event is the Anthropic event it encodes; an
/// exception is an error (and `out` is left as it was).
pub(crate) fn to_sse(m: &Message, scratch: &mut Vec<u8>, out: &mut BytesMut) -> Result<(), ApiError> {
    match m.header(":message-type") {
        Some("event") => {}
        Some("exception") => {
            let kind = m.header(":exception-type").unwrap_or("exception");
            let message = serde_json::from_slice::<serde_json::Value>(&m.payload)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or_else(|| "no message".into());
            let error_kind = match kind {
                "throttlingException" | "serviceUnavailableException" => ErrorKind::RateLimited,
                "modelTimeoutException" => ErrorKind::UpstreamTimeout,
                _ => ErrorKind::UpstreamFailed,
            };
            return Err(ApiError::new(error_kind, format!("Bedrock {kind}: {message}")));
        }
        Some("error") => {
            let code = m.header(":error-code").unwrap_or("error");
            let message = m.header(":error-message").unwrap_or("no message");
            return Err(ApiError::new(ErrorKind::UpstreamFailed, format!("Bedrock {code}: {message}")));
        }
        other => {
            return Err(ApiError::new(
                ErrorKind::UpstreamFailed,
                format!("Bedrock's answer stream has a message of type {other:?}"),
            ));
        }
    }
    if m.header(":event-type") != Some("chunk") {
        return Ok(());
    }
    #[derive(serde::Deserialize)]
    struct Chunk<'a> {
        #[serde(borrow)]
        bytes: &'a str,
    }
    #[derive(serde::Deserialize)]
    struct Typed<'a> {
        #[serde(borrow, rename = "type")]
        kind: &'a str,
    }
    let bad = |what: &str| ApiError::new(ErrorKind::UpstreamFailed, format!("Bedrock sent a chunk with {what}"));
    let c: Chunk<'_> = serde_json::from_slice(&m.payload).map_err(|_| bad("no `bytes`"))?;
    scratch.clear();
    STANDARD.decode_vec(c.bytes, scratch).map_err(|_| bad("`bytes` that are not base64"))?;
    // An event whose JSON spans lines is re-serialized: SSE data is one line.
    let one_line;
    let event: &[u8] = if scratch.contains(&b'\n') {
        let v: serde_json::Value = serde_json::from_slice(scratch).map_err(|_| bad("invalid JSON"))?;
        one_line = v.to_string();
        one_line.as_bytes()
    } else {
        scratch
    };
    // A type with escapes (never sent) fails to borrow and is refused like any malformed event.
    let t: Typed<'_> = serde_json::from_slice(event).map_err(|_| bad("an event that is not an Anthropic event"))?;
    out.reserve(event.len() + t.kind.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(t.kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(event);
    out.extend_from_slice(b"\n\n");
    Ok(())
}

/// The other way: Anthropic SSE events in, Bedrock's event-stream frames out, for whoever speaks Bedrock to a client
/// (the gateway's Bedrock routes, the mock). Counts usage as it goes, for the invocation metrics Bedrock adds to
/// `message_stop`.
pub struct Framer {
    started: std::time::Instant,
    input: u64,
    output: u64,
}

impl Default for Framer {
    fn default() -> Framer {
        Framer { started: std::time::Instant::now(), input: 0, output: 0 }
    }
}

impl Framer {
    /// The frame for one SSE event's data: a `chunk` carrying it, or an exception frame for an `error` event.
    /// `None` for what Bedrock does not send (data that is not a JSON object).
    pub fn frame(&mut self, data: &str) -> Option<Bytes> {
        let mut v: serde_json::Value = serde_json::from_str(data).ok()?;
        let obj = v.as_object_mut()?;
        match obj.get("type").and_then(|t| t.as_str()) {
            Some("error") => {
                let kind = match v.pointer("/error/type").and_then(|t| t.as_str()) {
                    Some("rate_limit_error") => "throttlingException",
                    Some("overloaded_error") => "serviceUnavailableException",
                    Some("invalid_request_error") => "validationException",
                    Some("timeout_error") => "modelTimeoutException",
                    _ => "internalServerException",
                };
                let message = v.pointer("/error/message").and_then(|m| m.as_str()).unwrap_or("error");
                let payload = serde_json::json!({ "message": message }).to_string();
                return Some(super::eventstream::encode(
                    &[(":exception-type", kind), (":content-type", "application/json"), (":message-type", "exception")],
                    payload.as_bytes(),
                ));
            }
            Some("message_start") => {
                self.input = v.pointer("/message/usage/input_tokens").and_then(|n| n.as_u64()).unwrap_or(0);
            }
            Some("message_delta") => {
                self.output = v.pointer("/usage/output_tokens").and_then(|n| n.as_u64()).unwrap_or(self.output);
            }
            Some("message_stop") => {
                let ms = self.started.elapsed().as_millis() as u64;
                obj.insert(
                    "amazon-bedrock-invocationMetrics".into(),
                    serde_json::json!({"inputTokenCount": self.input, "outputTokenCount": self.output,
                                       "invocationLatency": ms, "firstByteLatency": ms}),
                );
            }
            _ => {}
        }
        let payload = serde_json::json!({ "bytes": STANDARD.encode(v.to_string()) }).to_string();
        Some(super::eventstream::encode(
            &[(":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")],
            payload.as_bytes(),
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::super::eventstream::encode;
    use super::*;

    fn chunk(event: &str) -> Bytes {
        let payload = serde_json::json!({"bytes": STANDARD.encode(event), "p": "abc"}).to_string();
        encode(
            &[(":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")],
            payload.as_bytes(),
        )
    }

    async fn collect(frames: Vec<Result<Bytes, StreamError>>) -> (String, Option<String>) {
        let mut s = reframe(futures_util::stream::iter(frames).boxed());
        let mut text = String::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => text.push_str(std::str::from_utf8(&b).unwrap()),
                Err(StreamError::Provider(e)) => return (text, Some(e.message)),
                Err(StreamError::Transport(e)) => return (text, Some(e.to_string())),
            }
        }
        (text, None)
    }

    #[tokio::test]
    async fn chunks_become_sse_events() {
        let a = chunk(r#"{"type":"message_start","message":{"id":"m"}}"#);
        let b = chunk("{\"type\":\"message_stop\",\n\"amazon-bedrock-invocationMetrics\":{\"inputTokenCount\":3}}");
        let both = [a.clone(), b].concat();
        let (text, err) = collect(vec![Ok(Bytes::from(both[..7].to_vec())), Ok(Bytes::from(both[7..].to_vec()))]).await;
        assert_eq!(err, None);
        assert_eq!(
            text,
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\"}}\n\n\
             event: message_stop\ndata: {\"amazon-bedrock-invocationMetrics\":{\"inputTokenCount\":3},\"type\":\"message_stop\"}\n\n"
        );
    }

    #[tokio::test]
    async fn exceptions_and_corruption_end_the_stream_with_an_error() {
        let ok = chunk(r#"{"type":"ping"}"#);
        let exc = encode(
            &[
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            br#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        let (text, err) = collect(vec![Ok(Bytes::from([ok.clone(), exc].concat()))]).await;
        assert_eq!(text, "event: ping\ndata: {\"type\":\"ping\"}\n\n", "what came before is sent");
        assert_eq!(err.unwrap(), "Bedrock throttlingException: Too many requests, please wait before trying again.");

        let mut bad = chunk(r#"{"type":"ping"}"#).to_vec();
        let n = bad.len();
        bad[n - 8] ^= 1;
        let (text, err) = collect(vec![Ok(ok.clone()), Ok(Bytes::from(bad))]).await;
        assert_eq!(text, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
        assert!(err.unwrap().contains("checksum"), "nothing of the corrupt frame is forwarded");

        let (_, err) = collect(vec![Ok(ok.slice(..ok.len() - 3))]).await;
        assert!(err.unwrap().contains("ended inside a frame"));
    }
}
