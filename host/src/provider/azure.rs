//! `azure-openai` upstreams: the OpenAI dialect on Azure's paths. With `api_version`, the classic deployment API
//! (`{base}/openai/deployments/{model}/chat/completions?api-version=V`, the model sent being the deployment's
//! name); without, the v1 API (`{base}/openai/v1/chat/completions`, the deployment in the body's `model`). The key
//! (`api_key_env`) is sent as `api-key`. Azure's answers are OpenAI's, plus content-filter results (a stream may open
//! with a chunk whose `choices` is empty; `finish_reason` may be `content_filter`), which the dialect passes through.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue};

use super::{Outgoing, Provider, Refused};
use crate::api::Endpoint;
use crate::config::Upstream;

pub struct Azure {
    base: String,
    api_version: Option<String>,
    key: Option<HeaderValue>,
    describe: String,
}

impl Azure {
    pub fn new(
        u: &Upstream,
        api_version: Option<String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Azure> {
        let key = match &u.api_key_env {
            Some(name) => Some(super::secret_header(&super::required(env, &u.id, "api_key_env", name)?, &u.id, name)?),
            None => None,
        };
        let describe = format!(
            "azure-openai at {}, {}, {}",
            u.base_url,
            api_version.as_deref().map_or_else(|| "v1 API".to_string(), |v| format!("api-version {v}")),
            u.api_key_env.as_deref().map_or_else(|| "no key".to_string(), |e| format!("api-key from ${e}"))
        );
        Ok(Azure { base: u.base_url.clone(), api_version, key, describe })
    }
}

impl Provider for Azure {
    fn serves(&self, endpoint: Endpoint) -> bool {
        match endpoint {
            Endpoint::ChatCompletions | Endpoint::Embeddings => true,
            Endpoint::Responses => self.api_version.is_none(),
            Endpoint::Messages | Endpoint::CountTokens => false,
        }
    }

    fn url(&self, endpoint: Endpoint, model: &str, _stream: bool) -> Result<reqwest::Url, Refused> {
        let path = endpoint.upstream_path();
        let url = match &self.api_version {
            None => format!("{}/openai/v1{path}", self.base),
            Some(v) => {
                format!(
                    "{}/openai/deployments/{}{path}?api-version={v}",
                    self.base,
                    super::sigv4::uri_encode(model, false)
                )
            }
        };
        reqwest::Url::parse(&url).map_err(|e| Refused::Unservable(format!("cannot build the URL: {e}")))
    }

    fn authorize<'a>(&'a self, out: &'a mut Outgoing) -> BoxFuture<'a, Result<(), Refused>> {
        if let Some(key) = &self.key {
            out.headers.insert(HeaderName::from_static("api-key"), key.clone());
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}
