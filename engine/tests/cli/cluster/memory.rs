//! TPC-H within the workers' memory limit, the CI-sized form of "SF 10 under 8 GiB": the
//! 22 queries at scale factor 0.1 with each of two workers limited to 40 MiB (8 GiB over
//! 100, split in two), embedded in one `shoal sql` process and on two worker processes.
//! Every answer equals an unlimited run's, and each process's peak resident memory
//! (`VmHWM`) stays within 1.25x its limit above the same process's peak on the same
//! queries at scale factor 0.01 (its own footprint: binary, runtime, allocator, the
//! code the queries run).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shoal::Session;

use super::chaos::same_answer;
use super::common::{rows, shared_dir, tpch_at};
use super::{Cluster, TOKEN};
use crate::memory::run_measured;

/// Each worker's memory limit.
const LIMIT: u64 = 40 << 20;
/// Workers in each run.
const WORKERS: u64 = 2;

/// The 22 queries, in order.
fn queries() -> Vec<String> {
    (1..=22)
        .map(|i| std::fs::read_to_string(shared_dir().join(format!("tpch/queries/q{i:02}.sql"))))
        .collect::<Result<_, _>>()
        .unwrap()
}

/// How far a process of `what` peaked above its footprint, checked against its limit.
fn assert_within(what: &str, peak: u64, footprint: u64, limit: u64) {
    let above = peak.saturating_sub(footprint);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "{what}: peak {:.0} MiB, {:.0} MiB above the SF 0.01 run's {:.0} MiB (limit {:.0} MiB)",
        mib(peak),
        mib(above),
        mib(footprint),
        mib(limit)
    );
    assert!(
        above as f64 <= 1.25 * limit as f64,
        "{what} peaked {:.0} MiB above its footprint, over 1.25x its {:.0} MiB limit",
        mib(above),
        mib(limit)
    );
}

/// `shoal --verbose sql` over the tables in `dir`, every query of `file` in one process
/// with two workers of `limit` bytes each.
fn shoal_sql(dir: &Path, file: &Path, limit: u64) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command
        .args(["--verbose", "sql", "--format", "csv", "--tables"])
        .arg(dir)
        .arg("-f")
        .arg(file)
        .env("SHOAL_WORKERS", WORKERS.to_string())
        .env("SHOAL_WORKER_MEMORY_LIMIT", limit.to_string());
    command
}

#[test]
fn tpch_embedded_within_the_memory_limit() {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("all22.sql");
    std::fs::write(&file, queries().join("\n")).unwrap();
    let (big, small) = (tpch_at(0.1), tpch_at(0.01));
    let roomy = run_measured(shoal_sql(&big, &file, 4 << 30));
    let limited = run_measured(shoal_sql(&big, &file, LIMIT));
    let footprint = run_measured(shoal_sql(&small, &file, LIMIT));
    for run in [&roomy, &limited, &footprint] {
        assert!(run.ok, "{}: {}", run.status, run.stderr);
    }
    // The same rows (ties an ORDER BY leaves open may come in another order).
    let lines = |out: &str| {
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    assert_eq!(lines(&limited.stdout), lines(&roomy.stdout));
    assert!(roomy.stdout.lines().count() > 22 * 2, "{}", roomy.stdout);
    assert_within("shoal sql", limited.peak, footprint.peak, WORKERS * LIMIT);
}

/// A process's peak resident memory, in bytes.
fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    kib * 1024
}

/// The 22 queries on a fresh cluster of two worker processes of [`LIMIT`] each, over the
/// tables in `dir`: their rows, each worker's peak resident memory, and the bytes the
/// workers spilled.
async fn on_two_workers(dir: &Path, queries: &[String]) -> (Vec<Vec<Vec<String>>>, Vec<u64>, u64) {
    let mut cluster = Cluster::scheduler(Some(TOKEN), &[]);
    let limit = LIMIT.to_string();
    for _ in 0..WORKERS {
        cluster.add_worker(&["--cpus", "1", "--memory", &limit]);
    }
    cluster.wait_for_workers(WORKERS as usize);
    let session = cluster.session();
    session.register_dir(dir.to_str().unwrap()).unwrap();
    let mut answers = Vec::new();
    for sql in queries {
        let batches = session.sql(sql).await.unwrap().collect().await.unwrap();
        answers.push(rows(&batches));
    }
    let peaks = cluster.workers.iter().map(|w| vm_hwm(w.id())).collect();
    // Spills reach the status with the workers' heartbeats.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut spilled = 0;
    while spilled == 0 && Instant::now() < deadline {
        let status = session.status().await.unwrap();
        spilled = status.workers.iter().map(|w| w.spilled_bytes).sum();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (answers, peaks, spilled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_on_two_worker_processes_within_their_memory_limit() {
    let queries = queries();
    let (big, small) = (tpch_at(0.1), tpch_at(0.01));
    let embedded = Session::builder().workers(2).build().unwrap();
    embedded.register_dir(big.to_str().unwrap()).unwrap();
    let mut expected = Vec::new();
    for sql in &queries {
        let batches = embedded.sql(sql).await.unwrap().collect().await.unwrap();
        expected.push(rows(&batches));
    }
    let (_, footprints, _) = on_two_workers(&small, &queries).await;
    let (answers, peaks, spilled) = on_two_workers(&big, &queries).await;
    for (i, (want, got)) in expected.iter().zip(&answers).enumerate() {
        assert!(
            same_answer(want, got),
            "q{:02}: {got:?}, want {want:?}",
            i + 1
        );
    }
    println!("the workers spilled {spilled} bytes");
    for (worker, (&peak, &footprint)) in peaks.iter().zip(&footprints).enumerate() {
        assert_within(&format!("worker {worker}"), peak, footprint, LIMIT);
    }
}
