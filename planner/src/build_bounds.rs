//! Dynamic filters of broadcast hash joins for plans whose tasks share this process.
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

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{NullEquality, Result, ScalarValue};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::{Accumulator, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, DynamicFilterPhysicalExpr, lit};
use datafusion::physical_expr::{PhysicalExpr, PhysicalExprRef};
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, RecordBatchStream,
};
use futures::{Stream, StreamExt};

/// `plan` with each hash join's dynamic filter filled as the module's doc says.
pub fn fill_join_filters(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
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
            let without = join.builder().reset_state().build_exec()?;
            if *join.partition_mode() != PartitionMode::CollectLeft
                || join.null_equality() != NullEquality::NullEqualsNothing
            {
                filter.mark_complete();
                return Ok(Transformed::yes(without));
            }
            let right_schema = join.right().schema();
            let keys = join
                .on()
                .iter()
                .map(|(l, r)| Ok((Arc::clone(l), Arc::clone(r), r.data_type(&right_schema)?)))
                .collect::<Result<Vec<_>>>()?;
            let build = Arc::new(BuildBoundsExec::new(Arc::clone(join.left()), keys, filter));
            let children = vec![build as Arc<dyn ExecutionPlan>, Arc::clone(join.right())];
            Ok(Transformed::yes(replace_children_if_necessary(
                without, children,
            )?))
        })?
        .data)
}

/// `plan` without its [`BuildBoundsExec`]s (each replaced by its input).
pub fn without_build_bounds(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| match node.downcast_ref::<BuildBoundsExec>() {
            Some(build) => Ok(Transformed::yes(Arc::clone(&build.input))),
            None => Ok(Transformed::no(node)),
        })?
        .data)
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
        let mut bounds = Vec::with_capacity(self.keys.len());
        for (build, ..) in &self.keys {
            let data_type = build.data_type(&self.input.schema())?;
            bounds.push((
                MinAccumulator::try_new(&data_type)?,
                MaxAccumulator::try_new(&data_type)?,
            ));
        }
        Ok(Box::pin(BoundsStream {
            input,
            keys: self.keys.clone(),
            bounds,
            rows: 0,
            filter: Some(Arc::clone(&self.filter)),
        }))
    }
}

struct BoundsStream {
    input: SendableRecordBatchStream,
    keys: Vec<Key>,
    bounds: Vec<(MinAccumulator, MaxAccumulator)>,
    rows: usize,
    /// Taken when the filter is set.
    filter: Option<Arc<DynamicFilterPhysicalExpr>>,
}

impl BoundsStream {
    fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows();
        for ((build, ..), (min, max)) in self.keys.iter().zip(&mut self.bounds) {
            let values = build.evaluate(batch)?.into_array(batch.num_rows())?;
            min.update_batch(std::slice::from_ref(&values))?;
            max.update_batch(&[values])?;
        }
        Ok(())
    }

    /// The filter the build side's keys give: each probe key within its bounds.
    fn predicate(&mut self) -> Result<Arc<dyn PhysicalExpr>> {
        if self.rows == 0 {
            return Ok(lit(false));
        }
        let mut conjuncts: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
        for ((_, probe, probe_type), (min, max)) in self.keys.iter().zip(&mut self.bounds) {
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

    fn publish(&mut self) -> Result<()> {
        if let Some(filter) = self.filter.take() {
            filter.update(self.predicate()?)?;
            filter.mark_complete();
        }
        Ok(())
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
            Poll::Ready(Some(Ok(batch))) => {
                if let Err(e) = self.add(batch) {
                    return Poll::Ready(Some(Err(e)));
                }
            }
            Poll::Ready(None) => {
                if let Err(e) = self.publish() {
                    return Poll::Ready(Some(Err(e)));
                }
            }
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
