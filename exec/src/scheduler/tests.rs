//! Deterministic tests of the scheduler: events in, commands out; no threads, sockets
//! or sleeps.

use std::time::Duration;

use datafusion::common::DataFusionError;
use shoal_planner::{ErrorKind, JobId, Resources, StageId, TaskId, WorkerId, kind_of};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{MAX_FETCH_FAILURES, MAX_WORKER_CRASHES, Scheduler};
use crate::protocol::{
    Event, EventBatch, JobEvent, JobEventKind, JobOutputs, JobSpec, Progress, StagePlan, StageSpec,
    TaskOutcome, TaskReport, WorkerMsg, WorkerStatus, WorkerUsage, failure_message,
};

mod flat;
mod pipelined;
mod recovery;

type Done = oneshot::Receiver<Result<JobOutputs, DataFusionError>>;

/// A scheduler over `n` one-slot workers that reads its commands back, with no threads.
struct Harness {
    scheduler: Scheduler,
    inboxes: Vec<mpsc::UnboundedReceiver<WorkerMsg>>,
    /// Commands other than launches, per worker, in the order sent.
    other: Vec<Vec<WorkerMsg>>,
    probes: mpsc::UnboundedReceiver<(WorkerId, String)>,
}

impl Harness {
    fn new(n: usize, prefetch: usize) -> Self {
        let (probe, probes) = mpsc::unbounded_channel();
        let mut scheduler = Scheduler::empty(prefetch, Some(Duration::from_secs(3600)));
        scheduler = scheduler.with_probe(probe);
        let mut inboxes = Vec::new();
        for i in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            let info = WorkerStatus {
                address: format!("127.0.0.1:{}", 9000 + i),
                slots: 1,
                ..Default::default()
            };
            scheduler.join(info, tx);
            inboxes.push(rx);
        }
        Self {
            scheduler,
            other: (0..n).map(|_| Vec::new()).collect(),
            inboxes,
            probes,
        }
    }

    /// Submits a job of no-op stages (`inputs`, `tasks`) and dispatches.
    fn submit(&mut self, job: JobId, stages: &[(&[StageId], usize)]) -> Done {
        self.submit_asking(job, stages, Resources::default(), Duration::from_secs(60))
    }

    /// Like [`Self::submit`], for tasks that ask for `request` and may wait `timeout`.
    fn submit_asking(
        &mut self,
        job: JobId,
        stages: &[(&[StageId], usize)],
        request: Resources,
        timeout: Duration,
    ) -> Done {
        let (done, rx) = oneshot::channel();
        self.event(Event::Submit {
            job,
            spec: Box::new(noop_spec(stages, request, timeout)),
            done,
            relocated: None,
        });
        rx
    }

    /// Like [`Self::submit`], for a client that can be told where lost result
    /// partitions went after the job was done.
    fn submit_relocatable(
        &mut self,
        job: JobId,
        stages: &[(&[StageId], usize)],
    ) -> (
        Done,
        mpsc::UnboundedReceiver<Result<JobOutputs, DataFusionError>>,
    ) {
        let (done, rx) = oneshot::channel();
        let (relocated, relocations) = mpsc::unbounded_channel();
        self.event(Event::Submit {
            job,
            spec: Box::new(noop_spec(
                stages,
                Resources::default(),
                Duration::from_secs(60),
            )),
            done,
            relocated: Some(relocated),
        });
        (rx, relocations)
    }

    /// Finishes launched tasks until none is left; returns them in the order they ran.
    fn run_until_quiet(&mut self, job: JobId) -> Vec<(WorkerId, TaskId)> {
        let mut ran = Vec::new();
        loop {
            let launched: Vec<_> = (0..self.inboxes.len())
                .flat_map(|w| self.launched(w).into_iter().map(move |(t, a, _)| (w, t, a)))
                .collect();
            if launched.is_empty() {
                return ran;
            }
            for (w, task, attempt) in launched {
                self.finish(job, w, task, attempt);
                ran.push((w, task));
            }
        }
    }

    /// Feeds one event and dispatches, as one turn of the event loop does.
    fn event(&mut self, event: Event) {
        self.scheduler.turn(event);
        assert!(
            self.scheduler.room_is_current(),
            "the placement index is stale"
        );
    }

    /// Tasks launched on `worker` since the last call, with their input locations then.
    fn launched(&mut self, worker: WorkerId) -> Vec<(TaskId, u32, Inputs)> {
        let mut out = Vec::new();
        while let Ok(msg) = self.inboxes[worker].try_recv() {
            match msg {
                WorkerMsg::Launch(l) => out.push((l.task, l.attempt, l.locations.snapshot())),
                other => self.other[worker].push(other),
            }
        }
        out
    }

    /// Whether `worker` was told to cancel `job` (reads its commands first, dropping
    /// launches).
    fn cancelled(&mut self, worker: WorkerId, job: JobId) -> bool {
        self.launched(worker);
        self.other[worker]
            .iter()
            .any(|m| matches!(m, WorkerMsg::CancelJob(j) if *j == job))
    }

    /// A worker process joins; returns its id.
    fn join(&mut self, address: &str) -> WorkerId {
        let (tx, rx) = mpsc::unbounded_channel();
        let (reply, mut id) = oneshot::channel();
        let info = WorkerStatus {
            address: address.to_string(),
            slots: 1,
            ..Default::default()
        };
        self.event(Event::WorkerJoined {
            info: Box::new(info),
            tx,
            reply,
        });
        self.inboxes.push(rx);
        self.other.push(Vec::new());
        id.try_recv().expect("the scheduler answers at once")
    }

    fn end(
        &mut self,
        job: JobId,
        worker: WorkerId,
        task: TaskId,
        attempt: u32,
        outcome: TaskOutcome,
    ) {
        self.event(Event::TaskEnded {
            job,
            task,
            attempt,
            worker,
            outcome,
        });
    }

    fn finish(&mut self, job: JobId, worker: WorkerId, task: TaskId, attempt: u32) {
        let report = TaskReport {
            bucket_bytes: vec![1],
            ..TaskReport::default()
        };
        self.end(job, worker, task, attempt, TaskOutcome::Finished(report));
    }
}

/// Input locations as a launch carried them.
type Inputs = std::collections::HashMap<StageId, Vec<Option<WorkerId>>>;

/// A job of no-op stages (`inputs`, `tasks`).
fn noop_spec(stages: &[(&[StageId], usize)], request: Resources, timeout: Duration) -> JobSpec {
    JobSpec {
        stages: stages
            .iter()
            .map(|(inputs, tasks)| StageSpec {
                inputs: inputs.to_vec(),
                tasks: *tasks,
                plan: StagePlan::Noop,
            })
            .collect(),
        request,
        placement_timeout: timeout,
        pipelined: false,
        outline: Default::default(),
    }
}

fn fetch_failed(from: WorkerId) -> TaskOutcome {
    TaskOutcome::FetchFailed {
        from,
        cause: DataFusionError::Execution(format!("fetching from worker {from} failed")),
    }
}

/// The task of `stage` of `job` whose output `worker` holds.
fn done_on(h: &Harness, job: JobId, stage: StageId, worker: WorkerId) -> TaskId {
    let partition = h.scheduler.jobs[&job].tasks[stage]
        .iter()
        .position(|t| *t == super::job::TaskState::Done { worker })
        .expect("a task of the stage finished on the worker");
    TaskId { stage, partition }
}

/// Finishes every task launched so far, then returns the launches that followed.
fn finish_launched(h: &mut Harness, job: JobId) -> Vec<(WorkerId, TaskId, u32)> {
    let launched: Vec<_> = (0..h.inboxes.len())
        .flat_map(|w| h.launched(w).into_iter().map(move |(t, a, _)| (w, t, a)))
        .collect();
    for &(w, task, attempt) in &launched {
        h.finish(job, w, task, attempt);
    }
    (0..h.inboxes.len())
        .flat_map(|w| h.launched(w).into_iter().map(move |(t, a, _)| (w, t, a)))
        .collect()
}

#[test]
fn reports_about_a_peer_already_suspect_do_not_use_up_the_fetch_budget() {
    let mut h = Harness::new(2, 1000);
    // Stage 0 has one task per worker; stage 1 has many tasks that read both, all in
    // flight at once.
    let mut done = h.submit(1, &[(&[], 2), (&[0], 400)]);
    let consumers = finish_launched(&mut h, 1);
    let producer = done_on(&h, 1, 0, 0);
    let on_1: Vec<_> = consumers.iter().filter(|(w, ..)| *w == 1).collect();
    assert!(
        on_1.len() > MAX_FETCH_FAILURES as usize + 1,
        "{}",
        on_1.len()
    );
    // Worker 0 dies: every consumer on worker 1 fails to fetch from it.
    for &&(w, task, attempt) in &on_1 {
        h.end(1, w, task, attempt, fetch_failed(0));
    }
    assert!(done.try_recv().is_err(), "the job is still running");
    assert_eq!(h.scheduler.jobs[&1].fetch_failures, 1, "one loss");
    // Worker 0 is probed once and gets no more work while it is suspect; its lost
    // producer output is computed again on worker 1, and the consumers wait for it.
    assert_eq!(h.probes.try_recv().unwrap().0, 0);
    assert!(h.probes.try_recv().is_err(), "one probe per suspicion");
    assert!(h.launched(0).is_empty(), "nothing new on the suspect");
    let relaunched: Vec<_> = h.launched(1).into_iter().map(|(t, a, _)| (t, a)).collect();
    assert_eq!(
        relaunched.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        vec![producer]
    );
    // Once it is back, each consumer that failed runs again, once, on worker 1.
    h.finish(1, 1, producer, relaunched[0].1);
    let mut again: Vec<_> = h.launched(1).into_iter().map(|(t, ..)| t).collect();
    let mut failed: Vec<_> = on_1.iter().map(|(_, t, _)| *t).collect();
    again.sort_by_key(|t| t.partition);
    failed.sort_by_key(|t| t.partition);
    assert_eq!(again, failed);
}

#[test]
fn a_suspect_whose_port_answers_is_cleared_and_one_that_refuses_is_lost() {
    let mut h = Harness::new(2, 1);
    let _done = h.submit(1, &[(&[], 2), (&[0], 2)]);
    let consumers = finish_launched(&mut h, 1);
    let &(_, task, attempt) = consumers.iter().find(|(w, ..)| *w == 1).unwrap();
    h.end(1, 1, task, attempt, fetch_failed(0));
    assert_eq!(h.probes.try_recv().unwrap().0, 0);
    assert!(!h.scheduler.workers[0].usable());
    // A heartbeat alone does not clear it; an answering port and then a heartbeat do.
    let heartbeat = || Event::Heartbeat {
        worker: 0,
        usage: WorkerUsage::default(),
    };
    h.event(heartbeat());
    assert!(!h.scheduler.workers[0].usable());
    h.event(Event::Reachable(0));
    h.event(heartbeat());
    assert!(h.scheduler.workers[0].usable());
    // Worker 0 is suspected again, and this time its port refuses: it is lost.
    let (task, attempt, _) = h.launched(1).pop().unwrap();
    h.finish(1, 1, task, attempt);
    let consumers: Vec<_> = (0..2)
        .flat_map(|w| h.launched(w).into_iter().map(move |(t, a, _)| (w, t, a)))
        .collect();
    let &(w, task, attempt) = consumers.iter().find(|(_, t, _)| t.stage == 1).unwrap();
    h.end(1, w, task, attempt, fetch_failed(1 - w));
    assert_eq!(h.probes.try_recv().unwrap().0, 1 - w);
    assert_eq!(
        h.scheduler.jobs[&1].fetch_failures, 2,
        "two distinct losses"
    );
    h.event(Event::WorkerLost {
        worker: 1 - w,
        cause: "its data port refuses connections".into(),
    });
    let status = h.scheduler.status();
    assert!(!status.workers[1 - w].alive);
    assert!(status.workers[w].alive);
}

/// The job's failure: its kind and one-line message.
fn failure(done: &mut Done) -> (ErrorKind, String) {
    match done.try_recv() {
        Ok(Err(e)) => (kind_of(&e), failure_message(&e)),
        other => panic!("the job has not failed: {other:?}"),
    }
}

#[test]
fn a_task_whose_workers_keep_dying_stops_before_it_takes_more_down() {
    let mut h = Harness::new(6, 1);
    let mut done = h.submit(7, &[(&[], 1)]);
    let mut lost = Vec::new();
    for _ in 0..MAX_WORKER_CRASHES {
        let (worker, (task, _, _)) = (0..h.inboxes.len())
            .find_map(|w| h.launched(w).pop().map(|l| (w, l)))
            .expect("the task is launched again");
        assert_eq!(
            task,
            TaskId {
                stage: 0,
                partition: 0
            }
        );
        lost.push(worker);
        h.event(Event::WorkerLost {
            worker,
            cause: "out of memory".into(),
        });
    }
    let (kind, error) = failure(&mut done);
    assert_eq!(kind, ErrorKind::WorkerLost, "{error}");
    assert!(error.contains("stage 0 task 0 of job 7"), "{error}");
    assert!(error.contains(&format!("worker {}", lost[1])), "{error}");
    assert!(
        error.contains(&format!(
            "{MAX_WORKER_CRASHES} workers were lost while running it"
        )),
        "{error}"
    );
    assert!(error.contains("may be what crashes them"), "{error}");
    assert!(error.contains("out of memory"), "{error}");
    assert!(!error.contains('\n'), "{error}");
    // The workers left run the next job.
    let mut other = h.submit(8, &[(&[], 1)]);
    for w in 0..h.inboxes.len() {
        if lost.contains(&w) {
            continue;
        }
        for (task, attempt, _) in h.launched(w) {
            h.finish(8, w, task, attempt);
        }
    }
    assert!(other.try_recv().unwrap().is_ok(), "job 8 finished");
}

#[test]
fn a_failed_task_fails_its_job_naming_task_worker_and_cause() {
    let mut h = Harness::new(2, 1);
    let mut done = h.submit(3, &[(&[], 2)]);
    let (task, attempt, _) = h.launched(1).pop().unwrap();
    let cause = DataFusionError::Execution("division by zero".into());
    h.end(3, 1, task, attempt, TaskOutcome::Failed(cause));
    let (kind, error) = failure(&mut done);
    assert_eq!(kind, ErrorKind::Input, "the cause's kind");
    assert_eq!(
        error,
        format!(
            "stage 0 task {} of job 3 failed on worker 1: Execution error: division by zero",
            task.partition
        )
    );
    assert!(h.cancelled(0, 3), "the job's other task is stopped");
}

#[test]
fn cancelling_a_job_stops_it_on_every_worker_once() {
    let mut h = Harness::new(2, 1);
    let mut done = h.submit(4, &[(&[], 4)]);
    let (reply, mut answer) = oneshot::channel();
    h.event(Event::Cancel(4, reply));
    assert_eq!(answer.try_recv(), Ok(true));
    assert_eq!(
        failure(&mut done),
        (ErrorKind::Cancelled, "job 4 was cancelled".to_string())
    );
    assert!(h.cancelled(0, 4) && h.cancelled(1, 4));
    let (reply, mut answer) = oneshot::channel();
    h.event(Event::Cancel(4, reply));
    assert_eq!(answer.try_recv(), Ok(false), "no longer running");
}

#[test]
fn a_job_asking_for_a_resource_no_worker_offers_waits_then_fails() {
    let mut h = Harness::new(1, 1);
    let gpu = Resources::parse("gpu=1").unwrap();
    let mut done = h.submit_asking(5, &[(&[], 1)], gpu, Duration::ZERO);
    assert!(h.launched(0).is_empty());
    let waiting = h.scheduler.status().jobs[0].waiting.clone().unwrap();
    assert!(waiting.contains("no worker offers gpu=1"), "{waiting}");
    h.scheduler.fail_jobs_waiting_too_long();
    let (kind, error) = failure(&mut done);
    assert_eq!(kind, ErrorKind::Resources, "{error}");
    assert!(error.contains("no worker offers gpu=1"), "{error}");
    assert!(error.contains("shoal.task.placement_timeout"), "{error}");
}

#[test]
fn a_worker_joining_mid_job_gets_work_and_learns_its_peers() {
    let mut h = Harness::new(1, 1);
    let _done = h.submit(2, &[(&[], 4)]);
    assert_eq!(h.launched(0).len(), 1, "one slot, no prefetch");
    let id = h.join("127.0.0.1:9100");
    assert_eq!(id, 1);
    assert_eq!(h.launched(id).len(), 1, "the newcomer runs a task at once");
    let peers: Vec<_> = h.other[id]
        .iter()
        .filter_map(|m| match m {
            WorkerMsg::Peer(w, address) => Some((*w, address.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        peers,
        vec![
            (0, "127.0.0.1:9000".to_string()),
            (1, "127.0.0.1:9100".to_string())
        ]
    );
    h.launched(0);
    assert!(
        h.other[0]
            .iter()
            .any(|m| matches!(m, WorkerMsg::Peer(1, a) if a == "127.0.0.1:9100"))
    );
}

#[test]
fn a_panic_while_handling_one_job_fails_that_job_and_others_finish() {
    let mut h = Harness::new(1, 1);
    let mut broken = h.submit(1, &[(&[], 1)]);
    let mut healthy = h.submit(2, &[(&[], 1)]);
    // A bug: job 1's bookkeeping says its stage has no task left, so finishing its task
    // underflows.
    h.scheduler.jobs.get_mut(&1).unwrap().tasks_left[0] = 0;
    let (task, attempt, _) = h.launched(0).pop().unwrap();
    h.finish(1, 0, task, attempt);
    let (kind, error) = failure(&mut broken);
    assert_eq!(kind, ErrorKind::Internal);
    assert!(
        error.starts_with("the scheduler hit a bug while running job 1"),
        "{error}"
    );
    let (task, attempt, _) = h.launched(0).pop().expect("job 2 still runs");
    assert!(h.cancelled(0, 1));
    h.finish(2, 0, task, attempt);
    assert_eq!(healthy.try_recv().unwrap().unwrap().len(), 1);
}

#[test]
fn a_job_whose_stages_read_later_ones_is_refused() {
    let mut h = Harness::new(1, 1);
    let mut done = h.submit(1, &[(&[1], 1), (&[], 1)]);
    let (kind, error) = failure(&mut done);
    assert_eq!(kind, ErrorKind::Internal, "a planner bug, not the user's");
    assert!(error.contains("stage 0 reads stage 1"), "{error}");
    assert!(h.launched(0).is_empty());
}

/// The events published so far.
fn drain(events: &mut broadcast::Receiver<EventBatch>) -> Vec<JobEvent> {
    std::iter::from_fn(|| events.try_recv().ok())
        .flat_map(|batch| batch.to_vec())
        .collect()
}

#[test]
fn a_job_publishes_every_step_with_its_task_counts() {
    let mut h = Harness::new(1, 1);
    let mut events = h.scheduler.events().subscribe();
    let _done = h.submit(1, &[(&[], 1), (&[0], 1)]);
    let (task, attempt, _) = h.launched(0).pop().unwrap();
    let report = TaskReport {
        bucket_bytes: vec![10, 20],
        slot: 0,
        duration: Duration::from_millis(30),
        metrics: Vec::new(),
    };
    h.end(1, 0, task, attempt, TaskOutcome::Finished(report));
    let (consumer, attempt, _) = h.launched(0).pop().unwrap();
    h.finish(1, 0, consumer, attempt);
    let progress = |done| Progress {
        tasks_total: 2,
        tasks_done: done,
    };
    let kinds: Vec<(Progress, JobEventKind)> = drain(&mut events)
        .into_iter()
        .map(|e| {
            assert_eq!(e.job, 1);
            (e.progress, e.kind)
        })
        .collect();
    let producer = TaskId {
        stage: 0,
        partition: 0,
    };
    assert_eq!(
        kinds,
        vec![
            (
                progress(0),
                JobEventKind::Submitted {
                    stages: 2,
                    outline: Default::default(),
                },
            ),
            (progress(0), JobEventKind::StageStarted { stage: 0 }),
            (
                progress(0),
                JobEventKind::TaskStarted {
                    task: producer,
                    worker: 0,
                    attempt: 1
                }
            ),
            (
                progress(1),
                JobEventKind::TaskFinished {
                    task: producer,
                    worker: 0,
                    attempt: 1,
                    slot: 0,
                    duration: Duration::from_millis(30),
                    output_bytes: 30,
                    metrics: Default::default(),
                }
            ),
            (progress(1), JobEventKind::StageFinished { stage: 0 }),
            (progress(1), JobEventKind::StageStarted { stage: 1 }),
            (
                progress(1),
                JobEventKind::TaskStarted {
                    task: consumer,
                    worker: 0,
                    attempt: 1
                }
            ),
            (
                progress(2),
                JobEventKind::TaskFinished {
                    task: consumer,
                    worker: 0,
                    attempt: 1,
                    slot: 0,
                    duration: Duration::ZERO,
                    output_bytes: 1,
                    metrics: Default::default(),
                }
            ),
            (progress(2), JobEventKind::StageFinished { stage: 1 }),
            (progress(2), JobEventKind::Done),
        ]
    );
}

#[test]
fn failed_cancelled_and_abandoned_jobs_end_their_event_streams() {
    let mut h = Harness::new(1, 4);
    let mut events = h.scheduler.events().subscribe();
    let _failed = h.submit(1, &[(&[], 1)]);
    let _cancelled = h.submit(2, &[(&[], 1)]);
    let _abandoned = h.submit(3, &[(&[], 1)]);
    let launched = h.launched(0);
    let (task, attempt, _) = launched[0].clone();
    let cause = DataFusionError::Execution("boom".into());
    h.end(1, 0, task, attempt, TaskOutcome::Failed(cause));
    let (reply, _) = oneshot::channel();
    h.event(Event::Cancel(2, reply));
    h.event(Event::EndJob(3));
    let last: Vec<(u64, JobEventKind)> = drain(&mut events)
        .into_iter()
        .filter(|e| e.kind.is_final())
        .map(|e| (e.job, e.kind))
        .collect();
    assert_eq!(
        last,
        vec![
            (
                1,
                JobEventKind::Failed {
                    kind: ErrorKind::Input,
                    message: "stage 0 task 0 of job 1 failed on worker 0: Execution error: boom"
                        .into()
                }
            ),
            (2, JobEventKind::Cancelled),
            (3, JobEventKind::Cancelled),
        ]
    );
}

#[test]
fn fetches_and_spills_become_job_events_and_count_in_status() {
    let mut h = Harness::new(2, 1);
    let mut events = h.scheduler.events().subscribe();
    let _done = h.submit(1, &[(&[], 2)]);
    let before = h.scheduler.status().last_activity.unwrap();
    h.event(Event::Fetched {
        job: 1,
        from: 0,
        to: 1,
        bytes: 300,
    });
    h.event(Event::Spilled {
        job: 1,
        worker: 1,
        bytes: 5000,
        spills: 1,
    });
    h.event(Event::Spilled {
        job: 1,
        worker: 1,
        bytes: 1000,
        spills: 2,
    });
    let kinds: Vec<_> = drain(&mut events)
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| matches!(k, JobEventKind::Fetch { .. } | JobEventKind::Spill { .. }))
        .collect();
    assert_eq!(
        kinds,
        vec![
            JobEventKind::Fetch {
                from: 0,
                to: 1,
                bytes: 300
            },
            JobEventKind::Spill {
                worker: 1,
                bytes: 5000
            },
            JobEventKind::Spill {
                worker: 1,
                bytes: 1000
            },
        ]
    );
    let status = h.scheduler.status();
    assert_eq!(
        (status.workers[1].spilled_bytes, status.workers[1].spills),
        (0, 0),
        "the totals are the heartbeats'"
    );
    // A heartbeat carries the worker's own totals.
    h.event(Event::Heartbeat {
        worker: 1,
        usage: WorkerUsage {
            memory_used: 7,
            memory_stored: 5,
            disk_bytes: 3000,
            spilled_bytes: 6500,
            spills: 4,
        },
    });
    let status = h.scheduler.status();
    assert_eq!(
        (
            status.workers[1].memory_used,
            status.workers[1].memory_stored,
            status.workers[1].disk_bytes,
            status.workers[1].spilled_bytes,
            status.workers[1].spills
        ),
        (7, 5, 3000, 6500, 4)
    );
    // Task reports are activity; heartbeats are not.
    let (task, attempt, _) = h.launched(0).pop().unwrap();
    h.finish(1, 0, task, attempt);
    let after = h.scheduler.status().last_activity.unwrap();
    assert!(after >= before);
    h.event(Event::Heartbeat {
        worker: 0,
        usage: WorkerUsage::default(),
    });
    assert_eq!(h.scheduler.status().last_activity.unwrap(), after);
}

#[test]
fn an_output_a_suspect_reports_after_the_suspicion_is_computed_again_elsewhere() {
    let mut h = Harness::new(2, 2);
    let _done = h.submit(1, &[(&[], 4), (&[0], 1)]);
    let on_0 = h.launched(0);
    let on_1 = h.launched(1);
    assert_eq!((on_0.len(), on_1.len()), (2, 2));
    let (first, first_attempt, _) = on_0[0].clone();
    let (late, late_attempt, _) = on_0[1].clone();
    h.finish(1, 0, first, first_attempt);
    for (task, attempt, _) in on_1 {
        h.finish(1, 1, task, attempt);
    }
    // Another job's task could not fetch from worker 0: its finished output is computed
    // again on worker 1.
    let cause = DataFusionError::Execution("fetching from worker 0 failed".into());
    h.scheduler.suspect(0, &cause);
    h.scheduler.dispatch();
    let (again, again_attempt, _) = h.launched(1).pop().unwrap();
    assert_eq!(again, first);
    // A task that was already running on the suspect still finishes there...
    h.finish(1, 0, late, late_attempt);
    h.finish(1, 1, again, again_attempt);
    let (consumer, consumer_attempt, locations) = h.launched(1).pop().unwrap();
    assert_eq!(locations[&0][late.partition], Some(0));
    // ...and when the consumer cannot fetch it, that costs the job nothing, and it is
    // computed again on worker 1.
    h.end(1, 1, consumer, consumer_attempt, fetch_failed(0));
    assert_eq!(h.scheduler.jobs[&1].fetch_failures, 0);
    let relaunched: Vec<_> = h.launched(1).into_iter().map(|(t, ..)| t).collect();
    assert_eq!(relaunched, vec![late]);
    assert!(h.launched(0).is_empty());
}

mod usage;

mod silence;
