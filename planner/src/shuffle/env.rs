//! What a running task needs to know to read and write exchanged data.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Result, internal_datafusion_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};

use crate::graph::{JobId, StageId, TaskId};

/// Identifies a worker within a cluster.
pub type WorkerId = usize;

/// Names one bucket of one task's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    /// The job that produced it.
    pub job: JobId,
    /// The producing task.
    pub task: TaskId,
    /// The bucket within the task's output.
    pub bucket: usize,
}

/// Where each input stage's task outputs are: worker per task, in partition order.
/// Shared by every task of a stage.
pub type Locations = Arc<HashMap<StageId, Vec<WorkerId>>>;

/// Moves task outputs: `put` keeps a bucket on the worker running the task, `fetch`
/// streams a bucket from the worker that holds it (itself or a peer).
pub trait ShuffleIo: Debug + Send + Sync {
    /// Stores the finished bucket `key` on this worker.
    fn put(&self, key: PartitionKey, batches: Vec<RecordBatch>) -> Result<()>;

    /// Streams bucket `key` from worker `from`; errors surface in the stream.
    fn fetch(&self, key: PartitionKey, from: WorkerId) -> Result<SendableRecordBatchStream>;
}

/// The task-context extension that `ShuffleWriteExec` and `ShuffleReadExec` read.
#[derive(Debug)]
pub struct ShuffleEnv {
    /// The running job.
    pub job: JobId,
    /// The running task.
    pub task: TaskId,
    /// Where the outputs of each input stage are: worker per task, in partition order.
    pub locations: Locations,
    /// The worker's transport.
    pub io: Arc<dyn ShuffleIo>,
}

impl ShuffleEnv {
    /// Names bucket `bucket` of task `task` of input stage `stage` of this job, and the
    /// worker that holds it.
    pub fn source(
        &self,
        stage: StageId,
        task: usize,
        bucket: usize,
    ) -> Result<(PartitionKey, WorkerId)> {
        let from = *self
            .locations
            .get(&stage)
            .and_then(|l| l.get(task))
            .ok_or_else(|| internal_datafusion_err!("no location for stage {stage} task {task}"))?;
        let key = PartitionKey {
            job: self.job,
            task: TaskId {
                stage,
                partition: task,
            },
            bucket,
        };
        Ok((key, from))
    }
}

/// The [`ShuffleEnv`] of a task context, or an internal error if the plan is being run
/// outside Shoal's executor.
pub fn shuffle_env(ctx: &TaskContext) -> Result<Arc<ShuffleEnv>> {
    ctx.session_config()
        .get_extension::<ShuffleEnv>()
        .ok_or_else(|| {
            internal_datafusion_err!("shuffle operators must run inside Shoal's executor")
        })
}
