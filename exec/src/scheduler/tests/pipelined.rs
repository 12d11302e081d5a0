//! Pipelined exchanges: a stage starts once every task of its inputs is placed, its
//! early tasks hear where each input finished, and they start over when an input task
//! must run again.

use shoal_planner::{JobId, Resources, StageId, TaskId, WorkerId};
use tokio::sync::oneshot;

use super::{Done, Harness, noop_spec};
use crate::protocol::{Event, JobEventKind, WorkerMsg};

impl Harness {
    /// Like `submit`, for a job whose stages may start while their inputs run.
    fn submit_pipelined(&mut self, job: JobId, stages: &[(&[StageId], usize)]) -> Done {
        let (done, rx) = oneshot::channel();
        let mut spec = noop_spec(
            stages,
            Resources::default(),
            std::time::Duration::from_secs(60),
        );
        spec.pipelined = true;
        self.event(Event::Submit {
            job,
            spec: Box::new(spec),
            done,
            relocated: None,
        });
        rx
    }

    /// The `Located` news `worker` was sent (reads its commands first).
    fn located(&mut self, worker: WorkerId) -> Vec<(TaskId, WorkerId)> {
        self.launched(worker);
        self.other[worker]
            .iter()
            .filter_map(|m| match m {
                WorkerMsg::Located { task, worker, .. } => Some((*task, *worker)),
                _ => None,
            })
            .collect()
    }

    /// The runs `worker` was told to stop (reads its commands first).
    fn stopped(&mut self, worker: WorkerId) -> Vec<(TaskId, u32)> {
        self.launched(worker);
        self.other[worker]
            .iter()
            .filter_map(|m| match m {
                WorkerMsg::CancelTask(_, task, attempt) => Some((*task, *attempt)),
                _ => None,
            })
            .collect()
    }
}

fn task(stage: StageId, partition: usize) -> TaskId {
    TaskId { stage, partition }
}

#[test]
fn a_consumer_starts_once_every_producer_task_is_placed_and_hears_where_each_finished() {
    let mut h = Harness::new(2, 2);
    let mut done = h.submit_pipelined(1, &[(&[], 2), (&[0], 2)]);
    let on_0 = h.launched(0);
    let on_1 = h.launched(1);
    // Each worker got a producer and, behind it, a consumer that knows no input yet.
    let mut launched: Vec<_> = on_0.iter().chain(&on_1).map(|(t, ..)| *t).collect();
    launched.sort();
    assert_eq!(launched, [task(0, 0), task(0, 1), task(1, 0), task(1, 1)]);
    for (t, _, inputs) in on_0.iter().chain(&on_1) {
        if t.stage == 1 {
            assert_eq!(inputs[&0], [None, None], "{t}");
        }
    }
    let started = h.scheduler.jobs[&1].stage_started[1];
    assert!(
        started,
        "the consumer stage started before its input finished"
    );
    let producer = |on: &[(TaskId, u32, super::Inputs)]| {
        on.iter()
            .find(|(t, ..)| t.stage == 0)
            .map(|(t, a, _)| (*t, *a))
            .unwrap()
    };
    let (p0, a0) = producer(&on_0);
    let (p1, a1) = producer(&on_1);
    h.finish(1, 0, p0, a0);
    // Both workers run a consumer: both hear where the first producer's output is.
    assert_eq!(h.located(0), [(p0, 0)]);
    assert_eq!(h.located(1), [(p0, 0)]);
    h.finish(1, 1, p1, a1);
    assert_eq!(h.located(0), [(p0, 0), (p1, 1)]);
    assert!(!h.scheduler.jobs[&1].stage_done[0] || h.scheduler.jobs[&1].early[1].is_empty());
    for (w, on) in [(0, &on_0), (1, &on_1)] {
        for (t, a, _) in on.iter().filter(|(t, ..)| t.stage == 1) {
            h.finish(1, w, *t, *a);
        }
    }
    assert!(done.try_recv().unwrap().is_ok());
}

#[test]
fn a_consumer_waits_while_a_producer_task_is_not_placed() {
    // One worker, no prefetch: the second producer waits for the first to end, and so
    // does the consumer.
    let mut h = Harness::new(1, 0);
    let _done = h.submit_pipelined(1, &[(&[], 2), (&[0], 1)]);
    let first = h.launched(0);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0.stage, 0);
    assert!(!h.scheduler.jobs[&1].stage_started[1]);
    h.finish(1, 0, first[0].0, first[0].1);
    let second = h.launched(0);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].0, task(0, 1));
    // Now every producer task is placed: the consumer is ready, behind it.
    assert!(h.scheduler.jobs[&1].stage_started[1]);
    h.finish(1, 0, second[0].0, second[0].1);
    let consumer = h.launched(0);
    assert_eq!(consumer.len(), 1);
    assert_eq!(
        consumer[0].2[&0],
        [Some(0), Some(0)],
        "placed after its inputs: all known"
    );
}

#[test]
fn early_consumers_start_over_when_a_producer_must_run_again() {
    let mut h = Harness::new(2, 2);
    let mut events = h.scheduler.events().subscribe();
    let mut done = h.submit_pipelined(1, &[(&[], 2), (&[0], 2)]);
    let on_0 = h.launched(0);
    let on_1 = h.launched(1);
    let consumers: Vec<(WorkerId, TaskId, u32)> = [(0, &on_0), (1, &on_1)]
        .into_iter()
        .flat_map(|(w, on)| {
            on.iter()
                .filter(|(t, ..)| t.stage == 1)
                .map(move |(t, a, _)| (w, *t, *a))
        })
        .collect();
    assert_eq!(consumers.len(), 2);
    let (p0, a0, _) = on_0.iter().find(|(t, ..)| t.stage == 0).unwrap().clone();
    h.finish(1, 0, p0, a0);
    // Worker 1 dies running the other producer: it must run again, and the consumers
    // that wait for it could hold the slot it needs. They are stopped...
    h.event(Event::WorkerLost {
        worker: 1,
        cause: "killed".into(),
    });
    let relaunched = h.launched(0);
    let stopped = h.stopped(0);
    let on_0_consumer: Vec<_> = consumers
        .iter()
        .filter(|(w, ..)| *w == 0)
        .map(|(_, t, a)| (*t, *a))
        .collect();
    assert_eq!(
        stopped, on_0_consumer,
        "the live worker's early consumer stops"
    );
    // ... the producer runs again on the worker left, ahead of them, and then they do,
    // as a new attempt (the stopped run's report is told apart by its number).
    let order: Vec<TaskId> = relaunched.iter().map(|(t, ..)| *t).collect();
    assert_eq!(order[0].stage, 0, "the producer first: {order:?}");
    assert!(order[1..].iter().all(|t| t.stage == 1), "{order:?}");
    let consumer_starts = super::drain(&mut events)
        .into_iter()
        .filter(|e| matches!(e.kind, JobEventKind::StageStarted { stage: 1 }))
        .count();
    assert_eq!(
        consumer_starts, 2,
        "started early, and again after the loss"
    );
    for (t, a, inputs) in &relaunched {
        if t.stage == 1 {
            assert_eq!(*a, 2, "a restart is a new attempt");
            assert_eq!(inputs[&0][p0.partition], Some(0));
        }
    }
    for (t, a, _) in relaunched {
        h.finish(1, 0, t, a);
    }
    let more = h.run_until_quiet(1);
    assert!(more.iter().all(|(w, _)| *w == 0), "{more:?}");
    assert!(done.try_recv().unwrap().is_ok());
}

#[test]
fn cancelling_a_job_stops_its_early_tasks_too() {
    let mut h = Harness::new(1, 4);
    let mut done = h.submit_pipelined(1, &[(&[], 1), (&[0], 1)]);
    assert_eq!(h.launched(0).len(), 2, "producer and early consumer");
    let (reply, _running) = oneshot::channel();
    h.event(Event::Cancel(1, reply));
    assert!(h.cancelled(0, 1));
    assert!(done.try_recv().unwrap().is_err());
}

#[test]
fn a_stage_queued_early_waits_again_when_its_input_starts_over() {
    // Two workers with room for two tasks each: stage 0 and the early stage 1 fill them,
    // and stage 2 (started early too: every stage 1 task is placed) waits in the queue.
    let mut h = Harness::new(2, 2);
    let mut done = h.submit_pipelined(1, &[(&[], 2), (&[0], 2), (&[1], 1)]);
    let on_0 = h.launched(0);
    assert_eq!(on_0.len() + h.launched(1).len(), 4);
    assert!(h.scheduler.jobs[&1].stage_started[2]);
    // Worker 1 dies: its stage 0 task must run again, so stage 1's early task on worker
    // 0 stops, and stage 2 must not take the room the stage 0 task needs.
    h.event(Event::WorkerLost {
        worker: 1,
        cause: "killed".into(),
    });
    let state = &h.scheduler.jobs[&1];
    assert!(!state.stage_started[2], "stage 2 waits again");
    assert_eq!(state.tasks[2][0], super::super::job::TaskState::Waiting);
    let relaunched = h.launched(0);
    assert!(
        relaunched.iter().all(|(t, ..)| t.stage != 2),
        "{relaunched:?}"
    );
    for (t, a, _) in on_0.into_iter().filter(|(t, ..)| t.stage == 0) {
        h.finish(1, 0, t, a);
    }
    for (t, a, _) in relaunched {
        h.finish(1, 0, t, a);
    }
    h.run_until_quiet(1);
    assert!(done.try_recv().unwrap().is_ok());
}
