//! Failures: suspect and lost workers, whose outputs every job recomputes from lineage,
//! and failed jobs.

use std::time::Instant;

use datafusion::common::DataFusionError;
use shoal_planner::{ErrorKind, JobId, Resources, TaskId, WorkerId, kind_of, shoal_err};
use tokio::sync::mpsc;

use super::job::TaskState;
use super::placement::Suspicion;
use super::{MAX_ATTEMPTS, MAX_WORKER_CRASHES, Scheduler, TICK};
use crate::protocol::{JobEventKind, WorkerMsg, failure_message};

impl Scheduler {
    /// Loses workers not heard from within the heartbeat timeout. Silence counts only
    /// while this scheduler could listen: when its own checks came late and not because
    /// it was busy handling events (the process was starved of CPU, say, with heartbeats
    /// waiting unread in its sockets), the delay is not held against the workers.
    pub(super) fn lose_silent_workers(&mut self) {
        let Some(timeout) = self.heartbeat_timeout else {
            return;
        };
        let now = Instant::now();
        let stalled = now
            .duration_since(self.last_check)
            .saturating_sub(2 * TICK + std::mem::take(&mut self.busy));
        self.last_check = now;
        if !stalled.is_zero() {
            for w in &mut self.workers {
                w.last_heard = (w.last_heard + stalled).min(now);
            }
        }
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

    /// A peer could not fetch from `worker`: every job recomputes the outputs it held and
    /// no task goes to it until its loss is confirmed or it is heard from again.
    pub(super) fn suspect(&mut self, worker: WorkerId, cause: &DataFusionError) {
        let Some(slot) = self.workers.get_mut(worker) else {
            return;
        };
        if !slot.usable() {
            return;
        }
        tracing::warn!(
            "worker {worker} ({}) is suspect: {cause}",
            slot.status.address
        );
        if let Some(probe) = &self.probe {
            slot.suspect = Some(Suspicion::Probing);
            let _ = probe.send((worker, slot.status.address.clone()));
        }
        self.reindex(worker);
        let ids: Vec<JobId> = self.jobs.keys().copied().collect();
        for job in ids {
            if let Some(state) = self.jobs.get_mut(&job)
                && !state.failed
            {
                state.lose_outputs(worker);
                self.send_releases(job);
            }
        }
    }

    /// `worker` is gone: its running tasks run elsewhere and its outputs are recomputed.
    pub(super) fn lose_worker(&mut self, worker: WorkerId, cause: &str) {
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
        let offer = slot.status.resources.clone();
        let slots = slot.status.slots;
        self.room.count_offer(&offer, -1);
        self.reindex(worker);
        self.count_slots(slots, false);
        let any_alive = self.room.feasible(&Resources::default());
        let ids: Vec<JobId> = self.jobs.keys().copied().collect();
        for job in ids {
            let state = self.jobs.get_mut(&job).expect("job exists");
            if state.failed {
                continue;
            }
            if !any_alive {
                let error = shoal_err(
                    ErrorKind::WorkerLost,
                    format!(
                        "job {job} failed: every worker was lost (the last, worker {worker} \
                         at {address}: {cause})"
                    ),
                );
                self.fail(job, error);
                continue;
            }
            // The task this loss makes the job give up on, and why.
            let mut given_up: Option<(TaskId, String)> = None;
            for stage in 0..state.tasks.len() {
                for partition in 0..state.tasks[stage].len() {
                    if let TaskState::Running { worker: w, .. } = state.tasks[stage][partition]
                        && w == worker
                    {
                        let task = TaskId { stage, partition };
                        state.wait_again(task);
                        state.crashes[stage][partition] += 1;
                        if state.crashes[stage][partition] >= MAX_WORKER_CRASHES {
                            let why = format!(
                                "{MAX_WORKER_CRASHES} workers were lost while running it, the \
                                 last at {address} ({cause}); it may be what crashes them, so \
                                 it is not run again"
                            );
                            given_up = Some((task, why));
                        } else if state.attempts[stage][partition]
                            .saturating_sub(state.restarts[stage][partition])
                            >= MAX_ATTEMPTS
                            && given_up.is_none()
                        {
                            let why = format!(
                                "gave up after {MAX_ATTEMPTS} attempts: worker {worker} at \
                                 {address} was lost: {cause}"
                            );
                            given_up = Some((task, why));
                        }
                    }
                }
            }
            if let Some((task, why)) = given_up {
                self.fail_task(job, task, worker, shoal_err(ErrorKind::WorkerLost, why));
                continue;
            }
            state.lose_outputs(worker);
            self.send_releases(job);
        }
    }

    /// Tasks that started before their inputs were complete (pipelined exchanges) and
    /// read a stage a task of which must run again start over: they may wait for it in
    /// the slots it needs. Their stages start again once every input task is placed.
    pub(super) fn restart_stalled(&mut self) {
        let jobs: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, state)| !state.stalled.is_empty())
            .map(|(&job, _)| job)
            .collect();
        for job in jobs {
            let mut stopped = Vec::new();
            let mut unstarted = Vec::new();
            let state = self.jobs.get_mut(&job).expect("job exists");
            while let Some(stage) = state.stalled.pop() {
                for i in 0..state.consumers[stage].len() {
                    let consumer = state.consumers[stage][i];
                    if !state.started_early(consumer) {
                        continue;
                    }
                    state.early[consumer].clear();
                    state.forget_inputs(consumer);
                    state.stage_started[consumer] = false;
                    unstarted.push(consumer);
                    for partition in 0..state.tasks[consumer].len() {
                        let task = TaskId {
                            stage: consumer,
                            partition,
                        };
                        match state.tasks[consumer][partition] {
                            TaskState::Running { worker, attempt } => {
                                // Its next run has a new attempt number, so the report of
                                // this one (cancelled) is told apart from it; the run does
                                // not count toward the task's attempts.
                                state.wait_again(task);
                                state.restarts[consumer][partition] += 1;
                                stopped.push((worker, task, attempt));
                            }
                            TaskState::Queued => {
                                // Its entry in `ready` is skipped when popped.
                                state.tasks[consumer][partition] = TaskState::Waiting;
                            }
                            TaskState::Waiting | TaskState::Done { .. } => {}
                        }
                    }
                }
            }
            // Started again at once if its inputs' tasks are all placed again already (the
            // input task was placed again in the dispatch that found it lost).
            for stage in unstarted {
                state.start_early(stage);
            }
            for (worker, task, attempt) in stopped {
                tracing::debug!(job, %task, attempt, worker, "restarting an early task");
                let _ = self.workers[worker]
                    .tx
                    .send(WorkerMsg::CancelTask(job, task, attempt));
                self.release_task(worker, job, task, false);
            }
        }
    }

    /// Fails a job: the client gets `error`, other tasks of the job are stopped.
    pub(super) fn fail(&mut self, job: JobId, error: DataFusionError) {
        let (kind, message) = (kind_of(&error), failure_message(&error));
        self.stop(job, error, JobEventKind::Failed { kind, message });
    }

    /// Cancels a running job: its client gets an error saying so.
    pub(super) fn cancel(&mut self, job: JobId) {
        let error = shoal_err(ErrorKind::Cancelled, format!("job {job} was cancelled"));
        self.stop(job, error, JobEventKind::Cancelled);
    }

    fn stop(&mut self, job: JobId, error: DataFusionError, event: JobEventKind) {
        let Some(state) = self.jobs.get_mut(&job) else {
            return;
        };
        if state.failed {
            return;
        }
        state.failed = true;
        state.clear_ready();
        if let Some(done) = state.done.take() {
            state.emit(event);
            let _ = done.send(Err(error));
        } else if let Some(relocated) = &state.relocated {
            // The client is reading a result that can no longer be recomputed.
            state.emit(event);
            let _ = relocated.send(Err(error));
        }
        for w in self.workers.iter().filter(|w| w.status.alive) {
            let _ = w.tx.send(WorkerMsg::CancelJob(job));
        }
    }
}
