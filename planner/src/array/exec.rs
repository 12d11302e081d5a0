//! `ChunkExec`: runs a [`ChunkProgram`] as a DataFusion operator, so array stages ride on
//! the same scheduler, result store, transport and plan codec as SQL stages. Partition `i`
//! fetches the input chunks task `i` needs, evaluates the program and returns its chunk as
//! one batch (shape in the schema metadata).

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Result, internal_err};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

use super::dtype::DType;
use super::ops::Op;

use super::chunk::NdChunk;
use super::program::{ChunkProgram, Fetched};
use crate::shuffle::{ShuffleEnv, shuffle_env};

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
        ZarrRead { .. } => "zarr_read",
        ZarrWrite { .. } => "zarr_write",
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
        Reshape { .. } => "reshape",
        Concat { .. } => "concat",
        Rechunk { .. } => "rechunk",
        Contract { .. } => "contract",
        Reduce { op, .. } => op.name(),
        Partial { .. } => "partial",
        Combine { .. } => "combine",
    }
}

impl ExecutionPlan for ChunkExec {
    leaf_plan_methods!("ChunkExec");

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let program = Arc::clone(&self.program);
        let env = context.runtime_env();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let schema = self.schema();
        let columns = run_task(Arc::clone(&program), partition, &context, baseline.clone())?;
        let fut = async move {
            let columns = columns.await?;
            if let Op::ZarrWrite {
                store,
                path,
                metadata,
                ..
            } = &program.nodes[program.root()].op
            {
                let chunk = &columns[0].1;
                let coords: Vec<u64> = program.nodes[program.root()]
                    .grid
                    .coords(partition)
                    .iter()
                    .map(|&c| c as u64)
                    .collect();
                let values = to_user_type(chunk)?;
                shoal_io::zarr::write_chunk(&env, store, path, metadata, &coords, &values).await?;
                return Ok(vec![RecordBatch::new_empty(schema)]);
            }
            let batches = match &columns[..] {
                [(name, chunk)] if program.pieces.is_some() => program
                    .cut(partition, chunk)?
                    .into_iter()
                    .map(|piece| NdChunk::fields_to_batch(&[(name, piece)]))
                    .collect::<Result<Vec<_>>>()?,
                _ => vec![NdChunk::fields_to_batch(&columns)?],
            };
            for batch in &batches {
                baseline.record_output(batch.num_rows());
            }
            Ok::<_, datafusion::common::DataFusionError>(batches)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            futures::stream::once(fut)
                .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
                .try_flatten(),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The array program a stage plan runs, when it is an array stage (a `ChunkExec` under
/// the stage's `ShuffleWriteExec`).
pub fn stage_program(plan: &Arc<dyn ExecutionPlan>) -> Option<&Arc<ChunkProgram>> {
    let write = plan.downcast_ref::<crate::shuffle::ShuffleWriteExec>()?;
    Some(write.input().downcast_ref::<ChunkExec>()?.program())
}

/// The bytes task `partition` of a stage plan will hold, when the stage is an array stage
/// (see [`ChunkProgram::task_bytes`]).
pub fn task_bytes(plan: &Arc<dyn ExecutionPlan>, partition: usize) -> Option<usize> {
    stage_program(plan)?.task_bytes(partition).ok()
}

/// Task `partition` of `program`: fetches the input chunks it needs (earlier stages
/// through the task's shuffle environment, store chunks a few at a time) and evaluates
/// the program, timing the evaluation in `baseline`. Returns the output columns. A
/// partial step over a run of chunks fetches and reduces one chunk at a time.
pub fn run_task(
    program: Arc<ChunkProgram>,
    partition: usize,
    context: &Arc<TaskContext>,
    baseline: BaselineMetrics,
) -> Result<impl std::future::Future<Output = Result<Vec<(&'static str, NdChunk)>>> + Send + use<>>
{
    let env = context.runtime_env();
    let shuffle = shuffle_env(context).ok();
    let runs = program.partial_runs(partition)?;
    let needs = match runs {
        Some(_) => Vec::new(),
        None => program.needs(partition)?,
    };
    Ok(async move {
        if let Some((x, regions)) = runs {
            let mut states = None;
            for region in &regions {
                let needs = program.needs_of(x, region)?;
                let fetched = fetch_inputs(&program, needs, shuffle.as_deref(), &env).await?;
                let timer = baseline.elapsed_compute().timer();
                let piece = program.piece_states(x, region, &fetched)?;
                states = Some(program.merge_states(states, piece)?);
                timer.done();
            }
            return program.finish_states(states);
        }
        let fetched = fetch_inputs(&program, needs, shuffle.as_deref(), &env).await?;
        let timer = baseline.elapsed_compute().timer();
        let columns = program.run(partition, &fetched)?;
        timer.done();
        Ok(columns)
    })
}

/// The input chunks `needs` of `program`: earlier stages' outputs through `shuffle`,
/// store chunks a few at a time, each decoded as it arrives.
async fn fetch_inputs(
    program: &Arc<ChunkProgram>,
    needs: Vec<(usize, usize)>,
    shuffle: Option<&ShuffleEnv>,
    env: &Arc<RuntimeEnv>,
) -> Result<Fetched> {
    let mut fetches = Vec::with_capacity(needs.len());
    let mut reads = Vec::new();
    for (node, chunk) in needs {
        match &program.nodes[node].op {
            Op::Input { .. } => {
                let Some(shuffle) = shuffle else {
                    return internal_err!("array inputs must be read inside Shoal's executor");
                };
                let (stage, task, bucket) = program.source(node, chunk)?;
                let from = shuffle.located(stage, task).await?;
                let key = shuffle.key(stage, task, bucket);
                fetches.push(((node, chunk), shuffle.io.fetch(key, from)?));
            }
            Op::ZarrRead { .. } => reads.push((node, chunk)),
            _ => return internal_err!("node {node} is not an input"),
        }
    }
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
    let loaded: Vec<((usize, usize), RecordBatch)> = futures::stream::iter(reads)
        .map(|(node, chunk)| {
            let program = Arc::clone(program);
            let env = Arc::clone(env);
            async move {
                let batch = read_store_chunk(&program, node, chunk, &env).await?;
                Ok::<_, datafusion::common::DataFusionError>(((node, chunk), batch))
            }
        })
        .buffered(4)
        .try_collect()
        .await?;
    fetched.extend(loaded);
    Ok(fetched)
}

/// Chunk `chunk` of the store array behind `ZarrRead` node `node`, as a one-column batch
/// of the dtype's storage type.
async fn read_store_chunk(
    program: &ChunkProgram,
    node: usize,
    chunk: usize,
    env: &RuntimeEnv,
) -> Result<RecordBatch> {
    let n = &program.nodes[node];
    let Op::ZarrRead {
        store,
        path,
        metadata,
        grid,
    } = &n.op
    else {
        return internal_err!("node {node} is not a store read");
    };
    let coords: Vec<u64> = grid.coords(chunk).iter().map(|&c| c as u64).collect();
    let values = shoal_io::zarr::read_chunk(env, store, path, metadata, &coords).await?;
    let region = grid.region(chunk);
    let cells: usize = region.iter().map(|r| r.end - r.start).product();
    // Edge chunks come back at full chunk size: keep the part inside the array.
    let values = if values.len() == cells {
        values
    } else {
        let full: Vec<usize> = grid.chunks().iter().map(|c| c[0]).collect();
        crop(
            &values,
            &full,
            &region.iter().map(|r| r.end - r.start).collect::<Vec<_>>(),
        )?
    };
    let values = cast(&values, &n.dtype.storage_type())?;
    let chunk = NdChunk::from_storage(
        n.dtype,
        region.iter().map(|r| r.end - r.start).collect(),
        values,
    );
    chunk.to_batch("values")
}

/// The leading `shape` corner of a C-ordered block of `full` shape.
fn crop(values: &ArrayRef, full: &[usize], shape: &[usize]) -> Result<ArrayRef> {
    let n = shape.len();
    let mut strides = vec![1usize; n];
    for a in (0..n.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * full[a + 1];
    }
    let mut indices = Vec::with_capacity(shape.iter().product());
    super::chunk::for_each_lane(shape, &strides, 0, |start, len, step| {
        indices.extend((0..len).map(|j| (start + j * step) as u64));
    });
    let indices = datafusion::arrow::array::UInt64Array::from(indices);
    Ok(datafusion::arrow::compute::take(
        values.as_ref(),
        &indices,
        None,
    )?)
}

/// A chunk's values in the Arrow type users see (bool and datetimes as themselves).
pub fn to_user_type(chunk: &NdChunk) -> Result<ArrayRef> {
    let standard = chunk.to_standard();
    let batch = standard.to_batch("values")?;
    let values = batch.column(0);
    Ok(match chunk.dtype() {
        DType::Bool | DType::DateTime => cast(values, &chunk.dtype().arrow_type())?,
        _ => Arc::clone(values),
    })
}
