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

/// A cluster's scheduler, once started.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// The scheduler's URL.
    pub scheduler: String,
    /// Its dashboard's URL.
    pub dashboard: String,
    /// What the backend started, to stop it later.
    pub ids: Value,
}

/// Where clusters run: processes on this host, Slurm jobs, Kubernetes pods.
pub trait Backend: Send + Sync {
    /// Starts cluster `name`'s scheduler and every group's workers, all with `token`.
    /// On an error, whatever it started is stopped again.
    fn start(&self, name: &str, token: &str, spec: &ClusterSpec) -> Result<Started, String>;

    /// Starts `count` more workers of `group` for the cluster whose scheduler is at
    /// `scheduler`, adding them to `ids`.
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

    /// Whether the cluster's scheduler still runs, as far as the backend can tell
    /// (killed from outside, it does not).
    fn scheduler_alive(&self, ids: &Value) -> bool;

    /// Forgets the workers of `ids` that have ended (retired or killed).
    fn prune(&self, ids: &mut Value);
}

/// Processes on the gateway's own host, each in its own process group so that they
/// outlive the gateway (a restarted gateway finds them by their process ids).
pub struct LocalBackend {
    exe: PathBuf,
    dir: PathBuf,
    /// Children of this gateway process, reaped as they end.
    children: Mutex<Vec<Child>>,
}

/// How long a scheduler may take to print its URL.
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl LocalBackend {
    /// Runs clusters with the `shoal` binary `exe`, keeping their logs under `dir`.
    pub fn new(exe: PathBuf, dir: PathBuf) -> Self {
        Self {
            exe,
            dir,
            children: Mutex::new(Vec::new()),
        }
    }

    fn spawn(&self, command: &mut Command) -> Result<u32, String> {
        let child = command
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let pid = child.id();
        self.children.lock().push(child);
        Ok(pid)
    }

    /// Waits until the scheduler writing `out` printed its URL and its dashboard's.
    fn read_urls(&self, pid: u32, out: &Path, log: &Path) -> Result<(String, String), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(out).unwrap_or_default();
            let find = |prefix: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .map(|u| u.trim().to_string())
            };
            let scheduler = find("shoal scheduler listening on ");
            let dashboard = find("shoal dashboard at ");
            if let (Some(scheduler), Some(dashboard)) = (scheduler, dashboard) {
                return Ok((scheduler, dashboard));
            }
            if !self.alive(pid) {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                let last = log.lines().last().unwrap_or("no message");
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

    /// Whether process `pid` runs (not ended, not a zombie); reaps ended children.
    fn alive(&self, pid: u32) -> bool {
        self.children
            .lock()
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // The state follows the command name, which is in parentheses.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim().chars().next());
        !matches!(state, None | Some('Z' | 'X'))
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

/// Process ids of `ids`: the scheduler's, then every worker's.
fn pids(ids: &Value) -> (Option<u32>, Vec<u32>) {
    let scheduler = ids["scheduler"].as_u64().map(|p| p as u32);
    let workers = ids["workers"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|p| p.as_u64())
                .map(|p| p as u32)
                .collect()
        })
        .unwrap_or_default();
    (scheduler, workers)
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

impl Backend for LocalBackend {
    fn start(&self, name: &str, token: &str, spec: &ClusterSpec) -> Result<Started, String> {
        let out_path = self.dir.join(name).join("scheduler.out");
        let log_path = self.dir.join(name).join("scheduler.log");
        let out = self.log_file(name, "scheduler.out")?;
        let log = self.log_file(name, "scheduler.log")?;
        let pid = self.spawn(
            Command::new(&self.exe)
                .args(["scheduler", "--bind", "127.0.0.1:0"])
                .args(["--dashboard-bind", "127.0.0.1:0"])
                .env("SHOAL_TOKEN", token)
                .stdout(out)
                .stderr(log),
        )?;
        let mut ids = json!({"scheduler": pid, "workers": []});
        let started = self
            .read_urls(pid, &out_path, &log_path)
            .and_then(|(url, board)| {
                for (group, shape) in &spec.groups {
                    self.add_workers(name, token, &url, (group, shape), shape.workers, &mut ids)?;
                }
                Ok((url, board))
            });
        match started {
            Ok((scheduler, dashboard)) => Ok(Started {
                scheduler,
                dashboard,
                ids,
            }),
            Err(e) => {
                self.stop(&ids);
                Err(e)
            }
        }
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
            let pid = self.spawn(&mut command)?;
            if let Some(workers) = ids["workers"].as_array_mut() {
                workers.push(json!(pid));
            }
        }
        Ok(())
    }

    fn stop(&self, ids: &Value) {
        let (scheduler, workers) = pids(ids);
        let all: Vec<u32> = workers.into_iter().chain(scheduler).collect();
        for &pid in &all {
            if self.alive(pid) {
                signal(pid, "TERM");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while all.iter().any(|&p| self.alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in all {
            if self.alive(pid) {
                signal(pid, "KILL");
            }
        }
    }

    fn scheduler_alive(&self, ids: &Value) -> bool {
        pids(ids).0.is_some_and(|pid| self.alive(pid))
    }

    fn prune(&self, ids: &mut Value) {
        let (_, workers) = pids(ids);
        let alive: Vec<u32> = workers.into_iter().filter(|&p| self.alive(p)).collect();
        ids["workers"] = json!(alive);
    }
}
