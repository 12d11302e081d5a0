//! Operator metrics of one task, as workers report them with each finished task: every
//! job's `EXPLAIN ANALYZE` and the dashboard's job pages sum them over all the tasks of
//! every stage, whichever process ran them.

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricValue;

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

/// The metrics that `plan`'s operators recorded for `partition` (the task's), in
/// pre-order; timestamps are left out.
pub fn task_metrics(plan: &dyn ExecutionPlan, partition: usize) -> Vec<OperatorMetric> {
    fn walk(
        plan: &dyn ExecutionPlan,
        partition: usize,
        next: &mut u32,
        out: &mut Vec<OperatorMetric>,
    ) {
        let node = *next;
        *next += 1;
        for metric in plan.metrics().iter().flat_map(|m| m.iter()) {
            if metric.partition() != Some(partition) {
                continue;
            }
            let value = metric.value();
            let unit = match value {
                MetricValue::StartTimestamp(_)
                | MetricValue::EndTimestamp(_)
                | MetricValue::PruningMetrics { .. }
                | MetricValue::Ratio { .. }
                | MetricValue::Custom { .. } => continue,
                MetricValue::ElapsedCompute(_) | MetricValue::Time { .. } => MetricUnit::Nanos,
                MetricValue::SpilledBytes(_)
                | MetricValue::OutputBytes(_)
                | MetricValue::CurrentMemoryUsage(_)
                | MetricValue::PeakMemoryUsage { .. } => MetricUnit::Bytes,
                _ => MetricUnit::Count,
            };
            out.push(OperatorMetric {
                node,
                name: value.name().to_string(),
                value: value.as_usize() as u64,
                unit,
            });
        }
        for child in plan.children() {
            walk(child.as_ref(), partition, next, out);
        }
    }
    let mut out = Vec::new();
    walk(plan, partition, &mut 0, &mut out);
    out
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
