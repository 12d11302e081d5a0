//! [`ChunkProgram`]: what one array stage computes. Its tasks each produce one chunk of
//! the root node by evaluating the fused nodes over regions: every node maps the region
//! asked of it to regions of its inputs, down to sources (generated in place) and
//! `Input`s (chunks of earlier stages, fetched before evaluation starts).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use datafusion_common::arrow::record_batch::RecordBatch;
use datafusion_common::{Result, exec_err, internal_datafusion_err, internal_err};
use ndarray::{ArrayD, IxDyn, Slice};
use serde::{Deserialize, Serialize};

use crate::chunk::NdChunk;
use crate::dtype::{DType, Native};
use crate::grid::{ChunkGrid, Region, region_shape};
use crate::kernels;
use crate::ops::Op;
use crate::reduce::{self, state_fields};
use crate::with_native;

/// One node of a program: an operation whose inputs are earlier nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgramNode {
    /// What it computes.
    pub op: Op<usize>,
    /// Its element type.
    pub dtype: DType,
    /// Its shape and chunking. For `Partial` and `Combine`, the chunking of the states
    /// (reduced axes kept at length 1).
    pub grid: ChunkGrid,
}

/// The chunks of an array built in memory, numbered in C order of its grid.
pub type LiteralChunks = Arc<Vec<NdChunk>>;

/// A stage of array work: nodes in topological order, the last one the root. Task `i`
/// computes chunk `i` of the root.
#[derive(Debug, Clone)]
pub struct ChunkProgram {
    /// The nodes; inputs precede their consumers.
    pub nodes: Vec<ProgramNode>,
    /// Arrays built in memory, referenced by `Op::Literal { id }`.
    pub literals: Vec<LiteralChunks>,
    /// When set, a refinement of the root's chunking: task `i` cuts chunk `i` into the
    /// pieces of this grid inside it and writes piece `k` to bucket `k` (see
    /// [`ChunkGrid::piece_of`]), so a rechunk downstream reads only the pieces it needs.
    pub pieces: Option<ChunkGrid>,
}

/// The region of the chunks of `grid` that run `coords` covers when each run holds
/// `per_run[axis]` chunks along each axis.
pub(crate) fn run_region(grid: &ChunkGrid, coords: &[usize], per_run: &[usize]) -> Region {
    coords
        .iter()
        .enumerate()
        .map(|(axis, &c)| {
            let lens = grid.axis(axis);
            let first = c * per_run[axis];
            let last = (first + per_run[axis]).min(lens.len());
            let start: usize = lens[..first].iter().sum();
            let end: usize = start + lens[first..last].iter().sum::<usize>();
            start..end
        })
        .collect()
}

/// Regions of nodes: (node, region).
pub type NodeRegions = Vec<(usize, Region)>;

/// Input chunks fetched for one task, by (node, chunk number).
pub type Fetched = HashMap<(usize, usize), RecordBatch>;

impl ChunkProgram {
    /// The root node's index.
    pub fn root(&self) -> usize {
        self.nodes.len() - 1
    }

    /// Number of tasks (chunks of the root).
    pub fn tasks(&self) -> usize {
        self.nodes[self.root()].grid.len()
    }

    /// Names and dtypes of the columns of every task's output batch.
    pub fn output_fields(&self) -> Vec<(&'static str, DType)> {
        let root = &self.nodes[self.root()];
        match &root.op {
            Op::Partial { reduce, .. } | Op::Combine { reduce, .. } if !reduce.finalize => {
                state_fields(reduce.op, reduce.input)
            }
            _ => vec![("values", root.dtype)],
        }
    }

    /// The stages whose outputs the program reads.
    pub fn input_stages(&self) -> Vec<usize> {
        let mut stages: Vec<usize> = self
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Input { stage, .. } => Some(*stage),
                _ => None,
            })
            .collect();
        stages.sort_unstable();
        stages.dedup();
        stages
    }

    /// The region of `child` the root reads for task `task`, when the root is a reduction
    /// step; otherwise the root's own chunk region.
    pub(crate) fn root_regions(&self, task: usize) -> Result<Vec<(usize, Region)>> {
        let root = &self.nodes[self.root()];
        let coords = root.grid.coords(task);
        match &root.op {
            Op::Partial { x, run, .. } if run.is_empty() => {
                let grid = &self.nodes[*x].grid;
                Ok(vec![(*x, grid.region(grid.index(&coords)))])
            }
            Op::Partial { x, run: group, .. } | Op::Combine { x, group, .. } => {
                Ok(vec![(*x, run_region(&self.nodes[*x].grid, &coords, group))])
            }
            _ => Ok(vec![(self.root(), root.grid.region(task))]),
        }
    }

    /// Output buckets per task: one, or the most pieces of one chunk when cut.
    pub fn buckets(&self) -> usize {
        let root = &self.nodes[self.root()].grid;
        self.pieces.as_ref().map_or(1, |fine| root.max_pieces(fine))
    }

    /// Chunk `chunk` of `Input` node `node`: (stage, producing task, bucket).
    pub fn source(&self, node: usize, chunk: usize) -> Result<(usize, usize, usize)> {
        match &self.nodes[node].op {
            Op::Input {
                stage,
                grid,
                split: Some(coarse),
                ..
            } => {
                let (task, bucket) = coarse.piece_of(grid, chunk);
                Ok((*stage, task, bucket))
            }
            Op::Input { stage, .. } => Ok((*stage, chunk, 0)),
            _ => internal_err!("node {node} is not an input"),
        }
    }

    /// Task `task`'s output chunk cut into the pieces of [`ChunkProgram::pieces`] inside
    /// it, in bucket order; each piece is a copy, so a bucket holds only its own cells.
    pub fn cut(&self, task: usize, chunk: &NdChunk) -> Result<Vec<NdChunk>> {
        let Some(fine) = &self.pieces else {
            return Ok(vec![chunk.clone()]);
        };
        let grid = &self.nodes[self.root()].grid;
        let outer = grid.region(task);
        grid.pieces_in(fine, task)
            .into_iter()
            .map(|piece| {
                let local: Region = fine
                    .region(piece)
                    .iter()
                    .zip(&outer)
                    .map(|(r, o)| r.start - o.start..r.end - o.start)
                    .collect();
                let view = chunk.slice(&local);
                let dtype = view.dtype();
                Ok(with_native!(dtype, T => NdChunk::from_vec(dtype, view.shape().to_vec(), view.to_vec::<T>())))
            })
            .collect()
    }

    /// The chunks of `Input` nodes task `task` reads: (node, chunk number).
    pub fn needs(&self, task: usize) -> Result<Vec<(usize, usize)>> {
        let mut out = Vec::new();
        for (node, region) in self.root_regions(task)? {
            self.collect_needs(node, &region, &mut out)?;
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    pub(crate) fn collect_needs(
        &self,
        node: usize,
        region: &Region,
        out: &mut Vec<(usize, usize)>,
    ) -> Result<()> {
        if let Op::Input { grid, .. } | Op::ZarrRead { grid, .. } = &self.nodes[node].op {
            for (chunk, _, _) in pieces(grid, region) {
                out.push((node, grid.index(&chunk)));
            }
            return Ok(());
        }
        for (child, r) in self.child_regions(node, region)? {
            self.collect_needs(child, &r, out)?;
        }
        Ok(())
    }

    /// Computes task `task`'s output columns from the fetched input chunks.
    pub fn run(&self, task: usize, fetched: &Fetched) -> Result<Vec<(&'static str, NdChunk)>> {
        let root = &self.nodes[self.root()];
        let names: Vec<&'static str> = self.output_fields().iter().map(|f| f.0).collect();
        let columns = match &root.op {
            Op::Partial { reduce, .. } => {
                if let Some((x, runs)) = self.partial_runs(task)? {
                    let mut states = None;
                    for region in &runs {
                        let piece = self.piece_states(x, region, fetched)?;
                        states = Some(self.merge_states(states, piece)?);
                    }
                    return self.finish_states(states);
                }
                let [(x, region)] = &self.root_regions(task)?[..] else {
                    return internal_err!("a partial reduction has one input");
                };
                self.partial_states(*x, region, reduce, fetched)?
            }
            Op::Combine { reduce, .. } => {
                let [(x, region)] = &self.root_regions(task)?[..] else {
                    return internal_err!("a combine step has one input");
                };
                let Op::Input { fields, grid, .. } = &self.nodes[*x].op else {
                    return internal_err!("a combine step reads an earlier stage");
                };
                let states = (0..fields.len())
                    .map(|f| read_input(*x, grid, fields[f], f, region, fetched))
                    .collect::<Result<Vec<_>>>()?;
                reduce::combine(reduce, &states)?
            }
            _ => vec![self.eval(self.root(), &root.grid.region(task), fetched)?],
        };
        Ok(names.into_iter().zip(columns).collect())
    }

    /// The states (or, with `finalize`, values) of `spec` over `region` of node `x`.
    pub(crate) fn partial_states(
        &self,
        x: usize,
        region: &Region,
        spec: &crate::ops::ReduceSpec,
        fetched: &Fetched,
    ) -> Result<Vec<NdChunk>> {
        if let Some(states) = self.partial_by_pieces(x, region, spec, fetched)? {
            return Ok(states);
        }
        let chunk = self.eval(x, region, fetched)?;
        let offsets: Vec<usize> = region.iter().map(|r| r.start).collect();
        reduce::partial(spec, &chunk, &offsets)
    }

    /// A reduction of a rechunked stored array, where the region spans several stored
    /// chunks only along reduced axes: each stored piece is reduced where it lies (no
    /// copy into the new chunking) and the pieces' states are merged in the task.
    fn partial_by_pieces(
        &self,
        x: usize,
        region: &Region,
        spec: &crate::ops::ReduceSpec,
        fetched: &Fetched,
    ) -> Result<Option<Vec<NdChunk>>> {
        let Op::Rechunk { x: source } = &self.nodes[x].op else {
            return Ok(None);
        };
        let grid = match &self.nodes[*source].op {
            Op::Literal { grid, .. } => grid,
            Op::Input { grid, fields, .. } if fields.len() == 1 => grid,
            Op::ZarrRead { grid, .. } => grid,
            _ => return Ok(None),
        };
        let parts = pieces(grid, region);
        let Some(first_reduced) = spec.axes.first().copied() else {
            return Ok(None);
        };
        let kept_whole = parts.iter().all(|(_, _, dst)| {
            (0..dst.len())
                .all(|a| spec.axes.contains(&a) || dst[a] == (0..region[a].end - region[a].start))
        });
        if parts.len() < 2 || !kept_whole {
            return Ok(None);
        }
        let mut piece_spec = spec.clone();
        piece_spec.finalize = false;
        let mut states: Vec<Vec<NdChunk>> = Vec::new();
        for (_, _, dst) in &parts {
            let piece: Region = dst
                .iter()
                .zip(region)
                .map(|(d, r)| r.start + d.start..r.start + d.end)
                .collect();
            let chunk = self.eval(*source, &piece, fetched)?;
            let offsets: Vec<usize> = piece.iter().map(|r| r.start).collect();
            states.push(reduce::partial(&piece_spec, &chunk, &offsets)?);
        }
        let fields = states[0].len();
        let joined = (0..fields)
            .map(|f| {
                let column: Vec<NdChunk> = states.iter().map(|s| s[f].clone()).collect();
                kernels::concat(&column, first_reduced)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(reduce::combine(spec, &joined)?))
    }

    /// The regions of its inputs that node `node` needs to produce `region`.
    pub(crate) fn child_regions(&self, node: usize, region: &Region) -> Result<NodeRegions> {
        let n = &self.nodes[node];
        let shape_of = |i: usize| self.nodes[i].grid.shape();
        Ok(match &n.op {
            Op::Random { .. }
            | Op::Full { .. }
            | Op::Arange { .. }
            | Op::Literal { .. }
            | Op::ZarrRead { .. }
            | Op::Input { .. } => vec![],
            Op::Unary { x, .. } | Op::Cast { x } | Op::Rechunk { x } | Op::ZarrWrite { x, .. } => {
                vec![(*x, region.clone())]
            }
            Op::Binary { a, b, .. } => vec![
                (*a, broadcast_region(region, &shape_of(*a))),
                (*b, broadcast_region(region, &shape_of(*b))),
            ],
            Op::Where { cond, a, b } => [cond, a, b]
                .iter()
                .map(|&&i| (i, broadcast_region(region, &shape_of(i))))
                .collect(),
            Op::BroadcastTo { x } => vec![(*x, broadcast_region(region, &shape_of(*x)))],
            Op::Reshape { x } => vec![(*x, reshape_source(region, &n.grid.shape(), &shape_of(*x)))],
            Op::Rolling {
                x, axis, window, ..
            } => {
                let mut r = region.clone();
                r[*axis] = (region[*axis].start + 1).saturating_sub(*window)..region[*axis].end;
                vec![(*x, r)]
            }
            Op::ExpandDims { x, axes } => vec![(
                *x,
                region
                    .iter()
                    .enumerate()
                    .filter(|(a, _)| !axes.contains(a))
                    .map(|(_, r)| r.clone())
                    .collect(),
            )],
            Op::Squeeze { x, axes } => {
                let mut r = Vec::with_capacity(region.len() + axes.len());
                let mut it = region.iter();
                for a in 0..region.len() + axes.len() {
                    if axes.contains(&a) {
                        r.push(0..1);
                    } else {
                        r.push(it.next().cloned().unwrap_or(0..0));
                    }
                }
                vec![(*x, r)]
            }
            Op::Slice { x, starts, steps } => {
                let r = region
                    .iter()
                    .zip(starts.iter().zip(steps))
                    .map(|(r, (&start, &step))| {
                        if r.is_empty() {
                            start..start
                        } else {
                            start + r.start * step..start + (r.end - 1) * step + 1
                        }
                    })
                    .collect();
                vec![(*x, r)]
            }
            Op::Take { x, axis, indices } => {
                let mut r = region.clone();
                let picked = &indices[region[*axis].clone()];
                r[*axis] = match (picked.iter().min(), picked.iter().max()) {
                    (Some(&lo), Some(&hi)) => lo..hi + 1,
                    _ => 0..0,
                };
                vec![(*x, r)]
            }
            Op::Transpose { x, perm } => {
                let mut r = vec![0..0; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    r[p] = region[i].clone();
                }
                vec![(*x, r)]
            }
            Op::Concat { xs, axis } => {
                let mut out = Vec::new();
                let mut offset = 0;
                let want = &region[*axis];
                for &x in xs {
                    let len = shape_of(x)[*axis];
                    let lo = want.start.max(offset);
                    let hi = want.end.min(offset + len);
                    if lo < hi {
                        let mut r = region.clone();
                        r[*axis] = lo - offset..hi - offset;
                        out.push((x, r));
                    }
                    offset += len;
                }
                if out.is_empty() {
                    let mut r = region.clone();
                    r[*axis] = 0..0;
                    out.push((xs[0], r));
                }
                out
            }
            Op::Contract { a, b, blocks } => {
                let start: usize = blocks[..region[2].start].iter().sum();
                let len: usize = blocks[region[2].clone()].iter().sum();
                let k = start..start + len;
                vec![
                    (*a, vec![region[0].clone(), k.clone()]),
                    (*b, vec![k, region[1].clone()]),
                ]
            }
            Op::Reduce { .. } | Op::Partial { .. } | Op::Combine { .. } => {
                return internal_err!("a reduction step can only be a stage's root");
            }
        })
    }

    /// Evaluates node `node` over `region` (in the node's coordinates).
    fn eval(&self, node: usize, region: &Region, fetched: &Fetched) -> Result<NdChunk> {
        let n = &self.nodes[node];
        let shape = region_shape(region);
        if let Op::Contract { a, .. } = &n.op {
            // Piece by piece along `a`'s chunks of the contracted axis, accumulated in
            // one output: the pieces are views of stored chunks, never copied together.
            let [(ca, ra), (cb, rb)] = &self.child_regions(node, region)?[..] else {
                return internal_err!("a contraction has two operands");
            };
            let k = &ra[1];
            let mut pieces = Vec::new();
            let mut lo = 0;
            for &len in self.nodes[*a].grid.axis(1) {
                let (start, end) = (lo.max(k.start), (lo + len).min(k.end));
                if start < end {
                    let left = self.eval(*ca, &vec![ra[0].clone(), start..end], fetched)?;
                    let right = self.eval(*cb, &vec![start..end, rb[1].clone()], fetched)?;
                    pieces.push((left, right));
                }
                lo += len;
            }
            return kernels::matmul_pieces(&pieces, n.dtype, (shape[0], shape[1]));
        }
        let children = self
            .child_regions(node, region)?
            .into_iter()
            .map(|(child, r)| self.eval(child, &r, fetched))
            .collect::<Result<Vec<_>>>()?;
        Ok(match &n.op {
            Op::Random { seed, low, high } => {
                let values = random_region(*seed, *low, *high, &n.grid.shape(), region);
                NdChunk::from_vec(DType::F64, shape, values)
            }
            Op::Full { value } => {
                with_native!(n.dtype, T => NdChunk::filled::<T>(n.dtype, shape, value.to_native()))
            }
            Op::Arange { start, step } => {
                let values: Vec<f64> = region[0].clone().map(|i| start + step * i as f64).collect();
                kernels::cast(&NdChunk::from_vec(DType::F64, shape, values), n.dtype)
            }
            Op::Literal { id, grid } => {
                let chunks = self
                    .literals
                    .get(*id)
                    .ok_or_else(|| internal_datafusion_err!("literal {id} is missing"))?;
                read_region(grid, n.dtype, region, |i| {
                    chunks
                        .get(i)
                        .cloned()
                        .ok_or_else(|| internal_datafusion_err!("literal {id} lacks chunk {i}"))
                })?
            }
            Op::Input { grid, .. } | Op::ZarrRead { grid, .. } => {
                read_input(node, grid, n.dtype, 0, region, fetched)?
            }
            Op::ZarrWrite { .. } => children[0].clone(),
            Op::Unary { op, .. } => kernels::unary(*op, &children[0], n.dtype)?,
            Op::Binary { op, .. } => {
                kernels::binary(*op, &children[0], &children[1], &shape, n.dtype)?
            }
            Op::Where { .. } => {
                kernels::select(&children[0], &children[1], &children[2], &shape, n.dtype)?
            }
            Op::Cast { .. } => kernels::cast(&children[0], n.dtype),
            Op::Rechunk { .. } => children[0].clone(),
            Op::Slice { steps, .. } => {
                let c = &children[0];
                let ranges: Vec<(Range<usize>, usize)> = c
                    .shape()
                    .iter()
                    .zip(steps)
                    .map(|(&len, &step)| (0..len, step))
                    .collect();
                c.slice_step(&ranges)
            }
            Op::Take { axis, indices, .. } => {
                let picked = &indices[region[*axis].clone()];
                let lo = picked.iter().copied().min().unwrap_or(0);
                let local: Vec<usize> = picked.iter().map(|i| i - lo).collect();
                kernels::take(&children[0], *axis, &local)
            }
            Op::Transpose { perm, .. } => children[0].permute(perm),
            Op::BroadcastTo { .. } => broadcast(&children[0], &shape)?,
            Op::ExpandDims { .. } | Op::Squeeze { .. } => children[0].with_shape(shape),
            Op::Reshape { x } => {
                let source = reshape_source(region, &n.grid.shape(), &self.nodes[*x].grid.shape());
                reshape_gather(
                    &children[0],
                    &source,
                    region,
                    &n.grid.shape(),
                    &self.nodes[*x].grid.shape(),
                )
            }
            Op::Rolling {
                axis,
                window,
                op,
                min_periods,
                ..
            } => {
                let lead = region[*axis].start - (region[*axis].start + 1).saturating_sub(*window);
                kernels::rolling(
                    &children[0],
                    *axis,
                    *window,
                    lead,
                    *op,
                    *min_periods,
                    n.dtype,
                )?
            }
            Op::Concat { axis, .. } => kernels::concat(&children, *axis)?,
            Op::Contract { .. } => return internal_err!("contractions evaluate piece by piece"),
            Op::Reduce { .. } | Op::Partial { .. } | Op::Combine { .. } => {
                return internal_err!("a reduction step can only be a stage's root");
            }
        })
    }
}

fn flat_index(index: &[usize], shape: &[usize]) -> usize {
    index.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i)
}

fn unflatten(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut out = vec![0; shape.len()];
    for axis in (0..shape.len()).rev() {
        let n = shape[axis].max(1);
        out[axis] = flat % n;
        flat /= n;
    }
    out
}

/// The rows of the input (all other axes whole) holding the cells of an output region of
/// a reshape: those between the region's first and last cells in C order.
fn reshape_source(region: &Region, out_shape: &[usize], in_shape: &[usize]) -> Region {
    if region.iter().any(|r| r.is_empty()) || in_shape.is_empty() {
        return in_shape.iter().map(|_| 0..0).collect();
    }
    let first: Vec<usize> = region.iter().map(|r| r.start).collect();
    let last: Vec<usize> = region.iter().map(|r| r.end - 1).collect();
    let lo = unflatten(flat_index(&first, out_shape), in_shape);
    let hi = unflatten(flat_index(&last, out_shape), in_shape);
    let mut source: Region = in_shape.iter().map(|&n| 0..n).collect();
    source[0] = lo[0]..hi[0] + 1;
    source
}

/// The output region of a reshape gathered from its source rows (C order).
fn reshape_gather(
    source: &NdChunk,
    rows: &Region,
    region: &Region,
    out_shape: &[usize],
    in_shape: &[usize],
) -> NdChunk {
    let row_cells: usize = in_shape.iter().skip(1).product();
    let base = rows.first().map_or(0, |r| r.start) * row_cells;
    let dtype = source.dtype();
    with_native!(dtype, T => {
        let values = source.to_vec::<T>();
        let shape = region_shape(region);
        let mut out = Vec::with_capacity(shape.iter().product());
        let mut idx: Vec<usize> = region.iter().map(|r| r.start).collect();
        let total: usize = shape.iter().product();
        for _ in 0..total {
            out.push(values[flat_index(&idx, out_shape) - base]);
            for axis in (0..idx.len()).rev() {
                idx[axis] += 1;
                if idx[axis] < region[axis].end {
                    break;
                }
                idx[axis] = region[axis].start;
            }
        }
        NdChunk::from_vec(dtype, shape, out)
    })
}

/// The region of an input of `shape` that a broadcast output region reads (NumPy rules:
/// shapes aligned on the right, length-1 axes stretched).
pub fn broadcast_region(region: &Region, shape: &[usize]) -> Region {
    let skip = region.len() - shape.len();
    shape
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            if n == 1 {
                0..1
            } else {
                region[skip + i].clone()
            }
        })
        .collect()
}

fn broadcast(chunk: &NdChunk, shape: &[usize]) -> Result<NdChunk> {
    with_native!(chunk.dtype(), T => {
        let view = chunk.view::<T>();
        let Some(b) = view.broadcast(IxDyn(shape)) else {
            return exec_err!("cannot broadcast shape {:?} to {shape:?}", chunk.shape());
        };
        Ok(NdChunk::from_ndarray(chunk.dtype(), b.to_owned()))
    })
}

/// For each chunk of `grid` overlapping `region`: its coordinates, the range inside the
/// chunk and the range inside the region, per axis.
pub(crate) fn pieces(grid: &ChunkGrid, region: &Region) -> Vec<(Vec<usize>, Region, Region)> {
    let per_axis: Vec<_> = (0..grid.ndim())
        .map(|axis| grid.overlaps(axis, &region[axis]))
        .collect();
    let mut out = vec![(Vec::new(), Vec::new(), Vec::new())];
    for axis in per_axis {
        let mut next = Vec::with_capacity(out.len() * axis.len());
        for (coords, src, dst) in &out {
            for (c, s, d) in &axis {
                let mut coords = coords.clone();
                let mut src = src.clone();
                let mut dst = dst.clone();
                coords.push(*c);
                src.push(s.clone());
                dst.push(d.clone());
                next.push((coords, src, dst));
            }
        }
        out = next;
    }
    out
}

/// Assembles `region` of an array chunked as `grid` from its chunks (no copy when the
/// region lies inside one chunk).
pub fn read_region(
    grid: &ChunkGrid,
    dtype: DType,
    region: &Region,
    mut chunk: impl FnMut(usize) -> Result<NdChunk>,
) -> Result<NdChunk> {
    let parts = pieces(grid, region);
    if let [(coords, src, _)] = &parts[..] {
        return Ok(chunk(grid.index(coords))?.slice(src));
    }
    let shape = region_shape(region);
    let strides = crate::chunk::c_strides(&shape);
    with_native!(dtype, T => {
        let mut out = vec![T::default(); shape.iter().product()];
        for (coords, src, dst) in &parts {
            let piece = chunk(grid.index(coords))?.slice(src);
            let (values, offset, piece_strides) = piece.raw::<T>();
            let dst_offset: usize = dst.iter().zip(&strides).map(|(r, s)| r.start * s).sum();
            // Lanes of the piece and of its place in `out` come in the same order.
            let mut targets = Vec::new();
            crate::chunk::for_each_lane(piece.shape(), &strides, dst_offset, |start, _, _| targets.push(start));
            let mut lane = 0;
            crate::chunk::for_each_lane(piece.shape(), piece_strides, offset, |start, len, step| {
                let to = targets[lane];
                lane += 1;
                if step == 1 {
                    out[to..to + len].copy_from_slice(&values[start..start + len]);
                } else {
                    for j in 0..len {
                        out[to + j] = values[start + j * step];
                    }
                }
            });
        }
        Ok(NdChunk::from_vec(dtype, shape, out))
    })
}

/// Reads `region` of column `field` of the stage output behind `Input` node `node`.
fn read_input(
    node: usize,
    grid: &ChunkGrid,
    dtype: DType,
    field: usize,
    region: &Region,
    fetched: &Fetched,
) -> Result<NdChunk> {
    read_region(grid, dtype, region, |i| {
        let batch = fetched.get(&(node, i)).ok_or_else(|| {
            internal_datafusion_err!("input chunk {i} of node {node} was not fetched")
        })?;
        let shape = region_shape(&grid.region(i));
        if batch.num_columns() == 0 {
            return Ok(with_native!(dtype, T => NdChunk::from_vec::<T>(dtype, shape, Vec::new())));
        }
        NdChunk::from_batch(batch, field, dtype, &shape)
    })
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform values in `[low, high)` for `region` of an array of `shape`: cell `i` (C order)
/// gets SplitMix64's output for counter `i` under `seed`.
pub fn random_region(seed: u64, low: f64, high: f64, shape: &[usize], region: &Region) -> Vec<f64> {
    let key = mix(seed.wrapping_add(GOLDEN));
    let scale = (high - low) / (1u64 << 53) as f64;
    let value = |i: u64| low + (mix(key.wrapping_add(i.wrapping_mul(GOLDEN))) >> 11) as f64 * scale;
    let region_shape = region_shape(region);
    let count: usize = region_shape.iter().product();
    let mut out = Vec::with_capacity(count);
    if count == 0 {
        return out;
    }
    let ndim = shape.len();
    if ndim == 0 {
        out.push(value(0));
        return out;
    }
    let mut strides = vec![1u64; ndim];
    for axis in (0..ndim - 1).rev() {
        strides[axis] = strides[axis + 1] * shape[axis + 1] as u64;
    }
    let last = region[ndim - 1].clone();
    let mut idx: Vec<usize> = region[..ndim - 1].iter().map(|r| r.start).collect();
    loop {
        let base: u64 = idx.iter().zip(&strides).map(|(&i, &s)| i as u64 * s).sum();
        out.extend(last.clone().map(|j| value(base + j as u64)));
        let mut axis = ndim - 1;
        loop {
            if axis == 0 {
                return out;
            }
            axis -= 1;
            idx[axis] += 1;
            if idx[axis] < region[axis].end {
                break;
            }
            idx[axis] = region[axis].start;
        }
    }
}

/// Collects the values of an array from its chunks in C order of `grid`.
pub fn assemble<T: Native>(grid: &ChunkGrid, chunks: &[NdChunk]) -> Result<ArrayD<T>> {
    let shape = grid.shape();
    let mut out = ArrayD::<T>::default(IxDyn(&shape));
    for (i, c) in chunks.iter().enumerate() {
        let region = grid.region(i);
        let mut target = out.view_mut();
        let mut axis = 0;
        target.slice_each_axis_inplace(|_| {
            let r = &region[axis];
            axis += 1;
            Slice::from(r.clone())
        });
        target.assign(&c.view::<T>());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values_do_not_depend_on_the_region() {
        let shape = [5, 7];
        let whole = random_region(3, 0.0, 1.0, &shape, &vec![0..5, 0..7]);
        let part = random_region(3, 0.0, 1.0, &shape, &vec![2..4, 3..6]);
        assert_eq!(part[0], whole[2 * 7 + 3]);
        assert_eq!(part[5], whole[3 * 7 + 5]);
        assert!(whole.iter().all(|v| (0.0..1.0).contains(v)));
        let other = random_region(4, 0.0, 1.0, &shape, &vec![0..5, 0..7]);
        assert_ne!(whole, other);
    }
}
