//! `shoal gateway serve` with the `local` backend: real scheduler and worker processes
//! on 127.0.0.1, driven through the REST API as two users.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal::Session;

use super::http::{Reply, send};
use super::{kill9, q03_asking_for_a_gpu, shoal_first_line};

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789ab";

fn config_text(data: &Path) -> String {
    format!(
        r#"
[gateway]
bind = "127.0.0.1:0"
data_dir = "{}"
check_interval = "0.2s"

[users.alice]
token = "{ALICE}"

[users.bob]
token = "{BOB}"

[limits]
clusters = 1
workers = 3
memory = "4GiB"

[limits.users.alice]
clusters = 2
workers = 4

[profiles.tiny]
cluster = {{ idle_timeout = "1s" }}
groups.cpu = {{ workers = 1, memory = "256MiB" }}
"#,
        data.display()
    )
}

/// A gateway process and its `host:port`.
pub(super) struct Gateway(Child, pub(super) String);

impl Gateway {
    pub(super) fn start(config: &Path) -> Self {
        let (child, line) =
            shoal_first_line(&["gateway", "serve", "--config", config.to_str().unwrap()]);
        let host = line.trim().rsplit("http://").next().unwrap().to_string();
        assert!(
            host.starts_with("127.0.0.1:"),
            "the gateway printed {line:?}"
        );
        Self(child, host)
    }

    pub(super) fn call(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
        let auth = format!("Bearer {token}");
        let mut headers = vec![("Authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        send(&self.1, method, path, &headers, &body)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills, when dropped, every process whose standard error goes to a file under its
/// directory (the clusters' logs): a failed test leaves no cluster running.
struct Leftovers(std::path::PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if std::fs::read_link(entry.path().join("fd/2")).is_ok_and(|p| p.starts_with(&self.0)) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

/// Processes whose environment holds cluster token `token`: a cluster's own.
fn processes_with(token: &str) -> Vec<u32> {
    let needle = format!("SHOAL_TOKEN={token}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim().starts_with('Z'));
        if !zombie && environ.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// Polls `name` as `token` until `done` holds of it (30 s at most).
pub(super) fn wait_for(
    gateway: &Gateway,
    token: &str,
    name: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cluster = gateway
            .call(token, "GET", &format!("/api/v1/clusters/{name}"), None)
            .json();
        if done(&cluster) {
            return cluster;
        }
        assert!(Instant::now() < deadline, "still {cluster}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn two_groups() -> Value {
    json!({"spec": {"groups": {
        "cpu": {"workers": 1, "memory": "512MiB"},
        "gpu": {"workers": 1, "slots": 2, "memory": "512MiB", "resources": "gpu=1"},
    }}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_creates_scales_and_stops_clusters_for_their_owners_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_text(dir.path())).unwrap();
    let _leftovers = Leftovers(dir.path().to_path_buf());
    let gateway = Gateway::start(&config);

    // Alice asks for two groups; the answer comes once every worker has joined.
    let created = gateway.call(ALICE, "POST", "/api/v1/clusters", Some(two_groups()));
    assert_eq!(created.status, 201, "{}", created.body);
    let alice = created.json();
    let name = alice["name"].as_str().unwrap().to_string();
    assert_eq!(alice["state"], "running");
    assert_eq!(alice["groups"]["cpu"]["alive"], 1);
    assert_eq!(alice["groups"]["gpu"]["alive"], 1);
    let token = alice["token"].as_str().unwrap().to_string();
    let url = alice["scheduler"].as_str().unwrap().to_string();

    // Her session finds it by name through the gateway; tasks asking for the gpu
    // resource run on the gpu group only.
    let link = format!("http://{}", gateway.1);
    let session = Session::builder()
        .gateway_cluster(&link, ALICE, &name)
        .build()
        .unwrap();
    let status = q03_asking_for_a_gpu(&session).await;
    for w in &status.workers {
        assert_eq!(w.tasks_completed > 0, w.group == "gpu", "{status:?}");
    }

    // Bob neither sees, scales nor stops it; the gateway does not say it exists.
    let path = format!("/api/v1/clusters/{name}");
    for (method, path, body) in [
        ("GET", path.clone(), None),
        (
            "POST",
            format!("{path}/scale"),
            Some(json!({"group": "cpu", "workers": 3})),
        ),
        ("DELETE", path.clone(), None),
    ] {
        let reply = gateway.call(BOB, method, &path, body);
        assert_eq!(reply.status, 404, "{method} {path}: {}", reply.body);
        assert_eq!(reply.json()["error"], format!("no cluster named {name}"));
    }
    assert_eq!(
        gateway.call(BOB, "GET", "/api/v1/clusters", None).json(),
        json!({"clusters": []})
    );

    // Scaling up starts workers of that group; down retires the surplus.
    let scale = |workers: usize| {
        let body = json!({"group": "cpu", "workers": workers});
        gateway.call(ALICE, "POST", &format!("{path}/scale"), Some(body))
    };
    let up = scale(2);
    assert_eq!(up.status, 200, "{}", up.body);
    assert_eq!(up.json()["groups"]["cpu"]["alive"], 2);
    let over = scale(4);
    assert_eq!(over.status, 403);
    assert_eq!(
        over.json()["error"],
        "user alice may hold at most 4 workers; this would make 5"
    );
    assert_eq!(scale(1).status, 200);
    wait_for(&gateway, ALICE, &name, |c| c["groups"]["cpu"]["alive"] == 1);
    let processes = 1 + 1 + 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_with(&token).len() != processes {
        assert!(Instant::now() < deadline, "the retired worker did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Stopping ends every process of the cluster; its record stays.
    let stopped = gateway.call(ALICE, "DELETE", &path, None);
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    assert_eq!(stopped.json()["state"], "stopped");
    assert_eq!(stopped.json()["reason"], "stopped by alice");
    assert!(processes_with(&token).is_empty());
    assert!(
        Session::builder()
            .cluster(&url)
            .token(&token)
            .build()
            .is_err()
    );
    let error = Session::builder()
        .gateway_cluster(&link, ALICE, &name)
        .build()
        .unwrap_err();
    let expected = format!("cluster {name} is stopped: stopped by alice");
    assert!(error.to_string().contains(&expected), "{error}");
}

/// Runs `shoal gateway ARGS` against `gateway` as Alice.
fn shoal_gateway(gateway: &Gateway, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("gateway")
        .args(args)
        .env("SHOAL_GATEWAY", format!("http://{}", gateway.1))
        .env("SHOAL_GATEWAY_TOKEN", ALICE)
        .output()
        .unwrap()
}

#[test]
fn the_command_line_client_creates_lists_scales_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_text(dir.path())).unwrap();
    let _leftovers = Leftovers(dir.path().to_path_buf());
    let gateway = Gateway::start(&config);
    let spec = dir.path().join("cluster.toml");
    std::fs::write(&spec, "[groups.etl]\nworkers = 1\nmemory = \"256MiB\"\n").unwrap();
    let out = shoal_gateway(&gateway, &["create", "--spec", spec.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let name = created["name"].as_str().unwrap().to_string();
    assert_eq!(created["groups"]["etl"]["alive"], 1);

    let out = shoal_gateway(
        &gateway,
        &["scale", &name, "--group", "etl", "--count", "2"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scaled: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(scaled["groups"]["etl"]["alive"], 2);
    let list = shoal_gateway(&gateway, &["list"]);
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    let line = list
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(line.contains("running  etl=2"), "{line}");

    // A refusal is one line on stderr and exit code 1.
    let out = shoal_gateway(
        &gateway,
        &["scale", &name, "--group", "etl", "--count", "9"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = "user alice may hold at most 4 workers; this would make 9";
    assert!(stderr.contains(expected), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let out = shoal_gateway(&gateway, &["stop", &name]);
    assert!(out.status.success());
    let stopped: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stopped["state"], "stopped");
}

#[test]
fn the_gateway_refuses_bad_requests_and_requests_over_a_limit_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_text(dir.path())).unwrap();
    let _leftovers = Leftovers(dir.path().to_path_buf());
    let gateway = Gateway::start(&config);
    let create =
        |token: &str, body: Value| gateway.call(token, "POST", "/api/v1/clusters", Some(body));

    let anonymous = send(&gateway.1, "GET", "/api/v1/clusters", &[], "");
    assert_eq!(anonymous.status, 401);
    // An unknown caller hears nothing about its body.
    let json = [("Content-Type", "application/json")];
    let anonymous = send(&gateway.1, "POST", "/api/v1/clusters", &json, "{not json");
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert_eq!(
        gateway
            .call("nobody-0123456789", "GET", "/api/v1/clusters", None)
            .status,
        401
    );
    let cases = [
        (
            json!({"spec": {"groups": {"cpu": {"cores": 2}}}}),
            "unknown field `cores`",
        ),
        (
            json!({"spec": {"groups": {"cpu": {"memory": "lots"}}}}),
            "groups.cpu.memory: invalid size 'lots'",
        ),
        (json!({"profile": "huge"}), "no profile named huge"),
        (json!({}), "give either a spec or a profile"),
        (
            json!({"spec": {"groups": {"cpu": {"workers": 4, "memory": "256MiB"}}}}),
            "user bob may hold at most 3 workers; this would make 4",
        ),
        (
            json!({"spec": {"groups": {"cpu": {"workers": 1}}}}),
            "groups.cpu.memory: required, since user bob has a memory limit",
        ),
        (
            json!({"spec": {"groups": {
                "a": {"workers": 6000, "memory": "1GiB"},
                "b": {"workers": 6000, "memory": "1GiB"},
            }}}),
            "a cluster may have at most 10000 workers; this would make 12000",
        ),
    ];
    for (body, expected) in cases {
        let reply = create(BOB, body.clone());
        assert!(
            matches!(reply.status, 400 | 403 | 404),
            "{body}: {} {}",
            reply.status,
            reply.body
        );
        let error = reply.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(expected), "{body}: {error}");
        assert!(!error.contains('\n'), "{error}");
    }
    // Nothing was started for any of them.
    assert_eq!(
        gateway.call(BOB, "GET", "/api/v1/clusters", None).json(),
        json!({"clusters": []})
    );

    // One cluster is Bob's limit: of two asked for at once, one is refused.
    let (first, second) = std::thread::scope(|s| {
        let one = s.spawn(|| create(BOB, json!({"profile": "tiny"})));
        let two = s.spawn(|| create(BOB, json!({"profile": "tiny"})));
        (one.join().unwrap(), two.join().unwrap())
    });
    let (first, second) = if first.status == 201 {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(second.status, 403, "{}", second.body);
    assert_eq!(
        second.json()["error"],
        "user bob may hold at most 1 clusters; this would make 2"
    );
    let name = first.json()["name"].as_str().unwrap().to_string();
    let scale = json!({"group": "gpu", "workers": 1});
    let reply = gateway.call(
        BOB,
        "POST",
        &format!("/api/v1/clusters/{name}/scale"),
        Some(scale),
    );
    assert_eq!(reply.status, 409);
    assert_eq!(
        reply.json()["error"],
        format!("cluster {name} has no group gpu (its groups: cpu)")
    );
}

#[test]
fn idle_clusters_stop_and_clusters_outlive_a_restarted_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_text(dir.path())).unwrap();
    let _leftovers = Leftovers(dir.path().to_path_buf());
    let mut gateway = Gateway::start(&config);

    // Bob's tiny cluster (idle_timeout 1 s) stops by itself, processes and all.
    let tiny = gateway.call(
        BOB,
        "POST",
        "/api/v1/clusters",
        Some(json!({"profile": "tiny"})),
    );
    assert_eq!(tiny.status, 201, "{}", tiny.body);
    let tiny = tiny.json();
    let stopped = wait_for(&gateway, BOB, tiny["name"].as_str().unwrap(), |c| {
        c["state"] == "stopped"
    });
    assert!(
        stopped["reason"].as_str().unwrap().starts_with("idle for"),
        "{stopped}"
    );
    assert!(processes_with(tiny["token"].as_str().unwrap()).is_empty());

    // Alice's cluster outlives the gateway being killed, and the next gateway knows it.
    let alice = gateway
        .call(ALICE, "POST", "/api/v1/clusters", Some(two_groups()))
        .json();
    let name = alice["name"].as_str().unwrap().to_string();
    let token = alice["token"].as_str().unwrap().to_string();
    kill9(&mut gateway.0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        processes_with(&token).len(),
        3,
        "scheduler and two workers still run"
    );
    gateway = Gateway::start(&config);
    let again = gateway
        .call(ALICE, "GET", &format!("/api/v1/clusters/{name}"), None)
        .json();
    assert_eq!(again["state"], "running", "{again}");
    assert_eq!(again["groups"]["gpu"]["alive"], 1);
    assert_eq!(again["token"], token);
    // Numbers are not reused after a restart.
    let next = gateway
        .call(
            BOB,
            "POST",
            "/api/v1/clusters",
            Some(json!({"profile": "tiny"})),
        )
        .json();
    assert_ne!(next["name"], tiny["name"]);
    assert_ne!(next["name"], alice["name"]);

    // A scheduler killed from outside shows as the cluster's state, and its workers go.
    let scheduler = processes_with(&token)
        .into_iter()
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).any(|a| a == b"scheduler")
        })
        .expect("the scheduler's process");
    assert!(
        Command::new("kill")
            .args(["-9", &scheduler.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let failed = wait_for(&gateway, ALICE, &name, |c| c["state"] == "failed");
    assert_eq!(
        failed["reason"],
        format!("the scheduler (process {scheduler}) ended without being stopped").as_str()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(&token).is_empty() {
        assert!(
            Instant::now() < deadline,
            "workers of a failed cluster still run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A stand-in JupyterHub: `GET /hub/api/user` answers with the owner of the token in
/// `Authorization: token T`, and counts the questions.
fn stand_in_hub(asked: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new().route(
        "/hub/api/user",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            asked.fetch_add(1, Ordering::SeqCst);
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("token "))
                .unwrap_or_default()
                .to_string();
            async move {
                let user = match token.as_str() {
                    CAROL_HUB => json!({"kind": "user", "name": "Carol.C", "admin": false}),
                    DAVE_HUB => json!({"kind": "user", "name": "dave", "admin": false}),
                    ALICE_HUB => json!({"kind": "user", "name": "alice", "admin": false}),
                    SERVICE_HUB => json!({"kind": "service", "name": "dashboards"}),
                    _ => return (axum::http::StatusCode::FORBIDDEN, axum::Json(json!({}))),
                };
                (axum::http::StatusCode::OK, axum::Json(user))
            }
        }),
    );
    super::kubernetes::serve(app)
}

const CAROL_HUB: &str = "carol-hub-api-token-1";
const DAVE_HUB: &str = "dave-hub-api-token-22";
const ALICE_HUB: &str = "a-hub-user-named-alice";
const SERVICE_HUB: &str = "a-hub-service-token-1";

/// With `[jupyterhub]`, a hub user's API token is their gateway token: clusters are
/// theirs alone, names the hub allows but cluster names do not are mapped, the hub is
/// asked once a minute per token, and an unreachable hub is a 502 that says so.
#[test]
fn jupyterhub_users_reach_the_gateway_with_their_hub_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let hub = stand_in_hub(Arc::clone(&asked));
    let config = dir.path().join("gateway.toml");
    let text = format!(
        "{}\n[jupyterhub]\nurl = \"{hub}/\"\n",
        config_text(dir.path())
    );
    std::fs::write(&config, text).unwrap();
    let _leftovers = Leftovers(dir.path().to_path_buf());
    let gateway = Gateway::start(&config);

    let spec = json!({"spec": {"groups": {"cpu": {"workers": 1, "memory": "256MiB"}}}});
    let created = gateway.call(CAROL_HUB, "POST", "/api/v1/clusters", Some(spec));
    assert_eq!(created.status, 201, "{}", created.body);
    let carol = created.json();
    assert_eq!(carol["owner"], "Carol.C");
    let name = carol["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("carol-c-"), "{name}");
    let path = format!("/api/v1/clusters/{name}");
    assert_eq!(gateway.call(CAROL_HUB, "GET", &path, None).status, 200);
    // Dave, another hub user, and Alice, a user of the file, do not see it.
    for token in [DAVE_HUB, ALICE] {
        assert_eq!(gateway.call(token, "GET", &path, None).status, 404);
        let mine = gateway.call(token, "GET", "/api/v1/clusters", None).json();
        assert_eq!(mine, json!({"clusters": []}));
    }
    let unknown = gateway.call("not-a-hub-token-at-all", "GET", "/api/v1/clusters", None);
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.json()["error"], "unknown token");
    // A hub user cannot claim the name of one of the file's users, nor a hub service
    // pass for a user.
    let claimed = gateway.call(ALICE_HUB, "GET", "/api/v1/clusters", None);
    assert_eq!(claimed.status, 401, "{}", claimed.body);
    assert!(
        claimed.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("hub user alice has the name")
    );
    let service = gateway.call(SERVICE_HUB, "GET", "/api/v1/clusters", None);
    assert_eq!(service.status, 401);
    // Five hub tokens, each asked about once; Alice's own is the file's.
    assert_eq!(asked.load(Ordering::SeqCst), 5);
    let stopped = gateway.call(CAROL_HUB, "DELETE", &path, None);
    assert_eq!(stopped.json()["state"], "stopped");

    // A hub that does not answer: the caller learns why.
    drop(gateway);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let text = format!(
        "{}\n[jupyterhub]\nurl = \"{gone}\"\n",
        config_text(dir.path())
    );
    std::fs::write(&config, text).unwrap();
    let gateway = Gateway::start(&config);
    let reply = gateway.call(CAROL_HUB, "GET", "/api/v1/clusters", None);
    assert_eq!(reply.status, 502);
    let error = reply.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.starts_with(&format!("JupyterHub at {gone}/hub/api/user did not answer")),
        "{error}"
    );
    assert_eq!(
        gateway.call(ALICE, "GET", "/api/v1/clusters", None).status,
        200
    );
}
