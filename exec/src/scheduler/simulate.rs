//! Scheduler throughput against simulated workers: the real scheduler loop in this
//! process, each worker a task beside it that answers every launch at once with a
//! finished report. No data moves, so what is measured is the scheduler's own cost per
//! task and how it changes with the number of workers (`shoal bench scheduler
//! --simulate-workers N`).

use std::time::{Duration, Instant};

use datafusion::common::{DataFusionError, Result};
use shoal_planner::{Resources, StageId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::Scheduler;
use crate::protocol::{
    Event, JobSpec, StagePlan, StageSpec, TaskOutcome, TaskReport, WorkerMsg, WorkerStatus,
};

/// A scheduler with simulated workers, on a thread of its own.
pub struct Simulation {
    events: mpsc::UnboundedSender<Event>,
    /// Dropped to stop the thread.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    next_job: u64,
}

impl Simulation {
    /// Starts the scheduler (`prefetch` tasks in flight per slot) and `workers` workers
    /// of `slots` slots each. Scheduler and workers share one thread: handing a launch
    /// to a worker and its report back costs a queue push, not a wake of another thread,
    /// so the workers' cost stays small beside the scheduler's at any count.
    pub async fn start(workers: usize, slots: usize, prefetch: usize) -> Result<Self> {
        let (events, inbox) = mpsc::unbounded_channel();
        let (stop, stopped_rx) = oneshot::channel::<()>();
        let (started, ready) = oneshot::channel();
        let answers = events.clone();
        let thread = std::thread::Builder::new()
            .name("shoal-simulation".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started.send(Err(DataFusionError::External(Box::new(e))));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let mut tasks = JoinSet::new();
                    tasks.spawn(Scheduler::empty(prefetch, None).run(inbox));
                    let _ = started.send(Ok(()));
                    simulated_workers(&answers, workers, slots, &mut tasks).await;
                    let _ = stopped_rx.await;
                    tasks.abort_all();
                });
            })
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        ready.await.map_err(|_| stopped())??;
        let simulation = Self {
            events,
            stop: Some(stop),
            thread: Some(thread),
            next_job: 1,
        };
        simulation.wait_for(workers).await?;
        Ok(simulation)
    }

    /// Waits until `workers` workers have joined.
    async fn wait_for(&self, workers: usize) -> Result<()> {
        loop {
            let (reply, status) = oneshot::channel();
            send(&self.events, Event::Status(reply))?;
            let joined = status.await.map_err(|_| stopped())?.workers.len();
            if joined >= workers {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Runs a job of no-op stages (input stages, tasks) to its end; the time it took.
    pub async fn run(&mut self, stages: &[(Vec<StageId>, usize)]) -> Result<Duration> {
        let job = self.next_job;
        self.next_job += 1;
        let spec = JobSpec {
            stages: stages
                .iter()
                .map(|(inputs, tasks)| StageSpec {
                    inputs: inputs.clone(),
                    tasks: *tasks,
                    plan: StagePlan::Noop,
                })
                .collect(),
            request: Resources::default(),
            placement_timeout: Duration::from_secs(60),
            // No-op tasks read nothing: there is nothing to pipeline.
            pipelined: false,
            outline: Default::default(),
        };
        let started = Instant::now();
        let (done, outputs) = oneshot::channel();
        let submit = Event::Submit {
            job,
            spec: Box::new(spec),
            done,
            relocated: None,
        };
        send(&self.events, submit)?;
        // No-op tasks end at once: a job that takes minutes is a scheduler bug.
        tokio::time::timeout(Duration::from_secs(600), outputs)
            .await
            .map_err(|_| DataFusionError::Internal(format!("simulated job {job} hung")))?
            .map_err(|_| stopped())??;
        let took = started.elapsed();
        send(&self.events, Event::EndJob(job))?;
        Ok(took)
    }
}

impl Drop for Simulation {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Joins `workers` workers to the scheduler behind `events`, each a task in `tasks` that
/// reports every launch it gets as finished at once.
async fn simulated_workers(
    events: &mpsc::UnboundedSender<Event>,
    workers: usize,
    slots: usize,
    tasks: &mut JoinSet<()>,
) {
    for _ in 0..workers {
        let (tx, mut commands) = mpsc::unbounded_channel();
        let (reply, id) = oneshot::channel();
        let info = WorkerStatus {
            slots,
            ..Default::default()
        };
        if events
            .send(Event::WorkerJoined {
                info: Box::new(info),
                tx,
                reply,
            })
            .is_err()
        {
            return;
        }
        let Ok(worker) = id.await else { return };
        let events = events.clone();
        tasks.spawn(async move {
            while let Some(msg) = commands.recv().await {
                if let WorkerMsg::Launch(launch) = msg {
                    let _ = events.send(Event::TaskEnded {
                        job: launch.job,
                        task: launch.task,
                        attempt: launch.attempt,
                        worker,
                        outcome: TaskOutcome::Finished(TaskReport::default()),
                    });
                }
            }
        });
    }
}

fn send(events: &mpsc::UnboundedSender<Event>, event: Event) -> Result<()> {
    events.send(event).map_err(|_| stopped())
}

fn stopped() -> DataFusionError {
    DataFusionError::Internal("the simulated scheduler stopped".to_string())
}
