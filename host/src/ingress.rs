//! The gateway's routes: the proxied endpoints of both API families, `/v1/models`, health probes, and errors for
//! anything else (in the shape of the API the client appears to speak).

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

pub fn router(app: Arc<App>) -> Router {
    let proxied = |endpoint: Endpoint| {
        post(move |State(app): State<Arc<App>>, headers: HeaderMap, body: Body| {
            pipeline::proxy(app, endpoint, headers, body)
        })
        .fallback(method_not_allowed)
    };
    Router::new()
        .route("/v1/chat/completions", proxied(Endpoint::ChatCompletions))
        .route("/v1/responses", proxied(Endpoint::Responses))
        .route("/v1/embeddings", proxied(Endpoint::Embeddings))
        .route("/v1/messages", proxied(Endpoint::Messages))
        .route("/v1/messages/count_tokens", proxied(Endpoint::CountTokens))
        .route("/v1/models", get(models).fallback(method_not_allowed))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/admin/plugins", get(admin_plugins))
        .fallback(not_found)
        .with_state(app)
}

/// Lists the models this gateway serves, in the list format of the client's API family.
async fn models(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let names = app.config.routes.keys();
    let body = match Family::guess("/v1/models", &headers) {
        Family::OpenAi => json!({
            "object": "list",
            "data": names.map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "weir"})).collect::<Vec<_>>(),
        }),
        Family::Anthropic => {
            let data: Vec<_> = names
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

/// The loaded plugins: name, version, source, calls, failures, quarantine, last error.
async fn admin_plugins(State(app): State<Arc<App>>) -> Response {
    match &app.plugins {
        Some(r) => axum::Json(r.admin()).into_response(),
        None => axum::Json(json!({"plugins": [], "plugins_dir": null})).into_response(),
    }
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
