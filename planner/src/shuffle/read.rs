//! `ShuffleReadExec`: the leaf through which a stage reads an earlier stage's output.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::internal_datafusion_err;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, TryStreamExt};

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
}

/// Reads the output of stage `stage` (which has `input_tasks` tasks) as this plan's input.
#[derive(Debug)]
pub struct ShuffleReadExec {
    stage: StageId,
    input_tasks: usize,
    mode: ReadMode,
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
            metrics: ExecutionPlanMetricsSet::new(),
            properties,
        }
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
        }
    }
}

impl DisplayAs for ShuffleReadExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let mode = match self.mode {
            ReadMode::Gather => "gather",
            ReadMode::PerTask => "per_task",
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

/// The streams of `sources` (task, bucket) of `stage`, each opened as soon as its task's
/// output is located: a consumer started while its producers still run reads the finished
/// ones first and waits for the others.
fn in_completion_order(
    env: Arc<ShuffleEnv>,
    stage: StageId,
    sources: Vec<(usize, usize)>,
) -> impl Stream<Item = Result<SendableRecordBatchStream>> {
    let changes = env.locations.subscribe();
    futures::stream::unfold(
        (env, sources, changes),
        move |(env, mut pending, mut changes)| async move {
            if pending.is_empty() {
                return None;
            }
            loop {
                // Marks what is seen now: a fill after this look wakes the wait below.
                changes.borrow_and_update();
                let mut next = None;
                for (i, &(task, _)) in pending.iter().enumerate() {
                    match env.locations.get(stage, task) {
                        Ok(Some(worker)) => {
                            next = Some(Ok((i, worker)));
                            break;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            next = Some(Err(e));
                            break;
                        }
                    }
                }
                let opened = match next {
                    Some(Ok((i, worker))) => {
                        let (task, bucket) = pending.remove(i);
                        env.io.fetch(env.key(stage, task, bucket), worker)
                    }
                    Some(Err(e)) => {
                        pending.clear();
                        Err(e)
                    }
                    None => match changes.changed().await {
                        Ok(()) => continue,
                        Err(_) => {
                            pending.clear();
                            Err(internal_datafusion_err!("input locations were dropped"))
                        }
                    },
                };
                return Some((opened, (env, pending, changes)));
            }
        },
    )
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
        let stream = in_completion_order(env, self.stage, self.sources(partition))
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
