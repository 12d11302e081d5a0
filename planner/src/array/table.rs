//! `CellScanExec`: labeled arrays read as a table, one row per cell, as xarray's
//! `Dataset.to_dataframe()` lays them out.
//!
//! ```text
//!  dims (time, lat, lon) with labels ─┐
//!  one ChunkProgram per variable  ────┼─► partition p = chunk p of the row grid:
//!  (broadcast to the dims, cut to the │     evaluate each variable's chunk p,
//!   selected region, rechunked to the │     emit its cells in C order, batch by batch:
//!   row grid)                         ┘     label columns by position, values as they lie
//! ```
//!
//! Every variable's program has the row grid as its root grid, so chunk `p` of each covers
//! the same cells. NaN values come out as NULL, so SQL aggregates skip them as xarray's
//! reductions skip NaN.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array as _, ArrayRef, AsArray, PrimitiveArray, RecordBatch, RecordBatchOptions, UInt64Array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float32Type, Float64Type, Schema, SchemaRef,
};
use datafusion::common::{Result, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::exec::{run_task, to_user_type};
use super::grid::{ChunkGrid, region_shape};
use super::program::ChunkProgram;

/// A dimension of the table: its name and one label per position of the selected range.
#[derive(Debug, Clone)]
pub struct CellDim {
    /// Column name.
    pub name: String,
    /// Labels, one per position along the dimension (coordinates, or positions).
    pub labels: ArrayRef,
}

/// A data variable: its column name and the program computing its chunks on the row grid.
#[derive(Debug, Clone)]
pub struct CellVar {
    /// Column name.
    pub name: String,
    /// One task per chunk of the row grid.
    pub program: Arc<ChunkProgram>,
}

/// What an output column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CellColumn {
    /// The labels of dimension `i`.
    Dim(usize),
    /// The values of variable `i`.
    Var(usize),
}

/// Reads the cells of labeled arrays as rows: partition `p` is chunk `p` of the row grid.
#[derive(Debug)]
pub struct CellScanExec {
    dims: Vec<CellDim>,
    vars: Vec<CellVar>,
    grid: ChunkGrid,
    columns: Vec<CellColumn>,
    schema: SchemaRef,
    metrics: ExecutionPlanMetricsSet,
    properties: Arc<PlanProperties>,
}

impl CellScanExec {
    /// A scan of `grid`'s cells (its axes are `dims`) emitting `columns` in order. Every
    /// variable's program must compute chunks of exactly `grid`.
    pub fn try_new(
        dims: Vec<CellDim>,
        vars: Vec<CellVar>,
        grid: ChunkGrid,
        columns: Vec<CellColumn>,
    ) -> Result<Self> {
        if dims.len() != grid.ndim() {
            return internal_err!("{} dimensions for a {}-d row grid", dims.len(), grid.ndim());
        }
        for (dim, n) in dims.iter().zip(grid.shape()) {
            if dim.labels.len() != n {
                return internal_err!(
                    "dimension '{}' has {} labels for length {n}",
                    dim.name,
                    dim.labels.len()
                );
            }
        }
        for var in &vars {
            let root = &var.program.nodes[var.program.root()];
            if root.grid != grid {
                return internal_err!("variable '{}' is not chunked as the row grid", var.name);
            }
        }
        let mut fields = Vec::with_capacity(columns.len());
        for column in &columns {
            fields.push(match *column {
                CellColumn::Dim(i) => match dims.get(i) {
                    Some(d) => Field::new(&d.name, d.labels.data_type().clone(), false),
                    None => return internal_err!("no dimension {i}"),
                },
                CellColumn::Var(i) => match vars.get(i) {
                    Some(v) => {
                        let dtype = v.program.nodes[v.program.root()].dtype;
                        Field::new(&v.name, dtype.arrow_type(), true)
                    }
                    None => return internal_err!("no variable {i}"),
                },
            });
        }
        let schema = Arc::new(Schema::new(fields));
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(grid.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            dims,
            vars,
            grid,
            columns,
            schema,
            metrics: ExecutionPlanMetricsSet::new(),
            properties: Arc::new(properties),
        })
    }

    /// The dimensions.
    pub fn dims(&self) -> &[CellDim] {
        &self.dims
    }

    /// The variables.
    pub fn vars(&self) -> &[CellVar] {
        &self.vars
    }

    /// The row grid.
    pub fn grid(&self) -> &ChunkGrid {
        &self.grid
    }

    /// The output columns, in order.
    pub fn columns(&self) -> &[CellColumn] {
        &self.columns
    }
}

impl DisplayAs for CellScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let dims: Vec<String> = self
            .dims
            .iter()
            .zip(self.grid.shape())
            .map(|(d, n)| format!("{}: {n}", d.name))
            .collect();
        let vars: Vec<&str> = self.vars.iter().map(|v| v.name.as_str()).collect();
        write!(
            f,
            "CellScanExec: dims=({}) vars=[{}] chunks={}",
            dims.join(", "),
            vars.join(", "),
            self.grid.len()
        )
    }
}

/// NaN cells as NULL.
fn nan_to_null<T: ArrowPrimitiveType>(values: &ArrayRef) -> ArrayRef
where
    T::Native: num_traits::Float,
{
    let values = values.as_primitive::<T>();
    let valid: NullBuffer = values
        .values()
        .iter()
        .map(|v| !num_traits::Float::is_nan(*v))
        .collect();
    if valid.null_count() == 0 {
        return Arc::new(values.clone());
    }
    Arc::new(PrimitiveArray::<T>::new(
        values.values().clone(),
        Some(valid),
    ))
}

/// Builds the row batches of one partition.
#[derive(Debug, Clone)]
struct RowMaker {
    labels: Vec<ArrayRef>,
    columns: Vec<CellColumn>,
    schema: SchemaRef,
    region: super::grid::Region,
    shape: Vec<usize>,
}

impl RowMaker {
    /// Rows `start..start + len` of the partition's cells (C order); `values` holds the
    /// computed values of each `Var` column.
    fn batch(&self, values: &[Option<ArrayRef>], start: usize, len: usize) -> Result<RecordBatch> {
        let mut arrays = Vec::with_capacity(self.columns.len());
        for (column, value) in self.columns.iter().zip(values) {
            arrays.push(match (column, value) {
                (CellColumn::Var(_), Some(v)) => v.slice(start, len),
                (CellColumn::Dim(axis), _) => {
                    let axis = *axis;
                    let inner: usize = self.shape[axis + 1..].iter().product::<usize>().max(1);
                    let n = self.shape[axis].max(1);
                    let first = self.region[axis].start;
                    let positions = UInt64Array::from_iter_values(
                        (start..start + len).map(|c| (first + (c / inner) % n) as u64),
                    );
                    take(self.labels[axis].as_ref(), &positions, None)?
                }
                (CellColumn::Var(v), None) => {
                    return internal_err!("variable {v} was not computed");
                }
            });
        }
        let options = RecordBatchOptions::new().with_row_count(Some(len));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            arrays,
            &options,
        )?)
    }
}

impl ExecutionPlan for CellScanExec {
    leaf_plan_methods!("CellScanExec");

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition >= self.grid.len() {
            return internal_err!("CellScanExec has no partition {partition}");
        }
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        // Only the variables some column shows are computed.
        let mut tasks = Vec::new();
        for (i, var) in self.vars.iter().enumerate() {
            if self.columns.contains(&CellColumn::Var(i)) {
                let task = run_task(
                    Arc::clone(&var.program),
                    partition,
                    &context,
                    baseline.clone(),
                )?;
                tasks.push((i, task));
            }
        }
        let region = self.grid.region(partition);
        let shape = region_shape(&region);
        let cells: usize = shape.iter().product();
        let batch_size = context.session_config().batch_size().max(1);
        let labels: Vec<ArrayRef> = self.dims.iter().map(|d| Arc::clone(&d.labels)).collect();
        let columns = self.columns.clone();
        let schema = Arc::clone(&self.schema);
        let wanted = columns.clone();
        let values = async move {
            let mut values: Vec<Option<ArrayRef>> = vec![None; wanted.len()];
            let mut computed = Vec::with_capacity(tasks.len());
            for (i, task) in tasks {
                let out = task.await?;
                let Some((_, chunk)) = out.into_iter().next() else {
                    return internal_err!("variable {i} computed no chunk");
                };
                let user = to_user_type(&chunk)?;
                let user = match user.data_type() {
                    DataType::Float64 => nan_to_null::<Float64Type>(&user),
                    DataType::Float32 => nan_to_null::<Float32Type>(&user),
                    _ => user,
                };
                computed.push((i, user));
            }
            for (slot, column) in values.iter_mut().zip(&wanted) {
                if let CellColumn::Var(v) = column {
                    *slot = computed
                        .iter()
                        .find(|(i, _)| i == v)
                        .map(|(_, a)| Arc::clone(a));
                }
            }
            Ok::<_, datafusion::common::DataFusionError>(values)
        };
        let rows = RowMaker {
            labels,
            columns,
            schema,
            region,
            shape,
        };
        let stream =
            futures::stream::once(values).flat_map(move |values| match values {
                Err(e) => futures::stream::iter(vec![Err(e)]).left_stream(),
                Ok(values) => {
                    let rows = rows.clone();
                    futures::stream::iter((0..cells).step_by(batch_size).map(move |start| {
                        rows.batch(&values, start, batch_size.min(cells - start))
                    }))
                    .right_stream()
                }
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
