//! The scheduler: one task that owns every job's state and reacts to events.
//!
//! A stage's tasks become ready when all of its input stages have finished. Ready tasks
//! go to workers with room, preferring the worker that already holds most of the task's
//! input bytes, then the least loaded one. Jobs take turns (round robin), so a large job
//! does not starve a small one.
//!
//! Workers may join and leave at any time. When one is lost, its running tasks are run
//! again elsewhere and the outputs it held are recomputed from lineage: the stages that
//! produced them are reopened, and so are their inputs if those were already released.
//! A task that fails because it could not fetch an input triggers the same for the
//! worker it fetched from. Each task runs at most [`MAX_ATTEMPTS`] times.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::common::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use shoal_planner::{
    JobId, Locations, Resources, ShoalConfig, StageId, TaskGraph, TaskId, WorkerId,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cluster::Progress;
use crate::worker::{Launch, TaskOutcome, WorkerMsg};

/// How many times one task may be started before its job fails.
pub const MAX_ATTEMPTS: u32 = 4;

/// Failed input fetches one job may see before it fails.
pub const MAX_FETCH_FAILURES: u32 = 64;

/// Tasks shorter than this, launch to report, count as short.
const SHORT_TASK: f64 = 0.002;

/// Tasks in flight per slot for workers running short tasks.
const SHORT_TASK_PREFETCH: usize = 64;

/// Where the result stage's tasks left their output, in partition order.
pub type JobOutputs = Vec<(TaskId, WorkerId)>;

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

/// A stage's plan, in the form the workers that run it need.
#[derive(Debug, Clone)]
pub enum StagePlan {
    /// A physical plan and the session's task context, for workers in this process.
    Local {
        /// The stage plan, rooted at `ShuffleWriteExec`.
        plan: Arc<dyn ExecutionPlan>,
        /// Session configuration and functions.
        ctx: Arc<TaskContext>,
    },
    /// The plan as `datafusion-proto` bytes with the session's settings, for worker
    /// processes (the scheduler process never decodes it).
    Encoded(Arc<EncodedStage>),
    /// Tasks that do nothing (scheduler benchmarks).
    Noop,
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
}

impl JobSpec {
    /// The job for a task graph planned in this process.
    pub fn local(graph: TaskGraph, ctx: Arc<TaskContext>) -> Self {
        let request = graph
            .tasks
            .first()
            .map(|t| t.resources.clone())
            .unwrap_or_default();
        let placement_timeout = ctx
            .session_config()
            .options()
            .extensions
            .get::<ShoalConfig>()
            .map(|c| c.placement_timeout())
            .unwrap_or(Duration::from_secs(60));
        let stages = graph
            .stages
            .into_iter()
            .map(|s| StageSpec {
                inputs: s.inputs,
                tasks: s.tasks,
                plan: StagePlan::Local {
                    plan: s.plan,
                    ctx: Arc::clone(&ctx),
                },
            })
            .collect();
        Self {
            stages,
            request,
            placement_timeout,
        }
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
        /// What to run.
        spec: JobSpec,
        /// Answered once: the result locations, or the first failure.
        done: oneshot::Sender<Result<JobOutputs, DataFusionError>>,
        /// Task counts as the job advances.
        progress: watch::Sender<Progress>,
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
    /// Report the cluster's state.
    Status(oneshot::Sender<ClusterStatus>),
    /// Someone other than the job's client cancels it; the reply says whether it was
    /// still running.
    Cancel(JobId, oneshot::Sender<bool>),
    /// A worker process registered; the reply is its id.
    WorkerJoined {
        /// Where it is and what it offers (`id` is ignored).
        info: WorkerStatus,
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
    /// A worker is alive and uses this much memory.
    Heartbeat {
        /// Which.
        worker: WorkerId,
        /// Operator memory plus in-memory task outputs, in bytes.
        memory_used: u64,
    },
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
    /// Memory limit, in bytes.
    pub memory_limit: u64,
    /// Memory in use at the last heartbeat, in bytes.
    pub memory_used: u64,
    /// Tasks running now.
    pub tasks_running: usize,
    /// Tasks finished since start.
    pub tasks_completed: u64,
    /// False once the worker is lost.
    pub alive: bool,
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
}

struct WorkerSlot {
    tx: mpsc::UnboundedSender<WorkerMsg>,
    status: WorkerStatus,
    /// Offered resources not held by running tasks.
    available: Resources,
    /// What each running task holds, given back when it ends, and when it was sent.
    holding: HashMap<(JobId, TaskId), (Resources, Instant)>,
    last_heard: Instant,
    /// Moving average of launch-to-report time, in seconds.
    mean_task_secs: f64,
}

impl WorkerSlot {
    /// Tasks this worker may have in flight.
    fn capacity(&self, prefetch: usize, short_task_prefetch: usize) -> usize {
        let per_slot = if self.mean_task_secs < SHORT_TASK {
            short_task_prefetch
        } else {
            prefetch
        };
        self.status.slots * per_slot
    }

    /// A task ended; only tasks that `finished` count toward the mean task time.
    fn release(&mut self, job: JobId, task: TaskId, finished: bool) {
        self.status.tasks_running = self.status.tasks_running.saturating_sub(1);
        if let Some((held, sent)) = self.holding.remove(&(job, task)) {
            self.available.give(&held);
            if finished {
                let secs = sent.elapsed().as_secs_f64();
                self.mean_task_secs = 0.8 * self.mean_task_secs + 0.2 * secs;
            }
        }
        if self.holding.is_empty() {
            // Nothing held: the exact offer, free of rounding from fractional amounts.
            self.available = self.status.resources.clone();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskState {
    /// Its stage's inputs are not all there.
    Waiting,
    /// In the job's ready queue.
    Queued,
    Running {
        worker: WorkerId,
        attempt: u32,
    },
    Done {
        worker: WorkerId,
    },
}

struct JobState {
    inputs: Vec<Vec<StageId>>,
    consumers: Vec<Vec<StageId>>,
    /// Each stage's plan while it may still run; dropped once the stage's outputs are
    /// no longer needed, which frees state the plan holds (a broadcast hash table).
    plans: Vec<Option<StagePlan>>,
    done: Option<oneshot::Sender<Result<JobOutputs, DataFusionError>>>,
    progress: watch::Sender<Progress>,
    tasks: Vec<Vec<TaskState>>,
    attempts: Vec<Vec<u32>>,
    /// Unfinished tasks per stage.
    tasks_left: Vec<usize>,
    /// Unfinished input stages per stage.
    inputs_left: Vec<usize>,
    /// Unfinished consumer stages per stage; at zero its outputs are released.
    consumers_left: Vec<usize>,
    stage_done: Vec<bool>,
    /// Outputs dropped on the workers (nobody needed them any more).
    released: Vec<bool>,
    /// Output bytes per stage per worker, for locality.
    bytes_on: Vec<HashMap<WorkerId, u64>>,
    /// Where each stage's inputs are, built once per stage and shared by its tasks;
    /// cleared when an input stage completes (again).
    input_locations: Vec<Option<Locations>>,
    ready: VecDeque<TaskId>,
    request: Resources,
    placement_timeout: Duration,
    /// Since when no worker offers `request`.
    waiting_since: Option<Instant>,
    tasks_total: usize,
    tasks_done: usize,
    /// Stages whose outputs the scheduler must tell workers to drop.
    to_release: Vec<StageId>,
    /// Inputs that could not be fetched, over the job's life.
    fetch_failures: u32,
    failed: bool,
}

impl JobState {
    fn new(
        spec: JobSpec,
        done: oneshot::Sender<Result<JobOutputs, DataFusionError>>,
        progress: watch::Sender<Progress>,
    ) -> Self {
        let n = spec.stages.len();
        let tasks_total = spec.tasks_total();
        let mut consumers = vec![Vec::new(); n];
        for (id, stage) in spec.stages.iter().enumerate() {
            for &input in &stage.inputs {
                consumers[input].push(id);
            }
        }
        let mut job = Self {
            inputs: spec.stages.iter().map(|s| s.inputs.clone()).collect(),
            consumers_left: consumers.iter().map(Vec::len).collect(),
            consumers,
            tasks: spec
                .stages
                .iter()
                .map(|s| vec![TaskState::Waiting; s.tasks])
                .collect(),
            attempts: spec.stages.iter().map(|s| vec![0; s.tasks]).collect(),
            tasks_left: spec.stages.iter().map(|s| s.tasks).collect(),
            inputs_left: spec.stages.iter().map(|s| s.inputs.len()).collect(),
            stage_done: vec![false; n],
            released: vec![false; n],
            bytes_on: vec![HashMap::new(); n],
            input_locations: vec![None; n],
            plans: spec.stages.into_iter().map(|s| Some(s.plan)).collect(),
            done: Some(done),
            progress,
            ready: VecDeque::new(),
            request: spec.request,
            placement_timeout: spec.placement_timeout,
            waiting_since: None,
            tasks_total,
            tasks_done: 0,
            to_release: Vec::new(),
            fetch_failures: 0,
            failed: false,
        };
        for stage in 0..n {
            if job.inputs_left[stage] == 0 {
                job.queue_stage(stage);
            }
        }
        job
    }

    fn result_stage(&self) -> StageId {
        self.tasks.len() - 1
    }

    /// Queues the stage's waiting tasks (its inputs are all there).
    fn queue_stage(&mut self, stage: StageId) {
        for partition in 0..self.tasks[stage].len() {
            if self.tasks[stage][partition] == TaskState::Waiting {
                self.tasks[stage][partition] = TaskState::Queued;
                self.ready.push_back(TaskId { stage, partition });
            }
        }
        if self.tasks_left[stage] == 0 && !self.stage_done[stage] {
            // Empty, or every task finished while an input was being recomputed.
            self.complete(stage);
        }
    }

    /// Every task of `stage` has finished.
    fn complete(&mut self, stage: StageId) {
        self.stage_done[stage] = true;
        for i in 0..self.inputs[stage].len() {
            let input = self.inputs[stage][i];
            self.consumers_left[input] -= 1;
            if self.consumers_left[input] == 0 {
                self.release(input);
            }
        }
        for i in 0..self.consumers[stage].len() {
            let consumer = self.consumers[stage][i];
            self.input_locations[consumer] = None;
            self.inputs_left[consumer] -= 1;
            if self.inputs_left[consumer] == 0 {
                self.queue_stage(consumer);
            }
        }
        if stage == self.result_stage() {
            let outputs = (0..self.tasks[stage].len())
                .map(|partition| {
                    let worker = match self.tasks[stage][partition] {
                        TaskState::Done { worker } => worker,
                        _ => 0,
                    };
                    (TaskId { stage, partition }, worker)
                })
                .collect();
            if let Some(done) = self.done.take() {
                let _ = done.send(Ok(outputs));
            }
        }
    }

    fn release(&mut self, stage: StageId) {
        self.released[stage] = true;
        self.to_release.push(stage);
        if let Some(StagePlan::Local { .. }) = self.plans[stage] {
            // Plans held in this process can be large; encoded ones are kept for lineage.
            self.plans[stage] = None;
        }
    }

    /// `stage` must run again: some of its outputs are lost.
    fn reopen(&mut self, stage: StageId) {
        if !self.stage_done[stage] {
            return;
        }
        self.stage_done[stage] = false;
        for i in 0..self.inputs[stage].len() {
            let input = self.inputs[stage][i];
            self.consumers_left[input] += 1;
            if self.released[input] {
                // Its outputs were dropped everywhere: all of it runs again.
                self.released[input] = false;
                self.reset_stage(input);
            }
        }
        for i in 0..self.consumers[stage].len() {
            let consumer = self.consumers[stage][i];
            self.input_locations[consumer] = None;
            self.inputs_left[consumer] += 1;
            for state in &mut self.tasks[consumer] {
                if *state == TaskState::Queued {
                    // Its entry in `ready` is skipped when popped.
                    *state = TaskState::Waiting;
                }
            }
        }
    }

    /// Every task of `stage` runs again.
    fn reset_stage(&mut self, stage: StageId) {
        for partition in 0..self.tasks[stage].len() {
            if let TaskState::Done { .. } = self.tasks[stage][partition] {
                self.unfinish(TaskId { stage, partition });
            }
        }
        self.bytes_on[stage].clear();
        self.reopen(stage);
    }

    /// A finished task's output is gone.
    fn unfinish(&mut self, task: TaskId) {
        self.tasks[task.stage][task.partition] = TaskState::Waiting;
        self.tasks_left[task.stage] += 1;
        self.tasks_done -= 1;
        self.progress.send_modify(|p| p.tasks_done -= 1);
    }

    /// Outputs held by `worker` are lost; returns tasks that were running there.
    fn lose_outputs(&mut self, worker: WorkerId) {
        for stage in 0..self.tasks.len() {
            let delivered = stage == self.result_stage() && self.done.is_none();
            if self.released[stage] || delivered {
                continue;
            }
            let mut lost = false;
            for partition in 0..self.tasks[stage].len() {
                if self.tasks[stage][partition] == (TaskState::Done { worker }) {
                    self.unfinish(TaskId { stage, partition });
                    lost = true;
                }
            }
            if lost {
                self.bytes_on[stage].remove(&worker);
                self.reopen(stage);
            }
        }
        self.requeue_open_stages();
    }

    fn requeue_open_stages(&mut self) {
        for stage in 0..self.tasks.len() {
            if !self.stage_done[stage] && self.inputs_left[stage] == 0 {
                self.queue_stage(stage);
            }
        }
    }

    fn finished(&mut self, task: TaskId, worker: WorkerId, bytes: &[u64]) {
        self.tasks[task.stage][task.partition] = TaskState::Done { worker };
        *self.bytes_on[task.stage].entry(worker).or_default() += bytes.iter().sum::<u64>();
        self.tasks_left[task.stage] -= 1;
        self.tasks_done += 1;
        self.progress.send_modify(|p| p.tasks_done += 1);
        if self.tasks_left[task.stage] == 0 && self.inputs_left[task.stage] == 0 {
            self.complete(task.stage);
        }
    }

    /// Bytes of `stage`'s inputs held by `worker`.
    fn locality(&self, stage: StageId, worker: WorkerId) -> u64 {
        self.inputs[stage]
            .iter()
            .map(|&s| self.bytes_on[s].get(&worker).copied().unwrap_or(0))
            .sum()
    }

    fn locations(&mut self, stage: StageId) -> Locations {
        if let Some(cached) = &self.input_locations[stage] {
            return Arc::clone(cached);
        }
        let built: Locations = Arc::new(
            self.inputs[stage]
                .iter()
                .map(|&s| {
                    let workers = self.tasks[s]
                        .iter()
                        .map(|t| match t {
                            TaskState::Done { worker } => *worker,
                            _ => 0,
                        })
                        .collect();
                    (s, workers)
                })
                .collect(),
        );
        self.input_locations[stage] = Some(Arc::clone(&built));
        built
    }
}

/// The scheduler's state; [`Scheduler::run`] is its event loop.
pub struct Scheduler {
    workers: Vec<WorkerSlot>,
    jobs: HashMap<JobId, JobState>,
    turn: VecDeque<JobId>,
    /// Tasks in flight per slot: above one, a worker has its next task before it asks.
    prefetch: usize,
    /// Tasks in flight per slot on a worker whose tasks take under [`SHORT_TASK`]: the
    /// round trip, not the work, limits such tasks.
    short_task_prefetch: usize,
    /// Workers silent for longer are lost (workers in this process are never checked).
    heartbeat_timeout: Option<Duration>,
}

impl Scheduler {
    /// A scheduler over workers reachable through `workers` (index = worker id), each
    /// with `slots` task slots and the resources it offers.
    pub fn new(workers: Vec<(mpsc::UnboundedSender<WorkerMsg>, Resources)>, slots: usize) -> Self {
        let mut scheduler = Self::empty(1, None);
        // Workers in this process are a channel send away: no round trip to hide.
        scheduler.short_task_prefetch = 1;
        for (tx, resources) in workers {
            scheduler.join(
                WorkerStatus {
                    slots,
                    resources,
                    ..Default::default()
                },
                tx,
            );
        }
        scheduler
    }

    /// A scheduler that starts with no workers; worker processes join with
    /// [`Event::WorkerJoined`] and must be heard from within `heartbeat_timeout`.
    pub fn empty(prefetch: usize, heartbeat_timeout: Option<Duration>) -> Self {
        Self {
            workers: Vec::new(),
            jobs: HashMap::new(),
            turn: VecDeque::new(),
            prefetch: prefetch.max(1),
            short_task_prefetch: SHORT_TASK_PREFETCH.max(prefetch),
            heartbeat_timeout,
        }
    }

    fn join(&mut self, mut info: WorkerStatus, tx: mpsc::UnboundedSender<WorkerMsg>) -> WorkerId {
        let id = self.workers.len();
        info.id = id;
        info.alive = true;
        info.tasks_running = 0;
        for w in self.workers.iter().filter(|w| w.status.alive) {
            let _ = w.tx.send(WorkerMsg::Peer(id, info.address.clone()));
            let _ = tx.send(WorkerMsg::Peer(w.status.id, w.status.address.clone()));
        }
        let _ = tx.send(WorkerMsg::Peer(id, info.address.clone()));
        self.workers.push(WorkerSlot {
            tx,
            available: info.resources.clone(),
            holding: HashMap::new(),
            status: info,
            last_heard: Instant::now(),
            mean_task_secs: 1.0,
        });
        id
    }

    /// Handles events until every sender is gone; checks waiting jobs on a tick.
    pub async fn run(mut self, mut events: mpsc::UnboundedReceiver<Event>) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { break };
                    self.handle(event);
                    while let Ok(event) = events.try_recv() {
                        self.handle(event);
                    }
                }
                _ = tick.tick() => {
                    self.lose_silent_workers();
                    self.fail_jobs_waiting_too_long();
                }
            }
            self.dispatch();
        }
    }

    fn lose_silent_workers(&mut self) {
        let Some(timeout) = self.heartbeat_timeout else {
            return;
        };
        let silent: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|w| w.status.alive && w.last_heard.elapsed() > timeout)
            .map(|w| w.status.id)
            .collect();
        for worker in silent {
            let cause = format!("no heartbeat for {:.1} s", timeout.as_secs_f64());
            self.lose_worker(worker, &cause);
        }
    }

    /// Why no worker can run tasks asking for `request`.
    fn unplaceable(&self, request: &Resources) -> String {
        let offers: Vec<String> = self
            .workers
            .iter()
            .filter(|w| w.status.alive)
            .map(|w| format!("worker {} offers {}", w.status.id, w.status.resources))
            .collect();
        if offers.is_empty() {
            return "no workers have joined the cluster".to_string();
        }
        format!("no worker offers {request} ({})", offers.join(", "))
    }

    fn feasible_somewhere(&self, request: &Resources) -> bool {
        self.workers
            .iter()
            .any(|w| w.status.alive && w.status.resources.covers(request))
    }

    fn fail_jobs_waiting_too_long(&mut self) {
        // Start the clock for jobs no worker can ever run, even while every slot is busy.
        let mut now_waiting = Vec::new();
        for (id, job) in &self.jobs {
            if !job.ready.is_empty() && !job.failed && !self.feasible_somewhere(&job.request) {
                now_waiting.push(*id);
            }
        }
        for id in now_waiting {
            if let Some(job) = self.jobs.get_mut(&id) {
                job.waiting_since.get_or_insert_with(Instant::now);
            }
        }
        // A job whose tasks some worker can run is only waiting for a free slot.
        let feasible: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, job)| job.waiting_since.is_some() && self.feasible_somewhere(&job.request))
            .map(|(id, _)| *id)
            .collect();
        for id in feasible {
            if let Some(job) = self.jobs.get_mut(&id) {
                job.waiting_since = None;
            }
        }
        let expired: Vec<(JobId, String)> = self
            .jobs
            .iter()
            .filter_map(|(id, job)| {
                let since = job.waiting_since?;
                (since.elapsed() >= job.placement_timeout && !job.failed).then(|| {
                    let why = format!(
                        "{}; gave up after {:.1} s (shoal.task.placement_timeout)",
                        self.unplaceable(&job.request),
                        since.elapsed().as_secs_f64()
                    );
                    (*id, why)
                })
            })
            .collect();
        for (job, why) in expired {
            self.fail(job, DataFusionError::Plan(why));
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Submit {
                job,
                spec,
                done,
                progress,
            } => {
                let total = spec.tasks_total();
                progress.send_modify(|p| p.tasks_total = total);
                if spec.stages.is_empty() {
                    let _ = done.send(Ok(Vec::new()));
                    return;
                }
                let state = JobState::new(spec, done, progress);
                self.jobs.insert(job, state);
                self.turn.push_back(job);
            }
            Event::TaskEnded {
                job,
                task,
                attempt,
                worker,
                outcome,
            } => self.task_ended(job, task, attempt, worker, outcome),
            Event::EndJob(job) => {
                if let Some(state) = self.jobs.remove(&job) {
                    let running = state.done.is_some() || state.failed;
                    for w in self.workers.iter().filter(|w| w.status.alive) {
                        let msg = if running {
                            WorkerMsg::CancelJob(job)
                        } else {
                            WorkerMsg::ReleaseJob(job)
                        };
                        let _ = w.tx.send(msg);
                    }
                    for w in &mut self.workers {
                        let held: Vec<_> = w
                            .holding
                            .keys()
                            .filter(|(j, _)| *j == job)
                            .copied()
                            .collect();
                        for (j, t) in held {
                            w.release(j, t, false);
                        }
                    }
                    self.turn.retain(|j| *j != job);
                }
            }
            Event::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Event::Cancel(job, reply) => {
                let running = self
                    .jobs
                    .get(&job)
                    .is_some_and(|j| !j.failed && j.done.is_some());
                if running {
                    let error = DataFusionError::Execution(format!("job {job} was cancelled"));
                    self.fail(job, error);
                }
                let _ = reply.send(running);
            }
            Event::WorkerJoined { info, tx, reply } => {
                let id = self.join(info, tx);
                tracing::info!("worker {id} joined");
                let _ = reply.send(id);
            }
            Event::WorkerLost { worker, cause } => self.lose_worker(worker, &cause),
            Event::Heartbeat {
                worker,
                memory_used,
            } => {
                if let Some(w) = self.workers.get_mut(worker) {
                    w.last_heard = Instant::now();
                    w.status.memory_used = memory_used;
                }
            }
        }
    }

    fn status(&self) -> ClusterStatus {
        let mut jobs: Vec<JobStatus> = self
            .jobs
            .iter()
            .map(|(id, job)| JobStatus {
                id: *id,
                tasks_total: job.tasks_total,
                tasks_done: job.tasks_done,
                waiting: job.waiting_since.map(|_| self.unplaceable(&job.request)),
            })
            .collect();
        jobs.sort_by_key(|j| j.id);
        ClusterStatus {
            workers: self.workers.iter().map(|w| w.status.clone()).collect(),
            jobs,
        }
    }

    fn task_ended(
        &mut self,
        job: JobId,
        task: TaskId,
        attempt: u32,
        worker: WorkerId,
        outcome: TaskOutcome,
    ) {
        let Some(state) = self.jobs.get_mut(&job) else {
            return;
        };
        let current = state
            .tasks
            .get(task.stage)
            .and_then(|stage| stage.get(task.partition));
        if current != Some(&TaskState::Running { worker, attempt }) {
            // A late report from an attempt that was already given up on.
            return;
        }
        if let Some(slot) = self.workers.get_mut(worker) {
            slot.release(job, task, matches!(outcome, TaskOutcome::Finished(_)));
        }
        if state.failed {
            return;
        }
        match outcome {
            TaskOutcome::Finished(bytes) => {
                self.workers[worker].status.tasks_completed += 1;
                state.finished(task, worker, &bytes);
                self.send_releases(job);
            }
            TaskOutcome::FetchFailed { from, cause } => {
                // The producer's outputs on `from` are unreachable: recompute them, and
                // run this task again once they are back. That is not the task's fault,
                // so it does not use up an attempt; the job's fetch failures are bounded.
                tracing::warn!("{task} of job {job} on worker {worker}: {cause}");
                state.tasks[task.stage][task.partition] = TaskState::Waiting;
                let attempts = &mut state.attempts[task.stage][task.partition];
                *attempts = attempts.saturating_sub(1);
                state.fetch_failures += 1;
                if state.fetch_failures > MAX_FETCH_FAILURES {
                    let failure = TaskFailure {
                        job,
                        task,
                        worker,
                        cause: DataFusionError::Execution(format!(
                            "gave up after {MAX_FETCH_FAILURES} failed fetches in the job: {cause}"
                        )),
                    };
                    self.fail(job, DataFusionError::External(Box::new(failure)));
                    return;
                }
                state.input_locations[task.stage] = None;
                state.lose_outputs(from);
                state.requeue_open_stages();
                self.send_releases(job);
            }
            TaskOutcome::Failed(cause) => {
                let failure = TaskFailure {
                    job,
                    task,
                    worker,
                    cause,
                };
                self.fail(job, DataFusionError::External(Box::new(failure)));
            }
            TaskOutcome::Cancelled => {
                state.tasks[task.stage][task.partition] = TaskState::Waiting;
                state.requeue_open_stages();
                self.send_releases(job);
            }
        }
    }

    fn send_releases(&mut self, job: JobId) {
        let Some(state) = self.jobs.get_mut(&job) else {
            return;
        };
        for stage in std::mem::take(&mut state.to_release) {
            for w in self.workers.iter().filter(|w| w.status.alive) {
                let _ = w.tx.send(WorkerMsg::ReleaseStage(job, stage));
            }
        }
    }

    /// `worker` is gone: its running tasks run elsewhere and its outputs are recomputed.
    fn lose_worker(&mut self, worker: WorkerId, cause: &str) {
        let Some(slot) = self.workers.get_mut(worker) else {
            return;
        };
        if !slot.status.alive {
            return;
        }
        tracing::warn!("worker {worker} ({}) lost: {cause}", slot.status.address);
        slot.status.alive = false;
        slot.status.tasks_running = 0;
        slot.holding.clear();
        // Dropping its command channel closes a worker process's connection, so a worker
        // that was only silent learns that it left the cluster.
        slot.tx = mpsc::unbounded_channel().0;
        let address = slot.status.address.clone();
        let any_alive = self.workers.iter().any(|w| w.status.alive);
        let ids: Vec<JobId> = self.jobs.keys().copied().collect();
        for job in ids {
            let state = self.jobs.get_mut(&job).expect("job exists");
            if state.failed {
                continue;
            }
            if !any_alive {
                let error = DataFusionError::Execution(format!(
                    "job {job} failed: every worker was lost (the last, worker {worker} at \
                     {address}: {cause})"
                ));
                self.fail(job, error);
                continue;
            }
            let mut exhausted = None;
            for stage in 0..state.tasks.len() {
                for partition in 0..state.tasks[stage].len() {
                    if let TaskState::Running { worker: w, .. } = state.tasks[stage][partition]
                        && w == worker
                    {
                        state.tasks[stage][partition] = TaskState::Waiting;
                        if state.attempts[stage][partition] >= MAX_ATTEMPTS {
                            exhausted = Some(TaskId { stage, partition });
                        }
                    }
                }
            }
            if let Some(task) = exhausted {
                let failure = TaskFailure {
                    job,
                    task,
                    worker,
                    cause: attempts_exhausted(DataFusionError::Execution(format!(
                        "worker {worker} at {address} was lost: {cause}"
                    ))),
                };
                self.fail(job, DataFusionError::External(Box::new(failure)));
                continue;
            }
            state.lose_outputs(worker);
            self.send_releases(job);
        }
    }

    /// Fails a job: the client gets `error`, other tasks of the job are stopped.
    fn fail(&mut self, job: JobId, error: DataFusionError) {
        let Some(state) = self.jobs.get_mut(&job) else {
            return;
        };
        if state.failed {
            return;
        }
        state.failed = true;
        state.ready.clear();
        if let Some(done) = state.done.take() {
            let _ = done.send(Err(error));
        }
        for w in self.workers.iter().filter(|w| w.status.alive) {
            let _ = w.tx.send(WorkerMsg::CancelJob(job));
        }
    }

    /// Gives ready tasks to workers with room, jobs taking turns. A task goes to a worker
    /// with a free slot and the resources it asks for free; among those, the one holding
    /// most of its input bytes, then the least loaded.
    fn dispatch(&mut self) {
        let mut idle_rounds = 0;
        while idle_rounds < self.turn.len() {
            let (prefetch, short) = (self.prefetch, self.short_task_prefetch);
            if !self
                .workers
                .iter()
                .any(|w| w.status.alive && w.status.tasks_running < w.capacity(prefetch, short))
            {
                return;
            }
            let Some(job) = self.turn.pop_front() else {
                return;
            };
            self.turn.push_back(job);
            let Some(state) = self.jobs.get_mut(&job) else {
                continue;
            };
            if state.failed {
                state.ready.clear();
            }
            // Skip entries whose task went back to waiting.
            while let Some(task) = state.ready.front()
                && state.tasks[task.stage][task.partition] != TaskState::Queued
            {
                state.ready.pop_front();
            }
            let Some(&task) = state.ready.front() else {
                idle_rounds += 1;
                continue;
            };
            let chosen = self
                .workers
                .iter()
                .filter(|w| {
                    w.status.alive
                        && w.status.tasks_running < w.capacity(prefetch, short)
                        && w.available.covers(&state.request)
                })
                .max_by_key(|w| {
                    // An idle slot first: prefetching onto a busy worker while another
                    // one idles would serialise the stage.
                    let idle = w.status.tasks_running < w.status.slots;
                    let free = w.capacity(prefetch, short) - w.status.tasks_running;
                    (
                        idle,
                        state.locality(task.stage, w.status.id),
                        free,
                        std::cmp::Reverse(w.status.id),
                    )
                })
                .map(|w| w.status.id);
            let Some(worker) = chosen else {
                // Busy feasible workers free up later; with none at all, the job waits
                // until its placement timeout and `status` says why.
                if !self
                    .workers
                    .iter()
                    .any(|w| w.status.alive && w.status.resources.covers(&state.request))
                {
                    state.waiting_since.get_or_insert_with(Instant::now);
                }
                idle_rounds += 1;
                continue;
            };
            idle_rounds = 0;
            state.ready.pop_front();
            state.waiting_since = None;
            let Some(plan) = state.plans[task.stage].clone() else {
                let error = DataFusionError::Execution(format!(
                    "{task} of job {job} must run again but its plan was already dropped"
                ));
                self.fail(job, error);
                continue;
            };
            state.attempts[task.stage][task.partition] += 1;
            let attempt = state.attempts[task.stage][task.partition];
            state.tasks[task.stage][task.partition] = TaskState::Running { worker, attempt };
            let locations = state.locations(task.stage);
            tracing::debug!(job, %task, attempt, worker, ?locations, "launch");
            let launch = Launch {
                job,
                task,
                attempt,
                plan,
                locations,
            };
            let request = state.request.clone();
            let slot = &mut self.workers[worker];
            slot.status.tasks_running += 1;
            slot.available.take(&request);
            slot.holding.insert((job, task), (request, Instant::now()));
            if slot.tx.send(WorkerMsg::Launch(Box::new(launch))).is_err() {
                self.lose_worker(worker, "its connection closed");
            }
        }
    }
}

fn attempts_exhausted(cause: DataFusionError) -> DataFusionError {
    DataFusionError::Execution(format!("gave up after {MAX_ATTEMPTS} attempts: {cause}"))
}
