//! The task graph: stages, the tasks they expand to, and what each task reads and writes.

use std::fmt;
use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, Partitioning};

use crate::resources::Resources;

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
}

impl OutputSpec {
    /// Number of buckets each task of the stage writes.
    pub fn buckets(&self) -> usize {
        match self {
            Self::Single => 1,
            Self::Repartition(p) => p.partition_count(),
        }
    }
}

impl fmt::Display for OutputSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single => write!(f, "single"),
            Self::Repartition(p) => write!(f, "{p}"),
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

/// A dependency of a task: every task output of an earlier stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputRef {
    /// The producing stage.
    pub stage: StageId,
}

/// What a task runs.
#[derive(Debug, Clone)]
pub enum TaskKind {
    /// One partition of a DataFusion plan fragment, written out per `output`.
    Stage {
        /// The stage's plan (shared by all tasks of the stage).
        plan: Arc<dyn ExecutionPlan>,
        /// The partition to execute.
        partition: usize,
        /// How the output is bucketed.
        output: OutputSpec,
    },
}

/// One schedulable unit of work.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// Which task this is.
    pub id: TaskId,
    /// Outputs the task needs before it can start.
    pub inputs: Vec<InputRef>,
    /// What to run.
    pub kind: TaskKind,
    /// Named resources the task holds while it runs (only workers offering them run it).
    pub resources: Resources,
}

/// A job's whole graph: stages in topological order, their tasks, and the final outputs.
#[derive(Debug, Clone)]
pub struct TaskGraph {
    /// Stages, producers before consumers; the last one is the result stage.
    pub stages: Vec<Stage>,
    /// Every task, in stage order.
    pub tasks: Vec<TaskSpec>,
    /// The result stage's tasks, in partition order: their bucket 0 is the job's answer.
    pub outputs: Vec<TaskId>,
}

impl TaskGraph {
    /// Builds the graph from stages given in topological order.
    pub fn from_stages(stages: Vec<Stage>) -> Self {
        let mut tasks = Vec::new();
        for stage in &stages {
            for partition in 0..stage.tasks {
                tasks.push(TaskSpec {
                    id: TaskId {
                        stage: stage.id,
                        partition,
                    },
                    inputs: stage
                        .inputs
                        .iter()
                        .map(|&stage| InputRef { stage })
                        .collect(),
                    kind: TaskKind::Stage {
                        plan: Arc::clone(&stage.plan),
                        partition,
                        output: stage.output.clone(),
                    },
                    resources: Resources::default(),
                });
            }
        }
        let outputs = stages
            .last()
            .map(|s| {
                (0..s.tasks)
                    .map(|partition| TaskId {
                        stage: s.id,
                        partition,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            stages,
            tasks,
            outputs,
        }
    }

    /// Every task asks for `resources`.
    pub fn with_resources(mut self, resources: &Resources) -> Self {
        for task in &mut self.tasks {
            task.resources = resources.clone();
        }
        self
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
