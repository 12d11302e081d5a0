//! Bad input through the Rust API: one clear line naming the file, an `Err`, no panic,
//! nothing clobbered.

use shoal::Session;

use crate::common::{files_under, tpch_dir};

fn session() -> Session {
    Session::builder().workers(2).partitions(2).build().unwrap()
}

async fn query_error(session: &Session, sql: &str) -> String {
    let err = match session.sql(sql).await {
        Err(e) => e,
        Ok(df) => df.collect().await.expect_err(sql),
    };
    let line = err.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_file_is_named() {
    let err = session()
        .read_parquet("/no/such/dir/orders.parquet")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/no/such/dir/orders.parquet"), "{err}");
    let err = session()
        .register("t", "missing_dir/")
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing_dir"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_truncated_parquet_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.parquet");
    std::fs::write(&garbage, b"this is not parquet at all, just some bytes").unwrap();
    let err = session()
        .read_parquet(garbage.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("garbage.parquet"), "{err}");

    let whole = std::fs::read(tpch_dir().join("orders.parquet")).unwrap();
    let truncated = dir.path().join("truncated.parquet");
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    let err = session()
        .read_parquet(truncated.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("truncated.parquet"), "{err}");

    // A footer that makes the Parquet reader panic (found by fuzzing) is an error naming
    // the file too, and the session goes on.
    let crash = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions/parquet/crash-a7d794888f15c5f1ce703e73b3b8c02a901e5138");
    let footer = dir.path().join("footer.parquet");
    std::fs::copy(crash, &footer).unwrap();
    let s = session();
    let err = s
        .register("footer", footer.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("footer.parquet"), "{err}");
    assert!(err.contains("the reader panicked"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    s.register(
        "orders",
        tpch_dir().join("orders.parquet").to_str().unwrap(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ragged_csv_and_bad_numbers_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let ragged = dir.path().join("ragged.csv");
    std::fs::write(&ragged, "a,b\n1,2\n3,4,5\n6,7\n").unwrap();
    let s = session();
    let err = match s.register("ragged", ragged.to_str().unwrap()) {
        Err(e) => e.to_string(),
        Ok(()) => query_error(&s, "select * from ragged").await,
    };
    assert!(err.contains("ragged.csv"), "{err}");
    assert!(err.to_lowercase().contains("expected 2"), "{err}");

    let numbers = dir.path().join("numbers.csv");
    std::fs::write(&numbers, "a,b\n1,2\n3,x\n").unwrap();
    let sql = format!(
        "create external table nums (a int, b int) stored as csv location '{}' options ('format.has_header' 'true')",
        numbers.display()
    );
    s.sql(&sql).await.unwrap();
    let err = query_error(&s, "select sum(b) from nums").await;
    assert!(err.contains("numbers.csv"), "{err}");
    assert!(err.contains("'x'") || err.contains("x"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_never_clobbers_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("keep.csv");
    std::fs::write(&target, "precious\n").unwrap();
    let s = session();
    let err = query_error(
        &s,
        &format!(
            "copy (select 1 as x) to '{}' stored as csv",
            target.display()
        ),
    )
    .await;
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");

    let fresh = dir.path().join("fresh.csv");
    s.sql(&format!(
        "copy (select 1 as x union all select 2) to '{}' stored as csv",
        fresh.display()
    ))
    .await
    .unwrap()
    .collect()
    .await
    .unwrap();
    assert_eq!(std::fs::read_to_string(&fresh).unwrap().lines().count(), 3);
    s.sql(&format!(
        "copy (select 7 as y) to '{}' stored as csv options ('overwrite' 'true')",
        target.display()
    ))
    .await
    .unwrap()
    .collect()
    .await
    .unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "y\n7\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_columns_in_dataframe_verbs() {
    let s = session();
    s.register_dir(tpch_dir().to_str().unwrap()).unwrap();
    let nation = s.table("nation").await.unwrap();
    let err = nation.select(["n_nam"]).unwrap_err().to_string();
    assert!(err.contains("n_nam") && err.contains("n_name"), "{err}");
    let err = nation.sort_values(["nope"], true).unwrap_err().to_string();
    assert!(err.contains("'nope'"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_leaves_nothing_under_the_final_name() {
    let dir = tempfile::tempdir().unwrap();
    let s = session();
    let single = dir.path().join("out.csv");
    let sql = format!(
        "copy (select case when value < 150000 then value else 1 / (value - value) end as v from generate_series(1, 300000)) to '{}' stored as csv",
        single.display()
    );
    let err = query_error(&s, &sql).await;
    assert!(err.contains("Divide by zero"), "{err}");
    let parts = dir.path().join("parts");
    let sql = format!(
        "copy (select value % 3 as k, case when value < 150000 then value else 1 / (value - value) end as v from generate_series(1, 300000)) to '{}/' stored as parquet partitioned by (k)",
        parts.display()
    );
    query_error(&s, &sql).await;
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let files: Vec<_> = left.iter().filter(|p| p.is_file()).collect();
    assert!(files.is_empty(), "no file written: {left:?}");
    if parts.exists() {
        let inside = files_under(&parts);
        assert!(inside.is_empty(), "no partition file written: {inside:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_datafusion_panics_on_is_an_error_and_the_session_goes_on() {
    // DataFusion 55's SQL planner indexes past the end of a subquery with no columns
    // (found by fuzzing).
    let s = session();
    let err = query_error(&s, "with c as (select 1 as a) select (select from c)").await;
    assert!(
        err.contains("planning the statement hit a bug in DataFusion"),
        "{err}"
    );
    let batches = s
        .sql("select 41 + 1")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(crate::common::rows(&batches), vec![vec!["42".to_string()]]);
}
