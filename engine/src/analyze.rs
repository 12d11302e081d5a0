//! `EXPLAIN ANALYZE`: runs the query as a job and shows every stage's plan, each operator
//! with its metrics summed over all of the stage's tasks (workers report them with each
//! finished task, on the job-event stream), whichever processes ran them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{Analyze, LogicalPlan};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};
use shoal_exec::{JobEventKind, JobHandle, MetricUnit};

use crate::{Result, Session};

/// The `plan_type` of the row `EXPLAIN ANALYZE` gives, as in DataFusion.
const PLAN_WITH_METRICS: &str = "Plan with Metrics";

/// Runs `analyze` (the plan `plan`) and returns its one row; plans that must run in the
/// client get DataFusion's own `EXPLAIN ANALYZE` there.
pub(crate) async fn explain_analyze(
    session: &Session,
    plan: &LogicalPlan,
    analyze: &Analyze,
    label: Option<&str>,
) -> Result<JobHandle> {
    if session.runs_in_client(&analyze.input) {
        return session.run_in_client(plan).await;
    }
    let graph = session.labeled_graph(&analyze.input, plan, label).await?;
    if session.is_remote() && !session.travels(&graph) {
        return session.run_in_client(plan).await;
    }
    let shown = graph.clone();
    // Subscribed before the job starts, and read while it runs (a reader that waited for
    // the rows could fall too far behind and miss events).
    let mut events = session.events().await?;
    let handle = session.execute_graph(graph);
    let job = handle.job;
    let folded = session.spawn(async move {
        let mut sums: BTreeMap<(usize, u32, String), (u64, MetricUnit)> = BTreeMap::new();
        while let Some(event) = events.next().await {
            if event.job != job {
                continue;
            }
            if let JobEventKind::TaskFinished { task, metrics, .. } = &event.kind {
                for m in metrics.iter() {
                    let key = (task.stage, m.node, m.name.clone());
                    let sum = sums.entry(key).or_insert((0, m.unit));
                    sum.0 = sum.0.saturating_add(m.value);
                }
            }
            if event.kind.is_final() {
                break;
            }
        }
        sums
    });
    let schema = Arc::clone(analyze.schema.inner());
    let out_schema = Arc::clone(&schema);
    let mut rows = handle.stream;
    let row = futures::stream::once(async move {
        while rows.try_next().await?.is_some() {}
        let sums = folded
            .await
            .map_err(|e| datafusion::common::DataFusionError::External(Box::new(e)))?;
        let mut shown_metrics: HashMap<(usize, u32), Vec<(String, String)>> = HashMap::new();
        for ((stage, node, name), (value, unit)) in sums {
            shown_metrics
                .entry((stage, node))
                .or_default()
                .push((name, format_metric(value, unit)));
        }
        let text = shoal_sql::render_task_graph_with_metrics(&shown, &shown_metrics);
        Ok(RecordBatch::try_new(
            out_schema,
            vec![
                Arc::new(StringArray::from(vec![PLAN_WITH_METRICS])),
                Arc::new(StringArray::from(vec![text])),
            ],
        )?)
    });
    Ok(JobHandle {
        job,
        stream: Box::pin(RecordBatchStreamAdapter::new(schema, row)),
        progress: handle.progress,
    })
}

/// A metric's value as people read it: counts as they are, times and sizes with units.
fn format_metric(value: u64, unit: MetricUnit) -> String {
    match unit {
        MetricUnit::Count => value.to_string(),
        MetricUnit::Nanos => {
            let v = value as f64;
            match value {
                0..1_000 => format!("{value}ns"),
                1_000..1_000_000 => format!("{:.2}µs", v / 1e3),
                1_000_000..1_000_000_000 => format!("{:.2}ms", v / 1e6),
                _ => format!("{:.2}s", v / 1e9),
            }
        }
        MetricUnit::Bytes => {
            let v = value as f64;
            match value {
                0..1024 => format!("{value} B"),
                1024..1_048_576 => format!("{:.1} KiB", v / 1024.0),
                1_048_576..1_073_741_824 => format!("{:.1} MiB", v / 1_048_576.0),
                _ => format!("{:.1} GiB", v / 1_073_741_824.0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_read_with_their_units() {
        assert_eq!(format_metric(42, MetricUnit::Count), "42");
        assert_eq!(format_metric(999, MetricUnit::Nanos), "999ns");
        assert_eq!(format_metric(1_500_000, MetricUnit::Nanos), "1.50ms");
        assert_eq!(format_metric(2_500_000_000, MetricUnit::Nanos), "2.50s");
        assert_eq!(format_metric(2048, MetricUnit::Bytes), "2.0 KiB");
        assert_eq!(format_metric(3 << 30, MetricUnit::Bytes), "3.0 GiB");
    }
}
