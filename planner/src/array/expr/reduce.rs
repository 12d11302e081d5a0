//! Array expressions that reduce: reductions over axes, per-group reductions, and
//! contractions (matrix products, `tensordot`).

use datafusion::common::{Result, plan_err};

use crate::array::grid::ChunkGrid;
use crate::array::ops::{BinaryOp, GroupSpec, Op, ReduceOp};

use super::{ArrayExpr, binary, cast, check_axis, node, rechunk_to, reshape, squeeze, transpose};

/// A reduction of `x` over `axes` (all axes when `None`).
pub fn reduce(
    x: &ArrayExpr,
    op: ReduceOp,
    axes: Option<&[usize]>,
    keepdims: bool,
    skipna: bool,
) -> Result<ArrayExpr> {
    let n = x.grid.ndim();
    let mut axes: Vec<usize> = axes.map_or_else(|| (0..n).collect(), <[usize]>::to_vec);
    axes.sort_unstable();
    axes.dedup();
    for &a in &axes {
        check_axis(x, a)?;
    }
    let Some(dtype) = op.result(x.dtype) else {
        return plan_err!("{} does not apply to {} arrays", op.name(), x.dtype);
    };
    let shape = x.grid.shape();
    if matches!(
        op,
        ReduceOp::Min | ReduceOp::Max | ReduceOp::ArgMin | ReduceOp::ArgMax
    ) && axes.iter().any(|&a| shape[a] == 0)
    {
        return plan_err!("{} of an empty axis has no value", op.name());
    }
    // Sums and means distribute over + and -. When an operand is a transposed view,
    // reducing each operand where it lies reads both in stored order, instead of adding
    // a transposed view to a straight one cell by cell (which strides through memory).
    if let Op::Binary {
        op: bop @ (BinaryOp::Add | BinaryOp::Sub),
        a,
        b,
    } = &x.op
        && matches!(op, ReduceOp::Sum | ReduceOp::Mean)
        && !skipna
        && x.dtype.is_float()
        && [a, b]
            .iter()
            .all(|o| o.dtype == x.dtype && o.grid.shape() == shape)
        && [a, b].iter().any(|o| matches!(o.op, Op::Transpose { .. }))
    {
        let ra = reduce(a, op, Some(&axes), keepdims, skipna)?;
        let rb = reduce(b, op, Some(&axes), keepdims, skipna)?;
        return binary(*bop, &ra, &rb);
    }
    let chunks: Vec<Vec<usize>> = (0..n)
        .filter_map(|a| match (axes.contains(&a), keepdims) {
            (false, _) => Some(x.grid.axis(a).to_vec()),
            (true, true) => Some(vec![1]),
            (true, false) => None,
        })
        .collect();
    // A rechunk that only feeds a reduction moves data to have it reduced: reduce the
    // source where it lies and rechunk the (much smaller) result instead, when no source
    // chunk is bigger than a rechunked one (so no task holds more than it would have).
    if let Op::Rechunk { x: source } = &x.op
        && source.grid.max_chunk_cells() <= x.grid.max_chunk_cells()
    {
        let reduced = reduce(source, op, Some(&axes), keepdims, skipna)?;
        return rechunk_to(&reduced, ChunkGrid::new(chunks));
    }
    Ok(node(
        Op::Reduce {
            x: x.clone(),
            op,
            axes,
            keepdims,
            skipna,
            group: None,
        },
        dtype,
        ChunkGrid::new(chunks),
    ))
}

/// A reduction per group along `axis`: position `i` belongs to group `labels[i]`
/// (`0..groups`); the axis of the result has one cell per group. Groups that lie inside
/// single chunks, in order, reduce blockwise; others by partial states per chunk merged
/// in a tree.
pub fn group_reduce(
    x: &ArrayExpr,
    op: ReduceOp,
    axis: usize,
    labels: Vec<usize>,
    groups: usize,
    skipna: bool,
) -> Result<ArrayExpr> {
    check_axis(x, axis)?;
    let n = x.grid.shape()[axis];
    if labels.len() != n {
        return plan_err!(
            "{} group labels for axis {axis} of length {n}",
            labels.len()
        );
    }
    if let Some(bad) = labels.iter().find(|&&l| l >= groups) {
        return plan_err!("group label {bad} is out of range for {groups} groups");
    }
    if matches!(op, ReduceOp::ArgMin | ReduceOp::ArgMax) {
        return plan_err!("{} is not supported per group", op.name());
    }
    let Some(dtype) = op.result(x.dtype) else {
        return plan_err!("{} does not apply to {} arrays", op.name(), x.dtype);
    };
    // Blockwise when groups run in order, each inside one chunk, none missing.
    let lens = x.grid.axis(axis);
    let in_order = labels.first().is_none_or(|&l| l == 0)
        && labels.last().is_none_or(|&l| l + 1 == groups)
        && labels.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1);
    let mut blockwise = in_order;
    let mut per_chunk = Vec::with_capacity(lens.len());
    let mut start = 0;
    for &len in lens {
        if len > 0 {
            let (first, last) = (labels[start], labels[start + len - 1]);
            blockwise &= last >= first;
            per_chunk.push(last.saturating_sub(first) + 1);
            if start > 0 && labels[start] == labels[start - 1] {
                blockwise = false;
            }
        }
        start += len;
    }
    let target = lens.iter().copied().max().unwrap_or(1);
    let longest = labels
        .chunk_by(|a, b| a == b)
        .map(<[usize]>::len)
        .max()
        .unwrap_or(0);
    if in_order && !blockwise && longest <= 2 * target {
        // Groups in order, none longer than two chunks, that chunk boundaries cut
        // (calendar months over chunks of 25 or 50 days): rechunk so each chunk holds
        // whole groups, then reduce blockwise, rather than keep a state for every group in
        // every chunk. Much longer groups (years over chunks of days) would make chunks
        // many times larger: they keep partial states, one per group per task.
        let aligned = group_aligned(&labels, target);
        let mut chunks = x.grid.chunks().to_vec();
        chunks[axis] = aligned;
        let x = super::rechunk_to(x, ChunkGrid::new(chunks))?;
        return group_reduce(&x, op, axis, labels, groups, skipna);
    }
    let mut chunks = x.grid.chunks().to_vec();
    chunks[axis] = if blockwise { per_chunk } else { vec![groups] };
    Ok(node(
        Op::Reduce {
            x: x.clone(),
            op,
            axes: Vec::new(),
            keepdims: true,
            skipna,
            group: Some(GroupSpec {
                axis,
                labels,
                groups,
                blockwise,
            }),
        },
        dtype,
        ChunkGrid::new(chunks),
    ))
}

/// Chunk lengths along an axis whose positions carry `labels` in order (equal labels
/// adjacent): whole runs of equal labels packed into chunks of up to `target` positions
/// (or one run, when a run is longer).
fn group_aligned(labels: &[usize], target: usize) -> Vec<usize> {
    let mut chunks = Vec::new();
    let mut current = 0;
    let mut i = 0;
    while i < labels.len() {
        let run = labels[i..].iter().take_while(|&&l| l == labels[i]).count();
        if current > 0 && current + run > target {
            chunks.push(current);
            current = 0;
        }
        current += run;
        i += run;
    }
    if current > 0 || chunks.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Bytes of the two operand panels one matmul task multiplies at most.
pub const PANEL_BYTES: usize = 256 << 20;

/// The matrix product of 2-d `a` and `b` (see [`matmul_within`]), with panels of up to
/// [`PANEL_BYTES`].
pub fn matmul(a: &ArrayExpr, b: &ArrayExpr) -> Result<ArrayExpr> {
    matmul_within(a, b, PANEL_BYTES)
}

/// The matrix product of 2-d `a` and `b`: each task multiplies a row panel of `a` by a
/// column panel of `b` over a run of `a`'s chunks along the contracted axis, as long as
/// both panels fit in `panel_bytes` (one call into the GEMM kernel, which runs best on
/// long panels; a worker's memory limit bounds them); the runs' products are summed.
pub fn matmul_within(a: &ArrayExpr, b: &ArrayExpr, panel_bytes: usize) -> Result<ArrayExpr> {
    let (sa, sb) = (a.grid.shape(), b.grid.shape());
    if sa.len() != 2 || sb.len() != 2 {
        return plan_err!("matmul needs 2-d arrays, got shapes {sa:?} and {sb:?}");
    }
    if sa[1] != sb[0] {
        return plan_err!(
            "matmul: shapes {sa:?} and {sb:?} do not align ({} != {})",
            sa[1],
            sb[0]
        );
    }
    let dtype = match a.dtype.promote(b.dtype) {
        Some(d) if d.is_numeric() => d,
        _ => {
            return plan_err!(
                "matmul does not apply to {} and {} arrays",
                a.dtype,
                b.dtype
            );
        }
    };
    let rows = a.grid.axis(0).iter().copied().max().unwrap_or(1);
    let cols = b.grid.axis(1).iter().copied().max().unwrap_or(1);
    let mut blocks: Vec<usize> = Vec::new();
    let mut run = 0;
    for &k in a.grid.axis(1) {
        if run > 0 && (rows + cols) * (run + k) * dtype.size() > panel_bytes {
            blocks.push(run);
            run = 0;
        }
        run += k;
    }
    if run > 0 || blocks.is_empty() {
        blocks.push(run);
    }
    let grid = ChunkGrid::new(vec![
        a.grid.axis(0).to_vec(),
        b.grid.axis(1).to_vec(),
        vec![1; blocks.len()],
    ]);
    let contract = node(
        Op::Contract {
            a: cast(a, dtype)?,
            b: cast(b, dtype)?,
            blocks,
        },
        dtype,
        grid,
    );
    if contract.grid.axis(2).len() == 1 {
        return squeeze(&contract, &[2]);
    }
    let summed = reduce(&contract, ReduceOp::Sum, Some(&[2]), false, false)?;
    cast(&summed, dtype)
}

/// NumPy's `tensordot`: the sum of products over axes `axes_a` of `a` paired with
/// `axes_b` of `b`. The result has `a`'s other axes, then `b`'s, in order. Runs as a
/// matrix product of the two arrays reshaped to (other cells, contracted cells), with
/// panels of up to `panel_bytes` (see [`matmul_within`]).
pub fn tensordot(
    a: &ArrayExpr,
    b: &ArrayExpr,
    axes_a: &[usize],
    axes_b: &[usize],
    panel_bytes: usize,
) -> Result<ArrayExpr> {
    let (sa, sb) = (a.grid.shape(), b.grid.shape());
    if axes_a.len() != axes_b.len() {
        return plan_err!(
            "tensordot: {} axes of the first array paired with {} of the second",
            axes_a.len(),
            axes_b.len()
        );
    }
    for (axes, shape, which) in [(axes_a, &sa, "first"), (axes_b, &sb, "second")] {
        for (i, &axis) in axes.iter().enumerate() {
            if axis >= shape.len() {
                return plan_err!(
                    "tensordot: axis {axis} is out of range for the {which} array with {} axes",
                    shape.len()
                );
            }
            if axes[..i].contains(&axis) {
                return plan_err!("tensordot: axis {axis} of the {which} array appears twice");
            }
        }
    }
    for (&x, &y) in axes_a.iter().zip(axes_b) {
        if sa[x] != sb[y] {
            return plan_err!(
                "tensordot: axis {x} of the first array (length {}) does not match axis {y} of the second (length {})",
                sa[x],
                sb[y]
            );
        }
    }
    if sa.len() == 2 && sb.len() == 2 && axes_a == [1] && axes_b == [0] {
        return matmul_within(a, b, panel_bytes);
    }
    let free_a: Vec<usize> = (0..sa.len()).filter(|x| !axes_a.contains(x)).collect();
    let free_b: Vec<usize> = (0..sb.len()).filter(|x| !axes_b.contains(x)).collect();
    let cells = |shape: &[usize], axes: &[usize]| axes.iter().map(|&x| shape[x]).product::<usize>();
    let (m, k, n) = (cells(&sa, &free_a), cells(&sa, axes_a), cells(&sb, &free_b));
    let perm_a: Vec<usize> = free_a.iter().chain(axes_a).copied().collect();
    let perm_b: Vec<usize> = axes_b.iter().chain(&free_b).copied().collect();
    let a2 = reshape(&transpose(a, &perm_a)?, &[m, k])?;
    let b2 = reshape(&transpose(b, &perm_b)?, &[k, n])?;
    let product = matmul_within(&a2, &b2, panel_bytes)?;
    let shape: Vec<usize> = free_a
        .iter()
        .map(|&x| sa[x])
        .chain(free_b.iter().map(|&x| sb[x]))
        .collect();
    reshape(&product, &shape)
}
