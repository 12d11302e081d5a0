//! Text rendering of a task graph for `EXPLAIN`.

use std::collections::HashMap;
use std::fmt::Write;

use datafusion::physical_plan::{ExecutionPlan, displayable};
use shoal_planner::{Stage, StageId, TaskGraph};

/// The `plan_type` of the row `EXPLAIN` adds for Shoal's stage graph.
pub const SHOAL_PLAN_TYPE: &str = "shoal_stage_graph";

/// One block per stage: its id, task count, inputs and output bucketing, then its plan.
pub fn render_task_graph(graph: &TaskGraph) -> String {
    let mut out = String::new();
    for stage in &graph.stages {
        stage_header(&mut out, stage);
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

/// Like [`render_task_graph`], each operator followed by `metrics=[…]`: the (name, value)
/// pairs `metrics` holds for (stage, the operator's place in pre-order from the root).
pub fn render_task_graph_with_metrics(
    graph: &TaskGraph,
    metrics: &HashMap<(StageId, u32), Vec<(String, String)>>,
) -> String {
    fn walk(
        out: &mut String,
        plan: &dyn ExecutionPlan,
        stage: StageId,
        depth: usize,
        next: &mut u32,
        metrics: &HashMap<(StageId, u32), Vec<(String, String)>>,
    ) {
        let node = *next;
        *next += 1;
        let shown = metrics
            .get(&(stage, node))
            .map(|m| {
                m.iter()
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let line = displayable(plan).one_line().to_string();
        let _ = writeln!(
            out,
            "  {}{}, metrics=[{shown}]",
            "  ".repeat(depth),
            line.trim_end()
        );
        for child in plan.children() {
            walk(out, child.as_ref(), stage, depth + 1, next, metrics);
        }
    }
    let mut out = String::new();
    for stage in &graph.stages {
        stage_header(&mut out, stage);
        walk(&mut out, stage.plan.as_ref(), stage.id, 0, &mut 0, metrics);
    }
    out
}

fn stage_header(out: &mut String, stage: &Stage) {
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
}
