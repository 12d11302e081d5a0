//! What people watching a job see of it: its label (SQL text or operation) and its stage
//! graph, each stage's operators one line each in the pre-order that operator metrics
//! are numbered in. The scheduler passes it on in the job's `Submitted` event; nothing
//! runs from it.

use datafusion::physical_plan::{ExecutionPlan, displayable};
use shoal_planner::{StageId, TaskGraph};

use crate::remote::proto;

/// Characters of a label kept; longer ones are cut at a character boundary with `…`.
pub const LABEL_CHARS: usize = 2000;
/// Characters of one operator line kept.
pub const LINE_CHARS: usize = 400;
/// Operators per stage kept; a deeper plan's outline ends with a line saying so.
pub const OPERATORS_KEPT: usize = 500;

/// A job's label and stage graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobOutline {
    /// The SQL text or operation (may be empty).
    pub label: String,
    /// The stages, producers before consumers; the last is the result stage.
    pub stages: Vec<StageOutline>,
}

/// One stage of a [`JobOutline`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageOutline {
    /// Stages it reads.
    pub inputs: Vec<StageId>,
    /// Its tasks.
    pub tasks: usize,
    /// Its operators in pre-order: (depth, one-line description).
    pub operators: Vec<(u32, String)>,
}

/// `text` cut to at most `limit` characters.
pub fn clipped(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        None => text.to_string(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

impl JobOutline {
    /// The outline of `graph`.
    pub fn of(graph: &TaskGraph) -> Self {
        let stages = graph
            .stages
            .iter()
            .map(|stage| {
                let mut operators = Vec::new();
                walk(stage.plan.as_ref(), 0, &mut operators);
                StageOutline {
                    inputs: stage.inputs.clone(),
                    tasks: stage.tasks,
                    operators,
                }
            })
            .collect();
        Self {
            label: clipped(&graph.label, LABEL_CHARS),
            stages,
        }
    }

    /// The wire form.
    pub fn to_proto(&self) -> proto::JobOutline {
        proto::JobOutline {
            label: self.label.clone(),
            stages: self
                .stages
                .iter()
                .map(|s| proto::StageOutline {
                    inputs: s.inputs.iter().map(|&i| i as u32).collect(),
                    tasks: s.tasks as u32,
                    operators: s
                        .operators
                        .iter()
                        .map(|(depth, text)| proto::OperatorLine {
                            depth: *depth,
                            text: text.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// From the wire form, with every text clipped to the limits above (a client's
    /// outline is only shown, but it may be large).
    pub fn from_proto(outline: proto::JobOutline) -> Self {
        Self {
            label: clipped(&outline.label, LABEL_CHARS),
            stages: outline
                .stages
                .into_iter()
                .map(|s| StageOutline {
                    inputs: s.inputs.iter().map(|&i| i as StageId).collect(),
                    tasks: s.tasks as usize,
                    operators: s
                        .operators
                        .into_iter()
                        .take(OPERATORS_KEPT + 1)
                        .map(|l| {
                            let depth = l.depth.min(OPERATORS_KEPT as u32);
                            (depth, clipped(&l.text, LINE_CHARS))
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl JobOutline {
    /// The outline made to describe the graph the scheduler runs: one stage per
    /// `(inputs, tasks)` of the job, with those inputs and tasks, and the operators the
    /// client sent for it (none for a stage it did not describe).
    pub fn fitted<'a>(
        mut self,
        stages: impl ExactSizeIterator<Item = (&'a [StageId], usize)>,
    ) -> Self {
        self.stages.resize_with(stages.len(), StageOutline::default);
        for (outline, (inputs, tasks)) in self.stages.iter_mut().zip(stages) {
            outline.inputs = inputs.to_vec();
            outline.tasks = tasks;
        }
        self
    }
}

fn walk(plan: &dyn ExecutionPlan, depth: u32, out: &mut Vec<(u32, String)>) {
    if out.len() == OPERATORS_KEPT {
        out.push((depth, "… (more operators)".to_string()));
        return;
    }
    if out.len() > OPERATORS_KEPT {
        return;
    }
    let line = displayable(plan).one_line().to_string();
    out.push((depth, clipped(line.trim_end(), LINE_CHARS)));
    for child in plan.children() {
        walk(child.as_ref(), depth + 1, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_keeps_whole_characters() {
        assert_eq!(clipped("abc", 3), "abc");
        assert_eq!(clipped("abcd", 3), "abc…");
        assert_eq!(clipped("ééé", 2), "éé…");
    }

    #[test]
    fn the_wire_form_round_trips_and_clips() {
        let outline = JobOutline {
            label: "select 1".into(),
            stages: vec![
                StageOutline {
                    inputs: vec![],
                    tasks: 3,
                    operators: vec![(0, "ShuffleWriteExec".into()), (1, "DataSourceExec".into())],
                },
                StageOutline {
                    inputs: vec![0],
                    tasks: 1,
                    operators: vec![(0, "ShuffleReadExec".into())],
                },
            ],
        };
        assert_eq!(JobOutline::from_proto(outline.to_proto()), outline);
        let mut long = outline.to_proto();
        long.label = "x".repeat(LABEL_CHARS + 10);
        long.stages[0].operators[1].depth = u32::MAX;
        let back = JobOutline::from_proto(long);
        assert_eq!(back.label.chars().count(), LABEL_CHARS + 1);
        assert_eq!(back.stages[0].operators[1].0, OPERATORS_KEPT as u32);
        // The scheduler's graph wins over what a client said of it.
        let fitted = back.fitted([(&[][..], 2), (&[0][..], 5), (&[0, 1][..], 1)].into_iter());
        assert_eq!(fitted.stages.len(), 3);
        assert_eq!(
            (fitted.stages[1].inputs.clone(), fitted.stages[1].tasks),
            (vec![0], 5)
        );
        assert_eq!(fitted.stages[0].operators.len(), 2);
        assert!(fitted.stages[2].operators.is_empty());
        assert_eq!(
            fitted
                .clone()
                .fitted([(&[][..], 1)].into_iter())
                .stages
                .len(),
            1
        );
    }
}
