//! `vertex` upstreams: Anthropic models on Google Vertex AI. The Messages body goes without `model` (it is in the
//! path: `/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:rawPredict`, or
//! `:streamRawPredict` for a stream, whose body keeps `stream`), with `anthropic_version` (the upstream's, default
//! `vertex-2023-10-16`) and the client's `anthropic-beta` as `anthropic_beta`. Streams are Anthropic SSE. Requests
//! carry an OAuth access token from the upstream's Google credentials (`google.rs`). Google's own errors
//! (`{"error": {"code", "message", "status"}}`) are re-shaped as Anthropic errors.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, StatusCode, header};

use super::google::TokenSource;
use super::{Outgoing, Provider, Refused};
use crate::api::Endpoint;
use crate::config::{Cloud, GoogleCredentials, Upstream};

pub struct Vertex {
    /// `{base}/v1/projects/{project}/locations/{region}/publishers/anthropic/models/`
    prefix: String,
    version_json: String,
    tokens: Arc<TokenSource>,
    describe: String,
}

impl Vertex {
    pub fn new(u: &Upstream, client: &reqwest::Client, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Vertex> {
        let Cloud::Vertex { project, region, anthropic_version, credentials } = &u.cloud else {
            anyhow::bail!("upstream `{}` is not a vertex upstream", u.id);
        };
        let (path, what) = match credentials {
            GoogleCredentials::File(p) => (p.clone(), "credentials_file".to_string()),
            GoogleCredentials::Env(name) => {
                (PathBuf::from(super::required(env, &u.id, "credentials_env", name)?), format!("from ${name}"))
            }
        };
        let tokens = TokenSource::from_file(&path, &what, client.clone())
            .map_err(|e| anyhow::anyhow!("upstream `{}`: {e}", u.id))?;
        Ok(Vertex {
            prefix: format!("{}/v1/projects/{project}/locations/{region}/publishers/anthropic/models/", u.base_url),
            version_json: serde_json::Value::from(anthropic_version.as_str()).to_string(),
            tokens,
            describe: format!(
                "vertex at {} (project {project}, region {region}), Google credentials {} ({what})",
                u.base_url,
                path.display()
            ),
        })
    }
}

impl Provider for Vertex {
    fn serves(&self, endpoint: Endpoint) -> bool {
        endpoint == Endpoint::Messages
    }

    fn url(&self, endpoint: Endpoint, model: &str, stream: bool) -> Result<reqwest::Url, Refused> {
        if endpoint != Endpoint::Messages {
            return Err(Refused::Unservable(format!("Vertex AI has no {} endpoint here", endpoint.path())));
        }
        // A model id is letters, digits, `-`, `.`, `_` and `@` (its version): nothing else may reach the path.
        if model.is_empty() || !model.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '@')) {
            return Err(Refused::Unservable(format!("`{model}` is not a Vertex AI model id")));
        }
        let action = if stream { "streamRawPredict" } else { "rawPredict" };
        reqwest::Url::parse(&format!("{}{model}:{action}", self.prefix))
            .map_err(|e| Refused::Unservable(format!("cannot build the URL: {e}")))
    }

    fn body(&self, _endpoint: Endpoint, body: Bytes, client: &HeaderMap) -> Bytes {
        super::anthropic_envelope(&body, client, &self.version_json, &["model"])
    }

    fn authorize<'a>(&'a self, out: &'a mut Outgoing) -> BoxFuture<'a, Result<(), Refused>> {
        Box::pin(async move {
            let token = self.tokens.header().await.map_err(Refused::Credentials)?;
            out.headers.insert(header::AUTHORIZATION, token);
            Ok(())
        })
    }

    fn error_body(&self, status: StatusCode, _headers: &HeaderMap, body: Bytes) -> Bytes {
        super::anthropic_error(status, None, &body)
    }

    fn credentials_rejected(&self) -> bool {
        self.tokens.invalidate()
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}
