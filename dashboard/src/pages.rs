//! The dashboard's pages: a small HTML shell per page and the scripts and stylesheet
//! compiled into the binary. Every link and asset is relative to the page, so the pages
//! work under any path prefix a reverse proxy puts in front of them; the scripts read
//! the JSON API and the event stream (no build step, no library).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// The pages in the navigation bar: (path, title, script).
const PAGES: [(&str, &str, &str); 5] = [
    ("status", "Status", "status"),
    ("workers", "Workers", "workers"),
    ("jobs", "Jobs", "jobs"),
    ("cluster-map", "Cluster map", "map"),
    ("info", "Info", "info"),
];

/// The assets, by name: (content type, text).
fn asset_text(name: &str) -> Option<(&'static str, &'static str)> {
    const JS: &str = "text/javascript; charset=utf-8";
    Some(match name {
        "shoal.css" => (
            "text/css; charset=utf-8",
            include_str!("../assets/shoal.css"),
        ),
        "common.js" => (JS, include_str!("../assets/common.js")),
        "status.js" => (JS, include_str!("../assets/status.js")),
        "workers.js" => (JS, include_str!("../assets/workers.js")),
        "worker.js" => (JS, include_str!("../assets/worker.js")),
        "jobs.js" => (JS, include_str!("../assets/jobs.js")),
        "job.js" => (JS, include_str!("../assets/job.js")),
        "map.js" => (JS, include_str!("../assets/map.js")),
        "info.js" => (JS, include_str!("../assets/info.js")),
        _ => return None,
    })
}

/// A page (its assets' addresses carry the version, so a browser never runs a cached
/// script of another release against this one's API): the navigation bar (with `active` marked), an empty body its `script` fills,
/// and `root`, the way from the page back to the dashboard's root (`./` or `../`).
fn shell(title: &str, active: &str, script: &str, root: &str) -> Html<String> {
    let nav: String = PAGES
        .iter()
        .map(|(path, name, _)| {
            let here = if *path == active {
                " class=\"here\""
            } else {
                ""
            };
            format!("<a href=\"{root}{path}\"{here}>{name}</a>")
        })
        .collect();
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Shoal</title><link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"{root}assets/shoal.css?v={version}\"></head>\
         <body data-root=\"{root}\"><header><span class=\"brand\">SHOAL</span>{nav}</header>\
         <main><div id=\"problem\" class=\"problem\"></div><div id=\"page\"></div></main>\
         <script src=\"{root}assets/common.js?v={version}\"></script>\
         <script src=\"{root}assets/{script}.js?v={version}\"></script></body></html>\n",
        version = env!("CARGO_PKG_VERSION"),
    ))
}

/// The top-level page at `path`.
pub(crate) fn page(path: &str) -> Response {
    match PAGES.iter().find(|(p, _, _)| *p == path) {
        Some((path, title, script)) => shell(title, path, script, "./").into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A worker's page (`/workers/{id}`).
pub(crate) async fn worker_page(Path(id): Path<u64>) -> Response {
    shell(&format!("Worker {id}"), "workers", "worker", "../").into_response()
}

/// A job's page (`/jobs/{id}`).
pub(crate) async fn job_page(Path(id): Path<u64>) -> Response {
    shell(&format!("Job {id}"), "jobs", "job", "../").into_response()
}

/// An asset (`/assets/{name}`).
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    match asset_text(&name) {
        Some((kind, text)) => (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            text,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Every page's path, for the router.
pub(crate) fn paths() -> impl Iterator<Item = &'static str> {
    PAGES.iter().map(|(path, _, _)| *path)
}
