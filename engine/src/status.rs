//! A cluster's status as JSON: the schema `shoal status --format json` prints and the
//! Python session's `status()` returns.

use shoal_exec::ClusterStatus;

/// `status` as JSON: `workers` (id, address, alive, slots, resources, memory limit and
/// use, tasks running and completed, spilled bytes), `jobs` (id, task counts, whether it
/// waits for a worker) and `last_activity` (seconds since the epoch).
pub fn status_json(status: &ClusterStatus) -> serde_json::Value {
    let workers: Vec<serde_json::Value> = status
        .workers
        .iter()
        .map(|w| {
            let resources: serde_json::Map<String, serde_json::Value> = w
                .resources
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                .collect();
            serde_json::json!({
                "id": w.id,
                "address": w.address,
                "alive": w.alive,
                "slots": w.slots,
                "resources": resources,
                "memory_limit": w.memory_limit,
                "memory_used": w.memory_used,
                "tasks_running": w.tasks_running,
                "tasks_completed": w.tasks_completed,
                "spilled_bytes": w.spilled_bytes,
            })
        })
        .collect();
    let jobs: Vec<serde_json::Value> = status
        .jobs
        .iter()
        .map(|j| {
            serde_json::json!({
                "id": j.id,
                "tasks_total": j.tasks_total,
                "tasks_done": j.tasks_done,
                "waiting": j.waiting,
            })
        })
        .collect();
    let last_activity = status
        .last_activity
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64());
    serde_json::json!({ "workers": workers, "jobs": jobs, "last_activity": last_activity })
}
