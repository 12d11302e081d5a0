//! The scheduler: one task that owns every job's state and reacts to events.
//!
//! A stage's tasks become ready when all of its input stages have finished. Ready tasks
//! go to workers with a free slot, preferring the worker that already holds most of the
//! task's input bytes, then the least loaded one. Jobs take turns (round robin), so a
//! large job does not starve a small one.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::common::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use shoal_planner::{JobId, Resources, ShoalConfig, StageId, TaskGraph, TaskId, WorkerId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cluster::Progress;
use crate::worker::{Launch, TaskOutcome, WorkerMsg};

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

/// Events the scheduler reacts to.
#[derive(Debug)]
pub enum Event {
    /// A client submitted a job.
    Submit {
        /// Its id.
        job: JobId,
        /// What to run.
        graph: TaskGraph,
        /// Session configuration and functions for its tasks.
        ctx: Arc<TaskContext>,
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
        /// The worker that ran it.
        worker: WorkerId,
        /// The outcome.
        outcome: TaskOutcome,
    },
    /// The client is done with a job: cancel it if still running, then free its outputs.
    EndJob(JobId),
    /// Report the cluster's state.
    Status(oneshot::Sender<ClusterStatus>),
}

/// One worker as the scheduler sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerStatus {
    /// Worker id.
    pub id: WorkerId,
    /// Task slots.
    pub slots: usize,
    /// Named resources the worker offers.
    pub resources: Resources,
    /// Tasks running now.
    pub tasks_running: usize,
    /// Tasks finished since start.
    pub tasks_completed: u64,
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
    /// Every worker.
    pub workers: Vec<WorkerStatus>,
    /// Jobs not yet ended.
    pub jobs: Vec<JobStatus>,
}

struct WorkerSlot {
    tx: mpsc::UnboundedSender<WorkerMsg>,
    status: WorkerStatus,
    /// Offered resources not held by running tasks.
    available: Resources,
    /// What each running task holds, given back when it ends.
    holding: HashMap<(JobId, TaskId), Resources>,
}

struct JobState {
    /// Stage layout only: plans live in `plans` and the task list is dropped.
    graph: TaskGraph,
    /// Each stage's plan until all of its tasks finish; dropping it then frees state the
    /// plan holds (e.g. a broadcast join's hash table).
    plans: Vec<Option<Arc<dyn ExecutionPlan>>>,
    ctx: Arc<TaskContext>,
    done: Option<oneshot::Sender<Result<JobOutputs, DataFusionError>>>,
    progress: watch::Sender<Progress>,
    /// Unfinished tasks per stage.
    tasks_left: Vec<usize>,
    /// Unfinished input stages per stage.
    inputs_left: Vec<usize>,
    consumers: Vec<Vec<StageId>>,
    locations: Vec<Vec<Option<WorkerId>>>,
    /// Output bytes per stage per worker, for locality.
    bytes_on: Vec<Vec<u64>>,
    ready: VecDeque<TaskId>,
    /// What each task asks for.
    request: Resources,
    /// How long the job may wait for a worker that can run its tasks.
    placement_timeout: Duration,
    /// Since when no worker offers `request`.
    waiting_since: Option<Instant>,
    tasks_total: usize,
    tasks_done: usize,
    /// Stages whose tasks were queued.
    readied: Vec<bool>,
    /// Consumer stages of each stage still to finish; at zero its outputs are released.
    consumers_left: Vec<usize>,
    /// Stages whose outputs nobody needs any more, for the scheduler to release.
    released: Vec<StageId>,
    failed: bool,
}

impl JobState {
    fn new(
        mut graph: TaskGraph,
        ctx: Arc<TaskContext>,
        workers: usize,
        done: oneshot::Sender<Result<JobOutputs, DataFusionError>>,
        progress: watch::Sender<Progress>,
    ) -> Self {
        let n = graph.stages.len();
        let request = graph
            .tasks
            .first()
            .map(|t| t.resources.clone())
            .unwrap_or_default();
        let tasks_total = graph.tasks.len();
        let placement_timeout = ctx
            .session_config()
            .options()
            .extensions
            .get::<ShoalConfig>()
            .map(|c| c.placement_timeout())
            .unwrap_or(Duration::from_secs(60));
        let plans = graph
            .stages
            .iter_mut()
            .map(|s| {
                let placeholder: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(s.plan.schema()));
                Some(std::mem::replace(&mut s.plan, placeholder))
            })
            .collect();
        graph.tasks = Vec::new();
        let mut consumers = vec![Vec::new(); n];
        for stage in &graph.stages {
            for &input in &stage.inputs {
                consumers[input].push(stage.id);
            }
        }
        let consumers_left = consumers.iter().map(Vec::len).collect();
        let mut job = Self {
            request,
            placement_timeout,
            waiting_since: None,
            tasks_total,
            tasks_done: 0,
            readied: vec![false; n],
            consumers_left,
            released: Vec::new(),
            tasks_left: graph.stages.iter().map(|s| s.tasks).collect(),
            inputs_left: graph.stages.iter().map(|s| s.inputs.len()).collect(),
            locations: graph.stages.iter().map(|s| vec![None; s.tasks]).collect(),
            bytes_on: vec![vec![0; workers]; n],
            consumers,
            ready: VecDeque::new(),
            graph,
            plans,
            ctx,
            done: Some(done),
            progress,
            failed: false,
        };
        for stage in 0..n {
            if job.inputs_left[stage] == 0 {
                job.make_ready(stage);
            }
        }
        job
    }

    fn make_ready(&mut self, stage: StageId) {
        if std::mem::replace(&mut self.readied[stage], true) {
            return;
        }
        let tasks = self.graph.stages[stage].tasks;
        self.ready
            .extend((0..tasks).map(|partition| TaskId { stage, partition }));
        if tasks == 0 {
            self.stage_done(stage);
        }
    }

    fn stage_done(&mut self, stage: StageId) {
        self.plans[stage] = None;
        for &input in &self.graph.stages[stage].inputs {
            self.consumers_left[input] -= 1;
            if self.consumers_left[input] == 0 {
                self.released.push(input);
            }
        }
        for consumer in self.consumers[stage].clone() {
            self.inputs_left[consumer] -= 1;
            if self.inputs_left[consumer] == 0 {
                self.make_ready(consumer);
            }
        }
        if stage + 1 == self.graph.stages.len() {
            let outputs = self
                .graph
                .outputs
                .iter()
                .map(|t| (*t, self.locations[t.stage][t.partition].unwrap_or_default()))
                .collect();
            if let Some(done) = self.done.take() {
                let _ = done.send(Ok(outputs));
            }
        }
    }

    fn finished(&mut self, task: TaskId, worker: WorkerId, bytes: &[u64]) {
        self.locations[task.stage][task.partition] = Some(worker);
        self.bytes_on[task.stage][worker] += bytes.iter().sum::<u64>();
        self.tasks_left[task.stage] -= 1;
        self.tasks_done += 1;
        self.progress.send_modify(|p| p.tasks_done += 1);
        if self.tasks_left[task.stage] == 0 {
            self.stage_done(task.stage);
        }
    }

    /// Bytes of `stage`'s inputs held by `worker`.
    fn locality(&self, stage: StageId, worker: WorkerId) -> u64 {
        self.graph.stages[stage]
            .inputs
            .iter()
            .map(|&s| self.bytes_on[s][worker])
            .sum()
    }
}

/// The scheduler's state; [`Scheduler::run`] is its event loop.
pub struct Scheduler {
    workers: Vec<WorkerSlot>,
    jobs: HashMap<JobId, JobState>,
    turn: VecDeque<JobId>,
}

impl Scheduler {
    /// A scheduler over workers reachable through `workers` (index = worker id), each
    /// with `slots` task slots and the resources it offers.
    pub fn new(workers: Vec<(mpsc::UnboundedSender<WorkerMsg>, Resources)>, slots: usize) -> Self {
        let workers = workers
            .into_iter()
            .enumerate()
            .map(|(id, (tx, resources))| WorkerSlot {
                tx,
                available: resources.clone(),
                holding: HashMap::new(),
                status: WorkerStatus {
                    id,
                    slots,
                    resources,
                    ..Default::default()
                },
            })
            .collect();
        Self {
            workers,
            jobs: HashMap::new(),
            turn: VecDeque::new(),
        }
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
                _ = tick.tick() => self.fail_jobs_waiting_too_long(),
            }
            self.dispatch();
        }
    }

    /// Why no worker can run tasks asking for `request`.
    fn unplaceable(&self, request: &Resources) -> String {
        let offers: Vec<String> = self
            .workers
            .iter()
            .map(|w| format!("worker {} offers {}", w.status.id, w.status.resources))
            .collect();
        format!("no worker offers {request} ({})", offers.join(", "))
    }

    fn fail_jobs_waiting_too_long(&mut self) {
        // Start the clock for jobs no worker can ever run, even while every slot is busy.
        for job in self.jobs.values_mut() {
            if !job.ready.is_empty()
                && !job.failed
                && !self
                    .workers
                    .iter()
                    .any(|w| w.status.resources.covers(&job.request))
            {
                job.waiting_since.get_or_insert_with(Instant::now);
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
                graph,
                ctx,
                done,
                progress,
            } => {
                let total = graph.tasks.len();
                progress.send_modify(|p| p.tasks_total = total);
                let state = JobState::new(graph, ctx, self.workers.len(), done, progress);
                self.jobs.insert(job, state);
                self.turn.push_back(job);
            }
            Event::TaskEnded {
                job,
                task,
                worker,
                outcome,
            } => {
                let slot = &mut self.workers[worker];
                slot.status.tasks_running = slot.status.tasks_running.saturating_sub(1);
                if let Some(held) = slot.holding.remove(&(job, task)) {
                    slot.available.give(&held);
                }
                if slot.holding.is_empty() {
                    // Nothing held: the exact offer, free of rounding from fractional amounts.
                    slot.available = slot.status.resources.clone();
                }
                let Some(state) = self.jobs.get_mut(&job) else {
                    return;
                };
                match outcome {
                    TaskOutcome::Finished(_) if state.failed => {}
                    TaskOutcome::Finished(bytes) => {
                        self.workers[worker].status.tasks_completed += 1;
                        state.finished(task, worker, &bytes);
                        for stage in std::mem::take(&mut state.released) {
                            for w in &self.workers {
                                let _ = w.tx.send(WorkerMsg::ReleaseStage(job, stage));
                            }
                        }
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
                    TaskOutcome::Cancelled => {}
                }
            }
            Event::EndJob(job) => {
                if let Some(state) = self.jobs.remove(&job) {
                    let running = state.done.is_some() || state.failed;
                    for w in &self.workers {
                        let msg = if running {
                            WorkerMsg::CancelJob(job)
                        } else {
                            WorkerMsg::ReleaseJob(job)
                        };
                        let _ = w.tx.send(msg);
                    }
                    self.turn.retain(|j| *j != job);
                }
            }
            Event::Status(reply) => {
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
                let _ = reply.send(ClusterStatus {
                    workers: self.workers.iter().map(|w| w.status.clone()).collect(),
                    jobs,
                });
            }
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
        for w in &self.workers {
            let _ = w.tx.send(WorkerMsg::CancelJob(job));
        }
    }

    /// Gives ready tasks to free slots, jobs taking turns. A task goes to a worker with a
    /// free slot and the resources it asks for free; among those, the one holding most of
    /// its input bytes, then the least loaded.
    fn dispatch(&mut self) {
        let mut idle_rounds = 0;
        while idle_rounds < self.turn.len() {
            if !self
                .workers
                .iter()
                .any(|w| w.status.tasks_running < w.status.slots)
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
            let Some(&task) = state.ready.front() else {
                idle_rounds += 1;
                continue;
            };
            let chosen = self
                .workers
                .iter()
                .filter(|w| {
                    w.status.tasks_running < w.status.slots && w.available.covers(&state.request)
                })
                .max_by_key(|w| {
                    let free = w.status.slots - w.status.tasks_running;
                    (
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
                    .any(|w| w.status.resources.covers(&state.request))
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
                continue;
            };
            let locations = state.graph.stages[task.stage]
                .inputs
                .iter()
                .map(|&s| {
                    (
                        s,
                        state.locations[s]
                            .iter()
                            .map(|w| w.unwrap_or_default())
                            .collect(),
                    )
                })
                .collect();
            let launch = Launch {
                job,
                task,
                plan,
                ctx: Arc::clone(&state.ctx),
                locations,
            };
            let request = state.request.clone();
            let slot = &mut self.workers[worker];
            slot.status.tasks_running += 1;
            slot.available.take(&request);
            slot.holding.insert((job, task), request);
            if slot.tx.send(WorkerMsg::Launch(Box::new(launch))).is_err() {
                slot.status.tasks_running -= 1;
                if let Some(held) = slot.holding.remove(&(job, task)) {
                    slot.available.give(&held);
                }
                let error = DataFusionError::Execution(format!("worker {worker} has stopped"));
                self.fail(job, error);
            }
        }
    }
}
