//! `shoal._native.DataArray`, `Dataset`, `GroupBy` and `Rolling`: labeled arrays with
//! named dimensions and coordinates. Labels cross the boundary as plain values: a
//! coordinate is `(name, dim, kind, values)` with `kind` one of `f64`, `i64`, `datetime`
//! (int64 nanoseconds) or `str`; attributes travel as JSON text.

use std::sync::Arc;

use numpy::PyArray1;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use shoal::labeled::{Attrs, ZarrOptions};
use shoal::{Index, Label, LabelSel, Sel};

use crate::array::{Array, binary_op, reduce_op, unary_op};
use crate::frame::DataFrame;
use crate::{Reporter, py_err, wait};

/// A labeled array (see the `shoal.DataArray` wrapper for the documented API).
#[pyclass(module = "shoal._native", frozen)]
pub struct DataArray {
    inner: shoal::DataArray,
    reporter: Arc<Reporter>,
}

impl DataArray {
    pub(crate) fn new(inner: shoal::DataArray, reporter: &Arc<Reporter>) -> Self {
        Self {
            inner,
            reporter: Arc::clone(reporter),
        }
    }

    fn with(&self, next: shoal::Result<shoal::DataArray>) -> PyResult<Self> {
        next.map(|array| Self::new(array, &self.reporter))
            .map_err(py_err)
    }
}

fn parse_attrs(json: &str) -> PyResult<Attrs> {
    serde_json::from_str(json)
        .map_err(|e| PyValueError::new_err(format!("attributes are not a JSON object: {e}")))
}

fn attrs_json(attrs: &Attrs) -> String {
    serde_json::Value::Object(attrs.clone()).to_string()
}

/// A coordinate as the wrappers receive it: name, dimension, kind and values.
type CoordRow<'py> = (String, String, &'static str, Bound<'py, PyAny>);

/// An index from the values a wrapper sends for `kind`.
fn index_from(kind: &str, values: &Bound<'_, PyAny>) -> PyResult<Index> {
    Ok(match kind {
        "f64" => Index::F64(values.extract()?),
        "i64" => Index::I64(values.extract()?),
        "datetime" => Index::DateTime(values.extract()?),
        "str" => Index::Str(values.extract()?),
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown index kind '{other}'"
            )));
        }
    })
}

/// An index as `(kind, values)`: NumPy arrays for numbers and times, a list of strings.
fn index_to<'py>(py: Python<'py>, index: &Index) -> PyResult<(&'static str, Bound<'py, PyAny>)> {
    Ok(match index {
        Index::F64(v) => ("f64", PyArray1::from_slice(py, v).into_any()),
        Index::I64(v) => ("i64", PyArray1::from_slice(py, v).into_any()),
        Index::DateTime(v) => ("datetime", PyArray1::from_slice(py, v).into_any()),
        Index::Str(v) => ("str", v.clone().into_pyobject(py)?.into_any()),
    })
}

fn label(value: &Bound<'_, PyAny>) -> PyResult<Label> {
    if let Ok(text) = value.extract::<String>() {
        return Ok(Label::Text(text));
    }
    if let Ok(number) = value.extract::<f64>() {
        return Ok(Label::Num(number));
    }
    Err(PyTypeError::new_err(format!(
        "a label must be a number, a date or a string, not {}",
        value.get_type().name()?
    )))
}

fn zarr_options(format: u8) -> PyResult<ZarrOptions> {
    if !matches!(format, 2 | 3) {
        return Err(PyValueError::new_err(format!(
            "zarr_format must be 2 or 3, not {format}"
        )));
    }
    Ok(ZarrOptions {
        format,
        ..ZarrOptions::default()
    })
}

/// A positional selection as the wrapper sends it: `("at", [i])`, `("slice", [start,
/// stop, step])` (None for open ends) or `("take", positions)`.
fn positional(kind: &str, values: &[Option<isize>]) -> PyResult<Sel> {
    let bad = || PyValueError::new_err(format!("malformed '{kind}' selection"));
    Ok(match (kind, values) {
        ("at", [Some(i)]) => Sel::At(*i),
        ("slice", [start, stop, step]) => Sel::Slice(*start, *stop, step.unwrap_or(1)),
        ("take", positions) => Sel::Take(
            positions
                .iter()
                .map(|p| p.and_then(|p| usize::try_from(p).ok()).ok_or_else(bad))
                .collect::<PyResult<_>>()?,
        ),
        _ => return Err(bad()),
    })
}

#[pymethods]
impl DataArray {
    /// Names `array`'s axes `dims`.
    #[staticmethod]
    fn from_array(array: &Array, dims: Vec<String>) -> PyResult<Self> {
        let names: Vec<&str> = dims.iter().map(String::as_str).collect();
        let inner = shoal::DataArray::new(array.inner().clone(), &names).map_err(py_err)?;
        Ok(Self::new(inner, array.reporter()))
    }

    /// The array's name, if any.
    #[getter]
    fn name(&self) -> Option<String> {
        self.inner.name().map(str::to_string)
    }

    /// Dimension names, in axis order.
    #[getter]
    fn dims(&self) -> Vec<String> {
        self.inner.dims().iter().map(|d| d.to_string()).collect()
    }

    /// The values as a chunked array.
    #[getter]
    fn data(&self) -> Array {
        Array::new(self.inner.data().clone(), &self.reporter)
    }

    /// The attributes as JSON text.
    fn attrs_json(&self) -> String {
        attrs_json(self.inner.attrs())
    }

    /// The coordinates as `(name, dim, kind, values)`.
    fn coords<'py>(&self, py: Python<'py>) -> PyResult<Vec<CoordRow<'py>>> {
        self.inner
            .coords()
            .iter()
            .map(|(name, coord)| {
                let (kind, values) = index_to(py, &coord.index)?;
                Ok((name.clone(), coord.dim.clone(), kind, values))
            })
            .collect()
    }

    /// The same array named `name`.
    fn with_name(&self, name: &str) -> Self {
        Self::new(self.inner.clone().with_name(name), &self.reporter)
    }

    /// The same array with attributes from JSON text.
    fn with_attrs(&self, json: &str) -> PyResult<Self> {
        Ok(Self::new(
            self.inner.clone().with_attrs(parse_attrs(json)?),
            &self.reporter,
        ))
    }

    /// The same array with coordinate `name` along `dim`.
    fn with_coord(
        &self,
        name: &str,
        dim: &str,
        kind: &str,
        values: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let index = index_from(kind, values)?;
        self.with(self.inner.clone().with_coord(name, dim, index))
    }

    /// Selection by position: `(dim, kind, values)` per dimension (see `positional`).
    fn isel(&self, items: Vec<(String, String, Vec<Option<isize>>)>) -> PyResult<Self> {
        let sels = items
            .iter()
            .map(|(dim, kind, values)| Ok((dim.as_str(), positional(kind, values)?)))
            .collect::<PyResult<Vec<_>>>()?;
        self.with(self.inner.isel(&sels))
    }

    /// Selection by label: `(dim, kind, labels)` with kind `exact`, `nearest`, `range`
    /// (two labels, both included) or `many`.
    fn sel<'py>(&self, items: Vec<(String, String, Vec<Bound<'py, PyAny>>)>) -> PyResult<Self> {
        let mut sels = Vec::with_capacity(items.len());
        for (dim, kind, values) in &items {
            let labels = values.iter().map(label).collect::<PyResult<Vec<_>>>()?;
            let sel = match (kind.as_str(), labels.as_slice()) {
                ("exact", [l]) => LabelSel::Exact(l.clone()),
                ("nearest", [l]) => LabelSel::Nearest(l.clone()),
                ("range", [lo, hi]) => LabelSel::Range(lo.clone(), hi.clone()),
                ("many", _) => LabelSel::Many(labels),
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "malformed '{kind}' selection of dimension '{dim}'"
                    )));
                }
            };
            sels.push((dim.as_str(), sel));
        }
        self.with(self.inner.sel(&sels))
    }

    /// `self <op> other` aligned by dimension name (`other <op> self` when `reflected`);
    /// `other` is a DataArray or a number.
    fn binary(&self, name: &str, other: &Bound<'_, PyAny>, reflected: bool) -> PyResult<Self> {
        let op = binary_op(name)?;
        let rhs = if let Ok(array) = other.cast::<DataArray>() {
            array.get().inner.clone()
        } else if let Ok(number) = other.extract::<f64>() {
            use shoal::labeled::Other;
            number.labeled(&self.inner).map_err(py_err)?
        } else {
            return Err(PyTypeError::new_err(format!(
                "cannot combine a Shoal DataArray with {}",
                other.get_type().name()?
            )));
        };
        let out = if reflected {
            rhs.binary(op, &self.inner)
        } else {
            self.inner.binary(op, &rhs)
        };
        self.with(out)
    }

    /// `np.<name>(self)` for an elementwise function (NumPy's name).
    fn unary(&self, name: &str) -> PyResult<Self> {
        let op = unary_op(name)?;
        self.with(self.inner.map(|a| a.unary(op)))
    }

    /// The values as `dtype` (a NumPy name).
    fn astype(&self, dtype: &str) -> PyResult<Self> {
        let Some(dtype) = shoal::DType::parse(dtype) else {
            return Err(PyTypeError::new_err(format!("unknown dtype '{dtype}'")));
        };
        self.with(self.inner.map(|a| a.astype(dtype)))
    }

    /// A reduction over `dims` (all when None), skipping NaN unless `skipna` is false.
    #[pyo3(signature = (name, dims=None, skipna=None))]
    fn reduce(
        &self,
        name: &str,
        dims: Option<Vec<String>>,
        skipna: Option<bool>,
    ) -> PyResult<Self> {
        let dims = dims.map_or(shoal::Dims::All, shoal::Dims::Some);
        self.with(self.inner.reduce(reduce_op(name)?, dims, skipna))
    }

    /// Dimensions in the order `dims`.
    fn transpose(&self, dims: Vec<String>) -> PyResult<Self> {
        let names: Vec<&str> = dims.iter().map(String::as_str).collect();
        self.with(self.inner.transpose(&names))
    }

    /// Dimension `from` renamed `to`.
    fn rename_dim(&self, from: &str, to: &str) -> PyResult<Self> {
        self.with(self.inner.rename_dim(from, to))
    }

    /// Cells where `cond` holds; NaN elsewhere.
    fn where_(&self, cond: &DataArray) -> PyResult<Self> {
        self.with(self.inner.where_(&cond.inner))
    }

    /// Sum of products with `other` over `dims`.
    fn dot(&self, other: &DataArray, dims: Vec<String>) -> PyResult<Self> {
        let names: Vec<&str> = dims.iter().map(String::as_str).collect();
        self.with(self.inner.dot(&other.inner, &names))
    }

    /// The same values in chunks of `chunks` per axis.
    fn rechunk(&self, chunks: Vec<usize>) -> PyResult<Self> {
        self.with(self.inner.map(|a| a.rechunk(&chunks)))
    }

    /// Groups along a coordinate or a datetime field (`time.month`).
    fn groupby(&self, key: &str) -> PyResult<GroupBy> {
        self.group(self.inner.groupby(key))
    }

    /// Calendar bins along datetime dimension `dim`.
    fn resample(&self, dim: &str, freq: &str) -> PyResult<GroupBy> {
        self.group(self.inner.resample(dim, freq))
    }

    /// Windows of `window` positions along `dim`.
    fn coarsen(&self, dim: &str, window: usize) -> PyResult<GroupBy> {
        self.group(self.inner.coarsen(dim, window))
    }

    /// A moving window of `window` positions along `dim`, ending at each position.
    fn rolling(&self, dim: &str, window: usize, min_periods: usize) -> PyResult<Rolling> {
        let rolling = self.inner.rolling(dim, window).map_err(py_err)?;
        Ok(Rolling {
            inner: rolling.min_periods(min_periods),
            reporter: Arc::clone(&self.reporter),
        })
    }

    /// Computes the values and keeps them in the workers' memory (same labels).
    fn persist(&self, py: Python<'_>) -> PyResult<Self> {
        let array = self.inner.clone();
        let done = wait(py, &self.reporter, async move { array.persist().await })?;
        Ok(Self::new(done, &self.reporter))
    }

    /// Writes the array and its coordinates as a Zarr group (v2 or v3).
    fn to_zarr(&self, py: Python<'_>, path: String, zarr_format: u8) -> PyResult<()> {
        let options = zarr_options(zarr_format)?;
        let array = self.inner.clone();
        wait(py, &self.reporter, async move {
            array.to_zarr_with(&path, options).await
        })
    }

    /// One row per cell: a column per dimension and one of values.
    fn to_frame(&self, py: Python<'_>) -> PyResult<DataFrame> {
        let array = self.inner.clone();
        let frame = wait(
            py,
            &self.reporter,
            async move { array.to_dataframe().await },
        )?;
        Ok(DataFrame::new(frame, &self.reporter))
    }
}

impl DataArray {
    fn group(&self, grouped: shoal::Result<shoal::labeled::GroupBy>) -> PyResult<GroupBy> {
        Ok(GroupBy {
            inner: grouped.map_err(py_err)?,
            reporter: Arc::clone(&self.reporter),
        })
    }
}

/// A DataArray split into groups along one dimension.
#[pyclass(module = "shoal._native", frozen)]
pub struct GroupBy {
    inner: shoal::labeled::GroupBy,
    reporter: Arc<Reporter>,
}

#[pymethods]
impl GroupBy {
    /// The grouped dimension.
    #[getter]
    fn dim(&self) -> String {
        self.inner.dim().to_string()
    }

    /// The label of each group as `(kind, values)`.
    fn groups<'py>(&self, py: Python<'py>) -> PyResult<(&'static str, Bound<'py, PyAny>)> {
        index_to(py, self.inner.groups())
    }

    /// The reduction `name` of each group.
    fn reduce(&self, name: &str) -> PyResult<DataArray> {
        let out = self.inner.reduce(reduce_op(name)?).map_err(py_err)?;
        Ok(DataArray::new(out, &self.reporter))
    }

    /// Each cell `<op>` its group's value in `other` (a per-group result).
    fn binary(&self, name: &str, other: &DataArray) -> PyResult<DataArray> {
        let out = self
            .inner
            .binary(binary_op(name)?, &other.inner)
            .map_err(py_err)?;
        Ok(DataArray::new(out, &self.reporter))
    }
}

/// A moving window along one dimension.
#[pyclass(module = "shoal._native", frozen)]
pub struct Rolling {
    inner: shoal::labeled::Rolling,
    reporter: Arc<Reporter>,
}

#[pymethods]
impl Rolling {
    /// The moving-window reduction `name`.
    fn reduce(&self, name: &str) -> PyResult<DataArray> {
        let out = self.inner.reduce(reduce_op(name)?).map_err(py_err)?;
        Ok(DataArray::new(out, &self.reporter))
    }
}

/// Named DataArrays sharing dimensions.
#[pyclass(module = "shoal._native", frozen)]
pub struct Dataset {
    inner: shoal::Dataset,
    reporter: Arc<Reporter>,
}

impl Dataset {
    pub(crate) fn new(inner: shoal::Dataset, reporter: &Arc<Reporter>) -> Self {
        Self {
            inner,
            reporter: Arc::clone(reporter),
        }
    }
}

#[pymethods]
impl Dataset {
    /// A dataset of `variables` (name, array) with attributes from JSON text.
    #[staticmethod]
    fn build(variables: Vec<(String, PyRef<'_, DataArray>)>, attrs: &str) -> PyResult<Self> {
        let Some((_, first)) = variables.first() else {
            return Err(PyValueError::new_err(
                "a dataset needs at least one variable",
            ));
        };
        let reporter = Arc::clone(&first.reporter);
        let mut ds = shoal::Dataset::new().with_attrs(parse_attrs(attrs)?);
        for (name, var) in &variables {
            ds = ds.with_var(name, var.inner.clone()).map_err(py_err)?;
        }
        Ok(Self::new(ds, &reporter))
    }

    /// The variables' names, in order.
    fn names(&self) -> Vec<String> {
        self.inner.names()
    }

    /// The variable `name`.
    fn var(&self, name: &str) -> PyResult<DataArray> {
        let var = self.inner.var(name).map_err(py_err)?;
        Ok(DataArray::new(var, &self.reporter))
    }

    /// The attributes as JSON text.
    fn attrs_json(&self) -> String {
        attrs_json(self.inner.attrs())
    }

    /// Writes the dataset as a Zarr group (v2 or v3).
    fn to_zarr(&self, py: Python<'_>, path: String, zarr_format: u8) -> PyResult<()> {
        let options = zarr_options(zarr_format)?;
        let ds = self.inner.clone();
        wait(py, &self.reporter, async move {
            ds.to_zarr_with(&path, options).await
        })
    }

    /// One row per cell of the union of the dimensions, a column per variable.
    fn to_frame(&self, py: Python<'_>) -> PyResult<DataFrame> {
        let ds = self.inner.clone();
        let frame = wait(py, &self.reporter, async move { ds.to_dataframe().await })?;
        Ok(DataFrame::new(frame, &self.reporter))
    }
}
