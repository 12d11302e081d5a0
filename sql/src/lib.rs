//! `shoal-sql` turns SQL text into work for the engine.
//!
//! ```text
//!  "stmt; stmt; …" ──parse_sql──► [Statement] ──plan_statement──► Planned::{Query, Explain, Command}
//! ```
//!
//! Queries become DataFusion logical plans that the engine runs through Shoal's planner
//! and executor. Commands (`CREATE EXTERNAL TABLE`, `SET`, `DROP`, …) change the session
//! and run at once. `COPY` is a query whose plan writes files; it refuses to replace an
//! existing path unless asked with `OPTIONS ('overwrite' 'true')`. `EXPLAIN` shows
//! DataFusion's plans plus Shoal's stage graph ([`render_task_graph`]).

mod explain;
mod statement;

pub use explain::{SHOAL_PLAN_TYPE, render_task_graph, render_task_graph_with_metrics};
pub use statement::{Planned, parse_sql, plan_statement, shoal_setting_for};
