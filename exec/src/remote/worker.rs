//! The worker process: registers with the scheduler, runs the tasks it is sent, serves
//! its outputs over Arrow Flight and reports outcomes and heartbeats.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use shoal_planner::config::ShoalSettings;
use shoal_planner::{
    ErrorKind, InputLocations, JobId, Locations, Resources, StageId, TaskId, WorkerId, decode_plan,
    kind_of, shoal_err, task_session_config,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Request;

use super::control::{connect_error, control_client};
use super::events::failure_to_proto;
use super::proto::{self, command, scheduler_message, worker_message};
use super::server::NOT_LOCATED;
use super::{PROTOCOL_VERSION, resources_to_proto};
use crate::flight::{FlightTransport, StoreFlightService, serve};
use crate::protocol::{Event, Launch, StagePlan, TaskOutcome, WorkerMsg, WorkerUsage};
use crate::security::Security;
use crate::store::ResultStore;
use crate::transport::{FetchLog, WorkerIo};
use crate::worker::{Worker, pause_threshold};

/// How a worker process is shaped and where it reports.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The scheduler's URL.
    pub scheduler: String,
    /// Address to serve task outputs on (`host:port`, port 0 picks one).
    pub bind: String,
    /// Address peers and clients use to reach it, when not the bound one.
    pub advertise: Option<String>,
    /// Task slots.
    pub slots: usize,
    /// Operator memory limit, in bytes.
    pub memory_limit: usize,
    /// In-memory task output before the result store spills, in bytes.
    pub store_memory_target: usize,
    /// Where spill files go.
    pub scratch_dir: PathBuf,
    /// Named resources offered.
    pub resources: Resources,
    /// The worker group it belongs to (empty: none).
    pub group: String,
    /// Token and TLS.
    pub security: Security,
    /// How often to send a heartbeat.
    pub heartbeat_interval: Duration,
    /// How long to keep trying to register again after losing the scheduler.
    pub reconnect_timeout: Duration,
}

impl WorkerOptions {
    /// A worker of the scheduler at `scheduler`, shaped by `settings` (resolved with
    /// [`ShoalSettings::resolve`]: slots, memory limit, store target, scratch directory),
    /// serving outputs on a free port of 127.0.0.1 and offering no named resources.
    pub fn new(scheduler: String, settings: &ShoalSettings, security: Security) -> Self {
        Self {
            scheduler,
            bind: "127.0.0.1:0".into(),
            advertise: None,
            slots: settings.worker.slots,
            memory_limit: settings.worker.memory_limit.bytes(),
            store_memory_target: settings.store.memory_target.bytes(),
            scratch_dir: settings.scratch_path(),
            resources: Resources::default(),
            group: String::new(),
            security,
            heartbeat_interval: Duration::from_millis(500),
            reconnect_timeout: Duration::from_secs_f64(settings.worker.reconnect_timeout.max(0.0)),
        }
    }
}

/// Runs a worker. `ready` is called with the worker's id and address once the scheduler
/// has first accepted it. When the connection to the scheduler ends, the worker drops its
/// tasks and stored outputs (a scheduler that comes back knows none of their jobs) and
/// registers again, retrying with backoff for `reconnect_timeout`; it returns the error
/// once that has passed, or at once when the scheduler refuses it (token, protocol) or
/// cannot be reached at the start.
pub async fn run_worker(
    options: WorkerOptions,
    base: &RuntimeEnv,
    ready: impl FnOnce(WorkerId, &str),
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&options.bind)
        .await
        .map_err(|e| {
            DataFusionError::Configuration(format!("cannot listen on {}: {e}", options.bind))
        })?;
    let bound = listener.local_addr()?;
    let address = options
        .advertise
        .clone()
        .unwrap_or_else(|| bound.to_string());
    let store = Arc::new(ResultStore::new(
        &options.scratch_dir,
        options.store_memory_target,
    )?);
    let runtime = RuntimeEnvBuilder::from_runtime_env(base)
        .with_memory_pool(Arc::new(FairSpillPool::new(options.memory_limit)))
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(
            DiskManagerMode::Directories(vec![store.dir().to_path_buf()]),
        ))
        .build_arc()?;
    store.bound_by(
        Arc::clone(&runtime.memory_pool),
        pause_threshold(options.memory_limit),
    );
    let security = Arc::new(options.security.clone());
    let compute = ComputeRuntime::new(options.slots)?;

    // The Flight server outlives connections to the scheduler: it serves the store.
    let mut server = JoinSet::new();
    let service = StoreFlightService::new(Arc::clone(&store), Arc::clone(&security));
    let flight_security = Arc::clone(&security);
    server.spawn(async move {
        if let Err(e) = serve(service, listener, &flight_security).await {
            tracing::error!("Flight server stopped: {e}");
        }
    });

    let parts = Parts {
        options: &options,
        address: &address,
        store: &store,
        runtime: &runtime,
        security: &security,
        compute: compute.0.as_ref().map(|r| r.handle().clone()),
    };
    let mut ready = Some(ready);
    let mut lost: Option<(std::time::Instant, DataFusionError)> = None;
    let mut backoff = RECONNECT_BACKOFF_START;
    loop {
        let ended = match parts.register().await {
            Ok((id, inbound, out)) => {
                match ready.take() {
                    Some(ready) => ready(id, &address),
                    None => tracing::info!(
                        "worker registered again with the scheduler at {} as worker {id}",
                        options.scheduler
                    ),
                }
                lost = None;
                backoff = RECONNECT_BACKOFF_START;
                let ended = parts.serve(id, inbound, out).await;
                // Nothing stored can be used by the next scheduler: its jobs are new.
                store.clear();
                match ended {
                    // Retired: the scheduler needs nothing more from this worker.
                    Ok(()) => {
                        tracing::info!("worker {id} retired; exiting");
                        return Ok(());
                    }
                    Err(error) => error,
                }
            }
            Err(e) if ready.is_some() || kind_of(&e) != ErrorKind::Io => {
                return Err(e);
            }
            Err(e) => e,
        };
        let since = lost.get_or_insert_with(|| {
            tracing::warn!("{ended}; reconnecting");
            (std::time::Instant::now(), ended)
        });
        if since.0.elapsed() >= options.reconnect_timeout {
            return Err(lost
                .map(|(_, e)| e)
                .unwrap_or_else(|| DataFusionError::Execution("lost the scheduler".to_string())));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

/// First and longest wait between attempts to reach a lost scheduler.
const RECONNECT_BACKOFF_START: Duration = Duration::from_millis(100);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What a worker process keeps across connections to its scheduler.
struct Parts<'a> {
    options: &'a WorkerOptions,
    address: &'a str,
    store: &'a Arc<ResultStore>,
    runtime: &'a Arc<RuntimeEnv>,
    security: &'a Arc<Security>,
    compute: Option<tokio::runtime::Handle>,
}

/// The threads a worker's tasks compute on, one per slot. The runtime that called
/// [`run_worker`] keeps the scheduler connection, heartbeats and the Flight server: tasks
/// busy on every slot (and the operators' own spawned streams) cannot delay a heartbeat
/// past the scheduler's timeout or stall a peer's fetch.
struct ComputeRuntime(Option<tokio::runtime::Runtime>);

impl ComputeRuntime {
    fn new(slots: usize) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(slots.max(1))
            .thread_name("shoal-task")
            .enable_all()
            .build()
            .map_err(|e| DataFusionError::Execution(format!("cannot start task threads: {e}")))?;
        Ok(Self(Some(runtime)))
    }
}

impl Drop for ComputeRuntime {
    fn drop(&mut self) {
        // Dropped inside the caller's runtime, where a blocking shutdown is not allowed.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Parts<'_> {
    async fn register(
        &self,
    ) -> Result<(
        WorkerId,
        tonic::Streaming<proto::SchedulerMessage>,
        mpsc::UnboundedSender<proto::WorkerMessage>,
    )> {
        let (out, out_rx) = mpsc::unbounded_channel();
        let (id, inbound) =
            register(self.options, self.address, self.security, &out, out_rx).await?;
        Ok((id, inbound, out))
    }

    /// Runs tasks for the scheduler as worker `id` until the connection ends (the error
    /// says how) or the scheduler retires the worker (`Ok`). The tasks stop when this
    /// returns.
    async fn serve(
        &self,
        id: WorkerId,
        mut inbound: tonic::Streaming<proto::SchedulerMessage>,
        out: mpsc::UnboundedSender<proto::WorkerMessage>,
    ) -> Result<(), DataFusionError> {
        let options = self.options;
        let transport = Arc::new(FlightTransport::new(
            HashMap::from([(id, Arc::clone(self.store))]),
            true,
            Arc::clone(self.security),
            tokio::runtime::Handle::current(),
        ));
        let mut tasks = JoinSet::new();
        let fetched = Arc::new(FetchLog::default());
        let worker = Worker {
            id,
            slots: options.slots.max(1),
            pause_above: pause_threshold(options.memory_limit),
            memory_limit: options.memory_limit,
            runtime: Arc::clone(self.runtime),
            store: Arc::clone(self.store),
            io: Arc::new(WorkerIo::new(id, transport.clone(), Arc::clone(&fetched))),
            fetched,
            compute: self.compute.clone(),
        };
        let (inbox, inbox_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let peers = Arc::clone(&transport);
        tasks.spawn(worker.run(inbox_rx, events.clone(), move |peer, address| {
            peers.set_address(peer, address)
        }));
        tasks.spawn(report(
            events_rx,
            out,
            Arc::clone(self.runtime),
            Arc::clone(self.store),
            options.heartbeat_interval,
        ));
        let mut commands = Commands {
            worker: id,
            runtime: Arc::clone(self.runtime),
            inbox,
            events,
            plans: HashMap::new(),
            locations: HashMap::new(),
            contexts: Contexts::default(),
            exit: false,
        };
        loop {
            let message = match inbound.next().await {
                None => {
                    return Err(DataFusionError::Execution(format!(
                        "the scheduler at {} closed the connection",
                        options.scheduler
                    )));
                }
                Some(Err(status)) => {
                    return Err(DataFusionError::Execution(format!(
                        "lost the connection to the scheduler at {}: {}",
                        options.scheduler,
                        status.message()
                    )));
                }
                Some(Ok(message)) => message,
            };
            let Some(scheduler_message::Kind::Batch(batch)) = message.kind else {
                continue;
            };
            for command in batch.commands {
                if let Some(kind) = command.kind {
                    commands.apply(kind);
                }
            }
            if commands.exit {
                return Ok(());
            }
        }
    }
}
/// Registers with the scheduler over a `Join` stream fed by `out_rx`; returns the id the
/// scheduler gave this worker and the stream of its commands.
async fn register(
    options: &WorkerOptions,
    address: &str,
    security: &Arc<Security>,
    out: &mpsc::UnboundedSender<proto::WorkerMessage>,
    out_rx: mpsc::UnboundedReceiver<proto::WorkerMessage>,
) -> Result<(WorkerId, tonic::Streaming<proto::SchedulerMessage>)> {
    let mut client = control_client(&options.scheduler, security).await?;
    let register = proto::WorkerMessage {
        kind: Some(worker_message::Kind::Register(proto::Register {
            protocol_version: PROTOCOL_VERSION,
            flight_address: address.to_string(),
            slots: options.slots as u32,
            memory_limit: options.memory_limit as u64,
            resources: resources_to_proto(&options.resources),
            group: options.group.clone(),
        })),
    };
    let _ = out.send(register);
    let mut inbound = client
        .join(Request::new(UnboundedReceiverStream::new(out_rx)))
        .await
        .map_err(|status| connect_error(&options.scheduler, &status))?
        .into_inner();
    let first = inbound
        .message()
        .await
        .map_err(|status| connect_error(&options.scheduler, &status))?;
    let Some(proto::SchedulerMessage {
        kind: Some(scheduler_message::Kind::Registered(registered)),
    }) = first
    else {
        return Err(DataFusionError::Execution(format!(
            "the scheduler at {} did not accept the worker",
            options.scheduler
        )));
    };
    Ok((registered.worker_id as WorkerId, inbound))
}

/// Turns the scheduler's commands into messages for the worker's loop: decodes each stage
/// plan once, and keeps each stage's input locations (a launch without inputs reuses them).
struct Commands {
    worker: WorkerId,
    runtime: Arc<RuntimeEnv>,
    inbox: mpsc::UnboundedSender<WorkerMsg>,
    events: mpsc::UnboundedSender<Event>,
    plans: HashMap<(JobId, StageId), Result<StagePlan, String>>,
    locations: HashMap<(JobId, StageId), Locations>,
    /// Task contexts by the settings stages were planned with.
    contexts: Contexts,
    /// The scheduler retired this worker and it has no task left: leave.
    exit: bool,
}

impl Commands {
    fn apply(&mut self, kind: command::Kind) {
        match kind {
            command::Kind::Peer(peer) => {
                let _ = self.inbox.send(WorkerMsg::Peer(
                    peer.worker_id as WorkerId,
                    peer.flight_address,
                ));
            }
            command::Kind::Plan(plan) => {
                let Some(stage) = plan.stage else { return };
                let decoded = if plan.noop {
                    Ok(StagePlan::Noop)
                } else {
                    let ctx = self.contexts.get(&plan.config, &self.runtime);
                    decode_stage(&plan.plan, ctx).map_err(|e| {
                        format!(
                            "stage {} of job {} could not be decoded: {}",
                            stage.stage,
                            stage.job,
                            e.message()
                        )
                    })
                };
                self.plans
                    .insert((stage.job, stage.stage as StageId), decoded);
            }
            command::Kind::Launch(launch) => self.launch(launch),
            command::Kind::CancelJob(job) => {
                self.forget_job(job);
                let _ = self.inbox.send(WorkerMsg::CancelJob(job));
            }
            command::Kind::ReleaseJob(job) => {
                self.forget_job(job);
                let _ = self.inbox.send(WorkerMsg::ReleaseJob(job));
            }
            command::Kind::Exit(exit) => self.exit = exit,
            command::Kind::Located(located) => {
                if let Some(task) = located.task {
                    let _ = self.inbox.send(WorkerMsg::Located {
                        job: task.job,
                        task: task_id(&task),
                        worker: located.worker as WorkerId,
                    });
                }
            }
            command::Kind::CancelTask(task) => {
                let _ = self.inbox.send(WorkerMsg::CancelTask(
                    task.job,
                    task_id(&task),
                    task.attempt,
                ));
            }
            command::Kind::ReleaseStage(stage) => {
                let key = (stage.job, stage.stage as StageId);
                self.plans.remove(&key);
                self.locations.remove(&key);
                let _ = self.inbox.send(WorkerMsg::ReleaseStage(key.0, key.1));
            }
        }
    }

    fn forget_job(&mut self, job: JobId) {
        self.plans.retain(|(j, _), _| *j != job);
        self.locations.retain(|(j, _), _| *j != job);
    }

    fn launch(&mut self, launch: proto::Launch) {
        let Some(task) = launch.task else { return };
        let id_of = task_id(&task);
        let key = (task.job, id_of.stage);
        let plan = match self.plans.get(&key) {
            Some(Ok(plan)) => plan.clone(),
            other => {
                let message = match other {
                    Some(Err(message)) => message.clone(),
                    _ => format!("no plan for stage {} of job {}", id_of.stage, task.job),
                };
                let _ = self.events.send(Event::TaskEnded {
                    job: task.job,
                    task: id_of,
                    attempt: task.attempt,
                    worker: self.worker,
                    outcome: TaskOutcome::Failed(shoal_err(ErrorKind::Planning, message)),
                });
                return;
            }
        };
        // Inputs come with a stage's first launch and when they change.
        if !launch.inputs.is_empty() || !self.locations.contains_key(&key) {
            let fresh = launch
                .inputs
                .into_iter()
                .map(|l| {
                    let workers = l
                        .workers
                        .iter()
                        .map(|&w| (w != NOT_LOCATED).then_some(w as WorkerId))
                        .collect();
                    (l.stage as StageId, workers)
                })
                .collect();
            self.locations
                .insert(key, Arc::new(InputLocations::new(fresh)));
        }
        let _ = self.inbox.send(WorkerMsg::Launch(Box::new(Launch {
            job: task.job,
            task: id_of,
            attempt: task.attempt,
            plan,
            locations: Arc::clone(&self.locations[&key]),
        })));
    }
}

fn task_id(task: &proto::TaskRef) -> TaskId {
    TaskId {
        stage: task.stage as StageId,
        partition: task.partition as usize,
    }
}

/// Task contexts a worker keeps for the settings it saw last.
const CONTEXTS_KEPT: usize = 4;

/// Task contexts by the settings they were made with, newest last (at most
/// [`CONTEXTS_KEPT`]). A session's jobs carry the same settings, and making a context
/// (DataFusion's functions, the session config) took about a millisecond for every stage
/// before its first task could start.
#[derive(Default)]
struct Contexts(Vec<(HashMap<String, String>, Arc<TaskContext>)>);

impl Contexts {
    /// The task context for stages planned with `settings`, made once.
    fn get(
        &mut self,
        settings: &HashMap<String, String>,
        runtime: &Arc<RuntimeEnv>,
    ) -> Arc<TaskContext> {
        if let Some((_, ctx)) = self.0.iter().find(|(s, _)| s == settings) {
            return Arc::clone(ctx);
        }
        let state = SessionStateBuilder::new()
            .with_config(task_session_config(settings))
            .with_runtime_env(Arc::clone(runtime))
            .with_default_features()
            .build();
        let ctx = state.task_ctx();
        if self.0.len() == CONTEXTS_KEPT {
            self.0.remove(0);
        }
        self.0.push((settings.clone(), Arc::clone(&ctx)));
        ctx
    }
}

/// Decodes a stage plan with the task context of the settings it was planned with.
fn decode_stage(bytes: &[u8], ctx: Arc<TaskContext>) -> Result<StagePlan> {
    let plan = decode_plan(bytes, &ctx)?;
    Ok(StagePlan::decoded(plan, ctx))
}

/// Sends task outcomes as they come, batched, and a heartbeat at every interval.
async fn report(
    mut events: mpsc::UnboundedReceiver<Event>,
    out: mpsc::UnboundedSender<proto::WorkerMessage>,
    runtime: Arc<RuntimeEnv>,
    store: Arc<ResultStore>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut usage = WorkerUsage::of(&runtime, &store);
    loop {
        let mut batch = proto::WorkerBatch::default();
        let mut heartbeat = false;
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                let mut next = Some(event);
                while let Some(event) = next {
                    match event {
                        Event::TaskEnded { job, task, attempt, outcome, .. } => {
                            batch.ended.push(task_ended(job, task, attempt, outcome));
                        }
                        Event::Fetched { job, from, bytes, .. } => {
                            batch.fetched.push(proto::Fetched {
                                job,
                                from_worker: from as u64,
                                bytes,
                            });
                        }
                        Event::Spilled { job, bytes, spills, .. } => {
                            batch.spilled.push(proto::Spilled { job, bytes, spills });
                        }
                        _ => {}
                    }
                    next = events.try_recv().ok();
                }
            }
            _ = tick.tick() => heartbeat = true,
        }
        batch.heartbeat = heartbeat.then(|| {
            // A busy store must not hold the heartbeat back: the usage last read goes
            // out again.
            if let Some(now) = WorkerUsage::try_of(&runtime, &store) {
                usage = now;
            }
            proto::Heartbeat {
                memory_used: usage.memory_used,
                memory_stored: usage.memory_stored,
                disk_bytes: usage.disk_bytes,
                spilled_bytes: usage.spilled_bytes,
                spills: usage.spills,
            }
        });
        let message = proto::WorkerMessage {
            kind: Some(worker_message::Kind::Batch(batch)),
        };
        if out.send(message).is_err() {
            break;
        }
    }
}

fn task_ended(job: JobId, task: TaskId, attempt: u32, outcome: TaskOutcome) -> proto::TaskEnded {
    use proto::task_ended::Outcome;
    let failed = |error: &DataFusionError, from: Option<WorkerId>| {
        Outcome::Failed(proto::Failed {
            fetch_failed: from.is_some(),
            fetch_worker: from.unwrap_or_default() as u64,
            ..failure_to_proto(kind_of(error), &error.to_string())
        })
    };
    let outcome = match outcome {
        TaskOutcome::Finished(report) => Outcome::Finished(proto::Finished {
            slot: report.slot as u32,
            duration_secs: report.duration.as_secs_f64(),
            metrics: crate::metrics::metrics_to_proto(&report.metrics),
            bucket_bytes: report.bucket_bytes,
        }),
        TaskOutcome::FetchFailed { from, cause } => failed(&cause, Some(from)),
        TaskOutcome::Failed(error) => failed(&error, None),
        TaskOutcome::Cancelled => Outcome::Cancelled(true),
    };
    proto::TaskEnded {
        task: Some(proto::TaskRef {
            job,
            stage: task.stage as u32,
            partition: task.partition as u32,
            attempt,
        }),
        outcome: Some(outcome),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_planned_with_the_same_settings_share_one_task_context() {
        let runtime = Arc::new(RuntimeEnv::default());
        let mut contexts = Contexts::default();
        let settings = |batch: usize| {
            HashMap::from([(
                "datafusion.execution.batch_size".to_string(),
                batch.to_string(),
            )])
        };
        let first = contexts.get(&settings(1000), &runtime);
        assert_eq!(first.session_config().batch_size(), 1000);
        assert!(Arc::ptr_eq(
            &first,
            &contexts.get(&settings(1000), &runtime)
        ));
        let other = contexts.get(&settings(2000), &runtime);
        assert_eq!(other.session_config().batch_size(), 2000);
        assert!(!Arc::ptr_eq(&first, &other));
        // Four more settings push the first out: it is made again.
        for batch in 3..7 {
            contexts.get(&settings(batch * 1000), &runtime);
        }
        assert_eq!(contexts.0.len(), CONTEXTS_KEPT);
        let again = contexts.get(&settings(1000), &runtime);
        assert!(!Arc::ptr_eq(&first, &again));
        assert_eq!(again.session_config().batch_size(), 1000);
    }
}
