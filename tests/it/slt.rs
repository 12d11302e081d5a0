//! SQL behaviour in sqllogictest files under `tests/slt/`, run against an embedded
//! session with the TPC-H tables registered.

use std::path::PathBuf;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use shoal::Session;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

use crate::common::{rows, tpch_dir};

struct ShoalDb {
    session: Session,
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
            rows: rows(&batches),
        })
    }

    async fn shutdown(&mut self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let mut runner = sqllogictest::Runner::new(|| async {
            let session = Session::builder().workers(2).partitions(3).build()?;
            session.register_dir(tpch_dir().to_str().unwrap())?;
            Ok(ShoalDb { session })
        });
        runner.with_column_validator(|_, _| true);
        runner
            .run_file_async(&file)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}
