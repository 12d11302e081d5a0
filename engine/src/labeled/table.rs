//! A dataset as a SQL table ([`CellTable`], in the planner next to its scan operator,
//! as is the Zarr group's table).

use shoal_planner::array::{ArrayLimits, CellTable};

use super::dataset::Dataset;
use super::index::index_column;

/// A table over a dataset's variables and their dimension coordinates.
pub fn dataset_table(ds: &Dataset, limits: ArrayLimits) -> crate::Result<CellTable> {
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
    Ok(CellTable::try_new(vars, &coords, limits)?)
}
