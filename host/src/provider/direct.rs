//! `openai`, `anthropic` and `openai-compatible` upstreams: `base_url` plus the endpoint's path, the key as the
//! family sends it (`Authorization: Bearer` / `x-api-key`), SSE streams.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::{Outgoing, Provider, Refused};
use crate::api::{Endpoint, Family};
use crate::config::Upstream;

/// Anthropic API version sent when the client did not choose one.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

pub struct Direct {
    family: Family,
    /// `base_url` + each endpoint's path, parsed once (parsing per request showed in profiles).
    urls: Vec<reqwest::Url>,
    auth: Option<(HeaderName, HeaderValue)>,
    describe: String,
}

impl Direct {
    pub fn new(u: &Upstream, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Direct> {
        let family = u.kind.family();
        let auth = match &u.api_key_env {
            None => None,
            Some(name) => {
                let key = super::required(env, &u.id, "api_key_env", name)?;
                Some(match family {
                    Family::Anthropic => {
                        (HeaderName::from_static("x-api-key"), super::secret_header(&key, &u.id, name)?)
                    }
                    Family::OpenAi => {
                        (header::AUTHORIZATION, super::secret_header(&format!("Bearer {key}"), &u.id, name)?)
                    }
                })
            }
        };
        let urls = Endpoint::ALL
            .iter()
            .map(|e| reqwest::Url::parse(&format!("{}{}", u.base_url, e.upstream_path())))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| anyhow::anyhow!("upstream `{}`: base_url: {err}", u.id))?;
        let describe = format!(
            "{} at {}, {}",
            u.kind.as_str(),
            u.base_url,
            u.api_key_env.as_deref().map_or_else(|| "no key".to_string(), |e| format!("key from ${e}"))
        );
        Ok(Direct { family, urls, auth, describe })
    }
}

impl Provider for Direct {
    fn serves(&self, endpoint: Endpoint) -> bool {
        endpoint.family() == self.family
    }

    fn url(&self, endpoint: Endpoint, _model: &str, _stream: bool) -> Result<reqwest::Url, Refused> {
        self.urls.get(endpoint as usize).cloned().ok_or_else(|| Refused::Unservable("no such endpoint".into()))
    }

    fn family_headers(&self, client: &HeaderMap, _stream: bool, h: &mut HeaderMap) {
        if self.family == Family::Anthropic {
            super::anthropic_headers(client, h, DEFAULT_ANTHROPIC_VERSION);
        }
    }

    fn authorize<'a>(&'a self, out: &'a mut Outgoing) -> BoxFuture<'a, Result<(), Refused>> {
        if let Some((name, value)) = &self.auth {
            out.headers.insert(name.clone(), value.clone());
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}
