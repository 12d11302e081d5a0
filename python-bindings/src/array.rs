//! `shoal._native.Array`: a lazy chunked N-d array. Operations build the chunk-task
//! graph; `to_numpy` runs it as one job and hands the result to NumPy without copying.

use std::sync::Arc;

use ndarray::{ArrayD, SliceInfoElem};
use numpy::{PyArrayDyn, PyReadonlyArrayDyn};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use shoal::{Axes, BinaryOp, DType, ReduceOp, UnaryOp};

use crate::{Reporter, py_err, wait};

/// A lazy chunked array (see the `shoal.Array` wrapper for the documented API).
#[pyclass(module = "shoal._native", frozen)]
pub struct Array {
    inner: shoal::Array,
    reporter: Arc<Reporter>,
}

impl Array {
    /// The engine array.
    pub(crate) fn inner(&self) -> &shoal::Array {
        &self.inner
    }

    /// Where the array's jobs report progress.
    pub(crate) fn reporter(&self) -> &Arc<Reporter> {
        &self.reporter
    }

    pub(crate) fn new(inner: shoal::Array, reporter: &Arc<Reporter>) -> Self {
        Self {
            inner,
            reporter: Arc::clone(reporter),
        }
    }

    fn with(&self, next: shoal::Result<shoal::Array>) -> PyResult<Self> {
        next.map(|array| Self::new(array, &self.reporter))
            .map_err(py_err)
    }
}

/// `values` (a NumPy array of a supported dtype) as a Shoal array in chunks of `chunks`.
pub(crate) fn from_numpy(
    session: &shoal::Session,
    values: &Bound<'_, PyAny>,
    chunks: &[usize],
) -> PyResult<shoal::Array> {
    macro_rules! try_dtype {
        ($($t:ty),*) => {$(
            if let Ok(array) = values.extract::<PyReadonlyArrayDyn<'_, $t>>() {
                let owned: ArrayD<$t> = array.as_array().to_owned();
                return session.from_ndarray(&owned, chunks).map_err(py_err);
            }
        )*};
    }
    try_dtype!(f64, f32, i64, i32, i16, i8, u64, u32, u16, u8, bool);
    Err(PyTypeError::new_err(format!(
        "cannot make a Shoal array from {}: expected a NumPy array of numbers or bools",
        values.get_type().name()?
    )))
}

/// The elementwise function NumPy calls `name`.
pub(crate) fn unary_op(name: &str) -> PyResult<UnaryOp> {
    UnaryOp::parse(name).ok_or_else(|| PyValueError::new_err(format!("unknown function '{name}'")))
}

/// The operator the Python wrappers call `name` (after their dunder methods).
pub(crate) fn binary_op(name: &str) -> PyResult<BinaryOp> {
    use BinaryOp::*;
    Ok(match name {
        "add" => Add,
        "sub" => Sub,
        "mul" => Mul,
        "div" => Div,
        "floor_div" => FloorDiv,
        "mod" => Mod,
        "pow" => Pow,
        "eq" => Eq,
        "ne" => Ne,
        "lt" => Lt,
        "le" => Le,
        "gt" => Gt,
        "ge" => Ge,
        "and" => And,
        "or" => Or,
        "xor" => Xor,
        "minimum" => Minimum,
        "maximum" => Maximum,
        other => return Err(PyValueError::new_err(format!("unknown operator '{other}'"))),
    })
}

pub(crate) fn reduce_op(name: &str) -> PyResult<ReduceOp> {
    ReduceOp::parse(name)
        .ok_or_else(|| PyValueError::new_err(format!("unknown reduction '{name}'")))
}

#[pymethods]
impl Array {
    /// Lengths per axis.
    #[getter]
    fn shape(&self) -> Vec<usize> {
        self.inner.shape()
    }

    /// The NumPy name of the element type.
    #[getter]
    fn dtype(&self) -> &'static str {
        self.inner.dtype().name()
    }

    /// Chunk lengths per axis.
    #[getter]
    fn chunks(&self) -> Vec<Vec<usize>> {
        self.inner.chunks()
    }

    /// `np.<name>(self)` for an elementwise function (NumPy's name).
    fn unary(&self, name: &str) -> PyResult<Self> {
        self.with(self.inner.unary(unary_op(name)?))
    }

    /// `self <op> other` (or `other <op> self` when `reflected`), with NumPy broadcasting;
    /// `other` is an array, a number or a bool.
    fn binary(&self, name: &str, other: &Bound<'_, PyAny>, reflected: bool) -> PyResult<Self> {
        use shoal::Operand;
        let op = binary_op(name)?;
        let session = self.inner.session();
        let scalar = |operand: &dyn Operand| -> PyResult<shoal::Array> {
            Ok(session.array(operand.expr().map_err(py_err)?))
        };
        let rhs = if let Ok(array) = other.cast::<Array>() {
            array.get().inner.clone()
        } else if let Ok(flag) = other.extract::<bool>() {
            scalar(&flag)?
        } else if let Ok(int) = other.extract::<i64>() {
            scalar(&int)?
        } else if let Ok(float) = other.extract::<f64>() {
            scalar(&float)?
        } else {
            return Err(PyTypeError::new_err(format!(
                "cannot combine a Shoal array with {}",
                other.get_type().name()?
            )));
        };
        let out = if reflected {
            rhs.binary(op, self.inner.clone())
        } else {
            self.inner.binary(op, rhs)
        };
        self.with(out)
    }

    /// A reduction (`sum`, `mean`, `std` ...) over `axes` (all when None).
    #[pyo3(signature = (name, axes=None, keepdims=false, skipna=false))]
    fn reduce(
        &self,
        name: &str,
        axes: Option<Vec<usize>>,
        keepdims: bool,
        skipna: bool,
    ) -> PyResult<Self> {
        let axes = axes.map_or(Axes::All, Axes::Some);
        self.with(self.inner.reduce(reduce_op(name)?, axes, keepdims, skipna))
    }

    /// Axes in the order `perm`.
    fn transpose(&self, perm: Vec<usize>) -> PyResult<Self> {
        self.with(self.inner.transpose(&perm))
    }

    /// The same values in `shape`.
    fn reshape(&self, shape: Vec<usize>) -> PyResult<Self> {
        self.with(self.inner.reshape(&shape))
    }

    /// The same values in chunks of `chunks` per axis.
    fn rechunk(&self, chunks: Vec<usize>) -> PyResult<Self> {
        self.with(self.inner.rechunk(&chunks))
    }

    /// The values as `dtype` (a NumPy name).
    fn astype(&self, dtype: &str) -> PyResult<Self> {
        let Some(dtype) = DType::parse(dtype) else {
            return Err(PyTypeError::new_err(format!("unknown dtype '{dtype}'")));
        };
        self.with(self.inner.astype(dtype))
    }

    /// `self @ other`.
    fn matmul(&self, other: &Array) -> PyResult<Self> {
        self.with(self.inner.matmul(&other.inner))
    }

    /// Sums products over `axes` of this array and `other_axes` of `other`.
    fn tensordot(&self, other: &Array, axes: Vec<usize>, other_axes: Vec<usize>) -> PyResult<Self> {
        self.with(self.inner.tensordot(&other.inner, &axes, &other_axes))
    }

    /// `self[...]`: per axis `(start, stop, step)` with `0 <= start`, `step > 0`, or an
    /// integer position that drops the axis.
    fn slice(&self, items: Vec<(isize, Option<isize>, isize, bool)>) -> PyResult<Self> {
        let info: Vec<SliceInfoElem> = items
            .into_iter()
            .map(|(start, end, step, index)| {
                if index {
                    SliceInfoElem::Index(start)
                } else {
                    SliceInfoElem::Slice { start, end, step }
                }
            })
            .collect();
        self.with(self.inner.slice(info))
    }

    /// Runs the array's job and keeps the values in the workers' memory.
    fn persist(&self, py: Python<'_>) -> PyResult<Self> {
        let array = self.inner.clone();
        let kept = wait(py, &self.reporter, async move { array.persist().await })?;
        Ok(Self::new(kept, &self.reporter))
    }

    /// The cells at `positions` along `axis`, in that order.
    fn take(&self, positions: Vec<usize>, axis: usize) -> PyResult<Self> {
        self.with(self.inner.take(&positions, axis))
    }

    /// Runs the array's job; its values as a NumPy array (moved, not copied).
    fn to_numpy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        macro_rules! collect {
            ($t:ty) => {{
                let array = self.inner.clone();
                let values: ArrayD<$t> = wait(py, &self.reporter, async move {
                    array.collect_ndarray::<$t>().await
                })?;
                Ok(PyArrayDyn::from_owned_array(py, values).into_any())
            }};
        }
        match self.inner.dtype() {
            DType::F64 => collect!(f64),
            DType::F32 => collect!(f32),
            DType::I64 => collect!(i64),
            DType::I32 => collect!(i32),
            DType::I16 => collect!(i16),
            DType::I8 => collect!(i8),
            DType::U64 => collect!(u64),
            DType::U32 => collect!(u32),
            DType::U16 => collect!(u16),
            DType::U8 => collect!(u8),
            DType::Bool => collect!(bool),
            // Datetimes come out as their int64 nanoseconds; the wrapper views them.
            _ => {
                let array = self.inner.astype(DType::I64).map_err(py_err)?;
                let values: ArrayD<i64> = wait(py, &self.reporter, async move {
                    array.collect_ndarray::<i64>().await
                })?;
                Ok(PyArrayDyn::from_owned_array(py, values).into_any())
            }
        }
    }
}
