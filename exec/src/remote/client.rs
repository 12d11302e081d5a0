//! A client of a scheduler process: submits task graphs, streams their results from the
//! workers over Arrow Flight, and asks for the cluster's status.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use shoal_planner::{
    ErrorKind, JobId, Placement, ReplayHazard, ShoalConfig, StageId, TaskGraph, WorkerId,
    encode_plan, graph_replay_hazard, shoal_err,
};
use tokio::sync::watch;

use super::control::{ControlClient, connect_error, control_client};
use super::events::{event_from_proto, failure_from_proto};
use super::proto::{self, job_event};
use super::resources_to_proto;
use super::results::{Location, ResultReader, ResultSource};
use super::server::status_from_proto;
use crate::cluster::{Cluster, JobHandle};
use crate::flight::FlightTransport;
use crate::protocol::{ClusterStatus, JobEvent, Progress};
use crate::security::Security;

/// The client's own runtime ended under a call: a bug, not the user's doing.
fn runtime_stopped() -> DataFusionError {
    shoal_err(ErrorKind::Internal, "the client runtime stopped")
}

/// A connection to a running cluster (`shoal scheduler` and its workers).
pub struct RemoteCluster {
    url: String,
    security: Arc<Security>,
    client: ControlClient,
    transport: Arc<FlightTransport>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for RemoteCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCluster")
            .field("url", &self.url)
            .finish()
    }
}

impl RemoteCluster {
    /// Connects to the scheduler at `url` and checks that it accepts this client.
    pub fn connect(url: &str, security: Security) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shoal-client")
            .enable_all()
            .build()?;
        let security = Arc::new(security);
        // Runs on the client's own runtime: the caller may be inside another one.
        let (tx, rx) = std::sync::mpsc::channel();
        let (address, check) = (url.to_string(), Arc::clone(&security));
        runtime.spawn(async move {
            let connected = async {
                let mut client = control_client(&address, &check).await?;
                client
                    .status(proto::StatusRequest {})
                    .await
                    .map_err(|status| connect_error(&address, &status))?;
                Ok::<_, DataFusionError>(client)
            };
            let _ = tx.send(connected.await);
        });
        let client = match rx.recv() {
            Ok(Ok(client)) => client,
            failed => {
                // Dropping a runtime inside another one's task would panic.
                runtime.shutdown_background();
                return Err(match failed {
                    Ok(Err(e)) => e,
                    _ => runtime_stopped(),
                });
            }
        };
        let transport = Arc::new(FlightTransport::new(
            Default::default(),
            false,
            Arc::clone(&security),
            runtime.handle().clone(),
        ));
        Ok(Self {
            url: url.to_string(),
            security,
            client,
            transport,
            runtime: Some(runtime),
        })
    }

    /// The scheduler's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The token and TLS settings in use.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// Spawns `future` on the client's runtime.
    fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime
            .as_ref()
            .expect("client runtime is running")
            .spawn(future)
    }

    /// Runs a graph of no-op tasks: `stages[i]` is (inputs, tasks) of stage `i`.
    pub async fn run_noop(&self, stages: &[(Vec<StageId>, usize)]) -> Result<()> {
        let request = proto::SubmitJob {
            stages: stages
                .iter()
                .map(|(inputs, tasks)| proto::StageDef {
                    inputs: inputs.iter().map(|&i| i as u32).collect(),
                    tasks: *tasks as u32,
                    noop: true,
                    ..Default::default()
                })
                .collect(),
            placement_timeout_secs: 60.0,
            ..Default::default()
        };
        run_job(self.client.clone(), &self.url, request, None, None).await?;
        Ok(())
    }

    /// [`Self::status`] from synchronous code outside any runtime.
    pub fn block_on_status(&self) -> Result<ClusterStatus> {
        let (tx, rx) = std::sync::mpsc::channel();
        let client = self.client.clone();
        let url = self.url.clone();
        self.spawn(async move {
            let status = client
                .clone()
                .status(proto::StatusRequest {})
                .await
                .map(|s| status_from_proto(s.into_inner()))
                .map_err(|status| connect_error(&url, &status));
            let _ = tx.send(status);
        });
        rx.recv().map_err(|_| runtime_stopped())?
    }
}

impl Cluster for RemoteCluster {
    /// Submits `graph` with the settings of `ctx`; the stream yields the result stage's
    /// output with `schema`. Dropping the stream ends the job on the cluster.
    fn submit(&self, graph: TaskGraph, ctx: Arc<TaskContext>, schema: SchemaRef) -> JobHandle {
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        // The scheduler numbers jobs: the handle carries its number once it accepted the
        // job (one round trip).
        let (accepted_tx, accepted_rx) = std::sync::mpsc::channel();
        let hazard = graph_replay_hazard(&graph);
        let request = submit_request(&graph, &ctx, &hazard);
        let client = self.client.clone();
        let url = self.url.clone();
        let transport = Arc::clone(&self.transport);
        // The job starts now, not when the stream is first polled; dropping the stream
        // before the results are ready drops the job's event stream, which ends the job.
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (follow_client, follow_url) = (client.clone(), url.clone());
        self.spawn(async move {
            let follow = async {
                let request = request?;
                run_job(
                    follow_client,
                    &follow_url,
                    request,
                    Some(progress_tx),
                    Some(accepted_tx),
                )
                .await
            };
            let mut ready_tx = ready_tx;
            let result = tokio::select! {
                result = follow => Some(result),
                _ = ready_tx.closed() => None,
            };
            if let Some(result) = result {
                let _ = ready_tx.send(result);
            }
        });
        let outputs = async move {
            let (events, remote_job, result_stage, outputs) =
                ready_rx.await.map_err(|_| runtime_stopped())??;
            let locations = outputs
                .into_iter()
                .map(|(_, worker, address)| Location { worker, address })
                .collect();
            let source = ResultSource {
                job: remote_job,
                stage: result_stage,
                url,
                client,
                transport,
                events,
            };
            let reader = ResultReader::new(source, locations, hazard);
            Ok::<_, DataFusionError>(reader.into_stream())
        };
        let stream = futures::stream::once(outputs).try_flatten();
        // A job refused before it was accepted has no number; its stream says why.
        let job = accepted_rx.recv().unwrap_or(0);
        JobHandle {
            job,
            stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
            progress: progress_rx,
        }
    }

    fn status(&self) -> BoxFuture<'_, Result<ClusterStatus>> {
        async move {
            let status = self
                .client
                .clone()
                .status(proto::StatusRequest {})
                .await
                .map_err(|status| connect_error(&self.url, &status))?;
            Ok(status_from_proto(status.into_inner()))
        }
        .boxed()
    }

    fn cancel(&self, job: JobId) -> BoxFuture<'_, Result<bool>> {
        async move {
            let reply = self
                .client
                .clone()
                .cancel(proto::CancelRequest { job })
                .await
                .map_err(|status| connect_error(&self.url, &status))?;
            Ok(reply.into_inner().cancelled)
        }
        .boxed()
    }

    fn retire(&self, worker: WorkerId) -> BoxFuture<'_, Result<bool>> {
        async move {
            let reply = self
                .client
                .clone()
                .retire(proto::RetireRequest {
                    worker: worker as u64,
                })
                .await
                .map_err(|status| connect_error(&self.url, &status))?;
            Ok(reply.into_inner().retiring)
        }
        .boxed()
    }

    fn events(&self) -> BoxFuture<'_, Result<BoxStream<'static, JobEvent>>> {
        let mut client = self.client.clone();
        let url = self.url.clone();
        // The call runs on the client's runtime, whose connections it uses.
        let opened = self.spawn(async move {
            client
                .events(proto::EventsRequest {})
                .await
                .map_err(|status| connect_error(&url, &status))
        });
        async move {
            let events = opened.await.map_err(|_| runtime_stopped())??.into_inner();
            let stream = events
                .take_while(|e| futures::future::ready(e.is_ok()))
                .filter_map(|e| futures::future::ready(e.ok().and_then(event_from_proto)));
            Ok(stream.boxed())
        }
        .boxed()
    }

    fn placement(&self) -> Placement {
        Placement::Processes
    }

    fn runtime(&self) -> &tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("the client runtime runs until the client is dropped")
            .handle()
    }
}

impl Drop for RemoteCluster {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

type Outputs = Vec<(usize, WorkerId, String)>;

/// Submits a job and follows it until its results are ready; the returned event stream
/// keeps the job (and its outputs) alive on the cluster until dropped.
async fn run_job(
    mut client: ControlClient,
    url: &str,
    request: proto::SubmitJob,
    progress: Option<watch::Sender<Progress>>,
    on_accepted: Option<std::sync::mpsc::Sender<JobId>>,
) -> Result<(tonic::Streaming<proto::JobEvent>, JobId, StageId, Outputs)> {
    let mut events = client
        .submit(request)
        .await
        .map_err(|status| connect_error(url, &status))?
        .into_inner();
    let mut job = 0;
    loop {
        let event = events
            .message()
            .await
            .map_err(|status| connect_error(url, &status))?
            .ok_or_else(|| {
                shoal_err(
                    ErrorKind::Io,
                    format!("lost the connection to the scheduler at {url}: the job stream ended"),
                )
            })?;
        match event.kind {
            Some(job_event::Kind::Accepted(accepted)) => {
                job = accepted.job;
                if let Some(tx) = &on_accepted {
                    let _ = tx.send(job);
                }
                if let Some(p) = &progress {
                    p.send_modify(|p| p.tasks_total = accepted.tasks_total as usize);
                }
            }
            Some(job_event::Kind::TasksDone(done)) => {
                if let Some(p) = &progress {
                    p.send_modify(|p| p.tasks_done = done as usize);
                }
            }
            Some(job_event::Kind::Done(done)) => {
                let outputs = done
                    .outputs
                    .into_iter()
                    .map(|o| {
                        (
                            o.partition as usize,
                            o.worker_id as WorkerId,
                            o.flight_address,
                        )
                    })
                    .collect();
                return Ok((events, job, done.stage as StageId, outputs));
            }
            Some(job_event::Kind::Failed(failed)) => {
                let (kind, message) = failure_from_proto(&failed);
                return Err(shoal_err(kind, message));
            }
            // Only sent after `Done`.
            Some(job_event::Kind::Relocated(_)) | None => {}
        }
    }
}

/// The wire form of a job: each stage's plan encoded, the session's settings, and what
/// its tasks ask for.
fn submit_request(
    graph: &TaskGraph,
    ctx: &TaskContext,
    hazard: &Option<ReplayHazard>,
) -> Result<proto::SubmitJob> {
    let mut stages = Vec::with_capacity(graph.stages.len());
    for stage in &graph.stages {
        stages.push(proto::StageDef {
            plan: encode_plan(Arc::clone(&stage.plan))?,
            inputs: stage.inputs.iter().map(|&i| i as u32).collect(),
            tasks: stage.tasks as u32,
            noop: false,
        });
    }
    let options = ctx.session_config().options();
    let config = options
        .entries()
        .into_iter()
        .filter_map(|e| Some((e.key, e.value?)))
        .collect();
    let shoal = options
        .extensions
        .get::<ShoalConfig>()
        .cloned()
        .unwrap_or_default();
    let resources = resources_to_proto(&graph.resources);
    Ok(proto::SubmitJob {
        stages,
        config,
        resources,
        placement_timeout_secs: shoal.settings.task.placement_timeout,
        pipelined: shoal.settings.execution.pipelined_exchanges,
        recompute_results: !matches!(hazard, Some(ReplayHazard::Effects(_))),
        outline: Some(crate::outline::JobOutline::of(graph).to_proto()),
    })
}
