//! The scheduler: one task that owns every job's state and reacts to events.
//!
//! A stage's tasks become ready when all of its input stages have finished. Ready tasks
//! go to workers with room, preferring an idle one, then the worker that already holds
//! most of the task's input bytes, then the least loaded one; an index of the workers
//! with room keeps that choice from looking at every worker. Jobs take turns (round
//! robin), so a large job does not starve a small one.
//!
//! Workers may join and leave at any time. When one is lost, its running tasks are run
//! again elsewhere and the outputs it held are recomputed from lineage: the stages that
//! produced them are reopened, and so are their inputs if those were already released.
//! A task that fails because it could not fetch an input makes the worker it fetched
//! from a suspect, for every job at once: nothing more is placed on it, the outputs it
//! held are recomputed elsewhere, and tasks that read them wait for the recompute. The
//! scheduler then confirms the loss (a probe of the suspect's data port; silence past the
//! heartbeat timeout) or clears the suspicion once the worker is heard from again. A job
//! may see [`MAX_FETCH_FAILURES`] such losses; reports about a peer already known to be
//! suspect or lost do not count. Each task runs at most [`MAX_ATTEMPTS`] times, and fails
//! to fetch its inputs at most [`MAX_TASK_FETCH_RETRIES`] times.

mod failure;
mod job;
mod placement;
mod room;
pub mod simulate;
mod status;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use datafusion::common::DataFusionError;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use shoal_planner::{ErrorKind, JobId, Resources, TaskId, WorkerId, kind_of, shoal_err};
use tokio::sync::{broadcast, mpsc};

use crate::protocol::{
    Event, EventBatch, JobEvent, JobEventKind, Progress, TaskFailure, TaskOutcome, WorkerMsg,
    WorkerStatus, WorkerUsage,
};
use job::{JobState, TaskState};
use placement::{Suspicion, WorkerSlot};
use room::Room;

/// How many times one task may be started before its job fails.
pub const MAX_ATTEMPTS: u32 = 4;

/// Workers one task may be running on when they are lost before its job fails: a task
/// that crashes every worker that runs it (a poison task) takes at most this many down
/// with it, and the cluster's other workers go on with other jobs.
pub const MAX_WORKER_CRASHES: u32 = 2;

/// Distinct peer losses revealed by failed fetches that one job may see before it fails.
pub const MAX_FETCH_FAILURES: u32 = 64;

/// Runs of one task that may fail to fetch an input before its job fails: recomputing the
/// inputs gives a task new places to read from each time, so a task that keeps failing
/// is stuck, and must not spin forever.
pub const MAX_TASK_FETCH_RETRIES: u32 = 64;

/// Tasks shorter than this, launch to report, count as short.
const SHORT_TASK: f64 = 0.002;

/// Tasks in flight per slot for workers running short tasks, at most.
const SHORT_TASK_PREFETCH: usize = 64;

/// Tasks in flight on the whole cluster that short-task prefetching aims at: with more
/// slots than this divided by [`SHORT_TASK_PREFETCH`], each slot gets fewer (never fewer
/// than the ordinary prefetch). A scheduler places a bounded number of tasks per second,
/// so the tasks that keep every worker busy across a round trip are bounded too (their
/// rate times the round trip); tasks queued beyond that only wait, and the scheduler's
/// state for them outgrows the CPU's caches.
const PREFETCH_BUDGET: usize = 1024;

/// Batches of job events kept for readers that fall behind; a reader that falls further
/// misses some, and the task counts every event carries make it exact again at the next.
const EVENT_BACKLOG: usize = 1024;

/// How often the loop checks its timers: silent workers, jobs waiting for a place.
const TICK: Duration = Duration::from_millis(200);

/// Job events produced during one turn of the scheduler's loop. [`Scheduler::publish`]
/// sends them as one batch at the end of the turn, so readers wake once per turn rather
/// than once per event.
#[derive(Clone, Default)]
pub(super) struct Outbox(Arc<Mutex<Vec<JobEvent>>>);

impl Outbox {
    pub(super) fn push(&self, event: JobEvent) {
        self.0.lock().push(event);
    }

    fn take(&self) -> Vec<JobEvent> {
        std::mem::take(&mut *self.0.lock())
    }
}

/// The scheduler's state; [`Scheduler::run`] is its event loop.
pub struct Scheduler {
    workers: Vec<WorkerSlot>,
    /// The workers with room, for placement.
    room: Room,
    jobs: FxHashMap<JobId, JobState>,
    turn: VecDeque<JobId>,
    /// Tasks in flight per slot: above one, a worker has its next task before it asks.
    prefetch: usize,
    /// Tasks in flight per slot on a worker whose tasks take under [`SHORT_TASK`]: the
    /// round trip, not the work, limits such tasks. At most `short_task_limit`, fewer
    /// on a cluster of many slots (see [`PREFETCH_BUDGET`]).
    short_task_prefetch: usize,
    short_task_limit: usize,
    /// Slots of the workers alive.
    alive_slots: usize,
    /// Workers silent for longer are lost (workers in this process are never checked).
    heartbeat_timeout: Option<Duration>,
    /// Where suspect workers are sent to have their data port probed; without it (workers
    /// in this process) a failed fetch loses the outputs but no worker is suspected.
    probe: Option<mpsc::UnboundedSender<(WorkerId, String)>>,
    /// The job being handled or dispatched, which a panic fails.
    current: Option<JobId>,
    /// Every job's events, for whoever subscribes.
    events: broadcast::Sender<EventBatch>,
    /// Events of this turn, not yet published.
    outbox: Outbox,
    /// When a job last was submitted, ended or ran a task.
    last_activity: SystemTime,
    /// Panics caught while handling events.
    panics: u64,
    /// Workers retiring that have not been told to exit yet.
    retiring: Vec<WorkerId>,
    /// How late the loop ran its last timer tick.
    loop_lag: Duration,
    /// When workers' silence was last checked (see [`Self::lose_silent_workers`]).
    last_check: Instant,
    /// Time spent handling events since then: a busy loop is not a stalled one.
    busy: Duration,
}

impl Scheduler {
    /// A scheduler over workers reachable through `workers` (index = worker id), each
    /// with `slots` task slots and the resources it offers.
    pub fn new(workers: Vec<(mpsc::UnboundedSender<WorkerMsg>, Resources)>, slots: usize) -> Self {
        let mut scheduler = Self::empty(1, None);
        // Workers in this process are a channel send away: no round trip to hide.
        scheduler.short_task_limit = 1;
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
            room: Room::default(),
            jobs: FxHashMap::default(),
            turn: VecDeque::new(),
            prefetch: prefetch.max(1),
            short_task_prefetch: SHORT_TASK_PREFETCH.max(prefetch),
            short_task_limit: SHORT_TASK_PREFETCH.max(prefetch),
            alive_slots: 0,
            heartbeat_timeout,
            probe: None,
            current: None,
            events: broadcast::channel(EVENT_BACKLOG).0,
            outbox: Outbox::default(),
            last_activity: SystemTime::now(),
            panics: 0,
            retiring: Vec::new(),
            loop_lag: Duration::ZERO,
            last_check: Instant::now(),
            busy: Duration::ZERO,
        }
    }

    /// A sender of every job's events, from which readers subscribe; take it before
    /// [`Scheduler::run`] consumes the scheduler.
    pub fn events(&self) -> broadcast::Sender<EventBatch> {
        self.events.clone()
    }

    /// Sends the events of this turn to every reader, in the order they happened.
    pub(super) fn publish(&self) {
        let batch = self.outbox.take();
        if !batch.is_empty() {
            // No reader is not an error: nobody is watching.
            let _ = self.events.send(Arc::new(batch));
        }
    }

    /// Records an event of a job the scheduler keeps no state for.
    fn emit(&self, job: JobId, kind: JobEventKind) {
        self.outbox.push(JobEvent {
            job,
            progress: Progress::default(),
            kind,
        });
    }

    /// Suspect workers' addresses go to `probe`, whose owner answers with
    /// [`Event::Reachable`] or [`Event::WorkerLost`].
    pub fn with_probe(mut self, probe: mpsc::UnboundedSender<(WorkerId, String)>) -> Self {
        self.probe = Some(probe);
        self
    }

    fn join(&mut self, mut info: WorkerStatus, tx: mpsc::UnboundedSender<WorkerMsg>) -> WorkerId {
        let id = self.workers.len();
        info.id = id;
        info.alive = true;
        info.tasks_running = 0;
        info.retiring = false;
        // Workers without a data port (simulated ones) have no address to tell.
        if !info.address.is_empty() {
            for w in self.workers.iter().filter(|w| w.status.alive) {
                let _ = w.tx.send(WorkerMsg::Peer(id, info.address.clone()));
                let _ = tx.send(WorkerMsg::Peer(w.status.id, w.status.address.clone()));
            }
            let _ = tx.send(WorkerMsg::Peer(id, info.address.clone()));
        }
        self.room.count_offer(&info.resources, 1);
        let slots = info.slots;
        self.workers.push(WorkerSlot {
            tx,
            available: info.resources.clone(),
            holding: FxHashMap::default(),
            status: info,
            last_heard: Instant::now(),
            mean_task_secs: 1.0,
            suspect: None,
        });
        self.reindex(id);
        self.count_slots(slots, true);
        id
    }

    /// Counts the `slots` of a worker that `joined` (or was lost), and refits the
    /// short-task prefetch to the slots alive (see [`PREFETCH_BUDGET`]); when it changes,
    /// so does every worker's room, which happens a few dozen times at most as a cluster
    /// grows.
    pub(super) fn count_slots(&mut self, slots: usize, joined: bool) {
        self.alive_slots = match joined {
            true => self.alive_slots + slots,
            false => self.alive_slots.saturating_sub(slots),
        };
        let fitted = (PREFETCH_BUDGET / self.alive_slots.max(1)).clamp(
            self.prefetch.min(self.short_task_limit),
            self.short_task_limit,
        );
        if fitted != self.short_task_prefetch {
            self.short_task_prefetch = fitted;
            for worker in 0..self.workers.len() {
                self.reindex(worker);
            }
        }
    }

    /// Handles events until every sender is gone; checks waiting jobs on a tick.
    pub async fn run(mut self, mut events: mpsc::UnboundedReceiver<Event>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { break };
                    let started = Instant::now();
                    self.step(event);
                    while let Ok(event) = events.try_recv() {
                        self.step(event);
                    }
                    self.guarded(None, Self::dispatch);
                    self.publish();
                    self.busy += started.elapsed();
                }
                due = tick.tick() => {
                    self.loop_lag = due.elapsed();
                    // What came in while this process could not run is heard before
                    // silence is judged (no more than was queued, so the check runs).
                    for _ in 0..events.len() {
                        let Ok(event) = events.try_recv() else { break };
                        self.step(event);
                    }
                    self.tick();
                }
            }
        }
    }

    /// One turn of [`Self::run`]'s loop for `event`: handle it, dispatch, publish.
    pub(crate) fn turn(&mut self, event: Event) {
        let started = Instant::now();
        self.step(event);
        self.guarded(None, Self::dispatch);
        self.publish();
        self.busy += started.elapsed();
    }

    /// What [`Self::run`] does on its timer: loses silent workers and fails jobs that
    /// waited too long for a place.
    pub(crate) fn tick(&mut self) {
        self.check_timers();
        self.guarded(None, Self::dispatch);
        self.publish();
    }

    fn check_timers(&mut self) {
        self.guarded(None, |s| {
            s.lose_silent_workers();
            s.fail_jobs_waiting_too_long();
        });
    }

    /// Panics caught while handling events (bugs, each failing the job it concerned).
    pub(crate) fn panics(&self) -> u64 {
        self.panics
    }

    /// Handles one event; a bug that panics while handling it fails the job it concerns,
    /// not the scheduler.
    pub(super) fn step(&mut self, event: Event) {
        let job = event.job();
        self.guarded(job, |s| s.handle(event));
        if !self.retiring.is_empty() {
            self.exit_retired();
        }
    }

    /// Retires `worker` (see [`crate::Cluster::retire`]): nothing more is placed on it.
    /// False when it is not alive or already retiring.
    fn retire(&mut self, worker: WorkerId) -> bool {
        let Some(w) = self.workers.get_mut(worker) else {
            return false;
        };
        if !w.status.alive || w.status.retiring {
            return false;
        }
        tracing::info!("worker {worker} retires");
        w.status.retiring = true;
        self.retiring.push(worker);
        self.reindex(worker);
        true
    }

    /// Tells retiring workers whose tasks have all ended to exit. What they hold that is
    /// still needed is computed again when their loss is seen, as for any lost worker.
    fn exit_retired(&mut self) {
        let workers = &self.workers;
        self.retiring.retain(|&id| {
            let w = &workers[id];
            if !w.status.alive {
                return false;
            }
            if !w.holding.is_empty() {
                return true;
            }
            tracing::info!("worker {id} retired: its tasks have ended");
            let _ = w.tx.send(WorkerMsg::Exit);
            false
        });
    }

    /// Runs `f`; if it panics, the job it was working on (`job`, or the one being
    /// dispatched) fails with an internal error and the loop goes on.
    fn guarded(&mut self, job: Option<JobId>, f: impl FnOnce(&mut Self)) {
        self.current = job;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        let current = self.current.take();
        if let Err(payload) = result {
            self.panics += 1;
            let text = crate::panic_message(payload);
            tracing::error!("the scheduler panicked: {text}");
            if let Some(job) = current {
                let error = shoal_err(
                    ErrorKind::Internal,
                    format!("the scheduler hit a bug while running job {job}: {text}"),
                );
                self.fail(job, error);
            }
        }
    }

    pub(super) fn handle(&mut self, event: Event) {
        // Any message from a worker shows it is alive, not only its heartbeats.
        if let Event::TaskEnded { worker, .. }
        | Event::Spilled { worker, .. }
        | Event::Fetched { to: worker, .. } = &event
            && let Some(w) = self.workers.get_mut(*worker)
        {
            w.last_heard = Instant::now();
        }
        if matches!(
            event,
            Event::Submit { .. } | Event::TaskEnded { .. } | Event::EndJob(_)
        ) {
            self.last_activity = SystemTime::now();
        }
        match event {
            Event::Submit {
                job,
                spec,
                done,
                relocated,
            } => {
                if spec.stages.is_empty() {
                    self.emit(
                        job,
                        JobEventKind::Submitted {
                            stages: 0,
                            outline: spec.outline,
                        },
                    );
                    self.emit(job, JobEventKind::Done);
                    let _ = done.send(Ok(Vec::new()));
                    return;
                }
                if let Err(e) = spec.check() {
                    let (kind, message) = (kind_of(&e), e.to_string());
                    self.emit(job, JobEventKind::Failed { kind, message });
                    let _ = done.send(Err(e));
                    return;
                }
                let mut state = JobState::new(job, *spec, done, relocated, self.outbox.clone());
                state.pool = self.room.register(&state.request);
                if let Some(old) = self.jobs.insert(job, state) {
                    // A client reusing a job id replaces that job.
                    self.room.unregister(old.pool);
                }
                self.turn.push_back(job);
            }
            Event::TaskEnded {
                job,
                task,
                attempt,
                worker,
                outcome,
            } => self.task_ended(job, task, attempt, worker, outcome),
            Event::EndJob(job) => self.end_job(job),
            Event::ResultLost {
                job,
                partition,
                worker,
                cause,
                read,
            } => self.result_lost(job, partition, worker, &cause, &read),
            Event::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Event::Cancel(job, reply) => {
                let running = self
                    .jobs
                    .get(&job)
                    .is_some_and(|j| !j.failed && j.done.is_some());
                if running {
                    self.cancel(job);
                }
                let _ = reply.send(running);
            }
            Event::Retire(worker, reply) => {
                let _ = reply.send(self.retire(worker));
            }
            Event::WorkerJoined { info, tx, reply } => {
                let id = self.join(*info, tx);
                tracing::info!("worker {id} joined");
                let _ = reply.send(id);
            }
            Event::WorkerLost { worker, cause } => self.lose_worker(worker, &cause),
            Event::Heartbeat { worker, usage } => self.heard_from(worker, usage),
            Event::Fetched {
                job,
                from,
                to,
                bytes,
            } => {
                if let Some(state) = self.jobs.get(&job) {
                    state.emit(JobEventKind::Fetch { from, to, bytes });
                }
            }
            Event::Spilled {
                job, worker, bytes, ..
            } => {
                // The worker's totals come from its heartbeats (in-process workers' from
                // their stores): adding here too would count a spill twice until the
                // next heartbeat, and totals exported as counters must not go down.
                if let Some(state) = self.jobs.get(&job) {
                    state.emit(JobEventKind::Spill { worker, bytes });
                }
            }
            Event::Reachable(worker) => {
                if let Some(w) = self.workers.get_mut(worker)
                    && w.suspect.is_some()
                {
                    w.suspect = Some(Suspicion::Reachable);
                }
            }
        }
    }

    /// The client is done with `job`: cancel it if it still runs, then drop its outputs.
    fn end_job(&mut self, job: JobId) {
        if let Some(state) = self.jobs.remove(&job) {
            if state.done.is_some() && !state.failed {
                // The client let go before the results were ready.
                state.emit(JobEventKind::Cancelled);
            }
            let running = state.done.is_some() || state.failed;
            for w in self.workers.iter().filter(|w| w.status.alive) {
                let msg = if running {
                    WorkerMsg::CancelJob(job)
                } else {
                    WorkerMsg::ReleaseJob(job)
                };
                let _ = w.tx.send(msg);
            }
            for id in 0..self.workers.len() {
                let held: Vec<_> = self.workers[id]
                    .holding
                    .keys()
                    .filter(|(j, _)| *j == job)
                    .copied()
                    .collect();
                for (j, t) in held {
                    self.release_task(id, j, t, false);
                }
            }
            self.room.unregister(state.pool);
            self.turn.retain(|j| *j != job);
        }
    }

    /// A heartbeat from `worker`: it is alive, and uses and spilled this much.
    fn heard_from(&mut self, worker: WorkerId, usage: WorkerUsage) {
        if let Some(w) = self.workers.get_mut(worker) {
            w.last_heard = Instant::now();
            w.status.set_usage(usage);
            if w.suspect == Some(Suspicion::Reachable) {
                tracing::info!("worker {worker} is reachable again");
                w.suspect = None;
                self.reindex(worker);
            }
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
        tracing::debug!(job, %task, attempt, worker, outcome = outcome.kind(), "task ended");
        if current != Some(&TaskState::Running { worker, attempt }) {
            // A late report from an attempt that was already given up on.
            return;
        }
        self.release_task(
            worker,
            job,
            task,
            matches!(outcome, TaskOutcome::Finished(_)),
        );
        let Some(state) = self.jobs.get_mut(&job) else {
            return;
        };
        if state.failed {
            return;
        }
        match outcome {
            TaskOutcome::Finished(report) => {
                self.workers[worker].status.tasks_completed += 1;
                state.finished(task, worker, attempt, &report);
                for to in state.announce(task, worker) {
                    let _ = self.workers[to]
                        .tx
                        .send(WorkerMsg::Located { job, task, worker });
                }
                self.send_releases(job);
            }
            TaskOutcome::FetchFailed { from, cause } => {
                // The producer's outputs on `from` are unreachable: recompute them, and
                // run this task again once they are back. That is not the task's fault,
                // so it does not use up an attempt. Only a report that reveals a new loss
                // counts toward the job's bound: tasks that were already running against
                // a peer now known to be suspect or lost fail the same way.
                tracing::warn!("{task} of job {job} on worker {worker}: {cause}");
                let retries = &mut state.fetch_retries[task.stage][task.partition];
                *retries += 1;
                if *retries > MAX_TASK_FETCH_RETRIES {
                    let why = format!(
                        "it failed to fetch its inputs {MAX_TASK_FETCH_RETRIES} times, the last: \
                         {cause}"
                    );
                    self.fail_task(job, task, worker, shoal_err(ErrorKind::FetchFailed, why));
                    return;
                }
                state.wait_again(task);
                let attempts = &mut state.attempts[task.stage][task.partition];
                *attempts = attempts.saturating_sub(1);
                state.forget_inputs(task.stage);
                let new_loss = self.workers.get(from).is_some_and(WorkerSlot::usable);
                if new_loss {
                    state.fetch_failures += 1;
                    if state.fetch_failures > MAX_FETCH_FAILURES {
                        let why = format!(
                            "gave up after {MAX_FETCH_FAILURES} peers were lost during the job: \
                             {cause}"
                        );
                        self.fail_task(job, task, worker, shoal_err(ErrorKind::FetchFailed, why));
                        return;
                    }
                    self.suspect(from, &cause);
                } else if state.holds_outputs_on(from) {
                    // Outputs the suspect reported after it fell under suspicion are just
                    // as unreachable.
                    state.lose_outputs(from);
                    self.send_releases(job);
                } else {
                    // A loss already handled: only this task waits again. (Rescanning
                    // the job for each such report would cost its whole size per task.)
                    state.requeue(task);
                }
            }
            TaskOutcome::Failed(cause) => self.fail_task(job, task, worker, cause),
            TaskOutcome::Cancelled => {
                state.wait_again(task);
                state.requeue_open_stages();
                self.send_releases(job);
            }
        }
    }

    /// The client of `job` could not read result partition `partition` from `worker`:
    /// like a task's failed fetch, the worker becomes suspect and what it held is
    /// recomputed; the client hears where from the job's relocations.
    fn result_lost(
        &mut self,
        job: JobId,
        partition: usize,
        worker: WorkerId,
        cause: &str,
        read: &[usize],
    ) {
        let Some(state) = self.jobs.get_mut(&job) else {
            return;
        };
        if state.failed || !state.delivered() {
            return;
        }
        for &p in read {
            if let Some(flag) = state.read.get_mut(p) {
                *flag = true;
            }
        }
        let result = state.result_stage();
        let Some(&now) = state.tasks[result].get(partition) else {
            return;
        };
        tracing::warn!("the client of job {job} lost result partition {partition}: {cause}");
        match now {
            TaskState::Done { worker: w } if w != worker => {
                // Already recomputed elsewhere: the client missed the news.
                if state.stage_done[result] {
                    state.send_relocations(state.result_outputs());
                }
                return;
            }
            TaskState::Done { .. } => {}
            // Being recomputed: its new place follows.
            _ => return,
        }
        let cause = shoal_err(
            ErrorKind::FetchFailed,
            format!("the client could not read a result from worker {worker}: {cause}"),
        );
        if self.workers.get(worker).is_some_and(WorkerSlot::usable) {
            state.fetch_failures += 1;
            if state.fetch_failures > MAX_FETCH_FAILURES {
                let error = shoal_err(
                    ErrorKind::FetchFailed,
                    format!(
                        "gave up after {MAX_FETCH_FAILURES} peers were lost during the job: {cause}"
                    ),
                );
                self.fail(job, error);
                return;
            }
            self.suspect(worker, &cause);
        } else {
            state.lose_outputs(worker);
            self.send_releases(job);
        }
    }

    /// Fails `job` because `task` failed on `worker` with `cause`; the error names all
    /// three.
    pub(super) fn fail_task(
        &mut self,
        job: JobId,
        task: TaskId,
        worker: WorkerId,
        cause: DataFusionError,
    ) {
        let failure = TaskFailure {
            job,
            task,
            worker,
            cause,
        };
        self.fail(job, DataFusionError::External(Box::new(failure)));
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
}
