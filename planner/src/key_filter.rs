//! Build-side key filters across stages: the probe side of a partitioned hash join drops
//! the rows that cannot match before they are shuffled.
//!
//! A partitioned join's two inputs are stages of their own, each hash-partitioned on the
//! join keys. When the join keeps no probe row that found no match (inner, semi and anti
//! joins on the build side's rows, left joins), the probe stage may drop rows whose keys
//! are not among the build side's. So the build stage's writer also summarises the keys it
//! writes (their bounds, the distinct keys while there are few, and a Bloom filter of them
//! otherwise), as one more bucket of each task's output ([`KeySummary`]); the probe stage
//! reads those summaries first, once the build stage has finished, and keeps only rows
//! within the bounds and among the keys, or passing the Bloom filter ([`KeyFilterExec`]). A selective build side (TPC-H's `part` filtered by brand and
//! container) then cuts the probe side (`lineitem`) to the rows that can join before a
//! single one is shuffled. The probe stage waits for the build stage: it reads its output.
//! When the probe side is the final aggregation of a stage's partial one, grouped by the
//! join keys, that stage filters below its partial aggregation instead (`aggregated`).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatch, UInt8Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt8Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{JoinType, NullEquality, Result, ScalarValue, internal_err, plan_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalExprRef};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

use datafusion::physical_plan::execution_plan::replace_children_if_necessary;

use crate::graph::{OutputSpec, StageId, TaskGraph};
use crate::shuffle::{ReadMode, ShuffleReadExec, ShuffleWriteExec};

mod aggregated;
mod bloom;
mod key_test;
mod scan_bounds;
mod through_joins;
use bloom::{Bloom, key_hashes};
use key_test::key_test;
pub(crate) use through_joins::isolate_builds;

/// Distinct keys a build task lists before it gives only their bounds.
const TASK_KEYS: usize = 1 << 16;
/// Distinct keys (summed over the build tasks) a probe task tests rows against; beyond
/// that it tests the bounds only.
const PROBE_KEYS: usize = 1 << 16;
/// The most rows a build side is expected to have for its keys to filter the probe side
/// (its Bloom filter would need more than the largest size to be selective).
const BUILD_ROWS: usize = 1 << 22;
/// Bloom filter sizes, as powers of two of bits: about 16 bits per expected build row
/// within these bounds (at most 4 MiB).
const BLOOM_LOG2: (u8, u8) = (16, 25);
/// A probe task stops testing rows once this many were tested and at least
/// [`GIVE_UP_PERCENT`] of them passed.
const GIVE_UP_AFTER: usize = 1 << 17;
/// See [`GIVE_UP_AFTER`].
const GIVE_UP_PERCENT: usize = 95;

/// What a row of a key summary holds (its `kind` column).
mod kind {
    /// The least of each key column.
    pub const MIN: u8 = 0;
    /// The greatest of each key column.
    pub const MAX: u8 = 1;
    /// One distinct key.
    pub const KEY: u8 = 2;
    /// The task had more distinct keys than it lists.
    pub const MANY: u8 = 3;
    /// The task could not summarise its keys: nothing may be dropped.
    pub const UNKNOWN: u8 = 4;
    /// The task's Bloom filter (in the `bloom` column).
    pub const BLOOM: u8 = 5;
    /// The rows the task wrote (eight little-endian bytes in the `bloom` column).
    pub const ROWS: u8 = 6;
}

/// The schema of a key summary: one column per key (named `k0`, `k1`, …), `kind` and
/// `bloom`.
pub fn summary_schema(key_types: &[DataType]) -> SchemaRef {
    let mut fields: Vec<Field> = key_types
        .iter()
        .enumerate()
        .map(|(i, t)| Field::new(format!("k{i}"), t.clone(), true))
        .collect();
    fields.push(Field::new("kind", DataType::UInt8, false));
    fields.push(Field::new("bloom", DataType::Binary, true));
    Arc::new(Schema::new(fields))
}

/// The keys a build task wrote: their bounds and, while there are few, the distinct keys.
pub(crate) struct KeySummary {
    keys: Vec<PhysicalExprRef>,
    schema: SchemaRef,
    bounds: Vec<(MinAccumulator, MaxAccumulator)>,
    converter: RowConverter,
    /// The distinct keys in the row format; `None` once there were more than
    /// [`TASK_KEYS`].
    distinct: Option<HashSet<Box<[u8]>>>,
    bloom: Bloom,
    rows: usize,
    failed: bool,
}

impl KeySummary {
    /// A summary of `keys` (hash-partitioning expressions) over batches of `input`, with a
    /// Bloom filter of `2^bloom_log2` bits.
    pub(crate) fn new(keys: Vec<PhysicalExprRef>, input: &Schema, bloom_log2: u8) -> Result<Self> {
        let types = keys
            .iter()
            .map(|k| k.data_type(input))
            .collect::<Result<Vec<_>>>()?;
        let bounds = types
            .iter()
            .map(|t| Ok((MinAccumulator::try_new(t)?, MaxAccumulator::try_new(t)?)))
            .collect::<Result<Vec<_>>>()?;
        let converter = RowConverter::new(types.iter().cloned().map(SortField::new).collect())?;
        Ok(Self {
            keys,
            schema: summary_schema(&types),
            bounds,
            converter,
            distinct: Some(HashSet::new()),
            bloom: Bloom::new(bloom_log2),
            rows: 0,
            failed: false,
        })
    }

    /// Adds a batch's keys; an error leaves the summary "unknown".
    pub(crate) fn add(&mut self, batch: &RecordBatch) {
        self.rows += batch.num_rows();
        if self.failed || batch.num_rows() == 0 {
            return;
        }
        if let Err(e) = self.try_add(batch) {
            tracing::debug!("no key summary: {e}");
            self.failed = true;
        }
    }

    fn try_add(&mut self, batch: &RecordBatch) -> Result<()> {
        let columns = self
            .keys
            .iter()
            .map(|k| k.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<Result<Vec<_>>>()?;
        for (column, (min, max)) in columns.iter().zip(self.bounds.iter_mut()) {
            min.update_batch(std::slice::from_ref(column))?;
            max.update_batch(std::slice::from_ref(column))?;
        }
        let valid = |i: usize| columns.iter().all(|c| c.is_valid(i));
        for (i, hash) in key_hashes(&columns, batch.num_rows())?
            .into_iter()
            .enumerate()
        {
            if valid(i) {
                self.bloom.insert(hash);
            }
        }
        if let Some(distinct) = &mut self.distinct {
            let rows = self.converter.convert_columns(&columns)?;
            for (i, row) in rows.iter().enumerate() {
                // A key with a NULL matches nothing: not listed.
                if valid(i) && !distinct.contains(row.as_ref()) {
                    distinct.insert(row.as_ref().into());
                }
            }
            if distinct.len() > TASK_KEYS {
                self.distinct = None;
            }
        }
        Ok(())
    }

    /// The summary as one batch (no rows when the task wrote none).
    pub(crate) fn finish(mut self) -> Result<RecordBatch> {
        let mut bloom = Vec::new();
        let kinds_and_columns = if self.failed {
            Some((vec![kind::UNKNOWN], self.null_columns(1)?))
        } else if self.rows == 0 {
            None
        } else {
            let mut columns: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.keys.len()];
            for (values, (min, max)) in columns.iter_mut().zip(self.bounds.iter_mut()) {
                values.push(min.evaluate()?);
                values.push(max.evaluate()?);
            }
            let mut kinds = vec![kind::MIN, kind::MAX];
            let mut columns = columns
                .into_iter()
                .map(ScalarValue::iter_to_array)
                .collect::<Result<Vec<_>>>()?;
            match self.distinct.take() {
                Some(distinct) => {
                    let parser = self.converter.parser();
                    let keys = self
                        .converter
                        .convert_rows(distinct.iter().map(|r| parser.parse(r)))?;
                    kinds.extend(std::iter::repeat_n(kind::KEY, distinct.len()));
                    columns = concat_columns(&columns, &keys)?;
                }
                None => {
                    kinds.extend([kind::MANY, kind::BLOOM]);
                    columns = concat_columns(&columns, &self.null_columns(2)?)?;
                    bloom = self.bloom.to_bytes();
                }
            }
            Some((kinds, columns))
        };
        let Some((mut kinds, columns)) = kinds_and_columns else {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)));
        };
        kinds.push(kind::ROWS);
        let mut columns = concat_columns(&columns, &self.null_columns(1)?)?;
        let rows = (self.rows as u64).to_le_bytes();
        let blooms: BinaryArray = kinds
            .iter()
            .map(|k| match *k {
                kind::BLOOM => Some(bloom.as_slice()),
                kind::ROWS => Some(rows.as_slice()),
                _ => None,
            })
            .collect();
        columns.push(Arc::new(UInt8Array::from(kinds)));
        columns.push(Arc::new(blooms));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    fn null_columns(&self, rows: usize) -> Result<Vec<ArrayRef>> {
        Ok(self
            .schema
            .fields()
            .iter()
            .take(self.keys.len())
            .map(|f| datafusion::arrow::array::new_null_array(f.data_type(), rows))
            .collect())
    }
}

fn concat_columns(a: &[ArrayRef], b: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
    a.iter()
        .zip(b)
        .map(|(a, b)| {
            Ok(datafusion::arrow::compute::concat(&[
                a.as_ref(),
                b.as_ref(),
            ])?)
        })
        .collect()
}

/// The `bloom` column's values of the rows of kind `wanted` in a summary batch.
fn payloads(batch: &RecordBatch, wanted: u8) -> Result<Vec<&[u8]>> {
    let kinds = batch
        .column_by_name("kind")
        .and_then(|c| c.as_primitive_opt::<UInt8Type>());
    let values = batch
        .column_by_name("bloom")
        .and_then(|c| c.as_binary_opt::<i32>());
    let (Some(kinds), Some(values)) = (kinds, values) else {
        return internal_err!("a key summary without kinds or Bloom filters");
    };
    Ok(values
        .iter()
        .zip(kinds.values().iter())
        .filter_map(|(value, k)| if *k == wanted { value } else { None })
        .collect())
}

/// The rows the build tasks whose summaries these are wrote in all, if every task that
/// wrote rows says how many.
pub(crate) fn build_rows(summaries: &[RecordBatch]) -> Result<Option<u64>> {
    let mut total: u64 = 0;
    for batch in summaries.iter().filter(|b| b.num_rows() > 0) {
        let counts = payloads(batch, kind::ROWS)?;
        if counts.is_empty() {
            return Ok(None);
        }
        for bytes in counts {
            let Ok(le) = <[u8; 8]>::try_from(bytes) else {
                return internal_err!("a key summary's row count of {} bytes", bytes.len());
            };
            total = total.saturating_add(u64::from_le_bytes(le));
        }
    }
    Ok(Some(total))
}

/// Passes on the rows of `input` whose `keys` may match the build side of the join they
/// go to, as the build stage's key summaries (read through `summaries`, one partition
/// holding every build task's summary) tell; see the module's doc.
#[derive(Debug)]
pub struct KeyFilterExec {
    input: Arc<dyn ExecutionPlan>,
    summaries: Arc<dyn ExecutionPlan>,
    keys: Vec<PhysicalExprRef>,
    /// The filter over `keys` that Parquet scans under it read (`scan_bounds`), set to
    /// the build keys' bounds before the input starts.
    scan_bounds: Option<Arc<DynamicFilterPhysicalExpr>>,
    metrics: ExecutionPlanMetricsSet,
}

impl KeyFilterExec {
    /// Filters `input` on `keys` by the summaries `summaries` reads.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        summaries: Arc<dyn ExecutionPlan>,
        keys: Vec<PhysicalExprRef>,
    ) -> Self {
        Self {
            input,
            summaries,
            keys,
            scan_bounds: None,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// Filters `input` on `keys` as [`KeyFilterExec::new`] does, the Parquet scans that
    /// the keys come from skipping the row groups outside the build keys' bounds.
    pub(crate) fn bounding_scans(
        input: Arc<dyn ExecutionPlan>,
        summaries: Arc<dyn ExecutionPlan>,
        keys: Vec<PhysicalExprRef>,
    ) -> Result<Self> {
        Ok(match scan_bounds::scan_bounds(&input, &keys)? {
            Some((input, bounds)) => Self::new(input, summaries, keys).with_scan_bounds(bounds),
            None => Self::new(input, summaries, keys),
        })
    }

    /// This filter, setting `bounds` (a dynamic filter over its keys that scans under it
    /// read) to the build keys' bounds.
    pub fn with_scan_bounds(mut self, bounds: Arc<DynamicFilterPhysicalExpr>) -> Self {
        self.scan_bounds = Some(bounds);
        self
    }

    /// The probe keys tested.
    pub fn keys(&self) -> &[PhysicalExprRef] {
        &self.keys
    }

    /// The dynamic filter it sets for scans under it, if any.
    pub fn scan_bounds(&self) -> Option<&Arc<DynamicFilterPhysicalExpr>> {
        self.scan_bounds.as_ref()
    }
}

impl DisplayAs for KeyFilterExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        write!(f, "KeyFilterExec: keys=[{}]", keys.join(", "))
    }
}

impl ExecutionPlan for KeyFilterExec {
    fn name(&self) -> &str {
        "KeyFilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input, &self.summaries]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for key in &self.keys {
            if f(key)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true, false]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input, summaries] = <[_; 2]>::try_from(children).map_err(|_| {
            datafusion::common::internal_datafusion_err!("KeyFilterExec takes two inputs")
        })?;
        let mut exec = Self::new(input, summaries, self.keys.clone());
        exec.scan_bounds.clone_from(&self.scan_bounds);
        Ok(Arc::new(exec))
    }

    fn dynamic_expressions_produced(&self) -> Vec<Arc<dyn PhysicalExpr>> {
        self.scan_bounds
            .iter()
            .map(|f| Arc::clone(f) as Arc<dyn PhysicalExpr>)
            .collect()
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let summaries = self.summaries.execute(0, Arc::clone(&context))?;
        let input = Arc::clone(&self.input);
        let keys = self.keys.clone();
        let schema = self.input.schema();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let dropped: Count = MetricBuilder::new(&self.metrics).counter("rows_dropped", partition);
        let out_schema = Arc::clone(&schema);
        let scan_bounds = self.scan_bounds.clone();
        let rows = async move {
            let summaries: Vec<RecordBatch> = summaries.try_collect().await?;
            let mut test = key_test(&summaries, &keys, &schema)?;
            if let (Some(filter), Some(bounds)) = (scan_bounds, &test.bounds) {
                filter.update(Arc::clone(bounds))?;
            }
            // The input starts only now: a scan below sees no row it need not read.
            let input = input.execute(partition, context)?;
            let (mut seen, mut kept_rows) = (0, 0);
            Ok::<_, datafusion::common::DataFusionError>(input.map(
                move |batch| -> Result<RecordBatch> {
                    let batch = batch?;
                    let before = batch.num_rows();
                    let kept = test.keep(batch)?;
                    (seen, kept_rows) = (seen + before, kept_rows + kept.num_rows());
                    if seen >= GIVE_UP_AFTER && kept_rows * 100 >= seen * GIVE_UP_PERCENT {
                        // Nearly every row passes: testing the rest costs more than it saves.
                        test.give_up();
                    }
                    dropped.add(before - kept.num_rows());
                    baseline.record_output(kept.num_rows());
                    Ok(kept)
                },
            ))
        };
        let stream = futures::stream::once(rows)
            .try_flatten()
            .try_filter(|b| futures::future::ready(b.num_rows() > 0));
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// Whether a join may lose the probe rows that match no build row without changing its
/// answer: every join that emits no unmatched probe row, over keys in which NULL matches
/// nothing, and not a null-aware anti join (`NOT IN` must see every probe-side NULL).
fn drops_unmatched_probe_rows(join: &HashJoinExec) -> bool {
    matches!(
        join.join_type(),
        JoinType::Inner
            | JoinType::Left
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::LeftMark
            | JoinType::RightSemi
    ) && join.null_equality() == NullEquality::NullEqualsNothing
        && !join.null_aware
}

/// The hash-exchange keys stage `stage` writes with, if it does.
fn hash_keys(graph: &TaskGraph, stage: StageId) -> Option<(&Vec<PhysicalExprRef>, usize)> {
    match &graph.stages.get(stage)?.output {
        OutputSpec::Repartition(Partitioning::Hash(keys, n)) => Some((keys, *n)),
        _ => None,
    }
}

/// The stage a plan node reads whole (a gathering [`ShuffleReadExec`]) and the rows the
/// planner expected it to write.
pub(crate) fn gathered_stage(plan: &Arc<dyn ExecutionPlan>) -> Option<(StageId, Precision<usize>)> {
    let read = plan.downcast_ref::<ShuffleReadExec>()?;
    (read.mode() == ReadMode::Gather).then(|| (read.stage(), read.estimated_rows()))
}

/// Whether a build key of type `build` can filter a probe key of type `probe`: the same
/// type, with bounds, and not dictionary-encoded.
fn summarisable(build: &DataType, probe: &DataType) -> bool {
    build == probe
        && MinAccumulator::try_new(build).is_ok()
        && !matches!(build, DataType::Dictionary(..))
}

/// Whether filtering is worth making the probe stage wait for the build stage, from the
/// planner's estimates of their rows: a build side whose keys a Bloom filter can hold,
/// under a probe side many times larger. A build side whose size is known exactly is a
/// whole table (nothing filtered it): its keys are the ones the probe side refers to, so
/// only a few keys listed exactly are worth it. Without estimates, no.
fn worth_filtering(build_rows: Precision<usize>, probe_rows: Precision<usize>) -> bool {
    let (Some(&build), Some(&probe)) = (build_rows.get_value(), probe_rows.get_value()) else {
        return false;
    };
    let whole_table = matches!(build_rows, Precision::Exact(_));
    build <= if whole_table { PROBE_KEYS } else { BUILD_ROWS } && probe >= 8 * build.max(1)
}

/// A Bloom filter size a decoded plan asks for, if it is one the planner makes.
pub(crate) fn bloom_size(log2: u32) -> Result<u8> {
    match u8::try_from(log2) {
        Ok(log2) if (BLOOM_LOG2.0..=BLOOM_LOG2.1).contains(&log2) => Ok(log2),
        _ => plan_err!(
            "a key summary's Bloom filter of 2^{log2} bits (sizes go from 2^{} to 2^{})",
            BLOOM_LOG2.0,
            BLOOM_LOG2.1
        ),
    }
}

/// Checks that `summaries` (a decoded plan's read of key summaries) has the columns a
/// summary of `keys` (evaluated on `input`) has.
pub(crate) fn check_summary_schema(
    keys: &[PhysicalExprRef],
    input: &Schema,
    summaries: &Schema,
) -> Result<()> {
    let types = keys
        .iter()
        .map(|k| k.data_type(input))
        .collect::<Result<Vec<_>>>()?;
    let expected = summary_schema(&types);
    if expected.fields() != summaries.fields() {
        return plan_err!(
            "a key filter over {} keys reads summaries of another shape: {summaries}",
            keys.len()
        );
    }
    Ok(())
}

/// The Bloom filter size for a build side expected to have `rows` rows.
fn bloom_log2(rows: usize) -> u8 {
    let bits = rows.saturating_mul(16).max(1);
    // The least power of two of at least `bits`.
    let log2 = usize::BITS - (bits - 1).leading_zeros();
    (log2.min(u32::from(u8::MAX)) as u8).clamp(BLOOM_LOG2.0, BLOOM_LOG2.1)
}

/// How many times the stages of `graph` read stage `stage`.
pub(crate) fn reads_of(graph: &TaskGraph, stage: StageId) -> usize {
    graph
        .stages
        .iter()
        .flat_map(|s| crate::split::shuffle_reads(&s.plan))
        .filter(|r| r.stage() == stage)
        .count()
}

/// A (build stage, probe stage, probe keys, Bloom filter size, whether the probe stage
/// filters below its partial aggregation) of a partitioned join that may filter its probe
/// side by its build keys.
type Filterable = (StageId, StageId, Vec<PhysicalExprRef>, u8, bool);

/// The partitioned joins of `plan` whose probe stage may drop what cannot match.
fn filterable_joins(graph: &TaskGraph, plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<Filterable>) {
    if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && *join.partition_mode() == PartitionMode::Partitioned
        && drops_unmatched_probe_rows(join)
    {
        // A probe stage that may filter below its partial aggregation does so there,
        // rather than at its output (TPC-H q17), and only there.
        match aggregated::through_partial_aggregate(graph, join) {
            Some(found) => out.push(found),
            None => {
                out.extend(probe_stage_read_whole(graph, join));
                out.extend(through_joins::probe_stages(graph, join));
            }
        }
    }
    for child in plan.children() {
        filterable_joins(graph, child, out);
    }
}

/// `join` as a filterable join whose probe side is a stage read whole, hash-partitioned
/// on the join keys as the build stage is, if it is one worth filtering.
fn probe_stage_read_whole(graph: &TaskGraph, join: &HashJoinExec) -> Option<Filterable> {
    let (build, build_rows) = gathered_stage(join.left())?;
    let (probe, probe_rows) = gathered_stage(join.right())?;
    if build >= probe || !worth_filtering(build_rows, probe_rows) || reads_of(graph, probe) != 1 {
        return None;
    }
    let ((build_keys, _), (probe_keys, _)) = (hash_keys(graph, build)?, hash_keys(graph, probe)?);
    let (left, right) = (join.left().schema(), join.right().schema());
    let same = |keys: &[PhysicalExprRef], on: &mut dyn Iterator<Item = &PhysicalExprRef>| {
        keys.len() == join.on().len() && keys.iter().zip(on).all(|(a, b)| a.eq(b))
    };
    let types_match = join.on().iter().all(|(l, r)| {
        matches!((l.data_type(&left), r.data_type(&right)), (Ok(a), Ok(b)) if summarisable(&a, &b))
    });
    (same(build_keys, &mut join.on().iter().map(|(l, _)| l))
        && same(probe_keys, &mut join.on().iter().map(|(_, r)| r))
        && types_match)
        .then(|| {
            let bloom = bloom_log2(build_rows.get_value().copied().unwrap_or(0));
            (build, probe, probe_keys.clone(), bloom, false)
        })
}

/// `graph` with the key filters of the module's doc: each partitioned join that may
/// filter its probe side has its build stage summarise its keys and its probe stage read
/// the summaries and filter by them.
pub fn add_key_filters(mut graph: TaskGraph) -> Result<TaskGraph> {
    let mut found = Vec::new();
    for stage in &graph.stages {
        filterable_joins(&graph, &stage.plan, &mut found);
    }
    for (build, probe, keys, bloom, below_aggregate) in found {
        let Some((summarised, summaries)) = summarised(&graph, build, bloom)? else {
            continue;
        };
        let probe_stage = &mut graph.stages[probe];
        let Some(write) = probe_stage.plan.downcast_ref::<ShuffleWriteExec>() else {
            continue;
        };
        let filtered: Arc<dyn ExecutionPlan> = match below_aggregate {
            true => {
                let Some(partial) = aggregated::partial_aggregate(&probe_stage.plan) else {
                    continue;
                };
                let input = Arc::clone(partial.input());
                let rows = KeyFilterExec::bounding_scans(input, summaries, keys)?;
                let rows: Arc<dyn ExecutionPlan> = Arc::new(rows);
                replace_children_if_necessary(Arc::clone(write.input()), vec![rows])?
            }
            false => Arc::new(KeyFilterExec::bounding_scans(
                Arc::clone(write.input()),
                summaries,
                keys,
            )?),
        };
        let filtered = ShuffleWriteExec::new(filtered, write.output().clone());
        probe_stage.plan = Arc::new(match write.key_summary() {
            Some(bloom) => filtered.with_key_summary(bloom),
            None => filtered,
        });
        graph.stages[build].plan = summarised;
        let probe_stage = &mut graph.stages[probe];
        probe_stage.inputs.push(build);
        probe_stage.inputs.sort_unstable();
        probe_stage.inputs.dedup();
    }
    Ok(graph)
}

/// A build stage's plan that summarises its keys, and a read of its summaries.
type Summarised = (Arc<dyn ExecutionPlan>, Arc<dyn ExecutionPlan>);

/// Build stage `build`'s plan summarising its keys, and a read of its summaries.
fn summarised(graph: &TaskGraph, build: StageId, bloom: u8) -> Result<Option<Summarised>> {
    let stage = &graph.stages[build];
    let (Some((keys, buckets)), Some(write)) = (
        hash_keys(graph, build),
        stage.plan.downcast_ref::<ShuffleWriteExec>(),
    ) else {
        return Ok(None);
    };
    let input_schema = write.input().schema();
    let types = keys
        .iter()
        .map(|k| k.data_type(&input_schema))
        .collect::<Result<Vec<_>>>()?;
    let summaries = Arc::new(ShuffleReadExec::new(
        build,
        stage.tasks,
        ReadMode::Bucket(buckets),
        Arc::new(PlanProperties::new(
            EquivalenceProperties::new(summary_schema(&types)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        )),
    ));
    Ok(Some((Arc::new(write.with_key_summary(bloom)), summaries)))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;

    use super::*;

    #[test]
    fn a_bloom_filter_keeps_every_key_it_holds_and_few_others() {
        let held: ArrayRef = Arc::new(Int64Array::from_iter_values((0..10_000).map(|k| 2 * k)));
        let others: ArrayRef =
            Arc::new(Int64Array::from_iter_values((0..10_000).map(|k| 2 * k + 1)));
        let mut bloom = Bloom::new(bloom_log2(10_000));
        for hash in key_hashes(&[Arc::clone(&held)], 10_000).unwrap() {
            bloom.insert(hash);
        }
        // Through bytes, as a probe task reads it.
        let mut read = Bloom::new(bloom_log2(10_000));
        read.union_bytes(&bloom.to_bytes()).unwrap();
        let hashes = |a: &ArrayRef| key_hashes(std::slice::from_ref(a), 10_000).unwrap();
        assert!(hashes(&held).into_iter().all(|h| read.contains(h)));
        let passed = hashes(&others)
            .into_iter()
            .filter(|&h| read.contains(h))
            .count();
        // 16 bits per key and three bits each: well under 1% get through.
        assert!(passed < 100, "{passed} of 10,000 others passed");
        assert!(read.union_bytes(&[0; 8]).is_err());
    }

    #[test]
    fn summaries_and_sizes_that_no_planner_made_are_refused() {
        assert_eq!(bloom_size(20).unwrap(), 20);
        for log2 in [0, 15, 26, 40, 300] {
            let err = bloom_size(log2).unwrap_err().to_string();
            assert!(err.contains(&format!("2^{log2} bits")), "{err}");
        }
        // Bloom filters read from a summary: a power of two of bytes within the sizes.
        for bytes in [0, 7, 8, 100, 1 << 12, 12_288, 1 << 23] {
            assert!(Bloom::from_bytes(&vec![0; bytes]).is_err(), "{bytes} bytes");
        }
        assert!(Bloom::from_bytes(&vec![0; 1 << 14]).is_ok());
        // A summary batch of another shape than its keys'.
        let one = summary_of([1, 2].into_iter(), 16);
        let batch =
            RecordBatch::try_from_iter([("k", Arc::new(Int64Array::from(vec![1])) as ArrayRef)])
                .unwrap();
        let k = datafusion::physical_expr::expressions::col("k", &batch.schema()).unwrap();
        let two = [Arc::clone(&k), k];
        assert!(key_test(std::slice::from_ref(&one), &two, &batch.schema()).is_err());
        assert!(check_summary_schema(&two, &batch.schema(), &one.schema()).is_err());
        assert!(check_summary_schema(&two[..1], &batch.schema(), &one.schema()).is_ok());
    }

    /// The summary a build task writes of keys `keys` (one BIGINT column `k`).
    fn summary_of(keys: impl Iterator<Item = i64>, bloom_log2: u8) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("k", DataType::Int64, false)]);
        let k: PhysicalExprRef = datafusion::physical_expr::expressions::col("k", &schema).unwrap();
        let mut summary = KeySummary::new(vec![k], &schema, bloom_log2).unwrap();
        let batch = RecordBatch::try_from_iter([(
            "k",
            Arc::new(Int64Array::from_iter_values(keys)) as ArrayRef,
        )])
        .unwrap();
        summary.add(&batch);
        summary.finish().unwrap()
    }

    /// How many of `probe` keys pass the test the summaries give.
    fn passing(summaries: &[RecordBatch], probe: impl Iterator<Item = i64>) -> usize {
        let batch = RecordBatch::try_from_iter([(
            "k",
            Arc::new(Int64Array::from_iter_values(probe)) as ArrayRef,
        )])
        .unwrap();
        let k = datafusion::physical_expr::expressions::col("k", &batch.schema()).unwrap();
        let test = key_test(summaries, &[k], &batch.schema()).unwrap();
        test.keep(batch).unwrap().num_rows()
    }

    #[test]
    fn probe_rows_pass_when_their_key_may_be_a_build_key() {
        // Two tasks listing 40,000 keys each: too many to test one by one, so a Bloom
        // filter of them; every build key passes, few others do.
        let listed = [
            summary_of((0..80_000).step_by(2), 16),
            summary_of((80_000..160_000).step_by(2), 16),
        ];
        assert_eq!(passing(&listed, (0..160_000).step_by(2)), 80_000);
        let odd = passing(&listed, (1..160_000).step_by(2));
        assert!(odd < 800, "{odd} of 80,000 odd keys passed");
        // One task with more keys than it lists (a Bloom filter) and one listing a few:
        // the keys of both pass.
        let mixed = [
            summary_of((0..140_000).step_by(2), bloom_log2(140_000)),
            summary_of([1_000_001, 1_000_003].into_iter(), bloom_log2(140_000)),
        ];
        assert_eq!(passing(&mixed, (0..140_000).step_by(2)), 70_000);
        assert_eq!(passing(&mixed, [1_000_001, 1_000_003].into_iter()), 2);
        assert!(passing(&mixed, (1..140_000).step_by(2)) < 700);
        // Beyond the bounds, nothing; few keys, exactly those.
        assert_eq!(passing(&mixed, 1_000_004..1_100_000), 0);
        let few = [summary_of([5, 7].into_iter(), 16)];
        assert_eq!(passing(&few, 0..10), 2);
        // No build rows at all: nothing joins.
        assert_eq!(passing(&[summary_of(std::iter::empty(), 16)], 0..10), 0);
    }

    #[test]
    fn filtering_is_planned_for_small_or_filtered_build_sides_under_large_probe_sides() {
        use Precision::{Absent, Exact, Inexact};
        // A filtered build side, many times smaller than the probe side.
        assert!(worth_filtering(Inexact(1_000_000), Inexact(60_000_000)));
        assert!(!worth_filtering(Inexact(1_000_000), Inexact(6_000_000)));
        assert!(!worth_filtering(Inexact(BUILD_ROWS + 1), Exact(1 << 40)));
        // A whole table: only while its keys are listed.
        assert!(worth_filtering(Exact(3), Exact(100)));
        assert!(!worth_filtering(Exact(150_000), Exact(15_000_000)));
        assert!(!worth_filtering(Absent, Exact(15_000_000)));
        assert_eq!(bloom_log2(0), BLOOM_LOG2.0);
        assert_eq!(bloom_log2(140_000), 22);
        assert_eq!(bloom_log2(usize::MAX), BLOOM_LOG2.1);
    }
}
