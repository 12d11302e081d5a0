//! Shoal clusters as a service.
//!
//! [`spec`] is the cluster spec: groups of workers of different shapes, in one TOML
//! format read by `shoal local --spec`, the gateway, the Slurm script and the
//! Kubernetes manifests. [`config`] is the gateway's own configuration: users and their
//! tokens, per-user limits and named profiles.

pub mod api;
pub mod backend;
pub mod client;
pub mod config;
pub mod db;
pub mod hub;
pub mod k8s;
pub mod kubernetes;
pub mod service;
pub mod slurm;
pub mod spec;
pub mod tls;

pub use config::{GatewayConfig, Limits, Usage};
pub use spec::{ClusterSpec, GroupSpec, SpecError};
