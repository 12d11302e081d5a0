//! Kubernetes objects made from a cluster spec: the manifests `shoal spec kubernetes`
//! prints (a scheduler Deployment and Service, a worker Deployment per group) and the
//! pods the gateway's `kubernetes` backend creates share these containers, so a group
//! has one shape wherever it runs.

use serde_json::{Value, json};

use crate::spec::{ClusterSpec, GroupSpec};

/// The scheduler's gRPC port.
pub const SCHEDULER_PORT: u16 = 7070;
/// The port workers serve task outputs on.
pub const WORKER_PORT: u16 = 7071;
/// The scheduler's dashboard (`/healthz`, `/readyz`, `/metrics`).
pub const DASHBOARD_PORT: u16 = 8787;
/// How long a worker may drain after SIGTERM before it is killed.
pub const DRAIN_SECONDS: u64 = 300;

/// Where a cluster's objects get their names and its containers their image.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The cluster's name: a prefix of every object's name, and a label.
    pub cluster: String,
    /// The container image with `shoal` as its entry point.
    pub image: String,
    /// The Secret holding the cluster token under the key `token` (and, with `tls`, the
    /// cluster's certificates under `ca.pem`, `cert.pem` and `key.pem`).
    pub secret: String,
    /// With TLS: the namespace, whose name the workers' addresses carry.
    pub tls: Option<String>,
}

/// Where a TLS cluster's pods find the certificates of its Secret.
const TLS_DIR: &str = "/etc/shoal/tls";

impl Target {
    /// The scheduler's Service (and Deployment or Pod) name.
    pub fn scheduler(&self) -> String {
        format!("{}-scheduler", self.cluster)
    }

    /// The scheduler's URL inside the Kubernetes cluster.
    pub fn scheduler_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{SCHEDULER_PORT}", self.scheduler())
    }

    /// The headless Service that gives a TLS cluster's workers DNS names (which its
    /// certificate names with a wildcard).
    pub fn workers_service_name(&self) -> String {
        format!("{}-workers", self.cluster)
    }

    /// The names a TLS cluster's certificate is for: the scheduler's Service and every
    /// worker under the headless Service.
    pub fn tls_names(&self, namespace: &str) -> Vec<String> {
        let scheduler = self.scheduler();
        let workers = self.workers_service_name();
        vec![
            scheduler.clone(),
            format!("{scheduler}.{namespace}.svc"),
            format!("{scheduler}.{namespace}.svc.cluster.local"),
            format!("*.{workers}.{namespace}.svc"),
        ]
    }

    /// The headless Service of a TLS cluster's workers.
    pub fn workers_service(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.workers_service_name(), "labels": self.labels("worker", None)},
            "spec": {
                "clusterIP": "None",
                // Workers have no readiness probe; their names resolve as soon as they run.
                "publishNotReadyAddresses": true,
                "selector": self.labels("worker", None),
                "ports": [{"name": "outputs", "port": WORKER_PORT, "targetPort": "outputs"}],
            },
        })
    }

    /// Adds a TLS cluster's certificates to a pod spec: the Secret's files mounted for
    /// its container (readable by the pod's group only), and their flags.
    fn with_tls(&self, mut pod: Value, worker: bool) -> Value {
        if self.tls.is_none() {
            return pod;
        }
        let items: Vec<Value> = ["ca.pem", "cert.pem", "key.pem"]
            .iter()
            .map(|f| json!({"key": f, "path": f}))
            .collect();
        pod["volumes"] = json!([{"name": "tls", "secret": {"secretName": self.secret, "defaultMode": 0o440, "items": items}}]);
        pod["securityContext"]["fsGroup"] = json!(10001);
        let container = &mut pod["containers"][0];
        container["volumeMounts"] =
            json!([{"name": "tls", "mountPath": TLS_DIR, "readOnly": true}]);
        if let Some(args) = container["args"].as_array_mut() {
            for flag in ["cert", "key"] {
                args.push(json!(format!("--tls-{flag}")));
                args.push(json!(format!("{TLS_DIR}/{flag}.pem")));
            }
            if worker {
                args.push(json!("--tls-ca"));
                args.push(json!(format!("{TLS_DIR}/ca.pem")));
            }
        }
        pod
    }

    /// The labels of one component's objects (and the selector of its pods).
    pub fn labels(&self, component: &str, group: Option<&str>) -> Value {
        let mut labels = json!({
            "app.kubernetes.io/name": "shoal",
            "app.kubernetes.io/instance": self.cluster,
            "app.kubernetes.io/component": component,
        });
        if let Some(group) = group {
            labels["shoal.dev/group"] = json!(group);
        }
        labels
    }

    fn token_env(&self) -> Value {
        json!({"name": "SHOAL_TOKEN", "valueFrom": {"secretKeyRef": {"name": self.secret, "key": "token"}}})
    }

    /// The scheduler's container: the dashboard answers the probes and asks for the token
    /// everywhere else.
    pub fn scheduler_container(&self) -> Value {
        json!({
            "name": "scheduler",
            "image": self.image,
            "args": [
                "scheduler",
                "--bind", format!("0.0.0.0:{SCHEDULER_PORT}"),
                "--dashboard-bind", format!("0.0.0.0:{DASHBOARD_PORT}"),
                "--dashboard-auth", "token",
            ],
            "env": [self.token_env()],
            "ports": [
                {"name": "scheduler", "containerPort": SCHEDULER_PORT},
                {"name": "dashboard", "containerPort": DASHBOARD_PORT},
            ],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "dashboard"}, "periodSeconds": 5},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "dashboard"}, "periodSeconds": 10},
            "resources": {
                "requests": {"cpu": "1", "memory": "1Gi"},
                "limits": {"memory": "1Gi"},
            },
            "securityContext": security_context(),
        })
    }

    /// A worker of `group`: its slots and memory limit come from the container's limits
    /// (the spec's `slots` and `memory`), its named resources from the spec.
    pub fn worker_container(&self, group: &str, shape: &GroupSpec) -> Value {
        let mut args = vec![
            json!("worker"),
            json!("--scheduler"),
            json!(self.scheduler_url()),
            json!("--group"),
            json!(group),
            json!("--bind"),
            json!(format!("0.0.0.0:{WORKER_PORT}")),
            json!("--advertise"),
            json!(format!("$(POD_IP):{WORKER_PORT}")),
        ];
        if !shape.resources.is_empty() {
            args.push(json!("--resources"));
            args.push(json!(shape.resources.to_string()));
        }
        let limit = |resource: &str| json!({"resourceFieldRef": {"containerName": "worker", "resource": resource}});
        let mut env = vec![
            self.token_env(),
            json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
            json!({"name": "SHOAL_WORKER_SLOTS", "valueFrom": limit("limits.cpu")}),
        ];
        let mut resources = json!({"cpu": shape.slots.to_string()});
        if let Some(memory) = shape.memory {
            env.push(
                json!({"name": "SHOAL_WORKER_MEMORY_LIMIT", "valueFrom": limit("limits.memory")}),
            );
            resources["memory"] = json!(quantity(memory));
        }
        json!({
            "name": "worker",
            "image": self.image,
            "args": args,
            "env": env,
            "ports": [{"name": "outputs", "containerPort": WORKER_PORT}],
            "resources": {"requests": resources, "limits": resources},
            "securityContext": security_context(),
        })
    }

    /// A worker pod's spec: SIGTERM drains it, within [`DRAIN_SECONDS`]. A TLS
    /// cluster's worker is reached by its DNS name under the headless Service.
    pub fn worker_pod_spec(&self, group: &str, shape: &GroupSpec, restart: &str) -> Value {
        let mut pod = json!({
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": DRAIN_SECONDS,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001},
            // Users' queries run here: no Kubernetes API credentials for them to read.
            "automountServiceAccountToken": false,
            "containers": [self.worker_container(group, shape)],
        });
        if let Some(namespace) = &self.tls {
            let workers = self.workers_service_name();
            pod["subdomain"] = json!(workers);
            let container = &mut pod["containers"][0];
            let name = json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}});
            if let Some(env) = container["env"].as_array_mut() {
                env.insert(1, name);
            }
            if let Some(args) = container["args"].as_array_mut()
                && let Some(at) = args.iter().position(|a| a == "--advertise")
            {
                args[at + 1] = json!(format!(
                    "$(POD_NAME).{workers}.{namespace}.svc:{WORKER_PORT}"
                ));
            }
        }
        self.with_tls(pod, true)
    }

    /// The scheduler pod's spec.
    pub fn scheduler_pod_spec(&self, restart: &str) -> Value {
        let pod = json!({
            "restartPolicy": restart,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001},
            // Users' queries run here: no Kubernetes API credentials for them to read.
            "automountServiceAccountToken": false,
            "containers": [self.scheduler_container()],
        });
        self.with_tls(pod, false)
    }

    /// The scheduler's Service: its gRPC port and its dashboard.
    pub fn scheduler_service(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.scheduler(), "labels": self.labels("scheduler", None)},
            "spec": {
                "selector": self.labels("scheduler", None),
                "ports": [
                    {"name": "scheduler", "port": SCHEDULER_PORT, "targetPort": "scheduler"},
                    {"name": "dashboard", "port": DASHBOARD_PORT, "targetPort": "dashboard"},
                ],
            },
        })
    }

    fn deployment(&self, name: String, labels: Value, replicas: usize, pod: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        })
    }

    /// The scheduler's Deployment (one replica).
    pub fn scheduler_deployment(&self) -> Value {
        let labels = self.labels("scheduler", None);
        self.deployment(
            self.scheduler(),
            labels,
            1,
            self.scheduler_pod_spec("Always"),
        )
    }

    /// A group's worker Deployment, with the group's number of workers as replicas.
    pub fn worker_deployment(&self, group: &str, shape: &GroupSpec) -> Value {
        let name = format!("{}-worker-{group}", self.cluster);
        let labels = self.labels("worker", Some(group));
        let pod = self.worker_pod_spec(group, shape, "Always");
        self.deployment(name, labels, shape.workers, pod)
    }

    /// The manifests of a whole cluster (`with_scheduler`) or of its worker groups only.
    pub fn manifests(&self, spec: &ClusterSpec, with_scheduler: bool) -> Vec<Value> {
        let mut objects = Vec::new();
        if with_scheduler {
            objects.push(self.scheduler_deployment());
            objects.push(self.scheduler_service());
        }
        for (group, shape) in &spec.groups {
            objects.push(self.worker_deployment(group, shape));
        }
        objects
    }
}

fn security_context() -> Value {
    json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
}

/// Bytes as a Kubernetes quantity, in the largest binary unit that divides them.
pub fn quantity(bytes: u64) -> String {
    for (unit, size) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// Objects as YAML documents separated by `---`, each value written so that YAML reads
/// it back as the same JSON (strings double-quoted as JSON writes them).
pub fn to_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        write_yaml(object, 0, &mut out);
    }
    out
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        other => other.to_string(),
    }
}

fn nested(value: &Value) -> bool {
    match value {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

/// Writes a mapping or sequence at `indent` spaces, one entry per line.
fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, v) in map {
                let plain = !key.is_empty()
                    && key.starts_with(|c: char| c.is_ascii_alphabetic())
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
                let key = match plain {
                    true => key.clone(),
                    false => serde_json::to_string(key).unwrap_or_default(),
                };
                if nested(v) {
                    out.push_str(&format!("{pad}{key}:\n"));
                    write_yaml(v, indent + 2, out);
                } else {
                    out.push_str(&format!("{pad}{key}: {}\n", scalar(v)));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                if nested(item) {
                    // The item's first line goes after the dash, the rest under it.
                    let mut inner = String::new();
                    write_yaml(item, indent + 2, &mut inner);
                    let body = inner.get(indent + 2..).unwrap_or_default();
                    out.push_str(&format!("{pad}- {body}"));
                } else {
                    out.push_str(&format!("{pad}- {}\n", scalar(item)));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            cluster: "shoal".into(),
            image: "shoal:dev".into(),
            secret: "shoal-token".into(),
            tls: None,
        }
    }

    #[test]
    fn quantities_use_the_largest_unit_that_divides() {
        assert_eq!(quantity(4 << 30), "4Gi");
        assert_eq!(quantity(1536 << 20), "1536Mi");
        assert_eq!(quantity(1000), "1000");
    }

    #[test]
    fn a_group_becomes_a_deployment_whose_limits_give_slots_and_memory() {
        let spec = ClusterSpec::from_toml(
            "[groups.gpu]\nworkers = 3\nslots = 2\nmemory = \"8GiB\"\nresources = \"gpu=1\"\n",
            "c.toml",
        )
        .unwrap();
        let objects = target().manifests(&spec, false);
        assert_eq!(objects.len(), 1);
        let d = &objects[0];
        assert_eq!(d["metadata"]["name"], "shoal-worker-gpu");
        assert_eq!(d["spec"]["replicas"], 3);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["resources"]["limits"],
            json!({"cpu": "2", "memory": "8Gi"})
        );
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "worker",
                "--scheduler",
                "http://shoal-scheduler:7070",
                "--group",
                "gpu",
                "--bind",
                "0.0.0.0:7071",
                "--advertise",
                "$(POD_IP):7071",
                "--resources",
                "gpu=1"
            ]
        );
        let env: Vec<&str> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            env,
            [
                "SHOAL_TOKEN",
                "POD_IP",
                "SHOAL_WORKER_SLOTS",
                "SHOAL_WORKER_MEMORY_LIMIT"
            ]
        );
    }

    #[test]
    fn yaml_lines_nest_maps_and_lists() {
        let yaml = to_yaml(&[json!({"a": {"b": [1, {"c": "x: y", "d": []}]}, "e f": true})]);
        assert_eq!(
            yaml,
            "---\na:\n  b:\n    - 1\n    - c: \"x: y\"\n      d: []\n\"e f\": true\n"
        );
    }
}
