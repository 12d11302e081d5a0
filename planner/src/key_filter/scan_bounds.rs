//! A key filter's bounds, given to the Parquet scans its keys come from: once the build
//! stage's summaries are read, each such scan reads "key within the build keys' bounds"
//! too, so its row groups and pages outside them are skipped rather than read and
//! dropped.
//!
//! The filter is one of DataFusion's dynamic filters, over the key filter's keys, `true`
//! until the key filter sets it (before its input starts). The scans hold copies of it
//! over their own columns, which the plan codec carries as one filter with the key
//! filter's, like a broadcast join's (`build_bounds`). Every task of the probe stage reads
//! every build task's summary, so each sets the same bounds.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::physical_expr::expressions::{Column, DynamicFilterPhysicalExpr, lit};
use datafusion::physical_expr::{PhysicalExpr, PhysicalExprRef};
use datafusion::physical_plan::ExecutionPlan;

use super::through_joins::key_sources;
use crate::run_filters::{parquet_scan, rewrapped};

/// A key filter's input whose scans read its bounds, and the filter they read.
type Bounded = (Arc<dyn ExecutionPlan>, Arc<DynamicFilterPhysicalExpr>);

/// `input` (a key filter's input) whose Parquet scans that every key comes from (see
/// `key_sources`) also read a new dynamic filter over `keys`, and that filter, when
/// there is such a scan.
pub(super) fn scan_bounds(
    input: &Arc<dyn ExecutionPlan>,
    keys: &[PhysicalExprRef],
) -> Result<Option<Bounded>> {
    // Each scan (by address) and the columns there of the keys found in it so far.
    let mut scans: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        let Some(column) = key.downcast_ref::<Column>() else {
            return Ok(None);
        };
        let mut sources = Vec::new();
        key_sources(input, column.index(), &mut sources);
        for (node, at) in sources {
            let columns = scans.entry(address(&node)).or_default();
            if parquet_scan(&node).is_some() && columns.len() == i {
                columns.push(at);
            }
        }
    }
    scans.retain(|_, columns| columns.len() == keys.len());
    if scans.is_empty() {
        return Ok(None);
    }
    let filter = Arc::new(DynamicFilterPhysicalExpr::new(keys.to_vec(), lit(true)));
    let linked = Arc::clone(input).transform_up(|node| {
        let Some(columns) = scans.get(&address(&node)) else {
            return Ok(Transformed::no(node));
        };
        Ok(match with_bounds(&node, columns, &filter)? {
            Some(scan) => Transformed::yes(scan),
            None => Transformed::no(node),
        })
    })?;
    Ok(linked.transformed.then_some((linked.data, filter)))
}

/// A node's address, to find it again in the same plan.
fn address(node: &Arc<dyn ExecutionPlan>) -> usize {
    Arc::as_ptr(node) as *const () as usize
}

/// `node` (a Parquet scan, or Shoal's wrapper of one) whose predicate also reads a copy of
/// `filter` over its output columns `columns`; `None` when the scan takes no filter.
fn with_bounds(
    node: &Arc<dyn ExecutionPlan>,
    columns: &[usize],
    filter: &Arc<DynamicFilterPhysicalExpr>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(scan) = parquet_scan(node) else {
        return Ok(None);
    };
    let schema = node.schema();
    // A scan that stops after some rows would stop after other rows with the bounds; and
    // Parquet statistics leave NaN out, which a float key's bounds could then prune.
    let float = |&i: &usize| schema.field(i).data_type().is_floating();
    if node.fetch().is_some() || columns.iter().any(float) {
        return Ok(None);
    }
    let children: Vec<Arc<dyn PhysicalExpr>> = columns
        .iter()
        .map(|&i| Arc::new(Column::new(schema.field(i).name(), i)) as _)
        .collect();
    let copy = (Arc::clone(filter) as Arc<dyn PhysicalExpr>).with_new_children(children)?;
    // DataFusion maps the copy from the scan's output columns onto its table's, and ANDs
    // it to the predicate (for row group and page pruning only, unless the session
    // pushes filters into the Parquet reader).
    let pushed = scan
        .data_source()
        .try_pushdown_filters(vec![copy], &ConfigOptions::default())?;
    let Some(source) = pushed.updated_node else {
        return Ok(None);
    };
    let scan = Arc::new(scan.clone().with_data_source(source));
    Ok(Some(rewrapped(node, scan)))
}
