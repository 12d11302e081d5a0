//! Runs the sqllogictest files under `tests/slt/` against Shoal sessions. Shared by the
//! integration tests (an embedded session) and the engine's CLI tests (a scheduler and
//! worker processes), which include this file by path.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use shoal::Session;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

/// Each row's cells as text, as the tests' `rows` helper gives them.
pub type Cells = fn(&[RecordBatch]) -> Vec<Vec<String>>;

struct ShoalDb {
    session: Session,
    cells: Cells,
}

#[async_trait]
impl AsyncDB for ShoalDb {
    type Error = shoal::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let df = self.session.sql(sql).await?;
        let schema = df.schema();
        let batches = df.collect().await?;
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let types = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                t if t.is_integer() => DefaultColumnType::Integer,
                t if t.is_floating() || matches!(t, DataType::Decimal128(..)) => {
                    DefaultColumnType::FloatingPoint
                }
                _ => DefaultColumnType::Text,
            })
            .collect();
        Ok(DBOutput::Rows {
            types,
            rows: (self.cells)(&batches),
        })
    }

    async fn shutdown(&mut self) {}
}

/// The `.slt` files of `tests/slt/` (`dir`), in name order.
pub fn slt_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

/// Runs `file` with a fresh session from `session` per file, rows shown by `cells`;
/// panics naming the first record that fails.
pub async fn run_slt_file(
    file: &Path,
    cells: Cells,
    session: impl Fn() -> shoal::Result<Session> + Clone,
) {
    let mut runner = sqllogictest::Runner::new(move || {
        let session = session.clone();
        async move {
            Ok(ShoalDb {
                session: session()?,
                cells,
            })
        }
    });
    runner.with_column_validator(|_, _| true);
    runner
        .run_file_async(file)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
}
