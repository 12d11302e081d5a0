//! The dashboard a `shoal scheduler` serves (`--dashboard-bind`): printed after the
//! scheduler's URL, reading the cluster as a client of it, under a path prefix, with the
//! cluster token guarding changes; a taken port stops the scheduler with one line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::http::{get, request, split_link};
use super::{Cluster, TOKEN, log_output, shoal_first_line};

/// A scheduler serving its dashboard under `/shoal`, and the dashboard's link.
fn scheduler_with_dashboard(dashboard_bind: &str) -> (Cluster, String) {
    let mut scheduler = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["scheduler", "--exit-with-stdin", "--bind", "127.0.0.1:0"])
        .args(["--heartbeat-timeout", "2", "--token", TOKEN])
        .args([
            "--dashboard-bind",
            dashboard_bind,
            "--dashboard-prefix",
            "/shoal",
        ])
        .env_remove("SHOAL_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log_output())
        .spawn()
        .expect("start the scheduler");
    let mut out = BufReader::new(scheduler.stdout.take().unwrap());
    let (mut first, mut second) = (String::new(), String::new());
    out.read_line(&mut first).unwrap();
    out.read_line(&mut second).unwrap();
    let url = first.trim().rsplit(' ').next().unwrap().to_string();
    let link = second
        .trim()
        .strip_prefix("shoal dashboard at ")
        .unwrap_or_else(|| panic!("the scheduler said {first:?} then {second:?}"))
        .to_string();
    let cluster = Cluster::with_scheduler(url, scheduler, Some(TOKEN));
    (cluster, link)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_serves_its_dashboard_and_metrics() {
    let (mut cluster, link) = scheduler_with_dashboard("127.0.0.1:0");
    assert!(link.ends_with("/shoal/"), "{link}");
    let (host, _) = split_link(&link);
    assert_eq!(get(&host, "/shoal/readyz").status, 200);
    cluster.add_worker(&[]);
    cluster.add_worker(&[]);
    cluster.wait_for_workers(2);
    let session = cluster.session();
    let batches = session
        .sql("select count(*) from (values (1), (2), (3)) t(x) group by x % 2")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);

    // The status is at most 250 ms old; the job's events reach the dashboard through the
    // scheduler's event stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = get(&host, "/shoal/api/v1/status").json();
        let workers = status["workers"].as_array().unwrap();
        if workers.iter().filter(|w| w["alive"] == true).count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let jobs = loop {
        let jobs = get(&host, "/shoal/api/v1/jobs").json();
        if jobs
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["state"] == "done")
        {
            break jobs;
        }
        assert!(Instant::now() < deadline, "{jobs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let done = &jobs.as_array().unwrap()[0];
    assert_eq!(done["tasks_done"], done["tasks_total"]);
    let metrics = get(&host, "/shoal/metrics").body;
    assert!(
        metrics
            .lines()
            .any(|l| l == "shoal_scheduler_workers{state=\"alive\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("shoal_worker_memory_limit_bytes{worker=\"0\""),
        "{metrics}"
    );
    // Changes need the cluster token.
    let cancel = "/shoal/api/v1/jobs/1/cancel";
    assert_eq!(request(&host, "POST", cancel, &[]).status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let answered = request(&host, "POST", cancel, &[("Authorization", &bearer)]).status;
    assert_eq!(answered, 404, "job 1 has ended");
}

#[test]
fn a_taken_dashboard_port_stops_the_scheduler_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "scheduler",
            "--bind",
            "127.0.0.1:0",
            "--dashboard-bind",
            &address,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot serve the dashboard on {address}")),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no scheduler URL was printed");
}

/// A real Prometheus server (Debian's `prometheus`) scrapes a scheduler's `/metrics` under
/// its dashboard prefix, and a query for the alive workers answers 2. Skipped where
/// Prometheus is not installed, except under `CI=true`, where that fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_cluster_from_the_scheduler() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").is_err(),
            "prometheus is not installed (apt-get install prometheus)"
        );
        eprintln!("skipped: prometheus is not installed");
        return;
    }
    let (mut cluster, link) = scheduler_with_dashboard("127.0.0.1:0");
    cluster.add_worker(&[]);
    cluster.add_worker(&[]);
    cluster.wait_for_workers(2);
    let (target, _) = split_link(&link);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: shoal\n    \
             metrics_path: /shoal/metrics\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("127.0.0.1:{port}");
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={server}"))
        .stdout(Stdio::null())
        .stderr(log_output())
        .spawn()
        .expect("start prometheus");
    let query = "/api/v1/query?query=shoal_scheduler_workers%7Bstate%3D%22alive%22%7D";
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let reply = std::net::TcpStream::connect(&server)
            .ok()
            .map(|_| get(&server, query));
        if let Some(reply) = reply.filter(|r| r.status == 200) {
            let body = reply.json();
            if let Some(value) = body["data"]["result"][0]["value"][1].as_str() {
                break value.to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "prometheus scraped nothing in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert_eq!(answer, "2");
}

/// Retiring a worker (the dashboard's call, with the token) drains it: the task it runs
/// finishes, nothing new goes to it, it exits by itself with success, and the job still
/// gives its answer (what the worker held is computed again where it is still needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_a_worker_drains_it_and_it_exits() {
    use futures::TryStreamExt;

    let (mut cluster, link) = scheduler_with_dashboard("127.0.0.1:0");
    cluster.add_worker(&[]);
    cluster.add_worker(&[]);
    cluster.wait_for_workers(2);
    let (host, _) = split_link(&link);
    let session = cluster.session();
    let job = super::start_job(&session, &super::slow_query(20_000_000)).await;
    // The worker running the scan.
    let busy = super::busy_worker(&session).await;
    let path = format!("/shoal/api/v1/workers/{busy}/retire");
    assert_eq!(request(&host, "POST", &path, &[]).status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let reply = request(&host, "POST", &path, &[("Authorization", &bearer)]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let batches: Vec<_> = job.stream.try_collect().await.unwrap();
    let expected = vec![vec!["97".to_string(), (96 * 97 / 2).to_string()]];
    super::assert_rows_eq("with a worker retired", &expected, &super::rows(&batches));

    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = cluster.workers[busy].try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the retired worker did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit}");
    let status = session.status().await.unwrap();
    let retired = &status.workers[busy];
    assert!(!retired.alive && retired.retiring, "{status:?}");
    assert!(
        retired.tasks_completed >= 1,
        "its running task finished: {status:?}"
    );
    assert!(!session.retire(busy).await.unwrap(), "already gone");
    // The other worker runs what comes next.
    let batches = session
        .sql(&super::slow_query(100_000))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    super::assert_rows_eq("after the retirement", &expected, &super::rows(&batches));
    let embedded = shoal::Session::builder().workers(1).build().unwrap();
    let error = embedded.retire(0).await.unwrap_err().to_string();
    assert!(error.contains("cannot retire"), "{error}");
}

/// An embedded session's event log (`shoal.dashboard.event_log`) replays into the same
/// job and task-stream API after the session is gone (`shoal dashboard --replay DIR`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_log_replays_into_the_same_job_pages() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events");
    let (link, live) = {
        let session = shoal::Session::builder()
            .workers(2)
            .partitions(3)
            .dashboard("127.0.0.1:0")
            .option("dashboard.event_log", log.to_str().unwrap())
            .unwrap()
            .build()
            .unwrap();
        let batches = session
            .sql(&super::slow_query(10_000))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        let link = session.dashboard_link().unwrap().to_string();
        let (host, _) = split_link(&link);
        let deadline = Instant::now() + Duration::from_secs(20);
        let live = loop {
            let jobs = get(&host, "/api/v1/jobs").json();
            if jobs[0]["state"] == "done" {
                break jobs[0].clone();
            }
            assert!(Instant::now() < deadline, "{jobs}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        (link, live)
    };
    let (mut replay, line) = shoal_first_line(&[
        "dashboard",
        "--replay",
        log.to_str().unwrap(),
        "--dashboard-bind",
        "127.0.0.1:0",
    ]);
    let replayed_link = line
        .strip_prefix("shoal dashboard at ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();
    assert_ne!(replayed_link, link);
    let (host, _) = split_link(&replayed_link);
    let jobs = get(&host, "/api/v1/jobs").json();
    let job = &jobs[0];
    for key in [
        "id",
        "state",
        "stages",
        "tasks_total",
        "tasks_done",
        "output_bytes",
    ] {
        assert_eq!(job[key], live[key], "{key}: {job} vs {live}");
    }
    let id = job["id"].as_u64().unwrap();
    let detail = get(&host, &format!("/api/v1/jobs/{id}")).json();
    assert!(!detail["operator_metrics"].as_array().unwrap().is_empty());
    let tasks = get(&host, "/api/v1/tasks?since=0").json();
    let finished = tasks["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "task")
        .count();
    assert_eq!(finished as u64, live["tasks_total"].as_u64().unwrap());
    assert_eq!(
        get(&host, "/api/v1/status").status,
        503,
        "no cluster behind a replay"
    );
    let _ = replay.kill();
    let _ = replay.wait();
    let missing = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "dashboard",
            "--replay",
            dir.path().join("nothing").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
