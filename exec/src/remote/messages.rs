//! Control-plane messages from workers and clients, checked and turned into the
//! scheduler's events: the gRPC service and the offline scheduler (`offline.rs`) share
//! these, so what fuzzing reaches is what the service runs.

use std::sync::Arc;
use std::time::Duration;

use shoal_planner::{StageId, TaskId, WorkerId, shoal_err};
use tonic::Status;

use super::events::failure_from_proto;
use super::proto;
use super::{PROTOCOL_VERSION, resources_from_proto};
use crate::outline::JobOutline;
use crate::protocol::{
    EncodedStage, Event, JobSpec, StagePlan, StageSpec, TaskOutcome, TaskReport, WorkerStatus,
    WorkerUsage,
};

/// Tasks one submitted job may have (and stages, and stage inputs): the scheduler keeps
/// state per task and stage, so a job of billions (a malformed or hostile request)
/// would exhaust its memory.
pub const MAX_JOB_TASKS: u64 = 1 << 22;

/// A worker's registration, checked: it must speak this scheduler's protocol. Returns
/// the worker as the scheduler sees it and its data address.
pub(crate) fn registration(register: proto::Register) -> Result<(WorkerStatus, String), Status> {
    if register.protocol_version != PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "the worker speaks protocol version {}, this scheduler speaks {PROTOCOL_VERSION}: \
             run the same Shoal version everywhere",
            register.protocol_version
        )));
    }
    let info = WorkerStatus {
        address: register.flight_address.clone(),
        slots: register.slots.max(1) as usize,
        resources: resources_from_proto(&register.resources),
        memory_limit: register.memory_limit,
        group: register.group,
        ..Default::default()
    };
    Ok((info, register.flight_address))
}

/// The scheduler events of one batch of outcomes and heartbeats from worker `id`.
pub(crate) fn batch_events(id: WorkerId, batch: proto::WorkerBatch) -> Vec<Event> {
    let mut events = Vec::new();
    if let Some(heartbeat) = batch.heartbeat {
        events.push(Event::Heartbeat {
            worker: id,
            usage: WorkerUsage {
                memory_used: heartbeat.memory_used,
                memory_stored: heartbeat.memory_stored,
                disk_bytes: heartbeat.disk_bytes,
                spilled_bytes: heartbeat.spilled_bytes,
                spills: heartbeat.spills,
            },
        });
    }
    events.extend(batch.fetched.into_iter().map(|fetched| Event::Fetched {
        job: fetched.job,
        from: fetched.from_worker as WorkerId,
        to: id,
        bytes: fetched.bytes,
    }));
    events.extend(batch.spilled.into_iter().map(|spilled| Event::Spilled {
        job: spilled.job,
        worker: id,
        bytes: spilled.bytes,
        spills: spilled.spills,
    }));
    for ended in batch.ended {
        let Some(task) = ended.task else { continue };
        let outcome = match ended.outcome {
            Some(proto::task_ended::Outcome::Finished(f)) => TaskOutcome::Finished(TaskReport {
                bucket_bytes: f.bucket_bytes,
                slot: f.slot as usize,
                duration: Duration::try_from_secs_f64(f.duration_secs).unwrap_or_default(),
                metrics: crate::metrics::metrics_from_proto(f.metrics),
            }),
            Some(proto::task_ended::Outcome::Failed(f)) => {
                let (kind, message) = failure_from_proto(&f);
                let cause = shoal_err(kind, message);
                if f.fetch_failed {
                    TaskOutcome::FetchFailed {
                        from: f.fetch_worker as WorkerId,
                        cause,
                    }
                } else {
                    TaskOutcome::Failed(cause)
                }
            }
            Some(proto::task_ended::Outcome::Cancelled(_)) | None => TaskOutcome::Cancelled,
        };
        events.push(Event::TaskEnded {
            job: task.job,
            task: TaskId {
                stage: task.stage as StageId,
                partition: task.partition as usize,
            },
            attempt: task.attempt,
            worker: id,
            outcome,
        });
    }
    events
}

/// A client's report that it could not read a result partition.
pub(crate) fn result_lost_event(lost: proto::ResultLostRequest) -> Event {
    Event::ResultLost {
        job: lost.job,
        partition: lost.partition as usize,
        worker: lost.worker_id as WorkerId,
        cause: lost.cause,
        read: lost.read.iter().map(|&p| p as usize).collect(),
    }
}

/// Turns a client's job into the scheduler's form, checking that it is well formed.
pub(crate) fn job_spec(submit: proto::SubmitJob) -> Result<JobSpec, Status> {
    if submit.stages.is_empty() {
        return Err(Status::invalid_argument("a job needs at least one stage"));
    }
    let tasks: u64 = submit.stages.iter().map(|s| u64::from(s.tasks)).sum();
    let edges: u64 = submit.stages.iter().map(|s| s.inputs.len() as u64).sum();
    let stages = submit.stages.len() as u64;
    for (what, count) in [
        ("tasks", tasks),
        ("stages", stages),
        ("stage inputs", edges),
    ] {
        if count > MAX_JOB_TASKS {
            return Err(Status::invalid_argument(format!(
                "a job may have at most {MAX_JOB_TASKS} {what}, this one has {count}"
            )));
        }
    }
    let config = Arc::new(submit.config);
    let mut stages = Vec::with_capacity(submit.stages.len());
    for stage in submit.stages {
        let inputs: Vec<StageId> = stage.inputs.iter().map(|&i| i as StageId).collect();
        let plan = if stage.noop {
            StagePlan::Noop
        } else {
            StagePlan::Encoded(Arc::new(EncodedStage {
                plan: stage.plan,
                config: Arc::clone(&config),
            }))
        };
        stages.push(StageSpec {
            inputs,
            tasks: stage.tasks as usize,
            plan,
        });
    }
    let placement_timeout = Duration::try_from_secs_f64(submit.placement_timeout_secs)
        .unwrap_or(Duration::from_secs(60));
    let spec = JobSpec {
        stages,
        request: resources_from_proto(&submit.resources),
        placement_timeout,
        pipelined: submit.pipelined,
        outline: Arc::new(JobOutline::default()),
    };
    let outline = JobOutline::from_proto(submit.outline.unwrap_or_default())
        .fitted(spec.stages.iter().map(|s| (&s.inputs[..], s.tasks)));
    let spec = JobSpec {
        outline: Arc::new(outline),
        ..spec
    };
    spec.check()
        .map_err(|e| Status::invalid_argument(e.message().to_string()))?;
    Ok(spec)
}
