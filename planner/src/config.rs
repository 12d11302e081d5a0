//! Shoal's settings, declared once: typed structs in DataFusion's `config_namespace!`
//! form (each field's doc is its description, its default is beside it), held in the
//! session's `ConfigOptions` as the `shoal` extension. `SET shoal.…` in SQL,
//! `Session::builder().option(..)`, the `SHOAL_*` environment variables (the key,
//! upper-cased, dots as underscores) and the README's settings table all read these
//! declarations; the CLI's flags are checked against them by a test.
//!
//! Process-level variables that are not settings of a session (the cluster URL, token,
//! TLS authority, log filter and BLAS library) are listed once, in [`ENVIRONMENT`].

use std::any::Any;
use std::fmt;

use datafusion::common::config::{
    ConfigEntry, ConfigExtension, ConfigField, ExtensionOptions, Visit,
};
use datafusion::common::{Result, config_field, config_namespace, plan_err};

/// A size in bytes, written with an optional unit: `123`, `64MiB`, `2GiB`, `1.5GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteSize(pub usize);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> usize {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

config_field!(ByteSize, value => ByteSize(parse_bytes(value)?));

/// How task outputs move between the workers of an embedded session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPlane {
    /// Batches shared by `Arc` in this process.
    #[default]
    InProcess,
    /// Arrow Flight over loopback gRPC with a session token, as between processes.
    Flight,
}

impl fmt::Display for DataPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataPlane::InProcess => "in_process",
            DataPlane::Flight => "flight",
        })
    }
}

impl DataPlane {
    fn parse(value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "in_process" => Ok(DataPlane::InProcess),
            "flight" => Ok(DataPlane::Flight),
            _ => plan_err!("expected in_process or flight"),
        }
    }
}

config_field!(DataPlane, value => DataPlane::parse(value)?);

config_namespace! {
    /// The shape of each worker.
    pub struct WorkerSettings {
        /// Task slots per worker (Dask's name for the flag; --cpus spells it too).
        pub slots: usize, default = 1
        /// Memory limit of each worker's operator pool, e.g. 512MiB (0: a share of the machine).
        pub memory_limit: ByteSize, default = ByteSize(0)
        /// Seconds a worker process keeps trying to register again after losing its scheduler (0: exit at once).
        pub reconnect_timeout: f64, default = 300.0
    }
}

config_namespace! {
    /// Each worker's store of task outputs.
    pub struct StoreSettings {
        /// Task output a worker keeps in memory before spilling to disk, e.g. 64MiB (0: half the worker limit).
        pub memory_target: ByteSize, default = ByteSize(0)
    }
}

config_namespace! {
    /// How queries are cut into tasks.
    pub struct ExecutionSettings {
        /// Partitions per exchange (0: total worker slots).
        pub partitions: usize, default = 0
        /// In a tree of inner joins over tables of local files, a small filtered table (a nation by name) joins right after the table it is joined with, not where FROM lists it.
        pub join_order: bool, default = true
        /// A broadcast hash join passes the bounds of its build keys to the probe side's Parquet scans in its stage, which skip row groups outside them; a partitioned one has its probe stage drop rows outside its build keys before the shuffle (embedded and on worker processes).
        pub join_dynamic_filters: bool, default = true
        /// A partitioned join whose probe stage filters by its build keys becomes a broadcast join at run time when its finished build stage wrote at most `datafusion.optimizer.hash_join_single_partition_threshold_rows` rows: the probe rows then stay with the task that made them (needs `join_dynamic_filters`).
        pub runtime_broadcast: bool, default = true
        /// A stage may start once every task of the stages it reads is placed, and reads their outputs as each finishes (off by default: no faster on TPC-H on 2 cores, see Performance).
        pub pipelined_exchanges: bool, default = false
    }
}

config_namespace! {
    /// What each task of a query asks of the worker that runs it.
    pub struct TaskSettings {
        /// Resources every task of a query asks for, e.g. gpu=1,ssd=1; only workers offering them run it (empty: none).
        pub resources: String, default = String::new()
        /// Seconds a job waits for a worker that can run its tasks before it fails.
        pub placement_timeout: f64, default = 60.0
    }
}

config_namespace! {
    /// A scheduler process (`shoal scheduler`, and the one `shoal local` starts).
    pub struct SchedulerSettings {
        /// Seconds without a heartbeat after which the scheduler counts a worker as lost.
        pub heartbeat_timeout: f64, default = 5.0
        /// Tasks in flight per worker slot, so a worker has its next task before it asks.
        pub prefetch: usize, default = 2
    }
}

config_namespace! {
    /// The web dashboard and metrics a scheduler (or an embedded session) serves.
    pub struct DashboardSettings {
        /// Address to serve the dashboard on, e.g. 127.0.0.1:8787 (port 0: a free port; empty: no dashboard).
        pub bind: String, default = String::new()
        /// Path prefix of every dashboard route behind a reverse proxy, e.g. /shoal (empty: the root).
        pub prefix: String, default = String::new()
        /// Who may read the dashboard: none (anyone who reaches it) or token (the cluster token, given once in the URL).
        pub auth: String, default = "none".to_string()
        /// Directory to write every job event to as JSON lines, in 64 MiB files of which the newest 8 are kept (empty: none); `shoal dashboard --replay DIR` serves them.
        pub event_log: String, default = String::new()
    }
}

config_namespace! {
    /// Array jobs.
    pub struct ArraySettings {
        /// Most chunks one task of an array reduction merges; larger means fewer, bigger combine tasks (at least 2).
        pub reduce_fan_in: usize, default = 16
    }
}

config_namespace! {
    /// Every Shoal setting, with its default; the `shoal.` keys are the field paths.
    pub struct ShoalSettings {
        /// Number of in-process workers an embedded session starts (0: one per core).
        pub workers: usize, default = 0
        /// `shoal.worker.*`.
        pub worker: WorkerSettings, default = WorkerSettings::default()
        /// `shoal.store.*`.
        pub store: StoreSettings, default = StoreSettings::default()
        /// `shoal.execution.*`.
        pub execution: ExecutionSettings, default = ExecutionSettings::default()
        /// Directory for spill files (empty: the system temporary directory).
        pub scratch_dir: String, default = String::new()
        /// `shoal.task.*`.
        pub task: TaskSettings, default = TaskSettings::default()
        /// How task outputs move between workers: in_process (shared by Arc) or flight (Arrow Flight over loopback gRPC with a session token); read when the session starts.
        pub data_plane: DataPlane, default = DataPlane::InProcess
        /// `shoal.scheduler.*`.
        pub scheduler: SchedulerSettings, default = SchedulerSettings::default()
        /// `shoal.array.*`.
        pub array: ArraySettings, default = ArraySettings::default()
        /// `shoal.dashboard.*`.
        pub dashboard: DashboardSettings, default = DashboardSettings::default()
    }
}

impl ShoalSettings {
    /// Fills the defaults that depend on the machine and the cluster; this is the only
    /// place they are computed. `cores` is this machine's; `cluster_slots` the task slots
    /// of a remote cluster's workers, when the session has one.
    pub fn resolve(&mut self, cores: usize, cluster_slots: Option<usize>) {
        if self.workers == 0 {
            self.workers = cores.max(1);
        }
        if self.worker.memory_limit.bytes() == 0 {
            self.worker.memory_limit = ByteSize(default_memory_limit(self.workers));
        }
        if self.store.memory_target.bytes() == 0 {
            self.store.memory_target =
                ByteSize(default_store_target(self.worker.memory_limit.bytes()));
        }
        if self.execution.partitions == 0 {
            self.execution.partitions = cluster_slots
                .unwrap_or(self.workers * self.worker.slots)
                .max(1);
        }
    }
}

impl ShoalSettings {
    /// Where spill files go: `scratch_dir`, or the system temporary directory.
    pub fn scratch_path(&self) -> std::path::PathBuf {
        if self.scratch_dir.is_empty() {
            std::env::temp_dir()
        } else {
            std::path::PathBuf::from(&self.scratch_dir)
        }
    }
}

/// Total memory of this machine in bytes, from `/proc/meminfo` (8 GiB if unknown).
pub fn machine_memory() -> usize {
    proc_kib("/proc/meminfo", "MemTotal:").unwrap_or(8 << 30)
}

/// The most memory this process has had resident, in bytes (`VmHWM` of
/// `/proc/self/status`; `None` where there is no such file).
pub fn peak_resident_memory() -> Option<usize> {
    proc_kib("/proc/self/status", "VmHWM:")
}

/// The value of the `key` line of a `/proc` file that counts kibibytes, in bytes.
fn proc_kib(path: &str, key: &str) -> Option<usize> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A worker's memory limit when none is set: half this machine's memory, shared by the
/// `workers` that run on it (in one process or as `shoal local`'s processes).
pub fn default_memory_limit(workers: usize) -> usize {
    machine_memory() / 2 / workers.max(1)
}

/// The result-store target of a worker whose limit is `memory_limit`, when none is set.
pub fn default_store_target(memory_limit: usize) -> usize {
    memory_limit / 2
}

/// Keys that shape the cluster and so only take effect when a session starts.
pub const FIXED_AT_START: &[&str] = &[
    "workers",
    "worker.slots",
    "worker.memory_limit",
    "store.memory_target",
    "scratch_dir",
    "data_plane",
    "scheduler.heartbeat_timeout",
    "scheduler.prefetch",
    "dashboard.bind",
    "dashboard.prefix",
    "dashboard.auth",
    "dashboard.event_log",
];

/// The settings `shoal` commands also take as flags, with the flag's name (the same on
/// every command that takes it; it reads the setting's `SHOAL_*` variable too).
pub const FLAGS: &[(&str, &str)] = &[
    ("workers", "--workers"),
    ("worker.slots", "--nthreads"),
    ("worker.memory_limit", "--memory-limit"),
    ("execution.partitions", "--partitions"),
    ("scratch_dir", "--scratch-dir"),
    ("scheduler.heartbeat_timeout", "--heartbeat-timeout"),
    ("scheduler.prefetch", "--prefetch"),
    ("dashboard.bind", "--dashboard-bind"),
    ("dashboard.prefix", "--dashboard-prefix"),
    ("dashboard.auth", "--dashboard-auth"),
    ("dashboard.event_log", "--event-log"),
];

/// Environment variables read by the `shoal` processes that are not session settings
/// (secrets and process-wide switches stay out of `SHOW ALL` and out of the settings
/// sent with every job): (variable, what it sets).
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "SHOAL_CLUSTER",
        "The scheduler URL a client connects to (`--cluster`).",
    ),
    (
        "SHOAL_TOKEN",
        "The cluster token schedulers, workers and clients present (`--token`).",
    ),
    (
        "SHOAL_GATEWAY",
        "The gateway URL the `shoal gateway` client commands call (`--gateway`).",
    ),
    (
        "SHOAL_GATEWAY_TOKEN",
        "The user's gateway token those commands present (`--gateway-token`).",
    ),
    (
        "SHOAL_GATEWAY_CA",
        "PEM certificate of the authority those commands trust for an https:// gateway \
         (`--gateway-ca`).",
    ),
    (
        "SHOAL_TLS_CA",
        "PEM certificate of the authority a client trusts for a TLS cluster (`--tls-ca`).",
    ),
    (
        "SHOAL_LOG",
        "Log filter for scheduler and worker processes, e.g. `info` or `shoal_exec=debug`.",
    ),
    (
        "SHOAL_BLAS",
        "The BLAS library matrix products load (`off`: none, the built-in `gemm` kernels run; \
         default: the system OpenBLAS when installed).",
    ),
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

/// The session's settings as DataFusion holds them: [`ShoalSettings`], and whether the
/// session has started (then keys that shape its cluster can no longer change).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShoalConfig {
    /// The settings.
    pub settings: ShoalSettings,
    /// Set once the session has started.
    pub started: bool,
}

/// (key, value, description) of each setting, in declaration order.
struct Entries(Vec<(String, String, &'static str)>);

impl Visit for Entries {
    fn some<V: fmt::Display>(&mut self, key: &str, value: V, description: &'static str) {
        self.0
            .push((key.to_string(), value.to_string(), description));
    }

    fn none(&mut self, key: &str, description: &'static str) {
        self.0.push((key.to_string(), String::new(), description));
    }
}

impl ShoalConfig {
    /// Every key, without the `shoal.` prefix, in declaration order.
    pub fn keys() -> Vec<String> {
        let settings = ShoalSettings::default();
        entries(&settings).into_iter().map(|(k, _, _)| k).collect()
    }

    /// The `SHOAL_*` variable of `key`: `worker.memory_limit` ↔ `SHOAL_WORKER_MEMORY_LIMIT`.
    pub fn env_var(key: &str) -> String {
        format!("SHOAL_{}", key.replace('.', "_").to_ascii_uppercase())
    }

    /// Reads `SHOAL_*` environment variables over the defaults.
    pub fn from_env() -> Result<Self> {
        let mut config = Self::default();
        for key in Self::keys() {
            let var = Self::env_var(&key);
            if let Ok(value) = std::env::var(&var)
                && let Err(e) = config.set(&key, &value)
            {
                return plan_err!("{var}: {}", e.message());
            }
        }
        Ok(config)
    }

    /// The parsed `shoal.task.resources`.
    pub fn task_resources(&self) -> crate::resources::Resources {
        crate::resources::Resources::parse(&self.settings.task.resources).unwrap_or_default()
    }

    /// `shoal.task.placement_timeout` as a duration.
    pub fn placement_timeout(&self) -> std::time::Duration {
        std::time::Duration::try_from_secs_f64(self.settings.task.placement_timeout)
            .unwrap_or(std::time::Duration::MAX)
    }

    /// Markdown reference of every key with its default and description.
    pub fn reference_markdown() -> String {
        let mut out = String::from("| key | default | flag | description |\n|---|---|---|---|\n");
        for (key, value, doc) in entries(&ShoalSettings::default()) {
            let value = if value.is_empty() {
                "(none)".to_string()
            } else {
                format!("`{value}`")
            };
            let flag = FLAGS
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, flag)| format!("`{flag}`"))
                .unwrap_or_default();
            out.push_str(&format!("| `shoal.{key}` | {value} | {flag} | {doc} |\n"));
        }
        out.push_str(
            "\nOther variables, not session settings:\n\n| variable | sets |\n|---|---|\n",
        );
        for (var, doc) in ENVIRONMENT {
            out.push_str(&format!("| `{var}` | {doc} |\n"));
        }
        out
    }

    /// Checks what `set` cannot: ranges and formats that span a field's type.
    fn check(settings: &ShoalSettings) -> Result<()> {
        if let Err(e) = crate::resources::Resources::parse(&settings.task.resources) {
            return plan_err!("shoal.task.resources: {}", e.message());
        }
        let timeout = settings.task.placement_timeout;
        if !(0.0..=1e9).contains(&timeout) {
            return plan_err!(
                "invalid value '{timeout}' for shoal.task.placement_timeout: expected seconds from 0 to 1e9"
            );
        }
        if settings.worker.slots == 0 {
            return plan_err!("shoal.worker.slots must be at least 1");
        }
        let heartbeat = settings.scheduler.heartbeat_timeout;
        if !(heartbeat > 0.0 && heartbeat <= 1e9) {
            return plan_err!(
                "invalid value '{heartbeat}' for shoal.scheduler.heartbeat_timeout: expected seconds above 0, at most 1e9"
            );
        }
        if settings.array.reduce_fan_in < 2 {
            return plan_err!("shoal.array.reduce_fan_in must be at least 2");
        }
        let prefix = &settings.dashboard.prefix;
        if let Some(bad) = prefix
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "/-._~".contains(*c)))
        {
            return plan_err!(
                "invalid value '{prefix}' for shoal.dashboard.prefix: '{bad}' is not allowed in a path prefix (letters, digits and / - . _ ~)"
            );
        }
        let auth = &settings.dashboard.auth;
        if auth != "none" && auth != "token" {
            return plan_err!(
                "invalid value '{auth}' for shoal.dashboard.auth: expected none or token"
            );
        }
        Ok(())
    }
}

/// (key, value, description) of every setting of `settings`.
fn entries(settings: &ShoalSettings) -> Vec<(String, String, &'static str)> {
    let mut visitor = Entries(Vec::new());
    settings.visit(&mut visitor, "", "");
    visitor
        .0
        .into_iter()
        .map(|(key, value, doc)| (key.trim_start_matches('.').to_string(), value, doc))
        .collect()
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
        let keys = Self::keys();
        if !keys.iter().any(|k| k == key) {
            let known: Vec<String> = keys.iter().map(|k| format!("shoal.{k}")).collect();
            return plan_err!("unknown setting 'shoal.{key}'; known: {}", known.join(", "));
        }
        if self.started && FIXED_AT_START.contains(&key) {
            let var = Self::env_var(key);
            return plan_err!(
                "shoal.{key} is fixed when the session starts; set it with Session::builder, a CLI flag or {var}"
            );
        }
        let mut changed = self.settings.clone();
        let mut value = value.trim();
        if key == "task.placement_timeout" || key == "scheduler.heartbeat_timeout" {
            // Seconds, with or without the unit.
            value = value.trim_end_matches('s');
        }
        if let Err(e) = changed.set(key, value) {
            let message = e.message();
            // DataFusion's parse errors chain their cause on the same line.
            let why = message.split(" caused by").next().unwrap_or_default();
            return if why.contains(&format!("'{value}'")) {
                plan_err!("shoal.{key}: {why}")
            } else {
                plan_err!("invalid value '{value}' for shoal.{key}: {why}")
            };
        }
        Self::check(&changed)?;
        self.settings = changed;
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        // DataFusion lists an extension's entries under the keys it gives: with the
        // prefix, so `SHOW shoal.…` and `information_schema.df_settings` find them.
        entries(&self.settings)
            .into_iter()
            .map(|(key, value, description)| ConfigEntry {
                key: format!("shoal.{key}"),
                value: Some(value),
                description,
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
        assert_eq!(c.settings.worker.memory_limit.bytes(), 32 << 20);
        let err = c.set("worker.cpus", "2").unwrap_err().to_string();
        assert!(err.contains("unknown setting 'shoal.worker.cpus'"), "{err}");
        assert!(ShoalConfig::reference_markdown().contains("shoal.execution.partitions"));
    }

    #[test]
    fn machine_dependent_defaults_resolve_once_and_keep_what_was_set() {
        let mut s = ShoalSettings::default();
        s.resolve(4, None);
        assert_eq!(s.workers, 4);
        assert_eq!(s.worker.memory_limit.bytes(), machine_memory() / 2 / 4);
        assert_eq!(
            s.store.memory_target.bytes(),
            s.worker.memory_limit.bytes() / 2
        );
        assert_eq!(s.execution.partitions, 4);
        let mut s = ShoalSettings {
            workers: 2,
            worker: WorkerSettings {
                slots: 3,
                memory_limit: ByteSize(1 << 30),
                ..Default::default()
            },
            ..Default::default()
        };
        s.resolve(16, None);
        assert_eq!((s.workers, s.execution.partitions), (2, 6));
        assert_eq!(s.store.memory_target.bytes(), 512 << 20);
        let mut s = ShoalSettings::default();
        s.resolve(16, Some(5));
        assert_eq!(s.execution.partitions, 5, "a cluster's slots decide");
    }

    #[test]
    fn defaults_come_from_the_declarations_and_bad_values_change_nothing() {
        let c = ShoalConfig::default();
        assert_eq!(c.settings.worker.slots, 1);
        assert_eq!(c.settings.task.placement_timeout, 60.0);
        assert_eq!(c.settings.array.reduce_fan_in, 16);
        assert_eq!(
            ShoalConfig::keys(),
            [
                "workers",
                "worker.slots",
                "worker.memory_limit",
                "worker.reconnect_timeout",
                "store.memory_target",
                "execution.partitions",
                "execution.join_order",
                "execution.join_dynamic_filters",
                "execution.runtime_broadcast",
                "execution.pipelined_exchanges",
                "scratch_dir",
                "task.resources",
                "task.placement_timeout",
                "data_plane",
                "scheduler.heartbeat_timeout",
                "scheduler.prefetch",
                "array.reduce_fan_in",
                "dashboard.bind",
                "dashboard.prefix",
                "dashboard.auth",
                "dashboard.event_log",
            ]
        );
        assert_eq!(c.settings.dashboard.auth, "none");
        let mut c = ShoalConfig::default();
        for (key, value) in [
            ("data_plane", "carrier-pigeon"),
            ("array.reduce_fan_in", "1"),
            ("task.placement_timeout", "-1"),
            ("task.resources", "gpu"),
            ("worker.memory_limit", "lots"),
            ("scheduler.heartbeat_timeout", "0"),
            ("scheduler.prefetch", "-2"),
            ("dashboard.auth", "password"),
            ("dashboard.prefix", "/{job}"),
        ] {
            let err = c.set(key, value).unwrap_err().to_string();
            assert!(err.contains(&format!("shoal.{key}")), "{err}");
        }
        assert_eq!(c, ShoalConfig::default());
        c.set("task.placement_timeout", "2.5s").unwrap();
        assert_eq!(c.settings.task.placement_timeout, 2.5);
        c.set("data_plane", "FLIGHT").unwrap();
        assert_eq!(c.settings.data_plane, DataPlane::Flight);
        c.set("scheduler.heartbeat_timeout", "0.5s").unwrap();
        assert_eq!(c.settings.scheduler.heartbeat_timeout, 0.5);
    }
}
