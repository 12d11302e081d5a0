//! Lowering an array expression to stages: everything between reductions fuses into one
//! [`ChunkProgram`] per stage, one task per output chunk; each reduction becomes a partial
//! stage and a tree of combine stages with at most `fan_in` chunks merged per task.
//!
//! Stages are sized by the workers' memory ([`ArrayLimits`]): a combine task merges no
//! more states than a quarter of a worker's memory holds, a rechunk that would gather
//! more than that reads pieces cut by a stage of their own, a store array is decoded
//! once for several stages only when the workers can keep it in memory, and a job with
//! a task that cannot fit at all is refused before anything runs.

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
use crate::config::{ShoalSettings, default_store_target};
use crate::error::{ErrorKind, shoal_err};
use crate::graph::{OutputSpec, Stage, StageId, TaskGraph};
use crate::shuffle::ShuffleWriteExec;

/// How an expression's value is available to later stages.
#[derive(Debug, Clone)]
struct Materialized {
    stage: StageId,
    grid: ChunkGrid,
    fields: Vec<DType>,
    /// When the stage cut its chunks into pieces: its chunking (`grid` is the pieces').
    split: Option<ChunkGrid>,
}

/// What lowering sizes an array job's stages by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayLimits {
    /// Most chunks one combine task merges (`shoal.array.reduce_fan_in`).
    pub fan_in: usize,
    /// Each worker's memory limit in bytes: no task may need more.
    pub worker_memory: usize,
    /// Task output the workers keep in memory together before spilling, in bytes.
    pub held_memory: usize,
    /// Tasks the workers run at once.
    pub slots: usize,
    /// Whether a rechunk may run as a stage cutting pieces and one gathering them (off
    /// where one stage must compute the array, as in a table scan).
    pub cut_rechunks: bool,
}

impl ArrayLimits {
    /// The limits of a cluster shaped by `settings` (as resolved at session start; an
    /// unresolved memory limit of 0 counts as no limit).
    pub fn of(settings: &ShoalSettings) -> Self {
        let unlimited = |bytes: usize| if bytes == 0 { usize::MAX } else { bytes };
        let worker_memory = unlimited(settings.worker.memory_limit.bytes());
        let target = match settings.store.memory_target.bytes() {
            0 => default_store_target(worker_memory),
            bytes => bytes,
        };
        Self {
            fan_in: settings.array.reduce_fan_in,
            worker_memory,
            held_memory: target.saturating_mul(settings.workers.max(1)),
            slots: settings.workers.max(1) * settings.worker.slots.max(1),
            cut_rechunks: true,
        }
    }

    /// Limits that only bound the fan-in (memory unlimited).
    pub fn fan_in(fan_in: usize) -> Self {
        Self {
            fan_in,
            worker_memory: usize::MAX,
            held_memory: usize::MAX,
            slots: 1,
            cut_rechunks: true,
        }
    }

    /// Bytes one task may gather from its inputs: a quarter of a worker's memory, so
    /// what it computes from them and the tasks beside it fit too.
    fn gather(&self) -> usize {
        self.worker_memory / 4
    }

    /// Bytes of the two operand panels one matrix-product task multiplies at most: 256
    /// MiB, or what a task may gather when that is less.
    pub fn panel_bytes(&self) -> usize {
        super::expr::PANEL_BYTES.min(self.gather())
    }
}

/// Builds the stages of one job.
struct Lowering {
    limits: ArrayLimits,
    stages: Vec<Stage>,
    done: HashMap<*const ArrayNode, Materialized>,
    /// Store reads more than one stage needs (see [`shared_reads`]).
    shared: HashSet<*const ArrayNode>,
    /// Rechunks whose source a stage cuts into pieces, by the rechunk node.
    cut: HashMap<*const ArrayNode, Materialized>,
}

/// The store reads of `root` that more than one stage would evaluate (a climatology and
/// the anomaly against it both read the store): each becomes a stage of its own whose
/// chunks, decoded once, the other stages fetch. Only arrays that take at most half of
/// what the workers keep in memory together (`held` bytes of task output; the rest is
/// for the other stages' outputs) are shared: a larger one would spill, and writing it
/// out and reading it back costs more than decoding the store again.
fn shared_reads(root: &ArrayExpr, held: usize) -> HashSet<*const ArrayNode> {
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
        .filter(|(_, (stages, bytes))| *stages > 1 && *bytes <= held / 2)
        .map(|(node, _)| node)
        .collect()
}

/// The task graph computing `expr`: its result stage's task `i` holds chunk `i` of `expr`
/// (C order of `expr.grid`) in bucket 0. Fails, naming the chunk, when one task would
/// need more than a worker's memory.
pub fn lower(expr: &ArrayExpr, limits: ArrayLimits) -> Result<TaskGraph> {
    let limits = ArrayLimits {
        fan_in: limits.fan_in.max(2),
        ..limits
    };
    let mut lowering = Lowering {
        limits,
        stages: Vec::new(),
        done: HashMap::new(),
        shared: shared_reads(expr, limits.held_memory),
        cut: HashMap::new(),
    };
    let out = lowering.materialize(expr)?;
    if out.stage + 1 != lowering.stages.len() {
        return internal_err!("the result stage must come last");
    }
    for stage in &lowering.stages {
        if let Some(program) = stage_program(stage) {
            check_fits(program, limits.worker_memory)?;
        }
    }
    Ok(TaskGraph::from_stages(lowering.stages))
}

/// The array program a stage runs, if it is an array stage.
pub fn stage_program(stage: &Stage) -> Option<&Arc<ChunkProgram>> {
    super::exec::stage_program(&stage.plan)
}

/// Refuses a program whose largest task needs more than `limit` bytes, naming the chunk.
pub fn check_fits(program: &ChunkProgram, limit: usize) -> Result<()> {
    let (task, bytes) = program.largest_task()?;
    if bytes <= limit {
        return Ok(());
    }
    let (shape, dtype, inputs) = program.task_chunk(task)?;
    Err(shoal_err(
        ErrorKind::Resources,
        format!(
            "an array task needs about {} for a chunk of shape {shape:?} ({dtype}, from {inputs} input chunk{}), more than a worker's memory limit of {}; use smaller chunks or a larger --memory-limit",
            human_bytes(bytes),
            if inputs == 1 { "" } else { "s" },
            human_bytes(limit)
        ),
    ))
}

/// `bytes` in the largest binary unit that keeps one decimal: `1.5 GiB`, `24.0 MiB`.
fn human_bytes(bytes: usize) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
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
            split: m.split,
        },
        dtype,
        grid: m.grid,
    }
}

/// The most chunks of `target` that overlap one chunk of `grid`.
fn readers(grid: &ChunkGrid, target: &ChunkGrid) -> usize {
    (0..grid.ndim())
        .map(|axis| {
            let mut start = 0;
            grid.axis(axis)
                .iter()
                .map(|&len| {
                    let range = start..start + len;
                    start += len;
                    target.overlaps(axis, &range).len()
                })
                .max()
                .unwrap_or(1)
        })
        .product()
}

/// Whether computing `x` reads a store in the same stage (up to reductions).
fn reads_store(x: &ArrayExpr) -> bool {
    let mut stack = vec![x.clone()];
    let mut seen = HashSet::new();
    while let Some(n) = stack.pop() {
        if !seen.insert(Arc::as_ptr(&n)) {
            continue;
        }
        match &n.op {
            Op::ZarrRead { .. } => return true,
            Op::Reduce { .. } => {}
            op => stack.extend(op.inputs().into_iter().cloned()),
        }
    }
    false
}

/// Bytes of the chunks of `grid` (cells of `width` bytes) that one chunk of `target`
/// overlaps, at most: what a task computing a chunk of `target` from `grid` gathers.
fn gather_bytes(grid: &ChunkGrid, target: &ChunkGrid, width: usize) -> usize {
    (0..grid.ndim())
        .map(|axis| {
            let mut start = 0;
            target
                .axis(axis)
                .iter()
                .map(|&len| {
                    let range = start..start + len;
                    start += len;
                    let src = grid.axis(axis);
                    grid.overlaps(axis, &range)
                        .iter()
                        .map(|(c, _, _)| src[*c])
                        .sum::<usize>()
                })
                .max()
                .unwrap_or(0)
        })
        .fold(width, usize::saturating_mul)
}

impl ProgramBuilder<'_> {
    fn add(&mut self, expr: &ArrayExpr) -> Result<usize> {
        let key = Arc::as_ptr(expr);
        if let Some(&i) = self.index.get(&key) {
            return Ok(i);
        }
        let node = match &expr.op {
            Op::Reduce { .. } => input_node(self.lowering.materialize(expr)?, expr.dtype),
            Op::Rechunk { x } if self.lowering.needs_pieces(x, &expr.grid) => {
                // The source is cut into the pieces each target chunk needs by a stage of
                // its own; this stage gathers only those pieces.
                let m = match self.lowering.cut.get(&key) {
                    Some(m) => m.clone(),
                    None => {
                        let m = self.lowering.pieces_of(x, &expr.grid)?;
                        self.lowering.cut.insert(key, m.clone());
                        m
                    }
                };
                let input = self.push(input_node(m, x.dtype));
                ProgramNode {
                    op: Op::Rechunk { x: input },
                    dtype: expr.dtype,
                    grid: expr.grid.clone(),
                }
            }
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
            pieces: None,
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
        let output = match program.pieces {
            Some(_) => OutputSpec::Pieces(program.buckets()),
            None => OutputSpec::Single,
        };
        let exec = Arc::new(ChunkExec::new(Arc::new(program)));
        self.stages.push(Stage {
            id,
            plan: Arc::new(ShuffleWriteExec::new(exec, output.clone())),
            inputs,
            output,
            tasks,
        });
        id
    }

    /// Chunks of `x` per partial task along each axis (empty: one). A groupby that is
    /// not blockwise keeps a state for every group per task; when that is at least half
    /// the size of a chunk of `x` (calendar months over chunks of days), each task
    /// reduces a run of up to `fan_in` chunks along the grouped axis, one at a time, into
    /// one set of states, leaving two runs per task slot.
    fn partial_run(&self, x: &ArrayExpr, spec: &ReduceSpec, state_width: usize) -> Vec<usize> {
        let Some(g) = spec.group.as_ref().filter(|g| !g.blockwise && g.groups > 1) else {
            return Vec::new();
        };
        let chunk_cells = x.grid.max_chunk_cells();
        let along = x
            .grid
            .axis(g.axis)
            .iter()
            .copied()
            .max()
            .unwrap_or(1)
            .max(1);
        let state_bytes = chunk_cells / along * g.groups * state_width;
        if state_bytes * 2 < chunk_cells * x.dtype.size() {
            return Vec::new();
        }
        let chunks = x.grid.counts()[g.axis];
        let r = (chunks / (2 * self.limits.slots.max(1))).clamp(1, self.limits.fan_in);
        if r <= 1 {
            return Vec::new();
        }
        let mut run = vec![1; x.grid.ndim()];
        run[g.axis] = r;
        run
    }

    /// Whether rechunking `x` to `target` goes through pieces: when a task would gather
    /// more than a worker should hold from several chunks of `x`, or when each chunk of
    /// a stored `x` would otherwise be read and decoded again for more than two target
    /// chunks.
    fn needs_pieces(&self, x: &ArrayExpr, target: &ChunkGrid) -> bool {
        let one_chunk = x.grid.max_chunk_cells() * x.dtype.size();
        let gathered = gather_bytes(&x.grid, target, x.dtype.size());
        if !self.limits.cut_rechunks || gathered <= one_chunk {
            return false;
        }
        gathered > self.limits.gather() || (readers(&x.grid, target) > 2 && reads_store(x))
    }

    /// A stage computing `x` chunk by chunk and cutting each chunk into the pieces of
    /// its refinement by `target`.
    fn pieces_of(&mut self, x: &ArrayExpr, target: &ChunkGrid) -> Result<Materialized> {
        let fine = x.grid.refine(target);
        let mut b = self.builder();
        b.add(x)?;
        let mut program = b.finish();
        program.pieces = Some(fine.clone());
        Ok(Materialized {
            stage: self.add_stage(program),
            grid: fine,
            fields: vec![x.dtype],
            split: Some(x.grid.clone()),
        })
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
                    split: None,
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

        let state_width: usize = state_dtypes.iter().map(|d| d.size()).sum();
        let run = self.partial_run(x, &spec, state_width);
        if let Some((axis, r)) = run.iter().enumerate().find(|(_, r)| **r > 1) {
            counts[axis] = counts[axis].div_ceil(*r);
        }
        spec.finalize = last(&counts);
        let mut b = self.builder();
        let xi = b.add(x)?;
        let grid = states_grid(&counts);
        b.push(ProgramNode {
            op: Op::Partial {
                x: xi,
                reduce: spec.clone(),
                run,
            },
            dtype: expr.dtype,
            grid: grid.clone(),
        });
        let program = b.finish();
        let mut stage = self.add_stage(program);
        let mut grid_now = grid;

        while !last(&counts) {
            let wide = (0..ndim).filter(|&a| merged(a) && counts[a] > 1).count() as u32;
            // No more states than a task may gather.
            let state_bytes = grid_now
                .max_chunk_cells()
                .saturating_mul(state_width)
                .max(1);
            let fan_in = self.limits.fan_in.min(self.limits.gather() / state_bytes);
            let per_axis = ((fan_in as f64).powf(1.0 / f64::from(wide)).floor() as usize).max(2);
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
                            split: None,
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
                pieces: None,
            };
            stage = self.add_stage(program);
            grid_now = out_grid;
        }
        Ok(Materialized {
            stage,
            grid: expr.grid.clone(),
            fields: vec![expr.dtype],
            split: None,
        })
    }
}
