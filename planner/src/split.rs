//! Stage splitting: cut a physical plan at its exchanges into stages.
//!
//! DataFusion marks every place where data changes partitions with an exchange operator.
//! Each becomes a stage boundary:
//!
//! | exchange in the plan | producing stage writes | consumer reads |
//! |---|---|---|
//! | `RepartitionExec` (hash, round robin, range) | `n` buckets | partition `p` gathers bucket `p` of every task |
//! | `CoalescePartitionsExec` | one bucket | its one partition gathers every task |
//! | `SortPreservingMergeExec` | one bucket | partition `p` is task `p`, merged in order |
//!
//! A broadcast join's build side sits under a `CoalescePartitionsExec`, so it becomes a
//! stage whose single gathered output each probe task reads. Everything between
//! exchanges stays in one fused pipeline, one task per partition.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::stats::Precision;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec,
};
use datafusion::physical_plan::limit::GlobalLimitExec;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, PlanProperties, StatisticsArgs, StatisticsContext,
};

use crate::graph::{OutputSpec, Stage, StageId, TaskGraph};
use crate::scan::FileScanContextExec;
use crate::shuffle::{ReadMode, ShuffleReadExec, ShuffleWriteExec};
use crate::sink::StagedSinkExec;

/// Cuts `plan` into stages and expands them into a [`TaskGraph`]. The last stage computes
/// the plan's output partitions, one task each.
pub fn split_into_stages(plan: Arc<dyn ExecutionPlan>) -> Result<TaskGraph> {
    let mut splitter = Splitter::default();
    let root = splitter.visit(plan)?;
    splitter.add_stage(root, OutputSpec::Single);
    Ok(TaskGraph::from_stages(splitter.stages))
}

#[derive(Default)]
struct Splitter {
    stages: Vec<Stage>,
    /// DataFusion's estimates of the exchanges' rows, computed once per operator.
    statistics: StatisticsContext,
    /// The read each exchange already cut became, by the exchange's address: an
    /// exchange the plan reaches twice (a build side two joins read) is one stage.
    cut: HashMap<usize, Arc<dyn ExecutionPlan>>,
}

impl Splitter {
    /// Makes `plan` a stage and returns its id and task count.
    fn add_stage(&mut self, plan: Arc<dyn ExecutionPlan>, output: OutputSpec) -> (StageId, usize) {
        let id = self.stages.len();
        let tasks = plan.output_partitioning().partition_count();
        let mut inputs = Vec::new();
        collect_reads(&plan, &mut inputs);
        inputs.sort_unstable();
        inputs.dedup();
        let write = Arc::new(ShuffleWriteExec::new(plan, output.clone()));
        self.stages.push(Stage {
            id,
            plan: write,
            inputs,
            output,
            tasks,
        });
        (id, tasks)
    }

    fn visit(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        let address = Arc::as_ptr(&plan) as *const () as usize;
        if let Some(read) = self.cut.get(&address) {
            return Ok(Arc::clone(read));
        }
        let exchange = plan.is::<RepartitionExec>()
            || plan.is::<CoalescePartitionsExec>()
            || plan.is::<SortPreservingMergeExec>();
        let visited = self.visit_once(plan)?;
        if exchange {
            self.cut.insert(address, Arc::clone(&visited));
        }
        Ok(visited)
    }

    fn visit_once(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        if plan.is::<RecursiveQueryExec>() {
            // A recursive query re-runs its recursive term against a work table it
            // refills each round; it stays one unit inside the task that runs it.
            return Ok(plan);
        }
        if plan.children().is_empty() {
            return Ok(FileScanContextExec::wrap(plan));
        }
        let children = plan
            .children()
            .into_iter()
            .map(|c| self.visit(Arc::clone(c)))
            .collect::<Result<Vec<_>>>()?;

        if let Some(repartition) = plan.downcast_ref::<RepartitionExec>() {
            let input = Arc::clone(&children[0]);
            let ordering = repartition
                .preserve_order()
                .then(|| input.output_ordering().cloned())
                .flatten();
            let output = OutputSpec::Repartition(repartition.partitioning().clone());
            let (stage, tasks) = self.add_stage(input, output);
            let mut properties = PlanProperties::clone(plan.properties());
            if ordering.is_some() {
                // Gathered buckets are concatenated, not merged: claim no order, so the
                // sort below really sorts.
                let mut eq = properties.eq_properties.clone();
                eq.clear_orderings();
                properties.set_eq_properties(eq);
            }
            let estimated_rows = self
                .statistics
                .compute(plan.as_ref(), &StatisticsArgs::new())
                .map_or(Precision::Absent, |s| s.num_rows);
            let read: Arc<dyn ExecutionPlan> = Arc::new(
                ShuffleReadExec::new(stage, tasks, ReadMode::Gather, Arc::new(properties))
                    .with_estimated_rows(estimated_rows),
            );
            // An order-preserving exchange merges sorted inputs; here each partition is
            // sorted again locally instead.
            return Ok(match ordering {
                Some(ordering) => {
                    Arc::new(SortExec::new(ordering, read).with_preserve_partitioning(true))
                }
                None => read,
            });
        }

        let single_input =
            children.len() == 1 && children[0].output_partitioning().partition_count() <= 1;

        if plan.is::<CoalescePartitionsExec>() && !single_input {
            let fetch = plan.fetch();
            let (stage, tasks) = self.add_stage(Arc::clone(&children[0]), OutputSpec::Single);
            let read: Arc<dyn ExecutionPlan> = Arc::new(ShuffleReadExec::new(
                stage,
                tasks,
                ReadMode::Gather,
                Arc::clone(plan.properties()),
            ));
            return Ok(match fetch {
                Some(n) => Arc::new(GlobalLimitExec::new(read, 0, Some(n))),
                None => read,
            });
        }

        if plan.is::<SortPreservingMergeExec>() && !single_input {
            let input = Arc::clone(&children[0]);
            let properties = Arc::clone(input.properties());
            let (stage, tasks) = self.add_stage(input, OutputSpec::Single);
            let read: Arc<dyn ExecutionPlan> = Arc::new(ShuffleReadExec::new(
                stage,
                tasks,
                ReadMode::PerTask,
                properties,
            ));
            return replace_children_if_necessary(plan, vec![read]);
        }

        let plan = replace_children_if_necessary(plan, children)?;
        Ok(StagedSinkExec::wrap(make_cancellable(plan)))
    }
}

/// Joins can emit many batches per input batch without polling their inputs, so a
/// task running one would never reach a yield point and could not be cancelled. Their
/// output goes through a `CooperativeExec`, which yields once the task's budget is spent.
fn make_cancellable(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    let multiplies_rows = plan.is::<CrossJoinExec>()
        || plan.is::<NestedLoopJoinExec>()
        || plan.is::<HashJoinExec>()
        || plan.is::<SortMergeJoinExec>();
    if multiplies_rows {
        Arc::new(CooperativeExec::new(plan))
    } else {
        plan
    }
}

/// The stages a fragment reads: its `ShuffleReadExec` leaves.
fn collect_reads(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<StageId>) {
    if let Some(read) = plan.downcast_ref::<ShuffleReadExec>() {
        out.push(read.stage());
        return;
    }
    for child in plan.children() {
        collect_reads(child, out);
    }
}

/// The `ShuffleReadExec` leaves of a fragment, in plan order.
pub fn shuffle_reads(plan: &Arc<dyn ExecutionPlan>) -> Vec<&ShuffleReadExec> {
    fn walk<'a>(plan: &'a Arc<dyn ExecutionPlan>, out: &mut Vec<&'a ShuffleReadExec>) {
        if let Some(read) = plan.downcast_ref::<ShuffleReadExec>() {
            out.push(read);
        }
        for child in plan.children() {
            walk(child, out);
        }
    }
    let mut out = Vec::new();
    walk(plan, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::physical_plan::Partitioning;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// A table of three partitions, queried with `partitions` partitions per exchange.
    async fn graph(sql: &str, partitions: usize) -> TaskGraph {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Int64, false),
        ]));
        let part = |offset: i64| {
            vec![
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(Int64Array::from_iter_values(offset..offset + 10)),
                        Arc::new(Int64Array::from_iter_values((0..10).map(|v| v % 3))),
                    ],
                )
                .unwrap(),
            ]
        };
        let table =
            MemTable::try_new(Arc::clone(&schema), vec![part(0), part(10), part(20)]).unwrap();
        let config = SessionConfig::new().with_target_partitions(partitions);
        let ctx = SessionContext::new_with_config(config);
        ctx.register_table("t", Arc::new(table)).unwrap();
        let plan = crate::test_support::planned(&ctx, sql).await;
        split_into_stages(plan).unwrap()
    }

    #[tokio::test]
    async fn group_by_cuts_at_the_hash_exchange() {
        let g = graph("select b, count(*) from t group by b", 4).await;
        let producer = &g.stages[0];
        assert_eq!(producer.tasks, 3, "one task per scanned partition");
        assert!(producer.inputs.is_empty());
        assert!(
            matches!(
                &producer.output,
                OutputSpec::Repartition(Partitioning::Hash(_, 4))
            ),
            "{}",
            producer.output
        );
        let consumer = g.consumers(producer.id).next().unwrap();
        assert_eq!(consumer.tasks, 4);
        let reads = shuffle_reads(&consumer.plan);
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0].sources(3), vec![(0, 3), (1, 3), (2, 3)]);
    }

    #[tokio::test]
    async fn global_sort_merges_per_task_outputs() {
        let g = graph("select a from t order by a", 4).await;
        assert_eq!(g.stages.len(), 2, "sort per partition, then one merge");
        assert_eq!(g.stages[0].tasks, 3);
        assert!(matches!(g.stages[0].output, OutputSpec::Single));
        let last = g.result_stage();
        assert_eq!(last.tasks, 1);
        assert_eq!(last.inputs, vec![0]);
        let reads = shuffle_reads(&last.plan);
        assert_eq!(reads[0].mode(), ReadMode::PerTask);
        assert_eq!(reads[0].sources(1), vec![(1, 0)]);
        assert_eq!(g.result_stage().tasks, 1);
    }

    #[tokio::test]
    async fn coalesce_gathers_every_task() {
        let g = graph("select sum(a) from t where b > 0", 4).await;
        let last = g.result_stage();
        assert_eq!(last.tasks, 1);
        let reads = shuffle_reads(&last.plan);
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0].mode(), ReadMode::Gather);
        let input = &g.stages[reads[0].stage()];
        assert!(matches!(input.output, OutputSpec::Single));
        assert_eq!(
            reads[0].sources(0),
            (0..input.tasks).map(|t| (t, 0)).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_pipeline_without_exchanges_is_one_stage() {
        let g = graph("select a + 1 from t where b = 2", 3).await;
        assert_eq!(g.stages.len(), 1);
        assert_eq!(g.stages[0].tasks, 3);
        assert_eq!(g.result_stage().tasks, 3);
        assert!(shuffle_reads(&g.stages[0].plan).is_empty());
    }
}
