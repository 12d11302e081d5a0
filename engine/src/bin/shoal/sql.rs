//! `shoal sql`: tables from the command line, then batch statements or the shell.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use futures::TryStreamExt;
use shoal::Session;
use shoal::datafusion::arrow::array::RecordBatch;
use shoal::datafusion::sql::parser::Statement;

use crate::EngineArgs;
use crate::output::{self, Format};

/// Arguments of `shoal sql`.
#[derive(Args, Debug)]
pub struct SqlArgs {
    /// Register every *.parquet, *.csv and sub-directory of DIR as a table (repeatable).
    #[arg(long = "tables", value_name = "DIR")]
    tables: Vec<String>,
    /// Register PATH (file, directory or URL) as table NAME (repeatable).
    #[arg(long = "table", value_name = "NAME=PATH")]
    table: Vec<String>,
    /// Run these statements (repeatable; each may hold several).
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    command: Vec<String>,
    /// Run every statement of FILE in order.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Result format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Registers the tables named on the command line.
pub fn register_tables(session: &Session, dirs: &[String], tables: &[String]) -> shoal::Result<()> {
    for dir in dirs {
        session.register_dir(dir)?;
    }
    for spec in tables {
        let Some((name, path)) = spec.split_once('=') else {
            return Err(shoal::Error::input(format!(
                "--table expects NAME=PATH, got '{spec}'"
            )));
        };
        session.register(name.trim(), path.trim())?;
    }
    Ok(())
}

/// Runs one statement to completion, cancelling it on Ctrl-C. Returns its schema and rows.
pub async fn run_statement(
    session: &Session,
    statement: Statement,
) -> shoal::Result<(
    shoal::datafusion::arrow::datatypes::SchemaRef,
    Vec<RecordBatch>,
)> {
    let df = session.statement(statement).await?;
    let schema = df.schema();
    let job = session.execute(df.logical_plan()).await?;
    let mut progress = job.progress.clone();
    let show_progress = std::io::stderr().is_terminal();
    let watcher = async move {
        if !show_progress {
            return std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let bar = crate::progress_bar(0, "running");
        loop {
            let p = *progress.borrow_and_update();
            bar.set_length(p.tasks_total as u64);
            bar.set_position(p.tasks_done as u64);
            if progress.changed().await.is_err() {
                bar.finish_and_clear();
                return std::future::pending::<()>().await;
            }
        }
    };
    let collect = job.stream.try_collect::<Vec<RecordBatch>>();
    tokio::select! {
        rows = collect => Ok((schema, rows?)),
        _ = tokio::signal::ctrl_c() => Err(shoal::Error::new(shoal::ErrorKind::Cancelled, "query cancelled")),
        _ = watcher => unreachable!("the progress watcher never finishes"),
    }
}

/// Runs `shoal sql`.
pub async fn run(engine: &EngineArgs, args: SqlArgs) -> shoal::Result<()> {
    let session = engine.session()?;
    register_tables(&session, &args.tables, &args.table)?;
    let mut scripts = args.command.clone();
    if let Some(file) = &args.file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| shoal::Error::input(format!("cannot read {}: {e}", file.display())))?;
        scripts.push(text);
    }
    if scripts.is_empty() {
        return crate::shell::run(&session, args.format).await;
    }
    let stdout = std::io::stdout();
    for script in scripts {
        for statement in session.parse(&script)? {
            let (schema, batches) = run_statement(&session, statement).await?;
            let mut out = stdout.lock();
            output::write(&mut out, args.format, &schema, &batches)?;
            out.flush()?;
        }
    }
    Ok(())
}

/// "N rows in 0.123 s" for the shell.
pub fn summary(batches: &[RecordBatch], started: Instant) -> String {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let noun = if rows == 1 { "row" } else { "rows" };
    format!("{rows} {noun} in {:.3} s", started.elapsed().as_secs_f64())
}
