//! What the gateway does, apart from HTTP: create, list, scale and stop clusters for
//! their owners within their limits, and watch the running ones (idle shutdown, a
//! scheduler gone from outside). Calls block (they start processes and wait for them):
//! the API runs them off its runtime.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_exec::{Cluster, RemoteCluster, Security};

use crate::backend::Backend;
use crate::config::{GatewayConfig, Usage};
use crate::db::{ClusterRow, Db, FAILED, RUNNING, STARTING, STOPPED};
use crate::hub::{Hub, HubError, local_name};
use crate::spec::{ClusterSpec, MAX_GROUP_WORKERS, SpecText};

/// Why a request was refused; each maps to an HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// 400: the request itself is wrong.
    BadRequest(String),
    /// 401: no known token.
    Unauthorized(String),
    /// 403: beyond the user's limits.
    OverLimit(String),
    /// 404: no such cluster for this user (another user's is not named).
    NotFound(String),
    /// 409: the cluster is not running.
    Conflict(String),
    /// 502: the backend or the cluster failed.
    Failed(String),
}

impl Refusal {
    /// The one-line message.
    pub fn message(&self) -> &str {
        match self {
            Self::BadRequest(m)
            | Self::Unauthorized(m)
            | Self::OverLimit(m)
            | Self::NotFound(m)
            | Self::Conflict(m)
            | Self::Failed(m) => m,
        }
    }
}

type Outcome<T> = Result<T, Refusal>;

/// A create request: a spec, or the name of one of the gateway's profiles.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// The cluster spec.
    #[serde(default, deserialize_with = "crate::spec::present")]
    pub spec: Option<SpecText>,
    /// A profile of the gateway's configuration.
    #[serde(default, deserialize_with = "crate::spec::present")]
    pub profile: Option<String>,
}

/// The gateway: configuration, state and backend.
pub struct Gateway {
    config: GatewayConfig,
    db: Db,
    backend: Box<dyn Backend>,
    /// Connections to running clusters' schedulers, by cluster name.
    clients: Mutex<HashMap<String, Arc<RemoteCluster>>>,
    /// Held from a limit check to the record it admits.
    admission: Mutex<()>,
    /// One lock per cluster, for scale, stop and the periodic check.
    busy: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// The JupyterHub asked about tokens that are not the configuration's.
    hub: Option<Hub>,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn internal(e: String) -> Refusal {
    Refusal::Failed(e)
}

/// A fresh cluster token: 32 random bytes as hex.
fn new_token() -> Outcome<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| internal(format!("no randomness: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn spec_of(row: &ClusterRow) -> Outcome<ClusterSpec> {
    let text: SpecText = serde_json::from_str(&row.spec)
        .map_err(|e| internal(format!("cluster {}: stored spec: {e}", row.name)))?;
    text.check()
        .map_err(|e| internal(format!("cluster {}: stored spec: {e}", row.name)))
}

fn spec_json(spec: &ClusterSpec) -> Outcome<String> {
    serde_json::to_string(&spec.to_text()).map_err(|e| internal(e.to_string()))
}

fn ids_of(row: &ClusterRow) -> Value {
    serde_json::from_str(&row.backend_ids).unwrap_or(Value::Null)
}

impl Gateway {
    /// A gateway over `db` starting clusters with `backend`. Clusters left starting by a
    /// gateway that stopped mid-way are cleaned up and marked failed.
    pub fn new(config: GatewayConfig, db: Db, backend: Box<dyn Backend>) -> Outcome<Self> {
        let hub = config.jupyterhub.as_ref().map(Hub::new);
        let gateway = Self {
            hub,
            config,
            db,
            backend,
            clients: Mutex::new(HashMap::new()),
            admission: Mutex::new(()),
            busy: Mutex::new(HashMap::new()),
        };
        for mut row in gateway.db.list(None).map_err(internal)? {
            if row.state == STARTING {
                gateway.backend.stop(&ids_of(&row));
                row.state = FAILED.into();
                row.reason = "the gateway stopped while the cluster was starting".into();
                gateway.db.put(&row).map_err(internal)?;
            }
        }
        Ok(gateway)
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The user a bearer token belongs to.
    pub async fn authenticate(&self, token: Option<&str>) -> Outcome<String> {
        let token = token.ok_or_else(|| {
            Refusal::Unauthorized("missing token: send Authorization: Bearer TOKEN".into())
        })?;
        if let Some(user) = self.config.user_of(token) {
            return Ok(user.to_string());
        }
        let unknown = || Refusal::Unauthorized("unknown token".into());
        match &self.hub {
            None => Err(unknown()),
            Some(hub) => {
                let user = hub.user_of(token).await.map_err(|e| match e {
                    HubError::Unknown => unknown(),
                    HubError::Unreachable(why) => Refusal::Failed(why),
                })?;
                // The gateway's own users are not the hub's to claim.
                if self.config.users.contains_key(&user) {
                    return Err(Refusal::Unauthorized(format!(
                        "hub user {user} has the name of one of the gateway's users; only that user's own token is accepted"
                    )));
                }
                Ok(user)
            }
        }
    }

    fn owned(&self, user: &str, name: &str) -> Outcome<ClusterRow> {
        match self.db.get(name).map_err(internal)? {
            Some(row) if row.owner == user => Ok(row),
            // Another user's cluster is as good as absent.
            _ => Err(Refusal::NotFound(format!("no cluster named {name}"))),
        }
    }

    /// What `user`'s live clusters other than `except` hold.
    fn held(&self, user: &str, except: Option<&str>) -> Outcome<Usage> {
        let rows = self.db.list(Some(user)).map_err(internal)?;
        let specs = rows
            .iter()
            .filter(|r| r.state == RUNNING || r.state == STARTING)
            .filter(|r| Some(r.name.as_str()) != except)
            .map(spec_of)
            .collect::<Outcome<Vec<_>>>()?;
        Ok(Usage::of(&specs))
    }

    /// Creates a cluster for `user` and waits until its scheduler and workers started.
    pub fn create(&self, user: &str, request: CreateRequest) -> Outcome<Value> {
        let spec = match (&request.spec, &request.profile) {
            (Some(text), None) => text.check().map_err(|e| Refusal::BadRequest(e.0))?,
            (None, Some(profile)) => self
                .config
                .profiles
                .get(profile)
                .cloned()
                .ok_or_else(|| Refusal::NotFound(format!("no profile named {profile}")))?,
            _ => {
                return Err(Refusal::BadRequest(
                    "give either a spec or a profile".into(),
                ));
            }
        };
        let mut row = {
            // Admission and the record that counts against the limits are one step:
            // concurrent requests cannot both fit under a limit only one fits under.
            let _admission = self.admission.lock();
            self.admit(user, None, &spec)?;
            let number = self.db.next_number().map_err(internal)?;
            let row = ClusterRow {
                // Hub users' names may hold characters cluster names cannot.
                name: format!("{}-{number}", local_name(user)),
                owner: user.to_string(),
                spec: spec_json(&spec)?,
                state: STARTING.into(),
                reason: String::new(),
                scheduler: String::new(),
                dashboard: String::new(),
                token: new_token()?,
                backend_ids: "{}".into(),
                created: now_secs(),
                tls_ca: String::new(),
            };
            self.db.put(&row).map_err(internal)?;
            row
        };
        let lock = self.cluster_lock(&row.name);
        let _busy = lock.lock();
        // What starts is recorded as it starts: a gateway that dies part-way stops it
        // when it comes back.
        let record = |ids: &Value| {
            let mut starting = row.clone();
            starting.backend_ids = ids.to_string();
            if let Err(e) = self.db.put(&starting) {
                tracing::warn!("cluster {}: {e}", row.name);
            }
        };
        match self.backend.start(&row.name, &row.token, &spec, &record) {
            Ok(started) => {
                row.scheduler = started.scheduler;
                row.dashboard = started.dashboard;
                row.tls_ca = started.tls_ca.unwrap_or_default();
                row.backend_ids = started.ids.to_string();
                self.db.put(&row).map_err(internal)?;
                if let Err(e) = self.wait_for_workers(&row, &spec) {
                    self.end(&mut row, FAILED, e.message().to_string())?;
                    return Err(Refusal::Failed(format!(
                        "cluster {} failed to start: {}",
                        row.name,
                        e.message()
                    )));
                }
                row.state = RUNNING.into();
                self.db.put(&row).map_err(internal)?;
                self.view(&row, true)
            }
            Err(e) => {
                row.state = FAILED.into();
                row.reason = e.clone();
                self.db.put(&row).map_err(internal)?;
                Err(Refusal::Failed(format!(
                    "cluster {} failed to start: {e}",
                    row.name
                )))
            }
        }
    }

    /// Whether `user` may hold `spec` beside their other live clusters (all but
    /// `except`); a memory limit needs every group's memory stated.
    fn admit(&self, user: &str, except: Option<&str>, spec: &ClusterSpec) -> Outcome<()> {
        let limits = self.config.limits_of(user);
        if limits.memory.is_some()
            && let Some((group, _)) = spec.groups.iter().find(|(_, g)| g.memory.is_none())
        {
            return Err(Refusal::BadRequest(format!(
                "groups.{group}.memory: required, since user {user} has a memory limit"
            )));
        }
        let wanted = Usage::of([spec]);
        if wanted.workers > MAX_GROUP_WORKERS {
            return Err(Refusal::OverLimit(format!(
                "a cluster may have at most {MAX_GROUP_WORKERS} workers; this would make {}",
                wanted.workers
            )));
        }
        let held = self.held(user, except)?;
        limits.admit(user, held, wanted).map_err(Refusal::OverLimit)
    }

    /// The lock that scale, stop and the periodic check take for cluster `name`.
    fn cluster_lock(&self, name: &str) -> Arc<Mutex<()>> {
        let mut locks = self.busy.lock();
        Arc::clone(locks.entry(name.to_string()).or_default())
    }

    /// Waits until every group of `spec` has its workers registered with the scheduler.
    fn wait_for_workers(&self, row: &ClusterRow, spec: &ClusterSpec) -> Outcome<()> {
        let client = self.client(row)?;
        let deadline = Instant::now() + self.backend.join_timeout();
        loop {
            let status = block_on(client.status()).map_err(|e| Refusal::Failed(e.to_string()))?;
            let alive = alive_per_group(&status);
            let short = spec
                .groups
                .iter()
                .find(|(name, g)| alive.get(name.as_str()).copied().unwrap_or(0) < g.workers);
            let Some((name, group)) = short else {
                return Ok(());
            };
            if Instant::now() > deadline || self.backend.scheduler_ended(&ids_of(row)).is_some() {
                let joined = alive.get(name.as_str()).copied().unwrap_or(0);
                return Err(Refusal::Failed(format!(
                    "{joined} of {} workers of group {name} joined within {} s",
                    group.workers,
                    self.backend.join_timeout().as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `user`'s clusters, oldest first.
    pub fn list(&self, user: &str) -> Outcome<Value> {
        let rows = self.db.list(Some(user)).map_err(internal)?;
        let views = rows
            .iter()
            .map(|r| self.view(r, false))
            .collect::<Outcome<Vec<_>>>()?;
        Ok(json!({ "clusters": views }))
    }

    /// One of `user`'s clusters, with its workers per group as its scheduler sees them.
    pub fn get(&self, user: &str, name: &str) -> Outcome<Value> {
        let row = self.owned(user, name)?;
        self.view(&row, true)
    }

    /// Sets the number of workers of `group`: more are started, or the surplus retire
    /// (their running tasks finish first).
    pub fn scale(&self, user: &str, name: &str, group: &str, workers: usize) -> Outcome<Value> {
        let lock = self.cluster_lock(name);
        let _busy = lock.lock();
        let mut row = self.owned(user, name)?;
        if row.state != RUNNING {
            return Err(Refusal::Conflict(format!(
                "cluster {name} is {}",
                row.state
            )));
        }
        let mut spec = spec_of(&row)?;
        let Some(shape) = spec.groups.get(group).cloned() else {
            let known: Vec<&str> = spec.groups.keys().map(String::as_str).collect();
            return Err(Refusal::Conflict(format!(
                "cluster {name} has no group {group} (its groups: {})",
                known.join(", ")
            )));
        };
        if workers > MAX_GROUP_WORKERS {
            return Err(Refusal::BadRequest(format!(
                "workers: at most {MAX_GROUP_WORKERS}, got {workers}"
            )));
        }
        spec.groups.get_mut(group).expect("checked above").workers = workers;
        {
            let _admission = self.admission.lock();
            self.admit(user, Some(name), &spec)?;
            row.spec = spec_json(&spec)?;
            self.db.put(&row).map_err(internal)?;
        }
        let mut ids = ids_of(&row);
        let changed = if workers > shape.workers {
            let count = workers - shape.workers;
            let target = (group, &shape);
            let added =
                self.backend
                    .add_workers(name, &row.token, &row.scheduler, target, count, &mut ids);
            // Workers that started are recorded even when a later one failed.
            row.backend_ids = ids.to_string();
            self.db.put(&row).map_err(internal)?;
            added.map_err(Refusal::Failed)
        } else if workers < shape.workers {
            self.retire(&row, group, shape.workers - workers)
        } else {
            Ok(())
        };
        changed?;
        self.wait_for_workers(&row, &spec)?;
        self.view(&row, true)
    }

    /// Retires `count` workers of `group`, the newest first.
    fn retire(&self, row: &ClusterRow, group: &str, count: usize) -> Outcome<()> {
        let client = self.client(row)?;
        let status = block_on(client.status()).map_err(|e| Refusal::Failed(e.to_string()))?;
        let mut members: Vec<usize> = status
            .workers
            .iter()
            .filter(|w| w.alive && !w.retiring && w.group == group)
            .map(|w| w.id)
            .collect();
        members.sort_unstable_by(|a, b| b.cmp(a));
        for id in members.into_iter().take(count) {
            block_on(client.retire(id)).map_err(|e| Refusal::Failed(e.to_string()))?;
        }
        Ok(())
    }

    /// Stops one of `user`'s clusters: its workers and scheduler.
    pub fn stop(&self, user: &str, name: &str) -> Outcome<Value> {
        let lock = self.cluster_lock(name);
        let _busy = lock.lock();
        let mut row = self.owned(user, name)?;
        if row.state == RUNNING || row.state == STARTING {
            self.end(&mut row, STOPPED, format!("stopped by {user}"))?;
        }
        self.view(&row, false)
    }

    fn end(&self, row: &mut ClusterRow, state: &str, reason: String) -> Outcome<()> {
        self.backend.stop(&ids_of(row));
        self.clients.lock().remove(&row.name);
        row.state = state.into();
        row.reason = reason;
        self.db.put(row).map_err(internal)
    }

    /// Checks every running cluster once: one whose scheduler is gone fails, one idle
    /// for longer than its `idle_timeout` stops; ended workers are forgotten. A cluster
    /// being scaled or stopped is left for the next check; one that cannot be checked
    /// is logged and the others are still checked.
    pub fn check(&self) -> Outcome<()> {
        for row in self.db.list(None).map_err(internal)? {
            if row.state != RUNNING {
                continue;
            }
            let lock = self.cluster_lock(&row.name);
            let Some(_busy) = lock.try_lock() else {
                continue;
            };
            if let Err(e) = self.check_one(&row.name) {
                tracing::warn!("checking cluster {}: {}", row.name, e.message());
            }
        }
        Ok(())
    }

    fn check_one(&self, name: &str) -> Outcome<()> {
        // Read again under the cluster's lock: a stop or scale may have just ended.
        let Some(mut row) = self.db.get(name).map_err(internal)? else {
            return Ok(());
        };
        if row.state != RUNNING {
            return Ok(());
        }
        let mut ids = ids_of(&row);
        if let Some(reason) = self.backend.scheduler_ended(&ids) {
            return self.end(&mut row, FAILED, reason);
        }
        self.backend.prune(&mut ids);
        let pruned = ids.to_string();
        if pruned != row.backend_ids {
            row.backend_ids = pruned;
            self.db.put(&row).map_err(internal)?;
        }
        let Some(idle_timeout) = spec_of(&row)?.idle_timeout else {
            return Ok(());
        };
        if let Some(idle) = self.idle_for(&row)?
            && idle > idle_timeout
        {
            let reason = format!("idle for {:.0} s", idle.as_secs_f64());
            self.end(&mut row, STOPPED, reason)?;
        }
        Ok(())
    }

    /// How long the cluster has had no job, `None` while one runs.
    fn idle_for(&self, row: &ClusterRow) -> Outcome<Option<Duration>> {
        let status =
            block_on(self.client(row)?.status()).map_err(|e| Refusal::Failed(e.to_string()))?;
        if !status.jobs.is_empty() {
            return Ok(None);
        }
        let created = UNIX_EPOCH + Duration::from_secs_f64(row.created);
        let since = status.last_activity.unwrap_or(created).max(created);
        Ok(Some(
            SystemTime::now().duration_since(since).unwrap_or_default(),
        ))
    }

    fn client(&self, row: &ClusterRow) -> Outcome<Arc<RemoteCluster>> {
        if let Some(client) = self.clients.lock().get(&row.name) {
            return Ok(Arc::clone(client));
        }
        let security = Security {
            token: Some(row.token.clone()),
            ca: (!row.tls_ca.is_empty()).then(|| row.tls_ca.clone().into_bytes()),
            ..Default::default()
        };
        let client = RemoteCluster::connect(&row.scheduler, security)
            .map_err(|e| Refusal::Failed(format!("cluster {}: {e}", row.name)))?;
        let client = Arc::new(client);
        self.clients
            .lock()
            .insert(row.name.clone(), Arc::clone(&client));
        Ok(client)
    }

    /// The JSON form of a cluster; `live` adds the workers its scheduler counts per group.
    fn view(&self, row: &ClusterRow, live: bool) -> Outcome<Value> {
        let spec = spec_of(row)?;
        // A scheduler that does not answer (ending, or killed and not yet checked)
        // leaves the counts unknown rather than failing the request.
        let alive = match live && row.state == RUNNING {
            true => self
                .client(row)
                .ok()
                .and_then(|client| block_on(client.status()).ok())
                .map(|status| alive_per_group(&status)),
            false => None,
        };
        let groups: serde_json::Map<String, Value> = spec
            .groups
            .iter()
            .map(|(name, g)| {
                let mut group = json!({
                    "workers": g.workers,
                    "slots": g.slots,
                    "memory": g.memory,
                    "resources": g.resources.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                });
                if live && row.state == RUNNING {
                    group["alive"] = json!(alive.as_ref().map(|a| a.get(name).copied().unwrap_or(0)));
                }
                (name.clone(), group)
            })
            .collect();
        Ok(json!({
            "name": row.name,
            "owner": row.owner,
            "state": row.state,
            "reason": row.reason,
            "scheduler": row.scheduler,
            "dashboard": row.dashboard,
            "token": row.token,
            "tls_ca": (!row.tls_ca.is_empty()).then_some(&row.tls_ca),
            "idle_timeout": spec.idle_timeout.map(|d| d.as_secs_f64()),
            "groups": groups,
            "created": row.created,
        }))
    }
}

/// Workers alive and not retiring, per group.
fn alive_per_group(status: &shoal_exec::ClusterStatus) -> HashMap<String, usize> {
    let mut alive = HashMap::new();
    for w in status.workers.iter().filter(|w| w.alive && !w.retiring) {
        *alive.entry(w.group.clone()).or_default() += 1;
    }
    alive
}

/// Runs a client future from blocking code (the client has its own runtime).
fn block_on<T>(future: futures::future::BoxFuture<'_, T>) -> T {
    futures::executor::block_on(future)
}
