//! The JSON the API serves. `status_json` is also what `shoal status --format json`
//! prints and the Python session's `status()` returns: one schema everywhere.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use shoal_exec::{ClusterStatus, JobOutline, MetricUnit, StageOutline, WorkerStatus};

use crate::model::{JobRecord, StreamEntry};

/// A metric unit's name in the API.
pub fn unit_name(unit: MetricUnit) -> &'static str {
    match unit {
        MetricUnit::Count => "count",
        MetricUnit::Nanos => "nanoseconds",
        MetricUnit::Bytes => "bytes",
    }
}

pub(crate) fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One worker: id, address, alive, slots, resources offered and in use, group, memory limit and
/// use (of which task outputs stored in memory), tasks running and completed, bytes
/// spilled and spill files.
pub fn worker_json(w: &WorkerStatus) -> Value {
    let map = |r: &shoal_exec::Resources| -> serde_json::Map<String, Value> {
        r.iter().map(|(k, v)| (k.to_string(), json!(v))).collect()
    };
    json!({
        "id": w.id,
        "address": w.address,
        "alive": w.alive,
        "retiring": w.retiring,
        "slots": w.slots,
        "resources": map(&w.resources),
        "resources_in_use": map(&w.resources_in_use),
        "group": w.group,
        "memory_limit": w.memory_limit,
        "memory_used": w.memory_used,
        "memory_stored": w.memory_stored,
        "disk_bytes": w.disk_bytes,
        "tasks_running": w.tasks_running,
        "tasks_completed": w.tasks_completed,
        "spilled_bytes": w.spilled_bytes,
        "spills": w.spills,
    })
}

/// `status` as JSON: `workers` (see [`worker_json`]), `jobs` (id, task counts, whether
/// it waits for a worker), `last_activity` (seconds since the epoch) and
/// `event_loop_lag_seconds`.
pub fn status_json(status: &ClusterStatus) -> Value {
    let workers: Vec<Value> = status.workers.iter().map(worker_json).collect();
    let jobs: Vec<Value> = status
        .jobs
        .iter()
        .map(|j| {
            json!({
                "id": j.id,
                "tasks_total": j.tasks_total,
                "tasks_done": j.tasks_done,
                "waiting": j.waiting,
            })
        })
        .collect();
    let last_activity = status.last_activity.map(epoch_seconds);
    json!({
        "workers": workers,
        "jobs": jobs,
        "last_activity": last_activity,
        "event_loop_lag_seconds": status.event_loop_lag.as_secs_f64(),
    })
}

/// A job's outline: `label`, and `graph`, one entry per stage with its `inputs`, `tasks`
/// and `operators` (`[depth, text]` in pre-order, the numbering of operator metrics).
pub fn outline_json(outline: &JobOutline) -> Value {
    let graph: Vec<Value> = outline
        .stages
        .iter()
        .map(|s| json!({ "inputs": s.inputs, "tasks": s.tasks, "operators": s.operators }))
        .collect();
    json!({ "label": outline.label, "graph": graph })
}

/// An outline from [`outline_json`]'s form.
pub fn outline_from_json(v: &Value) -> Option<JobOutline> {
    let stages = v.get("graph")?.as_array()?.iter().map(|s| {
        let numbers = |key: &str| -> Option<Vec<usize>> {
            s.get(key)?
                .as_array()?
                .iter()
                .map(|i| i.as_u64().map(|i| i as usize))
                .collect()
        };
        let operators = s.get("operators")?.as_array()?.iter().map(|op| {
            let depth = op.get(0)?.as_u64()? as u32;
            Some((depth, op.get(1)?.as_str()?.to_string()))
        });
        Some(StageOutline {
            inputs: numbers("inputs")?,
            tasks: s.get("tasks")?.as_u64()? as usize,
            operators: operators.collect::<Option<_>>()?,
        })
    });
    Some(JobOutline {
        label: v.get("label")?.as_str()?.to_string(),
        stages: stages.collect::<Option<_>>()?,
    })
}

/// One job as the dashboard saw it: with `stages`, its stage graph (see
/// [`outline_json`]), per-stage totals and summed operator metrics too.
pub fn job_json(job: &JobRecord, now: SystemTime, stages: bool) -> Value {
    let mut value = json!({
        "id": job.id,
        "label": job.outline.label,
        "state": job.state.name(),
        "submitted": epoch_seconds(job.submitted),
        "ended": job.ended.map(epoch_seconds),
        "duration_seconds": job.duration(now).as_secs_f64(),
        "stages": job.stages,
        "tasks_total": job.tasks_total,
        "tasks_done": job.tasks_done,
        "rows": job.rows(),
        "output_bytes": job.output_bytes,
        "compute_seconds": job.compute_seconds,
        "transferred_bytes": job.transferred_bytes,
        "spilled_bytes": job.spilled_bytes,
        "error": job.error,
    });
    if stages {
        value["graph"] = outline_json(&job.outline)["graph"].take();
        value["operator_metrics"] = job
            .operators
            .iter()
            .map(|((stage, node, name), (total, unit))| {
                json!({
                    "stage": stage, "operator": node, "name": name, "value": total,
                    "unit": unit_name(*unit),
                })
            })
            .collect();
        value["stage_totals"] = job
            .stage_totals
            .iter()
            .map(|(stage, (tasks, seconds, bytes))| {
                json!({
                    "stage": stage,
                    "tasks_finished": tasks,
                    "compute_seconds": seconds,
                    "output_bytes": bytes,
                })
            })
            .collect();
    }
    value
}

/// One task-stream entry, with its cursor.
pub fn stream_entry_json(cursor: u64, entry: &StreamEntry) -> Value {
    match entry {
        StreamEntry::Task {
            job,
            stage,
            partition,
            worker,
            slot,
            attempt,
            ended,
            duration,
            output_bytes,
        } => json!({
            "cursor": cursor, "kind": "task", "job": job, "stage": stage,
            "partition": partition, "worker": worker, "slot": slot, "attempt": attempt,
            "start": epoch_seconds(*ended) - duration.as_secs_f64(),
            "end": epoch_seconds(*ended), "output_bytes": output_bytes,
        }),
        StreamEntry::Transfer {
            job,
            from,
            to,
            bytes,
            at,
        } => json!({
            "cursor": cursor, "kind": "transfer", "job": job, "from": from, "to": to,
            "bytes": bytes, "at": epoch_seconds(*at),
        }),
        StreamEntry::Spill {
            job,
            worker,
            bytes,
            at,
        } => json!({
            "cursor": cursor, "kind": "spill", "job": job, "worker": worker,
            "bytes": bytes, "at": epoch_seconds(*at),
        }),
        StreamEntry::Failure { job, message, at } => json!({
            "cursor": cursor, "kind": "failure", "job": job, "message": message,
            "at": epoch_seconds(*at),
        }),
    }
}

/// One job event as the Server-Sent Events stream sends it: the job, its task counts
/// and what happened (`kind` and the kind's fields).
pub fn event_json(event: &shoal_exec::JobEvent) -> Value {
    use shoal_exec::JobEventKind as K;
    let mut value = match &event.kind {
        K::Submitted { stages, outline } => {
            let mut value = outline_json(outline);
            value["kind"] = json!("submitted");
            value["stages"] = json!(stages);
            value
        }
        K::StageStarted { stage } => json!({ "kind": "stage_started", "stage": stage }),
        K::StageFinished { stage } => json!({ "kind": "stage_finished", "stage": stage }),
        K::TaskStarted {
            task,
            worker,
            attempt,
        } => json!({
            "kind": "task_started", "stage": task.stage, "partition": task.partition,
            "worker": worker, "attempt": attempt,
        }),
        K::TaskFinished {
            task,
            worker,
            attempt,
            slot,
            duration,
            output_bytes,
            metrics,
        } => json!({
            "kind": "task_finished", "stage": task.stage, "partition": task.partition,
            "worker": worker, "attempt": attempt, "slot": slot,
            "duration_seconds": duration.as_secs_f64(), "output_bytes": output_bytes,
            "metrics": metrics.iter().map(|m| json!([m.node, m.name, m.value, unit_name(m.unit)]))
                .collect::<Vec<_>>(),
        }),
        K::Done => json!({ "kind": "done" }),
        K::Failed { kind, message } => {
            json!({ "kind": "failed", "error_kind": kind.name(), "message": message })
        }
        K::Cancelled => json!({ "kind": "cancelled" }),
        K::Fetch { from, to, bytes } => {
            json!({ "kind": "fetch", "from": from, "to": to, "bytes": bytes })
        }
        K::Spill { worker, bytes } => json!({ "kind": "spill", "worker": worker, "bytes": bytes }),
    };
    value["job"] = json!(event.job);
    value["tasks_total"] = json!(event.progress.tasks_total);
    value["tasks_done"] = json!(event.progress.tasks_done);
    value
}
