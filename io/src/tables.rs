//! Parquet and CSV files as tables: format detection, registration, directory discovery.

use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;

use crate::Location;

/// The file formats Shoal reads as tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormatKind {
    /// Apache Parquet (`.parquet`).
    Parquet,
    /// Comma-separated values with a header row (`.csv`).
    Csv,
}

impl FileFormatKind {
    /// The format a file name's extension implies, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".parquet") {
            Some(Self::Parquet)
        } else if lower.ends_with(".csv") {
            Some(Self::Csv)
        } else {
            None
        }
    }

    /// The extension (with its dot) that files of this format carry.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Parquet => ".parquet",
            Self::Csv => ".csv",
        }
    }

    /// The DataFusion file format for reading.
    pub fn file_format(self) -> Arc<dyn FileFormat> {
        match self {
            Self::Parquet => Arc::new(ParquetFormat::default()),
            Self::Csv => Arc::new(CsvFormat::default().with_has_header(true)),
        }
    }
}

/// Finds the format of a file, or of the first data file under a directory or prefix.
async fn detect_format(
    state: &dyn Session,
    location: &Location,
    url: &ListingTableUrl,
) -> Result<FileFormatKind> {
    if let Some(kind) = FileFormatKind::from_name(url.as_str()) {
        return Ok(kind);
    }
    let store = state.runtime_env().object_store(url)?;
    let mut listing = store.list(Some(url.prefix()));
    while let Some(meta) = listing
        .try_next()
        .await
        .map_err(|e| DataFusionError::Plan(format!("cannot list '{location}': {e}")))?
    {
        let name = meta.location.filename().unwrap_or_default();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if let Some(kind) = FileFormatKind::from_name(name) {
            return Ok(kind);
        }
    }
    plan_err!("no Parquet or CSV files found at '{location}'")
}

/// Builds a table over a file, directory or object-store prefix, inferring format and
/// schema. Errors name the location.
pub async fn table_provider(
    state: &dyn Session,
    location: &Location,
) -> Result<Arc<dyn TableProvider>> {
    location.must_exist()?;
    let url = location.to_listing_url()?;
    let kind = detect_format(state, location, &url).await?;
    let options = ListingOptions::new(kind.file_format()).with_file_extension(kind.extension());
    let schema = options
        .infer_schema(state, &url)
        .await
        .map_err(|e| e.context(format!("reading the schema of '{location}'")))?;
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// Registers `location` as table `name` in `ctx`, replacing nothing: an existing table of
/// that name is an error.
pub async fn register_table(ctx: &SessionContext, name: &str, location: &str) -> Result<()> {
    let location = Location::parse(location)?;
    let provider = table_provider(&ctx.state(), &location).await?;
    if ctx.table_exist(name)? {
        return plan_err!("table '{name}' is already registered");
    }
    ctx.register_table(name, provider)?;
    Ok(())
}

/// The tables a directory holds: each `*.parquet` or `*.csv` file and each sub-directory,
/// named after its stem, sorted by name.
pub fn tables_in_dir(dir: &Path) -> Result<Vec<(String, String)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        DataFusionError::Plan(format!(
            "cannot read table directory '{}': {e}",
            dir.display()
        ))
    })?;
    let mut tables = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let is_table = path.is_dir() || FileFormatKind::from_name(&name).is_some();
        if !is_table {
            continue;
        }
        let stem = name.split('.').next().unwrap_or_default().to_string();
        tables.push((stem, path.to_string_lossy().into_owned()));
    }
    tables.sort();
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn registers_csv_and_names_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("people.csv");
        std::fs::write(&csv, "id,name\n1,ann\n2,bob\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let ctx = SessionContext::new();
        let found = tables_in_dir(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "people");
        register_table(&ctx, "people", &found[0].1).await.unwrap();
        let rows = ctx.sql("select count(*) from people").await.unwrap();
        let batches = rows.collect().await.unwrap();
        assert_eq!(batches[0].num_rows(), 1);

        let missing = dir.path().join("nope.parquet");
        let err = register_table(&ctx, "nope", missing.to_str().unwrap())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.parquet"), "{err}");
        let err = register_table(&ctx, "people", csv.to_str().unwrap())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("already registered"), "{err}");
    }
}
