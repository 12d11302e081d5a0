//! A worker: runs launched tasks on its slots and reports each outcome exactly once.
//!
//! Launched tasks wait in a local queue until a slot is free. While the worker's memory
//! in use (operator reservations plus in-memory task outputs) is above its pause
//! threshold, queued tasks wait too, unless nothing is running at all. An array task
//! says up front how much it will hold: it reserves that in the operator pool before it
//! starts, waits while the reservations of running tasks leave too little of the limit,
//! and the result store spills to make room for it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use datafusion::common::{Result, internal_datafusion_err};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::ExecutionPlan;
use shoal_planner::{
    InputLocations, JobId, Locations, ShuffleEnv, ShuffleIo, StageId, TaskId, WorkerId,
    bucket_bytes,
};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use crate::metrics::{OperatorMetric, task_metrics};
use crate::protocol::{Event, Launch, StagePlan, TaskOutcome, TaskReport, WorkerMsg};
use crate::store::ResultStore;
use crate::transport::{FetchLog, fetch_failure};

/// Memory in use above which a worker starts no new task: 80 % of its limit.
pub fn pause_threshold(memory_limit: usize) -> usize {
    memory_limit / 5 * 4
}

/// The state a worker's loop owns.
pub struct Worker {
    /// This worker's id.
    pub id: WorkerId,
    /// Tasks run at once.
    pub slots: usize,
    /// Memory in use above which queued tasks wait, in bytes.
    pub pause_above: usize,
    /// The worker's memory limit, in bytes.
    pub memory_limit: usize,
    /// Runtime (memory pool, disk manager, object stores) for its tasks.
    pub runtime: Arc<RuntimeEnv>,
    /// Where its tasks put their outputs.
    pub store: Arc<ResultStore>,
    /// Its transport endpoint.
    pub io: Arc<dyn ShuffleIo>,
    /// What `io` fetched from peers, reported as tasks end.
    pub fetched: Arc<FetchLog>,
    /// The runtime tasks compute on, when not the one the loop runs on: a worker process
    /// keeps its connections and heartbeats off the threads its tasks keep busy.
    pub compute: Option<tokio::runtime::Handle>,
}

type Key = (JobId, TaskId, u32);

/// A running task's key, slot, start, the plan it runs and the memory it reserved.
type Started = (
    Key,
    usize,
    Instant,
    Option<Arc<dyn ExecutionPlan>>,
    Option<MemoryReservation>,
);

impl Worker {
    /// Operator reservations plus in-memory task outputs, in bytes.
    pub fn memory_used(runtime: &RuntimeEnv, store: &ResultStore) -> usize {
        runtime.memory_pool.reserved() + store.stats().memory_bytes
    }

    /// Runs until the scheduler's channel closes. `peers` learns where other workers
    /// serve their outputs.
    pub async fn run(
        self,
        mut inbox: mpsc::UnboundedReceiver<WorkerMsg>,
        events: mpsc::UnboundedSender<Event>,
        peers: impl Fn(WorkerId, String) + Send,
    ) {
        let mut running: JoinSet<TaskOutcome> = JoinSet::new();
        let mut queue: VecDeque<Launch> = VecDeque::new();
        // Each running task's key, slot and start.
        let mut by_id: HashMap<tokio::task::Id, Started> = HashMap::new();
        let mut busy = vec![false; self.slots.max(1)];
        let mut handles: HashMap<Key, AbortHandle> = HashMap::new();
        // Plans with fresh operator state for stages whose runs failed or were stopped.
        let mut fresh = FreshPlans::default();
        // The input locations of tasks started here, to fill in as producers finish.
        let mut boards = Boards::default();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = inbox.recv() => match msg {
                    None => break,
                    Some(WorkerMsg::Launch(launch)) => {
                        boards.add(launch.job, &launch.locations);
                        queue.push_back(*launch);
                    }
                    Some(WorkerMsg::Located { job, task, worker }) => boards.fill(job, task, worker),
                    Some(WorkerMsg::CancelTask(job, task, attempt)) => {
                        cancel_task((job, task, attempt), &handles, &mut queue, &by_id, &mut fresh);
                    }
                    Some(WorkerMsg::CancelJob(job)) => {
                        fresh.forget(job, None);
                        boards.forget(job);
                        self.cancel_job(job, &handles, &mut queue, &events);
                    }
                    Some(WorkerMsg::ReleaseJob(job)) => {
                        fresh.forget(job, None);
                        boards.forget(job);
                        self.store.remove_job(job);
                    }
                    Some(WorkerMsg::ReleaseStage(job, stage)) => {
                        fresh.forget(job, Some(stage));
                        self.store.remove_stage(job, stage);
                    }
                    Some(WorkerMsg::Peer(id, address)) => peers(id, address),
                    Some(WorkerMsg::Exit) => {} // processes exit at the command (`remote::worker`)
                },
                Some(joined) = running.join_next_with_id(), if !running.is_empty() => {
                    let (id, outcome) = match joined {
                        Ok((id, outcome)) => (id, outcome),
                        Err(e) => {
                            let id = e.id();
                            if e.is_panic() {
                                let text = crate::panic_message(e.into_panic());
                                (id, TaskOutcome::Failed(internal_datafusion_err!("task panicked: {text}")))
                            } else {
                                (id, TaskOutcome::Cancelled)
                            }
                        }
                    };
                    if let Some((key, slot, started, plan, _reserved)) = by_id.remove(&id) {
                        handles.remove(&key);
                        busy[slot] = false;
                        if let (Some(plan), TaskOutcome::FetchFailed { .. } | TaskOutcome::Failed(_)) =
                            (plan, &outcome)
                        {
                            fresh.renew(key.0, key.1.stage, plan);
                        }
                        let mut outcome = outcome;
                        match &mut outcome {
                            TaskOutcome::Finished(report) => self.finished(key.0, report, slot, started),
                            _ => self.store.discard_run(key.0, key.1, key.2),
                        }
                        let (job, task, attempt) = key;
                        tracing::debug!(worker = self.id, job, %task, attempt, outcome = outcome.kind(), "task ends");
                        self.report_transfers(&events);
                        let _ = events.send(Event::TaskEnded { job, task, attempt, worker: self.id, outcome });
                    }
                }
                _ = tick.tick(), if !queue.is_empty() => {}
            }
            // Start queued tasks while there are free slots and memory to spare; a task
            // whose inputs are all there goes before one that would wait for some (it
            // only waits for tasks placed before it, which are never behind it).
            while let Some(need) = {
                promote_ready(&mut queue);
                queue.front().and_then(|l| self.admits(l, running.len()))
            } {
                let mut launch = queue.pop_front().expect("queue is not empty");
                let key = (launch.job, launch.task, launch.attempt);
                let plan = fresh.apply(&mut launch);
                if let StagePlan::Noop = launch.plan {
                    let (job, task, attempt) = key;
                    let outcome = TaskOutcome::Finished(TaskReport::default());
                    let _ = events.send(Event::TaskEnded {
                        job,
                        task,
                        attempt,
                        worker: self.id,
                        outcome,
                    });
                    continue;
                }
                let reservation = self.reserve(need, key.1);
                tracing::debug!(worker = self.id, job = key.0, task = %key.1, attempt = key.2, "task starts");
                let task = run_task(launch, self.runtime.clone(), self.io.clone());
                let handle = match &self.compute {
                    Some(compute) => running.spawn_on(task, compute),
                    None => running.spawn(task),
                };
                // A free slot exists: fewer tasks run than there are slots.
                let slot = busy.iter().position(|b| !b).unwrap_or(0);
                busy[slot] = true;
                by_id.insert(handle.id(), (key, slot, Instant::now(), plan, reservation));
                handles.insert(key, handle);
            }
        }
        running.abort_all();
    }
}

impl Worker {
    /// Stops `job`'s tasks here: running ones are aborted (and report `Cancelled` as they
    /// end), queued ones report it now; its outputs are dropped.
    fn cancel_job(
        &self,
        job: JobId,
        handles: &HashMap<Key, AbortHandle>,
        queue: &mut VecDeque<Launch>,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        for ((j, _, _), handle) in handles {
            if *j == job {
                handle.abort();
            }
        }
        queue.retain(|l| {
            if l.job != job {
                return true;
            }
            let _ = events.send(Event::TaskEnded {
                job,
                task: l.task,
                attempt: l.attempt,
                worker: self.id,
                outcome: TaskOutcome::Cancelled,
            });
            false
        });
        self.store.remove_job(job);
    }

    /// The bytes `launch` reserves if it may start beside `running` tasks now (see
    /// [`may_start`] and [`fits`]), `None` if it must wait.
    fn admits(&self, launch: &Launch, running: usize) -> Option<usize> {
        let used = Self::memory_used(&self.runtime, &self.store);
        if !may_start(running, self.slots, used, self.pause_above) {
            return None;
        }
        let need = reserved_bytes(launch);
        let reserved = self.runtime.memory_pool.reserved();
        fits(running, reserved, need, self.memory_limit).then_some(need)
    }

    /// Reserves `need` bytes for `task` in the operator pool (none for 0) and spills task
    /// outputs to make room beside them.
    fn reserve(&self, need: usize, task: TaskId) -> Option<MemoryReservation> {
        if need == 0 {
            return None;
        }
        let reservation =
            MemoryConsumer::new(format!("array task {task}")).register(&self.runtime.memory_pool);
        reservation.grow(need);
        if let Err(e) = self.store.make_room() {
            tracing::warn!(worker = self.id, "cannot spill task outputs: {e}");
        }
        Some(reservation)
    }

    /// Completes the report of a task of `job` that finished in `slot`, started at
    /// `started`, and counts what its operators spilled.
    fn finished(&self, job: JobId, report: &mut TaskReport, slot: usize, started: Instant) {
        report.slot = slot;
        report.duration = started.elapsed();
        let (bytes, files) = operator_spills(&report.metrics);
        if files > 0 || bytes > 0 {
            self.store.record_operator_spills(job, bytes, files);
        }
    }

    /// Sends what tasks fetched from peers and spilled since the last report.
    fn report_transfers(&self, events: &mpsc::UnboundedSender<Event>) {
        for (job, from, bytes) in self.fetched.take() {
            let to = self.id;
            let _ = events.send(Event::Fetched {
                job,
                from,
                to,
                bytes,
            });
        }
        for (job, bytes, spills) in self.store.take_spills() {
            let worker = self.id;
            let _ = events.send(Event::Spilled {
                job,
                worker,
                bytes,
                spills,
            });
        }
    }
}

/// The input locations handed to tasks of each job on this worker that some producer's
/// output is still missing from: a `Located` fills them in.
#[derive(Default)]
struct Boards(HashMap<JobId, Vec<Weak<InputLocations>>>);

impl Boards {
    fn add(&mut self, job: JobId, locations: &Locations) {
        if locations.complete() {
            return;
        }
        let boards = self.0.entry(job).or_default();
        boards.retain(|b| b.strong_count() > 0);
        if !boards
            .iter()
            .any(|b| std::ptr::eq(b.as_ptr(), Arc::as_ptr(locations)))
        {
            boards.push(Arc::downgrade(locations));
        }
    }

    fn fill(&mut self, job: JobId, task: TaskId, worker: WorkerId) {
        tracing::debug!(job, %task, at = worker, "located");
        if let Some(boards) = self.0.get_mut(&job) {
            boards.retain(|b| match b.upgrade() {
                Some(board) => {
                    board.fill(task.stage, task.partition, worker);
                    !board.complete()
                }
                None => false,
            });
        }
    }

    fn forget(&mut self, job: JobId) {
        self.0.remove(&job);
    }
}

/// Copies with fresh operator state of the stage plans whose tasks failed or were
/// stopped here. A stage's plan is shared by its tasks on a worker, and so is operator
/// state built once per plan (a broadcast join's hash table). A task that failed may have
/// left that state failed for good, and one that was stopped may have left it waiting for
/// inputs that never come: later tasks of the stage run a copy with fresh state instead.
#[derive(Default)]
struct FreshPlans(HashMap<(JobId, StageId), Arc<dyn ExecutionPlan>>);

impl FreshPlans {
    /// Runs `launch` on its stage's fresh copy, if there is one; returns the plan it runs.
    fn apply(&self, launch: &mut Launch) -> Option<Arc<dyn ExecutionPlan>> {
        let StagePlan::Decoded { plan, .. } = &mut launch.plan else {
            return None;
        };
        if let Some(copy) = self.0.get(&(launch.job, launch.task.stage)) {
            *plan = Arc::clone(copy);
        }
        Some(Arc::clone(plan))
    }

    /// A task of the stage failed running `plan`: later ones run a fresh copy.
    fn renew(&mut self, job: JobId, stage: StageId, plan: Arc<dyn ExecutionPlan>) {
        match shoal_planner::run_filters::fresh_plan(plan) {
            Ok(copy) => {
                self.0.insert((job, stage), copy);
            }
            Err(e) => tracing::warn!("stage {stage} of job {job} keeps its plan: {e}"),
        }
    }

    fn forget(&mut self, job: JobId, stage: Option<StageId>) {
        self.0
            .retain(|(j, s), _| *j != job || stage.is_some_and(|stage| *s != stage));
    }
}

/// Stops one run of a task, running or queued. Its report is ignored (the scheduler gave
/// up on this run), so a queued one sends none. Operator state its stage's plan shares
/// (a join's build side) may be bound to the stopped run's inputs, which may never come:
/// later runs of the stage here get a fresh copy of the plan.
fn cancel_task(
    key: Key,
    handles: &HashMap<Key, AbortHandle>,
    queue: &mut VecDeque<Launch>,
    running: &HashMap<tokio::task::Id, Started>,
    fresh: &mut FreshPlans,
) {
    if let Some(handle) = handles.get(&key) {
        handle.abort();
    }
    queue.retain(|l| (l.job, l.task, l.attempt) != key);
    let plan = running.values().find(|started| started.0 == key);
    if let Some((_, _, _, Some(plan), _)) = plan {
        fresh.renew(key.0, key.1.stage, Arc::clone(plan));
    }
}

/// Moves the first queued task whose inputs are all located to the front, if the front
/// one would wait for some.
fn promote_ready(queue: &mut VecDeque<Launch>) {
    if queue.front().is_some_and(|l| !l.locations.complete())
        && let Some(i) = queue.iter().position(|l| l.locations.complete())
        && let Some(ready) = queue.remove(i)
    {
        queue.push_front(ready);
    }
}

/// Whether a worker with `running` of `slots` busy and `used` bytes of memory in use may
/// start another task: it needs a free slot, and memory at or below the pause threshold
/// unless it is idle (an idle worker always makes progress).
fn may_start(running: usize, slots: usize, used: usize, pause_above: usize) -> bool {
    running < slots.max(1) && (running == 0 || used <= pause_above)
}

/// Whether a task that will hold `need` bytes fits beside `reserved` bytes of running
/// tasks' reservations within `limit` (task outputs in the store spill to make room; an
/// idle worker always makes progress).
fn fits(running: usize, reserved: usize, need: usize, limit: usize) -> bool {
    running == 0 || need == 0 || reserved.saturating_add(need) <= limit
}

/// The bytes a queued task says it will hold (array tasks; 0 for the others, whose
/// operators reserve as they go).
fn reserved_bytes(launch: &Launch) -> usize {
    let StagePlan::Decoded { plan, .. } = &launch.plan else {
        return 0;
    };
    // The estimate walks a plan that came off the wire: a malformed one must fail its
    // own task (where panics are caught), not this loop.
    let estimate = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        shoal_planner::array::exec::task_bytes(plan, launch.task.partition)
    }));
    estimate.ok().flatten().unwrap_or(0)
}

/// What a task's operators spilled: (bytes, spill files), from their metrics.
fn operator_spills(metrics: &[OperatorMetric]) -> (u64, u64) {
    let sum = |name: &str| {
        metrics
            .iter()
            .filter(|m| m.name == name)
            .map(|m| m.value)
            .fold(0u64, u64::saturating_add)
    };
    (sum("spilled_bytes"), sum("spill_count"))
}

async fn run_task(launch: Launch, runtime: Arc<RuntimeEnv>, io: Arc<dyn ShuffleIo>) -> TaskOutcome {
    match execute(launch, runtime, io).await {
        Ok((bucket_bytes, metrics)) => TaskOutcome::Finished(TaskReport {
            bucket_bytes,
            metrics,
            ..TaskReport::default()
        }),
        Err(e) => match fetch_failure(&e) {
            Some(from) => TaskOutcome::FetchFailed { from, cause: e },
            None => TaskOutcome::Failed(e),
        },
    }
}

async fn execute(
    launch: Launch,
    runtime: Arc<RuntimeEnv>,
    io: Arc<dyn ShuffleIo>,
) -> Result<(Vec<u64>, Vec<OperatorMetric>)> {
    let Launch {
        job,
        task,
        attempt,
        plan,
        locations,
    } = launch;
    let (plan, ctx) = match plan {
        // A run after another of the same task must not read the bounds that run set.
        StagePlan::Decoded { plan, ctx, runs } => match runs.run_again(&plan, task.partition) {
            true => (shoal_planner::run_filters::fresh_plan(plan)?, ctx),
            false => (plan, ctx),
        },
        StagePlan::Noop => return Ok((Vec::new(), Vec::new())),
        StagePlan::Encoded(_) => {
            return Err(internal_datafusion_err!(
                "an encoded stage plan reached a worker without being decoded"
            ));
        }
    };
    let env = ShuffleEnv {
        job,
        task,
        attempt,
        locations,
        io,
    };
    let config = ctx.session_config().clone().with_extension(Arc::new(env));
    let task_ctx = TaskContext::new(
        Some(format!("job{job}-{}-{}", task.stage, task.partition)),
        ctx.session_id(),
        config,
        ctx.scalar_functions().clone(),
        ctx.higher_order_functions().clone(),
        ctx.aggregate_functions().clone(),
        ctx.window_functions().clone(),
        runtime,
    );
    let stream = plan.execute(task.partition, Arc::new(task_ctx))?;
    let summary = datafusion::physical_plan::common::collect(stream).await?;
    Ok((bucket_bytes(&summary)?, task_metrics(&plan)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::NullEquality;
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::execution::runtime_env::RuntimeEnv;
    use datafusion::logical_expr::JoinType;
    use datafusion::physical_expr::EquivalenceProperties;
    use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
    use datafusion::physical_plan::expressions::col;
    use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
    use datafusion::physical_plan::{ExecutionPlan, Partitioning, PlanProperties};
    use datafusion::prelude::SessionContext;
    use shoal_planner::{
        InputLocations, OutputSpec, PartitionKey, ReadMode, ShuffleReadExec, ShuffleWriteExec,
        TaskId,
    };
    use tokio::sync::mpsc;

    use super::{Worker, fits, may_start, operator_spills};
    use crate::metrics::{MetricUnit, OperatorMetric};
    use crate::protocol::{Event, Launch, StagePlan, WorkerMsg};
    use crate::store::ResultStore;
    use crate::transport::{FetchLog, InProcessTransport, WorkerIo};

    /// A stage whose plan builds a hash table once for all its tasks on a worker, from
    /// stage 1's output, and probes it with the same rows.
    fn join_stage(batch: &RecordBatch) -> Arc<dyn ExecutionPlan> {
        let schema = batch.schema();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        let build = Arc::new(ShuffleReadExec::new(
            1,
            1,
            ReadMode::Gather,
            Arc::new(properties),
        ));
        let probe =
            MemorySourceConfig::try_new_exec(&[vec![batch.clone()]], Arc::clone(&schema), None)
                .unwrap();
        let on = vec![(col("a", &schema).unwrap(), col("a", &schema).unwrap())];
        let join = HashJoinExec::try_new(
            build,
            probe,
            on,
            None,
            &JoinType::Inner,
            None,
            PartitionMode::CollectLeft,
            NullEquality::NullEqualsNothing,
            false,
        )
        .unwrap();
        Arc::new(ShuffleWriteExec::new(Arc::new(join), OutputSpec::Single))
    }

    #[tokio::test]
    async fn a_run_started_after_a_cancelled_one_does_not_wait_for_its_inputs() {
        let scratch = tempfile::tempdir().unwrap();
        let store = Arc::new(ResultStore::new(scratch.path(), usize::MAX).unwrap());
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let rows = Int64Array::from(vec![1, 2, 3]);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(rows)]).unwrap();
        let key = |stage, partition| PartitionKey {
            job: 1,
            task: TaskId { stage, partition },
            bucket: 0,
        };
        store.put(key(1, 0), vec![batch.clone()]).unwrap();
        let transport = Arc::new(InProcessTransport::new(vec![Arc::clone(&store)]));
        let fetched = Arc::new(FetchLog::default());
        let worker = Worker {
            id: 0,
            slots: 2,
            pause_above: usize::MAX,
            memory_limit: usize::MAX,
            runtime: Arc::new(RuntimeEnv::default()),
            store: Arc::clone(&store),
            io: Arc::new(WorkerIo::new(0, transport, Arc::clone(&fetched))),
            fetched,
            compute: None,
        };
        let (tx, inbox) = mpsc::unbounded_channel();
        let (events, mut reports) = mpsc::unbounded_channel();
        let mut loops = tokio::task::JoinSet::new();
        loops.spawn(worker.run(inbox, events, |_, _| {}));

        let plan = join_stage(&batch);
        let ctx = SessionContext::new().task_ctx();
        let task = TaskId {
            stage: 2,
            partition: 0,
        };
        let launch = |attempt, locations: &Arc<InputLocations>| {
            WorkerMsg::Launch(Box::new(Launch {
                job: 1,
                task,
                attempt,
                plan: StagePlan::decoded(Arc::clone(&plan), Arc::clone(&ctx)),
                locations: Arc::clone(locations),
            }))
        };
        // The first run starts early: its build side waits for stage 1, whose task then
        // runs again elsewhere, so this board is never filled in.
        let early = Arc::new(InputLocations::new(HashMap::from([(1, vec![None])])));
        tx.send(launch(1, &early)).unwrap();
        while early.readers() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tx.send(WorkerMsg::CancelTask(1, task, 1)).unwrap();
        let located = Arc::new(InputLocations::new(HashMap::from([(1, vec![Some(0)])])));
        tx.send(launch(2, &located)).unwrap();

        let mut outcomes = Vec::new();
        while outcomes.len() < 2 {
            let report = tokio::time::timeout(Duration::from_secs(30), reports.recv()).await;
            let Ok(Some(Event::TaskEnded {
                attempt, outcome, ..
            })) = report
            else {
                panic!("no report within 30 s: the second run waits, {outcomes:?} so far");
            };
            outcomes.push((attempt, outcome.kind()));
        }
        assert_eq!(outcomes, [(1, "cancelled"), (2, "finished")]);
        let joined = store.get(&key(2, 0)).unwrap();
        assert_eq!(joined.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
    }

    #[test]
    fn operator_spills_sum_every_operator_s_spill_metrics() {
        let metric = |node, name: &str, value, unit| OperatorMetric {
            node,
            name: name.into(),
            value,
            unit,
        };
        let metrics = [
            metric(1, "spilled_bytes", 4000, MetricUnit::Bytes),
            metric(1, "spill_count", 2, MetricUnit::Count),
            metric(3, "spilled_bytes", 500, MetricUnit::Bytes),
            metric(3, "spill_count", 1, MetricUnit::Count),
            metric(3, "output_rows", 99, MetricUnit::Count),
        ];
        assert_eq!(operator_spills(&metrics), (4500, 3));
        assert_eq!(operator_spills(&[]), (0, 0));
    }

    #[test]
    fn an_array_task_waits_until_its_reservation_fits_beside_the_running_ones() {
        assert!(fits(1, 60, 40, 100));
        assert!(
            !fits(1, 61, 40, 100),
            "over the limit while another task runs"
        );
        assert!(fits(0, 90, 40, 100), "an idle worker still runs a task");
        assert!(
            fits(3, 100, 0, 100),
            "a task without an estimate reserves as it goes"
        );
    }

    #[test]
    fn tasks_wait_for_a_slot_and_pause_above_the_memory_threshold() {
        assert!(may_start(0, 2, 0, 100));
        assert!(may_start(1, 2, 100, 100));
        assert!(!may_start(2, 2, 0, 100), "no free slot");
        assert!(
            !may_start(1, 2, 101, 100),
            "paused: memory above the threshold"
        );
        assert!(
            may_start(0, 2, 10_000, 100),
            "an idle worker still runs a task"
        );
    }
}
