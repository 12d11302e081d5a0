//! Labeled arrays as a SQL table, laid out as xarray's `Dataset.to_dataframe()`: one row
//! per cell of the union of the dimensions, in C order, a column per dimension (its
//! coordinate, or positions) and one per data variable (broadcast over the dimensions it
//! lacks; NaN as NULL). A scan is a [`CellScanExec`] whose tasks read one slab along the
//! first dimension each. Filters on dimension columns are evaluated on the coordinates at
//! planning time and cut the scan to the range of positions that can match, so only the
//! chunks there are read.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array as _, ArrayRef, AsArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::{Session as CatalogSession, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, Result, plan_err};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;

use super::expr::{self, ArrayExpr, AxisSlice};
use super::grid::ChunkGrid;
use super::lower;
use super::lower::{ArrayLimits, stage_program};
use super::table::{CellColumn, CellDim, CellScanExec, CellVar};

/// A dimension of a cell table.
#[derive(Debug, Clone)]
struct TableDim {
    name: String,
    labels: ArrayRef,
    /// Chunk lengths rows are read in along this dimension.
    chunks: Vec<usize>,
}

/// A data variable of a cell table.
#[derive(Debug, Clone)]
struct TableVar {
    name: String,
    values: ArrayExpr,
    /// Position of each of the variable's axes among the table's dimensions.
    axes: Vec<usize>,
}

/// A table over labeled arrays (see the module docs). Holds expressions, not a session,
/// so a session's catalog can hold it.
#[derive(Debug)]
pub struct CellTable {
    dims: Vec<TableDim>,
    vars: Vec<TableVar>,
    schema: SchemaRef,
    limits: ArrayLimits,
}

impl CellTable {
    /// A table over variables `(name, values, dimension names)` with dimension
    /// coordinates `coords` (positions for a dimension without one). Its first dimension is the first of the first variable with
    /// the most dimensions, and rows are read in slabs of that variable's chunks along it.
    pub fn try_new(
        vars: Vec<(String, ArrayExpr, Vec<String>)>,
        coords: &[(String, ArrayRef)],
        limits: ArrayLimits,
    ) -> Result<Self> {
        if vars.is_empty() {
            return plan_err!("a dataset without variables has no cells to read as a table");
        }
        let mut dims: Vec<TableDim> = Vec::new();
        let lead = vars
            .iter()
            .enumerate()
            .max_by_key(|(i, (_, _, d))| (d.len(), usize::MAX - i))
            .map(|(i, _)| i);
        let mut order: Vec<usize> = lead.into_iter().collect();
        order.extend((0..vars.len()).filter(|&i| Some(i) != lead));
        // Dimensions in the order variables name them (the lead variable's first).
        for &i in &order {
            let (name, values, var_dims) = &vars[i];
            let shape = values.grid.shape();
            for (axis, dim) in var_dims.iter().enumerate() {
                let n = shape[axis];
                if let Some(d) = dims.iter().find(|d| &d.name == dim) {
                    if d.labels.len() != n {
                        return plan_err!(
                            "variable '{name}' has dimension '{dim}' of length {n}, another variable has {}",
                            d.labels.len()
                        );
                    }
                    continue;
                }
                let labels = match coords.iter().find(|(d, _)| d == dim) {
                    Some((_, labels)) if labels.len() == n => Arc::clone(labels),
                    _ => Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
                };
                // Rows are read in slabs along the first dimension, so partitions read in
                // order give the cells in C order, as xarray lists them.
                let chunks = if dims.is_empty() {
                    values.grid.axis(axis).to_vec()
                } else {
                    vec![n]
                };
                dims.push(TableDim {
                    name: dim.clone(),
                    labels,
                    chunks,
                });
            }
        }
        let mut fields: Vec<Field> = dims
            .iter()
            .map(|d| Field::new(&d.name, d.labels.data_type().clone(), false))
            .collect();
        let mut table_vars = Vec::with_capacity(vars.len());
        for (name, values, var_dims) in vars {
            if fields.iter().any(|f| f.name() == &name) {
                return plan_err!(
                    "variable '{name}' has the name of a dimension or another variable"
                );
            }
            fields.push(Field::new(&name, values.dtype.arrow_type(), true));
            let axes = var_dims
                .iter()
                .map(|d| dims.iter().position(|x| &x.name == d).expect("listed dim"))
                .collect();
            table_vars.push(TableVar { name, values, axes });
        }
        Ok(Self {
            dims,
            vars: table_vars,
            schema: Arc::new(Schema::new(fields)),
            limits,
        })
    }

    /// The one dimension a filter reads, if it reads exactly one (and gives the same
    /// answer each time it is evaluated, so planning may evaluate it ahead).
    fn filter_dim(&self, filter: &Expr) -> Option<usize> {
        let columns = filter.column_refs();
        if columns.len() != 1 || filter.is_volatile() {
            return None;
        }
        let column = columns.into_iter().next()?;
        self.dims.iter().position(|d| d.name == column.name)
    }

    /// The range of positions along each dimension where every filter on that dimension
    /// can hold.
    fn ranges(&self, state: &dyn CatalogSession, filters: &[Expr]) -> Result<Vec<Range<usize>>> {
        let mut ranges: Vec<Range<usize>> = self.dims.iter().map(|d| 0..d.labels.len()).collect();
        for filter in filters {
            let Some(axis) = self.filter_dim(filter) else {
                continue;
            };
            let dim = &self.dims[axis];
            let schema = Arc::new(Schema::new(vec![Field::new(
                &dim.name,
                dim.labels.data_type().clone(),
                false,
            )]));
            let unqualified = filter
                .clone()
                .transform(|e| {
                    Ok(match e {
                        Expr::Column(c) => {
                            Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
                        }
                        other => Transformed::no(other),
                    })
                })?
                .data;
            let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
            let physical = state.create_physical_expr(unqualified, &df_schema)?;
            let batch = RecordBatch::try_new(schema, vec![Arc::clone(&dim.labels)])?;
            let mask = physical.evaluate(&batch)?.into_array(batch.num_rows())?;
            let Some(mask) = mask.as_boolean_opt() else {
                continue;
            };
            let hit = |i: &usize| mask.is_valid(*i) && mask.value(*i);
            let range = &mut ranges[axis];
            let first = (range.start..range.end).find(hit);
            *range = match first {
                Some(first) => {
                    let last = (first..range.end).rev().find(hit).unwrap_or(first);
                    first..last + 1
                }
                None => 0..0,
            };
        }
        Ok(ranges)
    }

    /// Variable `var` broadcast to the table's dimensions, cut to `ranges` and chunked as
    /// `grid`.
    fn var_on_grid(
        &self,
        var: &TableVar,
        ranges: &[Range<usize>],
        grid: &ChunkGrid,
    ) -> Result<ArrayExpr> {
        // Own axes in table order, then new length-1 axes for the dimensions it lacks.
        let mut own: Vec<(usize, usize)> =
            var.axes.iter().enumerate().map(|(a, &d)| (d, a)).collect();
        own.sort_unstable();
        let perm: Vec<usize> = own.iter().map(|&(_, a)| a).collect();
        let mut x = expr::transpose(&var.values, &perm)?;
        let missing: Vec<usize> = (0..self.dims.len())
            .filter(|d| !var.axes.contains(d))
            .collect();
        x = expr::expand_dims(&x, &missing)?;
        let slices: Vec<AxisSlice> = ranges
            .iter()
            .enumerate()
            .map(|(d, r)| {
                if var.axes.contains(&d) {
                    AxisSlice {
                        start: r.start,
                        len: r.end - r.start,
                        step: 1,
                    }
                } else {
                    AxisSlice {
                        start: 0,
                        len: 1,
                        step: 1,
                    }
                }
            })
            .collect();
        x = expr::slice(&x, &slices)?;
        x = expr::broadcast_to(&x, &grid.shape())?;
        expr::rechunk_to(&x, grid.clone())
    }
}

/// The chunk lengths of `chunks` that fall inside `range`.
fn cut_axis(chunks: &[usize], range: &Range<usize>) -> Vec<usize> {
    let mut out = Vec::new();
    let mut lo = 0;
    for &len in chunks {
        let hi = lo + len;
        let count = hi.min(range.end).saturating_sub(lo.max(range.start));
        if count > 0 {
            out.push(count);
        }
        lo = hi;
    }
    out
}

#[async_trait]
impl TableProvider for CellTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match self.filter_dim(f) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let projected = Arc::new(self.schema.project(&projection)?);
        let ranges = self.ranges(state, filters)?;
        if ranges.iter().any(|r| r.is_empty()) {
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let grid = ChunkGrid::new(
            self.dims
                .iter()
                .zip(&ranges)
                .map(|(d, r)| cut_axis(&d.chunks, r))
                .collect(),
        );
        let dims: Vec<CellDim> = self
            .dims
            .iter()
            .zip(&ranges)
            .map(|(d, r)| CellDim {
                name: d.name.clone(),
                labels: d.labels.slice(r.start, r.end - r.start),
            })
            .collect();
        let mut vars = Vec::new();
        let mut columns = Vec::with_capacity(projection.len());
        for &i in &projection {
            if i < self.dims.len() {
                columns.push(CellColumn::Dim(i));
                continue;
            }
            let var = &self.vars[i - self.dims.len()];
            let values = self.var_on_grid(var, &ranges, &grid)?;
            // One stage reads each slab: no pieces stage in between.
            let limits = ArrayLimits {
                cut_rechunks: false,
                ..self.limits
            };
            let graph = lower(&values, limits)?;
            let program = match &graph.stages[..] {
                [stage] => stage_program(stage).map(Arc::clone),
                _ => None,
            };
            let Some(program) = program else {
                return plan_err!(
                    "variable '{}' needs computing before it can be read as a table (persist it first)",
                    var.name
                );
            };
            columns.push(CellColumn::Var(vars.len()));
            vars.push(CellVar {
                name: var.name.clone(),
                program,
            });
        }
        Ok(Arc::new(CellScanExec::try_new(dims, vars, grid, columns)?))
    }
}
