//! A worker: runs launched tasks on its slots and reports each outcome exactly once.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::UInt64Array;
use datafusion::common::{DataFusionError, Result, internal_datafusion_err};
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::ExecutionPlan;
use shoal_planner::{JobId, ShuffleEnv, ShuffleIo, StageId, TaskId, WorkerId};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use crate::scheduler::Event;
use crate::store::ResultStore;

/// Everything a worker needs to run one task.
#[derive(Debug)]
pub struct Launch {
    /// The job.
    pub job: JobId,
    /// The task.
    pub task: TaskId,
    /// The stage plan (rooted at `ShuffleWriteExec`).
    pub plan: Arc<dyn ExecutionPlan>,
    /// The session's task context: configuration and functions.
    pub ctx: Arc<TaskContext>,
    /// Where each input stage's task outputs are.
    pub locations: HashMap<StageId, Vec<WorkerId>>,
}

/// Messages from the scheduler to a worker.
#[derive(Debug)]
pub enum WorkerMsg {
    /// Run a task.
    Launch(Box<Launch>),
    /// Stop the job's running tasks and drop its outputs.
    CancelJob(JobId),
    /// Drop the job's outputs (it finished and its results were read).
    ReleaseJob(JobId),
    /// Drop one stage's outputs: every stage reading them has finished.
    ReleaseStage(JobId, StageId),
}

/// How a launched task ended.
#[derive(Debug)]
pub enum TaskOutcome {
    /// Output stored; bytes per bucket.
    Finished(Vec<u64>),
    /// The task returned an error or panicked.
    Failed(DataFusionError),
    /// The task was aborted by a cancel.
    Cancelled,
}

/// The state a worker's loop owns.
pub struct Worker {
    /// This worker's id.
    pub id: WorkerId,
    /// Runtime (memory pool, disk manager, object stores) for its tasks.
    pub runtime: Arc<RuntimeEnv>,
    /// Where its tasks put their outputs.
    pub store: Arc<ResultStore>,
    /// Its transport endpoint.
    pub io: Arc<dyn ShuffleIo>,
}

impl Worker {
    /// Runs until the scheduler's channel closes.
    pub async fn run(
        self,
        mut inbox: mpsc::UnboundedReceiver<WorkerMsg>,
        events: mpsc::UnboundedSender<Event>,
    ) {
        let mut running: JoinSet<TaskOutcome> = JoinSet::new();
        let mut by_id: HashMap<tokio::task::Id, (JobId, TaskId)> = HashMap::new();
        let mut handles: HashMap<(JobId, TaskId), AbortHandle> = HashMap::new();
        loop {
            tokio::select! {
                msg = inbox.recv() => match msg {
                    None => break,
                    Some(WorkerMsg::Launch(launch)) => {
                        let key = (launch.job, launch.task);
                        let handle = running.spawn(run_task(*launch, self.runtime.clone(), self.io.clone()));
                        by_id.insert(handle.id(), key);
                        handles.insert(key, handle);
                    }
                    Some(WorkerMsg::CancelJob(job)) => {
                        for ((j, _), handle) in &handles {
                            if *j == job {
                                handle.abort();
                            }
                        }
                        self.store.remove_job(job);
                    }
                    Some(WorkerMsg::ReleaseJob(job)) => self.store.remove_job(job),
                    Some(WorkerMsg::ReleaseStage(job, stage)) => self.store.remove_stage(job, stage),
                },
                Some(joined) = running.join_next_with_id(), if !running.is_empty() => {
                    let (id, outcome) = match joined {
                        Ok((id, outcome)) => (id, outcome),
                        Err(e) => {
                            let id = e.id();
                            if e.is_panic() {
                                let text = panic_message(e.into_panic());
                                (id, TaskOutcome::Failed(internal_datafusion_err!("task panicked: {text}")))
                            } else {
                                (id, TaskOutcome::Cancelled)
                            }
                        }
                    };
                    if let Some((job, task)) = by_id.remove(&id) {
                        handles.remove(&(job, task));
                        let _ = events.send(Event::TaskEnded { job, task, worker: self.id, outcome });
                    }
                }
            }
        }
        running.abort_all();
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

async fn run_task(launch: Launch, runtime: Arc<RuntimeEnv>, io: Arc<dyn ShuffleIo>) -> TaskOutcome {
    match execute(launch, runtime, io).await {
        Ok(bytes) => TaskOutcome::Finished(bytes),
        Err(e) => TaskOutcome::Failed(e),
    }
}

async fn execute(
    launch: Launch,
    runtime: Arc<RuntimeEnv>,
    io: Arc<dyn ShuffleIo>,
) -> Result<Vec<u64>> {
    let Launch {
        job,
        task,
        plan,
        ctx,
        locations,
    } = launch;
    let env = ShuffleEnv {
        job,
        task,
        locations,
        io,
    };
    let config = ctx.session_config().clone().with_extension(Arc::new(env));
    let task_ctx = TaskContext::new(
        Some(format!("job{job}-{}-{}", task.stage, task.partition)),
        ctx.session_id(),
        config,
        ctx.scalar_functions().clone(),
        ctx.higher_order_functions().clone(),
        ctx.aggregate_functions().clone(),
        ctx.window_functions().clone(),
        runtime,
    );
    let stream = plan.execute(task.partition, Arc::new(task_ctx))?;
    let summary = datafusion::physical_plan::common::collect(stream).await?;
    let mut bytes = Vec::new();
    for batch in summary {
        let col = batch
            .column(2)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| internal_datafusion_err!("bad shuffle write summary"))?;
        bytes.extend(col.values().iter().copied());
    }
    Ok(bytes)
}
