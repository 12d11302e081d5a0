//! Shoal's dashboard server: the pages (`/status`, `/workers`, `/jobs`, `/cluster-map`,
//! `/info`; plain HTML, SVG and scripts compiled in), a JSON API under `/api/v1/`, the
//! job-event stream as Server-Sent Events, Prometheus `/metrics`, and `/healthz` and
//! `/readyz`.
//!
//! It reads the cluster only through the [`Cluster`] interface, as any client does: the
//! status call (at most one every [`STATUS_EVERY`], however many readers ask) and the
//! job-event stream, which one task folds into a bounded [`model::Model`] and fans out
//! to Server-Sent Events readers through a bounded channel that drops events for a
//! reader that falls behind. Nothing here runs per task on the scheduler.

pub mod eventlog;
pub mod json;
pub mod metrics;
pub mod model;
mod pages;
mod routes;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use shoal_exec::{Cluster, ClusterStatus, JobEvent};
use tokio::sync::broadcast;

pub use json::status_json;
pub use routes::router;

/// The shortest time between two status calls the dashboard makes.
pub const STATUS_EVERY: Duration = Duration::from_millis(250);
/// How often the events that arrived are sent to Server-Sent Events readers, as one
/// message.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);
/// Events one message carries at most: past it, task-level events (tasks, stages,
/// fetches, spills) are counted as skipped instead of sent; a job's own events
/// (submitted, done, failed, cancelled) are always sent.
pub const EVENTS_PER_MESSAGE: usize = 500;
/// How often jobs the dashboard thinks run are checked against the scheduler's status
/// (their end may have been among the events a slow follower missed).
const RECONCILE_EVERY: Duration = Duration::from_secs(2);
/// Events the follower takes in at once, at most, from a cluster's event call.
const FOLLOW_BATCH: usize = 1024;
/// Messages a Server-Sent Events reader may fall behind before it misses some.
const MESSAGES_BUFFERED: usize = 64;

/// The events waiting for the next message to readers.
#[derive(Default)]
struct Outbox {
    events: Vec<JobEvent>,
    skipped: u64,
}

impl Outbox {
    fn push(&mut self, event: &JobEvent) {
        use shoal_exec::JobEventKind as K;
        let the_job_s = matches!(
            event.kind,
            K::Submitted { .. } | K::Done | K::Failed { .. } | K::Cancelled
        );
        if the_job_s || self.events.len() < EVENTS_PER_MESSAGE {
            self.events.push(event.clone());
        } else {
            self.skipped += 1;
        }
    }
}

/// How the dashboard is served.
#[derive(Debug, Clone, Default)]
pub struct DashboardOptions {
    /// Path prefix every route lives under when behind a reverse proxy (`/shoal`; empty:
    /// the root).
    pub prefix: String,
    /// The cluster token: calls that change something (cancel a job) must present it.
    pub token: Option<String>,
    /// Whether reading needs the token too (`--dashboard-auth token`): a token given once
    /// in the URL (`?token=`) is kept in a cookie.
    pub token_for_reads: bool,
    /// Settings shown on `/api/v1/info`: (key, value).
    pub settings: Vec<(String, String)>,
}

/// What the routes share.
pub struct State {
    /// Not kept alive by the dashboard: the session or process that owns it decides.
    cluster: Weak<dyn Cluster>,
    options: DashboardOptions,
    model: Mutex<model::Model>,
    status: tokio::sync::Mutex<Option<(Instant, ClusterStatus)>>,
    events: broadcast::Sender<Arc<str>>,
    outbox: Mutex<Outbox>,
    started: SystemTime,
}

impl State {
    /// The cluster, while its owner keeps it.
    fn cluster(&self) -> datafusion::common::Result<Arc<dyn Cluster>> {
        self.cluster.upgrade().ok_or_else(|| {
            datafusion::common::DataFusionError::Execution("the cluster has shut down".into())
        })
    }

    /// Folds `events` (arrived at `now`) into the model, and keeps them for the next
    /// message to Server-Sent Events readers if there are any.
    fn take_in(&self, events: &[JobEvent], now: SystemTime) {
        let mut model = self.model.lock();
        for event in events {
            model.apply(event, now);
        }
        drop(model);
        if self.events.receiver_count() > 0 {
            let mut outbox = self.outbox.lock();
            for event in events {
                outbox.push(event);
            }
        }
    }

    /// Sends the waiting events to the Server-Sent Events readers as one message:
    /// `{"events": [...], "skipped": N}` (see [`EVENTS_PER_MESSAGE`]).
    fn publish(&self) {
        let Outbox { events, skipped } = std::mem::take(&mut *self.outbox.lock());
        if (events.is_empty() && skipped == 0) || self.events.receiver_count() == 0 {
            return;
        }
        let events: Vec<serde_json::Value> = events.iter().map(json::event_json).collect();
        let message = serde_json::json!({ "events": events, "skipped": skipped });
        let _ = self.events.send(message.to_string().into());
    }

    /// Ends the jobs the dashboard thinks run that the scheduler no longer lists (see
    /// [`model::Model::reconcile`]).
    async fn reconcile(&self) {
        if !self.model.lock().has_running_jobs() {
            return;
        }
        if let Ok(status) = self.status().await {
            let running: Vec<shoal_exec::JobId> = status.jobs.iter().map(|j| j.id).collect();
            self.model.lock().reconcile(&running, SystemTime::now());
        }
    }

    /// The cluster's status, at most [`STATUS_EVERY`] old.
    async fn status(&self) -> datafusion::common::Result<ClusterStatus> {
        let mut cached = self.status.lock().await;
        if let Some((at, status)) = cached.as_ref()
            && at.elapsed() < STATUS_EVERY
        {
            return Ok(status.clone());
        }
        let status = self.cluster()?.status().await?;
        *cached = Some((Instant::now(), status.clone()));
        Ok(status)
    }
}

/// A running dashboard's shared state; dropping it stops following the cluster's events.
pub struct Dashboard {
    state: Arc<State>,
    follower: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        if let Some(follower) = &self.follower {
            follower.abort();
        }
    }
}

impl Dashboard {
    /// Starts following `cluster`'s events (on `cluster`'s runtime), writing them to
    /// `log` too when given; serve [`Dashboard::router`] to show them. The dashboard does
    /// not keep `cluster` alive.
    pub async fn follow(
        cluster: &Arc<dyn Cluster>,
        options: DashboardOptions,
        log: Option<eventlog::EventLog>,
    ) -> datafusion::common::Result<Self> {
        // Every event already waiting is taken in at once: the locks, the clock and the
        // timers of the follower cost once per batch rather than once per event.
        let batches = cluster
            .events()
            .await?
            .ready_chunks(FOLLOW_BATCH)
            .map(Arc::new)
            .boxed();
        Ok(Self::follow_batches(cluster, batches, options, log))
    }

    /// [`Dashboard::follow`] reading the job events from `batches` (the in-process feed
    /// of the scheduler the dashboard runs beside) instead of `cluster`'s event call.
    pub fn follow_batches(
        cluster: &Arc<dyn Cluster>,
        mut batches: BoxStream<'static, Arc<Vec<JobEvent>>>,
        options: DashboardOptions,
        mut log: Option<eventlog::EventLog>,
    ) -> Self {
        let state = Self::state(Arc::downgrade(cluster), options);
        let follower_state = Arc::clone(&state);
        let follower = cluster.runtime().spawn(async move {
            let mut unflushed = 0;
            let mut publish = tokio::time::interval(PUBLISH_EVERY);
            publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
            reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let batch = tokio::select! {
                    batch = batches.next() => match batch {
                        Some(batch) => batch,
                        None => break,
                    },
                    _ = publish.tick() => {
                        follower_state.publish();
                        continue;
                    }
                    _ = reconcile.tick() => {
                        follower_state.reconcile().await;
                        continue;
                    }
                };
                let now = SystemTime::now();
                follower_state.take_in(&batch, now);
                if let Some(writer) = &mut log {
                    for event in batch.iter() {
                        unflushed += 1;
                        let flush = event.kind.is_final() || unflushed >= 256;
                        let written = writer
                            .append(event, now)
                            .and_then(|()| if flush { writer.flush() } else { Ok(()) });
                        if flush {
                            unflushed = 0;
                        }
                        if let Err(e) = written {
                            eprintln!("the event log stopped: {e}");
                            log = None;
                            break;
                        }
                    }
                }
            }
        });
        Self {
            state,
            follower: Some(follower),
        }
    }

    /// A read-only dashboard of recorded events (see [`eventlog::read_log`]): the jobs,
    /// task stream and totals as they were; the calls that need a cluster answer 503.
    pub fn replay(
        events: &[(SystemTime, shoal_exec::JobEvent)],
        options: DashboardOptions,
    ) -> Self {
        let none: Weak<shoal_exec::RemoteCluster> = Weak::new();
        let state = Self::state(none, options);
        {
            let mut model = state.model.lock();
            for (at, event) in events {
                model.apply(event, *at);
            }
        }
        Self {
            state,
            follower: None,
        }
    }

    fn state(cluster: Weak<dyn Cluster>, options: DashboardOptions) -> Arc<State> {
        let (events, _) = broadcast::channel(MESSAGES_BUFFERED);
        Arc::new(State {
            cluster,
            options,
            model: Mutex::new(model::Model::default()),
            status: tokio::sync::Mutex::new(None),
            events,
            outbox: Mutex::new(Outbox::default()),
            started: SystemTime::now(),
        })
    }

    /// The HTTP routes, under the configured prefix.
    pub fn router(&self) -> axum::Router {
        router(Arc::clone(&self.state))
    }

    /// Serves the routes on `listener` until the future is dropped.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }
}

/// Binds `address` for a dashboard (port 0: a free port), with a one-line error naming
/// the address when it cannot.
pub async fn bind(address: &str) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot serve the dashboard on {address}: {e}"),
        )
    })
}

/// The dashboard's URL for a listener bound at `address`, under `prefix`.
pub fn url(address: std::net::SocketAddr, prefix: &str) -> String {
    format!("http://{address}{}/", normalized_prefix(prefix))
}

/// `prefix` as a route prefix: a leading `/`, no trailing one; empty for the root.
pub fn normalized_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

/// Refuses `--dashboard-auth token` without a cluster token to check reads against.
pub fn check_auth(auth: &str, token: Option<&str>) -> Result<(), String> {
    if auth == "token" && token.is_none_or(str::is_empty) {
        return Err(
            "--dashboard-auth token needs a cluster token (--token or SHOAL_TOKEN)".to_string(),
        );
    }
    Ok(())
}
