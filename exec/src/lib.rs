//! `shoal-exec` runs [`TaskGraph`](shoal_planner::TaskGraph)s.
//!
//! ```text
//!  client ──submit(graph)──► scheduler (one task, owns all job state)
//!                               │ Launch            ▲ Finished / Failed / Cancelled
//!                               ▼                   │
//!                            worker 0 … worker N-1 (slots, memory pool, ResultStore)
//!                               │ put / fetch buckets
//!                               ▼
//!                            Transport (in-process: batches shared by Arc, no copy)
//! ```
//!
//! Start with the [`Cluster`] trait, the one interface front ends run jobs through:
//! [`EmbeddedCluster`] starts the scheduler and workers in this process, [`RemoteCluster`]
//! talks to a `shoal scheduler` process. `submit` hands back a [`JobHandle`] whose stream
//! yields the job's batches; dropping the stream cancels the job on every worker. The
//! scheduler (`scheduler/`) is a state machine fed events; the messages between it, its
//! workers and its clients live in [`protocol`].

pub mod cluster;
pub mod embedded;
pub mod flight;
pub mod metrics;
pub mod outline;
pub mod protocol;
pub mod remote;
pub mod scheduler;
pub mod security;
pub mod store;
pub mod transport;
pub mod worker;

pub use cluster::{Cluster, JobHandle};
pub use embedded::{DataPlane, EmbeddedCluster, EmbeddedOptions};
pub use metrics::{MetricUnit, OperatorMetric};
pub use outline::{JobOutline, StageOutline};
pub use protocol::{
    ClusterStatus, JobEvent, JobEventKind, JobStatus, Progress, TaskFailure, TaskReport,
    WorkerStatus, WorkerUsage,
};
pub use remote::RemoteCluster;
pub use security::Security;
// The ids and error kinds the cluster interface's types carry.
pub use shoal_planner::{ErrorKind, JobId, Placement, Resources, TaskId, WorkerId};
pub use store::{ResultStore, StoreStats};
pub use transport::{InProcessTransport, Transport};

pub use shoal_planner::panic_message;
