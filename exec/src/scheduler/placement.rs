//! Placement: which worker runs each ready task. A task goes to a worker that is usable,
//! has room and offers the resources it asks for; among those, an idle one first, then
//! the one holding most of its input bytes, then the least loaded (within a factor of
//! two). Jobs take turns. The workers with room are kept in an index ([`super::room`]),
//! so placing a task costs the same on ten workers as on ten thousand.

use std::cmp::Reverse;
use std::time::Instant;

use rustc_hash::FxHashMap;
use shoal_planner::{ErrorKind, JobId, Resources, TaskId, WorkerId, shoal_err};
use tokio::sync::mpsc;

use super::job::JobState;
use super::room::{Room, bucket};
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
        self.room.feasible(request)
    }

    pub(super) fn fail_jobs_waiting_too_long(&mut self) {
        // Start the clock for jobs no worker can ever run, even while every slot is busy.
        let mut now_waiting = Vec::new();
        for (id, job) in &self.jobs {
            if job.next_queued_exists() && !job.failed && !self.feasible_somewhere(&job.request) {
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

    /// Files `worker` in the placement index as it is now: with room if it may run
    /// tasks and has fewer in flight than it may have.
    pub(super) fn reindex(&mut self, worker: WorkerId) {
        let entry = self.room_entry(worker);
        self.room.update(worker, entry);
    }

    /// Where `worker` belongs in the placement index now: its key and free resources.
    fn room_entry(&self, worker: WorkerId) -> Option<(u8, Resources)> {
        let w = self.workers.get(worker)?;
        let capacity = w.capacity(self.prefetch, self.short_task_prefetch);
        let running = w.status.tasks_running;
        (w.usable() && running < capacity).then(|| {
            // Room in powers of two: a worker changes buckets only when its room halves
            // or doubles, not with every task that starts or ends; busy workers still
            // fill up evenly, within a factor of two.
            let bucket = bucket(running < w.status.slots, capacity - running);
            (bucket, w.available.clone())
        })
    }

    /// Whether every worker is filed in the placement index where it belongs.
    #[cfg(test)]
    pub(super) fn room_is_current(&self) -> bool {
        (0..self.workers.len()).all(|w| self.room.entry(w) == self.room_entry(w).as_ref())
            && self.room.consistent()
    }

    /// A task of `job` on `worker` ended (`finished`: it stored its output).
    pub(super) fn release_task(
        &mut self,
        worker: WorkerId,
        job: JobId,
        task: TaskId,
        finished: bool,
    ) {
        if let Some(slot) = self.workers.get_mut(worker) {
            slot.release(job, task, finished);
            self.reindex(worker);
        }
    }

    /// Gives ready tasks to workers with room, jobs taking turns (see the module's
    /// doc). The cost does not grow with the number of workers: the index of workers
    /// with room names the best one locality aside, and only the few workers holding
    /// most of a stage's inputs are looked at besides.
    pub(super) fn dispatch(&mut self) {
        self.restart_stalled();
        let mut idle_rounds = 0;
        while idle_rounds < self.turn.len() {
            let (prefetch, short) = (self.prefetch, self.short_task_prefetch);
            if !self.room.any() {
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
                state.clear_ready();
            }
            let Some(task) = state.next_ready() else {
                idle_rounds += 1;
                continue;
            };
            let capacity = |w: &WorkerSlot| w.capacity(prefetch, short);
            let (chosen, stale) = choose(&mut self.room, &self.workers, state, task, capacity);
            if let Some(stale) = stale {
                // A bug: a change of the worker that did not reach the index. Filed
                // again, it is looked at next round.
                tracing::error!("the placement index was stale for worker {stale}");
                self.reindex(stale);
                idle_rounds += 1;
                continue;
            }
            let Some(worker) = chosen else {
                // Busy feasible workers free up later; with none at all, the job waits
                // until its placement timeout and `status` says why.
                if !self.room.feasible(&state.request) {
                    state.waiting_since.get_or_insert_with(Instant::now);
                }
                idle_rounds += 1;
                continue;
            };
            idle_rounds = 0;
            state.take_ready(task);
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
            state.launched(task, worker, attempt);
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
                // Early tasks waiting for what it ran must not keep the slots it needs.
                self.restart_stalled();
            }
            self.reindex(worker);
        }
    }
}

/// The worker `task` of `state`'s job goes to, if any has room: the index's first for
/// the job's request, or one of the workers holding most of the stage's inputs if that
/// one is preferred (see [`Scheduler::dispatch`]). Second: the index's first when it
/// turned out to have no room after all (then nothing is chosen).
fn choose(
    room: &mut Room,
    workers: &[WorkerSlot],
    state: &mut JobState,
    task: TaskId,
    capacity: impl Fn(&WorkerSlot) -> usize,
) -> (Option<WorkerId>, Option<WorkerId>) {
    state.find_holders(task.stage);
    let state = &*state;
    let fits = |w: &WorkerSlot| {
        w.usable() && w.status.tasks_running < capacity(w) && w.available.covers(&state.request)
    };
    let preference = |w: &WorkerSlot| {
        let id = w.status.id;
        (
            w.status.tasks_running < w.status.slots,
            state.locality(task.stage, id),
            capacity(w) - w.status.tasks_running,
            Reverse(id),
        )
    };
    let first = room.first(state.pool);
    if let Some(id) = first
        && !fits(&workers[id])
    {
        debug_assert!(false, "the placement index is stale for worker {id}");
        return (None, Some(id));
    }
    let mut best = first.map(|id| (preference(&workers[id]), id));
    for &id in state.holders(task.stage) {
        room.looked_at += 1;
        let w = &workers[id];
        if !fits(w) {
            continue;
        }
        let p = preference(w);
        if best.as_ref().is_none_or(|(b, _)| p > *b) {
            best = Some((p, id));
        }
    }
    (best.map(|(_, id)| id), None)
}
