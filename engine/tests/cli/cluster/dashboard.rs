//! The dashboard a `shoal scheduler` serves (`--dashboard-bind`): printed after the
//! scheduler's URL, reading the cluster as a client of it, under a path prefix, with the
//! cluster token guarding changes; a taken port stops the scheduler with one line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::http::{get, request, split_link};
use super::{Cluster, TOKEN, log_output};

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
    let cluster = Cluster {
        url,
        scheduler,
        workers: Vec::new(),
        token: Some(TOKEN.to_string()),
        extra: Vec::new(),
        worker_env: Vec::new(),
        worker_address_space: None,
    };
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
