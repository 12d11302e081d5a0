//! Build-side key filters across stages: the probe side of a partitioned hash join drops
//! the rows that cannot match before they are shuffled.
//!
//! A partitioned join's two inputs are stages of their own, each hash-partitioned on the
//! join keys. When the join keeps no probe row that found no match (inner, semi and anti
//! joins on the build side's rows, left joins), the probe stage may drop rows whose keys
//! are not among the build side's. So the build stage's writer also summarises the keys it
//! writes (their bounds, and the distinct keys while there are few), as one more bucket of
//! each task's output ([`KeySummary`]); the probe stage reads those summaries first, once
//! the build stage has finished, and keeps only rows within the bounds and among the keys
//! ([`KeyFilterExec`]). A selective build side (TPC-H's `part` filtered by brand and
//! container) then cuts the probe side (`lineitem`) to the rows that can join before a
//! single one is shuffled. The probe stage waits for the build stage: it reads its output.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt8Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt8Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{JoinType, NullEquality, Result, ScalarValue, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::{Accumulator, ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, InListExpr, lit};
use datafusion::physical_expr::{
    EquivalenceProperties, PhysicalExpr, PhysicalExprRef, conjunction,
};
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

use crate::graph::{OutputSpec, StageId, TaskGraph};
use crate::shuffle::{ReadMode, ShuffleReadExec, ShuffleWriteExec};

/// Distinct keys a build task lists before it gives only their bounds.
const TASK_KEYS: usize = 1 << 16;
/// Distinct keys (summed over the build tasks) a probe task tests rows against; beyond
/// that it tests the bounds only.
const PROBE_KEYS: usize = 1 << 16;

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
}

/// The schema of a key summary: one column per key (named `k0`, `k1`, …) and `kind`.
pub fn summary_schema(key_types: &[DataType]) -> SchemaRef {
    let mut fields: Vec<Field> = key_types
        .iter()
        .enumerate()
        .map(|(i, t)| Field::new(format!("k{i}"), t.clone(), true))
        .collect();
    fields.push(Field::new("kind", DataType::UInt8, false));
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
    rows: usize,
    failed: bool,
}

impl KeySummary {
    /// A summary of `keys` (hash-partitioning expressions) over batches of `input`.
    pub(crate) fn new(keys: Vec<PhysicalExprRef>, input: &Schema) -> Result<Self> {
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
            rows: 0,
            failed: false,
        })
    }

    /// Adds a batch's keys; an error leaves the summary "unknown".
    pub(crate) fn add(&mut self, batch: &RecordBatch) {
        if self.failed || batch.num_rows() == 0 {
            return;
        }
        if let Err(e) = self.try_add(batch) {
            tracing::debug!("no key summary: {e}");
            self.failed = true;
        }
    }

    fn try_add(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows();
        let columns = self
            .keys
            .iter()
            .map(|k| k.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<Result<Vec<_>>>()?;
        for (column, (min, max)) in columns.iter().zip(self.bounds.iter_mut()) {
            min.update_batch(std::slice::from_ref(column))?;
            max.update_batch(std::slice::from_ref(column))?;
        }
        if let Some(distinct) = &mut self.distinct {
            let rows = self.converter.convert_columns(&columns)?;
            for (i, row) in rows.iter().enumerate() {
                // A key with a NULL matches nothing: not listed.
                if columns.iter().all(|c| c.is_valid(i)) && !distinct.contains(row.as_ref()) {
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
                    kinds.push(kind::MANY);
                    columns = concat_columns(&columns, &self.null_columns(1)?)?;
                }
            }
            Some((kinds, columns))
        };
        let Some((kinds, mut columns)) = kinds_and_columns else {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)));
        };
        columns.push(Arc::new(UInt8Array::from(kinds)));
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

/// The filter the build tasks' summaries give over probe keys `probe` (the same types
/// as the build keys, evaluated on `schema`): `None` to keep every row.
fn key_predicate(
    summaries: &[RecordBatch],
    probe: &[PhysicalExprRef],
    schema: &Schema,
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let (mut mins, mut maxs): (Vec<Vec<ArrayRef>>, Vec<Vec<ArrayRef>>) =
        (vec![Vec::new(); probe.len()], vec![Vec::new(); probe.len()]);
    let mut keys: Vec<Vec<ArrayRef>> = vec![Vec::new(); probe.len()];
    let (mut listed, mut many, mut rows) = (0, false, 0);
    for batch in summaries {
        let Some(kinds) = batch.column_by_name("kind") else {
            return internal_err!("a key summary without kinds");
        };
        let kinds = kinds.as_primitive::<UInt8Type>();
        rows += batch.num_rows();
        for (value, wanted) in [
            (kind::MIN, &mut mins),
            (kind::MAX, &mut maxs),
            (kind::KEY, &mut keys),
        ] {
            let mask = datafusion::arrow::compute::kernels::cmp::eq(
                kinds,
                &UInt8Array::new_scalar(value),
            )?;
            for (i, out) in wanted.iter_mut().enumerate() {
                out.push(datafusion::arrow::compute::filter(batch.column(i), &mask)?);
            }
        }
        for k in kinds.values().iter() {
            match *k {
                kind::UNKNOWN => return Ok(None),
                kind::MANY => many = true,
                kind::KEY => listed += 1,
                _ => {}
            }
        }
    }
    if rows == 0 {
        // No build rows: nothing joins.
        return Ok(Some(lit(false)));
    }
    let mut conjuncts: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    for (i, key) in probe.iter().enumerate() {
        let data_type = key.data_type(schema)?;
        let (mut min, mut max) = (
            MinAccumulator::try_new(&data_type)?,
            MaxAccumulator::try_new(&data_type)?,
        );
        for values in &mins[i] {
            min.update_batch(std::slice::from_ref(values))?;
        }
        for values in &maxs[i] {
            max.update_batch(std::slice::from_ref(values))?;
        }
        let (low, high) = (min.evaluate()?, max.evaluate()?);
        if low.is_null() || high.is_null() {
            // Only NULL keys, which match nothing.
            return Ok(Some(lit(false)));
        }
        conjuncts.push(Arc::new(BinaryExpr::new(
            Arc::clone(key),
            Operator::GtEq,
            lit(low),
        )));
        conjuncts.push(Arc::new(BinaryExpr::new(
            Arc::clone(key),
            Operator::LtEq,
            lit(high),
        )));
        if !many && listed <= PROBE_KEYS {
            let refs: Vec<&dyn Array> = keys[i].iter().map(|a| a.as_ref()).collect();
            let values = datafusion::arrow::compute::concat(&refs)?;
            conjuncts.push(Arc::new(InListExpr::try_new_from_array(
                Arc::clone(key),
                values,
                false,
                schema,
            )?));
        }
    }
    Ok(Some(conjunction(conjuncts)))
}

/// Passes on the rows of `input` whose `keys` may match the build side of the join they
/// go to, as the build stage's key summaries (read through `summaries`, one partition
/// holding every build task's summary) tell; see the module's doc.
#[derive(Debug)]
pub struct KeyFilterExec {
    input: Arc<dyn ExecutionPlan>,
    summaries: Arc<dyn ExecutionPlan>,
    keys: Vec<PhysicalExprRef>,
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
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The probe keys tested.
    pub fn keys(&self) -> &[PhysicalExprRef] {
        &self.keys
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
        Ok(Arc::new(Self::new(input, summaries, self.keys.clone())))
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
        let rows = async move {
            let summaries: Vec<RecordBatch> = summaries.try_collect().await?;
            let predicate = key_predicate(&summaries, &keys, &schema)?;
            // The input starts only now: a scan below sees no row it need not read.
            let input = input.execute(partition, context)?;
            Ok::<_, datafusion::common::DataFusionError>(input.map(
                move |batch| -> Result<RecordBatch> {
                    let batch = batch?;
                    let before = batch.num_rows();
                    let kept = match &predicate {
                        None => batch,
                        Some(predicate) => match predicate.evaluate(&batch)? {
                            ColumnarValue::Array(mask) => {
                                filter_record_batch(&batch, mask.as_boolean())?
                            }
                            ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))) => batch,
                            ColumnarValue::Scalar(_) => batch.slice(0, 0),
                        },
                    };
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

/// The stage a plan node reads whole (a gathering [`ShuffleReadExec`]).
fn gathered_stage(plan: &Arc<dyn ExecutionPlan>) -> Option<StageId> {
    let read = plan.downcast_ref::<ShuffleReadExec>()?;
    (read.mode() == ReadMode::Gather).then(|| read.stage())
}

/// How many times the stages of `graph` read stage `stage`.
fn reads_of(graph: &TaskGraph, stage: StageId) -> usize {
    graph
        .stages
        .iter()
        .flat_map(|s| crate::split::shuffle_reads(&s.plan))
        .filter(|r| r.stage() == stage)
        .count()
}

/// A (build stage, probe stage, probe keys) of a partitioned join that may filter its
/// probe side by its build keys.
type Filterable = (StageId, StageId, Vec<PhysicalExprRef>);

/// The partitioned joins of `plan` whose probe stage may drop what cannot match.
fn filterable_joins(graph: &TaskGraph, plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<Filterable>) {
    if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && *join.partition_mode() == PartitionMode::Partitioned
        && drops_unmatched_probe_rows(join)
        && let (Some(build), Some(probe)) =
            (gathered_stage(join.left()), gathered_stage(join.right()))
        && build < probe
        && let (Some((build_keys, _)), Some((probe_keys, _))) =
            (hash_keys(graph, build), hash_keys(graph, probe))
    {
        let (left, right) = (join.left().schema(), join.right().schema());
        let same = |keys: &[PhysicalExprRef], on: &mut dyn Iterator<Item = &PhysicalExprRef>| {
            keys.len() == join.on().len() && keys.iter().zip(on).all(|(a, b)| a.eq(b))
        };
        let types_match = join.on().iter().all(|(l, r)| {
            matches!((l.data_type(&left), r.data_type(&right)), (Ok(a), Ok(b)) if a == b
                && MinAccumulator::try_new(&a).is_ok()
                && !matches!(a, DataType::Dictionary(..)))
        });
        if same(build_keys, &mut join.on().iter().map(|(l, _)| l))
            && same(probe_keys, &mut join.on().iter().map(|(_, r)| r))
            && types_match
            && reads_of(graph, probe) == 1
        {
            out.push((build, probe, probe_keys.clone()));
        }
    }
    for child in plan.children() {
        filterable_joins(graph, child, out);
    }
}

/// `graph` with the key filters of the module's doc: each partitioned join that may
/// filter its probe side has its build stage summarise its keys and its probe stage read
/// the summaries and filter by them.
pub fn add_key_filters(mut graph: TaskGraph) -> Result<TaskGraph> {
    let mut found = Vec::new();
    for stage in &graph.stages {
        filterable_joins(&graph, &stage.plan, &mut found);
    }
    for (build, probe, keys) in found {
        let Some((summarised, summaries)) = summarised(&graph, build)? else {
            continue;
        };
        let probe_stage = &mut graph.stages[probe];
        let Some(write) = probe_stage.plan.downcast_ref::<ShuffleWriteExec>() else {
            continue;
        };
        let filtered = Arc::new(KeyFilterExec::new(
            Arc::clone(write.input()),
            summaries,
            keys,
        ));
        let filtered = ShuffleWriteExec::new(filtered, write.output().clone());
        probe_stage.plan = Arc::new(match write.key_summary() {
            true => filtered.with_key_summary(),
            false => filtered,
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
fn summarised(graph: &TaskGraph, build: StageId) -> Result<Option<Summarised>> {
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
    Ok(Some((Arc::new(write.with_key_summary()), summaries)))
}
