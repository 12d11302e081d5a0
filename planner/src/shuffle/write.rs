//! `ShuffleWriteExec`: the root of every stage.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array as _, ArrayData, RecordBatch, RecordBatchOptions, UInt64Array,
};
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_datafusion_err, internal_err};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::StreamExt;

use super::env::{Part, PartitionKey, ShuffleEnv, shuffle_env};
use crate::adaptive::BroadcastSwitch;
use crate::graph::OutputSpec;

static SUMMARY_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("bucket", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
    ]))
});

/// Schema of the one batch a `ShuffleWriteExec` partition returns: per bucket its row and
/// byte counts, which the scheduler uses for placement.
pub fn summary_schema() -> SchemaRef {
    Arc::clone(&SUMMARY_SCHEMA)
}

/// The bytes a task stored per bucket, in bucket order, read from the summary batches a
/// `ShuffleWriteExec` partition returns.
pub fn bucket_bytes(summary: &[RecordBatch]) -> Result<Vec<u64>> {
    let mut bytes = Vec::new();
    for batch in summary {
        let column = batch
            .column_by_name("bytes")
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
            .ok_or_else(|| {
                internal_datafusion_err!("a shuffle write summary has no UInt64 'bytes' column")
            })?;
        bytes.extend(column.values().iter().copied());
    }
    Ok(bytes)
}

/// The memory `batches` hold, each underlying allocation counted once. Slices of one
/// large batch (an in-memory table cut into `batch_size` rows) share their buffers;
/// `RecordBatch::get_array_memory_size` counts the whole buffer for every slice, which
/// made a 160 MB table look like hundreds of gigabytes and sent it to spill files.
pub fn held_bytes(batches: &[RecordBatch]) -> usize {
    // Per allocation, the most any of its users reaches into it: imported (FFI) buffers
    // report only their own extent as capacity, so a slice's view alone can undercount.
    fn visit(data: &ArrayData, held: &mut HashMap<usize, usize>) {
        let nulls = data.nulls().map(|n| n.buffer());
        for buffer in data.buffers().iter().chain(nulls) {
            let reach = buffer.capacity().max(buffer.ptr_offset() + buffer.len());
            let size = held.entry(buffer.data_ptr().as_ptr() as usize).or_default();
            *size = (*size).max(reach);
        }
        for child in data.child_data() {
            visit(child, held);
        }
    }
    let mut held = HashMap::new();
    for batch in batches {
        for column in batch.columns() {
            visit(&column.to_data(), &mut held);
        }
    }
    held.values().sum()
}

/// `batch` (just built by a coalescer, so its buffers are its own) without the spare
/// capacity of its buffers. A coalescer copies the strings of a string or binary view
/// column into blocks that grow to 1 MiB and hands the last one over whole: a batch of a
/// column of short strings may hold five times the bytes its rows use, for as long as
/// the bucket is kept.
fn shrunk(batch: RecordBatch) -> Result<RecordBatch> {
    let (schema, mut columns, rows) = batch.into_parts();
    for column in &mut columns {
        column.shrink_to_fit();
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema, columns, &options,
    )?)
}

/// The least a task hands over at once when its memory pool is full.
const MIN_PART: usize = 1 << 20;

/// A task's output buckets as they fill. The batches of a hash or round-robin exchange
/// (glued back together here, so they own their buffers) wait in memory counted in the
/// task's memory pool; when they reach an eighth of the pool, or the pool has no room for
/// more, they go to the store as the next part of their bucket (which keeps them in
/// memory or on disk within the worker's limit). So such an output is never held whole
/// outside the limit, and never takes much of the room the task's own operators (a join's
/// hash table, an aggregation) need. Other outputs are passed on as their operators made
/// them, often slices of larger batches whose buffers several of them share: split into
/// parts, the store would count a shared buffer once per part, so they go over whole at
/// the end.
struct Outputs {
    env: Arc<ShuffleEnv>,
    pending: Vec<Vec<RecordBatch>>,
    /// Bytes pending, and how many may be before they are handed over (`None`: all at
    /// the end).
    pending_bytes: usize,
    most: Option<usize>,
    /// Parts handed over, per bucket.
    parts: Vec<usize>,
    rows: Vec<u64>,
    bytes: Vec<u64>,
    reservation: MemoryReservation,
}

impl Outputs {
    fn new(
        env: Arc<ShuffleEnv>,
        buckets: usize,
        pool: &Arc<dyn MemoryPool>,
        in_parts: bool,
    ) -> Self {
        let most = match pool.memory_limit() {
            MemoryLimit::Finite(limit) if in_parts => Some(limit / 8),
            _ => None,
        };
        // Not a spilling consumer: a fair pool would halve the share of the task's other
        // spilling operators for it, while it holds an eighth at most.
        let reservation =
            MemoryConsumer::new(format!("ShuffleWriteExec[{}]", env.task)).register(pool);
        Self {
            env,
            pending: vec![Vec::new(); buckets],
            pending_bytes: 0,
            most,
            parts: vec![0; buckets],
            rows: vec![0; buckets],
            bytes: vec![0; buckets],
            reservation,
        }
    }

    fn push(&mut self, bucket: usize, batch: RecordBatch) -> Result<()> {
        let buckets = self.pending.len();
        let Some(pending) = self.pending.get_mut(bucket) else {
            return internal_err!("a task wrote more than {buckets} pieces");
        };
        let size = batch.get_array_memory_size();
        pending.push(batch);
        if let Some(most) = self.most {
            self.pending_bytes += size;
            // A full pool hands over no less than a part's worth: not a part per batch.
            let full = || self.pending_bytes >= MIN_PART;
            if self.pending_bytes > most || (self.reservation.try_grow(size).is_err() && full()) {
                self.hand_over(false)?;
            }
        }
        Ok(())
    }

    /// Hands every pending batch to the store as the next part of its bucket. The `last`
    /// time, every bucket gets its last part, empty or not, which completes it.
    fn hand_over(&mut self, last: bool) -> Result<()> {
        // What this task holds is in the store now: its room is free for the store too.
        self.reservation.free();
        self.pending_bytes = 0;
        for bucket in 0..self.pending.len() {
            if self.pending[bucket].is_empty() && !last {
                continue;
            }
            let batches = std::mem::take(&mut self.pending[bucket]);
            self.rows[bucket] += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            self.bytes[bucket] += held_bytes(&batches) as u64;
            let key = PartitionKey {
                job: self.env.job,
                task: self.env.task,
                bucket,
            };
            let part = Part {
                attempt: self.env.attempt,
                number: self.parts[bucket],
                last,
            };
            self.env.io.put(key, part, batches)?;
            self.parts[bucket] += 1;
        }
        Ok(())
    }
}

/// Runs one partition of its input, buckets the batches per [`OutputSpec`] and stores
/// every bucket through the task's `ShuffleIo`. Its own output is a summary batch.
#[derive(Debug)]
pub struct ShuffleWriteExec {
    input: Arc<dyn ExecutionPlan>,
    output: OutputSpec,
    /// Whether a hash exchange also writes a summary of its keys, as one more bucket, and
    /// the size of the summary's Bloom filter as a power of two of bits (see
    /// [`crate::key_filter`]).
    key_summary: Option<u8>,
    /// When the build side these summaries describe is small, every row goes to the
    /// task's own bucket instead of being hashed (see [`crate::adaptive`]).
    switch: Option<BroadcastSwitch>,
    metrics: ExecutionPlanMetricsSet,
    properties: Arc<PlanProperties>,
}

impl ShuffleWriteExec {
    /// Wraps `input`, bucketing its output per `output`.
    pub fn new(input: Arc<dyn ExecutionPlan>, output: OutputSpec) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(summary_schema()),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self {
            input,
            output,
            key_summary: None,
            switch: None,
            metrics: ExecutionPlanMetricsSet::new(),
            properties: Arc::new(properties),
        }
    }

    /// This write, also summarising its keys in bucket `n` of a hash exchange into `n`
    /// buckets (see [`crate::key_filter`]), with a Bloom filter of `2^bloom_log2` bits.
    pub fn with_key_summary(&self, bloom_log2: u8) -> Self {
        let mut write = Self::new(Arc::clone(&self.input), self.output.clone());
        write.switch = self.switch.clone();
        if matches!(self.output, OutputSpec::Repartition(Partitioning::Hash(..))) {
            write.key_summary = Some(bloom_log2);
        }
        write
    }

    /// This write, keeping its rows in the task's own bucket when `switch` says the
    /// join they go to broadcasts its build side (see [`crate::adaptive`]).
    pub fn with_broadcast_switch(&self, switch: BroadcastSwitch) -> Self {
        let mut write = Self::new(Arc::clone(&self.input), self.output.clone());
        write.key_summary = self.key_summary;
        write.switch = Some(switch);
        write
    }

    /// What decides whether the write keeps its rows in the task's own bucket.
    pub fn broadcast_switch(&self) -> Option<&BroadcastSwitch> {
        self.switch.as_ref()
    }

    /// Whether the write summarises its keys, and the size of its Bloom filter (a power
    /// of two of bits).
    pub fn key_summary(&self) -> Option<u8> {
        self.key_summary
    }

    /// The fragment below the write.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// How output is bucketed.
    pub fn output(&self) -> &OutputSpec {
        &self.output
    }
}

impl DisplayAs for ShuffleWriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "ShuffleWriteExec: output={}", self.output)?;
        if let Some(bloom_log2) = self.key_summary {
            write!(f, ", key_summary(bloom=2^{bloom_log2})")?;
        }
        if let Some(switch) = &self.switch {
            write!(f, ", own_bucket_if_build_rows<={}", switch.max_rows)?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ShuffleWriteExec {
    fn name(&self) -> &str {
        "ShuffleWriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        match &self.switch {
            Some(switch) => vec![&self.input, &switch.summaries],
            None => vec![&self.input],
        }
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        if let OutputSpec::Repartition(Partitioning::Hash(exprs, _)) = &self.output {
            for e in exprs {
                if f(e)? == TreeNodeRecursion::Stop {
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let wanted = 1 + usize::from(self.switch.is_some());
        if children.len() != wanted {
            return internal_err!("ShuffleWriteExec takes {wanted} children");
        }
        let mut write = Self::new(children.remove(0), self.output.clone());
        write.key_summary = self.key_summary;
        write.switch = self.switch.as_ref().map(|s| BroadcastSwitch {
            summaries: children.remove(0),
            max_rows: s.max_rows,
        });
        Ok(Arc::new(write))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let env = shuffle_env(&context)?;
        let input_partitions = self.input.output_partitioning().partition_count();
        let switch = match &self.switch {
            Some(s) => Some((s.summaries.execute(0, Arc::clone(&context))?, s.max_rows)),
            None => None,
        };
        let mut partitioner = match &self.output {
            OutputSpec::Single | OutputSpec::Pieces(_) => None,
            OutputSpec::Repartition(p) => Some(BatchPartitioner::try_new(
                p.clone(),
                MetricBuilder::new(&self.metrics).subset_time("repartition_time", partition),
                partition,
                input_partitions,
            )?),
        };
        let buckets = self.output.buckets();
        let mut keys = match &self.output {
            OutputSpec::Repartition(Partitioning::Hash(exprs, _)) => match self.key_summary {
                Some(bloom_log2) => Some(crate::key_filter::KeySummary::new(
                    exprs.clone(),
                    &self.input.schema(),
                    bloom_log2,
                )?),
                None => None,
            },
            _ => None,
        };
        let pieces = matches!(self.output, OutputSpec::Pieces(_));
        let batch_size = context.session_config().batch_size();
        let schema = self.input.schema();
        let pool = Arc::clone(context.memory_pool());
        let input = self.input.execute(partition, context)?;
        let rows_out = MetricBuilder::new(&self.metrics).output_rows(partition);
        let fut = async move {
            let in_parts = partitioner.is_some();
            // Rows that stay in the task's own bucket for a broadcast join are not hashed,
            // but glued and handed over in parts as hashed ones are (so slices sharing a
            // buffer are not counted once per part).
            let mut own_bucket = None;
            if let Some((summaries, max_rows)) = switch
                && crate::adaptive::broadcast_chosen(summaries, max_rows).await?
            {
                partitioner = None;
                own_bucket = Some(partition % buckets.max(1));
            }
            let written = buckets + usize::from(keys.is_some());
            let mut outputs = Outputs::new(env, written, &pool, in_parts);
            // Hash and round-robin splitting cut each batch into `buckets` small pieces;
            // consumers run faster on full batches, so pieces are glued back per bucket.
            let mut coalescers: Vec<BatchCoalescer> = match in_parts {
                true => (0..buckets)
                    .map(|_| BatchCoalescer::new(Arc::clone(&schema), batch_size))
                    .collect(),
                false => Vec::new(),
            };
            let mut input = input;
            let mut next_piece = 0;
            while let Some(batch) = input.next().await {
                let batch = batch?;
                let bucket = if pieces { next_piece } else { 0 };
                next_piece += 1;
                if batch.num_rows() == 0 {
                    continue;
                }
                let batch = conform(batch, &schema)?;
                if let Some(keys) = &mut keys {
                    keys.add(&batch);
                }
                match (partitioner.as_mut(), own_bucket) {
                    (None, Some(own)) => {
                        coalescers[own].push_batch(batch)?;
                        while let Some(full) = coalescers[own].next_completed_batch() {
                            outputs.push(own, shrunk(full)?)?;
                        }
                    }
                    (None, None) => outputs.push(bucket, batch)?,
                    (Some(p), _) => p.partition(batch, |bucket, b| {
                        coalescers[bucket].push_batch(b)?;
                        while let Some(full) = coalescers[bucket].next_completed_batch() {
                            outputs.push(bucket, shrunk(full)?)?;
                        }
                        Ok(())
                    })?,
                }
            }
            for (bucket, coalescer) in coalescers.iter_mut().enumerate() {
                coalescer.finish_buffered_batch()?;
                while let Some(rest) = coalescer.next_completed_batch() {
                    outputs.push(bucket, shrunk(rest)?)?;
                }
            }
            if let Some(keys) = keys {
                let summary = keys.finish()?;
                if summary.num_rows() > 0 {
                    outputs.push(buckets, summary)?;
                }
            }
            outputs.hand_over(true)?;
            let (rows, bytes) = (outputs.rows, outputs.bytes);
            rows_out.add(rows.iter().sum::<u64>() as usize);
            let summary = RecordBatch::try_new(
                summary_schema(),
                vec![
                    Arc::new(UInt64Array::from_iter_values(0..written as u64)),
                    Arc::new(UInt64Array::from(rows)),
                    Arc::new(UInt64Array::from(bytes)),
                ],
            )?;
            Ok::<_, datafusion::common::DataFusionError>(summary)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            summary_schema(),
            futures::stream::once(fut),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// Some sources ignore an empty projection and still produce their columns; the batch is
/// cut to the declared (column-less) schema so it crosses process boundaries intact.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if schema.fields().is_empty() && batch.num_columns() > 0 {
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        return Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            Vec::new(),
            &options,
        )?);
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch, StringViewArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, UInt64Type};
    use datafusion::common::{Result, exec_err};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::execution::SendableRecordBatchStream;
    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::expressions::col;
    use datafusion::physical_plan::{ExecutionPlan, Partitioning};
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::{ShuffleWriteExec, bucket_bytes};
    use crate::graph::{OutputSpec, TaskId};
    use crate::shuffle::env::{
        InputLocations, Part, PartitionKey, ShuffleEnv, ShuffleIo, WorkerId,
    };

    /// Keeps nothing: the test reads the bucket sizes from the write's summary.
    #[derive(Debug)]
    struct Discard;

    impl ShuffleIo for Discard {
        fn put(&self, _key: PartitionKey, _part: Part, _batches: Vec<RecordBatch>) -> Result<()> {
            Ok(())
        }

        fn fetch(&self, _key: PartitionKey, _from: WorkerId) -> Result<SendableRecordBatchStream> {
            exec_err!("nothing to fetch")
        }
    }

    /// Records each part handed over: bucket, part, rows.
    #[derive(Debug, Default)]
    struct Record(std::sync::Mutex<Vec<(usize, Part, usize)>>);

    impl ShuffleIo for Record {
        fn put(&self, key: PartitionKey, part: Part, batches: Vec<RecordBatch>) -> Result<()> {
            let rows = batches.iter().map(RecordBatch::num_rows).sum();
            self.0.lock().unwrap().push((key.bucket, part, rows));
            Ok(())
        }

        fn fetch(&self, _key: PartitionKey, _from: WorkerId) -> Result<SendableRecordBatchStream> {
            exec_err!("nothing to fetch")
        }
    }

    /// Writes `batches` hashed on `column` into `buckets` buckets through `io`, in a memory
    /// pool of `pool` bytes (unbounded for `None`); returns the write's summary.
    async fn hash_write(
        batches: Vec<RecordBatch>,
        column: &str,
        buckets: usize,
        io: Arc<dyn ShuffleIo>,
        pool: Option<usize>,
    ) -> Vec<RecordBatch> {
        let schema = batches[0].schema();
        let source =
            MemorySourceConfig::try_new_exec(&[batches], Arc::clone(&schema), None).unwrap();
        let hash = Partitioning::Hash(vec![col(column, &schema).unwrap()], buckets);
        let write = ShuffleWriteExec::new(source, OutputSpec::Repartition(hash));
        let env = ShuffleEnv {
            job: 1,
            task: TaskId {
                stage: 0,
                partition: 0,
            },
            attempt: 2,
            locations: Arc::new(InputLocations::new(HashMap::new())),
            io,
        };
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(bytes) = pool {
            runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(bytes)));
        }
        let config = SessionConfig::new().with_extension(Arc::new(env));
        let ctx = SessionContext::new_with_config_rt(config, runtime.build_arc().unwrap());
        let stream = write.execute(0, ctx.task_ctx()).unwrap();
        datafusion::physical_plan::common::collect(stream)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn output_beyond_the_task_s_memory_goes_to_the_store_in_parts() {
        // 100 batches of 8,192 rows, 64 KiB each: 6.4 MB, against a pool of 1 MiB.
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batches: Vec<RecordBatch> = (0..100)
            .map(|b| {
                let column = Int64Array::from_iter_values(b * 8192..(b + 1) * 8192);
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(column)]).unwrap()
            })
            .collect();
        let record = Arc::new(Record::default());
        let summary = hash_write(batches, "x", 3, Arc::clone(&record) as _, Some(1 << 20)).await;

        let parts = record.0.lock().unwrap().clone();
        for bucket in 0..3 {
            let mine: Vec<Part> = parts
                .iter()
                .filter(|p| p.0 == bucket)
                .map(|p| p.1)
                .collect();
            assert!(mine.len() >= 3, "bucket {bucket} in parts {mine:?}");
            // Numbered in order, all from this run, the last one completing the bucket.
            let n = mine.len();
            let want: Vec<Part> = (0..n)
                .map(|number| Part {
                    attempt: 2,
                    number,
                    last: number == n - 1,
                })
                .collect();
            assert_eq!(mine, want, "bucket {bucket}");
        }
        let rows: usize = parts.iter().map(|p| p.2).sum();
        assert_eq!(rows, 819_200);
        let counted = summary[0].column(1).as_primitive::<UInt64Type>();
        assert_eq!(counted.iter().flatten().sum::<u64>(), 819_200);
    }

    #[tokio::test]
    async fn hashed_buckets_of_short_strings_hold_about_the_bytes_their_rows_use() {
        // 50 batches of 8,192 distinct 20-byte strings (too long to sit inside a view).
        let schema = Arc::new(Schema::new(vec![Field::new(
            "s",
            DataType::Utf8View,
            false,
        )]));
        let batches: Vec<RecordBatch> = (0..50)
            .map(|b| {
                let strings = (0..8192).map(|i| format!("{:020}", b * 8192 + i));
                let column = StringViewArray::from_iter_values(strings);
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(column)]).unwrap()
            })
            .collect();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let summary = hash_write(batches, "s", 2, Arc::new(Discard), None).await;
        let held: u64 = bucket_bytes(&summary).unwrap().iter().sum();
        // Each row: a 16-byte view and its 20 bytes of string.
        let used = (rows * 36) as f64;
        assert!(
            (held as f64) < 1.3 * used,
            "the buckets hold {held} bytes for {used} bytes of rows"
        );
    }
}
