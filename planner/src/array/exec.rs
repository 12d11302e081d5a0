//! `ChunkExec`: runs a [`ChunkProgram`] as a DataFusion operator, so array stages ride on
//! the same scheduler, result store, transport and plan codec as SQL stages. Partition `i`
//! fetches the input chunks task `i` needs, evaluates the program and returns its chunk as
//! one batch (shape in the schema metadata).

use std::sync::Arc;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_datafusion_err, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::TryStreamExt;

use super::chunk::NdChunk;
use super::program::{ChunkProgram, Fetched};
use crate::graph::TaskId;
use crate::shuffle::{PartitionKey, shuffle_env};

/// One array stage: partition `i` computes chunk `i` of the program's root.
#[derive(Debug)]
pub struct ChunkExec {
    program: Arc<ChunkProgram>,
    metrics: ExecutionPlanMetricsSet,
    properties: Arc<PlanProperties>,
}

/// The schema of a program's output batches (without the per-chunk shape metadata).
pub fn program_schema(program: &ChunkProgram) -> SchemaRef {
    Arc::new(Schema::new(
        program
            .output_fields()
            .iter()
            .map(|(name, dtype)| Field::new(*name, dtype.storage_type(), false))
            .collect::<Vec<_>>(),
    ))
}

impl ChunkExec {
    /// An operator running `program`.
    pub fn new(program: Arc<ChunkProgram>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(program_schema(&program)),
            Partitioning::UnknownPartitioning(program.tasks()),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self {
            program,
            metrics: ExecutionPlanMetricsSet::new(),
            properties: Arc::new(properties),
        }
    }

    /// The program run.
    pub fn program(&self) -> &Arc<ChunkProgram> {
        &self.program
    }
}

impl DisplayAs for ChunkExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let root = &self.program.nodes[self.program.root()];
        let ops: Vec<String> = self
            .program
            .nodes
            .iter()
            .map(|n| op_name(&n.op).to_string())
            .collect();
        write!(
            f,
            "ChunkExec: {} {:?} chunks={} ops=[{}]",
            root.dtype,
            root.grid.shape(),
            self.program.tasks(),
            ops.join(", ")
        )
    }
}

fn op_name<I>(op: &super::ops::Op<I>) -> &'static str {
    use super::ops::Op::*;
    match op {
        Random { .. } => "random",
        Full { .. } => "full",
        Arange { .. } => "arange",
        Literal { .. } => "literal",
        Input { .. } => "input",
        Unary { op, .. } => op.name(),
        Binary { op, .. } => op.name(),
        Where { .. } => "where",
        Cast { .. } => "cast",
        Slice { .. } => "slice",
        Take { .. } => "take",
        Transpose { .. } => "transpose",
        BroadcastTo { .. } => "broadcast_to",
        ExpandDims { .. } => "expand_dims",
        Squeeze { .. } => "squeeze",
        Rolling { .. } => "rolling",
        Concat { .. } => "concat",
        Rechunk { .. } => "rechunk",
        Contract { .. } => "contract",
        Reduce { op, .. } => op.name(),
        Partial { .. } => "partial",
        Combine { .. } => "combine",
    }
}

impl ExecutionPlan for ChunkExec {
    fn name(&self) -> &str {
        "ChunkExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("ChunkExec is a leaf");
        }
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let program = Arc::clone(&self.program);
        let needs = program.needs(partition)?;
        let mut fetches = Vec::with_capacity(needs.len());
        if !needs.is_empty() {
            let env = shuffle_env(&context)?;
            for (node, chunk) in needs {
                let super::ops::Op::Input { stage, .. } = &program.nodes[node].op else {
                    return internal_err!("node {node} is not an input");
                };
                let from = *env
                    .locations
                    .get(stage)
                    .and_then(|l| l.get(chunk))
                    .ok_or_else(|| {
                        internal_datafusion_err!("no location for stage {stage} chunk {chunk}")
                    })?;
                let key = PartitionKey {
                    job: env.job,
                    task: TaskId {
                        stage: *stage,
                        partition: chunk,
                    },
                    bucket: 0,
                };
                fetches.push(((node, chunk), env.io.fetch(key, from)?));
            }
        }
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let schema = self.schema();
        let fut = async move {
            let mut fetched = Fetched::new();
            for (key, stream) in fetches {
                let input_schema = stream.schema();
                let batches: Vec<RecordBatch> = stream.try_collect().await?;
                let batch = match batches.len() {
                    0 => RecordBatch::new_empty(input_schema),
                    1 => batches.into_iter().next().expect("one batch"),
                    _ => concat_batches(&batches[0].schema(), &batches)?,
                };
                fetched.insert(key, batch);
            }
            let timer = baseline.elapsed_compute().timer();
            let columns = program.run(partition, &fetched)?;
            let batch = NdChunk::fields_to_batch(&columns)?;
            timer.done();
            baseline.record_output(batch.num_rows());
            Ok(batch)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(fut),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
