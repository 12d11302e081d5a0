//! The HTTP routes: health, the JSON API, Server-Sent Events and `/metrics`, with the
//! token rules (see [`crate::DashboardOptions`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{OriginalUri, Path, Query, RawQuery, Request, State as Shared};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde_json::{Value, json};
use shoal_exec::security::same_secret;
use shoal_exec::{JobId, WorkerId};
use tokio::sync::broadcast;

use crate::json::{job_json, status_json, stream_entry_json, worker_json};
use crate::{State, normalized_prefix, pages};

type S = Shared<Arc<State>>;

/// Task-stream entries one call returns at most.
const STREAM_PAGE: usize = 5000;
/// The cookie a token given in the URL is kept in.
const COOKIE: &str = "shoal_dashboard_token";

/// Every route of `state`'s dashboard, under its prefix.
pub fn router(state: Arc<State>) -> Router {
    let mut reads = Router::new()
        .route("/workers/{id}", get(pages::worker_page))
        .route("/jobs/{id}", get(pages::job_page))
        .route("/assets/{name}", get(pages::asset))
        .route("/api/v1/status", get(status))
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/workers/{id}", get(worker))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/jobs/{id}", get(job))
        .route("/api/v1/tasks", get(tasks))
        .route("/api/v1/progress", get(progress))
        .route("/api/v1/events", get(events))
        .route("/api/v1/info", get(info))
        .route("/metrics", get(metrics));
    for path in pages::paths() {
        reads = reads.route(
            &format!("/{path}"),
            get(move || async move { pages::page(path) }),
        );
    }
    // Redirects are relative, like every link: a proxy may serve the dashboard under
    // another path than its own prefix. From the bare prefix (`/p`), `status` would
    // leave it: the way back in is its last segment.
    let prefix = normalized_prefix(&state.options.prefix);
    let home = match prefix.rsplit('/').next() {
        Some(last) if !last.is_empty() => format!("{last}/status"),
        _ => "status".to_string(),
    };
    let reads = reads
        .route("/", get(move |query| to_home(home, query)))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            gate_reads,
        ));
    let changes = Router::new()
        .route("/api/v1/jobs/{id}/cancel", post(cancel))
        .route("/api/v1/workers/{id}/retire", post(retire))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            gate_changes,
        ));
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .merge(reads)
        .merge(changes)
        .with_state(Arc::clone(&state));
    match normalized_prefix(&state.options.prefix).as_str() {
        "" => routes,
        prefix => {
            // The printed link ends in `/`, which the nested routes do not match.
            Router::new()
                .route(
                    &format!("{prefix}/"),
                    get(move |query| to_home("status".to_string(), query)),
                )
                .nest(prefix, routes)
        }
    }
}

/// The dashboard's root sends the browser to the status page, keeping the query (a token
/// given in the URL).
async fn to_home(home: String, RawQuery(query): RawQuery) -> Redirect {
    match query {
        Some(query) => Redirect::to(&format!("{home}?{query}")),
        None => Redirect::to(&home),
    }
}

/// The token a request presents: a bearer header, `?token=`, or the cookie.
fn presented(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.to_string());
    }
    if let Some(token) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("token="))
    {
        return Some(token.to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
}

fn refused(why: &str) -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({ "error": why }))).into_response()
}

/// Whether `presented` is `token` (compared in constant time).
fn is_token(presented: Option<&str>, token: &str) -> bool {
    presented.is_some_and(|p| same_secret(p.as_bytes(), token.as_bytes()))
}

/// Reading needs the token only with `--dashboard-auth token`. A token given in the URL
/// is answered with a redirect to the same address without it, setting a cookie, so it
/// stays in neither the address bar nor the history, and the pages' own calls carry it.
async fn gate_reads(Shared(state): S, request: Request, next: Next) -> Response {
    let Some(token) = state
        .options
        .token
        .as_deref()
        .filter(|_| state.options.token_for_reads)
    else {
        return next.run(request).await;
    };
    if !is_token(
        presented(request.headers(), request.uri().query()).as_deref(),
        token,
    ) {
        return refused("this dashboard needs the cluster token");
    }
    let from_url = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p.starts_with("token=")));
    if !from_url {
        let mut response = next.run(request).await;
        no_referrer(&mut response);
        return response;
    }
    // The path as the client sent it (a prefix is stripped from `uri()`).
    let uri = request
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| request.uri().clone(), |o| o.0.clone());
    let rest: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("token="))
        .collect();
    // Relative to the page itself (see `router`).
    let page = match uri.path().rsplit('/').next() {
        Some(last) if !last.is_empty() => format!("./{last}"),
        _ => "./".to_string(),
    };
    let location = if rest.is_empty() {
        page
    } else {
        format!("{page}?{}", rest.join("&"))
    };
    let path = format!("{}/", normalized_prefix(&state.options.prefix));
    // Lax: a link from elsewhere to a page still carries it; changes are POSTs, which a
    // Lax cookie does not go with from another site (and they need the token anyway).
    let cookie = format!("{COOKIE}={token}; Path={path}; HttpOnly; SameSite=Lax");
    let mut response = StatusCode::SEE_OTHER.into_response();
    for (name, value) in [(header::LOCATION, location), (header::SET_COOKIE, cookie)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    no_referrer(&mut response);
    response
}

/// Pages behind a token tell the browser not to send their address on.
fn no_referrer(response: &mut Response) {
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// Changes need the token whenever the cluster has one.
async fn gate_changes(Shared(state): S, request: Request, next: Next) -> Response {
    if let Some(token) = state.options.token.as_deref()
        && !is_token(
            presented(request.headers(), request.uri().query()).as_deref(),
            token,
        )
    {
        return refused("this call needs the cluster token");
    }
    next.run(request).await
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    let body = json!({ "error": format!("the scheduler did not answer: {e}") });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": what }))).into_response()
}

async fn ready(Shared(state): S) -> Response {
    match state.status().await {
        Ok(_) => "ready".into_response(),
        Err(e) => unavailable(e),
    }
}

async fn status(Shared(state): S) -> Response {
    match state.status().await {
        Ok(status) => Json(status_json(&status)).into_response(),
        Err(e) => unavailable(e),
    }
}

/// A worker's status with the bytes it sent and fetched.
fn worker_with_transfers(state: &State, w: &shoal_exec::WorkerStatus) -> Value {
    let model = state.model.lock();
    let mut value = worker_json(w);
    let counters = &model.counters;
    value["sent_bytes"] = json!(counters.sent_bytes.get(&w.id).copied().unwrap_or(0));
    value["received_bytes"] = json!(counters.received_bytes.get(&w.id).copied().unwrap_or(0));
    value
}

async fn workers(Shared(state): S) -> Response {
    match state.status().await {
        Ok(status) => {
            let all: Vec<Value> = status
                .workers
                .iter()
                .map(|w| worker_with_transfers(&state, w))
                .collect();
            Json(all).into_response()
        }
        Err(e) => unavailable(e),
    }
}

async fn worker(Shared(state): S, Path(id): Path<WorkerId>) -> Response {
    match state.status().await {
        Ok(status) => match status.workers.iter().find(|w| w.id == id) {
            Some(w) => Json(worker_with_transfers(&state, w)).into_response(),
            None => not_found(format!("no worker {id}")),
        },
        Err(e) => unavailable(e),
    }
}

#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<usize>,
}

/// Jobs, newest first; `?limit=N` gives the newest N only.
async fn jobs(Shared(state): S, Query(q): Query<Limit>) -> Response {
    let now = SystemTime::now();
    let model = state.model.lock();
    let all: Vec<Value> = model
        .jobs
        .values()
        .rev()
        .take(q.limit.unwrap_or(usize::MAX))
        .map(|j| job_json(j, now, false))
        .collect();
    Json(all).into_response()
}

async fn job(Shared(state): S, Path(id): Path<JobId>) -> Response {
    let model = state.model.lock();
    match model.jobs.get(&id) {
        Some(job) => Json(job_json(job, SystemTime::now(), true)).into_response(),
        None => not_found(format!("no job {id} (finished jobs are kept for a while)")),
    }
}

#[derive(serde::Deserialize)]
struct Since {
    since: Option<u64>,
    limit: Option<usize>,
    /// With more than `limit` entries after `since`, give the newest ones instead of
    /// the oldest (a reader that only shows the latest activity skips the rest).
    #[serde(default)]
    newest: bool,
}

async fn tasks(Shared(state): S, Query(q): Query<Since>) -> Response {
    let limit = q.limit.unwrap_or(STREAM_PAGE).min(STREAM_PAGE);
    let (entries, next) = {
        let model = state.model.lock();
        let since = q.since.unwrap_or(0);
        let since = if q.newest {
            since.max(model.next_cursor().saturating_sub(limit as u64))
        } else {
            since
        };
        model.stream_since(since, limit)
    };
    let entries: Vec<Value> = entries
        .iter()
        .map(|(cursor, e)| stream_entry_json(*cursor, e))
        .collect();
    Json(json!({ "entries": entries, "next": next })).into_response()
}

/// Finished jobs `/api/v1/progress` shows after the running ones.
const RECENT_FINISHED: usize = 5;

/// Every running job and the few that finished last (newest first): state, label, task
/// counts, and per stage its tasks and how many finished.
async fn progress(Shared(state): S) -> Response {
    let model = state.model.lock();
    let running = model
        .jobs
        .values()
        .rev()
        .filter(|j| j.state == crate::model::JobState::Running);
    let finished = model
        .jobs
        .values()
        .rev()
        .filter(|j| j.state != crate::model::JobState::Running)
        .take(RECENT_FINISHED);
    let jobs: Vec<Value> = running
        .chain(finished)
        .map(|j| {
            let stages: Vec<Value> = (0..j.stages)
                .map(|stage| {
                    let done = j.stage_totals.get(&stage).map_or(0, |t| t.0);
                    let tasks = j.outline.stages.get(stage).map(|s| s.tasks);
                    json!({ "stage": stage, "tasks": tasks, "tasks_finished": done })
                })
                .collect();
            json!({ "job": j.id, "state": j.state.name(), "label": j.outline.label,
                    "tasks_total": j.tasks_total, "tasks_done": j.tasks_done, "stages": stages })
        })
        .collect();
    Json(jobs).into_response()
}

async fn events(Shared(state): S) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let updates = state.events.subscribe();
    let stream = futures::stream::unfold(updates, |mut updates| async move {
        loop {
            match updates.recv().await {
                Ok(text) => return Some((Ok(Event::default().data(&*text)), updates)),
                // A slow reader misses events; the counts each carries stay exact.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

async fn info(Shared(state): S) -> Response {
    let uptime = state.started.elapsed().unwrap_or_default().as_secs_f64();
    let settings: serde_json::Map<String, Value> = state
        .options
        .settings
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": uptime,
        "placement": state.cluster().ok().map(|c| format!("{:?}", c.placement())),
        "settings": settings,
    }))
    .into_response()
}

async fn metrics(Shared(state): S) -> Response {
    match state.status().await {
        Ok(status) => {
            let text = crate::metrics::render(&status, &state.model.lock().counters);
            let kind = "text/plain; version=0.0.4; charset=utf-8";
            ([(header::CONTENT_TYPE, kind)], text).into_response()
        }
        Err(e) => unavailable(e),
    }
}

async fn cancel(Shared(state): S, Path(id): Path<JobId>) -> Response {
    let cluster = match state.cluster() {
        Ok(cluster) => cluster,
        Err(e) => return unavailable(e),
    };
    match cluster.cancel(id).await {
        Ok(true) => Json(json!({ "job": id, "cancelled": true })).into_response(),
        Ok(false) => not_found(format!("no running job {id}")),
        Err(e) => unavailable(e),
    }
}

async fn retire(Shared(state): S, Path(id): Path<WorkerId>) -> Response {
    let cluster = match state.cluster() {
        Ok(cluster) => cluster,
        Err(e) => return unavailable(e),
    };
    match cluster.retire(id).await {
        Ok(true) => Json(json!({ "worker": id, "retiring": true })).into_response(),
        Ok(false) => not_found(format!("no worker {id} that is alive and not retiring")),
        Err(e) => {
            let body = json!({ "error": e.to_string() });
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
    }
}
