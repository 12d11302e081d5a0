//! Fuzzing entry points: each takes arbitrary bytes where Shoal takes input it does not
//! control, and must return rather than panic. Each returns how much it got through
//! (statements planned, plans decoded, rows read), so the replay test can check that its
//! seeds are read, not just refused. The cargo-fuzz
//! targets in `fuzz/` call them; `tests/it/fuzz.rs` replays their corpora (and every crash
//! found, kept under `fuzz/regressions/`) as ordinary tests.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

/// Run once before fuzzing: a panic that Shoal catches and turns into an error (as
/// `decode_plan` does with datafusion-proto's and Arrow's) is the right answer, so it must
/// not abort the fuzzer as libFuzzer's panic hook would; a panic that escapes an entry
/// point still does.
pub fn init() {
    std::panic::set_hook(Box::new(|_| {}));
}

/// The runtime every entry point blocks on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// A context with a small table `t(a bigint, b varchar)`, as queries expect one.
fn context() -> SessionContext {
    let ctx = SessionContext::new();
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
            Arc::new(StringArray::from(vec![Some("x"), Some("y"), None])),
        ],
    )
    .expect("a batch");
    let table = MemTable::try_new(schema, vec![vec![batch]]).expect("a table");
    ctx.register_table("t", Arc::new(table))
        .expect("registered");
    ctx
}

/// SQL text through Shoal's statement planning, DataFusion's physical planning and the
/// stage split; nothing is executed. Returns the statements split into stages.
pub fn sql(data: &[u8]) -> usize {
    let Ok(text) = std::str::from_utf8(data) else {
        return 0;
    };
    let ctx = context();
    runtime().block_on(async {
        let Ok(statements) = shoal_sql::parse_sql(text, "generic") else {
            return 0;
        };
        let mut split = 0;
        for statement in statements {
            // A query, or the statement an `EXPLAIN` shows the stages of.
            let plan = match shoal_sql::plan_statement(&ctx, statement).await {
                Ok(shoal_sql::Planned::Query(plan)) => plan,
                Ok(shoal_sql::Planned::Explain { inner, .. }) => (*inner).clone(),
                _ => continue,
            };
            if let Ok(physical) = ctx.state().create_physical_plan(&plan).await
                && shoal_planner::split_into_stages(physical).is_ok()
            {
                split += 1;
            }
        }
        split
    })
}

/// Bytes a worker would take for a stage plan. Returns 1 if they decode.
pub fn plan(data: &[u8]) -> usize {
    let ctx = context();
    usize::from(shoal_planner::decode_plan(data, &ctx.task_ctx()).is_ok())
}

/// A file's bytes read as CSV (`csv`) or Parquet, through a query over it. Returns the
/// rows read.
fn read_file(data: &[u8], extension: &str) -> usize {
    let Ok(dir) = tempfile::tempdir() else {
        return 0;
    };
    let path = dir.path().join(format!("input.{extension}"));
    if std::fs::write(&path, data).is_err() {
        return 0;
    }
    let session = shoal::Session::builder()
        .workers(1)
        .build()
        .expect("a session");
    runtime().block_on(async {
        if session
            .register("f", path.to_str().unwrap_or_default())
            .is_err()
        {
            return 0;
        }
        let Ok(df) = session.sql("select * from f").await else {
            return 0;
        };
        df.collect()
            .await
            .map_or(0, |batches| batches.iter().map(|b| b.num_rows()).sum())
    })
}

/// A CSV file's bytes; returns the rows read.
pub fn csv(data: &[u8]) -> usize {
    read_file(data, "csv")
}

/// A Parquet file's bytes; returns the rows read.
pub fn parquet(data: &[u8]) -> usize {
    read_file(data, "parquet")
}
