//! Text rendering of a task graph for `EXPLAIN`.

use std::fmt::Write;

use datafusion::physical_plan::displayable;
use shoal_planner::TaskGraph;

/// The `plan_type` of the row `EXPLAIN` adds for Shoal's stage graph.
pub const SHOAL_PLAN_TYPE: &str = "shoal_stage_graph";

/// One block per stage: its id, task count, inputs and output bucketing, then its plan.
pub fn render_task_graph(graph: &TaskGraph) -> String {
    let mut out = String::new();
    for stage in &graph.stages {
        let inputs = if stage.inputs.is_empty() {
            "none".to_string()
        } else {
            stage
                .inputs
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "Stage {}: tasks={}, reads=[{}], output={}",
            stage.id, stage.tasks, inputs, stage.output
        );
        for line in displayable(stage.plan.as_ref())
            .indent(false)
            .to_string()
            .lines()
        {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}
