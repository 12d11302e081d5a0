//! Rewrites that make a plan's partitions independent of each other, so that each one can
//! run as a task in its own process.
//!
//! A hash or nested-loop join that collects its build (left) side once and emits the
//! left rows that matched, or did not, after *every* probe partition has finished (left,
//! full, semi, anti and mark joins) shares a bitmap between its partitions. Within one
//! process the tasks share the plan and that works; across processes each task would wait
//! for siblings it never hears from. So, for tasks in other processes:
//!
//! - A semi, anti or mark hash join keeps its broadcast build side and is computed in two
//!   steps ([`reduce_semi_joins`]): each probe partition keeps its rows that match some
//!   build row (a right semi join against the same build side, which shares nothing), and
//!   one task joins the build side with those rows, deduplicated. A build row has a match
//!   in the probe side exactly when it has one among the probe rows that match something,
//!   so the answer is the same, and the probe side is never shuffled.
//! - A left or full hash join becomes a partitioned join, both sides hash-partitioned on
//!   the keys; a side already partitioned that way keeps its partitioning, and a build side
//!   gathered into one partition for the broadcast is hashed from its partitions instead.
//! - A null-aware anti join (`NOT IN`), which needs every probe row in one place, and such
//!   a nested-loop join read their probe side as a single partition.
//!
//! A generator scan (`generate_series`) whose columns were all projected away is
//! serialised without its projection by `datafusion-proto`, so the decoded scan would emit
//! a column its schema lacks. It becomes the unprojected scan under an empty projection.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinType, Result};
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
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

/// Whether [`reduce_semi_joins`] computes a collected-left join of this type.
fn reducible(join: &HashJoinExec) -> bool {
    !join.null_aware
        && matches!(
            join.join_type(),
            JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark
        )
}

/// Whether `join` collects its build side once and emits build rows after its `n > 1`
/// probe partitions end.
fn shares_build_rows(join: &HashJoinExec) -> bool {
    *join.partition_mode() == PartitionMode::CollectLeft
        && emits_left_rows_at_end(*join.join_type())
        && join.right().output_partitioning().partition_count() > 1
}

/// `plan` with every join whose partitions depend on each other rewritten as the module's
/// doc says, except the semi, anti and mark hash joins: [`reduce_semi_joins`] rewrites
/// those once their dynamic filters are placed.
pub fn independent_partitions(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            if let Some(join) = node.downcast_ref::<HashJoinExec>()
                && shares_build_rows(join)
                && !reducible(join)
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
                        hash_partitioned(left, left_keys, n)?,
                        hash_partitioned(right, right_keys, n)?,
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

/// `plan`'s rows in `n` partitions hashed on `keys`: as they are when `plan` is already
/// partitioned so, else hashed from `plan`'s partitions (those under a gather into one
/// partition without a limit, which a hash exchange does not need).
fn hash_partitioned(
    plan: Arc<dyn ExecutionPlan>,
    keys: Vec<PhysicalExprRef>,
    n: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    if let Partitioning::Hash(exprs, count) = plan.output_partitioning()
        && *count == n
        && exprs.len() == keys.len()
        && exprs.iter().zip(&keys).all(|(a, b)| a.eq(b))
        && hashed_by_an_exchange(&plan)
    {
        return Ok(plan);
    }
    let input = match plan.downcast_ref::<CoalescePartitionsExec>() {
        Some(gather) if gather.fetch().is_none() => Arc::clone(gather.input()),
        _ => plan,
    };
    Ok(Arc::new(RepartitionExec::try_new(
        input,
        Partitioning::Hash(keys, n),
    )?))
}

/// Whether `plan`'s hash partitioning was made by a hash exchange (and kept by the
/// operators above it), not declared by a scan of files grouped by a partition column,
/// whose groups are not hashed the way an exchange hashes the other side.
fn hashed_by_an_exchange(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut at = Arc::clone(plan);
    loop {
        if at.is::<RepartitionExec>() {
            return true;
        }
        let same = at
            .children()
            .into_iter()
            .find(|c| c.output_partitioning() == at.output_partitioning())
            .cloned();
        match same {
            Some(child) => at = child,
            None => return false,
        }
    }
}

/// `plan` with each semi, anti and mark hash join that shares its build rows between
/// probe partitions computed in two steps, as the module's doc says:
///
/// ```text
/// join(build, probe)  ─►  join(build, gather(distinct(right_semi_join(build, probe))))
/// ```
///
/// Both joins read the same build side (one stage once split); only the right semi join
/// fills the dynamic filter its probe-side scans read.
pub fn reduce_semi_joins(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if !shares_build_rows(join) || !reducible(join) {
                return Ok(Transformed::no(node));
            }
            let build = Arc::clone(join.left());
            let matching = join
                .builder()
                .with_type(JoinType::RightSemi)
                .with_projection(None)
                .with_fetch(None)
                .recompute_properties()
                .reset_state()
                .build_exec()?;
            let distinct = distinct_rows(matching)?;
            let gathered = Arc::new(CoalescePartitionsExec::new(distinct));
            let children = vec![crate::build_bounds::without_build_bounds(&build), gathered];
            let rewritten = join
                .builder()
                .with_new_children(children)?
                .recompute_properties()
                .reset_state()
                .build_exec()?;
            Ok(Transformed::yes(rewritten))
        })?
        .data)
}

/// Each partition of `plan` without repeated rows (a partial aggregation grouping by every
/// column, which may pass rows through when few repeat).
fn distinct_rows(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = plan.schema();
    let groups = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let column: PhysicalExprRef = Arc::new(Column::new(field.name(), i));
            (column, field.name().clone())
        })
        .collect();
    Ok(Arc::new(AggregateExec::try_new(
        AggregateMode::Partial,
        PhysicalGroupBy::new_single(groups),
        Vec::new(),
        Vec::new(),
        plan,
        schema,
    )?))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;
    use crate::split::split_into_stages;

    /// A session with a small table `b` of two partitions (duplicate and NULL keys) and a
    /// larger `p` of four partitions, planned with four partitions per exchange.
    fn session() -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let batch = |k: Vec<Option<i64>>, v: Vec<Option<i64>>| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from(k)), Arc::new(Int64Array::from(v))],
            )
            .unwrap()
        };
        let b = vec![
            vec![batch(
                vec![Some(1), Some(1), Some(2), Some(3)],
                vec![Some(10), Some(10), Some(20), Some(30)],
            )],
            vec![batch(
                vec![None, Some(7), Some(9)],
                vec![Some(40), None, Some(90)],
            )],
        ];
        let p: Vec<Vec<RecordBatch>> = (0..4)
            .map(|part| {
                let keys = (0..2_000).map(|i| Some((i * 4 + part) % 9)).chain([None]);
                let values = (0..2_000).map(|i| Some(i % 50)).chain([Some(1)]);
                vec![batch(keys.collect(), values.collect())]
            })
            .collect();
        let config = SessionConfig::new().with_target_partitions(4);
        let ctx = SessionContext::new_with_config(config);
        let table = |batches| Arc::new(MemTable::try_new(Arc::clone(&schema), batches).unwrap());
        ctx.register_table("b", table(b)).unwrap();
        ctx.register_table("p", table(p)).unwrap();
        ctx
    }

    /// The hash joins of `plan`, as `type mode` strings.
    fn joins(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
        let mut out = Vec::new();
        let _ = plan.apply(|node| {
            if let Some(join) = node.downcast_ref::<HashJoinExec>() {
                out.push(format!("{} {:?}", join.join_type(), join.partition_mode()));
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        out
    }

    async fn sorted_rows(ctx: &SessionContext, plan: Arc<dyn ExecutionPlan>) -> String {
        let batches = collect(plan, ctx.task_ctx()).await.unwrap();
        let mut lines: Vec<String> = pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines.join("\n")
    }

    /// Semi, anti and mark joins against a broadcast build side give the same rows
    /// computed in two steps, and their probe side is read where it is, not shuffled.
    #[tokio::test]
    async fn semi_anti_and_mark_joins_reduced_give_the_same_rows() {
        let ctx = session();
        let cases = [
            (
                "exists (select 1 from p where p.k = b.k and p.v <> b.v)",
                "LeftSemi",
            ),
            (
                "exists (select 1 from p where p.k = b.k and p.v > b.v)",
                "LeftSemi",
            ),
            (
                "not exists (select 1 from p where p.k = b.k and p.v > b.v)",
                "LeftAnti",
            ),
            ("not exists (select 1 from p where p.k = b.k)", "LeftAnti"),
            ("b.k in (select k from p where v < 3)", "LeftSemi"),
            (
                "exists (select 1 from p where p.k = b.k and p.v > b.v) or b.v = 90",
                "LeftMark",
            ),
        ];
        for (condition, join_type) in cases {
            let sql = format!("select b.k, b.v from b where {condition}");
            let planned = crate::test_support::planned(&ctx, &sql).await;
            let before = joins(&planned);
            assert!(
                before.contains(&format!("{join_type} CollectLeft")),
                "{sql}: {before:?}"
            );
            let reduced =
                reduce_semi_joins(independent_partitions(Arc::clone(&planned)).unwrap()).unwrap();
            let after = joins(&reduced);
            assert_eq!(
                after,
                [
                    format!("{join_type} CollectLeft"),
                    "RightSemi CollectLeft".into()
                ],
                "{sql}\n{}",
                displayable(reduced.as_ref()).indent(true)
            );
            assert_eq!(
                sorted_rows(&ctx, Arc::clone(&reduced)).await,
                sorted_rows(&ctx, planned).await,
                "{sql}"
            );
            // Once split, the build side is one stage both joins read, and nothing
            // shuffles the probe side.
            let graph = split_into_stages(reduced).unwrap();
            let build = graph.stages.iter().filter(|s| s.inputs.is_empty()).count();
            assert_eq!(build, 1, "{sql}: one stage reads b\n{graph:?}");
            assert_eq!(graph.consumers(0).count(), 2, "{sql}");
            assert!(
                graph
                    .stages
                    .iter()
                    .all(|s| !matches!(s.output, crate::graph::OutputSpec::Repartition(_))),
                "{sql}"
            );
        }
    }

    /// A left join turned partitioned hashes its build side from the partitions it was
    /// gathered from (no one-task stage between), and keeps a side already hashed on the
    /// keys as it is.
    #[tokio::test]
    async fn a_partitioned_left_join_hashes_each_side_once() {
        let ctx = session();
        let sql = "select b.k, p.v from b left join p on b.k = p.k and p.v > b.v";
        let planned = crate::test_support::planned(&ctx, sql).await;
        assert_eq!(joins(&planned), ["Left CollectLeft"]);
        let independent = independent_partitions(Arc::clone(&planned)).unwrap();
        assert_eq!(joins(&independent), ["Left Partitioned"]);
        assert_eq!(
            sorted_rows(&ctx, Arc::clone(&independent)).await,
            sorted_rows(&ctx, planned).await
        );
        let graph = split_into_stages(independent).unwrap();
        let tasks: Vec<usize> = graph.stages.iter().map(|s| s.tasks).collect();
        assert_eq!(tasks, [2, 4, 4], "b's scan, p's scan, the join");

        // Already hashed on the keys into as many partitions: kept.
        let keys: Vec<PhysicalExprRef> = vec![Arc::new(Column::new("k", 0))];
        let hashed: Arc<dyn ExecutionPlan> = Arc::new(
            RepartitionExec::try_new(
                ctx.table("p")
                    .await
                    .unwrap()
                    .create_physical_plan()
                    .await
                    .unwrap(),
                Partitioning::Hash(keys.clone(), 4),
            )
            .unwrap(),
        );
        let kept = hash_partitioned(Arc::clone(&hashed), keys.clone(), 4).unwrap();
        assert!(Arc::ptr_eq(&kept, &hashed));
        let again = hash_partitioned(hashed, keys, 8).unwrap();
        assert_eq!(again.output_partitioning().partition_count(), 8);
    }
}
