//! `shoal-planner` turns a DataFusion physical plan into Shoal's unit of work, the
//! [`TaskGraph`].
//!
//! Front ends call [`JobPlanner`] (in [`planning`]): it computes scalar subqueries, makes
//! the physical plan under Shoal's session policy (which workers decode stages with too),
//! makes partitions independent when tasks run in other processes, and splits the plan.
//! Errors carry an [`ErrorKind`] set where they arise ([`error`]).
//!
//! ```text
//!  physical plan ──split::split_into_stages──► stages (cut at exchanges)
//!                                                 │  one task per output partition
//!                                                 ▼
//!                     TaskGraph { stages, resources, label }
//! ```
//!
//! Each stage is a plan fragment rooted at a [`ShuffleWriteExec`], whose leaves that read
//! other stages are [`ShuffleReadExec`]s. How batches move between tasks is not this
//! crate's business: both operators talk to a [`ShuffleIo`] that the executor puts into
//! the task's context ([`ShuffleEnv`]). Read [`split::split_into_stages`] first.
//!
//! Arrays take the same road: [`array::lower`] turns an array expression into stages whose
//! plans are [`array::ChunkExec`] (a fused chunk program, one task per output chunk) under
//! the same `ShuffleWriteExec`, so chunk tasks and SQL tasks share one scheduler, result
//! store, transport and plan codec (a DataFusion operator, not a second kind of task). The
//! chunk compute itself (kernels, reductions, BLAS, chunk-program evaluation) is
//! `shoal-array`'s. Labeled arrays read as SQL tables through [`array::CellTable`] (the
//! table provider, pruning on coordinates) and its scan operator [`array::CellScanExec`],
//! whose per-variable chunk programs read store chunks through `shoal-io` like any array
//! stage; a Zarr group opens as an [`array::ZarrGroup`] (variables as expressions, CF
//! decoding applied) and becomes such a table, also through `CREATE EXTERNAL TABLE … STORED
//! AS ZARR` ([`array::ZarrTableFactory`]). The settings of every front end and process are
//! declared once, in [`config`].

/// The `ExecutionPlan` methods every leaf operator of Shoal's spells the same way:
/// `name`, `properties` (from a `properties` field), no children, no expressions, and a
/// `with_new_children` that accepts only none.
macro_rules! leaf_plan_methods {
    ($name:literal) => {
        fn name(&self) -> &str {
            $name
        }

        fn properties(&self) -> &std::sync::Arc<datafusion::physical_plan::PlanProperties> {
            &self.properties
        }

        fn children(&self) -> Vec<&std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            vec![]
        }

        fn apply_expressions(
            &self,
            _f: &mut dyn FnMut(
                &std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>,
            ) -> datafusion::common::Result<
                datafusion::common::tree_node::TreeNodeRecursion,
            >,
        ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion> {
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }

        fn with_new_children(
            self: std::sync::Arc<Self>,
            children: Vec<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
        ) -> datafusion::common::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>
        {
            if !children.is_empty() {
                return datafusion::common::internal_err!(concat!($name, " is a leaf"));
            }
            Ok(self)
        }
    };
}

/// What the planner's unit tests share.
#[cfg(test)]
mod test_support {
    use std::sync::Arc;

    use datafusion::physical_plan::ExecutionPlan;
    use datafusion::prelude::SessionContext;

    /// DataFusion's physical plan of `sql` in `ctx`.
    pub(crate) async fn planned(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
        let df = ctx.sql(sql).await.unwrap();
        df.create_physical_plan().await.unwrap()
    }
}

pub mod adaptive;
pub mod array;
pub mod build_bounds;
pub mod checked;
pub mod codec;
pub mod config;
pub mod distribute;
mod equivalence;
pub mod error;
pub mod graph;
pub mod join_order;
pub mod key_filter;
pub mod planning;
mod repair;
pub mod replay;
pub mod resources;
pub mod run_filters;
pub mod scan;
pub mod shared_subplan;
pub mod shuffle;
pub mod sink;
pub mod small_inputs;
pub mod split;
mod window_filter;
pub use window_filter::windows_need_the_client;

pub use codec::{ShoalCodec, decode_plan, encode_plan};
pub use config::ShoalConfig;
pub use error::{ErrorKind, ShoalError, catch_planner_panic, kind_of, panic_message, shoal_err};
pub use graph::{JobId, OutputSpec, Stage, StageId, TaskGraph, TaskId};
pub use planning::{JobPlanner, Placement, RunGraph, apply_session_policy, task_session_config};
pub use replay::{ReplayHazard, graph_replay_hazard, replay_hazard};
pub use resources::Resources;
pub use shuffle::{
    InputLocations, Locations, Part, PartitionKey, ReadMode, ShuffleEnv, ShuffleIo,
    ShuffleReadExec, ShuffleWriteExec, WorkerId, bucket_bytes,
};
pub use split::split_into_stages;
