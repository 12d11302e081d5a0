//! The gateway's configuration: where it listens and keeps its state, its users and
//! their tokens, per-user limits, and named cluster profiles.
//!
//! ```toml
//! [gateway]
//! bind = "127.0.0.1:8686"
//! data_dir = "/var/lib/shoal-gateway"
//! backend = "local"
//!
//! [users.alice]
//! token = "..."
//!
//! [limits]                # every user
//! clusters = 2
//! workers = 16
//!
//! [limits.users.alice]    # one user's own
//! workers = 64
//!
//! [profiles.small.groups.cpu]
//! workers = 2
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use shoal_planner::config::parse_bytes;

use crate::spec::{
    ClusterSpec, DurationText, SpecError, SpecText, check_group_name, parse_duration,
};

/// The checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Address of the REST API.
    pub bind: String,
    /// Where the state database and each cluster's files live.
    pub data_dir: PathBuf,
    /// Which backend starts clusters: `local`, `slurm` or `kubernetes`.
    pub backend: String,
    /// How often running clusters are checked (idle, scheduler gone).
    pub check_interval: Duration,
    /// The certificate chain and key (PEM files) the API is served over TLS with.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Whether each cluster gets its own certificate authority and its scheduler and
    /// workers speak TLS.
    pub cluster_tls: bool,
    /// Users by name, with their tokens.
    pub users: BTreeMap<String, String>,
    /// Limits of users without their own.
    pub limits: Limits,
    /// Limits of named users.
    pub user_limits: BTreeMap<String, Limits>,
    /// Named cluster specs.
    pub profiles: BTreeMap<String, ClusterSpec>,
    /// How the `slurm` backend submits jobs.
    pub slurm: SlurmConfig,
    /// Where the `kubernetes` backend creates pods.
    pub kubernetes: KubernetesConfig,
    /// The JupyterHub whose users' tokens are accepted too.
    pub jupyterhub: Option<crate::hub::HubConfig>,
}

/// The `[kubernetes]` section: where the `kubernetes` backend creates pods.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The API server's URL (default: the pod's service account, or the kubeconfig).
    pub api: Option<String>,
    /// The namespace (default: the service account's or the kubeconfig's).
    pub namespace: Option<String>,
    /// The container image with `shoal` as its entry point (required).
    pub image: Option<String>,
    /// How long a scheduler pod may take to be ready (default 5m).
    #[serde(default, rename = "start_timeout")]
    start_timeout_text: Option<DurationText>,
    #[serde(skip)]
    /// `start_timeout`, checked.
    pub start_timeout: Option<Duration>,
}

/// The `[slurm]` section: how the `slurm` backend submits its jobs.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    /// The `shoal` binary on the compute nodes (default: the gateway's own).
    pub shoal: Option<PathBuf>,
    /// The address schedulers and workers listen on (default: each node's host name).
    pub host: Option<String>,
    /// More `sbatch` arguments for every job, e.g. `["--partition=batch", "--time=8:00:00"]`.
    #[serde(default)]
    pub sbatch_args: Vec<String>,
    /// How long a scheduler's job may wait in the queue and start (default 5m).
    #[serde(default, rename = "start_timeout")]
    start_timeout_text: Option<DurationText>,
    #[serde(skip)]
    /// `start_timeout`, checked.
    pub start_timeout: Option<Duration>,
}

/// What one user may hold at once; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Clusters not stopped.
    pub clusters: Option<usize>,
    /// Workers over those clusters.
    pub workers: Option<usize>,
    /// Task slots over those workers.
    pub slots: Option<usize>,
    /// Worker memory over those workers, in bytes.
    pub memory: Option<u64>,
}

/// What a user holds, or asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Clusters.
    pub clusters: usize,
    /// Workers.
    pub workers: usize,
    /// Task slots.
    pub slots: usize,
    /// Worker memory, in bytes.
    pub memory: u64,
}

impl Usage {
    /// What the clusters of `specs` hold.
    pub fn of<'a>(specs: impl IntoIterator<Item = &'a ClusterSpec>) -> Self {
        specs.into_iter().fold(Self::default(), |u, spec| Self {
            clusters: u.clusters + 1,
            workers: u.workers.saturating_add(spec.workers()),
            slots: u.slots.saturating_add(spec.slots()),
            memory: u.memory.saturating_add(spec.memory()),
        })
    }
}

impl Limits {
    /// Whether `user`, holding `held` besides the cluster being changed, may hold
    /// `wanted` too; the error says which limit and by how much, in one line.
    pub fn admit(&self, user: &str, held: Usage, wanted: Usage) -> Result<(), String> {
        let checks = [
            (
                "clusters",
                self.clusters.map(|l| l as u64),
                held.clusters.saturating_add(wanted.clusters) as u64,
            ),
            (
                "workers",
                self.workers.map(|l| l as u64),
                held.workers.saturating_add(wanted.workers) as u64,
            ),
            (
                "slots",
                self.slots.map(|l| l as u64),
                held.slots.saturating_add(wanted.slots) as u64,
            ),
            (
                "bytes of worker memory",
                self.memory,
                held.memory.saturating_add(wanted.memory),
            ),
        ];
        for (what, limit, total) in checks {
            if let Some(limit) = limit
                && total > limit
            {
                return Err(format!(
                    "user {user} may hold at most {limit} {what}; this would make {total}"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigText {
    #[serde(default)]
    gateway: GatewayText,
    #[serde(default)]
    users: BTreeMap<String, UserText>,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    profiles: BTreeMap<String, SpecText>,
    #[serde(default)]
    slurm: SlurmConfig,
    #[serde(default)]
    kubernetes: KubernetesConfig,
    jupyterhub: Option<crate::hub::HubConfig>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GatewayText {
    bind: Option<String>,
    data_dir: Option<PathBuf>,
    backend: Option<String>,
    check_interval: Option<DurationText>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    cluster_tls: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserText {
    token: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    clusters: Option<usize>,
    workers: Option<usize>,
    slots: Option<usize>,
    memory: Option<String>,
    #[serde(default)]
    users: BTreeMap<String, LimitsText>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsText {
    clusters: Option<usize>,
    workers: Option<usize>,
    slots: Option<usize>,
    memory: Option<String>,
}

impl LimitsText {
    fn check(&self, field: &str) -> Result<Limits, SpecError> {
        let memory = match &self.memory {
            None => None,
            Some(text) => Some(
                parse_bytes(text)
                    .map_err(|e| SpecError(format!("{field}.memory: {}", e.message())))?
                    as u64,
            ),
        };
        Ok(Limits {
            clusters: self.clusters,
            workers: self.workers,
            slots: self.slots,
            memory,
        })
    }
}

/// The backends the gateway knows.
pub const BACKENDS: [&str; 3] = ["local", "slurm", "kubernetes"];

impl GatewayConfig {
    /// Parses and checks a configuration; `origin` (a file name) starts any error.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, SpecError> {
        let raw: ConfigText = crate::spec::parse_toml(text, origin)?;
        let at = |e: SpecError| SpecError(format!("{origin}: {e}"));
        let backend = raw.gateway.backend.unwrap_or_else(|| "local".into());
        if !BACKENDS.contains(&backend.as_str()) {
            return Err(at(SpecError(format!(
                "gateway.backend: '{backend}' is not one of {}",
                BACKENDS.join(", ")
            ))));
        }
        let check_interval = match &raw.gateway.check_interval {
            None => Duration::from_secs(5),
            Some(d) => parse_duration(d)
                .map_err(|e| at(SpecError(format!("gateway.check_interval: {e}"))))?,
        };
        let mut users = BTreeMap::new();
        for (name, user) in raw.users {
            check_user_name(&name).map_err(at)?;
            if user.token.len() < 16 {
                return Err(at(SpecError(format!(
                    "users.{name}.token: use at least 16 characters"
                ))));
            }
            if let Some((other, _)) = users.iter().find(|(_, t)| **t == user.token) {
                return Err(at(SpecError(format!(
                    "users.{name}.token: the same as users.{other}.token; every user needs their own"
                ))));
            }
            users.insert(name, user.token);
        }
        let all = LimitsText {
            clusters: raw.limits.clusters,
            workers: raw.limits.workers,
            slots: raw.limits.slots,
            memory: raw.limits.memory.clone(),
        };
        let limits = all.check("limits").map_err(at)?;
        let mut user_limits = BTreeMap::new();
        for (name, text) in &raw.limits.users {
            let limits = text.check(&format!("limits.users.{name}")).map_err(at)?;
            user_limits.insert(name.clone(), limits);
        }
        let mut profiles = BTreeMap::new();
        for (name, text) in &raw.profiles {
            let spec = text
                .check()
                .map_err(|e| at(SpecError(format!("profiles.{name}: {e}"))))?;
            profiles.insert(name.clone(), spec);
        }
        let tls = match (raw.gateway.tls_cert.clone(), raw.gateway.tls_key.clone()) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(at(SpecError(
                    "gateway.tls_cert and gateway.tls_key: give both or neither".into(),
                )));
            }
        };
        let cluster_tls = raw.gateway.cluster_tls;
        let mut slurm = raw.slurm;
        if let Some(text) = &slurm.start_timeout_text {
            let timeout = parse_duration(text)
                .map_err(|e| at(SpecError(format!("slurm.start_timeout: {e}"))))?;
            slurm.start_timeout = Some(timeout);
        }
        let mut kubernetes = raw.kubernetes;
        if let Some(text) = &kubernetes.start_timeout_text {
            let timeout = parse_duration(text)
                .map_err(|e| at(SpecError(format!("kubernetes.start_timeout: {e}"))))?;
            kubernetes.start_timeout = Some(timeout);
        }
        if backend == "kubernetes" && kubernetes.image.is_none() {
            return Err(at(SpecError(
                "kubernetes.image: the backend needs the image to run (deploy/Dockerfile builds one)".into(),
            )));
        }
        Ok(Self {
            bind: raw.gateway.bind.unwrap_or_else(|| "127.0.0.1:8686".into()),
            data_dir: raw
                .gateway
                .data_dir
                .unwrap_or_else(|| PathBuf::from("shoal-gateway")),
            backend,
            check_interval,
            tls,
            cluster_tls,
            users,
            limits,
            user_limits,
            profiles,
            slurm,
            kubernetes,
            jupyterhub: raw.jupyterhub,
        })
    }

    /// Reads and checks the configuration at `path`.
    pub fn from_file(path: &str) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SpecError(format!("cannot read the gateway configuration {path}: {e}")))?;
        Self::from_toml(&text, path)
    }

    /// The limits that apply to `user`.
    pub fn limits_of(&self, user: &str) -> Limits {
        self.user_limits.get(user).copied().unwrap_or(self.limits)
    }

    /// The user a bearer token belongs to, compared in constant time per user.
    pub fn user_of(&self, token: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|(_, t)| same_bytes(t.as_bytes(), token.as_bytes()))
            .map(|(name, _)| name.as_str())
    }
}

/// User names become parts of cluster names and paths.
fn check_user_name(name: &str) -> Result<(), SpecError> {
    check_group_name(name).map_err(|_| {
        SpecError(format!(
            "user name '{name}': expected 1 to 32 lowercase letters, digits or '-', starting with a letter"
        ))
    })
}

/// Equality that takes as long whatever the first differing byte.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[gateway]
bind = "127.0.0.1:0"
data_dir = "/tmp/gw"

[users.alice]
token = "alice-token-0123456789"

[users.bob]
token = "bob-token-0123456789ab"

[limits]
clusters = 1
workers = 4
memory = "8GiB"

[limits.users.alice]
clusters = 3
workers = 10

[profiles.small.groups.cpu]
workers = 2
memory = "1GiB"
"#;

    #[test]
    fn users_limits_and_profiles_come_from_one_file() {
        let config = GatewayConfig::from_toml(CONFIG, "gateway.toml").unwrap();
        assert_eq!(config.backend, "local");
        assert_eq!(config.user_of("alice-token-0123456789"), Some("alice"));
        assert_eq!(config.user_of("alice-token-012345678"), None);
        assert_eq!(config.user_of(""), None);
        assert_eq!(config.limits_of("bob").workers, Some(4));
        assert_eq!(config.limits_of("bob").memory, Some(8 << 30));
        assert_eq!(config.limits_of("alice").workers, Some(10));
        assert_eq!(
            config.limits_of("alice").memory,
            None,
            "alice's own limits only"
        );
        assert_eq!(config.profiles["small"].workers(), 2);
    }

    #[test]
    fn limits_name_what_would_be_exceeded() {
        let config = GatewayConfig::from_toml(CONFIG, "gateway.toml").unwrap();
        let small = &config.profiles["small"];
        let bob = config.limits_of("bob");
        assert_eq!(
            bob.admit("bob", Usage::default(), Usage::of([small])),
            Ok(())
        );
        // A second cluster.
        let error = bob
            .admit("bob", Usage::of([small]), Usage::of([small]))
            .unwrap_err();
        assert_eq!(
            error,
            "user bob may hold at most 1 clusters; this would make 2"
        );
        // Scaling to 5 workers: the cluster itself is what is asked for.
        let wanted = Usage {
            clusters: 1,
            workers: 5,
            slots: 5,
            memory: 5 << 30,
        };
        let error = bob.admit("bob", Usage::default(), wanted).unwrap_err();
        assert_eq!(
            error,
            "user bob may hold at most 4 workers; this would make 5"
        );
        let wanted = Usage {
            clusters: 1,
            workers: 3,
            slots: 3,
            memory: 9 << 30,
        };
        let error = bob.admit("bob", Usage::default(), wanted).unwrap_err();
        assert!(
            error.contains("at most 8589934592 bytes of worker memory"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_configuration_is_refused_in_one_line() {
        let cases = [
            (
                "[gateway]\nbackend = \"yarn\"\n",
                "g.toml: gateway.backend: 'yarn' is not one of local, slurm, kubernetes",
            ),
            (
                "[users.alice]\ntoken = \"short\"\n",
                "g.toml: users.alice.token: use at least 16 characters",
            ),
            (
                "[users.Alice]\ntoken = \"0123456789abcdef\"\n",
                "g.toml: user name 'Alice'",
            ),
            (
                "[limits]\nmemory = \"lots\"\n",
                "g.toml: limits.memory: invalid size 'lots'",
            ),
            (
                "[profiles.p.groups.cpu]\nslots = 0\n",
                "g.toml: profiles.p: groups.cpu.slots: expected 1 to 1024, got 0",
            ),
            (
                "[users.a]\ntoken = \"0123456789abcdef\"\n[users.b]\ntoken = \"0123456789abcdef\"\n",
                "g.toml: users.b.token: the same as users.a.token",
            ),
            ("[gateway]\nport = 1\n", "g.toml:2:1: unknown field `port`"),
        ];
        for (text, expected) in cases {
            let error = GatewayConfig::from_toml(text, "g.toml")
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(expected), "{text:?} gave {error:?}");
            assert!(!error.contains('\n'), "{error:?}");
        }
    }
}
