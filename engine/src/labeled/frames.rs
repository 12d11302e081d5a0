//! Between labeled arrays and tables, as xarray's `to_dataframe` and `from_dataframe`:
//! one row per cell, a column per dimension coordinate and one for the values; back from
//! a table whose dimension columns index the cells.

use std::sync::Arc;

use datafusion::arrow::array::{Array as _, ArrayRef, AsArray};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use ndarray::{ArrayD, IxDyn};

use super::dataarray::DataArray;
use super::dataset::Dataset;
use super::index::Index;
use super::table::dataset_table;
use crate::dataframe::DataFrame;
use crate::error::{Error, Result};

impl DataArray {
    /// The values as a lazy table: one row per cell in C order, a column per dimension
    /// (its coordinate, or positions) and a column of values named after the array
    /// (`values` when unnamed); NaN cells are NULL. See [`Dataset::to_dataframe`].
    pub async fn to_dataframe(&self) -> Result<DataFrame> {
        let name = self.name().unwrap_or("values").to_string();
        Dataset::new()
            .with_var(&name, self.clone())?
            .to_dataframe()
            .await
    }
}

impl Dataset {
    /// The dataset as a lazy table, as xarray's `to_dataframe`: one row per cell of the
    /// union of the dimensions in C order, a column per dimension and one per variable
    /// (broadcast over the dimensions it lacks; NaN as NULL). Store reads and elementwise
    /// work run as the table is read, slab by slab; variables that need reductions are
    /// computed and kept in memory first.
    pub async fn to_dataframe(&self) -> Result<DataFrame> {
        let Some((_, first)) = self.vars().first() else {
            return Err(Error::input("to_dataframe needs at least one variable"));
        };
        let session = first.data().session().clone();
        let mut ready = Dataset::new().with_attrs(self.attrs().clone());
        for (name, var) in self.vars() {
            let (stages, _) = var.data().graph_size()?;
            let var = if stages > 1 {
                var.persist().await?
            } else {
                var.clone()
            };
            ready = ready.with_var(name, var)?;
        }
        let table = dataset_table(&ready, session.array_limits())?;
        let df = session.context().read_table(Arc::new(table))?;
        Ok(DataFrame::new(session, df))
    }
}

fn to_index(column: &ArrayRef, name: &str) -> Result<(Index, Vec<usize>)> {
    // Unique sorted labels and each row's position among them.
    macro_rules! factor {
        ($values:expr, $wrap:expr) => {{
            let values = $values;
            let mut unique = values.clone();
            unique.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            unique.dedup();
            let at = values
                .iter()
                .map(|v| unique.partition_point(|u| u < v))
                .collect();
            ($wrap(unique), at)
        }};
    }
    if column.null_count() > 0 {
        return Err(Error::input(format!("dimension column '{name}' has nulls")));
    }
    Ok(match column.data_type() {
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let c = cast(column, &DataType::Float64)?;
            factor!(
                c.as_primitive::<Float64Type>().values().to_vec(),
                Index::F64
            )
        }
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            let c = cast(column, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
            let c = cast(&c, &DataType::Int64)?;
            factor!(
                c.as_primitive::<Int64Type>().values().to_vec(),
                Index::DateTime
            )
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let c = cast(column, &DataType::Utf8)?;
            let v: Vec<String> = c
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap_or("").to_string())
                .collect();
            factor!(v, Index::Str)
        }
        t if t.is_integer() => {
            let c = cast(column, &DataType::Int64)?;
            factor!(c.as_primitive::<Int64Type>().values().to_vec(), Index::I64)
        }
        other => {
            return Err(Error::input(format!(
                "dimension column '{name}' has type {other}, which cannot label a dimension"
            )));
        }
    })
}

impl Dataset {
    /// A dataset from a table whose `dims` columns index the cells (xarray's
    /// `from_dataframe`): each dimension gets the column's sorted distinct values as its
    /// coordinate, every other numeric column becomes a `float64` variable over all the
    /// dimensions, and cells no row names are NaN. Two rows naming the same cell are an
    /// error.
    pub async fn from_dataframe(frame: &DataFrame, dims: &[&str]) -> Result<Dataset> {
        let batches = frame.collect().await?;
        let Some(first) = batches.first() else {
            return Err(Error::input("from_dataframe needs at least one row"));
        };
        let schema = first.schema();
        let batch = concat_batches(&schema, &batches)?;
        let mut indexes = Vec::new();
        let mut positions: Vec<Vec<usize>> = Vec::new();
        for dim in dims {
            let column = batch
                .column_by_name(dim)
                .ok_or_else(|| Error::input(format!("no column '{dim}' to use as a dimension")))?;
            let (index, at) = to_index(column, dim)?;
            indexes.push(index);
            positions.push(at);
        }
        let shape: Vec<usize> = indexes.iter().map(Index::len).collect();
        let cells: usize = shape.iter().product();
        let mut cell_of_row = Vec::with_capacity(batch.num_rows());
        let mut seen = vec![false; cells];
        for row in 0..batch.num_rows() {
            let cell = positions
                .iter()
                .zip(&shape)
                .fold(0, |acc, (p, &n)| acc * n + p[row]);
            if std::mem::replace(&mut seen[cell], true) {
                let labels: Vec<String> = indexes
                    .iter()
                    .zip(&positions)
                    .map(|(ix, p)| ix.describe(p[row]))
                    .collect();
                return Err(Error::input(format!(
                    "two rows name the same cell ({}) = ({})",
                    dims.join(", "),
                    labels.join(", ")
                )));
            }
            cell_of_row.push(cell);
        }
        let session = frame.session().clone();
        let chunks: Vec<usize> = shape.clone();
        let mut ds = Dataset::new();
        for field in schema.fields() {
            let name = field.name();
            if dims.contains(&name.as_str()) || !field.data_type().is_numeric() {
                continue;
            }
            let values = cast(
                batch.column_by_name(name).expect("schema column"),
                &DataType::Float64,
            )?;
            let values = values.as_primitive::<Float64Type>();
            let mut dense = vec![f64::NAN; cells];
            for (row, &cell) in cell_of_row.iter().enumerate() {
                if values.is_valid(row) {
                    dense[cell] = values.value(row);
                }
            }
            let dense = ArrayD::from_shape_vec(IxDyn(&shape), dense)
                .map_err(|e| Error::input(format!("from_dataframe: {e}")))?;
            let array = session.from_ndarray(&dense, &chunks)?;
            let mut var = DataArray::new(array, dims)?;
            for (dim, index) in dims.iter().zip(&indexes) {
                var = var.with_coord(dim, dim, index.clone())?;
            }
            ds = ds.with_var(name, var)?;
        }
        Ok(ds)
    }
}
