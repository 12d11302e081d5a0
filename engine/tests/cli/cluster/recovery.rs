//! Results that survive lost workers: a stream read part-way, an array result, a `COPY`.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use shoal::datafusion::arrow::array::RecordBatch;
use shoal::{JobEventKind, Session};

use super::common::{rows, tpch_dir};
use super::{Cluster, kill9, signal};

/// Sorted rows, for comparing a result read in pieces with one read at once.
fn sorted_rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut rows = rows(batches);
    rows.sort();
    rows
}

/// Runs `sql` (over TPC-H) with its whole result on one worker, reads the first batch,
/// then starts a second worker and kills the first; returns every batch read, or the
/// error the stream ended with, and the cluster.
async fn read_through_a_kill(sql: &str) -> (Result<Vec<RecordBatch>, String>, Cluster) {
    let mut cluster = Cluster::start(1);
    let session = cluster.session();
    session.register_dir(tpch_dir().to_str().unwrap()).unwrap();
    for set in [
        "set shoal.execution.partitions = 2",
        "set datafusion.execution.batch_size = 512",
    ] {
        session.sql(set).await.unwrap();
    }
    let df = session.sql(sql).await.unwrap();
    let mut job = session.execute(df.logical_plan()).await.unwrap();
    let mut batches = vec![job.stream.next().await.unwrap().unwrap()];
    cluster.add_worker(&[]);
    cluster.wait_for_workers(2);
    kill9(&mut cluster.workers[0]);
    while let Some(batch) = job.stream.next().await {
        match batch {
            Ok(batch) => batches.push(batch),
            Err(e) => return (Err(e.to_string()), cluster),
        }
    }
    (Ok(batches), cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_read_part_way_survives_losing_the_worker_it_comes_from() {
    // Partitions of several MB: more than the client's transport buffers ahead, so the
    // kill lands part-way through the first.
    let sql = "select l_orderkey, l_partkey, l_comment, value from lineitem \
               cross join generate_series(1, 4)";
    let expected = {
        let embedded = Session::builder().workers(1).build().unwrap();
        embedded.register_dir(tpch_dir().to_str().unwrap()).unwrap();
        sorted_rows(&embedded.sql(sql).await.unwrap().collect().await.unwrap())
    };
    let (batches, cluster) = read_through_a_kill(sql).await;
    let batches = batches.unwrap();
    assert!(batches[0].num_rows() < expected.len() / 2);
    let got = sorted_rows(&batches);
    assert_eq!(got.len(), expected.len(), "no row lost or repeated");
    assert!(got == expected, "the rows differ from the embedded answer");
    // The new worker computed the result again.
    let status = cluster.session().status().await.unwrap();
    assert!(status.workers[1].tasks_completed >= 2, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_would_differ_when_recomputed_fails_in_one_line_when_lost_part_way() {
    let sql = "select l_orderkey, l_comment, random() as r from lineitem \
               cross join generate_series(1, 4)";
    let (batches, _cluster) = read_through_a_kill(sql).await;
    let error = batches.unwrap_err();
    assert!(error.contains("cannot be resumed"), "{error}");
    assert!(error.contains("random()"), "{error}");
    assert!(!error.contains('\n'), "one line: {error}");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                out.extend(files_under(&entry.path()));
            } else {
                out.push(entry.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_whose_writer_is_killed_leaves_each_file_once_and_whole() {
    let mut cluster = Cluster::start(2);
    let session = cluster.session();
    session.register_dir(tpch_dir().to_str().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out");
    let query = "select l_orderkey, l_linenumber, l_comment, value, value % 4 as part \
                 from lineitem cross join generate_series(1, 12)";
    let copy = format!(
        "copy ({query}) to '{}' stored as parquet partitioned by (part)",
        target.display()
    );
    let df = session.sql(&copy).await.unwrap();
    let job = session.execute(df.logical_plan()).await.unwrap();
    // Kill the worker writing the files once it has started: the write is the only task
    // running then (its stage starts when the scan's has finished).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !files_under(dir.path()).iter().any(|f| {
        f.to_string_lossy().contains(".shoal-") && f.extension().is_some_and(|e| e == "parquet")
    }) {
        assert!(Instant::now() < deadline, "no file was written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = session.status().await.unwrap();
    let writer = status
        .workers
        .iter()
        .find(|w| w.tasks_running > 0)
        .expect("a worker is writing")
        .id;
    assert!(
        !target.exists(),
        "nothing is in place before the write completes"
    );
    kill9(&mut cluster.workers[writer]);
    let counts: Vec<_> = job.stream.try_collect().await.unwrap();
    let expected_rows = 12 * 60_175;
    assert_eq!(rows(&counts), vec![vec![expected_rows.to_string()]]);
    // One file per partition value, and nothing left beside the target.
    let files = files_under(&target);
    assert_eq!(files.len(), 4, "{files:?}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("out")]);
    // The files hold every row once.
    let check = Session::builder().workers(1).build().unwrap();
    check.register_dir(dir.path().to_str().unwrap()).unwrap();
    let sql = "select (select count(*) from out) as n, (select count(*) from \
               (select distinct l_orderkey, l_linenumber, value from out)) as d";
    let read = check.sql(sql).await.unwrap().collect().await.unwrap();
    assert_eq!(
        rows(&read),
        vec![vec![expected_rows.to_string(), expected_rows.to_string()]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_array_result_survives_its_worker_freezing_while_the_client_reads() {
    let mut cluster = Cluster::start(1);
    let session = cluster.session();
    let array = |s: &Session| {
        s.random_uniform(&[4000, 1000], &[125, 1000], 11)
            .unwrap()
            .mul(3.0)
            .unwrap()
    };
    let expected = array(&Session::builder().workers(1).build().unwrap())
        .collect_ndarray::<f64>()
        .await
        .unwrap();
    // Freeze worker 0 the moment the result is ready, while the client reads it.
    let mut events = session.events().await.unwrap();
    let mut reading = tokio::task::JoinSet::new();
    let remote = array(&session);
    reading.spawn(async move { remote.collect_ndarray::<f64>().await });
    while let Some(event) = events.next().await {
        if event.kind == JobEventKind::Done {
            break;
        }
    }
    signal(&cluster.workers[0], "STOP");
    cluster.add_worker(&[]);
    let got = reading.join_next().await.unwrap().unwrap().unwrap();
    signal(&cluster.workers[0], "CONT");
    assert!(
        got == expected,
        "the values differ from the embedded answer"
    );
    let status = session.status().await.unwrap();
    assert!(!status.workers[0].alive, "{status:?}");
    assert!(status.workers[1].tasks_completed > 0, "{status:?}");
}
