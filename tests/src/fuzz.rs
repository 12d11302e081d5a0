//! Fuzzing entry points: each takes arbitrary bytes where Shoal takes input it does not
//! control, and must return (with an error, or nothing) rather than panic. The cargo-fuzz
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
/// stage split; nothing is executed.
pub fn sql(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = context();
    runtime().block_on(async {
        let Ok(statements) = shoal_sql::parse_sql(text, "generic") else {
            return;
        };
        for statement in statements {
            let Ok(shoal_sql::Planned::Query(plan)) =
                shoal_sql::plan_statement(&ctx, statement).await
            else {
                continue;
            };
            if let Ok(physical) = ctx.state().create_physical_plan(&plan).await {
                let _ = shoal_planner::split_into_stages(physical);
            }
        }
    });
}

/// Bytes a worker would take for a stage plan.
pub fn plan(data: &[u8]) {
    let ctx = context();
    let _ = shoal_planner::decode_plan(data, &ctx.task_ctx());
}

/// A file's bytes read as CSV (`csv`) or Parquet, through a query over it.
fn read_file(data: &[u8], extension: &str) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join(format!("input.{extension}"));
    if std::fs::write(&path, data).is_err() {
        return;
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
            return;
        }
        if let Ok(df) = session.sql("select * from f").await {
            let _ = df.collect().await;
        }
    });
}

/// A CSV file's bytes.
pub fn csv(data: &[u8]) {
    read_file(data, "csv");
}

/// A Parquet file's bytes.
pub fn parquet(data: &[u8]) {
    read_file(data, "parquet");
}
