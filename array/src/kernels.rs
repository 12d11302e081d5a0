//! Cell-by-cell kernels over chunks: casts, math functions, broadcast binary operators,
//! `where`, gathers, joins and matrix blocks. Integer arithmetic wraps as NumPy's does;
//! integer division by zero gives 0.

use datafusion_common::{Result, exec_err, internal_datafusion_err, internal_err};
use ndarray::{ArrayD, Axis, Ix2, IxDyn, Zip};
use num_traits::{AsPrimitive, One};

use crate::chunk::NdChunk;
use crate::dtype::{DType, Native};
use crate::ops::{BinaryOp, UnaryOp};
use crate::with_native;

/// The values of an owned ndarray in C order.
pub fn standard_vec<T: Native>(array: ArrayD<T>) -> Vec<T> {
    let array = if array.is_standard_layout() {
        array
    } else {
        array.as_standard_layout().into_owned()
    };
    let (values, offset) = array.into_raw_vec_and_offset();
    match offset {
        Some(o) if o > 0 => values[o..].to_vec(),
        _ => values,
    }
}

/// `chunk` converted to `to` (NumPy's `astype`: floats truncate toward zero, anything
/// non-zero is `true`).
pub fn cast(chunk: &NdChunk, to: DType) -> NdChunk {
    let from = chunk.dtype();
    if from == to {
        return chunk.clone();
    }
    if from.storage_type() == to.storage_type() && to != DType::Bool && from != DType::Bool {
        return chunk.clone().with_dtype(to);
    }
    if to == DType::Bool {
        return with_native!(from, S => {
            let zero = S::default();
            let values: Vec<u8> = chunk.view::<S>().iter().map(|&v| u8::from(v != zero)).collect();
            NdChunk::from_vec(to, chunk.shape().to_vec(), values)
        });
    }
    with_native!(from, S => with_native!(to, T => {
        let values: Vec<T> = match chunk.contiguous_slice::<S>() {
            Some(s) => s.iter().map(|&v| AsPrimitive::<T>::as_(v)).collect(),
            None => chunk.view::<S>().iter().map(|&v| AsPrimitive::<T>::as_(v)).collect(),
        };
        NdChunk::from_vec(to, chunk.shape().to_vec(), values)
    }))
}

/// Maps every cell of `chunk` (storage `S`) to `U`, keeping the shape.
fn map<S: Native, U: Native>(chunk: &NdChunk, dtype: DType, f: impl Fn(S) -> U) -> NdChunk {
    let values: Vec<U> = match chunk.contiguous_slice::<S>() {
        Some(s) => s.iter().map(|&v| f(v)).collect(),
        None => standard_vec(chunk.view::<S>().map(|&v| f(v))),
    };
    NdChunk::from_vec(dtype, chunk.shape().to_vec(), values)
}

macro_rules! float_unary {
    ($op:expr, $chunk:expr, $out:expr, $t:ty) => {{
        use UnaryOp::*;
        let c = cast($chunk, $out);
        let f: fn($t) -> $t = match $op {
            Neg => |v| -v,
            Abs => <$t>::abs,
            Sqrt => <$t>::sqrt,
            Square => |v| v * v,
            Exp => <$t>::exp,
            Expm1 => <$t>::exp_m1,
            Log => <$t>::ln,
            Log1p => <$t>::ln_1p,
            Log2 => <$t>::log2,
            Log10 => <$t>::log10,
            Sin => <$t>::sin,
            Cos => <$t>::cos,
            Tan => <$t>::tan,
            Arcsin => <$t>::asin,
            Arccos => <$t>::acos,
            Arctan => <$t>::atan,
            Sinh => <$t>::sinh,
            Cosh => <$t>::cosh,
            Tanh => <$t>::tanh,
            Floor => <$t>::floor,
            Ceil => <$t>::ceil,
            Round => <$t>::round_ties_even,
            Trunc => <$t>::trunc,
            Sign => |v: $t| {
                if v.is_nan() {
                    v
                } else if v > 0.0 {
                    1.0
                } else if v < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            },
            IsNan | IsFinite | IsInf | Not => {
                return internal_err!("{} is not a float function", $op.name());
            }
        };
        map::<$t, $t>(&c, $out, f)
    }};
}

/// `op(chunk)` with result dtype `out` (see [`UnaryOp::result`]).
pub fn unary(op: UnaryOp, chunk: &NdChunk, out: DType) -> Result<NdChunk> {
    use UnaryOp::*;
    let dtype = chunk.dtype();
    Ok(match op {
        Not => map::<u8, u8>(chunk, DType::Bool, |v| u8::from(v == 0)),
        IsNan | IsFinite | IsInf => with_native!(dtype, S => map::<S, u8>(chunk, DType::Bool, |v| {
            let f: f64 = v.as_();
            u8::from(match op {
                IsNan => f.is_nan(),
                IsFinite => f.is_finite(),
                _ => f.is_infinite(),
            })
        })),
        _ if out == DType::F32 => float_unary!(op, chunk, out, f32),
        _ if out == DType::F64 => float_unary!(op, chunk, out, f64),
        Floor | Ceil | Round | Trunc => chunk.clone(),
        Neg | Abs | Square | Sign => with_native!(dtype, S => map::<S, S>(chunk, dtype, |v| {
            let zero = S::default();
            match op {
                Neg => v.wrapping_neg(),
                Abs => if v < zero { v.wrapping_neg() } else { v },
                Square => v.wrapping_mul(v),
                _ => if v > zero { S::ONE } else if v < zero { S::ONE.wrapping_neg() } else { zero },
            }
        })),
        _ => return internal_err!("{} on {dtype}", op.name()),
    })
}

/// Arithmetic on a storage type, as NumPy defines it for the dtype.
pub trait Arith: Native {
    /// One.
    const ONE: Self;
    /// `self + o`.
    fn add(self, o: Self) -> Self;
    /// `self - o`.
    fn sub(self, o: Self) -> Self;
    /// `self * o`.
    fn mul(self, o: Self) -> Self;
    /// `self / o` (integers only reach here for floor division).
    fn div(self, o: Self) -> Self;
    /// Floor division.
    fn floor_div(self, o: Self) -> Self;
    /// Remainder with the sign of the divisor.
    fn modulo(self, o: Self) -> Self;
    /// `self ** o`.
    fn pow(self, o: Self) -> Self;
    /// The smaller, NaN if either is.
    fn minimum(self, o: Self) -> Self;
    /// The larger, NaN if either is.
    fn maximum(self, o: Self) -> Self;
    /// Bitwise and (integers and bools).
    fn bit_and(self, o: Self) -> Self;
    /// Bitwise or.
    fn bit_or(self, o: Self) -> Self;
    /// Bitwise xor.
    fn bit_xor(self, o: Self) -> Self;
    /// `-self`, wrapping.
    fn wrapping_neg(self) -> Self;
    /// `self * o`, wrapping.
    fn wrapping_mul(self, o: Self) -> Self;
}

macro_rules! int_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            const ONE: Self = 1;
            #[inline(always)]
            fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            #[inline(always)]
            fn sub(self, o: Self) -> Self { self.wrapping_sub(o) }
            #[inline(always)]
            fn mul(self, o: Self) -> Self { <$t>::wrapping_mul(self, o) }
            #[inline(always)]
            fn div(self, o: Self) -> Self { self.floor_div(o) }
            #[inline(always)]
            fn floor_div(self, o: Self) -> Self {
                if o == 0 { return 0; }
                let q = self.wrapping_div(o);
                #[allow(unused_comparisons)]
                let negative = (self < 0) != (o < 0);
                if negative && q.wrapping_mul(o) != self { q.wrapping_sub(1) } else { q }
            }
            #[inline(always)]
            fn modulo(self, o: Self) -> Self {
                if o == 0 { return 0; }
                let r = self.wrapping_rem(o);
                #[allow(unused_comparisons)]
                let fix = r != 0 && ((r < 0) != (o < 0));
                if fix { r.wrapping_add(o) } else { r }
            }
            #[inline(always)]
            fn pow(self, o: Self) -> Self {
                #[allow(unused_comparisons)]
                let negative = o < 0;
                if negative { 0 } else { self.wrapping_pow(o as u32) }
            }
            #[inline(always)]
            fn minimum(self, o: Self) -> Self { self.min(o) }
            #[inline(always)]
            fn maximum(self, o: Self) -> Self { self.max(o) }
            #[inline(always)]
            fn bit_and(self, o: Self) -> Self { self & o }
            #[inline(always)]
            fn bit_or(self, o: Self) -> Self { self | o }
            #[inline(always)]
            fn bit_xor(self, o: Self) -> Self { self ^ o }
            #[inline(always)]
            fn wrapping_neg(self) -> Self { <$t>::wrapping_neg(self) }
            #[inline(always)]
            fn wrapping_mul(self, o: Self) -> Self { <$t>::wrapping_mul(self, o) }
        }
    )*};
}

macro_rules! float_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            const ONE: Self = 1.0;
            #[inline(always)]
            fn add(self, o: Self) -> Self { self + o }
            #[inline(always)]
            fn sub(self, o: Self) -> Self { self - o }
            #[inline(always)]
            fn mul(self, o: Self) -> Self { self * o }
            #[inline(always)]
            fn div(self, o: Self) -> Self { self / o }
            #[inline(always)]
            fn floor_div(self, o: Self) -> Self { (self / o).floor() }
            #[inline(always)]
            fn modulo(self, o: Self) -> Self {
                let r = self % o;
                if r != 0.0 && ((r < 0.0) != (o < 0.0)) { r + o } else { r }
            }
            #[inline(always)]
            fn pow(self, o: Self) -> Self { self.powf(o) }
            #[inline(always)]
            fn minimum(self, o: Self) -> Self { if self.is_nan() || o.is_nan() { <$t>::NAN } else { self.min(o) } }
            #[inline(always)]
            fn maximum(self, o: Self) -> Self { if self.is_nan() || o.is_nan() { <$t>::NAN } else { self.max(o) } }
            #[inline(always)]
            fn bit_and(self, _o: Self) -> Self { <$t>::NAN }
            #[inline(always)]
            fn bit_or(self, _o: Self) -> Self { <$t>::NAN }
            #[inline(always)]
            fn bit_xor(self, _o: Self) -> Self { <$t>::NAN }
            #[inline(always)]
            fn wrapping_neg(self) -> Self { -self }
            #[inline(always)]
            fn wrapping_mul(self, o: Self) -> Self { self * o }
        }
    )*};
}

int_arith!(u8, u16, u32, u64, i8, i16, i32, i64);
float_arith!(f32, f64);

/// Applies `f` to the cells of `a` and `b` broadcast to `shape`, in C order.
pub fn zip2<T: Native, U: Native>(
    a: &NdChunk,
    b: &NdChunk,
    shape: &[usize],
    f: impl Fn(T, T) -> U,
) -> Result<Vec<U>> {
    if a.shape() == shape
        && b.shape() == shape
        && let (Some(x), Some(y)) = (a.contiguous_slice::<T>(), b.contiguous_slice::<T>())
    {
        return Ok(x.iter().zip(y).map(|(&p, &q)| f(p, q)).collect());
    }
    if a.shape() == shape
        && b.len() == 1
        && let Some(x) = a.contiguous_slice::<T>()
    {
        let q = b.to_vec::<T>()[0];
        return Ok(x.iter().map(|&p| f(p, q)).collect());
    }
    let (av, bv) = (a.view::<T>(), b.view::<T>());
    let (Some(av), Some(bv)) = (av.broadcast(IxDyn(shape)), bv.broadcast(IxDyn(shape))) else {
        return exec_err!(
            "shapes {:?} and {:?} do not broadcast to {shape:?}",
            a.shape(),
            b.shape()
        );
    };
    Ok(standard_vec(
        Zip::from(&av).and(&bv).map_collect(|&p, &q| f(p, q)),
    ))
}

/// `a op b` broadcast to `shape`; see [`BinaryOp::compute_type`] and [`BinaryOp::result`].
pub fn binary(
    op: BinaryOp,
    a: &NdChunk,
    b: &NdChunk,
    shape: &[usize],
    out: DType,
) -> Result<NdChunk> {
    use BinaryOp::*;
    let Some(compute) = op.compute_type(a.dtype(), b.dtype()) else {
        return internal_err!("{} on {} and {}", op.name(), a.dtype(), b.dtype());
    };
    let (a, b) = (cast(a, compute), cast(b, compute));
    let shape = shape.to_vec();
    if op.is_comparison() {
        let values = with_native!(compute, T => zip2::<T, u8>(&a, &b, &shape, |p, q| u8::from(match op {
            Eq => p == q,
            Ne => p != q,
            Lt => p < q,
            Le => p <= q,
            Gt => p > q,
            _ => p >= q,
        }))?);
        return Ok(NdChunk::from_vec(DType::Bool, shape, values));
    }
    with_native!(compute, T => {
        // Function items (not pointers) so each operator's loop is inlined and vectorised.
        let values = match op {
            Add => zip2::<T, T>(&a, &b, &shape, <T as Arith>::add)?,
            Sub => zip2::<T, T>(&a, &b, &shape, <T as Arith>::sub)?,
            Mul => zip2::<T, T>(&a, &b, &shape, <T as Arith>::mul)?,
            Div => zip2::<T, T>(&a, &b, &shape, <T as Arith>::div)?,
            FloorDiv => zip2::<T, T>(&a, &b, &shape, <T as Arith>::floor_div)?,
            Mod => zip2::<T, T>(&a, &b, &shape, <T as Arith>::modulo)?,
            Pow => zip2::<T, T>(&a, &b, &shape, <T as Arith>::pow)?,
            Minimum => zip2::<T, T>(&a, &b, &shape, <T as Arith>::minimum)?,
            Maximum => zip2::<T, T>(&a, &b, &shape, <T as Arith>::maximum)?,
            And => zip2::<T, T>(&a, &b, &shape, <T as Arith>::bit_and)?,
            Or => zip2::<T, T>(&a, &b, &shape, <T as Arith>::bit_or)?,
            Xor => zip2::<T, T>(&a, &b, &shape, <T as Arith>::bit_xor)?,
            _ => return internal_err!("{} is a comparison", op.name()),
        };
        Ok(NdChunk::from_vec(out, shape, values))
    })
}

/// `cond ? a : b` broadcast to `shape`, with `a` and `b` converted to `out`.
pub fn select(
    cond: &NdChunk,
    a: &NdChunk,
    b: &NdChunk,
    shape: &[usize],
    out: DType,
) -> Result<NdChunk> {
    let cond = cast(cond, DType::Bool);
    let (a, b) = (cast(a, out), cast(b, out));
    with_native!(out, T => {
        let (cv, av, bv) = (cond.view::<u8>(), a.view::<T>(), b.view::<T>());
        let dim = IxDyn(shape);
        let (Some(cv), Some(av), Some(bv)) = (cv.broadcast(dim.clone()), av.broadcast(dim.clone()), bv.broadcast(dim)) else {
            return exec_err!("where: shapes {:?}, {:?} and {:?} do not broadcast to {shape:?}", cond.shape(), a.shape(), b.shape());
        };
        let values = standard_vec(Zip::from(&cv).and(&av).and(&bv).map_collect(|&c, &p, &q| if c != 0 { p } else { q }));
        Ok(NdChunk::from_vec(out, shape.to_vec(), values))
    })
}

/// The cells of `chunk` at `indices` along `axis` (local positions).
pub fn take(chunk: &NdChunk, axis: usize, indices: &[usize]) -> NdChunk {
    with_native!(chunk.dtype(), T => {
        let picked = chunk.view::<T>().select(Axis(axis), indices);
        NdChunk::from_ndarray(chunk.dtype(), picked)
    })
}

/// The chunks joined along `axis` (same dtype).
pub fn concat(chunks: &[NdChunk], axis: usize) -> Result<NdChunk> {
    let Some(first) = chunks.first() else {
        return internal_err!("concat of no chunks");
    };
    if chunks.len() == 1 {
        return Ok(first.clone());
    }
    with_native!(first.dtype(), T => {
        let views: Vec<_> = chunks.iter().map(|c| c.view::<T>()).collect();
        let joined = ndarray::concatenate(Axis(axis), &views)
            .map_err(|e| datafusion_common::DataFusionError::Execution(format!("concat: {e}")))?;
        Ok(NdChunk::from_ndarray(first.dtype(), joined))
    })
}

/// `sum(a_i @ b_i)` over the pieces, as a `(m, n, 1)` chunk of dtype `out`: one output
/// buffer, each product accumulated into it. Floats go to the system BLAS when one is
/// installed (see [`crate::blas`]), else to the `gemm` crate's kernels
/// ([`crate::gemm`]); integers to `ndarray`'s.
pub fn matmul_pieces(
    pieces: &[(NdChunk, NdChunk)],
    out: DType,
    (m, n): (usize, usize),
) -> Result<NdChunk> {
    macro_rules! dot {
        ($t:ty $(, $blas:ident)?) => {{
            let mut c = ndarray::Array2::<$t>::zeros((m, n));
            for (a, b) in pieces {
                let (a, b) = (cast(a, out), cast(b, out));
                let av = a.view::<$t>().into_dimensionality::<Ix2>();
                let bv = b.view::<$t>().into_dimensionality::<Ix2>();
                let (Ok(av), Ok(bv)) = (av, bv) else {
                    return internal_err!("matmul blocks must be 2-d");
                };
                if av.dim() != (m, bv.dim().0) || bv.dim().1 != n {
                    return internal_err!(
                        "matmul pieces {:?} and {:?} do not make ({m}, {n})",
                        av.dim(),
                        bv.dim()
                    );
                }
                #[allow(unused_mut)]
                let mut done = false;
                $(if let Some(blas) = crate::blas::blas() {
                    done = blas.$blas(&av, &bv, &mut c);
                }
                if !done {
                    crate::gemm::gemm_add(&av, &bv, &mut c);
                    done = true;
                })?
                if !done {
                    ndarray::linalg::general_mat_mul(<$t>::one(), &av, &bv, <$t>::one(), &mut c);
                }
            }
            NdChunk::from_ndarray(out, c.into_dyn()).reshape(vec![m, n, 1])
        }};
    }
    Ok(match out {
        DType::F64 => dot!(f64, dgemm_add),
        DType::F32 => dot!(f32, sgemm_add),
        DType::I64 => dot!(i64),
        DType::I32 => dot!(i32),
        DType::U64 => dot!(u64),
        other => return exec_err!("matmul does not support {other}"),
    })
}

/// Moving-window reductions along `axis` of `chunk`, whose first `lead` cells along the
/// axis only feed windows (they are not outputs). NaN is skipped; a window with fewer
/// than `min_periods` values gives NaN.
pub fn rolling(
    chunk: &NdChunk,
    axis: usize,
    window: usize,
    lead: usize,
    op: crate::ops::ReduceOp,
    min_periods: usize,
    out: DType,
) -> Result<NdChunk> {
    use crate::ops::ReduceOp::*;
    if !matches!(op, Sum | Mean | Count | Min | Max | Var { .. } | Std { .. }) {
        return internal_err!("rolling {} is not supported", op.name());
    }
    // In C order the chunk is `outer` blocks of `len` rows of `inner` cells: a window
    // is a run of rows, and each output row is computed for all its cells at once,
    // walking the window's rows in order (contiguous reads, no transposition).
    let shape = chunk.shape().to_vec();
    let len = shape[axis];
    let outputs = len - lead;
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let standard = chunk.to_standard();
    let result = with_native!(standard.dtype(), T => {
        let data = standard
            .contiguous_slice::<T>()
            .ok_or_else(|| internal_datafusion_err!("a standard chunk is contiguous"))?;
        rolling_rows(data, [outer, len, inner], window, lead, op, min_periods)
    });
    let mut out_shape = shape;
    out_shape[axis] = outputs;
    Ok(cast(&NdChunk::from_vec(DType::F64, out_shape, result), out))
}

/// The moving-window reduction of [`rolling`] over C-ordered `data` of `outer` blocks of
/// `len` rows of `inner` cells: `len - lead` output rows per block, as `f64`.
fn rolling_rows<T: Native>(
    data: &[T],
    [outer, len, inner]: [usize; 3],
    window: usize,
    lead: usize,
    op: crate::ops::ReduceOp,
    min_periods: usize,
) -> Vec<f64> {
    use crate::ops::ReduceOp::*;
    let outputs = len - lead;
    let mut result = Vec::with_capacity(outer * outputs * inner);
    let mut sum = vec![0.0f64; inner];
    let mut count = vec![0usize; inner];
    let mut best = vec![0.0f64; inner];
    let mut m2 = vec![0.0f64; inner];
    for o in 0..outer {
        let row = |t: usize| &data[(o * len + t) * inner..(o * len + t + 1) * inner];
        for k in 0..outputs {
            let end = lead + k + 1;
            let rows = end.saturating_sub(window)..end;
            sum.fill(0.0);
            count.fill(0);
            let max = op == Max;
            best.fill(if max {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            });
            for t in rows.clone() {
                for (j, &v) in row(t).iter().enumerate() {
                    let v: f64 = v.as_();
                    if !v.is_nan() {
                        sum[j] += v;
                        count[j] += 1;
                        best[j] = if max { best[j].max(v) } else { best[j].min(v) };
                    }
                }
            }
            if let Var { .. } | Std { .. } = op {
                m2.fill(0.0);
                for t in rows {
                    for (j, &v) in row(t).iter().enumerate() {
                        let v: f64 = v.as_();
                        if !v.is_nan() && count[j] > 0 {
                            let d = v - sum[j] / count[j] as f64;
                            m2[j] += d * d;
                        }
                    }
                }
            }
            for j in 0..inner {
                let n = count[j];
                let v = if n < min_periods.max(1) && op != Count {
                    f64::NAN
                } else {
                    match op {
                        Sum => sum[j],
                        Mean => sum[j] / n as f64,
                        Count => n as f64,
                        Min | Max => best[j],
                        Var { ddof } | Std { ddof } => {
                            let dof = n as f64 - f64::from(ddof);
                            let var = if dof > 0.0 { m2[j] / dof } else { f64::NAN };
                            if matches!(op, Std { .. }) {
                                var.sqrt()
                            } else {
                                var
                            }
                        }
                        _ => f64::NAN,
                    }
                };
                result.push(v);
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_division_and_modulo_follow_numpy() {
        assert_eq!((-7i64).floor_div(2), -4);
        assert_eq!((-7i64).modulo(2), 1);
        assert_eq!(7i64.modulo(-2), -1);
        assert_eq!(7i64.floor_div(0), 0);
        assert_eq!((-7.5f64).modulo(2.0), 0.5);
    }

    #[test]
    fn broadcast_binary() {
        let a = NdChunk::from_vec(DType::I32, vec![2, 3], vec![1, 2, 3, 4, 5, 6]);
        let b = NdChunk::from_vec(DType::F32, vec![3], vec![0.5f32, 1.0, 2.0]);
        let c = binary(BinaryOp::Mul, &a, &b, &[2, 3], DType::F64).unwrap();
        assert_eq!(c.to_vec::<f64>(), vec![0.5, 2.0, 6.0, 2.0, 5.0, 12.0]);
        let d = binary(BinaryOp::Gt, &a, &b, &[2, 3], DType::Bool).unwrap();
        assert_eq!(d.to_vec::<u8>(), vec![1, 1, 1, 1, 1, 1]);
    }
}
