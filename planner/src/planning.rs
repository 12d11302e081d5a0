//! The planner's entry point: a logical plan and where its tasks run in, a [`TaskGraph`]
//! out. Front ends ask [`JobPlanner`] for a graph and hand it to a cluster; none of them
//! assembles one.
//!
//! ```text
//!  LogicalPlan ─► optimize ─► aggregations a scalar subquery shares with its query
//!                 computed once (`shared_subplan`) ─► scalar subqueries computed,
//!                 inlined as literals
//!              ─► physical plan (Shoal's session policy) ─► independent partitions
//!                 (when tasks run in other processes) ─► split_into_stages ─► TaskGraph
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue};
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, Subquery, lit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::scalar_subquery::ScalarSubqueryExec;
use datafusion::prelude::SessionConfig;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::config::ShoalConfig;
use crate::error::{ErrorKind, shoal_err};
use crate::graph::TaskGraph;
use crate::shared_subplan::{MAX_SHARED_ROWS, in_memory, replace, same, shared_aggregation};

/// Where a graph's tasks run, which decides whether partitions may share state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Every task in this process: partitions may share state (a broadcast join's
    /// build side is built once).
    InProcess,
    /// Tasks in separate worker processes: every partition must stand alone.
    Processes,
}

/// The settings every Shoal plan is made and decoded with, whatever the user `SET`.
///
/// - A hash join's dynamic filter waits until every partition built its side; stage
///   tasks run a few at a time, so that wait could last forever. (Plans whose tasks run
///   in this process get the filters back, filled another way: see `build_bounds`.)
///   A `min`/`max` without `GROUP BY` keeps DataFusion's own filter: it is tightened as
///   rows arrive, by each task alone or by the tasks sharing the stage's plan, never
///   waited for (datafusion-proto carries it with the stage, one filter again).
/// - A task runs one partition of a scan, possibly in another process: it reads its own
///   files only, never its siblings'.
/// - `shoal.execution.partitions`, when set, is the partition count.
pub fn apply_session_policy(options: &mut ConfigOptions) {
    options.optimizer.enable_join_dynamic_filter_pushdown = false;
    options.execution.enable_file_stream_work_stealing = false;
    let partitions = options
        .extensions
        .get::<ShoalConfig>()
        .map(|c| c.settings.execution.partitions)
        .unwrap_or(0);
    if partitions > 0 {
        options.execution.target_partitions = partitions;
    }
}

/// The session config a worker decodes and runs a stage with: the submitting session's
/// settings, under the same policy. Settings a worker cannot take (those that shape only
/// the client's cluster) are skipped.
pub fn task_session_config(settings: &HashMap<String, String>) -> SessionConfig {
    let mut config = SessionConfig::new().with_option_extension(ShoalConfig::default());
    for (key, value) in settings {
        if let Err(e) = config.options_mut().set(key, value) {
            tracing::debug!("setting {key} = {value} skipped: {e}");
        }
    }
    apply_session_policy(config.options_mut());
    config
}

/// DataFusion's physical plan of `plan` in `state`; a panic in DataFusion's planner is
/// an error.
pub async fn physical_plan_of(
    state: &SessionState,
    plan: &LogicalPlan,
) -> Result<Arc<dyn ExecutionPlan>> {
    crate::catch_planner_panic("physical planning", state.create_physical_plan(plan)).await
}

/// Runs a graph the planner made and returns its rows: how the planner computes a
/// scalar subquery's value before it plans the query that reads it.
pub trait RunGraph: Send + Sync {
    /// Runs `graph` to completion.
    fn run_graph(&self, graph: TaskGraph) -> BoxFuture<'_, Result<Vec<RecordBatch>>>;
}

/// Plans jobs for one session: its state (catalog, settings), where tasks run and how a
/// subquery's graph is run.
pub struct JobPlanner<'a> {
    state: SessionState,
    placement: Placement,
    runner: &'a dyn RunGraph,
    /// Whether partitioned joins filter their probe side by their build keys.
    key_filters: bool,
    /// The most rows a finished build stage may have for its partitioned join to become
    /// a broadcast join at run time (0: never).
    broadcast_rows: u64,
}

impl<'a> JobPlanner<'a> {
    /// A planner over `state` (Shoal's session policy is applied to a copy).
    pub fn new(mut state: SessionState, placement: Placement, runner: &'a dyn RunGraph) -> Self {
        let options = state.config_mut().options_mut();
        apply_session_policy(options);
        let shoal = options.extensions.get::<ShoalConfig>();
        let join_filters = shoal.is_none_or(|c| c.settings.execution.join_dynamic_filters);
        let broadcast_rows = match shoal.is_none_or(|c| c.settings.execution.runtime_broadcast) {
            true => options.optimizer.hash_join_single_partition_threshold_rows as u64,
            false => 0,
        };
        // Broadcast joins fill their filters once their build side is in: here for
        // tasks sharing the plan, in each worker for the stage it decoded (`build_bounds`).
        options.optimizer.enable_join_dynamic_filter_pushdown = join_filters;
        Self {
            state,
            placement,
            runner,
            key_filters: join_filters,
            broadcast_rows,
        }
    }

    /// The physical plan DataFusion makes for `plan` under Shoal's policy.
    pub async fn physical_plan(&self, plan: &LogicalPlan) -> Result<Arc<dyn ExecutionPlan>> {
        physical_plan_of(&self.state, plan).await
    }

    /// The stages of `plan` as planned, without computing its subqueries first: what
    /// `EXPLAIN` shows.
    pub async fn stage_graph(&self, plan: &LogicalPlan) -> Result<TaskGraph> {
        self.staged(self.placed(self.physical_plan(plan).await?)?)
    }

    /// The graph a job for `plan` runs: uncorrelated scalar subqueries are computed first
    /// (each as a job of its own) and their values put into the plan as literals, so
    /// every stage is self-contained and can be serialised.
    pub async fn task_graph(&self, plan: &LogicalPlan) -> Result<TaskGraph> {
        let mut plan = self.inline_scalar_subqueries(plan).await?;
        if self.placement == Placement::Processes {
            plan = crate::window_filter::window_filters_as_case(plan)?;
        }
        let physical = self.physical_plan(&plan).await?;
        let physical = self.resolve_scalar_subqueries(physical).await?;
        self.graph_of(physical)
    }

    /// The graph for an already planned physical plan.
    pub fn graph_of(&self, physical: Arc<dyn ExecutionPlan>) -> Result<TaskGraph> {
        let physical = self.placed(physical)?;
        let resources = self
            .state
            .config_options()
            .extensions
            .get::<ShoalConfig>()
            .map(ShoalConfig::task_resources)
            .unwrap_or_default();
        Ok(self.staged(physical)?.with_resources(&resources))
    }

    /// `physical` cut into stages (each scan reading only the dynamic filters it can read
    /// soundly: `run_filters`), partitioned joins filtering their probe side by their
    /// build side's keys (`key_filter`) unless join filters are off, and those choosing a
    /// broadcast once their build side's size is known (`adaptive`).
    fn staged(&self, physical: Arc<dyn ExecutionPlan>) -> Result<TaskGraph> {
        if !self.key_filters {
            let graph = crate::split::split_into_stages(physical)?;
            return crate::run_filters::sound_scan_filters(graph);
        }
        let physical = crate::key_filter::isolate_builds(physical)?;
        let graph = crate::split::split_into_stages(physical)?;
        let graph = crate::run_filters::sound_scan_filters(graph)?;
        let graph = crate::key_filter::add_key_filters(graph)?;
        crate::adaptive::add_runtime_broadcasts(graph, self.broadcast_rows)
    }

    /// `physical` as it runs where this planner's tasks run: small inputs in one
    /// partition (`small_inputs`), partitions that stand alone
    /// for other processes (semi, anti and mark joins reduced once their filters are
    /// placed, see `distribute`), and broadcast joins that fill their dynamic filters.
    fn placed(&self, physical: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        let small = crate::small_inputs::SMALL_BATCHES * self.state.config().batch_size();
        let physical = crate::small_inputs::small_inputs_unspread(physical, small)?;
        match self.placement {
            Placement::Processes => {
                let independent = crate::distribute::independent_partitions(physical)?;
                crate::distribute::reduce_semi_joins(crate::build_bounds::fill_join_filters(
                    independent,
                )?)
            }
            Placement::InProcess => crate::build_bounds::fill_join_filters(physical),
        }
    }

    /// Replaces each uncorrelated scalar subquery of the optimized `plan` by its value.
    fn inline_scalar_subqueries<'p>(
        &'p self,
        plan: &'p LogicalPlan,
    ) -> BoxFuture<'p, Result<LogicalPlan>> {
        async move {
            let optimized = self.state.optimize(plan)?;
            let mut found: Vec<Subquery> = Vec::new();
            optimized.apply(|node| {
                node.apply_expressions(|expr| {
                    expr.apply(|e| {
                        if let Expr::ScalarSubquery(sq) = e
                            && sq.outer_ref_columns.is_empty()
                            && !found.contains(sq)
                        {
                            found.push(sq.clone());
                        }
                        Ok(TreeNodeRecursion::Continue)
                    })
                })
            })?;
            if found.is_empty() {
                return Ok(optimized);
            }
            let mut values = Vec::with_capacity(found.len());
            // Aggregations a subquery shares with the query, and their rows in memory
            // (`None`: too many to keep). Two subqueries sharing one run it once.
            let mut shared: Vec<(LogicalPlan, Option<LogicalPlan>)> = Vec::new();
            for sq in &found {
                let mut subquery = sq.subquery.as_ref().clone();
                if let Some(aggregation) = shared_aggregation(&optimized, &subquery)? {
                    let rows = match shared.iter().find(|(a, _)| same(a, &aggregation)) {
                        Some((_, rows)) => rows.clone(),
                        None => {
                            let rows = self.materialize(&aggregation).await?;
                            shared.push((aggregation.clone(), rows.clone()));
                            rows
                        }
                    };
                    if let Some(rows) = rows {
                        subquery = replace(subquery, &aggregation, &rows)?;
                    }
                }
                let inner = self.inline_scalar_subqueries(&subquery).await?;
                let physical = self.physical_plan(&inner).await?;
                values.push(self.scalar_value(physical).await?);
            }
            let rewritten = optimized
                .transform_up(|node| {
                    // A projection's output is named after its expression: keep the name
                    // the subquery gave it, not the literal's.
                    let names = NamePreserver::new(&node);
                    node.map_expressions(|expr| {
                        let saved = names.save(&expr);
                        let rewritten = expr.transform_up(|e| match &e {
                            Expr::ScalarSubquery(sq) => match found.iter().position(|f| f == sq) {
                                Some(i) => Ok(Transformed::yes(lit(values[i].clone()))),
                                None => Ok(Transformed::no(e)),
                            },
                            _ => Ok(Transformed::no(e)),
                        })?;
                        Ok(rewritten.update_data(|e| saved.restore(e)))
                    })
                })?
                .data;
            shared
                .iter()
                .filter_map(|(aggregation, rows)| Some((aggregation, rows.as_ref()?)))
                .try_fold(rewritten, |plan, (aggregation, rows)| {
                    replace(plan, aggregation, rows)
                })
        }
        .boxed()
    }

    /// `shared`'s rows in memory (see `shared_subplan`), computed by a job of their own;
    /// `None` if they are too many to keep (see [`in_memory`]).
    async fn materialize(&self, shared: &LogicalPlan) -> Result<Option<LogicalPlan>> {
        let capped = LogicalPlanBuilder::from(shared.clone())
            .limit(0, Some(MAX_SHARED_ROWS + 1))?
            .build()?;
        let physical = self.physical_plan(&capped).await?;
        let batches = self.runner.run_graph(self.graph_of(physical)?).await?;
        Ok(in_memory(shared, batches))
    }

    /// Runs each uncorrelated scalar subquery left in the physical plan as a job of its
    /// own, stores its value where the plan's expressions read it, and removes the
    /// `ScalarSubqueryExec` nodes, so no stage reads a value another stage has yet to
    /// compute.
    fn resolve_scalar_subqueries(
        &self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> BoxFuture<'_, Result<Arc<dyn ExecutionPlan>>> {
        async move {
            let mut children = Vec::new();
            for child in plan.children() {
                children.push(self.resolve_scalar_subqueries(Arc::clone(child)).await?);
            }
            if let Some(node) = plan.downcast_ref::<ScalarSubqueryExec>() {
                for (link, subquery) in node.subqueries().iter().zip(&children[1..]) {
                    let value = self.scalar_value(Arc::clone(subquery)).await?;
                    node.results().set(link.index, value)?;
                }
                return Ok(Arc::clone(&children[0]));
            }
            replace_children_if_necessary(plan, children)
        }
        .boxed()
    }

    /// The single value a scalar subquery gives: NULL for no rows, an error for several.
    async fn scalar_value(&self, plan: Arc<dyn ExecutionPlan>) -> Result<ScalarValue> {
        let field_type = plan.schema().field(0).data_type().clone();
        let batches = self.runner.run_graph(self.graph_of(plan)?).await?;
        let mut value = None;
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            if value.is_some() || batch.num_rows() > 1 {
                return Err(shoal_err(
                    ErrorKind::Input,
                    "scalar subquery returned more than one row",
                ));
            }
            value = Some(ScalarValue::try_from_array(batch.column(0), 0)?);
        }
        match value {
            Some(v) => Ok(v),
            None => ScalarValue::try_from(&field_type),
        }
    }
}
