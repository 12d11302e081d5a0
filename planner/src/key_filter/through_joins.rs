//! Key filters on the stages under a join's probe side.
//!
//! A partitioned join's probe side is not always one stage read whole. In TPC-H q18 it is
//! an inner join of `orders` with `lineitem`, and its build side (the 57 orders of more
//! than 300 units) is an aggregation computed in the join's own stage. A probe row's key
//! is then the key of a row of each stage under it that the inner joins matched on that
//! key, so each such stage, hash-partitioned on the key, may drop the rows whose key the
//! build side lacks: none of them could reach the join's output. The same holds through
//! a final aggregation grouped by the key (TPC-H q17 at SF10, whose build side is a join
//! of `part` with `lineitem` and whose probe side is every part's average quantity): a
//! group whose key cannot match is dropped whole, and so may its rows be. Before the plan
//! is cut into stages, [`isolate_builds`] gives such a build side an exchange of its own
//! (on the keys it is already partitioned by), so that it becomes a stage whose keys are
//! summarised before those stages run; [`probe_stages`] then finds them.

use std::sync::Arc;

use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinType, Result};
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, StatisticsArgs, StatisticsContext,
};

use super::{
    Filterable, bloom_log2, drops_unmatched_probe_rows, gathered_stage, hash_keys, reads_of,
    summarisable, worth_filtering,
};
use crate::graph::TaskGraph;

/// The nodes under `plan` that its output column `column` comes from, each with the
/// column there: followed through projections of columns, filters, inner joins (into
/// both inputs when the join matches on the column) and final aggregations grouped by
/// it, and stopping at any other node.
pub(super) fn key_sources(
    plan: &Arc<dyn ExecutionPlan>,
    column: usize,
    out: &mut Vec<(Arc<dyn ExecutionPlan>, usize)>,
) {
    if plan.fetch().is_some() {
        // A node that stops after some rows keeps rows depending on the others: a row
        // dropped under it could let another through.
        return;
    }
    if plan.is::<CooperativeExec>() {
        return key_sources(plan.children()[0], column, out);
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        if let Some(below) = projection
            .expr()
            .get(column)
            .and_then(|e| e.expr.downcast_ref::<Column>())
        {
            key_sources(projection.input(), below.index(), out);
        }
        return;
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let below = match filter.projection() {
            Some(projection) => projection.get(column).copied(),
            None => Some(column),
        };
        if let Some(below) = below {
            key_sources(filter.input(), below, out);
        }
        return;
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        if *join.join_type() == JoinType::Inner {
            inner_join_sources(join, column, out);
        }
        return;
    }
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        // A final aggregation's group column is the partial aggregation's: a group whose
        // key cannot match has no row of it that can. (A final aggregation of grouping
        // sets groups by its grouping id too, which no key filter's stage hashes on.)
        let groups = aggregate.group_expr();
        if matches!(
            aggregate.mode(),
            AggregateMode::Final | AggregateMode::FinalPartitioned
        ) && aggregate.limit_options().is_none()
            && let Some(below) = groups
                .expr()
                .get(column)
                .and_then(|(e, _)| e.downcast_ref::<Column>())
        {
            key_sources(aggregate.input(), below.index(), out);
        }
        return;
    }
    out.push((Arc::clone(plan), column));
}

/// [`key_sources`] through an inner join.
fn inner_join_sources(
    join: &HashJoinExec,
    column: usize,
    out: &mut Vec<(Arc<dyn ExecutionPlan>, usize)>,
) {
    let joined = match &join.projection {
        Some(projection) => projection.get(column).copied(),
        None => Some(column),
    };
    let Some(joined) = joined else { return };
    let left_width = join.left().schema().fields().len();
    let (side, at) = if joined < left_width {
        (0, joined)
    } else {
        (1, joined - left_width)
    };
    let inputs = [join.left(), join.right()];
    key_sources(inputs[side], at, out);
    // The other input's key it is matched with carries the same value.
    let index = |e: &PhysicalExprRef| e.downcast_ref::<Column>().map(Column::index);
    for (l, r) in join.on() {
        let (this, other) = if side == 0 { (l, r) } else { (r, l) };
        if index(this) == Some(at)
            && let Some(other) = index(other)
        {
            key_sources(inputs[1 - side], other, out);
        }
    }
}

/// The join's build and probe key, if it is a partitioned join on one key that may drop
/// the probe rows no build row matches, the probe key a column.
fn single_key(join: &HashJoinExec) -> Option<(&PhysicalExprRef, usize)> {
    if *join.partition_mode() != PartitionMode::Partitioned
        || !drops_unmatched_probe_rows(join)
        || join.on().len() != 1
    {
        return None;
    }
    let (build, probe) = &join.on()[0];
    let usable = summarisable(
        &build.data_type(&join.left().schema()).ok()?,
        &probe.data_type(&join.right().schema()).ok()?,
    );
    Some((build, probe.downcast_ref::<Column>()?.index())).filter(|_| usable)
}

/// Rows a stage under a probe side is expected to have for a build side that is not
/// expected to be much smaller to be worth waiting for.
const MANY_ROWS: usize = 1 << 20;

/// Whether a stage under the probe side of `probe_rows` rows is worth filtering by a
/// build side of `build_rows`: as for a stage read whole ([`worth_filtering`]), or when
/// it is large and expected to be at least four times the build side. A build side
/// computed in the join's stage is often an aggregation with a `HAVING` filter, whose
/// rows DataFusion estimates as most of its groups (TPC-H q18: 1.2M for 57).
pub(super) fn worth_waiting(build_rows: Precision<usize>, probe_rows: Precision<usize>) -> bool {
    let large = match (build_rows.get_value(), probe_rows.get_value()) {
        (Some(&build), Some(&probe)) => probe >= MANY_ROWS && probe >= 4 * build,
        _ => false,
    };
    large || worth_filtering(build_rows, probe_rows)
}

/// Whether `exprs` is just `key`.
fn is_only(exprs: &[PhysicalExprRef], key: &PhysicalExprRef) -> bool {
    matches!(exprs, [e] if e.eq(key))
}

/// Whether `exprs` is just column `column`.
fn is_column(exprs: &[PhysicalExprRef], column: usize) -> bool {
    matches!(exprs, [e] if e.downcast_ref::<Column>().is_some_and(|c| c.index() == column))
}

/// The rows DataFusion expects `plan` to produce.
fn estimated_rows(
    statistics: &StatisticsContext,
    plan: &Arc<dyn ExecutionPlan>,
) -> Precision<usize> {
    statistics
        .compute(plan.as_ref(), &StatisticsArgs::new())
        .map(|s| s.num_rows)
        .unwrap_or(Precision::Absent)
}

/// `plan` with an exchange over the build side of each partitioned join whose build side
/// is computed in the join's stage and whose probe side comes, through inner joins, from
/// a hash exchange on the probe key large enough for the build keys to be worth
/// filtering it by (see the module's doc). The exchange partitions as the build side
/// already is, so the join's answer is the same.
pub(crate) fn isolate_builds(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let statistics = StatisticsContext::default();
    Ok(plan
        .transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some((build_key, probe_column)) = single_key(join) else {
                return Ok(Transformed::no(node));
            };
            let build = join.left();
            let partitions = match build.output_partitioning() {
                Partitioning::Hash(keys, n) if is_only(keys, build_key) => *n,
                _ => return Ok(Transformed::no(node)),
            };
            if build.is::<RepartitionExec>() {
                return Ok(Transformed::no(node));
            }
            let build_rows = estimated_rows(&statistics, build);
            let mut sources = Vec::new();
            key_sources(join.right(), probe_column, &mut sources);
            let worth = sources.iter().any(|(source, column)| {
                // A probe side that is the exchange itself is filtered as a stage read
                // whole, under that path's own condition.
                let worth = match Arc::ptr_eq(source, join.right()) {
                    true => worth_filtering,
                    false => worth_waiting,
                };
                source.downcast_ref::<RepartitionExec>().is_some_and(|r| {
                    matches!(r.partitioning(), Partitioning::Hash(keys, _) if is_column(keys, *column))
                        && worth(build_rows, estimated_rows(&statistics, source))
                })
            });
            if !worth {
                return Ok(Transformed::no(node));
            }
            let exchange = RepartitionExec::try_new(
                Arc::clone(build),
                Partitioning::Hash(vec![Arc::clone(build_key)], partitions),
            )?;
            let children = vec![Arc::new(exchange) as Arc<dyn ExecutionPlan>, Arc::clone(join.right())];
            Ok(Transformed::yes(replace_children_if_necessary(
                Arc::clone(&node),
                children,
            )?))
        })?
        .data)
}

/// The filterable (build stage, probe stage) pairs of `join` whose probe stages are under
/// its probe side, not read by it whole (see the module's doc).
pub(super) fn probe_stages(graph: &TaskGraph, join: &HashJoinExec) -> Vec<Filterable> {
    let Some((build_key, probe_column)) = single_key(join) else {
        return Vec::new();
    };
    let Some((build, build_rows)) = gathered_stage(join.left()) else {
        return Vec::new();
    };
    if gathered_stage(join.right()).is_some()
        || !hash_keys(graph, build).is_some_and(|(keys, _)| is_only(keys, build_key))
    {
        return Vec::new();
    }
    let mut sources = Vec::new();
    key_sources(join.right(), probe_column, &mut sources);
    let bloom = bloom_log2(build_rows.get_value().copied().unwrap_or(0));
    let stages: Vec<_> = sources
        .into_iter()
        .filter_map(|(source, column)| {
            let (probe, probe_rows) = gathered_stage(&source)?;
            let (keys, _) = hash_keys(graph, probe)?;
            (is_column(keys, column) && build < probe && reads_of(graph, probe) == 1)
                .then(|| (probe, probe_rows, keys.clone()))
        })
        .collect();
    // Once one of them waits for the build side, so do the others: the join waits for it
    // anyway, and what they lose is only running beside it. (TPC-H q18: `lineitem` is
    // worth waiting for, and so the join of `orders` with `customer` drops all but 624 of
    // its 15M rows at SF10 too, instead of the join stage building on them.)
    if !stages
        .iter()
        .any(|(_, rows, _)| worth_waiting(build_rows, *rows))
    {
        return Vec::new();
    }
    stages
        .into_iter()
        .map(|(probe, _, keys)| (build, probe, keys, bloom, false))
        .collect()
}
