//! Grouped reductions of a [`DataArray`]: `groupby` over a coordinate or a calendar field
//! (`time.month`), `resample` into calendar bins and `coarsen` into fixed windows, plus
//! arithmetic that broadcasts a per-group result back over the grouped dimension.

use shoal_planner::array::{BinaryOp, ReduceOp};

use super::dataarray::{Coord, DataArray};
use super::index::{Index, civil_from_days, datetime_field, days_from_civil};
use crate::error::{Error, Result};

const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// A `DataArray` split into groups along one dimension.
#[derive(Debug, Clone)]
pub struct GroupBy {
    array: DataArray,
    /// The grouped dimension.
    dim: String,
    /// Name of the dimension of per-group results (`month`, or `dim` for resample).
    group_dim: String,
    /// Group of each position along `dim`.
    labels: Vec<usize>,
    /// The label of each group.
    groups: Index,
}

macro_rules! reduce_methods {
    ($($name:ident => $op:expr),*) => {$(
        #[doc = concat!("`", stringify!($name), "` of each group (NaN skipped).")]
        pub fn $name(&self) -> Result<DataArray> {
            self.reduce($op)
        }
    )*};
}

macro_rules! binary_methods {
    ($($name:ident => $op:ident),*) => {$(
        #[doc = concat!("Each cell `", stringify!($name), "` its group's value in `other` (a per-group result).")]
        pub fn $name(&self, other: &DataArray) -> Result<DataArray> {
            self.binary(BinaryOp::$op, other)
        }
    )*};
}

/// Unique values in order and each value's group number.
fn factorize(values: &[i64]) -> (Vec<usize>, Vec<i64>) {
    let mut unique: Vec<i64> = values.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let labels = values
        .iter()
        .map(|v| unique.binary_search(v).unwrap_or(0))
        .collect();
    (labels, unique)
}

/// Unique strings in order and each string's group number.
fn factorize_text(values: &[String]) -> (Vec<usize>, Vec<String>) {
    let mut unique = values.to_vec();
    unique.sort();
    unique.dedup();
    let labels = values
        .iter()
        .map(|s| unique.binary_search(s).unwrap_or(0))
        .collect();
    (labels, unique)
}

impl DataArray {
    /// Groups by a coordinate (`"station"`) or a calendar field of a datetime coordinate
    /// (`"time.month"`, `"time.year"`, `"time.day"`, `"time.hour"`, `"time.dayofyear"`,
    /// `"time.dayofweek"`, `"time.season"`: labelled `DJF`, `JJA`, `MAM`, `SON`).
    pub fn groupby(&self, key: &str) -> Result<GroupBy> {
        let (coord_name, field) = match key.split_once('.') {
            Some((c, f)) => (c, Some(f)),
            None => (key, None),
        };
        let coord = self.coord(coord_name).ok_or_else(|| {
            Error::input(format!(
                "no coordinate '{coord_name}' to group by in {self:?}"
            ))
        })?;
        let dim = coord.dim.clone();
        let (labels, groups, group_dim) = match (field, &coord.index) {
            (Some("season"), Index::DateTime(ns)) => {
                // Labelled by name in alphabetical order, as xarray's seasons are.
                const SEASONS: [&str; 4] = ["DJF", "MAM", "JJA", "SON"];
                let names: Vec<String> = ns
                    .iter()
                    .map(|&t| {
                        let code = datetime_field(t, "season").unwrap_or(0);
                        SEASONS[code.clamp(0, 3) as usize].to_string()
                    })
                    .collect();
                let (labels, unique) = factorize_text(&names);
                (labels, Index::Str(unique), "season".to_string())
            }
            (Some(f), Index::DateTime(ns)) => {
                let values = ns
                    .iter()
                    .map(|&t| datetime_field(t, f))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        Error::input(format!("unknown datetime field '{f}' in '{key}'"))
                    })?;
                let (labels, unique) = factorize(&values);
                (labels, Index::I64(unique), f.to_string())
            }
            (Some(_), _) => {
                return Err(Error::input(format!(
                    "'{key}': coordinate '{coord_name}' does not hold datetimes"
                )));
            }
            (None, Index::I64(v)) | (None, Index::DateTime(v)) => {
                let (labels, unique) = factorize(v);
                let index = if matches!(coord.index, Index::DateTime(_)) {
                    Index::DateTime(unique)
                } else {
                    Index::I64(unique)
                };
                (labels, index, coord_name.to_string())
            }
            (None, Index::F64(v)) => {
                let bits: Vec<i64> = v.iter().map(|x| x.to_bits() as i64).collect();
                let mut unique: Vec<f64> = v.clone();
                unique.sort_by(f64::total_cmp);
                unique.dedup();
                let labels = bits
                    .iter()
                    .map(|b| {
                        unique
                            .iter()
                            .position(|u| u.to_bits() as i64 == *b)
                            .unwrap_or(0)
                    })
                    .collect();
                (labels, Index::F64(unique), coord_name.to_string())
            }
            (None, Index::Str(v)) => {
                let (labels, unique) = factorize_text(v);
                (labels, Index::Str(unique), coord_name.to_string())
            }
        };
        let group_dim = if group_dim == dim {
            dim.clone()
        } else {
            group_dim
        };
        Ok(GroupBy {
            array: self.clone(),
            dim,
            group_dim,
            labels,
            groups,
        })
    }

    /// Bins along the datetime dimension `dim` by calendar frequency `freq`: `D`, `nD`,
    /// `h`, `MS` (month starts), `nMS`, `YS` (year starts, also `AS`). Each bin is
    /// labelled by its start; empty bins give NaN.
    pub fn resample(&self, dim: &str, freq: &str) -> Result<GroupBy> {
        let Some(Index::DateTime(ns)) = self.index(dim) else {
            return Err(Error::input(format!(
                "resample needs a datetime coordinate on dimension '{dim}'"
            )));
        };
        let digits = freq
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(freq.len());
        // Up to a million units per bin keeps every bin boundary within i64 nanoseconds.
        let step: i64 = match freq[..digits].parse::<i64>() {
            _ if digits == 0 => 1,
            Ok(n) if (1..=1_000_000).contains(&n) => n,
            _ => {
                return Err(Error::input(format!(
                    "resample frequency '{freq}': the count must be 1 to 1000000"
                )));
            }
        };
        let unit = &freq[digits..];
        // Bin number of a time, counted from the bin holding the first time.
        let bin = |t: i64| -> Option<i64> {
            let days = t.div_euclid(NS_PER_DAY);
            let (y, m, _) = civil_from_days(days);
            Some(match unit {
                "D" => days.div_euclid(step),
                "h" | "H" => t.div_euclid(3_600_000_000_000 * step),
                "MS" => (y * 12 + m - 1).div_euclid(step),
                "YS" | "AS" => y.div_euclid(step),
                _ => return None,
            })
        };
        let start = |b: i64| -> i64 {
            match unit {
                "D" => b * step * NS_PER_DAY,
                "h" | "H" => b * step * 3_600_000_000_000,
                "MS" => {
                    let months = b * step;
                    days_from_civil(months.div_euclid(12), months.rem_euclid(12) + 1, 1)
                        * NS_PER_DAY
                }
                _ => days_from_civil(b * step, 1, 1) * NS_PER_DAY,
            }
        };
        let bins = ns
            .iter()
            .map(|&t| bin(t))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::input(format!("unsupported resample frequency '{freq}'; use D, h, MS or YS with an optional count")))?;
        let first = bins.iter().copied().min().unwrap_or(0);
        let last = bins.iter().copied().max().unwrap_or(-1);
        let labels = bins.iter().map(|b| (b - first) as usize).collect();
        let groups = Index::DateTime((first..=last).map(start).collect());
        Ok(GroupBy {
            array: self.clone(),
            dim: dim.to_string(),
            group_dim: dim.to_string(),
            labels,
            groups,
        })
    }

    /// Windows of `window` positions along `dim` (its length must be a multiple); each
    /// window's coordinate is the mean of its labels.
    pub fn coarsen(&self, dim: &str, window: usize) -> Result<GroupBy> {
        let axis = self.axis(dim)?;
        let n = self.shape()[axis];
        if window == 0 || !n.is_multiple_of(window) {
            return Err(Error::input(format!(
                "coarsen: dimension '{dim}' of length {n} is not a multiple of the window {window}"
            )));
        }
        let labels: Vec<usize> = (0..n).map(|i| i / window).collect();
        let windows = n / window;
        let mean_of = |v: &dyn Fn(usize) -> f64, k: usize| -> f64 {
            (k * window..(k + 1) * window).map(v).sum::<f64>() / window as f64
        };
        let groups = match self.index(dim) {
            Some(Index::F64(v)) => {
                Index::F64((0..windows).map(|k| mean_of(&|i| v[i], k)).collect())
            }
            Some(Index::I64(v)) => {
                Index::F64((0..windows).map(|k| mean_of(&|i| v[i] as f64, k)).collect())
            }
            Some(Index::DateTime(v)) => Index::DateTime(
                (0..windows)
                    .map(|k| {
                        let base = v[k * window];
                        base + (k * window..(k + 1) * window)
                            .map(|i| v[i] - base)
                            .sum::<i64>()
                            / window as i64
                    })
                    .collect(),
            ),
            Some(Index::Str(v)) => {
                Index::Str((0..windows).map(|k| v[k * window].clone()).collect())
            }
            None => Index::I64((0..windows as i64).collect()),
        };
        Ok(GroupBy {
            array: self.clone(),
            dim: dim.to_string(),
            group_dim: dim.to_string(),
            labels,
            groups,
        })
    }
}

impl GroupBy {
    /// The group of each position along the grouped dimension.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The grouped dimension.
    pub fn dim(&self) -> &str {
        &self.dim
    }

    /// The label of each group.
    pub fn groups(&self) -> &Index {
        &self.groups
    }

    /// A reduction of each group; the grouped dimension becomes the group dimension.
    pub fn reduce(&self, op: ReduceOp) -> Result<DataArray> {
        let a = &self.array;
        let axis = a.axis(&self.dim)?;
        let data = a
            .data()
            .group_reduce(op, axis, self.labels.clone(), self.groups.len(), true)?;
        let coord = Coord {
            dim: self.group_dim.clone(),
            index: self.groups.clone(),
        };
        Ok(a.replace_axis(
            data,
            axis,
            &self.group_dim,
            Some((self.group_dim.clone(), coord)),
        ))
    }

    reduce_methods!(
        sum => ReduceOp::Sum, mean => ReduceOp::Mean, min => ReduceOp::Min,
        max => ReduceOp::Max, std => ReduceOp::Std { ddof: 0 }, var => ReduceOp::Var { ddof: 0 },
        count => ReduceOp::Count, prod => ReduceOp::Prod
    );

    /// `array op other[group of each position]`: `other` has the group dimension (a
    /// per-group result such as a climatology), broadcast back over the grouped one.
    pub fn binary(&self, op: BinaryOp, other: &DataArray) -> Result<DataArray> {
        let g_axis = other.axis(&self.group_dim)?;
        if other.shape()[g_axis] != self.groups.len() {
            return Err(Error::input(format!(
                "'{}' has {} groups here but {} in the other array",
                self.group_dim,
                self.groups.len(),
                other.shape()[g_axis]
            )));
        }
        if let Some(theirs) = other.index(&self.group_dim)
            && theirs != &self.groups
        {
            return Err(Error::input(format!(
                "the '{}' labels of the other array differ from this grouping's",
                self.group_dim
            )));
        }
        let spread = other.data().take(&self.labels, g_axis)?;
        let own = self
            .array
            .coord(&self.dim)
            .map(|c| (self.dim.clone(), c.clone()));
        let spread = other.replace_axis(spread, g_axis, &self.dim, own);
        let out = self.array.binary(op, &spread)?;
        // As xarray does, the result keeps each position's group label (`month` along
        // `time`) as a coordinate of the grouped dimension.
        if self.group_dim == self.dim || out.coord(&self.group_dim).is_some() {
            return Ok(out);
        }
        out.with_coord(&self.group_dim, &self.dim, self.groups.take(&self.labels))
    }

    binary_methods!(add => Add, sub => Sub, mul => Mul, div => Div);
}

/// A moving window along one dimension of a `DataArray` (`da.rolling("time", 7)`).
#[derive(Debug, Clone)]
pub struct Rolling {
    array: DataArray,
    dim: String,
    window: usize,
    min_periods: usize,
}

macro_rules! rolling_methods {
    ($($name:ident => $op:expr),*) => {$(
        #[doc = concat!("Moving-window `", stringify!($name), "` (NaN skipped).")]
        pub fn $name(&self) -> Result<DataArray> {
            self.reduce($op)
        }
    )*};
}

impl DataArray {
    /// A window of `window` positions along `dim`, ending at each position; windows with
    /// fewer than `window` non-NaN values give NaN (see [`Rolling::min_periods`]).
    pub fn rolling(&self, dim: &str, window: usize) -> Result<Rolling> {
        self.axis(dim)?;
        Ok(Rolling {
            array: self.clone(),
            dim: dim.to_string(),
            window,
            min_periods: window,
        })
    }
}

impl Rolling {
    /// Fewest non-NaN values a window needs for a result (default: the window length).
    pub fn min_periods(mut self, n: usize) -> Self {
        self.min_periods = n;
        self
    }

    /// The moving-window reduction `op`.
    pub fn reduce(&self, op: ReduceOp) -> Result<DataArray> {
        let axis = self.array.axis(&self.dim)?;
        let data = self
            .array
            .data()
            .rolling(axis, self.window, op, self.min_periods)?;
        self.array.map(|_| Ok(data))
    }

    rolling_methods!(
        sum => ReduceOp::Sum, mean => ReduceOp::Mean, min => ReduceOp::Min,
        max => ReduceOp::Max, std => ReduceOp::Std { ddof: 0 }, var => ReduceOp::Var { ddof: 0 },
        count => ReduceOp::Count
    );
}
