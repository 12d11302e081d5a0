//! Operator metrics of one task, as workers report them with each finished task: every
//! job's `EXPLAIN ANALYZE` and the dashboard's job pages sum them over all the tasks of
//! every stage, whichever process ran them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Weak};

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricValue;
use parking_lot::Mutex;

/// What a metric's value counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricUnit {
    /// Rows, batches, events.
    Count,
    /// Nanoseconds.
    Nanos,
    /// Bytes.
    Bytes,
}

/// One metric of one operator for one task.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorMetric {
    /// The operator's place in its stage plan, counted in pre-order from the root (0).
    pub node: u32,
    /// The metric's name (`output_rows`, `elapsed_compute`, …).
    pub name: String,
    /// Its value.
    pub value: u64,
    /// What the value counts.
    pub unit: MetricUnit,
}

/// What `plan`'s operators recorded since the last call for the same plan instance:
/// plan-wide totals (every partition, and metrics kept for none) minus what earlier
/// calls reported, in pre-order; timestamps and ratios are left out.
///
/// A stage's plan can be shared by tasks running at once (on one worker, or by every
/// in-process worker), an operator may record under another partition than the task's
/// (a broadcast join reads its build side as partition 0 in every task), and a plan that
/// runs a partition again keeps the earlier run's metrics. Reporting each instance's
/// growth makes the sum of every task's report exactly the stage's totals.
pub fn task_metrics(plan: &Arc<dyn ExecutionPlan>) -> Vec<OperatorMetric> {
    let mut totals: BTreeMap<(u32, String), (u64, MetricUnit)> = BTreeMap::new();
    plan_totals(plan.as_ref(), &mut 0, &mut totals);
    let mut reported = REPORTED.lock();
    // Forget plans that are gone (their address may be reused).
    reported.retain(|_, (weak, _)| weak.strong_count() > 0);
    let key = Arc::as_ptr(plan) as *const () as usize;
    let entry = reported
        .entry(key)
        .or_insert_with(|| (Arc::downgrade(plan), HashMap::new()));
    let mut out = Vec::new();
    for ((node, name), (total, unit)) in totals {
        let before = entry.1.insert((node, name.clone()), total).unwrap_or(0);
        let value = total.saturating_sub(before);
        if value > 0 {
            out.push(OperatorMetric {
                node,
                name,
                value,
                unit,
            });
        }
    }
    out
}

/// Per live plan instance (by address): its totals as last reported.
type Reported = HashMap<usize, (Weak<dyn ExecutionPlan>, HashMap<(u32, String), u64>)>;
static REPORTED: LazyLock<Mutex<Reported>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Adds every operator's metrics under `plan` to `totals`, by (pre-order index, name).
fn plan_totals(
    plan: &dyn ExecutionPlan,
    next: &mut u32,
    totals: &mut BTreeMap<(u32, String), (u64, MetricUnit)>,
) {
    let node = *next;
    *next += 1;
    for metric in plan.metrics().iter().flat_map(|m| m.iter()) {
        let value = metric.value();
        let unit = match value {
            MetricValue::PruningMetrics {
                name,
                pruning_metrics,
            } => {
                // What a scan skipped (row groups, pages, files) and what it kept: NAME
                // counts the skipped ones, NAME_matched the others.
                for (name, n) in [
                    (name.to_string(), pruning_metrics.pruned()),
                    (format!("{name}_matched"), pruning_metrics.matched()),
                ] {
                    let total = totals.entry((node, name)).or_insert((0, MetricUnit::Count));
                    total.0 = total.0.saturating_add(n as u64);
                }
                continue;
            }
            MetricValue::StartTimestamp(_)
            | MetricValue::EndTimestamp(_)
            | MetricValue::Ratio { .. }
            | MetricValue::Custom { .. } => continue,
            MetricValue::ElapsedCompute(_) | MetricValue::Time { .. } => MetricUnit::Nanos,
            MetricValue::SpilledBytes(_)
            | MetricValue::OutputBytes(_)
            | MetricValue::CurrentMemoryUsage(_)
            | MetricValue::PeakMemoryUsage { .. } => MetricUnit::Bytes,
            _ => MetricUnit::Count,
        };
        let total = totals
            .entry((node, value.name().to_string()))
            .or_insert((0, unit));
        total.0 = total.0.saturating_add(value.as_usize() as u64);
    }
    for child in plan.children() {
        plan_totals(child.as_ref(), next, totals);
    }
}

/// The wire form of `metrics`.
pub fn metrics_to_proto(metrics: &[OperatorMetric]) -> Vec<crate::remote::proto::OperatorMetric> {
    metrics
        .iter()
        .map(|m| crate::remote::proto::OperatorMetric {
            node: m.node,
            name: m.name.clone(),
            value: m.value,
            unit: match m.unit {
                MetricUnit::Count => 0,
                MetricUnit::Nanos => 1,
                MetricUnit::Bytes => 2,
            },
        })
        .collect()
}

/// Metrics from their wire form (an unknown unit reads as a count).
pub fn metrics_from_proto(
    metrics: Vec<crate::remote::proto::OperatorMetric>,
) -> Vec<OperatorMetric> {
    metrics
        .into_iter()
        .map(|m| OperatorMetric {
            node: m.node,
            name: m.name,
            value: m.value,
            unit: match m.unit {
                1 => MetricUnit::Nanos,
                2 => MetricUnit::Bytes,
                _ => MetricUnit::Count,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::execution::TaskContext;
    use datafusion::physical_plan::common::collect;
    use datafusion::physical_plan::expressions::lit;
    use datafusion::physical_plan::filter::FilterExec;

    use super::*;

    fn rows(metrics: &[OperatorMetric]) -> u64 {
        metrics
            .iter()
            .filter(|m| m.name == "output_rows")
            .map(|m| m.value)
            .sum()
    }

    #[tokio::test]
    async fn each_report_is_what_the_plan_recorded_since_the_last() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let batch = |n: i32| {
            let values = Int32Array::from((0..n).collect::<Vec<_>>());
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(values)]).unwrap()
        };
        let source = MemorySourceConfig::try_new_exec(
            &[vec![batch(3)], vec![batch(5)]],
            Arc::clone(&schema),
            None,
        )
        .unwrap();
        // A filter counts the rows of each partition it passes on.
        let plan: Arc<dyn ExecutionPlan> =
            Arc::new(FilterExec::try_new(lit(true), source).unwrap());
        let ctx = Arc::new(TaskContext::default());
        collect(plan.execute(0, Arc::clone(&ctx)).unwrap())
            .await
            .unwrap();
        assert_eq!(rows(&task_metrics(&plan)), 3);
        // The second task's report holds its own rows only, and a report with nothing
        // new holds nothing.
        collect(plan.execute(1, Arc::clone(&ctx)).unwrap())
            .await
            .unwrap();
        assert_eq!(rows(&task_metrics(&plan)), 5);
        assert!(task_metrics(&plan).is_empty());
        // Another instance of the same plan starts from zero.
        let copy = Arc::clone(&plan).reset_state().unwrap();
        collect(copy.execute(1, ctx).unwrap()).await.unwrap();
        assert_eq!(rows(&task_metrics(&copy)), 5);
    }
}
