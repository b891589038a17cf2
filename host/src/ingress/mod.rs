//! The gateway's routes: the proxied endpoints of both API families, the Bedrock and Vertex AI envelopes of the
//! Anthropic API (`cloud.rs`), `/v1/models`, health probes, and errors for anything else (in the shape of the API
//! the client appears to speak).

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod cloud;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::api::{Endpoint, Family};
use crate::error::{ApiError, ErrorKind};
use crate::pipeline::{self, App};
use crate::plugin::{Chain, RequestView};

pub fn router(app: Arc<App>) -> Router {
    let proxied = |endpoint: Endpoint| {
        post(move |State(app): State<Arc<App>>, headers: HeaderMap, body: Body| {
            pipeline::proxy(app, endpoint, headers, body)
        })
        .fallback(method_not_allowed)
    };
    let api = Router::new()
        .route("/v1/chat/completions", proxied(Endpoint::ChatCompletions))
        .route("/v1/responses", proxied(Endpoint::Responses))
        .route("/v1/embeddings", proxied(Endpoint::Embeddings))
        .route("/v1/messages", proxied(Endpoint::Messages))
        .route("/v1/messages/count_tokens", proxied(Endpoint::CountTokens))
        .route("/model/{model}/{action}", post(cloud::bedrock).fallback(method_not_allowed))
        .route(
            "/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{call}",
            post(cloud::vertex).fallback(method_not_allowed),
        )
        .route("/v1/models", get(models).fallback(method_not_allowed))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    // `/admin/*` is on the admin listener when there is one, else here (see `admin_plugins` for who may read it).
    let api = if app.config.admin_listen.is_some() { api } else { admin_routes(api) };
    api.fallback(not_found)
        .layer(axum::middleware::map_response_with_state(app.clone(), close_when_draining))
        .with_state(app)
}

fn admin_routes(r: Router<Arc<App>>) -> Router<Arc<App>> {
    r.route("/admin/plugins", get(admin_plugins))
        .route("/admin/plugins/{name}/kv/{*key}", get(admin_kv).put(admin_kv).delete(admin_kv))
}

/// The admin listener's router (`[admin] listen`): `/admin/*` only.
pub fn admin_router(app: Arc<App>) -> Router {
    admin_routes(Router::new()).fallback(not_found).with_state(app)
}

/// While the gateway drains, every answer asks the client to close its connection (the next request goes to
/// another replica).
async fn close_when_draining(State(app): State<Arc<App>>, mut resp: Response) -> Response {
    if app.is_draining() {
        resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    resp
}

/// Prometheus metrics (OpenMetrics text format).
async fn metrics() -> Response {
    let body = crate::telemetry::metrics::METRICS.encode();
    let mut resp = Response::new(axum::body::Body::from(body));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// Lists the models (aliases included) this gateway serves and the caller may use, in the list format of the
/// client's API family.
async fn models(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let family = Family::guess("/v1/models", &headers);
    let names = match visible_models(&app, &headers, family).await {
        Ok(names) => names,
        Err(e) => return e.to_response(family),
    };
    let body = match family {
        Family::OpenAi => json!({
            "object": "list",
            "data": names.iter().map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "weir"})).collect::<Vec<_>>(),
        }),
        Family::Anthropic => {
            let data: Vec<_> = names
                .iter()
                .map(|m| json!({"type": "model", "id": m, "display_name": m, "created_at": "1970-01-01T00:00:00Z"}))
                .collect();
            json!({
                "first_id": data.first().map(|d| d["id"].clone()),
                "last_id": data.last().map(|d| d["id"].clone()),
                "has_more": false,
                "data": data,
            })
        }
    };
    axum::Json(body).into_response()
}

/// The metadata key under which a plugin names, in a listing check for no model, the models it serves itself.
pub const LISTING_MODELS: &str = "listing.models";

/// The models the caller may use, as the plugins decide: the chain's `on-request` is asked once per model, with
/// the endpoint `models`, the candidate as `model` and an empty body (`{}`). A model whose check is refused with 403
/// or 404 is left out; any other refusal (401 for a missing key, 503 for an unreachable key store, a failed
/// fail-closed plugin) is the listing's answer. Nothing is forwarded, changes are ignored, and `on-complete` is not
/// called: plugins that keep accounts (budgets, rate limits) do nothing for this endpoint.
async fn visible_models(app: &App, headers: &HeaderMap, family: Family) -> Result<Vec<String>, ApiError> {
    let mut names: std::collections::BTreeSet<String> = app.config.routes.keys().cloned().collect();
    let Some(set) = app.plugins.as_ref().map(|r| r.snapshot()) else { return Ok(names.into_iter().collect()) };
    if Chain::new(set.clone(), family).is_empty() {
        return Ok(names.into_iter().collect());
    }
    // Any endpoint of the family: plugins see `models`.
    let endpoint = match family {
        Family::OpenAi => Endpoint::ChatCompletions,
        Family::Anthropic => Endpoint::Messages,
    };
    let id = format!("req_{:016x}", fastrand::u64(..));
    let view = |model: &str| RequestView {
        id: &id,
        endpoint,
        headers,
        body: bytes::Bytes::from_static(b"{}"),
        model: model.to_string(),
        stream: false,
        listing: true,
    };
    // First the models plugins serve themselves (a router's aliases): asked with no model, every plugin may name
    // them in the metadata `listing.models` (comma-separated); refusals do not stop this round.
    let mut chain = Chain::new(set.clone(), family);
    if chain.on_request(&mut view("")).await.is_ok() {
        for (_, v) in chain.metadata.iter().filter(|(k, _)| k == LISTING_MODELS) {
            names.extend(v.split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_string));
        }
    }
    chain.release();
    let mut shown = Vec::new();
    for model in names {
        let mut chain = Chain::new(set.clone(), family);
        let decided = chain.on_request(&mut view(&model)).await;
        chain.release();
        match decided {
            Ok(_) => shown.push(model),
            Err(e) if matches!(e.status(), StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(shown)
}

/// The loaded plugins: name, version, source, calls, failures, quarantine, last error (file paths and errors: not
/// for the public). On the admin listener it answers anyone who reaches it (that listener is loopback unless the
/// operator chose otherwise); on the API port only clients on loopback, or with the admin token.
async fn admin_plugins(
    State(app): State<Arc<App>>,
    peer: Option<axum::Extension<crate::server::PeerAddr>>,
    headers: HeaderMap,
) -> Response {
    let on_api_port = app.config.admin_listen.is_none();
    let local = peer.is_some_and(|p| p.0.0.ip().is_loopback());
    if on_api_port && !local && !has_admin_token(&app, &headers) {
        let msg = "the admin API answers only on loopback or with `Authorization: Bearer <admin token>` \
                   (or set [admin] listen to serve it on an address of its own)";
        return (StatusCode::FORBIDDEN, axum::Json(json!({"error": msg}))).into_response();
    }
    match &app.plugins {
        Some(r) => axum::Json(r.admin()).into_response(),
        None => axum::Json(json!({"plugins": [], "plugins_dir": null})).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct KvQuery {
    ttl_ms: Option<u64>,
}

/// A plugin's `kv` entry: `GET` reads it, `PUT` sets it to the request body (`?ttl_ms=` to expire), `DELETE`
/// removes it. For operators (issuing virtual keys, reading spend), so it needs the admin token.
async fn admin_kv(
    State(app): State<Arc<App>>,
    axum::extract::Path((name, key)): axum::extract::Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<KvQuery>,
    method: http::Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let error = |status: StatusCode, message: String| (status, axum::Json(json!({"error": message}))).into_response();
    let Some(token) = &app.admin_token else {
        return error(
            StatusCode::FORBIDDEN,
            "the admin API is off: set [admin] token_env to the name of an environment variable holding its token"
                .into(),
        );
    };
    let given =
        headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        return error(StatusCode::UNAUTHORIZED, "the admin API needs `Authorization: Bearer <admin token>`".into());
    }
    let Some(registry) = &app.plugins else {
        return error(StatusCode::NOT_FOUND, "no plugins are configured".into());
    };
    if !crate::config::valid_plugin_name(&name) {
        return error(StatusCode::BAD_REQUEST, format!("`{name}` is not a plugin name"));
    }
    // Operators' writes are capped at the default value size, whatever a plugin's `kv_max_value`.
    let kv = crate::plugin::kv::Capped::new(registry.kv().clone(), crate::plugin::kv::MAX_VALUE);
    let kv: &dyn crate::plugin::kv::Kv = &kv;
    let full = format!("{name}/{key}");
    match method {
        http::Method::GET => match kv.get(&full).await {
            Ok(Some(v)) => ([(http::header::CONTENT_TYPE, "application/octet-stream")], v).into_response(),
            Ok(None) => error(StatusCode::NOT_FOUND, format!("plugin `{name}` has no kv key `{key}`")),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
        http::Method::PUT => match kv.set(&full, body.to_vec(), q.ttl_ms.map(std::time::Duration::from_millis)).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e @ crate::plugin::kv::KvError::TooLarge(_)) => error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
        _ => match kv.delete(&full).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
    }
}

fn has_admin_token(app: &App, headers: &HeaderMap) -> bool {
    let given =
        headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match (&app.admin_token, given) {
        (Some(token), Some(g)) => constant_time_eq(g.as_bytes(), token.as_bytes()),
        _ => false,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

async fn not_found(req: Request) -> Response {
    let family = Family::guess(req.uri().path(), req.headers());
    ApiError::new(
        ErrorKind::NotFound,
        format!(
            "no route for {} {}; this gateway serves POST /v1/chat/completions, /v1/responses, /v1/embeddings, \
             /v1/messages, /v1/messages/count_tokens and GET /v1/models",
            req.method(),
            req.uri().path()
        ),
    )
    .to_response(family)
}

async fn method_not_allowed(req: Request) -> Response {
    let family = Family::guess(req.uri().path(), req.headers());
    ApiError::new(ErrorKind::MethodNotAllowed, format!("{} is not allowed on {}", req.method(), req.uri().path()))
        .to_response(family)
}
