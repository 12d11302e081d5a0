//! Dynamic filters of broadcast hash joins, in this process or in each worker process.
//!
//! DataFusion gives a hash join a dynamic filter that its probe side's scans evaluate:
//! once the build side is in, the filter becomes "key within the build keys' bounds", so
//! Parquet row groups and pages outside them are skipped and other rows are dropped as
//! they are read. DataFusion fills the filter once every probe partition of the join has
//! reported, which would wait forever in Shoal, where a stage's partitions run as tasks a
//! few at a time. A join that collects its build side once (`CollectLeft`) does not need
//! that wait: its build side is complete before any probe row is read. So the join's own
//! filter is taken off it and a [`BuildBoundsExec`] over its build side fills the filter
//! when the build input ends. Other joins' filters (a partitioned join's would hold one
//! partition's bounds) are marked complete as "true", which filters nothing.
//!
//! A stage sent to a worker process carries its joins' filters (see
//! [`join_filters_for_encoding`]); the worker that decodes it fills them the same way, and
//! its tasks of the stage share them (each reads the same broadcast build side).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{NullEquality, Result, ScalarValue, Statistics};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::{Accumulator, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, DynamicFilterPhysicalExpr, lit};
use datafusion::physical_expr::{PhysicalExpr, PhysicalExprRef};
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, RecordBatchStream,
};
use futures::{Stream, StreamExt};

/// `plan` with each hash join's dynamic filter filled as the module's doc says.
pub fn fill_join_filters(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    join_filters(plan, true)
}

/// [`fill_join_filters`] for a stage plan just decoded: every join that kept its filter
/// through [`encode_plan`](crate::encode_plan) fills it, as it did where it was planned,
/// even when the scans that read it went to another stage (so the decoded plan has the
/// planned plan's operators, and the metrics its tasks report line up with them).
pub fn fill_decoded_join_filters(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    join_filters(plan, false)
}

/// Fills the filters of the joins that can fill them (and, when `if_read`, whose probe
/// side reads them); takes the others'.
fn join_filters(plan: Arc<dyn ExecutionPlan>, if_read: bool) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            // The join's filter with its type (what `dynamic_expressions_produced`, which
            // replaces this call, gives up).
            #[allow(deprecated)]
            let Some(filter) = join.dynamic_filter_expr().cloned() else {
                return Ok(Transformed::no(node));
            };
            let keys = bounded_keys(join)?;
            let read = !if_read
                || filter
                    .expression_id()
                    .is_some_and(|id| reads_expression(join.right(), &|e| e == id));
            let without = join.builder().reset_state().build_exec()?;
            let Some(keys) = keys.filter(|_| read) else {
                filter.mark_complete();
                return Ok(Transformed::yes(without));
            };
            let build = Arc::new(BuildBoundsExec::new(Arc::clone(join.left()), keys, filter));
            let children = vec![build as Arc<dyn ExecutionPlan>, Arc::clone(join.right())];
            Ok(Transformed::yes(replace_children_if_necessary(
                without, children,
            )?))
        })?
        .data)
}

/// The join's keys (build side, probe side, probe type) if its build keys' bounds make a
/// sound filter of its probe side: a join that collects its build side once and in which
/// NULL keys match nothing, not a null-aware anti join (`NOT IN`, which must see every
/// probe-side NULL), over keys that are neither dictionary-encoded nor floats.
fn bounded_keys(join: &HashJoinExec) -> Result<Option<Vec<Key>>> {
    if *join.partition_mode() != PartitionMode::CollectLeft
        || join.null_equality() != NullEquality::NullEqualsNothing
        || join.null_aware
    {
        return Ok(None);
    }
    let (left_schema, right_schema) = (join.left().schema(), join.right().schema());
    let mut keys = Vec::new();
    for (build, probe) in join.on() {
        let (build_type, probe_type) = (
            build.data_type(&left_schema)?,
            probe.data_type(&right_schema)?,
        );
        // Parquet statistics leave NaN out: float bounds could prune row groups holding
        // a NaN that a build key matches.
        if matches!(build_type, DataType::Dictionary(..))
            || matches!(probe_type, DataType::Dictionary(..))
            || probe_type.is_floating()
        {
            return Ok(None);
        }
        keys.push((Arc::clone(build), Arc::clone(probe), probe_type));
    }
    Ok(Some(keys))
}

/// Whether an expression of `plan` or below it is (or contains) one whose id `wanted`
/// accepts: whether some operator there took a dynamic filter (a join's, in the probe
/// side).
pub(crate) fn reads_expression(
    plan: &Arc<dyn ExecutionPlan>,
    wanted: &dyn Fn(u64) -> bool,
) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        node.apply_expressions(&mut |expr| {
            expr.apply(|e| {
                found |= e.expression_id().is_some_and(wanted);
                Ok(if found {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            })
        })
    });
    found
}

/// `plan` as it is encoded for another process: each [`BuildBoundsExec`] is taken out
/// and its filter put back on its join, which the plan codec carries together with the
/// probe-side scans' copies of it as one filter; the decoding process fills it again
/// ([`fill_decoded_join_filters`]).
pub fn join_filters_for_encoding(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(build) = join.left().downcast_ref::<BuildBoundsExec>() else {
                return Ok(Transformed::no(node));
            };
            let filter = Arc::clone(&build.filter);
            let children = vec![Arc::clone(&build.input), Arc::clone(join.right())];
            let unwrapped = replace_children_if_necessary(Arc::clone(&node), children)?;
            let Some(unwrapped) = unwrapped.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::yes(unwrapped));
            };
            let join = unwrapped
                .builder()
                .build()?
                .with_dynamic_filter_expr(filter)?;
            Ok(Transformed::yes(Arc::new(join) as Arc<dyn ExecutionPlan>))
        })?
        .data)
}

/// `plan` without the [`BuildBoundsExec`] over it, if there is one: a join's build side
/// for a second join that should not fill the first one's filter again.
pub(crate) fn without_build_bounds(plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    match plan.downcast_ref::<BuildBoundsExec>() {
        Some(build) => Arc::clone(&build.input),
        None => Arc::clone(plan),
    }
}

/// A join key: its expression on the build side, on the probe side, and the probe
/// side's type.
type Key = (PhysicalExprRef, PhysicalExprRef, DataType);

/// Passes its input (a hash join's build side) through and, when it ends, sets the
/// join's dynamic filter to the bounds of the build keys (`false` when there were no
/// rows).
#[derive(Debug)]
pub struct BuildBoundsExec {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<Key>,
    filter: Arc<DynamicFilterPhysicalExpr>,
}

impl BuildBoundsExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<Key>,
        filter: Arc<DynamicFilterPhysicalExpr>,
    ) -> Self {
        Self {
            input,
            keys,
            filter,
        }
    }
}

impl DisplayAs for BuildBoundsExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|(l, ..)| l.to_string()).collect();
        write!(f, "BuildBoundsExec: keys=[{}]", keys.join(", "))
    }
}

impl ExecutionPlan for BuildBoundsExec {
    fn name(&self) -> &str {
        "BuildBoundsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for (build, ..) in &self.keys {
            if f(build)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn dynamic_expressions_produced(&self) -> Vec<Arc<dyn PhysicalExpr>> {
        vec![Arc::clone(&self.filter) as Arc<dyn PhysicalExpr>]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    // Every input row passes: the statistics are the input's, so the join above keeps
    // DataFusion's estimate (which key filters across stages are planned from).
    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(Arc::clone(&input_stats[0]))
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children.swap_remove(0);
        Ok(Arc::new(Self::new(
            input,
            self.keys.clone(),
            Arc::clone(&self.filter),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = self.input.schema();
        let bounds = self
            .keys
            .iter()
            .map(|(build, ..)| {
                let data_type = build.data_type(&schema)?;
                Ok((
                    MinAccumulator::try_new(&data_type)?,
                    MaxAccumulator::try_new(&data_type)?,
                ))
            })
            .collect::<Result<Vec<_>>>()
            .inspect_err(|e| tracing::debug!("no join filter: {e}"))
            .ok();
        Ok(Box::pin(BoundsStream {
            input,
            keys: self.keys.clone(),
            bounds,
            rows: 0,
            filter: Some(Arc::clone(&self.filter)),
        }))
    }
}

/// The filter is an optimisation: when the bounds cannot be computed (`bounds` is
/// `None`), it stays "true" and the query goes on.
struct BoundsStream {
    input: SendableRecordBatchStream,
    keys: Vec<Key>,
    bounds: Option<Vec<(MinAccumulator, MaxAccumulator)>>,
    rows: usize,
    /// Taken when the filter is set.
    filter: Option<Arc<DynamicFilterPhysicalExpr>>,
}

impl BoundsStream {
    fn add(&mut self, batch: &RecordBatch) {
        self.rows += batch.num_rows();
        let Some(bounds) = &mut self.bounds else {
            return;
        };
        let mut update = || {
            for ((build, ..), (min, max)) in self.keys.iter().zip(bounds.iter_mut()) {
                let values = build.evaluate(batch)?.into_array(batch.num_rows())?;
                min.update_batch(std::slice::from_ref(&values))?;
                max.update_batch(&[values])?;
            }
            Result::<()>::Ok(())
        };
        if let Err(e) = update() {
            tracing::debug!("no join filter: {e}");
            self.bounds = None;
        }
    }

    /// The filter the build side's keys give: each probe key within its bounds.
    fn predicate(&mut self) -> Result<Arc<dyn PhysicalExpr>> {
        let Some(bounds) = &mut self.bounds else {
            return Ok(lit(true));
        };
        if self.rows == 0 {
            return Ok(lit(false));
        }
        let mut conjuncts: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
        for ((_, probe, probe_type), (min, max)) in self.keys.iter().zip(bounds.iter_mut()) {
            let (low, high) = (min.evaluate()?, max.evaluate()?);
            if low.is_null() || high.is_null() {
                // Only NULL keys, which match nothing.
                return Ok(lit(false));
            }
            let (low, high) = (low.cast_to(probe_type)?, high.cast_to(probe_type)?);
            conjuncts.push(compare(probe, Operator::GtEq, low));
            conjuncts.push(compare(probe, Operator::LtEq, high));
        }
        Ok(conjuncts
            .into_iter()
            .reduce(|a, b| Arc::new(BinaryExpr::new(a, Operator::And, b)))
            .unwrap_or_else(|| lit(true)))
    }

    /// Sets the filter (once); on an error it stays "true".
    fn publish(&mut self) {
        if let Some(filter) = self.filter.take() {
            let updated = self.predicate().and_then(|p| filter.update(p));
            if let Err(e) = updated {
                tracing::debug!("no join filter: {e}");
            }
            filter.mark_complete();
        }
    }
}

fn compare(key: &PhysicalExprRef, op: Operator, value: ScalarValue) -> Arc<dyn PhysicalExpr> {
    Arc::new(BinaryExpr::new(Arc::clone(key), op, lit(value)))
}

impl Stream for BoundsStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.input.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(Some(Ok(batch))) => self.add(batch),
            Poll::Ready(None) => self.publish(),
            _ => {}
        }
        polled
    }
}

impl RecordBatchStream for BoundsStream {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::tree_node::TreeNode;
    use datafusion::physical_plan::StatisticsContext;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// A Parquet file of keys `0..n` in `dir`, registered as table `name`.
    async fn keys(ctx: &SessionContext, dir: &std::path::Path, name: &str, n: i64) {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from_iter_values(0..n))],
        )
        .unwrap();
        let path = dir.join(format!("{name}.parquet"));
        let file = std::fs::File::create(&path).unwrap();
        let mut writer =
            datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        ctx.register_parquet(name, path.to_str().unwrap(), Default::default())
            .await
            .unwrap();
    }

    /// The build side's row count reaches the join through the node that takes its
    /// bounds, so the planner's estimates above (key filters across stages) keep it.
    #[tokio::test]
    async fn taking_a_build_side_s_bounds_keeps_its_statistics() {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
        let dir = tempfile::tempdir().unwrap();
        keys(&ctx, dir.path(), "small", 3).await;
        keys(&ctx, dir.path(), "big", 1000).await;
        let plan = ctx
            .sql("SELECT * FROM small JOIN big ON small.k = big.k")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let filled = fill_join_filters(plan).unwrap();
        let mut bounds = Vec::new();
        filled
            .apply(|node| {
                if node.is::<BuildBoundsExec>() {
                    bounds.push(Arc::clone(node));
                }
                Ok(TreeNodeRecursion::Continue)
            })
            .unwrap();
        assert_eq!(bounds.len(), 1);
        let rows = StatisticsContext::default()
            .compute(bounds[0].as_ref(), &StatisticsArgs::new())
            .unwrap()
            .num_rows;
        assert_eq!(rows, datafusion::common::stats::Precision::Exact(3));
    }
}
