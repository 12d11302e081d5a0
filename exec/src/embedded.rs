//! The embedded cluster: one scheduler and N workers in this process, on a runtime of
//! their own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use shoal_planner::config::ShoalSettings;
use shoal_planner::{
    ErrorKind, JobId, PartitionKey, Placement, Resources, TaskGraph, WorkerId, shoal_err,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::cluster::{Cluster, JobHandle, event_stream, follow_progress};
use crate::flight::{FlightTransport, StoreFlightService, serve};
use crate::protocol::{ClusterStatus, Event, EventBatch, JobEvent, JobSpec, Progress, WorkerUsage};
use crate::scheduler::Scheduler;
use crate::security::Security;
use crate::store::{ResultStore, StoreStats};
use crate::transport::{FetchLog, InProcessTransport, Transport, WorkerIo};
use crate::worker::{Worker, pause_threshold};

/// How an embedded cluster is shaped.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Number of workers.
    pub workers: usize,
    /// Task slots per worker.
    pub slots: usize,
    /// Operator memory limit per worker, in bytes.
    pub memory_limit: usize,
    /// In-memory task output per worker before the store spills, in bytes.
    pub store_memory_target: usize,
    /// Where workers put spill files.
    pub scratch_dir: PathBuf,
    /// Named resources each worker offers, by worker id (missing: none).
    pub worker_resources: Vec<Resources>,
    /// How task outputs move between workers.
    pub data_plane: DataPlane,
}

impl EmbeddedOptions {
    /// The cluster `settings` describe (resolved with [`ShoalSettings::resolve`]): its
    /// workers, their slots, memory limits, store targets and scratch directory.
    pub fn new(
        settings: &ShoalSettings,
        data_plane: DataPlane,
        worker_resources: Vec<Resources>,
    ) -> Self {
        Self {
            workers: settings.workers,
            slots: settings.worker.slots,
            memory_limit: settings.worker.memory_limit.bytes(),
            store_memory_target: settings.store.memory_target.bytes(),
            scratch_dir: settings.scratch_path(),
            worker_resources,
            data_plane,
        }
    }
}

/// How task outputs move between the workers of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DataPlane {
    /// Batches handed over by `Arc` inside the process.
    #[default]
    InProcess,
    /// Each worker serves its outputs with Arrow Flight on 127.0.0.1 and every fetch goes
    /// over gRPC with this token, as between the processes of a cluster.
    Flight {
        /// The cluster token every call must carry.
        token: String,
    },
}

/// Sends `EndJob` when the client lets go of the job's stream.
struct JobGuard {
    job: JobId,
    events: mpsc::UnboundedSender<Event>,
    /// Dropped with the guard: tells the job's progress follower that the client let go.
    _released: oneshot::Sender<()>,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        let _ = self.events.send(Event::EndJob(self.job));
    }
}

/// An in-process scheduler and its workers.
pub struct EmbeddedCluster {
    runtime: Option<tokio::runtime::Runtime>,
    events: mpsc::UnboundedSender<Event>,
    job_events: broadcast::Sender<EventBatch>,
    transport: Arc<dyn Transport>,
    stores: Vec<Arc<ResultStore>>,
    /// Each worker's DataFusion runtime (its memory pool), for the status's memory.
    worker_runtimes: Vec<Arc<RuntimeEnv>>,
    flight_addresses: Vec<SocketAddr>,
    next_job: AtomicU64,
    options: EmbeddedOptions,
}

impl std::fmt::Debug for EmbeddedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedCluster")
            .field("options", &self.options)
            .finish()
    }
}

impl EmbeddedCluster {
    /// Starts the scheduler and `options.workers` workers. Worker runtimes share `base`'s
    /// object stores and caches but each gets its own memory pool and spill directory.
    pub fn start(options: EmbeddedOptions, base: &RuntimeEnv) -> Result<Self> {
        let workers = options.workers.max(1);
        let slots = options.slots.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers * slots)
            .thread_name("shoal-worker")
            .enable_all()
            .build()?;
        let mut stores = Vec::with_capacity(workers);
        for _ in 0..workers {
            stores.push(Arc::new(ResultStore::new(
                &options.scratch_dir,
                options.store_memory_target,
            )?));
        }
        let mut flight_addresses = Vec::new();
        let transport: Arc<dyn Transport> = match &options.data_plane {
            DataPlane::InProcess => Arc::new(InProcessTransport::new(stores.clone())),
            DataPlane::Flight { token } => {
                let _entered = runtime.enter();
                let security = Arc::new(Security::with_token(token));
                let flight = FlightTransport::new(
                    stores.iter().cloned().enumerate().collect(),
                    false,
                    Arc::clone(&security),
                    runtime.handle().clone(),
                );
                for (id, store) in stores.iter().enumerate() {
                    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
                    listener.set_nonblocking(true)?;
                    let address = listener.local_addr()?;
                    flight_addresses.push(address);
                    flight.set_address(id, address.to_string());
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let service = StoreFlightService::new(Arc::clone(store), Arc::clone(&security));
                    let security = Arc::clone(&security);
                    runtime.spawn(async move {
                        if let Err(e) = serve(service, listener, &security).await {
                            tracing::error!("Flight server stopped: {e}");
                        }
                    });
                }
                Arc::new(flight)
            }
        };
        let stores_for_stats = stores.clone();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut inboxes = Vec::with_capacity(workers);
        let mut worker_runtimes = Vec::with_capacity(workers);
        for (id, store) in stores.into_iter().enumerate() {
            let worker_runtime = RuntimeEnvBuilder::from_runtime_env(base)
                .with_memory_pool(Arc::new(FairSpillPool::new(options.memory_limit)))
                .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(
                    DiskManagerMode::Directories(vec![store.dir().to_path_buf()]),
                ))
                .build_arc()?;
            store.bound_by(
                Arc::clone(&worker_runtime.memory_pool),
                pause_threshold(options.memory_limit),
            );
            worker_runtimes.push(Arc::clone(&worker_runtime));
            let fetched = Arc::new(FetchLog::default());
            let worker = Worker {
                id,
                slots,
                pause_above: pause_threshold(options.memory_limit),
                memory_limit: options.memory_limit,
                runtime: worker_runtime,
                store,
                io: Arc::new(WorkerIo::new(
                    id,
                    Arc::clone(&transport),
                    Arc::clone(&fetched),
                )),
                fetched,
                compute: None,
            };
            let (tx, rx) = mpsc::unbounded_channel();
            inboxes.push((
                tx,
                options
                    .worker_resources
                    .get(id)
                    .cloned()
                    .unwrap_or_default(),
            ));
            runtime.spawn(worker.run(rx, events_tx.clone(), |_, _| {}));
        }
        let scheduler = Scheduler::new(inboxes, slots);
        let job_events = scheduler.events();
        runtime.spawn(scheduler.run(events_rx));
        Ok(Self {
            runtime: Some(runtime),
            events: events_tx,
            job_events,
            transport,
            stores: stores_for_stats,
            worker_runtimes,
            flight_addresses,
            next_job: AtomicU64::new(1),
            options,
        })
    }

    /// The cluster's shape.
    pub fn options(&self) -> &EmbeddedOptions {
        &self.options
    }

    /// Total task slots.
    pub fn total_slots(&self) -> usize {
        self.options.workers.max(1) * self.options.slots.max(1)
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        // The workers' tasks, which share the stores, are dropped in the background, and
        // the process may exit first: spill files go now.
        for store in &self.stores {
            store.discard();
        }
    }
}

/// The in-process scheduler's loop ended: it only does when the session is dropped or
/// after a bug.
fn scheduler_stopped() -> DataFusionError {
    shoal_err(ErrorKind::Internal, "the scheduler has stopped")
}

impl EmbeddedCluster {
    async fn ask<T>(&self, question: impl FnOnce(oneshot::Sender<T>) -> Event) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.events
            .send(question(tx))
            .map_err(|_| scheduler_stopped())?;
        rx.await.map_err(|_| scheduler_stopped())
    }
}

impl Cluster for EmbeddedCluster {
    /// Submits `graph`; `ctx` carries the session's configuration and functions. The
    /// returned stream yields the result stage's output with `schema`.
    fn submit(&self, graph: TaskGraph, ctx: Arc<TaskContext>, schema: SchemaRef) -> JobHandle {
        let job = self.next_job.fetch_add(1, Ordering::Relaxed);
        let (done_tx, done_rx) = oneshot::channel();
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        // The handle's progress is the job's events, folded.
        let updates = self.job_events.subscribe();
        let (released_tx, released) = oneshot::channel();
        self.runtime()
            .spawn(follow_progress(job, updates, progress_tx, released));
        let sent = self.events.send(Event::Submit {
            job,
            spec: Box::new(JobSpec::local(graph, ctx)),
            done: done_tx,
            relocated: None,
        });
        let guard = JobGuard {
            job,
            events: self.events.clone(),
            _released: released_tx,
        };
        let transport = Arc::clone(&self.transport);
        let outputs = async move {
            if sent.is_err() {
                return Err(scheduler_stopped());
            }
            let outputs = done_rx.await.map_err(|_| scheduler_stopped())??;
            let fetches = outputs.into_iter().map(move |(task, worker)| {
                transport.fetch(
                    PartitionKey {
                        job,
                        task,
                        bucket: 0,
                    },
                    worker,
                )
            });
            Ok(futures::stream::iter(fetches).try_flatten())
        };
        let stream = futures::stream::once(outputs)
            .try_flatten()
            .map(move |batch| {
                let _keep_until_stream_drops = &guard;
                batch
            });
        JobHandle {
            job,
            stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
            progress: progress_rx,
        }
    }

    fn status(&self) -> BoxFuture<'_, Result<ClusterStatus>> {
        // In-process workers send no heartbeats: their memory and spills are read here.
        let usage: Vec<WorkerUsage> = self
            .stores
            .iter()
            .zip(&self.worker_runtimes)
            .map(|(store, runtime)| WorkerUsage::of(runtime, store))
            .collect();
        async move {
            let mut status = self.ask(Event::Status).await?;
            for (worker, usage) in status.workers.iter_mut().zip(usage) {
                worker.set_usage(usage);
            }
            Ok(status)
        }
        .boxed()
    }

    fn cancel(&self, job: JobId) -> BoxFuture<'_, Result<bool>> {
        self.ask(move |reply| Event::Cancel(job, reply)).boxed()
    }

    fn retire(&self, worker: WorkerId) -> BoxFuture<'_, Result<bool>> {
        let error = shoal_err(
            ErrorKind::Input,
            format!(
                "worker {worker} runs in this process and cannot retire; only worker \
                 processes (shoal worker) can"
            ),
        );
        async move { Err(error) }.boxed()
    }

    fn events(&self) -> BoxFuture<'_, Result<BoxStream<'static, JobEvent>>> {
        let stream = event_stream(self.job_events.subscribe());
        async move { Ok(stream) }.boxed()
    }

    fn placement(&self) -> Placement {
        Placement::InProcess
    }

    fn runtime(&self) -> &tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("the cluster runtime runs until the cluster is dropped")
            .handle()
    }

    fn store_stats(&self) -> Vec<StoreStats> {
        self.stores.iter().map(|s| s.stats()).collect()
    }

    fn flight_addresses(&self) -> Vec<SocketAddr> {
        self.flight_addresses.clone()
    }
}
