//! TPC-H: data generation with the `tpchgen` crates and the 22 benchmark queries.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

use crate::error::{Error, Result};

/// The eight TPC-H tables, largest first.
pub const TABLES: [&str; 8] = [
    "lineitem", "orders", "partsupp", "part", "customer", "supplier", "nation", "region",
];

/// The 22 TPC-H queries as `(name, sql)`, `q01` … `q22`.
pub const QUERIES: [(&str, &str); 22] = [
    ("q01", include_str!("../../benches/tpch/queries/q01.sql")),
    ("q02", include_str!("../../benches/tpch/queries/q02.sql")),
    ("q03", include_str!("../../benches/tpch/queries/q03.sql")),
    ("q04", include_str!("../../benches/tpch/queries/q04.sql")),
    ("q05", include_str!("../../benches/tpch/queries/q05.sql")),
    ("q06", include_str!("../../benches/tpch/queries/q06.sql")),
    ("q07", include_str!("../../benches/tpch/queries/q07.sql")),
    ("q08", include_str!("../../benches/tpch/queries/q08.sql")),
    ("q09", include_str!("../../benches/tpch/queries/q09.sql")),
    ("q10", include_str!("../../benches/tpch/queries/q10.sql")),
    ("q11", include_str!("../../benches/tpch/queries/q11.sql")),
    ("q12", include_str!("../../benches/tpch/queries/q12.sql")),
    ("q13", include_str!("../../benches/tpch/queries/q13.sql")),
    ("q14", include_str!("../../benches/tpch/queries/q14.sql")),
    ("q15", include_str!("../../benches/tpch/queries/q15.sql")),
    ("q16", include_str!("../../benches/tpch/queries/q16.sql")),
    ("q17", include_str!("../../benches/tpch/queries/q17.sql")),
    ("q18", include_str!("../../benches/tpch/queries/q18.sql")),
    ("q19", include_str!("../../benches/tpch/queries/q19.sql")),
    ("q20", include_str!("../../benches/tpch/queries/q20.sql")),
    ("q21", include_str!("../../benches/tpch/queries/q21.sql")),
    ("q22", include_str!("../../benches/tpch/queries/q22.sql")),
];

const BATCH_ROWS: usize = 8192;
const ROW_GROUP_ROWS: usize = 131_072;

fn batches(
    table: &str,
    sf: f64,
) -> (
    SchemaRef,
    Box<
        dyn Iterator<Item = std::result::Result<RecordBatch, datafusion::arrow::error::ArrowError>>
            + Send,
    >,
) {
    fn boxed<
        I: Iterator<Item = std::result::Result<RecordBatch, datafusion::arrow::error::ArrowError>>
            + Send
            + 'static,
    >(
        it: I,
    ) -> Box<
        dyn Iterator<Item = std::result::Result<RecordBatch, datafusion::arrow::error::ArrowError>>
            + Send,
    > {
        Box::new(it)
    }
    match table {
        "lineitem" => (
            LineItemArrow::schema_ref(),
            boxed(LineItemArrow::new(LineItemGenerator::new(sf, 1, 1)).with_batch_size(BATCH_ROWS)),
        ),
        "orders" => (
            OrderArrow::schema_ref(),
            boxed(OrderArrow::new(OrderGenerator::new(sf, 1, 1)).with_batch_size(BATCH_ROWS)),
        ),
        "partsupp" => (
            PartSuppArrow::schema_ref(),
            boxed(PartSuppArrow::new(PartSuppGenerator::new(sf, 1, 1)).with_batch_size(BATCH_ROWS)),
        ),
        "part" => (
            PartArrow::schema_ref(),
            boxed(PartArrow::new(PartGenerator::new(sf, 1, 1)).with_batch_size(BATCH_ROWS)),
        ),
        "customer" => (
            CustomerArrow::schema_ref(),
            boxed(CustomerArrow::new(CustomerGenerator::new(sf, 1, 1)).with_batch_size(BATCH_ROWS)),
        ),
        "supplier" => (
            SupplierArrow::schema_ref(),
            boxed(SupplierArrow::new(SupplierGenerator::new(sf, 1, 1)).with_batch_size(BATCH_ROWS)),
        ),
        "nation" => (
            NationArrow::schema_ref(),
            boxed(NationArrow::new(NationGenerator::new(sf, 1, 1)).with_batch_size(BATCH_ROWS)),
        ),
        _ => (
            RegionArrow::schema_ref(),
            boxed(RegionArrow::new(RegionGenerator::new(sf, 1, 1)).with_batch_size(BATCH_ROWS)),
        ),
    }
}

/// Writes `table` at scale factor `sf` to `dir/<table>.parquet` through a temporary
/// file renamed into place, so an interrupted run never leaves a partial table.
pub fn write_table(table: &str, sf: f64, dir: &Path) -> Result<PathBuf> {
    let target = dir.join(format!("{table}.parquet"));
    let temp = dir.join(format!(".{table}.parquet.partial"));
    let (schema, rows) = batches(table, sf);
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).map_err(|e| Error::input(e.to_string()))?,
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let write = || -> Result<()> {
        let mut writer =
            ArrowWriter::try_new(File::create(&temp)?, Arc::clone(&schema), Some(props))
                .map_err(datafusion::common::DataFusionError::from)?;
        for batch in rows {
            writer
                .write(&batch?)
                .map_err(datafusion::common::DataFusionError::from)?;
        }
        writer
            .close()
            .map_err(datafusion::common::DataFusionError::from)?;
        std::fs::rename(&temp, &target)?;
        Ok(())
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })?;
    Ok(target)
}

/// Generates all eight tables into `dir` (created if missing), two at a time. Refuses
/// to replace existing table files unless `overwrite`. Calls `done(table)` as each ends.
pub fn generate(sf: f64, dir: &Path, overwrite: bool, done: &(dyn Fn(&str) + Sync)) -> Result<()> {
    if sf.is_nan() || sf <= 0.0 {
        return Err(Error::input(format!(
            "scale factor must be positive, got {sf}"
        )));
    }
    std::fs::create_dir_all(dir)?;
    if !overwrite {
        for table in TABLES {
            let path = dir.join(format!("{table}.parquet"));
            if path.exists() {
                return Err(Error::input(format!(
                    "{} already exists; pass --overwrite to replace it",
                    path.display()
                )));
            }
        }
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(table) = TABLES.get(i) else {
                            return Ok(());
                        };
                        write_table(table, sf, dir)?;
                        done(table);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::input("generator thread panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// True when `dir` holds all eight tables.
pub fn is_generated(dir: &Path) -> bool {
    TABLES
        .iter()
        .all(|t| dir.join(format!("{t}.parquet")).exists())
}
