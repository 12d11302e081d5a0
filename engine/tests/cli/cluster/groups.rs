//! Worker groups from a cluster spec: `shoal local --spec`.

use std::process::Command;

use shoal::Session;

use super::{TOKEN, q03_asking_for_a_gpu, shoal_first_line, signal};

const TWO_GROUPS: &str = r#"
# Two CPU workers and one with the (Shoal-named) gpu resource.
[groups.cpu]
workers = 2
slots = 1
memory = "512MiB"

[groups.gpu]
workers = 1
slots = 2
memory = "768MiB"
resources = "gpu=1"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_starts_the_groups_of_a_spec_and_resources_pick_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("cluster.toml");
    std::fs::write(&spec, TWO_GROUPS).unwrap();
    let (mut local, url) =
        shoal_first_line(&["local", "--spec", spec.to_str().unwrap(), "--token", TOKEN]);
    let url = url.trim();
    assert!(url.starts_with("http://"), "shoal local printed {url:?}");
    let session = Session::builder()
        .cluster(url)
        .token(TOKEN)
        .build()
        .unwrap();
    let status = session.status().await.unwrap();
    let mut shapes: Vec<(String, usize, u64, f64)> = status
        .workers
        .iter()
        .map(|w| {
            (
                w.group.clone(),
                w.slots,
                w.memory_limit,
                w.resources.get("gpu"),
            )
        })
        .collect();
    shapes.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let cpu = ("cpu".to_string(), 1, 512 << 20, 0.0);
    let gpu = ("gpu".to_string(), 2, 768 << 20, 1.0);
    assert_eq!(shapes, vec![cpu.clone(), cpu, gpu]);

    let status = q03_asking_for_a_gpu(&session).await;
    for w in &status.workers {
        let ran = w.tasks_completed > 0;
        assert_eq!(
            ran,
            w.group == "gpu",
            "tasks ran only on the gpu group: {status:?}"
        );
    }
    signal(&local, "INT");
    assert!(local.wait().unwrap().success());
}

#[test]
fn local_refuses_a_bad_spec_in_one_line_naming_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("cluster.toml");
    std::fs::write(&spec, "[groups.cpu]\nworkers = 2\ncores = 4\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["local", "--spec", spec.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("{}:3:1: unknown field `cores`", spec.display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // A spec says how many workers: --workers beside it is refused, not ignored.
    std::fs::write(&spec, TWO_GROUPS).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["local", "--spec", spec.to_str().unwrap(), "--workers", "3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--workers"), "{stderr}");
}

/// A worker sent SIGTERM (what Kubernetes and `scancel` send) drains: its running task
/// finishes, nothing new goes to it, it exits with success, and the scheduler shows it
/// retired rather than lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_sent_sigterm_drains_and_exits() {
    use futures::TryStreamExt;

    let mut cluster = super::Cluster::start(2);
    let session = cluster.session();
    let job = super::start_job(&session, &super::slow_query(20_000_000)).await;
    let busy = super::busy_worker(&session).await;
    signal(&cluster.workers[busy], "TERM");
    let batches: Vec<_> = job.stream.try_collect().await.unwrap();
    let expected = vec![vec!["97".to_string(), (96 * 97 / 2).to_string()]];
    super::assert_rows_eq("with a worker draining", &expected, &super::rows(&batches));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = cluster.workers[busy].try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker did not exit"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit}");
    let status = session.status().await.unwrap();
    let drained = &status.workers[busy];
    assert!(!drained.alive && drained.retiring, "{status:?}");
    assert!(drained.tasks_completed >= 1, "{status:?}");
}
