//! `shoal sql`: tables from the command line, then batch statements or the shell.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use shoal::Session;

use crate::EngineArgs;
use crate::output::{self, Format};
use crate::statement::run_statement;

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
