//! Coordinate values held in memory (like pandas indexes behind xarray's dimension
//! coordinates), label lookup for `sel`, and calendar arithmetic on `datetime64[ns]`.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, Float64Array, Int64Array, StringArray, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampNanosecondType,
};

use crate::error::{Error, Result};

pub use shoal_io::cf::{
    NS_PER_DAY, civil_from_days, datetime_field, days_from_civil, decode_cf_time, format_datetime,
    parse_datetime,
};

/// The values of a 1-d coordinate.
#[derive(Debug, Clone, PartialEq)]
pub enum Index {
    /// Floats.
    F64(Vec<f64>),
    /// Integers.
    I64(Vec<i64>),
    /// `datetime64[ns]` values.
    DateTime(Vec<i64>),
    /// Strings.
    Str(Vec<String>),
}

/// One coordinate label, to look up with `sel`.
#[derive(Debug, Clone, PartialEq)]
pub enum Label {
    /// A number (matches float and integer coordinates).
    Num(f64),
    /// A date or time: `2020-01-31`, `2020-01-31T06:00:00` (matches datetime coordinates),
    /// or a string coordinate's value.
    Text(String),
}

impl From<f64> for Label {
    fn from(v: f64) -> Self {
        Label::Num(v)
    }
}

impl From<i64> for Label {
    fn from(v: i64) -> Self {
        Label::Num(v as f64)
    }
}

impl From<&str> for Label {
    fn from(v: &str) -> Self {
        Label::Text(v.to_string())
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Label::Num(v) => write!(f, "{v}"),
            Label::Text(t) => write!(f, "'{t}'"),
        }
    }
}

impl Index {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Index::F64(v) => v.len(),
            Index::I64(v) | Index::DateTime(v) => v.len(),
            Index::Str(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values at `positions`.
    pub fn take(&self, positions: &[usize]) -> Index {
        match self {
            Index::F64(v) => Index::F64(positions.iter().map(|&p| v[p]).collect()),
            Index::I64(v) => Index::I64(positions.iter().map(|&p| v[p]).collect()),
            Index::DateTime(v) => Index::DateTime(positions.iter().map(|&p| v[p]).collect()),
            Index::Str(v) => Index::Str(positions.iter().map(|&p| v[p].clone()).collect()),
        }
    }

    /// Numeric key of a label for this index (dates as nanoseconds), or why not.
    fn key(&self, label: &Label, dim: &str) -> Result<Option<f64>> {
        Ok(match (self, label) {
            (Index::Str(_), _) => None,
            (Index::DateTime(_), Label::Text(t)) => Some(parse_datetime(t).ok_or_else(|| {
                Error::input(format!("'{t}' is not a date or time for dimension '{dim}'"))
            })? as f64),
            (_, Label::Num(v)) => Some(*v),
            (_, Label::Text(t)) => {
                return Err(Error::input(format!(
                    "label '{t}' does not fit the numeric coordinate of dimension '{dim}'"
                )));
            }
        })
    }

    fn numeric(&self, i: usize) -> f64 {
        match self {
            Index::F64(v) => v[i],
            Index::I64(v) | Index::DateTime(v) => v[i] as f64,
            Index::Str(_) => f64::NAN,
        }
    }

    /// The position of `label` (exact match).
    pub fn position(&self, label: &Label, dim: &str) -> Result<usize> {
        let found = match (self, self.key(label, dim)?) {
            (Index::Str(v), _) => match label {
                Label::Text(t) => v.iter().position(|s| s == t),
                Label::Num(_) => None,
            },
            (_, Some(k)) => (0..self.len()).position(|i| self.numeric(i) == k),
            _ => None,
        };
        found.ok_or_else(|| Error::input(format!("label {label} is not in dimension '{dim}'")))
    }

    /// The position of the value closest to `label`.
    pub fn nearest(&self, label: &Label, dim: &str) -> Result<usize> {
        let Some(k) = self.key(label, dim)? else {
            return self.position(label, dim);
        };
        (0..self.len())
            .min_by(|&a, &b| {
                (self.numeric(a) - k)
                    .abs()
                    .total_cmp(&(self.numeric(b) - k).abs())
            })
            .ok_or_else(|| Error::input(format!("dimension '{dim}' is empty")))
    }

    /// Positions with labels between `lo` and `hi`, both included (pandas label slicing);
    /// the index must be sorted, ascending or descending.
    pub fn range(&self, lo: &Label, hi: &Label, dim: &str) -> Result<std::ops::Range<usize>> {
        let (Some(a), Some(b)) = (self.key(lo, dim)?, self.key(hi, dim)?) else {
            let (a, b) = (self.position(lo, dim)?, self.position(hi, dim)?);
            return Ok(a.min(b)..a.max(b) + 1);
        };
        let n = self.len();
        let ascending = n < 2 || self.numeric(0) <= self.numeric(n - 1);
        let inside = |i: usize| {
            let v = self.numeric(i);
            if ascending {
                v >= a && v <= b
            } else {
                v <= a && v >= b
            }
        };
        let start = (0..n).find(|&i| inside(i)).unwrap_or(n);
        let end = (start..n).find(|&i| !inside(i)).unwrap_or(n);
        Ok(start..end)
    }

    /// The values as strings, for messages and tables.
    pub fn describe(&self, i: usize) -> String {
        match self {
            Index::F64(v) => v[i].to_string(),
            Index::I64(v) => v[i].to_string(),
            Index::DateTime(v) => format_datetime(v[i]),
            Index::Str(v) => v[i].clone(),
        }
    }
}

impl Index {
    /// The index a coordinate column holds (the inverse of [`index_column`]): `Float64`,
    /// `Int64`, nanosecond timestamps or strings.
    pub(super) fn from_column(column: &ArrayRef, name: &str) -> Result<Index> {
        Ok(match column.data_type() {
            DataType::Float64 => Index::F64(column.as_primitive::<Float64Type>().values().to_vec()),
            DataType::Int64 => Index::I64(column.as_primitive::<Int64Type>().values().to_vec()),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => Index::DateTime(
                column
                    .as_primitive::<TimestampNanosecondType>()
                    .values()
                    .to_vec(),
            ),
            DataType::Utf8 => Index::Str(
                column
                    .as_string::<i32>()
                    .iter()
                    .map(|s| s.unwrap_or_default().to_string())
                    .collect(),
            ),
            other => {
                return Err(Error::input(format!(
                    "coordinate '{name}' has type {other}, which an index cannot hold"
                )));
            }
        })
    }
}

/// A coordinate as an Arrow array.
pub(super) fn index_column(index: &Index) -> ArrayRef {
    match index {
        Index::F64(v) => Arc::new(Float64Array::from(v.clone())),
        Index::I64(v) => Arc::new(Int64Array::from(v.clone())),
        Index::DateTime(v) => Arc::new(TimestampNanosecondArray::from(v.clone())),
        Index::Str(v) => Arc::new(StringArray::from(v.clone())),
    }
}
