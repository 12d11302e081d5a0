//! The messages between the scheduler, its workers and its clients, and the status they
//! report. The scheduler, the workers and both cluster clients read these types; none of
//! them imports another's internals.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use datafusion::common::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use shoal_planner::run_filters;
use shoal_planner::{
    ErrorKind, JobId, Locations, Resources, ShoalConfig, StageId, TaskGraph, TaskId, WorkerId,
};
use tokio::sync::{mpsc, oneshot};

use crate::outline::JobOutline;

/// Where the result stage's tasks left their output, in partition order.
pub type JobOutputs = Vec<(TaskId, WorkerId)>;

/// Where a delivered job's unread result partitions are after lost ones were recomputed
/// (every unread partition, in partition order), or why they cannot be.
pub type Relocations = mpsc::UnboundedSender<Result<JobOutputs, DataFusionError>>;

/// A task's failure, naming the task and the worker; the cause is kept as the source.
#[derive(Debug)]
pub struct TaskFailure {
    /// The job.
    pub job: JobId,
    /// The failed task.
    pub task: TaskId,
    /// The worker it ran on.
    pub worker: WorkerId,
    /// What went wrong.
    pub cause: DataFusionError,
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of job {} failed on worker {}: {}",
            self.task, self.job, self.worker, self.cause
        )
    }
}

impl std::error::Error for TaskFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// A job failure's one-line message: a task failure reads "stage 1 task 0 of job 3
/// failed on worker 1: …", without DataFusion's "External error" prefix.
pub fn failure_message(error: &DataFusionError) -> String {
    match error {
        DataFusionError::External(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

/// A stage's plan, in the form the workers that run it need.
#[derive(Debug, Clone)]
pub enum StagePlan {
    /// A physical plan and the session's task context, for workers in this process.
    Decoded {
        /// The stage plan, rooted at `ShuffleWriteExec`.
        plan: Arc<dyn ExecutionPlan>,
        /// Session configuration and functions.
        ctx: Arc<TaskContext>,
        /// The tasks that started with this plan (its copies share them).
        runs: Arc<Runs>,
    },
    /// The plan as `datafusion-proto` bytes with the session's settings, for worker
    /// processes (the scheduler process never decodes it).
    Encoded(Arc<EncodedStage>),
    /// Tasks that do nothing (scheduler benchmarks).
    Noop,
}

impl StagePlan {
    /// A stage plan for workers in this process, no task of which has started yet.
    pub fn decoded(plan: Arc<dyn ExecutionPlan>, ctx: Arc<TaskContext>) -> Self {
        Self::Decoded {
            plan,
            ctx,
            runs: Arc::default(),
        }
    }
}

/// The tasks of a stage that started with one plan. A filter that an aggregation or a
/// top-k sort tightens from the rows it reads must not reach a later run of the same
/// task (see `shoal_planner::run_filters`): that run gets a copy of the plan in which
/// such filters start afresh.
#[derive(Debug, Default)]
pub struct Runs {
    /// Whether the plan has such filters (looked for when a task first runs again).
    bounds: OnceLock<bool>,
    /// The partitions started.
    started: Mutex<HashSet<usize>>,
}

impl Runs {
    /// Records that `partition` starts with `plan`; whether it started before and the
    /// plan has such filters, so that this run needs a fresh copy.
    pub fn run_again(&self, plan: &Arc<dyn ExecutionPlan>, partition: usize) -> bool {
        self.run_again_if(partition, || run_filters::has_run_bounds(plan))
    }

    /// [`Runs::run_again`], with `bounds` telling whether the plan has such filters.
    fn run_again_if(&self, partition: usize, bounds: impl FnOnce() -> bool) -> bool {
        let again = !self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition);
        again && *self.bounds.get_or_init(bounds)
    }
}

/// A serialised stage plan.
#[derive(Debug)]
pub struct EncodedStage {
    /// `datafusion-proto` bytes with Shoal's extension codec.
    pub plan: Vec<u8>,
    /// The session's settings.
    pub config: Arc<HashMap<String, String>>,
}

/// One stage of a submitted job.
#[derive(Debug, Clone)]
pub struct StageSpec {
    /// Stages whose every task output this stage reads.
    pub inputs: Vec<StageId>,
    /// Number of tasks.
    pub tasks: usize,
    /// What each task runs.
    pub plan: StagePlan,
}

/// A job as the scheduler runs it: stages in topological order, the last is the result.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The stages.
    pub stages: Vec<StageSpec>,
    /// What every task asks for.
    pub request: Resources,
    /// How long the job may wait for a worker that can run its tasks.
    pub placement_timeout: Duration,
    /// Whether a stage may start while the stages it reads still run (once every task of
    /// them is placed), reading their outputs as they finish.
    pub pipelined: bool,
    /// What the job is, for its `Submitted` event.
    pub outline: Arc<JobOutline>,
}

impl JobSpec {
    /// The job for a task graph planned in this process.
    pub fn local(graph: TaskGraph, ctx: Arc<TaskContext>) -> Self {
        let request = graph.resources.clone();
        let outline = Arc::new(JobOutline::of(&graph));
        let shoal = ctx
            .session_config()
            .options()
            .extensions
            .get::<ShoalConfig>();
        let placement_timeout = shoal
            .map(|c| c.placement_timeout())
            .unwrap_or(Duration::from_secs(60));
        let pipelined = shoal.is_some_and(|c| c.settings.execution.pipelined_exchanges);
        let stages = graph
            .stages
            .into_iter()
            .map(|s| StageSpec {
                inputs: s.inputs,
                tasks: s.tasks,
                plan: StagePlan::decoded(s.plan, Arc::clone(&ctx)),
            })
            .collect();
        Self {
            stages,
            request,
            placement_timeout,
            pipelined,
            outline,
        }
    }

    /// Whether the stages form a graph the scheduler can run: each reads only stages
    /// before it.
    pub fn check(&self) -> Result<(), DataFusionError> {
        for (id, stage) in self.stages.iter().enumerate() {
            if let Some(bad) = stage.inputs.iter().find(|&&i| i >= id) {
                return Err(DataFusionError::Internal(format!(
                    "stage {id} reads stage {bad}: stages must come after their inputs"
                )));
            }
        }
        Ok(())
    }

    /// Tasks in the job.
    pub fn tasks_total(&self) -> usize {
        self.stages.iter().map(|s| s.tasks).sum()
    }
}

/// Events the scheduler reacts to.
#[derive(Debug)]
pub enum Event {
    /// A client submitted a job.
    Submit {
        /// Its id.
        job: JobId,
        /// What to run (boxed, as is every large field of an event, so that the events
        /// queued for the scheduler, one per task ending, stay small).
        spec: Box<JobSpec>,
        /// Answered once: the result locations, or the first failure.
        done: oneshot::Sender<Result<JobOutputs, DataFusionError>>,
        /// Where result partitions lost after `done` was answered are recomputed to;
        /// without it (workers in this process, which are never lost) they are not.
        relocated: Option<Relocations>,
    },
    /// A worker reports how a task ended.
    TaskEnded {
        /// The job.
        job: JobId,
        /// The task.
        task: TaskId,
        /// Which start of the task this was.
        attempt: u32,
        /// The worker that ran it.
        worker: WorkerId,
        /// The outcome.
        outcome: TaskOutcome,
    },
    /// The client is done with a job: cancel it if still running, then free its outputs.
    EndJob(JobId),
    /// The client could not read result partition `partition` of a delivered job from
    /// `worker`; it has read partitions `read` to the end and needs no more of them.
    ResultLost {
        /// The job.
        job: JobId,
        /// The partition it was reading.
        partition: usize,
        /// The worker it read from.
        worker: WorkerId,
        /// Why the read failed.
        cause: String,
        /// Partitions read to the end.
        read: Vec<usize>,
    },
    /// Report the cluster's state.
    Status(oneshot::Sender<ClusterStatus>),
    /// Someone other than the job's client cancels it; the reply says whether it was
    /// still running.
    Cancel(JobId, oneshot::Sender<bool>),
    /// Retire a worker (see [`crate::Cluster::retire`]); the reply says whether it was
    /// alive and not already retiring.
    Retire(WorkerId, oneshot::Sender<bool>),
    /// A worker process registered; the reply is its id.
    WorkerJoined {
        /// Where it is and what it offers (`id` is ignored).
        info: Box<WorkerStatus>,
        /// Commands for it.
        tx: mpsc::UnboundedSender<WorkerMsg>,
        /// Its id.
        reply: oneshot::Sender<WorkerId>,
    },
    /// A worker is gone (its connection closed or its heartbeats stopped).
    WorkerLost {
        /// Which.
        worker: WorkerId,
        /// Why the scheduler thinks so.
        cause: String,
    },
    /// A suspect worker's data port accepted a connection: the suspicion is cleared at
    /// its next heartbeat.
    Reachable(WorkerId),
    /// A worker is alive and uses this much memory.
    Heartbeat {
        /// Which.
        worker: WorkerId,
        /// What it uses and spilled.
        usage: WorkerUsage,
    },
    /// Tasks of `job` on worker `to` fetched `bytes` of outputs from worker `from`.
    Fetched {
        /// The job.
        job: JobId,
        /// The worker that served them.
        from: WorkerId,
        /// The worker that fetched them.
        to: WorkerId,
        /// How many (in-memory size).
        bytes: u64,
    },
    /// Worker `worker` spilled `bytes` of `job`'s task outputs or operator state to disk,
    /// in `spills` files.
    Spilled {
        /// The job.
        job: JobId,
        /// The worker.
        worker: WorkerId,
        /// How many (in-memory size).
        bytes: u64,
        /// Spill files written.
        spills: u64,
    },
}

impl Event {
    /// The job the event concerns, if it concerns one.
    pub fn job(&self) -> Option<JobId> {
        match self {
            Event::Submit { job, .. } | Event::TaskEnded { job, .. } => Some(*job),
            Event::EndJob(job) | Event::Cancel(job, _) => Some(*job),
            Event::ResultLost { job, .. } => Some(*job),
            Event::Fetched { job, .. } | Event::Spilled { job, .. } => Some(*job),
            _ => None,
        }
    }
}

impl WorkerStatus {
    /// Takes the memory and spill figures of `usage`.
    pub fn set_usage(&mut self, usage: WorkerUsage) {
        self.memory_used = usage.memory_used;
        self.memory_stored = usage.memory_stored;
        self.disk_bytes = usage.disk_bytes;
        self.spilled_bytes = usage.spilled_bytes;
        self.spills = usage.spills;
    }
}

/// A worker's memory and spills, as its heartbeats report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerUsage {
    /// Operator memory plus in-memory task outputs, in bytes.
    pub memory_used: u64,
    /// The in-memory task outputs (part of `memory_used`), in bytes.
    pub memory_stored: u64,
    /// Task outputs spilled to disk and still kept there (their in-memory size).
    pub disk_bytes: u64,
    /// Bytes it ever spilled to disk (task outputs, and operators' sort runs and hash
    /// tables).
    pub spilled_bytes: u64,
    /// Spill files it ever wrote.
    pub spills: u64,
}

impl WorkerUsage {
    /// What a worker with `runtime` and `store` uses and spilled now.
    pub fn of(
        runtime: &datafusion::execution::runtime_env::RuntimeEnv,
        store: &crate::ResultStore,
    ) -> Self {
        Self::from_stats(runtime, &store.stats())
    }

    /// [`Self::of`], or `None` while the store is busy.
    pub fn try_of(
        runtime: &datafusion::execution::runtime_env::RuntimeEnv,
        store: &crate::ResultStore,
    ) -> Option<Self> {
        Some(Self::from_stats(runtime, &store.try_stats()?))
    }

    fn from_stats(
        runtime: &datafusion::execution::runtime_env::RuntimeEnv,
        stats: &crate::store::StoreStats,
    ) -> Self {
        Self {
            memory_used: (runtime.memory_pool.reserved() + stats.memory_bytes) as u64,
            memory_stored: stats.memory_bytes as u64,
            disk_bytes: stats.disk_bytes as u64,
            spilled_bytes: stats.spilled_bytes + stats.operator_spilled_bytes,
            spills: stats.spilled_total as u64 + stats.operator_spills,
        }
    }
}

/// One worker as the scheduler sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerStatus {
    /// Worker id.
    pub id: WorkerId,
    /// Where it serves task outputs (empty inside one process).
    pub address: String,
    /// Task slots.
    pub slots: usize,
    /// Named resources the worker offers.
    pub resources: Resources,
    /// The part of them its running tasks hold.
    pub resources_in_use: Resources,
    /// The worker group it belongs to (a cluster spec's `[groups.NAME]`; empty: none).
    pub group: String,
    /// Memory limit, in bytes.
    pub memory_limit: u64,
    /// Memory in use at the last heartbeat, in bytes.
    pub memory_used: u64,
    /// In-memory task outputs at the last heartbeat (part of `memory_used`), in bytes.
    pub memory_stored: u64,
    /// Task outputs on disk at the last heartbeat (their in-memory size).
    pub disk_bytes: u64,
    /// Bytes it ever spilled to disk (task outputs, and operators' sort runs and hash
    /// tables), as of the last heartbeat.
    pub spilled_bytes: u64,
    /// Spill files it ever wrote, as of the last heartbeat.
    pub spills: u64,
    /// Tasks running now.
    pub tasks_running: usize,
    /// Tasks finished since start.
    pub tasks_completed: u64,
    /// False once the worker is lost.
    pub alive: bool,
    /// Retiring: no new tasks go to it, and it exits once its running ones end.
    pub retiring: bool,
}

/// One job as the scheduler sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobStatus {
    /// Job id.
    pub id: JobId,
    /// Tasks in the job.
    pub tasks_total: usize,
    /// Tasks finished.
    pub tasks_done: usize,
    /// Why the job cannot progress, when no worker can run its tasks.
    pub waiting: Option<String>,
}

/// A snapshot of the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterStatus {
    /// Every worker that ever joined.
    pub workers: Vec<WorkerStatus>,
    /// Jobs not yet ended.
    pub jobs: Vec<JobStatus>,
    /// When a job last was submitted, ran a task or ended (the scheduler's start if none
    /// has): what an idle check reads.
    pub last_activity: Option<SystemTime>,
    /// How late the scheduler's event loop ran its last timer tick (every 200 ms): time
    /// spent handling events that held everything else up.
    pub event_loop_lag: Duration,
}

/// How far a job has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Tasks in the job.
    pub tasks_total: usize,
    /// Tasks finished.
    pub tasks_done: usize,
}

/// Something that happened to a job, with the job's task counts right after it. Every
/// front end that shows progress or history (CLI bars, `shoal run`, the dashboard)
/// reads these and nothing else; the counts make a reader that missed events exact again
/// at the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    /// The job.
    pub job: JobId,
    /// Its task counts after the event.
    pub progress: Progress,
    /// What happened.
    pub kind: JobEventKind,
}

/// The job events of one turn of the scheduler's loop, in the order they happened; the
/// scheduler publishes one batch per turn rather than one message per event.
pub type EventBatch = Arc<Vec<JobEvent>>;

/// Job `job`'s task counts after its last event in `batch`, and whether that event ended
/// the job (nothing after a job's end is its own); `None` when the batch has none of its
/// events.
pub fn job_progress(batch: &[JobEvent], job: JobId) -> Option<(Progress, bool)> {
    let mut latest = None;
    for event in batch.iter().filter(|e| e.job == job) {
        let ended = event.kind.is_final();
        latest = Some((event.progress, ended));
        if ended {
            break;
        }
    }
    latest
}

/// What happened to a job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEventKind {
    /// The scheduler accepted the job.
    Submitted {
        /// Stages in its graph.
        stages: usize,
        /// Its label and stage graph (empty for a job from a client that sent none).
        outline: Arc<JobOutline>,
    },
    /// A stage's inputs are all there and its tasks are ready to run (again, after a lost
    /// output reopened it).
    StageStarted {
        /// The stage.
        stage: StageId,
    },
    /// Every task of a stage has finished.
    StageFinished {
        /// The stage.
        stage: StageId,
    },
    /// A task was sent to a worker.
    TaskStarted {
        /// The task.
        task: TaskId,
        /// The worker running it.
        worker: WorkerId,
        /// Which start of the task this is, from 1.
        attempt: u32,
    },
    /// A task finished and stored its output.
    TaskFinished {
        /// The task.
        task: TaskId,
        /// The worker that ran it.
        worker: WorkerId,
        /// Which start of the task this was.
        attempt: u32,
        /// The worker's slot it ran in.
        slot: usize,
        /// How long it ran on the worker.
        duration: Duration,
        /// Bytes of output it stored.
        output_bytes: u64,
        /// Its operators' metrics (see [`crate::metrics`]).
        metrics: Arc<Vec<crate::metrics::OperatorMetric>>,
    },
    /// The job's results are ready.
    Done,
    /// The job failed; no more events follow for it.
    Failed {
        /// Whose fault it is; [`ErrorKind::retryable`] says whether a retry can help.
        kind: ErrorKind,
        /// The error, one line.
        message: String,
    },
    /// The job was cancelled (by a call, or because its client let go before it finished).
    Cancelled,
    /// Tasks on worker `to` fetched outputs from worker `from` (reported as tasks end).
    Fetch {
        /// The worker that served them.
        from: WorkerId,
        /// The worker that fetched them.
        to: WorkerId,
        /// In-memory size of the batches.
        bytes: u64,
    },
    /// A worker spilled some of the job's task outputs to disk (reported as tasks end).
    Spill {
        /// The worker.
        worker: WorkerId,
        /// In-memory size of the spilled batches.
        bytes: u64,
    },
}

impl JobEventKind {
    /// Whether the job is over after this event.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Done | Self::Failed { .. } | Self::Cancelled)
    }
}

/// What a worker reports about a task that finished.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskReport {
    /// Bytes stored per output bucket.
    pub bucket_bytes: Vec<u64>,
    /// The worker's slot the task ran in, from 0.
    pub slot: usize,
    /// How long it ran.
    pub duration: Duration,
    /// Its operators' metrics.
    pub metrics: Vec<crate::metrics::OperatorMetric>,
}

/// Everything a worker needs to run one task.
#[derive(Debug)]
pub struct Launch {
    /// The job.
    pub job: JobId,
    /// The task.
    pub task: TaskId,
    /// Which start of this task it is (from 1).
    pub attempt: u32,
    /// The stage plan.
    pub plan: StagePlan,
    /// Where each input stage's task outputs are.
    pub locations: Locations,
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
    /// Task `partition` of stage `stage` of the job finished on `worker`: tasks started
    /// before it (pipelined exchanges) may read its output now.
    Located {
        /// The job.
        job: JobId,
        /// The producing task.
        task: TaskId,
        /// The worker holding its output.
        worker: WorkerId,
    },
    /// Stop this run of a task, whether it runs or waits here; its report is ignored.
    CancelTask(JobId, TaskId, u32),
    /// Worker `id` serves its outputs at this address.
    Peer(WorkerId, String),
    /// The worker was retired and runs nothing more: it leaves the cluster and exits.
    Exit,
}

/// How a launched task ended.
#[derive(Debug)]
pub enum TaskOutcome {
    /// Output stored.
    Finished(TaskReport),
    /// The task could not fetch an input from worker `from`.
    FetchFailed {
        /// The worker that should have served the input.
        from: WorkerId,
        /// The error.
        cause: DataFusionError,
    },
    /// The task returned an error or panicked.
    Failed(DataFusionError),
    /// The task was aborted by a cancel.
    Cancelled,
}

impl TaskOutcome {
    /// How the task ended, in a word.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Finished(_) => "finished",
            Self::FetchFailed { .. } => "fetch failed",
            Self::Failed(_) => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Runs;

    #[test]
    fn only_a_task_s_later_runs_of_a_plan_with_tightened_filters_run_afresh() {
        let runs = Runs::default();
        let bounds = || true;
        assert!(!runs.run_again_if(0, bounds));
        assert!(!runs.run_again_if(1, bounds));
        assert!(runs.run_again_if(0, bounds));
        assert!(runs.run_again_if(1, bounds));
        let runs = Runs::default();
        assert!(!runs.run_again_if(0, || false));
        assert!(!runs.run_again_if(0, || false));
        assert!(!runs.run_again_if(0, || true), "looked for once");
    }
}
