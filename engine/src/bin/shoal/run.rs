//! `shoal run`: batch jobs over Zarr groups. Reads a group, applies a pipeline of
//! labeled-array steps to each chosen variable, and writes the result as a Zarr group or
//! a Parquet file (one row per cell), with a progress bar on a terminal. Both writers
//! work under a temporary name and move the result into place when it is complete.
//! With `--verbose` it also says how many bytes of task output the workers spilled to
//! disk (the job events' spill reports).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::{Args, ValueEnum};
use futures::{FutureExt, StreamExt};
use shoal::labeled::{ZarrCodec, ZarrOptions, apply_pipeline};
use shoal::{Dataset, Error, ErrorKind, JobEvent, JobEventKind};

use crate::EngineArgs;

/// What `shoal run` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sink {
    /// A Zarr group, one array per variable.
    Zarr,
    /// A Parquet file: one row per cell, a column per dimension and variable.
    Parquet,
}

/// Arguments of `shoal run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The Zarr group to read (a path or URL).
    input: String,
    /// Where to write (must not exist): a Zarr group or a Parquet file.
    output: String,
    /// Variables to process (repeatable or comma-separated; default: every variable).
    #[arg(long = "var", value_delimiter = ',')]
    vars: Vec<String>,
    /// Steps applied to each variable, separated by `|`, e.g.
    /// "anomaly(time.month) | std(time)" (see the README for the steps).
    #[arg(short = 'p', long, default_value = "")]
    pipeline: String,
    /// Output kind (default: parquet for a `.parquet` output, else zarr).
    #[arg(long, value_enum)]
    to: Option<Sink>,
    /// Zarr format of a Zarr output: 2 or 3.
    #[arg(long, default_value_t = 3)]
    zarr_format: u8,
    /// Chunk codec of a Zarr output: none, zstd[:LEVEL], blosc, gzip[:LEVEL], sharded[:N].
    #[arg(long, default_value = "zstd")]
    codec: String,
}

/// Runs `shoal run`.
pub async fn run(engine: &EngineArgs, args: RunArgs, verbose: bool) -> shoal::Result<()> {
    let started = Instant::now();
    let sink = args
        .to
        .unwrap_or(if args.output.trim_end_matches('/').ends_with(".parquet") {
            Sink::Parquet
        } else {
            Sink::Zarr
        });
    if !matches!(args.zarr_format, 2 | 3) {
        return Err(Error::input(format!(
            "--zarr-format must be 2 or 3, got {}",
            args.zarr_format
        )));
    }
    let codec = ZarrCodec::parse(&args.codec)?;
    // Before any work: the writers refuse an existing output too, but only once the
    // results are computed.
    if shoal_io::Location::parse(&args.output)?.exists_locally() {
        return Err(Error::input(format!(
            "{} already exists; remove it or write elsewhere",
            args.output
        )));
    }
    let session = engine.session()?;
    let input = session.open_zarr(&args.input)?;
    let names = if args.vars.is_empty() {
        input.names()
    } else {
        args.vars.clone()
    };
    let mut output = Dataset::new().with_attrs(input.attrs().clone());
    for name in &names {
        let var = input.var(name)?;
        let result = apply_pipeline(&var, &args.pipeline)
            .map_err(|e| Error::input(format!("variable '{name}': {e}")))?;
        output = output.with_var(name, result)?;
    }

    // One bar over every job the write runs.
    let bar = crate::progress_bar(0, "running");
    let jobs: Arc<Mutex<HashMap<u64, shoal::Progress>>> = Arc::default();
    {
        let bar = bar.clone();
        session.on_progress(move |job, progress| {
            let mut jobs = jobs.lock().unwrap_or_else(|e| e.into_inner());
            jobs.insert(job, progress);
            bar.set_length(jobs.values().map(|p| p.tasks_total as u64).sum());
            bar.set_position(jobs.values().map(|p| p.tasks_done as u64).sum());
        });
    }
    let write = async {
        match sink {
            Sink::Zarr => {
                let options = ZarrOptions {
                    format: args.zarr_format,
                    codec,
                };
                output.to_zarr_with(&args.output, options).await
            }
            Sink::Parquet => {
                output
                    .to_dataframe()
                    .await?
                    .to_parquet(&args.output, &[], false)
                    .await
            }
        }
    };
    let events = session.events().await?;
    let (result, spilled) = write_counting_spills(write, events).await;
    bar.finish_and_clear();
    result?;
    let described: Vec<String> = output
        .vars()
        .iter()
        .map(|(name, var)| {
            let dims: Vec<String> = var
                .dims()
                .iter()
                .zip(var.shape())
                .map(|(d, n)| format!("{d}: {n}"))
                .collect();
            format!("{name} ({})", dims.join(", "))
        })
        .collect();
    println!(
        "wrote {} to {} in {:.2} s",
        described.join(", "),
        args.output,
        started.elapsed().as_secs_f64()
    );
    if verbose {
        println!("spilled {spilled} bytes of task output to disk");
    }
    Ok(())
}

/// Runs `write` to its end or to Ctrl-C, summing the bytes the job events report spilled.
async fn write_counting_spills(
    write: impl std::future::Future<Output = shoal::Result<()>>,
    mut events: futures::stream::BoxStream<'static, JobEvent>,
) -> (shoal::Result<()>, u64) {
    let mut spilled = 0u64;
    let mut count = |event: JobEvent| {
        if let JobEventKind::Spill { bytes, .. } = event.kind {
            spilled += bytes;
        }
    };
    let mut write = std::pin::pin!(write);
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    let mut listening = true;
    let result = loop {
        tokio::select! {
            r = &mut write => break r,
            event = events.next(), if listening => match event {
                Some(event) => count(event),
                None => listening = false,
            },
            Ok(()) = &mut interrupted => break Err(Error::new(ErrorKind::Cancelled, "job cancelled")),
        }
    };
    // Spills reported as the last tasks ended are already in the stream.
    while let Some(Some(event)) = events.next().now_or_never() {
        count(event);
    }
    (result, spilled)
}
