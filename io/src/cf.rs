//! The CF conventions (as xarray applies them to Zarr stores): how a store array's values
//! are encoded (fill values, scale and offset) and times counted in `units` since a date,
//! with the proleptic Gregorian calendar arithmetic on `datetime64[ns]` they need.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, StringArray, TimestampNanosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use datafusion::common::{Result, plan_err};
use serde_json::Value;

use crate::zarr::ZarrArrayMeta;

/// Nanoseconds in a day.
pub const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// The attributes CF decoding consumes (a decoded variable no longer carries them).
pub const CF_KEYS: &[&str] = &["_FillValue", "missing_value", "scale_factor", "add_offset"];

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for group in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in group.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let take = group.len().saturating_sub(1);
        for i in 0..take {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

/// The CF fill value of an array: `_FillValue` (a number, `"NaN"`, or base64 bytes as
/// xarray writes floats in Zarr v3), else `missing_value`, else (Zarr v2) the array's own
/// fill value.
fn cf_fill(meta: &ZarrArrayMeta) -> Option<f64> {
    let attr = meta
        .attrs
        .get("_FillValue")
        .or_else(|| meta.attrs.get("missing_value"));
    match attr {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("nan") => Some(f64::NAN),
        Some(Value::String(s)) => {
            let b = base64_decode(s)?;
            match (&meta.data_type, b.len()) {
                (DataType::Float64, 8) => Some(f64::from_le_bytes(b.try_into().ok()?)),
                (DataType::Float32, 4) => Some(f64::from(f32::from_le_bytes(b.try_into().ok()?))),
                _ => None,
            }
        }
        Some(_) => None,
        None if meta.format == 2 => meta.fill_value,
        None => None,
    }
}

fn attr_f64(meta: &ZarrArrayMeta, key: &str) -> Option<f64> {
    meta.attrs.get(key).and_then(Value::as_f64)
}

/// How a store array's values are encoded, per the CF conventions xarray follows:
/// decoded values are `(raw == fill ? NaN : raw) * scale + offset`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CfEncoding {
    /// Raw values that mean "missing" (`_FillValue`, `missing_value`, or Zarr v2's own).
    pub fill: Option<f64>,
    /// `scale_factor`.
    pub scale: Option<f64>,
    /// `add_offset`.
    pub offset: Option<f64>,
}

impl CfEncoding {
    /// The encoding `meta`'s attributes declare.
    pub fn of(meta: &ZarrArrayMeta) -> Self {
        Self {
            fill: cf_fill(meta),
            scale: attr_f64(meta, "scale_factor"),
            offset: attr_f64(meta, "add_offset"),
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

/// A 1-d coordinate read from a store, as the column its values mean: numbers counted in
/// CF time units (`"days since 2000-01-01"`) and Arrow timestamps become nanosecond
/// timestamps, floats `Float64`, other numbers `Int64`.
pub fn decode_coordinate(values: &ArrayRef, meta: &ZarrArrayMeta) -> Result<ArrayRef> {
    let nanos = DataType::Timestamp(TimeUnit::Nanosecond, None);
    if let Some(units) = meta.attrs.get("units").and_then(Value::as_str)
        && units.contains(" since ")
    {
        let counts = cast(values, &DataType::Float64)?;
        let times = counts
            .as_primitive::<Float64Type>()
            .values()
            .iter()
            .map(|&v| decode_cf_time(v, units))
            .collect::<Option<Vec<_>>>();
        let Some(times) = times else {
            return plan_err!(
                "coordinate '{}': cannot decode times in units '{units}'",
                meta.name
            );
        };
        return Ok(Arc::new(TimestampNanosecondArray::from(times)));
    }
    if let Some(meanings) = meta.attrs.get("flag_meanings").and_then(Value::as_str) {
        return decode_flags(values, meta, meanings);
    }
    let to = match values.data_type() {
        DataType::Float16 | DataType::Float32 | DataType::Float64 => DataType::Float64,
        DataType::Timestamp(_, _) => nanos,
        _ => DataType::Int64,
    };
    Ok(cast(values, &to)?)
}

/// A coordinate of CF flags as its labels: each value is looked up in `flag_values` (or
/// taken as a position when there is none) and named by the same word of `flag_meanings`.
fn decode_flags(values: &ArrayRef, meta: &ZarrArrayMeta, meanings: &str) -> Result<ArrayRef> {
    let words: Vec<&str> = meanings.split_whitespace().collect();
    let flags: Vec<i64> = match meta.attrs.get("flag_values").and_then(Value::as_array) {
        Some(v) => v.iter().filter_map(Value::as_i64).collect(),
        None => (0..words.len() as i64).collect(),
    };
    let codes = cast(values, &DataType::Int64)?;
    let labels = codes
        .as_primitive::<Int64Type>()
        .values()
        .iter()
        .map(|code| {
            let at = flags.iter().position(|f| f == code)?;
            words.get(at).map(|w| w.to_string())
        })
        .collect::<Option<Vec<String>>>();
    match labels {
        Some(labels) => Ok(Arc::new(StringArray::from(labels))),
        None => plan_err!(
            "coordinate '{}': a value is not among its flag_values {flags:?} with meanings '{meanings}'",
            meta.name
        ),
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
