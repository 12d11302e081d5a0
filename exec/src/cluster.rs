//! The one interface every front end runs jobs through: a [`Cluster`] takes task graphs
//! and reports on them. [`EmbeddedCluster`](crate::EmbeddedCluster) runs the scheduler and
//! workers in this process; [`RemoteCluster`](crate::RemoteCluster) is a client of a
//! `shoal scheduler` process. Callers hold a `dyn Cluster` and never ask which.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use shoal_planner::{JobId, Placement, TaskGraph, WorkerId};
use tokio::sync::{broadcast, oneshot, watch};

use crate::protocol::{ClusterStatus, EventBatch, JobEvent, Progress, job_progress};
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

impl JobHandle {
    /// A job with nothing to run (a statement such as `SET` that has done its work while
    /// planning): no rows of `schema`, and job id 0, which no cluster gives out.
    pub fn nothing_to_run(schema: SchemaRef) -> Self {
        Self {
            job: 0,
            stream: Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )),
            progress: watch::channel(Progress::default()).1,
        }
    }

    /// A job that `stream` computes in this process, outside any cluster, shown as one
    /// task: its progress channel stays open until the stream has ended, and then counts
    /// the task done (also when the stream ended in an error).
    pub fn in_this_process(stream: SendableRecordBatchStream) -> Self {
        let (tx, progress) = watch::channel(Progress {
            tasks_total: 1,
            tasks_done: 0,
        });
        let schema = stream.schema();
        let mut tx = Some(tx);
        let stream = stream.chain(futures::stream::poll_fn(move |_| {
            if let Some(tx) = tx.take() {
                tx.send_modify(|p| p.tasks_done = 1);
            }
            std::task::Poll::Ready(None)
        }));
        Self {
            job: 0,
            stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
            progress,
        }
    }
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

    /// Retires worker `worker`: no new task goes to it, its running tasks finish, then it
    /// exits, and outputs it held that are still needed are computed again elsewhere (a
    /// scale-down that loses no work). Returns whether it was alive and not already
    /// retiring. Only worker processes can retire.
    fn retire(&self, worker: WorkerId) -> BoxFuture<'_, Result<bool>>;

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

/// The next batch of a subscription to the scheduler's events, skipping over batches the
/// reader fell too far behind to see; `None` once the scheduler stops.
pub async fn next_batch(updates: &mut broadcast::Receiver<EventBatch>) -> Option<EventBatch> {
    loop {
        match updates.recv().await {
            Ok(batch) => return Some(batch),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!("an event reader fell behind by {missed} batches");
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// The events of a subscription, one by one; ends when the scheduler stops.
pub fn event_stream(updates: broadcast::Receiver<EventBatch>) -> BoxStream<'static, JobEvent> {
    futures::stream::unfold(updates, |mut updates| async move {
        let batch = next_batch(&mut updates).await?;
        Some((batch, updates))
    })
    .flat_map(|batch| futures::stream::iter((0..batch.len()).map(move |i| batch[i].clone())))
    .boxed()
}

/// Keeps `progress` at job `job`'s task counts until the job ends, then holds it until
/// `released` resolves (the client let go of the job), so readers see the last counts
/// rather than a closed channel while the results are read.
pub async fn follow_progress(
    job: JobId,
    mut updates: broadcast::Receiver<EventBatch>,
    progress: watch::Sender<Progress>,
    released: oneshot::Receiver<()>,
) {
    while let Some(batch) = next_batch(&mut updates).await {
        let Some((latest, ended)) = job_progress(&batch, job) else {
            continue;
        };
        progress.send_if_modified(|p| {
            let changed = *p != latest;
            *p = latest;
            changed
        });
        if ended {
            break;
        }
    }
    // Resolves (with an error) when the client's job guard is dropped.
    let _ = released.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::JobEventKind;

    fn event(job: u64, done: usize, kind: JobEventKind) -> JobEvent {
        JobEvent {
            job,
            progress: Progress {
                tasks_total: 2,
                tasks_done: done,
            },
            kind,
        }
    }

    #[tokio::test]
    async fn progress_follows_its_job_and_lives_until_the_client_lets_go() {
        let stage = |stage| JobEventKind::StageFinished { stage };
        let (events, updates) = broadcast::channel(4);
        events
            .send(Arc::new(vec![event(1, 1, stage(0)), event(2, 2, stage(0))]))
            .unwrap();
        events
            .send(Arc::new(vec![
                event(1, 2, JobEventKind::Done),
                event(1, 0, stage(9)),
            ]))
            .unwrap();
        let (tx, mut rx) = watch::channel(Progress::default());
        let (release, released) = oneshot::channel();
        let mut follower = tokio::task::JoinSet::new();
        follower.spawn(follow_progress(1, updates, tx, released));
        rx.changed().await.unwrap();
        while rx.borrow_and_update().tasks_done != 2 {
            rx.changed().await.unwrap();
        }
        // Job 2's counts and events after Done are not job 1's.
        assert_eq!(
            *rx.borrow(),
            Progress {
                tasks_total: 2,
                tasks_done: 2
            }
        );
        tokio::task::yield_now().await;
        assert!(
            follower.try_join_next().is_none(),
            "held while the client holds the job"
        );
        drop(release);
        // Without the release the follower would wait for ever: bound the wait.
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), follower.join_next());
        ended.await.expect("the follower ends").unwrap().unwrap();
        assert!(rx.changed().await.is_err(), "then the channel closes");
    }
}
