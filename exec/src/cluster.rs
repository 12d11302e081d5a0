//! The one interface every front end runs jobs through: a [`Cluster`] takes task graphs
//! and reports on them. [`EmbeddedCluster`](crate::EmbeddedCluster) runs the scheduler and
//! workers in this process; [`RemoteCluster`](crate::RemoteCluster) is a client of a
//! `shoal scheduler` process. Callers hold a `dyn Cluster` and never ask which.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use shoal_planner::{JobId, TaskGraph};
use tokio::sync::{broadcast, watch};

use crate::protocol::{ClusterStatus, JobEvent, Progress};
use crate::store::StoreStats;

/// A running job: its result stream and its progress. Dropping the stream before it ends
/// cancels the job.
pub struct JobHandle {
    /// The job's id.
    pub job: JobId,
    /// The result batches, in output partition order.
    pub stream: SendableRecordBatchStream,
    /// Task counts, updated as tasks finish.
    pub progress: watch::Receiver<Progress>,
}

/// Where a cluster runs tasks, which decides how the planner may cut a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Every task runs in this process: partitions may share state (a broadcast join's
    /// hash table is built once).
    InProcess,
    /// Tasks run in other processes: each partition must be self-contained.
    Processes,
}

/// A scheduler and its workers, as a client sees them.
pub trait Cluster: Send + Sync + std::fmt::Debug {
    /// Submits `graph`, planned with the settings and functions of `ctx`; the stream of the
    /// returned handle yields the result stage's output with `schema`. Dropping the stream
    /// ends the job on the cluster.
    fn submit(&self, graph: TaskGraph, ctx: Arc<TaskContext>, schema: SchemaRef) -> JobHandle;

    /// Workers and jobs as the scheduler sees them.
    fn status(&self) -> BoxFuture<'_, Result<ClusterStatus>>;

    /// Cancels job `job` (an id from [`Cluster::status`]): its client gets an error.
    /// Returns whether it was still running.
    fn cancel(&self, job: JobId) -> BoxFuture<'_, Result<bool>>;

    /// Every job's events from now on, once the returned future resolves. A reader that
    /// falls far behind misses some events; the task counts each event carries stay exact.
    fn events(&self) -> BoxFuture<'_, Result<BoxStream<'static, JobEvent>>>;

    /// Where tasks run.
    fn placement(&self) -> Placement;

    /// The runtime the cluster's client work runs on; callers spawn helpers here.
    fn runtime(&self) -> &tokio::runtime::Handle;

    /// Result-store counters of the workers this process can see (none for a remote
    /// cluster, whose workers report through [`Cluster::status`]).
    fn store_stats(&self) -> Vec<StoreStats> {
        Vec::new()
    }

    /// Where this process's workers serve their outputs over Arrow Flight, if they do.
    fn flight_addresses(&self) -> Vec<std::net::SocketAddr> {
        Vec::new()
    }
}

/// The events of a broadcast subscription as a stream; it skips over events the reader
/// fell too far behind to see, and ends when the scheduler stops.
pub fn event_stream(updates: broadcast::Receiver<JobEvent>) -> BoxStream<'static, JobEvent> {
    futures::stream::unfold(updates, |mut updates| async move {
        loop {
            match updates.recv().await {
                Ok(event) => return Some((event, updates)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}

/// Keeps `progress` at job `job`'s task counts until the job ends, then holds it until its
/// readers are gone (they see the last counts, not a closed channel).
pub async fn follow_progress(
    job: u64,
    mut events: BoxStream<'static, JobEvent>,
    progress: watch::Sender<Progress>,
) {
    while let Some(event) = events.next().await {
        if event.job != job {
            continue;
        }
        progress.send_if_modified(|p| {
            let changed = *p != event.progress;
            *p = event.progress;
            changed
        });
        if event.kind.is_final() {
            break;
        }
    }
    progress.closed().await;
}
