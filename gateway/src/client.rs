//! A client of the gateway's REST API, for `shoal gateway create|list|show|scale|stop`
//! and for sessions that connect to a cluster by name.

use serde_json::{Value, json};

use crate::spec::ClusterSpec;

/// The gateway at `url`, called as the user whose token is `token`.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    url: String,
    token: String,
    http: reqwest::Client,
}

/// What a cluster's owner needs to connect to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The scheduler's URL.
    pub scheduler: String,
    /// The cluster token.
    pub token: String,
    /// The PEM certificate of the cluster's authority, when it speaks TLS.
    pub tls_ca: Option<String>,
}

/// An error and its causes in one line (reqwest's own message leaves out why a
/// connection failed, e.g. a certificate it does not trust).
fn causes(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace('\n', " ")
}

impl GatewayClient {
    /// A client of the gateway at `url` (e.g. `http://gw:8686`).
    pub fn new(url: &str, token: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// Trusts, besides the system's authorities, the one whose PEM certificate is at
    /// `path` (an https:// gateway with a certificate of its own authority).
    pub fn with_ca_file(mut self, path: &str) -> Result<Self, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let ca = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("{path}: not a PEM certificate: {e}"))?;
        self.http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .map_err(|e| format!("{path}: {e}"))?;
        Ok(self)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}/api/v1/{path}", self.url);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("cannot reach the gateway at {}: {}", self.url, causes(&e)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("the gateway at {} broke off its answer: {e}", self.url))?;
        let value: Value = serde_json::from_str(&text).map_err(|_| {
            format!(
                "the gateway at {} answered {status} with no JSON: {}",
                self.url,
                text.trim()
            )
        })?;
        if status.is_success() {
            Ok(value)
        } else {
            let error = value["error"].as_str().unwrap_or("no message");
            Err(format!("the gateway refused ({status}): {error}"))
        }
    }

    /// Creates a cluster from `spec`; answers once its workers have joined.
    pub async fn create(&self, spec: &ClusterSpec) -> Result<Value, String> {
        let body = json!({ "spec": spec.to_text() });
        self.call(reqwest::Method::POST, "clusters", Some(body))
            .await
    }

    /// Creates a cluster from one of the gateway's profiles.
    pub async fn create_from_profile(&self, profile: &str) -> Result<Value, String> {
        let body = json!({ "profile": profile });
        self.call(reqwest::Method::POST, "clusters", Some(body))
            .await
    }

    /// The caller's clusters.
    pub async fn list(&self) -> Result<Vec<Value>, String> {
        let reply = self.call(reqwest::Method::GET, "clusters", None).await?;
        Ok(reply["clusters"].as_array().cloned().unwrap_or_default())
    }

    /// One cluster, with its workers alive per group.
    pub async fn get(&self, name: &str) -> Result<Value, String> {
        self.call(reqwest::Method::GET, &format!("clusters/{name}"), None)
            .await
    }

    /// Sets the number of workers of `group`.
    pub async fn scale(&self, name: &str, group: &str, workers: usize) -> Result<Value, String> {
        let body = json!({ "group": group, "workers": workers });
        self.call(
            reqwest::Method::POST,
            &format!("clusters/{name}/scale"),
            Some(body),
        )
        .await
    }

    /// Stops a cluster.
    pub async fn stop(&self, name: &str) -> Result<Value, String> {
        self.call(reqwest::Method::DELETE, &format!("clusters/{name}"), None)
            .await
    }

    /// Where running cluster `name` is and its token, from synchronous code, inside an
    /// async runtime or not.
    pub fn connection(&self, name: &str) -> Result<Connection, String> {
        let (client, name) = (self.clone(), name.to_string());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a runtime: {e}"))?;
            let cluster = runtime.block_on(client.get(&name))?;
            if cluster["state"] != "running" {
                let state = cluster["state"].as_str().unwrap_or("unknown");
                let reason = cluster["reason"].as_str().unwrap_or("");
                return Err(format!("cluster {name} is {state}: {reason}"));
            }
            let text = |key: &str| cluster[key].as_str().unwrap_or_default().to_string();
            Ok(Connection {
                scheduler: text("scheduler"),
                token: text("token"),
                tls_ca: cluster["tls_ca"].as_str().map(str::to_string),
            })
        })
        .join()
        .map_err(|_| "the gateway lookup panicked".to_string())?
    }
}
