//! [`NdChunk`]: an N-d block of values kept in an Arrow buffer, viewed through a shape and
//! strides, so slicing and transposing never copy and chunks move between tasks as Arrow
//! batches.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use datafusion_common::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray, RecordBatch};
use datafusion_common::arrow::buffer::ScalarBuffer;
use datafusion_common::arrow::datatypes::{Field, Schema};
use datafusion_common::{Result, internal_datafusion_err, internal_err};
use ndarray::{ArrayD, ArrayViewD, IxDyn, ShapeBuilder};

use crate::dtype::{DType, Native};
use crate::grid::cells;
use crate::with_native;

/// Schema metadata key holding a chunk's shape (`"3,4"`) in a batch.
pub const SHAPE_KEY: &str = "shoal.shape";

/// An N-d block of one dtype: a strided view over an Arrow array of the dtype's storage
/// type. Cheap to clone, slice and transpose.
#[derive(Debug, Clone)]
pub struct NdChunk {
    dtype: DType,
    data: ArrayRef,
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

/// Strides of a C-ordered block of `shape`.
pub fn c_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for axis in (0..shape.len().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1] * shape[axis + 1].max(1);
    }
    strides
}

impl NdChunk {
    /// A C-ordered chunk owning `values` (which must hold `shape`'s number of cells).
    pub fn from_vec<T: Native>(dtype: DType, shape: Vec<usize>, values: Vec<T>) -> Self {
        debug_assert_eq!(values.len(), cells(&shape));
        let data: ArrayRef = Arc::new(PrimitiveArray::<T::Arrow>::new(
            ScalarBuffer::from(values),
            None,
        ));
        Self::from_storage(dtype, shape, data)
    }

    /// A C-ordered chunk over `data`, an array of the dtype's storage type.
    pub fn from_storage(dtype: DType, shape: Vec<usize>, data: ArrayRef) -> Self {
        let strides = c_strides(&shape);
        Self {
            dtype,
            data,
            offset: 0,
            shape,
            strides,
        }
    }

    /// A C-ordered chunk with the values of an ndarray.
    pub fn from_ndarray<T: Native>(dtype: DType, array: ArrayD<T>) -> Self {
        let shape = array.shape().to_vec();
        let values = if array.is_standard_layout() {
            let (v, offset) = array.into_raw_vec_and_offset();
            if offset.unwrap_or(0) == 0 {
                v
            } else {
                v[offset.unwrap_or(0)..].to_vec()
            }
        } else {
            array.iter().copied().collect()
        };
        Self::from_vec(dtype, shape, values)
    }

    /// A chunk of `shape` with every cell `value`.
    pub fn filled<T: Native>(dtype: DType, shape: Vec<usize>, value: T) -> Self {
        let n = cells(&shape);
        Self::from_vec(dtype, shape, vec![value; n])
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The same values under another dtype with the same storage (bool as uint8 ...).
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        debug_assert_eq!(dtype.storage_type(), self.dtype.storage_type());
        self.dtype = dtype;
        self
    }

    /// Lengths per axis.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of axes.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        cells(&self.shape)
    }

    /// Whether the chunk has no cells.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as an ndarray view; `T` must be the dtype's storage type.
    pub fn view<T: Native>(&self) -> ArrayViewD<'_, T> {
        let (values, _, _) = self.raw::<T>();
        if self.is_empty() {
            return ArrayViewD::from_shape(IxDyn(&self.shape), &[]).expect("empty view");
        }
        ArrayViewD::from_shape(
            IxDyn(&self.shape).strides(IxDyn(&self.strides)),
            &values[self.offset..],
        )
        .expect("NdChunk strides stay inside its buffer")
    }

    /// The values, copied when the chunk is not C-ordered and whole.
    pub fn to_vec<T: Native>(&self) -> Vec<T> {
        if let Some(s) = self.contiguous_slice::<T>() {
            return s.to_vec();
        }
        let (values, offset, strides) = self.raw::<T>();
        if let Some(out) = transposed_copy(values, offset, &self.shape, strides) {
            return out;
        }
        let mut out = Vec::with_capacity(self.len());
        for_each_lane(&self.shape, strides, offset, |start, len, step| {
            if step == 1 {
                out.extend_from_slice(&values[start..start + len]);
            } else {
                out.extend((0..len).map(|j| values[start + j * step]));
            }
        });
        out
    }

    /// The whole storage buffer, the chunk's first cell in it and its strides.
    pub fn raw<T: Native>(&self) -> (&[T], usize, &[usize]) {
        let values: &[T] = self
            .data
            .as_primitive_opt::<T::Arrow>()
            .expect("NdChunk viewed as a type other than its storage type")
            .values()
            .as_ref();
        (values, self.offset, &self.strides)
    }

    /// The stride of the last axis (1 when rows are contiguous).
    pub fn last_stride(&self) -> usize {
        match (self.shape.last(), self.strides.last()) {
            (Some(1) | None, _) | (_, None) => 1,
            (_, Some(&s)) => s,
        }
    }

    /// The values as one C-ordered slice, when they are stored that way.
    pub fn contiguous_slice<T: Native>(&self) -> Option<&[T]> {
        if self.is_empty() {
            return Some(&[]);
        }
        let c = c_strides(&self.shape);
        if self
            .shape
            .iter()
            .zip(self.strides.iter().zip(&c))
            .any(|(&n, (s, c))| n > 1 && s != c)
        {
            return None;
        }
        let values: &[T] = self.data.as_primitive_opt::<T::Arrow>()?.values().as_ref();
        Some(&values[self.offset..self.offset + self.len()])
    }

    /// A C-ordered chunk with the same values (no copy when already C-ordered).
    pub fn to_standard(&self) -> NdChunk {
        let contiguous = with_native!(self.dtype, T => self.contiguous_slice::<T>().is_some());
        if contiguous {
            return self.clone();
        }
        with_native!(self.dtype, T => NdChunk::from_vec(self.dtype, self.shape.clone(), self.to_vec::<T>()))
    }

    /// The part of the chunk inside `region` (local coordinates), without copying.
    pub fn slice(&self, region: &[Range<usize>]) -> NdChunk {
        let steps: Vec<(Range<usize>, usize)> = region.iter().map(|r| (r.clone(), 1)).collect();
        self.slice_step(&steps)
    }

    /// Every `step`-th cell of each range, without copying.
    pub fn slice_step(&self, ranges: &[(Range<usize>, usize)]) -> NdChunk {
        let mut out = self.clone();
        for (axis, (range, step)) in ranges.iter().enumerate() {
            let len = if range.end > range.start {
                (range.end - range.start).div_ceil(*step)
            } else {
                0
            };
            if len > 0 {
                out.offset += range.start * self.strides[axis];
            }
            out.shape[axis] = len;
            out.strides[axis] = self.strides[axis] * step;
        }
        out
    }

    /// The chunk with its axes reordered: axis `i` of the result is axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> NdChunk {
        let mut out = self.clone();
        out.shape = perm.iter().map(|&a| self.shape[a]).collect();
        out.strides = perm.iter().map(|&a| self.strides[a]).collect();
        out
    }

    /// The chunk with length-1 axes added or removed so it has `shape` (the other axes
    /// keep their order and lengths); no copy.
    pub fn with_shape(&self, shape: Vec<usize>) -> NdChunk {
        let mut strides = Vec::with_capacity(shape.len());
        let mut own = self
            .shape
            .iter()
            .zip(&self.strides)
            .filter(|(n, _)| **n != 1);
        for &n in &shape {
            if n == 1 {
                strides.push(0);
            } else {
                strides.push(own.next().map_or(0, |(_, s)| *s));
            }
        }
        NdChunk {
            shape,
            strides,
            ..self.clone()
        }
    }

    /// The same cells under another shape with the same number of cells (C order).
    pub fn reshape(&self, shape: Vec<usize>) -> NdChunk {
        let standard = self.to_standard();
        debug_assert_eq!(cells(&shape), standard.len());
        NdChunk {
            strides: c_strides(&shape),
            shape,
            ..standard
        }
    }

    /// The chunk as a one-column batch (column `name`) with its shape in the metadata.
    pub fn to_batch(&self, name: &str) -> Result<RecordBatch> {
        Self::fields_to_batch(&[(name, self.clone())])
    }

    /// Several chunks of one shape as the columns of one batch.
    pub fn fields_to_batch(columns: &[(&str, NdChunk)]) -> Result<RecordBatch> {
        let Some((_, first)) = columns.first() else {
            return internal_err!("a chunk batch needs at least one column");
        };
        let shape = first.shape.clone();
        let mut fields = Vec::new();
        let mut arrays = Vec::new();
        for (name, chunk) in columns {
            if chunk.shape != shape {
                return internal_err!("chunk columns differ in shape");
            }
            let standard = chunk.to_standard();
            let array = standard
                .data
                .slice(standard.offset, standard.len().min(standard.data.len()));
            fields.push(Field::new(*name, array.data_type().clone(), false));
            arrays.push(array);
        }
        let shape_text = shape
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let schema =
            Schema::new(fields).with_metadata(HashMap::from([(SHAPE_KEY.to_string(), shape_text)]));
        Ok(RecordBatch::try_new(Arc::new(schema), arrays)?)
    }

    /// Column `column` of a chunk batch, as `dtype` with `shape`.
    pub fn from_batch(
        batch: &RecordBatch,
        column: usize,
        dtype: DType,
        shape: &[usize],
    ) -> Result<NdChunk> {
        if batch.num_rows() != cells(shape) {
            return internal_err!(
                "a chunk of shape {shape:?} arrived with {} values",
                batch.num_rows()
            );
        }
        let data = batch
            .columns()
            .get(column)
            .ok_or_else(|| internal_datafusion_err!("chunk batch lacks column {column}"))?;
        if data.data_type() != &dtype.storage_type() {
            return internal_err!(
                "a {dtype} chunk arrived as {}, not {}",
                data.data_type(),
                dtype.storage_type()
            );
        }
        Ok(Self::from_storage(dtype, shape.to_vec(), Arc::clone(data)))
    }

    /// The values as an owned ndarray of `T` (the storage type).
    pub fn to_ndarray<T: Native>(&self) -> ArrayD<T> {
        ArrayD::from_shape_vec(IxDyn(&self.shape), self.to_vec::<T>())
            .expect("shape matches values")
    }
}

/// A C-ordered copy of a 2-d block stored column-major (a transposed chunk), copied in
/// tiles so both sides stay in cache.
fn transposed_copy<T: Native>(
    values: &[T],
    offset: usize,
    shape: &[usize],
    strides: &[usize],
) -> Option<Vec<T>> {
    let ([rows, cols], [rs, cs]) = (shape, strides) else {
        return None;
    };
    let (rows, cols, rs, cs) = (*rows, *cols, *rs, *cs);
    if rs != 1 || cs < cols.min(2) || rows < 16 || cols < 16 {
        return None;
    }
    const TILE: usize = 32;
    let mut out = vec![T::default(); rows * cols];
    for i0 in (0..rows).step_by(TILE) {
        for j0 in (0..cols).step_by(TILE) {
            for j in j0..(j0 + TILE).min(cols) {
                let column = offset + j * cs;
                for i in i0..(i0 + TILE).min(rows) {
                    out[i * cols + j] = values[column + i];
                }
            }
        }
    }
    Some(out)
}

/// Calls `f(start, len, step)` for every lane along the last axis of a strided block of
/// `shape` whose first cell is at `offset`, in C order of the lanes.
pub fn for_each_lane(
    shape: &[usize],
    strides: &[usize],
    offset: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    if shape.contains(&0) {
        return;
    }
    let Some((&len, outer)) = shape.split_last() else {
        f(offset, 1, 1);
        return;
    };
    let step = strides[shape.len() - 1];
    let mut idx = vec![0usize; outer.len()];
    let mut start = offset;
    loop {
        f(start, len, step);
        let mut axis = outer.len();
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            idx[axis] += 1;
            start += strides[axis];
            if idx[axis] < outer[axis] {
                break;
            }
            start -= strides[axis] * outer[axis];
            idx[axis] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_slice_and_transpose_without_copies() {
        let c = NdChunk::from_vec(DType::F64, vec![3, 4], (0..12).map(f64::from).collect());
        let s = c.slice_step(&[(1..3, 1), (0..4, 2)]);
        assert_eq!(s.shape(), &[2, 2]);
        assert_eq!(s.to_vec::<f64>(), vec![4.0, 6.0, 8.0, 10.0]);
        let t = c.permute(&[1, 0]);
        assert_eq!(t.shape(), &[4, 3]);
        assert_eq!(t.to_vec::<f64>()[..4], [0.0, 4.0, 8.0, 1.0]);
        let big = NdChunk::from_vec(DType::I64, vec![40, 37], (0..40 * 37).collect::<Vec<i64>>());
        let tb = big.permute(&[1, 0]).to_vec::<i64>();
        assert_eq!(tb.len(), 40 * 37);
        assert!((0..37).all(|i| (0..40).all(|j| tb[i * 40 + j] == (j * 37 + i) as i64)));
        let b = t.to_batch("v").unwrap();
        let back = NdChunk::from_batch(&b, 0, DType::F64, &[4, 3]).unwrap();
        assert_eq!(back.to_vec::<f64>(), t.to_vec::<f64>());
    }
}
