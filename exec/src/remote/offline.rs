//! The scheduler process's handling of control-plane messages, without sockets or
//! threads. Each call takes a message's bytes as a worker or client sends them, decodes
//! and checks it as the gRPC service does, and gives it to the scheduler for one turn of
//! its event loop. This is for fuzzing (`shoal_tests::fuzz::wire`) and deterministic tests:
//! a malformed message must fail its own request, never the scheduler.

use std::time::Duration;

use datafusion::common::DataFusionError;
use prost::Message;
use shoal_planner::{JobId, WorkerId};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::messages::{batch_events, job_spec, registration, result_lost_event};
use super::proto::{self, command, task_ended, worker_message};
use super::server::{Shipped, encode_command, status_to_proto};
use crate::protocol::{Event, JobOutputs, WorkerMsg};
use crate::scheduler::Scheduler;

type Located = Result<JobOutputs, DataFusionError>;

/// One worker connection.
struct Connection {
    id: WorkerId,
    commands: mpsc::UnboundedReceiver<WorkerMsg>,
    /// What the connection has sent the worker (plans, input locations).
    shipped: Shipped,
    open: bool,
}

/// One client's job stream.
struct Client {
    job: JobId,
    done: oneshot::Receiver<Located>,
    relocations: mpsc::UnboundedReceiver<Located>,
    open: bool,
}

/// How a worker ends the tasks it was launched, in [`OfflineScheduler::worker_runs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEnding {
    /// Finished, with one output bucket of 1 KiB.
    Finished,
    /// Failed with an error of its own.
    Failed,
    /// Failed fetching an input from worker 0.
    FetchFailed,
    /// Cancelled.
    Cancelled,
}

/// A scheduler driven by control-plane messages in this thread.
pub struct OfflineScheduler {
    scheduler: Scheduler,
    /// Workers the scheduler asked to probe; never answered, as for a silent worker.
    _probes: mpsc::UnboundedReceiver<(WorkerId, String)>,
    connections: Vec<Connection>,
    clients: Vec<Client>,
    next_job: JobId,
}

impl Default for OfflineScheduler {
    fn default() -> Self {
        Self::new()
    }
}

fn malformed(what: &str, e: prost::DecodeError) -> Status {
    Status::invalid_argument(format!("malformed {what}: {e}"))
}

impl OfflineScheduler {
    /// A scheduler with no workers, prefetching two tasks per slot.
    pub fn new() -> Self {
        let (probe, probes) = mpsc::unbounded_channel();
        Self {
            scheduler: Scheduler::empty(2, Some(Duration::from_secs(3600))).with_probe(probe),
            _probes: probes,
            connections: Vec::new(),
            clients: Vec::new(),
            next_job: 1,
        }
    }

    /// Panics the scheduler caught while handling messages: each is a bug that failed a
    /// job, so a malformed message must not cause one.
    pub fn panics(&self) -> u64 {
        self.scheduler.panics()
    }

    /// Worker connections opened so far (open or closed).
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// Jobs submitted so far.
    pub fn jobs(&self) -> usize {
        self.clients.len()
    }

    /// A worker opens a `Join` stream whose first message is `bytes`. Returns its id.
    pub fn join(&mut self, bytes: &[u8]) -> Result<WorkerId, Status> {
        let message = proto::WorkerMessage::decode(bytes).map_err(|e| malformed("message", e))?;
        let Some(worker_message::Kind::Register(register)) = message.kind else {
            return Err(Status::invalid_argument("a worker must register first"));
        };
        let (info, _) = registration(register)?;
        let (tx, commands) = mpsc::unbounded_channel();
        let (reply, mut id) = oneshot::channel();
        self.scheduler.turn(Event::WorkerJoined {
            info: Box::new(info),
            tx,
            reply,
        });
        let id = id
            .try_recv()
            .map_err(|_| Status::internal("the scheduler did not answer"))?;
        self.connections.push(Connection {
            id,
            commands,
            shipped: Shipped::default(),
            open: true,
        });
        Ok(id)
    }

    /// The open connection `connection` (modulo those opened) sends `bytes` on its
    /// `Join` stream.
    pub fn worker_sends(&mut self, connection: usize, bytes: &[u8]) -> Result<(), Status> {
        let Some(id) = self.open_connection(connection).map(|c| c.id) else {
            return Err(Status::not_found("no such worker connection"));
        };
        let message = proto::WorkerMessage::decode(bytes).map_err(|e| malformed("message", e))?;
        // A second `Register` is ignored, as the service does.
        let Some(worker_message::Kind::Batch(batch)) = message.kind else {
            return Ok(());
        };
        for event in batch_events(id, batch) {
            self.scheduler.turn(event);
        }
        Ok(())
    }

    /// Connection `connection` takes the commands sent to it (encoded as they go on the
    /// wire) and ends every task it was launched as `ending` says. Returns the tasks.
    pub fn worker_runs(&mut self, connection: usize, ending: TaskEnding) -> usize {
        let Some(conn) = self.open_connection(connection) else {
            return 0;
        };
        let mut batch = Vec::new();
        while let Ok(msg) = conn.commands.try_recv() {
            encode_command(msg, &mut conn.shipped, &mut batch);
        }
        let ended: Vec<proto::TaskEnded> = batch
            .into_iter()
            .filter_map(|c| match c.kind {
                Some(command::Kind::Launch(launch)) => launch.task,
                _ => None,
            })
            .map(|task| proto::TaskEnded {
                task: Some(task),
                outcome: Some(outcome(ending)),
            })
            .collect();
        let (id, tasks) = (conn.id, ended.len());
        let batch = proto::WorkerBatch {
            ended,
            ..Default::default()
        };
        for event in batch_events(id, batch) {
            self.scheduler.turn(event);
        }
        tasks
    }

    /// Connection `connection`'s stream ends: the worker is lost.
    pub fn worker_leaves(&mut self, connection: usize) {
        if let Some(conn) = self.open_connection(connection) {
            conn.open = false;
            let worker = conn.id;
            self.scheduler.turn(Event::WorkerLost {
                worker,
                cause: "its connection closed".to_string(),
            });
        }
    }

    /// A client submits a job (a `SubmitJob` message). Returns its id.
    pub fn submit(&mut self, bytes: &[u8]) -> Result<JobId, Status> {
        let submit = proto::SubmitJob::decode(bytes).map_err(|e| malformed("job", e))?;
        let recompute_results = submit.recompute_results;
        let spec = job_spec(submit)?;
        let job = self.next_job;
        self.next_job += 1;
        let (done, done_rx) = oneshot::channel();
        let (relocated, relocations) = mpsc::unbounded_channel();
        self.scheduler.turn(Event::Submit {
            job,
            spec: Box::new(spec),
            done,
            relocated: recompute_results.then_some(relocated),
        });
        self.clients.push(Client {
            job,
            done: done_rx,
            relocations,
            open: true,
        });
        Ok(job)
    }

    /// The client of the `client`-th job (modulo those submitted) closes its stream,
    /// which ends the job. Returns whether the job had an answer (results or a failure).
    pub fn client_leaves(&mut self, client: usize) -> bool {
        let n = self.clients.len();
        let Some(c) = self.clients.get_mut(client.checked_rem(n).unwrap_or(0)) else {
            return false;
        };
        if !c.open {
            return false;
        }
        c.open = false;
        let answered = c.done.try_recv().is_ok();
        while c.relocations.try_recv().is_ok() {}
        let job = c.job;
        self.scheduler.turn(Event::EndJob(job));
        answered
    }

    /// A `Cancel` call with `bytes`. Returns whether a job was cancelled.
    pub fn cancel(&mut self, bytes: &[u8]) -> Result<bool, Status> {
        let request = proto::CancelRequest::decode(bytes).map_err(|e| malformed("request", e))?;
        let (tx, mut rx) = oneshot::channel();
        self.scheduler.turn(Event::Cancel(request.job, tx));
        Ok(rx.try_recv().unwrap_or(false))
    }

    /// A `ResultLost` call with `bytes`.
    pub fn result_lost(&mut self, bytes: &[u8]) -> Result<(), Status> {
        let request =
            proto::ResultLostRequest::decode(bytes).map_err(|e| malformed("request", e))?;
        self.scheduler.turn(result_lost_event(request));
        Ok(())
    }

    /// A `Status` call.
    pub fn status(&mut self) -> Result<proto::ClusterStatus, Status> {
        let (tx, mut rx) = oneshot::channel();
        self.scheduler.turn(Event::Status(tx));
        rx.try_recv()
            .map(|status| status_to_proto(&status))
            .map_err(|_| Status::internal("the scheduler did not answer"))
    }

    /// The scheduler's timer fires.
    pub fn tick(&mut self) {
        self.scheduler.tick();
    }

    fn open_connection(&mut self, connection: usize) -> Option<&mut Connection> {
        let n = self.connections.len();
        let conn = self.connections.get_mut(connection.checked_rem(n)?)?;
        conn.open.then_some(conn)
    }
}

fn outcome(ending: TaskEnding) -> task_ended::Outcome {
    let failed = |fetch_failed: bool| proto::Failed {
        message: "the task failed".to_string(),
        fetch_failed,
        fetch_worker: 0,
        kind: if fetch_failed { "fetch_failed" } else { "io" }.to_string(),
        retryable: true,
    };
    match ending {
        TaskEnding::Finished => task_ended::Outcome::Finished(proto::Finished {
            bucket_bytes: vec![1024],
            slot: 0,
            duration_secs: 0.01,
            metrics: Vec::new(),
        }),
        TaskEnding::Failed => task_ended::Outcome::Failed(failed(false)),
        TaskEnding::FetchFailed => task_ended::Outcome::Failed(failed(true)),
        TaskEnding::Cancelled => task_ended::Outcome::Cancelled(true),
    }
}
