//! The `kubernetes` backend: a cluster is a scheduler pod with its Service and a Secret
//! holding the cluster token, and one pod per worker, created through the Kubernetes API
//! (the `kube` crate). Pods and containers come from [`crate::k8s`], the same as the
//! manifests `shoal spec kubernetes` prints. The Service, the Secret and the workers are
//! owned by the scheduler pod, so deleting it (or it being evicted) takes them along.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, Config};
use serde_json::{Value, json};

use crate::backend::{Backend, Ready, Started, scheduler_then_workers, start_groups};
use crate::config::KubernetesConfig;
use crate::k8s::{DASHBOARD_PORT, SCHEDULER_PORT, Target};
use crate::spec::{ClusterSpec, GroupSpec};
use crate::tls::Certificates;

/// Starts clusters as pods through the Kubernetes API.
pub struct KubernetesBackend {
    client: Client,
    namespace: String,
    image: String,
    start_timeout: Duration,
    /// Whether clusters get certificates of their own and speak TLS.
    tls: bool,
    /// Runs the API calls: the backend's methods are called from blocking threads.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for KubernetesBackend {
    fn drop(&mut self) {
        // Dropped where blocking is not allowed (the gateway's own runtime), a runtime
        // must not wait for its threads.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn api_error(what: &str, e: kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{what}: {} ({})", status.message, status.code),
        other => format!("{what}: {other}"),
    }
}

/// An object as the `kube` types, from the JSON [`crate::k8s`] makes.
fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("a Kubernetes object did not fit: {e}"))
}

/// The pods of `ids`: the scheduler's name, then the workers'.
fn pod_names(ids: &Value) -> Vec<String> {
    scheduler_then_workers(ids, |w| w)
}

/// A pod's phase, and whether it is being deleted.
fn phase(pod: &Pod) -> (String, bool) {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    (phase, pod.metadata.deletion_timestamp.is_some())
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

impl KubernetesBackend {
    /// A backend talking to the API server of `config` (`api`, or the in-cluster service
    /// account or kubeconfig when it is not given); with `tls`, each cluster gets its own
    /// certificate authority.
    pub fn new(config: &KubernetesConfig, tls: bool) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kubernetes-api")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the Kubernetes client's runtime: {e}"))?;
        let (client, inferred) = runtime.block_on(async {
            let config = match &config.api {
                Some(url) => {
                    let uri = url
                        .parse()
                        .map_err(|e| format!("kubernetes.api: not a URL: {e}"))?;
                    // The service account's or kubeconfig's credentials, at this address.
                    match Config::infer().await {
                        Ok(mut inferred) => {
                            inferred.cluster_url = uri;
                            inferred
                        }
                        Err(_) => Config::new(uri),
                    }
                }
                None => Config::infer()
                    .await
                    .map_err(|e| format!("no Kubernetes configuration found: {e}"))?,
            };
            let namespace = config.default_namespace.clone();
            let client = Client::try_from(config)
                .map_err(|e| format!("cannot make a Kubernetes client: {e}"))?;
            Ok::<_, String>((client, namespace))
        })?;
        let image = config.image.clone().ok_or(
            "kubernetes.image: the image to run (deploy/Dockerfile builds one) is required",
        )?;
        Ok(Self {
            client,
            namespace: config.namespace.clone().unwrap_or(inferred),
            image,
            start_timeout: config.start_timeout.unwrap_or(Duration::from_secs(300)),
            tls,
            runtime: Some(runtime),
        })
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the backend")
            .block_on(future)
    }

    /// Cluster `name`'s objects; with TLS as recorded in its `ids` when they say (a
    /// cluster keeps what it started with when the configuration changes).
    fn target(&self, name: &str, ids: Option<&Value>) -> Target {
        let tls = ids.and_then(|ids| ids["tls"].as_bool()).unwrap_or(self.tls);
        Target {
            cluster: format!("shoal-{name}"),
            image: self.image.clone(),
            secret: format!("shoal-{name}-token"),
            tls: tls.then(|| self.namespace.clone()),
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Metadata of an object of cluster `name`: its labels, and the scheduler pod as its
    /// owner when it has one.
    fn metadata(&self, name: String, labels: Value, owner: Option<&Value>) -> Value {
        let mut metadata = json!({"name": name, "namespace": self.namespace, "labels": labels});
        if let Some(owner) = owner {
            metadata["ownerReferences"] = json!([owner]);
        }
        metadata
    }

    async fn create_pod(&self, metadata: Value, spec: Value) -> Result<Pod, String> {
        let name = metadata["name"].as_str().unwrap_or_default().to_string();
        let pod: Pod =
            typed(json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}))?;
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .map_err(|e| api_error(&format!("cannot create pod {name}"), e))
    }

    /// Creates the scheduler pod, then its Secret (the token, and a TLS cluster's
    /// certificates) and Services owned by it; the pod's owner reference for the rest,
    /// and a TLS cluster's authority.
    async fn start_scheduler(
        &self,
        target: &Target,
        token: &str,
    ) -> Result<(Value, Option<String>), String> {
        let labels = target.labels("scheduler", None);
        let metadata = self.metadata(target.scheduler(), labels.clone(), None);
        let pod = self
            .create_pod(metadata, target.scheduler_pod_spec("Never"))
            .await?;
        let owner = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "name": target.scheduler(),
            "uid": pod.metadata.uid.clone().unwrap_or_default(),
            "controller": true,
        });
        let mut data = json!({"token": token});
        let mut ca = None;
        if target.tls.is_some() {
            let names = target.tls_names(&self.namespace);
            let made = Certificates::new(&target.cluster, &names)?;
            data["ca.pem"] = json!(made.ca);
            data["cert.pem"] = json!(made.cert);
            data["key.pem"] = json!(made.key);
            ca = Some(made.ca);
        }
        let secret: Secret = typed(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": self.metadata(target.secret.clone(), labels.clone(), Some(&owner)),
            "type": "Opaque",
            "stringData": data,
        }))?;
        Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), &secret)
            .await
            .map_err(|e| api_error(&format!("cannot create secret {}", target.secret), e))?;
        let mut services = vec![target.scheduler_service()];
        if target.tls.is_some() {
            services.push(target.workers_service());
        }
        for mut service in services {
            let name = service["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let labels = service["metadata"]["labels"].clone();
            service["metadata"] = self.metadata(name.clone(), labels, Some(&owner));
            Api::<Service>::namespaced(self.client.clone(), &self.namespace)
                .create(&PostParams::default(), &typed(service)?)
                .await
                .map_err(|e| api_error(&format!("cannot create service {name}"), e))?;
        }
        Ok((owner, ca))
    }

    /// Waits until the scheduler pod is ready (its `/readyz` answers).
    async fn wait_until_ready(&self, name: &str) -> Result<(), String> {
        let deadline = Instant::now() + self.start_timeout;
        loop {
            let pod = self
                .pods()
                .get_opt(name)
                .await
                .map_err(|e| api_error(&format!("cannot read pod {name}"), e))?
                .ok_or_else(|| format!("the scheduler's pod {name} is gone"))?;
            let (phase, deleted) = phase(&pod);
            if deleted || phase == "Failed" || phase == "Succeeded" {
                return Err(format!(
                    "the scheduler's pod {name} ended at start ({phase})"
                ));
            }
            if phase == "Running" && ready(&pod) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the scheduler's pod {name} was not ready within {} s (it is {phase})",
                    self.start_timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn delete_quietly<K>(&self, api: Api<K>, name: &str)
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(e) => tracing::warn!("{}", api_error(&format!("cannot delete {name}"), e)),
        }
    }
}

impl Backend for KubernetesBackend {
    fn start(
        &self,
        name: &str,
        token: &str,
        spec: &ClusterSpec,
        record: &dyn Fn(&Value),
    ) -> Result<Started, String> {
        let target = self.target(name, None);
        let mut ids = json!({
            "namespace": self.namespace,
            "cluster": target.cluster,
            "scheduler": target.scheduler(),
            "workers": [],
            "next": 0,
            "tls": self.tls,
        });
        record(&ids);
        let ready = self.block_on(async {
            let (owner, ca) = self.start_scheduler(&target, token).await?;
            ids["owner"] = owner;
            record(&ids);
            self.wait_until_ready(&target.scheduler()).await?;
            Ok(ca)
        });
        let host = format!("{}.{}.svc", target.scheduler(), self.namespace);
        let ready = ready.map(|tls_ca| Ready {
            scheduler: match tls_ca {
                Some(_) => format!("https://{host}:{SCHEDULER_PORT}"),
                None => format!("http://{host}:{SCHEDULER_PORT}"),
            },
            dashboard: format!("http://{host}:{DASHBOARD_PORT}/"),
            tls_ca,
            // Workers reach the scheduler by its Service's short name.
            workers_url: target.scheduler_url(),
        });
        start_groups(self, (name, token, spec), record, ids, ready)
    }

    fn add_workers(
        &self,
        name: &str,
        _token: &str,
        _scheduler: &str,
        (group, shape): (&str, &GroupSpec),
        count: usize,
        ids: &mut Value,
    ) -> Result<(), String> {
        let target = self.target(name, Some(ids));
        let owner = ids["owner"].clone();
        self.block_on(async {
            for _ in 0..count {
                let index = ids["next"].as_u64().unwrap_or(0);
                let pod = format!("{}-{group}-{index}", target.cluster);
                if pod.len() > 63 {
                    // Pod names are DNS labels (and a TLS worker's host name).
                    return Err(format!(
                        "pod name {pod} is longer than Kubernetes allows (63): use a shorter user or group name"
                    ));
                }
                let labels = target.labels("worker", Some(group));
                let metadata = self.metadata(pod.clone(), labels, Some(&owner));
                let mut spec = target.worker_pod_spec(group, shape, "Never");
                if target.tls.is_some() {
                    // With the subdomain, the pod's name under the workers' Service.
                    spec["hostname"] = json!(pod);
                }
                self.create_pod(metadata, spec).await?;
                ids["next"] = json!(index + 1);
                if let Some(workers) = ids["workers"].as_array_mut() {
                    workers.push(json!(pod));
                }
            }
            Ok(())
        })
    }

    fn stop(&self, ids: &Value) {
        let Some(cluster) = ids["cluster"].as_str() else {
            return;
        };
        self.block_on(async {
            // Workers first: they drain (SIGTERM) while the scheduler still answers.
            let names = pod_names(ids);
            for pod in names.iter().rev() {
                self.delete_quietly(self.pods(), pod).await;
            }
            for service in ["scheduler", "workers"] {
                let services = Api::<Service>::namespaced(self.client.clone(), &self.namespace);
                self.delete_quietly(services, &format!("{cluster}-{service}"))
                    .await;
            }
            let secrets = Api::<Secret>::namespaced(self.client.clone(), &self.namespace);
            self.delete_quietly(secrets, &format!("{cluster}-token"))
                .await;
        });
    }

    fn scheduler_ended(&self, ids: &Value) -> Option<String> {
        let name = ids["scheduler"].as_str()?;
        match self.block_on(self.pods().get_opt(name)) {
            Ok(None) => Some(format!("the scheduler's pod {name} is gone")),
            Ok(Some(pod)) => match phase(&pod) {
                (_, true) => Some(format!("the scheduler's pod {name} is being deleted")),
                (phase, false) if phase == "Failed" || phase == "Succeeded" => {
                    Some(format!("the scheduler's pod {name} is {phase}"))
                }
                _ => None,
            },
            Err(e) => {
                // The API cannot say: the cluster is left as it is until it can.
                tracing::warn!("{}", api_error(&format!("cannot read pod {name}"), e));
                None
            }
        }
    }

    fn join_timeout(&self) -> Duration {
        self.start_timeout
    }

    fn prune(&self, ids: &mut Value) {
        let Some(cluster) = ids["cluster"].as_str().map(str::to_string) else {
            return;
        };
        let selector =
            format!("app.kubernetes.io/instance={cluster},app.kubernetes.io/component=worker");
        let listed = self.block_on(self.pods().list(&ListParams::default().labels(&selector)));
        let Ok(listed) = listed else {
            return;
        };
        let mut ended = Vec::new();
        let running: Vec<String> = listed
            .items
            .iter()
            .filter_map(|pod| {
                let name = pod.metadata.name.clone()?;
                let (phase, deleted) = phase(pod);
                if deleted || phase == "Failed" || phase == "Succeeded" {
                    ended.push(name);
                    None
                } else {
                    Some(name)
                }
            })
            .collect();
        let workers = ids["workers"].as_array().cloned().unwrap_or_default();
        ids["workers"] = Value::Array(
            workers
                .into_iter()
                .filter(|w| w.as_str().is_some_and(|w| running.iter().any(|r| r == w)))
                .collect(),
        );
        // Pods of retired or failed workers are deleted once forgotten.
        self.block_on(async {
            for pod in &ended {
                self.delete_quietly(self.pods(), pod).await;
            }
        });
    }
}
