//! `shoal bench tpch`: per-query median times and their total.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use futures::TryStreamExt;
use shoal_exec::Cluster as _;
use shoal_exec::scheduler::simulate::Simulation;

use crate::EngineArgs;

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// The 22 TPC-H queries over generated Parquet data.
    Tpch(TpchArgs),
    /// Scheduler throughput: graphs of no-op tasks; prints tasks per second.
    Scheduler(SchedulerArgs),
    /// Chunked-array workloads on a seeded random matrix; prints `NAME SECONDS` lines.
    Arrays(crate::bench_arrays::ArraysArgs),
}

/// Shapes of no-op task graphs.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum GraphShape {
    /// N independent tasks feeding one.
    Merge,
    /// A binary reduction of N leaves.
    Tree,
}

/// Arguments of `shoal bench scheduler`.
#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// Graph shape.
    #[arg(long, value_enum, default_value_t = GraphShape::Merge)]
    graph: GraphShape,
    /// Tasks in the graph's widest layer.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Timed runs (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// Worker processes to start when no --cluster is given.
    #[arg(long, default_value_t = 2)]
    local_workers: usize,
    /// Instead of worker processes, this many workers simulated in this process (each
    /// answers a launch at once), e.g. 10,100,1000,10000: one line per count, with its
    /// rate as a share of the first count's.
    #[arg(long, value_delimiter = ',', conflicts_with = "local_workers")]
    simulate_workers: Vec<usize>,
}

/// The stages of a no-op graph: (input stages, tasks) per stage.
fn noop_graph(shape: GraphShape, tasks: usize) -> Vec<(Vec<usize>, usize)> {
    let tasks = tasks.max(1);
    match shape {
        GraphShape::Merge => vec![(Vec::new(), tasks), (vec![0], 1)],
        GraphShape::Tree => {
            let mut stages = vec![(Vec::new(), tasks)];
            let mut width = tasks;
            while width > 1 {
                width = width.div_ceil(2);
                stages.push((vec![stages.len() - 1], width));
            }
            stages
        }
    }
}

/// The median of timed runs' rates, the first run (a warm-up) left out.
fn median_after_warm_up(mut rates: Vec<f64>) -> f64 {
    rates.remove(0);
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// `shoal bench scheduler --simulate-workers`: the scheduler's rate with simulated
/// workers of one slot each, per worker count.
async fn simulated(args: &SchedulerArgs, prefetch: usize) -> shoal::Result<()> {
    if args.simulate_workers.contains(&0) {
        return Err(shoal::Error::input(
            "--simulate-workers: each count must be at least 1",
        ));
    }
    let stages = noop_graph(args.graph, args.tasks);
    let total: usize = stages.iter().map(|(_, n)| n).sum();
    println!(
        "# shoal scheduler with simulated workers (1 slot, prefetch {prefetch}), {:?} graph of \
         {total} tasks",
        args.graph
    );
    let mut first = None;
    for &workers in &args.simulate_workers {
        let mut sim = Simulation::start(workers, 1, prefetch).await?;
        let mut rates = Vec::new();
        for _ in 0..=args.iterations.max(1) {
            rates.push(total as f64 / sim.run(&stages).await?.as_secs_f64());
        }
        let rate = median_after_warm_up(rates);
        let share = rate / *first.get_or_insert(rate);
        println!(
            "{workers} workers: {rate:.0} tasks/s ({:.0}% of {} workers)",
            share * 100.0,
            args.simulate_workers[0]
        );
    }
    Ok(())
}

/// `shoal bench scheduler`: no-op graphs through a scheduler and its worker processes.
async fn scheduler(engine: &EngineArgs, args: SchedulerArgs) -> shoal::Result<()> {
    if !args.simulate_workers.is_empty() {
        if engine.cluster.is_some() {
            return Err(shoal::Error::input(
                "--simulate-workers runs its own scheduler: it takes no --cluster",
            ));
        }
        let settings = shoal::ShoalConfig::from_env()?.settings;
        return simulated(&args, settings.scheduler.prefetch).await;
    }
    let (url, _children) = match &engine.cluster {
        Some(url) => (url.clone(), None),
        None => {
            let workers = crate::processes::LocalGroup {
                workers: args.local_workers.max(1),
                slots: 1,
                ..Default::default()
            };
            let (url, children) = crate::processes::spawn_local(
                &[workers],
                None,
                "127.0.0.1:0",
                &crate::DashboardArgs::default(),
            )?;
            (url, Some(children))
        }
    };
    let security = shoal_exec::Security::from_files(
        engine.token.clone(),
        None,
        None,
        engine.tls_ca.as_deref(),
    )?;
    let cluster = shoal_exec::RemoteCluster::connect(&url, security)?;
    let stages = noop_graph(args.graph, args.tasks);
    let total: usize = stages.iter().map(|(_, n)| n).sum();
    let workers = cluster
        .status()
        .await?
        .workers
        .iter()
        .filter(|w| w.alive)
        .count();
    println!(
        "# shoal scheduler at {url}: {workers} workers, {:?} graph of {total} tasks",
        args.graph
    );
    let mut rates = Vec::new();
    for _ in 0..=args.iterations.max(1) {
        let started = Instant::now();
        cluster.run_noop(&stages).await?;
        rates.push(total as f64 / started.elapsed().as_secs_f64());
    }
    println!("{:.0} tasks/s", median_after_warm_up(rates));
    Ok(())
}

/// Arguments of `shoal bench tpch`.
#[derive(Args, Debug)]
pub struct TpchArgs {
    /// Directory with the TPC-H tables (from `shoal gen tpch`).
    #[arg(long)]
    data: PathBuf,
    /// Generate the data at this scale factor first if the directory lacks it.
    #[arg(long)]
    scale_factor: Option<f64>,
    /// Timed runs per query (after one warm-up run); the median is reported.
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// Only these queries, e.g. q01,q06.
    #[arg(long, value_delimiter = ',')]
    queries: Vec<String>,
}

/// Runs a benchmark.
pub async fn run(engine: &EngineArgs, what: BenchWhat) -> shoal::Result<()> {
    let args = match what {
        BenchWhat::Tpch(args) => args,
        BenchWhat::Scheduler(args) => return scheduler(engine, args).await,
        BenchWhat::Arrays(args) => {
            return crate::bench_arrays::run(&engine.session()?, args).await;
        }
    };
    if !shoal::tpch::is_generated(&args.data) {
        let Some(sf) = args.scale_factor else {
            return Err(shoal::Error::input(format!(
                "{} does not hold the TPC-H tables; run `shoal gen tpch` or pass --scale-factor",
                args.data.display()
            )));
        };
        let dir = args.data.clone();
        tokio::task::spawn_blocking(move || crate::generate_tpch(sf, &dir, false))
            .await
            .map_err(|e| shoal::Error::input(format!("generator failed: {e}")))??;
    }
    let session = engine.session()?;
    session.register_dir(&args.data.to_string_lossy())?;
    let selected: Vec<(&str, &str)> = shoal::tpch::QUERIES
        .iter()
        .copied()
        .filter(|(name, _)| args.queries.is_empty() || args.queries.iter().any(|q| q == name))
        .collect();
    if selected.is_empty() {
        return Err(shoal::Error::input(format!(
            "no TPC-H query matches {:?}",
            args.queries
        )));
    }
    let config = session.config();
    match &engine.cluster {
        Some(url) => println!(
            "# shoal cluster at {url}: {} partitions, data {}",
            config.execution.partitions,
            args.data.display()
        ),
        None => println!(
            "# shoal embedded: {} workers x {} slots, {} partitions, data {}",
            config.workers,
            config.worker.slots,
            config.execution.partitions,
            args.data.display()
        ),
    }
    let bar = crate::progress_bar(selected.len() as u64, "TPC-H");
    let mut total = 0.0;
    let iterations = args.iterations.max(1);
    for (name, sql) in selected {
        let mut times = Vec::with_capacity(iterations);
        let mut rows = 0;
        for i in 0..=iterations {
            let started = Instant::now();
            let batches = run_script(&session, sql).await?;
            let elapsed = started.elapsed().as_secs_f64();
            rows = batches.iter().map(|b| b.num_rows()).sum();
            if i > 0 {
                times.push(elapsed);
            }
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        total += median;
        bar.suspend(|| println!("{name}\t{median:.4}\t{rows} rows"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("total\t{total:.4}");
    Ok(())
}

/// Runs every statement of `sql`, returning the last one's rows.
async fn run_script(
    session: &shoal::Session,
    sql: &str,
) -> shoal::Result<Vec<shoal::datafusion::arrow::array::RecordBatch>> {
    let mut last = Vec::new();
    for statement in session.parse(sql)? {
        let df = session.statement(statement).await?;
        let job = df.execute().await?;
        last = job.stream.try_collect().await?;
    }
    Ok(last)
}
