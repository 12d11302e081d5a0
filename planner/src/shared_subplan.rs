//! An aggregation that an uncorrelated scalar subquery and the query around it both
//! compute is computed once.
//!
//! TPC-H q15 compares each supplier's revenue with `(SELECT max(total_revenue) FROM
//! revenue)`, where `revenue` is a view over `lineitem`: the planner would scan and
//! aggregate `lineitem` once for the subquery's value and again for the query. Instead
//! the shared aggregation runs first as a job of its own; its rows (at most
//! [`MAX_SHARED_ROWS`] and [`MAX_SHARED_BYTES`]) are kept in memory, and both the
//! subquery and the query read them from there. Both then see the same rows, as one
//! snapshot of the table.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::catalog::cte_worktable::CteWorkTable;
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, Result};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};

/// The most rows a shared aggregation may give to be kept in memory; one with more is
/// computed where it is read, as if it were not shared (after the job that found it too
/// large: such an aggregation runs three times instead of twice).
pub const MAX_SHARED_ROWS: usize = 1 << 20;

/// The most bytes of rows a shared aggregation may keep in memory (they travel in the
/// plans of the stages that read them when tasks run in worker processes).
pub const MAX_SHARED_BYTES: usize = 64 << 20;

/// The qualifier of the in-memory rows inside the plan that replaces a shared
/// aggregation; a projection above gives the columns back their own names.
const MEMORY_TABLE: &str = "shared_aggregation";

/// The first aggregation met from the top of `subquery` (the largest) that `outer`
/// computes too (outside its own subqueries; see [`same`]), if any. It must read tables
/// only, be deterministic, and hold no subquery, window or recursive query: those are
/// planned where they are.
pub fn shared_aggregation(
    outer: &LogicalPlan,
    subquery: &LogicalPlan,
) -> Result<Option<LogicalPlan>> {
    let mut shared = None;
    subquery.apply(|node| {
        if matches!(node, LogicalPlan::RecursiveQuery(_)) {
            return Ok(TreeNodeRecursion::Jump);
        }
        if !matches!(node, LogicalPlan::Aggregate(_)) || !self_contained(node)? {
            return Ok(TreeNodeRecursion::Continue);
        }
        if outer.exists(|other| Ok(same(other, node)))? {
            shared = Some(node.clone());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(shared)
}

/// Whether `a` and `b` compute the same rows: equal plans whose scans, met in the same
/// order, read the same tables. DataFusion's equality compares a scan's name and schema,
/// not its table: `range(20)` and `range(1000)`, or two data frames registered under
/// one name in turn, would pass it.
pub fn same(a: &LogicalPlan, b: &LogicalPlan) -> bool {
    if a != b {
        return false;
    }
    let (a, b) = (scanned_tables(a), scanned_tables(b));
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| match (x, y) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            _ => false,
        })
}

/// The table each scan of `plan` reads, in the order met (`None` where the scan's source
/// is not a table).
fn scanned_tables(plan: &LogicalPlan) -> Vec<Option<Arc<dyn TableProvider>>> {
    let mut tables = Vec::new();
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables.push(source_as_provider(&scan.source).ok());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables
}

/// Whether `plan` reads tables, and only tables (not a recursive query's work table),
/// and has no volatile expression, subquery or window.
fn self_contained(plan: &LogicalPlan) -> Result<bool> {
    let mut reads_table = false;
    let mut self_contained = true;
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            reads_table = true;
            self_contained &= source_as_provider(&scan.source)
                .is_ok_and(|table| table.downcast_ref::<CteWorkTable>().is_none());
        }
        if matches!(
            node,
            LogicalPlan::Subquery(_) | LogicalPlan::Window(_) | LogicalPlan::RecursiveQuery(_)
        ) {
            self_contained = false;
        }
        node.apply_expressions(|expr| {
            let unfit = expr.is_volatile()
                || expr.exists(|e| {
                    Ok(matches!(
                        e,
                        Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
                    ))
                })?;
            self_contained &= !unfit;
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(match self_contained {
            true => TreeNodeRecursion::Continue,
            false => TreeNodeRecursion::Stop,
        })
    })?;
    Ok(reads_table && self_contained)
}

/// A plan that gives `batches`, the rows of `shared`, under `shared`'s own schema: a
/// scan of them in memory, and a projection that names each column as `shared` does.
/// `None` when they are more than [`MAX_SHARED_ROWS`] rows or [`MAX_SHARED_BYTES`], or
/// do not fit `shared`'s schema: then each reader computes `shared` itself.
pub fn in_memory(shared: &LogicalPlan, batches: Vec<RecordBatch>) -> Option<LogicalPlan> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
    if rows > MAX_SHARED_ROWS || bytes > MAX_SHARED_BYTES {
        return None;
    }
    memory_plan(shared, batches).ok()
}

fn memory_plan(shared: &LogicalPlan, batches: Vec<RecordBatch>) -> Result<LogicalPlan> {
    let names = shared.schema();
    // Columns are renamed c0, c1, …: two columns of `shared` may share a name under
    // different qualifiers, which one table's columns may not.
    let fields: Vec<Field> = names
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| f.as_ref().clone().with_name(format!("c{i}")))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batches = batches
        .into_iter()
        .map(|b| RecordBatch::try_new(Arc::clone(&schema), b.columns().to_vec()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let table = MemTable::try_new(Arc::clone(&schema), vec![batches])?;
    let columns = names.iter().enumerate().map(|(i, (qualifier, field))| {
        Expr::Column(Column::new(Some(MEMORY_TABLE), format!("c{i}")))
            .alias_qualified(qualifier.cloned(), field.name())
    });
    LogicalPlanBuilder::scan(MEMORY_TABLE, provider_as_source(Arc::new(table)), None)?
        .project(columns)?
        .build()
}

/// `plan` with every subtree that computes what `shared` does ([`same`]) replaced by
/// `replacement` (not looking inside subqueries).
pub fn replace(
    plan: LogicalPlan,
    shared: &LogicalPlan,
    replacement: &LogicalPlan,
) -> Result<LogicalPlan> {
    plan.transform_down(|node| match same(&node, shared) {
        true => Ok(Transformed::new(
            replacement.clone(),
            true,
            TreeNodeRecursion::Jump,
        )),
        false => Ok(Transformed::no(node)),
    })
    .map(|t| t.data)
}
