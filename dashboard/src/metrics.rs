//! `/metrics` in Prometheus' text format: the cluster from the status call (workers'
//! heartbeats, so one scrape of the scheduler covers every worker) and totals from the
//! job-event stream.

use std::fmt::Write;

use shoal_exec::ClusterStatus;

use crate::model::{Counters, DURATION_BUCKETS};

/// Appends one metric family: its help, type and samples (`labels`, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// A label value with Prometheus' escapes.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The text of `/metrics` for `status` and `counters`.
pub fn render(status: &ClusterStatus, counters: &Counters) -> String {
    let mut out = String::new();
    let alive = status.workers.iter().filter(|w| w.alive).count();
    let lost = status.workers.len() - alive;
    let gauge = |v: usize| v as f64;
    family(
        &mut out,
        "shoal_scheduler_workers",
        "gauge",
        "Workers by state.",
        &[
            ("state=\"alive\"".into(), gauge(alive)),
            ("state=\"lost\"".into(), gauge(lost)),
        ],
    );
    family(
        &mut out,
        "shoal_scheduler_workers_added_total",
        "counter",
        "Workers that joined.",
        &[(String::new(), gauge(status.workers.len()))],
    );
    family(
        &mut out,
        "shoal_scheduler_workers_removed_total",
        "counter",
        "Workers that were lost or left.",
        &[(String::new(), gauge(lost))],
    );
    let running: usize = status.workers.iter().map(|w| w.tasks_running).sum();
    // Tasks of running jobs not finished and not running: waiting for their inputs, a
    // slot or a resource.
    let unfinished: usize = status
        .jobs
        .iter()
        .map(|j| j.tasks_total.saturating_sub(j.tasks_done))
        .sum();
    family(
        &mut out,
        "shoal_scheduler_tasks",
        "gauge",
        "Tasks of running jobs by state.",
        &[
            ("state=\"running\"".into(), gauge(running)),
            (
                "state=\"waiting\"".into(),
                gauge(unfinished.saturating_sub(running)),
            ),
        ],
    );
    family(
        &mut out,
        "shoal_scheduler_tasks_finished_total",
        "counter",
        "Tasks that finished and stored their output.",
        &[(String::new(), counters.tasks_finished as f64)],
    );
    let kind = |k: &str| format!("kind=\"{}\"", escape(k));
    let seconds: Vec<(String, f64)> = counters
        .by_kind
        .iter()
        .map(|(k, (s, _))| (kind(k), *s))
        .collect();
    let bytes: Vec<(String, f64)> = counters
        .by_kind
        .iter()
        .map(|(k, (_, b))| (kind(k), *b as f64))
        .collect();
    family(
        &mut out,
        "shoal_scheduler_task_compute_seconds_total",
        "counter",
        "Seconds tasks ran on workers, by stage kind (its main operator).",
        &seconds,
    );
    family(
        &mut out,
        "shoal_scheduler_task_output_bytes_total",
        "counter",
        "Bytes of task output stored, by stage kind (its main operator).",
        &bytes,
    );
    family(
        &mut out,
        "shoal_scheduler_jobs",
        "gauge",
        "Jobs not yet ended.",
        &[(String::new(), gauge(status.jobs.len()))],
    );
    family(
        &mut out,
        "shoal_scheduler_jobs_submitted_total",
        "counter",
        "Jobs submitted.",
        &[(String::new(), counters.jobs_submitted as f64)],
    );
    family(
        &mut out,
        "shoal_scheduler_jobs_total",
        "counter",
        "Jobs by how they ended.",
        &[
            ("state=\"completed\"".into(), counters.jobs_completed as f64),
            ("state=\"failed\"".into(), counters.jobs_failed as f64),
            ("state=\"cancelled\"".into(), counters.jobs_cancelled as f64),
        ],
    );
    family(
        &mut out,
        "shoal_scheduler_event_loop_lag_seconds",
        "gauge",
        "How late the scheduler's event loop ran its last timer tick.",
        &[(String::new(), status.event_loop_lag.as_secs_f64())],
    );
    job_durations(&mut out, counters);
    workers(&mut out, status, counters);
    out
}

fn job_durations(out: &mut String, counters: &Counters) {
    let name = "shoal_scheduler_job_duration_seconds";
    let _ = writeln!(out, "# HELP {name} How long ended jobs took.");
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, count) in DURATION_BUCKETS.iter().zip(&counters.job_durations) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let total: u64 = counters.job_durations.iter().sum();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum {}", counters.job_duration_sum);
    let _ = writeln!(out, "{name}_count {total}");
}

fn workers(out: &mut String, status: &ClusterStatus, counters: &Counters) {
    let mut memory = Vec::new();
    let mut limit = Vec::new();
    let mut slots = Vec::new();
    let mut tasks = Vec::new();
    let mut completed = Vec::new();
    let mut spilled = Vec::new();
    let mut spills = Vec::new();
    let mut transfer = Vec::new();
    let mut resources = Vec::new();
    let mut cluster: std::collections::BTreeMap<(String, &str), f64> = Default::default();
    for w in status.workers.iter().filter(|w| w.alive) {
        let id = format!("worker=\"{}\",address=\"{}\"", w.id, escape(&w.address));
        let operators = w.memory_used.saturating_sub(w.memory_stored);
        memory.push((format!("{id},type=\"operators\""), operators as f64));
        memory.push((
            format!("{id},type=\"stored_outputs\""),
            w.memory_stored as f64,
        ));
        memory.push((format!("{id},type=\"spilled\""), w.disk_bytes as f64));
        limit.push((id.clone(), w.memory_limit as f64));
        slots.push((id.clone(), w.slots as f64));
        tasks.push((format!("{id},state=\"running\""), w.tasks_running as f64));
        completed.push((id.clone(), w.tasks_completed as f64));
        spilled.push((id.clone(), w.spilled_bytes as f64));
        spills.push((id.clone(), w.spills as f64));
        let sent = counters.sent_bytes.get(&w.id).copied().unwrap_or(0);
        let received = counters.received_bytes.get(&w.id).copied().unwrap_or(0);
        transfer.push((format!("{id},direction=\"out\""), sent as f64));
        transfer.push((format!("{id},direction=\"in\""), received as f64));
        for (state, held) in [("offered", &w.resources), ("in_use", &w.resources_in_use)] {
            for (name, amount) in held.iter() {
                let labels = format!("{id},resource=\"{}\",state=\"{state}\"", escape(name));
                resources.push((labels, amount));
                *cluster.entry((name.to_string(), state)).or_default() += amount;
            }
        }
    }
    let cluster: Vec<(String, f64)> = cluster
        .into_iter()
        .map(|((name, state), amount)| {
            let labels = format!("resource=\"{}\",state=\"{state}\"", escape(&name));
            (labels, amount)
        })
        .collect();
    family(
        out,
        "shoal_scheduler_resources",
        "gauge",
        "Named resources of the live workers, offered and in use by running tasks.",
        &cluster,
    );
    family(
        out,
        "shoal_worker_memory_bytes",
        "gauge",
        "Memory at the last heartbeat by type: operators and task outputs stored in memory (both in use), and task outputs spilled to disk (their in-memory size).",
        &memory,
    );
    family(
        out,
        "shoal_worker_memory_limit_bytes",
        "gauge",
        "Each worker's memory limit.",
        &limit,
    );
    family(out, "shoal_worker_slots", "gauge", "Task slots.", &slots);
    family(
        out,
        "shoal_worker_tasks",
        "gauge",
        "Tasks on the worker by state.",
        &tasks,
    );
    family(
        out,
        "shoal_worker_tasks_completed_total",
        "counter",
        "Tasks finished.",
        &completed,
    );
    family(
        out,
        "shoal_worker_spilled_bytes_total",
        "counter",
        "Bytes spilled to disk: task outputs, and operators' sort runs and hash tables.",
        &spilled,
    );
    family(
        out,
        "shoal_worker_spills_total",
        "counter",
        "Spill files written.",
        &spills,
    );
    family(
        out,
        "shoal_worker_transfer_bytes_total",
        "counter",
        "Task output bytes moved between workers, by direction.",
        &transfer,
    );
    family(
        out,
        "shoal_worker_resources",
        "gauge",
        "Named resources, offered and in use by running tasks.",
        &resources,
    );
}
