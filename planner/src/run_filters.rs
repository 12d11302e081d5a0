//! Dynamic filters that an operator tightens from the rows it has read, and runs of a task
//! that must not share them.
//!
//! Two of DataFusion's operators narrow a filter as rows arrive, and the Parquet scans
//! below them skip the row groups that cannot pass it: an aggregation of `min`/`max`
//! without `GROUP BY` ("below the least value so far") and a top-k sort (`ORDER BY …
//! LIMIT`: "ahead of the k-th row so far"). Such a bound is sound only while the rows that
//! set it reach the answer. Shoal runs a task again when a run failed, was stopped or lost
//! its output; a later run that read the earlier run's bound would skip the very rows that
//! set it (a `min` whose least value opens a row group would lose that row group). So:
//!
//! - a task's later runs run a copy of its stage's plan in which these filters start
//!   afresh and reach the same scans ([`fresh_plan`]; the worker decides when);
//! - a scan reads such a filter only from an operator of its own stage, not of a
//!   recursive query, and a scan under a `LIMIT` reads no dynamic filter at all
//!   ([`sound_scan_filters`]): tasks in one process share plans, so a stage's scan could
//!   otherwise read a bound another stage's task set from rows of an earlier run; a
//!   recursive query's part runs again on one plan; and a limited scan that skips row
//!   groups stops after other rows.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::{FileScanConfigBuilder, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{DynamicFilterPhysicalExpr, lit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::sorts::sort::SortExec;

use crate::build_bounds::reads_expression;
use crate::graph::TaskGraph;
use crate::scan::FileScanContextExec;

/// The filters that `node` tightens from the rows it reads, if it is an aggregation or a
/// top-k sort.
fn tightened_by(node: &Arc<dyn ExecutionPlan>) -> Vec<Arc<dyn PhysicalExpr>> {
    if !node.is::<AggregateExec>() && !node.is::<SortExec>() {
        return Vec::new();
    }
    node.dynamic_expressions_produced()
}

/// The ids of the filters that operators of `plan` tighten from their rows, except
/// within recursive queries when not `recursive`.
fn tightened_in(plan: &Arc<dyn ExecutionPlan>, recursive: bool) -> HashSet<u64> {
    let mut ids = HashSet::new();
    let _ = plan.apply(|node| {
        if !recursive && node.is::<RecursiveQueryExec>() {
            return Ok(TreeNodeRecursion::Jump);
        }
        ids.extend(tightened_by(node).iter().filter_map(|e| e.expression_id()));
        Ok(TreeNodeRecursion::Continue)
    });
    ids
}

/// Whether `a` and `b` are copies of one dynamic filter (one state, over any columns).
/// Their ids alone do not tell: a plan decoded from another process keeps that process's
/// ids, which filters made here may also have.
fn same_filter(a: &Arc<dyn PhysicalExpr>, b: &Arc<dyn PhysicalExpr>) -> bool {
    if a.expression_id().is_none() || a.expression_id() != b.expression_id() {
        return false;
    }
    // Both over the same columns: equal exactly when they share their state.
    let columns: Vec<_> = b.children().into_iter().cloned().collect();
    let (Ok(a), Ok(b)) = (
        Arc::clone(a).with_new_children(columns.clone()),
        Arc::clone(b).with_new_children(columns),
    ) else {
        return false;
    };
    match (
        a.downcast_ref::<DynamicFilterPhysicalExpr>(),
        b.downcast_ref::<DynamicFilterPhysicalExpr>(),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The Parquet scan `plan` is (directly or in Shoal's wrapper).
pub(crate) fn parquet_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&DataSourceExec> {
    let scan = match plan.downcast_ref::<FileScanContextExec>() {
        Some(wrapped) => wrapped.input(),
        None => plan,
    };
    let scan = scan.downcast_ref::<DataSourceExec>()?;
    scan.downcast_to_file_source::<ParquetSource>()?;
    Some(scan)
}

/// Whether a scan of `plan` reads a filter that an operator of `plan` tightens from its
/// rows: whether a second run of one of its tasks needs [`fresh_plan`]. (By id: a filter
/// of another process's numbering taken for one costs only a needless copy.)
pub fn has_run_bounds(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let ids = tightened_in(plan, true);
    let mut found = false;
    if !ids.is_empty() {
        let _ = plan.apply(|node| {
            found |=
                parquet_scan(node).is_some() && reads_expression(node, &|id| ids.contains(&id));
            Ok(if found {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        });
    }
    found
}

/// What replaces a filter of a scan's predicate (given the filter and its id), if
/// anything does.
type Replace<'a> = &'a dyn Fn(&Arc<dyn PhysicalExpr>, u64) -> Result<Option<Arc<dyn PhysicalExpr>>>;

/// `scan` whose predicate has the filters `replace` replaces replaced; `None` when it has
/// none of them.
fn replaced_in_scan(scan: &DataSourceExec, replace: Replace) -> Result<Option<DataSourceExec>> {
    let Some((config, parquet)) = scan.downcast_to_file_source::<ParquetSource>() else {
        return Ok(None);
    };
    let Some(predicate) = FileSource::filter(parquet) else {
        return Ok(None);
    };
    let predicate = predicate.transform_up(|e| {
        let Some(id) = e.expression_id() else {
            return Ok(Transformed::no(e));
        };
        Ok(match replace(&e, id)? {
            Some(new) => Transformed::yes(new),
            None => Transformed::no(e),
        })
    })?;
    if !predicate.transformed {
        return Ok(None);
    }
    let source = Arc::new(parquet.with_predicate(predicate.data));
    let config = FileScanConfigBuilder::from(config.clone())
        .with_source(source)
        .build();
    Ok(Some(scan.clone().with_data_source(Arc::new(config))))
}

/// `node` (a Parquet scan, or Shoal's wrapper of one) with [`replaced_in_scan`]'s
/// predicate; with only fresh state when `fresh` and nothing is replaced. `None` when
/// `node` is no Parquet scan, or nothing is replaced and not `fresh`.
fn replaced(
    node: &Arc<dyn ExecutionPlan>,
    replace: Replace,
    fresh: bool,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(scan) = parquet_scan(node) else {
        return Ok(None);
    };
    let scan: Arc<dyn ExecutionPlan> = match replaced_in_scan(scan, replace)? {
        Some(scan) => Arc::new(scan),
        None if fresh => Arc::new(scan.clone()).reset_state()?,
        None => return Ok(None),
    };
    Ok(Some(rewrapped(node, scan)))
}

/// `scan` in place of the scan of `node` (a scan, or Shoal's wrapper of one).
pub(crate) fn rewrapped(
    node: &Arc<dyn ExecutionPlan>,
    scan: Arc<dyn ExecutionPlan>,
) -> Arc<dyn ExecutionPlan> {
    match node.downcast_ref::<FileScanContextExec>() {
        Some(wrapped) => Arc::new(FileScanContextExec::from_parts(
            scan,
            wrapped.files().to_vec(),
        )),
        None => scan,
    }
}

/// An operator like `node` (an aggregation or a top-k sort tightening a filter) whose
/// filter, and the bound behind it, start afresh.
fn fresh_tightener(node: &Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    match node.downcast_ref::<AggregateExec>() {
        // Built anew: a copy would share the bounds its accumulators reached.
        Some(aggregate) => Ok(Arc::new(
            AggregateExec::try_new(
                *aggregate.mode(),
                aggregate.group_expr().clone(),
                aggregate.aggr_expr().to_vec(),
                aggregate.filter_expr().to_vec(),
                Arc::clone(aggregate.input()),
                aggregate.input_schema(),
            )?
            .with_limit_options(aggregate.limit_options()),
        )),
        // A sort's reset state is a new filter.
        None => Arc::clone(node).reset_state(),
    }
}

/// A tightening operator's filter, its fresh copy and the copy's new filter.
type Fresh = (
    Arc<dyn PhysicalExpr>,
    Arc<dyn ExecutionPlan>,
    Arc<dyn PhysicalExpr>,
);

/// A copy of `plan` with fresh operator state (as DataFusion's `reset_plan_states`
/// makes), in which each filter an aggregation or top-k sort tightens from its rows is a
/// new one, read by the same scans as before: what a later run of a task runs, so that it
/// reads no bound an earlier run set.
pub fn fresh_plan(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    // Each tightening operator's copy is built over its old input and given its new one
    // below.
    let mut fresh: Vec<Fresh> = Vec::new();
    plan.apply(|node| {
        if let Some(old) = tightened_by(node).into_iter().next() {
            let copy = fresh_tightener(node)?;
            if let Some(filter) = copy.dynamic_expressions_produced().into_iter().next() {
                fresh.push((old, copy, filter));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let fresh_of =
        |filter: &Arc<dyn PhysicalExpr>| fresh.iter().find(|(old, _, _)| same_filter(old, filter));
    let renamed = |old: &Arc<dyn PhysicalExpr>, _: u64| {
        let Some((_, _, filter)) = fresh_of(old) else {
            return Ok(None);
        };
        // The scan's copy of the filter is over the scan's columns.
        let children = old.children().into_iter().cloned().collect();
        Arc::clone(filter).with_new_children(children).map(Some)
    };
    Ok(plan
        .transform_up(|node| {
            if let Some(scan) = replaced(&node, &renamed, true)? {
                return Ok(Transformed::yes(scan));
            }
            let children: Vec<_> = node.children().into_iter().cloned().collect();
            let tightened = tightened_by(&node).into_iter().next();
            match tightened.as_ref().and_then(fresh_of) {
                Some((_, copy, _)) => Ok(Transformed::yes(replace_children_if_necessary(
                    Arc::clone(copy),
                    children,
                )?)),
                None => Ok(Transformed::yes(node.reset_state()?)),
            }
        })?
        .data)
}

/// `graph` in which no scan reads a dynamic filter it cannot soundly read; it reads
/// `true` in its place:
/// - a filter that an aggregation or top-k sort of another stage tightens (the producing
///   stage starts after the scan's has finished unless exchanges are pipelined, so this
///   loses little);
/// - one that such an operator of a recursive query tightens: the recursive part runs
///   again and again on one plan, which DataFusion resets but for these filters;
/// - any dynamic filter, in a scan that stops after some rows: it would stop after other
///   rows (DataFusion 55 gives a join's filter to a single-partition scan under a `LIMIT`).
pub fn sound_scan_filters(mut graph: TaskGraph) -> Result<TaskGraph> {
    let all: HashSet<u64> = graph
        .stages
        .iter()
        .flat_map(|s| tightened_in(&s.plan, true))
        .collect();
    for stage in &mut graph.stages {
        let own = tightened_in(&stage.plan, false);
        let foreign = |_: &Arc<dyn PhysicalExpr>, id: u64| {
            Ok((all.contains(&id) && !own.contains(&id)).then(|| lit(true)))
        };
        let any = |e: &Arc<dyn PhysicalExpr>, _: u64| {
            Ok(e.is::<DynamicFilterPhysicalExpr>().then(|| lit(true)))
        };
        stage.plan = Arc::clone(&stage.plan)
            .transform_up(|node| {
                let cut: Replace = if node.fetch().is_some() {
                    &any
                } else {
                    &foreign
                };
                Ok(match replaced(&node, cut, false)? {
                    Some(cut) => Transformed::yes(cut),
                    None => Transformed::no(node),
                })
            })?
            .data;
    }
    Ok(graph)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Int64Type};
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;
    use datafusion::physical_expr::expressions::{DynamicFilterPhysicalExpr, lit};
    use datafusion::physical_plan::aggregates::AggregateExec;
    use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

    use super::{fresh_plan, has_run_bounds, same_filter};

    /// The least `k` of the one row `plan` gives (`None` for NULL).
    async fn least(plan: &Arc<dyn ExecutionPlan>, ctx: &SessionContext) -> Option<i64> {
        let batches: Vec<RecordBatch> = collect(Arc::clone(plan), ctx.task_ctx()).await.unwrap();
        let column = batches[0].column(0).as_primitive::<Int64Type>();
        (!column.is_null(0)).then(|| column.value(0))
    }

    async fn physical(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
        let df = ctx.sql(sql).await.unwrap();
        df.create_physical_plan().await.unwrap()
    }

    /// Sets the filter each aggregation of `plan` tightens to `false`.
    fn close_aggregate_filters(plan: &Arc<dyn ExecutionPlan>) {
        plan.apply(|node| {
            if node.is::<AggregateExec>() {
                for filter in node.dynamic_expressions_produced() {
                    let filter = filter.downcast_ref::<DynamicFilterPhysicalExpr>().unwrap();
                    filter.update(lit(false))?;
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
    }

    #[tokio::test]
    async fn a_second_run_of_a_min_reads_no_bound_the_first_set() {
        // Two row groups, 5..=8 and 3, 4, 9, 10, one per partition. Their least value, 3,
        // opens the second.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let keys = Int64Array::from(vec![5, 6, 7, 8, 3, 4, 9, 10]);
        let batch = RecordBatch::try_from_iter([("k", Arc::new(keys) as _)]).unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(4))
            .build();
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let config = SessionConfig::new()
            .with_target_partitions(2)
            .with_repartition_file_min_size(0);
        let ctx = SessionContext::new_with_config(config);
        let options = ParquetReadOptions::default();
        ctx.register_parquet("t", path.to_str().unwrap(), options)
            .await
            .unwrap();
        let sql = "SELECT min(k) FROM t WHERE k > 0";
        let plan = physical(&ctx, sql).await;
        assert!(
            has_run_bounds(&plan),
            "{}",
            displayable(plan.as_ref()).indent(true)
        );
        assert_eq!(least(&plan, &ctx).await, Some(3));
        // Run again on the same plan, the scan skips both row groups by the bound `k < 3`
        // the first run left: why a task's later run must not share it.
        assert_eq!(least(&plan, &ctx).await, None);
        // A fresh copy starts from no bound, and still tightens its own.
        let fresh = fresh_plan(Arc::clone(&plan)).unwrap();
        assert_eq!(least(&fresh, &ctx).await, Some(3));
        let shown =
            |plan: &Arc<dyn ExecutionPlan>| displayable(plan.as_ref()).indent(true).to_string();
        assert!(
            shown(&fresh).contains("DynamicFilter [ k@0 < 3 ]"),
            "{}",
            shown(&fresh)
        );
        // Its scan reads its own aggregation's filter, no longer the first plan's.
        let fresh = fresh_plan(Arc::clone(&plan)).unwrap();
        close_aggregate_filters(&fresh);
        assert!(
            shown(&fresh).contains("DynamicFilter [ false ]"),
            "{}",
            shown(&fresh)
        );
        assert!(
            shown(&plan).contains("DynamicFilter [ k@0 < 3 ]"),
            "{}",
            shown(&plan)
        );
        // A plan without such a filter needs no copy.
        let count = "SELECT count(*) FROM t WHERE k > 0";
        let plan = physical(&ctx, count).await;
        assert!(!has_run_bounds(&plan));
    }

    #[test]
    fn one_filter_is_told_from_another_of_the_same_id() {
        use datafusion::physical_expr::PhysicalExpr;
        use datafusion::physical_expr::expressions::Column;
        use datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec;
        use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
        use datafusion_proto::physical_plan::to_proto::serialize_physical_expr;
        let schema = datafusion::arrow::datatypes::Schema::new(vec![
            datafusion::arrow::datatypes::Field::new("k", DataType::Int64, true),
        ]);
        let k: Arc<dyn PhysicalExpr> = Arc::new(Column::new("k", 0));
        let filter: Arc<dyn PhysicalExpr> = Arc::new(DynamicFilterPhysicalExpr::new(
            vec![Arc::clone(&k)],
            lit(true),
        ));
        // A copy over other columns is the same filter.
        let copy = Arc::clone(&filter)
            .with_new_children(vec![Arc::new(Column::new("x", 3))])
            .unwrap();
        assert!(same_filter(&filter, &copy) && same_filter(&copy, &filter));
        // Decoded on its own (as from another process), it keeps the id, not the state.
        let codec = DefaultPhysicalExtensionCodec {};
        let proto = serialize_physical_expr(&filter, &codec).unwrap();
        let ctx = SessionContext::new().task_ctx();
        let other = parse_physical_expr(&proto, &ctx, &schema, &codec).unwrap();
        assert_eq!(other.expression_id(), filter.expression_id());
        assert!(!same_filter(&filter, &other) && !same_filter(&other, &copy));
    }
}
