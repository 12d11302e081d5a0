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
