//! [`DataArray`]: an [`Array`] with named dimensions, 1-d coordinates and attributes,
//! following xarray: arithmetic aligns and broadcasts by dimension name, `isel` selects by
//! position, `sel` by label, and reductions over named dimensions skip NaN by default.

use ndarray::ArrayD;
use shoal_planner::array::{BinaryOp, DType, ReduceOp};

use super::index::{Index, Label};
use crate::array::{Array, Element};
use crate::error::{Error, Result};

/// Attributes (`units`, `long_name` ...), as JSON values.
pub type Attrs = serde_json::Map<String, serde_json::Value>;

/// A 1-d coordinate along one dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct Coord {
    /// The dimension it labels.
    pub dim: String,
    /// Its values.
    pub index: Index,
}

/// Which dimensions a reduction runs over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dims {
    /// Every dimension (`..`).
    All,
    /// These dimensions.
    Some(Vec<String>),
}

impl From<std::ops::RangeFull> for Dims {
    fn from(_: std::ops::RangeFull) -> Self {
        Dims::All
    }
}

impl From<&str> for Dims {
    fn from(d: &str) -> Self {
        Dims::Some(vec![d.to_string()])
    }
}

impl<const N: usize> From<[&str; N]> for Dims {
    fn from(d: [&str; N]) -> Self {
        Dims::Some(d.iter().map(|s| s.to_string()).collect())
    }
}

impl From<&[&str]> for Dims {
    fn from(d: &[&str]) -> Self {
        Dims::Some(d.iter().map(|s| s.to_string()).collect())
    }
}

impl From<Vec<String>> for Dims {
    fn from(d: Vec<String>) -> Self {
        Dims::Some(d)
    }
}

/// A positional selection along one dimension (`isel`).
#[derive(Debug, Clone, PartialEq)]
pub enum Sel {
    /// One position (negative counts from the end); the dimension is dropped.
    At(isize),
    /// `start:stop:step`, Python style.
    Slice(Option<isize>, Option<isize>, isize),
    /// These positions, in order.
    Take(Vec<usize>),
}

/// A selection by coordinate label along one dimension (`sel`).
#[derive(Debug, Clone, PartialEq)]
pub enum LabelSel {
    /// The position whose label equals this one; the dimension is dropped.
    Exact(Label),
    /// The position with the closest label; the dimension is dropped.
    Nearest(Label),
    /// Labels from the first to the second, both included.
    Range(Label, Label),
    /// These labels, in order.
    Many(Vec<Label>),
}

/// A labeled N-d array.
#[derive(Clone)]
pub struct DataArray {
    name: Option<String>,
    data: Array,
    dims: Vec<String>,
    coords: Vec<(String, Coord)>,
    attrs: Attrs,
}

impl std::fmt::Debug for DataArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: Vec<String> = self
            .dims
            .iter()
            .zip(self.data.shape())
            .map(|(d, n)| format!("{d}: {n}"))
            .collect();
        write!(
            f,
            "DataArray {} ({}) {}",
            self.name.as_deref().unwrap_or("<unnamed>"),
            sizes.join(", "),
            self.data.dtype()
        )
    }
}

/// Something a `DataArray` combines with: another `DataArray` or a number.
pub trait Other {
    /// As a `DataArray` (numbers become 0-d).
    fn labeled(&self, like: &DataArray) -> Result<DataArray>;
}

impl Other for &DataArray {
    fn labeled(&self, _like: &DataArray) -> Result<DataArray> {
        Ok((*self).clone())
    }
}

impl Other for DataArray {
    fn labeled(&self, _like: &DataArray) -> Result<DataArray> {
        Ok(self.clone())
    }
}

impl Other for f64 {
    fn labeled(&self, like: &DataArray) -> Result<DataArray> {
        let data = like.data.session().full(&[], &[], *self, DType::F64)?;
        DataArray::new(data, &[])
    }
}

macro_rules! binary_methods {
    ($($name:ident => $op:ident),*) => {$(
        #[doc = concat!("Cell by cell `", stringify!($name), "`, aligned and broadcast by dimension name.")]
        pub fn $name(&self, other: impl Other) -> Result<DataArray> {
            self.binary(BinaryOp::$op, other)
        }
    )*};
}

macro_rules! reduce_methods {
    ($($name:ident => $op:expr),*) => {$(
        #[doc = concat!("`", stringify!($name), "` over `dims` (`..` for all), skipping NaN.")]
        pub fn $name(&self, dims: impl Into<Dims>) -> Result<DataArray> {
            self.reduce($op, dims, None)
        }
    )*};
}

impl DataArray {
    /// Names the axes of `data`.
    pub fn new(data: Array, dims: &[&str]) -> Result<Self> {
        if dims.len() != data.ndim() {
            return Err(Error::input(format!(
                "{} dimension names given for an array with {} axes",
                dims.len(),
                data.ndim()
            )));
        }
        for (i, d) in dims.iter().enumerate() {
            if dims[..i].contains(d) {
                return Err(Error::input(format!("dimension '{d}' appears twice")));
            }
        }
        Ok(Self {
            name: None,
            data,
            dims: dims.iter().map(|d| d.to_string()).collect(),
            coords: Vec::new(),
            attrs: Attrs::new(),
        })
    }

    /// The same array with a coordinate `name` along `dim`.
    pub fn with_coord(mut self, name: &str, dim: &str, index: Index) -> Result<Self> {
        let axis = self.axis(dim)?;
        let n = self.data.shape()[axis];
        if index.len() != n {
            return Err(Error::input(format!(
                "coordinate '{name}' has {} values but dimension '{dim}' has length {n}",
                index.len()
            )));
        }
        self.coords.retain(|(c, _)| c != name);
        self.coords.push((
            name.to_string(),
            Coord {
                dim: dim.to_string(),
                index,
            },
        ));
        Ok(self)
    }

    /// The same array named `name`.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// The same array with attributes `attrs`.
    pub fn with_attrs(mut self, attrs: Attrs) -> Self {
        self.attrs = attrs;
        self
    }

    /// The name, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The values, as an unlabeled array.
    pub fn data(&self) -> &Array {
        &self.data
    }

    /// Dimension names, in axis order.
    pub fn dims(&self) -> Vec<&str> {
        self.dims.iter().map(String::as_str).collect()
    }

    /// Lengths per axis.
    pub fn shape(&self) -> Vec<usize> {
        self.data.shape()
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// Attributes.
    pub fn attrs(&self) -> &Attrs {
        &self.attrs
    }

    /// The coordinate `name`.
    pub fn coord(&self, name: &str) -> Option<&Coord> {
        self.coords.iter().find(|(c, _)| c == name).map(|(_, c)| c)
    }

    /// Every coordinate, in the order added.
    pub fn coords(&self) -> &[(String, Coord)] {
        &self.coords
    }

    /// The coordinate labelling `dim` (named after it), if any.
    pub fn index(&self, dim: &str) -> Option<&Index> {
        self.coord(dim).filter(|c| c.dim == dim).map(|c| &c.index)
    }

    /// The axis of dimension `dim`.
    pub fn axis(&self, dim: &str) -> Result<usize> {
        self.dims.iter().position(|d| d == dim).ok_or_else(|| {
            Error::input(format!(
                "no dimension '{dim}'{}; dimensions are ({})",
                self.name
                    .as_deref()
                    .map(|n| format!(" in '{n}'"))
                    .unwrap_or_default(),
                self.dims.join(", ")
            ))
        })
    }

    /// `data` labelled with `dims`, keeping the coordinates of the dimensions still there.
    fn with_data(&self, data: Array, dims: Vec<String>) -> DataArray {
        let coords = self
            .coords
            .iter()
            .filter(|(_, c)| dims.contains(&c.dim))
            .cloned()
            .collect();
        self.replace_data(data, dims, coords)
    }

    /// The dimensions reordered.
    pub fn transpose(&self, dims: &[&str]) -> Result<DataArray> {
        if dims.len() != self.dims.len() {
            return Err(Error::input(format!(
                "transpose needs every dimension ({}), got ({})",
                self.dims.join(", "),
                dims.join(", ")
            )));
        }
        let perm = dims
            .iter()
            .map(|d| self.axis(d))
            .collect::<Result<Vec<_>>>()?;
        let data = self.data.transpose(&perm)?;
        let mut out = self.with_data(data, dims.iter().map(|d| d.to_string()).collect());
        out.attrs = self.attrs.clone();
        Ok(out)
    }

    /// The dimension `from` renamed `to` (its coordinate too, when named after it).
    pub fn rename_dim(&self, from: &str, to: &str) -> Result<DataArray> {
        let axis = self.axis(from)?;
        let mut out = self.clone();
        out.dims[axis] = to.to_string();
        for (name, c) in &mut out.coords {
            if c.dim == from {
                c.dim = to.to_string();
                if name == from {
                    *name = to.to_string();
                }
            }
        }
        Ok(out)
    }

    /// Selection by position along named dimensions.
    pub fn isel(&self, selections: &[(&str, Sel)]) -> Result<DataArray> {
        let mut out = self.clone();
        for (dim, sel) in selections {
            out = out.isel_one(dim, sel)?;
        }
        Ok(out)
    }

    fn isel_one(&self, dim: &str, sel: &Sel) -> Result<DataArray> {
        let axis = self.axis(dim)?;
        let n = self.data.shape()[axis];
        let positions: Vec<usize> = match sel {
            Sel::At(i) => {
                let p = if *i < 0 { n as isize + i } else { *i };
                if p < 0 || p as usize >= n {
                    return Err(Error::input(format!(
                        "index {i} is out of range for dimension '{dim}' of length {n}"
                    )));
                }
                vec![p as usize]
            }
            Sel::Slice(start, stop, step) => {
                let s = shoal_planner::array::AxisSlice::resolve(n, *start, *stop, *step, axis)?;
                (0..s.len).map(|k| s.start + k * s.step).collect()
            }
            Sel::Take(p) => p.clone(),
        };
        let data = match sel {
            Sel::Slice(start, stop, step) => {
                let mut elems = vec![
                    ndarray::SliceInfoElem::Slice {
                        start: 0,
                        end: None,
                        step: 1
                    };
                    self.dims.len()
                ];
                elems[axis] = ndarray::SliceInfoElem::Slice {
                    start: start.unwrap_or(0),
                    end: *stop,
                    step: *step,
                };
                self.data.slice(elems)?
            }
            _ => self.data.take(&positions, axis)?,
        };
        let mut out = self.with_data(data, self.dims.clone());
        out.attrs = self.attrs.clone();
        for (_, c) in &mut out.coords {
            if c.dim == dim {
                c.index = c.index.take(&positions);
            }
        }
        if matches!(sel, Sel::At(_)) {
            let data = out.data.squeeze(&[axis])?;
            let mut dims = out.dims.clone();
            dims.remove(axis);
            let mut squeezed = out.with_data(data, dims);
            squeezed.attrs = self.attrs.clone();
            return Ok(squeezed);
        }
        Ok(out)
    }

    /// Selection by coordinate label along named dimensions.
    pub fn sel(&self, selections: &[(&str, LabelSel)]) -> Result<DataArray> {
        let mut out = self.clone();
        for (dim, sel) in selections {
            let index = out.index(dim).ok_or_else(|| {
                Error::input(format!(
                    "dimension '{dim}' has no coordinate to select labels from"
                ))
            })?;
            let positional = match sel {
                LabelSel::Exact(l) => Sel::At(index.position(l, dim)? as isize),
                LabelSel::Nearest(l) => Sel::At(index.nearest(l, dim)? as isize),
                LabelSel::Range(lo, hi) => {
                    let r = index.range(lo, hi, dim)?;
                    Sel::Take(r.collect())
                }
                LabelSel::Many(labels) => Sel::Take(
                    labels
                        .iter()
                        .map(|l| index.position(l, dim))
                        .collect::<Result<Vec<_>>>()?,
                ),
            };
            out = out.isel_one(dim, &positional)?;
        }
        Ok(out)
    }

    /// `self op other`, aligned by dimension name: the result has this array's dimensions
    /// followed by the other's new ones; shared dimensions must have equal lengths and
    /// equal coordinates.
    pub fn binary(&self, op: BinaryOp, other: impl Other) -> Result<DataArray> {
        let other = other.labeled(self)?;
        let mut dims = self.dims.clone();
        for d in &other.dims {
            if !dims.contains(d) {
                dims.push(d.clone());
            }
        }
        for d in &other.dims {
            if let Ok(a) = self.axis(d) {
                let (n, m) = (self.shape()[a], other.shape()[other.axis(d)?]);
                if n != m {
                    return Err(Error::input(format!(
                        "dimension '{d}' has length {n} on the left and {m} on the right"
                    )));
                }
                if let (Some(x), Some(y)) = (self.index(d), other.index(d))
                    && x != y
                {
                    return Err(Error::input(format!(
                        "the coordinates of dimension '{d}' differ between the operands; select matching labels first"
                    )));
                }
            }
        }
        let left = self.aligned_to(&dims)?;
        let right = other.aligned_to(&dims)?;
        let data = left.binary(op, &right)?;
        let mut coords = self.coords.clone();
        for (name, c) in &other.coords {
            if !coords.iter().any(|(n, _)| n == name) {
                coords.push((name.clone(), c.clone()));
            }
        }
        Ok(DataArray {
            name: if self.name == other.name {
                self.name.clone()
            } else {
                None
            },
            data,
            dims,
            coords,
            attrs: Attrs::new(),
        })
    }

    /// The data with its axes ordered as `dims` (a superset of its own), missing ones
    /// inserted with length 1.
    fn aligned_to(&self, dims: &[String]) -> Result<Array> {
        let order: Vec<usize> = dims
            .iter()
            .filter_map(|d| self.dims.iter().position(|x| x == d))
            .collect();
        let data = if order.iter().enumerate().all(|(i, &a)| i == a) {
            self.data.clone()
        } else {
            self.data.transpose(&order)?
        };
        let missing: Vec<usize> = dims
            .iter()
            .enumerate()
            .filter(|(_, d)| !self.dims.contains(d))
            .map(|(i, _)| i)
            .collect();
        data.expand_dims(&missing)
    }

    binary_methods!(
        add => Add, sub => Sub, mul => Mul, div => Div, pow => Pow, eq => Eq, ne => Ne,
        lt => Lt, le => Le, gt => Gt, ge => Ge
    );

    /// `where cond, self, other` with NaN as other (xarray's `DataArray.where`).
    pub fn where_(&self, cond: &DataArray) -> Result<DataArray> {
        let dims = &self.dims;
        let c = cond.aligned_to(dims)?;
        let data = c.where_(&self.data, f64::NAN)?;
        Ok(self.with_data(data, dims.clone()))
    }

    /// The same values in chunks of `chunks` cells along the named dimensions (0: the
    /// whole dimension; others keep their chunks), like xarray's `chunk`.
    pub fn chunk(&self, chunks: &[(&str, usize)]) -> Result<DataArray> {
        let mut lengths = self.data.chunks();
        let shape = self.data.shape();
        for (dim, n) in chunks {
            let axis = self.axis(dim)?;
            lengths[axis] = shoal_planner::array::grid::split_axis(shape[axis], *n);
        }
        let data = self.data.rechunk_to(lengths)?;
        Ok(self.with_data(data, self.dims.clone()))
    }

    /// A function of every cell (`sqrt`, `abs` ... through [`Array`]'s methods).
    pub fn map(&self, f: impl FnOnce(&Array) -> Result<Array>) -> Result<DataArray> {
        let data = f(&self.data)?;
        if data.shape() != self.data.shape() {
            return Err(Error::input("map must keep the shape"));
        }
        Ok(self.with_data(data, self.dims.clone()))
    }

    /// The sum of products over the dimensions `dims` both arrays have (xarray's
    /// `xr.dot(a, b, dim=dims)`): the result has this array's other dimensions, then
    /// `other`'s, with their coordinates. Contracted dimensions must agree in length and
    /// coordinates; any other dimension the two share must be contracted too.
    pub fn dot(&self, other: &DataArray, dims: &[&str]) -> Result<DataArray> {
        let mut axes = Vec::with_capacity(dims.len());
        let mut other_axes = Vec::with_capacity(dims.len());
        for dim in dims {
            let (a, b) = (self.axis(dim)?, other.axis(dim)?);
            if self.index(dim) != other.index(dim) && other.index(dim).is_some() {
                return Err(Error::input(format!(
                    "dot: the coordinates of dimension '{dim}' differ; select matching labels first"
                )));
            }
            axes.push(a);
            other_axes.push(b);
        }
        if let Some(shared) = self
            .dims
            .iter()
            .find(|d| other.dims.contains(d) && !dims.contains(&d.as_str()))
        {
            return Err(Error::input(format!(
                "dot: dimension '{shared}' is in both arrays; contract it or rename it"
            )));
        }
        let data = self.data.tensordot(&other.data, &axes, &other_axes)?;
        let out_dims: Vec<String> = self
            .dims
            .iter()
            .chain(&other.dims)
            .filter(|d| !dims.contains(&d.as_str()))
            .cloned()
            .collect();
        let mut out = self.with_data(data, out_dims.clone());
        for (name, coord) in &other.coords {
            if out_dims.contains(&coord.dim) && !dims.contains(&coord.dim.as_str()) {
                out = out.with_coord(name, &coord.dim, coord.index.clone())?;
            }
        }
        Ok(out)
    }

    fn reduce_axes(&self, dims: Dims) -> Result<Vec<usize>> {
        match dims {
            Dims::All => Ok((0..self.dims.len()).collect()),
            Dims::Some(names) => names.iter().map(|d| self.axis(d)).collect(),
        }
    }

    /// A reduction over `dims`; `skipna` defaults to true (for float data).
    pub fn reduce(
        &self,
        op: ReduceOp,
        dims: impl Into<Dims>,
        skipna: Option<bool>,
    ) -> Result<DataArray> {
        let axes = self.reduce_axes(dims.into())?;
        let data = self
            .data
            .reduce(op, axes.clone(), false, skipna.unwrap_or(true))?;
        let kept: Vec<String> = self
            .dims
            .iter()
            .enumerate()
            .filter(|(a, _)| !axes.contains(a))
            .map(|(_, d)| d.clone())
            .collect();
        Ok(self.with_data(data, kept))
    }

    reduce_methods!(
        sum => ReduceOp::Sum, prod => ReduceOp::Prod, mean => ReduceOp::Mean,
        min => ReduceOp::Min, max => ReduceOp::Max, std => ReduceOp::Std { ddof: 0 },
        var => ReduceOp::Var { ddof: 0 }, count => ReduceOp::Count, any => ReduceOp::Any,
        all => ReduceOp::All
    );

    /// Position of the smallest value along `dim` (NaN skipped).
    pub fn argmin(&self, dim: &str) -> Result<DataArray> {
        self.reduce(ReduceOp::ArgMin, dim, None)
    }

    /// Position of the largest value along `dim` (NaN skipped).
    pub fn argmax(&self, dim: &str) -> Result<DataArray> {
        self.reduce(ReduceOp::ArgMax, dim, None)
    }

    /// The values as an ndarray of `T`.
    pub async fn to_ndarray<T: Element>(&self) -> Result<ArrayD<T>> {
        self.data.collect_ndarray::<T>().await
    }

    /// Computes the values and keeps them in memory (same labels).
    pub async fn persist(&self) -> Result<DataArray> {
        let data = self.data.persist().await?;
        let mut out = self.clone();
        out.data = data;
        Ok(out)
    }

    /// `data`, where axis `axis` is dimension `dim` now: the old dimension's coordinates
    /// are dropped and `coord` (if any) labels the new one.
    pub(crate) fn replace_axis(
        &self,
        data: Array,
        axis: usize,
        dim: &str,
        coord: Option<(String, Coord)>,
    ) -> DataArray {
        let old = &self.dims[axis];
        let mut dims = self.dims.clone();
        dims[axis] = dim.to_string();
        let mut coords: Vec<(String, Coord)> = self
            .coords
            .iter()
            .filter(|(_, c)| &c.dim != old)
            .cloned()
            .collect();
        coords.extend(coord);
        self.replace_data(data, dims, coords)
    }

    fn replace_data(
        &self,
        data: Array,
        dims: Vec<String>,
        coords: Vec<(String, Coord)>,
    ) -> DataArray {
        DataArray {
            name: self.name.clone(),
            data,
            dims,
            coords,
            attrs: Attrs::new(),
        }
    }
}
