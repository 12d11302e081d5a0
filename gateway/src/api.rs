//! The gateway's REST API (JSON):
//!
//! - `GET /healthz`: `ok`.
//! - `GET /api/v1/clusters`: the caller's clusters.
//! - `POST /api/v1/clusters` with `{"spec": {...}}` or `{"profile": "NAME"}`: creates one.
//! - `GET /api/v1/clusters/{name}`: one, with its workers per group.
//! - `POST /api/v1/clusters/{name}/scale` with `{"group": "cpu", "workers": 4}`.
//! - `DELETE /api/v1/clusters/{name}`: stops it.
//!
//! Every `/api` call carries `Authorization: Bearer TOKEN`; errors are
//! `{"error": "one line"}` with a 4xx or 5xx status.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::service::{CreateRequest, Gateway, Refusal};
use crate::tls::TlsListener;

/// The API over `gateway`.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/clusters", get(list).post(create))
        .route("/api/v1/clusters/{name}", get(one).delete(stop))
        .route("/api/v1/clusters/{name}/scale", post(scale))
        .fallback(|| async { reply(Err(Refusal::NotFound("no such route".into()))) })
        .with_state(gateway)
}

fn status_of(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
        Refusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Refusal::OverLimit(_) => StatusCode::FORBIDDEN,
        Refusal::NotFound(_) => StatusCode::NOT_FOUND,
        Refusal::Conflict(_) => StatusCode::CONFLICT,
        Refusal::Failed(_) => StatusCode::BAD_GATEWAY,
    }
}

fn reply(outcome: Result<Value, Refusal>) -> Response {
    match outcome {
        Ok(body) => axum::Json(body).into_response(),
        Err(refusal) => {
            let body = json!({ "error": refusal.message() });
            (status_of(&refusal), axum::Json(body)).into_response()
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Authenticates the caller, then runs `call` for them off the runtime (it may start
/// processes and wait for them).
async fn as_user(
    gateway: Arc<Gateway>,
    headers: &HeaderMap,
    call: impl FnOnce(&Gateway, &str) -> Result<Value, Refusal> + Send + 'static,
) -> Result<Value, Refusal> {
    let user = gateway.authenticate(bearer(headers)).await?;
    tokio::task::spawn_blocking(move || call(&gateway, &user))
        .await
        .map_err(|e| Refusal::Failed(format!("the request failed: {e}")))?
}

fn body<T>(json: Result<axum::Json<T>, JsonRejection>) -> Result<T, Refusal> {
    json.map(|axum::Json(t)| t).map_err(|e| {
        let text = e.body_text();
        Refusal::BadRequest(text.split_whitespace().collect::<Vec<_>>().join(" "))
    })
}

/// [`as_user`] for a call with a JSON body: an unknown caller is refused before the
/// body is read.
async fn with_body<T: Send + 'static>(
    gateway: Arc<Gateway>,
    headers: &HeaderMap,
    request: Result<axum::Json<T>, JsonRejection>,
    call: impl FnOnce(&Gateway, &str, T) -> Result<Value, Refusal> + Send + 'static,
) -> Result<Value, Refusal> {
    gateway.authenticate(bearer(headers)).await?;
    let request = body(request)?;
    as_user(gateway, headers, move |g, user| call(g, user, request)).await
}

async fn list(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    reply(as_user(gateway, &headers, |g, user| g.list(user)).await)
}

async fn create(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    request: Result<axum::Json<CreateRequest>, JsonRejection>,
) -> Response {
    let outcome = with_body(gateway, &headers, request, |g, user, request| {
        g.create(user, request)
    });
    match outcome.await {
        Ok(body) => (StatusCode::CREATED, axum::Json(body)).into_response(),
        Err(e) => reply(Err(e)),
    }
}

async fn one(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    reply(as_user(gateway, &headers, move |g, user| g.get(user, &name)).await)
}

async fn stop(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    reply(as_user(gateway, &headers, move |g, user| g.stop(user, &name)).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleRequest {
    group: String,
    #[serde(deserialize_with = "crate::spec::whole")]
    workers: usize,
}

async fn scale(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    request: Result<axum::Json<ScaleRequest>, JsonRejection>,
) -> Response {
    let outcome = with_body(gateway, &headers, request, move |g, user, r| {
        g.scale(user, &name, &r.group, r.workers)
    });
    reply(outcome.await)
}

/// Serves the API on `listener` and checks the running clusters every
/// `check_interval` until the server stops.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    check_interval: std::time::Duration,
) -> std::io::Result<()> {
    let checker = Arc::clone(&gateway);
    let checks = async move {
        let mut tick = tokio::time::interval(check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let gateway = Arc::clone(&checker);
            match tokio::task::spawn_blocking(move || gateway.check()).await {
                Ok(Err(e)) => tracing::warn!("checking clusters: {}", e.message()),
                Err(e) => tracing::warn!("checking clusters: {e}"),
                Ok(Ok(())) => {}
            }
        }
    };
    let app = router(gateway);
    let served = async move {
        match tls {
            Some(config) => axum::serve(TlsListener::new(listener, config), app).await,
            None => axum::serve(listener, app).await,
        }
    };
    tokio::select! {
        served = served => served,
        () = checks => Ok(()),
    }
}
