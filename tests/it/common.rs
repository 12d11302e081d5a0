//! Shared fixtures: TPC-H data (scale factor 0.01, and others on request), answers, result
//! comparison.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::StreamExt;
use futures::stream::BoxStream;
use shoal::{JobEvent, JobEventKind, Session};

/// The TPC-H tables at scale factor 0.01, generated once per build directory.
pub fn tpch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| tpch_at(0.01))
}

/// The TPC-H tables at scale factor `sf`, generated once per build directory.
pub fn tpch_at(sf: f64) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tpch-sf{sf}"));
    if !shoal::tpch::is_generated(&dir) {
        // Generate beside the final name and rename, so concurrent test processes never
        // see half a data set.
        let staging = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        shoal::tpch::generate(sf, staging.path(), false, &|_| {}).unwrap();
        let staged = staging.keep();
        if std::fs::rename(&staged, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&staged);
        }
    }
    assert!(
        shoal::tpch::is_generated(&dir),
        "TPC-H data at {}",
        dir.display()
    );
    dir
}

/// Where the shared TPC-H answers are (`../shared` beside the repository, or
/// `SHOAL_SHARED_DIR`).
pub fn shared_dir() -> PathBuf {
    std::env::var_os("SHOAL_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

/// A session with `workers` workers, `partitions` partitions per exchange and the TPC-H
/// tables registered.
pub fn tpch_session(workers: usize, partitions: usize) -> Session {
    let session = Session::builder()
        .workers(workers)
        .partitions(partitions)
        .build()
        .unwrap();
    session.register_dir(tpch_dir().to_str().unwrap()).unwrap();
    session
}

/// Rows of an answer file (pipe-separated, header skipped).
/// Makes DataFusion plan every hash join of `session` partitioned, however small its
/// build side.
pub async fn partition_every_join(session: &Session) {
    session
        .sql_script(
            "SET datafusion.optimizer.hash_join_single_partition_threshold = 0; \
             SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 0",
        )
        .await
        .unwrap();
}

pub fn answer(query: &str) -> Vec<Vec<String>> {
    let path = shared_dir().join(format!("tpch/answers/sf0.01/{query}.csv"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .map(|l| {
            l.split('|')
                .map(|c| c.trim_matches('"').to_string())
                .collect()
        })
        .collect()
}

/// Every cell as text (NULL as the empty string).
pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = FormatOptions::default();
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    out
}

/// Whether two cells hold the same text, or numbers within a small tolerance.
pub fn cells_equal(expected: &str, actual: &str) -> bool {
    let (e, a) = (expected.trim(), actual.trim());
    if e == a {
        return true;
    }
    match (e.parse::<f64>(), a.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9_f64.max(x.abs() * 1e-9) + 1e-6,
        _ => false,
    }
}

/// Asserts equal rows, in order; numbers compare with a small tolerance.
pub fn assert_rows_eq(what: &str, expected: &[Vec<String>], actual: &[Vec<String>]) {
    assert_eq!(
        expected.len(),
        actual.len(),
        "{what}: row count\nexpected {expected:?}\nactual {actual:?}"
    );
    for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
        assert_eq!(
            e.len(),
            a.len(),
            "{what}: columns in row {i}: {e:?} vs {a:?}"
        );
        for (x, y) in e.iter().zip(a) {
            assert!(
                cells_equal(x, y),
                "{what}: row {i} differs\nexpected {e:?}\nactual   {a:?}"
            );
        }
    }
}

/// Sorted copy, for queries without a total order.
pub fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.sort();
    rows
}

/// Every file below `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The events read from `events` up to and including the first job's `Done`.
pub async fn events_until_done(events: &mut BoxStream<'static, JobEvent>) -> Vec<JobEvent> {
    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        let done = event.kind == JobEventKind::Done;
        seen.push(event);
        if done {
            break;
        }
    }
    seen
}
