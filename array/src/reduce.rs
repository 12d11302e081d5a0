//! Reductions as tree steps: [`partial`] turns one chunk into states (the reduced axes cut
//! to length 1), [`combine`] merges the states of neighbouring chunks, [`finalize`] turns
//! states into values. Variance merges with Chan's formula; arg reductions keep the
//! smallest position among equal values, as NumPy does.

use datafusion_common::{Result, internal_err};
use num_traits::AsPrimitive;

use crate::chunk::NdChunk;
use crate::dtype::{DType, Native};
use crate::kernels::{Arith, cast};
use crate::lane::{Lane, Moments, lane_moments, lane_sum, lane_sum_count};
use crate::ops::{ReduceOp, ReduceSpec};
use crate::with_native;

/// Names and dtypes of the state columns of a reduction of `input`.
pub fn state_fields(op: ReduceOp, input: DType) -> Vec<(&'static str, DType)> {
    use ReduceOp::*;
    match op {
        Sum | Prod => vec![("acc", accumulator(input))],
        Mean => vec![("sum", DType::F64), ("count", DType::F64)],
        Var { .. } | Std { .. } => vec![
            ("count", DType::F64),
            ("mean", DType::F64),
            ("m2", DType::F64),
        ],
        Min | Max => vec![("value", input)],
        Count => vec![("count", DType::I64)],
        ArgMin | ArgMax => vec![("value", input), ("index", DType::I64)],
        Any | All => vec![("value", DType::Bool)],
    }
}

fn accumulator(input: DType) -> DType {
    if input.is_float() {
        DType::F64
    } else if input.is_unsigned() {
        DType::U64
    } else {
        DType::I64
    }
}

/// How one axis of a reduced chunk maps to its states.
#[derive(Debug, Clone)]
enum AxisMap {
    /// Kept as is.
    Keep,
    /// Reduced to length 1.
    Reduce,
    /// Position `i` goes to state `labels[i]` of `len` (a groupby axis).
    Group { labels: Vec<usize>, len: usize },
}

/// Walks a strided block lane by lane (the last stride must be 1) and says which state
/// cell each value belongs to and, for arg reductions, its position among the reduced
/// axes of the whole input.
struct Lanes {
    shape: Vec<usize>,
    strides: Vec<usize>,
    base: usize,
    maps: Vec<AxisMap>,
    /// Output strides per axis (0 for reduced axes).
    ostride: Vec<usize>,
    /// Position strides over the reduced axes of the whole input.
    pstride: Vec<i64>,
    offsets: Vec<usize>,
    out_shape: Vec<usize>,
}

impl Lanes {
    fn new(
        shape: &[usize],
        strides: &[usize],
        base: usize,
        maps: Vec<AxisMap>,
        offsets: &[usize],
        full: &[usize],
    ) -> Self {
        let ndim = shape.len();
        let out_shape: Vec<usize> = maps
            .iter()
            .zip(shape)
            .map(|(m, &n)| match m {
                AxisMap::Keep => n,
                AxisMap::Reduce => 1,
                AxisMap::Group { len, .. } => *len,
            })
            .collect();
        let mut ostride = vec![0usize; ndim];
        let mut pstride = vec![0i64; ndim];
        let (mut o, mut p) = (1usize, 1i64);
        for axis in (0..ndim).rev() {
            if matches!(maps[axis], AxisMap::Reduce) {
                pstride[axis] = p;
                p *= full[axis] as i64;
            } else {
                ostride[axis] = o;
                o *= out_shape[axis];
            }
        }
        Self {
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            base,
            maps,
            ostride,
            pstride,
            offsets: offsets.to_vec(),
            out_shape,
        }
    }

    fn out_shape(&self) -> Vec<usize> {
        self.out_shape.clone()
    }

    fn out_cells(&self) -> usize {
        self.out_shape.iter().product()
    }

    fn last(&self) -> &AxisMap {
        self.maps.last().unwrap_or(&AxisMap::Reduce)
    }

    fn len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// The lane starting at `start`.
    fn lane(&self, start: usize) -> Lane {
        let step = self.strides.last().copied().unwrap_or(1);
        Lane {
            start,
            len: self.len(),
            step,
        }
    }

    /// Calls `f(lane_start, cell, position)` per lane along the last axis: the cell and
    /// position of the lane's first value, as if the last axis were at 0.
    fn lanes(&self, mut f: impl FnMut(usize, usize, i64)) {
        let ndim = self.shape.len();
        if ndim == 0 {
            f(self.base, 0, 0);
            return;
        }
        if self.shape.contains(&0) {
            return;
        }
        let outer: usize = self.shape[..ndim - 1].iter().product();
        let mut idx = vec![0usize; ndim - 1];
        let last_pos = self.offsets[ndim - 1] as i64 * self.pstride[ndim - 1];
        for _ in 0..outer {
            let mut cell = 0;
            let mut pos = last_pos;
            let mut start = self.base;
            for (axis, &i) in idx.iter().enumerate() {
                cell += match &self.maps[axis] {
                    AxisMap::Group { labels, .. } => labels[i] * self.ostride[axis],
                    _ => i * self.ostride[axis],
                };
                pos += (self.offsets[axis] + i) as i64 * self.pstride[axis];
                start += i * self.strides[axis];
            }
            f(start, cell, pos);
            for axis in (0..idx.len()).rev() {
                idx[axis] += 1;
                if idx[axis] < self.shape[axis] {
                    break;
                }
                idx[axis] = 0;
            }
        }
    }

    /// Visits every value: `f(cell, value index, position)`.
    fn each(&self, mut f: impl FnMut(usize, usize, i64)) {
        let len = self.len();
        match self.last() {
            AxisMap::Reduce => self.lanes(|start, cell, pos| {
                for j in 0..len {
                    f(cell, start + j, pos + j as i64);
                }
            }),
            AxisMap::Keep => self.lanes(|start, cell, pos| {
                for j in 0..len {
                    f(cell + j, start + j, pos);
                }
            }),
            AxisMap::Group { labels, .. } => self.lanes(|start, cell, pos| {
                for (j, &l) in labels.iter().enumerate() {
                    f(cell + l, start + j, pos);
                }
            }),
        }
    }
}

/// The axis maps of a partial reduction of a chunk at `offsets` with `shape`.
fn partial_maps(spec: &ReduceSpec, shape: &[usize], offsets: &[usize]) -> Vec<AxisMap> {
    (0..shape.len())
        .map(|a| match &spec.group {
            Some(g) if g.axis == a => {
                let mine = &g.labels[offsets[a]..offsets[a] + shape[a]];
                let base = if g.blockwise {
                    mine.first().copied().unwrap_or(0)
                } else {
                    0
                };
                let len = if g.blockwise {
                    mine.last().map_or(0, |l| l - base + 1)
                } else {
                    g.groups
                };
                AxisMap::Group {
                    labels: mine.iter().map(|l| l - base).collect(),
                    len,
                }
            }
            _ if spec.axes.contains(&a) => AxisMap::Reduce,
            _ => AxisMap::Keep,
        })
        .collect()
}

/// The axis maps of a combine step over states of `shape`.
fn combine_maps(spec: &ReduceSpec, shape: &[usize]) -> Vec<AxisMap> {
    (0..shape.len())
        .map(|a| match &spec.group {
            Some(g) if g.axis == a => AxisMap::Group {
                labels: (0..shape[a]).map(|i| i % g.groups).collect(),
                len: g.groups,
            },
            _ if spec.axes.contains(&a) => AxisMap::Reduce,
            _ => AxisMap::Keep,
        })
        .collect()
}

/// Sum (or product) states of `values` into accumulator `A`.
fn fold_sum<T: Native + AsPrimitive<A>, A: Arith>(
    values: &[T],
    l: &Lanes,
    skipna: bool,
    prod: bool,
) -> Vec<A> {
    let init = if prod { A::ONE } else { A::default() };
    let mut acc = vec![init; l.out_cells()];
    if prod {
        l.each(|cell, i, _| {
            let v = values[i];
            if !(skipna && v.is_nan()) {
                acc[cell] = acc[cell].mul(v.as_());
            }
        });
        return acc;
    }
    if matches!(l.last(), AxisMap::Group { .. }) {
        l.each(|cell, i, _| {
            let v = values[i];
            if !(skipna && v.is_nan()) {
                acc[cell] = acc[cell].add(v.as_());
            }
        });
        return acc;
    }
    let len = l.len();
    let last_reduced = matches!(l.last(), AxisMap::Reduce);
    l.lanes(|start, cell, _| {
        if last_reduced {
            acc[cell] = acc[cell].add(lane_sum::<T, A>(values, l.lane(start), skipna));
            return;
        }
        let lane = &values[start..start + len];
        if skipna {
            for (a, &v) in acc[cell..cell + len].iter_mut().zip(lane) {
                if !v.is_nan() {
                    *a = a.add(v.as_());
                }
            }
        } else {
            for (a, &v) in acc[cell..cell + len].iter_mut().zip(lane) {
                *a = a.add(v.as_());
            }
        }
    });
    acc
}

/// Sums of squared deviations from each cell's mean, lane by lane where the layout lets
/// the loop vectorise.
fn fold_m2<T: Native>(values: &[T], l: &Lanes, means: &[f64], skipna: bool) -> Vec<f64> {
    let mut m2 = vec![0.0f64; means.len()];
    let len = l.len();
    let square = |v: T, m: f64| -> f64 {
        let d = AsPrimitive::<f64>::as_(v) - m;
        if skipna && d.is_nan() { 0.0 } else { d * d }
    };
    match l.last() {
        AxisMap::Reduce => l.lanes(|start, cell, _| {
            let m = means[cell];
            let lane = &values[start..start + len];
            let mut acc = [0.0f64; 8];
            let mut chunks = lane.chunks_exact(8);
            for c in &mut chunks {
                for i in 0..8 {
                    acc[i] += square(c[i], m);
                }
            }
            let rest: f64 = chunks.remainder().iter().map(|&v| square(v, m)).sum();
            m2[cell] += acc.iter().sum::<f64>() + rest;
        }),
        AxisMap::Keep => l.lanes(|start, cell, _| {
            let lane = &values[start..start + len];
            for ((q, &m), &v) in m2[cell..cell + len]
                .iter_mut()
                .zip(&means[cell..cell + len])
                .zip(lane)
            {
                *q += square(v, m);
            }
        }),
        AxisMap::Group { .. } => l.each(|cell, i, _| m2[cell] += square(values[i], means[cell])),
    }
    m2
}

/// Sums and counts of the non-NaN values per cell, in one pass.
fn fold_sum_count<T: Native>(values: &[T], l: &Lanes) -> (Vec<f64>, Vec<f64>) {
    let n = l.out_cells();
    let (mut sums, mut counts) = (vec![0.0; n], vec![0.0; n]);
    let len = l.len();
    match l.last() {
        AxisMap::Reduce => l.lanes(|start, cell, _| {
            let (s, c) = lane_sum_count(values, l.lane(start), true);
            sums[cell] += s;
            counts[cell] += c;
        }),
        AxisMap::Keep => l.lanes(|start, cell, _| {
            let cells = sums[cell..cell + len]
                .iter_mut()
                .zip(&mut counts[cell..cell + len]);
            for ((s, c), &v) in cells.zip(&values[start..start + len]) {
                let x: f64 = v.as_();
                let real = !x.is_nan();
                *s += if real { x } else { 0.0 };
                *c += if real { 1.0 } else { 0.0 };
            }
        }),
        AxisMap::Group { .. } => l.each(|cell, i, _| {
            let x: f64 = values[i].as_();
            if !x.is_nan() {
                sums[cell] += x;
                counts[cell] += 1.0;
            }
        }),
    }
    (sums, counts)
}

/// Counts, means and squared deviations per cell when the last axis is reduced: each
/// lane's moments (two passes while it is in cache) merged into its cell, so the values
/// are read from memory once, in place even when strided.
fn fold_moments<T: Native>(values: &[T], l: &Lanes, skipna: bool) -> [Vec<f64>; 3] {
    let mut cells = vec![Moments::default(); l.out_cells()];
    l.lanes(|start, cell, _| cells[cell].merge(lane_moments(values, l.lane(start), skipna)));
    [
        cells.iter().map(|m| m.count).collect(),
        cells.iter().map(|m| m.mean).collect(),
        cells.iter().map(|m| m.m2).collect(),
    ]
}

/// Non-NaN counts per cell (or the number of reduced cells when NaN are not skipped).
fn fold_count<T: Native>(values: &[T], l: &Lanes, skipna: bool) -> Vec<f64> {
    let mut counts = vec![0.0; l.out_cells()];
    if !skipna {
        if l.maps.iter().all(|m| !matches!(m, AxisMap::Group { .. })) {
            let per_cell = crate::grid::cells(&l.shape) as f64 / counts.len().max(1) as f64;
            counts.iter_mut().for_each(|c| *c = per_cell);
            return counts;
        }
        l.each(|cell, _, _| counts[cell] += 1.0);
        return counts;
    }
    let len = l.len();
    match l.last() {
        AxisMap::Reduce => l.lanes(|start, cell, _| {
            let lane = &values[start..start + len];
            counts[cell] += lane.iter().filter(|v| !v.is_nan()).count() as f64;
        }),
        AxisMap::Keep => l.lanes(|start, cell, _| {
            let lane = &values[start..start + len];
            for (c, v) in counts[cell..cell + len].iter_mut().zip(lane) {
                *c += f64::from(u8::from(!v.is_nan()));
            }
        }),
        AxisMap::Group { .. } => l.each(|cell, i, _| {
            if !values[i].is_nan() {
                counts[cell] += 1.0;
            }
        }),
    }
    counts
}

/// Whether `v` replaces `acc` in a min (`max == false`) or max reduction.
#[inline]
fn better<T: Native>(v: T, acc: T, max: bool, skipna: bool) -> bool {
    if skipna {
        if v.is_nan() {
            return false;
        }
        if acc.is_nan() {
            return true;
        }
    } else {
        if acc.is_nan() {
            return false;
        }
        if v.is_nan() {
            return true;
        }
    }
    if max { v > acc } else { v < acc }
}

/// The per-cell extreme value and its position (ties keep the smaller position).
fn fold_extreme<T: Native>(
    values: &[T],
    l: &Lanes,
    positions: Option<&[i64]>,
    max: bool,
    skipna: bool,
) -> (Vec<T>, Vec<i64>) {
    let n = l.out_cells();
    let mut best = vec![T::default(); n];
    let mut at = vec![i64::MAX; n];
    let mut seen = vec![false; n];
    l.each(|cell, i, pos| {
        let v = values[i];
        let pos = positions.map_or(pos, |p| p[i]);
        let replace = !seen[cell]
            || better(v, best[cell], max, skipna)
            || (pos < at[cell] && !better(best[cell], v, max, skipna));
        if replace {
            best[cell] = v;
            at[cell] = pos;
            seen[cell] = true;
        }
    });
    (best, at)
}

fn chunk_of<T: Native>(dtype: DType, shape: &[usize], values: Vec<T>) -> NdChunk {
    NdChunk::from_vec(dtype, shape.to_vec(), values)
}

/// The states of one chunk `x` whose region in the whole input starts at `offsets`.
pub fn partial(spec: &ReduceSpec, x: &NdChunk, offsets: &[usize]) -> Result<Vec<NdChunk>> {
    use ReduceOp::*;
    if let Some(states) = partial_permuted(spec, x, offsets)? {
        return Ok(states);
    }
    let maps = partial_maps(spec, x.shape(), offsets);
    let skipna = spec.skipna && x.dtype().is_float();
    // Rows must be contiguous, except for the folds that read strided lanes in place;
    // other strides (slices, pieces of bigger chunks) are fine.
    let x = if x.last_stride() == 1 || reads_strided_lanes(spec.op, &maps) {
        x.clone()
    } else {
        x.to_standard()
    };
    let (strides, base) =
        with_native!(x.dtype(), T => { let (_, o, s) = x.raw::<T>(); (s.to_vec(), o) });
    let l = Lanes::new(x.shape(), &strides, base, maps, offsets, &spec.input_shape);
    let shape = l.out_shape();
    let states = with_native!(x.dtype(), T => {
        let values = x.raw::<T>().0;
        match spec.op {
            Sum | Prod => {
                let prod = spec.op == Prod;
                match accumulator(x.dtype()) {
                    DType::F64 => vec![chunk_of(DType::F64, &shape, fold_sum::<T, f64>(values, &l, skipna, prod))],
                    DType::U64 => vec![chunk_of(DType::U64, &shape, fold_sum::<T, u64>(values, &l, skipna, prod))],
                    _ => vec![chunk_of(DType::I64, &shape, fold_sum::<T, i64>(values, &l, skipna, prod))],
                }
            }
            Var { .. } | Std { .. } if matches!(l.last(), AxisMap::Reduce) => {
                let [counts, means, m2] = fold_moments(values, &l, skipna);
                vec![chunk_of(DType::F64, &shape, counts), chunk_of(DType::F64, &shape, means), chunk_of(DType::F64, &shape, m2)]
            }
            Mean | Var { .. } | Std { .. } => {
                let (sums, counts) = if skipna {
                    fold_sum_count(values, &l)
                } else {
                    (fold_sum::<T, f64>(values, &l, false, false), fold_count(values, &l, false))
                };
                if spec.op == Mean {
                    vec![chunk_of(DType::F64, &shape, sums), chunk_of(DType::F64, &shape, counts)]
                } else {
                    let means: Vec<f64> = sums.iter().zip(&counts).map(|(s, c)| if *c > 0.0 { s / c } else { 0.0 }).collect();
                    let m2 = fold_m2(values, &l, &means, skipna);
                    vec![chunk_of(DType::F64, &shape, counts), chunk_of(DType::F64, &shape, means), chunk_of(DType::F64, &shape, m2)]
                }
            }
            Count => {
                let counts: Vec<i64> = fold_count(values, &l, true).into_iter().map(|c| c as i64).collect();
                vec![chunk_of(DType::I64, &shape, counts)]
            }
            Min | Max | ArgMin | ArgMax => {
                let max = matches!(spec.op, Max | ArgMax);
                let (best, at) = fold_extreme(values, &l, None, max, skipna);
                let mut out = vec![chunk_of(x.dtype(), &shape, best)];
                if matches!(spec.op, ArgMin | ArgMax) {
                    out.push(chunk_of(DType::I64, &shape, at));
                }
                out
            }
            Any | All => {
                let zero = T::default();
                let all = spec.op == All;
                let mut acc = vec![u8::from(all); l.out_cells()];
                l.each(|cell, i, _| {
                    let v = u8::from(values[i] != zero);
                    acc[cell] = if all { acc[cell] & v } else { acc[cell] | v };
                });
                vec![chunk_of(DType::Bool, &shape, acc)]
            }
        }
    });
    if spec.finalize {
        return Ok(vec![finalize(spec, &states)?]);
    }
    Ok(states)
}

/// Whether `partial` reads a chunk whose last axis is strided without copying it: sums,
/// means and variances whose last axis is reduced.
fn reads_strided_lanes(op: ReduceOp, maps: &[AxisMap]) -> bool {
    matches!(maps.last(), Some(AxisMap::Reduce))
        && matches!(
            op,
            ReduceOp::Sum | ReduceOp::Mean | ReduceOp::Var { .. } | ReduceOp::Std { .. }
        )
}

/// A transposed view (its contiguous axis is not the last) reduces in stored order: the
/// contiguous axis moves last, the reduction runs on that view, and the states move back.
/// `None` when the view's rows are contiguous already, or for groupings and arg
/// reductions (whose positions depend on the axis order).
fn partial_permuted(
    spec: &ReduceSpec,
    x: &NdChunk,
    offsets: &[usize],
) -> Result<Option<Vec<NdChunk>>> {
    if x.last_stride() == 1
        || spec.group.is_some()
        || matches!(spec.op, ReduceOp::ArgMin | ReduceOp::ArgMax)
    {
        return Ok(None);
    }
    let strides = with_native!(x.dtype(), T => x.raw::<T>().2.to_vec());
    let Some(inner) = (0..x.ndim()).find(|&a| strides[a] == 1 && x.shape()[a] > 1) else {
        return Ok(None);
    };
    let perm: Vec<usize> = (0..x.ndim())
        .filter(|&a| a != inner)
        .chain([inner])
        .collect();
    let position = |a: usize| perm.iter().position(|&p| p == a).unwrap_or(a);
    let moved = ReduceSpec {
        axes: spec.axes.iter().map(|&a| position(a)).collect(),
        input_shape: perm.iter().map(|&a| spec.input_shape[a]).collect(),
        finalize: false,
        ..spec.clone()
    };
    let offsets: Vec<usize> = perm.iter().map(|&a| offsets[a]).collect();
    let states = partial(&moved, &x.permute(&perm), &offsets)?;
    let back: Vec<usize> = (0..perm.len()).map(position).collect();
    let states: Vec<NdChunk> = states
        .iter()
        .map(|s| s.permute(&back).to_standard())
        .collect();
    if spec.finalize {
        return Ok(Some(vec![finalize(spec, &states)?]));
    }
    Ok(Some(states))
}

/// Merges the states `states` (one chunk per state column, several cells along the
/// reduced axes) into one cell along each reduced axis.
pub fn combine(spec: &ReduceSpec, states: &[NdChunk]) -> Result<Vec<NdChunk>> {
    use ReduceOp::*;
    let Some(first) = states.first() else {
        return internal_err!("combine without states");
    };
    let states: Vec<NdChunk> = states.iter().map(NdChunk::to_standard).collect();
    let zeros = vec![0; first.ndim()];
    let ones = vec![1; first.ndim()];
    let strides = crate::chunk::c_strides(first.shape());
    let maps = combine_maps(spec, first.shape());
    let l = Lanes::new(first.shape(), &strides, 0, maps, &zeros, &ones);
    let shape = l.out_shape();
    let n = l.out_cells();
    let f64s = |i: usize| states[i].contiguous_slice::<f64>().expect("f64 state");
    let merged = match spec.op {
        Sum | Prod | Count => with_native!(states[0].dtype(), A => {
            let values = states[0].contiguous_slice::<A>().expect("standard state");
            let prod = spec.op == Prod;
            let mut acc = vec![if prod { A::ONE } else { A::default() }; n];
            l.each(|cell, i, _| acc[cell] = if prod { acc[cell].mul(values[i]) } else { acc[cell].add(values[i]) });
            vec![chunk_of(states[0].dtype(), &shape, acc)]
        }),
        Mean => {
            let (sums, counts) = (f64s(0), f64s(1));
            let (mut s, mut c) = (vec![0.0; n], vec![0.0; n]);
            l.each(|cell, i, _| {
                s[cell] += sums[i];
                c[cell] += counts[i];
            });
            vec![
                chunk_of(DType::F64, &shape, s),
                chunk_of(DType::F64, &shape, c),
            ]
        }
        Var { .. } | Std { .. } => {
            let (counts, means, m2s) = (f64s(0), f64s(1), f64s(2));
            let (mut c, mut m, mut q) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            l.each(|cell, i, _| {
                let (nb, mb, qb) = (counts[i], means[i], m2s[i]);
                let na = c[cell];
                let total = na + nb;
                if nb == 0.0 {
                    return;
                }
                let delta = mb - m[cell];
                m[cell] += delta * nb / total;
                q[cell] += qb + delta * delta * na * nb / total;
                c[cell] = total;
            });
            vec![
                chunk_of(DType::F64, &shape, c),
                chunk_of(DType::F64, &shape, m),
                chunk_of(DType::F64, &shape, q),
            ]
        }
        Min | Max | ArgMin | ArgMax => with_native!(states[0].dtype(), T => {
            let values = states[0].contiguous_slice::<T>().expect("standard state");
            let positions = states.get(1).map(|p| p.contiguous_slice::<i64>().expect("positions"));
            let max = matches!(spec.op, Max | ArgMax);
            let skipna = spec.skipna && spec.input.is_float();
            let (best, at) = fold_extreme(values, &l, positions, max, skipna);
            let mut out = vec![chunk_of(states[0].dtype(), &shape, best)];
            if positions.is_some() {
                out.push(chunk_of(DType::I64, &shape, at));
            }
            out
        }),
        Any | All => {
            let values = states[0].contiguous_slice::<u8>().expect("bool state");
            let all = spec.op == All;
            let mut acc = vec![u8::from(all); n];
            l.each(|cell, i, _| {
                acc[cell] = if all {
                    acc[cell] & values[i]
                } else {
                    acc[cell] | values[i]
                }
            });
            vec![chunk_of(DType::Bool, &shape, acc)]
        }
    };
    if spec.finalize {
        return Ok(vec![finalize(spec, &merged)?]);
    }
    Ok(merged)
}

/// The reduction's values from its merged states (reduced axes dropped unless
/// `keepdims`).
pub fn finalize(spec: &ReduceSpec, states: &[NdChunk]) -> Result<NdChunk> {
    use ReduceOp::*;
    let Some(out) = spec.op.result(spec.input) else {
        return internal_err!("{} of {}", spec.op.name(), spec.input);
    };
    let first = &states[0];
    let f64s = |i: usize| states[i].to_vec::<f64>();
    let value = match spec.op {
        Sum | Prod | Min | Max | Count | Any | All => cast(first, out),
        ArgMin | ArgMax => states[1].clone(),
        Mean => {
            let v: Vec<f64> = f64s(0)
                .iter()
                .zip(f64s(1))
                .map(|(s, c)| if c > 0.0 { s / c } else { f64::NAN })
                .collect();
            cast(&chunk_of(DType::F64, first.shape(), v), out)
        }
        Var { ddof } | Std { ddof } => {
            let std = matches!(spec.op, Std { .. });
            let v: Vec<f64> = f64s(0)
                .iter()
                .zip(f64s(2))
                .map(|(c, m2)| {
                    let dof = c - f64::from(ddof);
                    let var = if dof > 0.0 { m2 / dof } else { f64::NAN };
                    if std { var.sqrt() } else { var }
                })
                .collect();
            cast(&chunk_of(DType::F64, first.shape(), v), out)
        }
    };
    if spec.keepdims {
        return Ok(value);
    }
    let kept: Vec<usize> = value
        .shape()
        .iter()
        .enumerate()
        .filter(|(a, _)| !spec.axes.contains(a))
        .map(|(_, &n)| n)
        .collect();
    Ok(value.reshape(kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(op: ReduceOp, axes: Vec<usize>, skipna: bool, shape: Vec<usize>) -> ReduceSpec {
        ReduceSpec {
            op,
            axes,
            group: None,
            skipna,
            finalize: true,
            keepdims: false,
            input: DType::F64,
            input_shape: shape,
        }
    }

    #[test]
    fn partial_then_combine_matches_whole() {
        let v: Vec<f64> = vec![1.0, 5.0, f64::NAN, 2.0, 4.0, 3.0, 9.0, 0.0];
        let whole = NdChunk::from_vec(DType::F64, vec![2, 4], v);
        // std over axis 1 skipping NaN: rows [1,5,2] and [4,3,9,0].
        let s = spec(ReduceOp::Std { ddof: 0 }, vec![1], true, vec![2, 4]);
        let got = partial(&s, &whole, &[0, 0]).unwrap()[0].to_vec::<f64>();
        let expect = |xs: &[f64]| {
            let m = xs.iter().sum::<f64>() / xs.len() as f64;
            (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64).sqrt()
        };
        assert!((got[0] - expect(&[1.0, 5.0, 2.0])).abs() < 1e-12);
        assert!((got[1] - expect(&[4.0, 3.0, 9.0, 0.0])).abs() < 1e-12);
        // The same through two halves and a combine.
        let mut half = s.clone();
        half.finalize = false;
        let left = partial(&half, &whole.slice(&[0..2, 0..2]), &[0, 0]).unwrap();
        let right = partial(&half, &whole.slice(&[0..2, 2..4]), &[0, 2]).unwrap();
        let joined: Vec<NdChunk> = (0..3)
            .map(|i| crate::kernels::concat(&[left[i].clone(), right[i].clone()], 1).unwrap())
            .collect();
        let merged = combine(&s, &joined).unwrap()[0].to_vec::<f64>();
        assert!((merged[0] - got[0]).abs() < 1e-12 && (merged[1] - got[1]).abs() < 1e-12);
        // argmax over everything keeps the first maximum's flat position.
        let a = spec(ReduceOp::ArgMax, vec![0, 1], true, vec![2, 4]);
        assert_eq!(
            partial(&a, &whole, &[0, 0]).unwrap()[0].to_vec::<i64>(),
            vec![6]
        );
    }

    #[test]
    fn strided_views_reduce_in_place_like_their_copies() {
        // A 7 x 30 chunk viewed as rows 1, 3, 5 and every fourth column from 2: strided
        // lanes of 7 values, one NaN among them.
        let mut v: Vec<f64> = (0..210)
            .map(|i| f64::from((i * 37 % 101) as u32) / 7.0)
            .collect();
        v[30 + 10] = f64::NAN;
        let whole = NdChunk::from_vec(DType::F64, vec![7, 30], v);
        let view = whole.slice_step(&[(1..7, 2), (2..30, 4)]);
        assert_eq!((view.shape(), view.last_stride()), (&[3, 7][..], 4));
        let rows: Vec<Vec<f64>> = view
            .to_vec::<f64>()
            .chunks(7)
            .map(<[f64]>::to_vec)
            .collect();
        let real = |xs: &[f64]| {
            xs.iter()
                .copied()
                .filter(|x| !x.is_nan())
                .collect::<Vec<_>>()
        };
        let var = |xs: &[f64]| {
            let m = xs.iter().sum::<f64>() / xs.len() as f64;
            xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64
        };
        let all: Vec<f64> = real(&rows.concat());
        for (op, axes, want) in [
            (
                ReduceOp::Sum,
                vec![1],
                rows.iter()
                    .map(|r| real(r).iter().sum())
                    .collect::<Vec<f64>>(),
            ),
            (
                ReduceOp::Mean,
                vec![1],
                rows.iter()
                    .map(|r| real(r).iter().sum::<f64>() / real(r).len() as f64)
                    .collect(),
            ),
            (
                ReduceOp::Var { ddof: 1 },
                vec![1],
                rows.iter().map(|r| var(&real(r))).collect(),
            ),
            (
                ReduceOp::Std { ddof: 1 },
                vec![0, 1],
                vec![var(&all).sqrt()],
            ),
        ] {
            let s = spec(op, axes, true, vec![3, 7]);
            let got = partial(&s, &view, &[0, 0]).unwrap()[0].to_vec::<f64>();
            assert_eq!(got.len(), want.len(), "{op:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-9 * w.abs().max(1.0),
                    "{op:?}: {g} != {w}"
                );
            }
        }
        // Without skipping, the row with the NaN has a NaN variance and the others don't.
        let s = spec(ReduceOp::Var { ddof: 0 }, vec![1], false, vec![3, 7]);
        let got = partial(&s, &view, &[0, 0]).unwrap()[0].to_vec::<f64>();
        assert!(got[0].is_nan() && got[1].is_finite() && got[2].is_finite());
    }
}
