//! One job's lineage state: which tasks are waiting, queued, running or done, which
//! stages are complete, and what must run again when outputs are lost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::common::DataFusionError;
use rustc_hash::FxHashMap;
use shoal_planner::{InputLocations, JobId, Locations, Resources, StageId, TaskId, WorkerId};
use tokio::sync::oneshot;

use super::Outbox;
use super::room::{ANY, PoolId};
use crate::protocol::{
    JobEvent, JobEventKind, JobOutputs, JobSpec, Progress, Relocations, StagePlan, TaskReport,
};

/// Workers holding a stage's inputs that placement looks at besides the index's choice.
const HOLDERS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TaskState {
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

pub(super) struct JobState {
    pub(super) job: JobId,
    /// Where the job's events go until the scheduler publishes them.
    pub(super) events: Outbox,
    pub(super) inputs: Vec<Vec<StageId>>,
    pub(super) consumers: Vec<Vec<StageId>>,
    /// Each stage's plan while it may still run; dropped once the stage's outputs are
    /// no longer needed, which frees state the plan holds (a broadcast hash table).
    pub(super) plans: Vec<Option<StagePlan>>,
    pub(super) done: Option<oneshot::Sender<Result<JobOutputs, DataFusionError>>>,
    /// Where the result goes again after lost partitions of it were recomputed.
    pub(super) relocated: Option<Relocations>,
    /// Result partitions the client has read to the end: lost, they stay lost.
    pub(super) read: Vec<bool>,
    /// Stages whose tasks were queued since they last (re)opened.
    pub(super) stage_started: Vec<bool>,
    pub(super) tasks: Vec<Vec<TaskState>>,
    pub(super) attempts: Vec<Vec<u32>>,
    /// Workers lost while running each task.
    pub(super) crashes: Vec<Vec<u32>>,
    /// Runs of each task that failed to fetch an input.
    pub(super) fetch_retries: Vec<Vec<u32>>,
    /// Runs of each task stopped because an input task had to run again (see
    /// `Scheduler::restart_stalled`): they have attempt numbers but are not attempts.
    pub(super) restarts: Vec<Vec<u32>>,
    /// Unfinished tasks per stage.
    pub(super) tasks_left: Vec<usize>,
    /// Unfinished input stages per stage.
    pub(super) inputs_left: Vec<usize>,
    /// Running tasks per stage.
    pub(super) running: Vec<usize>,
    /// Whether a stage may start while its inputs still run (see [`Self::start_early`]).
    pub(super) pipelined: bool,
    /// Per stage, the workers given tasks of it before its inputs were complete: they
    /// hear where each input task's output is as it finishes.
    pub(super) early: Vec<Vec<WorkerId>>,
    /// Stages a task of which went back to waiting: tasks of their consumers that
    /// started early may wait for it while holding slots it needs, so they start over
    /// (see `Scheduler::restart_stalled`).
    pub(super) stalled: Vec<StageId>,
    /// Unfinished consumer stages per stage; at zero its outputs are released.
    pub(super) consumers_left: Vec<usize>,
    pub(super) stage_done: Vec<bool>,
    /// Outputs dropped on the workers (nobody needed them any more).
    pub(super) released: Vec<bool>,
    /// Output bytes per stage per worker, for locality.
    pub(super) bytes_on: Vec<FxHashMap<WorkerId, u64>>,
    /// Where each stage's inputs are, built once per stage and shared by its tasks;
    /// cleared when an input stage completes (again).
    pub(super) input_locations: Vec<Option<Locations>>,
    /// The workers holding most of each stage's input bytes, for locality; built and
    /// cleared with `input_locations`.
    pub(super) holders: Vec<Option<Vec<WorkerId>>>,
    pub(super) ready: VecDeque<TaskId>,
    /// Ready tasks of stages started before their inputs were complete: placed after
    /// `ready`'s, which can run at once.
    pub(super) ready_early: VecDeque<TaskId>,
    pub(super) request: Resources,
    /// The pool of the placement index its tasks are placed from.
    pub(super) pool: PoolId,
    pub(super) placement_timeout: Duration,
    /// Since when no worker offers `request`.
    pub(super) waiting_since: Option<Instant>,
    pub(super) tasks_total: usize,
    pub(super) tasks_done: usize,
    /// Stages whose outputs the scheduler must tell workers to drop.
    pub(super) to_release: Vec<StageId>,
    /// Inputs that could not be fetched, over the job's life.
    pub(super) fetch_failures: u32,
    pub(super) failed: bool,
}

impl JobState {
    pub(super) fn new(
        job: JobId,
        spec: JobSpec,
        done: oneshot::Sender<Result<JobOutputs, DataFusionError>>,
        relocated: Option<Relocations>,
        events: Outbox,
    ) -> Self {
        let n = spec.stages.len();
        let result_tasks = spec.stages.last().map_or(0, |s| s.tasks);
        let tasks_total = spec.tasks_total();
        let mut consumers = vec![Vec::new(); n];
        for (id, stage) in spec.stages.iter().enumerate() {
            for &input in &stage.inputs {
                consumers[input].push(id);
            }
        }
        let mut state = Self {
            job,
            events,
            stage_started: vec![false; n],
            inputs: spec.stages.iter().map(|s| s.inputs.clone()).collect(),
            consumers_left: consumers.iter().map(Vec::len).collect(),
            consumers,
            tasks: spec
                .stages
                .iter()
                .map(|s| vec![TaskState::Waiting; s.tasks])
                .collect(),
            attempts: spec.stages.iter().map(|s| vec![0; s.tasks]).collect(),
            crashes: spec.stages.iter().map(|s| vec![0; s.tasks]).collect(),
            fetch_retries: spec.stages.iter().map(|s| vec![0; s.tasks]).collect(),
            restarts: spec.stages.iter().map(|s| vec![0; s.tasks]).collect(),
            tasks_left: spec.stages.iter().map(|s| s.tasks).collect(),
            inputs_left: spec.stages.iter().map(|s| s.inputs.len()).collect(),
            running: vec![0; n],
            pipelined: spec.pipelined,
            early: vec![Vec::new(); n],
            stalled: Vec::new(),
            stage_done: vec![false; n],
            released: vec![false; n],
            bytes_on: vec![FxHashMap::default(); n],
            input_locations: vec![None; n],
            holders: vec![None; n],
            plans: spec.stages.into_iter().map(|s| Some(s.plan)).collect(),
            done: Some(done),
            relocated,
            read: vec![false; result_tasks],
            ready: VecDeque::new(),
            ready_early: VecDeque::new(),
            request: spec.request,
            pool: ANY,
            placement_timeout: spec.placement_timeout,
            waiting_since: None,
            tasks_total,
            tasks_done: 0,
            to_release: Vec::new(),
            fetch_failures: 0,
            failed: false,
        };
        state.emit(JobEventKind::Submitted {
            stages: n,
            outline: spec.outline,
        });
        for stage in 0..n {
            if state.inputs_left[stage] == 0 {
                state.queue_stage(stage);
            }
        }
        state
    }

    /// Records `kind` with the job's task counts now, to be published.
    pub(super) fn emit(&self, kind: JobEventKind) {
        self.events.push(JobEvent {
            job: self.job,
            progress: Progress {
                tasks_total: self.tasks_total,
                tasks_done: self.tasks_done,
            },
            kind,
        });
    }

    pub(super) fn result_stage(&self) -> StageId {
        self.tasks.len() - 1
    }

    /// Queues the stage's waiting tasks (its inputs are all there).
    pub(super) fn queue_stage(&mut self, stage: StageId) {
        let mut queued = false;
        let early = self.inputs_left[stage] > 0;
        for partition in 0..self.tasks[stage].len() {
            if self.tasks[stage][partition] == TaskState::Waiting {
                self.tasks[stage][partition] = TaskState::Queued;
                let ready = if early {
                    &mut self.ready_early
                } else {
                    &mut self.ready
                };
                ready.push_back(TaskId { stage, partition });
                queued = true;
            }
        }
        if queued && !self.stage_started[stage] {
            self.stage_started[stage] = true;
            self.emit(JobEventKind::StageStarted { stage });
        }
        if self.tasks_left[stage] == 0 && !self.stage_done[stage] {
            // Empty, or every task finished while an input was being recomputed.
            self.complete(stage);
        }
    }

    /// Every task of `stage` has finished.
    pub(super) fn complete(&mut self, stage: StageId) {
        self.stage_done[stage] = true;
        self.emit(JobEventKind::StageFinished { stage });
        for i in 0..self.inputs[stage].len() {
            let input = self.inputs[stage][i];
            self.consumers_left[input] -= 1;
            if self.consumers_left[input] == 0 {
                self.release(input);
            }
        }
        for i in 0..self.consumers[stage].len() {
            let consumer = self.consumers[stage][i];
            self.forget_inputs(consumer);
            self.inputs_left[consumer] -= 1;
            if self.inputs_left[consumer] == 0 {
                self.queue_stage(consumer);
            } else {
                self.start_early(consumer);
            }
        }
        if stage == self.result_stage() {
            let outputs = self.result_outputs();
            if let Some(done) = self.done.take() {
                self.emit(JobEventKind::Done);
                let _ = done.send(Ok(outputs));
            } else {
                self.send_relocations(outputs);
            }
        }
    }

    /// Where the result stage's tasks left their outputs.
    pub(super) fn result_outputs(&self) -> JobOutputs {
        let stage = self.result_stage();
        (0..self.tasks[stage].len())
            .map(|partition| {
                let worker = match self.tasks[stage][partition] {
                    TaskState::Done { worker } => worker,
                    _ => 0,
                };
                (TaskId { stage, partition }, worker)
            })
            .collect()
    }

    /// Tells the client where the unread result partitions are now.
    pub(super) fn send_relocations(&self, outputs: JobOutputs) {
        if let Some(relocated) = &self.relocated {
            let unread = outputs
                .into_iter()
                .filter(|(task, _)| !self.read[task.partition])
                .collect();
            let _ = relocated.send(Ok(unread));
        }
    }

    /// Whether the result's locations went to the client (lost result partitions are then
    /// recomputed only for a client that can be told where they went).
    pub(super) fn delivered(&self) -> bool {
        self.done.is_none()
    }

    pub(super) fn release(&mut self, stage: StageId) {
        self.released[stage] = true;
        self.to_release.push(stage);
        if let Some(StagePlan::Decoded { .. }) = self.plans[stage] {
            // Plans held in this process can be large; encoded ones are kept for lineage.
            self.plans[stage] = None;
        }
    }

    /// `stage` must run again: some of its outputs are lost.
    pub(super) fn reopen(&mut self, stage: StageId) {
        if !self.stage_done[stage] {
            return;
        }
        self.stage_done[stage] = false;
        self.stage_started[stage] = false;
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
            self.forget_inputs(consumer);
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
    pub(super) fn reset_stage(&mut self, stage: StageId) {
        for partition in 0..self.tasks[stage].len() {
            if let TaskState::Done { .. } = self.tasks[stage][partition] {
                self.unfinish(TaskId { stage, partition });
            }
        }
        self.bytes_on[stage].clear();
        self.reopen(stage);
    }

    /// A finished task's output is gone. It runs again, and its attempts count afresh:
    /// they bound a task that keeps failing, not one whose output keeps being lost (each
    /// loss is a lost worker, which other bounds count).
    pub(super) fn unfinish(&mut self, task: TaskId) {
        self.wait_again(task);
        self.attempts[task.stage][task.partition] = 0;
        self.restarts[task.stage][task.partition] = 0;
        self.tasks_left[task.stage] += 1;
        self.tasks_done -= 1;
    }

    /// Whether `worker` holds outputs of this job that a stage still needs (it has
    /// finished a task of a stage whose outputs have not been lost or dropped since).
    pub(super) fn holds_outputs_on(&self, worker: WorkerId) -> bool {
        self.bytes_on
            .iter()
            .zip(&self.released)
            .any(|(held, released)| !released && held.contains_key(&worker))
    }

    /// Queues a waiting task again if its stage's inputs are all there (else the
    /// stage is queued when they are).
    pub(super) fn requeue(&mut self, task: TaskId) {
        if self.inputs_left[task.stage] > 0 {
            return;
        }
        if !self.stage_started[task.stage] {
            // Starting again: the whole stage, with its event.
            self.queue_stage(task.stage);
            return;
        }
        let state = &mut self.tasks[task.stage][task.partition];
        if *state == TaskState::Waiting {
            *state = TaskState::Queued;
            self.ready.push_back(task);
        }
    }

    /// Outputs held by `worker` are lost: the stages that made them run again. Result
    /// partitions already delivered are recomputed only if the client can be told where
    /// they went and has not read them yet.
    pub(super) fn lose_outputs(&mut self, worker: WorkerId) {
        for stage in 0..self.tasks.len() {
            let delivered = stage == self.result_stage() && self.delivered();
            if self.released[stage] || (delivered && self.relocated.is_none()) {
                continue;
            }
            let mut lost = false;
            for partition in 0..self.tasks[stage].len() {
                if delivered && self.read[partition] {
                    continue;
                }
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

    pub(super) fn requeue_open_stages(&mut self) {
        for stage in 0..self.tasks.len() {
            if !self.stage_done[stage] && self.inputs_left[stage] == 0 {
                self.queue_stage(stage);
            }
        }
    }

    pub(super) fn finished(
        &mut self,
        task: TaskId,
        worker: WorkerId,
        attempt: u32,
        report: &TaskReport,
    ) {
        self.running[task.stage] -= 1;
        self.tasks[task.stage][task.partition] = TaskState::Done { worker };
        // Saturating: the sizes come from the worker, over the network.
        let output_bytes = report
            .bucket_bytes
            .iter()
            .fold(0u64, |sum, b| sum.saturating_add(*b));
        let held = self.bytes_on[task.stage].entry(worker).or_default();
        *held = held.saturating_add(output_bytes);
        self.tasks_left[task.stage] -= 1;
        self.tasks_done += 1;
        self.emit(JobEventKind::TaskFinished {
            task,
            worker,
            attempt,
            slot: report.slot,
            duration: report.duration,
            output_bytes,
            metrics: Arc::new(report.metrics.clone()),
        });
        if self.tasks_left[task.stage] == 0 && self.inputs_left[task.stage] == 0 {
            self.complete(task.stage);
        }
    }

    /// Bytes of `stage`'s inputs held by `worker`.
    pub(super) fn locality(&self, stage: StageId, worker: WorkerId) -> u64 {
        self.inputs[stage]
            .iter()
            .map(|&s| self.bytes_on[s].get(&worker).copied().unwrap_or(0))
            .fold(0, u64::saturating_add)
    }

    /// Where `stage`'s inputs are has changed.
    pub(super) fn forget_inputs(&mut self, stage: StageId) {
        self.input_locations[stage] = None;
        self.holders[stage] = None;
    }

    /// Finds the workers holding most of `stage`'s input bytes (see [`Self::holders`]).
    pub(super) fn find_holders(&mut self, stage: StageId) {
        if self.holders[stage].is_some() || self.inputs[stage].is_empty() {
            return;
        }
        let mut bytes: FxHashMap<WorkerId, u64> = FxHashMap::default();
        for &input in &self.inputs[stage] {
            for (&worker, &b) in &self.bytes_on[input] {
                let held = bytes.entry(worker).or_default();
                *held = held.saturating_add(b);
            }
        }
        let mut ranked: Vec<(u64, WorkerId)> = bytes
            .into_iter()
            .filter(|(_, b)| *b > 0)
            .map(|(w, b)| (b, w))
            .collect();
        ranked.sort_unstable_by_key(|&(b, w)| (std::cmp::Reverse(b), w));
        self.holders[stage] = Some(ranked.iter().take(HOLDERS).map(|(_, w)| *w).collect());
    }

    /// The workers holding most of `stage`'s input bytes, most first, at most [`HOLDERS`]
    /// of them, as [`Self::find_holders`] last found them.
    pub(super) fn holders(&self, stage: StageId) -> &[WorkerId] {
        self.holders[stage].as_deref().unwrap_or(&[])
    }

    pub(super) fn locations(&mut self, stage: StageId) -> Locations {
        if let Some(cached) = &self.input_locations[stage] {
            return Arc::clone(cached);
        }
        let built: Locations = Arc::new(InputLocations::new(
            self.inputs[stage]
                .iter()
                .map(|&s| {
                    let workers = self.tasks[s]
                        .iter()
                        .map(|t| match t {
                            TaskState::Done { worker } => Some(*worker),
                            _ => None,
                        })
                        .collect();
                    (s, workers)
                })
                .collect(),
        ));
        self.input_locations[stage] = Some(Arc::clone(&built));
        built
    }

    /// The next ready task to place (entries whose task went back to waiting are
    /// dropped): tasks that can run at once first, then those of stages started early.
    pub(super) fn next_ready(&mut self) -> Option<TaskId> {
        for ready in [&mut self.ready, &mut self.ready_early] {
            while let Some(task) = ready.front()
                && self.tasks[task.stage][task.partition] != TaskState::Queued
            {
                ready.pop_front();
            }
            if let Some(&task) = ready.front() {
                return Some(task);
            }
        }
        None
    }

    /// Takes `task`, which [`Self::next_ready`] returned, off its queue.
    pub(super) fn take_ready(&mut self, task: TaskId) {
        if self.ready.front() == Some(&task) {
            self.ready.pop_front();
        } else if self.ready_early.front() == Some(&task) {
            self.ready_early.pop_front();
        }
    }

    /// Whether any task is in a ready queue (maybe one gone back to waiting).
    pub(super) fn next_queued_exists(&self) -> bool {
        !self.ready.is_empty() || !self.ready_early.is_empty()
    }

    /// Forgets every ready task.
    pub(super) fn clear_ready(&mut self) {
        self.ready.clear();
        self.ready_early.clear();
    }

    /// `task` was placed on `worker`: a stage reading its stage may be able to start.
    pub(super) fn launched(&mut self, task: TaskId, worker: WorkerId, attempt: u32) {
        self.tasks[task.stage][task.partition] = TaskState::Running { worker, attempt };
        self.running[task.stage] += 1;
        if self.inputs_left[task.stage] > 0 && !self.early[task.stage].contains(&worker) {
            self.early[task.stage].push(worker);
        }
        for i in 0..self.consumers[task.stage].len() {
            let consumer = self.consumers[task.stage][i];
            self.start_early(consumer);
        }
    }

    /// Queues `stage` before its inputs are complete if the job is pipelined and every
    /// unfinished task of every input stage is placed. Its tasks then read each input as
    /// it finishes. Waiting for every input task to be placed keeps this free of
    /// deadlock: an early task only waits for tasks placed before it, which a worker
    /// starts first (its queue is in order), so no early task holds a slot a task it
    /// waits for needs. A task that must run again breaks that order; see `stalled`.
    pub(super) fn start_early(&mut self, stage: StageId) {
        if !self.pipelined
            || self.stage_started[stage]
            || self.inputs_left[stage] == 0
            || self.tasks_left[stage] == 0
        {
            return;
        }
        let placed = self.inputs[stage]
            .iter()
            .all(|&i| self.stage_done[i] || self.tasks_left[i] == self.running[i]);
        if placed {
            self.queue_stage(stage);
        }
    }

    /// Whether `stage`'s tasks may be placed (or run) while an input is incomplete.
    pub(super) fn started_early(&self, stage: StageId) -> bool {
        self.pipelined && self.stage_started[stage] && self.inputs_left[stage] > 0
    }

    /// A running or finished `task` must run (again): it waits.
    pub(super) fn wait_again(&mut self, task: TaskId) {
        let state = &mut self.tasks[task.stage][task.partition];
        if let TaskState::Running { .. } = state {
            self.running[task.stage] -= 1;
        }
        *state = TaskState::Waiting;
        let early = self.consumers[task.stage]
            .iter()
            .any(|&c| self.started_early(c));
        if early && !self.stalled.contains(&task.stage) {
            self.stalled.push(task.stage);
        }
    }

    /// A task of `stage` finished on `worker`: where to tell the workers running its
    /// consumers' early tasks, and the consumers' shared input locations, filled in.
    pub(super) fn announce(&mut self, task: TaskId, worker: WorkerId) -> Vec<WorkerId> {
        let mut to = Vec::new();
        for i in 0..self.consumers[task.stage].len() {
            let consumer = self.consumers[task.stage][i];
            if self.early[consumer].is_empty() {
                continue;
            }
            if let Some(board) = &self.input_locations[consumer] {
                board.fill(task.stage, task.partition, worker);
            }
            for &w in &self.early[consumer] {
                if !to.contains(&w) {
                    to.push(w);
                }
            }
            if self.inputs_left[consumer] == 0 {
                // Its inputs are complete: later tasks of it get every location at launch.
                self.early[consumer].clear();
            }
        }
        to
    }
}
