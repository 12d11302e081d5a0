//! What a running task needs to know to read and write exchanged data.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Result, internal_datafusion_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use tokio::sync::watch;

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

/// Where each input stage's task outputs are: the worker holding each task's output, in
/// partition order, `None` while that task has not finished. Shared by a stage's tasks.
pub type Locations = Arc<InputLocations>;

/// The input locations of a stage's tasks. A consumer stage may start while its
/// producers still run (pipelined exchanges): entries are filled in as producers finish,
/// and readers waiting for one are woken. An entry, once set, never changes: when a
/// producer's output moves (recomputed elsewhere), the scheduler hands later tasks a new
/// `InputLocations`.
pub struct InputLocations {
    stages: Mutex<HashMap<StageId, Vec<Option<WorkerId>>>>,
    changed: watch::Sender<u64>,
}

impl InputLocations {
    /// Locations with these entries.
    pub fn new(stages: HashMap<StageId, Vec<Option<WorkerId>>>) -> Self {
        Self {
            stages: Mutex::new(stages),
            changed: watch::Sender::new(0),
        }
    }

    /// Where the output of task `task` of `stage` is: `Ok(None)` while it is not known
    /// yet, an error if this stage reads no such task.
    pub fn get(&self, stage: StageId, task: usize) -> Result<Option<WorkerId>> {
        let stages = self.lock();
        stages
            .get(&stage)
            .and_then(|l| l.get(task).copied())
            .ok_or_else(|| internal_datafusion_err!("no location for stage {stage} task {task}"))
    }

    /// Records that task `task` of `stage` left its output on `worker`, if that was not
    /// known yet and this stage reads it; wakes waiting readers. Returns whether it was new.
    pub fn fill(&self, stage: StageId, task: usize, worker: WorkerId) -> bool {
        let filled = {
            let mut stages = self.lock();
            match stages.get_mut(&stage).and_then(|l| l.get_mut(task)) {
                Some(entry @ None) => {
                    *entry = Some(worker);
                    true
                }
                _ => false,
            }
        };
        if filled {
            self.changed.send_modify(|n| *n += 1);
        }
        filled
    }

    /// Every entry, by stage.
    pub fn snapshot(&self) -> HashMap<StageId, Vec<Option<WorkerId>>> {
        self.lock().clone()
    }

    /// Whether every entry is known.
    pub fn complete(&self) -> bool {
        self.lock().values().all(|l| l.iter().all(Option::is_some))
    }

    /// A receiver that sees a change after each entry filled from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// How many readers are subscribed to changes: tasks (or their operators) waiting
    /// for a producer that has not finished yet.
    pub fn readers(&self) -> usize {
        self.changed.receiver_count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StageId, Vec<Option<WorkerId>>>> {
        // The map is consistent after every write: a panicked holder left nothing half done.
        self.stages.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Debug for InputLocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut stages: Vec<_> = self.snapshot().into_iter().collect();
        stages.sort_unstable_by_key(|(stage, _)| *stage);
        f.debug_map().entries(stages).finish()
    }
}

/// Which part of a bucket a `put` stores. A task hands its output over in parts when it
/// outgrows its share of memory, numbered from 0 per bucket; its last part completes the
/// bucket, which only then can be read. A part 0, or a part of a later run of the task,
/// replaces what the bucket held; a part of an earlier run (one stopped while it still
/// wrote) is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// The run of the task (its attempt) that wrote it.
    pub attempt: u32,
    /// Its number within the bucket.
    pub number: usize,
    /// Whether it completes the bucket.
    pub last: bool,
}

impl Part {
    /// The whole bucket in one part, from a task's first run.
    pub const WHOLE: Part = Part {
        attempt: 0,
        number: 0,
        last: true,
    };
}

/// Moves task outputs: `put` keeps a bucket on the worker running the task, `fetch`
/// streams a bucket from the worker that holds it (itself or a peer).
pub trait ShuffleIo: Debug + Send + Sync {
    /// Stores `part` of bucket `key` on this worker (see [`Part`]).
    fn put(&self, key: PartitionKey, part: Part, batches: Vec<RecordBatch>) -> Result<()>;

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
    /// Which run of the task this is.
    pub attempt: u32,
    /// Where the outputs of each input stage are: worker per task, in partition order.
    pub locations: Locations,
    /// The worker's transport.
    pub io: Arc<dyn ShuffleIo>,
}

impl ShuffleEnv {
    /// The worker holding the output of task `task` of input stage `stage`, once that task
    /// has finished: a consumer may start while its producers still run.
    pub async fn located(&self, stage: StageId, task: usize) -> Result<WorkerId> {
        // Subscribed before looking: a fill between the look and the wait is not missed.
        let mut changes = self.locations.subscribe();
        loop {
            if let Some(worker) = self.locations.get(stage, task)? {
                return Ok(worker);
            }
            changes
                .changed()
                .await
                .map_err(|_| internal_datafusion_err!("input locations were dropped"))?;
        }
    }

    /// Names bucket `bucket` of task `task` of input stage `stage` of this job.
    pub fn key(&self, stage: StageId, task: usize, bucket: usize) -> PartitionKey {
        PartitionKey {
            job: self.job,
            task: TaskId {
                stage,
                partition: task,
            },
            bucket,
        }
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
