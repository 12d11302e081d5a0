//! The `shoal` command line: SQL shell and batch, TPC-H data generation and benchmarks.

mod bench;
mod bench_arrays;
mod board;
mod gateway;
mod output;
mod processes;
mod run;
mod shell;
mod spec;
mod sql;
mod statement;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use shoal::{Session, SessionBuilder};

/// Shoal: a distributed dataframe and chunked-array query engine (embedded by default).
#[derive(Parser, Debug)]
#[command(name = "shoal", version, about)]
struct Cli {
    #[command(flatten)]
    engine: EngineArgs,
    /// Print the whole cause chain of an error, and the process's peak resident memory.
    #[arg(long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

/// Shape of the embedded cluster.
#[derive(Args, Debug, Clone)]
struct EngineArgs {
    /// In-process workers (default: one per core).
    #[arg(long, global = true, env = "SHOAL_WORKERS")]
    workers: Option<usize>,
    /// Memory limit per worker, e.g. 2GiB (embedded workers, and those of `shoal worker`
    /// and `shoal local`).
    #[arg(long, global = true, env = "SHOAL_WORKER_MEMORY_LIMIT")]
    memory_limit: Option<String>,
    /// Partitions per exchange (default: total worker slots).
    #[arg(long, global = true, env = "SHOAL_EXECUTION_PARTITIONS")]
    partitions: Option<usize>,
    /// Run on the cluster whose scheduler is at this URL instead of in this process.
    #[arg(long, global = true, env = "SHOAL_CLUSTER")]
    cluster: Option<String>,
    /// Cluster token (for --cluster).
    #[arg(long, global = true, env = "SHOAL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM certificate of the CA to trust for a TLS cluster (for --cluster).
    #[arg(long, global = true, env = "SHOAL_TLS_CA", value_name = "FILE")]
    tls_ca: Option<String>,
    #[command(flatten)]
    dashboard: DashboardArgs,
}

/// Where the web dashboard is served: by a scheduler (`shoal scheduler`, `shoal local`)
/// or by the embedded session of `shoal sql` and `shoal run`.
#[derive(Args, Debug, Clone, Default)]
pub struct DashboardArgs {
    /// Serve the dashboard and metrics on this address, e.g. 127.0.0.1:8787 (port 0: a
    /// free one); the URL is printed at start.
    #[arg(long, global = true, env = "SHOAL_DASHBOARD_BIND", value_name = "ADDR")]
    pub dashboard_bind: Option<String>,
    /// Path prefix of every dashboard route, behind a reverse proxy (e.g. /shoal).
    #[arg(
        long,
        global = true,
        env = "SHOAL_DASHBOARD_PREFIX",
        value_name = "PATH"
    )]
    pub dashboard_prefix: Option<String>,
    /// Who may read the dashboard: none (anyone who reaches it) or token (the cluster
    /// token, given once as ?token= in the URL).
    #[arg(
        long,
        global = true,
        env = "SHOAL_DASHBOARD_AUTH",
        value_name = "none|token"
    )]
    pub dashboard_auth: Option<String>,
    /// Write every job event to this directory as JSON lines (bounded, rotated files);
    /// `shoal dashboard --replay DIR` serves them later.
    #[arg(
        long,
        global = true,
        env = "SHOAL_DASHBOARD_EVENT_LOG",
        value_name = "DIR"
    )]
    pub event_log: Option<String>,
}

impl DashboardArgs {
    /// The settings these flags set, as (key, value).
    pub fn settings(&self) -> [(&'static str, Option<String>); 4] {
        [
            ("dashboard.bind", self.dashboard_bind.clone()),
            ("dashboard.prefix", self.dashboard_prefix.clone()),
            ("dashboard.auth", self.dashboard_auth.clone()),
            ("dashboard.event_log", self.event_log.clone()),
        ]
    }
}

impl EngineArgs {
    /// The session of `shoal COMMAND`, which needs a cluster.
    fn cluster_session(&self, command: &str) -> shoal::Result<Session> {
        if self.cluster.is_none() {
            return Err(shoal::Error::input(format!(
                "shoal {command} needs --cluster URL (or SHOAL_CLUSTER)"
            )));
        }
        self.session()
    }

    fn session(&self) -> shoal::Result<Session> {
        let mut builder: SessionBuilder = Session::builder();
        if let Some(n) = self.workers {
            builder = builder.workers(n);
        }
        if let Some(limit) = &self.memory_limit {
            builder = builder.option("worker.memory_limit", limit)?;
        }
        if let Some(n) = self.partitions {
            builder = builder.partitions(n);
        }
        if let Some(url) = &self.cluster {
            builder = builder.cluster(url);
        }
        if let Some(token) = &self.token {
            builder = builder.token(token);
        }
        if let Some(ca) = &self.tls_ca {
            builder = builder.tls_ca(ca);
        }
        for (key, value) in self.dashboard.settings() {
            if let Some(value) = value {
                builder = builder.option(key, &value)?;
            }
        }
        let session = builder.build()?;
        if let Some(url) = session.dashboard_link() {
            eprintln!("shoal dashboard at {url}");
        }
        Ok(session)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run SQL: interactively, or the statements of -c / -f in order.
    Sql(sql::SqlArgs),
    /// Run a batch job over a Zarr group: a pipeline of array steps per variable, written
    /// to a Zarr group or a Parquet file.
    Run(run::RunArgs),
    /// Generate benchmark data.
    Gen {
        #[command(subcommand)]
        what: GenWhat,
    },
    /// Run benchmarks.
    Bench {
        #[command(subcommand)]
        what: bench::BenchWhat,
    },
    /// Run a cluster's scheduler; prints its URL.
    Scheduler(processes::SchedulerArgs),
    /// Run a worker that joins a scheduler.
    Worker(processes::WorkerArgs),
    /// Run a scheduler and workers as processes on this machine; prints the URL.
    Local(processes::LocalArgs),
    /// Show the workers and jobs of a cluster (--cluster URL).
    Status(processes::StatusArgs),
    /// Cancel a job of a cluster by the id `shoal status` shows (--cluster URL).
    Cancel {
        /// The job's id.
        job: u64,
    },
    /// Retire a worker of a cluster by the id `shoal status` shows (--cluster URL): no new
    /// tasks go to it, its running ones finish, then it exits.
    Retire {
        /// The worker's id.
        worker: usize,
    },
    /// Clusters as a service: `shoal gateway serve --config gateway.toml`.
    Gateway {
        #[command(subcommand)]
        what: gateway::GatewayCommand,
    },
    /// Read a cluster spec: `shoal spec groups cluster.toml`.
    Spec {
        #[command(subcommand)]
        what: spec::SpecCommand,
    },
    /// Serve a recorded event log (--event-log DIR) as a read-only dashboard, on
    /// --dashboard-bind (default 127.0.0.1:8787).
    Dashboard {
        /// The event log's directory.
        #[arg(long, value_name = "DIR")]
        replay: String,
    },
}

#[derive(Subcommand, Debug)]
enum GenWhat {
    /// TPC-H tables as Parquet, one file per table.
    Tpch(GenTpchArgs),
}

#[derive(Args, Debug)]
struct GenTpchArgs {
    /// TPC-H scale factor (1 is about 1 GB of raw data).
    #[arg(long, default_value_t = 1.0)]
    scale_factor: f64,
    /// Directory for the tables.
    #[arg(long)]
    output: PathBuf,
    /// Replace tables that already exist.
    #[arg(long)]
    overwrite: bool,
}

/// A progress bar on stderr when it is a terminal; hidden otherwise.
pub(crate) fn progress_bar(len: u64, message: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(message.to_string());
    bar
}

pub(crate) fn generate_tpch(
    sf: f64,
    output: &std::path::Path,
    overwrite: bool,
) -> shoal::Result<()> {
    let bar = progress_bar(shoal::tpch::TABLES.len() as u64, "generating TPC-H");
    shoal::tpch::generate(sf, output, overwrite, &|_| bar.inc(1))?;
    bar.finish_and_clear();
    Ok(())
}

async fn run(cli: Cli) -> shoal::Result<()> {
    match cli.command {
        Command::Sql(args) => sql::run(&cli.engine, args).await,
        Command::Run(args) => run::run(&cli.engine, args, cli.verbose).await,
        Command::Gen {
            what: GenWhat::Tpch(args),
        } => {
            let (sf, output, overwrite) = (args.scale_factor, args.output, args.overwrite);
            tokio::task::spawn_blocking(move || generate_tpch(sf, &output, overwrite))
                .await
                .map_err(|e| shoal::Error::input(format!("generator failed: {e}")))?
        }
        Command::Bench { what } => bench::run(&cli.engine, what).await,
        Command::Scheduler(args) => processes::scheduler(args, &cli.engine.dashboard).await,
        Command::Worker(args) => processes::worker(args, cli.engine.memory_limit).await,
        Command::Local(args) => {
            processes::local(args, cli.engine.memory_limit, &cli.engine.dashboard).await
        }
        Command::Status(args) => {
            let session = cli.engine.cluster_session("status")?;
            processes::status(&session, args).await
        }
        Command::Cancel { job } => {
            let session = cli.engine.cluster_session("cancel")?;
            if session.cancel(job).await? {
                println!("job {job} cancelled");
                Ok(())
            } else {
                Err(shoal::Error::input(format!("no running job {job}")))
            }
        }
        Command::Gateway { what } => gateway::run(what).await,
        Command::Spec { what } => spec::run(what),
        Command::Dashboard { replay } => board::replay(&replay, &cli.engine.dashboard).await,
        Command::Retire { worker } => {
            let session = cli.engine.cluster_session("retire")?;
            if session.retire(worker).await? {
                println!("worker {worker} retires: it exits once its running tasks end");
                Ok(())
            } else {
                Err(shoal::Error::input(format!(
                    "no worker {worker} that is alive and not already retiring"
                )))
            }
        }
    }
}

/// Logs go to stderr; `SHOAL_LOG` (e.g. `debug`, `shoal_exec=trace`) picks what is shown.
fn init_logging(server: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if server { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env("SHOAL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The allocator of the `shoal` binary. Array chunks are megabytes each and come and go
/// by the thousand: mimalloc reuses freed chunk buffers without faulting their pages in
/// again, and returns what it no longer needs to the system, so a worker's resident
/// memory follows what its tasks and store hold (glibc's allocator either mapped and
/// zeroed every chunk afresh or, tuned to keep them, fragmented its heap well past the
/// memory limit).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc reserves its first arena (a gigabyte of address space) at the process's
/// first allocation, and on Linux commits it eagerly by default. Memory it frees in an
/// eagerly committed arena is only marked as reusable (`MADV_FREE`), so it stays in the
/// process's resident memory until the system runs short: under a limit of tens of
/// megabytes that was more than half of what a `shoal sql` process held. Arenas committed
/// on demand give freed memory back at once, and TPC-H SF1 through `shoal sql` ran
/// faster with them too (4.1-4.3 s against 4.5-5.1 s, alternating runs here). This runs
/// before `main`, and so before the first allocation; the environment variable
/// `MIMALLOC_ARENA_EAGER_COMMIT` still overrides it.
#[cfg(target_os = "linux")]
#[used]
#[allow(unsafe_code)]
#[unsafe(link_section = ".init_array")]
static COMMIT_ARENAS_ON_DEMAND: extern "C" fn() = commit_arenas_on_demand;

#[cfg(target_os = "linux")]
extern "C" fn commit_arenas_on_demand() {
    // `mi_option_arena_eager_commit` in mimalloc's `mi_option_e` (the same in its v2 and
    // v3).
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    #[allow(unsafe_code)]
    // SAFETY: `mi_option_set_default` only stores a default value that mimalloc reads
    // when it reserves an arena; nothing else runs yet.
    unsafe {
        libmimalloc_sys::mi_option_set_default(ARENA_EAGER_COMMIT, 0);
    }
}

/// Worker memory limits up to this size return freed memory to the system at once.
const SMALL_MEMORY_LIMIT: usize = 1 << 30;

/// mimalloc keeps freed pages for a moment (10 ms, 100 ms within its arenas) in case
/// they are wanted again, which saves page faults. Under a small memory limit those pages
/// are a real share of what the process may hold (tens of megabytes against a 48 MiB
/// limit), so they go back at once: when `limit` (a worker's memory limit, as given) is
/// at most [`SMALL_MEMORY_LIMIT`]. Runs before any worker starts.
fn purge_freed_memory_promptly(limit: Option<&str>) {
    let Some(bytes) = limit.and_then(|l| shoal_planner::config::parse_bytes(l).ok()) else {
        return;
    };
    if bytes == 0 || bytes > SMALL_MEMORY_LIMIT {
        return;
    }
    // `mi_option_purge_delay` in mimalloc's `mi_option_e` (the same in its v2 and v3).
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    #[allow(unsafe_code)]
    // SAFETY: `mi_option_set` only stores an option value; mimalloc reads this option
    // whenever it considers purging, from any thread.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let limit = match &cli.command {
        Command::Worker(args) => args.memory(),
        _ => None,
    };
    purge_freed_memory_promptly(limit.or(cli.engine.memory_limit.as_deref()));
    let verbose = cli.verbose;
    init_logging(matches!(
        cli.command,
        Command::Scheduler(_) | Command::Worker(_) | Command::Local(_) | Command::Gateway { .. }
    ));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(match &cli.command {
            // The scheduler's event loop and its gRPC server.
            Command::Scheduler(_) => 2,
            // The scheduler connection, heartbeats and the Flight server; tasks compute
            // on threads of their own, one per slot (see `run_worker`).
            Command::Worker(_) => 2,
            _ => 1,
        })
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    runtime.shutdown_background();
    if verbose && let Some(peak) = shoal::peak_resident_memory() {
        eprintln!("peak resident memory: {peak} bytes");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if verbose {
                eprintln!("Error: {e:#}");
            } else {
                eprintln!("Error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use shoal::ShoalConfig;

    /// Every `SHOAL_*` variable a flag reads is a setting's variable or one of the few
    /// process-level ones, each declared once in the settings module; a setting's flag
    /// has the one name the settings give it, on every command, and reads the setting's
    /// variable.
    #[test]
    fn flags_and_variables_are_the_ones_the_settings_declare() {
        use shoal_planner::config::{ENVIRONMENT, FLAGS};
        let declared: Vec<String> = ShoalConfig::keys()
            .iter()
            .map(|k| ShoalConfig::env_var(k))
            .chain(ENVIRONMENT.iter().map(|(v, _)| v.to_string()))
            .collect();
        let mut seen_vars = Vec::new();
        let mut seen_flags = Vec::new();
        let mut stack = vec![super::Cli::command()];
        while let Some(command) = stack.pop() {
            for arg in command.get_arguments() {
                let long = format!("--{}", arg.get_long().unwrap_or_default());
                let var = arg.get_env().map(|v| v.to_string_lossy().into_owned());
                if let Some(var) = &var {
                    assert!(
                        declared.contains(var),
                        "{var} (shoal {} {long}) is not declared",
                        command.get_name()
                    );
                    seen_vars.push(var.clone());
                }
                let names: Vec<String> = std::iter::once(long.clone())
                    .chain(
                        arg.get_all_aliases()
                            .unwrap_or_default()
                            .iter()
                            .map(|a| format!("--{a}")),
                    )
                    .collect();
                for (key, flag) in FLAGS {
                    if names.iter().any(|n| n == flag) {
                        assert_eq!(
                            &long,
                            flag,
                            "shoal {}: {key} has one name",
                            command.get_name()
                        );
                        assert_eq!(
                            var.as_deref(),
                            Some(ShoalConfig::env_var(key).as_str()),
                            "shoal {} {flag} reads the variable of {key}",
                            command.get_name()
                        );
                        seen_flags.push(*flag);
                    }
                }
            }
            stack.extend(command.get_subcommands().cloned());
        }
        for (key, flag) in FLAGS {
            assert!(seen_flags.contains(flag), "{key}: no command takes {flag}");
        }
        for var in ["SHOAL_CLUSTER", "SHOAL_TOKEN", "SHOAL_TLS_CA"] {
            assert!(seen_vars.iter().any(|s| s == var), "{var} has a flag");
        }
    }
}
