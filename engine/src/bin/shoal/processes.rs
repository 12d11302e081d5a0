//! Cluster processes: `shoal scheduler`, `shoal worker`, `shoal local` and `shoal status`.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use shoal::datafusion::common::config::ExtensionOptions;
use shoal::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use shoal_exec::remote::{SchedulerOptions, WorkerOptions, run_worker, start_scheduler};
use shoal_exec::{ClusterStatus, Security};
use shoal_planner::Resources;
use shoal_planner::config::{FLAGS, ShoalConfig, ShoalSettings};

use crate::DashboardArgs;

use crate::output::Format;

/// TLS files of a server process.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// PEM certificate chain to serve TLS with (needs --tls-key).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<String>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<String>,
}

/// Arguments of `shoal scheduler`.
#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:7070")]
    bind: String,
    /// Cluster token every worker and client must present.
    #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Seconds without a heartbeat after which a worker is considered lost (default 5).
    #[arg(long, env = "SHOAL_SCHEDULER_HEARTBEAT_TIMEOUT")]
    heartbeat_timeout: Option<String>,
    /// Tasks in flight per worker slot (default 2).
    #[arg(long, env = "SHOAL_SCHEDULER_PREFETCH")]
    prefetch: Option<String>,
    /// Exit when standard input closes (used by `shoal local` for its children).
    #[arg(long, hide = true)]
    exit_with_stdin: bool,
}

/// Arguments of `shoal worker`.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The scheduler's URL, e.g. http://host:7070.
    #[arg(long)]
    scheduler: String,
    /// Cluster token.
    #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Task slots (default: the number of cores); Dask's name, also spelled --cpus.
    #[arg(long, visible_alias = "cpus", env = "SHOAL_WORKER_SLOTS")]
    nthreads: Option<usize>,
    /// The old spelling of --memory-limit (default: half of this machine's memory).
    #[arg(long)]
    memory: Option<String>,
    /// Named resources offered, e.g. gpu=1,ssd=1.
    #[arg(long, default_value = "")]
    resources: String,
    /// The worker group this worker belongs to (a cluster spec's `[groups.NAME]`).
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// A cluster spec (TOML): the worker takes --group's slots, memory and resources
    /// from it.
    #[arg(long, value_name = "FILE", requires = "group", conflicts_with_all = ["nthreads", "memory", "resources"])]
    spec: Option<String>,
    /// Address to serve task outputs on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
    /// Address peers and clients should use, when not the bound one.
    #[arg(long)]
    advertise: Option<String>,
    /// Directory for spill files (default: the system temporary directory).
    #[arg(long, env = "SHOAL_SCRATCH_DIR")]
    scratch_dir: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// PEM certificate of the CA that signed the scheduler's and peers' certificates.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<String>,
    /// Exit when standard input closes (used by `shoal local` for its children).
    #[arg(long, hide = true)]
    exit_with_stdin: bool,
}

impl WorkerArgs {
    /// The memory limit given with the old spelling, `--memory`.
    pub fn memory(&self) -> Option<&str> {
        self.memory.as_deref()
    }
}

impl WorkerArgs {
    /// With `--spec`, takes the slots, memory limit and resources of `--group` from the
    /// spec (a `--memory-limit` beside it is refused).
    fn take_shape_from_spec(&mut self, memory_limit: &mut Option<String>) -> shoal::Result<()> {
        let (Some(path), Some(group)) = (&self.spec, &self.group) else {
            return Ok(());
        };
        if memory_limit.is_some() {
            return Err(input(format!(
                "--memory-limit: not with --spec (group {group} of {path} gives the memory)"
            )));
        }
        let spec = shoal_gateway::ClusterSpec::from_file(path).map_err(|e| input(e.to_string()))?;
        let Some(shape) = spec.groups.get(group) else {
            let known: Vec<&str> = spec.groups.keys().map(String::as_str).collect();
            return Err(input(format!(
                "{path}: no group {group} (its groups: {})",
                known.join(", ")
            )));
        };
        self.nthreads = Some(shape.slots);
        if !shape.resources.is_empty() {
            self.resources = shape.resources.to_string();
        }
        *memory_limit = shape.memory.map(|m| m.to_string());
        Ok(())
    }

    /// Task slots: `--nthreads`, or the number of cores.
    pub fn slots(&self) -> usize {
        self.nthreads.unwrap_or_else(cores).max(1)
    }

    /// The worker's settings: `SHOAL_*` variables, then its flags (parsed and checked as
    /// the settings are), resolved for one worker on this machine.
    fn settings(&self, memory_limit: Option<String>) -> shoal::Result<ShoalSettings> {
        let mut settings = settings_with([
            ("worker.slots", Some(self.slots().to_string())),
            ("worker.memory_limit", self.memory.clone().or(memory_limit)),
            ("scratch_dir", self.scratch_dir.clone()),
        ])?;
        settings.workers = 1;
        settings.resolve(cores(), None);
        Ok(settings)
    }
}

/// The settings of a process: `SHOAL_*` variables, then the flags given as (key, value),
/// each parsed and checked as its setting is; an error names the flag.
fn settings_with<const N: usize>(
    flags: [(&str, Option<String>); N],
) -> shoal::Result<ShoalSettings> {
    let mut config = ShoalConfig::from_env()?;
    for (key, value) in flags {
        let Some(value) = value else { continue };
        if let Err(e) = config.set(key, &value) {
            let flag = FLAGS
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(key, |(_, f)| *f);
            return Err(input(format!("{flag}: {}", e.message())));
        }
    }
    Ok(config.settings)
}

/// Cores of this machine.
fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Arguments of `shoal local`.
#[derive(Args, Debug)]
pub struct LocalArgs {
    /// Worker processes to start (default 2).
    #[arg(long, env = "SHOAL_WORKERS")]
    workers: Option<usize>,
    /// Task slots per worker (default: cores divided among the workers); Dask's name,
    /// also spelled --cpus.
    #[arg(long, visible_alias = "cpus", env = "SHOAL_WORKER_SLOTS")]
    nthreads: Option<usize>,
    /// The old spelling of --memory-limit.
    #[arg(long)]
    memory: Option<String>,
    /// Scheduler address; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
    /// Cluster token.
    #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A cluster spec (TOML) whose worker groups to start instead of --workers alike
    /// (so not with --workers, --nthreads or --memory, nor their SHOAL_* variables).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["workers", "nthreads", "memory"])]
    spec: Option<String>,
}

/// Arguments of `shoal status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

fn input(message: String) -> shoal::Error {
    shoal::Error::input(message)
}

/// Resolves once standard input reaches its end (the parent is gone), when asked to;
/// otherwise never.
async fn stdin_closed(watch: bool) {
    if !watch {
        return std::future::pending().await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = tx.send(());
    });
    let _ = rx.await;
}

fn base_runtime() -> shoal::Result<Arc<shoal::datafusion::execution::runtime_env::RuntimeEnv>> {
    Ok(RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(shoal_io::ShoalObjectStoreRegistry::new()))
        .build_arc()?)
}

/// `shoal scheduler`: prints its URL (and its dashboard's), then serves until stopped.
pub async fn scheduler(args: SchedulerArgs, dashboard: &DashboardArgs) -> shoal::Result<()> {
    let [bind, prefix, auth, event_log] = dashboard.settings();
    let settings = settings_with([
        ("scheduler.heartbeat_timeout", args.heartbeat_timeout),
        ("scheduler.prefetch", args.prefetch),
        bind,
        prefix,
        auth,
        event_log,
    ])?;
    let security = Security::from_files(
        args.token.clone(),
        args.tls.tls_cert.as_deref(),
        args.tls.tls_key.as_deref(),
        None,
    )?;
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .map_err(|e| input(format!("cannot listen on {}: {e}", args.bind)))?;
    let board = crate::board::Board::bind(&settings, args.token.as_deref())?;
    let log = shoal::open_event_log(&settings.dashboard.event_log)?;
    let address = listener.local_addr()?;
    let scheme = if security.identity.is_some() {
        "https"
    } else {
        "http"
    };
    // One write: a reader that stops after the first line gets both or neither.
    let mut lines = format!("shoal scheduler listening on {scheme}://{address}\n");
    if let Some(board) = &board {
        lines.push_str(&format!("shoal dashboard at {}\n", board.url));
    }
    print!("{lines}");
    let _ = std::io::stdout().flush();
    let options = SchedulerOptions::new(&settings, security);
    let own = crate::board::OwnScheduler {
        url: format!("{scheme}://{}", crate::board::loopback(address)),
        token: args.token,
        tls_cert: args.tls.tls_cert,
    };
    let (feed, scheduler) = start_scheduler(listener, options);
    tokio::select! {
        result = scheduler => Ok(result?),
        () = crate::board::serve_or_log(board, log, own, feed, &settings) => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = stdin_closed(args.exit_with_stdin) => Ok(()),
    }
}

/// `shoal worker`: joins the scheduler and runs tasks until the connection ends.
pub async fn worker(mut args: WorkerArgs, mut memory_limit: Option<String>) -> shoal::Result<()> {
    args.take_shape_from_spec(&mut memory_limit)?;
    let settings = args.settings(memory_limit)?;
    let drain = Drain {
        scheduler: args.scheduler.clone(),
        token: args.token.clone(),
        tls_ca: args.tls_ca.clone(),
        id: Arc::new(std::sync::OnceLock::new()),
    };
    let security = Security::from_files(
        args.token,
        args.tls.tls_cert.as_deref(),
        args.tls.tls_key.as_deref(),
        args.tls_ca.as_deref(),
    )?;
    let resources = Resources::parse(&args.resources)
        .map_err(|e| input(format!("--resources: {}", e.message())))?;
    if let Some(group) = &args.group {
        shoal_gateway::spec::check_group_name(group).map_err(|e| input(format!("--group: {e}")))?;
    }
    let mut options = WorkerOptions::new(args.scheduler, &settings, security);
    options.group = args.group.unwrap_or_default();
    options.bind = args.bind;
    options.advertise = args.advertise;
    options.resources = resources;
    let base = base_runtime()?;
    let own_id = Arc::clone(&drain.id);
    let worker = run_worker(options, &base, move |id, address| {
        let _ = own_id.set(id);
        println!("shoal worker {id} serving task outputs at {address}");
        let _ = std::io::stdout().flush();
    });
    tokio::pin!(worker);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = &mut worker => return Ok(result?),
        _ = tokio::signal::ctrl_c() => return Ok(()),
        _ = stdin_closed(args.exit_with_stdin) => return Ok(()),
        _ = terminate.recv() => {}
    }
    // SIGTERM (Kubernetes, `scancel`, `kill`): drain. The scheduler retires this worker,
    // its running tasks finish and their outputs move on, then it exits; a second
    // SIGTERM or an interrupt exits at once.
    if let Err(e) = drain.retire().await {
        tracing::warn!("cannot drain before exiting: {e}");
        return Ok(());
    }
    tokio::select! {
        result = worker => Ok(result?),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminate.recv() => Ok(()),
    }
}

/// What a worker needs to ask its scheduler to retire it.
struct Drain {
    scheduler: String,
    token: Option<String>,
    tls_ca: Option<String>,
    /// The worker's id, once it joined.
    id: Arc<std::sync::OnceLock<usize>>,
}

impl Drain {
    async fn retire(&self) -> shoal::Result<()> {
        let Some(&id) = self.id.get() else {
            return Err(input("the worker had not joined yet".to_string()));
        };
        let mut builder = shoal::Session::builder().cluster(&self.scheduler);
        if let Some(token) = &self.token {
            builder = builder.token(token);
        }
        if let Some(ca) = &self.tls_ca {
            builder = builder.tls_ca(ca);
        }
        let session = builder.build()?;
        tracing::info!("SIGTERM: worker {id} drains (its running tasks finish), then exits");
        session.retire(id).await?;
        Ok(())
    }
}

/// Kills the children of `shoal local` when it ends.
pub struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        // Workers first: they would report the scheduler's end as an error.
        for child in self.0.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `command` (stdout piped) as one of `children` and returns the first line it
/// prints: its address once it is ready, or nothing if it failed.
fn spawn_and_read_line(command: &mut Command, children: &mut Children) -> shoal::Result<String> {
    Ok(spawn_and_read_lines(command, children, 1)?
        .pop()
        .unwrap_or_default())
}

/// Like [`spawn_and_read_line`], for the first `n` lines (fewer if it stops printing).
fn spawn_and_read_lines(
    command: &mut Command,
    children: &mut Children,
    n: usize,
) -> shoal::Result<Vec<String>> {
    let mut child = command.stdout(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take();
    children.0.push(child);
    let mut lines = Vec::new();
    if let Some(stdout) = stdout {
        let mut reader = std::io::BufReader::new(stdout);
        for _ in 0..n {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut reader, &mut line)? == 0 {
                break;
            }
            lines.push(line);
        }
    }
    Ok(lines)
}

/// Worker processes of one shape for [`spawn_local`].
#[derive(Debug, Clone, Default)]
pub struct LocalGroup {
    /// The group's name (none: workers of no group).
    pub name: Option<String>,
    /// Worker processes.
    pub workers: usize,
    /// Task slots per worker.
    pub slots: usize,
    /// Memory limit per worker (default: the worker's own).
    pub memory_limit: Option<String>,
    /// Named resources each worker offers.
    pub resources: Resources,
}

/// A scheduler and the workers of `groups` on loopback, children of this process;
/// returns the scheduler's URL. The children stop when the returned value is dropped or
/// this process ends.
pub fn spawn_local(
    groups: &[LocalGroup],
    token: Option<&str>,
    bind: &str,
    dashboard: &DashboardArgs,
) -> shoal::Result<(String, Children)> {
    let exe = std::env::current_exe()?;
    let mut children = Children(Vec::new());
    let mut scheduler = Command::new(&exe);
    scheduler
        .args(["scheduler", "--exit-with-stdin", "--bind", bind])
        .stdin(Stdio::piped());
    if let Some(token) = token {
        scheduler.env("SHOAL_TOKEN", token);
    }
    for (key, value) in dashboard.settings() {
        if let Some(value) = value {
            scheduler.env(shoal::ShoalConfig::env_var(key), value);
        }
    }
    // The scheduler prints its URL, then its dashboard's when it serves one.
    let serves_dashboard = dashboard
        .dashboard_bind
        .as_ref()
        .is_some_and(|b| !b.is_empty());
    let lines = spawn_and_read_lines(&mut scheduler, &mut children, 1 + serves_dashboard as usize)?;
    if let Some(board) = lines
        .get(1)
        .and_then(|l| l.strip_prefix("shoal dashboard at "))
    {
        eprintln!("shoal local: dashboard at {}", board.trim());
    }
    let line = lines.into_iter().next().unwrap_or_default();
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http"))
        .ok_or_else(|| input("the scheduler did not start".to_string()))?
        .to_string();
    for group in groups {
        for _ in 0..group.workers {
            let mut worker = Command::new(&exe);
            worker
                .args(["worker", "--exit-with-stdin", "--scheduler", &url])
                .args(["--nthreads", &group.slots.max(1).to_string()])
                .stdin(Stdio::piped());
            if !group.resources.is_empty() {
                worker.args(["--resources", &group.resources.to_string()]);
            }
            if let Some(limit) = &group.memory_limit {
                worker.args(["--memory-limit", limit]);
            }
            if let Some(name) = &group.name {
                worker.args(["--group", name]);
            }
            if let Some(token) = token {
                worker.env("SHOAL_TOKEN", token);
            }
            // The worker prints one line once the scheduler has accepted it.
            let line = spawn_and_read_line(&mut worker, &mut children)?;
            if !line.starts_with("shoal worker") {
                return Err(input("a worker did not start".to_string()));
            }
        }
    }
    Ok((url, children))
}

/// The worker groups of `shoal local`: those of `--spec`, or `--workers` alike.
fn local_groups(args: &LocalArgs, memory_limit: Option<String>) -> shoal::Result<Vec<LocalGroup>> {
    if let Some(path) = &args.spec {
        let spec = shoal_gateway::ClusterSpec::from_file(path).map_err(|e| input(e.to_string()))?;
        if spec.workers() == 0 {
            return Err(input(format!("{path}: every group has 0 workers")));
        }
        let groups = spec.groups.iter().map(|(name, g)| LocalGroup {
            name: Some(name.clone()),
            workers: g.workers,
            slots: g.slots,
            memory_limit: g.memory.map(|m| m.to_string()).or(memory_limit.clone()),
            resources: g.resources.clone(),
        });
        return Ok(groups.collect());
    }
    // The workers share this machine, as an embedded session's do.
    let mut settings = settings_with([
        (
            "workers",
            Some(args.workers.unwrap_or(2).max(1).to_string()),
        ),
        ("worker.memory_limit", args.memory.clone().or(memory_limit)),
    ])?;
    settings.resolve(cores(), None);
    let workers = settings.workers.max(1);
    Ok(vec![LocalGroup {
        name: None,
        workers,
        slots: args.nthreads.unwrap_or((cores() / workers).max(1)),
        memory_limit: Some(settings.worker.memory_limit.bytes().to_string()),
        resources: Resources::default(),
    }])
}

/// `shoal local`: a scheduler and workers as child processes on this machine.
pub async fn local(
    args: LocalArgs,
    memory_limit: Option<String>,
    dashboard: &DashboardArgs,
) -> shoal::Result<()> {
    let groups = local_groups(&args, memory_limit)?;
    let (url, mut children) = spawn_local(&groups, args.token.as_deref(), &args.bind, dashboard)?;
    println!("{url}");
    let _ = std::io::stdout().flush();
    let shapes: Vec<String> = groups
        .iter()
        .map(|g| {
            let name = g
                .name
                .as_deref()
                .map(|n| format!("{n}: "))
                .unwrap_or_default();
            format!("{name}{} workers ({} slots each)", g.workers, g.slots)
        })
        .collect();
    eprintln!(
        "shoal local: scheduler at {url} with {}; Ctrl-C stops them",
        shapes.join(", ")
    );
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for child in &mut children.0 {
                    if let Some(status) = child.try_wait()? {
                        return Err(input(format!("a cluster process exited ({status})")));
                    }
                }
            }
        }
    }
}

/// `shoal status`: workers and jobs of the cluster.
pub async fn status(session: &shoal::Session, args: StatusArgs) -> shoal::Result<()> {
    let status = session.status().await?;
    let text = match args.format {
        Format::Json => shoal::status_json(&status).to_string(),
        Format::Table | Format::Csv => status_table(&status, args.format == Format::Csv),
    };
    println!("{text}");
    Ok(())
}

fn status_table(status: &ClusterStatus, csv: bool) -> String {
    let sep = if csv { "," } else { "  " };
    let mut lines = vec![
        [
            "worker",
            "address",
            "alive",
            "slots",
            "resources",
            "group",
            "memory_limit",
            "memory_used",
            "running",
            "completed",
        ]
        .join(sep),
    ];
    for w in &status.workers {
        lines.push(
            [
                w.id.to_string(),
                w.address.clone(),
                w.alive.to_string(),
                w.slots.to_string(),
                w.resources.to_string(),
                w.group.clone(),
                w.memory_limit.to_string(),
                w.memory_used.to_string(),
                w.tasks_running.to_string(),
                w.tasks_completed.to_string(),
            ]
            .join(sep),
        );
    }
    for j in &status.jobs {
        let waiting = j.waiting.as_deref().unwrap_or("");
        lines.push(format!(
            "job {}: {}/{} tasks done{}{waiting}",
            j.id,
            j.tasks_done,
            j.tasks_total,
            if waiting.is_empty() {
                ""
            } else {
                "; waiting: "
            }
        ));
    }
    lines.join("\n")
}
