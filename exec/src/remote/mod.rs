//! The network runtime: scheduler and worker processes and the client that submits to
//! them, over the gRPC control plane of `proto/shoal.proto`. Task outputs move over
//! Arrow Flight (see [`crate::flight`]).

pub mod client;
pub mod control;
pub mod events;
mod messages;
pub mod offline;
mod results;
pub mod server;
pub mod worker;

use std::collections::HashMap;

use shoal_planner::Resources;

pub use client::RemoteCluster;
pub use messages::MAX_JOB_TASKS;
pub use server::{EventFeed, SchedulerOptions, run_scheduler, start_scheduler};
pub use worker::{WorkerOptions, run_worker};

/// Messages and services generated from `proto/shoal.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("shoal.v1");
}

/// The control-plane version; a worker of another version is refused when it registers.
pub const PROTOCOL_VERSION: u32 = 3;

fn resources_from_proto(map: &HashMap<String, f64>) -> Resources {
    map.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

fn resources_to_proto(resources: &Resources) -> HashMap<String, f64> {
    resources.iter().map(|(k, v)| (k.to_string(), v)).collect()
}
