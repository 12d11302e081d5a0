//! Shoal: a distributed dataframe and chunked-array query engine on Apache Arrow and
//! DataFusion. This crate is the public API and the `shoal` binary.
//!
//! ```text
//!  Session::sql / DataFrame verbs ─► DataFusion logical plan
//!        ─► shoal_planner::JobPlanner ─► TaskGraph ─► shoal_exec::Cluster
//! ```
//!
//! Arrays: [`Array`] (chunked N-d, like `dask.array`), [`DataArray`] and [`Dataset`]
//! (named dimensions, like xarray), Zarr through `Session::open_zarr` and `to_zarr`.
//!
//! Start with [`Session`]: `Session::new()` starts an embedded scheduler with one worker
//! per core; `session.read_parquet(..)`, `session.sql(..)` give lazy [`DataFrame`]s.
//!
//! ```no_run
//! use shoal::prelude::*;
//! # async fn run() -> shoal::Result<()> {
//! let session = Session::new();
//! let orders = session.read_parquet("data/sf1/orders.parquet")?;
//! let top = orders
//!     .filter(col("o_orderstatus").eq(lit("F")))?
//!     .groupby(["o_custkey"])?
//!     .agg([sum(col("o_totalprice")).alias("spent")])?
//!     .sort_values(["spent"], false)?
//!     .head(10)?;
//! top.show().await?;
//! # Ok(()) }
//! ```

mod analyze;
mod array;
mod dashboard;
mod dataframe;
mod error;
pub mod labeled;
mod queries;
mod session;
pub mod tpch;

pub use array::{Array, Axes, Element, Operand};
pub use dashboard::{open_event_log, shown_settings};
pub use dataframe::{DataFrame, GroupBy, How};
pub use error::{Error, ErrorKind, Result};
pub use labeled::{DataArray, Dataset, Dims, Index, Label, LabelSel, Sel};
pub use session::{ProgressListener, Session, SessionBuilder};
pub use shoal_dashboard::status_json;
pub use shoal_exec::{JobEvent, JobEventKind, Progress};
pub use shoal_planner::ShoalConfig;
pub use shoal_planner::array::{BinaryOp, DType, ReduceOp, UnaryOp};
pub use shoal_planner::config::ShoalSettings;
pub use shoal_planner::config::{machine_memory, peak_resident_memory};

/// Everything a DataFrame program usually needs.
pub mod prelude {
    pub use crate::{DataFrame, How, Session};
    pub use datafusion::functions_aggregate::expr_fn::{avg, count, max, min, sum};
    pub use datafusion::logical_expr::{Expr, col, lit};
    pub use datafusion::prelude::{cast, coalesce, date_part, ident, to_date};
}

/// The README's Rust examples, compiled as doc tests so they keep working as written.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;

/// Re-exported so users name the same versions Shoal uses.
pub use datafusion;
