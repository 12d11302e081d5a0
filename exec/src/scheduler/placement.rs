//! Placement: which worker runs each ready task. A task goes to a worker that is usable,
//! has room and offers the resources it asks for; among those, the one holding most of its
//! input bytes, then the least loaded. Jobs take turns.

use std::time::Instant;

use rustc_hash::FxHashMap;
use shoal_planner::{ErrorKind, JobId, Resources, TaskId, shoal_err};
use tokio::sync::mpsc;

use super::job::TaskState;
use super::{SHORT_TASK, Scheduler};
use crate::protocol::{JobEventKind, Launch, WorkerMsg, WorkerStatus};

pub(super) struct WorkerSlot {
    pub(super) tx: mpsc::UnboundedSender<WorkerMsg>,
    pub(super) status: WorkerStatus,
    /// Offered resources not held by running tasks.
    pub(super) available: Resources,
    /// What each running task holds, given back when it ends, and when it was sent.
    pub(super) holding: FxHashMap<(JobId, TaskId), (Resources, Instant)>,
    pub(super) last_heard: Instant,
    /// Moving average of launch-to-report time, in seconds.
    pub(super) mean_task_secs: f64,
    /// A peer could not fetch from it: no tasks go to it until the loss is confirmed or
    /// the suspicion cleared.
    pub(super) suspect: Option<Suspicion>,
}

/// What the scheduler knows about a suspect worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Suspicion {
    /// Its data port is being probed.
    Probing,
    /// Its data port answered; the next heartbeat clears the suspicion.
    Reachable,
}

impl WorkerSlot {
    /// Alive, not suspect and not retiring: tasks may go to it.
    pub(super) fn usable(&self) -> bool {
        self.status.alive && self.suspect.is_none() && !self.status.retiring
    }

    /// Tasks this worker may have in flight.
    pub(super) fn capacity(&self, prefetch: usize, short_task_prefetch: usize) -> usize {
        let per_slot = if self.mean_task_secs < SHORT_TASK {
            short_task_prefetch
        } else {
            prefetch
        };
        self.status.slots * per_slot
    }

    /// A task ended; only tasks that `finished` count toward the mean task time.
    pub(super) fn release(&mut self, job: JobId, task: TaskId, finished: bool) {
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

impl Scheduler {
    /// Why no worker can run tasks asking for `request`.
    pub(super) fn unplaceable(&self, request: &Resources) -> String {
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

    pub(super) fn feasible_somewhere(&self, request: &Resources) -> bool {
        self.workers
            .iter()
            .any(|w| w.status.alive && w.status.resources.covers(request))
    }

    pub(super) fn fail_jobs_waiting_too_long(&mut self) {
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
            self.fail(job, shoal_err(ErrorKind::Resources, why));
        }
    }

    /// Gives ready tasks to workers with room, jobs taking turns. A task goes to a worker
    /// with a free slot and the resources it asks for free; among those, the one holding
    /// most of its input bytes, then the least loaded.
    pub(super) fn dispatch(&mut self) {
        let mut idle_rounds = 0;
        while idle_rounds < self.turn.len() {
            let (prefetch, short) = (self.prefetch, self.short_task_prefetch);
            if !self
                .workers
                .iter()
                .any(|w| w.usable() && w.status.tasks_running < w.capacity(prefetch, short))
            {
                return;
            }
            let Some(job) = self.turn.pop_front() else {
                return;
            };
            self.current = Some(job);
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
                    w.usable()
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
                // An output was lost after its stage's plan was let go of.
                let error = shoal_err(
                    ErrorKind::WorkerLost,
                    format!("{task} of job {job} must run again but its plan was already dropped"),
                );
                self.fail(job, error);
                continue;
            };
            state.attempts[task.stage][task.partition] += 1;
            let attempt = state.attempts[task.stage][task.partition];
            state.tasks[task.stage][task.partition] = TaskState::Running { worker, attempt };
            let locations = state.locations(task.stage);
            tracing::debug!(job, %task, attempt, worker, ?locations, "launch");
            state.emit(JobEventKind::TaskStarted {
                task,
                worker,
                attempt,
            });
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
