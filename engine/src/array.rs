//! [`Array`]: a lazy, chunked N-d array in the style of `dask.array`. Operations build an
//! expression graph; `collect_ndarray`, `collect` and `persist` lower it to a task graph of
//! chunk tasks and run it on the session's cluster.

use std::sync::Arc;

use datafusion::common::DataFusionError;
use futures::TryStreamExt;
use ndarray::{ArrayD, SliceInfoElem};
use shoal_array::with_native;
use shoal_planner::array::{
    self as planner_array, ArrayExpr, AxisSlice, BinaryOp, ChunkGrid, DType, Native, NdChunk,
    ReduceOp, Scalar, UnaryOp, expr,
};

use crate::error::{Error, Result};
use crate::session::Session;

/// A Rust element type arrays convert from and to.
pub trait Element: Copy + Default + Send + Sync + 'static {
    /// Its dtype.
    const DTYPE: DType;
    /// How chunks store it.
    type Storage: Native;
    /// To storage.
    fn to_storage(self) -> Self::Storage;
    /// From storage.
    fn from_storage(v: Self::Storage) -> Self;
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => {$(
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            type Storage = $t;
            fn to_storage(self) -> $t { self }
            fn from_storage(v: $t) -> $t { v }
        }
    )*};
}

element!(f64 => F64, f32 => F32, i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16, u32 => U32, u64 => U64);

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    type Storage = u8;
    fn to_storage(self) -> u8 {
        u8::from(self)
    }
    fn from_storage(v: u8) -> bool {
        v != 0
    }
}

/// Which axes a reduction runs over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Axes {
    /// Every axis.
    All,
    /// These axes.
    Some(Vec<usize>),
}

impl From<Option<usize>> for Axes {
    fn from(a: Option<usize>) -> Self {
        a.map_or(Axes::All, |a| Axes::Some(vec![a]))
    }
}

impl From<usize> for Axes {
    fn from(a: usize) -> Self {
        Axes::Some(vec![a])
    }
}

impl From<&[usize]> for Axes {
    fn from(a: &[usize]) -> Self {
        Axes::Some(a.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Axes {
    fn from(a: [usize; N]) -> Self {
        Axes::Some(a.to_vec())
    }
}

impl From<Vec<usize>> for Axes {
    fn from(a: Vec<usize>) -> Self {
        Axes::Some(a)
    }
}

/// An operand of array arithmetic: another array or a scalar.
pub trait Operand {
    /// The operand as an expression broadcastable against arrays.
    fn expr(&self) -> Result<ArrayExpr>;
}

impl Operand for Array {
    fn expr(&self) -> Result<ArrayExpr> {
        Ok(self.expr.clone())
    }
}

impl Operand for &Array {
    fn expr(&self) -> Result<ArrayExpr> {
        Ok(self.expr.clone())
    }
}

fn scalar_expr(value: Scalar, dtype: DType) -> Result<ArrayExpr> {
    Ok(expr::full(&[], &[], value, dtype)?)
}

impl Operand for f64 {
    fn expr(&self) -> Result<ArrayExpr> {
        scalar_expr(Scalar::Float(*self), DType::F64)
    }
}

impl Operand for i64 {
    fn expr(&self) -> Result<ArrayExpr> {
        scalar_expr(Scalar::Int(*self), DType::I64)
    }
}

impl Operand for bool {
    fn expr(&self) -> Result<ArrayExpr> {
        scalar_expr(Scalar::Bool(*self), DType::Bool)
    }
}

/// A lazy chunked N-d array.
#[derive(Clone)]
pub struct Array {
    session: Session,
    expr: ArrayExpr,
}

impl std::fmt::Debug for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Array({} {:?}, chunks {:?})",
            self.dtype(),
            self.shape(),
            self.chunks()
        )
    }
}

macro_rules! unary_methods {
    ($($name:ident => $op:ident),*) => {$(
        #[doc = concat!("`", stringify!($name), "` of every cell.")]
        pub fn $name(&self) -> Result<Array> {
            self.unary(UnaryOp::$op)
        }
    )*};
}

macro_rules! binary_methods {
    ($($name:ident => $op:ident),*) => {$(
        #[doc = concat!("Cell by cell `", stringify!($name), "`, broadcast NumPy style.")]
        pub fn $name(&self, other: impl Operand) -> Result<Array> {
            self.binary(BinaryOp::$op, other)
        }
    )*};
}

macro_rules! reduce_methods {
    ($($name:ident, $nan:ident => $op:expr),*) => {$(
        #[doc = concat!("`", stringify!($name), "` over `axes` (NaN propagates, as in NumPy).")]
        pub fn $name(&self, axes: impl Into<Axes>) -> Result<Array> {
            self.reduce($op, axes, false, false)
        }
        #[doc = concat!("`", stringify!($name), "` over `axes`, skipping NaN (`np.", stringify!($nan), "`).")]
        pub fn $nan(&self, axes: impl Into<Axes>) -> Result<Array> {
            self.reduce($op, axes, false, true)
        }
    )*};
}

impl Array {
    pub(crate) fn new(session: Session, expr: ArrayExpr) -> Self {
        Self { session, expr }
    }

    fn wrap(&self, expr: std::result::Result<ArrayExpr, DataFusionError>) -> Result<Array> {
        Ok(Array::new(self.session.clone(), expr?))
    }

    /// The expression behind the array.
    pub fn expr(&self) -> &ArrayExpr {
        &self.expr
    }

    /// The session the array runs in.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Lengths per axis.
    pub fn shape(&self) -> Vec<usize> {
        self.expr.grid.shape()
    }

    /// Number of axes.
    pub fn ndim(&self) -> usize {
        self.expr.grid.ndim()
    }

    /// Number of cells.
    pub fn size(&self) -> usize {
        self.shape().iter().product()
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.expr.dtype
    }

    /// Chunk lengths along each axis (Dask's `chunks`).
    pub fn chunks(&self) -> Vec<Vec<usize>> {
        self.expr.grid.chunks().to_vec()
    }

    /// `op(self)`.
    pub fn unary(&self, op: UnaryOp) -> Result<Array> {
        self.wrap(expr::unary(op, &self.expr))
    }

    /// `self op other`, broadcast.
    pub fn binary(&self, op: BinaryOp, other: impl Operand) -> Result<Array> {
        let other = other.expr()?;
        self.wrap(expr::binary(op, &self.expr, &other))
    }

    /// `other op self` (for scalars on the left).
    pub fn rbinary(&self, op: BinaryOp, other: impl Operand) -> Result<Array> {
        let other = other.expr()?;
        self.wrap(expr::binary(op, &other, &self.expr))
    }

    unary_methods!(
        neg => Neg, abs => Abs, sqrt => Sqrt, square => Square, exp => Exp, expm1 => Expm1,
        log => Log, log1p => Log1p, log2 => Log2, log10 => Log10, sin => Sin, cos => Cos,
        tan => Tan, arcsin => Arcsin, arccos => Arccos, arctan => Arctan, sinh => Sinh,
        cosh => Cosh, tanh => Tanh, floor => Floor, ceil => Ceil, round => Round,
        trunc => Trunc, sign => Sign, isnan => IsNan, isfinite => IsFinite, isinf => IsInf,
        logical_not => Not
    );

    binary_methods!(
        add => Add, sub => Sub, mul => Mul, div => Div, floor_div => FloorDiv, rem => Mod,
        pow => Pow, minimum => Minimum, maximum => Maximum, eq => Eq, ne => Ne, lt => Lt,
        le => Le, gt => Gt, ge => Ge, and => And, or => Or, xor => Xor
    );

    /// `np.where(self, a, b)`: `a` where this bool array is true, else `b`.
    pub fn where_(&self, a: impl Operand, b: impl Operand) -> Result<Array> {
        let (a, b) = (a.expr()?, b.expr()?);
        self.wrap(expr::select(&self.expr, &a, &b))
    }

    /// The array converted to `dtype`.
    pub fn astype(&self, dtype: DType) -> Result<Array> {
        self.wrap(expr::cast(&self.expr, dtype))
    }

    /// `x[...]` with NumPy slices per axis (`ndarray::s![..;2, 1..]`); an integer index
    /// picks one position and drops the axis. Missing trailing axes are whole.
    pub fn slice(&self, info: impl AsRef<[SliceInfoElem]>) -> Result<Array> {
        let shape = self.shape();
        let elems = info.as_ref();
        if elems.len() > shape.len() {
            return Err(Error::input(format!(
                "{} indices given for an array with {} axes",
                elems.len(),
                shape.len()
            )));
        }
        let mut slices = Vec::with_capacity(shape.len());
        let mut dropped = Vec::new();
        for (axis, &n) in shape.iter().enumerate() {
            let s = match elems.get(axis) {
                None => AxisSlice::resolve(n, None, None, 1, axis)?,
                Some(SliceInfoElem::Slice { start, end, step }) => {
                    AxisSlice::resolve(n, Some(*start), *end, *step, axis)?
                }
                Some(SliceInfoElem::Index(i)) => {
                    dropped.push(axis);
                    let pos = if *i < 0 { n as isize + i } else { *i };
                    if pos < 0 || pos as usize >= n {
                        return Err(Error::input(format!(
                            "index {i} is out of range for axis {axis} of length {n}"
                        )));
                    }
                    AxisSlice::resolve(n, Some(pos), Some(pos + 1), 1, axis)?
                }
                Some(SliceInfoElem::NewAxis) => {
                    return Err(Error::input("new axes in slices are not supported"));
                }
            };
            slices.push(s);
        }
        let sliced = expr::slice(&self.expr, &slices)?;
        self.wrap(expr::squeeze(&sliced, &dropped))
    }

    /// The positions `indices` along `axis` (NumPy's `take`).
    pub fn take(&self, indices: &[usize], axis: usize) -> Result<Array> {
        self.wrap(expr::take(&self.expr, axis, indices.to_vec()))
    }

    /// The positions along `axis` where `mask` is true (boolean indexing).
    pub fn compress(&self, mask: &[bool], axis: usize) -> Result<Array> {
        let Some(&n) = self.shape().get(axis) else {
            return Err(Error::input(format!(
                "axis {axis} is out of range for an array with {} axes",
                self.ndim()
            )));
        };
        if mask.len() != n {
            return Err(Error::input(format!(
                "a boolean index of length {} does not match axis {axis} of length {n}",
                mask.len()
            )));
        }
        let picked: Vec<usize> = (0..n).filter(|&i| mask[i]).collect();
        self.take(&picked, axis)
    }

    /// The transpose: axes reversed.
    pub fn t(&self) -> Result<Array> {
        let perm: Vec<usize> = (0..self.ndim()).rev().collect();
        self.transpose(&perm)
    }

    /// Axes reordered: axis `i` of the result is axis `perm[i]`.
    pub fn transpose(&self, perm: &[usize]) -> Result<Array> {
        self.wrap(expr::transpose(&self.expr, perm))
    }

    /// The same cells in C order under another shape (NumPy's `reshape`).
    pub fn reshape(&self, shape: &[usize]) -> Result<Array> {
        self.wrap(expr::reshape(&self.expr, shape))
    }

    /// The array with length-1 axes inserted at `axes` (positions in the result).
    pub fn expand_dims(&self, axes: &[usize]) -> Result<Array> {
        self.wrap(expr::expand_dims(&self.expr, axes))
    }

    /// The array without its length-1 axes `axes`.
    pub fn squeeze(&self, axes: &[usize]) -> Result<Array> {
        self.wrap(expr::squeeze(&self.expr, axes))
    }

    /// Arrays stacked along a new axis `axis`.
    pub fn stack(arrays: &[&Array], axis: usize) -> Result<Array> {
        let expanded = arrays
            .iter()
            .map(|a| a.expand_dims(&[axis]))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Array> = expanded.iter().collect();
        Array::concat(&refs, axis)
    }

    /// A reduction per group along `axis`: position `i` belongs to group `labels[i]`
    /// (`0..groups`); the result's `axis` has one cell per group.
    pub fn group_reduce(
        &self,
        op: ReduceOp,
        axis: usize,
        labels: Vec<usize>,
        groups: usize,
        skipna: bool,
    ) -> Result<Array> {
        self.wrap(expr::group_reduce(
            &self.expr, op, axis, labels, groups, skipna,
        ))
    }

    /// A moving-window reduction along `axis`: cell `i` reduces the `window` cells ending
    /// at `i` (NaN skipped), NaN when fewer than `min_periods` values are there.
    pub fn rolling(
        &self,
        axis: usize,
        window: usize,
        op: ReduceOp,
        min_periods: usize,
    ) -> Result<Array> {
        self.wrap(expr::rolling(&self.expr, axis, window, op, min_periods))
    }

    /// The array broadcast to `shape`.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Array> {
        self.wrap(expr::broadcast_to(&self.expr, shape))
    }

    /// Arrays joined along `axis`.
    pub fn concat(arrays: &[&Array], axis: usize) -> Result<Array> {
        let Some(first) = arrays.first() else {
            return Err(Error::input("concat needs at least one array"));
        };
        let exprs: Vec<ArrayExpr> = arrays.iter().map(|a| a.expr.clone()).collect();
        first.wrap(expr::concat(&exprs, axis))
    }

    /// The array with chunks of `chunks` along each axis (0: the whole axis).
    pub fn rechunk(&self, chunks: &[usize]) -> Result<Array> {
        self.wrap(expr::rechunk(&self.expr, chunks))
    }

    /// The array with these chunk lengths along each axis (irregular chunks allowed;
    /// each axis's lengths must add up to its length).
    pub fn rechunk_to(&self, chunks: Vec<Vec<usize>>) -> Result<Array> {
        self.wrap(expr::rechunk_to(&self.expr, ChunkGrid::new(chunks)))
    }

    /// Matrix product of two 2-d arrays.
    pub fn matmul(&self, other: &Array) -> Result<Array> {
        let panels = self.session.array_limits().panel_bytes();
        self.wrap(expr::matmul_within(&self.expr, &other.expr, panels))
    }

    /// NumPy's `tensordot(self, other, axes=(axes, other_axes))`: products summed over
    /// `axes` of this array paired with `other_axes` of `other`; the result has this
    /// array's other axes, then `other`'s.
    pub fn tensordot(&self, other: &Array, axes: &[usize], other_axes: &[usize]) -> Result<Array> {
        let panels = self.session.array_limits().panel_bytes();
        self.wrap(expr::tensordot(
            &self.expr,
            &other.expr,
            axes,
            other_axes,
            panels,
        ))
    }

    /// A reduction over `axes`.
    pub fn reduce(
        &self,
        op: ReduceOp,
        axes: impl Into<Axes>,
        keepdims: bool,
        skipna: bool,
    ) -> Result<Array> {
        let axes = axes.into();
        let axes = match &axes {
            Axes::All => None,
            Axes::Some(a) => Some(a.as_slice()),
        };
        self.wrap(expr::reduce(&self.expr, op, axes, keepdims, skipna))
    }

    reduce_methods!(
        sum, nansum => ReduceOp::Sum,
        prod, nanprod => ReduceOp::Prod,
        mean, nanmean => ReduceOp::Mean,
        min, nanmin => ReduceOp::Min,
        max, nanmax => ReduceOp::Max,
        std, nanstd => ReduceOp::Std { ddof: 0 },
        var, nanvar => ReduceOp::Var { ddof: 0 },
        argmin, nanargmin => ReduceOp::ArgMin,
        argmax, nanargmax => ReduceOp::ArgMax
    );

    /// Number of non-NaN cells over `axes`.
    pub fn count(&self, axes: impl Into<Axes>) -> Result<Array> {
        self.reduce(ReduceOp::Count, axes, false, true)
    }

    /// Whether any cell over `axes` is non-zero.
    pub fn any(&self, axes: impl Into<Axes>) -> Result<Array> {
        self.reduce(ReduceOp::Any, axes, false, false)
    }

    /// Whether every cell over `axes` is non-zero.
    pub fn all(&self, axes: impl Into<Axes>) -> Result<Array> {
        self.reduce(ReduceOp::All, axes, false, false)
    }

    /// Runs the graph and returns the chunks of the result in C order of its grid.
    pub async fn collect_chunks(&self) -> Result<Vec<NdChunk>> {
        let graph = planner_array::lower(&self.expr, self.session.array_limits())?;
        let handle = self.session.execute_graph(graph);
        let batches: Vec<_> = handle.stream.try_collect().await?;
        let grid = &self.expr.grid;
        let dtype = self.dtype();
        let mut batches = batches.into_iter().filter(|b| b.num_rows() > 0);
        let mut chunks = Vec::with_capacity(grid.len());
        for i in 0..grid.len() {
            let shape: Vec<usize> = grid.region(i).iter().map(|r| r.end - r.start).collect();
            if shape.contains(&0) {
                chunks.push(
                    with_native!(dtype, T => NdChunk::from_vec::<T>(dtype, shape, Vec::new())),
                );
                continue;
            }
            let Some(batch) = batches.next() else {
                return Err(
                    DataFusionError::Internal(format!("the job returned no chunk {i}")).into(),
                );
            };
            chunks.push(NdChunk::from_batch(&batch, 0, dtype, &shape)?);
        }
        Ok(chunks)
    }

    /// Runs the graph and returns the values as an ndarray of `T` (converted from the
    /// array's dtype when they differ).
    pub async fn collect_ndarray<T: Element>(&self) -> Result<ArrayD<T>> {
        let converted = self.astype(T::DTYPE)?;
        let chunks = converted.collect_chunks().await?;
        let storage: ArrayD<T::Storage> = planner_array::assemble(&converted.expr.grid, &chunks)?;
        Ok(storage.mapv(T::from_storage))
    }

    /// Runs the graph and keeps the chunks in memory: later expressions over the returned
    /// array read them instead of recomputing.
    pub async fn persist(&self) -> Result<Array> {
        let chunks = self.collect_chunks().await?;
        self.wrap(expr::literal(self.expr.grid.clone(), self.dtype(), chunks))
    }

    /// The value of a 0-d array (or one with a single cell) as `f64`.
    pub async fn item(&self) -> Result<f64> {
        let values = self.collect_ndarray::<f64>().await?;
        match values.len() {
            1 => Ok(values.iter().copied().next().unwrap_or(f64::NAN)),
            n => Err(Error::input(format!(
                "item() needs one cell, the array has {n}"
            ))),
        }
    }

    /// Runs the graph and drops its output (for writes).
    pub(crate) async fn run_to_end(&self) -> Result<()> {
        let graph = planner_array::lower(&self.expr, self.session.array_limits())?;
        let handle = self.session.execute_graph(graph);
        handle.stream.try_for_each(|_| async { Ok(()) }).await?;
        Ok(())
    }

    /// The task graph this array runs as: (stages, tasks).
    pub fn graph_size(&self) -> Result<(usize, usize)> {
        let graph = planner_array::lower(&self.expr, self.session.array_limits())?;
        Ok((graph.stages.len(), graph.task_count()))
    }
}

macro_rules! std_op {
    ($trait:ident, $method:ident, $op:ident) => {
        impl<R: Operand> std::ops::$trait<R> for &Array {
            type Output = Result<Array>;
            fn $method(self, rhs: R) -> Result<Array> {
                self.binary(BinaryOp::$op, rhs)
            }
        }
        impl<R: Operand> std::ops::$trait<R> for Array {
            type Output = Result<Array>;
            fn $method(self, rhs: R) -> Result<Array> {
                self.binary(BinaryOp::$op, rhs)
            }
        }
    };
}

std_op!(Add, add, Add);
std_op!(Sub, sub, Sub);
std_op!(Mul, mul, Mul);
std_op!(Div, div, Div);
std_op!(Rem, rem, Mod);

impl std::ops::Neg for &Array {
    type Output = Result<Array>;
    fn neg(self) -> Result<Array> {
        self.unary(UnaryOp::Neg)
    }
}

impl Session {
    /// Uniform random `float64` values in `[0, 1)` of `shape`, in chunks of `chunks`,
    /// from `seed`. Values depend only on the seed and the cell's position.
    pub fn random_uniform(&self, shape: &[usize], chunks: &[usize], seed: u64) -> Result<Array> {
        Ok(Array::new(
            self.clone(),
            expr::random(shape, chunks, seed, 0.0, 1.0)?,
        ))
    }

    /// An array of the values of `values`, cut into chunks of `chunks`.
    pub fn from_ndarray<T: Element>(&self, values: &ArrayD<T>, chunks: &[usize]) -> Result<Array> {
        let shape = values.shape().to_vec();
        if chunks.len() != shape.len() {
            return Err(Error::input(format!(
                "chunks {chunks:?} have {} axes but the shape {shape:?} has {}",
                chunks.len(),
                shape.len()
            )));
        }
        let grid = ChunkGrid::regular(&shape, chunks);
        let storage = values.mapv(T::to_storage);
        let mut out = Vec::with_capacity(grid.len());
        for i in 0..grid.len() {
            let region = grid.region(i);
            let view =
                storage.slice_each_axis(|ax| ndarray::Slice::from(region[ax.axis.index()].clone()));
            out.push(NdChunk::from_ndarray(T::DTYPE, view.to_owned()));
        }
        Ok(Array::new(
            self.clone(),
            expr::literal(grid, T::DTYPE, out)?,
        ))
    }

    /// An array of `shape` filled with `value`.
    pub fn full(
        &self,
        shape: &[usize],
        chunks: &[usize],
        value: f64,
        dtype: DType,
    ) -> Result<Array> {
        Ok(Array::new(
            self.clone(),
            expr::full(shape, chunks, Scalar::Float(value), dtype)?,
        ))
    }

    /// `0, 1, ..., n - 1` as `int64` in chunks of `chunk`.
    pub fn arange(&self, n: usize, chunk: usize) -> Array {
        Array::new(self.clone(), expr::arange(n, chunk, 0.0, 1.0, DType::I64))
    }

    /// Wraps an expression built with `shoal_planner::array::expr`.
    pub fn array(&self, expr: ArrayExpr) -> Array {
        Array::new(self.clone(), Arc::clone(&expr))
    }
}
