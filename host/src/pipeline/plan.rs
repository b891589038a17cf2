//! The plan phase: which upstreams to try, in which order, and what each is sent.
//!
//! The candidates are the model's route from the config, or the route a plugin chose (upstream ids from the config,
//! never URLs), ordered by [`crate::upstream::Upstreams::plan`] (health, priority, the client's family first).
//! Each entry carries the endpoint its upstream is asked ([`Planned`], decided once by the upstreams' planner).
//! Entries of the other API family get the body translated once per upstream kind; a refusal to translate leaves
//! them out, and is the answer when no candidate is left.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::Bytes;

use super::App;
use crate::api::Endpoint;
use crate::config::{Candidate, Config, UpstreamIdx, UpstreamKind};
use crate::dialect::body::RequestBody;
use crate::dialect::translate;
use crate::error::{ApiError, ErrorKind};
use crate::upstream::Planned;

/// The candidates to attempt, in order, and the translated bodies for those of the other family.
pub(super) struct Plan {
    pub candidates: Vec<Planned>,
    /// The client's body translated for each upstream kind of the other family in `candidates`.
    translated: Vec<(UpstreamKind, serde_json::Value)>,
    /// What a translated answer needs of the request (the same for every kind).
    back: translate::Back,
}

impl Plan {
    /// `route`: the targets a plugin chose, if one did.
    pub fn new(
        app: &App,
        endpoint: Endpoint,
        req: &RequestBody<'_>,
        bytes: &Bytes,
        route: Option<Vec<(String, Option<String>)>>,
    ) -> Result<Plan, ApiError> {
        let routed;
        let route: &[Candidate] = match route {
            Some(targets) => {
                routed = plugin_route(&app.config, targets)?;
                &routed
            }
            None => app.config.routes.get(req.model.as_ref()).ok_or_else(|| {
                ApiError::new(
                    ErrorKind::ModelNotFound,
                    format!(
                        "model `{}` is not served by this gateway; GET /v1/models lists the models it serves",
                        req.model
                    ),
                )
            })?,
        };
        let mut candidates = app.upstreams.plan(route, endpoint, &app.config.translation);
        if candidates.is_empty() {
            let why = if matches!(endpoint, Endpoint::Embeddings | Endpoint::CountTokens) {
                format!("the other API family has no {} endpoint", endpoint.path())
            } else {
                "translation between the API families is off (translation.enabled = false)".to_string()
            };
            return Err(ApiError::new(
                ErrorKind::InvalidRequest,
                format!("model `{}` is served only by upstreams of the other API family, and {why}", req.model),
            ));
        }
        let mut translated: Vec<(UpstreamKind, serde_json::Value)> = Vec::new();
        let mut back = translate::Back::default();
        let mut refusal = None;
        if candidates.iter().any(|p| p.endpoint != endpoint) {
            let client_body: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
                ApiError::new(ErrorKind::InvalidRequest, format!("the request body is not valid JSON: {e}"))
            })?;
            back = translate::back(endpoint, &client_body);
            candidates.retain(|p| {
                let kind = app.config.upstream(p.candidate.upstream).kind;
                if p.endpoint == endpoint || translated.iter().any(|(k, _)| *k == kind) {
                    return true;
                }
                let opts = translate::Options {
                    default_max_tokens: app.config.translation.default_max_tokens,
                    drop_fields: &app.config.translation.drop_fields,
                    kind,
                };
                match translate::request(endpoint, p.endpoint, &client_body, &opts) {
                    Ok(v) => {
                        translated.push((kind, v));
                        true
                    }
                    Err(e) => {
                        refusal.get_or_insert(e);
                        false
                    }
                }
            });
            if candidates.is_empty()
                && let Some(e) = refusal
            {
                return Err(e);
            }
        }
        Ok(Plan { candidates, translated, back })
    }

    /// What the answer's translation needs of the request (nothing for an answer of the client's family).
    pub fn back(&self) -> translate::Back {
        self.back.clone()
    }

    /// The body candidate `c` is sent: the client's (the model renamed if the candidate says so, usage asked for
    /// where the dialect needs it), or its translation for `c`'s upstream kind.
    pub fn body_for(&self, app: &App, req: &RequestBody<'_>, p: &Planned) -> Bytes {
        let c = &p.candidate;
        let kind = app.config.upstream(c.upstream).kind;
        match self.translated.iter().find(|(k, _)| *k == kind) {
            None => req.render(c.model.as_deref()),
            Some((_, v)) => {
                let mut v = v.clone();
                if let Some(m) = &c.model {
                    translate::put(&mut v, "model", serde_json::Value::from(m.as_str()));
                }
                // A reasoning effort (from Anthropic thinking) only for models that take one: OpenAI refuses it
                // for the others.
                let model = v.get("model").and_then(serde_json::Value::as_str).unwrap_or_default();
                if !translate::is_reasoning_model(model, &app.config.translation.reasoning_models)
                    && let Some(o) = v.as_object_mut()
                {
                    o.remove("reasoning_effort");
                }
                Bytes::from(v.to_string())
            }
        }
    }
}

/// A plugin's route: upstream ids from the config, in order, never URLs.
fn plugin_route(config: &Config, targets: Vec<(String, Option<String>)>) -> Result<Vec<Candidate>, ApiError> {
    targets
        .into_iter()
        .enumerate()
        .map(|(i, (id, model))| {
            let idx = config.upstreams.iter().position(|u| u.id == id).ok_or_else(|| {
                ApiError::new(
                    ErrorKind::PluginFailed,
                    format!("a plugin routed to upstream `{id}`, which is not in the config"),
                )
            })?;
            Ok(Candidate { upstream: UpstreamIdx(idx), weight: 1, priority: i as u32, model })
        })
        .collect()
}
