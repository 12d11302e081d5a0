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

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec,
};
use datafusion::physical_plan::limit::GlobalLimitExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};

use crate::graph::{OutputSpec, Stage, StageId, TaskGraph};
use crate::scan::FileScanContextExec;
use crate::shuffle::{ReadMode, ShuffleReadExec, ShuffleWriteExec};

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
            let read: Arc<dyn ExecutionPlan> = Arc::new(ShuffleReadExec::new(
                stage,
                tasks,
                ReadMode::Gather,
                Arc::clone(plan.properties()),
            ));
            // An order-preserving exchange merges sorted inputs; gathered buckets are
            // concatenated instead, so each partition is sorted again locally.
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
        Ok(make_cancellable(plan))
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
