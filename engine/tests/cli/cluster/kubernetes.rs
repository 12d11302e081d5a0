//! The gateway's `kubernetes` backend against a stand-in Kubernetes API server (no
//! cluster is reachable here): the objects it creates are checked as the API receives
//! them, and every container's arguments are parsed by the real `shoal` CLI.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use shoal_gateway::backend::Backend;
use shoal_gateway::kubernetes::KubernetesBackend;
use shoal_gateway::{ClusterSpec, GatewayConfig};

const NAMESPACE: &str = "shoal-test";

/// Objects by (kind, name), as the stand-in holds them.
type Store = Arc<Mutex<BTreeMap<(String, String), Value>>>;

fn not_found(kind: &str, name: &str) -> (StatusCode, Json<Value>) {
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("{kind} \"{name}\" not found"), "reason": "NotFound", "code": 404});
    (StatusCode::NOT_FOUND, Json(status))
}

async fn create(
    State(store): State<Store>,
    Path((namespace, kind)): Path<(String, String)>,
    Json(mut object): Json<Value>,
) -> (StatusCode, Json<Value>) {
    assert_eq!(namespace, NAMESPACE);
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    object["metadata"]["uid"] = json!(format!("uid-{name}"));
    if kind == "pods" {
        // Pods run and are ready at once, but for an image that cannot start.
        let image = object["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or("");
        object["status"] = match image {
            "missing:image" => json!({"phase": "Failed"}),
            _ => json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
        };
    }
    let mut store = store.lock().unwrap();
    let key = (kind.clone(), name.clone());
    if store.contains_key(&key) {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": format!("{kind} \"{name}\" already exists"), "reason": "AlreadyExists", "code": 409});
        return (StatusCode::CONFLICT, Json(status));
    }
    store.insert(key, object.clone());
    (StatusCode::CREATED, Json(object))
}

async fn list(
    State(store): State<Store>,
    Path((_, kind)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    let wanted: Vec<(String, String)> = query
        .get("labelSelector")
        .map(|s| {
            s.split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let items: Vec<Value> = store
        .lock()
        .unwrap()
        .iter()
        .filter(|((k, _), o)| {
            *k == kind
                && wanted
                    .iter()
                    .all(|(l, v)| o["metadata"]["labels"][l.as_str()] == v.as_str())
        })
        .map(|(_, o)| o.clone())
        .collect();
    Json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}))
}

async fn read(
    State(store): State<Store>,
    Path((_, kind, name)): Path<(String, String, String)>,
) -> (StatusCode, Json<Value>) {
    match store.lock().unwrap().get(&(kind.clone(), name.clone())) {
        Some(object) => (StatusCode::OK, Json(object.clone())),
        None => not_found(&kind, &name),
    }
}

async fn delete(
    State(store): State<Store>,
    Path((_, kind, name)): Path<(String, String, String)>,
) -> (StatusCode, Json<Value>) {
    match store.lock().unwrap().remove(&(kind.clone(), name.clone())) {
        Some(object) => (StatusCode::OK, Json(object)),
        None => not_found(&kind, &name),
    }
}

/// Serves the stand-in API on a thread of its own; its URL and its objects.
fn stand_in() -> (String, Store) {
    let store: Store = Arc::default();
    let app = axum::Router::new()
        .route("/api/v1/namespaces/{ns}/{kind}", get(list).post(create))
        .route(
            "/api/v1/namespaces/{ns}/{kind}/{name}",
            get(read).delete(delete),
        )
        .with_state(Arc::clone(&store));
    (serve(app), store)
}

/// Serves `app` on 127.0.0.1 from a thread of its own, for the rest of the test
/// process; its URL.
pub(super) fn serve(app: axum::Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    url
}

fn backend(url: &str, image: &str, tls: bool) -> KubernetesBackend {
    let config = GatewayConfig::from_toml(
        &format!(
            "[gateway]\nbackend = \"kubernetes\"\n[kubernetes]\napi = \"{url}\"\n\
             namespace = \"{NAMESPACE}\"\nimage = \"{image}\"\nstart_timeout = \"10s\"\n"
        ),
        "gateway.toml",
    )
    .unwrap();
    KubernetesBackend::new(&config.kubernetes, tls).unwrap()
}

fn object(store: &Store, kind: &str, name: &str) -> Value {
    let key = (kind.to_string(), name.to_string());
    store
        .lock()
        .unwrap()
        .get(&key)
        .cloned()
        .unwrap_or(Value::Null)
}

fn names(store: &Store) -> Vec<String> {
    store
        .lock()
        .unwrap()
        .keys()
        .map(|(kind, name)| format!("{kind}/{name}"))
        .collect()
}

/// The real CLI parses a container's arguments (Kubernetes's `$(POD_IP)` given a value).
fn assert_parses(container: &Value) {
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let arg = a.as_str().unwrap().replace("$(POD_IP)", "10.1.2.3");
            arg.replace("$(POD_NAME)", "pod-0")
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_kubernetes_backend_creates_owns_prunes_and_deletes_pods() {
    let (url, store) = stand_in();
    let backend = backend(&url, "registry.example/shoal:1", false);
    let spec = ClusterSpec::from_toml(
        "[groups.cpu]\nworkers = 2\nslots = 2\nmemory = \"1GiB\"\n\
         [groups.gpu]\nworkers = 1\nresources = \"gpu=1\"\n",
        "cluster.toml",
    )
    .unwrap();
    let recorded = Mutex::new(Vec::new());
    let started = backend
        .start("alice-1", "cluster-token-1", &spec, &|ids| {
            recorded.lock().unwrap().push(ids.clone())
        })
        .unwrap();
    assert_eq!(
        started.scheduler,
        "http://shoal-alice-1-scheduler.shoal-test.svc:7070"
    );
    assert_eq!(
        names(&store),
        [
            "pods/shoal-alice-1-cpu-0",
            "pods/shoal-alice-1-cpu-1",
            "pods/shoal-alice-1-gpu-2",
            "pods/shoal-alice-1-scheduler",
            "secrets/shoal-alice-1-token",
            "services/shoal-alice-1-scheduler",
        ]
    );
    // What was started was recorded before the next step.
    let first = recorded.lock().unwrap()[0].clone();
    assert_eq!(first["scheduler"], "shoal-alice-1-scheduler");

    let scheduler = object(&store, "pods", "shoal-alice-1-scheduler");
    let container = &scheduler["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/shoal:1");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_parses(container);
    let secret = object(&store, "secrets", "shoal-alice-1-token");
    assert_eq!(secret["stringData"]["token"], "cluster-token-1");
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(owner["uid"], "uid-shoal-alice-1-scheduler");
    let service = object(&store, "services", "shoal-alice-1-scheduler");
    assert_eq!(
        service["spec"]["selector"]["app.kubernetes.io/component"],
        "scheduler"
    );

    let gpu = object(&store, "pods", "shoal-alice-1-gpu-2");
    assert_eq!(gpu["metadata"]["labels"]["shoal.dev/group"], "gpu");
    assert_eq!(
        gpu["metadata"]["ownerReferences"][0]["uid"],
        "uid-shoal-alice-1-scheduler"
    );
    assert_eq!(gpu["spec"]["restartPolicy"], "Never");
    assert_eq!(gpu["spec"]["terminationGracePeriodSeconds"], 300);
    let worker = &gpu["spec"]["containers"][0];
    assert_eq!(
        worker["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "shoal-alice-1-token"
    );
    assert_parses(worker);
    let args = worker["args"].as_array().unwrap();
    assert!(
        args.windows(2)
            .any(|w| w == [json!("--resources"), json!("gpu=1")])
    );
    assert!(args.contains(&json!("http://shoal-alice-1-scheduler:7070")));
    let cpu = object(&store, "pods", "shoal-alice-1-cpu-0");
    assert_eq!(
        cpu["spec"]["containers"][0]["resources"]["limits"],
        json!({"cpu": "2", "memory": "1Gi"})
    );
    assert_parses(&cpu["spec"]["containers"][0]);

    // Scaling up adds a pod; a worker that retired (its pod Succeeded) is forgotten and
    // its pod deleted.
    let mut ids = started.ids;
    let shape = &spec.groups["cpu"];
    backend
        .add_workers(
            "alice-1",
            "cluster-token-1",
            &started.scheduler,
            ("cpu", shape),
            1,
            &mut ids,
        )
        .unwrap();
    assert!(object(&store, "pods", "shoal-alice-1-cpu-3").is_object());
    store
        .lock()
        .unwrap()
        .get_mut(&("pods".into(), "shoal-alice-1-cpu-0".into()))
        .unwrap()["status"] = json!({"phase": "Succeeded"});
    backend.prune(&mut ids);
    assert_eq!(
        ids["workers"],
        json!([
            "shoal-alice-1-cpu-1",
            "shoal-alice-1-gpu-2",
            "shoal-alice-1-cpu-3"
        ])
    );
    assert!(object(&store, "pods", "shoal-alice-1-cpu-0").is_null());

    // A scheduler pod deleted from outside is seen as the cluster's end.
    assert_eq!(backend.scheduler_ended(&ids), None);
    store
        .lock()
        .unwrap()
        .remove(&("pods".into(), "shoal-alice-1-scheduler".into()));
    assert_eq!(
        backend.scheduler_ended(&ids).as_deref(),
        Some("the scheduler's pod shoal-alice-1-scheduler is gone")
    );
    backend.stop(&ids);
    assert!(names(&store).is_empty(), "{:?}", names(&store));
}

/// A scheduler pod that fails at start fails the create, and everything created for the
/// cluster is deleted again.
#[test]
fn a_scheduler_pod_that_fails_at_start_leaves_nothing_behind() {
    let (url, store) = stand_in();
    let backend = backend(&url, "missing:image", false);
    let spec = ClusterSpec::from_toml("[groups.cpu]\n", "cluster.toml").unwrap();
    let error = backend.start("bob-1", "t", &spec, &|_| {}).unwrap_err();
    assert_eq!(
        error,
        "the scheduler's pod shoal-bob-1-scheduler ended at start (Failed)"
    );
    assert!(names(&store).is_empty(), "{:?}", names(&store));
}

/// An API server that cannot be reached over TLS is an error naming the call, not a
/// panic (the TLS client has its crypto provider).
#[test]
fn an_unreachable_api_server_is_a_one_line_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let backend = backend(&url, "shoal:dev", false);
    let spec = ClusterSpec::from_toml("[groups.cpu]\n", "cluster.toml").unwrap();
    let error = backend.start("eve-1", "t", &spec, &|_| {}).unwrap_err();
    assert!(
        error.starts_with("cannot create pod shoal-eve-1-scheduler: "),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");
}

/// With `cluster_tls`, a cluster's authority and certificate travel in its Secret,
/// mounted for every container; workers get DNS names under a headless Service, which
/// the certificate names with a wildcard, and the owner is handed the authority.
#[test]
fn a_tls_cluster_gets_its_certificates_through_its_secret() {
    let (url, store) = stand_in();
    let backend = backend(&url, "shoal:dev", true);
    let spec = ClusterSpec::from_toml("[groups.cpu]\nworkers = 2\n", "cluster.toml").unwrap();
    let started = backend.start("tls-1", "t", &spec, &|_| {}).unwrap();
    assert_eq!(
        started.scheduler,
        "https://shoal-tls-1-scheduler.shoal-test.svc:7070"
    );
    let ca = started.tls_ca.clone().unwrap();
    let secret = object(&store, "secrets", "shoal-tls-1-token");
    assert_eq!(secret["stringData"]["ca.pem"], ca.as_str());
    let cert = secret["stringData"]["cert.pem"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let cert_file = dir.path().join("cert.pem");
    std::fs::write(&cert_file, &cert).unwrap();
    let names = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&cert_file)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&names.stdout).to_string();
    for name in [
        "DNS:shoal-tls-1-scheduler,",
        "DNS:shoal-tls-1-scheduler.shoal-test.svc,",
        "DNS:*.shoal-tls-1-workers.shoal-test.svc",
    ] {
        assert!(names.contains(name), "{name} in {names}");
    }
    let workers = object(&store, "services", "shoal-tls-1-workers");
    assert_eq!(workers["spec"]["clusterIP"], "None");

    let pod = object(&store, "pods", "shoal-tls-1-cpu-1");
    assert_eq!(pod["spec"]["subdomain"], "shoal-tls-1-workers");
    assert_eq!(
        pod["spec"]["volumes"][0]["secret"]["secretName"],
        "shoal-tls-1-token"
    );
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/etc/shoal/tls");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for pair in [
        ["--scheduler", "https://shoal-tls-1-scheduler:7070"],
        [
            "--advertise",
            "$(POD_NAME).shoal-tls-1-workers.shoal-test.svc:7071",
        ],
        ["--tls-ca", "/etc/shoal/tls/ca.pem"],
        ["--tls-cert", "/etc/shoal/tls/cert.pem"],
    ] {
        assert!(args.windows(2).any(|w| w == pair), "{pair:?} in {args:?}");
    }
    assert_parses(container);
    let scheduler = object(&store, "pods", "shoal-tls-1-scheduler");
    assert_parses(&scheduler["spec"]["containers"][0]);
    backend.stop(&started.ids);
    assert!(self::names(&store).is_empty(), "{:?}", self::names(&store));
}
