//! The scheduler process: the in-process [`Scheduler`] state machine behind the gRPC
//! control plane. Worker processes join over `Join` streams, clients submit over `Submit`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use datafusion::common::{DataFusionError, Result};
use futures::Stream;
use parking_lot::{Mutex, RwLock};
use rustc_hash::{FxHashMap, FxHashSet};
use shoal_planner::config::ShoalSettings;
use shoal_planner::{JobId, Locations, StageId, TaskId, WorkerId, kind_of};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::events::{event_to_proto, failure_to_proto};
use super::messages::{batch_events, job_spec, registration, result_lost_event};
use super::proto::{self, command, job_event, scheduler_message, worker_message};
use super::{resources_from_proto, resources_to_proto};
use crate::cluster::next_batch;
use crate::protocol::{
    ClusterStatus, Event, EventBatch, JobOutputs, StagePlan, WorkerMsg, WorkerStatus,
    failure_message, job_progress,
};
use crate::scheduler::Scheduler;
use crate::security::{Security, incoming};

/// How a scheduler process behaves.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Tasks in flight per worker slot.
    pub prefetch: usize,
    /// A worker silent for this long is lost.
    pub heartbeat_timeout: Duration,
    /// Token and TLS.
    pub security: Security,
}

impl SchedulerOptions {
    /// A scheduler shaped by `settings.scheduler`, with `security`.
    pub fn new(settings: &ShoalSettings, security: Security) -> Self {
        let seconds = settings.scheduler.heartbeat_timeout;
        Self {
            prefetch: settings.scheduler.prefetch,
            heartbeat_timeout: Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX),
            security,
        }
    }
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self::new(&ShoalSettings::default(), Security::default())
    }
}

/// Commands sent to a worker in one message, at most.
const BATCH: usize = 1024;

struct Service {
    /// Per-connection tasks; they stop when the server does.
    tasks: Mutex<JoinSet<()>>,
    events: mpsc::UnboundedSender<Event>,
    /// Every job's events, as the scheduler publishes them.
    job_events: broadcast::Sender<EventBatch>,
    addresses: Arc<RwLock<HashMap<WorkerId, String>>>,
    next_job: AtomicU64,
}

/// The job events a scheduler process publishes, for readers in the same process (its
/// dashboard): the batches the scheduler sends, without the gRPC stream's encoding.
#[derive(Clone)]
pub struct EventFeed(broadcast::Sender<EventBatch>);

/// How often [`EventFeed::batches`] looks for new batches.
const FEED_POLL: Duration = Duration::from_millis(10);

impl EventFeed {
    /// Every job event from now on, in the batches the scheduler publishes (one per turn
    /// of its loop); a reader that falls behind misses some.
    ///
    /// The reader looks for new batches every [`FEED_POLL`] instead of waiting on the
    /// channel: a waiting reader would be woken by the scheduler after every turn, tens
    /// of thousands of times a second on a busy cluster, and each wake-up costs the
    /// scheduler's thread a system call.
    pub fn batches(&self) -> futures::stream::BoxStream<'static, EventBatch> {
        let updates = self.0.subscribe();
        Box::pin(futures::stream::unfold(updates, |mut updates| async move {
            use broadcast::error::TryRecvError;
            loop {
                match updates.try_recv() {
                    Ok(batch) => return Some((batch, updates)),
                    Err(TryRecvError::Lagged(_)) => continue,
                    Err(TryRecvError::Closed) => return None,
                    Err(TryRecvError::Empty) => tokio::time::sleep(FEED_POLL).await,
                }
            }
        }))
    }
}

/// Runs a scheduler on `listener` until the server fails.
pub async fn run_scheduler(
    listener: tokio::net::TcpListener,
    options: SchedulerOptions,
) -> Result<()> {
    start_scheduler(listener, options).1.await
}

/// A scheduler on `listener`: its event feed, and the future that runs it until the
/// server fails.
pub fn start_scheduler(
    listener: tokio::net::TcpListener,
    options: SchedulerOptions,
) -> (
    EventFeed,
    impl std::future::Future<Output = Result<()>> + Send + 'static,
) {
    let scheduler = Scheduler::empty(options.prefetch, Some(options.heartbeat_timeout));
    let job_events = scheduler.events();
    (
        EventFeed(job_events.clone()),
        serve_scheduler(listener, options, scheduler, job_events),
    )
}

async fn serve_scheduler(
    listener: tokio::net::TcpListener,
    options: SchedulerOptions,
    scheduler: Scheduler,
    job_events: broadcast::Sender<EventBatch>,
) -> Result<()> {
    let (events, rx) = mpsc::unbounded_channel();
    let (probe, probes) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    tasks.spawn(scheduler.with_probe(probe).run(rx));
    tasks.spawn(probe_suspects(
        probes,
        events.clone(),
        options.heartbeat_timeout,
    ));
    let service = Service {
        tasks: Mutex::new(tasks),
        events,
        job_events,
        addresses: Arc::new(RwLock::new(HashMap::new())),
        next_job: AtomicU64::new(1),
    };
    let security = Arc::new(options.security.clone());
    let check = Arc::clone(&security);
    // No size limit: a job's plan carries the data of in-memory tables.
    let server = proto::scheduler_server::SchedulerServer::new(service)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let server =
        tonic::service::interceptor::InterceptedService::new(server, move |request: Request<()>| {
            check.check(&request)?;
            Ok(request)
        });
    security
        .server()?
        .add_service(server)
        .serve_with_incoming(incoming(listener))
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))
}

impl Service {
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock();
        // Forget tasks that already ended.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl proto::scheduler_server::Scheduler for Service {
    type JoinStream = EventStream<proto::SchedulerMessage>;
    type SubmitStream = EventStream<proto::JobEvent>;
    type EventsStream = EventStream<proto::ClusterEvent>;

    async fn join(
        &self,
        request: Request<Streaming<proto::WorkerMessage>>,
    ) -> Result<Response<Self::JoinStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("a worker must register first"))?;
        let Some(worker_message::Kind::Register(register)) = first.kind else {
            return Err(Status::invalid_argument("a worker must register first"));
        };
        let (info, address) = registration(register)?;
        let (tx, commands) = mpsc::unbounded_channel();
        let (reply, id) = oneshot::channel();
        self.events
            .send(Event::WorkerJoined {
                info: Box::new(info),
                tx,
                reply,
            })
            .map_err(|_| Status::unavailable("the scheduler is shutting down"))?;
        let id = id
            .await
            .map_err(|_| Status::unavailable("the scheduler is shutting down"))?;
        self.addresses.write().insert(id, address);
        self.spawn(read_worker(id, inbound, self.events.clone()));
        let (out, out_rx) = mpsc::channel(16);
        let registered = proto::SchedulerMessage {
            kind: Some(scheduler_message::Kind::Registered(proto::Registered {
                worker_id: id as u64,
            })),
        };
        let _ = out.send(Ok(registered)).await;
        self.spawn(write_worker(commands, out));
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn submit(
        &self,
        request: Request<proto::SubmitJob>,
    ) -> Result<Response<Self::SubmitStream>, Status> {
        let submit = request.into_inner();
        let recompute_results = submit.recompute_results;
        let spec = job_spec(submit)?;
        let job = self.next_job.fetch_add(1, Ordering::Relaxed);
        let total = spec.tasks_total();
        let result_stage = spec.stages.len() - 1;
        let (done, done_rx) = oneshot::channel();
        let (relocated, relocations) = mpsc::unbounded_channel();
        // Subscribed before the job exists: none of its events is missed.
        let updates = self.job_events.subscribe();
        self.events
            .send(Event::Submit {
                job,
                spec: Box::new(spec),
                done,
                relocated: recompute_results.then_some(relocated),
            })
            .map_err(|_| Status::unavailable("the scheduler is shutting down"))?;
        let (out, out_rx) = mpsc::channel(16);
        let follow = FollowJob {
            job,
            total,
            result_stage,
            out,
            events: self.events.clone(),
            addresses: Arc::clone(&self.addresses),
        };
        self.spawn(follow.run(done_rx, relocations, updates));
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn cancel(
        &self,
        request: Request<proto::CancelRequest>,
    ) -> Result<Response<proto::CancelReply>, Status> {
        let (tx, rx) = oneshot::channel();
        self.events
            .send(Event::Cancel(request.into_inner().job, tx))
            .map_err(|_| Status::unavailable("the scheduler is shutting down"))?;
        let cancelled = rx
            .await
            .map_err(|_| Status::unavailable("the scheduler is shutting down"))?;
        Ok(Response::new(proto::CancelReply { cancelled }))
    }

    async fn retire(
        &self,
        request: Request<proto::RetireRequest>,
    ) -> Result<Response<proto::RetireReply>, Status> {
        let worker = request.into_inner().worker as WorkerId;
        let (tx, rx) = oneshot::channel();
        self.events
            .send(Event::Retire(worker, tx))
            .map_err(|_| Status::unavailable("the scheduler is shutting down"))?;
        let retiring = rx
            .await
            .map_err(|_| Status::unavailable("the scheduler is shutting down"))?;
        Ok(Response::new(proto::RetireReply { retiring }))
    }

    async fn events(
        &self,
        _request: Request<proto::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let mut updates = self.job_events.subscribe();
        let (out, out_rx) = mpsc::channel(1024);
        self.spawn(async move {
            while let Some(batch) = next_batch(&mut updates).await {
                for event in batch.iter() {
                    if out.send(Ok(event_to_proto(event))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn result_lost(
        &self,
        request: Request<proto::ResultLostRequest>,
    ) -> Result<Response<proto::ResultLostReply>, Status> {
        self.events
            .send(result_lost_event(request.into_inner()))
            .map_err(|_| Status::unavailable("the scheduler is shutting down"))?;
        Ok(Response::new(proto::ResultLostReply {}))
    }

    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::ClusterStatus>, Status> {
        let (tx, rx) = oneshot::channel();
        self.events
            .send(Event::Status(tx))
            .map_err(|_| Status::unavailable("the scheduler is shutting down"))?;
        let status = rx
            .await
            .map_err(|_| Status::unavailable("the scheduler is shutting down"))?;
        Ok(Response::new(status_to_proto(&status)))
    }
}

/// Streams a job's progress and result locations to its client, and ends the job when
/// the client lets go of the stream.
struct FollowJob {
    job: JobId,
    total: usize,
    result_stage: StageId,
    out: mpsc::Sender<Result<proto::JobEvent, Status>>,
    events: mpsc::UnboundedSender<Event>,
    addresses: Arc<RwLock<HashMap<WorkerId, String>>>,
}

type Located = Result<JobOutputs, DataFusionError>;

impl FollowJob {
    async fn run(
        self,
        done: oneshot::Receiver<Located>,
        mut relocations: mpsc::UnboundedReceiver<Located>,
        updates: broadcast::Receiver<EventBatch>,
    ) {
        let accepted = job_event::Kind::Accepted(proto::Accepted {
            job: self.job,
            tasks_total: self.total as u32,
        });
        if self.send(Ok(accepted)).await && self.until_done(done, updates).await {
            // The client reads the results from the workers, then closes the stream;
            // meanwhile lost result partitions are recomputed and the client told where.
            loop {
                tokio::select! {
                    located = relocations.recv() => {
                        let Some(located) = located else { break };
                        let failed = located.is_err();
                        let kind = self.located(located, |outputs| {
                            job_event::Kind::Relocated(proto::Relocated { outputs })
                        });
                        if !self.send(kind).await || failed {
                            break;
                        }
                    }
                    _ = self.out.closed() => break,
                }
            }
            self.out.closed().await;
        }
        let _ = self.events.send(Event::EndJob(self.job));
    }

    /// Sends `kind`; false once the client is gone.
    async fn send(&self, kind: Result<job_event::Kind, Status>) -> bool {
        let event = kind.map(|kind| proto::JobEvent { kind: Some(kind) });
        self.out.send(event).await.is_ok()
    }

    /// Sends progress until the result is ready; true if the job succeeded and the
    /// client still listens.
    async fn until_done(
        &self,
        mut done: oneshot::Receiver<Located>,
        mut updates: broadcast::Receiver<EventBatch>,
    ) -> bool {
        let (mut open, mut sent) = (true, 0);
        loop {
            tokio::select! {
                result = &mut done => {
                    let result = result.map_err(|_| Status::unavailable("the scheduler stopped"));
                    let succeeded = matches!(result, Ok(Ok(_)));
                    let kind = result.and_then(|located| self.located(located, |outputs| {
                        job_event::Kind::Done(proto::Done {
                            stage: self.result_stage as u32,
                            outputs,
                        })
                    }));
                    return self.send(kind).await && succeeded;
                }
                batch = next_batch(&mut updates), if open => {
                    let Some(batch) = batch else {
                        open = false;
                        continue;
                    };
                    // Only the latest count goes out.
                    let Some((progress, _)) = job_progress(&batch, self.job) else { continue };
                    if progress.tasks_done == sent {
                        continue;
                    }
                    sent = progress.tasks_done;
                    if !self.send(Ok(job_event::Kind::TasksDone(sent as u32))).await {
                        return false;
                    }
                }
                _ = self.out.closed() => return false,
            }
        }
    }

    /// The event for result locations (made by `wrap`), or for the job's failure.
    fn located(
        &self,
        located: Located,
        wrap: impl FnOnce(Vec<proto::Output>) -> job_event::Kind,
    ) -> Result<job_event::Kind, Status> {
        Ok(match located {
            Ok(outputs) => {
                let addresses = self.addresses.read();
                wrap(
                    outputs
                        .into_iter()
                        .map(|(task, worker)| proto::Output {
                            partition: task.partition as u32,
                            worker_id: worker as u64,
                            flight_address: addresses.get(&worker).cloned().unwrap_or_default(),
                        })
                        .collect(),
                )
            }
            Err(error) => {
                job_event::Kind::Failed(failure_to_proto(kind_of(&error), &failure_message(&error)))
            }
        })
    }
}

/// Confirms or clears the scheduler's suspicion of workers that a peer could not fetch
/// from: a data port that refuses connections means the worker is gone; one that accepts
/// leaves the verdict to its heartbeats (a stopped process still has its port accepted by
/// the kernel, and falls silent).
async fn probe_suspects(
    mut probes: mpsc::UnboundedReceiver<(WorkerId, String)>,
    events: mpsc::UnboundedSender<Event>,
    timeout: Duration,
) {
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            probe = probes.recv() => {
                let Some((worker, address)) = probe else { break };
                let events = events.clone();
                running.spawn(async move {
                    let bare = address
                        .trim_start_matches("http://")
                        .trim_start_matches("https://")
                        .trim_end_matches('/')
                        .to_string();
                    let connect = tokio::net::TcpStream::connect(bare);
                    let event = match tokio::time::timeout(timeout, connect).await {
                        Ok(Ok(_)) => Event::Reachable(worker),
                        Ok(Err(e)) => Event::WorkerLost {
                            worker,
                            cause: format!("a peer could not fetch from it and its data port \
                                            {address} refuses connections ({e})"),
                        },
                        // Silence: the heartbeat timeout decides.
                        Err(_) => return,
                    };
                    let _ = events.send(event);
                });
            }
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    }
}

/// Reads a worker's outcomes and heartbeats; the worker is lost when the stream ends.
async fn read_worker(
    id: WorkerId,
    mut inbound: Streaming<proto::WorkerMessage>,
    events: mpsc::UnboundedSender<Event>,
) {
    let cause = loop {
        match inbound.next().await {
            None => break "its connection closed".to_string(),
            Some(Err(status)) => break format!("its connection failed: {}", status.message()),
            Some(Ok(message)) => {
                let Some(worker_message::Kind::Batch(batch)) = message.kind else {
                    continue;
                };
                for event in batch_events(id, batch) {
                    let _ = events.send(event);
                }
            }
        }
    };
    let _ = events.send(Event::WorkerLost { worker: id, cause });
}

/// Sends the scheduler's commands for one worker, batching whatever is queued and
/// shipping each stage plan once.
async fn write_worker(
    mut commands: mpsc::UnboundedReceiver<WorkerMsg>,
    out: mpsc::Sender<Result<proto::SchedulerMessage, Status>>,
) {
    let mut shipped = Shipped::default();
    let mut batch = Vec::new();
    while let Some(first) = commands.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next {
            encode_command(msg, &mut shipped, &mut batch);
            next = if batch.len() < BATCH {
                commands.try_recv().ok()
            } else {
                None
            };
        }
        let message = proto::SchedulerMessage {
            kind: Some(scheduler_message::Kind::Batch(proto::CommandBatch {
                commands: std::mem::take(&mut batch),
            })),
        };
        if out.send(Ok(message)).await.is_err() {
            break;
        }
    }
}

/// How a launch's input locations say "not finished yet".
pub(crate) const NOT_LOCATED: u64 = u64::MAX;

fn task_ref(job: JobId, task: TaskId, attempt: u32) -> proto::TaskRef {
    proto::TaskRef {
        job,
        stage: task.stage as u32,
        partition: task.partition as u32,
        attempt,
    }
}

fn stage_ref(job: JobId, stage: StageId) -> Option<proto::StageRef> {
    Some(proto::StageRef {
        job,
        stage: stage as u32,
    })
}

/// What one worker already has: stage plans, and the input locations last sent for each
/// stage (a launch without inputs reuses them).
#[derive(Default)]
pub(crate) struct Shipped {
    plans: FxHashSet<(JobId, StageId)>,
    locations: FxHashMap<(JobId, StageId), Locations>,
}

impl Shipped {
    fn forget_job(&mut self, job: JobId) {
        self.plans.retain(|(j, _)| *j != job);
        self.locations.retain(|(j, _), _| *j != job);
    }
}

pub(crate) fn encode_command(
    msg: WorkerMsg,
    shipped: &mut Shipped,
    batch: &mut Vec<proto::Command>,
) {
    let mut push = |kind| batch.push(proto::Command { kind: Some(kind) });
    match msg {
        WorkerMsg::Launch(launch) => {
            let stage = launch.task.stage;
            if !shipped.plans.contains(&(launch.job, stage)) {
                let plan = match &launch.plan {
                    StagePlan::Encoded(encoded) => proto::StagePlan {
                        stage: stage_ref(launch.job, stage),
                        plan: encoded.plan.clone(),
                        config: (*encoded.config).clone(),
                        noop: false,
                    },
                    StagePlan::Noop => proto::StagePlan {
                        stage: stage_ref(launch.job, stage),
                        noop: true,
                        ..Default::default()
                    },
                    StagePlan::Decoded { .. } => {
                        tracing::error!("a stage plan of this process cannot be sent to a worker");
                        return;
                    }
                };
                shipped.plans.insert((launch.job, stage));
                push(command::Kind::Plan(plan));
            }
            let known = shipped
                .locations
                .get(&(launch.job, stage))
                .is_some_and(|sent| Arc::ptr_eq(sent, &launch.locations));
            let inputs = if known {
                Vec::new()
            } else {
                shipped
                    .locations
                    .insert((launch.job, stage), Arc::clone(&launch.locations));
                launch
                    .locations
                    .snapshot()
                    .into_iter()
                    .map(|(stage, workers)| proto::StageLocations {
                        stage: stage as u32,
                        workers: workers
                            .iter()
                            .map(|w| w.map_or(NOT_LOCATED, |w| w as u64))
                            .collect(),
                    })
                    .collect()
            };
            push(command::Kind::Launch(proto::Launch {
                task: Some(task_ref(launch.job, launch.task, launch.attempt)),
                inputs,
            }));
        }
        WorkerMsg::CancelJob(job) => {
            shipped.forget_job(job);
            push(command::Kind::CancelJob(job));
        }
        WorkerMsg::ReleaseJob(job) => {
            shipped.forget_job(job);
            push(command::Kind::ReleaseJob(job));
        }
        WorkerMsg::ReleaseStage(job, stage) => {
            // The worker drops the stage's plan; lineage may need it again.
            shipped.plans.remove(&(job, stage));
            shipped.locations.remove(&(job, stage));
            push(command::Kind::ReleaseStage(proto::StageRef {
                job,
                stage: stage as u32,
            }));
        }
        WorkerMsg::Located { job, task, worker } => push(command::Kind::Located(proto::Located {
            task: Some(task_ref(job, task, 0)),
            worker: worker as u64,
        })),
        WorkerMsg::CancelTask(job, task, attempt) => {
            push(command::Kind::CancelTask(task_ref(job, task, attempt)))
        }
        WorkerMsg::Peer(id, address) => push(command::Kind::Peer(proto::Peer {
            worker_id: id as u64,
            flight_address: address,
        })),
        WorkerMsg::Exit => push(command::Kind::Exit(true)),
    }
}

pub(crate) fn status_to_proto(status: &ClusterStatus) -> proto::ClusterStatus {
    proto::ClusterStatus {
        workers: status
            .workers
            .iter()
            .map(|w| proto::WorkerInfo {
                id: w.id as u64,
                address: w.address.clone(),
                slots: w.slots as u32,
                resources: resources_to_proto(&w.resources),
                resources_in_use: resources_to_proto(&w.resources_in_use),
                memory_limit: w.memory_limit,
                memory_used: w.memory_used,
                memory_stored: w.memory_stored,
                disk_bytes: w.disk_bytes,
                tasks_running: w.tasks_running as u32,
                tasks_completed: w.tasks_completed,
                alive: w.alive,
                retiring: w.retiring,
                spilled_bytes: w.spilled_bytes,
                spills: w.spills,
                group: w.group.clone(),
            })
            .collect(),
        jobs: status
            .jobs
            .iter()
            .map(|j| proto::JobInfo {
                id: j.id,
                tasks_total: j.tasks_total as u32,
                tasks_done: j.tasks_done as u32,
                waiting: j.waiting.clone().unwrap_or_default(),
            })
            .collect(),
        last_activity_unix_secs: status
            .last_activity
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64()),
        event_loop_lag_secs: status.event_loop_lag.as_secs_f64(),
    }
}

/// The proto form of a cluster status back in the scheduler's types.
pub fn status_from_proto(status: proto::ClusterStatus) -> ClusterStatus {
    ClusterStatus {
        workers: status
            .workers
            .into_iter()
            .map(|w| WorkerStatus {
                id: w.id as WorkerId,
                address: w.address,
                slots: w.slots as usize,
                resources: resources_from_proto(&w.resources),
                resources_in_use: resources_from_proto(&w.resources_in_use),
                memory_limit: w.memory_limit,
                memory_used: w.memory_used,
                memory_stored: w.memory_stored,
                disk_bytes: w.disk_bytes,
                tasks_running: w.tasks_running as usize,
                tasks_completed: w.tasks_completed,
                alive: w.alive,
                retiring: w.retiring,
                spilled_bytes: w.spilled_bytes,
                spills: w.spills,
                group: w.group,
            })
            .collect(),
        jobs: status
            .jobs
            .into_iter()
            .map(|j| crate::protocol::JobStatus {
                id: j.id,
                tasks_total: j.tasks_total as usize,
                tasks_done: j.tasks_done as usize,
                waiting: (!j.waiting.is_empty()).then_some(j.waiting),
            })
            .collect(),
        last_activity: (status.last_activity_unix_secs > 0.0)
            .then(|| Duration::try_from_secs_f64(status.last_activity_unix_secs).ok())
            .flatten()
            .map(|since| UNIX_EPOCH + since),
        event_loop_lag: Duration::try_from_secs_f64(status.event_loop_lag_secs).unwrap_or_default(),
    }
}
