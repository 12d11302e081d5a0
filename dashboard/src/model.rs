//! What the dashboard remembers, built only from the cluster's job-event stream: jobs
//! (running and recently finished), a bounded ring of task-stream entries with a cursor,
//! and the counters `/metrics` reports. Updating it is O(1) per event.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use std::sync::Arc;

use shoal_exec::{JobEvent, JobEventKind, JobOutline, MetricUnit};
use shoal_exec::{JobId, WorkerId};

/// Finished jobs kept for the jobs page and API; older ones are forgotten first.
pub const FINISHED_JOBS_KEPT: usize = 1000;
/// Forgotten jobs remembered as such (job ids grow, so the smallest go first).
const FORGOTTEN_KEPT: usize = 10_000;
/// Task-stream entries kept; a reader further behind starts at the oldest one kept.
pub const TASK_STREAM_KEPT: usize = 20_000;
/// How long a running job must be missing from the scheduler's status before the
/// dashboard takes it as ended (see [`Model::reconcile`]).
pub const MISSING_FOR: Duration = Duration::from_secs(1);
/// Upper bounds (seconds) of the job-duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0];

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Accepted, not ended.
    Running,
    /// Its results were ready.
    Done,
    /// It failed.
    Failed,
    /// It was cancelled.
    Cancelled,
    /// The scheduler no longer runs it, but the dashboard missed the event that said
    /// how it ended (a follower that fell behind skips events).
    Ended,
}

impl JobState {
    /// The state's name in the API.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Ended => "ended",
        }
    }
}

/// One job as the dashboard saw it.
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// The job.
    pub id: JobId,
    /// Where it is.
    pub state: JobState,
    /// When its first event arrived.
    pub submitted: SystemTime,
    /// When it ended.
    pub ended: Option<SystemTime>,
    /// Stages in its graph (0 when the dashboard joined after it started).
    pub stages: usize,
    /// Its label and stage graph (empty when the dashboard joined after it started).
    pub outline: Arc<JobOutline>,
    /// Tasks in the job.
    pub tasks_total: usize,
    /// Tasks finished.
    pub tasks_done: usize,
    /// Bytes of task output stored.
    pub output_bytes: u64,
    /// Task seconds spent on workers.
    pub compute_seconds: f64,
    /// Bytes fetched between workers.
    pub transferred_bytes: u64,
    /// Bytes spilled to disk.
    pub spilled_bytes: u64,
    /// The error of a failed job.
    pub error: Option<String>,
    /// Since when the scheduler's status has not listed it while it runs here.
    missing_since: Option<SystemTime>,
    /// Per stage: (tasks finished, compute seconds, output bytes).
    pub stage_totals: BTreeMap<usize, (usize, f64, u64)>,
    /// Each stage's kind (see [`stage_kind`]).
    pub kinds: Vec<Arc<str>>,
    /// Operator metrics summed over the finished tasks: (stage, operator in pre-order,
    /// metric name) to (value, unit).
    pub operators: BTreeMap<(usize, u32, String), (u64, MetricUnit)>,
}

impl JobRecord {
    fn new(id: JobId, now: SystemTime) -> Self {
        Self {
            id,
            state: JobState::Running,
            submitted: now,
            ended: None,
            stages: 0,
            outline: Arc::default(),
            tasks_total: 0,
            tasks_done: 0,
            output_bytes: 0,
            compute_seconds: 0.0,
            transferred_bytes: 0,
            spilled_bytes: 0,
            error: None,
            missing_since: None,
            stage_totals: BTreeMap::new(),
            kinds: Vec::new(),
            operators: BTreeMap::new(),
        }
    }

    /// Rows of its answer so far: what the operator under the result stage's writer
    /// output, summed over its tasks (`None` before any reported it).
    pub fn rows(&self) -> Option<u64> {
        let result = self.stages.checked_sub(1)?;
        self.operators
            .get(&(result, 1, "output_rows".to_string()))
            .map(|(rows, _)| *rows)
    }

    /// How long it ran (until now while it runs).
    pub fn duration(&self, now: SystemTime) -> Duration {
        self.ended
            .unwrap_or(now)
            .duration_since(self.submitted)
            .unwrap_or_default()
    }
}

/// One entry of the task stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEntry {
    /// A task finished on `worker`'s `slot`, ending at `ended` after `duration`.
    Task {
        /// The job.
        job: JobId,
        /// Its stage.
        stage: usize,
        /// Its partition.
        partition: usize,
        /// The worker.
        worker: WorkerId,
        /// The worker's slot.
        slot: usize,
        /// Which attempt.
        attempt: u32,
        /// When it ended (as the dashboard heard).
        ended: SystemTime,
        /// How long it ran.
        duration: Duration,
        /// Bytes it stored.
        output_bytes: u64,
    },
    /// `to` fetched `bytes` from `from`.
    Transfer {
        /// The job.
        job: JobId,
        /// The serving worker.
        from: WorkerId,
        /// The fetching worker.
        to: WorkerId,
        /// Bytes moved.
        bytes: u64,
        /// When it was reported.
        at: SystemTime,
    },
    /// `worker` spilled `bytes` of the job's outputs.
    Spill {
        /// The job.
        job: JobId,
        /// The worker.
        worker: WorkerId,
        /// Bytes spilled.
        bytes: u64,
        /// When it was reported.
        at: SystemTime,
    },
    /// The job failed.
    Failure {
        /// The job.
        job: JobId,
        /// The error, one line.
        message: String,
        /// When.
        at: SystemTime,
    },
}

/// Counters that only grow, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Jobs seen starting.
    pub jobs_submitted: u64,
    /// Jobs that gave results.
    pub jobs_completed: u64,
    /// Jobs that failed.
    pub jobs_failed: u64,
    /// Jobs cancelled.
    pub jobs_cancelled: u64,
    /// Task seconds on workers.
    pub task_compute_seconds: f64,
    /// Task output bytes stored.
    pub task_output_bytes: u64,
    /// Tasks finished.
    pub tasks_finished: u64,
    /// Tasks started (attempts).
    pub tasks_started: u64,
    /// Ended jobs per duration bucket (the last entry: above every bound).
    pub job_durations: [u64; DURATION_BUCKETS.len() + 1],
    /// Sum of ended jobs' durations, in seconds.
    pub job_duration_sum: f64,
    /// Bytes each worker sent to peers.
    pub sent_bytes: HashMap<WorkerId, u64>,
    /// Bytes each worker fetched from peers.
    pub received_bytes: HashMap<WorkerId, u64>,
    /// Bytes each worker spilled.
    pub spilled_bytes: HashMap<WorkerId, u64>,
    /// Per stage kind (see [`stage_kind`]): task seconds and output bytes.
    pub by_kind: BTreeMap<Arc<str>, (f64, u64)>,
}

/// Wrappers a stage's kind looks past.
const WRAPPERS: [&str; 5] = [
    "ShuffleWriteExec",
    "CooperativeExec",
    "CoalesceBatchesExec",
    "ProjectionExec",
    "CoalescePartitionsExec",
];

/// A stage's kind: the name of its first operator under the shuffle writer that is not a
/// wrapper (`AggregateExec`, `HashJoinExec`, `DataSourceExec`, …), `unknown` without an
/// outline. Operator names are identifiers, so the kinds stay few.
pub fn stage_kind(stage: &shoal_exec::StageOutline) -> Arc<str> {
    let name = |text: &str| -> String {
        text.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect()
    };
    let names: Vec<String> = stage.operators.iter().map(|(_, t)| name(t)).collect();
    let kind = names
        .iter()
        .find(|n| !n.is_empty() && !WRAPPERS.contains(&n.as_str()))
        .or_else(|| names.first())
        .filter(|n| !n.is_empty())
        .map_or("unknown", String::as_str);
    Arc::from(kind)
}

/// Jobs, the task stream and counters, from the events seen so far.
#[derive(Debug, Default)]
pub struct Model {
    /// Jobs by id: every running one and the last [`FINISHED_JOBS_KEPT`] finished ones.
    pub jobs: BTreeMap<JobId, JobRecord>,
    finished: VecDeque<JobId>,
    /// Ids of the jobs forgotten last (at most [`FORGOTTEN_KEPT`]): a late event of one
    /// does not start a new record.
    forgotten: std::collections::BTreeSet<JobId>,
    stream: VecDeque<(u64, StreamEntry)>,
    next_cursor: u64,
    /// Totals since the dashboard started.
    pub counters: Counters,
}

impl Model {
    /// Takes in one event, received at `now`. A job's record starts with its first
    /// event that says it runs (one that ends it, or a late transfer report, does not
    /// bring back a record already forgotten).
    pub fn apply(&mut self, event: &JobEvent, now: SystemTime) {
        let starts = matches!(
            event.kind,
            JobEventKind::Submitted { .. }
                | JobEventKind::StageStarted { .. }
                | JobEventKind::TaskStarted { .. }
                | JobEventKind::TaskFinished { .. }
        );
        if starts && !self.jobs.contains_key(&event.job) && !self.forgotten.contains(&event.job) {
            self.jobs.insert(event.job, JobRecord::new(event.job, now));
        }
        let entry = self.count(event, now);
        if let Some(job) = self.jobs.get_mut(&event.job) {
            job.tasks_total = event.progress.tasks_total;
            job.tasks_done = event.progress.tasks_done;
            record(job, &event.kind);
            if let JobEventKind::TaskFinished {
                task,
                duration,
                output_bytes,
                ..
            } = &event.kind
            {
                let kind = job.kinds.get(task.stage).cloned();
                let kind = kind.unwrap_or_else(|| Arc::from("unknown"));
                let total = self.counters.by_kind.entry(kind).or_default();
                total.0 += duration.as_secs_f64();
                total.1 = total.1.saturating_add(*output_bytes);
            }
            if event.kind.is_final() && job.ended.is_none() {
                self.end(event.job, now);
            }
        }
        if let Some(entry) = entry {
            self.stream.push_back((self.next_cursor, entry));
            self.next_cursor += 1;
            while self.stream.len() > TASK_STREAM_KEPT {
                self.stream.pop_front();
            }
        }
    }

    /// Job `id` ended at `at`: its duration is counted, and the oldest finished jobs past
    /// [`FINISHED_JOBS_KEPT`] are forgotten.
    fn end(&mut self, id: JobId, at: SystemTime) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.ended = Some(at);
        let seconds = job.duration(at).as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(DURATION_BUCKETS.len());
        self.counters.job_durations[bucket] += 1;
        self.counters.job_duration_sum += seconds;
        self.finished.push_back(id);
        while self.finished.len() > FINISHED_JOBS_KEPT {
            if let Some(old) = self.finished.pop_front() {
                self.jobs.remove(&old);
                self.forgotten.insert(old);
                if self.forgotten.len() > FORGOTTEN_KEPT {
                    self.forgotten.pop_first();
                }
            }
        }
    }

    /// Whether any job runs as far as the dashboard knows.
    pub fn has_running_jobs(&self) -> bool {
        self.jobs.len() > self.finished.len()
    }

    /// Checks the jobs that run here against `running`, the jobs the scheduler's status
    /// listed at `now`. A job missing from lists at least [`MISSING_FOR`] apart ended
    /// without the dashboard hearing how: it is marked [`JobState::Ended`] at the first
    /// list that missed it. (One list is not enough: its end may still be on its way.)
    pub fn reconcile(&mut self, running: &[JobId], now: SystemTime) {
        let running: std::collections::HashSet<JobId> = running.iter().copied().collect();
        let mut gone = Vec::new();
        for job in self.jobs.values_mut() {
            if job.state != JobState::Running || running.contains(&job.id) {
                job.missing_since = None;
                continue;
            }
            match job.missing_since {
                None => job.missing_since = Some(now),
                Some(since) if now.duration_since(since).unwrap_or_default() >= MISSING_FOR => {
                    job.state = JobState::Ended;
                    gone.push((job.id, since));
                }
                Some(_) => {}
            }
        }
        for (id, since) in gone {
            self.end(id, since);
        }
    }

    /// Adds `event` to the counters; the task-stream entry it makes, if any.
    fn count(&mut self, event: &JobEvent, now: SystemTime) -> Option<StreamEntry> {
        let c = &mut self.counters;
        let add = |total: &mut u64, n: u64| *total = total.saturating_add(n);
        match &event.kind {
            JobEventKind::Submitted { .. } => c.jobs_submitted += 1,
            JobEventKind::TaskStarted { .. } => c.tasks_started += 1,
            JobEventKind::TaskFinished {
                task,
                worker,
                attempt,
                slot,
                duration,
                output_bytes,
                ..
            } => {
                c.tasks_finished += 1;
                c.task_compute_seconds += duration.as_secs_f64();
                add(&mut c.task_output_bytes, *output_bytes);
                return Some(StreamEntry::Task {
                    job: event.job,
                    stage: task.stage,
                    partition: task.partition,
                    worker: *worker,
                    slot: *slot,
                    attempt: *attempt,
                    ended: now,
                    duration: *duration,
                    output_bytes: *output_bytes,
                });
            }
            JobEventKind::Fetch { from, to, bytes } => {
                add(c.sent_bytes.entry(*from).or_default(), *bytes);
                add(c.received_bytes.entry(*to).or_default(), *bytes);
                return Some(StreamEntry::Transfer {
                    job: event.job,
                    from: *from,
                    to: *to,
                    bytes: *bytes,
                    at: now,
                });
            }
            JobEventKind::Spill { worker, bytes } => {
                add(c.spilled_bytes.entry(*worker).or_default(), *bytes);
                return Some(StreamEntry::Spill {
                    job: event.job,
                    worker: *worker,
                    bytes: *bytes,
                    at: now,
                });
            }
            JobEventKind::Done => c.jobs_completed += 1,
            JobEventKind::Failed { message, .. } => {
                c.jobs_failed += 1;
                return Some(StreamEntry::Failure {
                    job: event.job,
                    message: message.clone(),
                    at: now,
                });
            }
            JobEventKind::Cancelled => c.jobs_cancelled += 1,
            JobEventKind::StageStarted { .. } | JobEventKind::StageFinished { .. } => {}
        }
        None
    }

    /// The cursor the next task-stream entry will get.
    pub fn next_cursor(&self) -> u64 {
        self.next_cursor
    }

    /// Task-stream entries from cursor `since` on (at most `limit`), and the cursor to
    /// ask for next.
    pub fn stream_since(&self, since: u64, limit: usize) -> (Vec<(u64, StreamEntry)>, u64) {
        let oldest = self.stream.front().map_or(self.next_cursor, |(c, _)| *c);
        let skip = since.saturating_sub(oldest) as usize;
        let entries: Vec<_> = self.stream.iter().skip(skip).take(limit).cloned().collect();
        let next = entries.last().map_or(since.max(oldest), |(c, _)| c + 1);
        (entries, next)
    }
}

/// What `kind` changes in its job's record.
fn record(job: &mut JobRecord, kind: &JobEventKind) {
    match kind {
        JobEventKind::Submitted { stages, outline } => {
            job.stages = *stages;
            job.outline = Arc::clone(outline);
            job.kinds = outline.stages.iter().map(stage_kind).collect();
        }
        JobEventKind::TaskFinished {
            task,
            duration,
            output_bytes,
            metrics,
            ..
        } => {
            let seconds = duration.as_secs_f64();
            job.output_bytes = job.output_bytes.saturating_add(*output_bytes);
            job.compute_seconds += seconds;
            let stage = job.stage_totals.entry(task.stage).or_default();
            stage.0 += 1;
            stage.1 += seconds;
            stage.2 = stage.2.saturating_add(*output_bytes);
            for m in metrics.iter() {
                let key = (task.stage, m.node, m.name.clone());
                let total = job.operators.entry(key).or_insert((0, m.unit));
                total.0 = total.0.saturating_add(m.value);
            }
        }
        JobEventKind::Fetch { bytes, .. } => {
            job.transferred_bytes = job.transferred_bytes.saturating_add(*bytes);
        }
        JobEventKind::Spill { bytes, .. } => {
            job.spilled_bytes = job.spilled_bytes.saturating_add(*bytes);
        }
        JobEventKind::Done => job.state = JobState::Done,
        JobEventKind::Failed { message, .. } => {
            job.state = JobState::Failed;
            job.error = Some(message.clone());
        }
        JobEventKind::Cancelled => job.state = JobState::Cancelled,
        JobEventKind::StageStarted { .. }
        | JobEventKind::StageFinished { .. }
        | JobEventKind::TaskStarted { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use shoal_exec::{ErrorKind, TaskId};
    use shoal_exec::{OperatorMetric, Progress};

    use super::*;

    fn submitted(stages: usize) -> JobEventKind {
        JobEventKind::Submitted {
            stages,
            outline: Arc::default(),
        }
    }

    fn event(job: JobId, done: usize, kind: JobEventKind) -> JobEvent {
        JobEvent {
            job,
            progress: Progress {
                tasks_total: 3,
                tasks_done: done,
            },
            kind,
        }
    }

    fn finished(stage: usize, partition: usize) -> JobEventKind {
        JobEventKind::TaskFinished {
            task: TaskId { stage, partition },
            worker: 1,
            attempt: 1,
            slot: 0,
            duration: Duration::from_millis(250),
            output_bytes: 100,
            metrics: std::sync::Arc::new(vec![OperatorMetric {
                node: 1,
                name: "output_rows".into(),
                value: 5,
                unit: MetricUnit::Count,
            }]),
        }
    }

    #[test]
    fn jobs_counters_and_the_stream_follow_events() {
        let mut model = Model::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        model.apply(&event(7, 0, submitted(2)), t0);
        model.apply(&event(7, 1, finished(0, 0)), t0);
        model.apply(&event(7, 2, finished(0, 1)), t0);
        let fetch = JobEventKind::Fetch {
            from: 1,
            to: 2,
            bytes: 40,
        };
        model.apply(&event(7, 2, fetch), t0);
        model.apply(&event(7, 3, finished(1, 0)), t0);
        model.apply(
            &event(7, 3, JobEventKind::Done),
            t0 + Duration::from_secs(2),
        );
        let job = &model.jobs[&7];
        assert_eq!(job.state, JobState::Done);
        assert_eq!((job.tasks_done, job.stages, job.output_bytes), (3, 2, 300));
        assert_eq!(job.stage_totals[&0].0, 2);
        assert_eq!(job.operators[&(0, 1, "output_rows".to_string())].0, 10);
        assert_eq!(job.operators[&(1, 1, "output_rows".to_string())].0, 5);
        assert_eq!(job.duration(t0), Duration::from_secs(2));
        assert_eq!(
            model.counters.job_durations[5], 1,
            "2 s falls in the 5 s bucket"
        );
        assert_eq!(model.counters.sent_bytes[&1], 40);
        assert_eq!(model.counters.received_bytes[&2], 40);

        let failed = JobEventKind::Failed {
            kind: ErrorKind::Input,
            message: "no such column".into(),
        };
        model.apply(&event(8, 0, submitted(1)), t0);
        model.apply(&event(8, 0, failed), t0);
        assert_eq!(model.jobs[&8].error.as_deref(), Some("no such column"));
        // A late report about a forgotten (or never seen) job brings back no record, and
        // sizes from workers saturate rather than overflow.
        let late = JobEventKind::Spill {
            worker: 1,
            bytes: u64::MAX,
        };
        model.apply(&event(99, 0, late.clone()), t0);
        model.apply(&event(99, 0, late), t0);
        assert!(!model.jobs.contains_key(&99));
        assert_eq!(model.counters.spilled_bytes[&1], u64::MAX);
        assert_eq!(
            (model.counters.jobs_completed, model.counters.jobs_failed),
            (1, 1)
        );

        // Three tasks, one transfer, one failure and two spills: cursors 0..=6.
        let (entries, next) = model.stream_since(0, 2);
        assert_eq!((entries.len(), next), (2, 2));
        let (entries, next) = model.stream_since(next, 100);
        assert_eq!((entries.len(), next), (5, 7));
        assert!(matches!(
            entries[0].1,
            StreamEntry::Transfer { bytes: 40, .. }
        ));
        assert!(matches!(entries[2].1, StreamEntry::Failure { .. }));
        assert_eq!(model.stream_since(7, 10), (vec![], 7));
    }

    #[test]
    fn a_job_the_scheduler_no_longer_lists_ends_after_two_lists() {
        let mut model = Model::default();
        let t0 = SystemTime::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        model.apply(&event(1, 0, submitted(1)), t0);
        model.apply(&event(2, 0, submitted(1)), t0);
        assert!(model.has_running_jobs());
        // Job 1's end was missed; job 2 still runs.
        model.reconcile(&[2], at(100));
        assert_eq!(
            model.jobs[&1].state,
            JobState::Running,
            "one list is not enough"
        );
        model.reconcile(&[2], at(600));
        assert_eq!(model.jobs[&1].state, JobState::Running, "nor half a second");
        model.reconcile(&[2], at(1200));
        assert_eq!(model.jobs[&1].state, JobState::Ended);
        assert_eq!(model.jobs[&1].ended, Some(at(100)));
        assert_eq!(model.jobs[&2].state, JobState::Running);
        // A job listed again after one miss is not ended later for the old miss.
        model.reconcile(&[], at(1300));
        model.reconcile(&[2], at(1400));
        model.reconcile(&[], at(2000));
        assert_eq!(model.jobs[&2].state, JobState::Running);
        // Its own end still arrives as usual.
        model.apply(&event(2, 1, JobEventKind::Done), at(2100));
        assert_eq!(model.jobs[&2].state, JobState::Done);
        assert!(!model.has_running_jobs());
        assert_eq!(model.counters.job_durations.iter().sum::<u64>(), 2);
    }

    #[test]
    fn a_stage_s_kind_is_its_first_operator_past_the_wrappers() {
        let stage = |ops: &[&str]| shoal_exec::StageOutline {
            inputs: vec![],
            tasks: 1,
            operators: ops.iter().map(|t| (0, t.to_string())).collect(),
        };
        let kind = |ops: &[&str]| stage_kind(&stage(ops)).to_string();
        assert_eq!(
            kind(&[
                "ShuffleWriteExec: output=Hash",
                "CooperativeExec",
                "HashJoinExec: mode=x"
            ]),
            "HashJoinExec"
        );
        assert_eq!(
            kind(&["ShuffleWriteExec: x", "ProjectionExec: y"]),
            "ShuffleWriteExec"
        );
        assert_eq!(kind(&[]), "unknown");
        assert_eq!(kind(&["<script>alert(1)</script>"]), "unknown");
    }

    #[test]
    fn the_ring_and_finished_jobs_stay_bounded() {
        let mut model = Model::default();
        let now = SystemTime::now();
        for job in 0..(FINISHED_JOBS_KEPT as u64 + 10) {
            model.apply(&event(job, 0, submitted(1)), now);
            for partition in 0..30 {
                model.apply(&event(job, 1, finished(0, partition)), now);
            }
            model.apply(&event(job, 1, JobEventKind::Cancelled), now);
        }
        assert_eq!(model.jobs.len(), FINISHED_JOBS_KEPT);
        assert!(!model.jobs.contains_key(&0), "the oldest are forgotten");
        // A late task report of a forgotten job does not bring it back.
        model.apply(&event(0, 1, finished(0, 99)), now);
        assert!(!model.jobs.contains_key(&0));
        assert_eq!(model.jobs.len(), FINISHED_JOBS_KEPT);
        assert_eq!(model.stream.len(), TASK_STREAM_KEPT);
        // A reader far behind starts at the oldest entry kept.
        let (entries, _) = model.stream_since(0, 1);
        assert_eq!(entries[0].0, model.next_cursor - TASK_STREAM_KEPT as u64);
    }
}
