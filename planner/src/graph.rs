//! The task graph: stages cut at exchanges, each run as one task per output partition.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};

use crate::resources::Resources;
use crate::shuffle::ShuffleWriteExec;

/// Identifies one submitted job within a cluster.
pub type JobId = u64;

/// Index of a stage within its [`TaskGraph`]; stages are numbered in topological order.
pub type StageId = usize;

/// One task: one partition of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    /// The stage the task belongs to.
    pub stage: StageId,
    /// The output partition of the stage's plan that the task computes.
    pub partition: usize,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stage {} task {}", self.stage, self.partition)
    }
}

/// How a task's output batches are bucketed for the tasks that consume them.
#[derive(Debug, Clone)]
pub enum OutputSpec {
    /// Every batch goes to bucket 0 (the consumer gathers or merges whole task outputs).
    Single,
    /// Batches are split by DataFusion's partitioning (hash, round robin or range) into
    /// `partition_count()` buckets; consumer partition `p` reads bucket `p` of every task.
    Repartition(Partitioning),
    /// The task's `k`-th batch goes to bucket `k` (an array stage cutting each chunk into
    /// the pieces a rechunk downstream reads); at most this many buckets.
    Pieces(usize),
}

impl OutputSpec {
    /// Number of buckets each task of the stage writes.
    pub fn buckets(&self) -> usize {
        match self {
            Self::Single => 1,
            Self::Repartition(p) => p.partition_count(),
            Self::Pieces(n) => *n,
        }
    }
}

impl fmt::Display for OutputSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single => write!(f, "single"),
            Self::Repartition(p) => write!(f, "{p}"),
            Self::Pieces(n) => write!(f, "pieces({n})"),
        }
    }
}

/// A plan fragment between exchanges, run as one task per output partition.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Position in [`TaskGraph::stages`].
    pub id: StageId,
    /// The fragment, rooted at a `ShuffleWriteExec`.
    pub plan: Arc<dyn ExecutionPlan>,
    /// Stages whose outputs this stage reads (all of their tasks).
    pub inputs: Vec<StageId>,
    /// How each task buckets its output.
    pub output: OutputSpec,
    /// Number of tasks (the fragment's output partition count).
    pub tasks: usize,
}

impl Stage {
    /// The schema of the batches the stage's tasks store (the input of the
    /// `ShuffleWriteExec` at its root).
    pub fn output_schema(&self) -> SchemaRef {
        match self.plan.downcast_ref::<ShuffleWriteExec>() {
            Some(write) => write.input().schema(),
            None => self.plan.schema(),
        }
    }
}

/// A job's whole graph: stages in topological order, the last one the result stage,
/// and what every task asks for.
#[derive(Debug, Clone)]
pub struct TaskGraph {
    /// Stages, producers before consumers; the last one is the result stage, whose tasks'
    /// bucket 0, in partition order, is the job's answer.
    pub stages: Vec<Stage>,
    /// Named resources each task holds while it runs (only workers offering them run it).
    pub resources: Resources,
    /// What the job is, for people watching it: its SQL text or the operation that made
    /// it (empty when nobody said).
    pub label: String,
}

impl TaskGraph {
    /// The graph of stages given in topological order, asking for no resources.
    pub fn from_stages(stages: Vec<Stage>) -> Self {
        Self {
            stages,
            resources: Resources::default(),
            label: String::new(),
        }
    }

    /// Every task asks for `resources`.
    pub fn with_resources(mut self, resources: &Resources) -> Self {
        self.resources = resources.clone();
        self
    }

    /// Tasks in the graph: one per partition of each stage.
    pub fn task_count(&self) -> usize {
        self.stages.iter().map(|s| s.tasks).sum()
    }

    /// The stages that read `stage`'s output.
    pub fn consumers(&self, stage: StageId) -> impl Iterator<Item = &Stage> {
        self.stages
            .iter()
            .filter(move |s| s.inputs.contains(&stage))
    }

    /// The result stage.
    pub fn result_stage(&self) -> &Stage {
        self.stages
            .last()
            .expect("a task graph has at least one stage")
    }
}
