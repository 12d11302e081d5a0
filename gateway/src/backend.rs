//! Backends start and stop the processes of a cluster. Every backend records what it
//! started as JSON in the gateway's database, so a restarted gateway can stop it.

use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::spec::{ClusterSpec, GroupSpec};
use crate::tls::ClusterTls;

/// A cluster's scheduler, once started.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// The scheduler's URL.
    pub scheduler: String,
    /// Its dashboard's URL.
    pub dashboard: String,
    /// What the backend started, to stop it later.
    pub ids: Value,
    /// The PEM certificate of the cluster's authority, when it speaks TLS.
    pub tls_ca: Option<String>,
}

/// Where clusters run: processes on this host, Slurm jobs, Kubernetes pods.
pub trait Backend: Send + Sync {
    /// Starts cluster `name`'s scheduler and every group's workers, all with `token`,
    /// calling `record` with what it started so far after each start (so that a gateway
    /// that dies part-way can stop it). On an error, whatever it started is stopped.
    fn start(
        &self,
        name: &str,
        token: &str,
        spec: &ClusterSpec,
        record: &dyn Fn(&Value),
    ) -> Result<Started, String>;

    /// Starts `count` more workers of `group` for the cluster whose scheduler is at
    /// `scheduler`, adding each to `ids` as it starts (on an error, `ids` still holds
    /// those that started).
    fn add_workers(
        &self,
        name: &str,
        token: &str,
        scheduler: &str,
        group: (&str, &GroupSpec),
        count: usize,
        ids: &mut Value,
    ) -> Result<(), String>;

    /// Stops everything in `ids`.
    fn stop(&self, ids: &Value);

    /// Why the cluster's scheduler no longer runs (killed from outside, its job
    /// cancelled), or `None` while it runs as far as the backend can tell.
    fn scheduler_ended(&self, ids: &Value) -> Option<String>;

    /// Forgets the workers of `ids` that have ended (retired or killed).
    fn prune(&self, ids: &mut Value);

    /// How long started workers may take to join (queued jobs and image pulls take
    /// longer than processes).
    fn join_timeout(&self) -> Duration {
        Duration::from_secs(60)
    }
}

/// Processes on the gateway's own host, each in its own process group so that they
/// outlive the gateway (a restarted gateway finds them by their process ids).
pub struct LocalBackend {
    exe: PathBuf,
    dir: PathBuf,
    /// Whether clusters get certificates of their own and speak TLS.
    tls: bool,
    /// Children of this gateway process, reaped as they end.
    children: Mutex<Vec<Child>>,
}

/// How long a scheduler may take to print its URL.
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl LocalBackend {
    /// Runs clusters with the `shoal` binary `exe`, keeping their logs under `dir`; with
    /// `tls`, each gets its own certificate authority.
    pub fn new(exe: PathBuf, dir: PathBuf, tls: bool) -> Self {
        Self {
            exe,
            dir,
            tls,
            children: Mutex::new(Vec::new()),
        }
    }

    /// Starts `command` in its own process group; returns its id as stored: the pid
    /// and its start time, so that a pid the system reused is not taken for it.
    fn spawn(&self, command: &mut Command) -> Result<Value, String> {
        let child = command
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let pid = child.id();
        self.children.lock().push(child);
        Ok(json!([pid, start_time(pid).unwrap_or(0)]))
    }

    /// Waits for the children of this gateway that ended, so they leave no zombies.
    fn reap(&self) {
        self.children
            .lock()
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
    }

    /// Waits until the scheduler writing `out` printed its URL and its dashboard's.
    fn read_urls(&self, id: &Value, out: &Path, log: &Path) -> Result<(String, String), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(urls) = scheduler_urls(out) {
                return Ok(urls);
            }
            self.reap();
            if !running(id) {
                let last = last_line(log);
                return Err(format!("the scheduler exited at start: {last}"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the scheduler did not start within {} s",
                    START_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_file(&self, name: &str, file: &str) -> Result<File, String> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(file);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))
    }
}

/// The ids of `ids` as strings: the scheduler's, then each worker's as `worker` reads
/// it from its entry.
pub(crate) fn scheduler_then_workers(
    ids: &Value,
    worker: impl Fn(&Value) -> &Value,
) -> Vec<String> {
    let workers = ids["workers"].as_array().cloned().unwrap_or_default();
    [&ids["scheduler"]]
        .into_iter()
        .chain(workers.iter().map(worker))
        .filter_map(|id| id.as_str().map(str::to_string))
        .collect()
}

/// A cluster's scheduler, once it answers.
pub(crate) struct Ready {
    /// Its URL, as the cluster's users reach it.
    pub scheduler: String,
    /// Its dashboard's URL.
    pub dashboard: String,
    /// The cluster's authority, when it speaks TLS.
    pub tls_ca: Option<String>,
    /// Its URL as the cluster's workers reach it.
    pub workers_url: String,
}

impl Ready {
    /// A scheduler that users and workers reach at the same `url`.
    pub(crate) fn at(url: String, dashboard: String, tls_ca: Option<String>) -> Self {
        Self {
            workers_url: url.clone(),
            scheduler: url,
            dashboard,
            tls_ca,
        }
    }
}

/// What a backend's `start` does once the scheduler answered (or failed to): starts
/// every group's workers, recording `ids` after each group. On any error, the
/// scheduler's included, everything in `ids` is stopped.
pub(crate) fn start_groups(
    backend: &dyn Backend,
    (name, token, spec): (&str, &str, &ClusterSpec),
    record: &dyn Fn(&Value),
    mut ids: Value,
    ready: Result<Ready, String>,
) -> Result<Started, String> {
    let added = ready.and_then(|ready| {
        for (group, shape) in &spec.groups {
            let count = shape.workers;
            let url = &ready.workers_url;
            let added = backend.add_workers(name, token, url, (group, shape), count, &mut ids);
            record(&ids);
            added?;
        }
        Ok(ready)
    });
    match added {
        Ok(ready) => Ok(Started {
            scheduler: ready.scheduler,
            dashboard: ready.dashboard,
            ids,
            tls_ca: ready.tls_ca,
        }),
        Err(e) => {
            backend.stop(&ids);
            Err(e)
        }
    }
}

/// The scheduler's URL and its dashboard's, once the scheduler writing `out` printed them.
pub(crate) fn scheduler_urls(out: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|u| u.trim().to_string())
    };
    Some((
        find("shoal scheduler listening on ")?,
        find("shoal dashboard at ")?,
    ))
}

/// The last line of the log at `path`, to say why a process ended.
pub(crate) fn last_line(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    log.lines().last().unwrap_or("no message").to_string()
}

/// The fields after the command name in `/proc/PID/stat` (the state first).
fn stat_fields(pid: u64) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// When process `pid` started, in clock ticks since boot (field 22 of its stat).
fn start_time(pid: u32) -> Option<u64> {
    stat_fields(u64::from(pid))?.get(19)?.parse().ok()
}

/// Whether process `id` (`[pid, start time]`) still runs: not ended, not a zombie, and
/// not another process that was given the same pid.
fn running(id: &Value) -> bool {
    let (Some(pid), Some(started)) = (id[0].as_u64(), id[1].as_u64()) else {
        return false;
    };
    let Some(fields) = stat_fields(pid) else {
        return false;
    };
    let state = fields.first().and_then(|s| s.chars().next());
    let same = fields.get(19).and_then(|s| s.parse::<u64>().ok()) == Some(started);
    same && !matches!(state, None | Some('Z' | 'X'))
}

/// Sends signal `name` to process `id` if it still runs.
fn signal(id: &Value, name: &str) {
    if let Some(pid) = id[0].as_u64().filter(|_| running(id)) {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

impl Backend for LocalBackend {
    fn start(
        &self,
        name: &str,
        token: &str,
        spec: &ClusterSpec,
        record: &dyn Fn(&Value),
    ) -> Result<Started, String> {
        let out_path = self.dir.join(name).join("scheduler.out");
        let log_path = self.dir.join(name).join("scheduler.log");
        let out = self.log_file(name, "scheduler.out")?;
        let log = self.log_file(name, "scheduler.log")?;
        let tls = match self.tls {
            true => {
                let hosts = ["localhost".to_string(), "127.0.0.1".to_string()];
                Some(ClusterTls::generate(&self.dir.join(name), name, &hosts)?)
            }
            false => None,
        };
        let mut command = Command::new(&self.exe);
        command.args(["scheduler", "--bind", "127.0.0.1:0"]);
        if let Some(tls) = &tls {
            command
                .arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key);
        }
        let scheduler = self.spawn(
            command
                // The dashboard shows the cluster's jobs: only to its token's holders.
                .args([
                    "--dashboard-bind",
                    "127.0.0.1:0",
                    "--dashboard-auth",
                    "token",
                ])
                .env("SHOAL_TOKEN", token)
                .stdout(out)
                .stderr(log),
        )?;
        let ids = json!({"scheduler": scheduler, "workers": []});
        record(&ids);
        let ready =
            self.read_urls(&scheduler, &out_path, &log_path)
                .and_then(|(url, dashboard)| {
                    Ok(Ready::at(
                        url,
                        dashboard,
                        tls.as_ref().map(ClusterTls::ca_pem).transpose()?,
                    ))
                });
        start_groups(self, (name, token, spec), record, ids, ready)
    }

    fn add_workers(
        &self,
        name: &str,
        token: &str,
        scheduler: &str,
        (group, shape): (&str, &GroupSpec),
        count: usize,
        ids: &mut Value,
    ) -> Result<(), String> {
        for _ in 0..count {
            let mut command = Command::new(&self.exe);
            command
                .args(["worker", "--scheduler", scheduler, "--group", group])
                .args(["--nthreads", &shape.slots.to_string()])
                .env("SHOAL_TOKEN", token)
                .stdout(Stdio::null())
                .stderr(self.log_file(name, &format!("workers-{group}.log"))?);
            if let Some(memory) = shape.memory {
                command.args(["--memory-limit", &memory.to_string()]);
            }
            if !shape.resources.is_empty() {
                command.args(["--resources", &shape.resources.to_string()]);
            }
            let tls = ClusterTls::in_dir(&self.dir.join(name));
            if tls.exists() {
                command
                    .arg("--tls-cert")
                    .arg(&tls.cert)
                    .arg("--tls-key")
                    .arg(&tls.key);
                command.arg("--tls-ca").arg(&tls.ca);
            }
            let id = self.spawn(&mut command)?;
            if let Some(workers) = ids["workers"].as_array_mut() {
                workers.push(id);
            }
        }
        Ok(())
    }

    fn stop(&self, ids: &Value) {
        let workers = ids["workers"].as_array().cloned().unwrap_or_default();
        let all: Vec<Value> = workers
            .into_iter()
            .chain([ids["scheduler"].clone()])
            .collect();
        for id in &all {
            signal(id, "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.reap();
            if !all.iter().any(running) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for id in &all {
            signal(id, "KILL");
        }
        self.reap();
    }

    fn scheduler_ended(&self, ids: &Value) -> Option<String> {
        self.reap();
        let pid = &ids["scheduler"][0];
        (!running(&ids["scheduler"]))
            .then(|| format!("the scheduler (process {pid}) ended without being stopped"))
    }

    fn prune(&self, ids: &mut Value) {
        self.reap();
        let workers = ids["workers"].as_array().cloned().unwrap_or_default();
        ids["workers"] = Value::Array(workers.into_iter().filter(running).collect());
    }
}
