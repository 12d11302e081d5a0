//! `shoal bench tpch`: per-query median times and their total.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use futures::TryStreamExt;

use crate::EngineArgs;

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// The 22 TPC-H queries over generated Parquet data.
    Tpch(TpchArgs),
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
    let BenchWhat::Tpch(args) = what;
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
    println!(
        "# shoal embedded: {} workers x {} slots, {} partitions, data {}",
        config.workers,
        config.worker_slots,
        config.partitions,
        args.data.display()
    );
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
        let job = session.execute(df.logical_plan()).await?;
        last = job.stream.try_collect().await?;
    }
    Ok(last)
}
