//! Broadcast joins chosen at run time, from the real size of a finished build stage.
//!
//! DataFusion picks a broadcast (`CollectLeft`) hash join when its estimates say the build
//! side is small, and a partitioned one otherwise; after a filter or an aggregation the
//! estimate can be far off. A partitioned join whose probe stage filters by its build keys
//! ([`crate::key_filter`]) already waits for its build stage, whose key summaries say how
//! many rows it wrote. So the choice is put off until then, and both sides of it read the
//! same summaries and so choose alike:
//!
//! - the probe stage's writer hashes its rows into the join's partitions as planned, or,
//!   when the build side has at most `max_rows` rows, keeps each task's rows in one bucket
//!   (its own: task `t` writes bucket `t mod n`), so they need not move to another worker;
//! - the join stage's [`AdaptiveJoinExec`] runs the partitioned join as planned, or a
//!   broadcast join of the whole build output (every bucket of every build task) with the
//!   probe rows its partition reads.
//!
//! Only joins whose answer does not depend on how the probe rows are partitioned are made
//! adaptive (inner and right semi joins, which emit no build row on their own), and only
//! where nothing above them in their stage needs the join's hash partitioning.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{JoinType, Result, internal_datafusion_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, replace_children_if_necessary,
};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::TryStreamExt;

use crate::graph::{OutputSpec, StageId, TaskGraph};
use crate::key_filter::{KeyFilterExec, gathered_stage};
use crate::shuffle::{ReadMode, ShuffleReadExec, ShuffleWriteExec};

/// The build stage's key summaries and the most rows it may have written for its join
/// to broadcast it.
#[derive(Debug, Clone)]
pub struct BroadcastSwitch {
    /// A read of the build stage's key summaries (one partition).
    pub summaries: Arc<dyn ExecutionPlan>,
    /// The most build rows a broadcast join takes.
    pub max_rows: u64,
}

/// Whether the build side whose key summaries `summaries` streams wrote at most
/// `max_rows` rows (and every task said how many).
pub(crate) async fn broadcast_chosen(
    summaries: SendableRecordBatchStream,
    max_rows: u64,
) -> Result<bool> {
    let summaries: Vec<_> = summaries.try_collect().await?;
    Ok(crate::key_filter::build_rows(&summaries)?.is_some_and(|rows| rows <= max_rows))
}

/// A hash join that runs partitioned, or broadcast when its build side turned out small
/// (see the module's doc). Its children: the partitioned join, the broadcast join, and the
/// read of the build stage's key summaries.
#[derive(Debug)]
pub struct AdaptiveJoinExec {
    partitioned: Arc<dyn ExecutionPlan>,
    broadcast: Arc<dyn ExecutionPlan>,
    summaries: Arc<dyn ExecutionPlan>,
    max_rows: u64,
    metrics: ExecutionPlanMetricsSet,
}

impl AdaptiveJoinExec {
    /// Chooses between `partitioned` and `broadcast` (the same join, with the same
    /// output schema) by the summaries `summaries` reads.
    pub fn try_new(
        partitioned: Arc<dyn ExecutionPlan>,
        broadcast: Arc<dyn ExecutionPlan>,
        summaries: Arc<dyn ExecutionPlan>,
        max_rows: u64,
    ) -> Result<Self> {
        if partitioned.schema().fields() != broadcast.schema().fields() {
            return Err(internal_datafusion_err!(
                "an adaptive join's two joins give different columns"
            ));
        }
        Ok(Self {
            partitioned,
            broadcast,
            summaries,
            max_rows,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The most build rows the broadcast join takes.
    pub fn max_rows(&self) -> u64 {
        self.max_rows
    }
}

impl DisplayAs for AdaptiveJoinExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "AdaptiveJoinExec: broadcast if build rows <= {}",
            self.max_rows
        )
    }
}

impl ExecutionPlan for AdaptiveJoinExec {
    fn name(&self) -> &str {
        "AdaptiveJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.partitioned.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.partitioned, &self.broadcast, &self.summaries]
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
        let [partitioned, broadcast, summaries] = <[_; 3]>::try_from(children)
            .map_err(|_| internal_datafusion_err!("AdaptiveJoinExec takes three inputs"))?;
        Ok(Arc::new(Self::try_new(
            partitioned,
            broadcast,
            summaries,
            self.max_rows,
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let summaries = self.summaries.execute(0, Arc::clone(&context))?;
        let (partitioned, broadcast) = (Arc::clone(&self.partitioned), Arc::clone(&self.broadcast));
        let max_rows = self.max_rows;
        let metric = |name| MetricBuilder::new(&self.metrics).counter(name, partition);
        let (broadcasts, partitions) = (metric("broadcast_tasks"), metric("partitioned_tasks"));
        let rows = async move {
            let join = if broadcast_chosen(summaries, max_rows).await? {
                broadcasts.add(1);
                broadcast
            } else {
                partitions.add(1);
                partitioned
            };
            join.execute(partition, context)
        };
        let stream = futures::stream::once(rows).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.partitioned.schema(),
            stream,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// `graph` with each partitioned join that may broadcast its build side once its size is
/// known made adaptive as the module's doc says; builds of at most `max_rows` rows are
/// broadcast (none when 0).
pub fn add_runtime_broadcasts(mut graph: TaskGraph, max_rows: u64) -> Result<TaskGraph> {
    if max_rows == 0 {
        return Ok(graph);
    }
    for j in 0..graph.stages.len() {
        let Some((plan, probe, switch)) = adapted(&graph, &graph.stages[j].plan, max_rows)? else {
            continue;
        };
        graph.stages[j].plan = plan;
        let stage = &mut graph.stages[probe];
        if let Some(write) = stage.plan.downcast_ref::<ShuffleWriteExec>() {
            stage.plan = Arc::new(write.with_broadcast_switch(switch));
        }
    }
    Ok(graph)
}

/// A stage's plan with an adaptive join, the probe stage of that join, and the switch
/// the probe stage's writer gets.
type Adapted = (Arc<dyn ExecutionPlan>, StageId, BroadcastSwitch);

/// `plan` (a stage's) with its first join that may broadcast at run time made adaptive;
/// `None` when there is no such join, or only below an operator that needs its input's
/// partitioning.
fn adapted(
    graph: &TaskGraph,
    plan: &Arc<dyn ExecutionPlan>,
    max_rows: u64,
) -> Result<Option<Adapted>> {
    if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && let Some((build, probe, summaries)) = adaptable(graph, join)
    {
        let broadcast = broadcast_join(graph, join, build)?;
        let adaptive = AdaptiveJoinExec::try_new(
            Arc::clone(plan),
            broadcast,
            Arc::clone(&summaries),
            max_rows,
        )?;
        let switch = BroadcastSwitch {
            summaries,
            max_rows,
        };
        return Ok(Some((Arc::new(adaptive), probe, switch)));
    }
    let required = plan.input_distribution_requirements();
    let children = plan.children();
    for (i, child) in children.iter().enumerate() {
        if !matches!(
            required.child_distribution(i),
            None | Some(Distribution::UnspecifiedDistribution)
        ) {
            continue;
        }
        if let Some((rewritten, probe, switch)) = adapted(graph, child, max_rows)? {
            let mut inputs: Vec<_> = children.iter().map(|c| Arc::clone(*c)).collect();
            inputs[i] = rewritten;
            let plan = replace_children_if_necessary(Arc::clone(plan), inputs)?;
            return Ok(Some((plan, probe, switch)));
        }
    }
    Ok(None)
}

/// The (build, probe) stages of `join` and a read of the build stage's key summaries, if
/// it may choose a broadcast at run time: an inner or right semi partitioned join over
/// gathered reads of two stages, whose probe stage filters by those summaries (so it
/// waits for them), writes nothing else, and has no other reader.
fn adaptable(
    graph: &TaskGraph,
    join: &HashJoinExec,
) -> Option<(StageId, StageId, Arc<dyn ExecutionPlan>)> {
    if *join.partition_mode() != PartitionMode::Partitioned
        || !matches!(join.join_type(), JoinType::Inner | JoinType::RightSemi)
    {
        return None;
    }
    let (build, _) = gathered_stage(join.left())?;
    let (probe, _) = gathered_stage(join.right())?;
    let write = graph
        .stages
        .get(probe)?
        .plan
        .downcast_ref::<ShuffleWriteExec>()?;
    let filter = write.input().downcast_ref::<KeyFilterExec>()?;
    let summaries = filter
        .children()
        .get(1)?
        .downcast_ref::<ShuffleReadExec>()
        .filter(|s| s.stage() == build)?;
    let hashed = matches!(
        write.output(),
        OutputSpec::Repartition(Partitioning::Hash(..))
    );
    let only_reader = crate::key_filter::reads_of(graph, probe) == 1;
    let plain = write.key_summary().is_none() && write.broadcast_switch().is_none();
    let copy = ShuffleReadExec::new(
        summaries.stage(),
        summaries.input_tasks(),
        summaries.mode(),
        Arc::clone(summaries.properties()),
    );
    (hashed && only_reader && plain).then(|| (build, probe, Arc::new(copy) as _))
}

/// `join` as a broadcast join: the whole output of build stage `build` (every data
/// bucket of every task, in one partition) against the probe rows each partition reads,
/// which are no longer hashed on the keys.
fn broadcast_join(
    graph: &TaskGraph,
    join: &HashJoinExec,
    build: StageId,
) -> Result<Arc<dyn ExecutionPlan>> {
    let unknown = |plan: &Arc<dyn ExecutionPlan>, partitions: usize| {
        Arc::new(PlanProperties::new(
            EquivalenceProperties::new(plan.schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ))
    };
    let (left, right) = (join.left(), join.right());
    let buckets = graph.stages[build].output.buckets();
    let whole = ShuffleReadExec::new(
        build,
        graph.stages[build].tasks,
        ReadMode::Buckets(buckets),
        unknown(left, 1),
    );
    let probe = right
        .downcast_ref::<ShuffleReadExec>()
        .ok_or_else(|| internal_datafusion_err!("a join's probe side is not a read"))?;
    let rows = ShuffleReadExec::new(
        probe.stage(),
        probe.input_tasks(),
        ReadMode::Gather,
        unknown(right, probe.properties().partitioning.partition_count()),
    );
    join.builder()
        .with_partition_mode(PartitionMode::CollectLeft)
        .with_new_children(vec![Arc::new(whole), Arc::new(rows)])?
        .recompute_properties()
        .reset_state()
        .build_exec()
}
