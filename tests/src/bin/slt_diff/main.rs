//! `slt_diff`: runs sqllogictest files through Shoal or through plain DataFusion and
//! compares the two runs record by record (see `tests/slt_compare.sh`).
//!
//! ```text
//! slt_diff run --engine shoal|datafusion [--cluster URL] DIR OUT.jsonl [NAME…]
//! slt_diff compare SHOAL.jsonl DATAFUSION.jsonl [DATAFUSION_AGAIN.jsonl]
//! ```
//!
//! `run` works inside `DIR` (an unpacked `datafusion-sqllogictest` crate: its
//! `test_files/` and `data/`, paths in the files are relative to it), one fresh session
//! per file (only the files whose path contains one of the `NAME`s, when given), and
//! writes one JSON line per statement or query: where it is, its SQL, and
//! its outcome (rows as text, or the error's first line). `compare` joins the runs and
//! prints the counts and every divergence; a record on which two DataFusion runs
//! disagree is counted as DataFusion's own nondeterminism.

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::FutureExt;
use serde_json::{Value, json};
use sqllogictest::{Condition, DefaultColumnType, QueryExpect, Record, SortMode};

/// The label DataFusion's own runner gives its records' `onlyif`/`skipif`.
const LABEL: &str = "Datafusion";
/// How long one statement may run before it counts as hung.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(120);

mod compare;

type Failure = Box<dyn std::error::Error>;

enum Engine {
    Shoal(shoal::Session),
    DataFusion(SessionContext),
}

impl Engine {
    fn new(kind: &str, cluster: Option<&str>) -> Result<Self, Failure> {
        Ok(match kind {
            "shoal" => Engine::Shoal(match cluster {
                Some(url) => shoal::Session::builder().cluster(url).build()?,
                None => shoal::Session::builder().workers(3).partitions(7).build()?,
            }),
            "datafusion" => Engine::DataFusion(SessionContext::new_with_config(
                SessionConfig::new()
                    .with_target_partitions(7)
                    .with_information_schema(true),
            )),
            other => return Err(format!("unknown engine '{other}'").into()),
        })
    }

    async fn run(&self, sql: &str) -> Result<Vec<RecordBatch>, String> {
        let result = match self {
            Engine::Shoal(session) => match session.sql(sql).await {
                Ok(df) => df.collect().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Engine::DataFusion(ctx) => match ctx.sql(sql).await {
                Ok(df) => df.collect().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
        };
        result.map_err(|e| {
            e.lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(400)
                .collect()
        })
    }
}

/// A value as text: NULL, floats to 12 significant digits, the rest as Arrow shows it.
fn cell(column: &dyn Array, formatter: &ArrayFormatter, row: usize) -> String {
    if column.is_null(row) {
        return "NULL".into();
    }
    let text = formatter.value(row).to_string();
    match column.data_type() {
        DataType::Float16 | DataType::Float32 | DataType::Float64 => match text.parse::<f64>() {
            Ok(v) if v.is_finite() && v != 0.0 => format!("{v:.11e}"),
            Ok(0.0) => "0".into(),
            _ => text,
        },
        _ => text,
    }
}

fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, Failure> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(c, f)| cell(c.as_ref(), f, row))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// Runs one record's SQL, catching panics and giving up after [`STATEMENT_TIMEOUT`].
async fn outcome(engine: &Engine, sql: &str) -> Value {
    let run = AssertUnwindSafe(engine.run(sql)).catch_unwind();
    match tokio::time::timeout(STATEMENT_TIMEOUT, run).await {
        Err(_) => json!({"outcome": "timeout"}),
        Ok(Err(_)) => json!({"outcome": "panic"}),
        Ok(Ok(Err(error))) => json!({"outcome": "error", "error": error}),
        Ok(Ok(Ok(batches))) => match rows_of(&batches) {
            Ok(rows) => json!({"outcome": "ok", "rows": rows}),
            Err(e) => json!({"outcome": "error", "error": format!("formatting rows: {e}")}),
        },
    }
}

fn skipped(conditions: &[Condition]) -> bool {
    conditions.iter().any(|c| match c {
        Condition::OnlyIf { label } => label != LABEL,
        Condition::SkipIf { label } => label == LABEL,
    })
}

/// The `.slt` files under `dir/test_files`, relative to `dir`, and how many of them
/// need DataFusion's optional Spark functions (skipped).
fn test_files(dir: &Path) -> Result<(Vec<PathBuf>, usize), Failure> {
    let mut files = Vec::new();
    let mut pending = vec![dir.join("test_files")];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "slt") {
                files.push(path.strip_prefix(dir)?.to_path_buf());
            }
        }
    }
    files.sort();
    let spark = files
        .iter()
        .filter(|f| f.components().any(|c| c.as_os_str() == "spark"))
        .count();
    files.retain(|f| !f.components().any(|c| c.as_os_str() == "spark"));
    Ok((files, spark))
}

/// `test_files/scratch/<file without extension>`, emptied, as DataFusion's runner does.
fn fresh_scratch_dir(file: &Path) -> Result<(), Failure> {
    let relative = file.strip_prefix("test_files")?.with_extension("");
    let scratch = Path::new("test_files/scratch").join(relative);
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    std::fs::create_dir_all(&scratch)?;
    Ok(())
}

async fn run_file(
    kind: &str,
    cluster: Option<&str>,
    file: &Path,
    root: &str,
    out: &mut impl Write,
) -> Result<usize, Failure> {
    fresh_scratch_dir(file)?;
    let records = match sqllogictest::parse_file::<DefaultColumnType>(file) {
        Ok(records) => records,
        Err(e) => {
            let line = json!({"file": file, "line": 0, "sql": "", "outcome": "unparsed", "error": e.to_string()});
            writeln!(out, "{line}")?;
            return Ok(0);
        }
    };
    let engine = Engine::new(kind, cluster)?;
    let mut n = 0;
    for record in records {
        let (loc, sql, sort) = match record {
            Record::Statement {
                loc,
                conditions,
                sql,
                ..
            } if !skipped(&conditions) => (loc, sql, false),
            Record::Query {
                loc,
                conditions,
                sql,
                expected,
                ..
            } if !skipped(&conditions) => {
                let sort = matches!(
                    expected,
                    QueryExpect::Results {
                        sort_mode: Some(SortMode::RowSort | SortMode::ValueSort),
                        ..
                    }
                );
                (loc, sql, sort)
            }
            Record::Halt { .. } => break,
            _ => continue,
        };
        let mut line = outcome(&engine, &sql).await;
        line["file"] = json!(loc.file());
        line["line"] = json!(loc.line());
        line["sql"] = json!(sql);
        line["rowsort"] = json!(sort);
        // Paths in answers (`input_file_name()`) name the run's own copy of the files.
        writeln!(out, "{}", line.to_string().replace(root, "$DIR"))?;
        n += 1;
    }
    Ok(n)
}

/// Waits until the cluster at `url` has `n` live workers.
async fn wait_for_workers(url: &str, n: usize) -> Result<(), Failure> {
    let session = shoal::Session::connect(url)?;
    for _ in 0..300 {
        if session
            .status()
            .await?
            .workers
            .iter()
            .filter(|w| w.alive)
            .count()
            >= n
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{url}: fewer than {n} workers joined in 30 s").into())
}

async fn run(args: &[String]) -> Result<(), Failure> {
    let mut kind = "shoal".to_string();
    let mut cluster = None;
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--engine" => kind = it.next().ok_or("--engine needs a value")?.clone(),
            "--cluster" => cluster = Some(it.next().ok_or("--cluster needs a URL")?.clone()),
            _ => positional.push(a.clone()),
        }
    }
    let [dir, out, only @ ..] = positional.as_slice() else {
        return Err(
            "usage: slt_diff run --engine shoal|datafusion [--cluster URL] DIR OUT [NAME…]".into(),
        );
    };
    if let Some(url) = &cluster {
        wait_for_workers(url, 2).await?;
    }
    let out = std::path::absolute(out)?;
    std::env::set_current_dir(dir)?;
    let cwd = std::env::current_dir()?;
    let root = cwd.to_string_lossy().trim_start_matches('/').to_string();
    let (mut files, spark) = test_files(Path::new("."))?;
    if !only.is_empty() {
        files.retain(|f| {
            only.iter()
                .any(|name| f.to_string_lossy().contains(name.as_str()))
        });
    }
    let mut sink = std::io::BufWriter::new(std::fs::File::create(&out)?);
    writeln!(sink, "{}", json!({"skipped_spark_files": spark}))?;
    for file in &files {
        let started = std::time::Instant::now();
        let n = run_file(&kind, cluster.as_deref(), file, &root, &mut sink).await?;
        sink.flush()?;
        eprintln!(
            "{kind}: {} ({n} records, {:.1} s)",
            file.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(&args[1..])),
        Some("compare") => compare::compare(&args[1..]),
        _ => Err("usage: slt_diff run|compare …".into()),
    }
}
