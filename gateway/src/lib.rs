//! Shoal clusters as a service.
//!
//! [`spec`] is the cluster spec: groups of workers of different shapes, in one TOML
//! format read by `shoal local --spec`, the gateway, the Slurm script and the
//! Kubernetes manifests.

pub mod spec;

pub use spec::{ClusterSpec, GroupSpec, SpecError};
