//! The cluster spec: groups of workers of different shapes, one file format for
//! `shoal local --spec`, the gateway, the Slurm script and the Kubernetes manifests.
//!
//! ```toml
//! [cluster]
//! idle_timeout = "30m"
//!
//! [groups.cpu]
//! workers = 4
//! slots = 2
//! memory = "4GiB"
//!
//! [groups.gpu]
//! workers = 1
//! slots = 1
//! memory = "8GiB"
//! resources = "gpu=1"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_planner::Resources;
use shoal_planner::config::parse_bytes;

/// Most workers one group may ask for (and a gateway cluster in all).
pub const MAX_GROUP_WORKERS: usize = 10_000;

/// Most task slots one worker may have.
pub const MAX_SLOTS: usize = 1024;

/// A cluster spec, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    /// Stop the cluster after this long without a job (gateway clusters).
    pub idle_timeout: Option<Duration>,
    /// The worker groups, by name.
    pub groups: BTreeMap<String, GroupSpec>,
}

/// One group of identical workers.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// Worker processes.
    pub workers: usize,
    /// Task slots per worker.
    pub slots: usize,
    /// Memory limit per worker, in bytes (default: the worker's own default).
    pub memory: Option<u64>,
    /// Named resources each worker offers.
    pub resources: Resources,
}

/// A spec as written, before it is checked: the TOML file and the gateway's JSON body
/// have this shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecText {
    /// Cluster-wide settings.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub cluster: Option<ClusterText>,
    /// Worker groups by name.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupText>,
}

/// The `[cluster]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterText {
    /// e.g. "30m", "90s", "2h" or a number of seconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub idle_timeout: Option<DurationText>,
}

/// A duration as a number of seconds or a string with a unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DurationText {
    /// Seconds.
    Seconds(f64),
    /// "30m", "90s", "2h", "1d".
    Text(String),
}

/// One `[groups.NAME]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupText {
    /// Worker processes (default 1).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_count"
    )]
    pub workers: Option<usize>,
    /// Task slots per worker (default 1).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_count"
    )]
    pub slots: Option<usize>,
    /// e.g. "4GiB".
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub memory: Option<String>,
    /// e.g. "gpu=1,ssd=1".
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub resources: Option<String>,
}

/// An optional field that, when given, is not `null`: absent and `null` would otherwise
/// mean the same, and the API's schema has no nulls.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// [`present`] for a count: a whole number, also when written `4.0`.
pub fn present_count<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<usize>, D::Error> {
    whole(deserializer).map(Some)
}

/// A whole number >= 0, also when written `4.0` (JSON Schema's integers include it).
pub fn whole<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Whole(u64),
        Float(f64),
    }
    let bad = |n: &dyn fmt::Display| {
        serde::de::Error::custom(format!("expected a whole number >= 0, got {n}"))
    };
    match Number::deserialize(deserializer)? {
        Number::Whole(n) => usize::try_from(n).map_err(|_| bad(&n)),
        Number::Float(f) if f >= 0.0 && f.fract() == 0.0 && f < 1e15 => Ok(f as usize),
        Number::Float(f) => Err(bad(&f)),
    }
}

/// A spec that cannot be used: one line naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(pub String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

fn err<T>(message: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError(message.into()))
}

impl ClusterSpec {
    /// Parses and checks a TOML spec; `origin` (a file name) starts any error.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, SpecError> {
        let raw: SpecText = parse_toml(text, origin)?;
        raw.check().map_err(|e| SpecError(format!("{origin}: {e}")))
    }

    /// Reads and checks the TOML spec at `path`.
    pub fn from_file(path: &str) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SpecError(format!("cannot read the cluster spec {path}: {e}")))?;
        Self::from_toml(&text, path)
    }

    /// Every worker of every group.
    pub fn workers(&self) -> usize {
        self.groups.values().map(|g| g.workers).sum()
    }

    /// Task slots over every worker.
    pub fn slots(&self) -> usize {
        self.groups.values().fold(0, |n, g| {
            n.saturating_add(g.workers.saturating_mul(g.slots))
        })
    }

    /// Memory over every worker with a limit, in bytes.
    pub fn memory(&self) -> u64 {
        self.groups.values().fold(0, |n, g| {
            n.saturating_add((g.workers as u64).saturating_mul(g.memory.unwrap_or(0)))
        })
    }

    /// The spec as written, for storing and sending.
    pub fn to_text(&self) -> SpecText {
        let cluster = ClusterText {
            idle_timeout: self
                .idle_timeout
                .map(|d| DurationText::Seconds(d.as_secs_f64())),
        };
        let groups = self
            .groups
            .iter()
            .map(|(name, g)| {
                let text = GroupText {
                    workers: Some(g.workers),
                    slots: Some(g.slots),
                    memory: g.memory.map(|m| m.to_string()),
                    resources: (!g.resources.is_empty()).then(|| g.resources.to_string()),
                };
                (name.clone(), text)
            })
            .collect();
        SpecText {
            cluster: (cluster != ClusterText::default()).then_some(cluster),
            groups,
        }
    }
}

impl SpecText {
    /// Checks every field; an error names it (`groups.gpu.memory: ...`).
    pub fn check(&self) -> Result<ClusterSpec, SpecError> {
        let cluster = self.cluster.clone().unwrap_or_default();
        let idle_timeout = match &cluster.idle_timeout {
            None => None,
            Some(d) => Some(
                parse_duration(d).map_err(|e| SpecError(format!("cluster.idle_timeout: {e}")))?,
            ),
        };
        if self.groups.is_empty() {
            return err(
                "no worker groups: add a [groups.NAME] table with workers, slots and memory",
            );
        }
        let mut groups = BTreeMap::new();
        for (name, group) in &self.groups {
            check_group_name(name)?;
            let field = |f: &str| format!("groups.{name}.{f}");
            let workers = group.workers.unwrap_or(1);
            if workers > MAX_GROUP_WORKERS {
                return err(format!(
                    "{}: at most {MAX_GROUP_WORKERS}, got {workers}",
                    field("workers")
                ));
            }
            let slots = group.slots.unwrap_or(1);
            if !(1..=MAX_SLOTS).contains(&slots) {
                return err(format!(
                    "{}: expected 1 to {MAX_SLOTS}, got {slots}",
                    field("slots")
                ));
            }
            let memory = match &group.memory {
                None => None,
                Some(text) => match parse_bytes(text) {
                    Ok(0) => {
                        return err(format!("{}: expected more than 0 bytes", field("memory")));
                    }
                    Ok(bytes) => Some(bytes as u64),
                    Err(e) => return err(format!("{}: {}", field("memory"), e.message())),
                },
            };
            let resources = Resources::parse(group.resources.as_deref().unwrap_or(""))
                .map_err(|e| SpecError(format!("{}: {}", field("resources"), e.message())))?;
            groups.insert(
                name.clone(),
                GroupSpec {
                    workers,
                    slots,
                    memory,
                    resources,
                },
            );
        }
        Ok(ClusterSpec {
            idle_timeout,
            groups,
        })
    }
}

/// Group names go into process arguments, Slurm step names and Kubernetes labels.
pub fn check_group_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        err(format!(
            "group name '{name}': expected 1 to 32 lowercase letters, digits or '-', starting with a letter"
        ))
    }
}

/// `30m`, `90s`, `2h`, `1d`, `1.5h` or a number of seconds.
pub fn parse_duration(text: &DurationText) -> Result<Duration, String> {
    let (value, scale) = match text {
        DurationText::Seconds(s) => (*s, 1.0),
        DurationText::Text(t) => {
            let t = t.trim();
            let split = t
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(t.len());
            let (number, unit) = t.split_at(split);
            let scale = match unit.trim() {
                "" | "s" => 1.0,
                "m" | "min" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                other => return Err(format!("unknown unit '{other}' in '{t}': use s, m, h or d")),
            };
            let value = number
                .parse::<f64>()
                .map_err(|_| format!("expected a duration such as 30m or 90s, got '{t}'"))?;
            (value, scale)
        }
    };
    let seconds = value * scale;
    if seconds > MAX_DURATION_SECS {
        return Err(format!(
            "expected at most {MAX_DURATION_SECS} s, got {seconds}"
        ));
    }
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("expected a duration above zero, got {value}"))
}

/// The longest duration a spec may give (about 317 years).
pub const MAX_DURATION_SECS: f64 = 1e10;

/// Parses TOML `text` into `T`; an error is one line starting `origin:LINE:COLUMN:`.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
) -> Result<T, SpecError> {
    toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let (line, column) = line_column(text, span.start);
                format!(":{line}:{column}")
            })
            .unwrap_or_default();
        let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
        SpecError(format!("{origin}{at}: {message}"))
    })
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_GROUPS: &str = r#"
[cluster]
idle_timeout = "30m"

[groups.cpu]
workers = 4
slots = 2
memory = "4GiB"

[groups.gpu]
workers = 1
memory = "8GiB"
resources = "gpu=1"
"#;

    #[test]
    fn a_spec_declares_groups_of_different_shapes() {
        let spec = ClusterSpec::from_toml(TWO_GROUPS, "cluster.toml").unwrap();
        assert_eq!(spec.idle_timeout, Some(Duration::from_secs(1800)));
        let cpu = &spec.groups["cpu"];
        assert_eq!((cpu.workers, cpu.slots, cpu.memory), (4, 2, Some(4 << 30)));
        let gpu = &spec.groups["gpu"];
        assert_eq!(
            (gpu.workers, gpu.slots),
            (1, 1),
            "one worker of one slot by default"
        );
        assert_eq!(gpu.resources.get("gpu"), 1.0);
        assert_eq!((spec.workers(), spec.slots()), (5, 9));
        assert_eq!(spec.memory(), (4 * 4 + 8) << 30);
        // Written back and read again, it is the same spec.
        let text = toml::to_string(&spec.to_text()).unwrap();
        assert_eq!(ClusterSpec::from_toml(&text, "again").unwrap(), spec);
    }

    #[test]
    fn a_bad_spec_gets_one_line_naming_the_place() {
        let cases = [
            (
                "[groups.cpu]\nworkers = 2\ncores = 4\n",
                "spec.toml:3:1: unknown field `cores`",
            ),
            ("[groups.cpu]\nworkers = -1\n", "spec.toml:2:11:"),
            (
                "[groups.cpu]\nmemory = \"4 parsecs\"\n",
                "spec.toml: groups.cpu.memory: invalid size",
            ),
            (
                "[groups.cpu]\nslots = 0\n",
                "spec.toml: groups.cpu.slots: expected 1 to 1024, got 0",
            ),
            ("[groups.GPU]\n", "spec.toml: group name 'GPU'"),
            (
                "[groups.g]\nresources = \"gpu\"\n",
                "spec.toml: groups.g.resources: invalid resource 'gpu'",
            ),
            (
                "[cluster]\nidle_timeout = \"5 fortnights\"\n[groups.a]\n",
                "cluster.idle_timeout: unknown unit",
            ),
            ("[cluster]\n", "spec.toml: no worker groups"),
        ];
        for (text, expected) in cases {
            let error = ClusterSpec::from_toml(text, "spec.toml")
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with(expected) || error.contains(expected),
                "{text:?} gave {error:?}"
            );
            assert!(!error.contains('\n'), "one line: {error:?}");
        }
    }

    #[test]
    fn durations_take_a_unit_or_seconds() {
        let text = |t: &str| parse_duration(&DurationText::Text(t.into()));
        assert_eq!(text("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(text("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(text("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(
            parse_duration(&DurationText::Seconds(5.0)),
            Ok(Duration::from_secs(5))
        );
        assert!(text("0s").is_err());
        assert!(text("soon").is_err());
    }
}
