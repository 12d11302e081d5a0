//! The dashboard an embedded session serves: every JSON endpoint, the Server-Sent Events
//! stream, `/metrics`, the path prefix and the token rules, over real HTTP on loopback.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal::Session;

use crate::common::tpch_dir;
use crate::http::{get, request, split_link};

/// Polls `path` until `done` holds for its JSON (the dashboard hears of events shortly
/// after they happen).
fn wait_for(host: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = get(host, path).json();
        if done(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{path}: {value}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const QUERY: &str = "select l_returnflag, count(*) from lineitem group by l_returnflag";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_workers_jobs_the_task_stream_and_metrics() {
    let session = Session::builder()
        .workers(2)
        .partitions(3)
        .dashboard("127.0.0.1:0")
        .build()
        .unwrap();
    session.register_dir(tpch_dir().to_str().unwrap()).unwrap();
    let (host, prefix) = split_link(session.dashboard_link().expect("a dashboard"));
    assert_eq!(prefix, "/");
    assert_eq!(
        (get(&host, "/healthz").status, get(&host, "/readyz").status),
        (200, 200)
    );

    let rows = session.sql(QUERY).await.unwrap().collect().await.unwrap();
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 3);

    // The same schema as `shoal status --format json`.
    let status = get(&host, "/api/v1/status").json();
    let expected = shoal::status_json(&session.status().await.unwrap());
    assert_eq!(status["workers"].as_array().unwrap().len(), 2);
    assert_eq!(
        status["workers"][0]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        expected["workers"][0]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>()
    );
    let jobs = wait_for(&host, "/api/v1/jobs", |j| j[0]["state"] == "done");
    let job = &jobs[0];
    let total = job["tasks_total"].as_u64().unwrap();
    assert!(total >= 2, "{job}");
    assert_eq!(job["tasks_done"], job["tasks_total"]);
    let id = job["id"].as_u64().unwrap();
    let detail = get(&host, &format!("/api/v1/jobs/{id}")).json();
    let stages = detail["stage_totals"].as_array().unwrap();
    assert_eq!(stages.len() as u64, detail["stages"].as_u64().unwrap());
    let finished: u64 = stages
        .iter()
        .map(|s| s["tasks_finished"].as_u64().unwrap())
        .sum();
    assert_eq!(finished, total);
    // Operator metrics summed over every task: the scan read all of lineitem.
    let scanned = detail["operator_metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == "output_rows" && m["stage"] == 0)
        .map(|m| m["value"].as_u64().unwrap())
        .max();
    assert_eq!(scanned, Some(60175), "{detail}");
    assert_eq!(get(&host, "/api/v1/jobs/424242").status, 404);

    // The task stream: one entry per task, then nothing new after the cursor.
    let page = get(&host, "/api/v1/tasks?since=0").json();
    let tasks: Vec<&Value> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "task")
        .collect();
    assert_eq!(tasks.len() as u64, total);
    assert!(
        tasks
            .iter()
            .all(|t| t["end"].as_f64() >= t["start"].as_f64())
    );
    let next = page["next"].as_u64().unwrap();
    let later = get(&host, &format!("/api/v1/tasks?since={next}")).json();
    assert_eq!(later["entries"].as_array().unwrap().len(), 0);
    assert_eq!(later["next"].as_u64(), Some(next));
    // A reader that shows only the latest activity asks for the newest entries.
    let newest = get(&host, "/api/v1/tasks?since=0&limit=2&newest=true").json();
    let cursors: Vec<u64> = newest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["cursor"].as_u64().unwrap())
        .collect();
    assert_eq!(cursors, vec![next - 2, next - 1]);
    assert_eq!(newest["next"].as_u64(), Some(next));

    let metrics = get(&host, "/metrics");
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    for line in [
        "shoal_scheduler_workers{state=\"alive\"} 2",
        "shoal_scheduler_jobs_total{state=\"completed\"} 1",
        &format!("shoal_scheduler_tasks_finished_total {total}"),
        "shoal_scheduler_job_duration_seconds_count 1",
        "shoal_scheduler_tasks{state=\"running\"} 0",
        "shoal_scheduler_tasks{state=\"waiting\"} 0",
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "{line}:\n{}",
            metrics.body
        );
    }
    // Compute time is counted by stage kind: the group-by's stages are aggregations and
    // its scan's a data source; the kinds' output bytes add up to the job's.
    let by_kind = |name: &str| -> Vec<(String, f64)> {
        let prefix = format!("{name}{{kind=\"");
        metrics
            .body
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|rest| {
                let (kind, value) = rest.split_once("\"} ").unwrap();
                (kind.to_string(), value.parse().unwrap())
            })
            .collect()
    };
    let seconds = by_kind("shoal_scheduler_task_compute_seconds_total");
    let kinds: Vec<&str> = seconds.iter().map(|(k, _)| k.as_str()).collect();
    assert!(kinds.contains(&"AggregateExec"), "{kinds:?}");
    assert!(!kinds.contains(&"unknown"), "{kinds:?}");
    let bytes: f64 = by_kind("shoal_scheduler_task_output_bytes_total")
        .iter()
        .map(|(_, b)| b)
        .sum();
    assert_eq!(bytes as u64, detail["output_bytes"].as_u64().unwrap());
    // The scheduler's loop runs its 200 ms timer about on time when idle.
    let lag: f64 = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("shoal_scheduler_event_loop_lag_seconds "))
        .expect("an event-loop lag")
        .parse()
        .unwrap();
    assert!((0.0..5.0).contains(&lag), "{lag}");
    assert!(
        status["event_loop_lag_seconds"].as_f64().is_some(),
        "{status}"
    );
    let info = get(&host, "/api/v1/info").json();
    assert_eq!(info["settings"]["shoal.workers"], "2");
    assert_eq!(
        request(&host, "POST", "/api/v1/jobs/424242/cancel", &[]).status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_carry_each_job_event() {
    let session = Session::builder()
        .workers(2)
        .dashboard("127.0.0.1:0")
        .build()
        .unwrap();
    session.register_dir(tpch_dir().to_str().unwrap()).unwrap();
    let (host, _) = split_link(session.dashboard_link().unwrap());
    let mut stream = TcpStream::connect(&host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!("GET /api/v1/events HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    // Headers, until the subscription is in place.
    while line.trim() != "" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    session.sql(QUERY).await.unwrap().collect().await.unwrap();
    // Messages come at most every 250 ms, each with the events since the last one; a
    // job this small has fewer than the 500 a message carries, so none is skipped.
    let mut kinds = Vec::new();
    let mut messages = 0;
    while !kinds.contains(&"done".to_string()) {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended");
        if let Some(data) = line.trim().strip_prefix("data:") {
            let message: Value = serde_json::from_str(data.trim()).unwrap();
            assert_eq!(message["skipped"], 0, "{message}");
            messages += 1;
            for event in message["events"].as_array().unwrap() {
                kinds.push(event["kind"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(kinds[0], "submitted", "{kinds:?}");
    let count = |kind: &str| kinds.iter().filter(|k| *k == kind).count();
    assert_eq!(count("task_started"), count("task_finished"), "{kinds:?}");
    assert!(count("task_finished") >= 2, "{kinds:?}");
    assert!(
        messages < kinds.len(),
        "events are batched: {messages} messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_moves_every_route_and_the_token_guards_reads_and_changes() {
    let session = Session::builder()
        .workers(1)
        .token("s3cret")
        .dashboard("127.0.0.1:0")
        .option("dashboard.prefix", "/shoal/")
        .unwrap()
        .option("dashboard.auth", "token")
        .unwrap()
        .build()
        .unwrap();
    let link = session.dashboard_link().unwrap();
    assert!(link.ends_with("/shoal/"), "{link}");
    let (host, prefix) = split_link(link);
    assert_eq!(prefix, "/shoal");
    assert_eq!(get(&host, "/healthz").status, 404, "only under the prefix");
    assert_eq!(
        get(&host, "/shoal/healthz").status,
        200,
        "health needs no token"
    );
    assert_eq!(get(&host, "/shoal/api/v1/status").status, 401);
    assert_eq!(get(&host, "/shoal/metrics").status, 401);
    let bearer = [("Authorization", "Bearer s3cret")];
    assert_eq!(
        request(&host, "GET", "/shoal/api/v1/status", &bearer).status,
        200
    );
    let wrong = [("Authorization", "Bearer nope")];
    assert_eq!(
        request(&host, "GET", "/shoal/api/v1/status", &wrong).status,
        401
    );
    // A token in the URL once: a redirect to the address without it, setting a cookie.
    let first = get(&host, "/shoal/api/v1/tasks?since=0&token=s3cret");
    assert_eq!(first.status, 303);
    assert_eq!(first.header("location"), Some("./tasks?since=0"));
    assert_eq!(first.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(get(&host, "/shoal/api/v1/status?token=nope").status, 401);
    let cookie = first.header("set-cookie").expect("a cookie").to_string();
    assert!(
        cookie.contains("Path=/shoal/") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    assert_eq!(
        request(&host, "GET", "/shoal/api/v1/jobs", &[("Cookie", pair)]).status,
        200
    );
    // Changes always need the token.
    let cancel = "/shoal/api/v1/jobs/7/cancel";
    assert_eq!(request(&host, "POST", cancel, &[]).status, 401);
    assert_eq!(request(&host, "POST", cancel, &bearer).status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_a_one_line_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let error = Session::builder()
        .workers(1)
        .dashboard(&address)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("cannot serve the dashboard on {address}")),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");
    let no_token = Session::builder()
        .workers(1)
        .token("")
        .dashboard("127.0.0.1:0")
        .option("dashboard.auth", "token")
        .unwrap()
        .build()
        .unwrap_err()
        .to_string();
    assert!(no_token.contains("needs a cluster token"), "{no_token}");
    let bad = Session::builder().option("dashboard.auth", "password");
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("expected none or token")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_and_their_assets_are_served_with_relative_links() {
    let session = Session::builder()
        .workers(1)
        .token("s3cret")
        .dashboard("127.0.0.1:0")
        .option("dashboard.prefix", "/team/shoal")
        .unwrap()
        .option("dashboard.auth", "token")
        .unwrap()
        .build()
        .unwrap();
    let (host, prefix) = split_link(session.dashboard_link().unwrap());
    let bearer = [("Authorization", "Bearer s3cret")];
    let fetch = |path: &str| request(&host, "GET", &format!("{prefix}{path}"), &bearer);
    // The root (the printed link, and without its slash) leads to the status page,
    // keeping a token given in the URL so the status page can set its cookie.
    // Relative, like every link, so they work under whatever path a proxy uses.
    for (root, home) in [("/", "status"), ("", "shoal/status")] {
        let reply = fetch(root);
        assert_eq!(reply.status, 303, "{root:?}");
        assert_eq!(reply.header("location"), Some(home));
    }
    let with_token = get(&host, "/team/shoal/?token=s3cret");
    assert_eq!(with_token.header("location"), Some("status?token=s3cret"));
    // Every page is a shell whose links and scripts are relative to it.
    for (page, root, script) in [
        ("/status", "./", "status"),
        ("/workers", "./", "workers"),
        ("/jobs", "./", "jobs"),
        ("/cluster-map", "./", "map"),
        ("/info", "./", "info"),
        ("/workers/0", "../", "worker"),
        ("/jobs/12", "../", "job"),
    ] {
        let reply = fetch(page);
        assert_eq!(reply.status, 200, "{page}");
        assert!(
            reply
                .header("content-type")
                .unwrap()
                .starts_with("text/html")
        );
        let html = &reply.body;
        assert!(
            html.contains(&format!("data-root=\"{root}\"")),
            "{page}: {html}"
        );
        assert!(
            html.contains(&format!(
                "src=\"{root}assets/{script}.js?v={}\"",
                env!("CARGO_PKG_VERSION")
            )),
            "{page}"
        );
        assert!(
            html.contains(&format!("href=\"{root}cluster-map\"")),
            "{page}"
        );
        assert!(!html.contains("href=\"/"), "{page}: an absolute link");
        let script = fetch(&format!("/assets/{script}.js"));
        assert_eq!(script.status, 200);
        assert!(
            script
                .header("content-type")
                .unwrap()
                .starts_with("text/javascript")
        );
        assert!(script.body.contains("\"use strict\""));
    }
    assert_eq!(fetch("/assets/shoal.css").status, 200);
    assert_eq!(fetch("/assets/nope.js").status, 404);
    assert_eq!(fetch("/nope").status, 404);
    // An id that is not a number is no page (nothing from the URL reaches the HTML).
    assert_eq!(fetch("/jobs/%3Cscript%3E").status, 400);
    // Pages are reads: behind `--dashboard-auth token` they need it too.
    assert_eq!(get(&host, "/team/shoal/status").status, 401);
    assert_eq!(get(&host, "/team/shoal/assets/common.js").status, 401);
}
