//! The mock's cloud routes: Bedrock InvokeModel, Vertex AI rawPredict with its token endpoint, and Azure OpenAI.
//! Each checks what the cloud checks, with the cloud's own error shapes, then answers through the mock's Anthropic
//! or OpenAI handler and re-frames the answer the way the cloud does.
//!
//! | route | checks | answer |
//! |---|---|---|
//! | `POST /model/{id}/invoke`, `/invoke-with-response-stream` | SigV4 against [`AWS_ACCESS_KEY_ID`]/[`AWS_SECRET_ACCESS_KEY`] (service `bedrock`, 5 min clock skew) or the bearer [`BEDROCK_API_KEY`]; body has `anthropic_version`, no `model`/`stream` | Messages JSON with `x-amzn-bedrock-*-token-count` headers; streams as event-stream `chunk` frames with real CRCs, `amazon-bedrock-invocationMetrics` in the last; errors `{"message"}` + `x-amzn-ErrorType` |
//! | `POST /token` | an RS256 JWT assertion verified against the test service account's public key (`examples/cloud/vertex-service-account.json`), or the test refresh token | `{"access_token", "expires_in"}` |
//! | `POST /v1/projects/{p}/locations/{r}/publishers/anthropic/models/{model}:rawPredict` / `:streamRawPredict` | a token this mock issued; body has `anthropic_version`, no `model` | Anthropic JSON / SSE; Google-shaped 401 |
//! | `POST /openai/deployments/{d}/chat/completions` / `embeddings` | `api-version` query, `api-key` = [`AZURE_API_KEY`] | OpenAI, the deployment as model |
//! | `POST /openai/v1/chat/completions` / `responses` / `embeddings` | `api-key` | OpenAI |
//!
//! Extra controls: `x-mock-bedrock-exception: TYPE` with `x-mock-bedrock-exception-after: N` (an exception frame
//! after N events), `x-mock-bedrock-corrupt-after: N` (event N's message CRC broken), `x-mock-azure-filter: 1` (a
//! stream opens with Azure's empty-choices `prompt_filter_results` chunk), `x-mock-azure-content-filter: 1` (the
//! prompt is refused with Azure's 400 `content_filter`). `POST /_mock/revoke-tokens` forgets every issued token.
//! With `x-mock-tag`, a Bedrock request is kept exactly as received (method, raw path, headers, body bytes) at
//! `GET /_mock/raw?tag=T`, for the SigV4 oracle test; the last ten JWT assertions are at `?tag=_token`.

// Handlers answer with a `Response` as their error, as axum handlers do (the mock is not on a hot path).
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use serde_json::{Value, json};

use super::{Mock, handle};
use crate::api::Endpoint;
use crate::provider::{eventstream, google, sigv4};

/// The mock's test credentials. They grant nothing anywhere else.
pub const AWS_ACCESS_KEY_ID: &str = "AKIAWEIRMOCKEXAMPLE1";
pub const AWS_SECRET_ACCESS_KEY: &str = "weirMockSecretKey/DoNotUse+EXAMPLEKEY00000";
pub const BEDROCK_API_KEY: &str = "weir-mock-bedrock-api-key";
pub const AZURE_API_KEY: &str = "weir-mock-azure-key";
pub const GOOGLE_REFRESH_TOKEN: &str = "weir-mock-refresh-token";
/// The test service account; the mock verifies token requests against its public key.
pub const SERVICE_ACCOUNT: &str = include_str!("../../../examples/cloud/vertex-service-account.json");
const SKEW: Duration = Duration::from_secs(300);

/// What the cloud routes remember: issued Vertex tokens and raw Bedrock requests by tag.
#[derive(Default)]
pub struct CloudState {
    tokens: std::sync::Mutex<HashMap<String, Instant>>,
    raw: std::sync::Mutex<HashMap<String, Vec<Value>>>,
}

pub fn routes(r: axum::Router<Arc<Mock>>) -> axum::Router<Arc<Mock>> {
    use axum::routing::{get, post};
    r.route("/model/{model}/{action}", post(bedrock))
        .route("/token", post(token))
        .route("/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{call}", post(vertex))
        .route("/openai/deployments/{deployment}/{*rest}", post(azure_classic))
        .route("/openai/v1/{*rest}", post(azure_v1))
        .route("/_mock/revoke-tokens", post(revoke))
        .route("/_mock/raw", get(raw))
}

/// The headers for the mock's own handler: the cloud checked its credentials, so the mock's key (with `--api-key`)
/// is put where the handler looks for it.
fn checked(mock: &Mock, mut h: HeaderMap, family: crate::api::Family) -> HeaderMap {
    if let Some(k) = &mock.api_key {
        match family {
            crate::api::Family::OpenAi => {
                h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {k}")).unwrap())
            }
            crate::api::Family::Anthropic => h.insert("x-api-key", HeaderValue::from_str(k).unwrap()),
        };
    }
    h
}

// ---- Bedrock ----------------------------------------------------------------------------------------------------

fn aws_error(status: u16, kind: &str, message: &str) -> Response {
    let mut r =
        (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), axum::Json(json!({"message": message})))
            .into_response();
    let h = r.headers_mut();
    h.insert(
        "x-amzn-errortype",
        HeaderValue::from_str(&format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/")).unwrap(),
    );
    h.insert("x-amzn-requestid", HeaderValue::from_static("00000000-mock-0000-0000-000000000000"));
    r
}

/// Checks a request's SigV4 signature as AWS does; `Err` is AWS's answer.
fn check_sigv4(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<(), Response> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let auth = get("authorization")
        .ok_or_else(|| aws_error(403, "MissingAuthenticationTokenException", "Missing Authentication Token"))?;
    if let Some(key) = auth.strip_prefix("Bearer ") {
        return if key == BEDROCK_API_KEY {
            Ok(())
        } else {
            Err(aws_error(403, "UnrecognizedClientException", "The security token included in the request is invalid."))
        };
    }
    let incomplete = || {
        aws_error(
            403,
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders'.",
        )
    };
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(incomplete)?;
    let part = |k: &str| rest.split(", ").find_map(|p| p.strip_prefix(k));
    let credential = part("Credential=").ok_or_else(incomplete)?;
    let signed = part("SignedHeaders=").ok_or_else(incomplete)?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, _day, region, service, "aws4_request"] = scope.as_slice() else { return Err(incomplete()) };
    if *key_id != AWS_ACCESS_KEY_ID {
        return Err(aws_error(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    if *service != "bedrock" {
        return Err(aws_error(
            403,
            "InvalidSignatureException",
            &format!("Credential should be scoped to correct service: 'bedrock'. (got '{service}')"),
        ));
    }
    let date = get("x-amz-date").ok_or_else(incomplete)?;
    let when = sigv4::parse_amz_date(date).ok_or_else(incomplete)?;
    let now = SystemTime::now();
    let skew = now.duration_since(when).or_else(|e| Ok::<_, ()>(e.duration())).unwrap_or_default();
    if skew > SKEW {
        return Err(aws_error(
            403,
            "InvalidSignatureException",
            &format!(
                "Signature expired: {date} is now earlier than {} ({} - 5 min.)",
                sigv4::amz_date(now - SKEW),
                sigv4::amz_date(now)
            ),
        ));
    }
    let host = get("host").unwrap_or_default();
    let values: Vec<(String, String)> = signed
        .split(';')
        .filter(|n| !matches!(*n, "host" | "x-amz-date" | "x-amz-security-token"))
        .map(|n| (n.to_string(), get(n).unwrap_or_default().to_string()))
        .collect();
    let pairs: Vec<(&str, &str)> = values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let keys = sigv4::AwsKeys {
        access_key_id: AWS_ACCESS_KEY_ID.into(),
        secret_access_key: AWS_SECRET_ACCESS_KEY.into(),
        session_token: get("x-amz-security-token").map(str::to_string),
    };
    let r = sigv4::Signable {
        method: "POST",
        host,
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &pairs,
        body,
    };
    let want = sigv4::sign(&r, &keys, region, "bedrock", when).authorization;
    if want != auth {
        return Err(aws_error(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ));
    }
    Ok(())
}

async fn bedrock(
    State(mock): State<Arc<Mock>>,
    Path((model, action)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(tag) = headers.get("x-mock-tag").and_then(|v| v.to_str().ok()) {
        let h: Vec<(String, String)> =
            headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
        let rec = json!({"method": "POST", "path": uri.path(), "query": uri.query(), "headers": h, "body_b64": STANDARD.encode(&body)});
        mock.cloud.raw.lock().unwrap().entry(tag.to_string()).or_default().push(rec);
    }
    let stream = match action.as_str() {
        "invoke" => false,
        "invoke-with-response-stream" => true,
        _ => return aws_error(404, "UnknownOperationException", "Unknown operation"),
    };
    if let Err(r) = check_sigv4(&uri, &headers, &body) {
        return r;
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&body) else {
        return aws_error(
            400,
            "ValidationException",
            "Malformed input request, please reformat your input and try again.",
        );
    };
    for k in ["model", "stream"] {
        if obj.contains_key(k) {
            return aws_error(
                400,
                "ValidationException",
                &format!(
                    "Malformed input request: #: extraneous key [{k}] is not permitted, please reformat your input and try again."
                ),
            );
        }
    }
    if !obj.get("anthropic_version").is_some_and(Value::is_string) {
        return aws_error(
            400,
            "ValidationException",
            "Malformed input request: #: required key [anthropic_version] not found, please reformat your input and try again.",
        );
    }
    obj.remove("anthropic_version");
    obj.remove("anthropic_beta");
    obj.insert("model".into(), json!(model));
    obj.insert("stream".into(), json!(stream));
    let h = checked(&mock, headers.clone(), crate::api::Family::Anthropic);
    let inner = handle(mock, Endpoint::Messages, h, Bytes::from(Value::Object(obj).to_string())).await;
    let (parts, body) = inner.into_parts();
    if !parts.status.is_success() {
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let message = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("error").to_string();
        let kind = match parts.status.as_u16() {
            400 => "ValidationException",
            401 | 403 => "AccessDeniedException",
            404 => "ResourceNotFoundException",
            429 => "ThrottlingException",
            503 | 529 => "ServiceUnavailableException",
            _ => "InternalServerException",
        };
        return aws_error(parts.status.as_u16(), kind, &message);
    }
    if !stream {
        let bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap_or_default();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let mut r = Response::new(Body::from(bytes));
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, ptr) in [
            ("x-amzn-bedrock-input-token-count", "/usage/input_tokens"),
            ("x-amzn-bedrock-output-token-count", "/usage/output_tokens"),
        ] {
            if let Some(n) = v.pointer(ptr).and_then(Value::as_u64) {
                h.insert(name, HeaderValue::from(n));
            }
        }
        return r;
    }
    let ctl = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let exception = ctl("x-mock-bedrock-exception");
    let exception_after: Option<usize> = ctl("x-mock-bedrock-exception-after").and_then(|v| v.parse().ok());
    let corrupt_after: Option<usize> = ctl("x-mock-bedrock-corrupt-after").and_then(|v| v.parse().ok());
    struct Frames {
        parser: crate::sse::SseParser,
        framer: crate::provider::Framer,
        sent: usize,
        ended: bool,
    }
    let st = Frames { parser: crate::sse::SseParser::new(), framer: Default::default(), sent: 0, ended: false };
    let framed = body
        .into_data_stream()
        .scan(st, move |st, chunk| {
            let out: Vec<Result<Bytes, std::io::Error>> = match chunk {
                Err(e) => vec![Err(std::io::Error::other(e.to_string()))],
                Ok(_) if st.ended => vec![],
                Ok(c) => {
                    st.parser.push(&c);
                    let mut frames = Vec::new();
                    while let Some(ev) = st.parser.next_event() {
                        if let (Some(k), Some(after)) = (&exception, exception_after)
                            && st.sent == after
                        {
                            let msg = format!("the mock was asked for a {k} after {after} events");
                            frames.push(Ok(eventstream::encode(
                                &[
                                    (":exception-type", k),
                                    (":content-type", "application/json"),
                                    (":message-type", "exception"),
                                ],
                                json!({"message": msg}).to_string().as_bytes(),
                            )));
                            st.ended = true;
                            break;
                        }
                        let Some(frame) = st.framer.frame(&ev.fields().data) else { continue };
                        let mut frame = frame.to_vec();
                        if corrupt_after == Some(st.sent) {
                            let n = frame.len();
                            frame[n - 1] ^= 0xff;
                        }
                        frames.push(Ok(Bytes::from(frame)));
                        st.sent += 1;
                    }
                    frames
                }
            };
            std::future::ready(Some(futures_util::stream::iter(out)))
        })
        .flatten();
    let mut r = Response::new(Body::from_stream(framed));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::provider::EVENT_STREAM));
    r
}

// ---- Vertex AI --------------------------------------------------------------------------------------------------

fn google_error(status: u16, message: &str, code: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        axum::Json(json!({"error": {"code": status, "message": message, "status": code}})),
    )
        .into_response()
}

fn oauth_error(error: &str, description: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": error, "error_description": description}))).into_response()
}

/// Verifies a service account's JWT assertion as Google's token endpoint does.
fn verify_assertion(jwt: &str) -> Result<(), Response> {
    use ring::signature::{KeyPair, RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey};
    let sa: Value = serde_json::from_str(SERVICE_ACCOUNT).unwrap();
    let der = google::pem_body(sa["private_key"].as_str().unwrap()).unwrap();
    let key = RsaKeyPair::from_pkcs8(&der).unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, s] = parts.as_slice() else {
        return Err(oauth_error(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
        ));
    };
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let (Some(header), Some(claims), Ok(sig)) = (decode(h), decode(c), URL_SAFE_NO_PAD.decode(s)) else {
        return Err(oauth_error("invalid_grant", "Invalid JWT: malformed"));
    };
    if header["alg"] != "RS256" || header["kid"] != sa["private_key_id"] {
        return Err(oauth_error("invalid_grant", "Invalid JWT Signature."));
    }
    let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key().as_ref());
    if public.verify(format!("{h}.{c}").as_bytes(), &sig).is_err() {
        return Err(oauth_error("invalid_grant", "Invalid JWT Signature."));
    }
    if claims["iss"] != sa["client_email"] {
        return Err(oauth_error("invalid_grant", "Invalid JWT: the issuer is not the service account"));
    }
    if !claims["aud"].as_str().is_some_and(|a| a.ends_with("/token")) {
        return Err(oauth_error("invalid_grant", "Invalid JWT: Failed audience check."));
    }
    if !claims["scope"]
        .as_str()
        .is_some_and(|s| s.split(' ').any(|s| s == "https://www.googleapis.com/auth/cloud-platform"))
    {
        return Err(oauth_error("invalid_scope", "Invalid OAuth scope or ID token audience provided."));
    }
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (iat, exp) = (claims["iat"].as_i64().unwrap_or(0), claims["exp"].as_i64().unwrap_or(0));
    if exp <= now || exp - iat > 3600 || iat > now + 300 {
        return Err(oauth_error(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    Ok(())
}

async fn token(State(mock): State<Arc<Mock>>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    // Kept for the oracle test (google-auth verifies the assertion the gateway sent).
    if let Some(a) = form.get("assertion") {
        let mut raw = mock.cloud.raw.lock().unwrap();
        let v = raw.entry("_token".into()).or_default();
        v.push(json!({"assertion": a}));
        let n = v.len();
        v.drain(..n.saturating_sub(10));
    }
    let checked = match form.get("grant_type").map(String::as_str) {
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            verify_assertion(form.get("assertion").map_or("", String::as_str))
        }
        Some("refresh_token") if form.get("refresh_token").map(String::as_str) == Some(GOOGLE_REFRESH_TOKEN) => Ok(()),
        Some("refresh_token") => Err(oauth_error("invalid_grant", "Bad Request")),
        _ => Err(oauth_error("unsupported_grant_type", "Invalid grant_type")),
    };
    if let Err(r) = checked {
        return r;
    }
    let t = format!("ya29.mock-{:016x}", fastrand::u64(..));
    mock.cloud.tokens.lock().unwrap().insert(t.clone(), Instant::now() + Duration::from_secs(3599));
    axum::Json(json!({"access_token": t, "expires_in": 3599, "token_type": "Bearer"})).into_response()
}

async fn revoke(State(mock): State<Arc<Mock>>) -> Response {
    let n = std::mem::take(&mut *mock.cloud.tokens.lock().unwrap()).len();
    axum::Json(json!({"revoked": n})).into_response()
}

async fn vertex(
    State(mock): State<Arc<Mock>>,
    Path((_project, _region, call)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let valid =
        token.is_some_and(|t| mock.cloud.tokens.lock().unwrap().get(t).is_some_and(|exp| *exp > Instant::now()));
    if !valid {
        return google_error(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
            "UNAUTHENTICATED",
        );
    }
    let Some((model, action)) = call.rsplit_once(':') else {
        return google_error(404, "The requested URL was not found on this server.", "NOT_FOUND");
    };
    let stream_url = match action {
        "rawPredict" => false,
        "streamRawPredict" => true,
        _ => return google_error(404, "The requested URL was not found on this server.", "NOT_FOUND"),
    };
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&body) else {
        return google_error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT");
    };
    if obj.contains_key("model") {
        return super::error_response(
            crate::api::Family::Anthropic,
            400,
            "model: Extra inputs are not permitted",
            None,
        );
    }
    if !obj.get("anthropic_version").is_some_and(Value::is_string) {
        return super::error_response(crate::api::Family::Anthropic, 400, "anthropic_version: Field required", None);
    }
    if obj.get("stream").and_then(Value::as_bool).unwrap_or(false) != stream_url {
        return super::error_response(
            crate::api::Family::Anthropic,
            400,
            "stream must be true for streamRawPredict and absent or false for rawPredict",
            None,
        );
    }
    obj.remove("anthropic_version");
    obj.remove("anthropic_beta");
    obj.insert("model".into(), json!(model));
    let h = checked(&mock, headers, crate::api::Family::Anthropic);
    handle(mock, Endpoint::Messages, h, Bytes::from(Value::Object(obj).to_string())).await
}

// ---- Azure OpenAI -----------------------------------------------------------------------------------------------

fn azure_error(status: u16, code: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct ApiVersion {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

async fn azure_classic(
    State(mock): State<Arc<Mock>>,
    Path((deployment, rest)): Path<(String, String)>,
    Query(q): Query<ApiVersion>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if q.api_version.is_none() {
        return azure_error(404, "404", "Resource not found");
    }
    azure(mock, &rest, Some(deployment), headers, body).await
}

async fn azure_v1(
    State(mock): State<Arc<Mock>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    azure(mock, &rest, None, headers, body).await
}

async fn azure(mock: Arc<Mock>, rest: &str, deployment: Option<String>, headers: HeaderMap, body: Bytes) -> Response {
    if headers.get("api-key").and_then(|v| v.to_str().ok()) != Some(AZURE_API_KEY) {
        return azure_error(
            401,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
        );
    }
    let endpoint = match rest {
        "chat/completions" => Endpoint::ChatCompletions,
        "embeddings" => Endpoint::Embeddings,
        "responses" if deployment.is_none() => Endpoint::Responses,
        _ => return azure_error(404, "404", "Resource not found"),
    };
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&body) else {
        return azure_error(400, "BadRequest", "Invalid JSON body");
    };
    if let Some(d) = deployment {
        obj.insert("model".into(), json!(d));
    }
    if headers.contains_key("x-mock-azure-content-filter") {
        let e = json!({"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.",
            "type": null, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {"hate": {"filtered": true, "severity": "high"}}}}});
        return (StatusCode::BAD_REQUEST, axum::Json(e)).into_response();
    }
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let h = checked(&mock, headers.clone(), crate::api::Family::OpenAi);
    let r = handle(mock, endpoint, h, Bytes::from(Value::Object(obj).to_string())).await;
    if !(stream && endpoint == Endpoint::ChatCompletions && headers.contains_key("x-mock-azure-filter")) {
        return r;
    }
    let filter = json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": false, "severity": "safe"}}}]});
    let first = Bytes::from(format!("data: {filter}\n\n"));
    let (parts, body) = r.into_parts();
    let body =
        futures_util::stream::once(std::future::ready(Ok::<_, axum::Error>(first))).chain(body.into_data_stream());
    Response::from_parts(parts, Body::from_stream(body))
}

async fn raw(State(mock): State<Arc<Mock>>, Query(q): Query<super::TagQuery>) -> Response {
    axum::Json(mock.cloud.raw.lock().unwrap().get(&q.tag).cloned().unwrap_or_default()).into_response()
}
