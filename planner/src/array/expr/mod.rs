//! The user-facing array expression graph: [`ArrayExpr`] nodes, each with its dtype and
//! chunk grid, built through checked constructors that reject bad shapes, axes and dtypes
//! with a one-line message. Reductions and contractions are in [`reduce`]'s half.

use std::sync::Arc;

use datafusion::common::{Result, plan_err};

use super::chunk::NdChunk;
use super::dtype::{DType, Scalar};
use super::grid::ChunkGrid;
use super::ops::{BinaryOp, Op, ReduceOp, UnaryOp};
use super::program::LiteralChunks;

mod reduce;

pub use reduce::{PANEL_BYTES, group_reduce, matmul, matmul_within, reduce, tensordot};

/// One node of an array expression.
#[derive(Debug)]
pub struct ArrayNode {
    /// The operation.
    pub op: Op<ArrayExpr>,
    /// Element type.
    pub dtype: DType,
    /// Shape and chunking.
    pub grid: ChunkGrid,
    /// For `Op::Literal`: the chunks.
    pub literal: Option<LiteralChunks>,
}

/// A lazy array: a shared node of the expression graph.
pub type ArrayExpr = Arc<ArrayNode>;

fn node(op: Op<ArrayExpr>, dtype: DType, grid: ChunkGrid) -> ArrayExpr {
    Arc::new(ArrayNode {
        op,
        dtype,
        grid,
        literal: None,
    })
}

fn check_chunks(shape: &[usize], chunks: &[usize]) -> Result<()> {
    if chunks.len() != shape.len() {
        return plan_err!(
            "chunks {chunks:?} have {} axes but the shape {shape:?} has {}",
            chunks.len(),
            shape.len()
        );
    }
    Ok(())
}

/// Uniform random `float64` values in `[low, high)`, chunked by `chunks`.
pub fn random(
    shape: &[usize],
    chunks: &[usize],
    seed: u64,
    low: f64,
    high: f64,
) -> Result<ArrayExpr> {
    check_chunks(shape, chunks)?;
    Ok(node(
        Op::Random { seed, low, high },
        DType::F64,
        ChunkGrid::regular(shape, chunks),
    ))
}

/// An array of `shape` filled with `value` as `dtype`.
pub fn full(shape: &[usize], chunks: &[usize], value: Scalar, dtype: DType) -> Result<ArrayExpr> {
    check_chunks(shape, chunks)?;
    Ok(node(
        Op::Full { value },
        dtype,
        ChunkGrid::regular(shape, chunks),
    ))
}

/// `start, start + step, ...` (`n` values) as `dtype`.
pub fn arange(n: usize, chunk: usize, start: f64, step: f64, dtype: DType) -> ArrayExpr {
    node(
        Op::Arange { start, step },
        dtype,
        ChunkGrid::regular(&[n], &[chunk]),
    )
}

/// An array from chunks held in memory (numbered in C order of `grid`).
pub fn literal(grid: ChunkGrid, dtype: DType, chunks: Vec<NdChunk>) -> Result<ArrayExpr> {
    if chunks.len() != grid.len() {
        return plan_err!("{} chunks given for a grid of {}", chunks.len(), grid.len());
    }
    for (i, c) in chunks.iter().enumerate() {
        let want: Vec<usize> = grid.region(i).iter().map(|r| r.end - r.start).collect();
        if c.shape() != want || c.dtype() != dtype {
            return plan_err!(
                "chunk {i} is {} {:?}, expected {dtype} {want:?}",
                c.dtype(),
                c.shape()
            );
        }
    }
    Ok(Arc::new(ArrayNode {
        op: Op::Literal {
            id: 0,
            grid: grid.clone(),
        },
        dtype,
        grid,
        literal: Some(Arc::new(chunks)),
    }))
}

/// An array of a Zarr store, chunked as the store is.
pub fn zarr_read(
    store: &str,
    path: &str,
    metadata: &str,
    shape: &[usize],
    chunks: &[usize],
    dtype: DType,
) -> Result<ArrayExpr> {
    check_chunks(shape, chunks)?;
    let grid = ChunkGrid::regular(shape, chunks);
    Ok(node(
        Op::ZarrRead {
            store: store.to_string(),
            path: path.to_string(),
            metadata: metadata.to_string(),
            grid: grid.clone(),
        },
        dtype,
        grid,
    ))
}

/// Writes `x` into the Zarr array `path` of `store` whose chunks are `chunks` (`x` is
/// rechunked to them first when needed). Running it returns no values.
pub fn zarr_write(
    x: &ArrayExpr,
    store: &str,
    path: &str,
    metadata: &str,
    chunks: &[usize],
) -> Result<ArrayExpr> {
    let x = rechunk(x, chunks)?;
    Ok(node(
        Op::ZarrWrite {
            x: x.clone(),
            store: store.to_string(),
            path: path.to_string(),
            metadata: metadata.to_string(),
        },
        x.dtype,
        x.grid.clone(),
    ))
}

/// `op(x)`.
pub fn unary(op: UnaryOp, x: &ArrayExpr) -> Result<ArrayExpr> {
    let Some(dtype) = op.result(x.dtype) else {
        return plan_err!("{} does not apply to {} arrays", op.name(), x.dtype);
    };
    Ok(node(Op::Unary { op, x: x.clone() }, dtype, x.grid.clone()))
}

/// The shape `a` and `b` broadcast to, NumPy style.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return plan_err!(
                    "shapes {a:?} and {b:?} do not broadcast: axis {i} has lengths {da} and {db}"
                );
            }
        });
    }
    Ok(out)
}

/// The chunking of the broadcast result of `inputs` with `shape`: each axis takes the
/// chunks of the first input that spans it.
fn broadcast_grid(shape: &[usize], inputs: &[&ArrayExpr]) -> ChunkGrid {
    let n = shape.len();
    let chunks = (0..n)
        .map(|axis| {
            for x in inputs {
                let nd = x.grid.ndim();
                if axis + nd >= n {
                    let own = axis + nd - n;
                    if x.grid.shape()[own] == shape[axis] {
                        return x.grid.axis(own).to_vec();
                    }
                }
            }
            vec![shape[axis]]
        })
        .collect();
    ChunkGrid::new(chunks)
}

/// `a op b`, broadcast.
pub fn binary(op: BinaryOp, a: &ArrayExpr, b: &ArrayExpr) -> Result<ArrayExpr> {
    let Some(dtype) = op.result(a.dtype, b.dtype) else {
        return plan_err!(
            "cannot apply {} to {} and {} arrays",
            op.name(),
            a.dtype,
            b.dtype
        );
    };
    let shape = broadcast_shapes(&a.grid.shape(), &b.grid.shape())?;
    let grid = broadcast_grid(&shape, &[a, b]);
    Ok(node(
        Op::Binary {
            op,
            a: a.clone(),
            b: b.clone(),
        },
        dtype,
        grid,
    ))
}

/// `cond ? a : b`, broadcast.
pub fn select(cond: &ArrayExpr, a: &ArrayExpr, b: &ArrayExpr) -> Result<ArrayExpr> {
    if cond.dtype != DType::Bool {
        return plan_err!("where needs a bool condition, not {}", cond.dtype);
    }
    let Some(dtype) = a.dtype.promote(b.dtype) else {
        return plan_err!("where cannot mix {} and {} arrays", a.dtype, b.dtype);
    };
    let shape = broadcast_shapes(&cond.grid.shape(), &a.grid.shape())?;
    let shape = broadcast_shapes(&shape, &b.grid.shape())?;
    let grid = broadcast_grid(&shape, &[a, b, cond]);
    Ok(node(
        Op::Where {
            cond: cond.clone(),
            a: a.clone(),
            b: b.clone(),
        },
        dtype,
        grid,
    ))
}

/// `x` converted to `dtype`.
pub fn cast(x: &ArrayExpr, dtype: DType) -> Result<ArrayExpr> {
    if x.dtype == dtype {
        return Ok(x.clone());
    }
    if (x.dtype == DType::DateTime) != (dtype == DType::DateTime)
        && !(x.dtype == DType::I64 || dtype == DType::I64)
    {
        return plan_err!("cannot cast {} to {}", x.dtype, dtype);
    }
    Ok(node(Op::Cast { x: x.clone() }, dtype, x.grid.clone()))
}

/// One axis of a slice: `start..stop` by `step`, already clamped to the axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisSlice {
    /// First position.
    pub start: usize,
    /// Number of positions taken.
    pub len: usize,
    /// Step (at least 1).
    pub step: usize,
}

impl AxisSlice {
    /// Python's `start:stop:step` on an axis of `n` (negative positions count from the
    /// end); `None` where omitted. Steps must be positive.
    pub fn resolve(
        n: usize,
        start: Option<isize>,
        stop: Option<isize>,
        step: isize,
        axis: usize,
    ) -> Result<Self> {
        if step <= 0 {
            return plan_err!(
                "slice step {step} on axis {axis}: only positive steps are supported"
            );
        }
        let clamp = |v: isize| -> usize {
            if v < 0 {
                (n as isize + v).max(0) as usize
            } else {
                (v as usize).min(n)
            }
        };
        let start = start.map_or(0, clamp);
        let stop = stop.map_or(n, clamp);
        let step = step as usize;
        let len = if stop > start {
            (stop - start).div_ceil(step)
        } else {
            0
        };
        Ok(Self { start, len, step })
    }
}

/// `x[slices]`, one slice per axis.
pub fn slice(x: &ArrayExpr, slices: &[AxisSlice]) -> Result<ArrayExpr> {
    if slices.len() != x.grid.ndim() {
        return plan_err!(
            "{} slices given for an array with {} axes",
            slices.len(),
            x.grid.ndim()
        );
    }
    if slices
        .iter()
        .zip(x.grid.shape())
        .all(|(s, n)| s.start == 0 && s.step == 1 && s.len == n)
    {
        return Ok(x.clone());
    }
    let chunks = slices
        .iter()
        .enumerate()
        .map(|(axis, s)| {
            // Each input chunk gives the output chunk of the positions that fall in it.
            let mut out = Vec::new();
            let mut lo = 0;
            for &len in x.grid.axis(axis) {
                let hi = lo + len;
                let first = if s.start >= lo {
                    0
                } else {
                    (lo - s.start).div_ceil(s.step)
                };
                let past = if hi <= s.start {
                    0
                } else {
                    (hi - s.start).div_ceil(s.step)
                };
                let count = past.min(s.len).saturating_sub(first);
                if count > 0 {
                    out.push(count);
                }
                lo = hi;
            }
            out
        })
        .collect();
    Ok(node(
        Op::Slice {
            x: x.clone(),
            starts: slices.iter().map(|s| s.start).collect(),
            steps: slices.iter().map(|s| s.step).collect(),
        },
        x.dtype,
        ChunkGrid::new(chunks),
    ))
}

fn check_axis(x: &ArrayExpr, axis: usize) -> Result<()> {
    if axis >= x.grid.ndim() {
        return plan_err!(
            "axis {axis} is out of range for an array with {} axes",
            x.grid.ndim()
        );
    }
    Ok(())
}

/// The positions `indices` of `x` along `axis`.
pub fn take(x: &ArrayExpr, axis: usize, indices: Vec<usize>) -> Result<ArrayExpr> {
    check_axis(x, axis)?;
    let n = x.grid.shape()[axis];
    if let Some(bad) = indices.iter().find(|&&i| i >= n) {
        return plan_err!("index {bad} is out of range for axis {axis} of length {n}");
    }
    let size = x.grid.axis(axis).iter().copied().max().unwrap_or(1).max(1);
    let mut chunks = x.grid.chunks().to_vec();
    chunks[axis] = super::grid::split_axis(indices.len(), size);
    Ok(node(
        Op::Take {
            x: x.clone(),
            axis,
            indices,
        },
        x.dtype,
        ChunkGrid::new(chunks),
    ))
}

/// `x` with its axes permuted: axis `i` of the result is axis `perm[i]` of `x`.
pub fn transpose(x: &ArrayExpr, perm: &[usize]) -> Result<ArrayExpr> {
    let n = x.grid.ndim();
    let mut seen = vec![false; n];
    if perm.len() != n
        || perm
            .iter()
            .any(|&p| p >= n || std::mem::replace(&mut seen[p], true))
    {
        return plan_err!("{perm:?} is not a permutation of the {n} axes");
    }
    let chunks = perm.iter().map(|&p| x.grid.axis(p).to_vec()).collect();
    Ok(node(
        Op::Transpose {
            x: x.clone(),
            perm: perm.to_vec(),
        },
        x.dtype,
        ChunkGrid::new(chunks),
    ))
}

/// `x` broadcast to `shape`.
pub fn broadcast_to(x: &ArrayExpr, shape: &[usize]) -> Result<ArrayExpr> {
    let own = x.grid.shape();
    if own == shape {
        return Ok(x.clone());
    }
    if broadcast_shapes(&own, shape)? != shape {
        return plan_err!("cannot broadcast shape {own:?} to {shape:?}");
    }
    let grid = broadcast_grid(shape, &[x]);
    Ok(node(Op::BroadcastTo { x: x.clone() }, x.dtype, grid))
}

/// A moving-window reduction along `axis` (NaN skipped; fewer than `min_periods` values
/// give NaN).
pub fn rolling(
    x: &ArrayExpr,
    axis: usize,
    window: usize,
    op: ReduceOp,
    min_periods: usize,
) -> Result<ArrayExpr> {
    check_axis(x, axis)?;
    if window == 0 {
        return plan_err!("a rolling window needs at least one cell");
    }
    if !x.dtype.is_numeric() {
        return plan_err!("rolling does not apply to {} arrays", x.dtype);
    }
    let dtype = match op {
        ReduceOp::Count => DType::I64,
        ReduceOp::Sum
        | ReduceOp::Mean
        | ReduceOp::Min
        | ReduceOp::Max
        | ReduceOp::Var { .. }
        | ReduceOp::Std { .. } => x.dtype.float_result(),
        other => return plan_err!("rolling {} is not supported", other.name()),
    };
    Ok(node(
        Op::Rolling {
            x: x.clone(),
            axis,
            window,
            op,
            min_periods,
        },
        dtype,
        x.grid.clone(),
    ))
}

/// `x` with shape `shape` (same number of cells, C order); output chunks follow `x`'s
/// chunk lengths where an axis keeps its length.
pub fn reshape(x: &ArrayExpr, shape: &[usize]) -> Result<ArrayExpr> {
    let own = x.grid.shape();
    if own == shape {
        return Ok(x.clone());
    }
    let (a, b): (usize, usize) = (own.iter().product(), shape.iter().product());
    if a != b {
        return plan_err!(
            "cannot reshape an array of shape {own:?} ({a} cells) to {shape:?} ({b} cells)"
        );
    }
    let size = x.grid.max_chunk_cells().max(1);
    // Chunk the result by its leading axis, about as many cells per chunk as `x` has.
    let row: usize = shape.iter().skip(1).product::<usize>().max(1);
    let mut chunks: Vec<Vec<usize>> = shape.iter().map(|&n| vec![n]).collect();
    if let Some(first) = shape.first() {
        chunks[0] = super::grid::split_axis(*first, (size / row).max(1));
    }
    Ok(node(
        Op::Reshape { x: x.clone() },
        x.dtype,
        ChunkGrid::new(chunks),
    ))
}

/// `x` with length-1 axes inserted at positions `axes` of the result.
pub fn expand_dims(x: &ArrayExpr, axes: &[usize]) -> Result<ArrayExpr> {
    let mut axes = axes.to_vec();
    axes.sort_unstable();
    axes.dedup();
    let n = x.grid.ndim() + axes.len();
    if let Some(bad) = axes.iter().find(|&&a| a >= n) {
        return plan_err!("axis {bad} is out of range for a result with {n} axes");
    }
    if axes.is_empty() {
        return Ok(x.clone());
    }
    let mut own = x.grid.chunks().iter();
    let chunks = (0..n)
        .map(|a| {
            if axes.contains(&a) {
                vec![1]
            } else {
                own.next().cloned().unwrap_or_default()
            }
        })
        .collect();
    Ok(node(
        Op::ExpandDims { x: x.clone(), axes },
        x.dtype,
        ChunkGrid::new(chunks),
    ))
}

/// `x` without its length-1 axes `axes`.
pub fn squeeze(x: &ArrayExpr, axes: &[usize]) -> Result<ArrayExpr> {
    let mut axes = axes.to_vec();
    axes.sort_unstable();
    axes.dedup();
    let shape = x.grid.shape();
    for &a in &axes {
        check_axis(x, a)?;
        if shape[a] != 1 {
            return plan_err!("cannot squeeze axis {a} of length {}", shape[a]);
        }
    }
    if axes.is_empty() {
        return Ok(x.clone());
    }
    let chunks = (0..shape.len())
        .filter(|a| !axes.contains(a))
        .map(|a| x.grid.axis(a).to_vec())
        .collect();
    Ok(node(
        Op::Squeeze { x: x.clone(), axes },
        x.dtype,
        ChunkGrid::new(chunks),
    ))
}

/// The arrays joined along `axis`.
pub fn concat(xs: &[ArrayExpr], axis: usize) -> Result<ArrayExpr> {
    let Some(first) = xs.first() else {
        return plan_err!("concat needs at least one array");
    };
    check_axis(first, axis)?;
    let mut dtype = first.dtype;
    let shape = first.grid.shape();
    let mut along = Vec::new();
    for (i, x) in xs.iter().enumerate() {
        let s = x.grid.shape();
        if s.len() != shape.len()
            || s.iter()
                .zip(&shape)
                .enumerate()
                .any(|(a, (p, q))| a != axis && p != q)
        {
            return plan_err!(
                "concat: array {i} has shape {s:?}, which differs from {shape:?} off axis {axis}"
            );
        }
        dtype = match dtype.promote(x.dtype) {
            Some(d) => d,
            None => return plan_err!("concat cannot mix {} and {} arrays", dtype, x.dtype),
        };
        along.extend(x.grid.axis(axis).iter().copied().filter(|&n| n > 0));
    }
    let xs = xs
        .iter()
        .map(|x| cast(x, dtype))
        .collect::<Result<Vec<_>>>()?;
    let mut chunks = first.grid.chunks().to_vec();
    chunks[axis] = along;
    Ok(node(Op::Concat { xs, axis }, dtype, ChunkGrid::new(chunks)))
}

/// `x` rechunked to `chunks` (0 keeps the whole axis in one chunk).
pub fn rechunk(x: &ArrayExpr, chunks: &[usize]) -> Result<ArrayExpr> {
    let shape = x.grid.shape();
    check_chunks(&shape, chunks)?;
    let grid = ChunkGrid::regular(&shape, chunks);
    if grid == x.grid {
        return Ok(x.clone());
    }
    Ok(node(Op::Rechunk { x: x.clone() }, x.dtype, grid))
}

/// `x` rechunked to `grid` (irregular chunks allowed; the shape must be `x`'s).
pub fn rechunk_to(x: &ArrayExpr, grid: ChunkGrid) -> Result<ArrayExpr> {
    if grid.shape() != x.grid.shape() {
        return plan_err!(
            "cannot rechunk shape {:?} to a grid of shape {:?}",
            x.grid.shape(),
            grid.shape()
        );
    }
    if grid == x.grid {
        return Ok(x.clone());
    }
    Ok(node(Op::Rechunk { x: x.clone() }, x.dtype, grid))
}
