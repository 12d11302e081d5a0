//! A small text language for labeled-array jobs, used by `shoal run`: steps separated
//! by `|`, each applied to the result of the one before.
//!
//! ```text
//! sel(time=2000-01-01:2009-12-31) | anomaly(time.month) | std(time)
//! isel(lat=0:90:2) | resample(time=MS, mean) | mean(lon)
//! groupby(time.season, max) | coarsen(lat=2, mean) | rolling(time=7, mean)
//! ```
//!
//! | step | meaning |
//! |---|---|
//! | `isel(dim=START:STOP[:STEP], dim=N)` | positions (Python slices; an integer drops the dimension) |
//! | `sel(dim=LABEL, dim=LO:HI)` | labels (exact, or an inclusive range; dates as `2020-01-31`) |
//! | `sum mean min max std var count prod(dim, ...)` | NaN-skipping reduction over the dimensions (none: all) |
//! | `groupby(KEY, OP)` | per-group reduction; `KEY` is a coordinate or `time.month`, `time.year`, ... |
//! | `anomaly(KEY)` | each cell minus the mean of its group (`x.groupby(KEY) - x.groupby(KEY).mean()`) |
//! | `resample(dim=FREQ, OP)` | calendar bins (`MS`, `D`, `YS`, `6h`) |
//! | `coarsen(dim=N, OP)` / `rolling(dim=N, OP)` | blocks of N / moving windows of N |

use super::dataarray::{DataArray, LabelSel, Sel};
use super::index::Label;
use crate::error::{Error, Result};
use shoal_planner::array::ReduceOp;

/// One parsed step: a name and its arguments (`key=value` or bare values).
#[derive(Debug, Clone, PartialEq)]
struct Step {
    name: String,
    args: Vec<(Option<String>, String)>,
}

fn parse(text: &str) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for (i, part) in text.split('|').enumerate() {
        let part = part.trim();
        let bad = |why: &str| Error::input(format!("pipeline step {} '{part}': {why}", i + 1));
        if part.is_empty() {
            return Err(bad("empty step"));
        }
        let (name, rest) = match part.split_once('(') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix(')').ok_or_else(|| bad("missing ')'"))?;
                (name.trim(), inner)
            }
            None => (part, ""),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad("expected NAME(ARGS)"));
        }
        let args = rest
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| match a.split_once('=') {
                Some((k, v)) => (Some(k.trim().to_string()), v.trim().to_string()),
                None => (None, a.to_string()),
            })
            .collect();
        steps.push(Step {
            name: name.to_ascii_lowercase(),
            args,
        });
    }
    Ok(steps)
}

/// The reductions a pipeline step may name: NumPy's, without the positional and boolean
/// ones (sum, mean, min, max, std, var, count, prod).
fn reduce_op(name: &str) -> Option<ReduceOp> {
    ReduceOp::parse(name).filter(|op| {
        !matches!(
            op,
            ReduceOp::ArgMin | ReduceOp::ArgMax | ReduceOp::Any | ReduceOp::All
        )
    })
}

fn label(text: &str) -> Label {
    match text.parse::<f64>() {
        Ok(v) => Label::Num(v),
        Err(_) => Label::Text(text.to_string()),
    }
}

fn position(text: &str, what: &str) -> Result<isize> {
    text.trim()
        .parse()
        .map_err(|_| Error::input(format!("{what}: '{text}' is not an integer position")))
}

impl Step {
    fn what(&self) -> String {
        format!("pipeline step '{}'", self.name)
    }

    /// The `key=value` arguments, each required to be keyed.
    fn keyed(&self) -> Result<Vec<(&str, &str)>> {
        self.args
            .iter()
            .map(|(k, v)| match k {
                Some(k) => Ok((k.as_str(), v.as_str())),
                None => Err(Error::input(format!(
                    "{}: expected DIM=VALUE, got '{v}'",
                    self.what()
                ))),
            })
            .collect()
    }

    /// `(dim=N, OP)` or `(KEY, OP)`: the one keyed or bare first argument and the op.
    fn window_and_op(&self) -> Result<(Option<&str>, &str, ReduceOp)> {
        let [(key, value), (None, op)] = &self.args[..] else {
            return Err(Error::input(format!(
                "{}: expected ({}, OP)",
                self.what(),
                if self.name == "groupby" {
                    "KEY"
                } else {
                    "DIM=N"
                }
            )));
        };
        let op = reduce_op(op).ok_or_else(|| {
            Error::input(format!(
                "{}: unknown reduction '{op}' (sum, mean, min, max, std, var, count, prod)",
                self.what()
            ))
        })?;
        Ok((key.as_deref(), value.as_str(), op))
    }

    fn window(&self) -> Result<(&str, usize, ReduceOp)> {
        let (Some(dim), n, op) = self.window_and_op()? else {
            return Err(Error::input(format!(
                "{}: expected (DIM=N, OP)",
                self.what()
            )));
        };
        let n = n
            .parse()
            .map_err(|_| Error::input(format!("{}: '{n}' is not a window length", self.what())))?;
        Ok((dim, n, op))
    }

    fn apply(&self, x: &DataArray) -> Result<DataArray> {
        if let Some(op) = reduce_op(&self.name) {
            let dims: Vec<String> = self
                .args
                .iter()
                .map(|(k, v)| match k {
                    None => Ok(v.clone()),
                    Some(_) => Err(Error::input(format!(
                        "{}: expected dimension names",
                        self.what()
                    ))),
                })
                .collect::<Result<_>>()?;
            return if dims.is_empty() {
                x.reduce(op, .., None)
            } else {
                x.reduce(op, dims, None)
            };
        }
        match self.name.as_str() {
            "isel" => {
                let mut sels = Vec::new();
                for (dim, value) in self.keyed()? {
                    let what = format!("{} {dim}", self.what());
                    let parts: Vec<&str> = value.split(':').collect();
                    let opt = |t: &str| -> Result<Option<isize>> {
                        if t.trim().is_empty() {
                            Ok(None)
                        } else {
                            position(t, &what).map(Some)
                        }
                    };
                    let sel = match parts[..] {
                        [one] => Sel::At(position(one, &what)?),
                        [a, b] => Sel::Slice(opt(a)?, opt(b)?, 1),
                        [a, b, s] => Sel::Slice(opt(a)?, opt(b)?, opt(s)?.unwrap_or(1)),
                        _ => return Err(Error::input(format!("{what}: bad slice '{value}'"))),
                    };
                    sels.push((dim, sel));
                }
                x.isel(&sels)
            }
            "sel" => {
                let mut sels = Vec::new();
                for (dim, value) in self.keyed()? {
                    if value.is_empty() || value.starts_with(':') || value.ends_with(':') {
                        return Err(Error::input(format!(
                            "{} {dim}: '{value}' is not a label or a LO:HI range with both ends",
                            self.what()
                        )));
                    }
                    let sel = match split_range(value) {
                        Some((lo, hi)) => LabelSel::Range(label(lo), label(hi)),
                        None => LabelSel::Exact(label(value)),
                    };
                    sels.push((dim, sel));
                }
                x.sel(&sels)
            }
            "groupby" => {
                let (None, key, op) = self.window_and_op()? else {
                    return Err(Error::input(format!("{}: expected (KEY, OP)", self.what())));
                };
                x.groupby(key)?.reduce(op)
            }
            "anomaly" => {
                let [(None, key)] = &self.args[..] else {
                    return Err(Error::input(format!("{}: expected (KEY)", self.what())));
                };
                let groups = x.groupby(key)?;
                let means = groups.reduce(ReduceOp::Mean)?;
                groups.sub(&means)
            }
            "resample" => {
                let (Some(dim), freq, op) = self.window_and_op()? else {
                    return Err(Error::input(format!(
                        "{}: expected (DIM=FREQ, OP)",
                        self.what()
                    )));
                };
                x.resample(dim, freq)?.reduce(op)
            }
            "coarsen" => {
                let (dim, n, op) = self.window()?;
                x.coarsen(dim, n)?.reduce(op)
            }
            "rolling" => {
                let (dim, n, op) = self.window()?;
                x.rolling(dim, n)?.reduce(op)
            }
            "chunk" => {
                let mut chunks = Vec::new();
                for (dim, value) in self.keyed()? {
                    let n = match value.trim() {
                        "-1" => 0,
                        text => match text.parse::<usize>() {
                            Ok(n) if n > 0 => n,
                            _ => {
                                return Err(Error::input(format!(
                                    "{} {dim}: '{value}' is not a chunk length (a count of cells, or -1 for the whole dimension)",
                                    self.what()
                                )));
                            }
                        },
                    };
                    chunks.push((dim, n));
                }
                x.chunk(&chunks)
            }
            other => Err(Error::input(format!(
                "unknown pipeline step '{other}': use isel, sel, sum, mean, min, max, std, var, count, prod, groupby, anomaly, resample, coarsen, rolling or chunk"
            ))),
        }
    }
}

/// `lo:hi` where neither side is empty. Dates with times (`2020-01-01T06:00`) hold colons
/// of their own: the split is at the first colon with two numbers or two dates around it
/// (`2020-01-01T06:00:2020-01-02`); other text splits at the middle colon of an odd count.
fn split_range(value: &str) -> Option<(&str, &str)> {
    let dated = |t: &str| {
        let b = t.as_bytes();
        b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
    };
    let number = |t: &str| t.parse::<f64>().is_ok();
    let colons: Vec<usize> = value.match_indices(':').map(|(i, _)| i).collect();
    let sides = |at: usize| (&value[..at], &value[at + 1..]);
    if let Some((lo, hi)) = colons
        .iter()
        .map(|&at| sides(at))
        .find(|(lo, hi)| (number(lo) && number(hi)) || (dated(lo) && dated(hi)))
    {
        return Some((lo, hi));
    }
    // A date with no date after a colon is one label (`2020-01-01T06:00`).
    if !dated(value) && colons.len() % 2 == 1 {
        let (lo, hi) = sides(colons[colons.len() / 2]);
        if !lo.is_empty() && !hi.is_empty() {
            return Some((lo, hi));
        }
    }
    None
}

/// Applies the `|`-separated steps of `pipeline` to `x` (see the module docs). An empty
/// pipeline returns `x`.
pub fn apply_pipeline(x: &DataArray, pipeline: &str) -> Result<DataArray> {
    if pipeline.trim().is_empty() {
        return Ok(x.clone());
    }
    let mut out = x.clone();
    for step in parse(pipeline)? {
        out = step.apply(&out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_steps_and_ranges() {
        let steps =
            parse("sel(time=2000-01-01:2000-12-31) | anomaly(time.month)|std(time, lat)").unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0].name, "sel");
        assert_eq!(
            steps[0].args,
            vec![(Some("time".into()), "2000-01-01:2000-12-31".into())]
        );
        assert_eq!(steps[2].args.len(), 2);
        assert_eq!(split_range("1:5"), Some(("1", "5")));
        assert_eq!(
            split_range("2020-01-01T06:00:2020-01-02T06:00"),
            Some(("2020-01-01T06:00", "2020-01-02T06:00"))
        );
        assert_eq!(split_range("12"), None);
        assert_eq!(
            split_range("2020-01-01:2020-01-02T06:00"),
            Some(("2020-01-01", "2020-01-02T06:00"))
        );
        assert_eq!(
            split_range("2020-01-01T06:00:00:2020-01-02"),
            Some(("2020-01-01T06:00:00", "2020-01-02"))
        );
        assert_eq!(split_range("-5.5:10"), Some(("-5.5", "10")));
        assert_eq!(split_range("a:b"), Some(("a", "b")));
        assert_eq!(split_range("2020-01-01T06:00"), None);
        assert_eq!(split_range("2020-01-01T06:00:00"), None);
        let err = parse("mean(time | std").unwrap_err().to_string();
        assert!(
            err.contains("pipeline step 1 'mean(time': missing ')'"),
            "{err}"
        );
        assert!(parse("a || b").is_err());
    }
}
