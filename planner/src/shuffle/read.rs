//! `ShuffleReadExec`: the leaf through which a stage reads an earlier stage's output.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::stats::Precision;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt, TryStreamExt};

use super::env::{ShuffleEnv, shuffle_env};
use crate::graph::StageId;

/// Which buckets an output partition of a [`ShuffleReadExec`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Partition `p` reads bucket `p` of every task of the input stage (after a hash,
    /// round-robin or range exchange, or bucket 0 of every task to coalesce).
    Gather,
    /// Partition `p` reads the whole output of task `p` (keeps per-task order for a
    /// sort-preserving merge).
    PerTask,
    /// The one partition reads this bucket of every task (a build stage's key summaries,
    /// see [`crate::key_filter`]).
    Bucket(usize),
    /// The one partition reads buckets `0..n` of every task: a hash exchange's whole
    /// output, broadcast (see [`crate::adaptive`]).
    Buckets(usize),
}

/// Reads the output of stage `stage` (which has `input_tasks` tasks) as this plan's input.
#[derive(Debug)]
pub struct ShuffleReadExec {
    stage: StageId,
    input_tasks: usize,
    mode: ReadMode,
    /// The rows the planner expected the read stage to write (from the statistics of the
    /// exchange this read replaced; not carried to other processes).
    estimated_rows: Precision<usize>,
    metrics: ExecutionPlanMetricsSet,
    properties: Arc<PlanProperties>,
}

impl ShuffleReadExec {
    /// A reader with the given output properties (those of the exchange it replaces).
    pub fn new(
        stage: StageId,
        input_tasks: usize,
        mode: ReadMode,
        properties: Arc<PlanProperties>,
    ) -> Self {
        Self {
            stage,
            input_tasks,
            mode,
            estimated_rows: Precision::Absent,
            metrics: ExecutionPlanMetricsSet::new(),
            properties,
        }
    }

    /// This read, expecting `rows` rows (see [`Self::estimated_rows`]).
    pub fn with_estimated_rows(mut self, rows: Precision<usize>) -> Self {
        self.estimated_rows = rows;
        self
    }

    /// The rows the planner expected the read stage to write: exact (a whole table, say),
    /// an estimate (after a filter or a join) or unknown.
    pub fn estimated_rows(&self) -> Precision<usize> {
        self.estimated_rows
    }

    /// The stage read.
    pub fn stage(&self) -> StageId {
        self.stage
    }

    /// How many tasks the input stage has.
    pub fn input_tasks(&self) -> usize {
        self.input_tasks
    }

    /// Which buckets each partition reads.
    pub fn mode(&self) -> ReadMode {
        self.mode
    }

    /// The (task, bucket) pairs output partition `partition` reads, in order.
    pub fn sources(&self, partition: usize) -> Vec<(usize, usize)> {
        match self.mode {
            ReadMode::Gather => (0..self.input_tasks).map(|t| (t, partition)).collect(),
            ReadMode::PerTask => vec![(partition, 0)],
            ReadMode::Bucket(bucket) => (0..self.input_tasks).map(|t| (t, bucket)).collect(),
            ReadMode::Buckets(n) => (0..self.input_tasks)
                .flat_map(|t| (0..n).map(move |b| (t, b)))
                .collect(),
        }
    }
}

impl DisplayAs for ShuffleReadExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let mode = match self.mode {
            ReadMode::Gather => "gather".to_string(),
            ReadMode::PerTask => "per_task".to_string(),
            ReadMode::Bucket(bucket) => format!("bucket({bucket})"),
            ReadMode::Buckets(n) => format!("buckets({n})"),
        };
        write!(
            f,
            "ShuffleReadExec: stage={}, input_tasks={}, mode={mode}, partitions={}",
            self.stage,
            self.input_tasks,
            self.properties.partitioning.partition_count()
        )
    }
}

/// The streams of `sources` (task, bucket) of `stage`, in order, each opened once its
/// task's output is located: a consumer started while its producers still run reads the
/// finished ones and waits for the next. The order is always the sources' order, so a
/// task run again reads its input in the same order as before (an output written round
/// robin or cut by a `LIMIT` depends on it, and consumers may have read part of it).
fn in_order_when_located(
    env: Arc<ShuffleEnv>,
    stage: StageId,
    sources: Vec<(usize, usize)>,
) -> impl Stream<Item = Result<SendableRecordBatchStream>> {
    futures::stream::iter(sources).then(move |(task, bucket)| {
        let env = Arc::clone(&env);
        async move {
            tracing::debug!(job = env.job, task = %env.task, stage, input = task, "reads");
            let worker = env.located(stage, task).await?;
            env.io.fetch(env.key(stage, task, bucket), worker)
        }
    })
}

impl ExecutionPlan for ShuffleReadExec {
    leaf_plan_methods!("ShuffleReadExec");

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let env = shuffle_env(&context)?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let stream = in_order_when_located(env, self.stage, self.sources(partition))
            .try_flatten()
            .inspect_ok(move |b| baseline.record_output(b.num_rows()));
        // Buckets already in memory are always ready; the cooperative wrapper yields once
        // the task's budget is spent, so a cancelled task stops promptly.
        Ok(make_cooperative(Box::pin(RecordBatchStreamAdapter::new(
            self.properties.eq_properties.schema().clone(),
            stream,
        ))))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
