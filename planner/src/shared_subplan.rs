//! An aggregation that an uncorrelated scalar subquery and the query around it both
//! compute is computed once.
//!
//! TPC-H q15 compares each supplier's revenue with `(SELECT max(total_revenue) FROM
//! revenue)`, where `revenue` is a view over `lineitem`: the planner would scan and
//! aggregate `lineitem` once for the subquery's value and again for the query. Instead
//! the shared aggregation runs first as a job of its own; its rows (at most
//! [`MAX_SHARED_ROWS`]) are kept in memory, and both the subquery and the query read
//! them from there. Both then see the same rows, as one snapshot of the table.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::catalog::MemTable;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, Result};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};

/// The most rows a shared aggregation may give to be kept in memory; one with more is
/// computed where it is read, as if it were not shared.
pub const MAX_SHARED_ROWS: usize = 1 << 20;

/// The qualifier of the in-memory rows inside the plan that replaces a shared
/// aggregation; a projection above gives the columns back their own names.
const MEMORY_TABLE: &str = "shared_aggregation";

/// The largest aggregation in `subquery` that `outer` computes too (outside its own
/// subqueries), if any. It must read a table and be deterministic, and hold no
/// subquery: those are planned where they are.
pub fn shared_aggregation(
    outer: &LogicalPlan,
    subquery: &LogicalPlan,
) -> Result<Option<LogicalPlan>> {
    let mut shared = None;
    subquery.apply(|node| {
        if !matches!(node, LogicalPlan::Aggregate(_)) || !self_contained(node)? {
            return Ok(TreeNodeRecursion::Continue);
        }
        if outer.exists(|other| Ok(other == node))? {
            shared = Some(node.clone());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(shared)
}

/// Whether `plan` reads a table, has no volatile expression and no subquery.
fn self_contained(plan: &LogicalPlan) -> Result<bool> {
    let mut reads_table = false;
    let mut self_contained = true;
    plan.apply(|node| {
        reads_table |= matches!(node, LogicalPlan::TableScan(_));
        if matches!(node, LogicalPlan::Subquery(_)) {
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

/// A plan that gives `batches`, the rows of `shared`, under `shared`'s own schema:
/// a scan of them in memory, and a projection that names each column as `shared` does.
pub fn in_memory(shared: &LogicalPlan, batches: Vec<RecordBatch>) -> Result<LogicalPlan> {
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

/// `plan` with every subtree equal to `shared` replaced by `replacement` (not looking
/// inside subqueries).
pub fn replace(
    plan: LogicalPlan,
    shared: &LogicalPlan,
    replacement: &LogicalPlan,
) -> Result<LogicalPlan> {
    plan.transform_down(|node| match &node == shared {
        true => Ok(Transformed::new(
            replacement.clone(),
            true,
            TreeNodeRecursion::Jump,
        )),
        false => Ok(Transformed::no(node)),
    })
    .map(|t| t.data)
}
