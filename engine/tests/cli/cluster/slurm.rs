//! Slurm for real: the gateway's `slurm` backend and `deploy/slurm/shoal.sbatch` on the
//! one-node Slurm that `.ci/slurm.sh` starts on 127.0.0.1. Skipped where no Slurm
//! controller answers, except under `CI=true`, where that fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal::Session;

use super::gateway::{Gateway, wait_for};
use super::{q03_asking_for_a_gpu, tpch_dir};

const ADA: &str = "ada-token-0123456789abc";
const BEA: &str = "bea-token-0123456789abc";

/// Whether a Slurm controller answers; if not, the test is skipped (failed under CI).
fn slurm_is_up() -> bool {
    let up = Command::new("scontrol")
        .arg("ping")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("is UP"));
    if !up {
        assert!(
            std::env::var("CI").is_err(),
            "no Slurm controller answers (`bash .ci/slurm.sh` starts one)"
        );
        eprintln!("skipped: no Slurm controller answers (`bash .ci/slurm.sh` starts one)");
    }
    up
}

/// Runs a Slurm command; its standard output.
fn slurm(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The jobs `squeue` lists (pending, running or completing) whose names start with
/// `prefix`, as (id, name).
fn queued(prefix: &str) -> Vec<(String, String)> {
    slurm("squeue", &["--me", "--noheader", "--format=%i|%j"])
        .lines()
        .filter_map(|l| l.trim().split_once('|'))
        .filter(|(_, name)| name.starts_with(prefix))
        .map(|(id, name)| (id.to_string(), name.to_string()))
        .collect()
}

/// A name of `base` unique to this test process: Slurm's queue is shared by every run
/// on the machine, and jobs are told apart by name.
fn unique(base: &str) -> String {
    format!("{base}-{}", std::process::id())
}

/// Cancels, when dropped, the jobs named with its prefix: a failed test leaves none.
struct CancelJobs(String);

impl Drop for CancelJobs {
    fn drop(&mut self) {
        for (id, _) in queued(&self.0) {
            let _ = Command::new("scancel").arg(&id).status();
        }
    }
}

fn config(dir: &Path, user: &str, token: &str, cluster_tls: bool) -> PathBuf {
    let path = dir.join("gateway.toml");
    let text = format!(
        r#"
[gateway]
bind = "127.0.0.1:0"
data_dir = "{}"
backend = "slurm"
check_interval = "0.2s"
cluster_tls = {cluster_tls}

[users.{user}]
token = "{token}"

[slurm]
{host}start_timeout = "60s"
"#,
        dir.display(),
        // With TLS, no fixed address: the certificate names Slurm's nodes.
        host = if cluster_tls {
            ""
        } else {
            "host = \"127.0.0.1\"\n"
        },
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Waits (90 s at most) until `prefix`'s jobs left the queue.
fn wait_until_dequeued(prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !queued(prefix).is_empty() {
        assert!(
            Instant::now() < deadline,
            "still queued: {:?}",
            queued(prefix)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A two-group cluster as Slurm jobs: a TPC-H query asking for the gpu resource runs on
/// the gpu group only, a group scales up (one more job) and down (a worker retires),
/// and once idle the cluster stops and every one of its jobs leaves the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slurm_backend_runs_scales_and_idles_out_a_two_group_cluster() {
    if !slurm_is_up() {
        return;
    }
    let user = unique("ada");
    let _cancel = CancelJobs(format!("shoal-{user}-"));
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&config(dir.path(), &user, ADA, false));
    let spec = json!({"spec": {
        "cluster": {"idle_timeout": "15s"},
        "groups": {
            "cpu": {"workers": 2, "slots": 1, "memory": "512MiB"},
            "gpu": {"workers": 1, "slots": 2, "memory": "512MiB", "resources": "gpu=1"},
        },
    }});
    let created = gateway.call(ADA, "POST", "/api/v1/clusters", Some(spec));
    assert_eq!(created.status, 201, "{}", created.body);
    let cluster = created.json();
    let name = cluster["name"].as_str().unwrap().to_string();
    assert_eq!(cluster["groups"]["cpu"]["alive"], 2);
    assert_eq!(cluster["groups"]["gpu"]["alive"], 1);
    let prefix = format!("{name}-");
    let jobs = |p: &str| -> Vec<String> { queued(p).into_iter().map(|(_, n)| n).collect() };
    let mut names = jobs(&format!("shoal-{prefix}"));
    names.sort();
    assert_eq!(
        names,
        [
            format!("shoal-{name}-cpu"),
            format!("shoal-{name}-gpu"),
            format!("shoal-{name}-scheduler")
        ]
    );

    // One more cpu worker is one more job.
    let scale = |workers: usize| {
        let body = json!({"group": "cpu", "workers": workers});
        let path = format!("/api/v1/clusters/{name}/scale");
        gateway.call(ADA, "POST", &path, Some(body))
    };
    let up = scale(3);
    assert_eq!(up.status, 200, "{}", up.body);
    assert_eq!(up.json()["groups"]["cpu"]["alive"], 3);
    assert_eq!(jobs(&format!("shoal-{name}-cpu")).len(), 2);

    let link = format!("http://{}", gateway.1);
    let session = Session::builder()
        .gateway_cluster(&link, ADA, &name)
        .build()
        .unwrap();
    let status = q03_asking_for_a_gpu(&session).await;
    assert_eq!(status.workers.len(), 4, "{status:?}");
    for w in &status.workers {
        assert_eq!(w.tasks_completed > 0, w.group == "gpu", "{status:?}");
    }
    drop(session);

    let down = scale(1);
    assert_eq!(down.status, 200, "{}", down.body);
    wait_for(&gateway, ADA, &name, |c| c["groups"]["cpu"]["alive"] == 1);

    // No job for 15 s: the gateway stops it, and Slurm's queue has none of its jobs.
    let deadline = Instant::now() + Duration::from_secs(90);
    let stopped = loop {
        let path = format!("/api/v1/clusters/{name}");
        let cluster: Value = gateway.call(ADA, "GET", &path, None).json();
        if cluster["state"] != "running" {
            break cluster;
        }
        assert!(Instant::now() < deadline, "still {cluster}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    let reason = stopped["reason"].as_str().unwrap();
    assert!(reason.starts_with("idle for "), "{reason}");
    assert!(jobs(&format!("shoal-{prefix}")).is_empty());
}

/// A cluster with TLS (its own authority, which the owner is handed) starts as Slurm
/// jobs; cancelling the scheduler's job from outside (`scancel`) makes the cluster
/// `failed`, saying so, and its workers' jobs are cancelled too.
#[test]
fn a_scheduler_job_cancelled_from_outside_shows_as_the_clusters_state() {
    if !slurm_is_up() {
        return;
    }
    let user = unique("bea");
    let _cancel = CancelJobs(format!("shoal-{user}-"));
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&config(dir.path(), &user, BEA, true));
    let spec = json!({"spec": {"groups": {"cpu": {"workers": 1, "slots": 1}}}});
    let created = gateway.call(BEA, "POST", "/api/v1/clusters", Some(spec));
    assert_eq!(created.status, 201, "{}", created.body);
    let cluster = created.json();
    let name = cluster["name"].as_str().unwrap().to_string();
    // The gateway saw the worker join over TLS, with the cluster's own authority.
    assert_eq!(cluster["groups"]["cpu"]["alive"], 1);
    assert!(
        cluster["scheduler"]
            .as_str()
            .unwrap()
            .starts_with("https://127.0.0.1:")
    );
    assert!(
        cluster["tls_ca"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    // The certificate names Slurm's node (as `sinfo` lists it), where any process may run.
    let node = slurm("sinfo", &["--noheader", "--Node", "--format=%N"]);
    let cert = dir.path().join("clusters").join(&name).join("tls/cert.pem");
    let names = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&names.stdout).to_string();
    assert!(names.contains(&format!("DNS:{}", node.trim())), "{names}");
    let (job, _) = queued(&format!("shoal-{name}-scheduler"))
        .pop()
        .expect("the scheduler's job");
    slurm("scancel", &[&job]);
    let failed = wait_for(&gateway, BEA, &name, |c| c["state"] != "running");
    assert_eq!(failed["state"], "failed");
    assert_eq!(
        failed["reason"],
        format!("the scheduler's Slurm job {job} is CANCELLED").as_str()
    );
    wait_until_dequeued(&format!("shoal-{name}-"));
}

/// `deploy/slurm/shoal.sbatch` starts a scheduler and the groups of a spec as job steps
/// in one allocation, runs a TPC-H query on the gpu group, prints its answer and ends.
#[test]
fn the_batch_script_runs_a_job_on_a_cluster_made_from_a_spec() {
    if !slurm_is_up() {
        return;
    }
    let job_name = unique("shoal-script-test");
    let _cancel = CancelJobs(job_name.clone());
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("cluster.toml");
    std::fs::write(
        &spec,
        "[groups.cpu]\nworkers = 2\nslots = 1\nmemory = \"256MiB\"\n\n\
         [groups.gpu]\nworkers = 1\nslots = 1\nresources = \"gpu=1\"\n",
    )
    .unwrap();
    let lineitem = tpch_dir().join("lineitem.parquet");
    let (_, query) = shoal::tpch::QUERIES[5];
    let job = dir.path().join("job.sql");
    std::fs::write(
        &job,
        format!(
            "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION '{}';\n\
             SET shoal.task.resources = 'gpu=1';\n{query}",
            lineitem.display()
        ),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/slurm/shoal.sbatch");
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(format!("--job-name={job_name}"))
        .args(["--ntasks=3", "--cpus-per-task=1", "--error=shoal-%j.err"])
        .arg(format!("--chdir={}", dir.path().display()))
        .arg(&script)
        .args([&spec, &job])
        .env("SHOAL", env!("CARGO_BIN_EXE_shoal"))
        .env_remove("SHOAL_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_until_dequeued(&job_name);
    let state = slurm("scontrol", &["show", "job", &id]);
    let run = dir.path().join(format!("shoal-{id}"));
    let output = std::fs::read_to_string(dir.path().join(format!("shoal-{id}.out")));
    assert!(
        state.contains("JobState=COMPLETED"),
        "{state}\n{output:?}\n{:?}",
        std::fs::read_to_string(run.join("scheduler.log"))
    );
    assert_eq!(output.unwrap(), "revenue\n1193053.2253\n");
    let scheduler_log = std::fs::read_to_string(run.join("scheduler.log")).unwrap();
    assert_eq!(
        scheduler_log.matches("joined").count(),
        3,
        "{scheduler_log}"
    );
    let token = std::fs::read_to_string(run.join("token")).unwrap();
    assert_eq!(token.trim().len(), 48);
}

/// The deployment scripts pass shellcheck (Debian's `shellcheck`).
#[test]
fn the_deployment_scripts_are_shellcheck_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scripts = [
        "deploy/slurm/shoal.sbatch",
        ".ci/slurm.sh",
        ".ci/kubectl.sh",
        ".ci/run",
    ];
    match Command::new("shellcheck")
        .current_dir(&root)
        .args(scripts)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "shellcheck is not installed (apt-get install shellcheck)"
            );
            eprintln!("skipped: shellcheck is not installed");
        }
    }
}
