//! Shoal's own plan nodes in DataFusion's plan serialisation (`datafusion-proto`), so a
//! stage can be sent to another process and rebuilt there.
//!
//! DataFusion serialises its operators; [`ShoalCodec`] adds `ShuffleWriteExec`,
//! `ShuffleReadExec` and `FileScanContextExec` as extension nodes. Use [`encode_plan`]
//! and [`decode_plan`].

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Result, internal_datafusion_err, internal_err, plan_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{ExecutionPlan, Partitioning, PlanProperties};
use datafusion_proto::bytes::physical_plan_to_bytes_with_proto_converter;
use datafusion_proto::physical_plan::from_proto::{
    parse_physical_sort_exprs, parse_protobuf_partitioning,
};
use datafusion_proto::physical_plan::to_proto::{
    serialize_partitioning, serialize_physical_sort_exprs,
};
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;

use crate::adaptive::{AdaptiveJoinExec, BroadcastSwitch};
use crate::array::program::{ChunkProgram, ProgramNode};
use crate::array::{CellDim, CellScanExec, CellVar, ChunkExec, ChunkGrid, NdChunk, Op};
use crate::checked::{CheckedConverter, check_ipc_stream};
use crate::equivalence::{EquivalenceProto, decode_equivalences, encode_equivalences};
use crate::graph::OutputSpec;
use crate::key_filter::KeyFilterExec;
use crate::scan::FileScanContextExec;
use crate::shuffle::{ReadMode, ShuffleReadExec, ShuffleWriteExec};
use crate::sink::StagedSinkExec;

#[derive(Clone, PartialEq, prost::Message)]
struct NodeProto {
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(message, tag = "1")]
    Write(WriteProto),
    #[prost(message, tag = "2")]
    Read(ReadProto),
    #[prost(message, tag = "3")]
    Scan(ScanProto),
    #[prost(message, tag = "4")]
    Chunk(ChunkProto),
    #[prost(message, tag = "5")]
    Cells(CellsProto),
    #[prost(message, tag = "6")]
    StagedSink(StagedSinkProto),
    #[prost(message, tag = "7")]
    KeyFilter(KeyFilterProto),
    #[prost(message, tag = "8")]
    AdaptiveJoin(AdaptiveJoinProto),
}

#[derive(Clone, PartialEq, prost::Message)]
struct AdaptiveJoinProto {
    /// The most build rows the broadcast join takes.
    #[prost(uint64, tag = "1")]
    max_rows: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct KeyFilterProto {
    /// The probe keys, as the expressions of a hash partitioning (which the plan codec
    /// already carries).
    #[prost(message, optional, tag = "1")]
    keys: Option<protobuf::Partitioning>,
    /// The dynamic filter it sets for the scans under it (carried with their copies of
    /// it as one filter).
    #[prost(message, optional, boxed, tag = "2")]
    scan_bounds: Option<Box<protobuf::PhysicalExprNode>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StagedSinkProto {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CellsProto {
    #[prost(string, repeated, tag = "1")]
    dim_names: Vec<String>,
    /// Each dimension's labels as an Arrow IPC stream of one one-column batch.
    #[prost(bytes = "vec", repeated, tag = "2")]
    dim_labels: Vec<Vec<u8>>,
    #[prost(string, repeated, tag = "3")]
    var_names: Vec<String>,
    #[prost(message, repeated, tag = "4")]
    var_programs: Vec<ChunkProto>,
    /// The row grid as JSON.
    #[prost(string, tag = "5")]
    grid: String,
    /// The output columns as JSON.
    #[prost(string, tag = "6")]
    columns: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ChunkProto {
    /// The program's nodes as JSON.
    #[prost(string, tag = "1")]
    nodes: String,
    /// Each literal's chunks as an Arrow IPC stream, one batch per chunk.
    #[prost(bytes = "vec", repeated, tag = "2")]
    literals: Vec<Vec<u8>>,
    /// `ChunkProgram::pieces` as JSON, empty when absent.
    #[prost(string, tag = "3")]
    pieces: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WriteProto {
    /// Absent for `OutputSpec::Single`.
    #[prost(message, optional, tag = "1")]
    partitioning: Option<protobuf::Partitioning>,
    /// Buckets of `OutputSpec::Pieces` (0 for the others).
    #[prost(uint64, tag = "2")]
    pieces: u64,
    /// Whether a hash exchange also summarises its keys.
    #[prost(bool, tag = "3")]
    key_summary: bool,
    /// The size of the summary's Bloom filter, a power of two of bits.
    #[prost(uint32, tag = "4")]
    bloom_log2: u32,
    /// With a second input (a build stage's key summaries): the most build rows for which
    /// every row stays in the task's own bucket (see `crate::adaptive`).
    #[prost(uint64, optional, tag = "5")]
    own_bucket_max_rows: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReadProto {
    #[prost(uint64, tag = "1")]
    stage: u64,
    #[prost(uint64, tag = "2")]
    input_tasks: u64,
    #[prost(bool, tag = "3")]
    per_task: bool,
    #[prost(message, optional, tag = "4")]
    schema: Option<protobuf::Schema>,
    #[prost(message, optional, tag = "5")]
    partitioning: Option<protobuf::Partitioning>,
    /// Per-partition ordering (kept for reads that feed a sort-preserving merge).
    #[prost(message, repeated, tag = "6")]
    ordering: Vec<protobuf::PhysicalSortExprNode>,
    /// Equal expressions and constants (see [`crate::equivalence`]).
    #[prost(message, repeated, tag = "7")]
    equivalences: Vec<EquivalenceProto>,
    /// The bucket a `ReadMode::Bucket` read reads.
    #[prost(uint64, optional, tag = "8")]
    bucket: Option<u64>,
    /// The buckets a `ReadMode::Buckets` read reads (all below this one).
    #[prost(uint64, optional, tag = "9")]
    buckets: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScanProto {
    #[prost(string, repeated, tag = "1")]
    files: Vec<String>,
    /// The wrapped scan, serialised on its own (the wrapper presents it as a leaf).
    #[prost(bytes = "vec", tag = "2")]
    input: Vec<u8>,
}

/// The `datafusion-proto` extension codec for Shoal's plan nodes.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShoalCodec;

/// Serialises a stage plan (or any plan containing Shoal's nodes) to bytes. A broadcast
/// join's dynamic filter travels with it and with the probe-side scans that read it,
/// in the state it had (see [`crate::build_bounds`]).
pub fn encode_plan(plan: Arc<dyn ExecutionPlan>) -> Result<Vec<u8>> {
    let plan = crate::build_bounds::join_filters_for_encoding(plan)?;
    Ok(physical_plan_to_bytes_with_proto_converter(plan, &ShoalCodec, &CheckedConverter)?.to_vec())
}

/// The most buckets a decoded read may read into one partition (a broadcast of a hash
/// exchange's whole output reads every bucket of every task).
const MAX_BUCKETS: u64 = 1 << 24;

/// How deep [`decode_plan`] may be entered within itself (a scan's wrapped plan is
/// decoded on its own); Shoal's plans nest one level.
const MAX_DECODE_DEPTH: usize = 16;

std::thread_local! {
    static DECODE_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// One level of [`decode_plan`] on this thread, left when dropped. The outermost level
/// starts and ends with no shared expressions.
struct DecodeDepth;

impl DecodeDepth {
    fn enter() -> Option<Self> {
        DECODE_DEPTH.with(|depth| {
            let now = depth.get() + 1;
            (now <= MAX_DECODE_DEPTH).then(|| {
                if now == 1 {
                    crate::checked::forget_shared_exprs();
                }
                depth.set(now);
                DecodeDepth
            })
        })
    }
}

impl Drop for DecodeDepth {
    fn drop(&mut self) {
        let left = DECODE_DEPTH.with(|depth| {
            let left = depth.get().saturating_sub(1);
            depth.set(left);
            left
        });
        if left == 0 {
            crate::checked::forget_shared_exprs();
        }
    }
}

/// Rebuilds a plan from [`encode_plan`]'s bytes, its broadcast joins filling their
/// dynamic filters again; functions resolve through `ctx`. Bytes
/// that do not make a plan are an error: `datafusion-proto` unwraps some fields it expects
/// (e.g. Parquet options), so its panics on malformed input are caught and reported here,
/// and a worker keeps running whatever the network hands it. Embedded Arrow IPC streams
/// are checked before they are read (see [`crate::checked`]).
pub fn decode_plan(bytes: &[u8], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    let malformed =
        |why: &dyn std::fmt::Display| plan_err!("malformed plan ({} bytes): {why}", bytes.len());
    // Nested scans decode their own bytes through here, each with a fresh protobuf
    // nesting limit: bound the nesting so bytes cannot overflow the stack (an abort).
    let Some(_depth) = DecodeDepth::enter() else {
        return malformed(&format!("scans nested more than {MAX_DECODE_DEPTH} deep"));
    };
    let node = match protobuf::PhysicalPlanNode::decode(bytes) {
        Ok(node) => node,
        Err(e) => return malformed(&e),
    };
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let decode_ctx = PhysicalPlanDecodeContext::new(ctx, &ShoalCodec);
        CheckedConverter
            .proto_to_execution_plan(&node, &decode_ctx)
            .and_then(crate::build_bounds::fill_decoded_join_filters)
    }));
    decoded.unwrap_or_else(|panic| {
        malformed(&format!(
            "the decoder failed: {}",
            crate::panic_message(panic)
        ))
    })
}

/// A [`ShuffleWriteExec`] over `inputs` (its input, and a build stage's key summaries
/// when it keeps rows in the task's own bucket for a small build side).
fn decode_write(
    write: &WriteProto,
    inputs: &[Arc<dyn ExecutionPlan>],
    decode_ctx: &PhysicalPlanDecodeContext<'_>,
    proto_converter: &dyn PhysicalProtoConverterExtension,
) -> Result<Arc<dyn ExecutionPlan>> {
    let (input, summaries) = match (inputs, write.own_bucket_max_rows) {
        ([input], None) => (input, None),
        ([input, summaries], Some(max_rows)) => (input, Some((summaries, max_rows))),
        _ => return internal_err!("ShuffleWriteExec with {} inputs", inputs.len()),
    };
    let output = match parse_protobuf_partitioning(
        write.partitioning.as_ref(),
        decode_ctx,
        &input.schema(),
        proto_converter,
    )? {
        Some(p) => OutputSpec::Repartition(p),
        None if write.pieces > 0 => {
            let buckets = input
                .downcast_ref::<ChunkExec>()
                .map(|c| c.program().buckets());
            if buckets != Some(write.pieces as usize) {
                return internal_err!(
                    "a stage writes {} pieces its array program does not cut",
                    write.pieces
                );
            }
            OutputSpec::Pieces(write.pieces as usize)
        }
        None => OutputSpec::Single,
    };
    let mut exec = ShuffleWriteExec::new(Arc::clone(input), output);
    if write.key_summary {
        exec = exec.with_key_summary(crate::key_filter::bloom_size(write.bloom_log2)?);
    }
    if let Some((summaries, max_rows)) = summaries {
        if !matches!(exec.output(), OutputSpec::Repartition(p) if p.partition_count() > 0) {
            return internal_err!("a write keeping rows in its own bucket without buckets");
        }
        exec = exec.with_broadcast_switch(BroadcastSwitch {
            summaries: Arc::clone(summaries),
            max_rows,
        });
    }
    Ok(Arc::new(exec))
}

/// A [`KeyFilterExec`] over `inputs` (its input and its summaries' read).
fn decode_key_filter(
    filter: &KeyFilterProto,
    inputs: &[Arc<dyn ExecutionPlan>],
    decode_ctx: &PhysicalPlanDecodeContext<'_>,
    proto_converter: &dyn PhysicalProtoConverterExtension,
) -> Result<Arc<dyn ExecutionPlan>> {
    let [input, summaries] = inputs else {
        return internal_err!("KeyFilterExec takes two inputs, got {}", inputs.len());
    };
    let keys = parse_protobuf_partitioning(
        filter.keys.as_ref(),
        decode_ctx,
        &input.schema(),
        proto_converter,
    )?;
    let Some(Partitioning::Hash(keys, _)) = keys else {
        return internal_err!("KeyFilterExec without keys");
    };
    crate::key_filter::check_summary_schema(&keys, &input.schema(), &summaries.schema())?;
    let exec = KeyFilterExec::new(Arc::clone(input), Arc::clone(summaries), keys);
    let Some(bounds) = &filter.scan_bounds else {
        return Ok(Arc::new(exec));
    };
    let bounds = proto_converter.proto_to_physical_expr(bounds, &input.schema(), decode_ctx)?;
    let Ok(bounds) = (bounds as Arc<dyn std::any::Any + Send + Sync>)
        .downcast::<datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr>(
    ) else {
        return plan_err!("a key filter's scan bounds that are no dynamic filter");
    };
    // The key filter sets it over its keys: a filter over other columns would bound them.
    let columns = PhysicalExpr::children(bounds.as_ref());
    let over_keys = columns.len() == exec.keys().len()
        && columns.iter().zip(exec.keys()).all(|(c, k)| c.eq(&k));
    if !over_keys {
        return plan_err!("a key filter's scan bounds over columns other than its keys");
    }
    Ok(Arc::new(exec.with_scan_bounds(bounds)))
}

impl PhysicalExtensionCodec for ShoalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = NodeProto::decode(buf)
            .map_err(|e| internal_datafusion_err!("cannot decode a Shoal plan node: {e}"))?;
        let decode_ctx = PhysicalPlanDecodeContext::new(ctx, self);
        match node.kind {
            Some(Kind::Write(write)) => decode_write(&write, inputs, &decode_ctx, proto_converter),
            Some(Kind::Read(read)) => {
                let proto_schema = read
                    .schema
                    .as_ref()
                    .ok_or_else(|| internal_datafusion_err!("ShuffleReadExec without a schema"))?;
                let schema = Arc::new(Schema::try_from(proto_schema)?);
                let partitioning = parse_protobuf_partitioning(
                    read.partitioning.as_ref(),
                    &decode_ctx,
                    &schema,
                    proto_converter,
                )?
                .ok_or_else(|| internal_datafusion_err!("ShuffleReadExec without partitioning"))?;
                let ordering = parse_physical_sort_exprs(
                    &read.ordering,
                    &decode_ctx,
                    &schema,
                    proto_converter,
                )?;
                let mut eq = match LexOrdering::new(ordering) {
                    Some(o) => EquivalenceProperties::new_with_orderings(Arc::clone(&schema), [o]),
                    None => EquivalenceProperties::new(Arc::clone(&schema)),
                };
                decode_equivalences(&read.equivalences, &mut eq, &decode_ctx, proto_converter)?;
                let properties = PlanProperties::new(
                    eq,
                    partitioning,
                    EmissionType::Incremental,
                    Boundedness::Bounded,
                );
                let mode = match (read.bucket, read.buckets, read.per_task) {
                    (Some(bucket), _, _) => ReadMode::Bucket(bucket as usize),
                    (None, Some(n), _) if n.saturating_mul(read.input_tasks) <= MAX_BUCKETS => {
                        ReadMode::Buckets(n as usize)
                    }
                    (None, Some(n), _) => {
                        return internal_err!(
                            "a read of {n} buckets of each of {} tasks",
                            read.input_tasks
                        );
                    }
                    (None, None, true) => ReadMode::PerTask,
                    (None, None, false) => ReadMode::Gather,
                };
                Ok(Arc::new(ShuffleReadExec::new(
                    read.stage as usize,
                    read.input_tasks as usize,
                    mode,
                    Arc::new(properties),
                )))
            }
            Some(Kind::Chunk(chunk)) => {
                Ok(Arc::new(ChunkExec::new(Arc::new(decode_program(&chunk)?))))
            }
            Some(Kind::Cells(cells)) => Ok(Arc::new(decode_cells(&cells)?)),
            Some(Kind::StagedSink(staged)) => {
                let [input] = inputs else {
                    return internal_err!("StagedSinkExec takes one input, got {}", inputs.len());
                };
                Ok(Arc::new(StagedSinkExec::from_parts(
                    Arc::clone(input),
                    staged.id,
                )))
            }
            Some(Kind::KeyFilter(filter)) => {
                decode_key_filter(&filter, inputs, &decode_ctx, proto_converter)
            }
            Some(Kind::AdaptiveJoin(adaptive)) => {
                let [partitioned, broadcast, summaries] = inputs else {
                    return internal_err!(
                        "AdaptiveJoinExec takes three inputs, got {}",
                        inputs.len()
                    );
                };
                Ok(Arc::new(AdaptiveJoinExec::try_new(
                    Arc::clone(partitioned),
                    Arc::clone(broadcast),
                    Arc::clone(summaries),
                    adaptive.max_rows,
                )?))
            }
            Some(Kind::Scan(scan)) => {
                let input = decode_plan(&scan.input, ctx)?;
                Ok(Arc::new(FileScanContextExec::from_parts(input, scan.files)))
            }
            None => internal_err!("empty Shoal plan node"),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let kind = if let Some(write) = node.downcast_ref::<ShuffleWriteExec>() {
            let (partitioning, pieces) = match write.output() {
                OutputSpec::Single => (None, 0),
                OutputSpec::Pieces(n) => (None, *n as u64),
                OutputSpec::Repartition(p) => {
                    (Some(serialize_partitioning(p, self, proto_converter)?), 0)
                }
            };
            Kind::Write(WriteProto {
                partitioning,
                pieces,
                key_summary: write.key_summary().is_some(),
                bloom_log2: write.key_summary().map_or(0, u32::from),
                own_bucket_max_rows: write.broadcast_switch().map(|s| s.max_rows),
            })
        } else if let Some(read) = node.downcast_ref::<ShuffleReadExec>() {
            let properties = read.properties();
            let schema = properties.eq_properties.schema();
            let ordering = match properties.output_ordering() {
                Some(o) => serialize_physical_sort_exprs(o.iter().cloned(), self, proto_converter)?,
                None => Vec::new(),
            };
            Kind::Read(ReadProto {
                stage: read.stage() as u64,
                input_tasks: read.input_tasks() as u64,
                per_task: read.mode() == ReadMode::PerTask,
                bucket: match read.mode() {
                    ReadMode::Bucket(bucket) => Some(bucket as u64),
                    _ => None,
                },
                buckets: match read.mode() {
                    ReadMode::Buckets(n) => Some(n as u64),
                    _ => None,
                },
                schema: Some(protobuf::Schema::try_from(schema.as_ref())?),
                partitioning: Some(serialize_partitioning(
                    &properties.partitioning,
                    self,
                    proto_converter,
                )?),
                ordering,
                equivalences: encode_equivalences(
                    &properties.eq_properties,
                    self,
                    proto_converter,
                )?,
            })
        } else if let Some(chunk) = node.downcast_ref::<ChunkExec>() {
            Kind::Chunk(encode_program(chunk.program())?)
        } else if let Some(cells) = node.downcast_ref::<CellScanExec>() {
            Kind::Cells(encode_cells(cells)?)
        } else if let Some(filter) = node.downcast_ref::<KeyFilterExec>() {
            let keys = Partitioning::Hash(filter.keys().to_vec(), 1);
            let scan_bounds = filter
                .scan_bounds()
                .map(|f| proto_converter.physical_expr_to_proto(&(Arc::clone(f) as _), self))
                .transpose()?
                .map(Box::new);
            Kind::KeyFilter(KeyFilterProto {
                keys: Some(serialize_partitioning(&keys, self, proto_converter)?),
                scan_bounds,
            })
        } else if let Some(adaptive) = node.downcast_ref::<AdaptiveJoinExec>() {
            Kind::AdaptiveJoin(AdaptiveJoinProto {
                max_rows: adaptive.max_rows(),
            })
        } else if let Some(staged) = node.downcast_ref::<StagedSinkExec>() {
            Kind::StagedSink(StagedSinkProto {
                id: staged.id().to_string(),
            })
        } else if let Some(scan) = node.downcast_ref::<FileScanContextExec>() {
            Kind::Scan(ScanProto {
                files: scan.files().to_vec(),
                input: encode_plan(Arc::clone(scan.input()))?,
            })
        } else {
            return internal_err!("ShoalCodec cannot encode {}", node.name());
        };
        NodeProto { kind: Some(kind) }
            .encode(buf)
            .map_err(|e| internal_datafusion_err!("cannot encode a Shoal plan node: {e}"))
    }
}

fn encode_program(program: &ChunkProgram) -> Result<ChunkProto> {
    let nodes = serde_json::to_string(&program.nodes)
        .map_err(|e| internal_datafusion_err!("cannot encode an array program: {e}"))?;
    let mut literals = Vec::with_capacity(program.literals.len());
    for chunks in &program.literals {
        let mut bytes = Vec::new();
        if let Some(first) = chunks.first() {
            let schema = first.to_batch("values")?.schema();
            let mut writer = StreamWriter::try_new(&mut bytes, &schema)?;
            for c in chunks.iter() {
                let batch = c.to_batch("values")?;
                writer.write(&RecordBatch::try_new(
                    Arc::clone(&schema),
                    batch.columns().to_vec(),
                )?)?;
            }
            writer.finish()?;
        }
        literals.push(bytes);
    }
    let pieces = match &program.pieces {
        Some(grid) => serde_json::to_string(grid)
            .map_err(|e| internal_datafusion_err!("cannot encode an array program: {e}"))?,
        None => String::new(),
    };
    Ok(ChunkProto {
        nodes,
        literals,
        pieces,
    })
}

fn decode_program(proto: &ChunkProto) -> Result<ChunkProgram> {
    let nodes: Vec<ProgramNode> = serde_json::from_str(&proto.nodes)
        .map_err(|e| internal_datafusion_err!("cannot decode an array program: {e}"))?;
    let mut literals: Vec<Arc<Vec<NdChunk>>> = (0..proto.literals.len())
        .map(|_| Arc::new(Vec::new()))
        .collect();
    for node in &nodes {
        let Op::Literal { id, grid } = &node.op else {
            continue;
        };
        let bytes = proto
            .literals
            .get(*id)
            .ok_or_else(|| internal_datafusion_err!("array literal {id} is missing"))?;
        check_ipc_stream(bytes, &format!("array literal {id}"))?;
        let reader = StreamReader::try_new(std::io::Cursor::new(bytes.as_slice()), None)?;
        let mut chunks = Vec::with_capacity(grid.len());
        for (i, batch) in reader.enumerate() {
            let shape: Vec<usize> = grid.region(i).iter().map(|r| r.end - r.start).collect();
            chunks.push(NdChunk::from_batch(&batch?, 0, node.dtype, &shape)?);
        }
        literals[*id] = Arc::new(chunks);
    }
    let pieces: Option<ChunkGrid> = match proto.pieces.as_str() {
        "" => None,
        text => Some(
            serde_json::from_str(text)
                .map_err(|e| internal_datafusion_err!("cannot decode an array program: {e}"))?,
        ),
    };
    if nodes.is_empty() {
        return internal_err!("an array program without nodes");
    }
    for (i, node) in nodes.iter().enumerate() {
        if node.op.inputs().iter().any(|&&j| j >= i) {
            return internal_err!("array program node {i} reads a later node");
        }
        // Runs go along one axis, a chunk or more at a time (see `ChunkProgram::merge_states`).
        if let Op::Partial { x, run, .. } = &node.op
            && !run.is_empty()
            && (run.len() != nodes[*x].grid.ndim()
                || run.contains(&0)
                || run.iter().filter(|&&r| r > 1).count() > 1)
        {
            return internal_err!("array program node {i} runs along the wrong axes");
        }
    }
    // Cutting chunks into pieces assumes each piece lies inside one chunk.
    let refines = |coarse: &ChunkGrid, fine: &ChunkGrid| {
        coarse.shape() == fine.shape() && coarse.refine(fine) == *fine
    };
    let root = nodes.last().map(|n| &n.grid);
    if let (Some(fine), Some(root)) = (&pieces, root)
        && !refines(root, fine)
    {
        return internal_err!("an array program's pieces do not refine its chunks");
    }
    for node in &nodes {
        if let Op::Input {
            grid,
            split: Some(coarse),
            ..
        } = &node.op
            && !refines(coarse, grid)
        {
            return internal_err!("an array input's pieces do not refine its chunks");
        }
    }
    Ok(ChunkProgram {
        nodes,
        literals,
        pieces,
    })
}

fn json_err(e: serde_json::Error) -> datafusion::common::DataFusionError {
    internal_datafusion_err!("cannot (de)serialise a cell scan: {e}")
}

fn encode_cells(cells: &CellScanExec) -> Result<CellsProto> {
    let mut dim_labels = Vec::with_capacity(cells.dims().len());
    for dim in cells.dims() {
        let batch = RecordBatch::try_from_iter([("labels", Arc::clone(&dim.labels))])?;
        let mut bytes = Vec::new();
        let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema())?;
        writer.write(&batch)?;
        writer.finish()?;
        drop(writer);
        dim_labels.push(bytes);
    }
    Ok(CellsProto {
        dim_names: cells.dims().iter().map(|d| d.name.clone()).collect(),
        dim_labels,
        var_names: cells.vars().iter().map(|v| v.name.clone()).collect(),
        var_programs: cells
            .vars()
            .iter()
            .map(|v| encode_program(&v.program))
            .collect::<Result<_>>()?,
        grid: serde_json::to_string(cells.grid()).map_err(json_err)?,
        columns: serde_json::to_string(cells.columns()).map_err(json_err)?,
    })
}

fn decode_cells(proto: &CellsProto) -> Result<CellScanExec> {
    let mut dims = Vec::with_capacity(proto.dim_names.len());
    for (name, bytes) in proto.dim_names.iter().zip(&proto.dim_labels) {
        check_ipc_stream(bytes, &format!("labels of dimension '{name}'"))?;
        let mut reader = StreamReader::try_new(std::io::Cursor::new(bytes.as_slice()), None)?;
        let batch = reader.next().ok_or_else(|| {
            internal_datafusion_err!("labels of dimension '{name}' are missing")
        })??;
        dims.push(CellDim {
            name: name.clone(),
            labels: Arc::clone(batch.column(0)),
        });
    }
    let vars = proto
        .var_names
        .iter()
        .zip(&proto.var_programs)
        .map(|(name, program)| {
            Ok(CellVar {
                name: name.clone(),
                program: Arc::new(decode_program(program)?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    CellScanExec::try_new(
        dims,
        vars,
        serde_json::from_str(&proto.grid).map_err(json_err)?,
        serde_json::from_str(&proto.columns).map_err(json_err)?,
    )
}
