//! Rewrites that make a plan's partitions independent of each other, so that each one can
//! run as a task in its own process.
//!
//! A hash or nested-loop join that collects its build (left) side once and emits the
//! left rows that matched, or did not, after *every* probe partition has finished (left,
//! full, semi, anti and mark joins) shares a bitmap between its partitions. Within one
//! process the tasks share the plan and that works; across processes each task would wait
//! for siblings it never hears from. Such a hash join becomes a partitioned join (both
//! sides hash-repartitioned on the keys); a null-aware anti join (`NOT IN`), which needs
//! every probe row in one place, and such a nested-loop join read their probe side as a
//! single partition instead.
//!
//! A generator scan (`generate_series`) whose columns were all projected away is
//! serialised without its projection by `datafusion-proto`, so the decoded scan would emit
//! a column its schema lacks. It becomes the unprojected scan under an empty projection.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinType, Result};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, PartitionMode};
use datafusion::physical_plan::memory::LazyMemoryExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

/// Whether a collected-left join emits build-side rows after all probe partitions end.
fn emits_left_rows_at_end(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Left
            | JoinType::LeftAnti
            | JoinType::LeftSemi
            | JoinType::LeftMark
            | JoinType::Full
    )
}

/// `scan` without its projection: the schema comes from the first batch of a fresh copy
/// of its first generator (`None` when that copy produces nothing).
fn unprojected(scan: &LazyMemoryExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(first) = scan.generators().first() else {
        return Ok(None);
    };
    let probe = first.read().reset_state();
    let Some(batch) = probe.write().generate_next_batch()? else {
        return Ok(None);
    };
    if batch.num_columns() == 0 {
        return Ok(None);
    }
    let generators = scan
        .generators()
        .iter()
        .map(|g| g.read().reset_state())
        .collect();
    Ok(Some(Arc::new(LazyMemoryExec::try_new(
        batch.schema(),
        generators,
    )?)))
}

/// `plan` with every join whose partitions depend on each other rewritten as above.
pub fn independent_partitions(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            if let Some(join) = node.downcast_ref::<HashJoinExec>()
                && *join.partition_mode() == PartitionMode::CollectLeft
                && emits_left_rows_at_end(*join.join_type())
                && join.right().output_partitioning().partition_count() > 1
            {
                let (left, right) = (Arc::clone(join.left()), Arc::clone(join.right()));
                let children = if join.null_aware {
                    vec![left, Arc::new(CoalescePartitionsExec::new(right)) as _]
                } else {
                    let n = right.output_partitioning().partition_count();
                    let (left_keys, right_keys) = join
                        .on()
                        .iter()
                        .map(|(l, r)| (Arc::clone(l), Arc::clone(r)))
                        .unzip();
                    vec![
                        Arc::new(RepartitionExec::try_new(
                            left,
                            Partitioning::Hash(left_keys, n),
                        )?) as _,
                        Arc::new(RepartitionExec::try_new(
                            right,
                            Partitioning::Hash(right_keys, n),
                        )?) as _,
                    ]
                };
                let mode = if join.null_aware {
                    PartitionMode::CollectLeft
                } else {
                    PartitionMode::Partitioned
                };
                let rewritten = join
                    .builder()
                    .with_partition_mode(mode)
                    .with_new_children(children)?
                    .recompute_properties()
                    .reset_state()
                    .build_exec()?;
                return Ok(Transformed::yes(rewritten));
            }
            if let Some(scan) = node.downcast_ref::<LazyMemoryExec>()
                && scan.schema().fields().is_empty()
                && let Some(full) = unprojected(scan)?
            {
                let empty: Vec<ProjectionExpr> = Vec::new();
                return Ok(Transformed::yes(Arc::new(ProjectionExec::try_new(
                    empty, full,
                )?)));
            }
            if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>()
                && emits_left_rows_at_end(*join.join_type())
                && join.right().output_partitioning().partition_count() > 1
            {
                let children = vec![
                    Arc::clone(join.left()),
                    Arc::new(CoalescePartitionsExec::new(Arc::clone(join.right()))) as _,
                ];
                return Ok(Transformed::yes(replace_children_if_necessary(
                    node, children,
                )?));
            }
            Ok(Transformed::no(node))
        })?
        .data)
}
