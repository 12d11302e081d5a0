//! Job events on the wire: the scheduler streams them to any client that asks.

use std::sync::Arc;
use std::time::Duration;

use shoal_planner::{ErrorKind, JobId, StageId, TaskId, WorkerId};

use super::proto::{self, cluster_event::Kind};
use crate::metrics::{metrics_from_proto, metrics_to_proto};
use crate::outline::JobOutline;
use crate::protocol::{JobEvent, JobEventKind, Progress};

fn task_ref(job: JobId, task: TaskId, attempt: u32) -> Option<proto::TaskRef> {
    Some(proto::TaskRef {
        job,
        stage: task.stage as u32,
        partition: task.partition as u32,
        attempt,
    })
}

fn task_of(task: Option<proto::TaskRef>) -> (TaskId, u32) {
    let task = task.unwrap_or_default();
    let id = TaskId {
        stage: task.stage as StageId,
        partition: task.partition as usize,
    };
    (id, task.attempt)
}

/// A failure's wire form (a task's or a job's).
pub fn failure_to_proto(kind: ErrorKind, message: &str) -> proto::Failed {
    proto::Failed {
        message: message.to_string(),
        kind: kind.name().to_string(),
        retryable: kind.retryable(),
        ..Default::default()
    }
}

/// A failure's kind and message from the wire; a kind this build does not know reads as
/// internal.
pub fn failure_from_proto(failed: &proto::Failed) -> (ErrorKind, String) {
    let kind = ErrorKind::from_name(&failed.kind).unwrap_or(ErrorKind::Internal);
    (kind, failed.message.clone())
}

/// The wire form of `event`.
pub fn event_to_proto(event: &JobEvent) -> proto::ClusterEvent {
    let job = event.job;
    let kind = match &event.kind {
        JobEventKind::Submitted { stages, .. } => Kind::Submitted(*stages as u32),
        JobEventKind::StageStarted { stage } => Kind::StageStarted(*stage as u32),
        JobEventKind::StageFinished { stage } => Kind::StageFinished(*stage as u32),
        JobEventKind::TaskStarted {
            task,
            worker,
            attempt,
        } => Kind::TaskStarted(proto::TaskStartedEvent {
            task: task_ref(job, *task, *attempt),
            worker: *worker as u64,
        }),
        JobEventKind::TaskFinished {
            task,
            worker,
            attempt,
            slot,
            duration,
            output_bytes,
            metrics,
        } => Kind::TaskFinished(proto::TaskFinishedEvent {
            task: task_ref(job, *task, *attempt),
            worker: *worker as u64,
            slot: *slot as u32,
            duration_secs: duration.as_secs_f64(),
            output_bytes: *output_bytes,
            metrics: metrics_to_proto(metrics),
        }),
        JobEventKind::Done => Kind::Done(true),
        JobEventKind::Failed { kind, message } => Kind::Failed(failure_to_proto(*kind, message)),
        JobEventKind::Cancelled => Kind::Cancelled(true),
        JobEventKind::Fetch { from, to, bytes } => Kind::Fetch(proto::TransferEvent {
            from_worker: *from as u64,
            to_worker: *to as u64,
            bytes: *bytes,
        }),
        JobEventKind::Spill { worker, bytes } => Kind::Spill(proto::SpillEvent {
            worker: *worker as u64,
            bytes: *bytes,
        }),
    };
    let outline = match &event.kind {
        JobEventKind::Submitted { outline, .. } => Some(outline.to_proto()),
        _ => None,
    };
    proto::ClusterEvent {
        job,
        tasks_total: event.progress.tasks_total as u32,
        tasks_done: event.progress.tasks_done as u32,
        kind: Some(kind),
        outline,
    }
}

/// The event a wire message describes; `None` for a message without a kind (from a newer
/// scheduler).
pub fn event_from_proto(event: proto::ClusterEvent) -> Option<JobEvent> {
    let kind = match event.kind? {
        Kind::Submitted(stages) => JobEventKind::Submitted {
            stages: stages as usize,
            outline: Arc::new(JobOutline::from_proto(
                event.outline.clone().unwrap_or_default(),
            )),
        },
        Kind::StageStarted(stage) => JobEventKind::StageStarted {
            stage: stage as StageId,
        },
        Kind::StageFinished(stage) => JobEventKind::StageFinished {
            stage: stage as StageId,
        },
        Kind::TaskStarted(started) => {
            let (task, attempt) = task_of(started.task);
            JobEventKind::TaskStarted {
                task,
                worker: started.worker as WorkerId,
                attempt,
            }
        }
        Kind::TaskFinished(finished) => {
            let (task, attempt) = task_of(finished.task);
            JobEventKind::TaskFinished {
                task,
                worker: finished.worker as WorkerId,
                attempt,
                slot: finished.slot as usize,
                duration: Duration::try_from_secs_f64(finished.duration_secs).unwrap_or_default(),
                output_bytes: finished.output_bytes,
                metrics: Arc::new(metrics_from_proto(finished.metrics)),
            }
        }
        Kind::Done(_) => JobEventKind::Done,
        Kind::Failed(failed) => {
            let (kind, message) = failure_from_proto(&failed);
            JobEventKind::Failed { kind, message }
        }
        Kind::Cancelled(_) => JobEventKind::Cancelled,
        Kind::Fetch(fetch) => JobEventKind::Fetch {
            from: fetch.from_worker as WorkerId,
            to: fetch.to_worker as WorkerId,
            bytes: fetch.bytes,
        },
        Kind::Spill(spill) => JobEventKind::Spill {
            worker: spill.worker as WorkerId,
            bytes: spill.bytes,
        },
    };
    Some(JobEvent {
        job: event.job,
        progress: Progress {
            tasks_total: event.tasks_total as usize,
            tasks_done: event.tasks_done as usize,
        },
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_kind_survives_the_wire() {
        let task = TaskId {
            stage: 2,
            partition: 5,
        };
        let kinds = [
            JobEventKind::Submitted {
                stages: 3,
                outline: Arc::new(JobOutline {
                    label: "select 1".into(),
                    stages: vec![crate::outline::StageOutline {
                        inputs: vec![],
                        tasks: 2,
                        operators: vec![(0, "ShuffleWriteExec".into())],
                    }],
                }),
            },
            JobEventKind::StageStarted { stage: 1 },
            JobEventKind::StageFinished { stage: 2 },
            JobEventKind::TaskStarted {
                task,
                worker: 4,
                attempt: 2,
            },
            JobEventKind::TaskFinished {
                task,
                worker: 4,
                attempt: 2,
                slot: 1,
                duration: Duration::from_millis(1500),
                output_bytes: 1 << 40,
                metrics: Arc::new(vec![crate::metrics::OperatorMetric {
                    node: 2,
                    name: "elapsed_compute".into(),
                    value: 12_345,
                    unit: crate::metrics::MetricUnit::Nanos,
                }]),
            },
            JobEventKind::Done,
            JobEventKind::Failed {
                kind: ErrorKind::WorkerLost,
                message: "stage 0 task 1 of job 9 failed on worker 0: boom".into(),
            },
            JobEventKind::Cancelled,
            JobEventKind::Fetch {
                from: 1,
                to: 3,
                bytes: 4096,
            },
            JobEventKind::Spill {
                worker: 2,
                bytes: 1 << 33,
            },
        ];
        for kind in kinds {
            let event = JobEvent {
                job: 9,
                progress: Progress {
                    tasks_total: 12,
                    tasks_done: 7,
                },
                kind,
            };
            assert_eq!(event_from_proto(event_to_proto(&event)), Some(event));
        }
    }
}
