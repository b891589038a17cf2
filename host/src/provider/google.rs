//! Google credentials for Vertex AI: a service-account key (an RS256-signed JWT exchanged for an access token at the
//! key's `token_uri`) or application-default credentials of a user (a refresh token), as Google's libraries read
//! them from `GOOGLE_APPLICATION_CREDENTIALS` or a path.
//!
//! Tokens are cached and refreshed ahead of their expiry by one request at a time: requests keep using the current
//! token while one of them refreshes it, and wait only when there is no usable token. A refused token (HTTP 401/403
//! from Vertex) is forgotten, so the next request fetches a new one. Errors name the file, the token endpoint and the
//! endpoint's error code, never a key or a token.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Deserialize;

const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// A token this close to its expiry is refreshed by the next request (Google's libraries use 3 min 45 s).
const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// A token this close to its expiry is not used at all.
const MIN_LEFT: Duration = Duration::from_secs(10);

/// Where tokens come from.
enum Source {
    ServiceAccount { email: String, key_id: String, key: Box<RsaKeyPair>, token_uri: String },
    User { client_id: String, client_secret: String, refresh_token: String, token_uri: String },
}

#[derive(Deserialize)]
struct File {
    #[serde(rename = "type")]
    kind: String,
    client_email: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
    token_uri: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

#[derive(Clone)]
struct Token {
    header: http::HeaderValue,
    expires: Instant,
}

/// A cached access token and how to get the next one.
pub struct TokenSource {
    source: Source,
    client: reqwest::Client,
    current: RwLock<Option<Token>>,
    refresh: tokio::sync::Mutex<()>,
}

impl TokenSource {
    /// Reads a credentials file (`what` says where its path came from, for errors).
    pub fn from_file(path: &Path, what: &str, client: reqwest::Client) -> Result<Arc<TokenSource>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the Google credentials file {} ({what}): {e}", path.display()))?;
        let source =
            parse(&text).map_err(|m| format!("the Google credentials file {} ({what}) {m}", path.display()))?;
        Ok(Arc::new(TokenSource { source, client, current: RwLock::new(None), refresh: tokio::sync::Mutex::new(()) }))
    }

    /// The `authorization` header value to send now.
    pub async fn header(&self) -> Result<http::HeaderValue, String> {
        let now = Instant::now();
        let current = self.current.read().ok().and_then(|c| c.clone());
        if let Some(t) = &current {
            if t.expires > now + REFRESH_AHEAD {
                return Ok(t.header.clone());
            }
            // Still usable: one request refreshes, the others go on with it.
            if t.expires > now + MIN_LEFT {
                let Ok(_guard) = self.refresh.try_lock() else { return Ok(t.header.clone()) };
                return match self.fetch().await {
                    Ok(t) => Ok(t),
                    Err(e) => {
                        tracing::warn!(error = %e, "refreshing the Vertex access token failed; the current one is still valid");
                        Ok(t.header.clone())
                    }
                };
            }
        }
        let _guard = self.refresh.lock().await;
        // Another request may have refreshed it while this one waited.
        if let Some(t) = self.current.read().ok().and_then(|c| c.clone())
            && t.expires > Instant::now() + MIN_LEFT
        {
            return Ok(t.header);
        }
        self.fetch().await
    }

    /// Vertex refused the token: the next request fetches a new one. True when there was one to forget.
    pub fn invalidate(&self) -> bool {
        self.current.write().is_ok_and(|mut c| c.take().is_some())
    }

    async fn fetch(&self) -> Result<http::HeaderValue, String> {
        let (uri, form) = match &self.source {
            Source::ServiceAccount { email, key_id, key, token_uri } => {
                let assertion = assertion(email, key_id, key, token_uri, SystemTime::now())?;
                let form = vec![
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer".to_string()),
                    ("assertion", assertion),
                ];
                (token_uri, form)
            }
            Source::User { client_id, client_secret, refresh_token, token_uri } => {
                let form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("client_id", client_id.clone()),
                    ("client_secret", client_secret.clone()),
                    ("refresh_token", refresh_token.clone()),
                ];
                (token_uri, form)
            }
        };
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", super::sigv4::uri_encode(v, false)))
            .collect::<Vec<_>>()
            .join("&");
        let sent = Instant::now();
        let resp = self
            .client
            .post(uri.as_str())
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| {
                let why = if e.is_timeout() { "no answer within 30s" } else { "the connection failed" };
                format!("the token endpoint {uri} is unreachable ({why})")
            })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        #[derive(Deserialize)]
        struct Answer {
            access_token: Option<String>,
            expires_in: Option<u64>,
            error: Option<String>,
            error_description: Option<String>,
        }
        let a: Answer = serde_json::from_str(&text)
            .map_err(|_| format!("the token endpoint {uri} answered HTTP {status} with a body that is not a token"))?;
        let token = match (status.is_success(), a.access_token) {
            (true, Some(t)) => t,
            _ => {
                let code = a.error.unwrap_or_else(|| "no error code".into());
                let why = a.error_description.map(|d| format!(": {d}")).unwrap_or_default();
                return Err(format!("the token endpoint {uri} refused the credentials (HTTP {status}, {code}{why})"));
            }
        };
        let mut header = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| format!("the token endpoint {uri} returned a token that is not a valid header value"))?;
        header.set_sensitive(true);
        let t = Token { header: header.clone(), expires: sent + Duration::from_secs(a.expires_in.unwrap_or(3600)) };
        if let Ok(mut c) = self.current.write() {
            *c = Some(t);
        }
        Ok(header)
    }
}

fn parse(text: &str) -> Result<Source, String> {
    let f: File = serde_json::from_str(text).map_err(|e| format!("is not valid JSON: {}", e.classify_name()))?;
    let need = |v: Option<String>, k: &str| v.filter(|s| !s.is_empty()).ok_or_else(|| format!("has no `{k}`"));
    match f.kind.as_str() {
        "service_account" => {
            let pem = need(f.private_key, "private_key")?;
            let der = pem_body(&pem).ok_or("has a `private_key` that is not a PEM private key")?;
            let key = Box::new(
                RsaKeyPair::from_pkcs8(&der)
                    .map_err(|e| format!("has a `private_key` that is not a usable RSA key ({e})"))?,
            );
            Ok(Source::ServiceAccount {
                email: need(f.client_email, "client_email")?,
                key_id: need(f.private_key_id, "private_key_id")?,
                key,
                token_uri: f.token_uri.unwrap_or_else(|| DEFAULT_TOKEN_URI.into()),
            })
        }
        "authorized_user" => Ok(Source::User {
            client_id: need(f.client_id, "client_id")?,
            client_secret: need(f.client_secret, "client_secret")?,
            refresh_token: need(f.refresh_token, "refresh_token")?,
            token_uri: f.token_uri.unwrap_or_else(|| DEFAULT_TOKEN_URI.into()),
        }),
        other => Err(format!(
            "has type `{other}`; Weir reads `service_account` keys and `authorized_user` application-default credentials"
        )),
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}
impl ClassifyName for serde_json::Error {
    /// The error's category only: a message could quote the file (a key).
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "a field has the wrong type or is missing",
            serde_json::error::Category::Eof => "the file ends early",
        }
    }
}

/// The DER bytes of a PEM block.
pub fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let b64: String = pem.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("-----")).collect();
    STANDARD.decode(b64).ok()
}

/// The signed JWT a service account exchanges for an access token (RFC 7523): RS256, `kid` = the key's id, issued
/// by and for the account, for the token endpoint, scope `cloud-platform`, valid one hour.
pub fn assertion(
    email: &str,
    key_id: &str,
    key: &RsaKeyPair,
    token_uri: &str,
    now: SystemTime,
) -> Result<String, String> {
    let iat = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": key_id});
    let claims = serde_json::json!({"iss": email, "sub": email, "aud": token_uri, "scope": SCOPE, "iat": iat, "exp": iat + 3600});
    let signing_input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), signing_input.as_bytes(), &mut sig)
        .map_err(|_| "signing the token request failed".to_string())?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;
    use ring::signature::{KeyPair, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    const TEST_KEY: &str = include_str!("../../../examples/cloud/vertex-service-account.json");

    #[test]
    fn the_assertion_verifies_with_the_public_key() {
        let Source::ServiceAccount { email, key_id, key, token_uri } = parse(TEST_KEY).unwrap() else { panic!() };
        let jwt = assertion(&email, &key_id, &key, &token_uri, SystemTime::now()).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key().as_ref());
        public.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], token_uri.as_str());
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 3600);
    }

    #[test]
    fn bad_files_say_what_is_wrong_without_quoting_them() {
        let e = |t: &str| parse(t).err().unwrap();
        assert!(e("{\"type\":\"service_account\",\"private_key\":\"sekrit").contains("not valid JSON"));
        assert!(!e("{\"type\":\"service_account\",\"private_key\":\"sekrit").contains("sekrit"));
        assert!(e(r#"{"type":"service_account"}"#).contains("no `private_key`"));
        let bad = r#"{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----","client_email":"a","private_key_id":"b"}"#;
        assert!(e(bad).contains("not a usable RSA key"));
        assert!(e(r#"{"type":"external_account"}"#).contains("external_account"));
        assert!(matches!(
            parse(r#"{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r"}"#).unwrap(),
            Source::User { token_uri, .. } if token_uri == DEFAULT_TOKEN_URI
        ));
    }
}
