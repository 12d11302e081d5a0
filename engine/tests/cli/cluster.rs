//! The distributed runtime with real processes on 127.0.0.1: a `shoal scheduler`, `shoal
//! worker`s, and a client (`Session::connect` or `shoal sql --cluster`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use shoal::datafusion::arrow::array::AsArray as _;
use shoal::{JobEventKind, Session};

#[allow(dead_code)]
#[path = "../../../tests/it/common.rs"]
mod common;

#[allow(dead_code)]
#[path = "../../../tests/it/http.rs"]
mod http;

mod chaos;
mod dashboard;
mod gateway;
mod gateway_tls;
mod groups;
mod kubernetes;
mod malformed;
mod memory;
mod recovery;
mod slt;
mod slurm;
mod sql;

use common::{answer, assert_rows_eq, events_until_done, rows, tpch_at, tpch_dir};

const TOKEN: &str = "test-token-7f3a";

/// A scheduler and its workers; every process is killed when this is dropped. Each child
/// also exits when its standard input closes, so none outlives a crashed test.
struct Cluster {
    url: String,
    scheduler: Child,
    workers: Vec<Child>,
    token: Option<String>,
    extra: Vec<String>,
    /// Environment variables of the workers started from now on.
    worker_env: Vec<(String, String)>,
    /// Address space (KiB) of the workers started from now on, set with `ulimit -v`.
    worker_address_space: Option<u64>,
    /// The workers' scratch space: a killed worker cannot remove its result store, so the
    /// cluster removes them all when it is dropped (after its processes).
    scratch: tempfile::TempDir,
}

/// Starts `shoal scheduler` on `bind` with `args` (and `token`); returns it and its URL.
fn spawn_scheduler(token: Option<&str>, bind: &str, args: &[&str]) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.args(["scheduler", "--exit-with-stdin", "--bind", bind])
        .args(["--heartbeat-timeout", "2"])
        .args(args)
        .env_remove("SHOAL_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log_output());
    if let Some(token) = token {
        cmd.args(["--token", token]);
    }
    let mut scheduler = cmd.spawn().expect("start the scheduler");
    let mut line = String::new();
    BufReader::new(scheduler.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    (scheduler, url)
}

impl Cluster {
    /// A scheduler with `scheduler_args`, and no workers yet.
    fn scheduler(token: Option<&str>, scheduler_args: &[&str]) -> Self {
        let (scheduler, url) = spawn_scheduler(token, "127.0.0.1:0", scheduler_args);
        assert!(url.starts_with("http"), "the scheduler said {url:?}");
        Self::with_scheduler(url, scheduler, token)
    }

    /// The cluster of a scheduler already running at `url`, and no workers yet.
    fn with_scheduler(url: String, scheduler: Child, token: Option<&str>) -> Self {
        Self {
            url,
            scheduler,
            workers: Vec::new(),
            token: token.map(str::to_string),
            extra: Vec::new(),
            worker_env: Vec::new(),
            worker_address_space: None,
            scratch: tempfile::tempdir().expect("a scratch directory"),
        }
    }

    /// A scheduler and `n` workers with one slot each, all with the test token.
    fn start(n: usize) -> Self {
        let mut cluster = Self::scheduler(Some(TOKEN), &[]);
        for _ in 0..n {
            cluster.add_worker(&[]);
        }
        cluster.wait_for_workers(n);
        cluster
    }

    fn worker_command(&self, args: &[&str]) -> Command {
        let mut cmd = match self.worker_address_space {
            None => Command::new(env!("CARGO_BIN_EXE_shoal")),
            Some(kib) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &format!("ulimit -v {kib} && exec \"$0\" \"$@\"")])
                    .arg(env!("CARGO_BIN_EXE_shoal"));
                sh
            }
        };
        cmd.args(["worker", "--exit-with-stdin", "--scheduler", &self.url])
            .args(&self.extra)
            .args(args)
            .env("SHOAL_SCRATCH_DIR", self.scratch.path())
            .envs(self.worker_env.iter().map(|(k, v)| (k, v)))
            .env_remove("SHOAL_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log_output());
        if let Some(token) = &self.token {
            cmd.args(["--token", token]);
        }
        if !args.iter().any(|a| ["--cpus", "--nthreads"].contains(a)) {
            cmd.args(["--cpus", "1"]);
        }
        if !args
            .iter()
            .any(|a| ["--memory", "--memory-limit"].contains(a))
        {
            cmd.args(["--memory", "1GiB"]);
        }
        cmd
    }

    /// Starts a worker and waits until it has joined; `workers[id]` is worker `id`.
    fn add_worker(&mut self, args: &[&str]) {
        let mut child = self
            .worker_command(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a worker");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let id: usize = line
            .strip_prefix("shoal worker ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("the worker said {line:?}"));
        assert_eq!(id, self.workers.len(), "workers join one at a time");
        self.workers.push(child);
    }

    fn session(&self) -> Session {
        let mut builder = Session::builder().cluster(&self.url);
        if let Some(token) = &self.token {
            builder = builder.token(token);
        }
        builder.build().expect("connect to the cluster")
    }

    /// Waits until `n` workers are alive.
    fn wait_for_workers(&self, n: usize) {
        let session = self.session();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = session.status_blocking().unwrap();
            if status.workers.iter().filter(|w| w.alive).count() >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "workers did not join: {status:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.workers.iter_mut().chain([&mut self.scheduler]) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Where cluster processes log: nowhere, or this test's stderr with `SHOAL_TEST_LOGS=1`.
/// Runs TPC-H q03 with every task asking for `gpu=1`, checks its answer and returns the
/// cluster's status after it.
async fn q03_asking_for_a_gpu(session: &Session) -> shoal_exec::ClusterStatus {
    session.register_dir(tpch_dir().to_str().unwrap()).unwrap();
    session
        .sql("set shoal.task.resources = 'gpu=1'")
        .await
        .unwrap();
    let results = session.sql_script(shoal::tpch::QUERIES[2].1).await.unwrap();
    assert_rows_eq("q03", &answer("q03"), &rows(results.last().unwrap()));
    session.status().await.unwrap()
}

/// Runs `shoal` with `args` (its log as [`log_output`] says) and returns it with the
/// first line it printed.
fn shoal_first_line(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_output())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

fn log_output() -> Stdio {
    if std::env::var_os("SHOAL_TEST_LOGS").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// Submits `sql` and waits until the scheduler has accepted the job.
async fn start_job(session: &Session, sql: &str) -> shoal_exec::JobHandle {
    let df = session.sql(sql).await.unwrap();
    let job = session.execute(df.logical_plan()).await.unwrap();
    let mut progress = job.progress.clone();
    while progress.borrow().tasks_total == 0 {
        progress.changed().await.unwrap();
    }
    job
}

/// Waits until some worker runs a task; its id.
async fn busy_worker(session: &Session) -> usize {
    loop {
        let status = session.status().await.unwrap();
        if let Some(w) = status.workers.iter().find(|w| w.tasks_running > 0) {
            return w.id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until no job is left and no worker runs a task.
async fn wait_until_idle(session: &Session) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = session.status().await.unwrap();
        if status.jobs.is_empty() && status.workers.iter().all(|w| w.tasks_running == 0) {
            return;
        }
        assert!(Instant::now() < deadline, "tasks still running: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The error a job's stream ends with (batches before it are skipped).
async fn first_error(
    stream: &mut shoal::datafusion::execution::SendableRecordBatchStream,
) -> String {
    loop {
        match stream.next().await {
            Some(Err(e)) => return e.to_string(),
            Some(Ok(_)) => continue,
            None => panic!("the job succeeded"),
        }
    }
}

/// Sends signal `name` (`STOP`, `CONT`) to `child`.
fn signal(child: &Child, name: &str) {
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status();
    assert!(sent.unwrap().success(), "kill -{name} {pid}");
}

fn kill9(child: &mut Child) {
    // `Child::kill` sends SIGKILL on Unix: the process gets no chance to say goodbye.
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_client_sees_a_job_s_events_over_the_wire() {
    let cluster = Cluster::start(2);
    let submitter = cluster.session();
    let watcher = cluster.session();
    let mut events = watcher.events().await.unwrap();
    submitter
        .sql("set shoal.execution.partitions = 4")
        .await
        .unwrap();
    let batches = submitter
        .sql(&slow_query(2_000_000))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(rows(&batches).len(), 1);
    let seen = events_until_done(&mut events).await;
    let job = seen[0].job;
    assert!(seen.iter().all(|e| e.job == job));
    assert!(
        matches!(seen[0].kind, JobEventKind::Submitted { .. }),
        "{seen:?}"
    );
    let total = seen[0].progress.tasks_total;
    let finished: Vec<_> = seen
        .iter()
        .filter_map(|e| match &e.kind {
            JobEventKind::TaskFinished {
                worker, duration, ..
            } => Some((*worker, *duration)),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), total, "{seen:?}");
    assert!(finished.iter().all(|(w, _)| *w < 2));
    assert!(
        finished.iter().any(|(_, d)| !d.is_zero()),
        "workers report how long tasks ran"
    );
    assert_eq!(seen.last().unwrap().progress.tasks_done, total);
}

/// A remote job's handle carries the scheduler's number for it, not the client's count:
/// with another client's job first, this client's first job is the cluster's second, and
/// cancelling by the handle's number cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_job_handle_carries_the_scheduler_s_job_number() {
    let cluster = Cluster::start(1);
    let first = cluster.session();
    first
        .sql("select 1")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let second = cluster.session();
    let df = second.sql(&slow_query(50_000_000)).await.unwrap();
    let job = second.execute(df.logical_plan()).await.unwrap();
    let status = second.status().await.unwrap();
    let running: Vec<u64> = status.jobs.iter().map(|j| j.id).collect();
    assert_eq!(running, vec![job.job], "{status:?}");
    assert!(job.job > 1, "the first client's job came first");
    assert!(second.cancel(job.job).await.unwrap());
    let error = job.stream.collect::<Vec<_>>().await;
    assert!(
        error.iter().any(|b| b.is_err()),
        "the cancelled job's stream ends with an error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_on_a_scheduler_and_two_worker_processes_matches_the_answers() {
    let cluster = Cluster::start(2);
    let session = cluster.session();
    session.register_dir(tpch_dir().to_str().unwrap()).unwrap();
    for (query, sql) in shoal::tpch::QUERIES {
        let results = session
            .sql_script(sql)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        let batches = results.last().unwrap();
        assert_rows_eq(query, &answer(query), &rows(batches));
    }
    // Joins whose partitions share state in one process, and a generator scan with every
    // column projected away, are rewritten for separate processes.
    for (sql, expected) in [
        (
            "select count(*) from region cross join generate_series(1, 3)",
            "15",
        ),
        (
            "select count(*) from part where p_partkey not in \
             (select ps_partkey from partsupp where ps_availqty > 9000)",
            "1307",
        ),
        (
            "select count(*) from (select ps_partkey, min(ps_supplycost) as m from partsupp \
             group by ps_partkey) x join part on x.ps_partkey = p_partkey",
            "2000",
        ),
        (
            "select count(*) from customer left join orders on c_custkey = o_custkey \
             where o_orderkey is null",
            "500",
        ),
    ] {
        let batches = session.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(rows(&batches), vec![vec![expected.to_string()]], "{sql}");
    }
    let status = session.status().await.unwrap();
    assert_eq!(status.workers.len(), 2);
    assert!(
        status.workers.iter().all(|w| w.tasks_completed > 0),
        "both workers ran tasks: {status:?}"
    );
    // Every job ends once its client has read the results.
    wait_until_idle(&session).await;
}

/// Rows `1..=n` grouped by `v % 97`, spread over several partitions: a few seconds of work
/// in two stages.
fn slow_query(n: u64) -> String {
    format!(
        "select count(*) as c, sum(k) as s from \
         (select value % 97 as k, count(*) as n from generate_series(1, {n}) group by 1)"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_mid_query_still_gives_the_right_answer() {
    let mut cluster = Cluster::start(2);
    let session = cluster.session();
    session
        .sql("set datafusion.execution.batch_size = 1024")
        .await
        .unwrap();
    let expected = vec![vec!["97".to_string(), (96 * 97 / 2).to_string()]];
    let n = 6_000_000;
    // Warm up, and check the answer without failures.
    let batches = session
        .sql(&slow_query(n))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_rows_eq("no failure", &expected, &rows(&batches));

    let df = session.sql(&slow_query(n)).await.unwrap();
    let job = session.execute(df.logical_plan()).await.unwrap();
    // Kill the worker that is running a task, once some task has finished.
    let mut progress = job.progress.clone();
    loop {
        progress.changed().await.unwrap();
        if progress.borrow().tasks_done >= 1 {
            break;
        }
    }
    let status = session.status().await.unwrap();
    let victim = status
        .workers
        .iter()
        .max_by_key(|w| (w.tasks_running, w.tasks_completed))
        .unwrap()
        .id;
    kill9(&mut cluster.workers[victim]);
    let batches: Vec<_> = job.stream.try_collect().await.unwrap();
    assert_rows_eq("after kill -9", &expected, &rows(&batches));
    let status = session.status().await.unwrap();
    assert!(!status.workers[victim].alive, "{status:?}");

    // A worker that joins later gets work.
    cluster.add_worker(&[]);
    cluster.wait_for_workers(2);
    let batches = session
        .sql(&slow_query(n))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_rows_eq("after a new worker joined", &expected, &rows(&batches));
    let status = session.status().await.unwrap();
    assert!(status.workers[2].tasks_completed > 0, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_during_the_shuffle_fetch_recomputes_its_outputs() {
    let mut cluster = Cluster::start(2);
    let session = cluster.session();
    session.register_dir(tpch_dir().to_str().unwrap()).unwrap();
    // Every scan task writes 64 buckets read by a consumer that is slow per bucket; the
    // kill lands while consumers fetch from both workers.
    session
        .sql("set shoal.execution.partitions = 8")
        .await
        .unwrap();
    let sql = "select l_returnflag, count(*) as n, sum(l_extendedprice * value) as p from \
               (select l_returnflag, l_extendedprice, value from lineitem \
                cross join generate_series(1, 40)) group by 1 order by 1";
    let expected = {
        let embedded = Session::builder().workers(1).build().unwrap();
        embedded.register_dir(tpch_dir().to_str().unwrap()).unwrap();
        rows(&embedded.sql(sql).await.unwrap().collect().await.unwrap())
    };
    let df = session.sql(sql).await.unwrap();
    let job = session.execute(df.logical_plan()).await.unwrap();
    let mut progress = job.progress.clone();
    let first_stage = loop {
        progress.changed().await.unwrap();
        let p = *progress.borrow();
        if p.tasks_done >= 2 {
            break p;
        }
    };
    assert!(first_stage.tasks_done < first_stage.tasks_total);
    let status = session.status().await.unwrap();
    let victim = status
        .workers
        .iter()
        .max_by_key(|w| w.tasks_completed)
        .unwrap()
        .id;
    assert!(status.workers[victim].tasks_completed > 0, "{status:?}");
    kill9(&mut cluster.workers[victim]);
    let batches: Vec<_> = job.stream.try_collect().await.unwrap();
    assert_rows_eq(
        "after kill -9 during the shuffle",
        &expected,
        &rows(&batches),
    );
    // The outputs the killed worker held were computed again by the survivor.
    let status = session.status().await.unwrap();
    let completed: u64 = status.workers.iter().map(|w| w.tasks_completed).sum();
    assert!(
        completed > first_stage.tasks_total as u64,
        "{completed} tasks for a job of {}: {status:?}",
        first_stage.tasks_total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_worker_fails_the_job_with_a_clear_error() {
    let mut cluster = Cluster::start(2);
    let session = cluster.session();
    let mut job = start_job(&session, &slow_query(50_000_000)).await;
    for worker in &mut cluster.workers {
        kill9(worker);
    }
    let started = Instant::now();
    let error = first_error(&mut job.stream).await;
    assert!(error.contains("every worker was lost"), "{error}");
    assert!(!error.contains('\n'), "one line: {error}");
    assert!(started.elapsed() < Duration::from_secs(20), "no hang");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_joins_mid_job_gets_work() {
    let mut cluster = Cluster::start(1);
    let session = cluster.session();
    // One scan task, then 16 aggregation tasks: the newcomer joins during the scan.
    session
        .sql("set shoal.execution.partitions = 16")
        .await
        .unwrap();
    let job = start_job(&session, &slow_query(20_000_000)).await;
    assert_eq!(
        job.progress.borrow().tasks_done,
        0,
        "the scan is still running"
    );
    cluster.add_worker(&[]);
    let batches: Vec<_> = job.stream.try_collect().await.unwrap();
    let expected = vec![vec!["97".to_string(), (96 * 97 / 2).to_string()]];
    assert_rows_eq("with a worker joining mid-job", &expected, &rows(&batches));
    let status = session.status().await.unwrap();
    assert!(status.workers[1].tasks_completed > 0, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_is_lost_when_its_heartbeats_stop() {
    let cluster = Cluster::start(2);
    let session = cluster.session();
    // SIGSTOP keeps the connection open but silences the worker.
    signal(&cluster.workers[1], "STOP");
    let started = Instant::now();
    loop {
        let status = session.status().await.unwrap();
        if !status.workers[1].alive {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The heartbeat timeout is 2 s in these tests.
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let batches = session
        .sql(&slow_query(100_000))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let expected = vec![vec!["97".to_string(), (96 * 97 / 2).to_string()]];
    assert_rows_eq("on the remaining worker", &expected, &rows(&batches));
    signal(&cluster.workers[1], "CONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_scheduler_fails_the_query_at_the_client() {
    let mut cluster = Cluster::scheduler(Some(TOKEN), &[]);
    // Workers give up on a scheduler that stays away after a second.
    cluster.worker_env = vec![("SHOAL_WORKER_RECONNECT_TIMEOUT".into(), "1".into())];
    cluster.add_worker(&[]);
    cluster.add_worker(&[]);
    cluster.wait_for_workers(2);
    let session = cluster.session();
    let mut job = start_job(&session, &slow_query(200_000_000)).await;
    kill9(&mut cluster.scheduler);
    let started = Instant::now();
    let error = first_error(&mut job.stream).await;
    assert!(
        error.contains("lost the connection to the scheduler"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "no hang");
    // The workers notice too, try to register again for a second and exit with an error.
    for worker in &mut cluster.workers {
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = worker.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "a worker outlived its scheduler");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_clients_outlive_a_scheduler_restart() {
    let mut cluster = Cluster::start(2);
    let session = cluster.session();
    let count = "select count(*) from generate_series(1, 1000) a, generate_series(1, 10) b";
    let answer = |batches: &[shoal::datafusion::arrow::array::RecordBatch]| rows(batches);
    let expected = vec![vec!["10000".to_string()]];
    assert_rows_eq(
        "before",
        &expected,
        &answer(&session.sql(count).await.unwrap().collect().await.unwrap()),
    );
    let mut job = start_job(&session, &slow_query(200_000_000)).await;
    kill9(&mut cluster.scheduler);
    let error = first_error(&mut job.stream).await;
    assert!(
        error.contains("lost the connection to the scheduler"),
        "{error}"
    );
    assert!(!error.contains('\n'), "one line: {error}");
    // A new scheduler at the same address; the port may take a moment to be free again.
    let bind = cluster.url.trim_start_matches("http://").to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    cluster.scheduler = loop {
        let (child, url) = spawn_scheduler(Some(TOKEN), &bind, &[]);
        if url == cluster.url {
            break child;
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        assert!(Instant::now() < deadline, "cannot bind {bind} again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The same worker processes register again ...
    cluster.wait_for_workers(2);
    for worker in &mut cluster.workers {
        assert!(worker.try_wait().unwrap().is_none(), "a worker exited");
    }
    // ... and the client that saw its job fail runs new ones without reconnecting.
    let batches = session.sql(count).await.unwrap().collect().await.unwrap();
    assert_rows_eq("after the restart", &expected, &answer(&batches));
    let status = session.status().await.unwrap();
    assert_eq!(
        status.workers.iter().filter(|w| w.alive).count(),
        2,
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_crashes_its_workers_fails_its_job_and_spares_the_rest() {
    let mut cluster = Cluster::scheduler(Some(TOKEN), &[]);
    // Workers with 1.5 GB of address space (and a memory limit far above it): a 2 GB chunk
    // makes the allocation fail and the process abort, whichever worker computes it.
    cluster.worker_address_space = Some(1_500_000);
    for _ in 0..3 {
        cluster.add_worker(&["--memory", "8GiB"]);
    }
    cluster.wait_for_workers(3);
    let session = cluster.session();
    let poison = session
        .full(&[16_000, 16_000], &[16_000, 16_000], 1.0, shoal::DType::F64)
        .unwrap()
        .sum(shoal::Axes::All)
        .unwrap();
    let error = poison
        .item()
        .await
        .expect_err("the worker cannot allocate the chunk");
    assert_eq!(error.kind(), shoal::ErrorKind::WorkerLost, "{error}");
    let message = error.to_string();
    assert!(
        message.contains("2 workers were lost while running it"),
        "{message}"
    );
    assert!(message.contains("stage 0 task 0 of job"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
    let status = session.status().await.unwrap();
    assert_eq!(
        status.workers.iter().filter(|w| w.alive).count(),
        1,
        "{status:?}"
    );
    // The worker it did not reach runs the next job.
    let batches = session
        .sql("select count(*) from generate_series(1, 5000)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_rows_eq(
        "after the poison task",
        &[vec!["5000".to_string()]],
        &rows(&batches),
    );
}

#[test]
fn a_missing_or_wrong_token_is_refused_for_clients_and_workers() {
    let cluster = Cluster::scheduler(Some(TOKEN), &[]);
    for (token, why) in [
        (None, "missing cluster token"),
        (Some("nope"), "wrong cluster token"),
    ] {
        let mut builder = Session::builder().cluster(&cluster.url);
        builder = builder.token(token.unwrap_or(""));
        let error = builder.build().unwrap_err().to_string();
        assert!(error.contains("refused") && error.contains(why), "{error}");

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.args(["worker", "--scheduler", &cluster.url, "--cpus", "1"])
            .env_remove("SHOAL_TOKEN")
            .stdin(Stdio::null());
        if let Some(token) = token {
            cmd.args(["--token", token]);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("refused") && stderr.contains(why),
            "{stderr}"
        );
    }
    // The CLI client says the same.
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["status", "--cluster", &cluster.url, "--token", "nope"])
        .env_remove("SHOAL_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("wrong cluster token"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// `shoal sql --cluster` against `cluster`, running `sql`.
fn cluster_sql(cluster: &Cluster, sql: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.args([
        "sql",
        "--cluster",
        &cluster.url,
        "--token",
        TOKEN,
        "-c",
        sql,
    ])
    .env_remove("SHOAL_TOKEN")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_whose_only_worker_is_killed_fails_as_worker_lost() {
    let mut cluster = Cluster::start(1);
    let session = cluster.session();
    let client = cluster_sql(&cluster, &slow_query(50_000_000))
        .spawn()
        .unwrap();
    // Kill the worker once it runs a task of the query.
    loop {
        let status = session.status().await.unwrap();
        if status.workers[0].tasks_running > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill9(&mut cluster.workers[0]);
    let out = client.wait_with_output().unwrap();
    super::assert_error_of_kind(&out, shoal::ErrorKind::WorkerLost, "every worker was lost");
}

#[test]
fn results_on_a_worker_clients_cannot_reach_fail_naming_its_address() {
    let mut cluster = Cluster::scheduler(Some(TOKEN), &[]);
    // Nothing listens on port 1: the client cannot fetch the results the worker keeps,
    // reports it, and the scheduler finds the port refusing connections: the only worker
    // is lost, and there is nowhere to compute the result again.
    cluster.add_worker(&["--advertise", "127.0.0.1:1"]);
    cluster.wait_for_workers(1);
    let out = cluster_sql(&cluster, "select 1").output().unwrap();
    super::assert_error_of_kind(
        &out,
        shoal::ErrorKind::WorkerLost,
        "every worker was lost (the last, worker 0 at 127.0.0.1:1: a peer could not fetch \
         from it and its data port 127.0.0.1:1 refuses connections",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_accepts_dask_s_names_for_its_threads_and_memory_limit() {
    let mut cluster = Cluster::scheduler(Some(TOKEN), &[]);
    cluster.add_worker(&["--nthreads", "3", "--memory", "300MiB"]);
    // Dask's --memory-limit, the name the embedded engine uses too.
    cluster.add_worker(&["--memory-limit", "200MiB"]);
    cluster.wait_for_workers(2);
    let status = cluster.session().status().await.unwrap();
    assert_eq!(status.workers[0].slots, 3);
    assert_eq!(status.workers[0].memory_limit, 300 << 20);
    assert_eq!(status.workers[1].memory_limit, 200 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_asking_for_a_gpu_run_only_on_the_worker_that_has_one() {
    let mut cluster = Cluster::scheduler(Some(TOKEN), &[]);
    cluster.add_worker(&[]);
    cluster.wait_for_workers(1);
    cluster.add_worker(&["--resources", "gpu=1"]);
    cluster.wait_for_workers(2);
    let status = q03_asking_for_a_gpu(&cluster.session()).await;
    assert_eq!(status.workers[0].tasks_completed, 0, "{status:?}");
    assert!(status.workers[1].tasks_completed > 0, "{status:?}");

    // `shoal status --format json` shows the same.
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "status",
            "--cluster",
            &cluster.url,
            "--token",
            TOKEN,
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let workers = json["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    assert_eq!(workers[1]["resources"]["gpu"], 1.0);
    assert_eq!(workers[0]["tasks_completed"], 0);
    assert!(workers[1]["tasks_completed"].as_u64().unwrap() > 0);
    assert_eq!(workers[0]["memory_limit"], 1u64 << 30);
    assert_eq!(workers[0]["spilled_bytes"], 0);
    // The last activity is the query above: within the last minute, by the Unix clock.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = json["last_activity"].as_f64().unwrap();
    assert!(last <= now + 1.0 && last > now - 60.0, "{last} vs {now}");
    assert!(
        workers[0]["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(json["jobs"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_query_stops_its_tasks_on_every_worker() {
    let cluster = Cluster::start(2);
    let session = cluster.session();
    session
        .sql("set shoal.execution.partitions = 2")
        .await
        .unwrap();
    // Two scan tasks (one per worker) that would take hours.
    let sql = "select k, count(*) from (\
               select value % 7 as k from generate_series(1, 10000000000) union all \
               select value % 7 as k from generate_series(1, 10000000000)) group by k";
    let df = session.sql(sql).await.unwrap();
    let job = session.execute(df.logical_plan()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = session.status().await.unwrap();
        if status.workers.iter().all(|w| w.tasks_running > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "tasks did not start: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(job);
    wait_until_idle(&session).await;
    // The workers are free again: a new query runs at once.
    let batches = session
        .sql("select 41 + 1 as x")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(rows(&batches), vec![vec!["42".to_string()]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_client_cancels_a_job_by_id() {
    let cluster = Cluster::start(2);
    let session = cluster.session();
    let mut job = start_job(&session, &slow_query(10_000_000_000)).await;
    let id = session.status().await.unwrap().jobs[0].id;
    let cancel = || {
        let id = id.to_string();
        let args = ["cancel", &id, "--cluster", &cluster.url, "--token", TOKEN];
        Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = cancel();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let error = first_error(&mut job.stream).await;
    assert!(
        error.contains(&format!("job {id} was cancelled")),
        "{error}"
    );
    // Cancelling it again says there is no such running job.
    let out = cancel();
    assert_eq!(out.status.code(), Some(1));
    drop(job);
    wait_until_idle(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_memory_workers_spill_and_clean_up() {
    let scratch = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::scheduler(Some(TOKEN), &[]);
    let dir = scratch.path().to_str().unwrap().to_string();
    cluster.extra = vec!["--scratch-dir".into(), dir];
    for _ in 0..2 {
        cluster.add_worker(&["--memory", "12MiB"]);
    }
    cluster.wait_for_workers(2);
    let session = cluster.session();
    session
        .register_dir(tpch_at(0.1).to_str().unwrap())
        .unwrap();
    // A join and an aggregation whose hash tables and sort runs exceed 12 MiB per worker
    // (TPC-H at scale factor 0.1: groups of 600,000 line item comments).
    let sql = "select l_comment, count(*) as c, sum(l_quantity) as q \
               from lineitem join orders on l_orderkey = o_orderkey \
               group by l_comment order by c desc, l_comment, q limit 20";
    let expected = {
        let embedded = Session::builder().workers(1).build().unwrap();
        embedded
            .register_dir(tpch_at(0.1).to_str().unwrap())
            .unwrap();
        rows(&embedded.sql(sql).await.unwrap().collect().await.unwrap())
    };
    let mut events = session.events().await.unwrap();
    let batches = session.sql(sql).await.unwrap().collect().await.unwrap();
    assert_rows_eq("under 12 MiB", &expected, &rows(&batches));
    // It spilled: the job's events say which worker spilled as its tasks end, and the
    // workers' next heartbeats bring the spill files their operators and stores wrote
    // into the status.
    let seen = events_until_done(&mut events).await;
    let in_events: u64 = seen
        .iter()
        .filter_map(|e| match e.kind {
            JobEventKind::Spill { bytes, .. } => Some(bytes),
            _ => None,
        })
        .sum();
    assert!(in_events > 0, "no Spill event");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = session.status().await.unwrap();
        let spills: u64 = status.workers.iter().map(|w| w.spills).sum();
        let spilled: u64 = status.workers.iter().map(|w| w.spilled_bytes).sum();
        if spills > 0 && spilled > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat counted the spills: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The job ended: no spill file or stored output is left in the scratch directories.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left = common::files_under(scratch.path());
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = write_certificates(dir.path());
    let mut cluster = Cluster::scheduler(Some(TOKEN), &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(cluster.url.starts_with("https://"), "{}", cluster.url);
    cluster.extra = ["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca]
        .map(String::from)
        .to_vec();
    cluster.add_worker(&[]);
    cluster.add_worker(&[]);
    let session = Session::builder()
        .cluster(&cluster.url)
        .token(TOKEN)
        .tls_ca(&ca)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while session.status_blocking().unwrap().workers.len() < 2 {
        assert!(Instant::now() < deadline, "workers did not join over TLS");
        std::thread::sleep(Duration::from_millis(50));
    }
    session.register_dir(tpch_dir().to_str().unwrap()).unwrap();
    let results = session.sql_script(shoal::tpch::QUERIES[4].1).await.unwrap();
    assert_rows_eq(
        "q05 over TLS",
        &answer("q05"),
        &rows(results.last().unwrap()),
    );

    // Without the CA, the client does not trust the scheduler.
    let error = Session::builder()
        .cluster(&cluster.url)
        .token(TOKEN)
        .build()
        .unwrap_err()
        .to_string();
    assert!(error.contains("--tls-ca"), "{error}");
}

/// A CA, and a certificate for localhost and 127.0.0.1 signed by it; returns the paths
/// of the certificate, its key and the CA certificate.
fn write_certificates(dir: &Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    (
        write("server.pem", cert.pem()),
        write("server.key", key.serialize_pem()),
        write("ca.pem", ca_cert.pem()),
    )
}

/// Array stages are ChunkExec plans: they ship to worker processes like SQL stages, their
/// chunks move over Flight, and the values equal the embedded session's.
/// Tasks the cluster's workers have completed, all together.
async fn tasks_completed(session: &Session) -> u64 {
    let status = session.status().await.unwrap();
    status.workers.iter().map(|w| w.tasks_completed).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_jobs_on_worker_processes_match_the_embedded_engine() {
    use ndarray::s;
    let cluster = Cluster::start(2);
    let remote = cluster.session();
    let local = Session::builder().workers(2).build().unwrap();
    let close = |what: &str, a: &ndarray::ArrayD<f64>, b: &ndarray::ArrayD<f64>| {
        assert_eq!(a.shape(), b.shape(), "{what}");
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x.is_nan() && y.is_nan()) || (x - y).abs() < 1e-9,
                "{what}: {x} vs {y}"
            );
        }
    };
    let values =
        ndarray::Array2::from_shape_fn((30, 20), |(i, j)| (i * 20 + j) as f64 % 7.0).into_dyn();
    for session in [&remote, &local] {
        session
            .sql("set shoal.array.reduce_fan_in = 2")
            .await
            .unwrap();
    }
    let mut results = Vec::new();
    for session in [&remote, &local] {
        let x = session.random_uniform(&[60, 60], &[16, 16], 11).unwrap();
        let x = x.lt(0.05).unwrap().where_(f64::NAN, &x).unwrap();
        let lit = session.from_ndarray(&values, &[7, 6]).unwrap();
        let mut got = Vec::new();
        for a in [
            (&x + &x.t().unwrap()).unwrap().nanmean(0).unwrap(),
            x.slice(s![..;2, 1..;3]).unwrap().nanstd(None).unwrap(),
            x.nanmax(1).unwrap(),
            lit.matmul(&lit.t().unwrap()).unwrap(),
            lit.rechunk(&[30, 4]).unwrap().sum(0).unwrap(),
        ] {
            got.push(a.collect_ndarray::<f64>().await.unwrap());
        }
        results.push(got);
    }
    for (i, (r, l)) in results[0].iter().zip(&results[1]).enumerate() {
        close(&format!("workload {i}"), r, l);
    }
    let by_hand = values.sum_axis(ndarray::Axis(0));
    close("rechunked sum", &results[0][4], &by_hand);

    // Zarr chunks are written and read by the worker processes; the climatology anomaly
    // over the store matches the embedded engine's.
    let dir = tempfile::tempdir().unwrap();
    let start = shoal::labeled::index::parse_datetime("2001-01-01").unwrap();
    let days: Vec<i64> = (0..200).map(|d| start + d * 86_400_000_000_000).collect();
    let mut anomalies = Vec::new();
    for (i, session) in [&remote, &local].into_iter().enumerate() {
        let x = session
            .random_uniform(&[200, 3, 4], &[50, 3, 4], 3)
            .unwrap();
        let da = shoal::DataArray::new(x, &["time", "lat", "lon"])
            .unwrap()
            .with_name("t2m")
            .with_coord("time", "time", shoal::Index::DateTime(days.clone()))
            .unwrap();
        let path = dir.path().join(format!("cube{i}.zarr"));
        da.to_zarr(path.to_str().unwrap()).await.unwrap();
        let t2m = session
            .open_zarr(path.to_str().unwrap())
            .unwrap()
            .var("t2m")
            .unwrap();
        let clim = t2m.groupby("time.month").unwrap().mean().unwrap();
        let anomaly = t2m.groupby("time.month").unwrap().sub(&clim).unwrap();
        anomalies.push(
            anomaly
                .std(["time"])
                .unwrap()
                .to_ndarray::<f64>()
                .await
                .unwrap(),
        );
    }
    close("zarr anomaly", &anomalies[0], &anomalies[1]);

    // The same store as a SQL table: scan tasks on the worker processes read the chunks.
    let cube = dir.path().join("cube0.zarr");
    let done_before = tasks_completed(&remote).await;
    let mut by_lat = Vec::new();
    for session in [&remote, &local] {
        session.register("cube", cube.to_str().unwrap()).unwrap();
        let batches = session
            .sql(
                "select lat, avg(t2m) as m, count(*) as n from cube \
                 where time >= '2001-03-01' group by lat order by lat",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let batch = &batches[0];
        let m = batch
            .column(1)
            .as_primitive::<shoal::datafusion::arrow::datatypes::Float64Type>();
        let n = batch
            .column(2)
            .as_primitive::<shoal::datafusion::arrow::datatypes::Int64Type>();
        assert_eq!(n.values().to_vec(), vec![(200 - 59) * 4; 3]);
        by_lat.push(m.values().to_vec());
    }
    for (r, l) in by_lat[0].iter().zip(&by_lat[1]) {
        assert!(
            (r - l).abs() < 1e-12,
            "zarr table on the cluster: {r} vs {l}"
        );
    }
    let done_after = tasks_completed(&remote).await;
    // Three 50-day slabs from March on, plus the aggregation stages.
    assert!(
        done_after >= done_before + 4,
        "the scan ran as tasks on the workers: {done_before} -> {done_after}"
    );
    let status = remote.status().await.unwrap();
    assert!(
        status.workers.iter().all(|w| w.tasks_completed > 0),
        "both workers ran chunk tasks: {status:?}"
    );
}

/// Resident memory of process `pid`, in bytes (Linux).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// The scheduler's resident memory bound under the load test.
const SCHEDULER_RSS_BOUND: u64 = 256 << 20;

/// 64 clients, each with its own session, run a stream of small TPC-H queries against a
/// scheduler and two workers for `SHOAL_LOAD_SECONDS` (default 8) while another client
/// polls the status: every answer must match the embedded engine's and the scheduler must
/// stay under 256 MiB resident. It prints queries per second and the status call's p99.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_get_right_answers_and_the_scheduler_stays_small() {
    const CLIENTS: usize = 64;
    let seconds: f64 = std::env::var("SHOAL_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8.0);
    let lineitem = tpch_at(0.1).join("lineitem.parquet");
    let lineitem = lineitem.to_str().unwrap();
    let queries: Vec<String> = (0..8)
        .map(|k| {
            format!(
                "select count(*), sum(l_quantity), min(l_shipdate) from lineitem \
                 where l_orderkey % 8 = {k} and l_discount > 0.0{k}"
            )
        })
        .collect();
    let embedded = Session::builder().workers(2).build().unwrap();
    embedded.register("lineitem", lineitem).unwrap();
    let mut expected = Vec::new();
    for q in &queries {
        expected.push(rows(
            &embedded.sql(q).await.unwrap().collect().await.unwrap(),
        ));
    }
    let expected = std::sync::Arc::new(expected);
    let queries = std::sync::Arc::new(queries);

    let cluster = Cluster::start(2);
    let scheduler_pid = cluster.scheduler.id();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let session = cluster.session();
        session.register("lineitem", lineitem).unwrap();
        let (queries, expected) = (queries.clone(), expected.clone());
        clients.spawn(async move {
            let mut answered = 0usize;
            let mut i = c;
            while Instant::now() < deadline {
                let q = i % queries.len();
                let got = session.sql(&queries[q]).await?.collect().await?;
                assert_eq!(rows(&got), expected[q], "client {c}, query {q}");
                answered += 1;
                i += 1;
            }
            Ok::<usize, shoal::Error>(answered)
        });
    }
    let observer = cluster.session();
    let mut status_ms = Vec::new();
    let mut peak_rss = 0;
    while Instant::now() < deadline {
        let started = Instant::now();
        observer.status().await.unwrap();
        status_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        peak_rss = peak_rss.max(rss_bytes(scheduler_pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answered = 0;
    while let Some(done) = clients.join_next().await {
        answered += done
            .unwrap()
            .unwrap_or_else(|e| panic!("a client failed: {e}"));
    }
    peak_rss = peak_rss.max(rss_bytes(scheduler_pid));
    status_ms.sort_by(f64::total_cmp);
    let p99 = status_ms[(status_ms.len() * 99 / 100).min(status_ms.len() - 1)];
    println!(
        "load: {CLIENTS} clients, {answered} queries in {seconds} s ({:.1}/s); status p99 \
         {p99:.1} ms over {} calls; scheduler peak RSS {} MiB",
        answered as f64 / seconds,
        status_ms.len(),
        peak_rss >> 20
    );
    assert!(
        answered >= CLIENTS,
        "every client answered at least once: {answered}"
    );
    assert!(peak_rss > 0, "the scheduler's memory was read");
    assert!(
        peak_rss < SCHEDULER_RSS_BOUND,
        "scheduler peak RSS {} MiB",
        peak_rss >> 20
    );
}
