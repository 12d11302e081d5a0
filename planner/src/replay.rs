//! Whether running a task graph again gives the same result rows in the same order, which
//! decides how a client recovers from a result partition lost while it reads it.
//!
//! Within a stage Shoal runs one partition of a plan fragment over inputs read in a fixed
//! order (`ShuffleReadExec` reads its sources one after another), so scans, filters,
//! projections, joins, aggregates, sorts, limits and windows give the same rows in the
//! same order every time. Not so:
//! - an operator that interleaves several input partitions as they arrive
//!   (`RepartitionExec`, `CoalescePartitionsExec` over more than one partition);
//! - a volatile function (`random()`, `uuid()`), whose values differ between runs;
//! - a sink (`COPY`, `INSERT`) writing where Shoal cannot stage it (an object store), whose
//!   second run would add its files again; a staged sink ([`StagedSinkExec`]) replaces
//!   them, so running it again is safe.
//!
//! An aggregate or sort that spills emits its rows in another order than one that did not;
//! the client checks the row at the resume point, so that case fails rather than
//! repeats or skips rows.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};

use crate::sink::StagedSinkExec;
use datafusion::physical_expr_common::physical_expr::is_volatile;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};

use crate::graph::TaskGraph;

/// What may differ when a graph's stages run again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayHazard {
    /// A stage writes files or tables: once its result is delivered it is not run again.
    Effects(String),
    /// Rows may come in another order or with other values: a result partition lost
    /// part-way through cannot be resumed.
    Order(String),
}

impl std::fmt::Display for ReplayHazard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Effects(why) | Self::Order(why) => f.write_str(why),
        }
    }
}

/// The first hazard found in `graph`'s stages, effects before order.
pub fn graph_replay_hazard(graph: &TaskGraph) -> Option<ReplayHazard> {
    let hazards: Vec<ReplayHazard> = graph
        .stages
        .iter()
        .filter_map(|stage| replay_hazard(&stage.plan))
        .collect();
    hazards
        .iter()
        .find(|h| matches!(h, ReplayHazard::Effects(_)))
        .or(hazards.first())
        .cloned()
}

/// What in `plan` may make a second run differ from the first, if anything.
pub fn replay_hazard(plan: &Arc<dyn ExecutionPlan>) -> Option<ReplayHazard> {
    let mut found = None;
    if walk(plan, false, &mut found).is_err() {
        // A plan that cannot be walked is not known to be safe.
        return Some(ReplayHazard::Order(
            "the plan could not be inspected".into(),
        ));
    }
    found
}

/// Looks for hazards in `node` and below; `staged` says a [`StagedSinkExec`] is above
/// (its files are replaced whole by a second run, not added to).
fn walk(
    node: &Arc<dyn ExecutionPlan>,
    staged: bool,
    found: &mut Option<ReplayHazard>,
) -> datafusion::common::Result<()> {
    let name = node.name();
    if name == "DataSinkExec" && !staged {
        *found = Some(ReplayHazard::Effects(format!(
            "{name} adds files each time it runs"
        )));
        return Ok(());
    }
    let interleaves = matches!(name, "RepartitionExec" | "CoalescePartitionsExec")
        && node
            .children()
            .first()
            .is_some_and(|input| input.output_partitioning().partition_count() > 1);
    if interleaves && found.is_none() {
        *found = Some(ReplayHazard::Order(format!(
            "{name} interleaves its input partitions in the order they arrive"
        )));
    }
    node.apply_expressions(&mut |expr| {
        if found.is_none() && expr.exists(|e| Ok(is_volatile(e)))? {
            *found = Some(ReplayHazard::Order(format!(
                "{name} evaluates a volatile function ({expr})"
            )));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let staged = staged || node.is::<StagedSinkExec>();
    for child in node.children() {
        walk(child, staged, found)?;
        if matches!(found, Some(ReplayHazard::Effects(_))) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// The physical plan of `sql` with `partitions` partitions per exchange, over a
    /// table `t(a int, b varchar)`.
    async fn physical(sql: &str, partitions: usize) -> Arc<dyn ExecutionPlan> {
        let config = SessionConfig::new().with_target_partitions(partitions);
        let ctx = SessionContext::new_with_config(config);
        let create = "create table t(a int, b varchar) as values (1, 'x'), (2, 'y')";
        ctx.sql(create).await.unwrap().collect().await.unwrap();
        let df = ctx.sql(sql).await.unwrap();
        df.create_physical_plan().await.unwrap()
    }

    /// The hazard of `sql` in one partition: no exchanges, as within one of Shoal's stages.
    async fn hazard(sql: &str) -> Option<ReplayHazard> {
        replay_hazard(&physical(sql, 1).await)
    }

    #[tokio::test]
    async fn interleaving_exchanges_are_named() {
        let sql = "select count(*) from generate_series(1, 100000) group by value % 7";
        let Some(ReplayHazard::Order(why)) = replay_hazard(&physical(sql, 4).await) else {
            panic!("a hash exchange over several partitions interleaves them");
        };
        assert!(why.contains("RepartitionExec"), "{why}");
    }

    #[tokio::test]
    async fn scans_filters_and_aggregates_replay_exactly() {
        assert_eq!(hazard("select a, b from t where a > 1").await, None);
        assert_eq!(
            hazard("select b, sum(a) from t group by b order by b").await,
            None
        );
    }

    #[tokio::test]
    async fn volatile_functions_and_sinks_are_named() {
        let Some(ReplayHazard::Order(why)) = hazard("select a, random() from t").await else {
            panic!("random() is volatile");
        };
        assert!(why.contains("random()"), "{why}");
        // Planning a copy writes nothing.
        let copy = "copy t to '/nonexistent/shoal-replay/out.csv'";
        let Some(ReplayHazard::Effects(why)) = hazard(copy).await else {
            panic!("a copy writes files");
        };
        assert!(why.contains("DataSinkExec"), "{why}");
    }

    #[tokio::test]
    async fn a_staged_sink_may_run_again() {
        let copy = "copy (select 1 as a) to '/nonexistent/shoal-replay/out.csv'";
        let staged = StagedSinkExec::wrap(physical(copy, 1).await);
        assert_eq!(staged.name(), "StagedSinkExec");
        assert_eq!(replay_hazard(&staged), None);
    }
}
