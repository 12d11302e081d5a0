//! `Session`: the entry point. Owns the catalog and an embedded cluster.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::datasource::{MemTable, provider_as_source, source_as_provider};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, LogicalPlanBuilder, WriteOp};
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, TryStreamExt};
use shoal_exec::flight::ipc_carries;
use shoal_exec::{
    Cluster, ClusterStatus, DataPlane, EmbeddedCluster, EmbeddedOptions, JobEvent, JobHandle,
    Progress, RemoteCluster, Security, StoreStats,
};
use shoal_io::ShoalObjectStoreRegistry;
use shoal_planner::array::{ArrayLimits, ZarrGroup, ZarrTableFactory};
use shoal_planner::{
    JobPlanner, Placement, Resources, RunGraph, ShoalConfig, TaskGraph, apply_session_policy,
    config::{ByteSize, ShoalSettings},
};
use shoal_sql::SHOAL_PLAN_TYPE;

use crate::error::{Error, ErrorKind, Result};

/// Options for a new [`Session`]; start from [`Session::builder`].
#[derive(Debug, Clone)]
pub struct SessionBuilder {
    config: ShoalConfig,
    worker_resources: Vec<(usize, String)>,
    /// A bad `SHOAL_*` variable, reported by `build`.
    env_error: Option<String>,
    /// The scheduler to connect to, instead of starting an embedded cluster.
    cluster: Option<String>,
    /// A gateway to ask for the cluster by name, instead of `cluster`.
    gateway: Option<(shoal_gateway::client::GatewayClient, String)>,
    security: Security,
    tls_ca: Option<String>,
}

impl SessionBuilder {
    /// Number of in-process workers (default: one per core).
    pub fn workers(mut self, n: usize) -> Self {
        self.config.settings.workers = n;
        self
    }

    /// Operator memory limit per worker in bytes (default: a share of the machine).
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.config.settings.worker.memory_limit = ByteSize(bytes);
        self
    }

    /// Task output kept in memory per worker before spilling (default: half the limit).
    pub fn store_memory_target(mut self, bytes: usize) -> Self {
        self.config.settings.store.memory_target = ByteSize(bytes);
        self
    }

    /// Partitions per exchange (default: total worker slots).
    pub fn partitions(mut self, n: usize) -> Self {
        self.config.settings.execution.partitions = n;
        self
    }

    /// Directory for spill files (default: the system temporary directory).
    pub fn scratch_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.settings.scratch_dir = dir.into().to_string_lossy().into_owned();
        self
    }

    /// Named resources in-process worker `worker` offers, e.g. `gpu=1,ssd=1`; tasks of
    /// queries run with `SET shoal.task.resources = 'gpu=1'` go only to such workers.
    pub fn worker_resources(mut self, worker: usize, resources: &str) -> Self {
        self.worker_resources.push((worker, resources.to_string()));
        self
    }

    /// Runs queries on the cluster whose scheduler is at `url` instead of in this process.
    pub fn cluster(mut self, url: &str) -> Self {
        self.cluster = Some(url.to_string());
        self
    }

    /// Serves the web dashboard and metrics on `address` (`host:port`; port 0 picks a
    /// free one): `shoal.dashboard.bind`. [`Session::dashboard_link`] says where.
    pub fn dashboard(mut self, address: &str) -> Self {
        self.config.settings.dashboard.bind = address.to_string();
        self
    }

    /// The cluster token every call to the cluster carries (default: `SHOAL_TOKEN`).
    pub fn token(mut self, token: &str) -> Self {
        self.security.token = Some(token.to_string()).filter(|t| !t.is_empty());
        self
    }

    /// Connects to cluster `name` of the gateway at `gateway`, as the user whose gateway
    /// token is `user_token`: `build` asks the gateway where its scheduler is and for its
    /// cluster token (replacing [`Self::cluster`] and [`Self::token`]).
    pub fn gateway_cluster(mut self, gateway: &str, user_token: &str, name: &str) -> Self {
        let client = shoal_gateway::client::GatewayClient::new(gateway, user_token);
        self.gateway = Some((client, name.to_string()));
        self
    }

    /// Trusts the authority whose PEM certificate is at `path` for an https:// gateway
    /// (after [`gateway_cluster`](Self::gateway_cluster)).
    pub fn gateway_ca(mut self, path: &str) -> Self {
        if let Some((client, name)) = self.gateway.take() {
            match client.with_ca_file(path) {
                Ok(client) => self.gateway = Some((client, name)),
                Err(e) => self.env_error = Some(e),
            }
        }
        self
    }

    /// Connects to the cluster over TLS, trusting the CA certificate in this PEM file.
    pub fn tls_ca(mut self, path: &str) -> Self {
        self.tls_ca = Some(path.to_string());
        self
    }

    /// Sets a `shoal.*` key by name, as `SET` would. DataFusion's runtime settings that
    /// Shoal's workers own (`datafusion.runtime.memory_limit`,
    /// `datafusion.runtime.temp_directory`) set the Shoal setting they mean.
    pub fn option(mut self, key: &str, value: &str) -> Result<Self> {
        use datafusion::common::config::ExtensionOptions;
        let key = match shoal_sql::shoal_setting_for(key) {
            Some((setting, _)) => setting,
            None => key,
        };
        self.config.set(key.trim_start_matches("shoal."), value)?;
        Ok(self)
    }

    /// Starts the session's scheduler and workers.
    pub fn build(mut self) -> Result<Session> {
        if let Some(e) = self.env_error {
            return Err(crate::Error::input(e));
        }
        let mut cluster_ca = None;
        if let Some((client, name)) = self.gateway.take() {
            let found = client.connection(&name).map_err(crate::Error::input)?;
            self.cluster = Some(found.scheduler);
            self.security.token = Some(found.token);
            // The cluster's own authority, which the gateway hands its owner.
            cluster_ca = found.tls_ca;
        }
        let mut offers = Vec::new();
        for (worker, text) in &self.worker_resources {
            let resources = Resources::parse(text)?;
            if offers.len() <= *worker {
                offers.resize(*worker + 1, Resources::default());
            }
            offers[*worker] = resources;
        }
        let backend = match &self.cluster {
            Some(url) => {
                let mut security = Security::from_files(
                    self.security.token.clone(),
                    None,
                    None,
                    self.tls_ca.as_deref(),
                )?;
                if let Some(ca) = cluster_ca {
                    security.ca = Some(ca.into_bytes());
                }
                Some(RemoteCluster::connect(url, security)?)
            }
            None => None,
        };
        Session::start(self.config, offers, backend, self.security.token)
    }
}

struct Inner {
    ctx: SessionContext,
    /// The dashboard this session serves, if asked to (`shoal.dashboard.bind`); declared
    /// before the cluster, so it stops first.
    dashboard: Option<crate::dashboard::ServedDashboard>,
    /// Where jobs run: the embedded cluster or a remote one.
    cluster: Arc<dyn Cluster>,
    /// The token Flight calls between this session's workers carry, if any.
    token: Option<String>,
    /// Told of every job's task counts as they change.
    progress: std::sync::Mutex<Option<ProgressListener>>,
}

/// Whether `plan` (or a subquery of it) scans an `information_schema` table.
fn reads_information_schema(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && scan.table_name.schema() == Some("information_schema")
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Receives a job's id and task counts each time they change.
pub type ProgressListener = Arc<dyn Fn(u64, Progress) + Send + Sync>;

/// A Shoal session: tables, settings and an embedded cluster (one scheduler, one worker
/// per core by default). Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("cluster", &self.inner.cluster)
            .finish()
    }
}

impl RunGraph for Session {
    fn run_graph(
        &self,
        graph: TaskGraph,
    ) -> BoxFuture<'_, datafusion::common::Result<Vec<RecordBatch>>> {
        let job = self.execute_graph(graph);
        job.stream.try_collect().boxed()
    }
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    /// An embedded session with default settings (and `SHOAL_*` environment overrides).
    ///
    /// # Panics
    /// If the settings from the environment are invalid or no thread can be started; use
    /// [`Session::builder`] to get an error instead.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("starting an embedded Shoal session")
    }

    /// Options for a session, starting from defaults and `SHOAL_*` environment variables.
    pub fn builder() -> SessionBuilder {
        let (config, env_error) = match ShoalConfig::from_env() {
            Ok(config) => (config, None),
            Err(e) => (ShoalConfig::default(), Some(e.message().to_string())),
        };
        SessionBuilder {
            config,
            worker_resources: Vec::new(),
            env_error,
            cluster: None,
            gateway: None,
            security: Security {
                token: std::env::var("SHOAL_TOKEN").ok().filter(|t| !t.is_empty()),
                ..Default::default()
            },
            tls_ca: std::env::var("SHOAL_TLS_CA").ok().filter(|t| !t.is_empty()),
        }
    }

    /// A session whose queries run on the cluster with its scheduler at `url` (the token
    /// comes from `SHOAL_TOKEN`; use [`Session::builder`] for more options).
    pub fn connect(url: &str) -> Result<Self> {
        Self::builder().cluster(url).build()
    }

    fn start(
        mut config: ShoalConfig,
        worker_resources: Vec<Resources>,
        remote: Option<RemoteCluster>,
        cluster_token: Option<String>,
    ) -> Result<Self> {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let settings = &mut config.settings;
        let cluster_slots = match &remote {
            // One partition per task slot of the workers there now.
            Some(remote) if settings.execution.partitions == 0 => {
                let status = remote.block_on_status()?;
                Some(
                    status
                        .workers
                        .iter()
                        .filter(|w| w.alive)
                        .map(|w| w.slots)
                        .sum(),
                )
            }
            _ => None,
        };
        settings.resolve(cores, cluster_slots);
        let data_plane = match settings.data_plane {
            shoal_planner::config::DataPlane::Flight => DataPlane::Flight {
                token: new_token()?,
            },
            shoal_planner::config::DataPlane::InProcess => DataPlane::InProcess,
        };
        let token = match &data_plane {
            DataPlane::Flight { token } => Some(token.clone()),
            DataPlane::InProcess => None,
        };
        // Embedded, plans run in this process (see `run_in_client`) get one worker's
        // memory, and `SHOW datafusion.runtime.memory_limit` says what a worker has.
        let mut runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::new(ShoalObjectStoreRegistry::new()));
        if remote.is_none() {
            runtime = runtime.with_memory_limit(config.settings.worker.memory_limit.bytes(), 1.0);
        }
        let runtime = runtime.build_arc()?;
        config.started = true;
        let mut session_config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(config.settings.execution.partitions)
            .with_option_extension(config.clone());
        apply_session_policy(session_config.options_mut());
        let state = SessionStateBuilder::new()
            .with_config(session_config)
            .with_runtime_env(Arc::clone(&runtime))
            .with_default_features()
            .with_optimizer_rule(Arc::new(shoal_planner::join_order::JoinOrder))
            .with_table_factory("ZARR".to_string(), Arc::new(ZarrTableFactory))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let cluster: Arc<dyn Cluster> = match remote {
            Some(remote) => Arc::new(remote),
            None => Arc::new(EmbeddedCluster::start(
                EmbeddedOptions::new(&config.settings, data_plane.clone(), worker_resources),
                &runtime,
            )?),
        };
        let dashboard = crate::dashboard::serve(&cluster, &config.settings, cluster_token)?;
        Ok(Self {
            inner: Arc::new(Inner {
                ctx,
                dashboard,
                cluster,
                token,
                progress: std::sync::Mutex::new(None),
            }),
        })
    }

    /// The URL of the dashboard this session serves, if it serves one.
    pub fn dashboard_link(&self) -> Option<&str> {
        self.inner.dashboard.as_ref().and_then(|d| d.url.as_deref())
    }

    /// The DataFusion context holding the catalog and settings.
    pub fn context(&self) -> &SessionContext {
        &self.inner.ctx
    }

    /// The effective Shoal settings.
    pub fn config(&self) -> ShoalSettings {
        self.inner
            .ctx
            .state()
            .config()
            .options()
            .extensions
            .get::<ShoalConfig>()
            .map(|c| c.settings.clone())
            .unwrap_or_default()
    }

    /// What array jobs are sized by: the reduction fan-in and the workers' memory.
    pub fn array_limits(&self) -> ArrayLimits {
        ArrayLimits::of(&self.config())
    }

    /// Runs `future` (`what` it does, for errors) to completion on the session's runtime
    /// from synchronous code (also from inside another async runtime). A panic in it (a
    /// file reader's, on bytes it cannot handle) is an error naming `what`, not the
    /// caller's panic.
    pub(crate) fn block_on<F, T, E>(&self, what: &str, future: F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<Error> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = self.inner.cluster.runtime().spawn(async move {
            let outcome = std::panic::AssertUnwindSafe(future).catch_unwind().await;
            let _ = tx.send(outcome);
        });
        drop(handle);
        match rx.recv() {
            Ok(Ok(result)) => result.map_err(Into::into),
            Ok(Err(payload)) => Err(Error::new(
                ErrorKind::Input,
                format!(
                    "{what} failed: the reader panicked: {}",
                    shoal_exec::panic_message(payload)
                ),
            )),
            Err(_) => Err(Error::new(
                ErrorKind::Internal,
                format!("{what} failed: the session's runtime stopped"),
            )),
        }
    }

    /// Registers a Parquet or CSV file, directory or object-store prefix, or a Zarr
    /// group (a path ending in `.zarr`, or a directory holding Zarr metadata), as table
    /// `name`.
    pub fn register(&self, name: &str, path: &str) -> Result<()> {
        if is_zarr_store(path) {
            return self.register_zarr(name, path);
        }
        let ctx = self.inner.ctx.clone();
        let (name, path) = (name.to_string(), path.to_string());
        let what = format!("reading '{path}'");
        self.block_on(&what, async move {
            shoal_io::register_table(&ctx, &name, &path).await
        })
    }

    /// Registers the Zarr group at `path` as table `name`: one row per cell of its
    /// dimensions, a column per dimension coordinate and data variable (see
    /// [`CellTable`](crate::labeled::CellTable)).
    pub fn register_zarr(&self, name: &str, path: &str) -> Result<()> {
        let env = self.inner.ctx.runtime_env();
        let limits = self.array_limits();
        let path = path.to_string();
        let what = format!("reading '{path}'");
        let table = self.block_on(&what, async move {
            ZarrGroup::open(&env, &path)
                .await?
                .into_table(&path, limits)
        })?;
        self.register_provider(name, Arc::new(table))
    }

    /// Registers a dataset's variables as table `name` (one row per cell; see
    /// [`CellTable`](crate::labeled::CellTable)). Variables that need reductions are
    /// computed when the table is read only if they were persisted first.
    pub fn register_dataset(&self, name: &str, ds: &crate::labeled::Dataset) -> Result<()> {
        let table = crate::labeled::dataset_table(ds, self.array_limits())?;
        self.register_provider(name, Arc::new(table))
    }

    fn register_provider(
        &self,
        name: &str,
        provider: Arc<dyn datafusion::catalog::TableProvider>,
    ) -> Result<()> {
        if self.inner.ctx.table_exist(name)? {
            return Err(crate::Error::input(format!(
                "table '{name}' is already registered"
            )));
        }
        self.inner.ctx.register_table(name, provider)?;
        Ok(())
    }

    /// Registers every `*.parquet`, `*.csv` and sub-directory of `dir` as a table named
    /// after it; returns the names.
    pub fn register_dir(&self, dir: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for (name, path) in shoal_io::tables_in_dir(std::path::Path::new(dir))? {
            self.register(&name, &path)?;
            names.push(name);
        }
        Ok(names)
    }

    /// Parses `sql` into statements with the session's dialect.
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        let dialect = self
            .inner
            .ctx
            .state()
            .config()
            .options()
            .sql_parser
            .dialect
            .to_string();
        Ok(shoal_sql::parse_sql(sql, &dialect)?)
    }

    /// DataFusion's EXPLAIN rows plus a row with Shoal's stage graph of `inner`.
    pub(crate) async fn explain_batches(
        &self,
        explain: LogicalPlan,
        inner: &LogicalPlan,
    ) -> Result<Vec<RecordBatch>> {
        let ctx = &self.inner.ctx;
        // A table deletes, updates or truncates when such a statement is planned (an
        // in-memory table does), so EXPLAIN shows their logical plan only: explaining
        // must not change the data.
        let changes_data = match inner {
            LogicalPlan::Dml(dml) if !matches!(dml.op, WriteOp::Insert(_) | WriteOp::Ctas) => {
                Some(dml.op.name().to_uppercase())
            }
            _ => None,
        };
        let mut state = ctx.state();
        state.config_mut().options_mut().explain.logical_plan_only |= changes_data.is_some();
        let logical_only = state.config_options().explain.logical_plan_only;
        let mut batches = SessionContext::new_with_state(state)
            .execute_logical_plan(explain)
            .await?
            .collect()
            .await?;
        let graph = if let Some(op) = changes_data {
            format!(
                "not planned: {op} changes the table when it is planned, so EXPLAIN shows \
                 its logical plan only"
            )
        } else if logical_only {
            return Ok(batches);
        } else {
            // Like DataFusion's `physical_plan_error` row: a plan that cannot run (a
            // subquery DataFusion cannot decorrelate, DISTRIBUTE BY, a prepared statement
            // without its parameters) is still explained, with why there are no stages.
            match self.task_graph(inner).await {
                Ok(graph) => shoal_sql::render_task_graph(&graph),
                Err(e) => format!(
                    "no stage graph: {}",
                    e.to_string().lines().next().unwrap_or("")
                ),
            }
        };
        if let Some(first) = batches.first()
            && first.num_columns() == 2
        {
            let row = RecordBatch::try_new(
                first.schema(),
                vec![
                    Arc::new(StringArray::from(vec![SHOAL_PLAN_TYPE])),
                    Arc::new(StringArray::from(vec![graph])),
                ],
            )?;
            batches.push(row);
        }
        Ok(batches)
    }

    /// The planner for this session's jobs, over its current catalog and settings.
    fn planner(&self) -> JobPlanner<'_> {
        JobPlanner::new(self.inner.ctx.state(), self.inner.cluster.placement(), self)
    }

    /// The physical plan DataFusion makes for `plan` with this session's settings.
    pub async fn physical_plan(&self, plan: &LogicalPlan) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self.planner().physical_plan(plan).await?)
    }

    /// The stage graph of `plan` as `EXPLAIN` shows it (subqueries not yet computed).
    pub async fn task_graph(&self, plan: &LogicalPlan) -> Result<TaskGraph> {
        Ok(self.planner().stage_graph(plan).await?)
    }

    /// Plans `plan` and starts it on the cluster.
    pub async fn execute(&self, plan: &LogicalPlan) -> Result<JobHandle> {
        self.execute_as(plan, None).await
    }

    /// [`Session::execute`] with the job labelled `label` (its SQL text; `None` labels it
    /// with the plan's root operation).
    pub(crate) async fn execute_as(
        &self,
        plan: &LogicalPlan,
        label: Option<&str>,
    ) -> Result<JobHandle> {
        if let LogicalPlan::EmptyRelation(empty) = plan
            && !empty.produce_one_row
        {
            // DDL and `SET` leave this behind: no task would do anything, and tasks could
            // wait for resources (`shoal.task.resources`) that no worker offers.
            return Ok(JobHandle::nothing_to_run(Arc::clone(empty.schema.inner())));
        }
        if let Some(handle) = self.insert_into_memory_table(plan, label).await? {
            return Ok(handle);
        }
        if reads_information_schema(plan) {
            // The catalog and settings are this session's: its own runtime answers
            // `SHOW` and `information_schema`, on any placement.
            return self.run_in_client(plan).await;
        }
        if let LogicalPlan::Analyze(analyze) = plan {
            return crate::analyze::explain_analyze(self, plan, analyze, label).await;
        }
        if self.runs_in_client(plan) {
            return self.run_in_client(plan).await;
        }
        let graph = self.labeled_graph(plan, plan, label).await?;
        if self.is_remote() && !self.travels(&graph) {
            return self.run_in_client(plan).await;
        }
        Ok(self.execute_graph(graph))
    }

    /// The task graph of `plan` (part of `whole`), labelled `label` or else with
    /// `whole`'s root operation.
    pub(crate) async fn labeled_graph(
        &self,
        plan: &LogicalPlan,
        whole: &LogicalPlan,
        label: Option<&str>,
    ) -> Result<TaskGraph> {
        let mut graph = self.prepare(plan).await?;
        graph.label = match label {
            Some(label) => label.to_string(),
            None => whole.display().to_string(),
        };
        Ok(graph)
    }

    /// Runs `task` on the cluster's client runtime.
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        task: impl std::future::Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.inner.cluster.runtime().spawn(task)
    }

    /// Whether the workers are other processes.
    pub(crate) fn is_remote(&self) -> bool {
        self.inner.cluster.placement() == Placement::Processes
    }

    /// Whether `plan` runs in this process whatever its stages: on a cluster, DELETE,
    /// UPDATE and TRUNCATE (they change an in-memory table when they are planned, so they
    /// are planned once) and window functions the plan codec would change.
    pub(crate) fn runs_in_client(&self, plan: &LogicalPlan) -> bool {
        self.is_remote()
            && (matches!(plan, LogicalPlan::Dml(dml)
                if !matches!(dml.op, WriteOp::Insert(_) | WriteOp::Ctas))
                || shoal_planner::windows_need_the_client(plan))
    }

    /// Whether every stage of `graph` can go to worker processes: its plan survives the
    /// codec (encoded, then decoded here), and the rows it writes can be sent as Arrow IPC.
    pub(crate) fn travels(&self, graph: &TaskGraph) -> bool {
        let task_ctx = self.inner.ctx.task_ctx();
        graph.stages.iter().all(|stage| {
            let written = stage.plan.children().into_iter().map(|c| c.schema());
            written
                .chain([stage.plan.schema()])
                .all(|s| ipc_carries(&s))
                && shoal_planner::encode_plan(Arc::clone(&stage.plan))
                    .and_then(|bytes| shoal_planner::decode_plan(&bytes, &task_ctx))
                    .is_ok()
        })
    }

    /// Runs `plan` in this process, with DataFusion, when its stages cannot be sent to
    /// worker processes: operators the plan codec cannot carry (a recursive query, a
    /// catalog table such as `information_schema`, an Arrow file sink).
    pub(crate) async fn run_in_client(&self, plan: &LogicalPlan) -> Result<JobHandle> {
        let stream = self
            .inner
            .ctx
            .execute_logical_plan(plan.clone())
            .await?
            .execute_stream()
            .await?;
        Ok(JobHandle::in_this_process(stream))
    }

    /// `INSERT INTO` an in-memory table of a session on a cluster of processes: the
    /// table lives in this process, so the rows are computed on the cluster and added
    /// here (worker processes cannot reach the table). `None` for every other plan.
    async fn insert_into_memory_table(
        &self,
        plan: &LogicalPlan,
        label: Option<&str>,
    ) -> Result<Option<JobHandle>> {
        let LogicalPlan::Dml(dml) = plan else {
            return Ok(None);
        };
        let in_memory =
            source_as_provider(&dml.target).is_ok_and(|p| p.downcast_ref::<MemTable>().is_some());
        if !in_memory
            || !matches!(dml.op, WriteOp::Insert(_))
            || self.inner.cluster.placement() != Placement::Processes
        {
            return Ok(None);
        }
        let rows = self.execute_graph(self.labeled_graph(&dml.input, plan, label).await?);
        let schema = rows.stream.schema();
        let batches: Vec<RecordBatch> = rows.stream.try_collect().await?;
        let computed = MemTable::try_new(schema, vec![batches])?;
        let input = LogicalPlanBuilder::scan(
            "inserted_rows",
            provider_as_source(Arc::new(computed)),
            None,
        )?
        .build()?;
        let local = LogicalPlan::Dml(DmlStatement::new(
            dml.table_name.clone(),
            Arc::clone(&dml.target),
            dml.op.clone(),
            Arc::new(input),
        ));
        let stream = self
            .inner
            .ctx
            .execute_logical_plan(local)
            .await?
            .execute_stream()
            .await?;
        // The cluster's job has finished; its progress says so.
        Ok(Some(JobHandle {
            job: rows.job,
            stream,
            progress: rows.progress,
        }))
    }

    /// The task graph a job for `plan` runs (see [`JobPlanner::task_graph`]).
    pub async fn prepare(&self, plan: &LogicalPlan) -> Result<TaskGraph> {
        Ok(self.planner().task_graph(plan).await?)
    }

    /// Starts a prepared graph on the cluster.
    pub fn execute_graph(&self, graph: TaskGraph) -> JobHandle {
        let schema = graph.result_stage().output_schema();
        let task_ctx = self.inner.ctx.state().task_ctx();
        let handle = self.inner.cluster.submit(graph, task_ctx, schema);
        let listener = self
            .inner
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(listener) = listener {
            // Ends with the job: its progress channel closes when the job does.
            let mut progress = handle.progress.clone();
            let job = handle.job;
            drop(self.inner.cluster.runtime().spawn(async move {
                loop {
                    listener(job, *progress.borrow_and_update());
                    if progress.changed().await.is_err() {
                        return;
                    }
                }
            }));
        }
        handle
    }

    /// Calls `listener` with each later job's id and task counts whenever they change
    /// (progress bars for batch jobs); replaces an earlier listener.
    pub fn on_progress(&self, listener: impl Fn(u64, Progress) + Send + Sync + 'static) {
        *self
            .inner
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(listener));
    }

    /// Starts an already planned physical plan on the cluster.
    pub fn execute_physical(&self, physical: Arc<dyn ExecutionPlan>) -> Result<JobHandle> {
        let label = displayable(physical.as_ref()).one_line().to_string();
        let mut graph = self.planner().graph_of(physical)?;
        graph.label = label.trim_end().to_string();
        Ok(self.execute_graph(graph))
    }

    /// Runs `plan` and collects its rows.
    pub async fn collect(&self, plan: &LogicalPlan) -> Result<Vec<RecordBatch>> {
        let job = self.execute(plan).await?;
        Ok(job.stream.try_collect().await?)
    }

    /// Every job's events from the moment the returned stream exists: submitted, stages
    /// and tasks started and finished, done, failed, cancelled; each with the job's task
    /// counts. Progress bars and monitors read this.
    pub async fn events(&self) -> Result<BoxStream<'static, JobEvent>> {
        Ok(self.inner.cluster.events().await?)
    }

    /// Scheduler's view of workers and jobs.
    pub async fn status(&self) -> Result<ClusterStatus> {
        Ok(self.inner.cluster.status().await?)
    }

    /// Cancels the job with this id (as [`Session::status`] lists it); its client gets
    /// an error. Returns whether it was running. Dropping a job's stream cancels it too.
    pub async fn cancel(&self, job: u64) -> Result<bool> {
        Ok(self.inner.cluster.cancel(job).await?)
    }

    /// Retires worker `worker` (an id from [`Session::status`]) of a cluster of processes:
    /// no new task goes to it, its running tasks finish, then it exits; outputs it held
    /// that are still needed are computed again elsewhere. Returns whether it was alive and
    /// not already retiring.
    pub async fn retire(&self, worker: usize) -> Result<bool> {
        Ok(self.inner.cluster.retire(worker).await?)
    }

    /// [`Session::status`] from synchronous code.
    pub fn status_blocking(&self) -> Result<ClusterStatus> {
        let session = self.clone();
        self.block_on("asking for the cluster's status", async move {
            session.status().await
        })
    }

    /// With `shoal.data_plane = 'flight'`: where each worker serves its outputs and the
    /// token calls must carry.
    pub fn flight_endpoints(&self) -> Option<(Vec<std::net::SocketAddr>, String)> {
        let token = self.inner.token.clone()?;
        Some((self.inner.cluster.flight_addresses(), token))
    }

    /// Result-store counters per worker.
    pub fn store_stats(&self) -> Vec<StoreStats> {
        self.inner.cluster.store_stats()
    }

    /// Names of the registered tables, sorted.
    pub fn table_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let state = self.inner.ctx.state();
        let catalog_name = &state.config().options().catalog.default_catalog;
        let schema_name = &state.config().options().catalog.default_schema;
        if let Some(schema) = self
            .inner
            .ctx
            .catalog(catalog_name)
            .and_then(|c| c.schema(schema_name))
        {
            names = schema.table_names();
        }
        names.sort();
        names
    }
}

/// A fresh random token for a session's data plane (128 bits from the OS).
fn new_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| crate::Error::input(format!("no randomness for a session token: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// True when `path` names a Zarr store: it ends in `.zarr`, or is a local directory with
/// Zarr metadata at its root.
fn is_zarr_store(path: &str) -> bool {
    if path.trim_end_matches('/').ends_with(".zarr") {
        return true;
    }
    match shoal_io::Location::parse(path) {
        Ok(shoal_io::Location::Local(p)) => [".zgroup", ".zarray", "zarr.json"]
            .iter()
            .any(|f| p.join(f).is_file()),
        _ => false,
    }
}
