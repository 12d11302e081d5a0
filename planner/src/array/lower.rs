//! Lowering an array expression to stages: everything between reductions fuses into one
//! [`ChunkProgram`] per stage, one task per output chunk; each reduction becomes a partial
//! stage and a tree of combine stages with at most `fan_in` chunks merged per task.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::common::{Result, internal_err};

use super::dtype::DType;
use super::exec::ChunkExec;
use super::expr::{ArrayExpr, ArrayNode};
use super::grid::ChunkGrid;
use super::ops::{Op, ReduceSpec};
use super::program::{ChunkProgram, LiteralChunks, ProgramNode};
use super::reduce::state_fields;
use crate::graph::{OutputSpec, Stage, StageId, TaskGraph};
use crate::shuffle::ShuffleWriteExec;

/// How an expression's value is available to later stages.
#[derive(Debug, Clone)]
struct Materialized {
    stage: StageId,
    grid: ChunkGrid,
    fields: Vec<DType>,
}

/// Builds the stages of one job.
struct Lowering {
    fan_in: usize,
    stages: Vec<Stage>,
    done: HashMap<*const ArrayNode, Materialized>,
    /// Store reads more than one stage needs (see [`shared_reads`]).
    shared: HashSet<*const ArrayNode>,
}

/// Largest store array (bytes) whose decoded chunks are kept for a second stage rather
/// than read and decoded again.
const SHARED_READ_BYTES: usize = 2 << 30;

/// The store reads of `root` that more than one stage would evaluate (a climatology and
/// the anomaly against it both read the store): each becomes a stage of its own whose
/// chunks, decoded once, the other stages fetch. Arrays above [`SHARED_READ_BYTES`] are
/// read again instead, so memory stays bounded.
fn shared_reads(root: &ArrayExpr) -> HashSet<*const ArrayNode> {
    let mut uses: HashMap<*const ArrayNode, (usize, usize)> = HashMap::new();
    let mut roots = vec![root.clone()];
    let mut stage_roots = HashSet::new();
    while let Some(stage_root) = roots.pop() {
        if !stage_roots.insert(Arc::as_ptr(&stage_root)) {
            continue;
        }
        // The nodes one stage evaluates: everything up to reductions, whose inputs are
        // the roots of stages of their own.
        let mut stack = vec![stage_root];
        let mut seen = HashSet::new();
        while let Some(n) = stack.pop() {
            if !seen.insert(Arc::as_ptr(&n)) {
                continue;
            }
            match &n.op {
                Op::Reduce { x, .. } => roots.push(x.clone()),
                Op::ZarrRead { .. } => {
                    let bytes = n.grid.shape().iter().product::<usize>() * n.dtype.size();
                    uses.entry(Arc::as_ptr(&n)).or_insert((0, bytes)).0 += 1;
                }
                op => stack.extend(op.inputs().into_iter().cloned()),
            }
        }
    }
    uses.into_iter()
        .filter(|(_, (stages, bytes))| *stages > 1 && *bytes <= SHARED_READ_BYTES)
        .map(|(node, _)| node)
        .collect()
}

/// The task graph computing `expr`: its result stage's task `i` holds chunk `i` of `expr`
/// (C order of `expr.grid`) in bucket 0. Reductions merge at most `fan_in` chunks per task.
pub fn lower(expr: &ArrayExpr, fan_in: usize) -> Result<TaskGraph> {
    let mut lowering = Lowering {
        fan_in: fan_in.max(2),
        stages: Vec::new(),
        done: HashMap::new(),
        shared: shared_reads(expr),
    };
    let out = lowering.materialize(expr)?;
    if out.stage + 1 != lowering.stages.len() {
        return internal_err!("the result stage must come last");
    }
    Ok(TaskGraph::from_stages(lowering.stages))
}

/// Builds one program, memoising nodes by identity.
struct ProgramBuilder<'a> {
    lowering: &'a mut Lowering,
    nodes: Vec<ProgramNode>,
    index: HashMap<*const ArrayNode, usize>,
    literals: Vec<LiteralChunks>,
}

/// A node reading the chunks of a materialized stage.
fn input_node(m: Materialized, dtype: DType) -> ProgramNode {
    ProgramNode {
        op: Op::Input {
            stage: m.stage,
            grid: m.grid.clone(),
            fields: m.fields,
        },
        dtype,
        grid: m.grid,
    }
}

impl ProgramBuilder<'_> {
    fn add(&mut self, expr: &ArrayExpr) -> Result<usize> {
        let key = Arc::as_ptr(expr);
        if let Some(&i) = self.index.get(&key) {
            return Ok(i);
        }
        let node = match &expr.op {
            Op::Reduce { .. } => input_node(self.lowering.materialize(expr)?, expr.dtype),
            Op::ZarrRead { .. } if self.lowering.shared.contains(&key) => {
                // Its own stage, built with the read inline; consumers fetch its chunks.
                self.lowering.shared.remove(&key);
                let m = self.lowering.materialize(expr);
                self.lowering.shared.insert(key);
                input_node(m?, expr.dtype)
            }
            Op::Literal { grid, .. } => {
                let Some(chunks) = &expr.literal else {
                    return internal_err!("a literal node without chunks");
                };
                self.literals.push(Arc::clone(chunks));
                ProgramNode {
                    op: Op::Literal {
                        id: self.literals.len() - 1,
                        grid: grid.clone(),
                    },
                    dtype: expr.dtype,
                    grid: expr.grid.clone(),
                }
            }
            op => {
                let mut inputs = HashMap::new();
                for input in op.inputs() {
                    let i = self.add(input)?;
                    inputs.insert(Arc::as_ptr(input), i);
                }
                ProgramNode {
                    op: op.map_inputs(|x| inputs[&Arc::as_ptr(x)]),
                    dtype: expr.dtype,
                    grid: expr.grid.clone(),
                }
            }
        };
        self.nodes.push(node);
        self.index.insert(key, self.nodes.len() - 1);
        Ok(self.nodes.len() - 1)
    }

    fn push(&mut self, node: ProgramNode) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn finish(self) -> ChunkProgram {
        ChunkProgram {
            nodes: self.nodes,
            literals: self.literals,
        }
    }
}

impl Lowering {
    fn builder(&mut self) -> ProgramBuilder<'_> {
        ProgramBuilder {
            lowering: self,
            nodes: Vec::new(),
            index: HashMap::new(),
            literals: Vec::new(),
        }
    }

    fn add_stage(&mut self, program: ChunkProgram) -> StageId {
        let id = self.stages.len();
        let inputs = program.input_stages();
        let tasks = program.tasks();
        let exec = Arc::new(ChunkExec::new(Arc::new(program)));
        self.stages.push(Stage {
            id,
            plan: Arc::new(ShuffleWriteExec::new(exec, OutputSpec::Single)),
            inputs,
            output: OutputSpec::Single,
            tasks,
        });
        id
    }

    fn materialize(&mut self, expr: &ArrayExpr) -> Result<Materialized> {
        let key = Arc::as_ptr(expr);
        if let Some(m) = self.done.get(&key) {
            return Ok(m.clone());
        }
        let m = match &expr.op {
            Op::Reduce {
                x,
                op,
                axes,
                keepdims,
                skipna,
                group,
            } => {
                let spec = ReduceSpec {
                    op: *op,
                    axes: axes.clone(),
                    group: group.clone(),
                    skipna: *skipna,
                    finalize: false,
                    keepdims: *keepdims,
                    input: x.dtype,
                    input_shape: x.grid.shape(),
                };
                self.reduction(x, spec, expr)?
            }
            _ => {
                let mut b = self.builder();
                b.add(expr)?;
                let program = b.finish();
                Materialized {
                    stage: self.add_stage(program),
                    grid: expr.grid.clone(),
                    fields: vec![expr.dtype],
                }
            }
        };
        self.done.insert(key, m.clone());
        Ok(m)
    }

    /// The partial stage and combine tree of a reduction of `x`.
    fn reduction(
        &mut self,
        x: &ArrayExpr,
        mut spec: ReduceSpec,
        expr: &ArrayExpr,
    ) -> Result<Materialized> {
        let ndim = x.grid.ndim();
        let group_axis = spec.group.as_ref().map(|g| g.axis);
        let merged = |a: usize| spec.axes.contains(&a) || group_axis == Some(a);
        // States keep every axis; reduced ones hold one cell per chunk, a grouped one a
        // cell per group per chunk (or, blockwise, the chunk's own groups).
        let states_grid = |counts: &[usize]| {
            ChunkGrid::new(
                (0..ndim)
                    .map(|a| match &spec.group {
                        Some(g) if g.axis == a && g.blockwise => expr.grid.axis(a).to_vec(),
                        Some(g) if g.axis == a => vec![g.groups; counts[a]],
                        _ if spec.axes.contains(&a) => vec![1; counts[a]],
                        _ => x.grid.axis(a).to_vec(),
                    })
                    .collect(),
            )
        };
        let mut counts = x.grid.counts();
        let state_dtypes: Vec<DType> = state_fields(spec.op, spec.input)
            .iter()
            .map(|f| f.1)
            .collect();
        let blockwise = spec.group.as_ref().is_some_and(|g| g.blockwise);
        let last = |counts: &[usize]| blockwise || (0..ndim).all(|a| !merged(a) || counts[a] == 1);

        spec.finalize = last(&counts);
        let mut b = self.builder();
        let xi = b.add(x)?;
        let grid = states_grid(&counts);
        b.push(ProgramNode {
            op: Op::Partial {
                x: xi,
                reduce: spec.clone(),
            },
            dtype: expr.dtype,
            grid: grid.clone(),
        });
        let program = b.finish();
        let mut stage = self.add_stage(program);
        let mut grid_now = grid;

        while !last(&counts) {
            let wide = (0..ndim).filter(|&a| merged(a) && counts[a] > 1).count() as u32;
            let per_axis =
                ((self.fan_in as f64).powf(1.0 / f64::from(wide)).floor() as usize).max(2);
            let group: Vec<usize> = (0..ndim)
                .map(|a| {
                    if merged(a) && counts[a] > 1 {
                        per_axis
                    } else {
                        1
                    }
                })
                .collect();
            for a in 0..ndim {
                counts[a] = counts[a].div_ceil(group[a]);
            }
            spec.finalize = last(&counts);
            let out_grid = states_grid(&counts);
            let program = ChunkProgram {
                nodes: vec![
                    ProgramNode {
                        op: Op::Input {
                            stage,
                            grid: grid_now.clone(),
                            fields: state_dtypes.clone(),
                        },
                        dtype: state_dtypes[0],
                        grid: grid_now.clone(),
                    },
                    ProgramNode {
                        op: Op::Combine {
                            x: 0,
                            reduce: spec.clone(),
                            group,
                        },
                        dtype: expr.dtype,
                        grid: out_grid.clone(),
                    },
                ],
                literals: Vec::new(),
            };
            stage = self.add_stage(program);
            grid_now = out_grid;
        }
        Ok(Materialized {
            stage,
            grid: expr.grid.clone(),
            fields: vec![expr.dtype],
        })
    }
}
