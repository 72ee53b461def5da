//! The optional HTTP status API (`api:` in `runners.yaml`): `GET /runners` (the original
//! project's `[{name, repo_url, status, pid}]`, extended), `GET /runners/{name}`,
//! `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus text), `GET /openapi.json`,
//! and with a webhook secret `POST /webhook` (GitHub `workflow_job` deliveries, checked by
//! their signature, not the token: see `webhook`).
//!
//! It serves what the controller last published; it never acts. When a token is configured
//! every route but `/healthz` requires `Authorization: Bearer <token>`, compared in constant
//! time; the token is never logged.

pub mod limits;
mod metrics;
mod openapi;
mod webhook;

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use subtle::ConstantTimeEq;

pub use metrics::{Histogram, Metrics};
pub use openapi::document as openapi_document;
pub use webhook::{signature, OnPush, Webhook};

use crate::secret::Secret;
use crate::status::Status;

/// What the controller publishes for the API, after every pass.
#[derive(Debug, Default)]
pub struct Published {
    /// The last status.
    pub status: Option<Status>,
    /// The config is loaded and the last pass went through.
    pub ready: bool,
    /// Counters and histograms.
    pub metrics: Metrics,
}

/// The API's shared state.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<Mutex<Published>>);

impl Shared {
    /// Runs `f` on the published state.
    pub fn with<T>(&self, f: impl FnOnce(&mut Published) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[derive(Clone)]
struct AppState {
    shared: Shared,
    token: Option<Secret>,
    webhook: Option<Webhook>,
}

/// The router for `shared`, requiring `token` when given.
pub fn router(shared: Shared, token: Option<Secret>) -> Router {
    router_with(shared, token, None)
}

/// [`router`] with `POST /webhook` when `webhook` is given.
pub fn router_with(shared: Shared, token: Option<Secret>, webhook: Option<Webhook>) -> Router {
    let state = AppState {
        shared,
        token,
        webhook,
    };
    let guarded = Router::new()
        .route("/status", get(whole_status))
        .route("/runners", get(runners))
        .route("/runners/{name}", get(runner))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/webhook", axum::routing::post(webhook::receive))
        .merge(guarded)
        .layer(axum::extract::DefaultBodyLimit::max(limits::BODY_LIMIT))
        .with_state(state)
}

/// Serves the API on `listener` until the task is dropped, within the bounds of [`limits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Shared,
    token: Option<Secret>,
    webhook: Option<Webhook>,
) {
    let connections = limits::connection_limit();
    tracing::debug!(connections, "status API connection limit");
    let listener = limits::Bounded::new(listener, connections);
    if let Err(err) = axum::serve(listener, router_with(shared, token, webhook)).await {
        tracing::error!(cause = %err, "status API stopped");
    }
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({"message": "a valid bearer token is required"})),
        )
            .into_response()
    }
}

async fn whole_status(State(state): State<AppState>) -> Response {
    match state.shared.with(|p| p.status.clone()) {
        Some(status) => Json(status).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no pass yet\n").into_response(),
    }
}

async fn runners(State(state): State<AppState>) -> Response {
    let runners = state
        .shared
        .with(|p| p.status.as_ref().map(|s| s.runners.clone()))
        .unwrap_or_default();
    Json(runners).into_response()
}

async fn runner(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let found = state.shared.with(|p| {
        p.status
            .as_ref()
            .and_then(|s| s.runners.iter().find(|r| r.name == name).cloned())
    });
    match found {
        Some(runner) => Json(runner).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"message": format!("no runner named {name:?}")})),
        )
            .into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.shared.with(|p| p.ready) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let text = state.shared.with(|p| metrics::render(p));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn openapi_json() -> Response {
    Json(openapi::document()).into_response()
}
