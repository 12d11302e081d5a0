//! Shoal's settings: one typed struct with dotted keys, settable with `SET shoal.…`, CLI
//! flags and `SHOAL_*` environment variables.

use std::any::Any;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::common::{Result, plan_err};

/// Every Shoal setting, with its default. Lives in DataFusion's `ConfigOptions` as the
/// `shoal` extension, so `SET shoal.execution.partitions = 8` works in SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct ShoalConfig {
    /// Number of in-process workers an embedded session starts (0: one per core).
    pub workers: usize,
    /// Task slots per worker.
    pub worker_slots: usize,
    /// Memory limit of each worker's operator pool in bytes (0: a share of the machine).
    pub worker_memory_limit: usize,
    /// Bytes of task output a worker keeps in memory before spilling to disk (0: half the
    /// worker's memory limit).
    pub store_memory_target: usize,
    /// Partitions per exchange (0: total worker slots).
    pub partitions: usize,
    /// Directory for spill files (empty: the system temporary directory).
    pub scratch_dir: String,
    /// Resources every task of a query asks for, e.g. `gpu=1` (empty: none).
    pub task_resources: String,
    /// Seconds a job waits for a worker that can run its tasks before it fails.
    pub placement_timeout_secs: f64,
    /// How task outputs move between workers: `in_process` or `flight`.
    pub data_plane: String,
    /// Most chunks one task of an array reduction merges.
    pub array_reduce_fan_in: usize,
    /// Set once the session has started: keys that shape the cluster can no longer change.
    pub started: bool,
}

impl Default for ShoalConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            worker_slots: 1,
            worker_memory_limit: 0,
            store_memory_target: 0,
            partitions: 0,
            scratch_dir: String::new(),
            task_resources: String::new(),
            placement_timeout_secs: 60.0,
            data_plane: "in_process".to_string(),
            array_reduce_fan_in: 16,
            started: false,
        }
    }
}

/// (key, description) of every setting, in the order the reference lists them.
pub const KEYS: &[(&str, &str)] = &[
    (
        "workers",
        "Number of in-process workers an embedded session starts (0: one per core).",
    ),
    ("worker.slots", "Task slots per worker."),
    (
        "worker.memory_limit",
        "Memory limit of each worker's operator pool, e.g. 512MiB (0: a share of the machine).",
    ),
    (
        "store.memory_target",
        "Task output a worker keeps in memory before spilling to disk, e.g. 64MiB (0: half the worker limit).",
    ),
    (
        "execution.partitions",
        "Partitions per exchange (0: total worker slots).",
    ),
    (
        "scratch_dir",
        "Directory for spill files (empty: the system temporary directory).",
    ),
    (
        "task.resources",
        "Resources every task of a query asks for, e.g. gpu=1,ssd=1; only workers offering them run it (empty: none).",
    ),
    (
        "task.placement_timeout",
        "Seconds a job waits for a worker that can run its tasks before it fails.",
    ),
    (
        "data_plane",
        "How task outputs move between workers: in_process (shared by Arc) or flight (Arrow Flight over loopback gRPC with a session token); read when the session starts.",
    ),
    (
        "array.reduce_fan_in",
        "Most chunks one task of an array reduction merges; larger means fewer, bigger combine tasks (at least 2).",
    ),
];

/// Keys that shape the cluster and so only take effect when a session starts.
pub const FIXED_AT_START: &[&str] = &[
    "workers",
    "worker.slots",
    "worker.memory_limit",
    "store.memory_target",
    "scratch_dir",
    "data_plane",
];

/// Parses `123`, `64MiB`, `2GiB`, `1.5GB`, `512k` into bytes.
pub fn parse_bytes(text: &str) -> Result<usize> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let Ok(value) = num.parse::<f64>() else {
        return plan_err!(
            "invalid size '{text}': expected a number with an optional unit such as 512MiB"
        );
    };
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        other => return plan_err!("invalid size '{text}': unknown unit '{other}'"),
    };
    Ok((value * scale) as usize)
}

fn parse_count(key: &str, value: &str) -> Result<usize> {
    value
        .trim()
        .parse()
        .or_else(|_| plan_err!("invalid value '{value}' for shoal.{key}: expected a whole number"))
}

impl ShoalConfig {
    /// Reads `SHOAL_*` environment variables over the defaults (`SHOAL_WORKER_MEMORY_LIMIT`
    /// sets `shoal.worker.memory_limit`).
    pub fn from_env() -> Result<Self> {
        let mut config = Self::default();
        for (key, _) in KEYS {
            let var = format!("SHOAL_{}", key.replace('.', "_").to_ascii_uppercase());
            if let Ok(value) = std::env::var(&var)
                && let Err(e) = config.set(key, &value)
            {
                return plan_err!("{var}: {}", e.message());
            }
        }
        Ok(config)
    }

    fn value_of(&self, key: &str) -> String {
        match key {
            "workers" => self.workers.to_string(),
            "worker.slots" => self.worker_slots.to_string(),
            "worker.memory_limit" => self.worker_memory_limit.to_string(),
            "store.memory_target" => self.store_memory_target.to_string(),
            "execution.partitions" => self.partitions.to_string(),
            "scratch_dir" => self.scratch_dir.clone(),
            "task.resources" => self.task_resources.clone(),
            "task.placement_timeout" => self.placement_timeout_secs.to_string(),
            "data_plane" => self.data_plane.clone(),
            "array.reduce_fan_in" => self.array_reduce_fan_in.to_string(),
            _ => String::new(),
        }
    }

    /// The parsed `shoal.task.resources`.
    pub fn task_resources(&self) -> crate::resources::Resources {
        crate::resources::Resources::parse(&self.task_resources).unwrap_or_default()
    }

    /// `shoal.task.placement_timeout` as a duration.
    pub fn placement_timeout(&self) -> std::time::Duration {
        std::time::Duration::try_from_secs_f64(self.placement_timeout_secs)
            .unwrap_or(std::time::Duration::MAX)
    }

    /// Markdown reference of every key, generated from [`KEYS`].
    pub fn reference_markdown() -> String {
        let mut out = String::from("| key | default | description |\n|---|---|---|\n");
        let defaults = Self::default();
        for (key, doc) in KEYS {
            let value = defaults.value_of(key);
            let value = if value.is_empty() {
                "(none)".to_string()
            } else {
                format!("`{value}`")
            };
            out.push_str(&format!("| `shoal.{key}` | {value} | {doc} |\n"));
        }
        out
    }
}

impl ConfigExtension for ShoalConfig {
    const PREFIX: &'static str = "shoal";
}

impl ExtensionOptions for ShoalConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        if self.started && FIXED_AT_START.contains(&key) {
            let var = format!("SHOAL_{}", key.replace('.', "_").to_ascii_uppercase());
            return plan_err!(
                "shoal.{key} is fixed when the session starts; set it with Session::builder, a CLI flag or {var}"
            );
        }
        match key {
            "workers" => self.workers = parse_count(key, value)?,
            "worker.slots" => self.worker_slots = parse_count(key, value)?.max(1),
            "worker.memory_limit" => self.worker_memory_limit = parse_bytes(value)?,
            "store.memory_target" => self.store_memory_target = parse_bytes(value)?,
            "execution.partitions" => self.partitions = parse_count(key, value)?,
            "scratch_dir" => self.scratch_dir = value.to_string(),
            "array.reduce_fan_in" => self.array_reduce_fan_in = parse_count(key, value)?.max(2),
            "data_plane" => {
                let v = value.trim().to_ascii_lowercase();
                if v != "in_process" && v != "flight" {
                    return plan_err!(
                        "invalid value '{value}' for shoal.data_plane: expected in_process or flight"
                    );
                }
                self.data_plane = v;
            }
            "task.resources" => {
                crate::resources::Resources::parse(value)?;
                self.task_resources = value.trim().to_string();
            }
            "task.placement_timeout" => {
                self.placement_timeout_secs = match value
                    .trim()
                    .trim_end_matches('s')
                    .parse::<f64>()
                {
                    Ok(v) if (0.0..=1e9).contains(&v) => v,
                    _ => {
                        return plan_err!(
                            "invalid value '{value}' for shoal.task.placement_timeout: expected seconds from 0 to 1e9"
                        );
                    }
                }
            }
            other => {
                let known: Vec<String> = KEYS.iter().map(|(k, _)| format!("shoal.{k}")).collect();
                return plan_err!(
                    "unknown setting 'shoal.{other}'; known: {}",
                    known.join(", ")
                );
            }
        }
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        KEYS.iter()
            .map(|(key, doc)| ConfigEntry {
                key: format!("shoal.{key}"),
                value: Some(self.value_of(key)),
                description: doc,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_keys() {
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("2gib").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("lots").is_err());
        let mut c = ShoalConfig::default();
        c.set("worker.memory_limit", "32MiB").unwrap();
        assert_eq!(c.worker_memory_limit, 32 << 20);
        let err = c.set("worker.cpus", "2").unwrap_err().to_string();
        assert!(err.contains("unknown setting 'shoal.worker.cpus'"), "{err}");
        assert!(ShoalConfig::reference_markdown().contains("shoal.execution.partitions"));
    }
}
