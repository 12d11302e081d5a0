//! Small inputs are not spread over partitions.
//!
//! DataFusion spreads a single-partition input over the target partitions with a
//! round-robin exchange, so the operators above it run in parallel. For a table of a few
//! rows (TPC-H's `nation` and `region`, a file of one row group) that buys nothing, and in
//! Shoal every exchange is a stage boundary: one task that writes, and consumers that wait
//! for it and fetch its buckets (over the network on worker processes). A round-robin
//! exchange over one partition expected to hold at most [`SMALL_BATCHES`] batches of rows
//! (TPC-H's `supplier` at SF1) is dropped: its input is read where its consumers run, and
//! what a single task does with so few rows costs less than a stage boundary.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, StatisticsArgs, StatisticsContext,
};

/// Batches of rows a single-partition input may be expected to hold to stay unspread.
pub const SMALL_BATCHES: usize = 8;

/// `plan` without its round-robin exchanges over one partition of at most `max_rows`
/// rows (as DataFusion's statistics expect).
pub fn small_inputs_unspread(
    plan: Arc<dyn ExecutionPlan>,
    max_rows: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let statistics = StatisticsContext::default();
    Ok(plan
        .transform_up(|node| {
            let Some(repartition) = node.downcast_ref::<RepartitionExec>() else {
                return Ok(Transformed::no(node));
            };
            let input = repartition.input();
            let small = statistics
                .compute(input.as_ref(), &StatisticsArgs::new())
                .ok()
                .and_then(|s| s.num_rows.get_value().copied())
                .is_some_and(|rows| rows <= max_rows);
            if matches!(repartition.partitioning(), Partitioning::RoundRobinBatch(_))
                && input.output_partitioning().partition_count() == 1
                && small
            {
                return Ok(Transformed::yes(Arc::clone(input)));
            }
            Ok(Transformed::no(node))
        })?
        .data)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// A one-partition table of `rows` rows, planned with four partitions.
    async fn plan_over(rows: i64) -> (SessionContext, Arc<dyn ExecutionPlan>) {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .unwrap();
        let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
        ctx.register_table("t", Arc::new(table)).unwrap();
        let sql = "select sum(a * 2) from t where a % 3 = 0";
        let plan = crate::test_support::planned(&ctx, sql).await;
        (ctx, plan)
    }

    fn shown(plan: &Arc<dyn ExecutionPlan>) -> String {
        displayable(plan.as_ref()).indent(true).to_string()
    }

    #[tokio::test]
    async fn a_small_input_stays_in_its_partition_and_a_large_one_is_spread() {
        let (ctx, planned) = plan_over(100).await;
        assert!(
            shown(&planned).contains("RoundRobinBatch(4)"),
            "{}",
            shown(&planned)
        );
        let unspread = small_inputs_unspread(Arc::clone(&planned), 8192).unwrap();
        assert!(
            !shown(&unspread).contains("RoundRobinBatch"),
            "{}",
            shown(&unspread)
        );
        let sum = |batches: Vec<RecordBatch>| format!("{:?}", batches[0].column(0));
        assert_eq!(
            sum(collect(unspread, ctx.task_ctx()).await.unwrap()),
            sum(collect(planned, ctx.task_ctx()).await.unwrap())
        );
        let (_, large) = plan_over(10_000).await;
        let kept = small_inputs_unspread(Arc::clone(&large), 8192).unwrap();
        assert!(
            shown(&kept).contains("RoundRobinBatch(4)"),
            "{}",
            shown(&kept)
        );
    }
}
