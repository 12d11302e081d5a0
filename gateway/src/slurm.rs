//! The `slurm` backend: a cluster's scheduler is one Slurm batch job, and every start of
//! workers of a group is another batch job whose one `srun` job step runs a worker per
//! task. Jobs are submitted with `sbatch`, watched with `squeue` and stopped with `scancel`,
//! all run as the gateway's user; each cluster's scripts and logs live under the gateway's
//! `data_dir/clusters/NAME/`, which the compute nodes must share with the gateway's host.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::backend::{
    Backend, Ready, Started, last_line, scheduler_then_workers, scheduler_urls, start_groups,
};
use crate::config::SlurmConfig;
use crate::spec::{ClusterSpec, GroupSpec};
use crate::tls::ClusterTls;

/// Starts clusters as Slurm jobs.
pub struct SlurmBackend {
    shoal: PathBuf,
    dir: PathBuf,
    host: Option<String>,
    sbatch_args: Vec<String>,
    start_timeout: Duration,
    /// Whether clusters get certificates of their own (naming `host`) and speak TLS.
    tls: bool,
}

/// Job states in which a job holds, or will hold, its processes.
const LIVE_STATES: [&str; 11] = [
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "RESV_DEL_HOLD",
];

/// The first line of every script: without the cluster token, nothing starts.
const TOKEN_CHECK: &str = ": \"${SHOAL_TOKEN:?the cluster token did not reach the job}\"\n";

/// How long `stop` waits for cancelled jobs to leave the queue.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// `text` as one word for `sh`.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Runs a Slurm command; its standard output, or its first error line.
fn slurm(program: &str, args: &[String], env: &[(&str, &str)]) -> Result<String, String> {
    let mut command = Command::new(program);
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or("no message");
        return Err(format!("{program} failed ({}): {first}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The state of every job of this user that Slurm still knows, by job id.
fn job_states() -> Result<HashMap<String, String>, String> {
    let args = ["--me", "--noheader", "--states=all", "--format=%i|%T"].map(String::from);
    let out = slurm("squeue", &args, &[])?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().split_once('|'))
        .map(|(id, state)| (id.to_string(), state.to_string()))
        .collect())
}

fn live(state: Option<&String>) -> bool {
    state.is_some_and(|s| LIVE_STATES.contains(&s.as_str()))
}

/// Every job id in `ids`: the scheduler's, then the workers'.
fn job_ids(ids: &Value) -> Vec<String> {
    scheduler_then_workers(ids, |w| &w["job"])
}

impl SlurmBackend {
    /// Runs clusters with the `shoal` binary `shoal` (unless the configuration names
    /// another), keeping their scripts and logs under `dir`; with `tls`, each cluster gets
    /// its own certificate authority (the configuration's `host` must be set).
    pub fn new(shoal: PathBuf, dir: PathBuf, config: &SlurmConfig, tls: bool) -> Self {
        // Slurm reads paths from the job's directory: give it whole ones.
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Self {
            tls,
            shoal: config.shoal.clone().unwrap_or(shoal),
            dir,
            host: config.host.clone(),
            sbatch_args: config.sbatch_args.clone(),
            start_timeout: config.start_timeout.unwrap_or(Duration::from_secs(300)),
        }
    }

    fn cluster_dir(&self, name: &str) -> Result<PathBuf, String> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(dir)
    }

    /// `--bind`'s value in a script: the configured host, or the node's own name.
    fn bind(&self) -> String {
        match &self.host {
            Some(host) => quote(&format!("{host}:0")),
            None => r#""$(hostname):0""#.to_string(),
        }
    }

    /// Writes `script` as `file` in the cluster's directory and submits it with
    /// `options`; the job's id.
    fn submit(
        &self,
        (name, token): (&str, &str),
        file: &str,
        options: &[String],
        script: &str,
    ) -> Result<String, String> {
        let dir = self.cluster_dir(name)?;
        let path = dir.join(file);
        std::fs::write(&path, script)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let mut args = vec![
            "--parsable".to_string(),
            format!("--chdir={}", dir.display()),
            // A lost node must not start the job again elsewhere, behind the gateway's back.
            "--no-requeue".to_string(),
        ];
        args.extend(options.iter().cloned());
        args.extend(self.sbatch_args.iter().cloned());
        // The token reaches the job through its environment, whatever the site's default.
        args.push("--export=ALL".to_string());
        args.push(path.display().to_string());
        let out = slurm("sbatch", &args, &[("SHOAL_TOKEN", token)])?;
        // `--parsable` prints `ID` or `ID;CLUSTER`.
        let id = out.trim().split(';').next().unwrap_or_default().to_string();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("sbatch printed no job id: {}", out.trim()));
        }
        Ok(id)
    }

    /// Waits until the scheduler of job `job` printed its URLs to `out`.
    fn read_urls(&self, job: &str, out: &Path, log: &Path) -> Result<(String, String), String> {
        let deadline = Instant::now() + self.start_timeout;
        let mut asked = Instant::now();
        let mut state = "PENDING".to_string();
        loop {
            if let Some(urls) = scheduler_urls(out) {
                return Ok(urls);
            }
            if asked.elapsed() > Duration::from_millis(500) {
                asked = Instant::now();
                // Slurm busy for a moment is not the job's end: ask again until the deadline.
                let states = match job_states() {
                    Ok(states) => states,
                    Err(e) => {
                        tracing::warn!("{e}");
                        continue;
                    }
                };
                if !live(states.get(job)) {
                    let ended = states.get(job).map_or("gone", String::as_str);
                    let last = last_line(log);
                    return Err(format!(
                        "the scheduler's Slurm job {job} ended at start ({ended}): {last}"
                    ));
                }
                state = states[job].clone();
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the scheduler's Slurm job {job} did not start within {} s (it is {state})",
                    self.start_timeout.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What a cluster's certificate names: the configured `host`, or else every node
    /// Slurm has (names and addresses, since any may run a scheduler or a worker), with
    /// the addresses they resolve to (the processes advertise what they bound).
    fn tls_names(&self) -> Result<Vec<String>, String> {
        let mut names: Vec<String> = match &self.host {
            Some(host) => vec![host.clone()],
            None => {
                let args = ["--noheader", "--Node", "--format=%N|%n|%o"].map(String::from);
                slurm("sinfo", &args, &[])?
                    .lines()
                    .flat_map(|l| l.trim().split('|').map(str::to_string).collect::<Vec<_>>())
                    .filter(|n| !n.is_empty() && n != "(null)")
                    .collect()
            }
        };
        let resolved: Vec<String> = names
            .iter()
            .filter_map(|n| std::net::ToSocketAddrs::to_socket_addrs(&(n.as_str(), 0)).ok())
            .flatten()
            .map(|a| a.ip().to_string())
            .collect();
        names.extend(resolved);
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The TLS flags of the cluster's processes (`with_ca`: workers, which also connect
    /// to peers), when the cluster has certificates.
    fn tls_flags(&self, name: &str, with_ca: bool) -> String {
        let tls = ClusterTls::in_dir(&self.dir.join(name));
        if !tls.exists() {
            return String::new();
        }
        let path = |p: &Path| quote(&p.display().to_string());
        let mut flags = format!(
            " --tls-cert {} --tls-key {}",
            path(&tls.cert),
            path(&tls.key)
        );
        if with_ca {
            flags.push_str(&format!(" --tls-ca {}", path(&tls.ca)));
        }
        flags
    }

    fn start_scheduler(&self, name: &str, token: &str) -> Result<String, String> {
        let dir = self.cluster_dir(name)?;
        if self.tls {
            ClusterTls::generate(&dir, name, &self.tls_names()?)?;
        }
        let script = format!(
            "#!/bin/sh\n# shoal gateway: the scheduler of cluster {name}\n{TOKEN_CHECK}exec {} scheduler \
             --bind {bind} --dashboard-bind {bind} --dashboard-auth token{tls}\n",
            quote(&self.shoal.display().to_string()),
            bind = self.bind(),
            tls = self.tls_flags(name, false),
        );
        let options = [
            format!("--job-name=shoal-{name}-scheduler"),
            "--ntasks=1".into(),
            "--cpus-per-task=1".into(),
            // Without it, a site where memory is consumable gives it the whole node's.
            "--mem=1G".into(),
            format!("--output={}", dir.join("scheduler.out").display()),
            format!("--error={}", dir.join("scheduler.log").display()),
        ];
        self.submit((name, token), "scheduler.sbatch", &options, &script)
    }
}

impl Backend for SlurmBackend {
    fn start(
        &self,
        name: &str,
        token: &str,
        spec: &ClusterSpec,
        record: &dyn Fn(&Value),
    ) -> Result<Started, String> {
        let job = self.start_scheduler(name, token)?;
        let ids = json!({"scheduler": job, "workers": []});
        record(&ids);
        let dir = self.dir.join(name);
        let (out, log) = (dir.join("scheduler.out"), dir.join("scheduler.log"));
        let ready = self
            .read_urls(&job, &out, &log)
            .and_then(|(url, dashboard)| {
                let tls_ca = match self.tls {
                    true => Some(ClusterTls::in_dir(&dir).ca_pem()?),
                    false => None,
                };
                Ok(Ready::at(url, dashboard, tls_ca))
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
        if count == 0 {
            return Ok(());
        }
        let mut worker = vec![
            quote(&self.shoal.display().to_string()),
            "worker".into(),
            format!("--scheduler {}", quote(scheduler)),
            format!("--group {}", quote(group)),
            format!("--nthreads {}", shape.slots),
        ];
        if let Some(memory) = shape.memory {
            worker.push(format!("--memory-limit {memory}"));
        }
        if !shape.resources.is_empty() {
            worker.push(format!(
                "--resources {}",
                quote(&shape.resources.to_string())
            ));
        }
        let tls = self.tls_flags(name, true);
        if !tls.is_empty() {
            worker.push(tls.trim().to_string());
        }
        // Each task binds its own node's address: the name is read on the node.
        let step = match &self.host {
            Some(_) => format!("{} --bind {}", worker.join(" "), self.bind()),
            None => format!(
                "sh -c 'exec \"$@\" --bind \"$(hostname):0\"' sh {}",
                worker.join(" ")
            ),
        };
        let script = format!(
            "#!/bin/sh\n# shoal gateway: workers of group {group} of cluster {name}, one per \
             task\n{TOKEN_CHECK}exec srun --cpus-per-task={} {step}\n",
            shape.slots
        );
        let dir = self.cluster_dir(name)?;
        let mut options = vec![
            format!("--job-name=shoal-{name}-{group}"),
            format!("--ntasks={count}"),
            format!("--cpus-per-task={}", shape.slots),
            "--output=/dev/null".into(),
            format!(
                "--error={}",
                dir.join(format!("workers-{group}.log")).display()
            ),
            "--open-mode=append".into(),
        ];
        if let Some(memory) = shape.memory {
            let per_cpu = memory.div_ceil(shape.slots as u64).div_ceil(1 << 20);
            options.push(format!("--mem-per-cpu={per_cpu}M"));
        }
        let file = format!("workers-{group}.sbatch");
        let job = self.submit((name, token), &file, &options, &script)?;
        if let Some(workers) = ids["workers"].as_array_mut() {
            workers.push(json!({"job": job, "group": group, "workers": count}));
        }
        Ok(())
    }

    fn stop(&self, ids: &Value) {
        let jobs = job_ids(ids);
        if jobs.is_empty() {
            return;
        }
        if let Err(e) = slurm("scancel", &jobs, &[]) {
            tracing::warn!("cancelling Slurm jobs {}: {e}", jobs.join(","));
        }
        // Cancelled jobs stay in the queue as COMPLETING until their processes ended.
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match job_states() {
                Ok(states) => {
                    let held = |j: &String| {
                        let state = states.get(j);
                        live(state) || state.is_some_and(|s| s == "COMPLETING")
                    };
                    if !jobs.iter().any(held) {
                        return;
                    }
                }
                Err(e) => tracing::warn!("{e}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        tracing::warn!("Slurm jobs {} were still ending after stop", jobs.join(","));
    }

    fn scheduler_ended(&self, ids: &Value) -> Option<String> {
        let job = ids["scheduler"].as_str()?;
        match job_states() {
            Ok(states) => match states.get(job) {
                // Ending: its final state (CANCELLED, FAILED, …) shows at the next check.
                state if live(state) || state.is_some_and(|s| s == "COMPLETING") => None,
                Some(state) => Some(format!("the scheduler's Slurm job {job} is {state}")),
                None => Some(format!(
                    "the scheduler's Slurm job {job} is no longer known to Slurm"
                )),
            },
            Err(e) => {
                // Slurm cannot say: the cluster is left as it is until it can.
                tracing::warn!("{e}");
                None
            }
        }
    }

    fn join_timeout(&self) -> Duration {
        self.start_timeout
    }

    fn prune(&self, ids: &mut Value) {
        let Ok(states) = job_states() else {
            return;
        };
        let workers = ids["workers"].as_array().cloned().unwrap_or_default();
        ids["workers"] = Value::Array(
            workers
                .into_iter()
                .filter(|w| live(w["job"].as_str().and_then(|j| states.get(j))))
                .collect(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_words_survive_the_shell() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        let out = Command::new("sh")
            .args(["-c", &format!("printf %s {}", quote("a b'c$HOME"))])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "a b'c$HOME");
    }

    #[test]
    fn job_ids_list_the_scheduler_then_the_workers() {
        let ids = json!({"scheduler": "7", "workers": [
            {"job": "8", "group": "cpu", "workers": 2},
            {"job": "9", "group": "gpu", "workers": 1},
        ]});
        assert_eq!(job_ids(&ids), ["7", "8", "9"]);
        assert!(job_ids(&json!({})).is_empty());
    }
}
