//! Key filters below a partial aggregation.
//!
//! TPC-H q17 joins a few hundred parts with the average quantity of *every* part's line
//! items: the join's probe side is the final aggregation of a stage that aggregates all
//! of `lineitem` by part first. When the join keys are the aggregation's group keys, a
//! group whose key the build side lacks is dropped by the join anyway, and so may be
//! every input row of it: the probe stage filters its rows by the build stage's key
//! summaries before its partial aggregation, not after.

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::stats::Precision;
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::projection::ProjectionExec;

use super::{
    Filterable, bloom_log2, gathered_stage, hash_keys, reads_of, summarisable, through_joins,
};

use crate::graph::TaskGraph;
use crate::shuffle::ShuffleWriteExec;

/// Rows an aggregation's input is expected to have for a build side of unknown size to be
/// worth waiting for.
const MANY_ROWS: usize = 1 << 19;

/// Whether a stage's plan writes the output of a semi join (through projections).
fn semi_join_output(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut node = plan;
    loop {
        if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            return matches!(join.join_type(), JoinType::LeftSemi | JoinType::RightSemi);
        }
        match node.children().as_slice() {
            [only]
                if node.is::<ShuffleWriteExec>()
                    || node.is::<CooperativeExec>()
                    || node.is::<ProjectionExec>() =>
            {
                node = only
            }
            _ => return false,
        }
    }
}

/// The partial aggregation a probe stage's plan is, directly under its writer.
pub(super) fn partial_aggregate(plan: &Arc<dyn ExecutionPlan>) -> Option<&AggregateExec> {
    let write = plan.downcast_ref::<ShuffleWriteExec>()?;
    let partial = write.input().downcast_ref::<AggregateExec>()?;
    (*partial.mode() == AggregateMode::Partial && partial.group_expr().is_single())
        .then_some(partial)
}

/// `join` (a partitioned join that drops unmatched probe rows) as a filterable join whose
/// probe stage filters below its partial aggregation, if it is one: its probe side is a
/// final aggregation (maybe under a projection of columns), grouped by the join's probe
/// keys, of a stage that aggregates partially and that nothing else reads.
pub(super) fn through_partial_aggregate(
    graph: &TaskGraph,
    join: &HashJoinExec,
) -> Option<Filterable> {
    let (build, build_rows) = gathered_stage(join.left())?;
    // The probe keys as columns of the final aggregation, through a projection of columns.
    let (last, columns) = match join.right().downcast_ref::<ProjectionExec>() {
        Some(projection) => {
            let columns = join
                .on()
                .iter()
                .map(|(_, r)| {
                    let at = r.downcast_ref::<Column>()?.index();
                    let below = projection.expr().get(at)?.expr.downcast_ref::<Column>()?;
                    Some(below.index())
                })
                .collect::<Option<Vec<usize>>>()?;
            (projection.input(), columns)
        }
        None => {
            let columns = join
                .on()
                .iter()
                .map(|(_, r)| Some(r.downcast_ref::<Column>()?.index()))
                .collect::<Option<Vec<usize>>>()?;
            (join.right(), columns)
        }
    };
    let last = last.downcast_ref::<AggregateExec>()?;
    if *last.mode() != AggregateMode::FinalPartitioned || !last.group_expr().is_single() {
        return None;
    }
    let (probe, probe_rows) = gathered_stage(last.input())?;
    // DataFusion expects a semi join to keep every row of the side it filters (TPC-H q20:
    // 800,000 `partsupp` rows expected for the 8,508 of the parts named `forest…`): that
    // is a bound, not an estimate.
    let build_rows = match semi_join_output(&graph.stages.get(build)?.plan) {
        true => Precision::Absent,
        false => build_rows,
    };
    // A build side of unknown size (a join's output) is worth waiting for in front of an
    // aggregation of many rows: each group it rules out costs the aggregation a row. One
    // of known size, under the same condition as a stage under a join's probe side.
    let worth = match (build_rows.get_value(), probe_rows.get_value()) {
        (None, Some(&probe)) => probe >= MANY_ROWS,
        _ => through_joins::worth_waiting(build_rows, probe_rows),
    };
    if build >= probe || !worth || reads_of(graph, probe) != 1 {
        return None;
    }
    let (build_keys, _) = hash_keys(graph, build)?;
    let partial = partial_aggregate(&graph.stages.get(probe)?.plan)?;
    let groups = partial.group_expr().expr();
    let (left, input) = (join.left().schema(), partial.input().schema());
    let mut keys = Vec::with_capacity(join.on().len());
    if columns.iter().any(|&c| c >= last.group_expr().expr().len()) {
        return None;
    }
    for ((l, _), (built, column)) in join.on().iter().zip(build_keys.iter().zip(&columns)) {
        let (group, _) = groups.get(*column)?;
        let (build_type, probe_type) = (l.data_type(&left).ok()?, group.data_type(&input).ok()?);
        if !summarisable(&build_type, &probe_type) || !l.eq(built) {
            return None;
        }
        keys.push(Arc::clone(group) as PhysicalExprRef);
    }
    if build_keys.len() != keys.len() {
        return None;
    }
    let expected = match build_rows.get_value() {
        Some(&rows) => rows,
        None => probe_rows.get_value().copied().unwrap_or(0) / 8,
    };
    Some((build, probe, keys, bloom_log2(expected), true))
}
