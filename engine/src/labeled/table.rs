//! Labeled arrays as SQL tables ([`CellTable`], in the planner next to its scan
//! operator): a dataset's variables and coordinates, or a Zarr group, registered as one.
//! A Zarr group registers with `--table`, `--tables` or `CREATE EXTERNAL TABLE … STORED
//! AS ZARR`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{Session as CatalogSession, TableProvider, TableProviderFactory};
use datafusion::common::plan_err;
use datafusion::logical_expr::CreateExternalTable;
use shoal_planner::array::CellTable;
use shoal_planner::config::ShoalSettings;

use super::dataset::Dataset;
use super::index::index_column;
use super::zarr::load_zarr;

type DfResult<T> = datafusion::common::Result<T>;

/// A table over a dataset's variables and their dimension coordinates.
pub fn dataset_table(ds: &Dataset, fan_in: usize) -> crate::Result<CellTable> {
    let mut coords = Vec::new();
    let mut vars = Vec::new();
    for (name, var) in ds.vars() {
        for dim in var.dims() {
            if let Some(index) = var.index(dim)
                && !coords.iter().any(|(d, _)| d == dim)
            {
                coords.push((dim.to_string(), index_column(index)));
            }
        }
        let dims = var.dims().iter().map(|d| d.to_string()).collect();
        vars.push((name.clone(), var.data().expr().clone(), dims));
    }
    Ok(CellTable::try_new(vars, &coords, fan_in)?)
}

/// A table over the Zarr group at `path` (CF-decoded, as `Session::open_zarr` reads it).
pub async fn zarr_table(
    env: &datafusion::execution::runtime_env::RuntimeEnv,
    path: &str,
    fan_in: usize,
) -> crate::Result<CellTable> {
    let contents = load_zarr(env, path).await?;
    if contents.vars.is_empty() {
        return Err(crate::Error::input(format!(
            "zarr store {path} has no data variables to read as a table"
        )));
    }
    let vars = contents
        .vars
        .into_iter()
        .map(|(name, values, dims, _)| (name, values, dims))
        .collect();
    let coords: Vec<_> = contents
        .indexes
        .iter()
        .map(|(dim, index)| (dim.clone(), index_column(index)))
        .collect();
    Ok(CellTable::try_new(vars, &coords, fan_in)?)
}

/// `CREATE EXTERNAL TABLE … STORED AS ZARR LOCATION '…'`.
#[derive(Debug, Default)]
pub struct ZarrTableFactory;

#[async_trait]
impl TableProviderFactory for ZarrTableFactory {
    async fn create(
        &self,
        state: &dyn CatalogSession,
        cmd: &CreateExternalTable,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let fan_in = state
            .config_options()
            .extensions
            .get::<shoal_planner::ShoalConfig>()
            .map(|c| c.settings.array.reduce_fan_in)
            .unwrap_or_else(|| ShoalSettings::default().array.reduce_fan_in);
        let [location] = &cmd.locations[..] else {
            return plan_err!(
                "CREATE EXTERNAL TABLE {}: a Zarr table takes one LOCATION, got {}",
                cmd.name,
                cmd.locations.len()
            );
        };
        let table = zarr_table(state.runtime_env(), location, fan_in)
            .await
            .map_err(|e| {
                e.into_datafusion()
                    .context(format!("CREATE EXTERNAL TABLE {}", cmd.name))
            })?;
        Ok(Arc::new(table))
    }
}
