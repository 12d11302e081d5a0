//! Coordinate values held in memory (like pandas indexes behind xarray's dimension
//! coordinates), label lookup for `sel`, and calendar arithmetic on `datetime64[ns]`.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, StringArray, TimestampNanosecondArray,
};

use crate::error::{Error, Result};

const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;

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

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses `YYYY-MM-DD`, optionally followed by `THH:MM[:SS]` (or a space), into
/// nanoseconds since the epoch.
pub fn parse_datetime(text: &str) -> Option<i64> {
    let t = text.trim();
    let (date, time) = match t.find(['T', ' ']) {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, ""),
    };
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next().map_or(Some(1), |p| p.parse().ok())?;
    let d: i64 = parts.next().map_or(Some(1), |p| p.parse().ok())?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || parts.next().is_some() {
        return None;
    }
    let mut seconds = 0i64;
    if !time.is_empty() {
        let mut hms = time.split(':');
        let h: i64 = hms.next()?.parse().ok()?;
        let mi: i64 = hms.next().map_or(Some(0), |p| p.parse().ok())?;
        let s: f64 = hms.next().map_or(Some(0.0), |p| p.parse().ok())?;
        seconds = h * 3600 + mi * 60;
        return Some(
            days_from_civil(y, m, d) * NS_PER_DAY + seconds * 1_000_000_000 + (s * 1e9) as i64,
        );
    }
    Some(days_from_civil(y, m, d) * NS_PER_DAY + seconds)
}

/// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS` of nanoseconds since the epoch.
pub fn format_datetime(ns: i64) -> String {
    let days = ns.div_euclid(NS_PER_DAY);
    let rest = ns.rem_euclid(NS_PER_DAY) / 1_000_000_000;
    let (y, m, d) = civil_from_days(days);
    if rest == 0 {
        format!("{y:04}-{m:02}-{d:02}")
    } else {
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            rest / 3600,
            rest / 60 % 60,
            rest % 60
        )
    }
}

/// A calendar field of a datetime (xarray's `.dt` accessors).
pub fn datetime_field(ns: i64, field: &str) -> Option<i64> {
    let days = ns.div_euclid(NS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    Some(match field {
        "year" => y,
        "month" => m,
        "day" => d,
        "hour" => ns.rem_euclid(NS_PER_DAY) / 3_600_000_000_000,
        "dayofyear" => days - days_from_civil(y, 1, 1) + 1,
        "dayofweek" => (days + 3).rem_euclid(7),
        "season" => [0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 0][(m - 1) as usize],
        _ => return None,
    })
}

/// Nanoseconds since the epoch of `value` counted in `units` (CF `"days since
/// 2000-01-01"`, `"hours since 1900-01-01 00:00:00"` ...).
pub fn decode_cf_time(value: f64, units: &str) -> Option<i64> {
    let (unit, since) = units.split_once(" since ")?;
    let scale = match unit.trim() {
        "days" | "day" | "d" => NS_PER_DAY as f64,
        "hours" | "hour" | "h" => 3.6e12,
        "minutes" | "minute" | "min" => 6e10,
        "seconds" | "second" | "s" => 1e9,
        "milliseconds" | "ms" => 1e6,
        "microseconds" | "us" => 1e3,
        "nanoseconds" | "ns" => 1.0,
        _ => return None,
    };
    let since = since.trim().trim_end_matches(" UTC").trim_end_matches('Z');
    Some(parse_datetime(since)? + (value * scale).round() as i64)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        for days in [-800_000, -1, 0, 59, 365 * 30 + 7, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        let t = parse_datetime("2020-02-29T06:30:00").unwrap();
        assert_eq!(format_datetime(t), "2020-02-29T06:30:00");
        assert_eq!(datetime_field(t, "month"), Some(2));
        assert_eq!(datetime_field(t, "dayofyear"), Some(60));
        assert_eq!(
            decode_cf_time(31.0, "days since 2000-01-01"),
            parse_datetime("2000-02-01")
        );
        assert_eq!(
            decode_cf_time(6.0, "hours since 2000-01-01 00:00:00"),
            parse_datetime("2000-01-01T06:00")
        );
    }
}
